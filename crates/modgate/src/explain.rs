//! `modgate explain <module>[@version] [--kind K] [--cert F | --user U | --token-name T]`:
//! which route and upstream chain a request would take and whether the identity may make it —
//! decided by the same parser, route table and access policy the proxy uses.

use std::fmt::Write;

use modgate_policy::{AccessRequest, Principal, Route};
use modgate_protocol::{escape_path, escape_version, ModuleRequest, RequestKind};

use crate::gateway::Gateway;
use crate::identity::RequestIdentity;
use crate::proxy::admit::{admit, Inbound, Refusal, Scope, Verdict};
use crate::upstream::{Chain, Fallthrough};

/// What `explain` found: the text to print, and whether the request would be refused by the
/// access policy (`modgate explain` exits 1 then).
pub struct Explained {
    pub text: String,
    pub denied: bool,
}

/// Builds the request line the `go` command would send and explains what modgate does with it.
pub fn explain(
    gateway: &Gateway,
    prefix: &str,
    target: &str,
    kind: Option<RequestKind>,
    principal: &Principal,
) -> Result<Explained, String> {
    let mut denied = false;
    let (module, version) = match target.split_once('@') {
        Some((m, v)) => (m, Some(v)),
        None => (target, None),
    };
    let kind = kind.unwrap_or(if version.is_some() {
        RequestKind::Zip
    } else {
        RequestKind::List
    });
    let escaped = escape_path(module).map_err(|e| e.to_string())?;
    let prefix = prefix.trim_end_matches('/');
    let path = match (kind, version) {
        (RequestKind::List, _) => format!("{prefix}/{escaped}/@v/list"),
        (RequestKind::Latest, _) => format!("{prefix}/{escaped}/@latest"),
        (RequestKind::Info | RequestKind::Mod | RequestKind::Zip, Some(v)) => {
            let v = escape_version(v).map_err(|e| e.to_string())?;
            format!("{prefix}/{escaped}/@v/{v}.{}", kind.as_str())
        }
        (RequestKind::Info | RequestKind::Mod | RequestKind::Zip, None) => {
            return Err(format!(
                "--kind {} needs a version: {module}@<version>",
                kind.as_str()
            ))
        }
        (other, _) => {
            return Err(format!(
                "--kind {} is not a module request (use list, latest, info, mod or zip)",
                other.as_str()
            ))
        }
    };
    // Decided by the proxy's own admission, as a GET with this identity would be.
    let head = match http::Request::get(path.as_str()).body(()) {
        Ok(r) => r.into_parts().0,
        Err(e) => return Err(format!("{path}: {e}")),
    };
    let ttl = crate::cache::Ttls::default();
    let scope = Scope {
        gateway,
        ttl: &ttl,
        caching: true,
        listener: None,
        refresh: false,
        now: crate::proxy::admit::unix_now(),
    };
    let identity = RequestIdentity {
        principal: principal.clone(),
        ..RequestIdentity::default()
    };
    let admission = admit(
        &scope,
        &Inbound {
            head: &head,
            peer: None,
            commit: None,
        },
        &identity,
    );
    let request = match (&admission.verdict, admission.request.as_ref()) {
        (_, Some(r)) => r.clone(),
        // Bad input, not an answer: a deploy script must not read a typo as "allowed".
        (Verdict::Refuse(r @ Refusal::BadPath(_)), None) => {
            return Err(format!(
                "GET {path}: the gateway answers {} {} (never forwarded)",
                r.status(),
                r.message().trim_end()
            ))
        }
        _ => return Err(format!("{path} is not a module request")),
    };
    let mut out = String::new();
    let _ = writeln!(out, "request:  GET {path}");
    let _ = writeln!(
        out,
        "identity: {} ({}){}",
        principal.name,
        principal.source,
        describe_principal(principal)
    );
    let _ = writeln!(
        out,
        "module:   {} ({}{})",
        request.module,
        request.kind.as_str(),
        request
            .version
            .as_ref()
            .map(|v| format!(" {}", v.as_str()))
            .unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "caching:  {}",
        if request.is_immutable() {
            "immutable (exact version)"
        } else {
            "mutable (list, @latest or a version query)"
        }
    );
    if admission.commit_needed {
        let _ = writeln!(
            out,
            "commit:   a rule limited to commits applies to this tag; the gateway asks the \
             upstream's .info which commit it is (Origin.Hash) and decides with it (a .info \
             that names none leaves the tag to the other rules; a missing one is a 404, a \
             failing upstream a 502). Below: the decision for a commit no rule names."
        );
    }
    if let Some(m) = admission.route.and_then(|i| gateway.routes.routes().get(i)) {
        let index = admission.route.unwrap_or(0);
        describe_route(&mut out, gateway, m, index, &request, principal);
        // The rules above judge the path as spelled; on a Git host's route the decision is
        // also made for the spellings the host reads as the same repository.
        let spelled = gateway.access.decide(
            principal,
            &AccessRequest {
                module: &request.module,
                kind: request.kind,
                version: request.version.as_ref().map(|v| v.as_str()),
                route: &m.name,
                private_route: m.private,
                commit: None,
            },
        );
        if let Some(d) = admission
            .decision
            .as_ref()
            .filter(|d| d.rule != spelled.rule)
        {
            let _ = writeln!(
                out,
                "spelling: the host reads {} as another spelling too (case, or a repository \
                 alias such as .git): rule {} ({})",
                request.module, d.rule, d.reason
            );
        }
    } else {
        let _ = writeln!(out, "route:    none matches");
    }
    if let Some(j) = &admission.vulns {
        match &j.judged {
            Some(judged) => {
                let _ = writeln!(
                    out,
                    "vulnerabilities: {} ({}): {}",
                    judged.ids.join(", "),
                    judged.mode.as_str(),
                    judged.reason
                );
            }
            None => {
                let _ = writeln!(out, "vulnerabilities: none that count");
            }
        }
        for w in &j.waived {
            let _ = writeln!(
                out,
                "waived:   {}: {} (until {})",
                w.advisory, w.reason, w.expires
            );
        }
    }
    match &admission.verdict {
        Verdict::Forward { cache_plan, .. } => {
            if let Some(plan) = cache_plan {
                let _ = writeln!(out, "cache key: {}", plan.primary());
            }
            let _ = writeln!(out, "decision: allow: forward along the chain");
        }
        Verdict::Refuse(r) => {
            denied = matches!(r, Refusal::Denied { .. });
            let verb = if denied { "deny: " } else { "" };
            // As the client would print it.
            let _ = writeln!(
                out,
                "decision: {verb}{} modgate: {}",
                r.status(),
                r.message()
            );
        }
        other => return Err(format!("{path}: unexpected verdict {other:?}")),
    }
    Ok(Explained { text: out, denied })
}

/// The identity fields policy rules can match, on one line.
fn describe_principal(p: &Principal) -> String {
    let mut parts = Vec::new();
    if let Some(c) = &p.cert {
        parts.push(format!("dn={:?}", c.subject_dn));
        if let Some(s) = &c.spiffe {
            parts.push(format!("spiffe={s}"));
        }
        if !c.san_dns.is_empty() {
            parts.push(format!("dns={}", c.san_dns.join(",")));
        }
        if !c.san_email.is_empty() {
            parts.push(format!("email={}", c.san_email.join(",")));
        }
        parts.push(format!("sha256={}", c.fingerprint_sha256));
    }
    if let Some(u) = &p.user {
        parts.push(format!("user={u}"));
    }
    if let Some(t) = &p.token {
        parts.push(format!("token={t}"));
    }
    if !p.groups.is_empty() {
        parts.push(format!("groups={}", p.groups.join(",")));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" {}", parts.join(" "))
    }
}

/// The matched route, its chain, and the policy's reasoning for this principal.
fn describe_route(
    out: &mut String,
    gateway: &Gateway,
    route: &Route<Chain>,
    index: usize,
    request: &ModuleRequest,
    principal: &Principal,
) {
    let _ = writeln!(
        out,
        "route:    #{} {} ({}){}",
        index + 1,
        route.name,
        route.pattern,
        if route.private { ", private" } else { "" }
    );
    let _ = writeln!(out, "chain:");
    let last = route.target.steps.len().saturating_sub(1);
    for (i, step) in route.target.steps.iter().enumerate() {
        let then = if i == last {
            "last step: its answer is final"
        } else {
            match step.on {
                Fallthrough::NotFound => "next step only on 404/410",
                Fallthrough::AnyError => "next step on 404/410, errors and timeouts",
            }
        };
        let _ = writeln!(
            out,
            "  {}. {} GET {}{} ({}{then})",
            i + 1,
            step.upstream.name,
            step.upstream.url,
            request.upstream_path(),
            if step.upstream.private {
                "private, "
            } else {
                ""
            },
        );
    }
    let explanation = gateway.access.explain(
        principal,
        &AccessRequest {
            module: &request.module,
            kind: request.kind,
            version: request.version.as_ref().map(|v| v.as_str()),
            route: &route.name,
            private_route: route.private,
            commit: None,
        },
    );
    if explanation.roles.is_empty() {
        let _ = writeln!(out, "roles:    none");
    }
    for r in &explanation.roles {
        let _ = writeln!(
            out,
            "role:     {} (member entry #{})",
            r.role,
            r.binding + 1
        );
    }
    for r in &explanation.rules {
        let _ = writeln!(
            out,
            "applies:  rule {} of role {}: {}",
            r.rule, r.role, r.effect
        );
    }
    for r in &explanation.skipped {
        let _ = writeln!(
            out,
            "skipped:  rule {} of role {}: {} (not for this module, kind or version)",
            r.rule, r.role, r.effect
        );
    }
    let d = &explanation.decision;
    let _ = writeln!(out, "rule:     {} ({})", d.rule, d.reason);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alias_spelling_is_explained_by_the_rule_that_decides_it() {
        let text = r#"
listeners:
  - { name: plain, address: "127.0.0.1:7070" }
upstreams:
  corp-git:
    kind: git
    url: "https://git.corp.example"
    module: "git.corp.example/{group}/{repo}"
    repo: "{group}/{repo}"
    private: true
routes:
  - { name: git, match: { prefix: git.corp.example }, chain: [corp-git], private: true }
access:
  roles:
    - name: devs
      members: [ any ]
      rules:
        - { id: git-secret, deny: { prefix: git.corp.example/team/secret } }
        - { id: git-read, allow: { prefix: git.corp.example } }
"#;
        let config =
            crate::config::parse(text, "test.yaml", std::path::Path::new("/tmp")).expect("config");
        let gateway = Gateway::new(&config).expect("gateway");
        let e = explain(
            &gateway,
            "",
            "git.corp.example/team/secret.git@v1.0.0",
            None,
            &Principal::anonymous(),
        )
        .expect("explained");
        assert!(e.denied, "{}", e.text);
        assert!(e.text.contains("spelling: "), "{}", e.text);
        assert!(e.text.contains("rule git-secret"), "{}", e.text);
        let e = explain(
            &gateway,
            "",
            "git.corp.example/team/open.git@v1.0.0",
            None,
            &Principal::anonymous(),
        )
        .expect("explained");
        assert!(!e.denied && !e.text.contains("spelling: "), "{}", e.text);
    }
}
