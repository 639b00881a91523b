//! One batch of subjects through the steps, in the order `pipeline` (mod.rs) argues for: manifest
//! and claim, hold check, objects, verification, rows and audit. A subject that fails a step, or
//! is held, leaves the batch there with its outcome recorded; the others go on.

use super::manifest::{self, Manifest};
use super::objects::{self, Buckets, Tally};
use super::rows::{self, RowOutcome};
use super::{JobReport, Ready, hold_map, verify};
use super::{lease, locks};
use crate::context::Context;
use crate::db::{items, platform};
use crate::domain::ItemState;
use crate::spec::Job;
use anyhow::{Context as _, Result};
use std::collections::HashMap;
use std::sync::Arc;

/// Takes one batch of discovered subjects through every step; each subject's outcome (purged,
/// held, failed, busy) is counted in `report` and recorded in the work items and the audit log.
pub(super) async fn purge_batch(
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
                Manifest::decode(&c.manifest).unwrap_or_else(|e| Manifest {
                    error: Some(e),
                    ..Default::default()
                }),
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
    // Read before the hold check: a hold placed after this is checked again before each delete.
    let holds_seen = crate::db::holds::latest(&ctx.db).await?;
    let held = hold_map(ctx, job, all, &claimed_keys).await?;
    let still: std::collections::HashSet<String> = platform::still_eligible(job, &claimed_keys)
        .fetch_all::<(String,)>(&ctx.db)
        .await
        .context("re-checking eligibility")?
        .into_iter()
        .map(|r| r.0)
        .collect();
    let mut go = Vec::new();
    let mut held_now = Vec::new();
    for r in ready.drain(..) {
        if rows_only(&r) {
            go.push(r);
        } else if !still.contains(&r.key) {
            let msg = "no longer eligible when its objects were to be purged (restored, or its clock \
                       changed); nothing was deleted";
            fail(ctx, job, run_id, &r, "no_longer_eligible", msg, report).await?;
        } else if let Some(h) = held.get(&r.key) {
            held_now.push((r, *h));
        } else if let Some(e) = &merged[&r.id].error {
            fail(ctx, job, run_id, &r, "manifest", e, report).await?;
        } else {
            go.push(r);
        }
    }

    report.held += held_now.len() as u64;
    items::mark_held_many(
        &ctx.db,
        held_now
            .iter()
            .map(|(r, h)| items::Held {
                subject: r.subject(job, run_id),
                hold_id: Some(*h),
                prev_hold: prev_hold[&r.id],
                detail: r.detail(),
            })
            .collect(),
    )
    .await?;

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
        let keys: Vec<String> = subjects.iter().map(|r| r.key.clone()).collect();
        let watch = (!crate::controls::on("no-hold-recheck")).then(|| lease::HoldWatch {
            query: platform::holds_for(job, all, &keys),
            keys,
        });
        Some(Arc::new(lease::Lease::new(
            ctx.db.clone(),
            run_id,
            ctx.settings.lease_seconds,
            subjects.iter().map(|r| (r.id, r.epoch)).collect(),
            watch,
            holds_seen,
        )))
    };
    if crate::controls::on("rows-before-objects") {
        // Negative control: rows first, then the objects, unverified (the items are marked
        // verified first, or the row transaction would refuse to mark them done).
        let fenced: Vec<(i64, i64)> = go.iter().map(|r| (r.id, r.epoch)).collect();
        advance(ctx, run_id, &fenced, ItemState::Verified).await?;
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
        if let Some(hold) = r.tally.held_by {
            held_mid_purge(ctx, job, run_id, &r, prev_hold[&r.id], hold).await?;
            report.held += 1;
        } else if let Some(evidence) = r.tally.denied.clone() {
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
        let moved = advance(ctx, run_id, &fenced, ItemState::ObjectsPurged).await?;
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
    // Leftovers: the purge's range listing missed something (a server whose listing order or
    // pagination surprises us). Purge those subjects again, each directory listed on its own
    // by its own prefix, and verify again, for as long as a pass still deletes something.
    for pass in 1..=CAREFUL_PASSES {
        let again: Vec<usize> = checks
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_err())
            .map(|(i, _)| i)
            .collect();
        if again.is_empty() {
            break;
        }
        tracing::warn!(
            subjects = again.len(),
            pass,
            "leftovers after the purge; purging those again, directory by directory"
        );
        let locs: Vec<Vec<crate::domain::Location>> =
            again.iter().map(|&i| to_verify[i].clone()).collect();
        let owners: Vec<&Ready> = again.iter().map(|&i| &verified[i]).collect();
        let extra = objects::purge(ctx, buckets, &locs, true, lease(&owners)).await;
        let rechecks = verify::verify(ctx, buckets, &locs).await;
        let mut progress = false;
        for ((&i, t), c) in again.iter().zip(extra).zip(rechecks) {
            let r = &mut verified[i];
            progress |= t.versions + t.delete_markers + t.uploads_aborted > 0;
            r.tally.add_counts(&t);
            r.tally.held_by = r.tally.held_by.or(t.held_by);
            report.count_objects(&t);
            checks[i] = match (t.failed, t.denied) {
                (Some(e), _) => Err(e),
                (None, Some(d)) => Err(format!("refused by the store on a later pass: {d}")),
                (None, None) => c,
            };
        }
        if !progress {
            break;
        }
    }
    for (r, check) in verified.into_iter().zip(checks) {
        match (r.tally.held_by, check) {
            (Some(hold), _) => {
                held_mid_purge(ctx, job, run_id, &r, prev_hold[&r.id], hold).await?;
                report.held += 1;
            }
            (None, Ok(())) => ready.push(r),
            (None, Err(e)) => fail(ctx, job, run_id, &r, "verification", &e, report).await?,
        }
    }
    let fenced: Vec<(i64, i64)> = ready
        .iter()
        .filter(|r| has_objects(r))
        .map(|r| (r.id, r.epoch))
        .collect();
    if !fenced.is_empty() {
        advance(ctx, run_id, &fenced, ItemState::Verified).await?;
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

/// Moves fenced items to `to` in a transaction of their own; answers the ids that moved.
async fn advance(
    ctx: &Context,
    run_id: i64,
    fenced: &[(i64, i64)],
    to: ItemState,
) -> Result<Vec<i64>> {
    let mut tx = ctx.db.begin().await?;
    let moved = items::advance(&mut tx, run_id, fenced, to, false).await?;
    tx.commit().await?;
    Ok(moved)
}

/// Purges after the first, each directory listed on its own, while verification still finds
/// leftovers and the previous pass deleted something.
const CAREFUL_PASSES: usize = 3;

/// Records a subject whose purge a hold stopped part way: the deletes sent before the hold
/// committed happened, none after.
async fn held_mid_purge(
    ctx: &Context,
    job: &Job,
    run_id: i64,
    r: &Ready,
    prev_hold: Option<i64>,
    hold: i64,
) -> Result<()> {
    tracing::info!(subject = %r.key, hold, "a hold placed during the purge stopped it");
    let mut d = r.detail();
    d["placed_during_purge"] = true.into();
    items::mark_held(&ctx.db, &r.subject(job, run_id), Some(hold), prev_hold, d)
        .await
        .map(|_| ())
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
    report.error(format!("{}: {class}: {msg}", r.key));
    Ok(())
}

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
