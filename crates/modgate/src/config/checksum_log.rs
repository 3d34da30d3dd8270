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
//!     key: "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"
//!   # public: { trust: first-seen }  # air-gapped sites: log the gateway's own hashes, audited
//! ```

use serde::Deserialize;

use super::PathValue;

/// Go's own verifier key of `sum.golang.org`, as in `$GOROOT/src/cmd/go/internal/modfetch/key.go`
/// (`knownGOSUMDB`; Go 1.23). The unit tests check that it parses as a verifier key.
pub const SUM_GOLANG_ORG_KEY: &str =
    "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8";

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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> ChecksumLogConfig {
        serde_yaml_ng::from_str(yaml).expect("a checksum_log section")
    }

    const BASE: &str = "name: sum.corp.example\nkey_file: /k\nreaders: [devs]\n";

    #[test]
    fn public_modules_default_to_sum_golang_org_with_gos_own_key() {
        let c = parse(BASE);
        assert_eq!(c.public, PublicTrust::default());
        assert_eq!(c.public_key().as_deref(), Some(SUM_GOLANG_ORG_KEY));
        assert_eq!(c.check(&["sum.golang.org"]), Ok(()));
        // The default names a database the gateway must proxy.
        let e = c.check(&[]).expect_err("not proxied");
        assert!(e.contains("is not under `sumdb:`"), "{e}");
    }

    #[test]
    fn air_gapped_sites_trust_first_seen() {
        let c = parse(&format!("{BASE}public: {{ trust: first-seen }}\n"));
        assert_eq!(
            c.public,
            PublicTrust::Offline {
                trust: TrustFirstSeen::FirstSeen
            }
        );
        assert_eq!(c.public_key(), None);
        assert!(c.check(&[]).is_ok());
    }

    #[test]
    fn what_the_types_cannot_check_is_refused_with_the_reason() {
        let other = "sum.public.test";
        let (_, vkey) =
            modgate_tlog::note::key_pair_from_seed(other, &[3; 32]).expect("a key pair");
        let (_, wrong) =
            modgate_tlog::note::key_pair_from_seed("sum.wrong.test", &[3; 32]).expect("key");
        let cases = [
            (
                "name: Not A Name\nkey_file: /k\nreaders: [devs]\n".to_string(),
                vec![],
                "is not a checksum database name",
            ),
            (
                BASE.to_string(),
                vec!["sum.corp.example", "sum.golang.org"],
                "is also under",
            ),
            (
                "name: sum.corp.example\nkey_file: /k\nreaders: []\n".to_string(),
                vec!["sum.golang.org"],
                "name at least one role",
            ),
            (
                format!("{BASE}public: {{ sumdb: {other} }}\n"),
                vec![other],
                "the verifier key of",
            ),
            (
                format!("{BASE}public: {{ sumdb: {other}, key: \"{wrong}\" }}\n"),
                vec![other],
                "the key is named",
            ),
            (
                format!("{BASE}public: {{ sumdb: {other}, key: \"not a key\" }}\n"),
                vec![other],
                "checksum_log.public.key",
            ),
        ];
        for (yaml, proxied, says) in cases {
            let e = parse(&yaml).check(&proxied).expect_err(&yaml);
            assert!(e.contains(says), "{yaml}: {e}");
        }
        let ok = parse(&format!(
            "{BASE}public: {{ sumdb: {other}, key: \"{vkey}\" }}\n"
        ));
        assert!(ok.check(&[other]).is_ok());
    }
}
