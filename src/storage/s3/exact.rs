//! The lookup of one exact key (`ObjectStore::exact_versions`) on S3.

use super::errors::classify;
use super::names;
use crate::storage::{ObjectVersion, StoreError};
use aws_sdk_s3::Client;
use aws_sdk_s3::types::EncodingType;

/// Pages of one exact-key lookup before it gives up (a million versions and siblings).
const MAX_EXACT_PAGES: usize = 1_000;

/// A listing with `key` as prefix and `/` as delimiter: the key's own versions, its sibling
/// keys (`custom/10`), and every directory beside it (`custom/1-x/`, `custom/1/`) folded into
/// one common prefix each, so no sibling's versions can fill the pages and push the key out.
/// Every page is read; only `key` itself is kept.
pub(super) async fn exact_versions(
    lister: &Client,
    bucket: &str,
    key: &str,
    versions: bool,
) -> Result<Vec<ObjectVersion>, StoreError> {
    let what = || format!("looking up s3://{bucket}/{key}");
    let mut out = Vec::new();
    if !versions {
        let mut token: Option<String> = None;
        for _ in 0..MAX_EXACT_PAGES {
            let listing = |encoded: bool| {
                lister
                    .list_objects_v2()
                    .bucket(bucket)
                    .prefix(key)
                    .delimiter("/")
                    .set_continuation_token(token.clone())
                    .set_encoding_type(encoded.then_some(EncodingType::Url))
                    .send()
            };
            let page = listing(false).await.map_err(|e| classify(&what(), e))?;
            let mut raw: Vec<String> = page
                .contents()
                .iter()
                .filter_map(|o| o.key().map(String::from))
                .collect();
            if raw.iter().any(|k| names::doubtful(k)) {
                let enc = listing(true).await.map_err(|e| classify(&what(), e))?;
                let enc: Vec<String> = enc
                    .contents()
                    .iter()
                    .filter_map(|o| o.key().map(String::from))
                    .collect();
                raw = names::resolve(&raw, &enc, |k| k.as_str(), |_, _| true)?;
            }
            out.extend(raw.iter().filter(|k| *k == key).map(|_| ObjectVersion {
                key: key.to_string(),
                version_id: None,
                delete_marker: false,
            }));
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => return Ok(out),
            }
        }
        return Err(StoreError::Other(format!(
            "{}: more than {MAX_EXACT_PAGES} pages",
            what()
        )));
    }
    let mut markers: (Option<String>, Option<String>) = (None, None);
    for _ in 0..MAX_EXACT_PAGES {
        let listing = |encoded: bool| {
            lister
                .list_object_versions()
                .bucket(bucket)
                .prefix(key)
                .delimiter("/")
                .set_key_marker(markers.0.clone())
                .set_version_id_marker(markers.1.clone())
                .set_encoding_type(encoded.then_some(EncodingType::Url))
                .send()
        };
        let page = listing(false).await.map_err(|e| classify(&what(), e))?;
        let (items, next_key) = names::versions_page(&page, async || {
            listing(true).await.map_err(|e| classify(&what(), e))
        })
        .await?;
        out.extend(items.into_iter().filter(|o| o.key == key));
        if page.is_truncated() != Some(true) {
            return Ok(out);
        }
        let next = (next_key, page.next_version_id_marker().map(String::from));
        if next.0.is_none() || next == markers {
            return Err(StoreError::Other(format!(
                "{}: the server marked a page truncated without moving its markers",
                what()
            )));
        }
        markers = next;
    }
    Err(StoreError::Other(format!(
        "{}: more than {MAX_EXACT_PAGES} pages",
        what()
    )))
}
