//! What modgate answers itself: the health and metrics endpoints (not audited), refusals, the
//! checksum database's `supported`, and the admin cache purge.

use bytes::Bytes;
use modgate_telemetry::AuditDecision;
use pingora::proxy::Session;
use pingora::Result;

use super::admit::Refusal;
use super::report::Record;
use crate::cache::{self, CacheRuntime};
use crate::metrics;
use crate::respond;

/// The body and content type of an unaudited endpoint at `target`, if it is one.
pub fn unaudited(target: &str, metrics_enabled: bool) -> Option<(&'static str, Bytes)> {
    match target {
        "/healthz" => Some(("text/plain", Bytes::from_static(b"ok\n"))),
        "/readyz" => Some(("text/plain", Bytes::from_static(b"ready\n"))),
        "/metrics" if metrics_enabled => {
            Some(("text/plain; version=0.0.4", Bytes::from(metrics::render())))
        }
        _ => None,
    }
}

/// Answers a refusal and records why.
pub async fn refuse(session: &mut Session, record: &mut Record, r: &Refusal) -> Result<()> {
    let message = r.message();
    let headers = r.headers();
    let extra: Vec<(&'static str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    record.decision = r.audit();
    respond::text(session, r.status(), &message, &extra).await?;
    record.reason = Some(message);
    Ok(())
}

/// Answers an error modgate met itself (not a policy decision) and records why.
pub async fn error(
    session: &mut Session,
    record: &mut Record,
    status: u16,
    message: String,
) -> Result<()> {
    record.decision = AuditDecision::Error;
    respond::text(session, status, &message, &[]).await?;
    record.reason = Some(message);
    Ok(())
}

/// `POST /admin/cache/purge?target=MODULE[@VERSION]`, admitted: what `modgate cache purge`
/// does, for a running gateway (including asking the module's git mirrors to refresh);
/// audited with the caller's identity.
pub async fn purge(
    session: &mut Session,
    record: &mut Record,
    c: &CacheRuntime,
    refresh_mirrors: impl FnOnce(&str) -> Vec<String> + Send + 'static,
    target: &str,
    module: &str,
    version: Option<&str>,
) -> Result<()> {
    let storage = c.storage;
    let (m, v) = (module.to_string(), version.map(str::to_string));
    let link = c
        .cluster
        .as_ref()
        .map(|l| (l.pool.clone(), l.origin.clone()));
    let result = tokio::task::spawn_blocking(move || {
        for line in refresh_mirrors(&m) {
            log::info!("cache-purge of {m}: {line}");
        }
        let report = cache::purge_module(storage, &m, v.as_deref())?;
        // The other replicas of a cluster purge their own copies when they hear of it.
        let published = link.map(|(pool, origin)| {
            modgate_postgres::publish_purge(&pool, &m, v.as_deref(), &origin)
        });
        anyhow::Ok((report, published))
    })
    .await;
    // The shared object tier's copies go too (else a replica would read them back).
    if let (Some(shared), Ok(Ok(_))) = (&c.shared, &result) {
        if let Err(e) = shared.purge(module, version).await {
            let message = format!("purged here, but not from the shared object store: {e:#}");
            return error(session, record, 503, message).await;
        }
    }
    let report = match result {
        Ok(Ok((report, None | Some(Ok(_))))) => report,
        Ok(Ok((report, Some(Err(e))))) => {
            let message = format!(
                "purged {} object(s) here, but the other replicas were not told: {e}",
                report.objects
            );
            return error(session, record, 503, message).await;
        }
        Ok(Err(e)) => return error(session, record, 500, format!("purge failed: {e:#}")).await,
        Err(e) => return error(session, record, 500, format!("purge failed: {e}")).await,
    };
    record.decision = AuditDecision::Allow;
    record.reason = Some(format!(
        "cache-purge of {target}: {} object(s), {} bytes",
        report.objects, report.bytes
    ));
    let body = format!(
        "{{\"target\":{:?},\"objects\":{},\"bytes\":{}}}\n",
        target, report.objects, report.bytes
    );
    respond::ok(session, "application/json", Bytes::from(body)).await
}

/// `GET /admin/fetched?identity=…&since=…`, admitted: what `modgate fetched` prints, read
/// from the index (off the event loop); bad input is a 400 that says why, no index a 404, the
/// shared index away a 503 naming it.
pub async fn fetched(
    session: &mut Session,
    record: &mut Record,
    source: crate::fetched::Source,
    (identity, since, until, format): (String, String, Option<String>, String),
) -> Result<()> {
    use crate::fetched::{answer, Ask, AskError};
    let who = identity.clone();
    let result = tokio::task::spawn_blocking(move || {
        answer(
            &source,
            &Ask {
                identity: &identity,
                since: &since,
                until: until.as_deref(),
                format: &format,
            },
        )
    })
    .await;
    let (body, content_type) = match result {
        Ok(Ok(answer)) => answer,
        Ok(Err(AskError::Bad(m))) => return error(session, record, 400, m).await,
        Ok(Err(AskError::Index(e @ modgate_fetched::FetchedError::Missing(_)))) => {
            return error(session, record, 404, e.to_string()).await
        }
        Ok(Err(AskError::Index(e @ modgate_fetched::FetchedError::Store { .. }))) => {
            return error(session, record, 503, e.to_string()).await
        }
        Ok(Err(AskError::Index(e))) => return error(session, record, 500, e.to_string()).await,
        Err(e) => return error(session, record, 500, format!("fetched query failed: {e}")).await,
    };
    record.decision = AuditDecision::Allow;
    record.reason = Some(format!("fetched-query about {who}"));
    respond::ok(session, content_type, Bytes::from(body)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_is_always_there_metrics_only_where_enabled() {
        assert_eq!(
            unaudited("/healthz", false).map(|(_, b)| b),
            Some(Bytes::from_static(b"ok\n"))
        );
        assert!(unaudited("/readyz", false).is_some());
        assert!(unaudited("/metrics", false).is_none());
        assert!(unaudited("/metrics", true).is_some());
        assert!(unaudited("/healthz?x=1", true).is_none());
        assert!(unaudited("/m.org/x/@v/list", true).is_none());
    }
}
