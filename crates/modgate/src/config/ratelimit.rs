//! The `rate_limits:` section of `gateway.yaml`: requests and response bytes per identity, by
//! default, for anonymous clients, per role and per identity (docs/configuration.md).
//!
//! ```yaml
//! rate_limits:
//!   default: { requests_per_second: 50, burst: 200, bytes_per_second: 50MiB, bytes_burst: 500MiB }
//!   anonymous: { requests_per_second: 5, burst: 20 }
//!   roles:
//!     ci: { requests_per_second: 500, burst: 2000 }
//!   identities:
//!     "token:release-bot": { requests_per_second: unlimited }
//!   max_identities: 100000
//! ```
//! Each value is checked while read (a rate of 0, a burst without its rate), so the error
//! names its line; role names are checked against `access.roles` once the whole file is read.

use std::collections::BTreeMap;
use std::fmt;

use modgate_ratelimit::{Limit, RateLimits, Setting, Spec};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::cache::{parse_size, ByteSize};
use super::from_str_with;

/// The whole section, compiled (no section: no limits).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RateLimitsConfig(pub RateLimits);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimits {
    #[serde(default)]
    default: SpecValue,
    #[serde(default)]
    anonymous: SpecValue,
    #[serde(default)]
    roles: BTreeMap<String, SpecValue>,
    #[serde(default)]
    identities: BTreeMap<IdentityLabel, SpecValue>,
    max_identities: Option<usize>,
}

impl<'de> Deserialize<'de> for RateLimitsConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawRateLimits::deserialize(d)?;
        let max_identities = raw
            .max_identities
            .unwrap_or(modgate_ratelimit::policy::DEFAULT_MAX_IDENTITIES);
        if max_identities == 0 {
            return Err(de::Error::custom(
                "max_identities must be at least 1 (it bounds the memory the buckets take)",
            ));
        }
        Ok(RateLimitsConfig(RateLimits {
            default: raw.default.0,
            anonymous: raw.anonymous.0,
            roles: raw.roles.into_iter().map(|(k, v)| (k, v.0)).collect(),
            identities: raw
                .identities
                .into_iter()
                .map(|(k, v)| (k.0, v.0))
                .collect(),
            max_identities,
        }))
    }
}

/// An identity as the audit record names it: `<source>:<name>`.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct IdentityLabel(String);

/// The sources an identity entry may name.
const SOURCES: [&str; 4] = ["certificate", "forwarded", "basic", "token"];

impl<'de> Deserialize<'de> for IdentityLabel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, "an identity such as \"token:release-bot\"", |s| {
            let Some((source, name)) = s.split_once(':') else {
                return Err(format!(
                    "{s:?} is not an identity: write <source>:<name> as the audit record names \
                     it (token:release-bot, basic:alice, certificate:build-01)"
                ));
            };
            if source == "anonymous" {
                return Err(
                    "anonymous clients are limited per source address by rate_limits.anonymous \
                     (or default), not by an identity entry"
                        .into(),
                );
            }
            if !SOURCES.contains(&source) {
                return Err(format!(
                    "unknown identity source {source:?} in {s:?} (use {})",
                    SOURCES.join(", ")
                ));
            }
            if name.is_empty() {
                return Err(format!("{s:?}: the identity's name is empty"));
            }
            Ok(IdentityLabel(s.to_string()))
        })
    }
}

/// A rate: a number above 0, or `unlimited`.
#[derive(Clone, Copy)]
enum Rate {
    Unlimited,
    PerSecond(f64),
}

const ZERO_RATE: &str = "a rate of 0 would refuse every request; write `unlimited` to lift the \
                         limit (to refuse an identity, use an access rule)";

fn check_rate(v: f64) -> Result<Rate, String> {
    if !v.is_finite() || v < 0.0 {
        Err(format!(
            "{v} is not a rate (a number above 0, or unlimited)"
        ))
    } else if v == 0.0 {
        Err(ZERO_RATE.into())
    } else {
        Ok(Rate::PerSecond(v))
    }
}

struct RequestRate(Rate);

impl<'de> Deserialize<'de> for RequestRate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RequestRate;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("requests per second (a number above 0) or unlimited")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RequestRate, E> {
                check_rate(v as f64).map(RequestRate).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RequestRate, E> {
                check_rate(v as f64).map(RequestRate).map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<RequestRate, E> {
                check_rate(v).map(RequestRate).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RequestRate, E> {
                match v {
                    "unlimited" => Ok(RequestRate(Rate::Unlimited)),
                    _ => Err(E::custom(format!(
                        "{v:?} is not a rate (a number of requests per second above 0, or unlimited)"
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

struct ByteRate(Rate);

impl<'de> Deserialize<'de> for ByteRate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteRate;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bytes per second (a size such as \"50MiB\") or unlimited")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteRate, E> {
                check_rate(v as f64).map(ByteRate).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteRate, E> {
                if v == "unlimited" {
                    return Ok(ByteRate(Rate::Unlimited));
                }
                let bytes = parse_size(v).map_err(E::custom)?;
                check_rate(bytes as f64).map(ByteRate).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    requests_per_second: Option<RequestRate>,
    burst: Option<u64>,
    bytes_per_second: Option<ByteRate>,
    bytes_burst: Option<ByteSize>,
}

/// One entry, checked.
#[derive(Default)]
struct SpecValue(Spec);

/// One dimension of an entry: its rate and burst as written, and the burst when none is.
fn setting(
    rate: Option<Rate>,
    burst: Option<u64>,
    names: (&str, &str),
    default_burst: impl Fn(f64) -> f64,
) -> Result<Setting, String> {
    let (rate_name, burst_name) = names;
    match (rate, burst) {
        (None, None) => Ok(Setting::Inherit),
        (None, Some(_)) => Err(format!(
            "{burst_name} needs {rate_name} beside it (the rate the burst refills at)"
        )),
        (Some(Rate::Unlimited), Some(_)) => Err(format!(
            "{burst_name} with {rate_name}: unlimited means nothing (leave {burst_name} out)"
        )),
        (Some(Rate::Unlimited), None) => Ok(Setting::Unlimited),
        (Some(Rate::PerSecond(_)), Some(0)) => Err(format!(
            "{burst_name}: 0 would refuse everything; it must be at least 1"
        )),
        (Some(Rate::PerSecond(rate)), burst) => Ok(Setting::Limited(Limit {
            rate,
            burst: burst.map_or_else(|| default_burst(rate), |b| b as f64),
        })),
    }
}

impl<'de> Deserialize<'de> for SpecValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawSpec::deserialize(d)?;
        let requests = setting(
            raw.requests_per_second.map(|r| r.0),
            raw.burst,
            ("requests_per_second", "burst"),
            // One second's worth, at least one request.
            |rate| rate.ceil().max(1.0),
        )
        .map_err(de::Error::custom)?;
        let bytes = setting(
            raw.bytes_per_second.map(|r| r.0),
            raw.bytes_burst.map(|b| b.0),
            ("bytes_per_second", "bytes_burst"),
            |rate| rate.max(1.0),
        )
        .map_err(de::Error::custom)?;
        Ok(SpecValue(Spec { requests, bytes }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RateLimitsConfig, String> {
        serde_yaml_ng::from_str::<RateLimitsConfig>(text).map_err(|e| e.to_string())
    }

    fn limit(rate: f64, burst: f64) -> Setting {
        Setting::Limited(Limit { rate, burst })
    }

    #[test]
    fn every_key_is_read() {
        let c = parse(
            r#"
default: { requests_per_second: 50, burst: 200, bytes_per_second: 50MiB, bytes_burst: 500MiB }
anonymous: { requests_per_second: 0.5 }
roles:
  ci: { requests_per_second: 500, burst: 2000 }
  mirror: { bytes_per_second: unlimited }
identities:
  "token:release-bot": { requests_per_second: unlimited }
max_identities: 1000
"#,
        )
        .expect("valid")
        .0;
        assert_eq!(c.default.requests, limit(50.0, 200.0));
        assert_eq!(
            c.default.bytes,
            limit((50u64 << 20) as f64, (500u64 << 20) as f64)
        );
        // The burst defaults to one second's worth, at least one request.
        assert_eq!(c.anonymous.requests, limit(0.5, 1.0));
        assert_eq!(c.anonymous.bytes, Setting::Inherit);
        assert_eq!(c.roles["ci"].requests, limit(500.0, 2000.0));
        assert_eq!(c.roles["mirror"].bytes, Setting::Unlimited);
        assert_eq!(
            c.identities["token:release-bot"].requests,
            Setting::Unlimited
        );
        assert_eq!(c.max_identities, 1000);
    }

    #[test]
    fn bad_values_are_refused_with_why() {
        for (text, needle) in [
            ("default: { requests_per_second: 0 }", "a rate of 0"),
            ("default: { requests_per_second: -1 }", "not a rate"),
            ("default: { requests_per_second: lots }", "not a rate"),
            ("default: { burst: 10 }", "burst needs requests_per_second"),
            (
                "default: { requests_per_second: unlimited, burst: 3 }",
                "unlimited means nothing",
            ),
            (
                "default: { requests_per_second: 1, burst: 0 }",
                "at least 1",
            ),
            ("default: { bytes_per_second: 0B }", "a rate of 0"),
            ("default: { bytes_per_second: 5 parsecs }", "size"),
            ("default: { bytes_burst: 5MiB }", "bytes_burst needs"),
            ("default: { request_per_second: 5 }", "unknown field"),
            (
                "identities: { alice: { requests_per_second: 1 } }",
                "<source>:<name>",
            ),
            (
                "identities: { \"anonymous:x\": { requests_per_second: 1 } }",
                "rate_limits.anonymous",
            ),
            (
                "identities: { \"cert:x\": { requests_per_second: 1 } }",
                "unknown identity source",
            ),
            (
                "identities: { \"token:\": { requests_per_second: 1 } }",
                "empty",
            ),
            ("max_identities: 0", "at least 1"),
        ] {
            let e = parse(text)
                .err()
                .unwrap_or_else(|| panic!("{text}: accepted"));
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    fn whole_file(section: &str) -> Result<crate::config::GatewayConfig, String> {
        let text = format!(
            "listeners:\n  - {{ name: plain, address: \"127.0.0.1:7070\" }}\n\
             upstreams:\n  a: {{ url: \"http://127.0.0.1:9001\" }}\n\
             routes:\n  - {{ name: all, match: {{ prefix: \"\" }}, chain: [a] }}\n\
             access:\n  roles:\n    - {{ name: ci, members: [ any ] }}\n{section}"
        );
        crate::config::parse(&text, "gateway.yaml", std::path::Path::new("/tmp"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn errors_name_the_line_and_roles_must_exist() {
        let ok = whole_file("rate_limits:\n  roles:\n    ci: { requests_per_second: 5 }\n")
            .expect("valid");
        assert_eq!(ok.rate_limits.0.roles["ci"].requests, limit(5.0, 5.0));
        let e = whole_file("rate_limits:\n  roles:\n    ci: { requests_per_second: 0 }\n")
            .expect_err("a zero rate");
        assert!(
            e.starts_with("gateway.yaml:12:32: rate_limits.roles.ci.requests_per_second: "),
            "{e}"
        );
        assert!(e.contains("a rate of 0"), "{e}");
        let e = whole_file("rate_limits:\n  roles:\n    cii: { requests_per_second: 5 }\n")
            .expect_err("an unknown role");
        assert!(
            e.contains("rate_limits.roles.cii: no role named \"cii\" in access.roles (roles: ci)"),
            "{e}"
        );
    }

    #[test]
    fn no_section_limits_nothing() {
        assert!(RateLimitsConfig::default().0.is_empty());
    }
}
