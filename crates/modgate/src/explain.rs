//! `modgate explain <module>[@version] [--kind K]`: which route and upstream chain a request
//! would take, decided by the same parser and route table the proxy uses.

use std::fmt::Write;

use modgate_protocol::{escape_path, escape_version, GoProxyRequest, RequestKind};

use crate::gateway::Gateway;

/// Builds the request line the `go` command would send and explains what modgate does with it.
pub fn explain(
    gateway: &Gateway,
    prefix: &str,
    target: &str,
    kind: Option<RequestKind>,
) -> Result<String, String> {
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
    let request = match gateway.parser.parse(&path) {
        Ok(GoProxyRequest::Module(r)) => r,
        Ok(_) => return Err(format!("{path} is not a module request")),
        Err(e) => {
            return Ok(format!(
                "request:  GET {path}\ndecision: {} {e} (never forwarded)\n",
                e.status()
            ))
        }
    };
    let mut out = String::new();
    let _ = writeln!(out, "request:  GET {path}");
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
    match gateway.routes.lookup(&request.module) {
        None => {
            let _ = writeln!(out, "route:    none matches");
            let _ = writeln!(out, "decision: 404 no route for module {}", request.module);
        }
        Some(m) => {
            let route = m.route;
            let _ = writeln!(
                out,
                "route:    #{} {} ({}){}",
                m.index + 1,
                route.name,
                route.pattern,
                if route.private { ", private" } else { "" }
            );
            let _ = writeln!(out, "chain:");
            let last = route.target.steps.len().saturating_sub(1);
            for (i, step) in route.target.steps.iter().enumerate() {
                let then = if i == last {
                    "last step: its answer is final".to_string()
                } else {
                    match step.on {
                        crate::config::Fallthrough::NotFound => {
                            "next step only on 404/410".to_string()
                        }
                        crate::config::Fallthrough::AnyError => {
                            "next step on 404/410, errors and timeouts".to_string()
                        }
                    }
                };
                let _ = writeln!(
                    out,
                    "  {}. {} GET {}{} ({}{})",
                    i + 1,
                    step.upstream.name,
                    step.upstream.url,
                    request.upstream_path(),
                    if step.upstream.private {
                        "private, "
                    } else {
                        ""
                    },
                    then
                );
            }
            let _ = writeln!(out, "decision: forward along the chain");
        }
    }
    Ok(out)
}
