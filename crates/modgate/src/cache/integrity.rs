//! The first-seen check of exact-version artifacts: which ledger artifact a request is, the
//! hashing of its bytes as they stream from the upstream (with the `h1:` budget), the ledger's
//! verdict at the end, and the message that refuses changed bytes.

use std::sync::atomic::{AtomicUsize, Ordering};

use modgate_ledger::{Artifact, Check, LedgerStore};
use modgate_protocol::{escape_version, ModuleRequest, RequestKind};

/// The ledger artifact of a request, when it is an exact version.
pub fn artifact(req: &ModuleRequest) -> Option<(Artifact, String)> {
    let version = req.version.as_ref()?;
    if !req.is_immutable() {
        return None;
    }
    let a = match req.kind {
        RequestKind::Info => Artifact::Info,
        RequestKind::Mod => Artifact::Mod,
        RequestKind::Zip => Artifact::Zip,
        _ => return None,
    };
    Some((a, version.as_str().to_string()))
}

/// The one-line reason for refusing changed bytes, ending with the `modgate ledger accept`
/// command that would pin them. `observed` is `sha256:<hex> (<n> bytes)` once the body was
/// hashed, or only `<n> bytes` when the header's length already differed: then the message says
/// how to get the sha256 the command needs.
pub fn mismatch_message(
    module: &str,
    version: &str,
    a: Artifact,
    upstream: &str,
    recorded_sha256: &str,
    recorded_size: u64,
    observed: &str,
) -> String {
    let accept = |sha256: &str, size: &str| {
        format!(
            "modgate ledger accept {module}@{version} {a} --sha256 {sha256} --size {size} \
             --reason '...'"
        )
    };
    let size_only = observed
        .strip_suffix(" bytes")
        .filter(|n| n.parse::<u64>().is_ok());
    let hashed = observed
        .strip_prefix("sha256:")
        .and_then(|rest| rest.split_once(" ("))
        .and_then(|(sha, rest)| Some((sha, rest.strip_suffix(" bytes)")?)));
    let how = match (size_only, hashed) {
        (Some(size), _) => {
            let path = format!(
                "{}/@v/{}.{a}",
                modgate_protocol::escape_path(module).unwrap_or_else(|_| module.to_string()),
                escape_version(version).unwrap_or_else(|_| version.to_string())
            );
            format!(
                "to accept it, get its sha256 from the upstream: `curl -sS <URL of upstream \
                 {upstream}>/{path} | sha256sum`, then `{}`",
                accept("<that sha256>", size)
            )
        }
        (None, Some((sha256, size))) => format!("accept it with `{}`", accept(sha256, size)),
        (None, None) => "accept it with `modgate ledger accept`".to_string(),
    };
    format!(
        "{module}@{version} (.{a}) changed upstream: first seen sha256:{recorded_sha256} \
         ({recorded_size} bytes), upstream {upstream} now serves {observed}; refused \
         (a re-tagged or tampered version; {how})"
    )
}

/// Hashes an artifact as it streams from the upstream and checks it against the ledger at the
/// end.
pub struct IntegrityCheck {
    pub module: String,
    pub version: String,
    pub artifact: Artifact,
    hasher: modgate_ledger::Sha256Hasher,
    /// Kept for the `h1:` hash of `.mod` and of zips up to [`H1_ZIP_LIMIT`].
    buffer: Option<Vec<u8>>,
    budget: Reservation,
    /// Record first-seen bytes (false: only compare with a record).
    pin: bool,
}

/// Zips up to this size also get their `h1:` directory hash recorded (the whole zip has to
/// be held to read its central directory); larger ones are pinned by SHA-256 only.
pub const H1_ZIP_LIMIT: usize = 64 << 20;

/// Memory all artifacts being held for their `h1:` may use together; past it, an artifact is
/// pinned by SHA-256 (and size) only.
pub const H1_BUDGET: usize = 256 << 20;

static H1_IN_USE: AtomicUsize = AtomicUsize::new(0);

/// Bytes of a memory budget shared by many holders (`in_use` counts them all against a limit),
/// held by one and returned when it is dropped: the `h1:` buffers ([`H1_BUDGET`]), the bodies
/// the verifying origin holds in memory for want of disk (`cache.max_spill`).
#[derive(Default)]
pub struct Reservation {
    budget: Option<&'static AtomicUsize>,
    bytes: usize,
}

impl Reservation {
    /// Takes `n` more bytes of `in_use` (one budget per reservation), if that stays within
    /// `limit`.
    pub fn grow(&mut self, in_use: &'static AtomicUsize, limit: usize, n: usize) -> bool {
        let mut current = in_use.load(Ordering::Relaxed);
        loop {
            if current.saturating_add(n) > limit {
                return false;
            }
            match in_use.compare_exchange_weak(
                current,
                current + n,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.bytes += n;
                    self.budget = Some(in_use);
                    return true;
                }
                Err(now) => current = now,
            }
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(b) = self.budget {
            b.fetch_sub(self.bytes, Ordering::AcqRel);
        }
    }
}

/// Why an artifact from an upstream was not accepted; its text is the whole message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntegrityFailure {
    /// Its bytes differ from the first-seen ones: refused, and refused again until accepted.
    #[error("{0}")]
    Changed(String),
    /// Not a valid module zip.
    #[error("{0}")]
    Invalid(String),
    /// The ledger could not be read or written (disk full, locked): not checked, so not served.
    #[error("{0}")]
    Ledger(String),
}

impl IntegrityFailure {
    /// The message (also the `Display` text).
    pub fn message(&self) -> &str {
        match self {
            IntegrityFailure::Changed(m)
            | IntegrityFailure::Invalid(m)
            | IntegrityFailure::Ledger(m) => m,
        }
    }
}

impl IntegrityCheck {
    /// `length` is the upstream's `Content-Length`: a body announced larger than
    /// [`H1_ZIP_LIMIT`] is never buffered.
    pub fn new(
        module: &str,
        version: &str,
        artifact: Artifact,
        length: Option<u64>,
    ) -> IntegrityCheck {
        let small = length.is_none_or(|l| l <= H1_ZIP_LIMIT as u64);
        IntegrityCheck {
            module: module.to_string(),
            version: version.to_string(),
            artifact,
            hasher: modgate_ledger::Sha256Hasher::new(),
            buffer: (artifact.has_h1() && small).then(Vec::new),
            budget: Reservation::default(),
            pin: true,
        }
    }

    /// Compares with what the ledger holds but records nothing when nothing is held: for an
    /// answer that is not the one shared representation ([`super::unshareable`]).
    pub fn without_pinning(mut self) -> IntegrityCheck {
        self.pin = false;
        self
    }

    /// Whether first-seen bytes are recorded (false: only compared with a record).
    #[cfg(test)]
    pub fn pins(&self) -> bool {
        self.pin
    }

    pub fn update(&mut self, data: &[u8]) {
        self.hasher.update(data);
        if let Some(b) = &mut self.buffer {
            if b.len() + data.len() > H1_ZIP_LIMIT
                || !self.budget.grow(&H1_IN_USE, H1_BUDGET, data.len())
            {
                self.buffer = None;
            } else {
                b.extend_from_slice(data);
            }
        }
    }

    /// Records or compares the finished artifact.
    /// `Ok(None)`: not pinned and nothing was recorded to compare with.
    pub fn finish(
        self,
        ledger: &dyn LedgerStore,
        upstream: &str,
    ) -> Result<Option<Check>, IntegrityFailure> {
        let _budget = self.budget;
        let size = self.hasher.bytes_hashed();
        let sha = self.hasher.finish();
        let h1 = match (&self.buffer, self.artifact) {
            (Some(b), Artifact::Mod) => Some(modgate_ledger::mod_h1(b)),
            (Some(b), Artifact::Zip) => match modgate_ledger::zip_h1(b) {
                Ok(h) => Some(h),
                Err(e) => {
                    return Err(IntegrityFailure::Invalid(format!(
                        "{}@{} (.zip) from upstream {upstream} is not a valid module zip: {e}",
                        self.module, self.version
                    )))
                }
            },
            _ => None,
        };
        let unavailable = |e: modgate_ledger::LedgerError| {
            IntegrityFailure::Ledger(format!(
                "{}@{}: the integrity ledger could not be consulted: {e}",
                self.module, self.version
            ))
        };
        let check = if self.pin {
            Some(
                ledger
                    .observe(
                        &self.module,
                        &self.version,
                        self.artifact,
                        &sha,
                        h1.as_deref(),
                        size,
                        upstream,
                    )
                    .map_err(unavailable)?,
            )
        } else {
            // Compared with what is recorded, never recorded itself.
            ledger
                .get(&self.module, &self.version, self.artifact)
                .map_err(unavailable)?
                .map(|recorded| {
                    if recorded.sha256 == sha && recorded.size == size {
                        Check::Match(recorded)
                    } else {
                        Check::Mismatch {
                            recorded,
                            observed_sha256: sha.clone(),
                            observed_h1: h1.clone(),
                        }
                    }
                })
        };
        match &check {
            Some(Check::Mismatch { recorded, .. }) => {
                Err(IntegrityFailure::Changed(mismatch_message(
                    &self.module,
                    &self.version,
                    self.artifact,
                    upstream,
                    &recorded.sha256,
                    recorded.size,
                    &format!("sha256:{sha} ({size} bytes)"),
                )))
            }
            _ => Ok(check),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_is_shared_and_given_back() {
        static IN_USE: AtomicUsize = AtomicUsize::new(0);
        let mut a = Reservation::default();
        let mut b = Reservation::default();
        assert!(a.grow(&IN_USE, 100, 60));
        assert!(!b.grow(&IN_USE, 100, 50), "over the shared limit");
        assert!(b.grow(&IN_USE, 100, 40));
        drop(a);
        assert_eq!(IN_USE.load(Ordering::Relaxed), 40);
        drop(b);
        assert_eq!(IN_USE.load(Ordering::Relaxed), 0);
    }
}
