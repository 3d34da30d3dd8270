//! Table tests of admission: one gateway configuration, requests as the proxy would see them,
//! and the verdict, status, message, headers and audit decision each must get.

use std::net::IpAddr;
use std::path::Path;

use modgate_policy::{Principal, PrincipalSource};
use modgate_telemetry::AuditDecision;

use super::*;
use crate::config;
use crate::model::{listener_runtime, ListenerRuntime};

const CONFIG: &str = r#"
listeners:
  - { name: plain, address: "127.0.0.1:7070", admin: true }
  - { name: strict, address: "127.0.0.1:7071", require_identity: true }
upstreams:
  public: { url: "http://127.0.0.1:9001" }
  corp: { url: "http://127.0.0.1:9002/corp/", private: true }
  team: { url: "http://127.0.0.1:9003", private: true, cache_scope: per-identity }
routes:
  - { name: corp, match: { prefix: corp.example.com }, chain: [corp], private: true }
  - { name: team, match: { prefix: team.example.com }, chain: [team], private: true }
  - { name: public, match: { prefix: "" }, chain: [public] }
sumdb:
  sum.golang.org: { url: "http://127.0.0.1:9004" }
access:
  default: allow
  roles:
    - name: devs
      members: [ { user: alice }, { token: alice } ]
      rules:
        - { id: corp-open, allow: { prefix: corp.example.com/open } }
        - { id: team, allow: { prefix: team.example.com } }
        - { id: corp-secret, deny: { prefix: corp.example.com/secret } }
    - name: admin
      members: [ { user: root } ]
      rules: []
"#;

struct World {
    gateway: Gateway,
    ttl: Ttls,
    plain: ListenerRuntime,
    strict: ListenerRuntime,
}

fn world() -> World {
    world_of(CONFIG)
}

/// The world of a configuration with a `plain` listener (`strict` too, or `plain` again).
fn world_of(text: &str) -> World {
    let config = config::parse(text, "test.yaml", Path::new("/tmp")).expect("config");
    let gateway = Gateway::new(&config).expect("gateway");
    let listener = |name: &str| {
        let l = config
            .listeners
            .iter()
            .find(|l| l.name.0 == name)
            .or_else(|| config.listeners.iter().next())
            .expect("listener");
        listener_runtime(l, &[], None, Default::default())
    };
    World {
        gateway,
        ttl: Ttls::default(),
        plain: listener("plain"),
        strict: listener("strict"),
    }
}

fn user(name: &str) -> RequestIdentity {
    RequestIdentity {
        principal: Principal {
            source: PrincipalSource::Basic,
            name: name.into(),
            cert: None,
            user: Some(name.into()),
            token: None,
            groups: Vec::new(),
        },
        ..RequestIdentity::default()
    }
}

fn anonymous() -> RequestIdentity {
    RequestIdentity::default()
}

fn head(method: &str, target: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut b = http::Request::builder().method(method).uri(target);
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    b.body(()).expect("request").into_parts().0
}

/// Admits a request on `listener` (None: as `explain` asks) from `peer`.
fn run(
    w: &World,
    listener: Option<&ListenerRuntime>,
    head: &http::request::Parts,
    peer: &str,
    id: &RequestIdentity,
) -> Admission {
    let scope = Scope {
        gateway: &w.gateway,
        ttl: &w.ttl,
        caching: true,
        listener,
        refresh: false,
        now: 1_700_000_000,
    };
    let peer: IpAddr = peer.parse().expect("ip");
    admit(
        &scope,
        &Inbound {
            head,
            peer: Some(peer),
            commit: None,
        },
        id,
    )
}

fn refusal(a: &Admission) -> &Refusal {
    match &a.verdict {
        Verdict::Refuse(r) => r,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn refusals_carry_status_message_headers_and_audit() {
    let w = world();
    let alice = user("alice");
    let bob = user("bob");
    let anon = anonymous();
    let strict = Some(&w.strict);
    let plain = Some(&w.plain);
    // (listener, method, target, headers, identity, status, message part, header, audit)
    type Case<'a> = (
        Option<&'a ListenerRuntime>,
        &'a str,
        &'a str,
        &'a [(&'a str, &'a str)],
        &'a RequestIdentity,
        u16,
        &'a str,
        Option<(&'a str, &'a str)>,
        AuditDecision,
    );
    let cases: Vec<Case> = vec![
        (
            strict,
            "GET",
            "/example.com/x/@v/list",
            &[],
            &anon,
            401,
            "authentication required",
            Some(("WWW-Authenticate", BASIC_CHALLENGE)),
            AuditDecision::Unauthenticated,
        ),
        (
            plain,
            "POST",
            "/example.com/x/@v/list",
            &[],
            &alice,
            405,
            "method POST is not allowed",
            Some(("Allow", "GET, HEAD")),
            AuditDecision::Error,
        ),
        (
            plain,
            "GET",
            "/example.com/x/@v/list",
            &[("Content-Length", "3")],
            &alice,
            400,
            "GOPROXY requests have no body",
            None,
            AuditDecision::Error,
        ),
        (
            plain,
            "GET",
            "/example.com/x/@v/list",
            &[("Transfer-Encoding", "chunked")],
            &alice,
            400,
            "no body",
            None,
            AuditDecision::Error,
        ),
        (
            plain,
            "GET",
            "/example.com/X/@v/list",
            &[],
            &alice,
            400,
            "",
            None,
            AuditDecision::Error,
        ),
        (
            plain,
            "GET",
            "/corp.example.com/x?go-get=1",
            &[],
            &alice,
            404,
            "no ?go-get=1 page here (not in a repository of a git upstream)",
            None,
            AuditDecision::Error,
        ),
        (
            plain,
            "GET",
            "/sumdb/sum.example.org/supported",
            &[],
            &alice,
            404,
            "checksum database \"sum.example.org\" is not proxied",
            None,
            AuditDecision::Error,
        ),
        (
            plain,
            "GET",
            "/sumdb/sum.golang.org/lookup/corp.example.com/open@v1.0.0",
            &[],
            &alice,
            404,
            "is on private route \"corp\"",
            None,
            AuditDecision::Error,
        ),
        (
            plain,
            "GET",
            "/corp.example.com/secret/@v/v1.2.3.zip",
            &[],
            &alice,
            403,
            "alice may not read corp.example.com/secret@v1.2.3 (.zip): denied by rule \
             \"corp-secret\" of role \"devs\"",
            None,
            AuditDecision::Deny,
        ),
        (
            plain,
            "GET",
            "/corp.example.com/open/@v/list",
            &[],
            &bob,
            403,
            "bob may not read corp.example.com/open (list): no role grants access to private \
             route \"corp\" (rule private-default)",
            None,
            AuditDecision::Deny,
        ),
        (
            plain,
            "GET",
            "/corp.example.com/open/@latest",
            &[],
            &anon,
            401,
            "anonymous may not read corp.example.com/open (latest)",
            Some(("WWW-Authenticate", BASIC_CHALLENGE)),
            AuditDecision::Unauthenticated,
        ),
    ];
    for (listener, method, target, headers, id, status, message, header, audit) in cases {
        let h = head(method, target, headers);
        let a = run(&w, listener, &h, "10.0.0.1", id);
        let r = refusal(&a);
        let what = format!("{method} {target}: {r:?}");
        assert_eq!(r.status(), status, "{what}");
        assert!(r.message().contains(message), "{what}: {}", r.message());
        assert!(!r.message().starts_with("modgate: "), "{what}");
        if let Some((name, value)) = header {
            assert!(
                r.headers().iter().any(|(n, v)| *n == name && v == value),
                "{what}: {:?}",
                r.headers()
            );
        } else {
            assert!(
                !r.headers().iter().any(|(n, _)| *n == "WWW-Authenticate"),
                "{what}"
            );
        }
        assert_eq!(r.audit(), audit, "{what}");
    }
}

#[test]
fn the_rule_id_is_not_repeated_when_the_reason_names_it() {
    let w = world();
    let h = head("GET", "/corp.example.com/secret/@v/v1.2.3.info", &[]);
    let a = run(&w, Some(&w.plain), &h, "10.0.0.1", &user("alice"));
    let m = refusal(&a).message();
    assert_eq!(m.matches("corp-secret").count(), 1, "{m}");
}

#[test]
fn allowed_module_requests_are_forwarded_with_plans() {
    let w = world();
    let alice = user("alice");
    let h = head("GET", "/corp.example.com/open/@v/v1.0.0.zip", &[]);
    let a = run(&w, Some(&w.plain), &h, "10.0.0.1", &alice);
    assert_eq!(a.route, Some(0));
    assert_eq!(a.kind, Some(RequestKind::Zip));
    assert_eq!(
        a.decision.as_ref().map(|d| d.rule.as_str()),
        Some("corp-open")
    );
    let Verdict::Forward {
        cache_plan: Some(plan),
        ledger_key: Some((artifact, version)),
    } = &a.verdict
    else {
        panic!("{:?}", a.verdict);
    };
    assert_eq!(
        plan.primary(),
        "route:corp|/corp.example.com/open/@v/v1.0.0.zip"
    );
    assert!(plan.immutable());
    assert_eq!((*artifact, version.as_str()), (Artifact::Zip, "v1.0.0"));

    // A mutable answer: cached, but no ledger key.
    let h = head("GET", "/example.com/pub/@v/list", &[]);
    let a = run(&w, Some(&w.plain), &h, "10.0.0.1", &anonymous());
    let Verdict::Forward {
        cache_plan: Some(plan),
        ledger_key: None,
    } = &a.verdict
    else {
        panic!("{:?}", a.verdict);
    };
    assert!(!plan.immutable());
    assert_eq!(a.route, Some(2));

    // HEAD is admitted like GET.
    let h = head("HEAD", "/example.com/pub/@v/v1.0.0.mod", &[]);
    assert!(!run(&w, Some(&w.plain), &h, "10.0.0.1", &anonymous()).is_refused());
}

#[test]
fn per_identity_routes_key_the_cache_by_identity() {
    let w = world();
    let h = head("GET", "/team.example.com/x/@v/list", &[]);
    let key = |id: &RequestIdentity| match run(&w, Some(&w.plain), &h, "10.0.0.1", id).verdict {
        Verdict::Forward {
            cache_plan: Some(p),
            ..
        } => p.primary(),
        other => panic!("{other:?}"),
    };
    let alice = key(&user("alice"));
    assert!(alice.starts_with("route:team#id="), "{alice}");
    // Same name, other source: another identity.
    let mut token_alice = user("alice");
    token_alice.principal.source = PrincipalSource::Token;
    token_alice.principal.user = None;
    token_alice.principal.token = Some("alice".into());
    assert_ne!(alice, key(&token_alice));
    assert_eq!(alice, key(&user("alice")));
}

#[test]
fn without_a_cache_there_is_no_plan_and_no_ledger_key() {
    let w = world();
    let scope = Scope {
        gateway: &w.gateway,
        ttl: &w.ttl,
        caching: false,
        listener: Some(&w.plain),
        refresh: false,
        now: 1_700_000_000,
    };
    let h = head("GET", "/example.com/pub/@v/v1.0.0.zip", &[]);
    let a = admit(
        &scope,
        &Inbound {
            head: &h,
            peer: None,
            commit: None,
        },
        &anonymous(),
    );
    assert!(matches!(
        a.verdict,
        Verdict::Forward {
            cache_plan: None,
            ledger_key: None
        }
    ));
}

#[test]
fn checksum_database_requests() {
    let w = world();
    let alice = user("alice");
    let h = head("GET", "/sumdb/sum.golang.org/supported", &[]);
    let a = run(&w, Some(&w.plain), &h, "10.0.0.1", &alice);
    assert!(matches!(a.verdict, Verdict::Answer(Local::SumdbSupported)));
    assert_eq!(a.kind, Some(RequestKind::SumdbSupported));

    let h = head(
        "GET",
        "/sumdb/sum.golang.org/lookup/example.com/pub@v1.0.0",
        &[],
    );
    match run(&w, Some(&w.plain), &h, "10.0.0.1", &alice).verdict {
        Verdict::Sumdb {
            db,
            path,
            cache_plan,
        } => {
            assert_eq!(db.name, "sum.golang.org");
            assert_eq!(path, "/lookup/example.com/pub@v1.0.0");
            assert!(cache_plan.is_some());
        }
        other => panic!("{other:?}"),
    }
    // The private lookup names its route for the record.
    let h = head(
        "GET",
        "/sumdb/sum.golang.org/lookup/corp.example.com/x@v1.0.0",
        &[],
    );
    let a = run(&w, Some(&w.plain), &h, "10.0.0.1", &alice);
    assert_eq!(a.route, Some(0));
    assert!(matches!(
        a.verdict,
        Verdict::Refuse(Refusal::PrivateLookup(_))
    ));
}

#[test]
fn unknown_module_is_404_and_keeps_the_request_for_the_record() {
    let config = CONFIG.replace(
        "  - { name: public, match: { prefix: \"\" }, chain: [public] }\n",
        "",
    );
    let config = config::parse(&config, "t.yaml", Path::new("/tmp")).expect("config");
    let w = World {
        gateway: Gateway::new(&config).expect("gateway"),
        ..world()
    };
    let h = head("GET", "/example.com/pub/@v/v1.0.0.info", &[]);
    let a = run(&w, Some(&w.plain), &h, "10.0.0.1", &anonymous());
    assert_eq!(refusal(&a).status(), 404);
    assert_eq!(refusal(&a).message(), "no route for module example.com/pub");
    assert_eq!(a.request.map(|r| r.module), Some("example.com/pub".into()));
}

#[test]
fn the_admin_endpoint_is_local_role_bound_and_validated() {
    let w = world();
    let root = user("root");
    let purge = |method: &str, query: &str, headers: &[(&str, &str)], peer: &str, id| {
        let mut all = vec![("Host", "127.0.0.1:7070")];
        all.extend_from_slice(headers);
        let h = head(method, &format!("{PURGE_PATH}{query}"), &all);
        run(&w, Some(&w.plain), &h, peer, id)
    };
    let a = purge(
        "POST",
        "?target=example.com/x@v1.0.0",
        &[],
        "127.0.0.1",
        &root,
    );
    let Verdict::Answer(local) = &a.verdict else {
        panic!("{:?}", a.verdict);
    };
    assert_eq!(
        local,
        &Local::Purge {
            target: "example.com/x@v1.0.0".into(),
            module: "example.com/x".into(),
            version: Some("v1.0.0".into()),
        }
    );
    let a = purge("POST", "?target=example.com/y", &[], "::1", &root);
    assert!(
        matches!(
            a.verdict,
            Verdict::Answer(Local::Purge { version: None, .. })
        ),
        "{:?}",
        a.verdict
    );

    // (method, query, headers, peer, identity, status, message part)
    let alice = user("alice");
    let anon = anonymous();
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a [(&'a str, &'a str)],
        &'a str,
        &'a RequestIdentity,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "POST",
            "?target=x",
            &[("Origin", "http://evil")],
            "127.0.0.1",
            &root,
            403,
            "web pages",
        ),
        (
            "POST",
            "?target=x",
            &[],
            "127.0.0.1",
            &alice,
            403,
            "does not hold the role \"admin\"",
        ),
        (
            "POST",
            "?target=x",
            &[],
            "127.0.0.1",
            &anon,
            401,
            "does not hold the role",
        ),
        ("GET", "?target=x", &[], "127.0.0.1", &root, 405, "use POST"),
        ("POST", "", &[], "127.0.0.1", &root, 400, "missing ?target="),
        ("POST", "?target=%zz", &[], "127.0.0.1", &root, 400, ""),
    ];
    for (method, query, headers, peer, id, status, message) in cases {
        let a = purge(method, query, headers, peer, id);
        let r = refusal(&a);
        assert_eq!(r.status(), status, "{method} {query} {r:?}");
        assert!(r.message().contains(message), "{}", r.message());
    }
    // Not from loopback: not the admin endpoint at all, so a GOPROXY parse error.
    let a = purge("POST", "?target=x", &[], "10.0.0.1", &root);
    assert_eq!(refusal(&a).status(), 405);
    assert!(refusal(&a).message().contains("GOPROXY"));
}

#[test]
fn the_fetched_endpoint_is_admitted_as_the_purge_is() {
    let w = world();
    let root = user("root");
    let ask = |method: &str, query: &str, headers: &[(&str, &str)], peer: &str, id| {
        let mut all = vec![("Host", "127.0.0.1:7070")];
        all.extend_from_slice(headers);
        let h = head(method, &format!("{FETCHED_PATH}{query}"), &all);
        run(&w, Some(&w.plain), &h, peer, id)
    };
    let a = ask(
        "GET",
        "?identity=certificate%3Aci-7&since=2026-12-01T08:00:00%2B02:00&format=cyclonedx",
        &[],
        "127.0.0.1",
        &root,
    );
    let Verdict::Answer(local) = &a.verdict else {
        panic!("{:?}", a.verdict);
    };
    assert_eq!(
        local,
        &Local::Fetched {
            identity: "certificate:ci-7".into(),
            since: "2026-12-01T08:00:00+02:00".into(),
            until: None,
            format: "cyclonedx".into(),
        }
    );
    assert_eq!(a.fetched_query(), Some("certificate:ci-7"));
    let a = ask("GET", "?identity=ci&since=7d&until=1d", &[], "::1", &root);
    assert!(
        matches!(
            &a.verdict,
            Verdict::Answer(Local::Fetched { until: Some(u), format, .. })
                if u == "1d" && format == "json"
        ),
        "{:?}",
        a.verdict
    );

    let alice = user("alice");
    let anon = anonymous();
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a [(&'a str, &'a str)],
        &'a str,
        &'a RequestIdentity,
        u16,
        &'a str,
    );
    let q = "?identity=ci&since=7d";
    let cases: Vec<Case> = vec![
        (
            "GET",
            q,
            &[("Origin", "http://evil")],
            "127.0.0.1",
            &root,
            403,
            "web pages",
        ),
        (
            "GET",
            q,
            &[],
            "127.0.0.1",
            &alice,
            403,
            "does not hold the role \"admin\"",
        ),
        (
            "GET",
            q,
            &[],
            "127.0.0.1",
            &anon,
            401,
            "does not hold the role",
        ),
        ("POST", q, &[], "127.0.0.1", &root, 405, "use GET"),
        (
            "GET",
            "?identity=ci",
            &[],
            "127.0.0.1",
            &root,
            400,
            "missing ?identity=",
        ),
        (
            "GET",
            "?since=7d",
            &[],
            "127.0.0.1",
            &root,
            400,
            "missing ?identity=",
        ),
        (
            "GET",
            "?identity=%zz&since=7d",
            &[],
            "127.0.0.1",
            &root,
            400,
            "identity",
        ),
        (
            "GET",
            "?identity=a&identity=b&since=7d",
            &[],
            "127.0.0.1",
            &root,
            400,
            "twice",
        ),
        (
            "GET",
            "?identity=a&since=7d&limit=1",
            &[],
            "127.0.0.1",
            &root,
            400,
            "unknown",
        ),
    ];
    for (method, query, headers, peer, id, status, message) in cases {
        let a = ask(method, query, headers, peer, id);
        let r = refusal(&a);
        assert_eq!(r.status(), status, "{method} {query} {r:?}");
        assert!(r.message().contains(message), "{}", r.message());
    }
    // Not from loopback: not an admin endpoint at all (a GOPROXY path that routes nowhere).
    let a = ask("GET", q, &[], "10.0.0.1", &root);
    assert!(a.fetched_query().is_none());
    assert!(!matches!(a.verdict, Verdict::Answer(_)), "{:?}", a.verdict);
}

#[test]
fn a_background_refresh_is_not_decided_again() {
    let w = world();
    // A module alice may read: refreshed without an identity, and still forwarded with the
    // same cache plan (the key carries no identity).
    let h = head("GET", "/corp.example.com/open/@v/list", &[]);
    let scope = Scope {
        gateway: &w.gateway,
        ttl: &w.ttl,
        caching: true,
        listener: Some(&w.strict),
        refresh: true,
        now: 1_700_000_000,
    };
    let a = admit(
        &scope,
        &Inbound {
            head: &h,
            peer: None,
            commit: None,
        },
        &anonymous(),
    );
    match &a.verdict {
        Verdict::Forward {
            cache_plan: Some(p),
            ..
        } => assert_eq!(p.primary(), "route:corp|/corp.example.com/open/@v/list"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        a.decision.as_ref().map(|d| d.rule.as_str()),
        Some("refresh")
    );
    // Not a request a client can make: the same request without the flag is refused.
    let scope = Scope {
        refresh: false,
        ..scope
    };
    assert!(admit(
        &scope,
        &Inbound {
            head: &h,
            peer: None,
            commit: None,
        },
        &anonymous()
    )
    .is_refused());
}

#[test]
fn stale_while_revalidate_only_for_shared_mutable_answers() {
    let w = world();
    let alice = user("alice");
    let plan = |target: &str| match run(
        &w,
        Some(&w.plain),
        &head("GET", target, &[]),
        "10.0.0.1",
        &alice,
    )
    .verdict
    {
        Verdict::Forward {
            cache_plan: Some(p),
            ..
        } => p,
        other => panic!("{other:?}"),
    };
    assert!(!plan("/example.com/pub/@v/list")
        .stale_while_revalidate
        .is_zero());
    assert!(plan("/example.com/pub/@v/v1.0.0.zip")
        .stale_while_revalidate
        .is_zero());
    // Kept per identity: a background refresh has no identity to key it by.
    assert!(plan("/team.example.com/x/@v/list")
        .stale_while_revalidate
        .is_zero());
}

#[test]
fn explain_scope_has_no_listener_requirements() {
    let w = world();
    let h = head("GET", "/example.com/pub/@v/list", &[]);
    assert!(!run(&w, None, &h, "10.0.0.1", &anonymous()).is_refused());
    assert!(run(&w, Some(&w.strict), &h, "10.0.0.1", &anonymous()).is_refused());
}

#[test]
fn identity_refusals_map_to_status_and_metric() {
    use std::time::Duration;
    let r = Refusal::Identity(IdentityError::Throttled {
        scope: modgate_identity::Scope::Source,
        retry_after: Duration::from_millis(200),
    });
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers(), vec![("Retry-After", "1".to_string())]);
    assert_eq!(r.auth_failure(), Some("throttled"));
    let r = Refusal::Identity(IdentityError::CertificateRequired);
    assert_eq!((r.status(), r.headers()), (403, vec![]));
    assert_eq!(r.audit(), AuditDecision::Unauthenticated);
    let r = Refusal::Identity(IdentityError::Malformed("x".into()));
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()[0].0, "WWW-Authenticate");
    assert_eq!(Refusal::IdentityRequired.auth_failure(), Some("missing"));
    assert_eq!(Refusal::BadRequest(String::new()).auth_failure(), None);
}

/// A world whose gateway has a users file, with listeners behind a trusted front proxy
/// (`10.0.0.0/8`): the go command's anonymous 401s there carry a `.netrc` hint.
fn netrc_world(dir: &Path) -> World {
    let hash = bcrypt::hash("pw", 4).expect("bcrypt");
    std::fs::write(dir.join("users"), format!("alice:{hash}\n")).expect("users file");
    let text = CONFIG.replace(
        "upstreams:\n",
        "  - { name: edge, address: \"127.0.0.1:7072\", trusted_proxies: [\"10.0.0.0/8\"] }\n  \
         - name: edge-strict\n    address: \"127.0.0.1:7073\"\n    \
         trusted_proxies: [\"10.0.0.0/8\"]\n    require_identity: true\n\
         auth: { users_file: users }\nupstreams:\n",
    );
    let config = config::parse(&text, "test.yaml", dir).expect("config");
    let gateway = Gateway::new(&config).expect("gateway");
    let listener = |name: &str| {
        let l = config
            .listeners
            .iter()
            .find(|l| l.name.0 == name)
            .expect("listener");
        listener_runtime(l, &[], None, Default::default())
    };
    World {
        gateway,
        ttl: Ttls::default(),
        plain: listener("edge"),
        strict: listener("edge-strict"),
    }
}

#[test]
fn anonymous_401s_tell_the_go_command_what_its_netrc_needs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = netrc_world(dir.path());
    let plain_strict = world().strict;
    let edge = Some(&w.plain);
    let edge_strict = Some(&w.strict);
    const GO: &str = "Go-http-client/2.0";
    const LIST: &str = "/corp.example.com/open/@v/list";
    const DENIED: &str = "anonymous may not read corp.example.com/open (list): no role grants \
                          access to private route \"corp\" (rule private-default)";
    const REQUIRED: &str = "authentication required: present a client certificate (modgate \
                            agent) or .netrc credentials";
    const MACHINE: &str = "; for .netrc, the go command looks for \"machine gw.corp:8443\" \
                           (host and port as in GOPROXY)";
    // (listener, peer, User-Agent, Host, identity, the whole message)
    type Case<'a> = (
        Option<&'a ListenerRuntime>,
        &'a str,
        &'a str,
        &'a str,
        RequestIdentity,
        String,
    );
    let cases: Vec<Case> = vec![
        // Through the trusted front proxy: the machine the go command looks for is the Host
        // it sent, port included.
        (
            edge,
            "10.0.0.1",
            GO,
            "gw.corp:8443",
            anonymous(),
            format!("{DENIED}{MACHINE}"),
        ),
        (
            edge_strict,
            "10.0.0.1",
            "Go-http-client/1.1",
            "gw.corp:8443",
            anonymous(),
            format!("{REQUIRED}{MACHINE}"),
        ),
        (
            edge,
            "10.0.0.1",
            GO,
            "gw.corp",
            anonymous(),
            format!(
                "{DENIED}; for .netrc, the go command looks for \"machine gw.corp\" (host and \
                 port as in GOPROXY)"
            ),
        ),
        // A Host that is not a host[:port] is not echoed.
        (
            edge,
            "10.0.0.1",
            GO,
            "gw.corp/\"x\"",
            anonymous(),
            format!(
                "{DENIED}; for .netrc, the go command looks for \"machine <host>:<port>\" as \
                 in GOPROXY"
            ),
        ),
        // Plain HTTP straight from the client: the go command never sends .netrc there.
        (
            Some(&plain_strict),
            "10.0.0.1",
            GO,
            "gw.corp:8080",
            anonymous(),
            format!("{REQUIRED}; the go command sends .netrc credentials over https only"),
        ),
        (
            edge,
            "192.0.2.1",
            GO,
            "gw.corp:8080",
            anonymous(),
            format!("{DENIED}; the go command sends .netrc credentials over https only"),
        ),
        // Not the go command (curl matches `machine` without the port): no hint.
        (
            edge,
            "10.0.0.1",
            "curl/8.5.0",
            "gw.corp:8443",
            anonymous(),
            DENIED.to_string(),
        ),
        (
            edge,
            "10.0.0.1",
            "",
            "gw.corp:8443",
            anonymous(),
            DENIED.to_string(),
        ),
        // Not anonymous: a 403, no hint.
        (
            edge,
            "10.0.0.1",
            GO,
            "gw.corp:8443",
            user("bob"),
            "bob may not read corp.example.com/open (list): no role grants access to private \
             route \"corp\" (rule private-default)"
                .to_string(),
        ),
        // `modgate explain` asks about no client.
        (
            None,
            "10.0.0.1",
            GO,
            "gw.corp:8443",
            anonymous(),
            DENIED.to_string(),
        ),
    ];
    for (listener, peer, agent, host, id, message) in cases {
        let mut headers = vec![("Host", host)];
        if !agent.is_empty() {
            headers.push(("User-Agent", agent));
        }
        let h = head("GET", LIST, &headers);
        let a = run(&w, listener, &h, peer, &id);
        let r = refusal(&a);
        let what = format!("{agent:?} {host:?} from {peer}: {r:?}");
        assert_eq!(r.message(), message, "{what}");
        assert!(!r.message().contains('\n'), "{what}");
        let anonymous = id.principal.is_anonymous();
        assert_eq!(r.status(), if anonymous { 401 } else { 403 }, "{what}");
        if anonymous {
            assert_eq!(
                r.headers(),
                vec![("WWW-Authenticate", BASIC_CHALLENGE.to_string())],
                "{what}"
            );
            assert_eq!(r.audit(), AuditDecision::Unauthenticated, "{what}");
        }
    }
    // The hint changes nothing else: the missing identity is still counted as missing.
    let h = head("GET", LIST, &[("Host", "gw.corp:8443"), ("User-Agent", GO)]);
    let a = run(&w, Some(&w.strict), &h, "10.0.0.1", &anonymous());
    assert!(matches!(refusal(&a), Refusal::Hinted { .. }));
    assert_eq!(refusal(&a).auth_failure(), Some("missing"));
    // Without a users file no `.netrc` entry could help: no hint.
    let w = world();
    let h = head("GET", LIST, &[("Host", "gw.corp:8080"), ("User-Agent", GO)]);
    let a = run(&w, Some(&w.strict), &h, "10.0.0.1", &anonymous());
    assert_eq!(refusal(&a).message(), REQUIRED);
}

/// A gateway with a git upstream (Git hosts resolve repository names case-insensitively, and
/// some servers read `;` or `\` in paths their own way).
fn git_world() -> World {
    let text = r#"
listeners:
  - { name: plain, address: "127.0.0.1:7070" }
upstreams:
  corp-git:
    kind: git
    url: "https://git.corp.example"
    module: "git.corp.example/{group}/{repo}"
    repo: "{group}/{repo}.git"
    private: true
routes:
  - { name: git, match: { prefix: git.corp.example }, chain: [corp-git], private: true }
access:
  default: deny
  roles:
    - name: devs
      members: [ { user: alice } ]
      rules:
        - { id: git-secret, deny: { prefix: git.corp.example/secret } }
        - { id: git-nested, deny: { prefix: git.corp.example/team/repo/internal } }
        - { id: git-glob, deny: { glob: "git.corp.example/team/tools/*/keys" } }
        - id: git-old
          deny: { prefix: git.corp.example/team/legacy }
          versions: "<v2.0.0"
        - id: git-zips
          deny: { prefix: git.corp.example/team/zipless }
          kinds: [zip]
        - { id: git-read, allow: { prefix: git.corp.example } }
"#;
    world_of(text)
}

#[test]
fn other_spellings_of_a_denied_repository_are_denied_too() {
    let w = git_world();
    let alice = user("alice");
    for (method, target) in [
        // The module proxy protocol: `!s!e!c!r!e!t` is `SECRET`.
        ("GET", "/git.corp.example/!s!e!c!r!e!t/x/@v/list"),
        ("GET", "/git.corp.example/!secret/x/@v/v1.0.0.zip"),
        // git smart HTTP, and ?go-get=1.
        (
            "GET",
            "/git.corp.example/SECRET/x.git/info/refs?service=git-upload-pack",
        ),
        ("POST", "/git.corp.example/Secret/x/git-upload-pack"),
        ("GET", "/git.corp.example/SECRET/x?go-get=1"),
    ] {
        let h = head(method, target, &[]);
        let a = run(&w, Some(&w.plain), &h, "10.0.0.1", &alice);
        let r = refusal(&a);
        assert_eq!(r.status(), 403, "{target}: {r:?}");
        assert!(
            r.message().contains("git-secret"),
            "{target}: {}",
            r.message()
        );
    }
    // The allowed spelling still works.
    let h = head(
        "GET",
        "/git.corp.example/open/x.git/info/refs?service=git-upload-pack",
        &[],
    );
    assert!(!run(&w, Some(&w.plain), &h, "10.0.0.1", &alice).is_refused());
}

#[test]
fn git_paths_that_are_not_module_paths_are_not_forwarded() {
    let w = git_world();
    let alice = user("alice");
    for target in [
        "/git.corp.example/secret;a/x.git/info/refs?service=git-upload-pack",
        "/git.corp.example/team/x\\..\\..\\secret\\x.git/info/refs?service=git-upload-pack",
        "/git.corp.example/x@y:z/r.git/info/refs?service=git-upload-pack",
        "/git.corp.example/secret./x.git/info/refs?service=git-upload-pack",
    ] {
        let h = head("GET", target, &[]);
        let a = run(&w, Some(&w.plain), &h, "10.0.0.1", &alice);
        assert!(
            !matches!(a.verdict, Verdict::Git { .. }),
            "{target} forwarded: {:?}",
            a.verdict
        );
    }
}

#[test]
fn a_go_get_page_names_only_a_real_host() {
    let w = git_world();
    let alice = user("alice");
    let page = |host: &str| {
        let h = head(
            "GET",
            "/git.corp.example/open/x?go-get=1",
            &[("Host", host)],
        );
        run(&w, Some(&w.plain), &h, "10.0.0.1", &alice).verdict
    };
    match page("modgate.corp.example:8443") {
        Verdict::Answer(Local::GoImport { root, proxy }) => {
            assert_eq!(root, "git.corp.example/open/x");
            assert_eq!(proxy, "http://modgate.corp.example:8443");
        }
        other => panic!("{other:?}"),
    }
    match page("h.example  mod https://evil.example/x") {
        Verdict::Refuse(r) => assert_eq!(r.status(), 400, "{r:?}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_go_get_path_without_a_host_is_for_the_host_the_request_names() {
    let w = git_world();
    let alice = user("alice");
    let page = |h: &http::request::Parts| run(&w, Some(&w.plain), h, "10.0.0.1", &alice).verdict;
    // HTTP/1.1: the Host header names it.
    let h1 = head(
        "GET",
        "/open/x?go-get=1",
        &[("Host", "git.corp.example:8443")],
    );
    // HTTP/2 (`go` over https): `:authority` names it, and there is no Host header.
    let h2 = head("GET", "https://git.corp.example:8443/open/x?go-get=1", &[]);
    for h in [h1, h2] {
        match page(&h) {
            Verdict::Answer(Local::GoImport { root, proxy }) => {
                assert_eq!(root, "git.corp.example/open/x", "{h:?}");
                assert_eq!(proxy, "http://git.corp.example:8443", "{h:?}");
            }
            other => panic!("{h:?}: {other:?}"),
        }
    }
}

#[test]
fn a_clone_is_refused_when_the_repository_holds_something_denied() {
    let w = git_world();
    let alice = user("alice");
    let clone = |repo: &str| {
        let h = head(
            "GET",
            &format!("/git.corp.example/{repo}.git/info/refs?service=git-upload-pack"),
            &[],
        );
        run(&w, Some(&w.plain), &h, "10.0.0.1", &alice)
    };
    // A deny on a nested module, a glob reaching inside, a version range: a clone would carry
    // them all, so it is refused, naming the rule.
    for (repo, rule) in [
        ("team/repo", "git-nested"),
        ("team/tools", "git-glob"),
        ("team/legacy", "git-old"),
        ("team/zipless", "git-zips"),
    ] {
        let a = clone(repo);
        let r = refusal(&a);
        assert_eq!(r.status(), 403, "{repo}: {r:?}");
        assert!(r.message().contains(rule), "{repo}: {}", r.message());
    }
    // The module proxy still serves what is allowed inside them.
    let h = head("GET", "/git.corp.example/team/repo/@v/list", &[]);
    assert!(!run(&w, Some(&w.plain), &h, "10.0.0.1", &alice).is_refused());
    // A repository with nothing denied inside clones.
    assert!(matches!(clone("team/other").verdict, Verdict::Git { .. }));
}

/// A git upstream whose repository template has no `.git` (the host folds `x`, `x.git` and,
/// for a wiki, `x.wiki` onto one repository), a deny on a repository, denies of every pattern
/// kind on modules nested inside repositories, and a second identity holding a deny regex
/// that reaches inside every repository.
fn alias_world() -> World {
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
  default: deny
  roles:
    - name: devs
      members: [ { user: alice } ]
      rules:
        - { id: git-secret, deny: { prefix: git.corp.example/team/secret } }
        - { id: open-internal, deny: { prefix: git.corp.example/team/open/internal } }
        - { id: globbed-internal, deny: { glob: "git.corp.example/team/globbed/*/keys" } }
        - { id: rx-internal, deny: { regex: 'git\.corp\.example/team/rx/internal(/.*)?' } }
        - { id: rx-sibling, deny: { regex: 'git\.corp\.example/team/other-[a-z]+' } }
        - { id: git-read, allow: { prefix: git.corp.example } }
    - name: strict
      members: [ { user: bob } ]
      rules:
        - { id: any-internal, deny: { regex: '.*/internal' } }
        - { id: bob-read, allow: { prefix: git.corp.example } }
    - name: narrow
      members: [ { user: carol } ]
      rules:
        - { id: narrow-root, allow: { regex: 'git\.corp\.example/team/narrow' } }
        - { id: wide-tree, allow: { regex: 'git\.corp\.example/team/wide(/.*)?' } }
"#;
    world_of(text)
}

/// Every path kind a repository is reached by, for a spelling of `team/<repo>` (as the module
/// path is written; `!x` is the GOPROXY escape of `X`).
fn every_path(repo: &str) -> Vec<(&'static str, String)> {
    let escaped: String = repo
        .chars()
        .flat_map(|c| {
            if c.is_ascii_uppercase() {
                vec!['!', c.to_ascii_lowercase()]
            } else {
                vec![c]
            }
        })
        .collect();
    let base = "/git.corp.example/team";
    vec![
        ("GET", format!("{base}/{escaped}/@v/list")),
        ("GET", format!("{base}/{escaped}/@latest")),
        ("GET", format!("{base}/{escaped}/@v/v1.0.0.info")),
        ("GET", format!("{base}/{escaped}/@v/v1.0.0.mod")),
        ("GET", format!("{base}/{escaped}/@v/v1.0.0.zip")),
        ("GET", format!("{base}/{escaped}/sub/@v/v1.0.0.zip")),
        ("GET", format!("{base}/{repo}?go-get=1")),
        ("GET", format!("{base}/{repo}/sub?go-get=1")),
        (
            "GET",
            format!("{base}/{repo}.git/info/refs?service=git-upload-pack"),
        ),
        (
            "GET",
            format!("{base}/{repo}/info/refs?service=git-upload-pack"),
        ),
        ("POST", format!("{base}/{repo}.git/git-upload-pack")),
        ("POST", format!("{base}/{repo}/git-upload-pack")),
    ]
}

#[test]
fn every_spelling_a_git_host_folds_onto_a_denied_repository_is_denied_on_every_path() {
    let w = alias_world();
    let alice = user("alice");
    for spelling in [
        "secret",
        "secret.git",
        "secret.wiki",
        "secret.git.git",
        "secret.wiki.git",
        "Secret.git",
        "SECRET.GIT",
        "secret.Git",
        "SECRET.Wiki",
    ] {
        for (method, target) in every_path(spelling) {
            let h = head(method, &target, &[]);
            let a = run(&w, Some(&w.plain), &h, "10.0.0.1", &alice);
            let r = refusal(&a);
            assert_eq!(r.status(), 403, "{method} {target}: {r:?}");
            assert!(
                r.message().contains("git-secret"),
                "{method} {target}: {}",
                r.message()
            );
            assert_eq!(r.audit(), AuditDecision::Deny, "{target}");
        }
    }
    // Nested module paths under an alias are decided as the repository's own.
    for target in [
        "/git.corp.example/team/open.git/internal/@v/list",
        "/git.corp.example/team/!open.git/internal/@v/v1.0.0.zip",
        "/git.corp.example/team/open.wiki/internal/x/@v/list",
        "/git.corp.example/team/open.git/internal?go-get=1",
    ] {
        let h = head("GET", target, &[]);
        let a = run(&w, Some(&w.plain), &h, "10.0.0.1", &alice);
        let r = refusal(&a);
        assert!(
            r.message().contains("open-internal"),
            "{target}: {}",
            r.message()
        );
    }
    // What is allowed stays allowed under every spelling: a repository whose name merely
    // contains an alias, and the aliases of an allowed repository on the module proxy.
    for target in [
        "/git.corp.example/team/secretive/@v/list",
        "/git.corp.example/team/git/@v/list",
        "/git.corp.example/team/open.git/@v/list",
        "/git.corp.example/team/!open.wiki/@v/list",
        "/git.corp.example/team/tools.git/info/refs?service=git-upload-pack",
    ] {
        let h = head("GET", target, &[]);
        let a = run(&w, Some(&w.plain), &h, "10.0.0.1", &alice);
        assert!(!a.is_refused(), "{target}: {:?}", a.verdict);
    }
}

#[test]
fn a_clone_is_refused_when_any_deny_could_match_inside_it_for_every_spelling() {
    let w = alias_world();
    let clone = |who: &RequestIdentity, repo: &str| {
        let h = head(
            "GET",
            &format!("/git.corp.example/team/{repo}/info/refs?service=git-upload-pack"),
            &[],
        );
        run(&w, Some(&w.plain), &h, "10.0.0.1", who)
    };
    let alice = user("alice");
    for (repo, rule) in [
        ("open", "open-internal"),
        ("globbed", "globbed-internal"),
        ("rx", "rx-internal"),
    ] {
        let upper = repo.to_ascii_uppercase();
        let mut title = repo.to_string();
        title[..1].make_ascii_uppercase();
        for spelling in [
            repo.to_string(),
            format!("{repo}.git"),
            format!("{repo}.git.git"),
            format!("{title}.git"),
            upper.clone(),
            format!("{upper}.GIT.git"),
            format!("{repo}.wiki.git"),
        ] {
            let a = clone(&alice, &spelling);
            let r = refusal(&a);
            assert_eq!(r.status(), 403, "{spelling}: {r:?}");
            assert!(r.message().contains(rule), "{spelling}: {}", r.message());
        }
        // The module proxy still serves the repository's own module.
        let h = head(
            "GET",
            &format!("/git.corp.example/team/{repo}/@v/list"),
            &[],
        );
        assert!(
            !run(&w, Some(&w.plain), &h, "10.0.0.1", &alice).is_refused(),
            "{repo}"
        );
    }
    // A regex that cannot match inside the repository does not refuse its clone.
    for spelling in ["other.git", "Other.git", "other"] {
        assert!(
            matches!(clone(&alice, spelling).verdict, Verdict::Git { .. }),
            "{spelling}"
        );
    }
    // A regex that reaches inside every repository refuses every clone, while the module
    // proxy serves what it does not match.
    let bob = user("bob");
    for spelling in ["other.git", "OTHER.git", "tools"] {
        let a = clone(&bob, spelling);
        assert!(
            refusal(&a).message().contains("any-internal"),
            "{spelling}: {}",
            refusal(&a).message()
        );
    }
    let h = head("GET", "/git.corp.example/team/other/@v/list", &[]);
    assert!(!run(&w, Some(&w.plain), &h, "10.0.0.1", &bob).is_refused());
}

#[test]
fn the_forwarded_clone_names_the_repository_as_spelled() {
    // The alias goes to the host as written (the host resolves it): only the decision folds.
    let w = alias_world();
    let h = head(
        "GET",
        "/git.corp.example/team/tools.git/info/refs?service=git-upload-pack",
        &[],
    );
    match run(&w, Some(&w.plain), &h, "10.0.0.1", &user("alice")).verdict {
        Verdict::Git { path, .. } => {
            assert_eq!(path, "/team/tools/info/refs?service=git-upload-pack")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn repo_aliases_are_configured_per_git_upstream_and_git_always_applies() {
    let text = |aliases: &str, kind: &str| {
        format!(
            r#"
listeners:
  - {{ name: plain, address: "127.0.0.1:7070" }}
upstreams:
  corp-git:
    {kind}
    url: "https://git.corp.example"
    module: "git.corp.example/{{group}}/{{repo}}"
    repo: "{{group}}/{{repo}}"
    private: true
    repo_aliases: {aliases}
routes:
  - {{ name: git, match: {{ prefix: git.corp.example }}, chain: [corp-git], private: true }}
access:
  default: deny
  roles:
    - name: devs
      members: [ {{ user: alice }} ]
      rules:
        - {{ id: git-secret, deny: {{ prefix: git.corp.example/team/secret }} }}
        - {{ id: git-read, allow: {{ prefix: git.corp.example }} }}
"#
        )
    };
    let w = world_of(&text(r#"[".mirror"]"#, "kind: git"));
    let alice = user("alice");
    let list = |repo: &str| {
        let h = head(
            "GET",
            &format!("/git.corp.example/team/{repo}/@v/list"),
            &[],
        );
        run(&w, Some(&w.plain), &h, "10.0.0.1", &alice).is_refused()
    };
    assert!(list("secret.mirror"));
    assert!(list("secret.git"));
    // Not listed: `.wiki` is another repository's name here.
    assert!(!list("secret.wiki"));
    // Refused: a suffix that is not one, and aliases on a module proxy.
    for (aliases, kind) in [
        (r#"["wiki"]"#, "kind: git"),
        (r#"[".a/b"]"#, "kind: git"),
        (r#"["."]"#, "kind: git"),
        (r#"[".wiki"]"#, "kind: proxy"),
    ] {
        let config = config::parse(&text(aliases, kind), "test.yaml", Path::new("/tmp"));
        let refused = match config {
            Err(e) => e.to_string(),
            Ok(c) => match Gateway::new(&c) {
                Err(e) => e.to_string(),
                Ok(_) => panic!("{aliases} on {kind} accepted"),
            },
        };
        assert!(refused.contains("repo_aliases"), "{aliases}: {refused}");
    }
}

#[test]
fn a_clone_is_refused_unless_everything_inside_it_is_allowed() {
    // Under a denying default, what no rule allows is refused on the module proxy; a clone
    // would carry it, so the allow must cover everything inside the repository.
    let w = alias_world();
    let carol = user("carol");
    let req = |target: &str| {
        let h = head("GET", target, &[]);
        run(&w, Some(&w.plain), &h, "10.0.0.1", &carol)
    };
    assert!(req("/git.corp.example/team/narrow/internal/@v/list").is_refused());
    assert!(!req("/git.corp.example/team/narrow/@v/list").is_refused());
    for target in [
        "/git.corp.example/team/narrow.git/info/refs?service=git-upload-pack",
        "/git.corp.example/team/narrow/git-upload-pack",
    ] {
        let h = head(
            if target.contains("info/refs") {
                "GET"
            } else {
                "POST"
            },
            target,
            &[],
        );
        let a = run(&w, Some(&w.plain), &h, "10.0.0.1", &carol);
        let r = refusal(&a);
        assert_eq!(r.status(), 403, "{target}: {r:?}");
        assert!(
            r.message().contains("narrow-root"),
            "{target}: {}",
            r.message()
        );
    }
    for target in [
        "/git.corp.example/team/wide.git/info/refs?service=git-upload-pack",
        "/git.corp.example/team/wide/git-upload-pack",
    ] {
        let h = head(
            if target.contains("info/refs") {
                "GET"
            } else {
                "POST"
            },
            target,
            &[],
        );
        let a = run(&w, Some(&w.plain), &h, "10.0.0.1", &carol);
        assert!(
            matches!(a.verdict, Verdict::Git { .. }),
            "{target}: {:?}",
            a.verdict
        );
    }
}

/// a deny written with the host's own capitalisation (GitHub-style `Team/Secret`)
/// must hold for every case spelling the Git host folds onto that repository.
#[test]
fn a_deny_written_in_upper_case_holds_for_the_lower_case_spelling() {
    let text = r#"
listeners:
  - { name: plain, address: "127.0.0.1:7070" }
upstreams:
  corp-git:
    kind: git
    url: "https://git.corp.example"
    module: "git.corp.example/{group}/{repo}"
    repo: "{group}/{repo}.git"
    private: true
routes:
  - { name: git, match: { prefix: git.corp.example }, chain: [corp-git], private: true }
access:
  default: deny
  roles:
    - name: devs
      members: [ { user: alice } ]
      rules:
        - { id: upper-prefix, deny: { prefix: git.corp.example/Team/Secret } }
        - { id: upper-regex, deny: { regex: 'git\.corp\.example/Team/Rx(/.*)?' } }
        - { id: upper-glob, deny: { glob: 'git.corp.example/Team/Glob' } }
        - { id: git-read, allow: { prefix: git.corp.example } }
"#;
    let w = world_of(text);
    let alice = user("alice");
    let mut served = Vec::new();
    for target in [
        "/git.corp.example/!team/!secret/@v/v1.0.0.zip",
        "/git.corp.example/team/secret/@v/v1.0.0.zip",
        "/git.corp.example/team/secret/@v/list",
        "/git.corp.example/team/secret?go-get=1",
        "/git.corp.example/team/secret.git/@v/v1.0.0.zip",
        "/git.corp.example/team/rx/@v/v1.0.0.zip",
        "/git.corp.example/team/glob/@v/v1.0.0.zip",
        "/git.corp.example/team/secret.git/info/refs?service=git-upload-pack",
    ] {
        let h = head("GET", target, &[]);
        let a = run(&w, Some(&w.plain), &h, "10.0.0.1", &alice);
        if !a.is_refused() {
            served.push(target);
        }
    }
    assert!(served.is_empty(), "served: {served:#?}");
}

/// more spellings, all refused. (`open/internal.git` is a different directory
/// of the repository than `open/internal`, so it is rightly not folded.)
#[test]
fn more_spellings_of_a_denied_repository() {
    let w = alias_world();
    let alice = user("alice");
    let mut served = Vec::new();
    for (method, target) in [
        ("GET", "/git.corp.example/team/secret.git/v2/@v/v2.0.0.zip"),
        ("GET", "/git.corp.example/team/!secret.!g!i!t/@v/list"),
        ("GET", "/git.corp.example/team/secret.wiki.wiki/@v/list"),
        ("GET", "/git.corp.example/!t!e!a!m.git/secret/@v/list"),
        ("GET", "/git.corp.example/team.wiki/secret.git/@v/list"),
        ("GET", "/git.corp.example/team/secre%74/@v/list"),
        ("GET", "/git.corp.example/team/secret%2egit/@v/list"),
        ("GET", "/git.corp.example/team/x/../secret/@v/list"),
        ("GET", "/git.corp.example/team/./secret/@v/list"),
        ("GET", "/git.corp.example//team/secret/@v/list"),
        (
            "GET",
            "/git.corp.example/team/secret/@v/v0.0.0-20200101000000-abcdefabcdef.zip",
        ),
        ("GET", "/git.corp.example/team/secret/@v/master.info"),
        ("POST", "/git.corp.example/team/SECRET.GIT/git-upload-pack"),
        (
            "GET",
            "/git.corp.example/team/secret.GIT.git/info/refs?service=git-upload-pack",
        ),
        (
            "GET",
            "/git.corp.example/team/secret.git/info/refs?service=git-upload-pack&service=x",
        ),
        (
            "GET",
            "/git.corp.example/team/secret.git/./info/refs?service=git-upload-pack",
        ),
        (
            "GET",
            "/git.corp.example/team/open/../secret/info/refs?service=git-upload-pack",
        ),
        (
            "GET",
            "/git.corp.example/team/secret.wiki/info/refs?service=git-upload-pack",
        ),
        (
            "GET",
            "/git.corp.example/TEAM/Secret.Wiki.Git/info/refs?service=git-upload-pack",
        ),
        ("GET", "/git.corp.example/team/OPEN/INTERNAL/@v/list"),
        ("GET", "/git.corp.example/team/rx/INTERNAL/@v/list"),
        ("GET", "/git.corp.example/team/rx.git/internal/@v/list"),
        ("GET", "/git.corp.example/team/globbed/x/KEYS/@v/list"),
    ] {
        let h = head(method, target, &[("Host", "gw.example")]);
        let a = run(&w, Some(&w.plain), &h, "10.0.0.1", &alice);
        if !a.is_refused() {
            served.push(format!("{method} {target} -> {:?}", a.verdict));
        }
    }
    assert!(served.is_empty(), "served: {served:#?}");
}

/// A private git route matched below the host: another case spelling of the group (which the
/// Git host folds onto the same group) must not miss the private route and go to the public
/// one (a private module path sent to the public proxy and checksum database; second review).
#[test]
fn a_case_spelling_does_not_leave_a_private_git_route() {
    let text = r#"
listeners:
  - { name: plain, address: "127.0.0.1:7070" }
upstreams:
  public: { url: "http://127.0.0.1:9001" }
  corp-git:
    kind: git
    url: "https://git.corp.example"
    module: "git.corp.example/{group}/{repo}"
    repo: "{group}/{repo}.git"
    private: true
routes:
  - { name: team, match: { prefix: git.corp.example/team }, chain: [corp-git], private: true }
  - { name: public, match: { prefix: "" }, chain: [public] }
sumdb:
  sum.golang.org: { url: "http://127.0.0.1:9004" }
access:
  default: allow
  roles:
    - name: devs
      members: [ { user: alice } ]
      rules:
        - { id: team-read, allow: { prefix: git.corp.example/team } }
"#;
    let w = world_of(text);
    let alice = user("alice");
    let mut leaked = Vec::new();
    for target in [
        "/git.corp.example/!t!e!a!m/secret/@v/list",
        "/sumdb/sum.golang.org/lookup/git.corp.example/!t!e!a!m/secret@v1.0.0",
    ] {
        let h = head("GET", target, &[]);
        let a = run(&w, Some(&w.plain), &h, "10.0.0.1", &alice);
        if !a.is_refused() {
            let route = a.route.map(|i| w.gateway.routes.routes()[i].name.clone());
            leaked.push(format!("{target} -> route {route:?} {:?}", a.verdict));
        }
    }
    assert!(leaked.is_empty(), "{leaked:#?}");
}

/// The case rule never moves a path away from a private route: a private route written with
/// capitals keeps its own spelling even when the lower-cased path would match a public route
/// to a case-folding server (a templated per-project proxy).
#[test]
fn a_case_spelling_never_moves_a_path_off_a_private_route() {
    let text = r#"
listeners:
  - { name: plain, address: "127.0.0.1:7070" }
upstreams:
  hub:
    url: "http://127.0.0.1:9001/projects/{group}%2F{repo}"
    module: "git.corp.example/{group}/{repo}"
  corp-git:
    kind: git
    url: "https://git.corp.example"
    module: "git.corp.example/{group}/{repo}"
    repo: "{group}/{repo}.git"
    private: true
routes:
  - { name: mine, match: { prefix: git.corp.example/MyCorp }, chain: [corp-git], private: true }
  - { name: hub, match: { prefix: git.corp.example }, chain: [hub] }
access:
  default: allow
  roles:
    - name: devs
      members: [ { user: alice } ]
      rules:
        - { id: all, allow: { prefix: git.corp.example } }
"#;
    let w = world_of(text);
    let alice = user("alice");
    let name = |a: &Admission| a.route.map(|i| w.gateway.routes.routes()[i].name.clone());
    let h = head("GET", "/git.corp.example/!my!corp/x/@v/list", &[]);
    let a = run(&w, Some(&w.plain), &h, "10.0.0.1", &alice);
    assert_eq!(name(&a).as_deref(), Some("mine"), "{:?}", a.verdict);
    // A public spelling stays public.
    let h = head("GET", "/git.corp.example/!other/x/@v/list", &[]);
    let a = run(&w, Some(&w.plain), &h, "10.0.0.1", &alice);
    assert_eq!(name(&a).as_deref(), Some("hub"), "{:?}", a.verdict);
}

/// Issue 18, item 10: a tag under a rule limited to `commits` waits for its commit
/// (`commit_needed`), and admitted again with the commit it is denied, with the commit named;
/// a pseudo-version names its commit itself; other modules and kinds the rule leaves out never
/// wait.
#[test]
fn a_tag_under_a_commit_rule_is_decided_with_its_commit() {
    const HASH: &str = "05db99cda9e5f3b1c2d3e4f5a6b7c8d9e0f1a2b3";
    let text = CONFIG.replace(
        "        - { id: corp-secret, deny: { prefix: corp.example.com/secret } }\n",
        "        - { id: corp-secret, deny: { prefix: corp.example.com/secret } }\n        \
         - { id: bad-commit, deny: { prefix: corp.example.com/open/lib }, kinds: [mod, zip], \
         commits: [\"05db99cda9e5\"] }\n        \
         - { id: secret-commit, deny: { prefix: corp.example.com/secret }, \
         commits: [\"05db99cda9e5\"] }\n",
    );
    let w = world_of(&text);
    let alice = user("alice");
    let scope = Scope {
        gateway: &w.gateway,
        ttl: &w.ttl,
        caching: true,
        listener: Some(&w.plain),
        refresh: false,
        now: 1_700_000_000,
    };
    let ask = |target: &str, commit: Option<&str>| {
        let h = head("GET", target, &[]);
        admit(
            &scope,
            &Inbound {
                head: &h,
                peer: None,
                commit,
            },
            &alice,
        )
    };
    let tag = "/corp.example.com/open/lib/@v/v1.0.0.zip";
    let first = ask(tag, None);
    assert!(first.commit_needed);
    assert!(
        matches!(first.verdict, Verdict::Forward { .. }),
        "{first:?}"
    );
    let again = ask(tag, Some(HASH));
    assert!(!again.commit_needed);
    let r = refusal(&again);
    assert_eq!(r.status(), 403);
    assert!(
        r.message()
            .contains(&format!("v1.0.0 (.zip) at commit {HASH}"))
            && r.message().contains("bad-commit"),
        "{}",
        r.message()
    );
    let elsewhere = ask(tag, Some("1111111111111111111111111111111111111111"));
    assert!(matches!(elsewhere.verdict, Verdict::Forward { .. }));
    for target in [
        "/corp.example.com/open/lib/@v/v0.0.0-20240315101112-05db99cda9e5.zip",
        "/corp.example.com/open/lib/@v/v1.0.0.info",
        "/corp.example.com/open/other/@v/v1.0.0.zip",
        "/corp.example.com/open/lib/@v/list",
    ] {
        assert!(!ask(target, None).commit_needed, "{target}");
    }
    // A request a deny rule already refuses asks nothing upstream: no commit can allow it.
    let secret = ask("/corp.example.com/secret/@v/v1.0.0.zip", None);
    assert!(!secret.commit_needed);
    assert_eq!(refusal(&secret).status(), 403);
    // The pseudo-version of the commit is denied without any resolution.
    let pseudo = ask(
        "/corp.example.com/open/lib/@v/v0.0.0-20240315101112-05db99cda9e5.zip",
        None,
    );
    assert_eq!(refusal(&pseudo).status(), 403);
}
