//! The `cluster:` section of `gateway.yaml` (issue 23): several replicas behind one balancer
//! share their integrity ledger in PostgreSQL and hear of each other's accepts and purges. Off
//! when absent (the embedded SQLite ledger beside the cache); it needs `cache:`. Read at start
//! (a reload keeps the stores the process opened).
//!
//! ```yaml
//! cluster:
//!   name: modgate-a                  # this replica in events and logs (default: the host name)
//!   postgres:
//!     dsn: "host=db.corp port=5432 user=modgate dbname=modgate sslmode=require"
//!     password_file: /etc/modgate/pg.password   # optional: kept out of the DSN
//!     pool_size: 16
//!     connect_timeout: 5s
//!     statement_timeout: 30s
//!     tls:
//!       ca: /etc/modgate/pg-ca.pem   # verifies the server (needed for sslmode=require)
//!   objects:                         # optional: the shared object tier
//!     endpoint: http://10.0.0.7:3900
//!     region: garage
//!     bucket: modgate
//!     prefix: prod/                  # optional
//!     path_style: true               # default
//!     access_key_id: GK31c2f218a2e44f485b94239e
//!     secret_access_key_file: /etc/modgate/s3.secret   # else $AWS_SECRET_ACCESS_KEY
//! ```

use serde::Deserialize;

use super::{DurationValue, PathValue};

/// The `cluster:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This replica's name in the cluster's events and the logs; the host name when absent.
    pub name: Option<String>,
    /// The shared database.
    pub postgres: PostgresConfig,
    /// The shared object tier (an S3-compatible store); each replica's own cache only when
    /// absent.
    pub objects: Option<ObjectsConfig>,
}

/// `cluster.objects`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectsConfig {
    pub endpoint: String,
    #[serde(default = "default_region")]
    pub region: String,
    pub bucket: String,
    #[serde(default)]
    pub prefix: String,
    #[serde(default = "yes")]
    pub path_style: bool,
    /// The access key id; `$AWS_ACCESS_KEY_ID` when absent.
    pub access_key_id: Option<String>,
    /// A file holding the secret access key (its first line); `$AWS_SECRET_ACCESS_KEY` when
    /// absent.
    pub secret_access_key_file: Option<PathValue>,
    #[serde(default = "default_object_timeout")]
    pub timeout: DurationValue,
}

impl std::fmt::Debug for ObjectsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectsConfig")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

fn default_region() -> String {
    "us-east-1".to_owned()
}
fn yes() -> bool {
    true
}
fn default_object_timeout() -> DurationValue {
    DurationValue(std::time::Duration::from_secs(60))
}

impl ObjectsConfig {
    /// The store's settings (reads the secret's file, or the environment).
    pub fn settings(&self) -> Result<modgate_objstore::S3Settings, String> {
        if !(self.endpoint.starts_with("http://") || self.endpoint.starts_with("https://")) {
            return Err(format!(
                "cluster.objects.endpoint: {:?} is not an http:// or https:// URL",
                self.endpoint
            ));
        }
        let key_id = match &self.access_key_id {
            Some(k) => k.clone(),
            None => std::env::var("AWS_ACCESS_KEY_ID").map_err(|_| {
                "cluster.objects: no access_key_id and no $AWS_ACCESS_KEY_ID".to_owned()
            })?,
        };
        let secret = match &self.secret_access_key_file {
            Some(f) => std::fs::read_to_string(&f.0)
                .map_err(|e| {
                    format!(
                        "cluster.objects.secret_access_key_file: cannot read {}: {e}",
                        f.0.display()
                    )
                })?
                .lines()
                .next()
                .unwrap_or("")
                .to_owned(),
            None => std::env::var("AWS_SECRET_ACCESS_KEY").map_err(|_| {
                "cluster.objects: no secret_access_key_file and no $AWS_SECRET_ACCESS_KEY"
                    .to_owned()
            })?,
        };
        let mut s = modgate_objstore::S3Settings::new(
            self.endpoint.clone(),
            self.region.clone(),
            self.bucket.clone(),
            key_id,
            secret,
        );
        s.prefix = self.prefix.clone();
        s.path_style = self.path_style;
        s.timeout = self.timeout.0;
        modgate_objstore::ObjectTier::new(&s).map_err(|e| format!("cluster.objects: {e}"))?;
        Ok(s)
    }
}

/// `cluster.postgres`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// A libpq connection string or `postgresql://` URL.
    pub dsn: String,
    /// A file holding the password (its first line), kept out of the DSN.
    pub password_file: Option<PathValue>,
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: DurationValue,
    #[serde(default = "default_statement_timeout")]
    pub statement_timeout: DurationValue,
    pub tls: Option<PostgresTls>,
}

impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the DSN: it may hold a password.
        f.debug_struct("PostgresConfig")
            .field("pool_size", &self.pool_size)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// `cluster.postgres.tls`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresTls {
    /// The CA bundle (PEM) the server's certificate is verified against.
    pub ca: PathValue,
}

fn default_pool_size() -> usize {
    16
}
fn default_connect_timeout() -> DurationValue {
    DurationValue(std::time::Duration::from_secs(5))
}
fn default_statement_timeout() -> DurationValue {
    DurationValue(std::time::Duration::from_secs(30))
}

impl ClusterConfig {
    /// This replica's name: `name`, else the host name, else `modgate`.
    pub fn replica(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "modgate".to_owned())
        })
    }

    /// What the section asks for that the file alone can tell is wrong.
    pub fn check(&self) -> Result<(), String> {
        let p = &self.postgres;
        if p.pool_size == 0 || p.pool_size > 1000 {
            return Err(format!(
                "cluster.postgres.pool_size: {} is not between 1 and 1000",
                p.pool_size
            ));
        }
        if let Some(n) = &self.name {
            if n.is_empty() || n.len() > 200 || n.chars().any(char::is_control) {
                return Err(format!("cluster.name: {n:?} is not a usable replica name"));
            }
        }
        if let Some(o) = &self.objects {
            o.settings()?;
        }
        self.settings().map(|_| ())
    }

    /// The connection settings (reads the password file).
    pub fn settings(&self) -> Result<modgate_postgres::PgSettings, String> {
        let p = &self.postgres;
        let mut s = modgate_postgres::PgSettings::new(p.dsn.clone());
        if let Some(f) = &p.password_file {
            let text = std::fs::read_to_string(&f.0).map_err(|e| {
                format!(
                    "cluster.postgres.password_file: cannot read {}: {e}",
                    f.0.display()
                )
            })?;
            s.password = Some(text.lines().next().unwrap_or("").to_owned());
        }
        s.pool_size = p.pool_size;
        s.connect_timeout = p.connect_timeout.0;
        s.statement_timeout = p.statement_timeout.0;
        s.ca_file = p.tls.as_ref().map(|t| t.ca.0.clone());
        modgate_postgres::Pool::new(&s).map_err(|e| format!("cluster.postgres: {e}"))?;
        Ok(s)
    }
}
