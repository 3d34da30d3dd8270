//! What the operator commands on the cache and the ledger share: who is acting (the OS user,
//! recorded as `operator:<user>`), the audit record of an operator action, and the `cache:`
//! section they need.

use std::ffi::CStr;

use anyhow::Context;
use modgate_telemetry::{AuditDecision, AuditIdentity, AuditLog, AuditRecord, AuditSinkConfig};

use crate::config::{AuditOutput, CacheConfig, GatewayConfig};

/// The configuration's `cache:` section, which every cache and ledger command needs.
pub fn cache_config(config: &GatewayConfig) -> anyhow::Result<&CacheConfig> {
    config
        .cache
        .as_ref()
        .context("the configuration has no cache: section")
}

/// The person running an operator command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The OS user: the one who ran `sudo` when it was used (`$SUDO_USER`), else `$USER`,
    /// `$LOGNAME`, the account of the effective uid, or `uid <n>`.
    pub user: String,
}

impl Actor {
    /// The actor of this process.
    pub fn current() -> Actor {
        Actor::resolve(|name| std::env::var(name).ok(), account_name)
    }

    /// The first usable of the environment's user variables, then the account name.
    fn resolve(var: impl Fn(&str) -> Option<String>, account: impl FnOnce() -> String) -> Actor {
        let usable = |v: &String| !v.is_empty() && !v.chars().any(char::is_control);
        let user = ["SUDO_USER", "USER", "LOGNAME"]
            .iter()
            .find_map(|name| var(name).filter(usable))
            .unwrap_or_else(account);
        Actor { user }
    }

    /// `operator:<user>`, as the ledger records who accepted a change (the audit log's
    /// `<source>:<name>` notation).
    pub fn label(&self) -> String {
        format!("operator:{}", self.user)
    }
}

/// The name of the effective uid's account (`uid <n>` when it has none).
fn account_name() -> String {
    let uid = rustix::process::geteuid().as_raw();
    // libc, not rustix: rustix has no passwd-database lookup (getpwuid_r goes through NSS).
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: an all-zero `passwd` is a valid value of the C struct (null pointers, zeros);
    // getpwuid_r only writes into it.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is to live, writable memory of the stated size; on success the
    // strings in `pwd` point into `buf`, which outlives their use below.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found) };
    if rc == 0 && !found.is_null() && !pwd.pw_name.is_null() {
        // SAFETY: getpwuid_r succeeded, so pw_name is a NUL-terminated string inside `buf`.
        let name = unsafe { CStr::from_ptr(pwd.pw_name) }.to_string_lossy();
        if !name.is_empty() {
            return name.into_owned();
        }
    }
    format!("uid {uid}")
}

/// Writes one audit record for an operator action to the configured sink: identity source
/// `operator`, name the OS user.
pub fn audit_event(
    config: &GatewayConfig,
    actor: &Actor,
    event: &str,
    module: &str,
    version: Option<&str>,
    reason: String,
) {
    audit_events(config, actor, event, [(module, version, reason)]);
}

/// [`audit_event`] for several module versions, one record each, through one audit log.
pub fn audit_events<'a>(
    config: &GatewayConfig,
    actor: &Actor,
    event: &str,
    records: impl IntoIterator<Item = (&'a str, Option<&'a str>, String)>,
) {
    let sink = match &config.audit.output {
        AuditOutput::Stdout => AuditSinkConfig::Stdout,
        AuditOutput::File(p) => AuditSinkConfig::File(p.clone()),
        AuditOutput::Off => return,
    };
    let log = match AuditLog::start(sink) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("modgate: audit record not written: {e}");
            return;
        }
    };
    for (module, version, reason) in records {
        let mut r = AuditRecord::now();
        r.event = Some(event.to_string());
        r.identity = AuditIdentity {
            source: "operator".into(),
            name: actor.user.clone(),
            ..AuditIdentity::default()
        };
        r.module = Some(module.to_string());
        r.version = version.map(str::to_string);
        r.decision = AuditDecision::Allow;
        r.reason = Some(reason);
        if let Err(e) = log.record(&r) {
            eprintln!("modgate: audit record not written: {e}");
        }
    }
    if let Err(e) = log.shutdown() {
        eprintln!("modgate: audit record not written: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(vars: &[(&str, &str)]) -> Actor {
        Actor::resolve(
            |name| {
                vars.iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_string())
            },
            || "account".into(),
        )
    }

    #[test]
    fn the_os_user_in_order_of_precedence() {
        let all = [
            ("SUDO_USER", "alice"),
            ("USER", "root"),
            ("LOGNAME", "root"),
        ];
        assert_eq!(actor(&all).user, "alice");
        assert_eq!(actor(&all[1..]).user, "root");
        assert_eq!(actor(&[("LOGNAME", "bob")]).user, "bob");
        assert_eq!(actor(&[]).user, "account");
        // Empty or odd values are skipped.
        assert_eq!(actor(&[("SUDO_USER", ""), ("USER", "carol")]).user, "carol");
        assert_eq!(actor(&[("USER", "x\ny")]).user, "account");
        assert_eq!(actor(&[("USER", "dave")]).label(), "operator:dave");
    }

    #[test]
    fn the_account_of_this_process_has_a_name() {
        let name = account_name();
        assert!(!name.is_empty());
        assert!(!name.chars().any(char::is_control), "{name:?}");
    }
}
