//! Criterion micro-benchmarks for the per-request identity and access work: parsing a client
//! certificate into an identity (done once per TLS connection), checking `.netrc` credentials
//! (bcrypt on a cache miss, the salted cache on a hit, a bearer token), and the RBAC decision
//! in a policy of realistic size. Run with `make bench`; figures go to docs/performance.md.

use std::hint::black_box;
use std::io::Write;

use criterion::{criterion_group, criterion_main, Criterion};
use modgate_identity::{cert_from_der, CredentialKind};
use modgate_identity::{credentials::parse_authorization, token_sha256_hex, Authenticator};
use modgate_policy::{
    AccessPolicy, AccessRequest, Binding, Effect, Matcher, Pattern, Principal, PrincipalSource,
    Role, Rule, ValueMatch,
};
use modgate_protocol::RequestKind;

fn client_cert_der() -> Vec<u8> {
    let mut params =
        rcgen::CertificateParams::new(vec!["runner-7.ci.corp.example".into()]).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "ci-runner-7");
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "Example Corp");
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationalUnitName, "platform");
    params.subject_alt_names.push(rcgen::SanType::URI(
        "spiffe://corp.example/ci/runner-7".try_into().expect("uri"),
    ));
    let key = rcgen::KeyPair::generate().expect("key");
    params.self_signed(&key).expect("cert").der().to_vec()
}

/// 40 roles of 3 member entries and 5 rules each, like a platform team's policy.
fn policy() -> AccessPolicy {
    let mut roles = Vec::new();
    for r in 0..40 {
        let value = |s: String| ValueMatch::new(&s).expect("value");
        roles.push(Role {
            name: format!("team-{r}"),
            bindings: vec![
                Binding::new(vec![
                    Matcher::O(value("Example Corp".into())),
                    Matcher::Ou(value(format!("team-{r}"))),
                ]),
                Binding::new(vec![Matcher::Group(value(format!("team-{r}")))]),
                Binding::new(vec![Matcher::Spiffe(value(format!(
                    "spiffe://corp.example/team-{r}/*"
                )))]),
            ],
            rules: (0..5)
                .map(|i| Rule {
                    id: format!("team-{r}.{i}"),
                    effect: if i == 4 { Effect::Deny } else { Effect::Allow },
                    patterns: vec![
                        Pattern::glob(&format!("corp.example.com/team{r}/svc{i}*")).expect("glob")
                    ],
                    kinds: None,
                    versions: None,
                    commits: None,
                })
                .collect(),
        });
    }
    roles.push(Role {
        name: "ci".into(),
        bindings: vec![Binding::new(vec![Matcher::Spiffe(
            ValueMatch::new("spiffe://corp.example/ci/*").expect("spiffe"),
        )])],
        rules: vec![Rule {
            id: "ci-read".into(),
            effect: Effect::Allow,
            patterns: vec![Pattern::prefix("corp.example.com").expect("prefix")],
            kinds: None,
            versions: None,
            commits: None,
        }],
    });
    AccessPolicy::new(roles, Effect::Deny).expect("policy")
}

fn identity(c: &mut Criterion) {
    let der = client_cert_der();
    c.bench_function("cert_identity_from_der", |b| {
        b.iter(|| cert_from_der(black_box(&der)))
    });

    let policy = policy();
    let id = cert_from_der(&der).expect("identity");
    let principal = Principal {
        source: PrincipalSource::Certificate,
        name: id.display_name(),
        cert: Some(id.clone()),
        user: None,
        token: None,
        groups: Vec::new(),
    };
    let req = AccessRequest {
        module: "corp.example.com/team7/svc2-api",
        kind: RequestKind::Zip,
        version: Some("v1.4.2"),
        route: "corp",
        private_route: true,
        commit: None,
    };
    c.bench_function("rbac_decide_41_roles", |b| {
        b.iter(|| policy.decide(black_box(&principal), black_box(&req)))
    });

    let dir = tempfile::tempdir().expect("tempdir");
    let users = dir.path().join("users");
    let tokens = dir.path().join("tokens");
    let hash = bcrypt::hash("correct horse", 10).expect("bcrypt");
    let mut f = std::fs::File::create(&users).expect("users");
    writeln!(f, "alice:{hash}:developers").expect("write");
    std::fs::write(
        &tokens,
        format!("ci:sha256:{}:ci\n", token_sha256_hex("t0ken-abcdef")),
    )
    .expect("tokens");
    let auth = Authenticator::load(Some(&users), Some(&tokens)).expect("auth");
    let basic = parse_authorization("Basic YWxpY2U6Y29ycmVjdCBob3JzZQ==").expect("basic");
    let bearer = parse_authorization("Bearer t0ken-abcdef").expect("bearer");
    assert_eq!(
        auth.verify(&basic).expect("alice").kind,
        CredentialKind::Basic
    );
    c.bench_function("basic_auth_cached", |b| {
        b.iter(|| auth.verify(black_box(&basic)))
    });
    c.bench_function("bearer_token", |b| {
        b.iter(|| auth.verify(black_box(&bearer)))
    });
    let uncached = Authenticator::load(Some(&users), Some(&tokens))
        .expect("auth")
        .with_cache(0, std::time::Duration::ZERO);
    let mut g = c.benchmark_group("basic_auth_bcrypt_cost10_uncached");
    g.sample_size(10);
    g.bench_function("verify", |b| b.iter(|| uncached.verify(black_box(&basic))));
    g.finish();
}

criterion_group!(benches, identity);
criterion_main!(benches);
