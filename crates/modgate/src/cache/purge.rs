//! Finding and removing a module's cached answers (`modgate cache purge`, the admin endpoint).

use modgate_cache::{DiskCache, ObjectInfo};
use modgate_protocol::{escape_version, GoProxyRequest, ModuleRequest, RequestParser};

/// Splits `module[@version]`, checking both.
pub fn target(s: &str) -> anyhow::Result<(String, Option<String>)> {
    let (m, v) = match s.split_once('@') {
        Some((m, v)) => (m, Some(v.to_string())),
        None => (s, None),
    };
    modgate_protocol::check_path(m).map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(v) = &v {
        escape_version(v).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok((m.to_string(), v))
}

/// The module request a cached object answers, for objects of a route (not of a checksum
/// database): the key's path parsed by the same parser the proxy uses.
pub fn cached_request(o: &ObjectInfo) -> Option<ModuleRequest> {
    let (ns, path) = o.primary_key.split_once('|')?;
    if !ns.starts_with("route:") {
        return None;
    }
    match RequestParser::new("").ok()?.parse(path) {
        Ok(GoProxyRequest::Module(req)) => Some(req),
        _ => None,
    }
}

/// Removes a module's cached answers (one version, or all of them with `list` and
/// `@latest`) on every route. Blocking.
pub fn purge_module(
    cache: &DiskCache,
    module: &str,
    version: Option<&str>,
) -> anyhow::Result<modgate_cache::PurgeReport> {
    Ok(cache.purge_where(|o| {
        cached_request(o).is_some_and(|req| {
            req.module == module
                && version.is_none_or(|v| req.version.as_ref().is_some_and(|rv| rv.as_str() == v))
        })
    })?)
}
