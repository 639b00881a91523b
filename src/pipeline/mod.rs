//! The purge pipeline: discover → claim → hold check → purge objects → verify → purge rows and
//! audit. One module per step; this one runs them over a job in bounded batches.
//!
//! Order is the safety argument: the manifest is committed before anything is deleted; objects
//! go before rows, so a crash never leaves objects without the rows that point at them; rows go
//! only after a fresh listing finds nothing left; holds are checked at claim, again right before
//! objects are deleted, and again under lock in the row transaction.

mod batches;
mod dry_run;
pub mod lease;
pub mod listing;
mod locate;
mod locks;
pub mod manifest;
pub mod objects;
mod ownership;
pub use ownership::claimed_by_others;
pub mod plan;
mod preflight;
mod purge;
pub mod requests;
use preflight::max_gap;
pub use preflight::{check_clocks, preflight, store_answers};
pub mod ranges;
pub mod rows;
pub mod side_by_side;
mod stages;
pub use stages::Stages;
pub mod verify;

use crate::context::Context;
use crate::db::{items, platform, runs};
use crate::spec::Job;
use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use objects::{Buckets, Tally};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// What `lethe run` (or one daemon fire) was asked to do.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub dry_run: bool,
    /// At most this many subjects in this invocation, across jobs.
    pub limit: Option<u64>,
    /// Stop claiming once this instant passes (the run's time budget); batches already started
    /// finish.
    pub deadline: Option<std::time::Instant>,
    /// Set from outside (a shutdown signal) to stop claiming; batches already started finish.
    pub stop: Option<Arc<AtomicBool>>,
    /// When another process is running a job: wait for it to finish, then run (instead of
    /// skipping the job).
    pub wait: bool,
    /// The job's run lock, asked before every row transaction and lease renewal: lost, the run
    /// stops deleting (set by `run_all` per job).
    pub run_lock: Option<runs::LockCheck>,
}

impl RunOptions {
    /// Why no new batch may start now, if one may not.
    fn halt_reason(&self) -> Option<&'static str> {
        if self
            .stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Relaxed))
        {
            Some("shutting down")
        } else if self
            .deadline
            .is_some_and(|d| std::time::Instant::now() >= d)
        {
            Some("the run's time budget was spent")
        } else {
            None
        }
    }
}

/// What one job's run did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct JobReport {
    pub job: String,
    pub run_id: Option<i64>,
    pub dry_run: bool,
    pub purged: u64,
    pub held: u64,
    /// Of `held`, those the object store holds (S3 Object Lock) rather than a lethe hold.
    #[serde(skip_serializing_if = "is_zero")]
    pub storage_held: u64,
    pub failed: u64,
    /// Subjects another process holds a live lease on.
    pub busy: u64,
    /// Subjects that failed before and wait out their retry backoff: work left undone.
    #[serde(skip_serializing_if = "is_zero")]
    pub backing_off: u64,
    pub rows_deleted: i64,
    pub object_versions_deleted: u64,
    pub delete_markers_deleted: u64,
    pub uploads_aborted: u64,
    /// Eligible subjects not reached because `--limit` was hit.
    pub left_by_limit: bool,
    /// Why the run stopped claiming before it ran out of subjects (time budget, shutdown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub halted: Option<String>,
    /// With --dry-run: what would be deleted.
    pub would_purge: u64,
    /// The first `MAX_ERRORS` errors; the rest are only counted.
    pub errors: Vec<String>,
    #[serde(skip_serializing_if = "is_zero")]
    pub errors_not_listed: u64,
}

/// Errors a run report keeps word for word (it is stored with the run); the rest are counted.
pub const MAX_ERRORS: usize = 100;

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl JobReport {
    /// Records an error, keeping at most `MAX_ERRORS` of them word for word.
    pub fn error(&mut self, e: String) {
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(e);
        } else {
            self.errors_not_listed += 1;
        }
    }

    /// Adds what a purge removed to the totals.
    fn count_objects(&mut self, t: &Tally) {
        self.object_versions_deleted += t.versions;
        self.delete_markers_deleted += t.delete_markers;
        self.uploads_aborted += t.uploads_aborted;
    }

    /// Adds one batch's counts to the job's.
    fn absorb(&mut self, part: JobReport) {
        self.purged += part.purged;
        self.held += part.held;
        self.storage_held += part.storage_held;
        self.failed += part.failed;
        self.busy += part.busy;
        self.backing_off += part.backing_off;
        self.rows_deleted += part.rows_deleted;
        self.object_versions_deleted += part.object_versions_deleted;
        self.delete_markers_deleted += part.delete_markers_deleted;
        self.uploads_aborted += part.uploads_aborted;
        self.left_by_limit |= part.left_by_limit;
        if self.halted.is_none() {
            self.halted = part.halted;
        }
        self.would_purge += part.would_purge;
        self.errors_not_listed += part.errors_not_listed;
        for e in part.errors {
            self.error(e);
        }
    }

    /// Whether the run left work undone: failures, busy subjects, or a limit that stopped it.
    pub fn incomplete(&self) -> bool {
        self.failed > 0
            || self.busy > 0
            || self.backing_off > 0
            || self.left_by_limit
            || self.halted.is_some()
    }
}

/// A claimed subject whose objects were purged and verified, ready for the row step.
#[derive(Clone, Debug)]
pub struct Ready {
    pub id: i64,
    pub epoch: i64,
    pub key: String,
    pub owner: Option<String>,
    pub clock_at: DateTime<Utc>,
    pub eligible_at: DateTime<Utc>,
    pub deadline_at: DateTime<Utc>,
    pub tally: Tally,
}

impl Ready {
    pub fn subject<'a>(&'a self, job: &'a Job, run_id: i64, by: &'a str) -> items::Subject<'a> {
        items::Subject {
            job: &job.name,
            run_id,
            id: self.id,
            epoch: self.epoch,
            key: &self.key,
            owner: self.owner.as_deref(),
            by,
        }
    }

    /// The audit detail common to every outcome: the subject's times and object counts.
    pub fn detail(&self) -> serde_json::Value {
        serde_json::json!({
            "clock_at": self.clock_at,
            "eligible_at": self.eligible_at,
            "deadline_at": self.deadline_at,
            "objects": self.tally,
        })
    }
}

/// What one invocation did, over all its jobs.
#[derive(Debug, Default)]
pub struct RunSummary {
    pub reports: Vec<JobReport>,
    /// Jobs skipped because another process was running them.
    pub locked_out: Vec<String>,
}

impl RunSummary {
    /// 0 all done; 1 something failed or was left undone; 3 a job was locked by another process.
    pub fn exit_code(&self) -> u8 {
        if self
            .reports
            .iter()
            .any(|r| r.incomplete() || !r.errors.is_empty())
        {
            1
        } else if !self.locked_out.is_empty() {
            3
        } else {
            0
        }
    }
}

/// Why a subject's clock cannot be a deletion time, if it cannot: before 2000 no platform
/// wrote it (a value in another unit reads as 1970). Such a subject fails alone; its rows and
/// objects stay.
pub(crate) fn implausible_clock(clock_at: DateTime<Utc>) -> Option<String> {
    let floor = DateTime::from_timestamp(946_684_800, 0).expect("2000-01-01 is a valid time");
    (clock_at < floor).then(|| {
        format!(
            "its clock reads as {}, before 2000, which no platform wrote (a value in another unit \
             than the job's clock_kind?); its rows and objects are kept: correct the row",
            clock_at.to_rfc3339()
        )
    })
}

/// Runs the selected jobs, each under its run lock: jobs that share no table side by side
/// (`side_by_side`), the others one after another. With a limit (`--limit`, spent across jobs in
/// their order) every job runs one after another; no more at once than the pool serves.
pub async fn run_all(
    ctx: &Context,
    all: &[Job],
    selected: &[Job],
    opts: &RunOptions,
) -> Result<RunSummary> {
    let started = std::time::Instant::now();
    // Holds are read on every run, not only when the specs were loaded (a daemon loads them
    // once): a hold placed since on a job that was left out stops this run too.
    ctx.holds_on_rejected(all, &ctx.rejected()).await?;
    // The holds table against the audit chain: a hold lifted, deleted or narrowed outside
    // lethe stops every run until an operator confirms it; one placed outside is recorded.
    crate::db::hold_ledger::check_before_run(&ctx.db, opts.dry_run).await?;
    // An erasure request makes data eligible now: one the chain does not record stops every run.
    crate::db::requests::check_before_run(&ctx.db).await?;
    if !opts.dry_run {
        let store = ctx.store.clock().map(|c| c.now());
        let mut witnesses = vec![("the host clock", Utc::now())];
        witnesses.extend(store.map(|t| ("the object store's clock (its HTTP Date)", t)));
        crate::db::clock::check(&ctx.db, max_gap(ctx, all), &witnesses).await?;
    }
    tracing::debug!(ms = started.elapsed().as_millis(), "run guards checked");
    use futures::StreamExt;
    let groups = at_once(selected, opts);
    let runs = groups
        .into_iter()
        .map(|group| run_group(ctx, all, selected, opts, group));
    let mut done: Vec<(usize, Result<Option<JobReport>>)> = futures::stream::iter(runs)
        .buffer_unordered(ctx.jobs_fitting())
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .flatten()
        .collect();
    done.sort_by_key(|(i, _)| *i);
    let mut summary = RunSummary::default();
    for (i, outcome) in done {
        match outcome? {
            Some(report) => summary.reports.push(report),
            None => summary.locked_out.push(selected[i].name.clone()),
        }
    }
    if !opts.dry_run {
        requests::settle(ctx, all).await?;
    }
    Ok(summary)
}

/// Runs one group's jobs one after another (stopping at an error), each with its index.
async fn run_group(
    ctx: &Context,
    all: &[Job],
    selected: &[Job],
    opts: &RunOptions,
    group: Vec<usize>,
) -> Vec<(usize, Result<Option<JobReport>>)> {
    let mut budget = opts.limit;
    let mut done = Vec::new();
    for i in group {
        let outcome = run_locked(ctx, &selected[i], all, opts, &mut budget).await;
        let failed = outcome.is_err();
        done.push((i, outcome));
        if failed {
            break;
        }
    }
    done
}

/// The selected jobs' indices in the groups `run_all` runs side by side: one group when a limit
/// is spent across jobs.
pub fn at_once(selected: &[Job], opts: &RunOptions) -> Vec<Vec<usize>> {
    if opts.limit.is_some() {
        vec![(0..selected.len()).collect()]
    } else {
        side_by_side::groups(selected)
    }
}

/// Runs one job under its run lock; `None` when another process holds it (and `wait` is off).
async fn run_locked(
    ctx: &Context,
    job: &Job,
    all: &[Job],
    opts: &RunOptions,
    budget: &mut Option<u64>,
) -> Result<Option<JobReport>> {
    let lock = if opts.wait {
        Some(runs::lock_job_waiting(&ctx.db, &job.name, std::time::Duration::from_secs(1)).await?)
    } else {
        runs::try_lock_job(&ctx.db, &job.name).await?
    };
    let Some(lock) = lock else {
        return Ok(None);
    };
    let mut job_opts = opts.clone();
    job_opts.run_lock = Some(lock.checker());
    let report = run_job(ctx, job, all, &job_opts, budget).await;
    runs::unlock_job(lock, &job.name).await;
    report.map(Some)
}

/// Runs one job to completion (or to the limit). The caller holds the job's run lock.
pub async fn run_job(
    ctx: &Context,
    job: &Job,
    all: &[Job],
    opts: &RunOptions,
    budget: &mut Option<u64>,
) -> Result<JobReport> {
    let mut report = JobReport {
        job: job.name.clone(),
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let run_id = if opts.dry_run {
        None
    } else {
        Some(runs::start(&ctx.db, &job.name, false, &ctx.settings.actor).await?)
    };
    report.run_id = run_id;
    let span = tracing::info_span!("job", job = %job.name, run_id = run_id.unwrap_or(0), dry_run = opts.dry_run);
    let buckets = Buckets::default();
    let result = {
        use futures::FutureExt;
        use tracing::Instrument;
        // A panic in one job is that run's failure, not the process's: its items are released
        // below like after any other error.
        std::panic::AssertUnwindSafe(batches::run_batches(
            ctx,
            job,
            all,
            opts,
            budget,
            run_id,
            &buckets,
            &mut report,
        ))
        .catch_unwind()
        // Instrumented, not entered: jobs that share no table run side by side on one task.
        .instrument(span.clone())
        .await
        .unwrap_or_else(|panic| {
            let msg = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown panic");
            Err(anyhow::anyhow!("the run panicked: {msg}"))
        })
    };
    if let Err(e) = &result {
        report.error(format!("{e:#}"));
        if let Some(id) = run_id {
            // Leave nothing under a live lease: the next run takes these items over at once.
            let released = items::release_run(&ctx.db, id, &format!("{e:#}")).await?;
            report.failed += released;
        }
    }
    if let Some(id) = run_id {
        let status = if result.is_err() {
            "failed"
        } else if report.incomplete() {
            "partial"
        } else {
            "ok"
        };
        runs::finish(&ctx.db, id, status, &serde_json::to_value(&report)?).await?;
    }
    span.in_scope(|| {
        tracing::info!(
            purged = report.purged,
            held = report.held,
            failed = report.failed,
            "job finished"
        )
    });
    Ok(report)
}

pub(crate) async fn hold_map(
    ctx: &Context,
    job: &Job,
    all: &[Job],
    keys: &[String],
) -> Result<HashMap<String, i64>> {
    if crate::controls::on("no-hold-recheck") {
        return Ok(HashMap::new());
    }
    Ok(platform::holds_for(job, all, keys)
        .fetch_all::<(String, i64)>(&ctx.db)
        .await
        .context("checking holds")?
        .into_iter()
        .collect())
}

/// Per-table totals, for summaries.
pub type RowCounts = BTreeMap<String, i64>;
