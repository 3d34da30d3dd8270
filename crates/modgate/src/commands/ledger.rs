//! `modgate ledger`, run beside (or without) a live gateway on the same ledger:
//!
//! - `show [MODULE[@VERSION]]`: the recorded hashes (and, for one version, its accepted
//!   changes).
//! - `accept MODULE@VERSION ARTIFACT --sha256 .. --size .. --reason ..`: deliberately pins new
//!   bytes for a version (the 502 and the audit record give the refused values, or say how to
//!   get the sha256); audited, and recorded as accepted by `operator:<OS user>`. Values that
//!   contradict what the ledger already knows about the same bytes are refused: a size or
//!   `h1:` other than the one recorded for that sha256, an `h1:` of a `.mod` that is not the
//!   one its sha256 implies. `modgate reload` (SIGHUP) makes a running gateway forget its
//!   refusals so the accepted bytes are fetched.
//! - `seed --reason .. GO.SUM...`: records every module version of the given `go.sum` files as
//!   already in use, so cooldown treats them as old (a fresh deployment must not hold back what
//!   the organisation already builds with); all files are read and checked before anything is
//!   recorded; audited (one `ledger-seed` record per version newly seeded) and recorded as
//!   seeded by `operator:<OS user>`.

use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context;
use modgate_ledger::{Artifact, LedgerStore, Sightings};

use super::operator::{audit_event, audit_events, cache_config, Actor};
use super::{Exit, Outcome};
use crate::cache::target;
use crate::config::GatewayConfig;

fn rfc3339(unix: i64) -> String {
    modgate_telemetry::rfc3339_millis(
        UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap_or(0)),
    )
}

/// `modgate ledger show`.
pub fn show(config: &GatewayConfig, what: Option<&str>) -> Outcome {
    let c = cache_config(config)?;
    let ledger = config.ledger_at(c, Some("modgate ledger show"))?.open()?;
    let (module, version) = match what {
        Some(w) => {
            let (m, v) = target(w)?;
            (Some(m), v)
        }
        None => (None, None),
    };
    let mut n = 0;
    for e in ledger.list(module.as_deref())? {
        if module.as_deref().is_some_and(|m| e.module != m)
            || version.as_deref().is_some_and(|v| e.version != v)
        {
            continue;
        }
        n += 1;
        println!(
            "{}@{} .{} sha256:{} {} bytes{} first seen {} from {}{}",
            e.module,
            e.version,
            e.artifact,
            e.sha256,
            e.size,
            e.h1.as_deref().map(|h| format!(" {h}")).unwrap_or_default(),
            rfc3339(e.first_seen_unix),
            e.source,
            e.accepted_by
                .as_deref()
                .map(|o| format!(" (accepted by {o})"))
                .unwrap_or_default()
        );
    }
    if let (Some(m), Some(v)) = (&module, &version) {
        for h in ledger.history(m, v)? {
            println!(
                "accepted {} .{} sha256:{} ({} bytes) by {}: {}{}",
                rfc3339(h.accepted_unix),
                h.artifact,
                h.sha256,
                h.size,
                h.operator,
                h.reason,
                h.replaced
                    .as_ref()
                    .map(|r| format!(" (replaced sha256:{}, {} bytes)", r.sha256, r.size))
                    .unwrap_or_default()
            );
        }
    }
    eprintln!("{n} record(s)");
    Ok(Exit::Success)
}

/// What `modgate ledger accept` is asked to record (its command line; the field comments are
/// its help).
#[derive(clap::Args)]
pub struct Accept {
    /// MODULE@VERSION.
    pub target: String,
    /// Which file of the version.
    #[arg(value_parser = ["info", "mod", "zip"])]
    pub artifact: String,
    /// SHA-256 of the new bytes, 64 hex digits (what `sha256sum` prints).
    #[arg(long, value_name = "HEX")]
    pub sha256: String,
    /// The go.sum `h1:` hash of the new bytes (.mod and .zip; a .mod's follows from its
    /// sha256 and is filled in).
    #[arg(long, value_name = "H1")]
    pub h1: Option<String>,
    /// Size of the new bytes; refused when the ledger already saw this sha256 with another.
    #[arg(long, value_name = "BYTES")]
    pub size: u64,
    /// Why the change is accepted (kept in the ledger history and the audit log).
    #[arg(long)]
    pub reason: String,
}

/// Bytes the ledger has already seen, somewhere: what their sha256 fixes.
#[derive(Debug, PartialEq, Eq)]
struct Known {
    /// Where they were seen, for the message.
    place: String,
    size: u64,
    h1: Option<String>,
}

/// Everything the ledger knows about bytes with this sha256 near the version being accepted:
/// every record of the module (any version or artifact; the same sha256 is the same bytes) and
/// the version's history of accepted changes (old and new values).
fn known_as(
    ledger: &dyn LedgerStore,
    module: &str,
    version: &str,
    sha256: &str,
) -> anyhow::Result<Vec<Known>> {
    let mut known = Vec::new();
    for e in ledger.list(Some(module))? {
        if e.sha256 == sha256 {
            known.push(Known {
                place: format!(
                    "recorded for {}@{} .{}, first seen {} from {}",
                    e.module,
                    e.version,
                    e.artifact,
                    rfc3339(e.first_seen_unix),
                    e.source
                ),
                size: e.size,
                h1: e.h1,
            });
        }
    }
    for h in ledger.history(module, version)? {
        if h.sha256 == sha256 {
            known.push(Known {
                place: format!(
                    "accepted for .{} on {} by {}",
                    h.artifact,
                    rfc3339(h.accepted_unix),
                    h.operator
                ),
                size: h.size,
                h1: h.h1.clone(),
            });
        }
        if let Some(r) = h.replaced.filter(|r| r.sha256 == sha256) {
            known.push(Known {
                place: format!(
                    "recorded for .{} until {}, first seen from {}",
                    r.artifact,
                    rfc3339(h.accepted_unix),
                    r.source
                ),
                size: r.size,
                h1: r.h1,
            });
        }
    }
    Ok(known)
}

/// Checks the values against each other and against what is known; returns the `h1:` to
/// record (for a `.mod`, the one its sha256 implies when none was given).
fn consistent_h1(
    artifact: Artifact,
    sha256: &str,
    h1: Option<&str>,
    size: u64,
    known: &[Known],
) -> anyhow::Result<Option<String>> {
    let implied = match artifact {
        Artifact::Mod => Some(modgate_ledger::mod_h1_from_sha256(sha256)?),
        _ => None,
    };
    if let (Some(given), Some(implied)) = (h1, &implied) {
        anyhow::ensure!(
            given == implied,
            "--h1 {given} is not the h1: of a go.mod with sha256:{sha256} (that is {implied}); \
             check both values"
        );
    }
    for k in known {
        anyhow::ensure!(
            k.size == size,
            "--size {size} does not match sha256:{sha256}: the ledger has those bytes as {} bytes \
             ({}); check both values",
            k.size,
            k.place
        );
        if let (Some(given), Some(seen)) = (h1, &k.h1) {
            anyhow::ensure!(
                given == seen,
                "--h1 {given} does not match sha256:{sha256}: the ledger has those bytes as {seen} \
                 ({}); check both values",
                k.place
            );
        }
    }
    Ok(h1.map(str::to_string).or(implied))
}

/// `modgate ledger accept`.
pub fn accept(config: &GatewayConfig, a: &Accept) -> Outcome {
    let c = cache_config(config)?;
    let (module, version) = target(&a.target)?;
    let version = version.context("give MODULE@VERSION")?;
    let artifact: Artifact = a.artifact.parse()?;
    let sha256 = a.sha256.trim().to_ascii_lowercase();
    anyhow::ensure!(
        sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit()),
        "--sha256 {:?}: expected 64 hex digits (e.g. from `sha256sum`)",
        a.sha256
    );
    let ledger = config.ledger_at(c, Some("modgate ledger accept"))?.open()?;
    let known = known_as(&*ledger, &module, &version, &sha256)?;
    let h1 = consistent_h1(artifact, &sha256, a.h1.as_deref(), a.size, &known)?;
    let actor = Actor::current();
    let who = actor.label();
    let entry = ledger.accept(
        &module,
        &version,
        artifact,
        &sha256,
        h1.as_deref(),
        a.size,
        &who,
        &a.reason,
    )?;
    println!(
        "{module}@{version} .{artifact} now pinned to sha256:{} ({} bytes), accepted by {who}",
        entry.sha256, entry.size
    );
    println!(
        "a running gateway refuses the new bytes until it forgets its refusal: `modgate reload` \
         (or SIGHUP)"
    );
    let logged = logged_in_checksum_log(config, &module, &version);
    if let Some(note) = &logged {
        println!("{note}");
    }
    audit_event(
        config,
        &actor,
        "ledger-accept",
        &module,
        Some(&version),
        format!(
            ".{artifact} accepted as sha256:{} ({} bytes) by {who}: {}{}",
            entry.sha256,
            entry.size,
            a.reason,
            logged.map_or(String::new(), |n| format!(" ({n})"))
        ),
    );
    Ok(Exit::Success)
}

/// What `modgate ledger seed` is asked to record (its command line; the field comments are its
/// help).
#[derive(clap::Args)]
pub struct Seed {
    /// Why these versions are treated as old (kept in the audit log).
    #[arg(long)]
    pub reason: String,
    /// go.sum (or go.work.sum) files whose module versions the organisation already uses.
    #[arg(required = true, value_name = "GO.SUM")]
    pub files: Vec<std::path::PathBuf>,
}

/// Every distinct module version of the `go.sum` files, in first-seen order; any unreadable
/// or malformed file is an error naming it (and its line), before anything is recorded.
fn seed_versions(files: &[std::path::PathBuf]) -> anyhow::Result<Vec<(String, String)>> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for f in files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let versions = modgate_protocol::parse_go_sum(&text)
            .with_context(|| format!("{} is not a valid go.sum", f.display()))?;
        for v in versions {
            let pair = (v.module, v.version);
            if seen.insert(pair.clone()) {
                out.push(pair);
            }
        }
    }
    Ok(out)
}

/// `modgate ledger seed`.
pub fn seed(config: &GatewayConfig, s: &Seed) -> Outcome {
    let c = cache_config(config)?;
    anyhow::ensure!(
        !s.reason.trim().is_empty(),
        "--reason must say why these versions count as already in use"
    );
    let versions = seed_versions(&s.files)?;
    let store = Sightings::open(&c.sightings_path())?;
    let actor = Actor::current();
    let who = actor.label();
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    )
    .unwrap_or(i64::MAX);
    // Which are new, for the audit: read before, written in one transaction.
    let mut fresh = Vec::new();
    for (m, v) in &versions {
        if store.get(m, v)?.seeded.is_none() {
            fresh.push((m.as_str(), v.as_str()));
        }
    }
    let pairs: Vec<(&str, &str)> = versions
        .iter()
        .map(|(m, v)| (m.as_str(), v.as_str()))
        .collect();
    let newly = store.seed_many(&pairs, &who, now)?;
    let files = s
        .files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    audit_events(
        config,
        &actor,
        "ledger-seed",
        fresh.iter().map(|(m, v)| {
            (
                *m,
                Some(*v),
                format!(
                    "seeded as already in use (old for cooldown) by {who} from {files}: {}",
                    s.reason
                ),
            )
        }),
    );
    println!(
        "{newly} module version(s) seeded as already in use by {who} ({} already seeded) from {files}",
        versions.len() - newly
    );
    Ok(Exit::Success)
}

/// What `ledger accept` cannot change: where the company checksum database (`checksum_log:`)
/// has logged `module@version`, its record stays the first-seen one — the log is append-only —
/// so clients that verify against it keep refusing other bytes. `None` when it is not logged.
fn logged_in_checksum_log(config: &GatewayConfig, module: &str, version: &str) -> Option<String> {
    let (l, cache) = (config.checksum_log.as_ref()?, config.cache.as_ref()?);
    let signer = modgate_sumdb::keys::read_signer_key(&l.key_file.0).ok()?;
    let log = config
        .checksum_log_at(cache)
        .ok()?
        .open_existing(signer)
        .ok()?;
    let id = log.lookup(module, version).ok()??;
    Some(format!(
        "the checksum database {} logged {module}@{version} as record {id} with the first-seen \
         hashes, and keeps that record: clients verifying against it (GOSUMDB) still refuse \
         the accepted bytes. Publish a new version instead",
        l.name
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn seen(size: u64, h1: Option<&str>) -> Known {
        Known {
            place: "recorded for m.org/x@v1.0.0 .zip".into(),
            size,
            h1: h1.map(str::to_string),
        }
    }

    #[test]
    fn seeding_reads_every_file_before_recording_anything() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = dir.path().join("a.sum");
        let b = dir.path().join("b.sum");
        std::fs::write(
            &a,
            "example.com/x v1.0.0 h1:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n\
             example.com/x v1.0.0/go.mod h1:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n\
             example.com/y v0.2.0/go.mod h1:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n",
        )
        .expect("write");
        std::fs::write(
            &b,
            "example.com/x v1.0.0/go.mod h1:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n\
             example.com/z v2.0.0+incompatible h1:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n",
        )
        .expect("write");
        let got = seed_versions(&[a.clone(), b.clone()]).expect("parse");
        let want: Vec<(String, String)> = [
            ("example.com/x", "v1.0.0"),
            ("example.com/y", "v0.2.0"),
            ("example.com/z", "v2.0.0+incompatible"),
        ]
        .iter()
        .map(|(m, v)| (m.to_string(), v.to_string()))
        .collect();
        assert_eq!(got, want);
        let bad = dir.path().join("bad.sum");
        std::fs::write(&bad, "example.com/x v1.0.0\n").expect("write");
        let e = seed_versions(&[a, bad.clone()]).expect_err("bad line");
        assert!(format!("{e:#}").contains("bad.sum"), "{e:#}");
        let e = seed_versions(&[dir.path().join("missing.sum")]).expect_err("missing");
        assert!(format!("{e:#}").contains("missing.sum"), "{e:#}");
    }

    #[test]
    fn a_size_must_fit_the_bytes_already_seen() {
        let e = consistent_h1(Artifact::Zip, SHA, None, 101, &[seen(100, None)])
            .expect_err("size typo");
        let e = e.to_string();
        assert!(e.contains("--size 101 does not match"), "{e}");
        assert!(e.contains("as 100 bytes"), "{e}");
        assert!(e.contains("m.org/x@v1.0.0"), "{e}");
        assert_eq!(
            consistent_h1(Artifact::Zip, SHA, None, 100, &[seen(100, None)]).expect("fits"),
            None
        );
        // Nothing known: nothing to hold it against.
        assert!(consistent_h1(Artifact::Zip, SHA, None, 7, &[]).is_ok());
    }

    #[test]
    fn an_h1_must_fit_the_bytes() {
        let h1 = "h1:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
        let other = "h1:AAAAQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
        let known = [seen(100, Some(h1))];
        assert!(consistent_h1(Artifact::Zip, SHA, Some(other), 100, &known).is_err());
        assert_eq!(
            consistent_h1(Artifact::Zip, SHA, Some(h1), 100, &known).expect("fits"),
            Some(h1.to_string())
        );
        // A .mod's h1: follows from its sha256: filled in, and a wrong one refused.
        let implied = modgate_ledger::mod_h1_from_sha256(SHA).expect("h1");
        assert_eq!(
            consistent_h1(Artifact::Mod, SHA, None, 100, &[]).expect("derived"),
            Some(implied.clone())
        );
        let e = consistent_h1(Artifact::Mod, SHA, Some(other), 100, &[]).expect_err("wrong h1");
        assert!(e.to_string().contains(&implied), "{e}");
    }

    #[test]
    fn what_the_ledger_knows_about_a_sha256() {
        let ledger = modgate_ledger::Ledger::open_in_memory().expect("ledger");
        let (m, other) = ("m.org/x", SHA.replace('0', "f"));
        ledger
            .observe(m, "v1.0.0", Artifact::Zip, SHA, None, 100, "up")
            .expect("observe");
        ledger
            .observe(m, "v1.1.0", Artifact::Zip, &other, None, 50, "up")
            .expect("observe");
        let known = known_as(&ledger, m, "v1.1.0", SHA).expect("known");
        assert_eq!(known.len(), 1, "{known:?}");
        assert_eq!(known[0].size, 100);
        assert!(known[0].place.contains("v1.0.0"), "{known:?}");
        // Replaced bytes stay known through the history.
        ledger
            .accept(
                m,
                "v1.0.0",
                Artifact::Zip,
                &other,
                None,
                50,
                "operator:t",
                "t",
            )
            .expect("accept");
        let known = known_as(&ledger, m, "v1.0.0", SHA).expect("known");
        assert_eq!(known.len(), 1, "{known:?}");
        assert!(known[0].place.contains("until"), "{known:?}");
        assert_eq!(known_as(&ledger, m, "v1.0.0", &other).expect("k").len(), 3);
    }

    #[test]
    fn the_size_only_refusal_says_how_to_get_the_sha256() {
        let m = crate::cache::mismatch_message(
            "example.com/Ops",
            "v1.0.0",
            Artifact::Zip,
            "up",
            SHA,
            100,
            "101 bytes",
        );
        assert!(!m.contains('\n'), "one line: {m}");
        assert!(
            m.contains("/example.com/!ops/@v/v1.0.0.zip | sha256sum"),
            "{m}"
        );
        assert!(
            m.contains("modgate ledger accept example.com/Ops@v1.0.0 zip --sha256"),
            "{m}"
        );
        assert!(m.contains("--size 101"), "{m}");
        let m = crate::cache::mismatch_message(
            "example.com/ops",
            "v1.0.0",
            Artifact::Zip,
            "up",
            SHA,
            100,
            &format!("sha256:{} (100 bytes)", SHA.replace('0', "f")),
        );
        assert!(!m.contains("sha256sum"), "{m}");
        assert!(
            m.contains(&format!("--sha256 {} --size 100", SHA.replace('0', "f"))),
            "{m}"
        );
    }
}
