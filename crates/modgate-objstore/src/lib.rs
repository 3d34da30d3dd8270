//! The shared object tier of a modgate cluster (issue 23): the exact-version artifacts
//! (`.info`, `.mod`, `.zip`) every replica verified, in an S3-compatible store, through the
//! maintained `object_store` crate (Apache Arrow's), so a replica that misses an object another
//! replica fetched reads it from the store instead of the upstream.
//!
//! * Writes are atomic: an object appears whole or not at all. A body up to
//!   [`S3Settings::multipart_threshold`] is one `PUT`; a larger one a multipart upload of
//!   [`S3Settings::part_size`] parts, which becomes visible only when completed (and is aborted
//!   on any failure), so a torn upload is never visible. Conditional writes are not relied on
//!   (Garage ignores `If-None-Match`): two replicas writing the same key write the same verified
//!   bytes, and the last complete write wins.
//!   A body that ends short of (or runs past) the length announced is torn and never stored.
//! * Reads stream: [`ObjectTier::get`] hands back the body chunk by chunk, bounded by the
//!   caller's limit, for the caller to hash and check against the ledger before serving — the
//!   store is trusted for nothing (a corrupt or foreign object is refused by the ledger's hash).
//!   A read cut mid-body is resumed with a ranged `GET` from where it broke, checked against the
//!   object's `ETag` (object_store's retrying stream, up to the retries configured), so a large
//!   zip is not read again from its start, and never spliced from two versions of an object.
//! * Every error names the store (`S3 http://10.0.0.7:3900/modgate`).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{
    ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig, WriteMultipart,
};

/// How to reach the store.
#[derive(Clone)]
pub struct S3Settings {
    /// `http(s)://host:port` of the S3 API.
    pub endpoint: String,
    /// The region the store signs for (`garage`, `us-east-1`, …).
    pub region: String,
    /// The bucket.
    pub bucket: String,
    /// A key prefix inside the bucket (`modgate/`), so several deployments can share it.
    pub prefix: String,
    /// Path-style requests (`endpoint/bucket/key`), as most self-hosted stores want; else
    /// virtual-hosted style (`bucket.endpoint/key`).
    pub path_style: bool,
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
    /// Bodies larger than this are multipart uploads.
    pub multipart_threshold: usize,
    /// Size of each part of a multipart upload (S3's minimum is 5 MiB).
    pub part_size: usize,
    /// Longest a request may take (a whole part, or a whole small object).
    pub timeout: Duration,
    /// Longest a connection may take to establish.
    pub connect_timeout: Duration,
}

impl fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret.
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl S3Settings {
    /// Settings with the defaults: path-style, 16 MiB multipart threshold, 8 MiB parts, 5 s to
    /// connect, 60 s per request.
    pub fn new(
        endpoint: impl Into<String>,
        region: impl Into<String>,
        bucket: impl Into<String>,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> S3Settings {
        S3Settings {
            endpoint: endpoint.into(),
            region: region.into(),
            bucket: bucket.into(),
            prefix: String::new(),
            path_style: true,
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            multipart_threshold: 16 << 20,
            part_size: 8 << 20,
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// What went wrong with the store; the text names it.
#[derive(Debug, thiserror::Error)]
pub enum TierError {
    /// The settings are unusable.
    #[error("S3 settings: {0}")]
    Settings(String),
    /// The store failed an operation.
    #[error("{store}: {op} of {key} failed: {detail}")]
    Store {
        /// `S3 <endpoint>/<bucket>`.
        store: String,
        /// `get`, `put`, `delete`.
        op: &'static str,
        /// The object's key.
        key: String,
        /// The store's error.
        detail: String,
    },
    /// The object is larger than the caller takes.
    #[error("{store}: {key} is {size} bytes, more than the {limit} taken")]
    TooLarge {
        /// The store.
        store: String,
        /// The key.
        key: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
}

/// A body being read from the store: its size and its chunks.
pub struct Reading {
    /// The object's size.
    pub size: u64,
    /// Its bytes, in order.
    pub chunks: BoxStream<'static, Result<Bytes, TierError>>,
}

/// The store, shared by every request of a replica. `Send + Sync`.
#[derive(Clone)]
pub struct ObjectTier {
    store: Arc<dyn ObjectStore>,
    name: String,
    prefix: String,
    threshold: usize,
    part_size: usize,
}

impl fmt::Debug for ObjectTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectTier")
            .field("store", &self.name)
            .finish_non_exhaustive()
    }
}

impl ObjectTier {
    /// The tier on the store `settings` name (nothing is contacted yet).
    pub fn new(settings: &S3Settings) -> Result<ObjectTier, TierError> {
        if settings.part_size < 5 << 20 {
            return Err(TierError::Settings(
                "part_size is below S3's minimum of 5 MiB".to_owned(),
            ));
        }
        let options = ClientOptions::new()
            .with_timeout(settings.timeout)
            .with_connect_timeout(settings.connect_timeout)
            .with_allow_http(settings.endpoint.starts_with("http://"));
        let retry = RetryConfig {
            max_retries: 2,
            retry_timeout: settings.timeout,
            ..RetryConfig::default()
        };
        let store = AmazonS3Builder::new()
            .with_endpoint(settings.endpoint.trim_end_matches('/'))
            .with_region(&settings.region)
            .with_bucket_name(&settings.bucket)
            .with_access_key_id(&settings.access_key_id)
            .with_secret_access_key(&settings.secret_access_key)
            .with_virtual_hosted_style_request(!settings.path_style)
            .with_client_options(options)
            .with_retry(retry)
            .build()
            .map_err(|e| TierError::Settings(e.to_string()))?;
        Ok(ObjectTier {
            store: Arc::new(store),
            name: format!(
                "S3 {}/{}",
                settings.endpoint.trim_end_matches('/'),
                settings.bucket
            ),
            prefix: settings.prefix.trim_matches('/').to_owned(),
            threshold: settings.multipart_threshold.max(1),
            part_size: settings.part_size,
        })
    }

    /// `S3 <endpoint>/<bucket>`, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn path(&self, key: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(key)
        } else {
            ObjectPath::from(format!("{}/{key}", self.prefix))
        }
    }

    fn err(&self, op: &'static str, key: &str, e: &object_store::Error) -> TierError {
        TierError::Store {
            store: self.name.clone(),
            op,
            key: key.to_owned(),
            detail: e.to_string(),
        }
    }

    /// The object at `key`, streamed (`None`: there is none). An object larger than `limit`
    /// is an error, before its body is read.
    pub async fn get(&self, key: &str, limit: u64) -> Result<Option<Reading>, TierError> {
        let got = match self.store.get(&self.path(key)).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.err("get", key, &e)),
        };
        let size = got.meta.size;
        if size > limit {
            return Err(TierError::TooLarge {
                store: self.name.clone(),
                key: key.to_owned(),
                size,
                limit,
            });
        }
        let (name, key) = (self.name.clone(), key.to_owned());
        let chunks = got
            .into_stream()
            .map(move |r| {
                r.map_err(|e| TierError::Store {
                    store: name.clone(),
                    op: "get",
                    key: key.clone(),
                    detail: e.to_string(),
                })
            })
            .boxed();
        Ok(Some(Reading { size, chunks }))
    }

    /// Writes `body` (given as its chunks, `len` bytes in all) at `key`, atomically: one PUT
    /// up to the multipart threshold, else a multipart upload completed at the end (aborted on
    /// a failure, so nothing partial is ever visible).
    pub async fn put(
        &self,
        key: &str,
        len: u64,
        mut chunks: BoxStream<'_, Result<Bytes, String>>,
    ) -> Result<(), TierError> {
        let path = self.path(key);
        let read_err = |e: String| TierError::Store {
            store: self.name.clone(),
            op: "put",
            key: key.to_owned(),
            detail: format!("reading the body to upload: {e}"),
        };
        // A body that ends short of (or runs past) `len` is torn: it is never made visible.
        let torn = |got: u64| {
            read_err(format!(
                "the body was {got} bytes, not the {len} announced: nothing was stored"
            ))
        };
        if len <= self.threshold as u64 {
            let mut parts = Vec::new();
            let mut got = 0u64;
            while let Some(c) = chunks.next().await {
                let c = c.map_err(read_err)?;
                got += c.len() as u64;
                if got > len {
                    return Err(torn(got));
                }
                parts.push(c);
            }
            if got != len {
                return Err(torn(got));
            }
            let payload: PutPayload = parts.into_iter().collect();
            self.store
                .put(&path, payload)
                .await
                .map_err(|e| self.err("put", key, &e))?;
            return Ok(());
        }
        let upload = self
            .store
            .put_multipart(&path)
            .await
            .map_err(|e| self.err("starting the multipart upload", key, &e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, self.part_size);
        let mut got = 0u64;
        while let Some(c) = chunks.next().await {
            let chunk = match c {
                Ok(c) => c,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(read_err(e));
                }
            };
            got += chunk.len() as u64;
            if got > len {
                let _ = writer.abort().await;
                return Err(torn(got));
            }
            if let Err(e) = writer.wait_for_capacity(4).await {
                let _ = writer.abort().await;
                return Err(self.err("uploading a part", key, &e));
            }
            writer.put(chunk);
        }
        if got != len {
            let _ = writer.abort().await;
            return Err(torn(got));
        }
        writer
            .finish()
            .await
            .map_err(|e| self.err("completing the multipart upload", key, &e))?;
        Ok(())
    }

    /// The size of the object at `key` (`None`: there is none), without reading it.
    pub async fn head(&self, key: &str) -> Result<Option<u64>, TierError> {
        match self.store.head(&self.path(key)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err("head", key, &e)),
        }
    }

    /// Removes the object at `key` (none there is not an error).
    pub async fn delete(&self, key: &str) -> Result<(), TierError> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err("delete", key, &e)),
        }
    }

    /// The keys under `prefix` (for purges of a module), at most `max`.
    pub async fn list(&self, prefix: &str, max: usize) -> Result<Vec<String>, TierError> {
        let base = self.path(prefix);
        let mut out = Vec::new();
        let mut listing = self.store.list(Some(&base));
        while let Some(item) = listing.next().await {
            let meta = item.map_err(|e| self.err("list", prefix, &e))?;
            let full = meta.location.to_string();
            let key = if self.prefix.is_empty() {
                full
            } else {
                full.strip_prefix(&format!("{}/", self.prefix))
                    .unwrap_or(&full)
                    .to_owned()
            };
            out.push(key);
            if out.len() >= max {
                break;
            }
        }
        Ok(out)
    }
}
