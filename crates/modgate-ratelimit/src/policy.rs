//! Which limits apply to an identity, per dimension (requests, response bytes):
//!
//! 1. the identity's own entry (`identities`, by `<source>:<name>` as the audit record names
//!    it), when it sets that dimension;
//! 2. else the most generous entry among the roles the identity holds that set it (roles
//!    grant, they never take away, so holding one more role never lowers a limit; equally
//!    generous entries: the first in policy order names the limit);
//! 3. else, for an anonymous request, the `anonymous` entry when it sets it;
//! 4. else the `default` entry;
//! 5. else no limit.
//!
//! An entry may also lift a limit the level below would set ([`Setting::Unlimited`]).

use std::collections::BTreeMap;
use std::fmt;

use crate::bucket::Limit;

/// What an entry says about one dimension.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Setting {
    /// Nothing: the next level decides.
    #[default]
    Inherit,
    /// No limit, whatever the next level says.
    Unlimited,
    Limited(Limit),
}

impl Setting {
    /// Orders settings by generosity: unlimited first, then the higher rate, then the higher
    /// burst. `None` for [`Setting::Inherit`].
    fn generosity(&self) -> Option<(bool, f64, f64)> {
        match self {
            Setting::Inherit => None,
            Setting::Unlimited => Some((true, 0.0, 0.0)),
            Setting::Limited(l) => Some((false, l.rate, l.burst)),
        }
    }
}

/// One entry: a setting for requests and one for response bytes.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Spec {
    pub requests: Setting,
    pub bytes: Setting,
}

/// The two things limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    Requests,
    Bytes,
}

impl Dimension {
    /// The `reason` label of the limited-requests counter.
    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Requests => "requests",
            Dimension::Bytes => "bytes",
        }
    }

    fn of(self, s: &Spec) -> Setting {
        match self {
            Dimension::Requests => s.requests,
            Dimension::Bytes => s.bytes,
        }
    }
}

/// The whole configured policy.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimits {
    pub default: Spec,
    /// Anonymous requests (each source address on its own), before `default`.
    pub anonymous: Spec,
    /// By role name.
    pub roles: BTreeMap<String, Spec>,
    /// By identity label, `<source>:<name>` (`token:release-bot`, `basic:alice`,
    /// `certificate:build-01`).
    pub identities: BTreeMap<String, Spec>,
    /// The most identities whose buckets are kept at once.
    pub max_identities: usize,
}

/// The default for [`RateLimits::max_identities`]: a few hundred bytes each (the key, two
/// buckets, the map's overhead), so tens of MB at most.
pub const DEFAULT_MAX_IDENTITIES: usize = 100_000;

impl Default for RateLimits {
    /// No limits at all.
    fn default() -> Self {
        RateLimits {
            default: Spec::default(),
            anonymous: Spec::default(),
            roles: BTreeMap::new(),
            identities: BTreeMap::new(),
            max_identities: DEFAULT_MAX_IDENTITIES,
        }
    }
}

/// Where a limit comes from, as the refusal names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin<'a> {
    Default,
    Anonymous,
    Role(&'a str),
    Identity(&'a str),
}

impl Origin<'_> {
    /// A metric label for it: never an identity's name (`identity` for all of them); a role
    /// as `role:<name>` (roles are few and written by the operator).
    pub fn label(&self) -> String {
        match self {
            Origin::Default => "default".into(),
            Origin::Anonymous => "anonymous".into(),
            Origin::Role(r) => format!("role:{r}"),
            Origin::Identity(_) => "identity".into(),
        }
    }
}

impl fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::Anonymous => f.write_str("anonymous"),
            Origin::Role(r) => write!(f, "role {r}"),
            Origin::Identity(i) => write!(f, "identity {i}"),
        }
    }
}

/// A limit in force and where it comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Applied<'a> {
    pub limit: Limit,
    pub origin: Origin<'a>,
}

/// The limits that apply to one identity (`None`: that dimension is not limited).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Effective<'a> {
    pub requests: Option<Applied<'a>>,
    pub bytes: Option<Applied<'a>>,
}

impl Effective<'_> {
    pub fn is_unlimited(&self) -> bool {
        self.requests.is_none() && self.bytes.is_none()
    }
}

impl RateLimits {
    /// Whether any limit is configured at all (nothing to do for any request otherwise).
    pub fn is_empty(&self) -> bool {
        let limits = |s: &Spec| {
            matches!(s.requests, Setting::Limited(_)) || matches!(s.bytes, Setting::Limited(_))
        };
        !limits(&self.default)
            && !limits(&self.anonymous)
            && !self.roles.values().any(limits)
            && !self.identities.values().any(limits)
    }

    /// Whether the roles an identity holds can matter (the caller need not work them out
    /// otherwise).
    pub fn uses_roles(&self) -> bool {
        !self.roles.is_empty()
    }

    /// The limits for an identity known by `labels` (its `<source>:<name>` labels, the
    /// principal's first; the first with an entry is the identity's entry), holding `roles`
    /// (in policy order).
    pub fn effective<'a>(
        &'a self,
        labels: &[&str],
        roles: &[&str],
        anonymous: bool,
    ) -> Effective<'a> {
        let own = labels
            .iter()
            .find_map(|l| self.identities.get_key_value(*l));
        let role_specs: Vec<(&'a str, &'a Spec)> = roles
            .iter()
            .filter_map(|r| self.roles.get_key_value(*r))
            .map(|(k, v)| (k.as_str(), v))
            .collect();
        let pick = |d: Dimension| -> Option<Applied<'a>> {
            let (setting, origin) = self.decide(d, own, &role_specs, anonymous);
            match setting {
                Setting::Limited(limit) => Some(Applied { limit, origin }),
                Setting::Unlimited | Setting::Inherit => None,
            }
        };
        Effective {
            requests: pick(Dimension::Requests),
            bytes: pick(Dimension::Bytes),
        }
    }

    fn decide<'a>(
        &'a self,
        d: Dimension,
        own: Option<(&'a String, &'a Spec)>,
        roles: &[(&'a str, &'a Spec)],
        anonymous: bool,
    ) -> (Setting, Origin<'a>) {
        if let Some((label, spec)) = own {
            let s = d.of(spec);
            if s != Setting::Inherit {
                return (s, Origin::Identity(label));
            }
        }
        let mut best: Option<(Setting, &'a str)> = None;
        for (name, spec) in roles {
            let s = d.of(spec);
            let Some(g) = s.generosity() else { continue };
            let better = match best.and_then(|(b, _)| b.generosity()) {
                None => true,
                Some(bg) => g > bg,
            };
            if better {
                best = Some((s, name));
            }
        }
        if let Some((s, name)) = best {
            return (s, Origin::Role(name));
        }
        if anonymous {
            let s = d.of(&self.anonymous);
            if s != Setting::Inherit {
                return (s, Origin::Anonymous);
            }
        }
        (d.of(&self.default), Origin::Default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim(rate: f64, burst: f64) -> Setting {
        Setting::Limited(Limit { rate, burst })
    }

    fn policy() -> RateLimits {
        let mut p = RateLimits {
            default: Spec {
                requests: lim(50.0, 200.0),
                bytes: lim(1e6, 1e7),
            },
            anonymous: Spec {
                requests: lim(5.0, 10.0),
                bytes: Setting::Inherit,
            },
            ..RateLimits::default()
        };
        p.roles.insert(
            "ci".into(),
            Spec {
                requests: lim(500.0, 2000.0),
                bytes: Setting::Inherit,
            },
        );
        p.roles.insert(
            "devs".into(),
            Spec {
                requests: lim(100.0, 5000.0),
                bytes: lim(2e6, 1e7),
            },
        );
        p.roles.insert(
            "mirror".into(),
            Spec {
                requests: Setting::Inherit,
                bytes: Setting::Unlimited,
            },
        );
        p.identities.insert(
            "token:release-bot".into(),
            Spec {
                requests: Setting::Unlimited,
                bytes: Setting::Inherit,
            },
        );
        p
    }

    fn req(e: &Effective<'_>) -> Option<(f64, String)> {
        e.requests.map(|a| (a.limit.rate, a.origin.to_string()))
    }

    fn bytes(e: &Effective<'_>) -> Option<(f64, String)> {
        e.bytes.map(|a| (a.limit.rate, a.origin.to_string()))
    }

    #[test]
    fn the_default_applies_to_everyone_without_an_entry() {
        let p = policy();
        let e = p.effective(&["basic:bob"], &[], false);
        assert_eq!(req(&e), Some((50.0, "default".into())));
        assert_eq!(bytes(&e), Some((1e6, "default".into())));
    }

    #[test]
    fn anonymous_has_its_own_entry_and_inherits_the_rest() {
        let p = policy();
        let e = p.effective(&["anonymous:anonymous"], &[], true);
        assert_eq!(req(&e), Some((5.0, "anonymous".into())));
        assert_eq!(bytes(&e), Some((1e6, "default".into())));
    }

    #[test]
    fn a_role_overrides_the_default_per_dimension() {
        let p = policy();
        let e = p.effective(&["basic:ci-1"], &["ci"], false);
        assert_eq!(req(&e), Some((500.0, "role ci".into())));
        // ci says nothing about bytes: the default's.
        assert_eq!(bytes(&e), Some((1e6, "default".into())));
    }

    #[test]
    fn several_roles_give_the_most_generous_whatever_the_order() {
        let p = policy();
        for roles in [["ci", "devs"], ["devs", "ci"]] {
            let e = p.effective(&["basic:x"], &roles, false);
            assert_eq!(req(&e), Some((500.0, "role ci".into())), "{roles:?}");
            assert_eq!(bytes(&e), Some((2e6, "role devs".into())), "{roles:?}");
        }
        // Unlimited beats any limit.
        let e = p.effective(&["basic:x"], &["devs", "mirror"], false);
        assert_eq!(bytes(&e), None);
    }

    #[test]
    fn equal_roles_are_named_by_policy_order() {
        let mut p = RateLimits::default();
        for r in ["a", "b"] {
            p.roles.insert(
                r.into(),
                Spec {
                    requests: lim(1.0, 1.0),
                    bytes: Setting::Inherit,
                },
            );
        }
        let e = p.effective(&["basic:x"], &["b", "a"], false);
        assert_eq!(req(&e), Some((1.0, "role b".into())));
    }

    #[test]
    fn an_identity_entry_wins_and_may_lift_a_limit() {
        let p = policy();
        let e = p.effective(&["token:release-bot"], &["ci"], false);
        assert_eq!(req(&e), None);
        assert_eq!(bytes(&e), Some((1e6, "default".into())));
        // A later label of the same identity (a certificate with credentials) is found too.
        let e = p.effective(&["certificate:host-1", "token:release-bot"], &[], false);
        assert_eq!(req(&e), None);
    }

    #[test]
    fn nothing_configured_limits_nothing() {
        let p = RateLimits::default();
        assert!(p.is_empty());
        assert!(p.effective(&["basic:x"], &[], false).is_unlimited());
        assert!(!policy().is_empty());
        // Only lifted limits: still nothing to do.
        let mut lifted = RateLimits::default();
        lifted.default.requests = Setting::Unlimited;
        assert!(lifted.is_empty());
    }

    #[test]
    fn metric_labels_never_name_an_identity() {
        assert_eq!(Origin::Identity("token:secret-bot").label(), "identity");
        assert_eq!(Origin::Role("ci").label(), "role:ci");
        assert_eq!(Origin::Default.label(), "default");
        assert_eq!(Origin::Anonymous.label(), "anonymous");
    }
}
