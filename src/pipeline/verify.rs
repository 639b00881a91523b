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
//!
//! One shortcut, argued in ADR 0008: when at least `MIN_SIBLINGS` directories of a batch sit
//! side by side under one parent (`runs/1/`, `runs/2/`, ... under `runs/`), the parent is asked
//! first whether anything at all is stored under it, one request for one entry. An empty page,
//! not truncated, says every one of those directories is empty: the same answer the directory's
//! own listing must give, asked of a prefix that contains it, with no page boundary for a key to
//! be lost at. Anything else (an entry, a truncated page, an error) and each directory is listed
//! on its own as above. Exact objects and uploads are always asked on their own.

use super::listing::uploads_by_subject;
use super::objects::Buckets;
use crate::context::Context;
use crate::domain::Location;
use crate::storage::{ObjectStore, ObjectVersion, StoreError};
use futures::StreamExt;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

/// Directories side by side under one parent before the parent is asked about them as a whole.
const MIN_SIBLINGS: usize = 8;

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
    let started = std::time::Instant::now();
    let uploads = uploads_by_subject(store, locations).await;
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        "verification: unfinished uploads listed"
    );
    for (i, found) in uploads.into_iter().enumerate() {
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
    let started = std::time::Instant::now();
    let empty = empty_by_parent(ctx, buckets, locations).await;
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        directories = empty.len(),
        "verification: parents asked"
    );
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
            let dir_empty = !slashed && empty.contains(&dir_of(loc));
            async move {
                match left_at(store, buckets, loc, dir_empty).await {
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

/// A location's directory as `(bucket, prefix)`, the key of `empty_by_parent`'s answer.
fn dir_of(loc: &Location) -> (String, String) {
    (loc.bucket.clone(), loc.prefix.clone())
}

/// The parent of a directory prefix (`runs/7/` → `runs/`), when the directory's name and every
/// segment of its parent are plain (letters, digits, `-`, `_`, `.`; not `.` or `..`): names a
/// store keeps as written, so the parent's answer covers the directory's keys.
fn parent_of(prefix: &str) -> Option<&str> {
    let inner = prefix.strip_suffix('/')?;
    let cut = inner.rfind('/').map_or(0, |i| i + 1);
    let (parent, name) = inner.split_at(cut);
    let plain = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };
    (plain(name) && parent.split_terminator('/').all(plain)).then_some(parent)
}

/// The directories (`dir_of`) a question to their parent found empty: for each parent with at
/// least `MIN_SIBLINGS` of the batch's directories under it, one request for the first entry
/// under the parent; only an empty page, not truncated, settles them (see the module).
async fn empty_by_parent(
    ctx: &Context,
    buckets: &Buckets,
    locations: &[Vec<Location>],
) -> HashSet<(String, String)> {
    let mut by_parent: HashMap<(String, String), HashSet<String>> = HashMap::new();
    for loc in locations.iter().flatten() {
        if loc.object_only {
            continue;
        }
        if let Some(parent) = parent_of(&loc.prefix) {
            by_parent
                .entry((loc.bucket.clone(), parent.to_string()))
                .or_default()
                .insert(loc.prefix.clone());
        }
    }
    let store = &*ctx.store;
    let asked: Vec<_> = by_parent
        .into_iter()
        .filter(|(_, dirs)| dirs.len() >= MIN_SIBLINGS)
        .collect();
    let answers = futures::stream::iter(asked)
        .map(|((bucket, parent), dirs)| async move {
            let versions = match buckets.versioning(store, &bucket).await {
                Ok(v) => v.keeps_versions(),
                Err(_) => return Vec::new(),
            };
            match store.anything_under(&bucket, &parent, versions).await {
                Ok(false) => {
                    tracing::debug!(
                        bucket,
                        parent,
                        directories = dirs.len(),
                        "verified empty by their parent"
                    );
                    dirs.into_iter().map(|d| (bucket.clone(), d)).collect()
                }
                // Something there (a neighbour, a leftover) or not known: each directory is
                // listed on its own.
                Ok(true) | Err(_) => Vec::new(),
            }
        })
        .buffer_unordered(ctx.settings.list_concurrency)
        .collect::<Vec<_>>()
        .await;
    answers.into_iter().flatten().collect()
}

/// The first thing left at `loc`, asked of the store about this location alone: its exact
/// object (if it names one), then its directory, unless its parent was found empty
/// (`dir_empty`).
async fn left_at(
    store: &dyn ObjectStore,
    buckets: &Buckets,
    loc: &Location,
    dir_empty: bool,
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
    if loc.object_only || dir_empty {
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
