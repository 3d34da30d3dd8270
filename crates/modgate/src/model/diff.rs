//! Compares two configurations field by field ([`diff`]): what a reload applies to the
//! running gateway, and what only a graceful upgrade (`modgate run --upgrade`) can change
//! (listener sockets, threads, the cache's storage, the process files).

use std::collections::BTreeMap;
use std::fmt::Debug;

use crate::config::{self, GatewayConfig, ListenerConfig};

pub(super) fn debug_eq<T: Debug>(a: &T, b: &T) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

/// Named entries added, removed and changed between two maps.
fn diff_named<T: Debug>(
    what: &str,
    old: &BTreeMap<String, T>,
    new: &BTreeMap<String, T>,
    out: &mut Vec<String>,
) {
    for (name, n) in new {
        match old.get(name) {
            None => out.push(format!("{what} {name:?} added")),
            Some(o) if !debug_eq(o, n) => out.push(format!("{what} {name:?} changed")),
            _ => {}
        }
    }
    for name in old.keys().filter(|k| !new.contains_key(*k)) {
        out.push(format!("{what} {name:?} removed"));
    }
}

/// Compares two configurations: (changes a reload applies, changes that need an upgrade).
pub fn diff(old: &GatewayConfig, new: &GatewayConfig) -> (Vec<String>, Vec<String>) {
    let mut live = Vec::new();
    let mut upgrade = Vec::new();
    let by_name = |c: &GatewayConfig| -> BTreeMap<String, String> {
        c.routes
            .iter()
            .map(|r| (r.name.clone(), format!("{r:?}")))
            .collect()
    };
    let (old_routes, new_routes) = (by_name(old), by_name(new));
    diff_named("route", &old_routes, &new_routes, &mut live);
    let order = |c: &GatewayConfig| c.routes.iter().map(|r| r.name.clone()).collect::<Vec<_>>();
    if old_routes.keys().eq(new_routes.keys()) && order(old) != order(new) {
        live.push("routes reordered".to_string());
    }
    diff_named("upstream", &old.upstreams, &new.upstreams, &mut live);
    let sumdbs = |c: &GatewayConfig| -> BTreeMap<String, String> {
        c.sumdb
            .iter()
            .map(|(k, v)| (k.0.clone(), format!("{v:?}")))
            .collect()
    };
    diff_named("sumdb", &sumdbs(old), &sumdbs(new), &mut live);
    let roles = |c: &GatewayConfig| -> BTreeMap<String, String> {
        c.access
            .policy
            .roles()
            .iter()
            .map(|r| (r.name.clone(), format!("{r:?}")))
            .collect()
    };
    let (old_roles, new_roles) = (roles(old), roles(new));
    diff_named("role", &old_roles, &new_roles, &mut live);
    if old_roles == new_roles && !debug_eq(&old.access, &new.access) {
        live.push("access policy changed".to_string());
    }
    if !debug_eq(&old.auth, &new.auth) {
        live.push("auth settings changed".to_string());
    }
    if !debug_eq(&old.audit, &new.audit) {
        live.push("audit settings changed".to_string());
    }
    if !debug_eq(&old.telemetry, &new.telemetry) {
        live.push("telemetry settings changed".to_string());
    }
    if old.log != new.log {
        live.push("log settings changed".to_string());
    }
    match (&old.cache, &new.cache) {
        (Some(o), Some(n)) => {
            if !debug_eq(&o.ttl, &n.ttl) {
                live.push("cache TTLs changed".to_string());
            }
            let storage = |c: &config::CacheConfig| {
                format!(
                    "{:?}",
                    (
                        &c.dir,
                        c.max_size,
                        c.max_object_size,
                        c.memory,
                        c.memory_object_max,
                        &c.lock_timeout,
                        c.ledger_path(),
                        c.fsync
                    )
                )
            };
            if storage(o) != storage(n) {
                upgrade.push(
                    "cache: storage settings (dir, sizes, lock, ledger, fsync) changed".to_string(),
                );
            }
        }
        (None, None) => {}
        _ => upgrade.push("cache: added or removed".to_string()),
    }
    if old.server.path_prefix != new.server.path_prefix {
        live.push("server.path_prefix changed".to_string());
    }
    let process = |s: &config::ServerSettings| {
        format!(
            "{:?}",
            (
                s.threads,
                s.work_stealing,
                &s.grace_period,
                &s.shutdown_timeout,
                &s.pid_file,
                &s.upgrade_sock,
                s.upstream_pool_size,
                s.max_blocking_threads,
                s.git_dir.as_ref().map(|p| &p.0),
                s.git_config.as_ref().map(|p| &p.0),
                (&s.git_not_found_ttl, &s.git_miss_refresh),
            )
        )
    };
    if process(&old.server) != process(&new.server) {
        upgrade.push(
            "server: process settings (threads, work_stealing, pid_file, upgrade_sock, \
             grace_period, shutdown_timeout, upstream_pool_size, max_blocking_threads, git_dir, \
             git_config, git_not_found_ttl, git_miss_refresh) changed"
                .to_string(),
        );
    }
    if old.server.public_url != new.server.public_url {
        live.push("server.public_url changed".to_string());
    }
    fn listeners(c: &GatewayConfig) -> BTreeMap<String, &ListenerConfig> {
        c.listeners.iter().map(|l| (l.name.0.clone(), l)).collect()
    }
    let (old_l, new_l) = (listeners(old), listeners(new));
    for (name, n) in &new_l {
        let Some(o) = old_l.get(name) else {
            upgrade.push(format!("listener {name}: added"));
            continue;
        };
        if o.address.0 != n.address.0 {
            upgrade.push(format!(
                "listener {name}: address changed ({} → {})",
                o.address.0, n.address.0
            ));
        }
        if o.tls.is_some() != n.tls.is_some() {
            upgrade.push(format!("listener {name}: TLS turned on or off"));
        }
        let socket = |l: &ListenerConfig| {
            format!(
                "{:?}",
                (
                    l.http2,
                    l.h2_max_concurrent_streams,
                    l.h2_send_buffer.0,
                    &l.h2_idle_timeout,
                    l.keepalive_requests,
                    &l.tcp_keepalive,
                    &l.idle_timeout,
                    &l.header_timeout,
                    &l.handshake_timeout,
                    l.max_connections,
                    l.max_connections_per_source
                )
            )
        };
        if socket(o) != socket(n) {
            upgrade.push(format!(
                "listener {name}: connection settings (http2, h2_*, keepalive_requests, \
                 tcp_keepalive, idle/header timeouts, connection caps) changed"
            ));
        }
        if !debug_eq(&o.tls, &n.tls) && o.tls.is_some() && n.tls.is_some() {
            live.push(format!("listener {name}: TLS settings changed"));
        }
        let request = |l: &ListenerConfig| {
            format!(
                "{:?}",
                (
                    l.require_identity,
                    &l.trusted_proxies,
                    l.trusted_proxies_force,
                    l.debug_headers,
                    &l.forwarded_headers,
                    &l.keepalive_timeout,
                    l.metrics,
                    l.admin
                )
            )
        };
        if request(o) != request(n) {
            live.push(format!("listener {name}: request settings changed"));
        }
    }
    for name in old_l.keys().filter(|k| !new_l.contains_key(*k)) {
        upgrade.push(format!("listener {name}: removed"));
    }
    (live, upgrade)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn parse(text: &str) -> GatewayConfig {
        config::parse(text, "test.yaml", Path::new("/tmp"))
            .unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    const BASE: &str = r#"
listeners:
  - { name: public, address: "127.0.0.1:8080" }
upstreams:
  a: { url: "http://127.0.0.1:9001" }
  b: { url: "http://127.0.0.1:9002" }
routes:
  - { name: corp, match: { prefix: corp.example.com }, chain: [a] }
  - { name: all, match: { prefix: "" }, chain: [b] }
"#;

    #[test]
    fn identical_files_change_nothing() {
        let (live, upgrade) = diff(&parse(BASE), &parse(BASE));
        assert!(
            live.is_empty() && upgrade.is_empty(),
            "{live:?} {upgrade:?}"
        );
    }

    #[test]
    fn routes_and_upstreams_are_named() {
        let new = BASE
            .replace("chain: [a] }", "chain: [b] }")
            .replace("  b: { url: \"http://127.0.0.1:9002\" }", "  b: { url: \"http://127.0.0.1:9003\" }")
            .replace(
                "  - { name: all,",
                "  - { name: tools, match: { prefix: golang.org/x }, chain: [b] }\n  - { name: all,",
            );
        let (live, upgrade) = diff(&parse(BASE), &parse(&new));
        assert_eq!(
            live,
            [
                "route \"corp\" changed",
                "route \"tools\" added",
                "upstream \"b\" changed"
            ]
        );
        assert!(upgrade.is_empty());
    }

    #[test]
    fn what_a_running_process_cannot_change_is_named() {
        let new = BASE.replace("127.0.0.1:8080", "127.0.0.1:8081").replace(
            "listeners:\n",
            "listeners:\n  - { name: admin, address: \"127.0.0.1:9090\", metrics: true }\n",
        );
        let (live, upgrade) = diff(&parse(BASE), &parse(&new));
        assert!(live.is_empty(), "{live:?}");
        assert_eq!(
            upgrade,
            [
                "listener admin: added",
                "listener public: address changed (127.0.0.1:8080 → 127.0.0.1:8081)"
            ]
        );
    }

    #[test]
    fn roles_are_named() {
        let with_access = |rule: &str| {
            format!(
                "{BASE}access:\n  default: deny\n  roles:\n    - name: devs\n      members: [ any ]\n      rules:\n        - {{ id: r, {rule}: {{ prefix: corp.example.com }} }}\n"
            )
        };
        let (live, _) = diff(&parse(&with_access("allow")), &parse(&with_access("deny")));
        assert_eq!(live, ["role \"devs\" changed"]);
    }
}
