//! The S3 backend (aws-sdk-s3), for AWS and S3-compatible servers. The only module (with its
//! `errors` submodule) that imports the AWS SDK.
//!
//! S3 behaviours this code depends on, each easy to get wrong:
//! - DeleteObjects answers 200 with per-key `Errors` inside; every one is read
//!   (<https://docs.aws.amazon.com/AmazonS3/latest/API/API_DeleteObjects.html>).
//! - On a versioned bucket a delete without a version id only adds a delete marker, so versioned
//!   buckets are listed with ListObjectVersions and deleted version by version
//!   (<https://docs.aws.amazon.com/AmazonS3/latest/userguide/DeletingObjectVersions.html>).
//! - The Rust SDK has no paginator for ListObjectVersions: we loop on key and version markers.
//! - Some S3-compatible stores answer NotImplemented to DeleteObjects; the pipeline then sends
//!   one DeleteObject per key (`delete_one`), each after its own fence check.
//! - Destructive requests are sent once, without the SDK's retries: the pipeline retries them,
//!   each attempt fenced.

use super::{
    KeyOutcome, ObjectStore, ObjectVersion, Page, PageToken, StoreError, Upload, Versioning,
};
use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::list_object_versions::ListObjectVersionsOutput;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketVersioningStatus, ObjectLockEnabled, ObjectLockLegalHold, ObjectLockLegalHoldStatus,
    ObjectLockMode, VersioningConfiguration,
};
use std::time::Duration;

mod clock;
mod deletes;
mod errors;
mod exact;
mod listing;
mod names;

use deletes::once;

use errors::classify;

/// How to reach the S3 endpoint. Credentials come from the standard AWS chain (environment,
/// profile, instance role), never from here.
#[derive(Clone, Debug)]
pub struct S3Settings {
    /// `AWS_ENDPOINT_URL`, for S3-compatible servers; `None` for AWS itself.
    pub endpoint: Option<String>,
    pub region: String,
    /// Path-style addressing (`endpoint/bucket/key`), which most S3-compatible servers need.
    pub path_style: bool,
    /// Attempts per request, including the first, for throttling and transient errors.
    pub max_attempts: u32,
    /// Time limit for one attempt of one request.
    pub attempt_timeout: Duration,
}

/// Every version and delete marker of one ListObjectVersions page (a missing version id is the
/// `null` version).
fn entries(out: &ListObjectVersionsOutput) -> Vec<ObjectVersion> {
    let mut items: Vec<ObjectVersion> = out
        .versions()
        .iter()
        .filter_map(|v| {
            Some(ObjectVersion {
                key: v.key()?.to_string(),
                version_id: Some(v.version_id().unwrap_or("null").to_string()),
                delete_marker: false,
            })
        })
        .collect();
    items.extend(out.delete_markers().iter().filter_map(|m| {
        Some(ObjectVersion {
            key: m.key()?.to_string(),
            version_id: Some(m.version_id().unwrap_or("null").to_string()),
            delete_marker: true,
        })
    }));
    items
}

pub struct S3Store {
    client: Client,
    /// Listings only, on a connection pool of their own. An HTTP connection keeps the read
    /// buffer its largest response grew (a 1,000-key listing page: hundreds of KiB); were
    /// listings and deletes to share a pool, every one of the hundreds of delete connections
    /// would in time carry such a buffer, and memory would grow with the backlog (measured:
    /// 36 MiB for 10,000 objects, 74 MiB for 1,000,000). Delete responses stay small, so the
    /// delete connections keep small buffers.
    lister: Client,
    /// Where credentials come from (the AWS chain), asked once by `ready`.
    credentials: Option<aws_sdk_s3::config::SharedCredentialsProvider>,
    /// The store's clock, from the `Date` of its latest answer.
    clock: clock::DateWatch,
}

impl S3Store {
    pub async fn connect(s: &S3Settings) -> Self {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(https_client())
            .region(Region::new(s.region.clone()));
        if let Some(ep) = &s.endpoint {
            loader = loader.endpoint_url(ep);
        }
        let shared = loader.load().await;
        let credentials = shared.credentials_provider();
        let clock = clock::DateWatch::default();
        let conf = aws_sdk_s3::config::Builder::from(&shared)
            .interceptor(clock.clone())
            .force_path_style(s.path_style)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .retry_config(
                aws_config::retry::RetryConfig::standard().with_max_attempts(s.max_attempts),
            )
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .operation_attempt_timeout(s.attempt_timeout)
                    .build(),
            )
            .build();
        // Each client gets an HTTP client of its own, and so its own connection pool: listings
        // do not wait behind deletes for a connection.
        S3Store {
            client: Client::from_conf(conf.to_builder().http_client(https_client()).build()),
            lister: Client::from_conf(conf.to_builder().http_client(https_client()).build()),
            credentials,
            clock,
        }
    }
}

/// An HTTPS client (plain HTTP too, for endpoints that ask for it) on rustls with ring, the
/// crypto provider sqlx uses: aws-lc's generator, the SDK's default, seeds itself from CPU
/// jitter for 30-60 ms at the first TLS session. The SDK is built without a default client, so
/// every S3 client (tests' and benchmarks' too) and the credential chain are given one of these.
pub fn https_client() -> aws_sdk_s3::config::SharedHttpClient {
    use aws_smithy_http_client::tls;
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

#[async_trait]
impl ObjectStore for S3Store {
    fn clock(&self) -> Option<super::StoreClock> {
        self.clock.latest()
    }

    async fn ready(&self) -> Result<(), String> {
        use aws_sdk_s3::config::ProvideCredentials;
        let found = match &self.credentials {
            Some(p) => p.provide_credentials().await.is_ok(),
            None => false,
        };
        if found {
            return Ok(());
        }
        Err(
            "no S3 credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or \
             AWS_PROFILE, or run with a role that provides them); if the spec's buckets are \
             directories on this machine, set LETHE_OBJECT_STORE=file:///DIR, DIR holding one \
             directory per bucket"
                .into(),
        )
    }

    async fn versioning(&self, bucket: &str) -> Result<Versioning, StoreError> {
        let out = self
            .client
            .get_bucket_versioning()
            .bucket(bucket)
            .send()
            .await
            .map_err(|e| classify(&format!("reading versioning of bucket `{bucket}`"), e))?;
        Ok(match out.status() {
            Some(BucketVersioningStatus::Enabled) => Versioning::Enabled,
            Some(BucketVersioningStatus::Suspended) => Versioning::Suspended,
            _ => Versioning::Unversioned,
        })
    }

    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        versions: bool,
        token: Option<PageToken>,
    ) -> Result<Page, StoreError> {
        listing::page(&self.lister, bucket, prefix, versions, token).await
    }

    /// See `listing::anything_under`.
    async fn anything_under(
        &self,
        bucket: &str,
        prefix: &str,
        versions: bool,
    ) -> Result<bool, StoreError> {
        listing::anything_under(&self.lister, bucket, prefix, versions).await
    }

    /// See `exact::exact_versions`.
    async fn exact_versions(
        &self,
        bucket: &str,
        key: &str,
        versions: bool,
    ) -> Result<Vec<ObjectVersion>, StoreError> {
        exact::exact_versions(&self.lister, bucket, key, versions).await
    }

    async fn delete_batch(
        &self,
        bucket: &str,
        items: &[ObjectVersion],
    ) -> Result<Vec<KeyOutcome>, StoreError> {
        self.delete_versions(bucket, items).await
    }

    async fn list_uploads(&self, bucket: &str, prefix: &str) -> Result<Vec<Upload>, StoreError> {
        listing::uploads(&self.lister, bucket, prefix).await
    }

    async fn delete_one(&self, bucket: &str, o: &ObjectVersion) -> Result<KeyOutcome, StoreError> {
        self.delete_version(bucket, o).await
    }

    async fn abort_upload(&self, bucket: &str, upload: &Upload) -> Result<(), StoreError> {
        match self
            .client
            .abort_multipart_upload()
            .bucket(bucket)
            .key(&upload.key)
            .upload_id(&upload.upload_id)
            .customize()
            .config_override(once())
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("NoSuchUpload") => Ok(()),
            Err(e) => Err(classify(
                &format!("aborting upload of s3://{bucket}/{}", upload.key),
                e,
            )),
        }
    }

    async fn put(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
    ) -> Result<Option<String>, StoreError> {
        let out = self
            .client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| classify(&format!("writing s3://{bucket}/{key}"), e))?;
        Ok(out.version_id().map(String::from))
    }

    async fn read(
        &self,
        bucket: &str,
        item: &ObjectVersion,
        each: &mut (dyn for<'b> FnMut(&'b [u8]) -> std::io::Result<()> + Send),
    ) -> Result<u64, StoreError> {
        let what = || format!("reading s3://{bucket}/{}", item.key);
        let mut req = self.client.get_object().bucket(bucket).key(&item.key);
        if let Some(v) = &item.version_id {
            req = req.version_id(v);
        }
        let out = req.send().await.map_err(|e| classify(&what(), e))?;
        let mut body = out.body;
        let mut n = 0u64;
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| StoreError::Other(format!("{}: {e}", what())))?
        {
            each(&chunk).map_err(|e| StoreError::Other(format!("{}: {e}", what())))?;
            n += chunk.len() as u64;
        }
        Ok(n)
    }

    async fn put_file(
        &self,
        bucket: &str,
        key: &str,
        path: &std::path::Path,
    ) -> Result<(), StoreError> {
        let body = ByteStream::from_path(path)
            .await
            .map_err(|e| StoreError::Other(format!("reading {}: {e}", path.display())))?;
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(body)
            .send()
            .await
            .map_err(|e| classify(&format!("writing s3://{bucket}/{key}"), e))?;
        Ok(())
    }

    async fn object_lock_enabled(&self, bucket: &str) -> Result<bool, StoreError> {
        match self
            .client
            .get_object_lock_configuration()
            .bucket(bucket)
            .send()
            .await
        {
            Ok(out) => Ok(out
                .object_lock_configuration()
                .and_then(|c| c.object_lock_enabled())
                .is_some_and(|e| *e == ObjectLockEnabled::Enabled)),
            Err(e) if e.code() == Some("ObjectLockConfigurationNotFoundError") => Ok(false),
            Err(e) => Err(classify(
                &format!("reading the Object Lock configuration of bucket `{bucket}`"),
                e,
            )),
        }
    }

    async fn put_retained(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
        until: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(body))
            .object_lock_mode(ObjectLockMode::Compliance)
            .object_lock_retain_until_date(aws_sdk_s3::primitives::DateTime::from_secs(
                until.timestamp(),
            ))
            .send()
            .await
            .map_err(|e| classify(&format!("writing s3://{bucket}/{key} under retention"), e))?;
        Ok(())
    }

    async fn lock_of(
        &self,
        bucket: &str,
        item: &ObjectVersion,
    ) -> Result<Option<String>, StoreError> {
        if item.delete_marker {
            return Ok(None);
        }
        // The two dedicated calls rather than a HEAD, so lethe's role needs no read access to
        // object content (s3:GetObjectLegalHold and s3:GetObjectRetention only). A 404 on
        // either means "none": no hold or retention configured, or the version is gone.
        let what = |c: &str| format!("reading the {c} of s3://{bucket}/{}", item.key);
        let (hold, retention) = tokio::join!(
            self.client
                .get_object_legal_hold()
                .bucket(bucket)
                .key(&item.key)
                .set_version_id(item.version_id.clone())
                .send(),
            self.client
                .get_object_retention()
                .bucket(bucket)
                .key(&item.key)
                .set_version_id(item.version_id.clone())
                .send()
        );
        match hold {
            Ok(out)
                if out.legal_hold().and_then(|h| h.status())
                    == Some(&ObjectLockLegalHoldStatus::On) =>
            {
                return Ok(Some("legal hold ON".into()));
            }
            Ok(_) => {}
            Err(SdkError::ServiceError(e)) if e.raw().status().as_u16() == 404 => {}
            Err(e) => return Err(classify(&what("legal hold"), e)),
        }
        let retention = match retention {
            Ok(out) => out.retention().cloned(),
            Err(SdkError::ServiceError(e)) if e.raw().status().as_u16() == 404 => None,
            Err(e) => return Err(classify(&what("retention"), e)),
        };
        let until = retention
            .as_ref()
            .and_then(|r| r.retain_until_date())
            .and_then(|d| chrono::DateTime::from_timestamp(d.secs(), d.subsec_nanos()));
        match (retention.as_ref().and_then(|r| r.mode()), until) {
            (Some(mode), Some(until)) if until > chrono::Utc::now() => Ok(Some(format!(
                "{} retention until {}",
                mode.as_str(),
                until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ))),
            _ => Ok(None),
        }
    }

    async fn set_legal_hold(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        on: bool,
    ) -> Result<(), StoreError> {
        let status = if on {
            ObjectLockLegalHoldStatus::On
        } else {
            ObjectLockLegalHoldStatus::Off
        };
        self.client
            .put_object_legal_hold()
            .bucket(bucket)
            .key(key)
            .set_version_id(version_id.map(String::from))
            .legal_hold(ObjectLockLegalHold::builder().status(status).build())
            .send()
            .await
            .map_err(|e| classify(&format!("setting a legal hold on s3://{bucket}/{key}"), e))?;
        Ok(())
    }

    async fn create_locked_bucket(&self, bucket: &str) -> Result<(), StoreError> {
        self.client
            .create_bucket()
            .bucket(bucket)
            .object_lock_enabled_for_bucket(true)
            .send()
            .await
            .map_err(|e| classify(&format!("creating bucket `{bucket}` with Object Lock"), e))?;
        Ok(())
    }

    async fn create_bucket(&self, bucket: &str, versioning: Versioning) -> Result<(), StoreError> {
        match self.client.create_bucket().bucket(bucket).send().await {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.code(),
                    Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists")
                ) => {}
            Err(e) => return Err(classify(&format!("creating bucket `{bucket}`"), e)),
        }
        let status = match versioning {
            Versioning::Unversioned => return Ok(()),
            Versioning::Enabled => BucketVersioningStatus::Enabled,
            Versioning::Suspended => BucketVersioningStatus::Suspended,
        };
        self.client
            .put_bucket_versioning()
            .bucket(bucket)
            .versioning_configuration(VersioningConfiguration::builder().status(status).build())
            .send()
            .await
            .map_err(|e| classify(&format!("setting versioning on bucket `{bucket}`"), e))?;
        Ok(())
    }

    async fn start_upload(&self, bucket: &str, key: &str) -> Result<Upload, StoreError> {
        let out = self
            .client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| classify(&format!("starting an upload to s3://{bucket}/{key}"), e))?;
        Ok(Upload {
            key: key.into(),
            upload_id: out.upload_id().unwrap_or_default().to_string(),
        })
    }
}
