//! Before a run: what must hold before anything is deleted, checked once for the selected
//! jobs. Clocks that are not time, buckets that do not exist or refuse our credentials or our
//! deletes (a probe that deletes nothing), and the clock guard's default limit. It reads and
//! probes; it never deletes an object a spec names.

use crate::context::Context;
use crate::spec::Job;
use anyhow::Result;

/// Refuses to start when a job's clocks are implausible, a bucket a spec names (`bucket`, or a
/// URI column's `uri_within`) is missing, our
/// credentials are refused, or
/// (unless `dry_run`, which deletes nothing) they may not delete there, so a configuration
/// mistake fails before anything is touched instead of failing every subject.
pub async fn preflight(ctx: &Context, jobs: &[Job], dry_run: bool) -> Result<()> {
    // The database's answers and the store's are independent: asked side by side, and the
    // clocks' problem, when both fail, is the one reported.
    let (clocks, buckets) =
        tokio::join!(check_clocks(ctx, jobs), probe_buckets(ctx, jobs, dry_run));
    clocks?;
    buckets
}

/// The store's part of `preflight`: every named bucket answers, and (unless `dry_run`) lets our
/// credentials delete.
async fn probe_buckets(ctx: &Context, jobs: &[Job], dry_run: bool) -> Result<()> {
    if jobs.iter().any(|j| !j.objects.is_empty()) {
        ctx.store.ready().await.map_err(anyhow::Error::msg)?;
    }
    let mut probed = std::collections::HashSet::new();
    for job in jobs {
        for (bucket, line) in named_buckets(job) {
            let at = || {
                format!(
                    "{}:{line}: job `{}`: bucket `{bucket}`",
                    job.file.display(),
                    job.name
                )
            };
            let v = ctx
                .store
                .versioning(bucket)
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}", at()))?;
            if !dry_run && probed.insert(bucket.clone()) {
                probe_delete(&*ctx.store, bucket, v)
                    .await
                    .map_err(|e| anyhow::anyhow!("{}: {e}", at()))?;
            }
        }
    }
    Ok(())
}

/// The buckets a job's spec names, with their lines: a prefix's, and the one a URI column must
/// point into.
fn named_buckets(job: &Job) -> impl Iterator<Item = (&String, &usize)> {
    job.objects.iter().filter_map(|src| match src {
        crate::spec::ObjectSource::Prefix { bucket, line, .. } => Some((bucket, line)),
        crate::spec::ObjectSource::Uri {
            within: Some((bucket, _)),
            line,
            ..
        } => Some((bucket, line)),
        crate::spec::ObjectSource::Uri { within: None, .. } => None,
    })
}

/// Whether the object store answers for every bucket the jobs name (a read of each bucket's
/// versioning; nothing is written). For the daemon's `lethe_object_store_up`.
pub async fn store_answers(ctx: &Context, jobs: &[Job]) -> Result<()> {
    if jobs.iter().all(|j| j.objects.is_empty()) {
        return Ok(());
    }
    ctx.store.ready().await.map_err(anyhow::Error::msg)?;
    let mut seen = std::collections::HashSet::new();
    for (bucket, _) in jobs.iter().flat_map(named_buckets) {
        if seen.insert(bucket) {
            ctx.store
                .versioning(bucket)
                .await
                .map_err(|e| anyhow::anyhow!("bucket `{bucket}`: {e}"))?;
        }
    }
    Ok(())
}

/// Refuses jobs whose clock column is not time: most of their subjects' clocks are before 2000
/// or after 2200 (a clock read in the wrong unit would make every subject eligible at once, or
/// none ever). A few such clocks among plausible ones are those rows' problem, not the job's:
/// one before 2000 fails its own subject when it comes up, one in the future waits.
pub async fn check_clocks(ctx: &Context, jobs: &[Job]) -> Result<()> {
    crate::spec::validate::all_or_nothing(crate::db::catalog::clock_problems(&ctx.db, jobs).await?)
}

/// Asks the store to delete, by version, a key that cannot exist (under `.lethe-probe/`, with a
/// random name): nothing is deleted and nothing is created (on a versioned bucket a delete
/// that names no version would add a delete marker, so the probe names the null version), but
/// a role without the delete permissions is refused, naming the action to grant.
async fn probe_delete(
    store: &dyn crate::storage::ObjectStore,
    bucket: &str,
    versioning: crate::storage::Versioning,
) -> Result<(), String> {
    use crate::storage::{KeyOutcome, ObjectVersion, StoreError};
    let probe = ObjectVersion {
        key: format!(".lethe-probe/{}", crate::db::runs::rand_token()),
        version_id: (versioning != crate::storage::Versioning::Unversioned).then(|| "null".into()),
        delete_marker: false,
    };
    let action = if probe.version_id.is_some() {
        "s3:DeleteObjectVersion"
    } else {
        "s3:DeleteObject"
    };
    let refused = |why: String| {
        format!(
            "the store refused to delete a key that cannot exist under `.lethe-probe/` ({}): \
             grant lethe's credentials {action} on this bucket; nothing was deleted",
            why.trim_end_matches('.')
        )
    };
    for attempt in 1..=PROBE_ATTEMPTS {
        let answer = match store
            .delete_batch(bucket, std::slice::from_ref(&probe))
            .await
        {
            // A store without batch deletes: the purge deletes one key a request, so ask so.
            Err(StoreError::BatchUnsupported(_)) => {
                store.delete_one(bucket, &probe).await.map(|o| vec![o])
            }
            other => other,
        };
        match answer {
            Ok(outcomes) => match outcomes.into_iter().next() {
                Some(KeyOutcome::Deleted) => return Ok(()),
                Some(KeyOutcome::Denied(why)) => return Err(refused(why)),
                // Another per-key error (an internal error, say) says nothing about permissions.
                Some(KeyOutcome::Failed(why)) if attempt == PROBE_ATTEMPTS => {
                    tracing::warn!(%bucket, error = %why, "the delete permission probe got no answer; going on");
                    return Ok(());
                }
                Some(KeyOutcome::Failed(_)) => {}
                None => return Err("the store answered a one-key delete with no outcome".into()),
            },
            Err(StoreError::Auth(why)) => return Err(refused(why)),
            Err(StoreError::Transient(why)) if attempt == PROBE_ATTEMPTS => {
                // Only an early warning: a refused delete during the purge fails its subject
                // anyway (never a hold, without Object Lock).
                tracing::warn!(%bucket, error = %why, "the delete permission probe got no answer; going on");
                return Ok(());
            }
            Err(StoreError::Transient(_)) => {}
            Err(e) => return Err(format!("probing the delete permission: {e}")),
        }
        tokio::time::sleep(std::time::Duration::from_millis(200 << attempt)).await;
    }
    Ok(())
}

/// Attempts of the delete-permission probe against a store that answers with transient errors.
const PROBE_ATTEMPTS: u32 = 5;

/// The clock guard's forward limit: `LETHE_CLOCK_MAX_GAP_SECONDS` when set; by default 14 days,
/// or the shortest grace of the loaded jobs when that is shorter, so that no default lets a jump
/// of the database clock make a subject eligible a whole grace early.
pub(super) fn max_gap(ctx: &Context, all: &[Job]) -> Option<std::time::Duration> {
    let set = ctx.settings.clock_max_gap;
    if crate::config::clock_max_gap_given() {
        return set;
    }
    let shortest = all
        .iter()
        .flat_map(|j| {
            std::iter::once(&j.windows.default.grace)
                .chain(j.windows.overrides.iter().map(|(_, p)| &p.grace))
        })
        .map(|g| g.seconds())
        .filter(|s| *s > 0)
        .min();
    match (set, shortest) {
        (Some(gap), Some(s)) => Some(gap.min(std::time::Duration::from_secs(s as u64))),
        (gap, _) => gap,
    }
}
