//! `lethe run --dry-run`: every read of a real run (discovery, holds, manifests, listings, Object
//! Lock states), and
//! counts of what would be deleted. Writes nothing, not even work items or audit entries.

use super::locks;
use super::objects::{self, Buckets};
use super::{JobReport, hold_map, manifest, ownership};
use crate::context::Context;
use crate::db::platform;
use crate::spec::Job;
use anyhow::Result;

pub(super) async fn batch(
    ctx: &Context,
    job: &Job,
    all: &[Job],
    buckets: &Buckets,
    batch: &[platform::Candidate],
    report: &mut JobReport,
) -> Result<()> {
    let keys: Vec<String> = batch.iter().map(|c| c.key.clone()).collect();
    let held = hold_map(ctx, job, all, &keys).await?;
    let manifests = manifest::build(ctx, job, &keys, true).await?;
    // The ownership proof as a real run asks it: of the subjects it would purge.
    let asked: Vec<(String, Vec<crate::domain::Location>)> = batch
        .iter()
        .map(|c| (c.key.clone(), &manifests[&c.key]))
        .filter(|(k, m)| !held.contains_key(k) && m.error.is_none() && !m.locations.is_empty())
        .map(|(k, m)| (k, m.locations.clone()))
        .collect();
    let claimed = ownership::claimed(ctx, job, all, &asked).await;
    for c in batch {
        if let Some(why) = super::implausible_clock(c.clock_at) {
            report.failed += 1;
            report.error(format!("{}: clock: {why}", c.key));
            continue;
        }
        if held.contains_key(&c.key) {
            report.held += 1;
            continue;
        }
        let m = &manifests[&c.key];
        if let Some(e) = m.error.as_ref().or(claimed.get(&c.key)) {
            report.failed += 1;
            report.error(format!("{}: {e}", c.key));
            continue;
        }
        for loc in &m.locations {
            buckets
                .object_lock_or_unchecked(&*ctx.store, &loc.bucket)
                .await;
        }
        let lock = locks::storage_holds(ctx, buckets, std::slice::from_ref(&m.locations)).await;
        match lock.into_iter().next().expect("one answer per subject") {
            Ok(None) => {}
            Ok(Some(_)) => {
                report.held += 1;
                report.storage_held += 1;
                continue;
            }
            Err(e) => {
                report.failed += 1;
                report.error(format!("{}: {e}", c.key));
                continue;
            }
        }
        match objects::count(ctx, buckets, &m.locations).await {
            Ok((v, d, u)) => {
                report.would_purge += 1;
                report.object_versions_deleted += v;
                report.delete_markers_deleted += d;
                report.uploads_aborted += u;
                report.rows_deleted += m.rows.values().sum::<i64>();
            }
            Err(e) => {
                report.failed += 1;
                report.error(format!("{}: {e}", c.key));
            }
        }
    }
    Ok(())
}
