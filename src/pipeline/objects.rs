//! Purging and verifying objects for a batch of subjects.
//!
//! Listings are streamed: each page goes into a bounded channel, a batcher packs versions from
//! many subjects into DeleteObjects requests of up to `LETHE_DELETE_BATCH` keys per bucket, and
//! a bounded pool of `LETHE_DELETE_CONCURRENCY` sends them concurrently. Memory stays bounded by
//! the channel and the requests in flight, not by the number of objects. Per-key outcomes are
//! tallied per subject; keys that failed are retried a bounded number of times; a key refused by
//! Object Lock makes its subject held.

use super::lease::{Lease, Refusal};
use super::listing::{ListTask, Tagged, Walker, list_tasks, uploads_by_subject};
use crate::context::Context;
use crate::domain::Location;
use crate::storage::{MAX_BATCH, ObjectStore, ObjectVersion, StoreError, Versioning};
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
    /// A hold placed while the objects were being purged: the hold that refused the rest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_by: Option<i64>,
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

    /// For a dry run: credentials that may list a bucket but not read its Object Lock
    /// configuration (a read-only role) leave its storage holds unchecked, said once, instead
    /// of failing every subject. A dry run deletes nothing; at worst its count includes
    /// subjects a real run would find held. A real run never takes this path.
    pub async fn object_lock_or_unchecked(&self, store: &dyn ObjectStore, bucket: &str) {
        if let Err(StoreError::Auth(e)) = self.object_lock(store, bucket).await {
            tracing::warn!(
                bucket,
                error = %e,
                "this dry run's credentials may not read the bucket's Object Lock configuration, so its storage holds are not checked (grant s3:GetBucketObjectLockConfiguration to see them)"
            );
            self.object_lock
                .lock()
                .expect("bucket cache")
                .insert(bucket.to_string(), false);
        }
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

/// The smallest batch sent early, while delete slots are idle (never more than the batch size).
const MIN_EAGER_BATCH: usize = 100;

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
        let parts = if careful {
            usize::MAX
        } else {
            settings.list_ranges
        };
        async move {
            use futures::StreamExt;
            let tasks = list_tasks(locations, parts);
            futures::stream::iter(tasks)
                .for_each_concurrent(settings.list_concurrency, |task| {
                    let tx = tx.clone();
                    let store = store.clone();
                    let tallies = tallies.clone();
                    let buckets = buckets.clone();
                    async move {
                        if let Err(e) = list_into(&*store, &buckets, &task, &tx, &tallies).await {
                            // A name the store cannot give, met in a walk over several
                            // subjects' directories: the walk stops there and fails no one.
                            // Verification asks each directory on its own, and a careful pass
                            // lists each alone, so only the subject holding the name fails.
                            let owners = task.owners();
                            let shared = owners.iter().any(|o| *o != owners[0]);
                            if shared && matches!(e, StoreError::Unnameable(_)) {
                                tracing::debug!(range = %task.describe(), error = %e, "range walk stopped");
                                return;
                            }
                            for i in owners {
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
        let buckets = buckets.clone();
        async move {
            let permits = Arc::new(Semaphore::new(ctx.settings.delete_concurrency));
            let mut pending: HashMap<String, Vec<(usize, ObjectVersion)>> = HashMap::new();
            let mut inflight = tokio::task::JoinSet::new();
            let retries = ctx.settings.key_retries;
            let s3_attempts = ctx.settings.s3.max_attempts;
            // Entries listed per subject: past the cap, a subject's location is wider than anyone
            // meant, and nothing more of it is deleted.
            let cap = ctx.settings.max_objects_per_subject;
            let mut listed = vec![0u64; locations.len()];
            let mut over = HashSet::new();
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
                let buckets = buckets.clone();
                inflight.spawn(async move {
                    let _permit = permit;
                    let to = Target {
                        store: &*store,
                        buckets: &buckets,
                        bucket: &bucket,
                        lease: lease.as_deref(),
                        s3_attempts,
                    };
                    delete_with_retries(to, batch, retries, &tallies).await;
                });
            };
            loop {
                // Flush partial batches when the listings pause, so deletion overlaps listing.
                match tokio::time::timeout(Duration::from_millis(25), rx.recv()).await {
                    Ok(Some((i, bucket, v))) => {
                        listed[i] += 1;
                        if listed[i] > cap {
                            if over.insert(i) {
                                fail(
                                    &tallies,
                                    i,
                                    format!(
                                        "its locations hold more than {cap} object versions \
                                         (LETHE_MAX_OBJECTS_PER_SUBJECT): wider than a subject \
                                         should be, so nothing more of it was deleted; check its \
                                         locations, or raise the cap"
                                    ),
                                );
                                for b in pending.values_mut() {
                                    b.retain(|(j, _)| *j != i);
                                }
                            }
                            continue;
                        }
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
    for (i, found) in uploads_by_subject(&*store, locations)
        .await
        .into_iter()
        .enumerate()
    {
        let uploads = match found {
            Ok(uploads) => uploads,
            Err(why) => {
                fail(&tallies, i, why);
                continue;
            }
        };
        for (bucket, u) in uploads {
            // Each abort waits for a check of its own: a hold placed between two aborts stops
            // the rest.
            if !fence(lease.as_deref(), &HashSet::from([i]), &tallies)
                .await
                .is_empty()
            {
                break;
            }
            match store.abort_upload(&bucket, &u).await {
                Ok(()) => tallies.lock().expect("tallies")[i].uploads_aborted += 1,
                Err(e) => fail(&tallies, i, format!("s3://{bucket}/{}: {e}", u.key)),
            }
        }
    }
    tallies.lock().expect("tallies").clone()
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

/// Of `subjects`, those whose objects must not be deleted now: their lease is lost or cannot be
/// confirmed (each fails with the reason), or a hold placed since the batch's hold check covers
/// them (each records the hold).
async fn fence(
    lease: Option<&Lease>,
    subjects: &HashSet<usize>,
    tallies: &Mutex<Vec<Tally>>,
) -> HashSet<usize> {
    let Some(lease) = lease.filter(|_| !crate::controls::on("no-fencing")) else {
        return HashSet::new();
    };
    let refused = lease.refused(subjects).await;
    let mut t = tallies.lock().expect("tallies");
    for (&i, why) in &refused {
        match why {
            Refusal::Held(h) => {
                t[i].held_by.get_or_insert(*h);
            }
            Refusal::Lost(why) => {
                t[i].failed.get_or_insert(why.clone());
            }
        }
    }
    refused.into_keys().collect()
}

fn fail(tallies: &Mutex<Vec<Tally>>, i: usize, msg: String) {
    tallies.lock().expect("tallies")[i]
        .failed
        .get_or_insert(msg);
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
        .remove(0)?
        .len() as u64;
    Ok((versions, markers, uploads))
}

mod deletes;

use deletes::{Target, delete_with_retries};

#[cfg(test)]
mod tests;
