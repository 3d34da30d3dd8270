//! Whether a public module's hashes agree with the public checksum database the gateway proxies
//! (`checksum_log.public`), checked as Go's own sumdb client checks a lookup: the record's tree
//! head signed by the database's key, the tiles that prove the record is in that tree
//! authenticated against it, and the record's `h1:` hashes equal to the gateway's first-seen
//! ones. Only then may the company log append the version.

use modgate_protocol::{escape_path, escape_version};
use modgate_tlog::{remote, Verifier};

use super::admit::Refusal;
use super::lookup::{Fetched, Lookup};
use crate::upstream::Upstream;

/// The most tiles one proof reads (a tree of 2^64 records needs 8 levels of 8-high tiles, two
/// tiles a level at most): anything more is an error, not a loop.
const TILES_MAX: usize = 32;
/// The largest answer read from the database.
const ANSWER_MAX: usize = 1 << 20;

/// Why a public module may not be logged.
pub struct NotAgreed {
    /// The database stated other hashes (a security event), rather than failing to answer.
    pub disagrees: bool,
    pub message: String,
    pub refusal: Refusal,
}

fn unlearnt(message: String) -> NotAgreed {
    NotAgreed {
        disagrees: false,
        refusal: Refusal::Unlearnt(message.clone()),
        message,
    }
}

/// Checks `module@version`'s `zip_h1`/`mod_h1` against the database `db` (verifier key
/// `verifier`).
pub async fn agree(
    lookup: &Lookup,
    db: &Upstream,
    verifier: &Verifier,
    module: &str,
    version: &str,
    zip_h1: &str,
    mod_h1: &str,
) -> Result<(), NotAgreed> {
    let name = verifier.name();
    let escaped = match (escape_path(module), escape_version(version)) {
        (Ok(m), Ok(v)) => format!("/lookup/{m}@{v}"),
        _ => {
            return Err(unlearnt(format!(
                "{module}@{version} cannot be asked of {name}"
            )))
        }
    };
    let body = match lookup.get_one(db, &escaped, ANSWER_MAX).await {
        Ok(Fetched::Body(b)) => b,
        Ok(Fetched::NotFound) => {
            return Err(NotAgreed {
                disagrees: false,
                message: format!("{name} has no record of {module}@{version}"),
                refusal: Refusal::NotFound(format!(
                    "{module}@{version}: public checksum database {name} has no record of it, so \
                     the company checksum database does not log it"
                )),
            })
        }
        Err(why) => {
            return Err(unlearnt(format!(
                "{module}@{version}: public checksum database {name} could not be asked ({why}); \
                 not logged until it answers"
            )))
        }
    };
    let answer = remote::parse_lookup(&body, verifier).map_err(|e| NotAgreed {
        disagrees: true,
        message: format!("{name}'s answer for {module}@{version} does not verify: {e}"),
        refusal: Refusal::Unlearnt(format!(
            "SECURITY: {module}@{version}: {name}'s answer does not verify ({e}); not logged"
        )),
    })?;
    let wanted = remote::tiles_for_inclusion(answer.id, answer.tree.n);
    if wanted.len() > TILES_MAX {
        return Err(unlearnt(format!(
            "{module}@{version}: proving record {} of {name} needs {} tiles",
            answer.id,
            wanted.len()
        )));
    }
    let mut tiles = Vec::with_capacity(wanted.len());
    for t in wanted {
        let path = format!("/{}", t.path());
        match lookup.get_one(db, &path, ANSWER_MAX).await {
            Ok(Fetched::Body(b)) => tiles.push((t, b)),
            Ok(Fetched::NotFound) => {
                return Err(unlearnt(format!(
                    "{module}@{version}: {name} has no {path} to prove its record"
                )))
            }
            Err(why) => {
                return Err(unlearnt(format!(
                    "{module}@{version}: {name}'s {path} could not be read ({why})"
                )))
            }
        }
    }
    let disagree = |message: String| NotAgreed {
        disagrees: true,
        refusal: Refusal::Unlearnt(format!("SECURITY: {message}; not logged")),
        message,
    };
    remote::verify_inclusion(&answer, &tiles).map_err(|e| {
        disagree(format!(
            "{module}@{version}: {name}'s record is not proven in its signed tree: {e}"
        ))
    })?;
    let (their_zip, their_mod) = remote::record_hashes(&answer.text, module, version)
        .map_err(|e| disagree(format!("{module}@{version}: {name}'s record: {e}")))?;
    if their_zip != zip_h1 || their_mod != mod_h1 {
        return Err(disagree(format!(
            "{module}@{version}: {name} states {their_zip} (zip) and {their_mod} (go.mod), the \
             gateway first saw {zip_h1} and {mod_h1}"
        )));
    }
    Ok(())
}
