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
mod locks;
pub mod manifest;
pub mod objects;
pub mod plan;
pub mod ranges;
pub mod rows;
pub mod verify;

use crate::context::Context;
use crate::db::{items, platform, runs};
use crate::domain::ItemState;
use crate::spec::Job;
use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use manifest::Manifest;
use objects::{Buckets, Tally};
use rows::RowOutcome;
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
    pub failed: u64,
    /// Subjects another process holds a live lease on.
    pub busy: u64,
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
    pub errors: Vec<String>,
}

impl JobReport {
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
        self.failed += part.failed;
        self.busy += part.busy;
        self.rows_deleted += part.rows_deleted;
        self.object_versions_deleted += part.object_versions_deleted;
        self.delete_markers_deleted += part.delete_markers_deleted;
        self.uploads_aborted += part.uploads_aborted;
        self.left_by_limit |= part.left_by_limit;
        if self.halted.is_none() {
            self.halted = part.halted;
        }
        self.would_purge += part.would_purge;
        self.errors.extend(part.errors);
    }

    /// Whether the run left work undone: failures, busy subjects, or a limit that stopped it.
    pub fn incomplete(&self) -> bool {
        self.failed > 0 || self.busy > 0 || self.left_by_limit || self.halted.is_some()
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
    pub fn subject<'a>(&'a self, job: &'a Job, run_id: i64) -> items::Subject<'a> {
        items::Subject {
            job: &job.name,
            run_id,
            id: self.id,
            epoch: self.epoch,
            key: &self.key,
            owner: self.owner.as_deref(),
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

/// Refuses to start when a bucket a spec names is missing or our credentials are refused, so a
/// configuration mistake fails before anything is touched.
pub async fn preflight(ctx: &Context, jobs: &[Job]) -> Result<()> {
    for job in jobs {
        for src in &job.objects {
            if let crate::spec::ObjectSource::Prefix { bucket, line, .. } = src {
                ctx.store.versioning(bucket).await.map_err(|e| {
                    anyhow::anyhow!(
                        "{}:{line}: job `{}`: bucket `{bucket}`: {e}",
                        job.file.display(),
                        job.name
                    )
                })?;
            }
        }
    }
    Ok(())
}

/// Runs the selected jobs one after another, each under its run lock.
pub async fn run_all(
    ctx: &Context,
    all: &[Job],
    selected: &[Job],
    opts: &RunOptions,
) -> Result<RunSummary> {
    if !opts.dry_run {
        crate::db::clock::check(&ctx.db, ctx.settings.clock_max_gap).await?;
    }
    let mut budget = opts.limit;
    let mut summary = RunSummary::default();
    for job in selected {
        let lock = if opts.wait {
            Some(
                runs::lock_job_waiting(&ctx.db, &job.name, std::time::Duration::from_secs(1))
                    .await?,
            )
        } else {
            runs::try_lock_job(&ctx.db, &job.name).await?
        };
        let Some(lock) = lock else {
            summary.locked_out.push(job.name.clone());
            continue;
        };
        let report = run_job(ctx, job, all, opts, &mut budget).await;
        runs::unlock_job(lock, &job.name).await;
        summary.reports.push(report?);
    }
    Ok(summary)
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
        Some(runs::start(&ctx.db, &job.name, false).await?)
    };
    report.run_id = run_id;
    let span = tracing::info_span!("job", job = %job.name, run_id = run_id.unwrap_or(0), dry_run = opts.dry_run);
    let _enter = span.enter();
    let buckets = Buckets::default();
    let result = {
        use futures::FutureExt;
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
        report.errors.push(format!("{e:#}"));
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
    tracing::info!(
        purged = report.purged,
        held = report.held,
        failed = report.failed,
        "job finished"
    );
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

async fn purge_batch(
    ctx: &Context,
    job: &Job,
    all: &[Job],
    run_id: i64,
    buckets: &Buckets,
    batch: &[platform::Candidate],
    report: &mut JobReport,
) -> Result<()> {
    let keys: Vec<String> = batch.iter().map(|c| c.key.clone()).collect();
    let mut stages = Stages::start();
    let manifests = manifest::build(ctx, job, &keys, false).await?;
    let inputs: Vec<items::ClaimInput> = batch
        .iter()
        .map(|c| items::ClaimInput {
            key: c.key.clone(),
            owner: c.owner.clone(),
            clock_at: c.clock_at,
            eligible_at: c.eligible_at,
            deadline_at: c.deadline_at,
            manifest: serde_json::to_value(&manifests[&c.key]).expect("manifests serialize"),
        })
        .collect();
    stages.mark("manifest");
    let claimed = items::claim(
        &ctx.db,
        &job.name,
        run_id,
        ctx.settings.lease_seconds,
        &inputs,
    )
    .await?;
    report.busy += (batch.len() - claimed.len()) as u64;
    let by_key: HashMap<&str, &platform::Candidate> =
        batch.iter().map(|c| (c.key.as_str(), c)).collect();
    let mut ready: Vec<Ready> = claimed
        .iter()
        .map(|c| {
            let cand = by_key[c.subject_key.as_str()];
            Ready {
                id: c.id,
                epoch: c.epoch,
                key: c.subject_key.clone(),
                owner: cand.owner.clone(),
                clock_at: cand.clock_at,
                eligible_at: cand.eligible_at,
                deadline_at: cand.deadline_at,
                tally: Tally::default(),
            }
        })
        .collect();
    let prev_hold: HashMap<i64, Option<i64>> =
        claimed.iter().map(|c| (c.id, c.prev_hold)).collect();
    let merged: HashMap<i64, Manifest> = claimed
        .iter()
        .map(|c| {
            (
                c.id,
                serde_json::from_value(c.manifest.clone()).unwrap_or_default(),
            )
        })
        .collect();

    stages.mark("claim");
    // Hold and eligibility check immediately before the first destructive step: a subject
    // restored since it was discovered is left untouched. A subject with no objects (and a
    // complete manifest) has no step before its row transaction, which checks both under lock.
    let has_objects = |r: &Ready| !merged[&r.id].locations.is_empty();
    let rows_only = |r: &Ready| !has_objects(r) && merged[&r.id].error.is_none();
    let claimed_keys: Vec<String> = ready
        .iter()
        .filter(|r| !rows_only(r))
        .map(|r| r.key.clone())
        .collect();
    let held = hold_map(ctx, job, all, &claimed_keys).await?;
    let still: std::collections::HashSet<String> = platform::still_eligible(job, &claimed_keys)
        .fetch_all::<(String,)>(&ctx.db)
        .await
        .context("re-checking eligibility")?
        .into_iter()
        .map(|r| r.0)
        .collect();
    let mut go = Vec::new();
    for r in ready.drain(..) {
        if rows_only(&r) {
            go.push(r);
        } else if !still.contains(&r.key) {
            let msg = "no longer eligible when its objects were to be purged (restored, or its clock \
                       changed); nothing was deleted";
            fail(ctx, job, run_id, &r, "no_longer_eligible", msg, report).await?;
        } else if let Some(h) = held.get(&r.key) {
            items::mark_held(
                &ctx.db,
                &r.subject(job, run_id),
                Some(*h),
                prev_hold[&r.id],
                r.detail(),
            )
            .await?;
            report.held += 1;
        } else if let Some(e) = &merged[&r.id].error {
            fail(ctx, job, run_id, &r, "manifest", e, report).await?;
        } else {
            go.push(r);
        }
    }

    // Storage-level holds (S3 Object Lock) keep the whole subject, asked before any of its
    // objects is deleted.
    let locations: Vec<Vec<crate::domain::Location>> =
        go.iter().map(|r| merged[&r.id].locations.clone()).collect();
    let locks = locks::storage_holds(ctx, buckets, &locations).await;
    let mut unlocked = Vec::new();
    for (r, lock) in go.into_iter().zip(locks) {
        match lock {
            Ok(None) => unlocked.push(r),
            Ok(Some(evidence)) => {
                held_by_storage(ctx, job, run_id, &r, prev_hold[&r.id], evidence).await?;
                report.held += 1;
            }
            Err(e) => fail(ctx, job, run_id, &r, "objects", &e, report).await?,
        }
    }
    let go = unlocked;
    let locations: Vec<Vec<crate::domain::Location>> =
        go.iter().map(|r| merged[&r.id].locations.clone()).collect();
    stages.mark("holds");
    tracing::info!(subjects = go.len(), "purging objects");
    let lease = |subjects: &[&Ready]| {
        Some(Arc::new(lease::Lease::new(
            ctx.db.clone(),
            run_id,
            ctx.settings.lease_seconds,
            subjects.iter().map(|r| (r.id, r.epoch)).collect(),
        )))
    };
    if crate::controls::on("rows-before-objects") {
        // Negative control: rows first, then the objects, unverified.
        let outcomes = rows::purge(ctx, job, all, run_id, &go).await;
        report.purged += outcomes
            .iter()
            .filter(|o| matches!(o, RowOutcome::Purged { .. }))
            .count() as u64;
        objects::purge(ctx, buckets, &locations, false, None).await;
        return Ok(());
    }
    let tallies = objects::purge(
        ctx,
        buckets,
        &locations,
        false,
        lease(&go.iter().collect::<Vec<_>>()),
    )
    .await;
    let mut verified = Vec::new();
    for (mut r, t) in go.into_iter().zip(tallies) {
        report.count_objects(&t);
        r.tally = t;
        if let Some(evidence) = r.tally.denied.clone() {
            held_by_storage(ctx, job, run_id, &r, prev_hold[&r.id], evidence).await?;
            report.held += 1;
        } else if let Some(e) = r.tally.failed.clone() {
            fail(ctx, job, run_id, &r, "objects", &e, report).await?;
        } else {
            verified.push(r);
        }
    }
    // Subjects without object locations skip the object states: there is nothing for them to
    // record, and the row transaction fences them like every other subject.
    let fenced: Vec<(i64, i64)> = verified
        .iter()
        .filter(|r| has_objects(r))
        .map(|r| (r.id, r.epoch))
        .collect();
    let before = verified.len();
    if !fenced.is_empty() {
        let mut tx = ctx.db.begin().await?;
        let moved =
            items::advance(&mut tx, run_id, &fenced, ItemState::ObjectsPurged, false).await?;
        tx.commit().await?;
        verified.retain(|r| !has_objects(r) || moved.contains(&r.id));
    }
    report.busy += (before - verified.len()) as u64;

    let mut ready = Vec::new();
    stages.mark("objects");
    let to_verify: Vec<Vec<crate::domain::Location>> = verified
        .iter()
        .map(|r| merged[&r.id].locations.clone())
        .collect();
    let mut checks = verify::verify(ctx, buckets, &to_verify).await;
    // Leftovers after a range-listed purge: purge those subjects once more listing each
    // directory on its own (no range listing, no constructed marker), then verify again. A
    // server whose listing order or marker semantics surprise us costs time, never a subject.
    let again: Vec<usize> = checks
        .iter()
        .enumerate()
        .filter(|(_, c)| c.is_err())
        .map(|(i, _)| i)
        .collect();
    if !again.is_empty() {
        tracing::warn!(
            subjects = again.len(),
            "leftovers after the purge; purging those again, directory by directory"
        );
        let locs: Vec<Vec<crate::domain::Location>> =
            again.iter().map(|&i| to_verify[i].clone()).collect();
        let owners: Vec<&Ready> = again.iter().map(|&i| &verified[i]).collect();
        let extra = objects::purge(ctx, buckets, &locs, true, lease(&owners)).await;
        let rechecks = verify::verify(ctx, buckets, &locs).await;
        for ((&i, t), c) in again.iter().zip(extra).zip(rechecks) {
            let r = &mut verified[i];
            r.tally.add_counts(&t);
            report.count_objects(&t);
            checks[i] = match (t.failed, t.denied) {
                (Some(e), _) => Err(e),
                (None, Some(d)) => Err(format!("refused by the store on the second pass: {d}")),
                (None, None) => c,
            };
        }
    }
    for (r, check) in verified.into_iter().zip(checks) {
        match check {
            Ok(()) => ready.push(r),
            Err(e) => fail(ctx, job, run_id, &r, "verification", &e, report).await?,
        }
    }
    let fenced: Vec<(i64, i64)> = ready
        .iter()
        .filter(|r| has_objects(r))
        .map(|r| (r.id, r.epoch))
        .collect();
    if !fenced.is_empty() {
        let mut tx = ctx.db.begin().await?;
        items::advance(&mut tx, run_id, &fenced, ItemState::Verified, false).await?;
        tx.commit().await?;
    }

    stages.mark("verify");
    let outcomes = rows::purge(ctx, job, all, run_id, &ready).await;
    for (r, o) in ready.iter().zip(outcomes) {
        match o {
            RowOutcome::Purged { rows } => {
                report.purged += 1;
                report.rows_deleted += rows.values().sum::<i64>();
            }
            RowOutcome::Held { hold_id } => {
                items::mark_held(
                    &ctx.db,
                    &r.subject(job, run_id),
                    Some(hold_id),
                    prev_hold[&r.id],
                    r.detail(),
                )
                .await?;
                report.held += 1;
            }
            RowOutcome::NoLongerEligible => {
                let msg = if has_objects(r) {
                    "no longer eligible when its rows were to be deleted (restored, or its clock changed); \
                     its objects were already purged, its rows are kept"
                } else {
                    "no longer eligible when its rows were to be deleted (restored, or its clock changed); \
                     nothing was deleted"
                };
                fail(ctx, job, run_id, r, "no_longer_eligible", msg, report).await?;
            }
            RowOutcome::Failed(e) => fail(ctx, job, run_id, r, "rows", &e, report).await?,
        }
    }
    stages.mark("rows");
    tracing::info!(subjects = batch.len(), stages_ms = %stages, "batch done");
    Ok(())
}

/// Records a subject held by the object store (Object Lock), with the store's evidence.
async fn held_by_storage(
    ctx: &Context,
    job: &Job,
    run_id: i64,
    r: &Ready,
    prev_hold: Option<i64>,
    evidence: String,
) -> Result<()> {
    tracing::info!(subject = %r.key, %evidence, "held by the object store");
    let mut d = r.detail();
    d["source"] = "storage".into();
    d["evidence"] = evidence.into();
    items::mark_held(&ctx.db, &r.subject(job, run_id), None, prev_hold, d)
        .await
        .map(|_| ())
}

async fn fail(
    ctx: &Context,
    job: &Job,
    run_id: i64,
    r: &Ready,
    class: &str,
    msg: &str,
    report: &mut JobReport,
) -> Result<()> {
    tracing::warn!(subject = %r.key, class, error = msg, "subject failed");
    items::mark_failed(&ctx.db, &r.subject(job, run_id), class, msg, r.detail()).await?;
    report.failed += 1;
    report.errors.push(format!("{}: {class}: {msg}", r.key));
    Ok(())
}

/// Per-table totals, for summaries.
pub type RowCounts = BTreeMap<String, i64>;

/// Wall time per pipeline stage of one batch, for the `batch done` log line.
struct Stages {
    last: std::time::Instant,
    done: Vec<(&'static str, u128)>,
}

impl Stages {
    fn start() -> Self {
        Stages {
            last: std::time::Instant::now(),
            done: Vec::new(),
        }
    }

    fn mark(&mut self, stage: &'static str) {
        let now = std::time::Instant::now();
        self.done.push((stage, (now - self.last).as_millis()));
        self.last = now;
    }
}

impl std::fmt::Display for Stages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .done
            .iter()
            .map(|(s, ms)| format!("{s}={ms}"))
            .collect();
        f.write_str(&parts.join(" "))
    }
}
