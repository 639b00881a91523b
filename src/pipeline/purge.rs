//! One batch of subjects through the steps, in the order `pipeline` (mod.rs) argues for: manifest
//! and claim, hold check, objects, verification, rows and audit. A subject that fails a step, or
//! is held, leaves the batch there with its outcome recorded; the others go on.

use super::manifest::{self, Manifest};
use super::objects::{self, Buckets, Tally};
use super::rows::{self, RowOutcome};
use super::{JobReport, Ready, Stages, hold_map, ownership};
use super::{lease, locks};
use crate::context::Context;
use crate::db::{items, platform};
use crate::domain::ItemState;
use crate::spec::Job;
use anyhow::{Context as _, Result};
use std::collections::HashMap;
use std::sync::Arc;

mod record;
mod verified;

/// Takes one batch of discovered subjects through every step; each subject's outcome (purged,
/// held, failed, busy) is counted in `report` and recorded in the work items and the audit log.
/// Each step takes the subjects the previous one passed on, and answers those it passes on.
#[allow(clippy::too_many_arguments)]
pub(super) async fn purge_batch(
    ctx: &Context,
    job: &Job,
    all: &[Job],
    run_id: i64,
    buckets: &Buckets,
    batch: &[platform::Candidate],
    run_lock: Option<&crate::db::runs::LockCheck>,
    report: &mut JobReport,
) -> Result<()> {
    let mut stages = Stages::start();
    let manifests = manifest::build(
        ctx,
        job,
        &batch.iter().map(|c| c.key.clone()).collect::<Vec<_>>(),
        false,
    )
    .await?;
    stages.mark("manifest");
    let (mut b, claimed) =
        Batch::claim(ctx, job, all, run_id, buckets, batch, &manifests, report).await?;
    b.run_lock = run_lock.cloned();
    stages.mark("claim");
    let go = b.check_holds(claimed, report).await?;
    stages.mark("holds");
    let go = b.check_ownership(go, report).await?;
    stages.mark("ownership");
    let go = b.check_storage_holds(go, report).await?;
    stages.mark("locks");
    if crate::controls::on("rows-before-objects") {
        return b.rows_before_objects(go, report).await;
    }
    let purged = b.purge_objects(go, report).await?;
    stages.mark("objects");
    let verified = b.verify(purged, report).await?;
    stages.mark("verify");
    if let Some(lock) = &b.run_lock
        && !lock.held().await
    {
        anyhow::bail!(
            "the run lock of job `{}` was lost (its database session ended): this run stops \
             deleting, and its subjects are left for the next run to take over",
            job.name
        );
    }
    b.purge_rows(verified, report).await?;
    stages.mark("rows");
    tracing::info!(subjects = batch.len(), stages_ms = %stages, "batch done");
    Ok(())
}

/// What every step of one batch shares: where it runs, and what the claim recorded per work
/// item (its manifest, the hold it was held by before).
struct Batch<'a> {
    ctx: &'a Context,
    job: &'a Job,
    all: &'a [Job],
    run_id: i64,
    buckets: &'a Buckets,
    manifests: HashMap<i64, Manifest>,
    prev_hold: HashMap<i64, Option<i64>>,
    /// The holds' change counter before the hold check: any change after it has the subjects
    /// checked again before the next delete request.
    holds_seen: i64,
    /// The job's run lock, asked before the row transaction and every lease renewal.
    run_lock: Option<crate::db::runs::LockCheck>,
}

impl<'a> Batch<'a> {
    /// Step 1, manifest and claim: writes each subject's work item with its manifest and
    /// deadline, under a lease, before anything is touched. Subjects another process holds are
    /// counted busy and left.
    #[allow(clippy::too_many_arguments)]
    async fn claim(
        ctx: &'a Context,
        job: &'a Job,
        all: &'a [Job],
        run_id: i64,
        buckets: &'a Buckets,
        batch: &[platform::Candidate],
        manifests: &HashMap<String, Manifest>,
        report: &mut JobReport,
    ) -> Result<(Batch<'a>, Vec<Ready>)> {
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
        let ready = claimed
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
        let b = Batch {
            ctx,
            job,
            all,
            run_id,
            buckets,
            prev_hold: claimed.iter().map(|c| (c.id, c.prev_hold)).collect(),
            manifests: claimed
                .iter()
                .map(|c| {
                    let m = Manifest::decode(&c.manifest).unwrap_or_else(|e| Manifest {
                        error: Some(e),
                        ..Default::default()
                    });
                    (c.id, m)
                })
                .collect(),
            holds_seen: 0,
            run_lock: None,
        };
        Ok((b, ready))
    }

    fn has_objects(&self, r: &Ready) -> bool {
        !self.manifests[&r.id].locations.is_empty()
    }

    fn locations(&self, r: &Ready) -> Vec<crate::domain::Location> {
        self.manifests[&r.id].locations.clone()
    }

    /// The manifest's locations of each of `subjects`, by subject key.
    fn manifest_of(&self, subjects: &[Ready]) -> HashMap<String, Vec<crate::domain::Location>> {
        subjects
            .iter()
            .map(|r| (r.key.clone(), self.locations(r)))
            .collect()
    }

    /// Step 2, holds and eligibility, immediately before the first destructive step: a subject
    /// restored since it was discovered fails with nothing deleted; a held one is recorded held.
    /// A subject with no objects (and a complete manifest) has no step before its row
    /// transaction, which checks both under lock, so it passes straight on.
    async fn check_holds(
        &mut self,
        claimed: Vec<Ready>,
        report: &mut JobReport,
    ) -> Result<Vec<Ready>> {
        let (ctx, job) = (self.ctx, self.job);
        // Read before the hold check: a hold placed after this is checked again before each
        // delete.
        self.holds_seen = crate::db::holds::changes(&ctx.db).await?;
        let rows_only = |r: &Ready| !self.has_objects(r) && self.manifests[&r.id].error.is_none();
        let keys: Vec<String> = claimed
            .iter()
            .filter(|r| !rows_only(r))
            .map(|r| r.key.clone())
            .collect();
        let held = hold_map(ctx, job, self.all, &keys).await?;
        let still: std::collections::HashSet<String> =
            platform::still_eligible(job, self.all, &keys)
                .fetch_all::<(String,)>(&ctx.db)
                .await
                .context("re-checking eligibility")?
                .into_iter()
                .map(|r| r.0)
                .collect();
        let (mut go, mut held_now) = (Vec::new(), Vec::new());
        for r in claimed {
            if let Some(why) = super::implausible_clock(r.clock_at) {
                self.fail(&r, "clock", &why, report).await?;
            } else if rows_only(&r) {
                go.push(r);
            } else if !still.contains(&r.key) {
                let msg = "no longer eligible when its objects were to be purged (restored, or its \
                           clock changed); nothing was deleted";
                self.fail(&r, "no_longer_eligible", msg, report).await?;
            } else if let Some(h) = held.get(&r.key) {
                held_now.push((r, *h));
            } else if let Some(e) = self.manifests[&r.id].error.clone() {
                self.fail(&r, "manifest", &e, report).await?;
            } else {
                go.push(r);
            }
        }
        report.held += held_now.len() as u64;
        let run_id = self.run_id;
        items::mark_held_many(
            &ctx.db,
            held_now
                .iter()
                .map(|(r, h)| items::Held {
                    subject: r.subject(job, run_id, &ctx.settings.actor),
                    hold_id: Some(*h),
                    prev_hold: self.prev_hold[&r.id],
                    detail: r.detail(),
                })
                .collect(),
        )
        .await?;
        Ok(go)
    }

    /// Step 2b, ownership: a subject one of whose locations another row of the database
    /// points at or into (live, in grace, held, another job's or table's) fails with the rows
    /// named; the rows of the subjects going on are no claim.
    async fn check_ownership(&self, go: Vec<Ready>, report: &mut JobReport) -> Result<Vec<Ready>> {
        let asked: Vec<(String, Vec<crate::domain::Location>)> = go
            .iter()
            .filter(|r| self.has_objects(r))
            .map(|r| (r.key.clone(), self.locations(r)))
            .collect();
        let claimed = ownership::claimed(self.ctx, self.job, self.all, &asked).await;
        let mut owned = Vec::with_capacity(go.len());
        for r in go {
            match claimed.get(&r.key) {
                Some(why) => self.fail(&r, "ownership", why, report).await?,
                None => owned.push(r),
            }
        }
        Ok(owned)
    }

    /// Step 3, storage holds: S3 Object Lock on any version keeps the whole subject, asked before
    /// any of its objects is deleted.
    async fn check_storage_holds(
        &self,
        go: Vec<Ready>,
        report: &mut JobReport,
    ) -> Result<Vec<Ready>> {
        let locations: Vec<_> = go.iter().map(|r| self.locations(r)).collect();
        let locks = locks::storage_holds(self.ctx, self.buckets, &locations).await;
        let mut unlocked = Vec::new();
        for (r, lock) in go.into_iter().zip(locks) {
            match lock {
                Ok(None) => unlocked.push(r),
                Ok(Some(evidence)) => {
                    self.held_by_storage(&r, evidence).await?;
                    report.held += 1;
                    report.storage_held += 1;
                }
                Err(e) => self.fail(&r, "objects", &e, report).await?,
            }
        }
        Ok(unlocked)
    }

    /// The fence for deletes of `subjects`: their leases, and holds placed since step 2.
    fn lease(&self, subjects: &[&Ready]) -> Option<Arc<lease::Lease>> {
        let keys: Vec<String> = subjects.iter().map(|r| r.key.clone()).collect();
        let watch = (!crate::controls::on("no-hold-recheck")).then(|| lease::HoldWatch {
            query: platform::holds_for(self.job, self.all, &keys),
            keys,
        });
        Some(Arc::new(lease::Lease::new(
            self.ctx.db.clone(),
            self.run_id,
            self.ctx.settings.lease_seconds,
            subjects.iter().map(|r| (r.id, r.epoch)).collect(),
            watch,
            self.holds_seen,
            self.run_lock.clone(),
        )))
    }

    /// Negative control: rows first, then the objects, unverified (the items are marked
    /// verified first, or the row transaction would refuse to mark them done).
    async fn rows_before_objects(&self, go: Vec<Ready>, report: &mut JobReport) -> Result<()> {
        let fenced: Vec<(i64, i64)> = go.iter().map(|r| (r.id, r.epoch)).collect();
        advance(self.ctx, self.run_id, &fenced, ItemState::Verified).await?;
        let outcomes = rows::purge(
            self.ctx,
            self.job,
            self.all,
            self.run_id,
            &go,
            &self.manifest_of(&go),
        )
        .await;
        report.purged += outcomes
            .iter()
            .filter(|o| matches!(o, RowOutcome::Purged { .. }))
            .count() as u64;
        let locations: Vec<_> = go.iter().map(|r| self.locations(r)).collect();
        objects::purge(self.ctx, self.buckets, &locations, false, None).await;
        Ok(())
    }

    /// Step 4, objects: every version, delete marker and unfinished upload at each location,
    /// each request fenced. A subject a hold placed meanwhile stops is recorded held, one the
    /// store refused by Object Lock held by storage, one with a failure failed; the rest move
    /// to `objects_purged` (those whose lease moved on are counted busy).
    async fn purge_objects(&self, go: Vec<Ready>, report: &mut JobReport) -> Result<Vec<Ready>> {
        tracing::info!(subjects = go.len(), "purging objects");
        let locations: Vec<_> = go.iter().map(|r| self.locations(r)).collect();
        let tallies = objects::purge(
            self.ctx,
            self.buckets,
            &locations,
            false,
            self.lease(&go.iter().collect::<Vec<_>>()),
        )
        .await;
        let mut purged = Vec::new();
        for (mut r, t) in go.into_iter().zip(tallies) {
            report.count_objects(&t);
            r.tally = t;
            if let Some(hold) = r.tally.held_by {
                self.held_mid_purge(&r, hold).await?;
                report.held += 1;
            } else if let Some(evidence) = r.tally.denied.clone() {
                self.held_by_storage(&r, evidence).await?;
                report.held += 1;
                report.storage_held += 1;
            } else if let Some(e) = r.tally.failed.clone() {
                self.fail(&r, "objects", &e, report).await?;
            } else {
                purged.push(r);
            }
        }
        // Subjects without object locations skip the object states: there is nothing for them
        // to record, and the row transaction fences them like every other subject.
        let fenced: Vec<(i64, i64)> = purged
            .iter()
            .filter(|r| self.has_objects(r))
            .map(|r| (r.id, r.epoch))
            .collect();
        let before = purged.len();
        if !fenced.is_empty() {
            let moved = advance(self.ctx, self.run_id, &fenced, ItemState::ObjectsPurged).await?;
            purged.retain(|r| !self.has_objects(r) || moved.contains(&r.id));
        }
        report.busy += (before - purged.len()) as u64;
        Ok(purged)
    }

    /// Step 6, rows and audit: one transaction re-checks holds and eligibility with the subject
    /// rows locked, deletes children before parents and the subject row last, marks the items
    /// done and appends the `purged` entries.
    async fn purge_rows(&self, verified: Vec<Ready>, report: &mut JobReport) -> Result<()> {
        let (ctx, job, run_id) = (self.ctx, self.job, self.run_id);
        let manifest = self.manifest_of(&verified);
        let outcomes = rows::purge(ctx, job, self.all, run_id, &verified, &manifest).await;
        for (r, o) in verified.iter().zip(outcomes) {
            match o {
                RowOutcome::Purged { rows } => {
                    report.purged += 1;
                    report.rows_deleted += rows.values().sum::<i64>();
                }
                RowOutcome::Held { hold_id } => {
                    items::mark_held(
                        &ctx.db,
                        &r.subject(job, run_id, &ctx.settings.actor),
                        Some(hold_id),
                        self.prev_hold[&r.id],
                        r.detail(),
                    )
                    .await?;
                    report.held += 1;
                }
                RowOutcome::NoLongerEligible => {
                    let msg = if self.has_objects(r) {
                        "no longer eligible when its rows were to be deleted (restored, or its clock \
                         changed); its objects were already purged, its rows are kept"
                    } else {
                        "no longer eligible when its rows were to be deleted (restored, or its clock \
                         changed); nothing was deleted"
                    };
                    self.fail(r, "no_longer_eligible", msg, report).await?;
                }
                RowOutcome::Failed(e) => self.fail(r, "rows", &e, report).await?,
            }
        }
        Ok(())
    }
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
