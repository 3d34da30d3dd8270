//! What a finished request reports: how the cache took part ([`CacheOutcome`]) and the audit
//! record's contents (refused credentials included: the user name, never a secret). Built from
//! the request's state types; the proxy's `logging` phase (finish.rs) hands them to the
//! metrics and the recorder.

use modgate_telemetry::{AuditDecision, AuditIdentity, AuditRecord};
use pingora::cache::CachePhase;

use super::admit::Admission;
use super::chain::Cursor;
use crate::identity::RequestIdentity;

/// How the cache took part in a request (the `cache` field of the audit record, the
/// `outcome` label of `modgate_cache_requests_total`, the `X-Modgate-Cache` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// The cache was not used for this request.
    Off,
    Uninitialized,
    Bypass,
    Key,
    Hit,
    Miss,
    Stale,
    StaleUpdating,
    Expired,
    Revalidated,
    RevalidatedNoCache,
    /// A stale answer was served because the upstream failed.
    StaleIfError,
    /// Changed upstream bytes: neither served nor stored.
    Refused,
    /// The cache could not store the answer (its filesystem is full or failing): the answer
    /// came from the upstream, and is not kept.
    NotStored,
}

impl CacheOutcome {
    /// From Pingora's phase and what modgate itself did.
    pub fn of(phase: CachePhase, served_stale: bool, refused: bool) -> CacheOutcome {
        if served_stale {
            return CacheOutcome::StaleIfError;
        }
        if refused {
            return CacheOutcome::Refused;
        }
        match phase {
            CachePhase::Disabled(pingora::cache::NoCacheReason::StorageError) => {
                CacheOutcome::NotStored
            }
            CachePhase::Disabled(_) => CacheOutcome::Off,
            CachePhase::Uninit => CacheOutcome::Uninitialized,
            CachePhase::Bypass => CacheOutcome::Bypass,
            CachePhase::CacheKey => CacheOutcome::Key,
            CachePhase::Hit => CacheOutcome::Hit,
            CachePhase::Miss => CacheOutcome::Miss,
            CachePhase::Stale => CacheOutcome::Stale,
            CachePhase::StaleUpdating => CacheOutcome::StaleUpdating,
            CachePhase::Expired => CacheOutcome::Expired,
            CachePhase::Revalidated => CacheOutcome::Revalidated,
            CachePhase::RevalidatedNoCache(_) => CacheOutcome::RevalidatedNoCache,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CacheOutcome::Off => "off",
            CacheOutcome::Uninitialized => "uninitialized",
            CacheOutcome::Bypass => "bypass",
            CacheOutcome::Key => "key",
            CacheOutcome::Hit => "hit",
            CacheOutcome::Miss => "miss",
            CacheOutcome::Stale => "stale",
            CacheOutcome::StaleUpdating => "stale-updating",
            CacheOutcome::Expired => "expired",
            CacheOutcome::Revalidated => "revalidated",
            CacheOutcome::RevalidatedNoCache => "revalidated-nocache",
            CacheOutcome::StaleIfError => "stale-if-error",
            CacheOutcome::Refused => "refused",
            CacheOutcome::NotStored => "not-stored",
        }
    }

    /// Every value of the `outcome` label of `modgate_cache_requests_total` (`match` without
    /// a wildcard: a new variant fails to compile until it is listed).
    pub fn labels() -> Vec<&'static str> {
        let _every = |o: CacheOutcome| match o {
            CacheOutcome::Off
            | CacheOutcome::Uninitialized
            | CacheOutcome::Bypass
            | CacheOutcome::Key
            | CacheOutcome::Hit
            | CacheOutcome::Miss
            | CacheOutcome::Stale
            | CacheOutcome::StaleUpdating
            | CacheOutcome::Expired
            | CacheOutcome::Revalidated
            | CacheOutcome::RevalidatedNoCache
            | CacheOutcome::StaleIfError
            | CacheOutcome::Refused
            | CacheOutcome::NotStored => (),
        };
        [
            CacheOutcome::Off,
            CacheOutcome::Uninitialized,
            CacheOutcome::Bypass,
            CacheOutcome::Key,
            CacheOutcome::Hit,
            CacheOutcome::Miss,
            CacheOutcome::Stale,
            CacheOutcome::StaleUpdating,
            CacheOutcome::Expired,
            CacheOutcome::Revalidated,
            CacheOutcome::RevalidatedNoCache,
            CacheOutcome::StaleIfError,
            CacheOutcome::Refused,
            CacheOutcome::NotStored,
        ]
        .into_iter()
        .map(CacheOutcome::as_str)
        .collect()
    }
}

/// What the audit record will say, filled in as the request goes.
#[derive(Default)]
pub struct Record {
    /// False for health and metrics endpoints, which are not audited.
    pub enabled: bool,
    pub decision: AuditDecision,
    pub reason: Option<String>,
    /// The answer's header went out and then the transfer failed: by whom and how.
    pub cut: Option<String>,
    /// What the request was, kept for a request that never reaches the `logging` phase.
    pub seen: Option<Box<Seen>>,
    /// The status of the answer whose header went out (proxied answers), 0 before.
    pub status_sent: u16,
    /// The `logging` phase ran (the access line and the record are written).
    pub finished: bool,
    /// An event the request's own handling names (the company checksum database:
    /// `sumdb-disagreement`, a security event; `sumdb-logged-first-seen`, air-gapped).
    pub event: Option<String>,
}

/// The request line and client of an audited request.
pub struct Seen {
    pub client: String,
    pub method: String,
    pub path: String,
}

/// The facts of a finished request the record needs beside the state types.
pub struct Finished<'a> {
    pub listener: &'a str,
    pub client: String,
    pub method: String,
    pub path: String,
    pub route: Option<&'a str>,
    pub status: u16,
    pub bytes: u64,
    pub duration_ms: f64,
    pub trace_id: String,
    pub cache: Option<CacheOutcome>,
    /// Why upstream bytes were refused, if they were.
    pub integrity_refusal: Option<&'a str>,
}

/// The `rule` of a version refused because it is younger than the cooldown window.
pub const COOLDOWN_RULE: &str = "versions.cooldown";

/// The `rule` of a version refused because its module retracts it.
pub const RETRACTION_RULE: &str = "versions.retractions";

/// The `rule` of a version the vulnerability policy refused.
pub const VULNERABILITY_RULE: &str = "versions.vulnerabilities";

/// The audit record of a finished request.
pub fn audit_record(
    f: Finished,
    identity: &RequestIdentity,
    admission: Option<&Admission>,
    cursor: &Cursor,
    record: &mut Record,
) -> AuditRecord {
    let p = &identity.principal;
    let cert = identity.cert.as_ref().map(|c| &c.identity);
    let mut out = AuditRecord::now();
    out.trace_id = f.trace_id;
    out.listener = f.listener.to_string();
    out.client_addr = f.client;
    // Refused credentials (the request was refused for them) are named: alone, as the source
    // and name; beside a certificate, in `principals`. Never the password or the token.
    let (source, name, principals) = match &identity.attempt {
        Some(a) if p.is_anonymous() => {
            let (source, name) = a.audit_source_and_name();
            (source, name.to_string(), identity.principals.clone())
        }
        Some(a) => (
            p.source.as_str(),
            p.name.clone(),
            vec![format!("{}:{}", p.source.as_str(), p.name), a.label()],
        ),
        None => (
            p.source.as_str(),
            p.name.clone(),
            identity.principals.clone(),
        ),
    };
    out.identity = AuditIdentity {
        source: source.to_string(),
        name,
        dn: cert.map(|c| c.subject_dn.clone()),
        fingerprint: cert.map(|c| c.fingerprint_sha256.clone()),
        serial: cert.map(|c| c.serial_hex.clone()),
        principals,
        matched: (!identity.matched.is_empty()).then(|| identity.matched.join(",")),
    };
    let decision = admission.and_then(|a| a.decision.as_ref());
    out.roles = decision.map(|d| d.roles.clone()).unwrap_or_default();
    out.method = f.method;
    out.path = f.path;
    if let Some(r) = admission.and_then(|a| a.request.as_ref()) {
        out.module = Some(r.module.clone());
        out.version = r.version.as_ref().map(|v| v.as_str().to_string());
    }
    out.kind = admission
        .and_then(|a| a.kind)
        .map(|k| k.as_str().to_string());
    if let Some((repo, service)) = admission.and_then(|a| a.git.as_ref()) {
        out.event = Some((*service).to_string());
        out.module = Some(repo.clone());
    }
    if let Some((module, version)) = admission.and_then(Admission::purge) {
        out.event = Some("cache-purge".into());
        out.module = Some(module.to_string());
        out.version = version.map(str::to_string);
    }
    if admission.and_then(Admission::fetched_query).is_some() {
        // Who asked is the record's identity; whom they asked about is in the path.
        out.event = Some("fetched-query".into());
    }
    if let Some(event) = record.event.take() {
        out.event = Some(event);
    }
    out.route = f.route.map(str::to_string);
    out.decision = record.decision;
    if let Some(d) = decision {
        out.rule = Some(d.rule.clone());
        if !d.is_allowed() {
            out.reason = Some(d.reason.clone());
        }
    }
    if let Some(j) = admission.and_then(|a| a.vulns.as_ref()) {
        out.waived = j
            .waived
            .iter()
            .map(|w| format!("{}: {} (until {})", w.advisory, w.reason, w.expires))
            .collect();
        if let Some(judged) = &j.judged {
            out.advisories = judged.ids.clone();
            if judged.mode == crate::config::VersionMode::Enforce {
                out.rule = Some(VULNERABILITY_RULE.to_string());
                out.reason = Some(judged.reason.clone());
            } else {
                out.would_deny = Some(judged.reason.clone());
            }
        }
    }
    if let Some(super::admit::Verdict::Answer(super::admit::Local::Withheld { withheld, .. })) =
        admission.map(|a| &a.verdict)
    {
        out.withheld = withheld.clone();
    }
    let version_rules = [
        (
            admission.and_then(|a| a.retracted.as_ref()),
            RETRACTION_RULE,
        ),
        (admission.and_then(|a| a.cooled.as_ref()), COOLDOWN_RULE),
    ];
    for (mode, reason, rule) in version_rules
        .into_iter()
        .filter_map(|(j, rule)| j.map(|(m, r)| (m, r, rule)))
    {
        if *mode == crate::config::VersionMode::Enforce {
            out.rule = Some(rule.to_string());
            out.reason = Some(reason.clone());
        } else {
            out.would_deny = Some(reason.clone());
        }
    }
    if out.reason.is_none() {
        out.reason = record.reason.take();
    }
    if let Some(refusal) = f.integrity_refusal {
        // Changed upstream bytes (refused now or quarantined earlier): the reason is the
        // refusal, not the upstream's 200 (and the header may already have gone out).
        out.reason = Some(refusal.to_string());
    } else if let Some(cut) = record.cut.take() {
        out.incomplete = true;
        out.reason = Some(format!("transfer cut after {} bytes: {cut}", f.bytes));
    } else if out.decision == AuditDecision::Allow && f.status >= 500 && out.reason.is_none() {
        // (A reason of the gateway's own, such as its cache's, is kept.)
        out.reason = cursor.last_outcome().map(|o| o.describe());
    }
    out.status = f.status;
    out.bytes = f.bytes;
    out.duration_ms = f.duration_ms;
    out.upstream = cursor.answering().map(|a| a.upstream.clone());
    out.cache = Some(f.cache.map_or("none", CacheOutcome::as_str).to_string());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::chain::Outcome;

    fn finished(status: u16, refusal: Option<&str>) -> Finished<'_> {
        Finished {
            listener: "public",
            client: "127.0.0.1:5555".into(),
            method: "GET".into(),
            path: "/m.org/x/@v/v1.0.0.zip".into(),
            route: Some("all"),
            status,
            bytes: 10,
            duration_ms: 1.5,
            trace_id: "t".into(),
            cache: Some(CacheOutcome::Miss),
            integrity_refusal: refusal,
        }
    }

    #[test]
    fn cache_outcomes_name_modgate_decisions_first() {
        assert_eq!(
            CacheOutcome::of(CachePhase::Hit, true, true),
            CacheOutcome::StaleIfError
        );
        assert_eq!(
            CacheOutcome::of(CachePhase::Miss, false, true),
            CacheOutcome::Refused
        );
        assert_eq!(
            CacheOutcome::of(
                CachePhase::Disabled(pingora::cache::NoCacheReason::NeverEnabled),
                false,
                false
            )
            .as_str(),
            "off"
        );
        assert_eq!(
            CacheOutcome::of(CachePhase::Expired, false, false).as_str(),
            "expired"
        );
    }

    #[test]
    fn a_failed_forward_says_why_and_who_answered() {
        let mut cursor = Cursor::default();
        cursor.begin("a");
        cursor.settle(None, Outcome::Timeout("ReadTimedout".into()));
        let mut record = Record {
            enabled: true,
            decision: AuditDecision::Allow,
            reason: None,
            cut: None,
            ..Record::default()
        };
        let r = audit_record(
            finished(504, None),
            &RequestIdentity::default(),
            None,
            &cursor,
            &mut record,
        );
        assert_eq!(r.reason.as_deref(), Some("timed out (ReadTimedout)"));
        assert_eq!(r.upstream.as_deref(), Some("a"));
        assert_eq!(r.cache.as_deref(), Some("miss"));
        assert_eq!(r.route.as_deref(), Some("all"));
    }

    #[test]
    fn refused_credentials_are_named_but_never_their_secret() {
        use crate::identity::Attempt;
        use modgate_policy::{Principal, PrincipalSource};
        let record = |identity: &RequestIdentity| {
            let mut record = Record {
                enabled: true,
                decision: AuditDecision::Unauthenticated,
                reason: Some("the credentials sent were not accepted".into()),
                cut: None,
                ..Record::default()
            };
            audit_record(
                finished(401, None),
                identity,
                None,
                &Cursor::default(),
                &mut record,
            )
            .identity
        };
        let alone = RequestIdentity {
            attempt: Some(Attempt::User("alice".into())),
            ..RequestIdentity::default()
        };
        let id = record(&alone);
        assert_eq!((id.source.as_str(), id.name.as_str()), ("basic", "alice"));
        assert!(id.principals.is_empty());

        let token = RequestIdentity {
            attempt: Some(Attempt::Token),
            ..RequestIdentity::default()
        };
        let id = record(&token);
        assert_eq!(
            (id.source.as_str(), id.name.as_str()),
            ("token", "(unknown token)")
        );

        // Beside a certificate, the certificate stays the identity; both are listed.
        let with_cert = RequestIdentity {
            principal: Principal {
                source: PrincipalSource::Certificate,
                name: "agent-7".into(),
                cert: None,
                user: None,
                token: None,
                groups: Vec::new(),
            },
            attempt: Some(Attempt::User("alice".into())),
            ..RequestIdentity::default()
        };
        let id = record(&with_cert);
        assert_eq!(
            (id.source.as_str(), id.name.as_str()),
            ("certificate", "agent-7")
        );
        assert_eq!(id.principals, ["certificate:agent-7", "basic:alice"]);

        // Nothing refused: the principal as it is.
        let id = record(&RequestIdentity::default());
        assert_eq!(
            (id.source.as_str(), id.name.as_str()),
            ("anonymous", "anonymous")
        );
    }

    /// The JSON line of a cached hit, byte for byte (what a change to how the record is built
    /// must keep: issue 22).
    #[test]
    fn a_cached_hit_serialises_to_the_same_line() {
        let mut record = Record {
            enabled: true,
            decision: AuditDecision::Allow,
            ..Record::default()
        };
        let hit = Finished {
            cache: Some(CacheOutcome::Hit),
            status: 200,
            bytes: 54,
            duration_ms: 0.042,
            trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
            path: "/github.com/aws/aws-sdk-go-v2/service/s3/@v/v1.58.2.info".into(),
            ..finished(200, None)
        };
        let mut r = audit_record(
            hit,
            &RequestIdentity::default(),
            None,
            &Cursor::default(),
            &mut record,
        );
        r.ts = "2026-06-01T10:00:00.123Z".into();
        assert_eq!(
            serde_json::to_string(&r).expect("json"),
            concat!(
                r#"{"ts":"2026-06-01T10:00:00.123Z","trace_id":"0af7651916cd43dd8448eb211c80319c","#,
                r#""listener":"public","client_addr":"127.0.0.1:5555","#,
                r#""identity":{"source":"anonymous","name":"anonymous"},"roles":[],"#,
                r#""method":"GET","path":"/github.com/aws/aws-sdk-go-v2/service/s3/@v/v1.58.2.info","#,
                r#""route":"all","decision":"allow","status":200,"bytes":54,"duration_ms":0.042,"#,
                r#""cache":"hit"}"#
            )
        );
    }

    #[test]
    fn a_cut_transfer_says_so_with_the_bytes_sent() {
        let mut record = Record {
            enabled: true,
            decision: AuditDecision::Allow,
            reason: None,
            cut: Some("by the upstream (ConnectionClosed)".into()),
            ..Record::default()
        };
        let r = audit_record(
            finished(200, None),
            &RequestIdentity::default(),
            None,
            &Cursor::default(),
            &mut record,
        );
        assert!(r.incomplete);
        assert_eq!(
            r.reason.as_deref(),
            Some("transfer cut after 10 bytes: by the upstream (ConnectionClosed)")
        );
        assert_eq!(r.status, 200);
    }

    #[test]
    fn an_integrity_refusal_is_the_reason_even_after_a_200() {
        let mut record = Record {
            enabled: true,
            decision: AuditDecision::Allow,
            reason: Some("other".into()),
            cut: None,
            ..Record::default()
        };
        let r = audit_record(
            finished(200, Some("changed upstream")),
            &RequestIdentity::default(),
            None,
            &Cursor::default(),
            &mut record,
        );
        assert_eq!(r.reason.as_deref(), Some("changed upstream"));
    }
}
