//! Purging and verifying objects for a batch of subjects.
//!
//! Listings are streamed: each page goes into a bounded channel, a batcher packs versions from
//! many subjects into DeleteObjects requests of up to `LETHE_DELETE_BATCH` keys per bucket, and
//! a bounded pool of `LETHE_DELETE_CONCURRENCY` sends them concurrently. Memory stays bounded by
//! the channel and the requests in flight, not by the number of objects. Per-key outcomes are
//! tallied per subject; keys that failed are retried a bounded number of times; a key refused by
//! Object Lock makes its subject held.

use super::lease::Lease;
use super::ranges::RangeWalker;
use crate::context::Context;
use crate::domain::Location;
use crate::storage::{KeyOutcome, MAX_BATCH, ObjectStore, ObjectVersion, StoreError, Versioning};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap, HashSet};
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

impl Tally {
    /// Adds another pass's counts (versions, markers, uploads) to these.
    pub fn add_counts(&mut self, other: &Tally) {
        self.versions += other.versions;
        self.delete_markers += other.delete_markers;
        self.uploads_aborted += other.uploads_aborted;
    }
}

/// Bucket versioning and Object Lock, read once per bucket per run.
#[derive(Default, Clone)]
pub struct Buckets {
    versioning: Arc<Mutex<HashMap<String, Versioning>>>,
    object_lock: Arc<Mutex<HashMap<String, bool>>>,
}

impl Buckets {
    pub async fn versioning(
        &self,
        store: &dyn ObjectStore,
        bucket: &str,
    ) -> Result<Versioning, StoreError> {
        cached(&self.versioning, bucket, store.versioning(bucket)).await
    }

    pub async fn object_lock(
        &self,
        store: &dyn ObjectStore,
        bucket: &str,
    ) -> Result<bool, StoreError> {
        cached(&self.object_lock, bucket, store.object_lock_enabled(bucket)).await
    }
}

/// `bucket`'s entry in `cache`, asked of the store (`fetch`) the first time.
async fn cached<T: Copy>(
    cache: &Mutex<HashMap<String, T>>,
    bucket: &str,
    fetch: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    if let Some(v) = cache.lock().expect("bucket cache").get(bucket) {
        return Ok(*v);
    }
    let v = fetch.await?;
    cache
        .lock()
        .expect("bucket cache")
        .insert(bucket.to_string(), v);
    Ok(v)
}

type Tagged = (usize, String, ObjectVersion);

/// The smallest batch sent early, while delete slots are idle (never more than the batch size).
const MIN_EAGER_BATCH: usize = 100;

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

    /// Only the exact key of `loc` (its directory is listed by a `RangeWalker`).
    pub fn exact_only(store: &'a dyn ObjectStore, loc: &'a Location, versions: bool) -> Self {
        Walker {
            store,
            loc,
            versions,
            exact_phase: true,
            token: None,
            done: loc.exact_key().is_none(),
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
/// With `careful`, every directory is listed on its own by its prefix, with no range listing
/// and no constructed marker: the path for subjects a range-listed purge did not finish.
pub async fn purge(
    ctx: &Context,
    buckets: &Buckets,
    locations: &[Vec<Location>],
    careful: bool,
    lease: Option<Arc<Lease>>,
) -> Vec<Tally> {
    let tallies = Arc::new(Mutex::new(vec![Tally::default(); locations.len()]));
    let (tx, mut rx) = mpsc::channel::<Tagged>(4 * MAX_BATCH);
    let store = ctx.store.clone();
    let settings = ctx.settings.clone();

    let listers = {
        let tallies = tallies.clone();
        let store = store.clone();
        let buckets = buckets.clone();
        let tasks = list_tasks(
            locations,
            if careful {
                usize::MAX
            } else {
                settings.list_ranges
            },
        );
        async move {
            use futures::StreamExt;
            futures::stream::iter(tasks)
                .for_each_concurrent(settings.list_concurrency, |task| {
                    let tx = tx.clone();
                    let store = store.clone();
                    let tallies = tallies.clone();
                    let buckets = buckets.clone();
                    async move {
                        if let Err(e) = list_into(&*store, &buckets, &task, &tx, &tallies).await {
                            for i in task.owners() {
                                fail(&tallies, i, format!("{}: {e}", task.describe()));
                            }
                        }
                    }
                })
                .await;
        }
    };

    let deleter = {
        let tallies = tallies.clone();
        let store = store.clone();
        let lease = lease.clone();
        async move {
            let permits = Arc::new(Semaphore::new(ctx.settings.delete_concurrency));
            let mut pending: HashMap<String, Vec<(usize, ObjectVersion)>> = HashMap::new();
            let mut inflight = tokio::task::JoinSet::new();
            let retries = ctx.settings.key_retries;
            let full = ctx.settings.delete_batch.clamp(1, MAX_BATCH);
            let eager = MIN_EAGER_BATCH.min(full);
            // A slot is taken before a request is started, so while every slot is busy this loop
            // stops taking keys, the channel fills and the listings wait: the keys held in memory
            // are bounded by the channel and the requests in flight, not by the backlog.
            let slot = || {
                let permits = permits.clone();
                async move {
                    permits
                        .acquire_owned()
                        .await
                        .expect("semaphore is never closed")
                }
            };
            let send = |bucket: String,
                        batch: Vec<(usize, ObjectVersion)>,
                        inflight: &mut tokio::task::JoinSet<()>,
                        permit: tokio::sync::OwnedSemaphorePermit| {
                let store = store.clone();
                let tallies = tallies.clone();
                let lease = lease.clone();
                inflight.spawn(async move {
                    let _permit = permit;
                    let mut batch = batch;
                    let subjects = batch.iter().map(|(i, _)| *i).collect();
                    let refused = fence(lease.as_deref(), &subjects, &tallies).await;
                    batch.retain(|(i, _)| !refused.contains(i));
                    if !batch.is_empty() {
                        delete_with_retries(&*store, &bucket, batch, retries, &tallies).await;
                    }
                });
            };
            loop {
                // Flush partial batches when the listings pause, so deletion overlaps listing.
                match tokio::time::timeout(Duration::from_millis(25), rx.recv()).await {
                    Ok(Some((i, bucket, v))) => {
                        let b = pending.entry(bucket.clone()).or_default();
                        b.push((i, v));
                        // Full batches when every delete slot is busy; smaller ones while slots
                        // are idle, since the server's throughput comes from concurrent requests.
                        let idle = inflight.len() < ctx.settings.delete_concurrency;
                        if b.len() >= full || (idle && b.len() >= eager) {
                            let batch = std::mem::take(b);
                            send(bucket, batch, &mut inflight, slot().await);
                        }
                    }
                    Ok(None) => break,
                    Err(_) => {
                        for (bucket, b) in pending.iter_mut().filter(|(_, b)| !b.is_empty()) {
                            send(
                                bucket.clone(),
                                std::mem::take(b),
                                &mut inflight,
                                slot().await,
                            );
                        }
                    }
                }
                while inflight.try_join_next().is_some() {}
            }
            for (bucket, b) in pending.into_iter().filter(|(_, b)| !b.is_empty()) {
                send(bucket, b, &mut inflight, slot().await);
            }
            while inflight.join_next().await.is_some() {}
        }
    };
    tokio::join!(listers, deleter);

    // Unfinished multipart uploads: invisible to listings, still stored.
    match uploads_by_subject(&*store, locations).await {
        Ok(found) => {
            for (i, uploads) in found.into_iter().enumerate() {
                if uploads.is_empty() {
                    continue;
                }
                if !fence(lease.as_deref(), &HashSet::from([i]), &tallies)
                    .await
                    .is_empty()
                {
                    continue;
                }
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

/// One listing job: a contiguous run of a bucket's directories, or one exact object key.
pub enum ListTask {
    Dirs {
        bucket: String,
        dirs: Vec<(String, usize)>,
    },
    Exact {
        owner: usize,
        loc: Location,
    },
}

impl ListTask {
    pub(super) fn owners(&self) -> Vec<usize> {
        match self {
            ListTask::Dirs { dirs, .. } => dirs.iter().map(|d| d.1).collect(),
            ListTask::Exact { owner, .. } => vec![*owner],
        }
    }

    pub(super) fn bucket(&self) -> &str {
        match self {
            ListTask::Dirs { bucket, .. } => bucket,
            ListTask::Exact { loc, .. } => &loc.bucket,
        }
    }

    pub(super) fn describe(&self) -> String {
        match self {
            ListTask::Dirs { bucket, dirs } => format!(
                "s3://{bucket}/{}..{} ({} directories)",
                dirs.first().map(|d| d.0.as_str()).unwrap_or(""),
                dirs.last().map(|d| d.0.as_str()).unwrap_or(""),
                dirs.len()
            ),
            ListTask::Exact { loc, .. } => {
                format!("s3://{}/{}", loc.bucket, loc.exact_key().unwrap_or(""))
            }
        }
    }

    /// Sends every entry this task lists into `tx`, tagged with its first owner: a key inside
    /// two subjects' directories is deleted once and tallied to the first; verification checks
    /// it for every owner. Stops early if the receiver is gone.
    async fn send_all(
        &self,
        store: &dyn ObjectStore,
        versions: bool,
        tx: &mpsc::Sender<Tagged>,
    ) -> Result<(), StoreError> {
        let send =
            |owner: usize, item: ObjectVersion| tx.send((owner, self.bucket().to_string(), item));
        match self {
            ListTask::Dirs { bucket, dirs } => {
                let mut w = RangeWalker::new(store, bucket, versions, dirs);
                while let Some(page) = w.next_page().await? {
                    for (owners, item) in page {
                        if send(owners[0], item).await.is_err() {
                            return Ok(());
                        }
                    }
                }
            }
            ListTask::Exact { owner, loc } => {
                let mut w = Walker::exact_only(store, loc, versions);
                while let Some(page) = w.next_page().await? {
                    for item in page {
                        if send(*owner, item).await.is_err() {
                            return Ok(());
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Splits the batch's locations into listing tasks: per bucket, the sorted directories in up to
/// `parts` contiguous runs (walked concurrently), and one task per exact object key.
pub fn list_tasks(locations: &[Vec<Location>], parts: usize) -> Vec<ListTask> {
    let mut by_bucket: std::collections::BTreeMap<&str, Vec<(String, usize)>> = Default::default();
    let mut tasks = Vec::new();
    for (i, locs) in locations.iter().enumerate() {
        for l in locs {
            by_bucket
                .entry(&l.bucket)
                .or_default()
                .push((l.prefix.clone(), i));
            if l.exact_key().is_some() {
                tasks.push(ListTask::Exact {
                    owner: i,
                    loc: l.clone(),
                });
            }
        }
    }
    for (bucket, mut dirs) in by_bucket {
        dirs.sort();
        if !super::ranges::same_order(&dirs) {
            // The server's listing order of these directories is unknown: list each on its own.
            tasks.extend(dirs.into_iter().map(|d| ListTask::Dirs {
                bucket: bucket.to_string(),
                dirs: vec![d],
            }));
            continue;
        }
        let chunk = dirs.len().div_ceil(parts.max(1)).max(1);
        // Keep equal prefixes in one task so no directory is listed twice.
        let mut start = 0;
        while start < dirs.len() {
            let mut end = (start + chunk).min(dirs.len());
            while end < dirs.len() && dirs[end].0 == dirs[end - 1].0 {
                end += 1;
            }
            tasks.push(ListTask::Dirs {
                bucket: bucket.to_string(),
                dirs: dirs[start..end].to_vec(),
            });
            start = end;
        }
    }
    tasks
}

async fn list_into(
    store: &dyn ObjectStore,
    buckets: &Buckets,
    task: &ListTask,
    tx: &mpsc::Sender<Tagged>,
    tallies: &Mutex<Vec<Tally>>,
) -> Result<(), StoreError> {
    let v = buckets.versioning(store, task.bucket()).await?;
    {
        let mut t = tallies.lock().expect("tallies");
        for i in task.owners() {
            t[i].routes.insert(v.as_str().to_string());
        }
    }
    task.send_all(store, v.keeps_versions(), tx).await
}

/// Of `subjects`, those whose objects must not be deleted now (their lease is lost or cannot be
/// confirmed); each of them fails with the reason.
async fn fence(
    lease: Option<&Lease>,
    subjects: &HashSet<usize>,
    tallies: &Mutex<Vec<Tally>>,
) -> HashSet<usize> {
    let Some(lease) = lease.filter(|_| !crate::controls::on("no-fencing")) else {
        return HashSet::new();
    };
    match lease.refused(subjects).await {
        Ok(refused) => {
            for &i in &refused {
                fail(tallies, i, super::lease::LOST.to_string());
            }
            refused
        }
        Err(why) => {
            for &i in subjects {
                fail(tallies, i, why.clone());
            }
            subjects.clone()
        }
    }
}

async fn delete_with_retries(
    store: &dyn ObjectStore,
    bucket: &str,
    mut batch: Vec<(usize, ObjectVersion)>,
    retries: u32,
    tallies: &Mutex<Vec<Tally>>,
) {
    for attempt in 1..=retries {
        let mut items: Vec<ObjectVersion> = batch.iter().map(|(_, v)| v.clone()).collect();
        if crate::controls::on("plain-deletes") {
            // Negative control: deletes that name no version (on a versioned bucket they
            // only add delete markers).
            items.iter_mut().for_each(|i| i.version_id = None);
        }
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
                    // Negative control: a failed key counted as deleted.
                    KeyOutcome::Failed(_) if crate::controls::on("ignore-key-errors") => {
                        t[i].versions += 1
                    }
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
pub(super) async fn uploads_by_subject(
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
        let common = super::ranges::common_prefix(
            locs.iter().map(|(_, l)| l.exact_key().unwrap_or(&l.prefix)),
        );
        let uploads = store
            .list_uploads(bucket, common)
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

/// Counts what `purge` would delete, for `--dry-run`: (versions, delete markers, uploads).
pub async fn count(
    ctx: &Context,
    buckets: &Buckets,
    locations: &[Location],
) -> Result<(u64, u64, u64), String> {
    let store = &*ctx.store;
    let (mut versions, mut markers) = (0, 0);
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
    }
    let uploads = uploads_by_subject(store, std::slice::from_ref(&locations.to_vec()))
        .await
        .map_err(|(bucket, e)| format!("listing unfinished uploads in bucket `{bucket}`: {e}"))?
        .remove(0)
        .len() as u64;
    Ok((versions, markers, uploads))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStore;
    use crate::storage::{Page, PageToken, Upload};
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    /// An unversioned one-bucket store that lists 1,000 keys at a time at once and deletes
    /// slowly, recording the most keys listed and not yet deleted.
    #[derive(Default)]
    struct SlowDeletes {
        keys: Mutex<std::collections::BTreeSet<String>>,
        seen: Mutex<std::collections::HashSet<String>>,
        deleted: AtomicUsize,
        most_waiting: AtomicUsize,
        largest_request: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl ObjectStore for SlowDeletes {
        async fn versioning(&self, _: &str) -> Result<Versioning, StoreError> {
            Ok(Versioning::Unversioned)
        }
        async fn list_page(
            &self,
            _: &str,
            prefix: &str,
            _: bool,
            token: Option<PageToken>,
        ) -> Result<Page, StoreError> {
            let from = token.map(|t| t.key).unwrap_or_default();
            let items: Vec<ObjectVersion> = self
                .keys
                .lock()
                .unwrap()
                .range::<String, _>((std::ops::Bound::Excluded(from), std::ops::Bound::Unbounded))
                .filter(|k| k.starts_with(prefix))
                .take(MAX_BATCH)
                .map(|k| ObjectVersion {
                    key: k.clone(),
                    version_id: None,
                    delete_marker: false,
                })
                .collect();
            let listed = {
                let mut seen = self.seen.lock().unwrap();
                seen.extend(items.iter().map(|o| o.key.clone()));
                seen.len()
            };
            let waiting = listed.saturating_sub(self.deleted.load(SeqCst));
            self.most_waiting.fetch_max(waiting, SeqCst);
            let next = (items.len() == MAX_BATCH).then(|| PageToken {
                key: items[MAX_BATCH - 1].key.clone(),
                version: None,
            });
            Ok(Page { items, next })
        }
        async fn delete_batch(
            &self,
            _: &str,
            items: &[ObjectVersion],
        ) -> Result<Vec<KeyOutcome>, StoreError> {
            self.largest_request.fetch_max(items.len(), SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            let mut keys = self.keys.lock().unwrap();
            for o in items {
                keys.remove(&o.key);
            }
            self.deleted.fetch_add(items.len(), SeqCst);
            Ok(vec![KeyOutcome::Deleted; items.len()])
        }
        async fn list_uploads(&self, _: &str, _: &str) -> Result<Vec<Upload>, StoreError> {
            Ok(Vec::new())
        }
        async fn abort_upload(&self, _: &str, _: &Upload) -> Result<(), StoreError> {
            Ok(())
        }
        async fn put(&self, _: &str, key: &str, _: Vec<u8>) -> Result<Option<String>, StoreError> {
            self.keys.lock().unwrap().insert(key.to_string());
            Ok(None)
        }
        async fn create_bucket(&self, _: &str, _: Versioning) -> Result<(), StoreError> {
            Ok(())
        }
        async fn start_upload(&self, _: &str, _: &str) -> Result<Upload, StoreError> {
            Err(StoreError::Other("not supported here".into()))
        }
        async fn object_lock_enabled(&self, _: &str) -> Result<bool, StoreError> {
            Ok(false)
        }
        async fn put_retained(
            &self,
            _: &str,
            _: &str,
            _: Vec<u8>,
            _: chrono::DateTime<chrono::Utc>,
        ) -> Result<(), StoreError> {
            Err(StoreError::Other("not supported here".into()))
        }
        async fn lock_of(&self, _: &str, _: &ObjectVersion) -> Result<Option<String>, StoreError> {
            Ok(None)
        }
        async fn set_legal_hold(
            &self,
            _: &str,
            _: &str,
            _: Option<&str>,
            _: bool,
        ) -> Result<(), StoreError> {
            unreachable!("the slow store has no locks")
        }
        async fn create_locked_bucket(&self, _: &str) -> Result<(), StoreError> {
            Err(StoreError::Other("not supported here".into()))
        }
    }

    /// Purges `subjects` directories of `per` keys each from a `SlowDeletes` store with
    /// `settings` and checks every key was deleted exactly once.
    async fn slow_purge(
        subjects: usize,
        per: usize,
        settings: crate::config::Settings,
    ) -> Arc<SlowDeletes> {
        let store = Arc::new(SlowDeletes::default());
        for i in 0..subjects {
            for j in 0..per {
                store
                    .put("bkt", &format!("runs/{i}/{j}"), vec![])
                    .await
                    .unwrap();
            }
        }
        let pool = sqlx::PgPool::connect_lazy("postgres://unused/unused").unwrap();
        let ctx = Context::with_store(&settings, crate::db::Db::Pg(pool), store.clone());
        let locations: Vec<Vec<Location>> = (0..subjects)
            .map(|i| vec![Location::dir("bkt", &format!("runs/{i}/")).unwrap()])
            .collect();
        let tallies = purge(&ctx, &Buckets::default(), &locations, false, None).await;
        assert!(
            tallies
                .iter()
                .all(|t| t.versions == per as u64 && t.failed.is_none())
        );
        assert_eq!(store.deleted.load(SeqCst), subjects * per);
        store
    }

    fn settings() -> crate::config::Settings {
        crate::config::Settings::from_env_with(Some("postgres://unused/unused".into())).unwrap()
    }

    #[tokio::test]
    async fn a_listing_faster_than_the_deletes_waits_instead_of_filling_memory() {
        let mut settings = settings();
        settings.delete_concurrency = 2;
        settings.delete_batch = MAX_BATCH;
        // One listing walks every directory in order, so each key it lists is one the purge
        // holds until it is deleted.
        settings.list_ranges = 1;
        let store = slow_purge(40, 500, settings.clone()).await;
        // At most: the channel (4 full requests), the batch being filled, the requests in
        // flight and a page; never the whole 20,000-key backlog.
        let bound = (4 + 1 + settings.delete_concurrency) * MAX_BATCH + 100;
        let most = store.most_waiting.load(SeqCst);
        assert!(
            most <= bound,
            "{most} listed keys waited at once (bound {bound})"
        );
    }

    #[tokio::test]
    async fn no_request_carries_more_keys_than_the_delete_batch_setting() {
        for batch in [1000, 250, 7] {
            let mut settings = settings();
            settings.delete_batch = batch;
            // Two slots, so they are soon both busy and the keys listed meanwhile fill requests.
            settings.delete_concurrency = 2;
            let store = slow_purge(30, 100, settings).await;
            let largest = store.largest_request.load(SeqCst);
            assert_eq!(largest, batch, "the largest request (setting {batch})");
        }
    }

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
