//! Compares two configurations field by field ([`diff`]): what a reload applies to the
//! running gateway, and what only a graceful upgrade (`modgate run --upgrade`) can change
//! (listener sockets, threads, the cache's storage, the process files).
//!
//! The comparison is typed and exhaustive. Each struct whose fields fall on both sides (the
//! file, `server:`, a listener, `cache:`) is taken apart with a full pattern, no `..`, and
//! every field is bound and put on one side: a field added to the file format does not build
//! until it is placed here (a missing field fails the pattern; one bound and left unused fails
//! the lint). What is compared whole (a route, an upstream, a role, the access policy, `auth`,
//! `audit`, `telemetry`, `log`, `rate_limits`, a listener's TLS, the TTLs) derives `PartialEq`, so its new
//! fields are compared with it; the few types that cannot derive it compare by what they were
//! written from (a regex by its source, a policy by its roles and defaults, an upstream client
//! certificate by its file).

// A field bound in a pattern below and compared nowhere is an error, not a warning.
#![deny(unused_variables)]

use std::collections::BTreeMap;
use std::net::SocketAddr;

use modgate_policy::Role;

use crate::config::{
    AccessConfig, CacheConfig, FetchedConfig, GatewayConfig, ListenerConfig, ListenerTls,
    RouteConfig, ServerSettings, SumdbName, UpstreamConfig, UpstreamUrl,
};

/// Named entries added, removed and changed between two maps.
fn diff_named<T: PartialEq>(
    what: &str,
    old: &BTreeMap<String, T>,
    new: &BTreeMap<String, T>,
    out: &mut Vec<String>,
) {
    for (name, n) in new {
        match old.get(name) {
            None => out.push(format!("{what} {name:?} added")),
            Some(o) if o != n => out.push(format!("{what} {name:?} changed")),
            _ => {}
        }
    }
    for name in old.keys().filter(|k| !new.contains_key(*k)) {
        out.push(format!("{what} {name:?} removed"));
    }
}

fn routes_by_name(routes: &[RouteConfig]) -> BTreeMap<String, &RouteConfig> {
    routes.iter().map(|r| (r.name.clone(), r)).collect()
}

fn route_order(routes: &[RouteConfig]) -> Vec<&str> {
    routes.iter().map(|r| r.name.as_str()).collect()
}

fn sumdbs_by_name(
    sumdb: &BTreeMap<SumdbName, UpstreamConfig>,
) -> BTreeMap<String, &UpstreamConfig> {
    sumdb.iter().map(|(k, v)| (k.0.clone(), v)).collect()
}

fn roles_by_name(access: &AccessConfig) -> BTreeMap<String, &Role> {
    access
        .policy
        .roles()
        .iter()
        .map(|r| (r.name.clone(), r))
        .collect()
}

fn listeners_by_name(listeners: &[ListenerConfig]) -> BTreeMap<String, &ListenerConfig> {
    listeners.iter().map(|l| (l.name.0.clone(), l)).collect()
}

/// `server:` by what a reload does with each field.
struct ServerSides<'a, P> {
    /// Applied live, each named on its own.
    path_prefix: &'a str,
    public_url: Option<&'a UpstreamUrl>,
    /// The process's own (threads, scheduler, shutdown, files, pools, the git origin): an
    /// upgrade.
    process: P,
}

fn server_sides(s: &ServerSettings) -> ServerSides<'_, impl PartialEq + '_> {
    let ServerSettings {
        path_prefix,
        public_url,
        threads,
        work_stealing,
        grace_period,
        shutdown_timeout,
        pid_file,
        upgrade_sock,
        upstream_pool_size,
        max_blocking_threads,
        git_dir,
        git_config,
        git_not_found_ttl,
        git_miss_refresh,
    } = s;
    ServerSides {
        path_prefix,
        public_url: public_url.as_ref(),
        process: (
            threads,
            work_stealing,
            grace_period,
            shutdown_timeout,
            pid_file,
            upgrade_sock,
            upstream_pool_size,
            max_blocking_threads,
            git_dir,
            git_config,
            git_not_found_ttl,
            git_miss_refresh,
        ),
    }
}

/// One listener by what a reload does with each field.
struct ListenerSides<'a, C, R> {
    /// The socket is bound to it: an upgrade.
    address: SocketAddr,
    /// Turning TLS on or off needs an upgrade; its settings (files, client certificates,
    /// watch) apply live.
    tls: Option<&'a ListenerTls>,
    /// How connections are accepted and kept (HTTP/2, timeouts, caps): an upgrade.
    connection: C,
    /// How requests are served (identity, trusted proxies, headers, endpoints): live.
    request: R,
}

fn listener_sides(
    l: &ListenerConfig,
) -> ListenerSides<'_, impl PartialEq + '_, impl PartialEq + '_> {
    let ListenerConfig {
        // The key: the two files' listeners are paired by name (a new name is a listener
        // added, and one gone is removed).
        name: _,
        address,
        tls,
        http2,
        h2_max_concurrent_streams,
        h2_send_buffer,
        h2_idle_timeout,
        handshake_timeout,
        keepalive_requests,
        tcp_keepalive,
        idle_timeout,
        header_timeout,
        max_connections,
        max_connections_per_source,
        require_identity,
        trusted_proxies,
        trusted_proxies_force,
        debug_headers,
        forwarded_headers,
        keepalive_timeout,
        metrics,
        admin,
    } = l;
    ListenerSides {
        address: address.0,
        tls: tls.as_ref(),
        connection: (
            http2,
            h2_max_concurrent_streams,
            h2_send_buffer,
            h2_idle_timeout,
            handshake_timeout,
            keepalive_requests,
            tcp_keepalive,
            idle_timeout,
            header_timeout,
            max_connections,
            max_connections_per_source,
        ),
        request: (
            require_identity,
            trusted_proxies,
            trusted_proxies_force,
            debug_headers,
            forwarded_headers,
            keepalive_timeout,
            metrics,
            admin,
        ),
    }
}

/// `cache:` by what a reload does with each field.
struct CacheSides<T, S> {
    /// Applied live.
    ttl: T,
    /// The storage the process opened (directory, sizes, lock, ledger, fsync): an upgrade.
    storage: S,
}

fn cache_sides(c: &CacheConfig) -> CacheSides<impl PartialEq + '_, impl PartialEq + '_> {
    let CacheConfig {
        dir,
        max_size,
        max_object_size,
        memory,
        memory_object_max,
        max_spill,
        lock_timeout,
        ttl,
        // Compared as the ledger file in force (`ledger_path`: unset is the default file in
        // `dir`), so writing out the default changes nothing.
        ledger: _,
        fsync,
    } = c;
    CacheSides {
        ttl,
        storage: (
            dir,
            max_size,
            max_object_size,
            memory,
            memory_object_max,
            max_spill,
            lock_timeout,
            c.ledger_path(),
            fsync,
        ),
    }
}

/// `cluster:` as compared: everything of it (the DSN, the pool, TLS, the name, the object
/// store), never shown.
fn cluster_sides(c: &Option<crate::config::ClusterConfig>) -> Option<String> {
    c.as_ref().map(|c| {
        let p = &c.postgres;
        let o = c.objects.as_ref().map(|o| {
            format!(
                "{} {} {} {} {} {:?} {:?} {:?}",
                o.endpoint,
                o.region,
                o.bucket,
                o.prefix,
                o.path_style,
                o.access_key_id,
                o.secret_access_key_file.as_ref().map(|f| &f.0),
                o.timeout.0
            )
        });
        format!(
            "{:?} {:?} {:?} {} {:?} {:?} {:?} {o:?}",
            c.name,
            p.dsn,
            p.password_file.as_ref().map(|f| &f.0),
            p.pool_size,
            p.connect_timeout.0,
            p.statement_timeout.0,
            p.tls.as_ref().map(|t| &t.ca.0)
        )
    })
}

/// `fetched:` by what a reload does with each field.
struct FetchedSides<L> {
    /// How the index is bounded (retention, max_records): applied live to the writer.
    limits: L,
}

fn fetched_sides(f: &FetchedConfig) -> FetchedSides<impl PartialEq + '_> {
    let FetchedConfig {
        // Compared as the file in force (`GatewayConfig::fetched_path`: unset is the default
        // file in the cache directory), an upgrade: the writer opened it.
        path: _,
        retention,
        max_records,
    } = f;
    FetchedSides {
        limits: (retention, max_records),
    }
}

/// Compares two configurations: (changes a reload applies, changes that need an upgrade).
pub fn diff(old: &GatewayConfig, new: &GatewayConfig) -> (Vec<String>, Vec<String>) {
    let mut live = Vec::new();
    let mut upgrade = Vec::new();
    // Each section of the new file, compared with the old file's below: all apply live but
    // `cache`, `server` and `listeners`, which are taken apart field by field.
    let GatewayConfig {
        routes,
        upstreams,
        sumdb,
        access,
        auth,
        audit,
        telemetry,
        log,
        rate_limits,
        cache,
        fetched,
        cluster,
        server,
        listeners,
        versions,
        checksum_log,
    } = new;
    // The cluster's stores are opened at start.
    if cluster_sides(&old.cluster) != cluster_sides(cluster) {
        upgrade.push("cluster: changed".to_string());
    }
    let (old_routes, new_routes) = (routes_by_name(&old.routes), routes_by_name(routes));
    diff_named("route", &old_routes, &new_routes, &mut live);
    if old_routes.keys().eq(new_routes.keys()) && route_order(&old.routes) != route_order(routes) {
        live.push("routes reordered".to_string());
    }
    diff_named("upstream", &old.upstreams, upstreams, &mut live);
    diff_named(
        "sumdb",
        &sumdbs_by_name(&old.sumdb),
        &sumdbs_by_name(sumdb),
        &mut live,
    );
    let (old_roles, new_roles) = (roles_by_name(&old.access), roles_by_name(access));
    diff_named("role", &old_roles, &new_roles, &mut live);
    if old_roles == new_roles && old.access != *access {
        live.push("access policy changed".to_string());
    }
    if old.auth != *auth {
        live.push("auth settings changed".to_string());
    }
    if old.audit != *audit {
        live.push("audit settings changed".to_string());
    }
    if old.telemetry != *telemetry {
        live.push("telemetry settings changed".to_string());
    }
    if old.log != *log {
        live.push("log settings changed".to_string());
    }
    if old.versions != *versions {
        live.push("versions policy changed".to_string());
    }
    // The module-index tailer starts with the process.
    let index = |v: &crate::config::VersionsConfig| {
        v.cooldown
            .as_ref()
            .map(|c| (c.index.clone(), c.index_settle, c.window))
        // (index_routes apply live: they only choose how a request is dated)
    };
    let (old_index, new_index) = (index(&old.versions), index(versions));
    if old_index.as_ref().map(|i| (&i.0, i.1)) != new_index.as_ref().map(|i| (&i.0, i.1))
        || (old_index.as_ref().and_then(|i| i.0.as_ref()).is_some()
            && old_index.map(|i| i.2) != new_index.map(|i| i.2))
    {
        upgrade.push(
            "versions.cooldown: the module index tailer (index, index_settle, or the window \
             it reads from) changed"
                .to_string(),
        );
    }
    // The company's checksum database: who reads it and how public records are trusted apply
    // live; the log itself (its name, key and file) is opened with the process.
    let opened = |c: &Option<crate::config::ChecksumLogConfig>| {
        c.as_ref()
            .map(|c| (c.name.clone(), c.key_file.clone(), c.path.clone()))
    };
    if opened(&old.checksum_log) != opened(checksum_log) {
        upgrade.push("checksum_log: the log (name, key_file or path) changed".to_string());
    } else if old.checksum_log != *checksum_log {
        live.push("checksum_log readers or public trust changed".to_string());
    }
    if old.rate_limits != *rate_limits {
        live.push("rate limits changed".to_string());
    }
    match (&old.cache, cache) {
        (Some(o), Some(n)) => {
            let (o, n) = (cache_sides(o), cache_sides(n));
            if o.ttl != n.ttl {
                live.push("cache TTLs changed".to_string());
            }
            if o.storage != n.storage {
                upgrade.push(
                    "cache: storage settings (dir, sizes, lock, ledger, fsync) changed".to_string(),
                );
            }
        }
        (None, None) => {}
        _ => upgrade.push("cache: added or removed".to_string()),
    }
    match (&old.fetched, fetched) {
        (Some(o), Some(n)) => {
            if old.fetched_path() != new.fetched_path() {
                upgrade.push("fetched: path changed".to_string());
            }
            if fetched_sides(o).limits != fetched_sides(n).limits {
                live.push("fetched: retention or max_records changed".to_string());
            }
        }
        (None, None) => {}
        _ => upgrade.push("fetched: added or removed".to_string()),
    }
    let (o, n) = (server_sides(&old.server), server_sides(server));
    if o.path_prefix != n.path_prefix {
        live.push("server.path_prefix changed".to_string());
    }
    if o.process != n.process {
        upgrade.push(
            "server: process settings (threads, work_stealing, pid_file, upgrade_sock, \
             grace_period, shutdown_timeout, upstream_pool_size, max_blocking_threads, git_dir, \
             git_config, git_not_found_ttl, git_miss_refresh) changed"
                .to_string(),
        );
    }
    if o.public_url != n.public_url {
        live.push("server.public_url changed".to_string());
    }
    let (old_l, new_l) = (
        listeners_by_name(&old.listeners),
        listeners_by_name(listeners),
    );
    for (name, n) in &new_l {
        let Some(o) = old_l.get(name) else {
            upgrade.push(format!("listener {name}: added"));
            continue;
        };
        let (o, n) = (listener_sides(o), listener_sides(n));
        if o.address != n.address {
            upgrade.push(format!(
                "listener {name}: address changed ({} → {})",
                o.address, n.address
            ));
        }
        if o.tls.is_some() != n.tls.is_some() {
            upgrade.push(format!("listener {name}: TLS turned on or off"));
        }
        if o.connection != n.connection {
            upgrade.push(format!(
                "listener {name}: connection settings (http2, h2_*, keepalive_requests, \
                 tcp_keepalive, idle/header timeouts, connection caps) changed"
            ));
        }
        if o.tls != n.tls && o.tls.is_some() && n.tls.is_some() {
            live.push(format!("listener {name}: TLS settings changed"));
        }
        if o.request != n.request {
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
    use std::fmt::Debug;
    use std::path::Path;

    use crate::config;

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

    /// Which list a change lands in.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Class {
        Live,
        Upgrade,
    }
    use Class::{Live as L, Upgrade as U};

    /// A field of `T`, the list a change to it must land in, and such a change.
    type Case<T> = (&'static str, Class, fn(&mut T));

    /// A configuration with every section present, written in a directory of its own (the
    /// listener's TLS files, the credential file).
    struct Sample {
        _dir: tempfile::TempDir,
        text: String,
    }

    impl Sample {
        fn new() -> Sample {
            let dir = tempfile::tempdir().expect("tempdir");
            let req = crate::certs::CertRequest {
                out: dir.path(),
                hosts: &[],
                ca_name: "test CA",
                client_name: "alice",
                force: false,
            };
            crate::certs::generate(&req).expect("certs");
            std::fs::write(dir.path().join("users"), "").expect("users file");
            let d = dir.path().display();
            let text = format!(
                r#"
listeners:
  - name: public
    address: "127.0.0.1:8443"
    tls: {{ cert: {d}/server.pem, key: {d}/server.key }}
  - {{ name: admin, address: "127.0.0.1:9090", metrics: true }}
upstreams:
  a: {{ url: "http://127.0.0.1:9001" }}
  b: {{ url: "http://127.0.0.1:9002" }}
routes:
  - {{ name: corp, match: {{ prefix: corp.example.com }}, chain: [a] }}
  - {{ name: all, match: {{ prefix: "" }}, chain: [b] }}
auth:
  users_file: {d}/users
access:
  default: deny
  roles:
    - name: devs
      members: [ any ]
      rules:
        - {{ id: r, allow: {{ prefix: corp.example.com }} }}
cache:
  dir: {d}/cache
fetched:
  retention: 30d
sumdb:
  sum.golang.org: {{ url: "https://sum.golang.org" }}
checksum_log:
  name: sum.corp.example
  key_file: {d}/sumdb.key
  readers: [devs]
"#
            );
            Sample { _dir: dir, text }
        }

        fn parse(&self) -> GatewayConfig {
            parse(&self.text)
        }
    }

    /// The field names of a value's derived `Debug`: every field the cases must cover.
    fn field_names(v: &impl Debug) -> Vec<String> {
        format!("{v:#?}")
            .lines()
            .filter_map(|l| {
                let (name, _) = l.strip_prefix("    ")?.split_once(": ")?;
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
                    .then(|| name.to_string())
            })
            .collect()
    }

    /// Checks that `cases` name every field of the part of the sample `part` picks, and that a
    /// change to each lands in its list and in no other; returns what is wrong.
    fn classify<T: Debug>(
        what: &str,
        sample: &Sample,
        part: fn(&mut GatewayConfig) -> &mut T,
        cases: &[Case<T>],
    ) -> Vec<String> {
        let base = sample.parse();
        let mut wrong = Vec::new();
        let fields = field_names(part(&mut sample.parse()));
        let named: Vec<&str> = cases.iter().map(|c| c.0).collect();
        for f in fields.iter().filter(|f| !named.contains(&f.as_str())) {
            wrong.push(format!("{what}.{f}: no case changes it"));
        }
        for n in named.iter().filter(|n| !fields.iter().any(|f| f == *n)) {
            wrong.push(format!("{what}.{n}: a case for no such field"));
        }
        for (field, class, change) in cases {
            let mut new = sample.parse();
            change(part(&mut new));
            let (live, upgrade) = diff(&base, &new);
            let landed = match (live.is_empty(), upgrade.is_empty()) {
                (false, true) => Some(L),
                (true, false) => Some(U),
                _ => None,
            };
            if landed != Some(*class) {
                wrong.push(format!(
                    "{what}.{field}: should be {class:?} only; live {live:?}, upgrade {upgrade:?}"
                ));
            }
        }
        wrong
    }

    fn cache_of(c: &mut GatewayConfig) -> &mut config::CacheConfig {
        c.cache.as_mut().expect("the sample has a cache")
    }

    fn checksum_log_of(c: &mut GatewayConfig) -> &mut config::ChecksumLogConfig {
        c.checksum_log
            .as_mut()
            .expect("the sample has a checksum log")
    }

    fn fetched_of(c: &mut GatewayConfig) -> &mut config::FetchedConfig {
        c.fetched.as_mut().expect("the sample has fetched")
    }

    fn secs(n: u64) -> config::DurationValue {
        config::DurationValue(std::time::Duration::from_secs(n))
    }

    fn path(p: &str) -> Option<config::PathValue> {
        Some(config::PathValue(p.into()))
    }

    /// Every field of the file, changed alone, is reported: applied live or needing an upgrade,
    /// never both, never neither. A field added to the file format fails here until it has a
    /// case (the field names come from `Debug`) and the diff reports it.
    #[test]
    fn every_field_is_classified() {
        let sample = Sample::new();
        let mut wrong = Vec::new();
        let whole: &[Case<GatewayConfig>] = &[
            ("server", U, |c| c.server.threads += 1),
            ("listeners", U, |c| drop(c.listeners.0.pop())),
            ("upstreams", L, |c| {
                let u = c.upstreams.get_mut("a").expect("upstream a");
                u.url = config::UpstreamUrl::parse("http://127.0.0.1:9003").expect("url");
            }),
            ("routes", L, |c| c.routes.0.swap(0, 1)),
            ("auth", L, |c| c.auth.users_file = None),
            ("access", L, |c| c.access.configured = false),
            ("audit", L, |c| {
                c.audit.fail_mode = config::AuditFailMode::Closed
            }),
            ("telemetry", L, |c| c.telemetry.sample_ratio = 0.5),
            ("cache", U, |c| c.cache = None),
            ("fetched", U, |c| c.fetched = None),
            ("cluster", U, |c| {
                c.cluster = Some(config::ClusterConfig {
                    name: Some("replica-b".into()),
                    postgres: config::cluster::PostgresConfig {
                        dsn: "host=127.0.0.1 user=modgate dbname=modgate".into(),
                        password_file: None,
                        pool_size: 4,
                        connect_timeout: secs(5),
                        statement_timeout: secs(30),
                        tls: None,
                    },
                    objects: None,
                })
            }),
            ("sumdb", L, |c| c.sumdb.clear()),
            ("log", L, |c| {
                c.log.level = config::LogLevel(log::LevelFilter::Trace)
            }),
            ("versions", L, |c| {
                c.versions.vulnerabilities = Some(config::VulnerabilitiesConfig {
                    db: config::PathValue("/var/lib/modgate/vulndb".into()),
                    mode: config::VersionMode::Report,
                    routes: Default::default(),
                    roles: Default::default(),
                    only: None,
                    waivers: Vec::new(),
                    serve: true,
                })
            }),
            ("rate_limits", L, |c| c.rate_limits.0.max_identities += 1),
            ("checksum_log", U, |c| c.checksum_log = None),
        ];
        wrong.extend(classify("gateway", &sample, |c| c, whole));
        let server: &[Case<config::ServerSettings>] = &[
            ("threads", U, |s| s.threads += 1),
            ("work_stealing", U, |s| s.work_stealing = !s.work_stealing),
            ("path_prefix", L, |s| s.path_prefix = "/goproxy".into()),
            ("grace_period", U, |s| s.grace_period = secs(99)),
            ("shutdown_timeout", U, |s| s.shutdown_timeout = secs(99)),
            ("pid_file", U, |s| s.pid_file = "/tmp/other.pid".into()),
            ("upgrade_sock", U, |s| {
                s.upgrade_sock = "/tmp/other.sock".into()
            }),
            ("upstream_pool_size", U, |s| s.upstream_pool_size += 1),
            ("max_blocking_threads", U, |s| s.max_blocking_threads += 1),
            ("git_dir", U, |s| s.git_dir = path("/tmp/git")),
            ("public_url", L, |s| {
                s.public_url =
                    Some(config::UpstreamUrl::parse("https://modgate.example").expect("url"))
            }),
            ("git_config", U, |s| s.git_config = path("/tmp/gitconfig")),
            ("git_not_found_ttl", U, |s| s.git_not_found_ttl = secs(99)),
            ("git_miss_refresh", U, |s| s.git_miss_refresh = secs(99)),
        ];
        wrong.extend(classify("server", &sample, |c| &mut c.server, server));
        let listener: &[Case<ListenerConfig>] = &[
            ("name", U, |l| l.name = config::Name("renamed".into())),
            ("address", U, |l| l.address.0.set_port(8444)),
            ("tls", L, |l| {
                l.tls.as_mut().expect("tls").watch = Some(secs(7).0)
            }),
            ("tls", U, |l| l.tls = None),
            ("require_identity", L, |l| l.require_identity = true),
            ("trusted_proxies", L, |l| {
                let cidr = modgate_identity::Cidr::parse_canonical("10.0.0.0/8").expect("cidr");
                l.trusted_proxies.push(config::CidrValue(cidr))
            }),
            ("trusted_proxies_force", L, |l| {
                l.trusted_proxies_force = true
            }),
            ("debug_headers", L, |l| l.debug_headers = true),
            ("forwarded_headers", L, |l| {
                l.forwarded_headers.cert.0 = http::HeaderName::from_static("x-other-cert")
            }),
            ("http2", U, |l| l.http2 = !l.http2),
            ("h2_max_concurrent_streams", U, |l| {
                l.h2_max_concurrent_streams += 1
            }),
            ("h2_send_buffer", U, |l| l.h2_send_buffer.0 += 1),
            ("h2_idle_timeout", U, |l| l.h2_idle_timeout = Some(secs(99))),
            ("handshake_timeout", U, |l| l.handshake_timeout = secs(99)),
            ("keepalive_timeout", L, |l| l.keepalive_timeout = secs(99)),
            ("keepalive_requests", U, |l| l.keepalive_requests = Some(7)),
            ("idle_timeout", U, |l| l.idle_timeout = secs(99)),
            ("header_timeout", U, |l| l.header_timeout = secs(99)),
            ("max_connections", U, |l| l.max_connections += 1),
            ("max_connections_per_source", U, |l| {
                l.max_connections_per_source += 1
            }),
            ("tcp_keepalive", U, |l| {
                l.tcp_keepalive = Some(config::TcpKeepaliveConfig {
                    idle: secs(1),
                    interval: secs(1),
                    count: 3,
                })
            }),
            ("metrics", L, |l| l.metrics = true),
            ("admin", L, |l| l.admin = true),
        ];
        wrong.extend(classify(
            "listener",
            &sample,
            |c| &mut c.listeners.0[0],
            listener,
        ));
        let cache: &[Case<config::CacheConfig>] = &[
            ("dir", U, |c| {
                c.dir = config::PathValue("/tmp/other-cache".into())
            }),
            ("max_size", U, |c| c.max_size.0 += 1),
            ("max_object_size", U, |c| c.max_object_size.0 += 1),
            ("memory", U, |c| c.memory.0 += 1),
            ("memory_object_max", U, |c| c.memory_object_max.0 += 1),
            ("max_spill", U, |c| c.max_spill.0 += 1),
            ("lock_timeout", U, |c| c.lock_timeout = secs(99)),
            ("ttl", L, |c| c.ttl.mutable = secs(99)),
            ("ledger", U, |c| c.ledger = path("/tmp/other-ledger.sqlite")),
            ("fsync", U, |c| c.fsync = !c.fsync),
        ];
        wrong.extend(classify("cache", &sample, cache_of, cache));
        let fetched: &[Case<config::FetchedConfig>] = &[
            ("path", U, |f| f.path = path("/tmp/other-fetched.sqlite")),
            ("retention", L, |f| {
                f.retention = config::fetched::Span(secs(86_400).0)
            }),
            ("max_records", L, |f| {
                f.max_records = config::fetched::MaxRecords(f.max_records.0 + 1)
            }),
        ];
        wrong.extend(classify("fetched", &sample, fetched_of, fetched));
        let checksum_log: &[Case<config::ChecksumLogConfig>] = &[
            ("name", U, |l| l.name = "sum2.corp.example".into()),
            ("key_file", U, |l| {
                l.key_file = config::PathValue("/tmp/other.key".into())
            }),
            ("readers", L, |l| l.readers.push("ci".into())),
            ("path", U, |l| l.path = path("/tmp/other-sumdb.sqlite")),
            ("public", L, |l| {
                l.public = config::checksum_log::PublicTrust::Offline {
                    trust: config::checksum_log::TrustFirstSeen::FirstSeen,
                }
            }),
        ];
        wrong.extend(classify(
            "checksum_log",
            &sample,
            checksum_log_of,
            checksum_log,
        ));
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }
}
