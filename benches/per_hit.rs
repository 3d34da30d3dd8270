//! The per-request work of a cached small hit besides HTTP/2 and TLS (issue 22): the
//! Prometheus series a finished request counts on, the cache plan's upstream path, the cache
//! key hashed and hex-encoded, the prepared head cloned for the answer, and the audit record
//! built and serialised. Each case is the code the gateway runs (or, for the proxy's own
//! types, which live in the binary crate, the same calls on the same library types); compare
//! two builds by running this bench on each, alternating. Run with
//! `cargo bench -p modgate-benches --bench per_hit`; figures in docs/performance.md, "Per-hit
//! work (issue 22)".

use std::hint::black_box;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, Criterion};
use modgate_protocol::{ModuleRequest, RequestKind, Version};
use modgate_telemetry::{rfc3339_millis, AuditDecision, AuditIdentity, AuditRecord};
use pingora::cache::key::CacheHashKey;
use pingora::cache::{CacheKey, CacheMeta};
use pingora::http::ResponseHeader;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};

/// The proxy's per-thread resolved series, compiled from the gateway's own source.
#[path = "../crates/modgate/src/proxy/resolved.rs"]
#[allow(dead_code)]
mod resolved;

fn metrics(c: &mut Criterion) {
    let requests = IntCounterVec::new(
        Opts::new("modgate_requests_total", "r"),
        &["listener", "route", "kind", "status"],
    )
    .expect("family");
    let route_duration = HistogramVec::new(
        HistogramOpts::new("modgate_route_request_duration_seconds", "d"),
        &["route", "status_class"],
    )
    .expect("family");
    let cache_lookups =
        IntCounterVec::new(Opts::new("modgate_cache_requests_total", "c"), &["outcome"])
            .expect("family");
    let (listener, route, kind, status) = ("public", "github-public", "info", 200u16);
    let mut g = c.benchmark_group("per_hit/metrics");
    // What proxy/metrics.rs did per finished hit before issue 22: three label lookups.
    g.bench_function("with_label_values", |b| {
        b.iter(|| {
            requests
                .with_label_values(&[
                    black_box(listener),
                    black_box(route),
                    kind,
                    &status.to_string(),
                ])
                .inc();
            route_duration
                .with_label_values(&[black_box(route), resolved::status_class(status)])
                .observe(0.0004);
            cache_lookups.with_label_values(&[black_box("hit")]).inc();
        })
    });
    let owner = resolved::new_owner();
    g.bench_function("resolved_per_thread", |b| {
        b.iter(|| {
            resolved::request_finished(
                owner,
                &requests,
                &route_duration,
                black_box(listener),
                black_box(route),
                kind,
                status,
                0.0004,
            );
            resolved::count(owner, 1, &cache_lookups, black_box("hit"), None);
        })
    });
    g.finish();
}

fn upstream_path(c: &mut Criterion) {
    let info = ModuleRequest {
        module: "github.com/aws/aws-sdk-go-v2/service/s3".into(),
        kind: RequestKind::Info,
        version: Some(Version::parse("v1.58.2")),
    };
    let upper = ModuleRequest {
        module: "github.com/Azure/azure-sdk-for-go/sdk/azcore".into(),
        kind: RequestKind::Zip,
        version: Some(Version::parse("v1.11.1")),
    };
    let mut g = c.benchmark_group("per_hit/upstream_path");
    g.bench_function("info", |b| b.iter(|| black_box(&info).upstream_path()));
    g.bench_function("uppercase_zip", |b| {
        b.iter(|| black_box(&upper).upstream_path())
    });
    g.finish();
}

fn cache_key(c: &mut Criterion) {
    let (namespace, path) = (
        "route:github-public",
        "/github.com/aws/aws-sdk-go-v2/service/s3/@v/v1.58.2.info",
    );
    let mut g = c.benchmark_group("per_hit/cache_key");
    // CachePlan::key, then DiskCache::hot_hit's hash and hex name of the object.
    g.bench_function("key_hash_hex", |b| {
        b.iter(|| {
            let key = CacheKey::new(format!("{}|{}", black_box(namespace), path), "");
            let compact = key.to_compact();
            black_box(modgate_cache::hash_hex(&compact.combined_bin()))
        })
    });
    g.bench_function("hex_pingora", |b| {
        let key = CacheKey::new(format!("{namespace}|{path}"), "").to_compact();
        b.iter(|| black_box(black_box(&key).combined()))
    });
    g.bench_function("hex_modgate", |b| {
        let bin = CacheKey::new(format!("{namespace}|{path}"), "").combined_bin();
        b.iter(|| black_box(modgate_cache::hash_hex(black_box(&bin))))
    });
    g.finish();
}

/// The stored head of a cached `.info` (nginx origin), as the memory tier keeps it.
fn info_meta() -> CacheMeta {
    let mut h = ResponseHeader::build(200, Some(8)).expect("head");
    for (n, v) in [
        ("Server", "nginx/1.24.0"),
        ("Date", "Mon, 01 Jun 2026 10:00:00 GMT"),
        ("Content-Type", "application/json"),
        ("Content-Length", "54"),
        ("Last-Modified", "Mon, 01 Jun 2026 09:00:00 GMT"),
        ("Connection", "keep-alive"),
        ("ETag", "\"665ae1d0-36\""),
        ("Accept-Ranges", "bytes"),
    ] {
        h.append_header(n, v).expect("header");
    }
    let now = SystemTime::now();
    CacheMeta::new(now + Duration::from_secs(3600), now, 0, 0, h)
}

/// What follows the head's copy on every hot hit over HTTP/2: `response_filter`'s removals and
/// Pingora's HTTP/2 `write_response_header` (its `Date`, the hop-by-hop removals and the
/// `http::response::Parts` it sends).
fn send_h2(mut head: Box<ResponseHeader>) -> http::response::Parts {
    head.remove_header(&http::header::SERVER);
    head.remove_header(&http::header::SET_COOKIE);
    let _ = head.insert_header(http::header::DATE, "Mon, 01 Jun 2026 10:00:01 GMT");
    for h in [
        http::header::TRANSFER_ENCODING,
        http::header::CONNECTION,
        http::header::UPGRADE,
    ] {
        head.remove_header(&h);
    }
    head.remove_header(&http::HeaderName::from_static("keep-alive"));
    head.remove_header(&http::HeaderName::from_static("proxy-connection"));
    head.as_owned_parts()
}

fn hot_head(c: &mut Criterion) {
    let meta = modgate_cache::HotMeta::of(&info_meta());
    let now = SystemTime::now();
    let mut g = c.benchmark_group("per_hit/hot_head");
    g.bench_function("head", |b| b.iter(|| black_box(meta.head(now, false))));
    g.bench_function("head_h2", |b| b.iter(|| black_box(meta.head(now, true))));
    g.bench_function("head_and_send_h2", |b| {
        b.iter(|| black_box(send_h2(meta.head(now, true))))
    });
    g.bench_function("head_with_case_and_send_h2", |b| {
        b.iter(|| black_box(send_h2(meta.head(now, false))))
    });
    g.finish();
}

/// What `report::audit_record` has at hand for a cached `.info` hit by a certificate.
struct Sources {
    listener: String,
    client: String,
    source: &'static str,
    name: String,
    dn: String,
    fingerprint: String,
    serial: String,
    roles: std::sync::Arc<[String]>,
    path: String,
    module: String,
    version: String,
    route: String,
    rule: String,
    trace_id: String,
}

fn sources() -> Sources {
    Sources {
        listener: "public".into(),
        client: "10.20.30.40:51234".into(),
        source: "certificate",
        name: "ci-runner-7".into(),
        dn: "CN=ci-runner-7,OU=platform,O=Example Corp".into(),
        fingerprint: "3f1c9a0e5b7d2c4a6e8f0b1d3c5e7a9b2d4f6a8c0e1b3d5f7a9c2e4b6d8f0a1c".into(),
        serial: "4a3f".into(),
        roles: vec!["ci".to_string()].into(),
        path: "/github.com/aws/aws-sdk-go-v2/service/s3/@v/v1.58.2.info".into(),
        module: "github.com/aws/aws-sdk-go-v2/service/s3".into(),
        version: "v1.58.2".into(),
        route: "github-public".into(),
        rule: "ci-read".into(),
        trace_id: format!("{:032x}", 0x1234_5678_9abc_def0u64),
    }
}

/// The record as `report::audit_record` builds it: every text copied into an owned string.
fn owned_record(s: &Sources) -> AuditRecord {
    AuditRecord {
        ts: rfc3339_millis(UNIX_EPOCH + Duration::from_millis(1_780_000_000_123)),
        trace_id: s.trace_id.clone(),
        listener: s.listener.clone(),
        client_addr: s.client.clone(),
        identity: AuditIdentity {
            source: s.source.to_string(),
            name: s.name.clone(),
            dn: Some(s.dn.clone()),
            fingerprint: Some(s.fingerprint.clone()),
            serial: Some(s.serial.clone()),
            principals: Vec::new(),
            matched: None,
        },
        roles: s.roles.clone(),
        method: "GET".to_string(),
        path: s.path.clone(),
        module: Some(s.module.clone()),
        version: Some(s.version.clone()),
        kind: Some("info".to_string()),
        route: Some(s.route.clone()),
        decision: AuditDecision::Allow,
        rule: Some(s.rule.clone()),
        reason: None,
        status: 200,
        bytes: 54,
        incomplete: false,
        duration_ms: 0.042,
        upstream: None,
        cache: Some("hit".to_string()),
        event: None,
        advisories: Vec::new(),
        would_deny: None,
        withheld: Vec::new(),
        waived: Vec::new(),
    }
}

fn audit_record(c: &mut Criterion) {
    let s = sources();
    let built = owned_record(&s);
    let mut line = Vec::with_capacity(1024);
    let mut g = c.benchmark_group("per_hit/audit_record");
    // Built (about 15 owned strings) and serialised into the thread's batch, then dropped.
    g.bench_function("build_and_serialise", |b| {
        b.iter(|| {
            line.clear();
            let r = owned_record(black_box(&s));
            serde_json::to_writer(&mut line, &r).expect("json");
            black_box(line.len())
        })
    });
    // Serialising alone: what a record borrowing its texts would still cost (the building's
    // share is the difference).
    g.bench_function("serialise_only", |b| {
        b.iter(|| {
            line.clear();
            serde_json::to_writer(&mut line, black_box(&built)).expect("json");
            black_box(line.len())
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    metrics,
    upstream_path,
    cache_key,
    hot_head,
    audit_record
);
criterion_main!(benches);
