//! Unit and property tests for [`super`] (role-based access control).

use super::*;
use proptest::prelude::*;

const FP: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

// ----- fixtures ------------------------------------------------------------

fn cert_fields() -> CertIdentity {
    CertIdentity {
        subject_dn: "CN=build-42.ci.corp.example,OU=ci,OU=eng,O=Corp".into(),
        cn: Some("build-42.ci.corp.example".into()),
        o: vec!["Corp".into()],
        ou: vec!["ci".into(), "eng".into()],
        san_dns: vec!["build-42.ci.corp.example".into(), "builder.corp".into()],
        san_email: vec!["ci@corp.example".into()],
        san_uri: vec![
            "https://corp.example/builders/42".into(),
            "spiffe://corp.example/ci/builder".into(),
        ],
        spiffe: Some("spiffe://corp.example/ci/builder".into()),
        fingerprint_sha256: FP.to_uppercase(),
        ..CertIdentity::default()
    }
}

fn cert_principal() -> Principal {
    Principal {
        source: PrincipalSource::Certificate,
        name: "build-42.ci.corp.example".into(),
        cert: Some(cert_fields()),
        ..Principal::anonymous()
    }
}

fn forwarded_principal() -> Principal {
    Principal {
        source: PrincipalSource::Forwarded,
        ..cert_principal()
    }
}

fn user(name: &str, groups: &[&str]) -> Principal {
    Principal {
        source: PrincipalSource::Basic,
        name: name.into(),
        user: Some(name.into()),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        ..Principal::anonymous()
    }
}

fn token(name: &str, groups: &[&str]) -> Principal {
    Principal {
        source: PrincipalSource::Token,
        name: name.into(),
        token: Some(name.into()),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        ..Principal::anonymous()
    }
}

fn m(key: &str, value: &str) -> Matcher {
    Matcher::field(key, value).unwrap()
}

fn binding(matchers: Vec<Matcher>) -> Binding {
    Binding::new(matchers)
}

fn rule(id: &str, effect: Effect, prefixes: &[&str]) -> Rule {
    Rule {
        id: id.into(),
        effect,
        patterns: prefixes
            .iter()
            .map(|p| Pattern::prefix(p).unwrap())
            .collect(),
        kinds: None,
        versions: None,
        commits: None,
    }
}

fn ranged(id: &str, effect: Effect, prefix: &str, range: &str) -> Rule {
    Rule {
        versions: Some(VersionRange::parse(range).unwrap()),
        commits: None,
        ..rule(id, effect, &[prefix])
    }
}

fn kinded(id: &str, effect: Effect, prefix: &str, kinds: &[RequestKind]) -> Rule {
    Rule {
        kinds: Some(kinds.to_vec()),
        ..rule(id, effect, &[prefix])
    }
}

fn role(name: &str, bindings: Vec<Binding>, rules: Vec<Rule>) -> Role {
    Role {
        name: name.into(),
        bindings,
        rules,
    }
}

fn req<'a>(module: &'a str, kind: RequestKind, version: Option<&'a str>) -> AccessRequest<'a> {
    AccessRequest {
        module,
        kind,
        version,
        route: "corp",
        private_route: false,
        commit: None,
    }
}

fn private(r: AccessRequest<'_>) -> AccessRequest<'_> {
    AccessRequest {
        private_route: true,
        commit: None,
        ..r
    }
}

fn zip(module: &str) -> AccessRequest<'_> {
    req(module, RequestKind::Zip, Some("v1.0.0"))
}

// ----- principals ----------------------------------------------------------

#[test]
fn principal_basics() {
    let a = Principal::anonymous();
    assert!(a.is_anonymous());
    assert_eq!(a.name, "anonymous");
    assert_eq!(a, Principal::default());
    assert!(!cert_principal().is_anonymous());
    let names: Vec<_> = [
        PrincipalSource::Anonymous,
        PrincipalSource::Certificate,
        PrincipalSource::Basic,
        PrincipalSource::Token,
        PrincipalSource::Forwarded,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(
        names,
        ["anonymous", "certificate", "basic", "token", "forwarded"]
    );
}

// ----- matchers ------------------------------------------------------------

#[test]
fn matcher_table() {
    let cert = cert_principal();
    let fwd = forwarded_principal();
    let alice = user("alice", &["dev", "readers"]);
    let bot = token("ci-bot", &["ci"]);
    let anon = Principal::anonymous();
    let fp_colons: String = FP
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":");

    #[rustfmt::skip]
    let table: Vec<(&str, Matcher, &Principal, bool)> = vec![
        // flags
        ("anonymous/anon", Matcher::Anonymous, &anon, true),
        ("anonymous/cert", Matcher::Anonymous, &cert, false),
        ("authenticated/anon", Matcher::Authenticated, &anon, false),
        ("authenticated/user", Matcher::Authenticated, &alice, true),
        ("authenticated/token", Matcher::Authenticated, &bot, true),
        ("any/anon", Matcher::Any, &anon, true),
        ("any/cert", Matcher::Any, &cert, true),
        // CN exact and glob
        ("cn exact", m("cn", "build-42.ci.corp.example"), &cert, true),
        ("cn exact is case-sensitive", m("cn", "BUILD-42.ci.corp.example"), &cert, false),
        ("cn glob", m("cn", "build-*.ci.corp.example"), &cert, true),
        ("cn glob ?", m("cn", "build-4?.ci.corp.example"), &cert, true),
        ("cn glob class", m("cn", "build-[0-9][0-9].ci.corp.example"), &cert, true),
        ("cn glob miss", m("cn", "deploy-*"), &cert, false),
        ("cn forwarded", m("cn", "build-*.ci.corp.example"), &fwd, true),
        ("cn on user", m("cn", "*"), &alice, false),
        ("cn on anon", m("cn", "*"), &anon, false),
        // O / OU multi-valued
        ("o", m("o", "Corp"), &cert, true),
        ("o miss", m("o", "Other"), &cert, false),
        ("ou first", m("ou", "ci"), &cert, true),
        ("ou second", m("ou", "eng"), &cert, true),
        ("ou glob", m("ou", "e*"), &cert, true),
        ("ou miss", m("ou", "ops"), &cert, false),
        // DN
        ("dn exact", m("dn", "CN=build-42.ci.corp.example,OU=ci,OU=eng,O=Corp"), &cert, true),
        ("dn glob", m("dn", "CN=build-*,OU=ci,*O=Corp"), &cert, true),
        ("dn glob miss", m("dn", "CN=deploy-*"), &cert, false),
        // SANs
        ("san-dns second", m("san-dns", "builder.corp"), &cert, true),
        ("san-dns glob", m("san-dns", "*.ci.corp.example"), &cert, true),
        ("san-dns miss", m("san-dns", "*.prod.corp.example"), &cert, false),
        ("san-email", m("san-email", "ci@corp.example"), &cert, true),
        ("san-email glob", m("san-email", "*@corp.example"), &cert, true),
        ("san-uri", m("san-uri", "https://corp.example/builders/42"), &cert, true),
        ("san-uri glob stops at /", m("san-uri", "https://corp.example/*"), &cert, false),
        ("san-uri glob", m("san-uri", "https://corp.example/*/*"), &cert, true),
        // SPIFFE
        ("spiffe exact", m("spiffe", "spiffe://corp.example/ci/builder"), &cert, true),
        ("spiffe glob", m("spiffe", "spiffe://corp.example/ci/*"), &cert, true),
        ("spiffe glob does not cross /", m("spiffe", "spiffe://corp.example/*"), &cert, false),
        ("spiffe glob two levels", m("spiffe", "spiffe://corp.example/*/*"), &cert, true),
        ("spiffe miss", m("spiffe", "spiffe://corp.example/prod/*"), &cert, false),
        // fingerprint
        ("fingerprint lower vs upper", m("fingerprint", FP), &cert, true),
        ("fingerprint colons", m("fingerprint", &fp_colons.to_uppercase()), &cert, true),
        ("fingerprint other", m("fingerprint", &FP.replace('0', "f")), &cert, false),
        ("fingerprint on user", m("fingerprint", FP), &alice, false),
        // user / token / group
        ("user", m("user", "alice"), &alice, true),
        ("user glob", m("user", "al*"), &alice, true),
        ("user miss", m("user", "bob"), &alice, false),
        ("user on token", m("user", "ci-bot"), &bot, false),
        ("token", m("token", "ci-bot"), &bot, true),
        ("token glob", m("token", "ci-*"), &bot, true),
        ("token on user", m("token", "alice"), &alice, false),
        ("group first", m("group", "dev"), &alice, true),
        ("group second", m("group", "readers"), &alice, true),
        ("group glob", m("group", "read*"), &alice, true),
        ("group miss", m("group", "ops"), &alice, false),
        ("group on cert", m("group", "*"), &cert, false),
        ("group on anon", m("group", "*"), &anon, false),
    ];
    for (name, matcher, principal, want) in table {
        assert_eq!(matcher.matches(principal), want, "{name}: {matcher}");
    }
}

#[test]
fn anonymous_never_matches_fields_even_if_populated() {
    // A (mis)built anonymous principal carrying data still only satisfies
    // `anonymous` and `any`.
    let weird = Principal {
        source: PrincipalSource::Anonymous,
        user: Some("alice".into()),
        token: Some("t".into()),
        groups: vec!["dev".into()],
        cert: Some(cert_fields()),
        ..Principal::anonymous()
    };
    for matcher in [
        m("user", "alice"),
        m("token", "t"),
        m("group", "dev"),
        m("cn", "*"),
        m("ou", "ci"),
        m("fingerprint", FP),
        Matcher::Authenticated,
    ] {
        assert!(!matcher.matches(&weird), "{matcher}");
    }
    assert!(Matcher::Anonymous.matches(&weird));
    assert!(Matcher::Any.matches(&weird));
}

#[test]
fn empty_fields_count_as_missing() {
    let mut p = cert_principal();
    if let Some(c) = p.cert.as_mut() {
        c.subject_dn.clear();
        c.cn = Some(String::new());
        c.ou = vec![String::new()];
        c.fingerprint_sha256.clear();
    }
    for matcher in [
        m("dn", "*"),
        m("cn", "*"),
        m("ou", "*"),
        m("fingerprint", FP),
    ] {
        assert!(!matcher.matches(&p), "{matcher}");
    }
}

#[test]
fn value_match_construction() {
    let exact = ValueMatch::new("a.b").unwrap();
    assert!(!exact.is_glob());
    assert_eq!(exact.as_str(), "a.b");
    assert!(exact.matches("a.b"));
    assert!(!exact.matches("a.bc"));
    let glob = ValueMatch::new("a*").unwrap();
    assert!(glob.is_glob());
    assert!(glob.matches("abc"));
    assert!(!glob.matches("a/b"));
    // `\` alone is not a glob marker: compared literally.
    assert!(ValueMatch::new("a\\b").unwrap().matches("a\\b"));
    // Escaped glob characters match literally.
    assert!(ValueMatch::new("a\\*").unwrap().matches("a*"));
    assert!(!ValueMatch::new("a\\*").unwrap().matches("ab"));

    assert_eq!(ValueMatch::new(""), Err(RbacError::EmptyValue));
    for bad in ["[", "a[", "[]", "build-[9-", "x*\\"] {
        assert_eq!(
            ValueMatch::new(bad),
            Err(RbacError::BadGlob { glob: bad.into() }),
            "{bad:?}"
        );
    }
    assert_eq!(
        ValueMatch::new("cn-[").unwrap_err().to_string(),
        "invalid glob \"cn-[\": syntax error in pattern"
    );
}

#[test]
fn fingerprint_validation() {
    let v = ValueMatch::fingerprint(&FP.to_uppercase()).unwrap();
    assert_eq!(v.as_str(), FP);
    let too_long = format!("{FP}00");
    let not_hex = FP.replace('a', "g");
    let bads: [&str; 5] = ["", "abc", &FP[..62], &too_long, &not_hex];
    for bad in bads {
        assert_eq!(
            ValueMatch::fingerprint(bad),
            Err(RbacError::BadFingerprint { value: bad.into() }),
            "{bad:?}"
        );
    }
    assert_eq!(
        Matcher::field("fingerprint", "xyz")
            .unwrap_err()
            .to_string(),
        "invalid SHA-256 fingerprint \"xyz\": want 64 hex digits, colons optional"
    );
}

#[test]
fn fingerprint_built_from_plain_value_match() {
    // Config loaders may wrap a plain `ValueMatch::new`; the comparison
    // still ignores case and colons.
    let mut colons = String::new();
    for (i, c) in FP.to_uppercase().chars().enumerate() {
        if i > 0 && i % 2 == 0 {
            colons.push(':');
        }
        colons.push(c);
    }
    let matcher = Matcher::Fingerprint(ValueMatch::new(&colons).unwrap());
    assert!(matcher.matches(&cert_principal()));
    let mut lower = cert_principal();
    if let Some(c) = lower.cert.as_mut() {
        c.fingerprint_sha256 = colons.to_lowercase();
    }
    assert!(matcher.matches(&lower));
    assert!(!Matcher::Fingerprint(ValueMatch::new("ab").unwrap()).matches(&cert_principal()));
}

#[test]
fn matcher_field_keys_round_trip() {
    for key in FIELD_KEYS {
        let value = if key == "fingerprint" { FP } else { "v" };
        let matcher = Matcher::field(key, value).unwrap();
        assert_eq!(matcher.key(), key);
        assert_eq!(matcher.value().map(ValueMatch::as_str), Some(value));
        assert_eq!(matcher.to_string(), format!("{key}={value:?}"));
    }
    for flag in [Matcher::Anonymous, Matcher::Authenticated, Matcher::Any] {
        assert_eq!(flag.value(), None);
        assert_eq!(flag.to_string(), flag.key());
    }
    let err = Matcher::field("email", "x").unwrap_err();
    assert_eq!(
        err,
        RbacError::UnknownMatcher {
            key: "email".into()
        }
    );
    assert!(err
        .to_string()
        .starts_with("unknown matcher \"email\" (expected one of cn, o, ou,"));
    assert_eq!(Matcher::field("cn", ""), Err(RbacError::EmptyValue));
    assert_eq!(
        Matcher::field("spiffe", "spiffe://x/[").unwrap_err(),
        RbacError::BadGlob {
            glob: "spiffe://x/[".into()
        }
    );
}

// ----- bindings and roles --------------------------------------------------

#[test]
fn binding_is_and_roles_are_or() {
    let both = binding(vec![m("ou", "ci"), m("o", "Corp")]);
    let wrong_o = binding(vec![m("ou", "ci"), m("o", "Other")]);
    assert!(both.matches(&cert_principal()));
    assert!(!wrong_o.matches(&cert_principal()));
    assert!(!Binding::default().matches(&cert_principal()));
    assert_eq!(both.to_string(), "ou=\"ci\" and o=\"Corp\"");

    let r = role(
        "r",
        vec![
            binding(vec![m("user", "bob")]),
            wrong_o.clone(),
            binding(vec![m("group", "dev"), Matcher::Authenticated]),
            binding(vec![m("ou", "ci")]),
        ],
        vec![],
    );
    assert_eq!(r.matching_binding(&user("alice", &["dev"])), Some(2));
    assert_eq!(r.matching_binding(&user("bob", &[])), Some(0));
    assert_eq!(r.matching_binding(&cert_principal()), Some(3));
    assert_eq!(r.matching_binding(&user("carol", &["ops"])), None);
    assert_eq!(r.matching_binding(&Principal::anonymous()), None);
}

#[test]
fn roles_for_in_policy_order() {
    let policy = AccessPolicy::new(
        vec![
            role("devs", vec![binding(vec![m("group", "dev")])], vec![]),
            role("ci", vec![binding(vec![m("ou", "ci")])], vec![]),
            role("everyone", vec![binding(vec![Matcher::Any])], vec![]),
            role("public", vec![binding(vec![Matcher::Anonymous])], vec![]),
            role("users", vec![binding(vec![Matcher::Authenticated])], vec![]),
        ],
        Effect::Deny,
    )
    .unwrap();
    let names = |p: &Principal| -> Vec<String> {
        policy.roles_for(p).iter().map(|r| r.name.clone()).collect()
    };
    assert_eq!(names(&user("a", &["dev"])), ["devs", "everyone", "users"]);
    assert_eq!(names(&cert_principal()), ["ci", "everyone", "users"]);
    assert_eq!(names(&Principal::anonymous()), ["everyone", "public"]);
}

// ----- decisions -----------------------------------------------------------

fn two_role_policy() -> AccessPolicy {
    AccessPolicy::new(
        vec![
            role(
                "readers",
                vec![binding(vec![m("group", "dev")])],
                vec![rule("read-corp", Effect::Allow, &["corp.example.com"])],
            ),
            role(
                "quarantine",
                vec![binding(vec![Matcher::Authenticated])],
                vec![rule(
                    "no-secret",
                    Effect::Deny,
                    &["corp.example.com/secret"],
                )],
            ),
        ],
        Effect::Deny,
    )
    .unwrap()
}

#[test]
fn allow_by_rule() {
    let d = two_role_policy().decide(&user("alice", &["dev"]), &zip("corp.example.com/lib"));
    assert_eq!(
        d,
        Decision {
            effect: Effect::Allow,
            roles: vec!["readers".to_string(), "quarantine".to_string()].into(),
            rule: "read-corp".into(),
            reason: "allowed by rule \"read-corp\" of role \"readers\"".into(),
        }
    );
    assert!(d.is_allowed());
}

#[test]
fn deny_overrides_allow_across_roles() {
    // The allow comes from an earlier role; the later role's deny still wins.
    let d = two_role_policy().decide(&user("alice", &["dev"]), &zip("corp.example.com/secret/x"));
    assert_eq!(d.effect, Effect::Deny);
    assert_eq!(d.rule, "no-secret");
    assert_eq!(
        d.reason,
        "denied by rule \"no-secret\" of role \"quarantine\""
    );
    assert!(!d.is_allowed());
}

#[test]
fn first_deny_and_first_allow_in_order() {
    let policy = AccessPolicy::new(
        vec![
            role(
                "a",
                vec![binding(vec![Matcher::Any])],
                vec![
                    rule("a-allow", Effect::Allow, &[""]),
                    rule("a-deny", Effect::Deny, &["x"]),
                ],
            ),
            role(
                "b",
                vec![binding(vec![Matcher::Any])],
                vec![
                    rule("b-deny", Effect::Deny, &[""]),
                    rule("b-allow", Effect::Allow, &["x"]),
                ],
            ),
        ],
        Effect::Allow,
    )
    .unwrap();
    let anon = Principal::anonymous();
    assert_eq!(policy.decide(&anon, &zip("x/y")).rule, "a-deny");
    assert_eq!(policy.decide(&anon, &zip("z")).rule, "b-deny");
}

#[test]
fn per_kind_rules() {
    use RequestKind::*;
    let policy = AccessPolicy::new(
        vec![role(
            "browse",
            vec![binding(vec![m("token", "indexer")])],
            vec![
                kinded(
                    "list-only",
                    Effect::Allow,
                    "corp.example.com",
                    &[List, Latest, Info],
                ),
                kinded("no-zip", Effect::Deny, "corp.example.com/vendor", &[Zip]),
            ],
        )],
        Effect::Deny,
    )
    .unwrap();
    let bot = token("indexer", &[]);
    let decide = |kind, module| policy.decide(&bot, &req(module, kind, None));
    assert!(decide(List, "corp.example.com/a").is_allowed());
    assert!(decide(Latest, "corp.example.com/a").is_allowed());
    assert!(decide(Info, "corp.example.com/a").is_allowed());
    let d = decide(Zip, "corp.example.com/a");
    assert_eq!((d.effect, d.rule.as_str()), (Effect::Deny, "default"));
    assert_eq!(d.reason, "no role grants access; default is deny");
    assert_eq!(decide(Mod, "corp.example.com/a").rule, "default");
    assert_eq!(decide(Zip, "corp.example.com/vendor/x").rule, "no-zip");
    assert!(decide(List, "corp.example.com/vendor/x").is_allowed());
}

#[test]
fn version_range_rules() {
    use RequestKind::*;
    let policy = AccessPolicy::new(
        vec![role(
            "pinned",
            vec![binding(vec![Matcher::Any])],
            vec![
                ranged(
                    "bad-release",
                    Effect::Deny,
                    "corp.example.com/lib",
                    "=v1.3.0",
                ),
                ranged(
                    "v1-only",
                    Effect::Allow,
                    "corp.example.com/lib",
                    ">=v1.0.0, <v2.0.0",
                ),
                kinded(
                    "browse",
                    Effect::Allow,
                    "corp.example.com/lib",
                    &[List, Latest],
                ),
            ],
        )],
        Effect::Deny,
    )
    .unwrap();
    let anon = Principal::anonymous();
    let decide = |kind, version| {
        policy
            .decide(&anon, &req("corp.example.com/lib", kind, version))
            .rule
    };
    assert_eq!(decide(Zip, Some("v1.2.9")), "v1-only");
    assert_eq!(decide(Zip, Some("v1.0.0")), "v1-only");
    assert_eq!(decide(Zip, Some("v1.3.0")), "bad-release");
    assert_eq!(decide(Zip, Some("v2.0.0")), "default");
    assert_eq!(decide(Zip, Some("v0.9.0")), "default");
    // Prereleases of v1.0.0 sort below it.
    assert_eq!(decide(Info, Some("v1.0.0-rc.1")), "default");
    // Pseudo-versions are ordinary prereleases.
    assert_eq!(
        decide(Mod, Some("v1.4.1-0.20200101000000-abcdef123456")),
        "v1-only"
    );
    // +incompatible is build metadata: ignored for ordering.
    assert_eq!(decide(Zip, Some("v2.0.0+incompatible")), "default");
    // Non-canonical or query versions never match ranged rules.
    assert_eq!(decide(Info, Some("v1.3")), "default");
    assert_eq!(decide(Info, Some("master")), "default");
    assert_eq!(decide(Info, Some("latest")), "default");
    assert_eq!(decide(Zip, None), "default");
    // list / @latest only match the unranged rule.
    assert_eq!(decide(List, None), "browse");
    assert_eq!(decide(Latest, None), "browse");
}

#[test]
fn version_range_contains() {
    let r = VersionRange::parse(">=v1.2.0, <v2.0.0").unwrap();
    for (v, want) in [
        ("v1.2.0", true),
        ("v1.9.99", true),
        ("v1.2.0-pre", false),
        ("v1.1.9", false),
        ("v2.0.0", false),
        ("v2.0.0-rc.1", true),
        ("v1.5.0+incompatible", true),
        ("v1.5.0+meta", false),
        ("v1.5", false),
        ("1.5.0", false),
        ("", false),
        ("master", false),
    ] {
        assert_eq!(r.contains(v), want, "{v}");
    }
    let incompat = VersionRange::parse(">=v2.0.0 <v3.0.0").unwrap();
    assert!(incompat.contains("v2.3.0+incompatible"));
    assert!(!incompat.contains("v3.0.0+incompatible"));
    let below = VersionRange::parse("<v2.0.0").unwrap();
    assert!(!below.contains("v2.0.1+incompatible"));
    assert!(below.contains("v1.9.9+incompatible"));

    let ne = VersionRange::parse("!=v1.3.0").unwrap();
    assert!(ne.contains("v1.3.1"));
    assert!(!ne.contains("v1.3.0"));
    let le = VersionRange::parse("<=v1.3.0").unwrap();
    assert!(le.contains("v1.3.0"));
    assert!(!le.contains("v1.3.1"));
    let gt = VersionRange::parse(">v1.3.0").unwrap();
    assert!(!gt.contains("v1.3.0"));
    assert!(gt.contains("v1.3.1-0"));
    // Shorthand operands mean .0.
    let short = VersionRange::parse(">=v1.2").unwrap();
    assert!(short.contains("v1.2.0"));
    assert!(!short.contains("v1.1.9"));
}

#[test]
fn version_range_syntax() {
    for (text, display) in [
        (">=v1.2.0, <v2.0.0", ">=v1.2.0, <v2.0.0"),
        (">=v1.2.0 <v2.0.0", ">=v1.2.0, <v2.0.0"),
        ("  >= v1.2.0 ,< v2.0.0 ", ">=v1.2.0, <v2.0.0"),
        (">=v1.2.0,,<v2.0.0", ">=v1.2.0, <v2.0.0"),
        ("=v1.4.1", "=v1.4.1"),
        ("v1.4.1", "=v1.4.1"),
        ("!=v1.3.0", "!=v1.3.0"),
        ("v1.0.0-rc.1", "=v1.0.0-rc.1"),
    ] {
        let r = VersionRange::parse(text).unwrap();
        assert_eq!(r.to_string(), display, "{text:?}");
        assert_eq!(VersionRange::parse(display).unwrap(), r);
    }
    assert!(VersionRange::parse("v1.4.1").unwrap().contains("v1.4.1"));

    for (text, reason) in [
        ("", "no constraints"),
        (" , ", "no constraints"),
        (">=", "operator \">=\" has no version"),
        ("<v2.0.0 >=", "operator \">=\" has no version"),
        (
            "1.2.3",
            "\"1.2.3\" is not a semantic version (want e.g. v1.2.3)",
        ),
        (
            ">=1.2.3",
            "\"1.2.3\" is not a semantic version (want e.g. v1.2.3)",
        ),
        (
            "~v1.2.3",
            "\"~v1.2.3\" is not a semantic version (want e.g. v1.2.3)",
        ),
        (
            "master",
            "\"master\" is not a semantic version (want e.g. v1.2.3)",
        ),
        (
            "v1.2.3.4",
            "\"v1.2.3.4\" is not a semantic version (want e.g. v1.2.3)",
        ),
        (
            "=>v1.0.0",
            "unknown operator \"=>\" (expected =, !=, >, >=, < or <=)",
        ),
        (
            "==v1.0.0",
            "unknown operator \"==\" (expected =, !=, >, >=, < or <=)",
        ),
        (
            ">= >=v1.0.0",
            "unknown operator \">=>=\" (expected =, !=, >, >=, < or <=)",
        ),
    ] {
        assert_eq!(
            VersionRange::parse(text),
            Err(RbacError::BadVersionRange {
                range: text.into(),
                reason: reason.into()
            }),
            "{text:?}"
        );
    }
    assert_eq!(
        VersionRange::parse(">=1.2").unwrap_err().to_string(),
        "invalid version range \">=1.2\": \"1.2\" is not a semantic version (want e.g. v1.2.3)"
    );
}

#[test]
fn private_and_public_defaults() {
    let roles = || {
        vec![role(
            "readers",
            vec![binding(vec![m("group", "dev")])],
            vec![rule("read-corp", Effect::Allow, &["corp.example.com"])],
        )]
    };
    let open = AccessPolicy::new(roles(), Effect::Allow).unwrap();
    let closed = AccessPolicy::new(roles(), Effect::Deny).unwrap();
    assert_eq!(open.default_public(), Effect::Allow);
    assert_eq!(open.default_private(), Effect::Deny);
    let carol = user("carol", &["ops"]);

    let d = open.decide(&carol, &zip("github.com/x/y"));
    assert_eq!((d.effect, d.rule.as_str()), (Effect::Allow, DEFAULT_RULE));
    assert_eq!(d.reason, "no role grants access; default is allow");

    let d = closed.decide(&carol, &zip("github.com/x/y"));
    assert_eq!((d.effect, d.rule.as_str()), (Effect::Deny, DEFAULT_RULE));
    assert_eq!(d.reason, "no role grants access; default is deny");

    // Private routes deny by default whatever the public default is.
    for policy in [&open, &closed] {
        let d = policy.decide(&carol, &private(zip("corp.example.com/x")));
        assert_eq!(
            d,
            Decision {
                effect: Effect::Deny,
                roles: Vec::new().into(),
                rule: PRIVATE_DEFAULT_RULE.into(),
                reason: "no role grants access to private route \"corp\"".into(),
            }
        );
        // ... but a rule can grant them.
        let ok = policy.decide(&user("a", &["dev"]), &private(zip("corp.example.com/x")));
        assert_eq!(ok.rule, "read-corp");
    }
}

#[test]
fn default_allow_policy() {
    let policy = AccessPolicy::default_allow();
    assert!(policy.roles().is_empty());
    let anon = Principal::anonymous();
    let d = policy.decide(&anon, &zip("github.com/x/y"));
    assert_eq!((d.effect, d.rule.as_str()), (Effect::Allow, DEFAULT_RULE));
    let d = policy.decide(&anon, &private(zip("corp.example.com/x")));
    assert_eq!(d.effect, Effect::Allow);
    assert_eq!(d.rule, PRIVATE_DEFAULT_RULE);
    assert_eq!(
        d.reason,
        "no role grants access to private route \"corp\"; private default is allow"
    );
}

#[test]
fn anonymous_access() {
    let policy = AccessPolicy::new(
        vec![
            role(
                "public",
                vec![binding(vec![Matcher::Anonymous])],
                vec![rule("public-read", Effect::Allow, &["github.com"])],
            ),
            role(
                "staff",
                vec![binding(vec![m("group", "*")]), binding(vec![m("cn", "*")])],
                vec![rule("staff-read", Effect::Allow, &[""])],
            ),
        ],
        Effect::Deny,
    )
    .unwrap();
    let anon = Principal::anonymous();
    let d = policy.decide(&anon, &zip("github.com/x/y"));
    assert_eq!(
        (d.rule.as_str(), d.roles.to_vec()),
        ("public-read", vec!["public".to_string()])
    );
    let d = policy.decide(&anon, &zip("corp.example.com/x"));
    assert_eq!((d.effect, d.rule.as_str()), (Effect::Deny, "default"));
    assert!(d.roles[..] == ["public"]);
    // An authenticated user does not hold the anonymous-only role.
    let d = policy.decide(&user("a", &["g"]), &zip("github.com/x/y"));
    assert_eq!(d.rule, "staff-read");
    assert_eq!(d.roles[..], ["staff"]);
}

#[test]
fn deny_message_text() {
    let d = two_role_policy().decide(&user("alice", &["dev"]), &zip("corp.example.com/secret/x"));
    assert_eq!(
        d.deny_message("alice", "corp.example.com/secret/x"),
        "modgate: alice may not read corp.example.com/secret/x: \
         denied by rule \"no-secret\" of role \"quarantine\""
    );
    let d = two_role_policy().decide(&Principal::anonymous(), &private(zip("corp.example.com/x")));
    assert_eq!(
        d.deny_message("anonymous", "corp.example.com/x"),
        "modgate: anonymous may not read corp.example.com/x: \
         no role grants access to private route \"corp\" (rule private-default)"
    );
    let d = two_role_policy().decide(&user("carol", &[]), &zip("github.com/x"));
    assert_eq!(
        d.deny_message("carol", "github.com/x"),
        "modgate: carol may not read github.com/x: \
         no role grants access; default is deny (rule default)"
    );
    // A hostile certificate CN cannot break the message onto two lines.
    assert_eq!(
        d.deny_message("evil\r\nX-Injected: 1", "m"),
        "modgate: evil\\r\\nX-Injected: 1 may not read m: \
         no role grants access; default is deny (rule default)"
    );
}

#[test]
fn explain_reports_everything() {
    let policy = AccessPolicy::new(
        vec![
            role(
                "readers",
                vec![
                    binding(vec![m("user", "nobody")]),
                    binding(vec![m("group", "dev")]),
                ],
                vec![
                    rule("read-corp", Effect::Allow, &["corp.example.com"]),
                    rule("read-other", Effect::Allow, &["other.example.com"]),
                ],
            ),
            role(
                "unheld",
                vec![binding(vec![m("group", "ops")])],
                vec![rule("ops-deny", Effect::Deny, &[""])],
            ),
            role(
                "quarantine",
                vec![binding(vec![Matcher::Authenticated])],
                vec![
                    rule("no-secret", Effect::Deny, &["corp.example.com/secret"]),
                    rule("also-allow", Effect::Allow, &["corp.example.com/secret"]),
                ],
            ),
        ],
        Effect::Deny,
    )
    .unwrap();
    let alice = user("alice", &["dev"]);
    let request = zip("corp.example.com/secret/x");
    let e = policy.explain(&alice, &request);
    assert_eq!(
        e.roles,
        [
            RoleMatch {
                role: "readers".into(),
                binding: 1
            },
            RoleMatch {
                role: "quarantine".into(),
                binding: 0
            },
        ]
    );
    let rules: Vec<_> = e
        .rules
        .iter()
        .map(|r| (r.role.as_str(), r.rule.as_str(), r.effect))
        .collect();
    assert_eq!(
        rules,
        [
            ("readers", "read-corp", Effect::Allow),
            ("quarantine", "no-secret", Effect::Deny),
            ("quarantine", "also-allow", Effect::Allow),
        ]
    );
    assert_eq!(e.decision, policy.decide(&alice, &request));
    let skipped: Vec<_> = e.skipped.iter().map(|r| r.rule.as_str()).collect();
    assert_eq!(skipped, ["read-other"]);
    // Another module: the held roles' rules that do not cover it were considered and skipped.
    let other = policy.explain(&alice, &zip("corp.example.com/open"));
    let skipped: Vec<_> = other.skipped.iter().map(|r| r.rule.as_str()).collect();
    assert_eq!(skipped, ["read-other", "no-secret", "also-allow"]);
    assert_eq!(other.rules.len(), 1);
    assert_eq!(
        e.to_string(),
        "role \"readers\" (binding 1)\n\
         role \"quarantine\" (binding 0)\n\
         rule \"read-corp\" of role \"readers\": allow\n\
         rule \"no-secret\" of role \"quarantine\": deny\n\
         rule \"also-allow\" of role \"quarantine\": allow\n\
         decision: deny (rule no-secret): denied by rule \"no-secret\" of role \"quarantine\""
    );
    let none = policy.explain(&Principal::anonymous(), &zip("x"));
    assert_eq!(
        none.to_string(),
        "roles: none\nrules: none apply\n\
         decision: deny (rule default): no role grants access; default is deny"
    );
}

#[test]
fn regex_and_glob_rule_patterns() {
    let policy = AccessPolicy::new(
        vec![role(
            "r",
            vec![binding(vec![Matcher::Any])],
            vec![Rule {
                patterns: vec![
                    Pattern::glob("*.corp.example.com").unwrap(),
                    Pattern::regex("github\\.com/corp-[a-z]+/.*").unwrap(),
                ],
                ..rule("mixed", Effect::Allow, &[])
            }],
        )],
        Effect::Deny,
    )
    .unwrap();
    let anon = Principal::anonymous();
    assert!(policy
        .decide(&anon, &zip("git.corp.example.com/a"))
        .is_allowed());
    assert!(policy
        .decide(&anon, &zip("github.com/corp-x/y"))
        .is_allowed());
    assert!(!policy
        .decide(&anon, &zip("github.com/other/y"))
        .is_allowed());
}

// ----- effects -------------------------------------------------------------

#[test]
fn effect_parse_and_display() {
    assert_eq!("allow".parse::<Effect>(), Ok(Effect::Allow));
    assert_eq!("deny".parse::<Effect>(), Ok(Effect::Deny));
    assert_eq!(Effect::Allow.to_string(), "allow");
    assert_eq!(
        "Allow".parse::<Effect>().unwrap_err().to_string(),
        "unknown effect \"Allow\" (expected allow or deny)"
    );
}

// ----- policy validation ---------------------------------------------------

fn any_role(name: &str, rules: Vec<Rule>) -> Role {
    role(name, vec![binding(vec![Matcher::Any])], rules)
}

#[test]
fn policy_validation_errors() {
    let err = |roles| AccessPolicy::new(roles, Effect::Deny).unwrap_err();
    assert_eq!(
        err(vec![any_role("a", vec![]), any_role("", vec![])]),
        RbacError::EmptyRoleName { index: 1 }
    );
    assert_eq!(
        err(vec![any_role("a", vec![]), any_role("a", vec![])]),
        RbacError::DuplicateRoleName { name: "a".into() }
    );
    let dup = err(vec![
        any_role("a", vec![rule("r1", Effect::Allow, &["x"])]),
        any_role("b", vec![rule("r1", Effect::Deny, &["y"])]),
    ]);
    assert_eq!(
        dup,
        RbacError::DuplicateRuleId {
            id: "r1".into(),
            first_role: "a".into(),
            second_role: "b".into()
        }
    );
    assert_eq!(
        dup.to_string(),
        "duplicate rule id \"r1\" (in roles \"a\" and \"b\")"
    );
    assert!(matches!(
        err(vec![any_role(
            "a",
            vec![
                rule("r", Effect::Allow, &["x"]),
                rule("r", Effect::Deny, &["y"])
            ]
        )]),
        RbacError::DuplicateRuleId { .. }
    ));
    assert_eq!(
        err(vec![any_role("a", vec![rule("", Effect::Allow, &["x"])])]),
        RbacError::EmptyRuleId {
            role: "a".into(),
            index: 0
        }
    );
    for reserved in [DEFAULT_RULE, PRIVATE_DEFAULT_RULE] {
        assert_eq!(
            err(vec![any_role(
                "a",
                vec![rule(reserved, Effect::Allow, &["x"])]
            )]),
            RbacError::ReservedRuleId {
                role: "a".into(),
                id: reserved.into()
            }
        );
    }
    assert_eq!(
        err(vec![any_role("a", vec![rule("r", Effect::Allow, &[])])]),
        RbacError::RuleWithoutPatterns {
            role: "a".into(),
            id: "r".into()
        }
    );
    assert_eq!(
        err(vec![any_role(
            "a",
            vec![kinded("r", Effect::Allow, "x", &[])]
        )]),
        RbacError::EmptyKinds {
            role: "a".into(),
            id: "r".into()
        }
    );
    assert_eq!(
        err(vec![role(
            "a",
            vec![binding(vec![m("user", "u")]), Binding::default()],
            vec![]
        )]),
        RbacError::EmptyBinding {
            role: "a".into(),
            index: 1
        }
    );
    assert_eq!(
        err(vec![role(
            "a",
            vec![binding(vec![Matcher::Anonymous, m("group", "dev")])],
            vec![]
        )]),
        RbacError::ContradictoryBinding {
            role: "a".into(),
            index: 0
        }
    );
    assert_eq!(
        err(vec![role(
            "a",
            vec![binding(vec![Matcher::Anonymous, Matcher::Authenticated])],
            vec![]
        )])
        .to_string(),
        "role \"a\": binding 0 combines `anonymous` with a matcher anonymous principals never satisfy"
    );
    // `anonymous` with `any` is fine, and so is a role without bindings.
    AccessPolicy::new(
        vec![
            role(
                "a",
                vec![binding(vec![Matcher::Anonymous, Matcher::Any])],
                vec![],
            ),
            role("b", vec![], vec![rule("r", Effect::Allow, &["x"])]),
        ],
        Effect::Deny,
    )
    .unwrap();
}

#[test]
fn error_messages_are_one_line() {
    let errors = [
        RbacError::EmptyValue,
        RbacError::UnknownMatcher { key: "k".into() },
        RbacError::EmptyBinding {
            role: "r".into(),
            index: 0,
        },
        RbacError::RuleWithoutPatterns {
            role: "r".into(),
            id: "i".into(),
        },
        RbacError::EmptyKinds {
            role: "r".into(),
            id: "i".into(),
        },
        RbacError::EmptyRoleName { index: 3 },
    ];
    for e in errors {
        let msg = e.to_string();
        assert!(!msg.contains('\n') && !msg.ends_with('.'), "{msg}");
    }
}

// ----- properties ----------------------------------------------------------

const GROUPS: [&str; 3] = ["dev", "ops", "ci"];
const PREFIXES: [&str; 4] = ["", "corp.example.com", "corp.example.com/a", "github.com"];
const MODULES: [&str; 4] = [
    "corp.example.com/a/b",
    "corp.example.com",
    "github.com/x/y",
    "golang.org/x/mod",
];
const VERSIONS: [Option<&str>; 5] = [
    None,
    Some("v1.2.3"),
    Some("v2.0.0+incompatible"),
    Some("master"),
    Some("v0.0.0-20200101000000-abcdef123456"),
];
const RANGES: [&str; 3] = [">=v1.0.0", "<v2.0.0", "!=v1.2.3"];

/// (effect is deny, prefix index, kinds mask, range index)
type RuleSpec = (bool, usize, Option<u16>, Option<usize>);
/// (binding group indexes — 3 means `any` —, rules)
type RoleSpec = (Vec<usize>, Vec<RuleSpec>);

fn kinds_from_mask(mask: u16) -> Vec<RequestKind> {
    RequestKind::ALL
        .into_iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, k)| k)
        .collect()
}

fn build_rule(id: String, (deny, prefix, mask, range): RuleSpec) -> Rule {
    let effect = if deny { Effect::Deny } else { Effect::Allow };
    Rule {
        kinds: mask.map(|m| kinds_from_mask(m | 1)),
        versions: range.map(|r| VersionRange::parse(RANGES[r]).unwrap()),
        commits: None,
        ..rule(&id, effect, &[PREFIXES[prefix]])
    }
}

fn build_roles(specs: Vec<RoleSpec>) -> Vec<Role> {
    specs
        .into_iter()
        .enumerate()
        .map(|(ri, (groups, rules))| {
            let bindings = groups
                .into_iter()
                .map(|g| match GROUPS.get(g) {
                    Some(g) => binding(vec![m("group", g)]),
                    None => binding(vec![Matcher::Any]),
                })
                .collect();
            let rules = rules
                .into_iter()
                .enumerate()
                .map(|(i, spec)| build_rule(format!("r{ri}-{i}"), spec))
                .collect();
            role(&format!("role{ri}"), bindings, rules)
        })
        .collect()
}

fn rule_spec() -> impl Strategy<Value = RuleSpec> {
    (
        any::<bool>(),
        0..PREFIXES.len(),
        prop::option::of(any::<u16>()),
        prop::option::of(0..RANGES.len()),
    )
}

fn role_spec() -> impl Strategy<Value = RoleSpec> {
    (
        prop::collection::vec(0..=GROUPS.len(), 0..3),
        prop::collection::vec(rule_spec(), 0..5),
    )
}

proptest! {
    #[test]
    fn deny_with_catch_all_always_wins(
        specs in prop::collection::vec(role_spec(), 0..5),
        groups in prop::sample::subsequence(GROUPS.to_vec(), 0..=GROUPS.len()),
        anonymous in any::<bool>(),
        own_role in any::<bool>(),
        role_pos in any::<prop::sample::Index>(),
        rule_pos in any::<prop::sample::Index>(),
        catch_all_kinds in prop::option::of(any::<u16>()),
        kind in prop::sample::select(RequestKind::ALL.to_vec()),
        module in prop::sample::select(MODULES.to_vec()),
        version in prop::sample::select(VERSIONS.to_vec()),
        private_route in any::<bool>(),
        default_allow in any::<bool>(),
    ) {
        let mut roles = build_roles(specs);
        // The catch-all deny applies to this request's kind.
        let kinds = catch_all_kinds.map(|m| {
            let mut k = kinds_from_mask(m);
            if !k.contains(&kind) {
                k.push(kind);
            }
            k
        });
        let catch_all = Rule { kinds, ..rule("catch-all", Effect::Deny, &[""]) };
        if own_role || roles.is_empty() {
            let at = role_pos.index(roles.len() + 1);
            roles.insert(at, any_role("deny-all", vec![catch_all]));
        } else {
            // Slip it into an existing role and make sure the role is held.
            let at = role_pos.index(roles.len());
            let target = &mut roles[at];
            target.bindings.push(binding(vec![Matcher::Any]));
            let pos = rule_pos.index(target.rules.len() + 1);
            target.rules.insert(pos, catch_all);
        }
        let default = if default_allow { Effect::Allow } else { Effect::Deny };
        let policy = AccessPolicy::new(roles, default).unwrap();
        let principal = if anonymous {
            Principal::anonymous()
        } else {
            user("p", &groups)
        };
        let request = AccessRequest { module, kind, version, route: "r", private_route, commit: None };

        let explanation = policy.explain(&principal, &request);
        let decision = policy.decide(&principal, &request);
        prop_assert_eq!(&explanation.decision, &decision);
        prop_assert_eq!(decision.effect, Effect::Deny);
        prop_assert!(!decision.is_allowed());
        // The decisive rule is the first applicable deny.
        let first_deny = explanation
            .rules
            .iter()
            .find(|r| r.effect == Effect::Deny)
            .map(|r| r.rule.clone());
        prop_assert_eq!(Some(decision.rule.clone()), first_deny);
        prop_assert!(explanation.rules.iter().any(|r| r.rule == "catch-all"));
        let held: Vec<String> = explanation.roles.iter().map(|r| r.role.clone()).collect();
        prop_assert_eq!(&decision.roles[..], &held[..]);
    }

    #[test]
    fn decide_matches_explain_and_never_panics(
        specs in prop::collection::vec(role_spec(), 0..5),
        groups in prop::sample::subsequence(GROUPS.to_vec(), 0..=GROUPS.len()),
        kind in prop::sample::select(RequestKind::ALL.to_vec()),
        module in any::<String>(),
        version in prop::option::of(any::<String>()),
        private_route in any::<bool>(),
    ) {
        let policy = AccessPolicy::new(build_roles(specs), Effect::Allow).unwrap();
        let principal = user("p", &groups);
        let request = AccessRequest {
            module: &module,
            kind,
            version: version.as_deref(),
            route: "r",
            private_route,
            commit: None,
        };
        let e = policy.explain(&principal, &request);
        let d = policy.decide(&principal, &request);
        prop_assert_eq!(&e.decision, &d);
        let first_deny = e.rules.iter().find(|r| r.effect == Effect::Deny);
        if let Some(deny) = first_deny {
            prop_assert_eq!((d.effect, &d.rule), (Effect::Deny, &deny.rule));
        } else if let Some(allow) = e.rules.first() {
            prop_assert_eq!((d.effect, &d.rule), (Effect::Allow, &allow.rule));
        } else if private_route {
            prop_assert_eq!((d.effect, d.rule.as_str()), (Effect::Deny, PRIVATE_DEFAULT_RULE));
        } else {
            prop_assert_eq!((d.effect, d.rule.as_str()), (Effect::Allow, DEFAULT_RULE));
        }
    }

    #[test]
    fn version_range_parse_never_panics(s in any::<String>(), v in any::<String>()) {
        if let Ok(r) = VersionRange::parse(&s) {
            let _ = r.contains(&v);
            // Display round-trips.
            prop_assert_eq!(VersionRange::parse(&r.to_string()), Ok(r));
        }
    }

    #[test]
    fn value_match_never_panics(s in any::<String>(), c in any::<String>()) {
        if let Ok(v) = ValueMatch::new(&s) {
            let _ = v.matches(&c);
            let _ = v.matches_fingerprint(&c);
        }
        let _ = ValueMatch::fingerprint(&s);
    }
}

// ----- the compiled decision against the linear one ------------------------

/// Identity values principals and matchers are drawn from, so that bindings match often.
const IDS: &[&str] = &[
    "dev",
    "ops",
    "team-1",
    "Example Corp",
    "spiffe://corp.example/team-1/runner",
    "spiffe://corp.example/ci/x",
    "CN=a,O=Example Corp",
];

/// Matcher values: the identity values, and globs over them (anchored and not).
const VALUES: &[&str] = &[
    "dev",
    "ops",
    "team-1",
    "Example Corp",
    "spiffe://corp.example/team-1/runner",
    "spiffe://corp.example/team-1/*",
    "spiffe://corp.example/*/x",
    "spiffe://*",
    "team-?",
    "*",
    "[de]ev",
    "CN=a,O=Example Corp",
    "CN=*",
];

const FIELD_NAMES: &[&str] = &[
    "cn",
    "o",
    "ou",
    "dn",
    "san-dns",
    "san-email",
    "san-uri",
    "spiffe",
    "user",
    "token",
    "group",
];

/// Fingerprints in the forms principals and matchers may spell them.
const FPS: &[&str] = &[
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF",
    "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210",
];

fn matcher() -> impl Strategy<Value = Matcher> {
    prop_oneof![
        8 => (prop::sample::select(FIELD_NAMES), prop::sample::select(VALUES))
            .prop_map(|(k, v)| m(k, v)),
        1 => prop::sample::select(FPS).prop_map(|f| m("fingerprint", f)),
        1 => prop::sample::select(vec![Matcher::Any, Matcher::Authenticated, Matcher::Anonymous]),
    ]
}

fn compiled_rule() -> impl Strategy<Value = (bool, Vec<Pattern>, Option<u16>, Option<usize>)> {
    (
        any::<bool>(),
        prop::collection::vec(crate::test_strategies::pattern(), 1..3),
        prop::option::of(any::<u16>()),
        prop::option::of(0..RANGES.len()),
    )
}

fn compiled_policy() -> impl Strategy<Value = AccessPolicy> {
    let role = (
        prop::collection::vec(prop::collection::vec(matcher(), 1..3), 0..3),
        prop::collection::vec(compiled_rule(), 0..6),
    );
    (prop::collection::vec(role, 0..8), any::<bool>()).prop_filter_map(
        "valid policy",
        |(roles, default_allow)| {
            let roles = roles
                .into_iter()
                .enumerate()
                .map(|(ri, (bindings, rules))| Role {
                    name: format!("role{ri}"),
                    bindings: bindings.into_iter().map(Binding::new).collect(),
                    rules: rules
                        .into_iter()
                        .enumerate()
                        .map(|(i, (deny, patterns, mask, range))| Rule {
                            id: format!("r{ri}-{i}"),
                            effect: if deny { Effect::Deny } else { Effect::Allow },
                            patterns,
                            kinds: mask.map(|m| kinds_from_mask(m | 1)),
                            versions: range.map(|r| VersionRange::parse(RANGES[r]).unwrap()),
                            commits: None,
                        })
                        .collect(),
                })
                .collect();
            let default = if default_allow {
                Effect::Allow
            } else {
                Effect::Deny
            };
            AccessPolicy::new(roles, default).ok()
        },
    )
}

fn compiled_principal() -> impl Strategy<Value = Principal> {
    let ids = || prop::collection::vec(prop::sample::select(IDS).prop_map(str::to_owned), 0..3);
    let one = || prop::option::of(prop::sample::select(IDS).prop_map(str::to_owned));
    let cert = (
        (one(), ids(), ids(), prop::sample::select(IDS)),
        (ids(), ids(), one(), prop::sample::select(FPS)),
    )
        .prop_map(
            |((cn, o, ou, dn), (san_uri, san_dns, spiffe, fp))| CertIdentity {
                subject_dn: dn.to_owned(),
                cn,
                o,
                ou,
                san_dns,
                san_email: Vec::new(),
                san_uri,
                spiffe,
                fingerprint_sha256: fp.to_owned(),
                ..CertIdentity::default()
            },
        );
    (
        prop::sample::select(vec![
            PrincipalSource::Anonymous,
            PrincipalSource::Certificate,
            PrincipalSource::Basic,
            PrincipalSource::Token,
            PrincipalSource::Forwarded,
        ]),
        prop::option::of(cert),
        one(),
        one(),
        ids(),
    )
        .prop_map(|(source, cert, user, token, groups)| Principal {
            source,
            name: "p".into(),
            cert,
            user,
            token,
            groups,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The compiled decision (and role membership) is the linear one: same effect, rule,
    /// reason and roles.
    #[test]
    fn compiled_decide_equals_linear(
        policy in compiled_policy(),
        principals in prop::collection::vec(compiled_principal(), 1..4),
        modules in prop::collection::vec(crate::test_strategies::module(), 1..6),
        kind in prop::sample::select(RequestKind::ALL.to_vec()),
        version in prop::sample::select(VERSIONS.to_vec()),
        private_route in any::<bool>(),
    ) {
        for p in &principals {
            let linear: Vec<&str> =
                policy.held_roles(p).iter().map(|(r, _)| r.name.as_str()).collect();
            let compiled: Vec<&str> =
                policy.roles_for(p).iter().map(|r| r.name.as_str()).collect();
            prop_assert_eq!(&compiled, &linear);
            for module in &modules {
                let request = AccessRequest { module, kind, version, route: "r", private_route, commit: None };
                // the first decision for `p` computes its roles, the next ones reuse them
                prop_assert_eq!(policy.decide(p, &request), policy.decide_linear(p, &request));
                prop_assert_eq!(policy.decide(p, &request), policy.decide_linear(p, &request));
            }
        }
    }
}

#[test]
fn compiled_members_pick_the_first_binding_and_the_rarest_key() {
    // Every role's first binding shares `o`; the index files them by `ou`, and a role whose
    // earlier binding matches through a glob still reports that binding.
    let roles = (0..3)
        .map(|i| {
            role(
                &format!("team-{i}"),
                vec![
                    binding(vec![m(
                        "spiffe",
                        &format!("spiffe://corp.example/team-{i}/*"),
                    )]),
                    binding(vec![m("o", "Corp"), m("ou", &format!("team-{i}"))]),
                ],
                vec![rule(
                    &format!("read-{i}"),
                    Effect::Allow,
                    &["corp.example.com"],
                )],
            )
        })
        .collect();
    let policy = AccessPolicy::new(roles, Effect::Deny).unwrap();
    let mut fields = cert_fields();
    fields.o = vec!["Corp".into()];
    fields.ou = vec!["team-1".into(), "team-2".into()];
    fields.spiffe = Some("spiffe://corp.example/team-2/runner".into());
    let p = Principal {
        cert: Some(fields),
        ..cert_principal()
    };
    let e = policy.explain(&p, &zip("corp.example.com/x"));
    let held: Vec<(&str, usize)> = e
        .roles
        .iter()
        .map(|r| (r.role.as_str(), r.binding))
        .collect();
    assert_eq!(held, [("team-1", 1), ("team-2", 0)]);
    let d = policy.decide(&p, &zip("corp.example.com/x"));
    assert_eq!(d, e.decision);
    assert_eq!(d.roles[..], ["team-1", "team-2"]);
    assert_eq!(d.rule, "read-1");
}

#[test]
fn policies_are_equal_by_their_roles_and_defaults_not_what_they_remember() {
    let make = |effect: Effect, default: Effect| {
        AccessPolicy::new(
            vec![role(
                "devs",
                vec![binding(vec![m("group", "devs")])],
                vec![rule("devs-read", effect, &["corp.example.com/"])],
            )],
            default,
        )
        .expect("policy")
    };
    let policy = make(Effect::Allow, Effect::Deny);
    let fresh = make(Effect::Allow, Effect::Deny);
    // A decision fills the remembered roles of one policy only.
    policy.decide(&user("alice", &["devs"]), &zip("corp.example.com/x"));
    assert_eq!(policy.held.len(), 1);
    assert_eq!(policy, fresh);
    assert_ne!(policy, make(Effect::Deny, Effect::Deny));
    assert_ne!(policy, make(Effect::Allow, Effect::Allow));
}

#[test]
fn remembered_roles_are_keyed_by_the_whole_principal() {
    let policy = AccessPolicy::new(
        vec![
            role(
                "devs",
                vec![binding(vec![m("group", "devs")])],
                vec![rule("devs-read", Effect::Allow, &["corp.example.com/"])],
            ),
            role(
                "ops",
                vec![binding(vec![m("group", "ops")])],
                vec![rule("ops-deny", Effect::Deny, &["corp.example.com/secret"])],
            ),
        ],
        Effect::Deny,
    )
    .expect("policy");
    let r = zip("corp.example.com/secret/x");
    let dev = user("alice", &["devs"]);
    // the same name with one more group is another principal: never the remembered answer
    let dev_ops = user("alice", &["devs", "ops"]);
    for _ in 0..2 {
        let d = policy.decide(&dev, &r);
        assert_eq!((d.effect, d.rule.as_str()), (Effect::Allow, "devs-read"));
        assert_eq!(d.roles[..], ["devs"]);
        let d = policy.decide(&dev_ops, &r);
        assert_eq!((d.effect, d.rule.as_str()), (Effect::Deny, "ops-deny"));
        assert_eq!(d.roles[..], ["devs", "ops"]);
    }
    assert_eq!(policy.held.len(), 2);
    // a certificate principal with the same name holds nothing here
    let mut cert = cert_principal();
    cert.name = "alice".into();
    assert!(policy.decide(&cert, &r).roles.is_empty());
    assert_eq!(policy.held.len(), 3);
    // a copy of the policy starts with nothing remembered
    assert_eq!(policy.clone().held.len(), 0);

    // bounded: the cache is emptied when full, and answers stay right
    for i in 0..(super::HELD_CACHE_MAX + 10) {
        let p = user(&format!("u{i}"), &["ops"]);
        assert_eq!(policy.decide(&p, &r).effect, Effect::Deny);
    }
    assert!(policy.held.len() <= super::HELD_CACHE_MAX);
    assert_eq!(policy.decide(&dev, &r).effect, Effect::Allow);
}

#[test]
fn a_commit_rule_names_its_commit_under_every_pseudo_version_and_hash_query() {
    const HASH: &str = "05db99cda9e5f3b1c2d3e4f5a6b7c8d9e0f1a2b3";
    let commits = CommitSet::parse(&[HASH]).expect("commits");
    for version in [
        "v0.0.0-20240315101112-05db99cda9e5",
        "v1.0.1-0.20240315101112-05db99cda9e5",
        "v1.2.0-pre.0.20240315101112-05db99cda9e5",
        "v2.0.1-0.20240315101112-05db99cda9e5+incompatible",
        HASH,
        "05DB99CDA9E5",
        "05db99cd",
        "05db",
    ] {
        assert!(commits.names(version), "{version}");
    }
    for version in [
        "v1.0.0",
        "v0.0.0-20240315101112-05db99cda9e6",
        "05d",
        "05db99cda9e5ff",
        "main",
        "v1.0.0-rc.1",
    ] {
        assert!(!commits.names(version), "{version}");
    }
    for bad in ["05db99cda9e", "05db99cda9eZ", "", &"a".repeat(65)] {
        assert_eq!(
            CommitSet::parse(&[bad]),
            Err(RbacError::BadCommit { value: bad.into() })
        );
    }

    // In a policy: the commit rule denies the commit's pseudo-versions; a version rule on
    // its tag does not (the version string is judged), and neither denies other versions.
    let policy = AccessPolicy::new(
        vec![role(
            "r",
            vec![binding(vec![Matcher::Any])],
            vec![
                Rule {
                    commits: Some(commits.clone()),
                    ..rule("no-commit", Effect::Deny, &["corp.example.com/lib"])
                },
                ranged("no-v1", Effect::Deny, "corp.example.com/tag", "=v1.0.0"),
                rule("read", Effect::Allow, &["corp.example.com"]),
            ],
        )],
        Effect::Deny,
    )
    .expect("policy");
    let anon = Principal::anonymous();
    let decide = |module: &str, version: Option<&str>| {
        policy
            .decide(&anon, &req(module, RequestKind::Zip, version))
            .rule
    };
    let pseudo = "v0.0.0-20240315101112-05db99cda9e5";
    assert_eq!(decide("corp.example.com/lib", Some(pseudo)), "no-commit");
    assert_eq!(
        decide("corp.example.com/lib", Some("05db99cd")),
        "no-commit"
    );
    assert_eq!(decide("corp.example.com/lib", Some("v1.0.0")), "read");
    assert_eq!(decide("corp.example.com/lib", None), "read");
    assert_eq!(decide("corp.example.com/tag", Some("v1.0.0")), "no-v1");
    assert_eq!(decide("corp.example.com/tag", Some(pseudo)), "read");
    // Rule::applies agrees with the compiled decision.
    let r = Rule {
        commits: Some(commits),
        ..rule("c", Effect::Deny, &["corp.example.com/lib"])
    };
    assert!(r.applies(&req(
        "corp.example.com/lib",
        RequestKind::Info,
        Some(pseudo)
    )));
    assert!(!r.applies(&req(
        "corp.example.com/lib",
        RequestKind::Info,
        Some("v1.0.0")
    )));
}

#[test]
fn a_commit_rule_judges_a_tag_by_the_commit_it_is_known_to_point_at() {
    const HASH: &str = "05db99cda9e5f3b1c2d3e4f5a6b7c8d9e0f1a2b3";
    let commits = CommitSet::parse(&["05db99cda9e5f3"]).expect("commits");
    assert!(commits.names_request(Some("v1.0.0"), Some(HASH)));
    assert!(commits.names_request(Some("v1.0.0"), Some(&HASH.to_ascii_uppercase())));
    assert!(!commits.names_request(Some("v1.0.0"), None));
    assert!(!commits.names_request(
        Some("v1.0.0"),
        Some("05db99cda9e6f3b1c2d3e4f5a6b7c8d9e0f1a2b3")
    ));
    // A commit too short to be an object name names nothing.
    assert!(!commits.names_request(Some("v1.0.0"), Some("05db")));

    let policy = AccessPolicy::new(
        vec![
            role(
                "r",
                vec![binding(vec![Matcher::Any])],
                vec![
                    Rule {
                        commits: Some(commits.clone()),
                        kinds: Some(vec![RequestKind::Zip, RequestKind::Mod]),
                        ..rule("no-commit", Effect::Deny, &["corp.example.com/lib"])
                    },
                    rule("read", Effect::Allow, &["corp.example.com"]),
                ],
            ),
            role(
                "alice-only",
                vec![binding(vec![m("user", "alice")])],
                vec![Rule {
                    commits: Some(commits),
                    ..rule("alice-commit", Effect::Deny, &["corp.example.com/alice"])
                }],
            ),
        ],
        Effect::Deny,
    )
    .expect("policy");
    let anon = Principal::anonymous();
    fn with<'a>(
        module: &'a str,
        kind: RequestKind,
        version: &'a str,
        commit: Option<&'a str>,
    ) -> AccessRequest<'a> {
        AccessRequest {
            commit,
            ..req(module, kind, Some(version))
        }
    }
    let lib_zip = with(
        "corp.example.com/lib",
        RequestKind::Zip,
        "v1.0.0",
        Some(HASH),
    );
    assert_eq!(policy.decide(&anon, &lib_zip).rule, "no-commit");
    let other = Some("1111111111111111111111111111111111111111");
    let lib_other = with("corp.example.com/lib", RequestKind::Zip, "v1.0.0", other);
    assert_eq!(policy.decide(&anon, &lib_other).rule, "read");
    // Rule::applies agrees with the compiled decision.
    let r = &policy.roles()[0].rules[0];
    assert!(r.applies(&lib_zip));
    assert!(!r.applies(&lib_other));

    // When the decision waits for the commit: a tag whose commit is unknown, under a commit
    // rule the principal holds, of a kind the rule covers.
    let depends = |p: &Principal, module: &str, kind: RequestKind, version: &str| {
        policy.depends_on_commit(p, &with(module, kind, version, None))
    };
    assert!(depends(
        &anon,
        "corp.example.com/lib",
        RequestKind::Zip,
        "v1.0.0"
    ));
    assert!(depends(
        &anon,
        "corp.example.com/lib/sub",
        RequestKind::Mod,
        "v1.2.0-rc.1"
    ));
    assert!(depends(
        &anon,
        "corp.example.com/lib",
        RequestKind::Zip,
        "v2.0.0+incompatible"
    ));
    // Not for a kind the rule leaves out, another module, a pseudo-version (it names its
    // commit itself), a query, or a commit already known.
    assert!(!depends(
        &anon,
        "corp.example.com/lib",
        RequestKind::Info,
        "v1.0.0"
    ));
    assert!(!depends(
        &anon,
        "corp.example.com/other",
        RequestKind::Zip,
        "v1.0.0"
    ));
    assert!(!depends(
        &anon,
        "corp.example.com/lib",
        RequestKind::Zip,
        "v0.0.0-20240315101112-05db99cda9e5"
    ));
    assert!(!depends(
        &anon,
        "corp.example.com/lib",
        RequestKind::Zip,
        "main"
    ));
    assert!(!policy.depends_on_commit(&anon, &lib_zip));
    // Only rules of roles the principal holds count.
    assert!(!depends(
        &anon,
        "corp.example.com/alice",
        RequestKind::Zip,
        "v1.0.0"
    ));
    let alice = user("alice", &[]);
    assert!(depends(
        &alice,
        "corp.example.com/alice",
        RequestKind::Zip,
        "v1.0.0"
    ));
    // A policy without commit rules never waits.
    let plain = AccessPolicy::new(
        vec![role(
            "r",
            vec![binding(vec![Matcher::Any])],
            vec![rule("read", Effect::Allow, &["corp.example.com"])],
        )],
        Effect::Deny,
    )
    .expect("policy");
    assert!(!plain.depends_on_commit(
        &anon,
        &with("corp.example.com/lib", RequestKind::Zip, "v1.0.0", None)
    ));
}

// ----- case-folded policies (a Git host's view) ----------------------------

#[test]
fn a_case_folded_policy_denies_every_spelling_of_rules_written_in_upper_case() {
    let pat = |p: Result<Pattern, crate::PatternError>| p.unwrap();
    let deny = |id: &str, p: Pattern| Rule {
        patterns: vec![p],
        ..rule(id, Effect::Deny, &["x"])
    };
    let rules = vec![
        deny("p", pat(Pattern::prefix("git.corp.example/Team/Secret"))),
        deny("g", pat(Pattern::glob("git.corp.example/Team/Glob*"))),
        // Three regexes: through the policy index's RegexSet as well.
        deny(
            "r1",
            pat(Pattern::regex(r"git\.corp\.example/Team/Rx(/.*)?")),
        ),
        deny("r2", pat(Pattern::regex(r".*/Internal"))),
        deny(
            "r3",
            pat(Pattern::regex(r"git\.corp\.example/Other/[A-Z]+")),
        ),
        rule("read", Effect::Allow, &["git.corp.example"]),
    ];
    let policy = AccessPolicy::new(
        vec![role("devs", vec![binding(vec![m("user", "alice")])], rules)],
        Effect::Deny,
    )
    .unwrap();
    let folded = policy.case_folded();
    let alice = user("alice", &[]);
    for (path, id) in [
        ("git.corp.example/team/secret", "p"),
        ("git.corp.example/team/secret/v2", "p"),
        ("git.corp.example/team/globbed", "g"),
        ("git.corp.example/team/rx/sub", "r1"),
        ("git.corp.example/team/open/internal", "r2"),
        ("git.corp.example/other/abc", "r3"),
    ] {
        assert!(
            policy.decide(&alice, &zip(path)).is_allowed(),
            "{path}: case-sensitive"
        );
        let d = folded.decide(&alice, &zip(path));
        assert!(!d.is_allowed(), "{path}");
        assert_eq!(d.rule, id, "{path}");
        assert_eq!(
            folded.decide_linear(&alice, &zip(path)).rule,
            d.rule,
            "{path}: the index agrees with the linear reference"
        );
    }
    assert!(folded
        .decide(&alice, &zip("git.corp.example/team/open"))
        .is_allowed());
}
