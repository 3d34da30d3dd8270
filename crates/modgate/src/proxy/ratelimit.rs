//! Per-identity rate limits in the request path: after the identity is resolved and before
//! admission, [`GatewayProxy::rate_check`] takes a request token from the identity's bucket
//! (and refuses while its response bytes are in debt): 429 with `Retry-After` and a reason
//! `go` prints. In `logging`, [`GatewayProxy::rate_charge`] charges the body bytes the answer
//! carried to the identity's byte bucket: an answer in flight is never cut, the *next* request
//! waits. The buckets live in [`crate::model::Live`] (kept across reloads); the limits that
//! apply are the model's (`rate_limits:`), decided by `modgate_ratelimit`.

use std::net::IpAddr;
use std::time::Instant;

use modgate_policy::Principal;
use modgate_ratelimit::{Applied, Dimension, Effective, Limit, Over, RateLimits};
use pingora::proxy::Session;

use super::admit::Refusal;
use super::{GatewayProxy, RequestCtx};
use crate::identity::cache_identity;

/// What `logging` needs to charge an admitted request's bytes: the identity's bucket key and
/// the byte limit that applied.
pub struct Ticket {
    key: String,
    bytes: Limit,
}

impl GatewayProxy {
    /// Takes one request of the context's identity from its bucket; the refusal when it is
    /// over a limit.
    pub(super) fn rate_check(&self, session: &Session, ctx: &mut RequestCtx) -> Option<Refusal> {
        let limits = &ctx.model.config.rate_limits.0;
        if limits.is_empty() {
            return None;
        }
        let principal = &ctx.identity.principal;
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let roles: Vec<&str> = if limits.uses_roles() {
            ctx.model
                .gateway
                .access
                .roles_for(principal)
                .into_iter()
                .map(|r| r.name.as_str())
                .collect()
        } else {
            Vec::new()
        };
        let effective = effective_for(limits, principal, &roles);
        let key = bucket_key(principal, peer);
        match self.live.limiter().admit(&key, &effective, Instant::now()) {
            Ok(()) => {
                ctx.rate = effective.bytes.map(|b| Ticket {
                    key,
                    bytes: b.limit,
                });
                None
            }
            Err(over) => {
                self.metrics
                    .rate_limited(over.dimension.as_str(), &over.applied.origin.label());
                Some(Refusal::RateLimited {
                    message: over_message(&who(principal, peer), &over),
                    retry_after: over.retry_after_secs(),
                })
            }
        }
    }

    /// `logging`: charges the body bytes the answer carried to the identity's byte bucket.
    pub(super) fn rate_charge(&self, session: &Session, ctx: &mut RequestCtx) {
        if let Some(t) = ctx.rate.take() {
            let sent = session.as_downstream().body_bytes_sent() as u64;
            self.live
                .limiter()
                .charge(&t.key, t.bytes, sent, Instant::now());
        }
    }
}

/// The labels an identity entry may name: the principal's `<source>:<name>`, then the
/// credentials that came with a certificate.
pub fn labels(p: &Principal) -> Vec<String> {
    let mut out = vec![format!("{}:{}", p.source.as_str(), p.name)];
    if let Some(u) = &p.user {
        out.push(format!("basic:{u}"));
    }
    if let Some(t) = &p.token {
        out.push(format!("token:{t}"));
    }
    out.dedup();
    out
}

/// The limits that apply to `p` holding `roles`.
pub fn effective_for<'a>(limits: &'a RateLimits, p: &Principal, roles: &[&str]) -> Effective<'a> {
    let labels = labels(p);
    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
    limits.effective(&labels, roles, p.is_anonymous())
}

/// The bucket of a request: an identified principal's own (everything that tells identities
/// apart, as the per-identity cache key); an anonymous client's source address (an IPv6 client
/// by its /64, the block one host or one customer gets, so it cannot rotate addresses within
/// it).
pub fn bucket_key(p: &Principal, peer: Option<IpAddr>) -> String {
    if !p.is_anonymous() {
        return cache_identity(p);
    }
    match peer.map(|ip| ip.to_canonical()) {
        Some(IpAddr::V4(v4)) => format!("anonymous\0{v4}"),
        Some(IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!(
                "anonymous\0{:x}:{:x}:{:x}:{:x}::/64",
                s[0], s[1], s[2], s[3]
            )
        }
        None => "anonymous\0-".to_string(),
    }
}

/// The identity as the refusal names it.
fn who(p: &Principal, peer: Option<IpAddr>) -> String {
    if p.is_anonymous() {
        match peer {
            Some(ip) => format!("anonymous client {}", ip.to_canonical()),
            None => "anonymous client".to_string(),
        }
    } else {
        format!("{}:{}", p.source.as_str(), p.name)
    }
}

/// `<who> is over its rate limit of N requests/s (role ci); retry after S s`.
pub fn over_message(who: &str, over: &Over<'_>) -> String {
    format!(
        "{who} is over its rate limit of {} ({}); retry after {} s",
        describe(over.dimension, &over.applied),
        over.applied.origin,
        over.retry_after_secs()
    )
}

/// `N requests/s` or `N MiB/s of response bytes`, with the burst when it is not one second's
/// worth.
pub fn describe(d: Dimension, a: &Applied<'_>) -> String {
    match d {
        Dimension::Requests => {
            let burst = if a.limit.burst != a.limit.rate.ceil().max(1.0) {
                format!(", burst {}", a.limit.burst)
            } else {
                String::new()
            };
            format!("{} requests/s{burst}", a.limit.rate)
        }
        Dimension::Bytes => {
            let burst = if a.limit.burst != a.limit.rate.max(1.0) {
                format!(", burst {}", size(a.limit.burst))
            } else {
                String::new()
            };
            format!("{}/s of response bytes{burst}", size(a.limit.rate))
        }
    }
}

/// What `modgate explain` prints about the rate limits of `p` holding `roles`: the configured
/// limits and where each comes from. The buckets' levels are only in the running gateway.
pub fn explain_lines(limits: &RateLimits, p: &Principal, roles: &[&str]) -> String {
    if limits.is_empty() {
        return "rate:     no rate limits configured\n".to_string();
    }
    let e = effective_for(limits, p, roles);
    let mut out = String::new();
    for (d, a) in [
        (Dimension::Requests, e.requests),
        (Dimension::Bytes, e.bytes),
    ] {
        let line = match a {
            Some(a) => format!("{} ({})", describe(d, &a), a.origin),
            None => format!("{} unlimited", d.as_str()),
        };
        out.push_str(&format!("rate:     {line}\n"));
    }
    let keyed = if p.is_anonymous() {
        "each source address (an IPv6 client by its /64) has its own buckets"
    } else {
        "this identity has its own buckets"
    };
    out.push_str(&format!(
        "rate:     {keyed}; how full they are now is known only to the running gateway \
         (modgate_rate_limited_total counts refusals)\n"
    ));
    out
}

/// A byte count in the largest binary unit that writes it whole, else in bytes.
fn size(bytes: f64) -> String {
    for (unit, scale) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        let n = bytes / scale as f64;
        if n >= 1.0 && n.fract() == 0.0 {
            return format!("{n}{unit}");
        }
    }
    format!("{bytes}B")
}

#[cfg(test)]
mod tests {
    use super::*;
    use modgate_policy::PrincipalSource;
    use modgate_ratelimit::{Origin, Setting, Spec};
    use std::time::Duration;

    fn token(name: &str) -> Principal {
        Principal {
            source: PrincipalSource::Token,
            name: name.into(),
            token: Some(name.into()),
            ..Principal::anonymous()
        }
    }

    #[test]
    fn anonymous_clients_are_keyed_by_address_v6_by_its_64() {
        let anon = Principal::anonymous();
        let a = bucket_key(&anon, "2001:db8:1:2:aaaa::1".parse().ok());
        let b = bucket_key(&anon, "2001:db8:1:2:bbbb::7".parse().ok());
        let c = bucket_key(&anon, "2001:db8:1:3::1".parse().ok());
        assert_eq!(a, b);
        assert_ne!(a, c);
        let v4 = bucket_key(&anon, "198.51.100.7".parse().ok());
        let mapped = bucket_key(&anon, "::ffff:198.51.100.7".parse().ok());
        assert_eq!(v4, mapped);
        assert_ne!(v4, bucket_key(&anon, "198.51.100.8".parse().ok()));
        // An identity is its own, wherever it comes from.
        let t = token("ci");
        assert_eq!(
            bucket_key(&t, "198.51.100.7".parse().ok()),
            bucket_key(&t, "198.51.100.8".parse().ok())
        );
        assert_ne!(bucket_key(&t, None), bucket_key(&token("other"), None));
        assert_ne!(bucket_key(&t, None), bucket_key(&anon, None));
    }

    #[test]
    fn the_reason_names_identity_limit_origin_and_wait() {
        let over = Over {
            dimension: Dimension::Requests,
            applied: Applied {
                limit: Limit {
                    rate: 500.0,
                    burst: 2000.0,
                },
                origin: Origin::Role("ci"),
            },
            wait: Duration::from_millis(1200),
        };
        assert_eq!(
            over_message("token:ci-bot", &over),
            "token:ci-bot is over its rate limit of 500 requests/s, burst 2000 (role ci); \
             retry after 2 s"
        );
        let over = Over {
            dimension: Dimension::Bytes,
            applied: Applied {
                limit: Limit {
                    rate: (50u64 << 20) as f64,
                    burst: (50u64 << 20) as f64,
                },
                origin: Origin::Default,
            },
            wait: Duration::from_millis(10),
        };
        assert_eq!(
            over_message("basic:alice", &over),
            "basic:alice is over its rate limit of 50MiB/s of response bytes (default); retry \
             after 1 s"
        );
    }

    #[test]
    fn explain_names_each_limit_and_where_it_comes_from() {
        let mut limits = RateLimits::default();
        limits.default.requests = Setting::Limited(Limit {
            rate: 50.0,
            burst: 200.0,
        });
        limits.roles.insert(
            "ci".into(),
            Spec {
                requests: Setting::Limited(Limit {
                    rate: 500.0,
                    burst: 500.0,
                }),
                bytes: Setting::Inherit,
            },
        );
        let text = explain_lines(&limits, &token("bot"), &["ci"]);
        assert!(
            text.contains("rate:     500 requests/s (role ci)"),
            "{text}"
        );
        assert!(text.contains("rate:     bytes unlimited"), "{text}");
        assert!(text.contains("running gateway"), "{text}");
        let text = explain_lines(&limits, &Principal::anonymous(), &[]);
        assert!(
            text.contains("50 requests/s, burst 200 (default)"),
            "{text}"
        );
        assert!(text.contains("source address"), "{text}");
        assert!(explain_lines(&RateLimits::default(), &token("bot"), &[])
            .contains("no rate limits configured"));
    }

    #[test]
    fn a_rate_limited_refusal_is_a_429_with_retry_after_audited_as_deny() {
        let r = Refusal::RateLimited {
            message: "token:x is over its rate limit".into(),
            retry_after: 0,
        };
        assert_eq!(r.status(), 429);
        // Never 0: a client told 0 would come straight back.
        assert_eq!(r.headers(), vec![("Retry-After", "1".to_string())]);
        assert_eq!(r.audit(), modgate_telemetry::AuditDecision::Deny);
        assert_eq!(r.message(), "token:x is over its rate limit");
        assert_eq!(r.auth_failure(), None);
    }

    #[test]
    fn credentials_beside_a_certificate_are_labels_too() {
        let p = Principal {
            source: PrincipalSource::Certificate,
            name: "build-01".into(),
            user: Some("alice".into()),
            ..Principal::anonymous()
        };
        assert_eq!(labels(&p), vec!["certificate:build-01", "basic:alice"]);
        let mut limits = RateLimits::default();
        limits.identities.insert(
            "basic:alice".into(),
            Spec {
                requests: Setting::Limited(Limit {
                    rate: 1.0,
                    burst: 1.0,
                }),
                bytes: Setting::Inherit,
            },
        );
        let e = effective_for(&limits, &p, &[]);
        assert_eq!(
            e.requests.map(|a| a.origin),
            Some(Origin::Identity("basic:alice"))
        );
    }
}
