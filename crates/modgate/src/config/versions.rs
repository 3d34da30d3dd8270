//! The `versions:` section of `gateway.yaml`: which versions anyone may build with — the
//! versions an offline Go vulnerability database says are affected (`vulnerabilities:`), and
//! versions their own module retracts (`retractions:`).
//!
//! ```yaml
//! versions:
//!   vulnerabilities:
//!     db: /var/lib/modgate/vulndb        # a directory in the v1 layout, or vulndb.zip
//!     mode: enforce                      # enforce (deny) | report (allow, audit "would deny") | off
//!     routes: { corp: report }           # per route
//!     roles: { security: off }           # per role (the most permissive held role wins)
//!     only: { severity: [CRITICAL, HIGH] }   # which advisories count (default: all)
//!     waivers:
//!       - { advisory: GO-2024-2687, modules: [golang.org/x/net], reason: "INC-123: not reachable", expires: 2027-03-01 }
//!     serve: true                        # also serve the database at /vulndb/ (govulncheck -db)
//!   retractions:
//!     mode: report                       # enforce | report | off, with routes: and roles: too
//! ```

use std::collections::BTreeMap;
use std::fmt;

use serde::de::Deserializer;
use serde::Deserialize;

use super::cache::PathValue;
use super::from_str_with;

/// `versions:` section.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionsConfig {
    /// The vulnerability database and its policy (off when absent).
    pub vulnerabilities: Option<VulnerabilitiesConfig>,
    /// Versions their own module retracts (off when absent).
    pub retractions: Option<RetractionsConfig>,
    /// Versions younger than a window are withheld (off when absent).
    pub cooldown: Option<CooldownConfig>,
}

/// `versions.cooldown:`: a version younger than `window`, measured from the earliest sighting
/// its author cannot back-date, is withheld.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CooldownConfig {
    /// How long a new version is withheld (`72h`, `7d` is written `168h`).
    pub window: super::DurationValue,
    /// What a version in cooldown gets by default.
    #[serde(default)]
    pub mode: VersionMode,
    /// Per route name: its mode.
    #[serde(default)]
    pub routes: BTreeMap<String, VersionMode>,
    /// Per role name: its mode; an identity holding several roles gets the most permissive.
    #[serde(default)]
    pub roles: BTreeMap<String, VersionMode>,
    /// Module paths exempt from cooldown (each also covers the paths below it).
    #[serde(default)]
    pub exempt: Vec<String>,
    /// The upstream (by name; a plain base URL such as `https://index.golang.org`) serving the
    /// Go module index, tailed from the window's start: it vouches for the age of the
    /// versions of public routes. Without it every version is dated by the gateway's own
    /// first sighting. Read at start: a change needs an upgrade.
    pub index: Option<String>,
    /// Margin for the index's listing lag and clock skew (default 120s): how far behind the
    /// gateway's clock the index counts as read.
    pub index_settle: Option<super::DurationValue>,
    /// The routes whose modules come through the proxy that the index lists (e.g. a route whose
    /// chain is proxy.golang.org): only there may "the index never listed it" date a version
    /// as old. Other routes (a Git host, another proxy) are dated by the gateway's own
    /// sightings, even with an index.
    #[serde(default)]
    pub index_routes: Vec<String>,
}

/// `versions.retractions:`: versions retracted by the `retract` directives of the module's
/// latest `go.mod` (as the go command reads them).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetractionsConfig {
    /// What a retracted version gets by default.
    #[serde(default)]
    pub mode: VersionMode,
    /// Per route name: its mode.
    #[serde(default)]
    pub routes: BTreeMap<String, VersionMode>,
    /// Per role name: its mode; an identity holding several roles gets the most permissive.
    #[serde(default)]
    pub roles: BTreeMap<String, VersionMode>,
}

/// The mode for a request on `route` by an identity holding `held` roles: the most
/// permissive mode of the held roles that have one (`off` over `report` over `enforce`), else
/// the route's, else `default`.
pub fn mode_for(
    default: VersionMode,
    routes: &BTreeMap<String, VersionMode>,
    roles: &BTreeMap<String, VersionMode>,
    route: &str,
    held: &[String],
) -> VersionMode {
    match held.iter().filter_map(|r| roles.get(r)).max() {
        Some(m) => *m,
        None => routes.get(route).copied().unwrap_or(default),
    }
}

/// `versions.vulnerabilities:`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VulnerabilitiesConfig {
    /// The database: a directory in the Go vulnerability database's v1 layout, or a zip of it.
    pub db: PathValue,
    /// What an affected version gets by default.
    #[serde(default)]
    pub mode: VersionMode,
    /// Per route name: its mode.
    #[serde(default)]
    pub routes: BTreeMap<String, VersionMode>,
    /// Per role name: its mode; an identity holding several roles gets the most permissive.
    #[serde(default)]
    pub roles: BTreeMap<String, VersionMode>,
    /// Which advisories count; all when absent.
    pub only: Option<AdvisoryFilter>,
    /// Exceptions, each with a reason and an expiry.
    #[serde(default)]
    pub waivers: Vec<WaiverConfig>,
    /// Serve the database at `/vulndb/` (default true).
    #[serde(default = "yes")]
    pub serve: bool,
}

fn yes() -> bool {
    true
}

/// What a version affected by an advisory gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VersionMode {
    /// Denied (403) with the advisories named.
    #[default]
    Enforce,
    /// Allowed, and audited as "would deny".
    Report,
    /// Not checked.
    Off,
}

impl VersionMode {
    pub fn as_str(self) -> &'static str {
        match self {
            VersionMode::Enforce => "enforce",
            VersionMode::Report => "report",
            VersionMode::Off => "off",
        }
    }
}

/// `only:`: an advisory counts when any list names it (by ID, by alias, or by its severity
/// label); empty lists name nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdvisoryFilter {
    #[serde(default)]
    pub ids: Vec<String>,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Severity labels (`database_specific.severity`, e.g. GitHub's `CRITICAL`, `HIGH`),
    /// compared without regard to case.
    #[serde(default)]
    pub severity: Vec<String>,
}

/// One waiver: the advisory (by ID or alias) does not count for these modules (and roles)
/// until it expires.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaiverConfig {
    /// An advisory ID (`GO-2024-2687`) or one of its aliases (`CVE-2023-45288`).
    pub advisory: String,
    /// Module paths (each also covers the paths below it); all modules when absent.
    #[serde(default)]
    pub modules: Vec<String>,
    /// Roles it is limited to; everyone when absent.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Why: shown in the audit record and `modgate explain`.
    pub reason: String,
    /// When it stops applying: a date (`2027-03-01`, from its first second, UTC) or an RFC 3339
    /// date-time.
    pub expires: Expiry,
}

/// A waiver's expiry, as Unix seconds and as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiry {
    pub unix_seconds: i64,
    pub text: String,
}

impl fmt::Display for Expiry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Parses `YYYY-MM-DD` (its first second, UTC) or an RFC 3339 date-time.
pub fn parse_expiry(s: &str) -> Result<Expiry, String> {
    let s = s.trim();
    let full = if s.len() == 10 {
        format!("{s}T00:00:00Z")
    } else {
        s.to_owned()
    };
    modgate_vulndb::parse_rfc3339(&full)
        .map(|t| Expiry {
            unix_seconds: t.unix_seconds,
            text: s.to_owned(),
        })
        .ok_or_else(|| {
            format!("{s:?} is not a date (2027-03-01) or an RFC 3339 time (2027-03-01T12:00:00Z)")
        })
}

impl<'de> Deserialize<'de> for Expiry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, "a date such as 2027-03-01", parse_expiry)
    }
}

impl VersionsConfig {
    /// Cross-references: every route and role named exists, waivers say why.
    pub fn check(&self, routes: &[&str], roles: &[&str], upstreams: &[&str]) -> Result<(), String> {
        if let Some(c) = &self.cooldown {
            if c.window.0.is_zero() {
                return Err("versions.cooldown.window must be longer than 0s".into());
            }
            if let Some(route) = c.routes.keys().find(|k| !routes.contains(&k.as_str())) {
                return Err(format!(
                    "versions.cooldown.routes: no route is named {route:?}"
                ));
            }
            if let Some(role) = c.roles.keys().find(|k| !roles.contains(&k.as_str())) {
                return Err(format!(
                    "versions.cooldown.roles: no role is named {role:?}"
                ));
            }
            if let Some(route) = c
                .index_routes
                .iter()
                .find(|r| !routes.contains(&r.as_str()))
            {
                return Err(format!(
                    "versions.cooldown.index_routes: no route is named {route:?}"
                ));
            }
            if c.index.is_none() && !c.index_routes.is_empty() {
                return Err("versions.cooldown.index_routes needs an index".into());
            }
            if let Some(index) = &c.index {
                if !upstreams.contains(&index.as_str()) {
                    return Err(format!(
                        "versions.cooldown.index: no upstream is named {index:?}"
                    ));
                }
            }
            if let Some(m) = c.exempt.iter().find(|m| m.trim().is_empty()) {
                return Err(format!("versions.cooldown.exempt: empty module path {m:?}"));
            }
        }
        if let Some(r) = &self.retractions {
            if let Some(route) = r.routes.keys().find(|k| !routes.contains(&k.as_str())) {
                return Err(format!(
                    "versions.retractions.routes: no route is named {route:?}"
                ));
            }
            if let Some(role) = r.roles.keys().find(|k| !roles.contains(&k.as_str())) {
                return Err(format!(
                    "versions.retractions.roles: no role is named {role:?}"
                ));
            }
        }
        let Some(v) = &self.vulnerabilities else {
            return Ok(());
        };
        for route in v.routes.keys() {
            if !routes.contains(&route.as_str()) {
                return Err(format!(
                    "versions.vulnerabilities.routes: no route is named {route:?}"
                ));
            }
        }
        for role in v.roles.keys() {
            if !roles.contains(&role.as_str()) {
                return Err(format!(
                    "versions.vulnerabilities.roles: no role is named {role:?}"
                ));
            }
        }
        for (i, w) in v.waivers.iter().enumerate() {
            if w.advisory.trim().is_empty() {
                return Err(format!(
                    "versions.vulnerabilities.waivers[{i}]: the advisory is empty"
                ));
            }
            if w.reason.trim().is_empty() {
                return Err(format!(
                    "versions.vulnerabilities.waivers[{i}] ({}): a waiver needs a reason",
                    w.advisory
                ));
            }
            if let Some(role) = w.roles.iter().find(|r| !roles.contains(&r.as_str())) {
                return Err(format!(
                    "versions.vulnerabilities.waivers[{i}] ({}): no role is named {role:?}",
                    w.advisory
                ));
            }
            if let Some(m) = w.modules.iter().find(|m| m.trim().is_empty()) {
                return Err(format!(
                    "versions.vulnerabilities.waivers[{i}] ({}): empty module path {m:?}",
                    w.advisory
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiries_are_dates_or_rfc3339_times() {
        assert_eq!(
            parse_expiry("1970-01-02").map(|e| e.unix_seconds),
            Ok(86_400)
        );
        assert_eq!(
            parse_expiry("1970-01-01T01:00:00Z").map(|e| e.unix_seconds),
            Ok(3600)
        );
        assert_eq!(
            parse_expiry("2027-03-01").map(|e| e.text),
            Ok("2027-03-01".to_owned())
        );
        for bad in ["2027-3-1", "tomorrow", "", "2027-13-01"] {
            assert!(parse_expiry(bad).is_err(), "{bad}");
        }
    }
}
