//! Verification after a purge: every subject's locations are listed again, and anything left
//! (a version, a delete marker, an unfinished upload) fails that subject closed, so its rows
//! are kept.
//!
//! Where the purge's own listing read the batch's directories as one cheap stretch (no jump,
//! few other keys, no slow request), a bucket's directories are first listed in ranges of
//! neighbours (`list_tasks` with one part), each from just before its first directory to past
//! its last, paged only by the server: none of the purge's jumps, so a key the purge's walk
//! skipped is still seen. When a range turns out to be interleaved with other subjects' keys,
//! or a request of it is slow (the server walking emptied directories: `BUDGET`), and always on
//! a second pass, every directory is listed on its own, by its own prefix.

use super::listing::{ListTask, Walker, list_tasks, uploads_by_subject};
use super::objects::Buckets;
use super::ranges::{RangeBudget, RangeWalker, Scan};
use crate::context::Context;
use crate::domain::Location;
use crate::storage::{ObjectStore, ObjectVersion, StoreError};
use futures::StreamExt;
use std::sync::Mutex;
use std::time::Duration;

/// When a range is not verified as one but directory by directory. Keys of other subjects: a
/// range's pages are read one after another, directories `LETHE_LIST_CONCURRENCY` at a time,
/// so past about ten keys per directory the range costs more. Time: on a loaded 2-core machine
/// a LIST page of 1,000 keys took at most 1.25 s (`bench/profile.sh`, every range of purges of
/// 2,000 x 10 and 100,000 x 1 objects), while one that walked some 88,000 emptied SeaweedFS
/// directories took 28 s, and verifying that range as one took 164 s against about 2 s
/// directory by directory.
pub(super) const BUDGET: RangeBudget = RangeBudget {
    others_per_directory: 10,
    slowest_request: Duration::from_secs(2),
};

/// Lists every subject's locations again: anything left (a version, a marker, an upload) is
/// reported, and that subject fails closed. `by_directory` lists each directory on its own
/// whatever `LETHE_VERIFY` says (the second pass after leftovers).
pub async fn verify(
    ctx: &Context,
    buckets: &Buckets,
    locations: &[Vec<Location>],
    by_directory: bool,
) -> Vec<Result<(), String>> {
    let store = &*ctx.store;
    let results: Mutex<Vec<Result<(), String>>> = Mutex::new(vec![Ok(()); locations.len()]);
    let flag = |i: usize, msg: String| {
        let mut r = results.lock().expect("results");
        if r[i].is_ok() {
            r[i] = Err(msg);
        }
    };
    match uploads_by_subject(store, locations).await {
        Ok(found) => {
            for (i, uploads) in found.iter().enumerate() {
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
        }
        Err((bucket, e)) => {
            let msg = format!("verifying: listing unfinished uploads in bucket `{bucket}`: {e}");
            return locations.iter().map(|_| Err(msg.clone())).collect();
        }
    }
    let ranges = ctx.settings.verify_ranges && !by_directory;
    let tasks = list_tasks(locations, if ranges { 1 } else { usize::MAX });
    let concurrency = ctx.settings.list_concurrency;
    let fallback = Mutex::new(Vec::new());
    futures::stream::iter(tasks)
        .for_each_concurrent(concurrency, |task| {
            let (flag, fallback) = (&flag, &fallback);
            async move {
                match verify_task(store, buckets, &task, ranges, flag).await {
                    Ok(Scan::Covered) => {}
                    Ok(scan @ (Scan::TooManyOthers | Scan::TooSlow)) => {
                        tracing::debug!(
                            range = %task.describe(),
                            ?scan,
                            "verifying the range directory by directory"
                        );
                        fallback.lock().expect("fallback").push(task)
                    }
                    Err(e) => {
                        for i in task.owners() {
                            flag(i, format!("verifying {}: {e}", task.describe()));
                        }
                    }
                }
            }
        })
        .await;
    let single = fallback
        .into_inner()
        .expect("fallback")
        .into_iter()
        .flat_map(|t| match t {
            ListTask::Dirs { bucket, dirs } => dirs
                .into_iter()
                .map(|d| ListTask::Dirs {
                    bucket: bucket.clone(),
                    dirs: vec![d],
                })
                .collect(),
            exact => vec![exact],
        });
    futures::stream::iter(single)
        .for_each_concurrent(concurrency, |task| {
            let flag = &flag;
            async move {
                if let Err(e) = verify_task(store, buckets, &task, false, flag).await {
                    for i in task.owners() {
                        flag(i, format!("verifying {}: {e}", task.describe()));
                    }
                }
            }
        })
        .await;
    results.into_inner().expect("results")
}

/// Lists one task, reporting what is left. A range of several directories is scanned as one
/// when `ranges`; `TooManyOthers` and `TooSlow` ask for its directories to be listed one by one.
async fn verify_task(
    store: &dyn ObjectStore,
    buckets: &Buckets,
    task: &ListTask,
    ranges: bool,
    flag: &(impl Fn(usize, String) + Sync),
) -> Result<Scan, StoreError> {
    let versions = buckets
        .versioning(store, task.bucket())
        .await?
        .keeps_versions();
    let left = |owners: &[usize], o: &ObjectVersion| {
        for &i in owners {
            flag(
                i,
                format!(
                    "verification found object versions left (first: s3://{}/{})",
                    task.bucket(),
                    o.key
                ),
            );
        }
    };
    match task {
        ListTask::Dirs { bucket, dirs } if ranges && dirs.len() > 1 => {
            RangeWalker::new(store, bucket, versions, dirs)
                .scan_range(BUDGET, left)
                .await
        }
        ListTask::Dirs { bucket, dirs } => {
            for d in dirs {
                RangeWalker::new(store, bucket, versions, std::slice::from_ref(d))
                    .scan_all(left)
                    .await?;
            }
            Ok(Scan::Covered)
        }
        ListTask::Exact { owner, loc } => {
            let mut w = Walker::exact_only(store, loc, versions);
            while let Some(page) = w.next_page().await? {
                for o in &page {
                    left(&[*owner], o);
                }
            }
            Ok(Scan::Covered)
        }
    }
}
