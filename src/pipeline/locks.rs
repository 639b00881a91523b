//! Storage-level holds: S3 Object Lock (a legal hold, or a retention not yet expired) on any
//! version of a subject keeps the whole subject, asked before any of its objects is deleted.

use super::listing::Walker;
use super::objects::Buckets;
use crate::context::Context;
use crate::domain::Location;
use crate::storage::{ObjectVersion, StoreError};

/// Object Lock protection on each subject's objects, asked before anything of theirs is
/// deleted, so a storage-level legal hold or retention keeps the whole subject (every object
/// and every row), not just the locked version. On a bucket with Object Lock enabled every
/// version under the subject's locations is asked (one HEAD each, `list_concurrency` at a
/// time); any other bucket costs one cached lookup. `Ok(Some(evidence))` means held. A lock
/// placed after this check is still refused by the store at delete time, and that subject is
/// held then too (`Tally::denied`).
pub async fn storage_holds(
    ctx: &Context,
    buckets: &Buckets,
    locations: &[Vec<Location>],
) -> Vec<Result<Option<String>, String>> {
    let mut out = Vec::with_capacity(locations.len());
    for chunk in locations.chunks(ctx.settings.list_concurrency.max(1)) {
        let answers = chunk.iter().map(|locs| storage_hold_of(ctx, buckets, locs));
        out.extend(futures::future::join_all(answers).await);
    }
    out
}

/// The first Object Lock protection found on one subject's objects, if any.
async fn storage_hold_of(
    ctx: &Context,
    buckets: &Buckets,
    locs: &[Location],
) -> Result<Option<String>, String> {
    let store = &*ctx.store;
    for loc in locs {
        let err = |e: StoreError| format!("{loc}: {e}");
        if !buckets.object_lock(store, &loc.bucket).await.map_err(err)? {
            continue;
        }
        let mut walker = Walker::new(store, loc, true);
        while let Some(page) = walker.next_page().await.map_err(err)? {
            let versions: Vec<&ObjectVersion> = page.iter().filter(|v| !v.delete_marker).collect();
            for chunk in versions.chunks(ctx.settings.list_concurrency.max(1)) {
                let asks = chunk.iter().map(|v| store.lock_of(&loc.bucket, v));
                let answers = futures::future::join_all(asks).await;
                for (v, answer) in chunk.iter().zip(answers) {
                    if let Some(why) = answer.map_err(err)? {
                        let version = v.version_id.as_deref().unwrap_or("-");
                        return Ok(Some(format!(
                            "s3://{}/{} version {version}: {why}",
                            loc.bucket, v.key
                        )));
                    }
                }
            }
        }
    }
    Ok(None)
}
