//! The vulnerability policy at run time: the loaded Go vulnerability database with the
//! `versions.vulnerabilities` settings, and the pure decision for one module version
//! ([`VulnPolicy::judge`]), made in admission beside the access decision and by `explain`.
//!
//! Which mode applies: a role's mode when the identity holds a role that has one (the most
//! permissive of them: `off` over `report` over `enforce`, so an exemption for a security team
//! or a break-glass role works whatever else its members hold); else the route's; else the
//! default. An advisory counts when `only` (if given) names it, no waiver in force covers it
//! (the advisory by ID or alias, the module, a role the identity holds, before its expiry), and
//! the database says the version is affected (withdrawn advisories never are).

use std::collections::BTreeMap;
use std::sync::Arc;

use modgate_policy::Pattern;
use modgate_vulndb::{End, Finding, VulnDb};

use crate::config::{AdvisoryFilter, VersionMode, VulnerabilitiesConfig};

/// A waiver, ready to match.
#[derive(Debug)]
pub struct Waiver {
    pub advisory: String,
    pub modules: Vec<Pattern>,
    pub roles: Vec<String>,
    pub reason: String,
    pub expires: i64,
    pub expires_text: String,
}

/// The runtime vulnerability policy.
#[derive(Debug)]
pub struct VulnPolicy {
    pub db: Arc<VulnDb>,
    pub mode: VersionMode,
    pub routes: BTreeMap<String, VersionMode>,
    pub roles: BTreeMap<String, VersionMode>,
    pub only: Option<AdvisoryFilter>,
    pub waivers: Vec<Waiver>,
    pub serve: bool,
}

/// What the policy says of one module version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judged {
    /// `Enforce` (deny) or `Report` (allow, audit "would deny").
    pub mode: VersionMode,
    /// The advisory IDs that count, sorted.
    pub ids: Vec<String>,
    /// One line for the client and the audit record.
    pub reason: String,
}

/// A waiver that kept an advisory from counting, for the audit record and `explain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waived {
    pub advisory: String,
    pub reason: String,
    pub expires: String,
}

/// The full answer: what counts, and what was waived.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Judgement {
    pub judged: Option<Judged>,
    pub waived: Vec<Waived>,
}

impl VulnPolicy {
    /// Loads the database and readies the settings (I/O: reads the database).
    pub fn load(c: &VulnerabilitiesConfig) -> anyhow::Result<VulnPolicy> {
        let db = VulnDb::load(&c.db.0).map_err(|e| {
            anyhow::anyhow!(
                "versions.vulnerabilities.db: cannot load {}: {e}",
                c.db.0.display()
            )
        })?;
        let mut waivers = Vec::with_capacity(c.waivers.len());
        for w in &c.waivers {
            let modules = w
                .modules
                .iter()
                .map(|m| {
                    Pattern::prefix(m).map_err(|e| {
                        anyhow::anyhow!(
                            "versions.vulnerabilities.waivers ({}): module {m:?}: {e}",
                            w.advisory
                        )
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            waivers.push(Waiver {
                advisory: w.advisory.clone(),
                modules,
                roles: w.roles.clone(),
                reason: w.reason.clone(),
                expires: w.expires.unix_seconds,
                expires_text: w.expires.text.clone(),
            });
        }
        Ok(VulnPolicy {
            db: Arc::new(db),
            mode: c.mode,
            routes: c.routes.clone(),
            roles: c.roles.clone(),
            only: c.only.clone(),
            waivers,
            serve: c.serve,
        })
    }

    /// The mode for a request on `route` by an identity holding `roles`.
    pub fn mode_for(&self, route: &str, roles: &[String]) -> VersionMode {
        crate::config::mode_for(self.mode, &self.routes, &self.roles, route, roles)
    }

    /// Judges `module@version` (an exact version) for an identity holding `roles` on `route`,
    /// at `now` (Unix seconds: waivers expire). Pure.
    pub fn judge(
        &self,
        module: &str,
        version: &str,
        route: &str,
        roles: &[String],
        now: i64,
    ) -> Judgement {
        let mode = self.mode_for(route, roles);
        if mode == VersionMode::Off {
            return Judgement::default();
        }
        // Every spelling of the module the database names, letters compared without regard to
        // case: code hosts (and the public proxy, which fetches from them) serve every case
        // spelling of a repository, so `github.com/Gorilla/websocket` is the same code as the
        // `github.com/gorilla/websocket` an advisory names. A version that is not semver is not
        // one the database can speak of.
        let mut findings = Vec::new();
        for spelled in self.db.spelled_by(module) {
            match self.db.affecting(spelled, version) {
                Ok(f) => findings.extend(f),
                Err(_) => return Judgement::default(),
            }
        }
        findings.sort_by(|a, b| a.advisory.id.cmp(&b.advisory.id));
        findings.dedup_by(|a, b| a.advisory.id == b.advisory.id);
        let mut waived = Vec::new();
        let counted: Vec<&Finding<'_>> = findings
            .iter()
            .filter(|f| self.counts(f))
            .filter(|f| match self.waiver_for(f, module, roles, now) {
                Some(w) => {
                    waived.push(Waived {
                        advisory: f.advisory.id.clone(),
                        reason: w.reason.clone(),
                        expires: w.expires_text.clone(),
                    });
                    false
                }
                None => true,
            })
            .collect();
        if counted.is_empty() {
            return Judgement {
                judged: None,
                waived,
            };
        }
        let ids: Vec<String> = counted.iter().map(|f| f.advisory.id.clone()).collect();
        Judgement {
            judged: Some(Judged {
                mode,
                reason: describe(module, version, &counted),
                ids,
            }),
            waived,
        }
    }

    /// Whether versions of `module` could be withheld from an identity holding `roles` on
    /// `route`: the mode is `enforce` and the database names the module.
    pub fn may_withhold(&self, module: &str, route: &str, roles: &[String]) -> bool {
        self.mode_for(route, roles) == VersionMode::Enforce
            && !self.db.spelled_by(module).is_empty()
    }

    /// Whether `only` lets the advisory count.
    fn counts(&self, f: &Finding<'_>) -> bool {
        let Some(only) = &self.only else {
            return true;
        };
        let a = f.advisory;
        only.ids.iter().any(|i| i == &a.id)
            || a.aliases.iter().any(|x| only.aliases.contains(x))
            || a.severity_label
                .as_deref()
                .is_some_and(|l| only.severity.iter().any(|s| s.eq_ignore_ascii_case(l)))
    }

    fn waiver_for(
        &self,
        f: &Finding<'_>,
        module: &str,
        roles: &[String],
        now: i64,
    ) -> Option<&Waiver> {
        let a = f.advisory;
        self.waivers.iter().find(|w| {
            (w.advisory == a.id || a.aliases.contains(&w.advisory))
                && now < w.expires
                && (w.modules.is_empty() || w.modules.iter().any(|p| p.matches(module)))
                && (w.roles.is_empty() || w.roles.iter().any(|r| roles.contains(r)))
        })
    }
}

/// `affected by GO-2024-2687 (CVE-2023-45288, GHSA-…): <summary>; fixed in v0.23.0` and, for
/// more advisories, `; and GO-…, GO-…`.
fn describe(module: &str, version: &str, counted: &[&Finding<'_>]) -> String {
    let Some(first) = counted.first() else {
        return String::new();
    };
    let a = first.advisory;
    let mut s = format!("{module}@{version} is affected by {}", a.id);
    if !a.aliases.is_empty() {
        s.push_str(&format!(" ({})", a.aliases.join(", ")));
    }
    if let Some(summary) = &a.summary {
        let summary: String = summary.chars().take(160).collect();
        s.push_str(&format!(": {summary}"));
    }
    match &first.interval.end {
        Some(End::Fixed(v)) => s.push_str(&format!("; fixed in {v}")),
        Some(End::LastAffected(v)) => s.push_str(&format!("; affected up to {v}")),
        None => s.push_str("; no fixed version"),
    }
    let packages: Vec<&str> = first.imports.iter().map(|p| p.path.as_str()).collect();
    if !packages.is_empty() {
        let shown: Vec<&str> = packages.iter().take(3).copied().collect();
        s.push_str(&format!(" (in {}", shown.join(", ")));
        if packages.len() > shown.len() {
            s.push_str(&format!(" and {} more", packages.len() - shown.len()));
        }
        s.push(')');
    }
    if counted.len() > 1 {
        let rest: Vec<&str> = counted[1..]
            .iter()
            .map(|f| f.advisory.id.as_str())
            .collect();
        s.push_str(&format!("; and {}", rest.join(", ")));
    }
    s
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{parse_expiry, PathValue};
    use modgate_testkit::vulndb::{write_vulndb, Advisory};

    const NET: &str = "golang.org/x/net";

    fn policy(dir: &Path, edit: impl FnOnce(&mut VulnerabilitiesConfig)) -> VulnPolicy {
        write_vulndb(
            dir,
            "2024-05-06T07:08:09Z",
            &[
                Advisory::new("GO-2024-0001", NET, "0", Some("0.23.0")),
                Advisory::new("GO-2024-0002", NET, "0.20.0", Some("0.21.0")),
                Advisory::new("GO-2024-0003", NET, "0", None).withdrawn("2024-02-01T00:00:00Z"),
            ],
        )
        .expect("vulndb");
        let mut c = VulnerabilitiesConfig {
            db: PathValue(dir.to_path_buf()),
            mode: VersionMode::Enforce,
            routes: BTreeMap::new(),
            roles: BTreeMap::new(),
            only: None,
            waivers: Vec::new(),
            serve: true,
        };
        edit(&mut c);
        VulnPolicy::load(&c).expect("policy")
    }

    fn roles(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn an_affected_version_is_judged_with_its_advisories_and_the_fix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = policy(dir.path(), |_| {});
        let j = p.judge(NET, "v0.20.5", "public", &[], 0);
        let judged = j.judged.expect("affected");
        assert_eq!(judged.mode, VersionMode::Enforce);
        assert_eq!(judged.ids, ["GO-2024-0001", "GO-2024-0002"]);
        assert!(
            judged.reason.starts_with(
                "golang.org/x/net@v0.20.5 is affected by GO-2024-0001 (CVE-2024-0001): \
                 Something bad in golang.org/x/net; fixed in v0.23.0 (in golang.org/x/net); \
                 and GO-2024-0002"
            ),
            "{}",
            judged.reason
        );
        // The fixed version, another module, and a withdrawn advisory do not count.
        assert_eq!(
            p.judge(NET, "v0.23.0", "public", &[], 0),
            Judgement::default()
        );
        assert_eq!(
            p.judge("example.com/m", "v0.1.0", "public", &[], 0),
            Judgement::default()
        );
        let later = p
            .judge(NET, "v0.22.0", "public", &[], 0)
            .judged
            .expect("affected");
        assert_eq!(later.ids, ["GO-2024-0001"]);
    }

    #[test]
    fn the_most_permissive_role_wins_then_the_route_then_the_default() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = policy(dir.path(), |c| {
            c.routes.insert("corp".into(), VersionMode::Report);
            c.roles.insert("security".into(), VersionMode::Off);
            c.roles.insert("devs".into(), VersionMode::Report);
            c.roles.insert("strict".into(), VersionMode::Enforce);
        });
        assert_eq!(p.mode_for("public", &[]), VersionMode::Enforce);
        assert_eq!(p.mode_for("corp", &[]), VersionMode::Report);
        assert_eq!(p.mode_for("public", &roles(&["devs"])), VersionMode::Report);
        assert_eq!(
            p.mode_for("corp", &roles(&["strict"])),
            VersionMode::Enforce
        );
        assert_eq!(
            p.mode_for("public", &roles(&["strict", "security"])),
            VersionMode::Off
        );
        assert_eq!(
            p.judge(NET, "v0.20.5", "public", &roles(&["security"]), 0),
            Judgement::default()
        );
        let report = p
            .judge(NET, "v0.20.5", "corp", &[], 0)
            .judged
            .expect("affected");
        assert_eq!(report.mode, VersionMode::Report);
    }

    #[test]
    fn waivers_cover_their_advisory_module_and_roles_until_they_expire() {
        let dir = tempfile::tempdir().expect("tempdir");
        let expires = parse_expiry("2027-03-01").expect("date");
        let p = policy(dir.path(), |c| {
            c.waivers.push(crate::config::WaiverConfig {
                advisory: "CVE-2024-0001".into(),
                modules: vec![NET.into()],
                roles: vec!["devs".into()],
                reason: "INC-123: not reachable".into(),
                expires,
            });
        });
        let before = parse_expiry("2027-02-28T23:59:59Z")
            .expect("t")
            .unix_seconds;
        let after = parse_expiry("2027-03-01").expect("t").unix_seconds;
        let waived = p.judge(NET, "v0.22.0", "public", &roles(&["devs"]), before);
        assert_eq!(waived.judged, None);
        assert_eq!(
            waived.waived,
            [Waived {
                advisory: "GO-2024-0001".into(),
                reason: "INC-123: not reachable".into(),
                expires: "2027-03-01".into(),
            }]
        );
        // Expired, another role, or another advisory of the same version: it counts.
        assert!(p
            .judge(NET, "v0.22.0", "public", &roles(&["devs"]), after)
            .judged
            .is_some());
        assert!(p
            .judge(NET, "v0.22.0", "public", &roles(&["ops"]), before)
            .judged
            .is_some());
        let both = p.judge(NET, "v0.20.5", "public", &roles(&["devs"]), before);
        assert_eq!(both.judged.expect("affected").ids, ["GO-2024-0002"]);
    }

    #[test]
    fn another_case_spelling_of_an_affected_module_is_affected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = policy(dir.path(), |_| {});
        for spelled in ["golang.org/x/Net", "GOLANG.ORG/X/NET"] {
            let j = p.judge(spelled, "v0.22.0", "public", &[], 0).judged;
            assert_eq!(
                j.map(|j| j.ids),
                Some(vec!["GO-2024-0001".to_string()]),
                "{spelled}"
            );
            assert!(p.may_withhold(spelled, "public", &[]), "{spelled}");
        }
    }

    #[test]
    fn only_counts_the_advisories_it_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = policy(dir.path(), |c| {
            c.only = Some(AdvisoryFilter {
                ids: Vec::new(),
                aliases: vec!["CVE-2024-0002".into()],
                severity: vec!["critical".into()],
            });
        });
        let j = p
            .judge(NET, "v0.20.5", "public", &[], 0)
            .judged
            .expect("affected");
        assert_eq!(j.ids, ["GO-2024-0002"]);
        assert_eq!(p.judge(NET, "v0.22.0", "public", &[], 0).judged, None);
    }

    #[test]
    fn a_database_that_cannot_be_loaded_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = VulnerabilitiesConfig {
            db: PathValue(dir.path().join("missing")),
            mode: VersionMode::Enforce,
            routes: BTreeMap::new(),
            roles: BTreeMap::new(),
            only: None,
            waivers: Vec::new(),
            serve: true,
        };
        let e = VulnPolicy::load(&c).expect_err("missing").to_string();
        assert!(
            e.starts_with("versions.vulnerabilities.db: cannot load "),
            "{e}"
        );
    }
}
