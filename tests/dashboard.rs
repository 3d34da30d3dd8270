//! The Grafana dashboard shipped in `docs/grafana-dashboard.json` against a live gateway (issue
//! 9): before any module request, every metric name any of its queries uses is on `/metrics`
//! (a histogram's `_bucket`/`_sum`/`_count` only for a histogram, a bare histogram name never),
//! `modgate_build_info` is 1 with the crate's version, the process metrics are there, and the
//! labelled series the model names (listener, routes, upstreams, reload results, reasons) exist
//! at 0. The name check is also run on a made-up name, so it is shown to fail.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use modgate_testkit::{free_addr, free_port, get, Gateway, Pki};

/// Every string under an `expr` or `query` key, anywhere in the dashboard (panel targets,
/// annotations, template variables).
fn queries(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "query", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => queries(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| queries(i, out)),
        _ => {}
    }
}

/// The metric names a PromQL expression uses: identifiers starting `modgate_` or `process_`,
/// outside quoted strings and not Grafana variables (`$name`).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut chars = expr.chars().peekable();
    let mut prev: Option<char> = None;
    while let Some(c) = chars.next() {
        if c == '"' || c == '\'' || c == '`' {
            // Skip the string, honouring backslash escapes.
            let mut escaped = false;
            for d in chars.by_ref() {
                if escaped {
                    escaped = false;
                } else if d == '\\' {
                    escaped = true;
                } else if d == c {
                    break;
                }
            }
            prev = Some(c);
            continue;
        }
        let starts_ident = c.is_ascii_alphabetic() || c == '_' || c == ':';
        let after_ident = prev.is_some_and(|p| p.is_ascii_alphanumeric() || p == '_' || p == '$');
        if starts_ident && !after_ident {
            let mut ident = String::from(c);
            while let Some(&d) = chars.peek() {
                if d.is_ascii_alphanumeric() || d == '_' || d == ':' {
                    ident.push(d);
                    chars.next();
                } else {
                    break;
                }
            }
            if ident.starts_with("modgate_") || ident.starts_with("process_") {
                names.insert(ident.clone());
            }
            prev = ident.chars().last();
            continue;
        }
        prev = Some(c);
    }
    names
}

/// What `/metrics` exposes: every sample's name, and each family's type from `# TYPE`.
struct Exposition {
    samples: BTreeSet<String>,
    types: BTreeMap<String, String>,
}

fn exposition(text: &str) -> Exposition {
    let mut samples = BTreeSet::new();
    let mut types = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                types.insert(name.to_string(), kind.to_string());
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            samples.insert(line[..end].to_string());
        }
    }
    Exposition { samples, types }
}

/// Why a name the dashboard uses does not work against this exposition, if it does not.
fn problem(name: &str, e: &Exposition) -> Option<String> {
    let histogram = |n: &str| e.types.get(n).is_some_and(|t| t == "histogram");
    if histogram(name) {
        return Some(format!(
            "{name} is a histogram: query {name}_bucket, _sum or _count"
        ));
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if histogram(base) {
                return (!e.samples.contains(name))
                    .then(|| format!("{name}: histogram {base} has no such series"));
            }
        }
    }
    (!e.samples.contains(name)).then(|| format!("{name} is not exported"))
}

/// One sample's value, `series` written as exposed (`name{a="b",c="d"}`); `None` when absent.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)
            .filter(|rest| rest.starts_with(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

#[test]
fn metric_names_are_found_in_promql() {
    let names = metric_names(
        r#"sum by (le) (rate(modgate_x_bucket{job=~"$job", route="modgate_not_a_metric"}[$__rate_interval])) / on() group_left process_cpu_seconds_total - time() + $modgate_var"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["modgate_x_bucket", "process_cpu_seconds_total"]
    );
    assert!(
        metric_names(r#"label_values(modgate_build_info{job=~"$job"}, instance)"#)
            .contains("modgate_build_info")
    );
}

#[test]
fn every_dashboard_metric_is_exported_from_start() {
    let dashboard_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/grafana-dashboard.json");
    let dashboard_text = std::fs::read_to_string(&dashboard_path)
        .unwrap_or_else(|e| panic!("{}: {e}", dashboard_path.display()));
    let dashboard: serde_json::Value =
        serde_json::from_str(&dashboard_text).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    queries(&dashboard, &mut exprs);
    let used: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    assert!(
        used.len() >= 20 && used.contains("modgate_requests_total"),
        "the dashboard's queries name too few metrics: {used:?}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    Pki::generate(dir.path());
    let ops = free_addr();
    let tls = free_addr();
    // Nothing listens on the upstreams: no module request is made.
    let public = format!("http://127.0.0.1:{}", free_port());
    let corp = format!("http://127.0.0.1:{}", free_port());
    let config = format!(
        r#"
listeners:
  - {{ name: ops, address: "{ops}", metrics: true }}
  - name: edge
    address: "{tls}"
    tls: {{ cert: server.pem, key: server.key, client_auth: optional, client_ca: root.pem }}
upstreams:
  public: {{ url: "{public}" }}
  corp: {{ url: "{corp}", private: true }}
routes:
  - {{ name: corp, match: {{ prefix: corp.example.com }}, chain: [corp], private: true }}
  - {{ name: everything, match: {{ prefix: "" }}, chain: [public] }}
sumdb:
  sum.golang.org: {{ url: "{public}" }}
"#
    );
    let gw = Gateway::start_in(dir, &config, ops);
    let r = get(ops, "/metrics").expect("GET /metrics");
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    let exposed = exposition(&text);

    // (a) Every name the dashboard uses is there before any request was counted.
    let problems: Vec<String> = used.iter().filter_map(|n| problem(n, &exposed)).collect();
    assert!(
        problems.is_empty(),
        "docs/grafana-dashboard.json uses metrics this gateway does not export:\n  {}\n\n/metrics:\n{text}\n{}",
        problems.join("\n  "),
        gw.log()
    );
    // The check fails for what is not exported, and for a bare histogram name.
    assert!(problem("modgate_no_such_metric_total", &exposed).is_some());
    assert!(problem("modgate_request_duration_seconds", &exposed).is_some());
    assert!(problem("modgate_requests_total_bucket", &exposed).is_some());
    assert!(problem("modgate_request_duration_seconds_bucket", &exposed).is_none());

    // (b) Build information.
    let build = format!(
        "modgate_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(sample(&text, &build), Some(1.0), "{text}");

    // Process metrics, with plausible values.
    let rss = sample(&text, "process_resident_memory_bytes").unwrap_or(0.0);
    assert!(rss > 1_000_000.0, "resident memory {rss}:\n{text}");
    let open_fds = sample(&text, "process_open_fds").unwrap_or(0.0);
    assert!(open_fds >= 3.0, "open fds {open_fds}:\n{text}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let started = sample(&text, "process_start_time_seconds").unwrap_or(0.0);
    assert!(
        (now - started).abs() < 600.0,
        "start time {started}, now {now}:\n{text}"
    );
    assert!(
        sample(&text, "process_cpu_seconds_total").is_some(),
        "{text}"
    );

    // (c) Labelled series exist at 0 from start.
    for series in [
        r#"modgate_requests_total{kind="other",listener="ops",route="-",status="200"}"#,
        r#"modgate_requests_total{kind="other",listener="edge",route="-",status="200"}"#,
        r#"modgate_config_reloads_total{result="refused"}"#,
        r#"modgate_config_reloads_total{result="applied"}"#,
        r#"modgate_upstream_attempts_total{outcome="timeout",upstream="corp"}"#,
        r#"modgate_upstream_attempts_total{outcome="failed",upstream="sum.golang.org"}"#,
        r#"modgate_access_decisions_total{decision="deny",route="corp",rule="private-default"}"#,
        r#"modgate_access_decisions_total{decision="allow",route="everything",rule="default"}"#,
        r#"modgate_auth_failures_total{reason="bad-password"}"#,
        r#"modgate_auth_failures_total{reason="missing"}"#,
        r#"modgate_credential_checks_throttled_total{reason="throttled",scope="source"}"#,
        r#"modgate_cache_requests_total{outcome="hit"}"#,
        r#"modgate_integrity_refusals_total{artifact="zip"}"#,
        r#"modgate_connections_cut_total{listener="edge",reason="headers"}"#,
        r#"modgate_reloads_total{result="error",what="tls:edge"}"#,
        r#"modgate_request_duration_seconds_count{kind="zip"}"#,
    ] {
        assert_eq!(
            sample(&text, series),
            Some(0.0),
            "{series} should exist at 0:\n{text}"
        );
    }
    // The certificate expiry is the real one, not a placeholder.
    let expiry = sample(
        &text,
        r#"modgate_tls_cert_not_after_seconds{listener="edge"}"#,
    )
    .unwrap_or(0.0);
    assert!(expiry > now, "certificate expiry {expiry}:\n{text}");
    assert_eq!(sample(&text, "modgate_config_generation"), Some(1.0));
    assert!(
        sample(&text, r#"modgate_connections_open{listener="ops"}"#).is_some(),
        "{text}"
    );
}
