//! Purging and verifying objects for a batch of subjects.
//!
//! Listings are streamed: each page goes into a bounded channel, a batcher packs versions from
//! many subjects into DeleteObjects requests of up to 1,000 keys per bucket, and a bounded pool
//! sends them concurrently. Memory stays bounded by the channel and the requests in flight, not
//! by the number of objects. Per-key outcomes are tallied per subject; keys that failed are
//! retried a bounded number of times; a key refused by Object Lock makes its subject held.

use crate::context::Context;
use crate::domain::Location;
use crate::storage::{KeyOutcome, MAX_BATCH, ObjectStore, ObjectVersion, StoreError, Versioning};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};

/// What happened to one subject's objects.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Tally {
    /// Object versions (or objects, on unversioned buckets) deleted.
    pub versions: u64,
    /// Delete markers removed.
    pub delete_markers: u64,
    /// Unfinished multipart uploads aborted.
    pub uploads_aborted: u64,
    /// How each bucket was purged: `unversioned`, `versioned`, `versioning-suspended`.
    pub routes: BTreeSet<String>,
    /// Evidence of a storage-level hold (Object Lock), if any key was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub denied: Option<String>,
    /// The first failure, if any; such a subject is not verified and keeps its rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

/// Bucket versioning, read once per bucket per run.
#[derive(Default, Clone)]
pub struct Buckets(Arc<Mutex<HashMap<String, Versioning>>>);

impl Buckets {
    pub async fn versioning(
        &self,
        store: &dyn ObjectStore,
        bucket: &str,
    ) -> Result<Versioning, StoreError> {
        if let Some(v) = self.0.lock().expect("bucket cache").get(bucket) {
            return Ok(*v);
        }
        let v = store.versioning(bucket).await?;
        self.0
            .lock()
            .expect("bucket cache")
            .insert(bucket.to_string(), v);
        Ok(v)
    }
}

type Tagged = (usize, String, ObjectVersion);

/// Pages through everything under one location. A directory prefix yields only keys under it;
/// the exact key (if any) only itself: it sorts before every longer key it prefixes, so its
/// versions come first and the walk stops at the first other key.
pub struct Walker<'a> {
    store: &'a dyn ObjectStore,
    loc: &'a Location,
    versions: bool,
    exact_phase: bool,
    token: Option<crate::storage::PageToken>,
    done: bool,
}

impl<'a> Walker<'a> {
    pub fn new(store: &'a dyn ObjectStore, loc: &'a Location, versions: bool) -> Self {
        Walker {
            store,
            loc,
            versions,
            exact_phase: false,
            token: None,
            done: false,
        }
    }

    /// The next non-empty page, or `None` at the end.
    pub async fn next_page(&mut self) -> Result<Option<Vec<ObjectVersion>>, StoreError> {
        while !self.done {
            let prefix = if self.exact_phase {
                self.loc.exact_key().unwrap_or_default()
            } else {
                &self.loc.prefix
            };
            let page = self
                .store
                .list_page(&self.loc.bucket, prefix, self.versions, self.token.take())
                .await?;
            let mut items = page.items;
            let mut finished_phase = page.next.is_none();
            if self.exact_phase {
                let before = items.len();
                items.retain(|i| Some(i.key.as_str()) == self.loc.exact_key());
                finished_phase |= items.len() < before;
            } else {
                items.retain(|i| i.key.starts_with(&self.loc.prefix));
            }
            self.token = page.next;
            if finished_phase {
                self.token = None;
                if !self.exact_phase && self.loc.exact_key().is_some() {
                    self.exact_phase = true;
                } else {
                    self.done = true;
                }
            }
            if !items.is_empty() {
                return Ok(Some(items));
            }
        }
        Ok(None)
    }
}

/// Deletes every object version, delete marker and unfinished upload at `locations[i]` for each
/// subject `i`. Returns one tally per subject.
pub async fn purge(ctx: &Context, buckets: &Buckets, locations: &[Vec<Location>]) -> Vec<Tally> {
    let tallies = Arc::new(Mutex::new(vec![Tally::default(); locations.len()]));
    let (tx, mut rx) = mpsc::channel::<Tagged>(4 * MAX_BATCH);
    let store = ctx.store.clone();
    let settings = ctx.settings.clone();

    let listers = {
        let tallies = tallies.clone();
        let store = store.clone();
        let buckets = buckets.clone();
        let tasks: Vec<(usize, Location)> = locations
            .iter()
            .enumerate()
            .flat_map(|(i, ls)| ls.iter().map(move |l| (i, l.clone())))
            .collect();
        async move {
            use futures::StreamExt;
            futures::stream::iter(tasks)
                .for_each_concurrent(settings.list_concurrency, |(i, loc)| {
                    let tx = tx.clone();
                    let store = store.clone();
                    let tallies = tallies.clone();
                    let buckets = buckets.clone();
                    async move {
                        let res = list_into(&*store, &buckets, i, &loc, &tx, &tallies).await;
                        if let Err(e) = res {
                            fail(&tallies, i, format!("{loc}: {e}"));
                        }
                    }
                })
                .await;
        }
    };

    let deleter = {
        let tallies = tallies.clone();
        let store = store.clone();
        async move {
            let permits = Arc::new(Semaphore::new(ctx.settings.delete_concurrency));
            let mut pending: HashMap<String, Vec<(usize, ObjectVersion)>> = HashMap::new();
            let mut inflight = tokio::task::JoinSet::new();
            let retries = ctx.settings.key_retries;
            let send = |bucket: String,
                        batch: Vec<(usize, ObjectVersion)>,
                        inflight: &mut tokio::task::JoinSet<()>| {
                let store = store.clone();
                let tallies = tallies.clone();
                let permits = permits.clone();
                inflight.spawn(async move {
                    let _permit = permits
                        .acquire_owned()
                        .await
                        .expect("semaphore is never closed");
                    delete_with_retries(&*store, &bucket, batch, retries, &tallies).await;
                });
            };
            loop {
                // Flush partial batches when the listings pause, so deletion overlaps listing.
                match tokio::time::timeout(Duration::from_millis(25), rx.recv()).await {
                    Ok(Some((i, bucket, v))) => {
                        let b = pending.entry(bucket.clone()).or_default();
                        b.push((i, v));
                        if b.len() >= MAX_BATCH {
                            let batch = std::mem::take(b);
                            send(bucket, batch, &mut inflight);
                        }
                    }
                    Ok(None) => break,
                    Err(_) => {
                        for (bucket, b) in pending.iter_mut().filter(|(_, b)| !b.is_empty()) {
                            send(bucket.clone(), std::mem::take(b), &mut inflight);
                        }
                    }
                }
                while inflight.try_join_next().is_some() {}
            }
            for (bucket, b) in pending.into_iter().filter(|(_, b)| !b.is_empty()) {
                send(bucket, b, &mut inflight);
            }
            while inflight.join_next().await.is_some() {}
        }
    };
    tokio::join!(listers, deleter);

    // Unfinished multipart uploads: invisible to listings, still stored.
    match uploads_by_subject(&*store, locations).await {
        Ok(found) => {
            for (i, uploads) in found.into_iter().enumerate() {
                for (bucket, u) in uploads {
                    match store.abort_upload(&bucket, &u).await {
                        Ok(()) => tallies.lock().expect("tallies")[i].uploads_aborted += 1,
                        Err(e) => fail(&tallies, i, format!("s3://{bucket}/{}: {e}", u.key)),
                    }
                }
            }
        }
        Err((bucket, e)) => {
            for (i, locs) in locations.iter().enumerate() {
                if locs.iter().any(|l| l.bucket == bucket) {
                    fail(
                        &tallies,
                        i,
                        format!("listing unfinished uploads in bucket `{bucket}`: {e}"),
                    );
                }
            }
        }
    }
    tallies.lock().expect("tallies").clone()
}

async fn list_into(
    store: &dyn ObjectStore,
    buckets: &Buckets,
    i: usize,
    loc: &Location,
    tx: &mpsc::Sender<Tagged>,
    tallies: &Mutex<Vec<Tally>>,
) -> Result<(), StoreError> {
    let v = buckets.versioning(store, &loc.bucket).await?;
    tallies.lock().expect("tallies")[i]
        .routes
        .insert(v.as_str().to_string());
    let mut walker = Walker::new(store, loc, v.keeps_versions());
    while let Some(page) = walker.next_page().await? {
        for item in page {
            if tx.send((i, loc.bucket.clone(), item)).await.is_err() {
                return Ok(());
            }
        }
    }
    Ok(())
}

async fn delete_with_retries(
    store: &dyn ObjectStore,
    bucket: &str,
    mut batch: Vec<(usize, ObjectVersion)>,
    retries: u32,
    tallies: &Mutex<Vec<Tally>>,
) {
    for attempt in 1..=retries {
        let items: Vec<ObjectVersion> = batch.iter().map(|(_, v)| v.clone()).collect();
        let outcomes = match store.delete_batch(bucket, &items).await {
            Ok(o) => o,
            Err(e) if attempt < retries && matches!(e, StoreError::Transient(_)) => {
                tokio::time::sleep(backoff(attempt)).await;
                continue;
            }
            Err(e) => {
                for (i, v) in &batch {
                    fail(tallies, *i, format!("s3://{bucket}/{}: {e}", v.key));
                }
                return;
            }
        };
        let mut again = Vec::new();
        {
            let mut t = tallies.lock().expect("tallies");
            for ((i, v), outcome) in batch.into_iter().zip(outcomes) {
                match outcome {
                    KeyOutcome::Deleted if v.delete_marker => t[i].delete_markers += 1,
                    KeyOutcome::Deleted => t[i].versions += 1,
                    KeyOutcome::Denied(why) => {
                        let version = v.version_id.as_deref().unwrap_or("-");
                        t[i].denied.get_or_insert(format!(
                            "s3://{bucket}/{} version {version}: {why}",
                            v.key
                        ));
                    }
                    KeyOutcome::Failed(why) if attempt == retries => {
                        t[i].failed.get_or_insert(format!(
                            "s3://{bucket}/{}: {why} (after {retries} attempts)",
                            v.key
                        ));
                    }
                    KeyOutcome::Failed(_) => again.push((i, v)),
                }
            }
        }
        if again.is_empty() {
            return;
        }
        batch = again;
        tokio::time::sleep(backoff(attempt)).await;
    }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64 << attempt.min(6))
}

fn fail(tallies: &Mutex<Vec<Tally>>, i: usize, msg: String) {
    tallies.lock().expect("tallies")[i]
        .failed
        .get_or_insert(msg);
}

/// Unfinished uploads at each subject's locations, found with one listing per bucket under the
/// longest prefix the batch's locations share (uploads are rare, so one call usually answers
/// for a whole batch), then matched to locations here exactly as objects are: under the
/// directory prefix, or equal to the exact key.
async fn uploads_by_subject(
    store: &dyn ObjectStore,
    locations: &[Vec<Location>],
) -> Result<Vec<Vec<(String, crate::storage::Upload)>>, (String, StoreError)> {
    let mut out = vec![Vec::new(); locations.len()];
    let mut buckets: Vec<&str> = locations
        .iter()
        .flatten()
        .map(|l| l.bucket.as_str())
        .collect();
    buckets.sort_unstable();
    buckets.dedup();
    for bucket in buckets {
        let locs: Vec<(usize, &Location)> = locations
            .iter()
            .enumerate()
            .flat_map(|(i, ls)| {
                ls.iter()
                    .filter(|l| l.bucket == bucket)
                    .map(move |l| (i, l))
            })
            .collect();
        let common = locs
            .iter()
            .map(|(_, l)| l.exact_key().unwrap_or(&l.prefix))
            .fold(None, |acc: Option<&str>, p| {
                Some(match acc {
                    None => p,
                    Some(a) => {
                        let n = a.bytes().zip(p.bytes()).take_while(|(x, y)| x == y).count();
                        &a[..n]
                    }
                })
            });
        let uploads = store
            .list_uploads(bucket, common.unwrap_or(""))
            .await
            .map_err(|e| (bucket.to_string(), e))?;
        for u in uploads {
            for (i, l) in &locs {
                if u.key.starts_with(&l.prefix) || l.exact_key() == Some(u.key.as_str()) {
                    out[*i].push((bucket.to_string(), u.clone()));
                }
            }
        }
    }
    Ok(out)
}

async fn uploads_at(
    store: &dyn ObjectStore,
    loc: &Location,
) -> Result<Vec<crate::storage::Upload>, StoreError> {
    let mut out: Vec<_> = store
        .list_uploads(&loc.bucket, &loc.prefix)
        .await?
        .into_iter()
        .filter(|u| u.key.starts_with(&loc.prefix))
        .collect();
    if let Some(exact) = loc.exact_key() {
        out.extend(
            store
                .list_uploads(&loc.bucket, exact)
                .await?
                .into_iter()
                .filter(|u| u.key == exact),
        );
    }
    Ok(out)
}

/// Lists every subject's locations again (subjects concurrently, uploads once per bucket):
/// anything left (a version, a marker, an upload) is reported, and that subject fails closed.
pub async fn verify(
    ctx: &Context,
    buckets: &Buckets,
    locations: &[Vec<Location>],
) -> Vec<Result<(), String>> {
    use futures::StreamExt;
    let store = &*ctx.store;
    let uploads = match uploads_by_subject(store, locations).await {
        Ok(u) => u,
        Err((bucket, e)) => {
            let msg = format!("verifying: listing unfinished uploads in bucket `{bucket}`: {e}");
            return locations.iter().map(|_| Err(msg.clone())).collect();
        }
    };
    futures::stream::iter(locations.iter().zip(uploads))
        .map(|(locs, uploads)| async move {
            if let Some((bucket, u)) = uploads.first() {
                return Err(format!(
                    "verification found {} unfinished uploads left (first: s3://{bucket}/{})",
                    uploads.len(),
                    u.key
                ));
            }
            for loc in locs {
                let v = buckets
                    .versioning(store, &loc.bucket)
                    .await
                    .map_err(|e| format!("{loc}: {e}"))?;
                let mut walker = Walker::new(store, loc, v.keeps_versions());
                let first_page = walker
                    .next_page()
                    .await
                    .map_err(|e| format!("verifying {loc}: {e}"))?
                    .unwrap_or_default();
                if let Some(first) = first_page.first() {
                    return Err(format!(
                        "verification found {} or more object versions left at {loc} (first: {})",
                        first_page.len(),
                        first.key
                    ));
                }
            }
            Ok(())
        })
        .buffered(ctx.settings.list_concurrency)
        .collect()
        .await
}

/// Counts what `purge` would delete, for `--dry-run`: (versions, delete markers, uploads).
pub async fn count(
    ctx: &Context,
    buckets: &Buckets,
    locations: &[Location],
) -> Result<(u64, u64, u64), String> {
    let store = &*ctx.store;
    let (mut versions, mut markers, mut uploads) = (0, 0, 0);
    for loc in locations {
        let v = buckets
            .versioning(store, &loc.bucket)
            .await
            .map_err(|e| format!("{loc}: {e}"))?;
        let mut walker = Walker::new(store, loc, v.keeps_versions());
        while let Some(page) = walker
            .next_page()
            .await
            .map_err(|e| format!("{loc}: {e}"))?
        {
            for item in page {
                if item.delete_marker {
                    markers += 1
                } else {
                    versions += 1
                }
            }
        }
        uploads += uploads_at(store, loc)
            .await
            .map_err(|e| format!("{loc}: {e}"))?
            .len() as u64;
    }
    Ok((versions, markers, uploads))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStore;

    #[tokio::test]
    async fn one_upload_listing_per_bucket_still_matches_each_subject_exactly() {
        let store = MemoryStore::default();
        store
            .create_bucket("bkt", Versioning::Unversioned)
            .await
            .unwrap();
        store
            .create_bucket("other", Versioning::Unversioned)
            .await
            .unwrap();
        let u5 = store.start_upload("bkt", "runs/5/big.bin").await.unwrap();
        let u50 = store.start_upload("bkt", "runs/50/big.bin").await.unwrap();
        let exact = store.start_upload("bkt", "custom/7").await.unwrap();
        store.start_upload("bkt", "custom/70").await.unwrap();
        let elsewhere = store.start_upload("other", "runs/5/x").await.unwrap();
        let locations = vec![
            vec![
                Location::dir("bkt", "runs/5/").unwrap(),
                Location::from_uri("s3://bkt/custom/7").unwrap(),
            ],
            vec![Location::dir("bkt", "runs/50/").unwrap()],
            vec![
                Location::dir("bkt", "runs/6/").unwrap(),
                Location::dir("other", "runs/5/").unwrap(),
            ],
        ];
        let found = uploads_by_subject(&store, &locations).await.unwrap();
        let ids = |i: usize| {
            found[i]
                .iter()
                .map(|(_, u)| u.upload_id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(0), vec![u5.upload_id, exact.upload_id]);
        assert_eq!(ids(1), vec![u50.upload_id]);
        assert_eq!(ids(2), vec![elsewhere.upload_id]);
    }
}
