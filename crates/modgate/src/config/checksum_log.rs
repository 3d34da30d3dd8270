//! The `checksum_log:` section of `gateway.yaml`: the company's own checksum database, a
//! transparency log in Go's sumdb format of every module version the gateway admits, served at
//! `/sumdb/<name>/` so that `GOSUMDB="<name>+<key id>+<key>"` makes the stock `go` command
//! verify every module, private ones included (off when absent; it needs `cache:`, whose
//! integrity ledger's first-seen hashes are what it logs).
//!
//! ```yaml
//! checksum_log:
//!   name: sum.corp.example          # the key's name (`modgate sumdb keygen sum.corp.example`)
//!   key_file: /etc/modgate/sumdb.key
//!   readers: [developers, ci]       # roles that may read it; anonymous requests never may
//!   path: /var/lib/modgate/sumdb.sqlite   # default: <cache.dir>/sumdb.sqlite
//!   public:                         # public modules: checked against this database first
//!     sumdb: sum.golang.org         # a `sumdb:` entry the gateway proxies
//!     key: "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ua0+F6ofd6P5bhu"
//!   # public: { trust: first-seen }  # air-gapped sites: log the gateway's own hashes, audited
//! ```

use serde::Deserialize;

use super::PathValue;

/// Go's own verifier key of `sum.golang.org` (`cmd/go/internal/modfetch`, `knownGOSUMDB`).
pub const SUM_GOLANG_ORG_KEY: &str =
    "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ua0+F6ofd6P5bhu";

/// The `checksum_log:` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChecksumLogConfig {
    /// The database's name, as in `GOSUMDB` and `/sumdb/<name>/`: the signer key's name.
    pub name: String,
    /// The signer key file (`modgate sumdb keygen` writes it, mode 0600).
    pub key_file: PathValue,
    /// The roles whose members may read the log (every path under `/sumdb/<name>/`): its data
    /// tiles name every module version logged.
    pub readers: Vec<String>,
    /// The log's SQLite file; `<cache.dir>/sumdb.sqlite` when absent.
    pub path: Option<PathValue>,
    /// How a public module's hashes are trusted before they are logged.
    #[serde(default)]
    pub public: PublicTrust,
}

/// How a public module's hashes are trusted before they are logged.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum PublicTrust {
    /// Checked against a public checksum database the gateway proxies (`sumdb:`): logged only
    /// when its record, in a tree signed by `key` and proven to include it, states the same
    /// hashes; refused (502) when it cannot be asked.
    Verify {
        /// The `sumdb:` entry to ask.
        sumdb: String,
        /// Its verifier key (`<name>+<key id>+<key>`); Go's own for `sum.golang.org`.
        #[serde(default)]
        key: Option<String>,
    },
    /// Air-gapped sites: the gateway's own first-seen hashes are logged, and the audit says so.
    Offline {
        /// `first-seen`.
        trust: TrustFirstSeen,
    },
}

impl Default for PublicTrust {
    fn default() -> Self {
        PublicTrust::Verify {
            sumdb: "sum.golang.org".into(),
            key: None,
        }
    }
}

/// The one value of `public.trust`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrustFirstSeen {
    FirstSeen,
}

impl ChecksumLogConfig {
    /// Where the log lives: `path`, else `sumdb.sqlite` in the cache directory.
    pub fn log_path(&self, cache: &super::CacheConfig) -> std::path::PathBuf {
        match &self.path {
            Some(p) => p.0.clone(),
            None => cache.dir.0.join("sumdb.sqlite"),
        }
    }

    /// Checks what the types cannot: the name, the readers, the public database.
    pub fn check(&self, proxied: &[&str]) -> Result<(), String> {
        if !modgate_protocol::sumdb::is_valid_sumdb_name(&self.name)
            || !modgate_tlog::note::is_valid_name(&self.name)
        {
            return Err(format!(
                "checksum_log.name: {:?} is not a checksum database name (a host-like name such \
                 as sum.corp.example)",
                self.name
            ));
        }
        if proxied.contains(&self.name.as_str()) {
            return Err(format!(
                "checksum_log.name: {:?} is also under `sumdb:` (a database is either proxied or \
                 the gateway's own)",
                self.name
            ));
        }
        if self.readers.is_empty() {
            return Err(
                "checksum_log.readers: name at least one role (the log names every module \
                 version logged; anonymous requests never read it)"
                    .into(),
            );
        }
        if let PublicTrust::Verify { sumdb, .. } = &self.public {
            if !proxied.contains(&sumdb.as_str()) {
                return Err(format!(
                    "checksum_log.public.sumdb: {sumdb:?} is not under `sumdb:` (public modules \
                     are checked against a database the gateway proxies; or set `public: {{ \
                     trust: first-seen }}` for an air-gapped site)"
                ));
            }
            let key = self.public_key().unwrap_or_default();
            if key.is_empty() {
                return Err(format!(
                    "checksum_log.public.key: the verifier key of {sumdb:?} is needed (Go's \
                     own is known only for sum.golang.org)"
                ));
            }
            if let Err(e) = modgate_tlog::Verifier::new(&key) {
                return Err(format!("checksum_log.public.key: {e}"));
            }
            if key.split('+').next() != Some(sumdb.as_str()) {
                return Err(format!(
                    "checksum_log.public.key: the key is named {:?}, not {sumdb:?}",
                    key.split('+').next().unwrap_or_default()
                ));
            }
        }
        Ok(())
    }

    /// The verifier key public records are checked with (`None` offline).
    pub fn public_key(&self) -> Option<String> {
        match &self.public {
            PublicTrust::Verify { key: Some(k), .. } => Some(k.clone()),
            PublicTrust::Verify { sumdb, key: None } if sumdb == "sum.golang.org" => {
                Some(SUM_GOLANG_ORG_KEY.into())
            }
            _ => None,
        }
    }
}
