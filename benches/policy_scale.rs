//! Criterion micro-benchmarks for route and RBAC decisions at the size issue 11 asks for: a
//! 1,000-route table and a 200-role / 1,000-rule access policy, both with a realistic mix of
//! element prefixes, `GOPRIVATE`-style globs and anchored regexes over module paths like
//! `corp.example.com/team-17/svc-3/...`. Lookups hit early, in the middle, late and nothing;
//! decisions are for principals holding one role and many roles. Figures go to
//! docs/performance.md.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use modgate_policy::{
    AccessPolicy, AccessRequest, Binding, CertIdentity, Effect, Matcher, Pattern, Principal,
    PrincipalSource, Role, Route, RouteTable, Rule, ValueMatch, VersionRange,
};
use modgate_protocol::RequestKind;

/// 1,000 routes in 50 blocks of 20, one block per team: 15 element prefixes, 4 globs of three
/// shapes (`*.unitN.corp.example.com`, `corp.example.net/team-N/*`, `…/svc-1*`) and one regex,
/// in that interleaved order; no catch-all, so a public path finds no route.
fn route_table() -> RouteTable<usize> {
    let mut routes = Vec::new();
    let mut push = |name: String, pattern: Pattern| {
        let target = routes.len();
        routes.push(Route {
            name,
            pattern,
            private: true,
            target,
        });
    };
    for t in 0..50 {
        for s in 0..7 {
            push(
                format!("t{t}-svc{s}"),
                Pattern::prefix(&format!("corp.example.com/team-{t}/svc-{s}")).expect("prefix"),
            );
        }
        push(
            format!("t{t}-unit"),
            Pattern::glob(&format!("*.unit{t}.corp.example.com")).expect("glob"),
        );
        push(
            format!("t{t}-net"),
            Pattern::glob(&format!("corp.example.net/team-{t}/*")).expect("glob"),
        );
        for s in 7..15 {
            push(
                format!("t{t}-svc{s}"),
                Pattern::prefix(&format!("corp.example.com/team-{t}/svc-{s}")).expect("prefix"),
            );
        }
        push(
            format!("t{t}-lib-glob"),
            Pattern::glob(&format!(
                "corp.example.com/team-{t}/lib-*,git.corp.example.com/team-{t}/svc-1*"
            ))
            .expect("glob"),
        );
        push(
            format!("t{t}-gitlab"),
            Pattern::regex(&format!(
                r"gitlab\.corp\.example\.com/team-{t}/(infra|platform)/[a-z0-9-]+"
            ))
            .expect("regex"),
        );
        push(
            format!("t{t}-host"),
            Pattern::glob(&format!("team-{t}.corp.example.com")).expect("glob"),
        );
    }
    assert_eq!(routes.len(), 1000);
    RouteTable::new(routes).expect("table")
}

fn routing(c: &mut Criterion) {
    let t = route_table();
    let mut g = c.benchmark_group("route_lookup_1000_rules");
    g.throughput(Throughput::Elements(1));
    for (name, module, want) in [
        ("early-prefix", "corp.example.com/team-0/svc-2/api", Some(2)),
        (
            "middle-glob",
            "build.unit25.corp.example.com/tools",
            Some(507),
        ),
        (
            "late-regex",
            "gitlab.corp.example.com/team-49/platform/ci-runner",
            Some(998),
        ),
        ("late-glob", "team-49.corp.example.com/x", Some(999)),
        ("no-route", "github.com/aws/aws-sdk-go-v2/service/s3", None),
    ] {
        assert_eq!(t.lookup(module).map(|m| m.index), want, "{module}");
        g.bench_function(name, |b| {
            b.iter(|| t.lookup(black_box(module)).map(|m| m.index))
        });
    }
    g.finish();
}

fn value(s: &str) -> ValueMatch {
    ValueMatch::new(s).expect("value")
}

/// 200 team roles of 3 bindings (O + OU of a certificate, a group, a SPIFFE glob) and 5 rules
/// each: an allow prefix on the team's tree, a deny glob on its `secret-*` modules, an allow
/// glob on a neighbour team's services for metadata kinds only, an allow regex on the team's
/// `corp.example.org` modules and a ranged deny on pre-1.0 versions of its `svc-*` modules.
fn policy() -> AccessPolicy {
    let roles = (0..200)
        .map(|r| Role {
            name: format!("team-{r}"),
            bindings: vec![
                Binding::new(vec![
                    Matcher::O(value("Example Corp")),
                    Matcher::Ou(value(&format!("team-{r}"))),
                ]),
                Binding::new(vec![Matcher::Group(value(&format!("team-{r}")))]),
                Binding::new(vec![Matcher::Spiffe(value(&format!(
                    "spiffe://corp.example/team-{r}/*"
                )))]),
            ],
            rules: vec![
                Rule {
                    id: format!("team-{r}.read"),
                    effect: Effect::Allow,
                    patterns: vec![
                        Pattern::prefix(&format!("corp.example.com/team-{r}")).expect("prefix")
                    ],
                    kinds: None,
                    versions: None,
                    commits: None,
                },
                Rule {
                    id: format!("team-{r}.secrets"),
                    effect: Effect::Deny,
                    patterns: vec![
                        Pattern::glob(&format!("corp.example.com/team-{r}/secret-*"))
                            .expect("glob"),
                    ],
                    kinds: None,
                    versions: None,
                    commits: None,
                },
                Rule {
                    id: format!("team-{r}.neighbour-meta"),
                    effect: Effect::Allow,
                    patterns: vec![Pattern::glob(&format!(
                        "corp.example.com/team-{}/svc-*",
                        (r + 1) % 200
                    ))
                    .expect("glob")],
                    kinds: Some(vec![
                        RequestKind::List,
                        RequestKind::Info,
                        RequestKind::Mod,
                        RequestKind::Latest,
                    ]),
                    versions: None,
                    commits: None,
                },
                Rule {
                    id: format!("team-{r}.org"),
                    effect: Effect::Allow,
                    patterns: vec![Pattern::regex(&format!(
                        r"corp\.example\.org/team-{r}/[a-z]+(-v[0-9]+)?"
                    ))
                    .expect("regex")],
                    kinds: None,
                    versions: None,
                    commits: None,
                },
                Rule {
                    id: format!("team-{r}.no-prerelease"),
                    effect: Effect::Deny,
                    patterns: vec![
                        Pattern::glob(&format!("corp.example.com/team-{r}/svc-*")).expect("glob")
                    ],
                    kinds: None,
                    versions: Some(VersionRange::parse("<v1.0.0").expect("range")),
                    commits: None,
                },
            ],
        })
        .collect();
    AccessPolicy::new(roles, Effect::Deny).expect("policy")
}

fn user(name: &str, groups: Vec<String>) -> Principal {
    Principal {
        source: PrincipalSource::Basic,
        name: name.into(),
        user: Some(name.into()),
        groups,
        ..Principal::anonymous()
    }
}

fn access(c: &mut Criterion) {
    let policy = policy();
    let one = user("alice", vec!["developers".into(), "team-17".into()]);
    // A platform engineer in 40 teams (team-0, team-5, …, team-195).
    let many = user(
        "bob",
        (0..200)
            .step_by(5)
            .map(|r| format!("team-{r}"))
            .chain(["developers".to_owned()])
            .collect(),
    );
    let cert = Principal {
        source: PrincipalSource::Certificate,
        name: "ci-runner-7".into(),
        cert: Some(CertIdentity {
            subject_dn: "CN=ci-runner-7,OU=platform,O=Example Corp".into(),
            cn: Some("ci-runner-7".into()),
            o: vec!["Example Corp".into()],
            ou: vec!["platform".into()],
            san_uri: vec!["spiffe://corp.example/team-17/runner-7".into()],
            spiffe: Some("spiffe://corp.example/team-17/runner-7".into()),
            fingerprint_sha256: "ab".repeat(32),
            ..CertIdentity::default()
        }),
        ..Principal::anonymous()
    };
    let zip = |module| AccessRequest {
        module,
        kind: RequestKind::Zip,
        version: Some("v1.4.2"),
        route: "corp",
        private_route: true,
        commit: None,
    };
    let cases: [(&str, &Principal, AccessRequest<'_>, &str); 6] = [
        (
            "one-role-allow",
            &one,
            zip("corp.example.com/team-17/svc-3/api"),
            "team-17.read",
        ),
        (
            "one-role-deny-secret",
            &one,
            zip("corp.example.com/team-17/secret-keys"),
            "team-17.secrets",
        ),
        (
            "one-role-no-rule",
            &one,
            zip("corp.example.com/team-99/svc-1"),
            "private-default",
        ),
        (
            "cert-spiffe-allow",
            &cert,
            zip("corp.example.com/team-17/svc-3/api"),
            "team-17.read",
        ),
        (
            "40-roles-allow-late-role",
            &many,
            zip("corp.example.com/team-195/svc-3/api"),
            "team-195.read",
        ),
        (
            "40-roles-no-rule",
            &many,
            zip("corp.example.com/team-99/svc-1"),
            "private-default",
        ),
    ];
    let mut g = c.benchmark_group("rbac_decide_200_roles_1000_rules");
    g.throughput(Throughput::Elements(1));
    for (name, principal, req, rule) in cases {
        assert_eq!(policy.decide(principal, &req).rule, rule, "{name}");
        g.bench_function(name, |b| {
            b.iter(|| policy.decide(black_box(principal), black_box(&req)))
        });
    }
    g.finish();

    // Role membership alone (what `decide` pays before looking at any rule; it also builds
    // the decision's list of role names).
    let mut g = c.benchmark_group("rbac_roles_for_200_roles");
    g.throughput(Throughput::Elements(1));
    for (name, principal, held) in [
        ("one-role", &one, 1),
        ("cert-spiffe", &cert, 1),
        ("40-roles", &many, 40),
    ] {
        assert_eq!(policy.roles_for(principal).len(), held, "{name}");
        g.bench_function(name, |b| {
            b.iter(|| policy.roles_for(black_box(principal)).len())
        });
    }
    g.finish();
}

/// Issue 20: the version decisions of an exact-version request at scale — the 1,000-rule
/// RBAC decision plus a lookup in a 5,000-advisory vulnerability database (written in the v1
/// layout and loaded as the gateway loads it: 2,500 modules with two advisories each, three
/// ranges per advisory). `admit` itself lives in the binary; these are the two lookups it makes
/// for such a request (the rest is a few comparisons).
fn versions(c: &mut Criterion) {
    use modgate_testkit::vulndb::{write_vulndb, Advisory};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut advisories = Vec::new();
    for m in 0..2500 {
        let module = format!("github.com/org-{}/mod-{m}", m % 97);
        for k in 0..2 {
            let mut a = Advisory::new(&format!("GO-2024-{:05}", m * 2 + k), &module, "0", None);
            a.events = vec![
                serde_json::json!({"introduced": "0"}),
                serde_json::json!({"fixed": format!("1.{k}.3")}),
                serde_json::json!({"introduced": "2.0.0"}),
                serde_json::json!({"fixed": format!("2.{k}.1")}),
                serde_json::json!({"introduced": "3.1.0"}),
                serde_json::json!({"fixed": "3.1.7"}),
            ];
            advisories.push(a);
        }
    }
    write_vulndb(dir.path(), "2024-05-06T07:08:09Z", &advisories).expect("vulndb");
    let db = modgate_vulndb::VulnDb::load(dir.path()).expect("load");
    let policy = policy();
    let one = user("alice", vec!["developers".into(), "team-17".into()]);
    let req = AccessRequest {
        module: "corp.example.com/team-17/svc-3/api",
        kind: RequestKind::Zip,
        version: Some("v1.4.2"),
        route: "corp",
        private_route: true,
        commit: None,
    };
    let mut g = c.benchmark_group("versions_1000_rules_5000_advisories");
    g.throughput(Throughput::Elements(1));
    for (name, module, version, affected) in [
        (
            "module-without-advisories",
            "github.com/other/clean",
            "v1.2.3",
            0,
        ),
        ("affected-version", "github.com/org-5/mod-1460", "v3.1.2", 2),
        ("fixed-version", "github.com/org-5/mod-1460", "v3.1.7", 0),
    ] {
        assert_eq!(
            db.affecting(module, version).expect("semver").len(),
            affected,
            "{name}"
        );
        g.bench_function(name, |b| {
            b.iter(|| {
                let d = policy.decide(black_box(&one), black_box(&req));
                let found = db
                    .affecting(black_box(module), black_box(version))
                    .map_or(0, |f| f.len());
                (d.effect, found)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, routing, access, versions);
criterion_main!(benches);
