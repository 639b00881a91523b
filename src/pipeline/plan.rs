//! `lethe plan`: what would happen now and why, per job. Reads only.

use crate::context::Context;
use crate::db::platform;
use crate::spec::Job;
use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::io::Write;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PlanCounts {
    pub job: String,
    /// Past grace, not held: the next run purges these.
    pub eligible: i64,
    /// Past grace but covered by a hold.
    pub held: i64,
    /// Still inside the restore window.
    pub waiting: i64,
    /// Past the promised deadline, not held, not purged: a breach in progress.
    pub overdue: i64,
    /// When the longest-waiting eligible, unheld subject became eligible.
    pub oldest_eligible_at: Option<DateTime<Utc>>,
    /// The earliest promised deadline among unheld subjects not yet purged (past: overdue).
    pub next_deadline_at: Option<DateTime<Utc>>,
    /// Of `waiting`, those whose clock is in the future (an application server's skew, or a
    /// platform that stores "delete after"): they wait, and never stop the job.
    pub future_clock: i64,
    /// Of `eligible`, those the last run failed because the object store keeps one of their
    /// names differently than it was written (a backslash SeaweedFS stores as `/`, a character
    /// its listing cannot name): lethe cannot purge them as things are.
    pub store_name: i64,
}

pub async fn counts(ctx: &Context, job: &Job, all: &[Job]) -> Result<PlanCounts> {
    type Counts = (
        i64,
        i64,
        i64,
        i64,
        Option<DateTime<Utc>>,
        Option<DateTime<Utc>>,
        i64,
        i64,
    );
    let (
        eligible,
        held,
        waiting,
        overdue,
        oldest_eligible_at,
        next_deadline_at,
        future_clock,
        store_name,
    ): Counts = platform::plan_counts(job, all)
        .fetch_one(&ctx.db)
        .await
        .with_context(|| format!("planning job `{}`", job.name))?;
    Ok(PlanCounts {
        job: job.name.clone(),
        eligible,
        held,
        waiting,
        overdue,
        oldest_eligible_at,
        next_deadline_at,
        future_clock,
        store_name,
    })
}

#[derive(Serialize)]
struct SubjectLine<'a> {
    job: &'a str,
    key: String,
    owner: Option<String>,
    clock_at: DateTime<Utc>,
    eligible_at: DateTime<Utc>,
    deadline_at: DateTime<Utc>,
    status: &'static str,
    hold_id: Option<i64>,
    /// Held by the object store (S3 Object Lock), as the last run found.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    held_by_storage: bool,
}

/// One subject with a clock, as the plan sees it now.
pub struct PlanSubject {
    pub key: String,
    pub owner: Option<String>,
    pub clock_at: DateTime<Utc>,
    pub eligible_at: DateTime<Utc>,
    pub deadline_at: DateTime<Utc>,
    /// The lowest active hold covering it.
    pub hold_id: Option<i64>,
    /// The last run found it held by the object store (S3 Object Lock).
    pub storage_held: bool,
    /// Past its grace.
    pub eligible: bool,
    /// Past its deadline.
    pub overdue: bool,
    /// Its clock is in the future, by the database's clock.
    pub future_clock: bool,
    /// The last run failed it: the store keeps one of its names differently.
    pub store_name: bool,
}

type PlanRow = (
    String,
    Option<String>,
    DateTime<Utc>,
    DateTime<Utc>,
    DateTime<Utc>,
    Option<i64>,
    bool,
    bool,
    bool,
    bool,
    bool,
);

/// Calls `each` with every subject of `job` that has a clock, streaming from the database.
pub async fn each_subject(
    ctx: &Context,
    job: &Job,
    all: &[Job],
    mut each: impl FnMut(PlanSubject) -> Result<()>,
) -> Result<()> {
    let sql = platform::plan_rows(job, all);
    sql.for_each::<PlanRow>(
        &ctx.db,
        |(
            key,
            owner,
            clock_at,
            eligible_at,
            deadline_at,
            hold_id,
            storage_held,
            eligible,
            overdue,
            future_clock,
            store_name,
        )| {
            each(PlanSubject {
                key,
                owner,
                clock_at,
                eligible_at,
                deadline_at,
                hold_id,
                storage_held,
                eligible,
                overdue,
                future_clock,
                store_name,
            })
        },
    )
    .await
    .with_context(|| format!("listing the subjects of job `{}`", job.name))?;
    Ok(())
}

/// Streams one JSON line per subject with a clock, in constant memory.
pub async fn subjects(ctx: &Context, job: &Job, all: &[Job], out: &mut dyn Write) -> Result<()> {
    each_subject(ctx, job, all, |p| {
        let held = p.hold_id.is_some() || p.storage_held;
        let status = match (held, p.eligible, p.overdue) {
            (true, true, _) => "held",
            (_, false, _) if p.future_clock => "future_clock",
            (_, false, _) => "waiting",
            (false, true, _) if p.store_name => "store_name",
            (false, true, true) => "overdue",
            (false, true, false) => "eligible",
        };
        let line = SubjectLine {
            job: &job.name,
            key: p.key,
            owner: p.owner,
            clock_at: p.clock_at,
            eligible_at: p.eligible_at,
            deadline_at: p.deadline_at,
            status,
            hold_id: p.hold_id,
            held_by_storage: p.storage_held,
        };
        serde_json::to_writer(&mut *out, &line)?;
        out.write_all(b"\n")?;
        Ok(())
    })
    .await
}
