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

pub use crate::db::plan::{PlanSubject, each_subject};

/// Streams one JSON line per subject with a clock, in constant memory.
pub async fn subjects(ctx: &Context, job: &Job, all: &[Job], out: &mut dyn Write) -> Result<()> {
    each_subject(&ctx.db, job, all, |p| {
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
