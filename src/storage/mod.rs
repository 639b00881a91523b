//! Object storage behind one small trait. Backends: `s3` (any S3-compatible endpoint), `local`
//! (a directory on a disk or a network mount) and `memory` (unit tests only). Every method says
//! what "not found" and partial failure mean; the behaviour suite in `tests/it/storage.rs` holds
//! every backend to the same answers.

pub mod local;
pub mod memory;
pub mod s3;

use async_trait::async_trait;

/// One object version, or a delete marker, or (on an unversioned bucket) the object itself.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectVersion {
    pub key: String,
    /// `None` on an unversioned bucket; `Some("null")` for the null version of a versioned one.
    pub version_id: Option<String>,
    pub delete_marker: bool,
}

/// A page of a listing and where the next one starts.
#[derive(Debug, Default)]
pub struct Page {
    pub items: Vec<ObjectVersion>,
    pub next: Option<PageToken>,
}

/// Opaque continuation: a token (unversioned) or key and version-id markers (versioned).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageToken {
    pub key: String,
    pub version: Option<String>,
}

/// An unfinished multipart upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upload {
    pub key: String,
    pub upload_id: String,
}

/// A bucket's versioning state, as the store reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Versioning {
    /// Never enabled: a plain delete removes the object.
    Unversioned,
    /// Every delete must name a version, or it only adds a delete marker.
    Enabled,
    /// Suspended: older versions remain and must be deleted by version id.
    Suspended,
}

impl Versioning {
    pub fn keeps_versions(self) -> bool {
        !matches!(self, Versioning::Unversioned)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Versioning::Unversioned => "unversioned",
            Versioning::Enabled => "versioned",
            Versioning::Suspended => "versioning-suspended",
        }
    }
}

/// Per-key result of a batch delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyOutcome {
    /// Gone, including "was already gone".
    Deleted,
    /// Refused by the store for this key (S3 Object Lock: legal hold or retention). A hold.
    Denied(String),
    /// Failed for another reason; safe to retry.
    Failed(String),
}

/// Errors of a whole request, where callers branch on the kind.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The bucket does not exist.
    #[error("bucket not found: {0}")]
    NotFound(String),
    /// Credentials were refused: a configuration problem, never a hold.
    #[error("the object store refused our credentials: {0}")]
    Auth(String),
    /// Throttling, timeouts, connection trouble: worth retrying later.
    #[error("transient object store error: {0}")]
    Transient(String),
    /// The store does not take batch deletes (S3 `NotImplemented` to DeleteObjects): delete one
    /// key a request with `delete_one`.
    #[error("the object store does not take batch deletes: {0}")]
    BatchUnsupported(String),
    /// A key the store lists or keeps under another name than the one it was written with
    /// (a character XML cannot carry, a backslash stored as `/`): no delete may be sent by it.
    #[error("{kept}: {0}", kept = NAME_KEPT_DIFFERENTLY)]
    Unnameable(String),
    #[error("object store error: {0}")]
    Other(String),
}

/// The words every failure for a name the store keeps differently carries: the pipeline records
/// such a subject with error class `store_name`, which `plan`, `report --summary` and the
/// daemon's metrics show apart from other failures.
pub const NAME_KEPT_DIFFERENTLY: &str = "a name the object store keeps differently";

/// A store's own clock as one of its answers told it (HTTP `Date`), with the host's clock when
/// that answer arrived: `store + (host now - host)` estimates the store's clock now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreClock {
    pub store: chrono::DateTime<chrono::Utc>,
    pub host: chrono::DateTime<chrono::Utc>,
}

impl StoreClock {
    /// The store's clock now, by the host's clock since the reading.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.store + (chrono::Utc::now() - self.host)
    }
}

/// The most versions one `delete_batch` call may take (the S3 DeleteObjects limit).
pub const MAX_BATCH: usize = 1000;

#[async_trait]
pub trait ObjectStore: Send + Sync {
    /// Whether the store can be asked anything at all: for S3, that credentials were found.
    /// The error is one line naming the settings to set.
    async fn ready(&self) -> Result<(), String> {
        Ok(())
    }

    /// The store's clock as its latest answer told it; `None` for a store without a clock of
    /// its own (a local directory is the host's), or before it has answered anything.
    fn clock(&self) -> Option<StoreClock> {
        None
    }

    /// The bucket's versioning state. `NotFound` when the bucket does not exist.
    async fn versioning(&self, bucket: &str) -> Result<Versioning, StoreError>;

    /// One page of everything under `prefix`: with `versions`, every version and delete marker;
    /// without, the current objects. An absent prefix is an empty page, not an error.
    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        versions: bool,
        token: Option<PageToken>,
    ) -> Result<Page, StoreError>;

    /// Whether anything at all may be stored under `prefix` (with `versions`, any version or
    /// delete marker): asked with one request for the first page, no marker. Only a page that
    /// is empty and not truncated answers `false`; anything listed, or an empty page marked
    /// truncated, answers `true` (not known to be empty).
    async fn anything_under(
        &self,
        bucket: &str,
        prefix: &str,
        versions: bool,
    ) -> Result<bool, StoreError> {
        let page = self.list_page(bucket, prefix, versions, None).await?;
        Ok(!page.items.is_empty() || page.next.is_some())
    }

    /// Every version and delete marker of exactly `key` (with `versions`; else the object
    /// itself, if it exists), asked of the store about that key alone: never a page of a wider
    /// listing, never continued from a constructed marker. An absent key is an empty list.
    ///
    /// The default pages through everything under `key` and keeps `key` itself, which is right
    /// for stores whose listings are exact (memory, local). S3 overrides it with a delimited
    /// listing: SeaweedFS drops `custom/1` from a listing under `custom/1` whose pages fill up
    /// with a sibling directory's versions (`custom/1-x/`), and from pages that end where a key
    /// and a directory share a name.
    async fn exact_versions(
        &self,
        bucket: &str,
        key: &str,
        versions: bool,
    ) -> Result<Vec<ObjectVersion>, StoreError> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self.list_page(bucket, key, versions, token).await?;
            out.extend(page.items.into_iter().filter(|o| o.key == key));
            match page.next {
                Some(t) => token = Some(t),
                None => return Ok(out),
            }
        }
    }

    /// Deletes up to `MAX_BATCH` entries exactly as listed (by version id when one is given).
    /// Answers one outcome per entry, in order. A missing key or version is `Deleted`. A
    /// request-level failure is an `Err` and means nothing is known about any entry;
    /// `BatchUnsupported` means the store takes one key a request (`delete_one`). One request,
    /// never retried inside: the caller fences and retries each attempt.
    async fn delete_batch(
        &self,
        bucket: &str,
        items: &[ObjectVersion],
    ) -> Result<Vec<KeyOutcome>, StoreError>;

    /// Deletes one entry exactly as listed, in one request, never retried inside: for stores
    /// without batch deletes. A missing key or version is `Deleted`.
    async fn delete_one(
        &self,
        bucket: &str,
        item: &ObjectVersion,
    ) -> Result<KeyOutcome, StoreError> {
        let mut out = self
            .delete_batch(bucket, std::slice::from_ref(item))
            .await?;
        Ok(out
            .pop()
            .unwrap_or(KeyOutcome::Failed("no answer for the key".into())))
    }

    /// Unfinished multipart uploads under `prefix`.
    async fn list_uploads(&self, bucket: &str, prefix: &str) -> Result<Vec<Upload>, StoreError>;

    /// Aborts an upload; one already completed or aborted is success.
    async fn abort_upload(&self, bucket: &str, upload: &Upload) -> Result<(), StoreError>;

    /// Writes an object, answering its version id when the bucket keeps versions. For seeding
    /// test worlds, the demo and benchmarks; the purge path never writes.
    async fn put(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
    ) -> Result<Option<String>, StoreError>;

    /// Reads one object (the version named, else the current one) and hands its content to
    /// `each` a chunk at a time, so memory stays flat however large it is. Answers its size.
    /// For exports; the purge path never reads content.
    async fn read(
        &self,
        bucket: &str,
        item: &ObjectVersion,
        each: &mut (dyn for<'b> FnMut(&'b [u8]) -> std::io::Result<()> + Send),
    ) -> Result<u64, StoreError> {
        let _ = (item, each);
        Err(StoreError::Other(format!(
            "this object store cannot read contents (bucket `{bucket}`)"
        )))
    }

    /// Writes a local file as an object, streamed. For exports to a bucket.
    async fn put_file(
        &self,
        bucket: &str,
        key: &str,
        path: &std::path::Path,
    ) -> Result<(), StoreError> {
        let body = std::fs::read(path)
            .map_err(|e| StoreError::Other(format!("reading {}: {e}", path.display())))?;
        self.put(bucket, key, body).await.map(|_| ())
    }

    /// Creates a bucket (if missing) and sets its versioning. For tests, demo and benchmarks.
    async fn create_bucket(&self, bucket: &str, versioning: Versioning) -> Result<(), StoreError>;

    /// Whether the bucket has S3 Object Lock enabled, so new versions can be retained.
    async fn object_lock_enabled(&self, bucket: &str) -> Result<bool, StoreError>;

    /// Writes an object retained in compliance mode until `until` (nobody can delete that
    /// version before then, not even with a governance bypass). The bucket must have Object
    /// Lock. For audit anchors.
    async fn put_retained(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
        until: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), StoreError>;

    /// The Object Lock protection on one version now, as evidence ("legal hold ON", or a
    /// retention mode and the time it runs until), or `None` when nothing stops its deletion.
    /// A delete marker is never protected. A version already gone is `None`.
    async fn lock_of(
        &self,
        bucket: &str,
        item: &ObjectVersion,
    ) -> Result<Option<String>, StoreError>;

    /// Places (`on`) or removes an Object Lock legal hold on one version. For tests and the
    /// demo; the purge path never changes a lock.
    async fn set_legal_hold(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        on: bool,
    ) -> Result<(), StoreError>;

    /// Creates a bucket with Object Lock enabled (versioned). For tests and the demo.
    async fn create_locked_bucket(&self, bucket: &str) -> Result<(), StoreError>;

    /// Starts a multipart upload and leaves it unfinished. For tests.
    async fn start_upload(&self, bucket: &str, key: &str) -> Result<Upload, StoreError>;
}
