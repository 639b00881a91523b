//! Every subject of a job with a clock, as the plan sees it now (eligible, held, waiting,
//! overdue, a clock in the future, a name the store keeps differently), streamed: what `lethe
//! plan --format jsonl` prints and what the report's overdue lists are read from.

use super::Db;
use crate::spec::Job;
use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};

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
    db: &Db,
    job: &Job,
    all: &[Job],
    mut each: impl FnMut(PlanSubject) -> Result<()>,
) -> Result<()> {
    let sql = super::platform::plan_rows(job, all);
    sql.for_each::<PlanRow>(
        db,
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
