//! Verification after a purge: every location of every subject is asked of the store again, on
//! its own, and anything left (a version, a delete marker, an unfinished upload) fails that
//! subject closed, so its rows are kept.
//!
//! Independence is the point. The purge lists a batch's directories in ranges under a shared
//! prefix, continues from markers it builds, and jumps; verification does none of that, so it
//! cannot share a blind spot of the purge's listing. SeaweedFS has several, each measured here:
//! a page that ends on `runs/1000` beside the directory `runs/1000/` says "not truncated" (or,
//! continued, skips the directory); ListObjectVersions under a short prefix shared by many
//! subjects drops keys at page boundaries; an exact key listed under its own name is pushed out
//! of the pages by a sibling directory's versions (`custom/1` beside `custom/1-x/`). So:
//!
//! - a directory is listed under its own prefix, from its start, with no marker. After a purge it
//!   should be empty, so the first page answers: any entry is a leftover. (An empty page marked
//!   truncated is followed by the server's own continuation.)
//! - an exact object is looked up by `ObjectStore::exact_versions` (on S3 a listing with the key
//!   as prefix and `/` as delimiter, which folds every sibling directory into one entry).
//! - unfinished uploads are listed per bucket and matched to locations exactly.

use super::listing::uploads_by_subject;
use super::objects::Buckets;
use crate::context::Context;
use crate::domain::Location;
use crate::storage::{ObjectStore, ObjectVersion, StoreError};
use futures::StreamExt;
use std::sync::Mutex;

/// Empty pages marked truncated followed before verification gives up on a directory.
const MAX_EMPTY_PAGES: usize = 1_000;

/// Asks the store about every subject's every location again, each on its own: anything left
/// (a version, a marker, an upload) is reported, and that subject fails closed.
pub async fn verify(
    ctx: &Context,
    buckets: &Buckets,
    locations: &[Vec<Location>],
) -> Vec<Result<(), String>> {
    let store = &*ctx.store;
    let results: Mutex<Vec<Result<(), String>>> = Mutex::new(vec![Ok(()); locations.len()]);
    let flag = |i: usize, msg: String| {
        let mut r = results.lock().expect("results");
        if r[i].is_ok() {
            r[i] = Err(msg);
        }
    };
    for (i, found) in uploads_by_subject(store, locations)
        .await
        .into_iter()
        .enumerate()
    {
        match found {
            Ok(uploads) => {
                if let Some((bucket, u)) = uploads.first() {
                    flag(
                        i,
                        format!(
                            "verification found {} unfinished uploads left (first: s3://{bucket}/{})",
                            uploads.len(),
                            u.key
                        ),
                    );
                }
            }
            Err(why) => flag(i, format!("verifying: {why}")),
        }
    }
    // A location with a backslash is also asked where a store that reads `\` as `/` keeps it:
    // anything there may be this subject's objects, which the purge (listing the name as
    // written) could not see, so its rows must stay.
    let slashed: Vec<(usize, Location)> = locations
        .iter()
        .enumerate()
        .flat_map(|(i, locs)| locs.iter().filter_map(move |l| Some((i, l.as_slashes()?))))
        .collect();
    // Collected first: a lazy iterator of closures here makes the future not `Send` for every
    // lifetime (the daemon spawns runs).
    let checks: Vec<(usize, &Location, bool)> = locations
        .iter()
        .enumerate()
        .flat_map(|(i, locs)| locs.iter().map(move |l| (i, l, false)))
        .chain(slashed.iter().map(|(i, l)| (*i, l, true)))
        .collect();
    futures::stream::iter(checks)
        .for_each_concurrent(ctx.settings.list_concurrency, |(i, loc, slashed)| {
            let flag = &flag;
            async move {
                match left_at(store, buckets, loc).await {
                    Ok(None) => {}
                    Ok(Some(o)) if slashed => flag(
                        i,
                        format!(
                            "{}: the store holds s3://{}/{} where a store that reads a \
                             backslash as `/` (SeaweedFS) keeps this subject's objects named \
                             with one; they may be its own, or another's: its rows are kept",
                            crate::storage::NAME_KEPT_DIFFERENTLY,
                            loc.bucket,
                            o.key.escape_debug(),
                        ),
                    ),
                    Ok(Some(o)) => flag(
                        i,
                        format!(
                            "verification found object versions left (first: s3://{}/{})",
                            loc.bucket, o.key
                        ),
                    ),
                    Err(e) => flag(i, format!("verifying {loc}: {e}")),
                }
            }
        })
        .await;
    results.into_inner().expect("results")
}

/// The first thing left at `loc`, asked of the store about this location alone: its exact
/// object (if it names one), then its directory.
async fn left_at(
    store: &dyn ObjectStore,
    buckets: &Buckets,
    loc: &Location,
) -> Result<Option<ObjectVersion>, StoreError> {
    let versions = buckets
        .versioning(store, &loc.bucket)
        .await?
        .keeps_versions();
    if let Some(key) = loc.exact_key() {
        let found = store.exact_versions(&loc.bucket, key, versions).await?;
        if let Some(o) = found.into_iter().next() {
            return Ok(Some(o));
        }
    }
    if loc.object_only {
        return Ok(None);
    }
    let mut token = None;
    for _ in 0..MAX_EMPTY_PAGES {
        let page = store
            .list_page(&loc.bucket, &loc.prefix, versions, token)
            .await?;
        if let Some(o) = page
            .items
            .into_iter()
            .find(|o| o.key.starts_with(&loc.prefix))
        {
            return Ok(Some(o));
        }
        match page.next {
            Some(t) => token = Some(t),
            None => return Ok(None),
        }
    }
    Err(StoreError::Other(format!(
        "listing {loc}: {MAX_EMPTY_PAGES} pages without an entry, each marked truncated"
    )))
}
