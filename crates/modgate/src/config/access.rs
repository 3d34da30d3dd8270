//! The `access:` section of `gateway.yaml`: roles, who holds them, and what they may read.
//!
//! ```yaml
//! access:
//!   default: deny              # public routes when no rule applies (private routes: always deny)
//!   roles:
//!     - name: developers
//!       members:               # any one entry grants the role; keys inside one entry must all match
//!         - { o: "Example Corp", ou: dev }
//!         - { user: alice }
//!         - { spiffe: "spiffe://corp.example/ci/*" }
//!         - authenticated      # or: anonymous, any
//!       rules:
//!         - id: corp-read
//!           allow: { glob: "corp.example.com/*" }
//!         - id: no-old-crypto
//!           deny: [{ prefix: corp.example.com/crypto }]
//!           kinds: [zip]
//!           versions: "<v2.0.0"
//! ```
//! Every value is compiled while read, so a bad glob or version range is reported at its line.

use modgate_policy::{
    AccessPolicy, Binding, CommitSet, Effect, Matcher, Role, Rule, ValueMatch, VersionRange,
};
use modgate_protocol::RequestKind;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::fmt;

use super::identity::OneOrMany;
use super::{from_str_with, MatchSpec, Name};

/// The whole section, compiled.
#[derive(Debug, PartialEq)]
pub struct AccessConfig {
    /// Whether the file had an `access:` section at all.
    pub configured: bool,
    pub policy: AccessPolicy,
}

impl Default for AccessConfig {
    /// No `access:` section: public routes are open to everyone, private routes to nobody
    /// (a private route needs a role that allows it).
    fn default() -> Self {
        let policy = match AccessPolicy::new(Vec::new(), Effect::Allow) {
            Ok(p) => p,
            // An empty role list has nothing to reject.
            Err(_) => unreachable!("an empty policy is always valid"),
        };
        AccessConfig {
            configured: false,
            policy,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum EffectValue {
    Allow,
    Deny,
}

impl From<EffectValue> for Effect {
    fn from(e: EffectValue) -> Effect {
        match e {
            EffectValue::Allow => Effect::Allow,
            EffectValue::Deny => Effect::Deny,
        }
    }
}

fn default_effect() -> EffectValue {
    EffectValue::Deny
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccess {
    #[serde(default = "default_effect")]
    default: EffectValue,
    #[serde(default)]
    roles: Vec<RawRole>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRole {
    name: Name,
    members: Vec<Member>,
    #[serde(default)]
    rules: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: Option<Name>,
    allow: Option<OneOrMany<MatchSpec>>,
    deny: Option<OneOrMany<MatchSpec>>,
    kinds: Option<Vec<KindValue>>,
    versions: Option<RangeValue>,
    commits: Option<CommitsValue>,
}

/// A request kind a rule may be limited to (`sumdb` stands for every checksum-database read).
struct KindValue(Vec<RequestKind>);

const RULE_KINDS: [RequestKind; 8] = [
    RequestKind::List,
    RequestKind::Latest,
    RequestKind::Info,
    RequestKind::Mod,
    RequestKind::Zip,
    RequestKind::SumdbLatest,
    RequestKind::SumdbLookup,
    RequestKind::SumdbTile,
];

impl<'de> Deserialize<'de> for KindValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, "a request kind", |s| {
            if s == "sumdb" {
                return Ok(KindValue(vec![
                    RequestKind::SumdbLatest,
                    RequestKind::SumdbLookup,
                    RequestKind::SumdbTile,
                ]));
            }
            RULE_KINDS
                .iter()
                .find(|k| k.as_str() == s)
                .map(|k| KindValue(vec![*k]))
                .ok_or_else(|| {
                    format!(
                        "unknown request kind {s:?} (use list, latest, info, mod, zip, or sumdb \
                         / sumdb-latest / sumdb-lookup / sumdb-tile)"
                    )
                })
        })
    }
}

/// A version range, compiled while read.
struct RangeValue(VersionRange);

impl<'de> Deserialize<'de> for RangeValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, "a version range such as \">=v1.2.0, <v2.0.0\"", |s| {
            VersionRange::parse(s)
                .map(RangeValue)
                .map_err(|e| e.to_string())
        })
    }
}

/// A rule's `commits`: commit hashes (12 or more hex digits), checked while read.
struct CommitsValue(CommitSet);

impl<'de> Deserialize<'de> for CommitsValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let list = Vec::<String>::deserialize(d)?;
        CommitSet::parse(&list)
            .map(CommitsValue)
            .map_err(de::Error::custom)
    }
}

/// A glob-or-exact identity value, compiled while read.
struct Value(ValueMatch);

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, "an exact value or a glob", |s| {
            ValueMatch::new(s).map(Value).map_err(|e| e.to_string())
        })
    }
}

/// One `members:` entry: a keyword, or a map whose keys must all match.
struct Member(Binding);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMember {
    cn: Option<Value>,
    o: Option<Value>,
    ou: Option<Value>,
    dn: Option<Value>,
    san_dns: Option<Value>,
    san_email: Option<Value>,
    san_uri: Option<Value>,
    spiffe: Option<Value>,
    fingerprint: Option<Value>,
    user: Option<Value>,
    token: Option<Value>,
    group: Option<Value>,
}

impl RawMember {
    fn into_binding(self) -> Result<Binding, String> {
        type Make = fn(ValueMatch) -> Matcher;
        let pairs: [(Option<Value>, Make); 12] = [
            (self.cn, Matcher::Cn),
            (self.o, Matcher::O),
            (self.ou, Matcher::Ou),
            (self.dn, Matcher::Dn),
            (self.san_dns, Matcher::SanDns),
            (self.san_email, Matcher::SanEmail),
            (self.san_uri, Matcher::SanUri),
            (self.spiffe, Matcher::Spiffe),
            (self.fingerprint, Matcher::Fingerprint),
            (self.user, Matcher::User),
            (self.token, Matcher::Token),
            (self.group, Matcher::Group),
        ];
        let matchers: Vec<Matcher> = pairs
            .into_iter()
            .filter_map(|(v, make)| v.map(|v| make(v.0)))
            .collect();
        if matchers.is_empty() {
            return Err(
                "a member entry needs at least one of cn, o, ou, dn, san_dns, san_email, \
                        san_uri, spiffe, fingerprint, user, token, group"
                    .into(),
            );
        }
        Ok(Binding { matchers })
    }
}

impl<'de> Deserialize<'de> for Member {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Member;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("anonymous, authenticated, any, or a map such as { cn: alice }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Member, E> {
                let m = match v {
                    "anonymous" => Matcher::Anonymous,
                    "authenticated" => Matcher::Authenticated,
                    "any" => Matcher::Any,
                    other => {
                        return Err(E::custom(format!(
                            "unknown member keyword {other:?} (use anonymous, authenticated, \
                             any, or a map such as {{ user: alice }})"
                        )))
                    }
                };
                Ok(Member(Binding { matchers: vec![m] }))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Member, A::Error> {
                let raw = RawMember::deserialize(de::value::MapAccessDeserializer::new(map))?;
                raw.into_binding().map(Member).map_err(de::Error::custom)
            }
        }
        d.deserialize_any(V)
    }
}

fn compile_rule(role: &str, index: usize, raw: RawRule) -> Result<Rule, String> {
    let id = raw
        .id
        .map(|n| n.0)
        .unwrap_or_else(|| format!("{role}.{index}"));
    let (effect, specs) = match (raw.allow, raw.deny) {
        (Some(a), None) => (Effect::Allow, a.0),
        (None, Some(d)) => (Effect::Deny, d.0),
        (None, None) => return Err(format!("rule {id:?}: give allow or deny")),
        (Some(_), Some(_)) => {
            return Err(format!(
                "rule {id:?}: give allow or deny, not both (write two rules)"
            ))
        }
    };
    if specs.is_empty() {
        return Err(format!("rule {id:?}: needs at least one pattern"));
    }
    if raw.versions.is_some() && raw.commits.is_some() {
        return Err(format!(
            "rule {id:?}: give versions or commits, not both (a version rule judges the version \
             string, a commit rule the commit a pseudo-version or hash names: write two rules)"
        ));
    }
    let patterns = specs
        .into_iter()
        .map(|s| s.into_pattern().map_err(|e| format!("rule {id:?}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Rule {
        id,
        effect,
        patterns,
        kinds: raw.kinds.map(|k| k.into_iter().flat_map(|k| k.0).collect()),
        versions: raw.versions.map(|v| v.0),
        commits: raw.commits.map(|c| c.0),
    })
}

impl<'de> Deserialize<'de> for AccessConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawAccess::deserialize(d)?;
        let mut roles = Vec::with_capacity(raw.roles.len());
        for r in raw.roles {
            let name = r.name.0;
            if r.members.is_empty() {
                return Err(de::Error::custom(format!(
                    "role {name:?} has no members: list who holds it"
                )));
            }
            let rules = r
                .rules
                .into_iter()
                .enumerate()
                .map(|(i, rule)| compile_rule(&name, i, rule))
                .collect::<Result<Vec<_>, _>>()
                .map_err(de::Error::custom)?;
            roles.push(Role {
                name,
                bindings: r.members.into_iter().map(|m| m.0).collect(),
                rules,
            });
        }
        let policy = AccessPolicy::new(roles, raw.default.into())
            .map_err(|e| de::Error::custom(e.to_string()))?;
        Ok(AccessConfig {
            configured: true,
            policy,
        })
    }
}
