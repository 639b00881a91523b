//! Deletes on S3: DeleteObjects with every per-key error read, DeleteObject for stores without
//! batch deletes, each sent once (the pipeline fences and retries every attempt).

use super::errors::{classify, per_key};
use super::{S3Store, names};
use crate::storage::{KeyOutcome, ObjectVersion, StoreError};
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use std::collections::HashMap;

/// One attempt, no retry inside the SDK: a destructive request is re-sent only by the pipeline,
/// after a fresh check of its lease and holds (a retry of up to four more attempts and their
/// backoff, minutes in all, would otherwise reach the store after a hold placed meanwhile).
pub(super) fn once() -> aws_sdk_s3::config::Builder {
    aws_sdk_s3::config::Builder::default().retry_config(aws_config::retry::RetryConfig::disabled())
}

impl S3Store {
    pub(super) async fn delete_versions(
        &self,
        bucket: &str,
        items: &[ObjectVersion],
    ) -> Result<Vec<KeyOutcome>, StoreError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(o) = items.iter().find(|o| !names::xml_safe(&o.key)) {
            // The pipeline then sends one DeleteObject per key, the key in the URL.
            return Err(StoreError::BatchUnsupported(format!(
                "`{}` holds a character a DeleteObjects body cannot carry",
                o.key.escape_debug()
            )));
        }
        let ids = items
            .iter()
            .map(|o| {
                ObjectIdentifier::builder()
                    .key(&o.key)
                    .set_version_id(o.version_id.clone())
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::Other(format!("building a delete request: {e}")))?;
        let delete = Delete::builder()
            .set_objects(Some(ids))
            .quiet(true)
            .build()
            .map_err(|e| StoreError::Other(format!("building a delete request: {e}")))?;
        let res = self
            .client
            .delete_objects()
            .bucket(bucket)
            .delete(delete)
            .customize()
            .config_override(once())
            .send()
            .await;
        let out = match res {
            Ok(out) => out,
            Err(e) if e.code() == Some("NotImplemented") => {
                return Err(StoreError::BatchUnsupported(format!(
                    "bucket `{bucket}` answered NotImplemented to DeleteObjects"
                )));
            }
            Err(e) => {
                return Err(classify(
                    &format!("deleting {} objects from bucket `{bucket}`", items.len()),
                    e,
                ));
            }
        };
        let errors: HashMap<(String, Option<String>), KeyOutcome> = out
            .errors()
            .iter()
            .map(|e| {
                let key = e.key().unwrap_or_default().to_string();
                let version = e.version_id().map(String::from);
                (
                    (key, version),
                    per_key(e.code().unwrap_or("Unknown"), e.message().unwrap_or("")),
                )
            })
            .collect();
        Ok(items
            .iter()
            .map(|o| {
                errors
                    .get(&(o.key.clone(), o.version_id.clone()))
                    .or_else(|| errors.get(&(o.key.clone(), None)))
                    .cloned()
                    .unwrap_or(KeyOutcome::Deleted)
            })
            .collect())
    }

    pub(super) async fn delete_version(
        &self,
        bucket: &str,
        o: &ObjectVersion,
    ) -> Result<KeyOutcome, StoreError> {
        let r = self
            .client
            .delete_object()
            .bucket(bucket)
            .key(&o.key)
            .set_version_id(o.version_id.clone())
            .customize()
            .config_override(once())
            .send()
            .await;
        Ok(match r {
            Ok(_) => KeyOutcome::Deleted,
            Err(e) => match e.code() {
                Some(code) => per_key(code, e.message().unwrap_or("")),
                None => {
                    return Err(classify(&format!("deleting s3://{bucket}/{}", o.key), e));
                }
            },
        })
    }
}
