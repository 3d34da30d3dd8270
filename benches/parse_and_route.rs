//! Criterion micro-benchmarks for the per-request pure work: parsing a GOPROXY request path
//! (percent-decoding, `!`-decoding, Go's path and version checks) and finding its route in a
//! realistic route table. Run with `make bench`; figures go to docs/performance.md.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use modgate_policy::{Pattern, Route, RouteTable};
use modgate_protocol::{escape_path, unescape_path, RequestParser};

const PATHS: &[(&str, &str)] = &[
    (
        "list",
        "/github.com/%21azure/azure-sdk-for-go/sdk/azcore/@v/list",
    ),
    (
        "zip",
        "/github.com/aws/aws-sdk-go-v2/service/s3/@v/v1.58.2.zip",
    ),
    (
        "pseudo-info",
        "/golang.org/x/tools/@v/v0.0.0-20240315101112-abcdefabcdef.info",
    ),
    (
        "incompatible-mod",
        "/github.com/docker/docker/@v/v27.1.1+incompatible.mod",
    ),
    ("latest-v2", "/github.com/go-redis/redis/v9/@latest"),
];

fn parsing(c: &mut Criterion) {
    let parser = RequestParser::new("").expect("parser");
    let mut g = c.benchmark_group("parse_request");
    g.throughput(Throughput::Elements(1));
    for (name, path) in PATHS {
        g.bench_function(*name, |b| b.iter(|| parser.parse(black_box(path))));
    }
    g.finish();

    let mut g = c.benchmark_group("case_encoding");
    let module = "github.com/Azure/Azure-SDK-for-Go/sdk/AzCore";
    let escaped = escape_path(module).expect("escape");
    g.bench_function("escape_path", |b| b.iter(|| escape_path(black_box(module))));
    g.bench_function("unescape_path", |b| {
        b.iter(|| unescape_path(black_box(&escaped)))
    });
    g.finish();
}

/// A table shaped like a large intranet's: many private prefixes and globs, a few regexes,
/// a catch-all last.
fn table() -> RouteTable<usize> {
    let mut routes = Vec::new();
    for i in 0..40 {
        routes.push(Route {
            name: format!("team{i}"),
            pattern: Pattern::prefix(&format!("git.corp{i}.example.com/team{i}")).expect("prefix"),
            private: true,
            target: i,
        });
    }
    for i in 0..15 {
        routes.push(Route {
            name: format!("glob{i}"),
            pattern: Pattern::glob(&format!("*.unit{i}.corp.example.com,corp{i}.example.net/*"))
                .expect("glob"),
            private: true,
            target: 100 + i,
        });
    }
    for i in 0..4 {
        routes.push(Route {
            name: format!("regex{i}"),
            pattern: Pattern::regex(&format!(
                r"gitlab\.corp{i}\.example\.com/(infra|platform)/.+"
            ))
            .expect("regex"),
            private: true,
            target: 200 + i,
        });
    }
    routes.push(Route {
        name: "public".into(),
        pattern: Pattern::prefix("").expect("prefix"),
        private: false,
        target: 999,
    });
    RouteTable::new(routes).expect("table")
}

fn routing(c: &mut Criterion) {
    let t = table();
    let mut g = c.benchmark_group("route_lookup_60_rules");
    g.throughput(Throughput::Elements(1));
    for (name, module) in [
        ("first-prefix", "git.corp0.example.com/team0/svc"),
        ("glob-hit", "x.unit7.corp.example.com/lib"),
        ("regex-hit", "gitlab.corp3.example.com/platform/tool"),
        ("catch-all", "github.com/aws/aws-sdk-go-v2/service/s3"),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| t.lookup(black_box(module)).map(|m| m.index))
        });
    }
    g.finish();
}

criterion_group!(benches, parsing, routing);
criterion_main!(benches);
