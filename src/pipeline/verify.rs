//! Verification after a purge: every subject's locations are listed again, each directory on
//! its own and independent of the purge's range listings, and anything left (a version, a
//! delete marker, an unfinished upload) fails that subject closed, so its rows are kept.

use super::listing::{ListTask, Walker, list_tasks, uploads_by_subject};
use super::objects::Buckets;
use super::ranges::RangeWalker;
use crate::context::Context;
use crate::domain::Location;
use crate::storage::{ObjectStore, ObjectVersion, StoreError};
use std::sync::Mutex;

/// Lists every subject's locations again, each directory on its own: anything
/// left (a version, a marker, an upload) is reported, and that subject fails closed.
pub async fn verify(
    ctx: &Context,
    buckets: &Buckets,
    locations: &[Vec<Location>],
) -> Vec<Result<(), String>> {
    use futures::StreamExt;
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
    // Verification shares no ordering assumption with the purge's range listings: every
    // directory is listed on its own, by its own prefix, paged only by the server. (A full scan
    // of a batch's emptied range was measured slower on SeaweedFS, which keeps empty
    // directories and walks them all.)
    futures::stream::iter(list_tasks(locations, usize::MAX))
        .for_each_concurrent(ctx.settings.list_concurrency, |task| {
            let flag = &flag;
            async move {
                if let Err(e) = verify_task(store, buckets, &task, flag).await {
                    for i in task.owners() {
                        flag(i, format!("verifying {}: {e}", task.describe()));
                    }
                }
            }
        })
        .await;
    results.into_inner().expect("results")
}

async fn verify_task(
    store: &dyn ObjectStore,
    buckets: &Buckets,
    task: &ListTask,
    flag: &(impl Fn(usize, String) + Sync),
) -> Result<(), StoreError> {
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
        ListTask::Dirs { bucket, dirs } => {
            for d in dirs {
                RangeWalker::new(store, bucket, versions, std::slice::from_ref(d))
                    .scan_all(left)
                    .await?;
            }
            Ok(())
        }
        ListTask::Exact { owner, loc } => {
            let mut w = Walker::exact_only(store, loc, versions);
            while let Some(page) = w.next_page().await? {
                for o in &page {
                    left(&[*owner], o);
                }
            }
            Ok(())
        }
    }
}
