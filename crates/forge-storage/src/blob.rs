//! Overlay binaries in an object store, every load verified against the SHA-256 on record.

use bytes::Bytes;
use forge_model::ForgeError;
use forge_model::sha256_hex;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};
use std::sync::Arc;
use std::time::Duration;

/// Why a blob operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// No object under the key.
    #[error("blob `{key}` is missing")]
    Missing { key: String },
    /// The object's bytes do not hash to what the record says: changed behind the runtime's back.
    #[error("blob `{key}` does not match its recorded SHA-256 (expected {expected}, found {actual})")]
    Tampered { key: String, expected: String, actual: String },
    /// The store could not be reached or refused the request (network, credentials, disk).
    #[error("blob store unavailable: {0}")]
    Unavailable(String),
    /// The key is not a valid object path (empty segments, `.` or `..`, ...).
    #[error("invalid blob key `{key}`: {reason}")]
    InvalidKey { key: String, reason: String },
    /// The store location or its options are wrong; nothing was opened.
    #[error("invalid blob store configuration: {0}")]
    Config(String),
}

/// A binary that is missing, tampered with or unreachable is never run; the client is told the
/// service cannot serve it right now, and the reason goes to the log.
impl From<BlobError> for ForgeError {
    fn from(error: BlobError) -> Self {
        match error {
            BlobError::Missing { .. } | BlobError::Tampered { .. } | BlobError::Unavailable(_) => {
                tracing::error!(%error, "overlay binary refused");
                ForgeError::unavailable("overlay binary unavailable")
            }
            BlobError::InvalidKey { .. } | BlobError::Config(_) => {
                tracing::error!(%error, "blob store misuse");
                ForgeError::internal("internal storage error")
            }
        }
    }
}

/// How long an S3 request is retried (3 retries with exponential backoff from 100 ms) before
/// [`BlobError::Unavailable`]; the store's default of 3 minutes would stall invocations that long
/// when the bucket is down.
pub const S3_RETRY_TIMEOUT: Duration = Duration::from_secs(10);

/// Binaries keyed by path (`overlays/{name}/{version}/{sha256}.wasm`), in a local directory or a
/// bucket.
#[derive(Debug, Clone)]
pub struct BlobStore {
    pub(crate) store: Arc<dyn ObjectStore>,
}

impl BlobStore {
    /// Opens a store by location, taking S3 settings from the `AWS_*` environment
    /// (see [`open_with_options`](Self::open_with_options)).
    pub fn open(location: &str) -> Result<Self, BlobError> {
        Self::open_with_options(location, std::iter::empty::<(&str, &str)>())
    }

    /// Opens a store by location:
    ///
    /// - `s3://bucket` or `s3://bucket/prefix`: an S3-compatible bucket. Endpoint, credentials and
    ///   region come from the standard environment (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`,
    ///   `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ALLOW_HTTP` for a plain-HTTP endpoint, ...), and
    ///   `s3_options` (the same names in lower case, e.g. `("aws_endpoint", "http://127.0.0.1:9000")`)
    ///   override them. Requests are path-style, which S3-compatible servers expect.
    /// - `file:///abs/dir` or a plain path: a local directory, created if missing. Puts write a temporary
    ///   file, fsync it and rename it into place, so a reader never sees half a binary and a
    ///   completed put survives a crash.
    pub fn open_with_options<K, V>(
        location: &str,
        s3_options: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, BlobError>
    where
        K: AsRef<str>,
        V: Into<String>,
    {
        let store: Arc<dyn ObjectStore> = if let Some(bucket) = location.strip_prefix("s3://") {
            s3(bucket, s3_options)?
        } else if let Some(dir) = location.strip_prefix("file://") {
            local(dir)?
        } else if location.contains("://") {
            return Err(BlobError::Config(format!(
                "unsupported blob store `{location}` (expected s3://bucket, file:///dir or a path)"
            )));
        } else {
            local(location)?
        };
        Ok(BlobStore { store })
    }

    /// Stores `bytes` under `key`, replacing what was there, all at once (never partially visible).
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), BlobError> {
        self.store.put(&path(key)?, PutPayload::from(bytes)).await.map_err(|e| classify(key, e))?;
        Ok(())
    }

    /// The bytes under `key`, if they hash to `expected_sha256_hex` (hex, either case);
    /// [`BlobError::Tampered`] otherwise.
    pub async fn get_verified(&self, key: &str, expected_sha256_hex: &str) -> Result<Bytes, BlobError> {
        let object = self.store.get(&path(key)?).await.map_err(|e| classify(key, e))?;
        let bytes = object.bytes().await.map_err(|e| classify(key, e))?;
        let actual = sha256_hex(&bytes);
        if actual.eq_ignore_ascii_case(expected_sha256_hex) {
            Ok(bytes)
        } else {
            Err(BlobError::Tampered { key: key.to_owned(), expected: expected_sha256_hex.to_owned(), actual })
        }
    }

    /// Removes `key`; removing a missing key succeeds, so a retried delete is harmless.
    pub async fn delete(&self, key: &str) -> Result<(), BlobError> {
        match self.store.delete(&path(key)?).await.map_err(|e| classify(key, e)) {
            Ok(()) | Err(BlobError::Missing { .. }) => Ok(()),
            Err(other) => Err(other),
        }
    }

    pub async fn exists(&self, key: &str) -> Result<bool, BlobError> {
        match self.store.head(&path(key)?).await.map_err(|e| classify(key, e)) {
            Ok(_) => Ok(true),
            Err(BlobError::Missing { .. }) => Ok(false),
            Err(other) => Err(other),
        }
    }
}

/// A key as an object path. Refused besides what object paths refuse: the empty key (the store's
/// root) and `#`, which the local store reserves for its staging files.
fn path(key: &str) -> Result<Path, BlobError> {
    let invalid = |reason: String| BlobError::InvalidKey { key: key.to_owned(), reason };
    if key.is_empty() || key.contains('#') {
        return Err(invalid("keys are non-empty and contain no `#`".into()));
    }
    Path::parse(key).map_err(|e| invalid(e.to_string()))
}

fn classify(key: &str, error: object_store::Error) -> BlobError {
    match error {
        object_store::Error::NotFound { .. } => BlobError::Missing { key: key.to_owned() },
        object_store::Error::InvalidPath { source } => {
            BlobError::InvalidKey { key: key.to_owned(), reason: source.to_string() }
        }
        other => BlobError::Unavailable(other.to_string()),
    }
}

fn local(dir: &str) -> Result<Arc<dyn ObjectStore>, BlobError> {
    if dir.is_empty() {
        return Err(BlobError::Config("empty blob store directory".into()));
    }
    std::fs::create_dir_all(dir).map_err(|e| BlobError::Unavailable(format!("cannot create {dir}: {e}")))?;
    let store = LocalFileSystem::new_with_prefix(dir).map_err(|e| BlobError::Config(e.to_string()))?;
    Ok(Arc::new(store.with_fsync(true)))
}

fn s3<K, V>(
    bucket_and_prefix: &str,
    options: impl IntoIterator<Item = (K, V)>,
) -> Result<Arc<dyn ObjectStore>, BlobError>
where
    K: AsRef<str>,
    V: Into<String>,
{
    let (bucket, prefix) = bucket_and_prefix.split_once('/').unwrap_or((bucket_and_prefix, ""));
    if bucket.is_empty() {
        return Err(BlobError::Config("s3:// needs a bucket name".into()));
    }
    let retry =
        RetryConfig { backoff: BackoffConfig::default(), max_retries: 3, retry_timeout: S3_RETRY_TIMEOUT };
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket).with_retry(retry);
    for (key, value) in options {
        let key = key.as_ref();
        let config_key: AmazonS3ConfigKey =
            key.parse().map_err(|_| BlobError::Config(format!("unknown S3 option `{key}`")))?;
        builder = builder.with_config(config_key, value);
    }
    let store = builder.build().map_err(|e| BlobError::Config(e.to_string()))?;
    let prefix = prefix.trim_matches('/');
    Ok(if prefix.is_empty() {
        Arc::new(store)
    } else {
        Arc::new(PrefixStore::new(store, path(prefix).map_err(|e| BlobError::Config(e.to_string()))?))
    })
}
