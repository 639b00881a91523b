//! Listings on S3: a page of current objects (ListObjectsV2, continued after the last key seen)
//! or of versions and delete markers (ListObjectVersions, by key and version markers), and the
//! unfinished uploads under a prefix. Names a raw listing cannot carry are read again
//! url-encoded (`names`). Read only.

use super::errors::classify;
use super::names;
use crate::storage::{ObjectVersion, Page, PageToken, StoreError, Upload};
use aws_sdk_s3::Client;
use aws_sdk_s3::types::EncodingType;

pub(super) async fn page(
    lister: &Client,
    bucket: &str,
    prefix: &str,
    versions: bool,
    token: Option<PageToken>,
) -> Result<Page, StoreError> {
    let what = || format!("listing s3://{bucket}/{prefix}");
    if !versions {
        let start_after = token.map(|t| t.key);
        let v2 = |continuation: Option<String>, encoded: bool| {
            lister
                .list_objects_v2()
                .bucket(bucket)
                .prefix(prefix)
                .set_start_after(start_after.clone())
                .set_continuation_token(continuation)
                .set_encoding_type(encoded.then_some(EncodingType::Url))
                .send()
        };
        let mut continuation = None;
        let mut out = v2(None, false).await.map_err(|e| classify(&what(), e))?;
        // A page may come back empty yet truncated (a server that stops after scanning so
        // many entries): follow its continuation token rather than take it for the end.
        let mut empty_pages = 0;
        while out.contents().is_empty() && out.is_truncated() == Some(true) {
            empty_pages += 1;
            let Some(next) = out
                .next_continuation_token()
                .filter(|_| empty_pages <= 1_000)
            else {
                return Err(StoreError::Other(format!(
                    "{}: the server answered empty pages marked truncated without a way on",
                    what()
                )));
            };
            continuation = Some(next.to_string());
            out = v2(continuation.clone(), false)
                .await
                .map_err(|e| classify(&what(), e))?;
        }
        let raw: Vec<&str> = out.contents().iter().filter_map(|o| o.key()).collect();
        let keys = if raw.iter().any(|k| names::doubtful(k)) {
            let enc = v2(continuation, true)
                .await
                .map_err(|e| classify(&what(), e))?;
            let enc: Vec<&str> = enc.contents().iter().filter_map(|o| o.key()).collect();
            names::resolve(&raw, &enc, |k| k, |_, _| true)?
        } else {
            raw.iter().map(|k| k.to_string()).collect()
        };
        // Continue after the last key seen rather than by continuation token: it stays correct
        // while we delete what earlier pages listed.
        let items: Vec<ObjectVersion> = keys
            .into_iter()
            .map(|key| ObjectVersion {
                key,
                version_id: None,
                delete_marker: false,
            })
            .collect();
        let next = items
            .last()
            .filter(|_| out.is_truncated() == Some(true))
            .map(|l| PageToken {
                key: l.key.clone(),
                version: None,
            });
        return Ok(Page { items, next });
    }
    let (key_marker, version_marker) = match token {
        Some(t) => (Some(t.key), t.version),
        None => (None, None),
    };
    let listing = |encoded: bool| {
        lister
            .list_object_versions()
            .bucket(bucket)
            .prefix(prefix)
            .set_key_marker(key_marker.clone())
            .set_version_id_marker(version_marker.clone())
            .set_encoding_type(encoded.then_some(EncodingType::Url))
            .send()
    };
    let out = listing(false).await.map_err(|e| classify(&what(), e))?;
    let (items, next_key) = names::versions_page(&out, async || {
        listing(true).await.map_err(|e| classify(&what(), e))
    })
    .await?;
    let next = if out.is_truncated() == Some(true) {
        next_key.map(|key| PageToken {
            key,
            version: out.next_version_id_marker().map(String::from),
        })
    } else {
        None
    };
    Ok(Page { items, next })
}

/// Whether anything may be stored under `prefix`: one request for at most one entry, no
/// marker, no continuation. Only an empty page not marked truncated says no. No page boundary
/// falls inside an empty answer, which is where SeaweedFS's listings lose keys (a page ending
/// on a key named like a directory; versions dropped between pages).
pub(super) async fn anything_under(
    lister: &Client,
    bucket: &str,
    prefix: &str,
    versions: bool,
) -> Result<bool, StoreError> {
    let what = || format!("listing s3://{bucket}/{prefix}");
    if versions {
        let out = lister
            .list_object_versions()
            .bucket(bucket)
            .prefix(prefix)
            .max_keys(1)
            .send()
            .await
            .map_err(|e| classify(&what(), e))?;
        Ok(!out.versions().is_empty()
            || !out.delete_markers().is_empty()
            || out.is_truncated() != Some(false))
    } else {
        let out = lister
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .max_keys(1)
            .send()
            .await
            .map_err(|e| classify(&what(), e))?;
        Ok(!out.contents().is_empty()
            || out.key_count().is_some_and(|n| n > 0)
            || out.is_truncated() != Some(false))
    }
}

pub(super) async fn uploads(
    lister: &Client,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<Upload>, StoreError> {
    let mut out = Vec::new();
    let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
    // Bounded: some servers' pagination of this call is broken (SERVICES.md); never loop forever.
    for _ in 0..10_000 {
        let listing = |encoded: bool| {
            lister
                .list_multipart_uploads()
                .bucket(bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.clone())
                .set_upload_id_marker(id_marker.clone())
                .set_encoding_type(encoded.then_some(EncodingType::Url))
                .send()
        };
        let what = || format!("listing multipart uploads under s3://{bucket}/{prefix}");
        let page = listing(false).await.map_err(|e| classify(&what(), e))?;
        let uploads =
            |p: &aws_sdk_s3::operation::list_multipart_uploads::ListMultipartUploadsOutput| {
                p.uploads()
                    .iter()
                    .filter_map(|u| {
                        Some(Upload {
                            key: u.key()?.to_string(),
                            upload_id: u.upload_id()?.to_string(),
                        })
                    })
                    .collect::<Vec<_>>()
            };
        let mut found = uploads(&page);
        let mut next_key = page.next_key_marker().map(String::from);
        if found.iter().any(|u| names::doubtful(&u.key))
            || next_key.as_deref().is_some_and(names::doubtful)
        {
            let enc = listing(true).await.map_err(|e| classify(&what(), e))?;
            let keys = names::resolve(
                &found,
                &uploads(&enc),
                |u| u.key.as_str(),
                |a, b| a.upload_id == b.upload_id,
            )?;
            for (u, k) in found.iter_mut().zip(keys) {
                u.key = k;
            }
            if let (Some(raw), Some(e)) = (&next_key, enc.next_key_marker()) {
                next_key = Some(names::resolve_one(raw, e)?);
            }
        }
        out.extend(found);
        let next = (next_key, page.next_upload_id_marker().map(String::from));
        if page.is_truncated() != Some(true) {
            return Ok(out);
        }
        // A truncated page whose markers do not move on would list the same uploads
        // forever, or (were we to stop) leave the rest unseen: an error, as for objects.
        if next.0.is_none() || (next.0 == key_marker && next.1 == id_marker) {
            return Err(StoreError::Other(format!(
                "listing multipart uploads under s3://{bucket}/{prefix}: the server marked a \
                 page truncated without moving its markers"
            )));
        }
        (key_marker, id_marker) = next;
    }
    Err(StoreError::Other(format!(
        "listing multipart uploads under s3://{bucket}/{prefix}: more than 10,000 pages"
    )))
}
