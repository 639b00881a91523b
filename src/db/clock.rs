//! The clock guard. Eligibility is judged by the database's clock, so a database clock that
//! jumps forward (a bad NTP step, a restored VM, a wrong manual setting) would make subjects
//! eligible early: a destructive run checks the clock against the newest time lethe has
//! recorded (runs and audit entries) and refuses when it moved backwards, or forwards by more
//! than `LETHE_CLOCK_MAX_GAP_SECONDS`, until an operator confirms the clock with
//! `lethe clock confirm`. A long gap between runs (downtime) trips it the same way: that is
//! the price of catching a jump across restarts. Before that, the database clock is held
//! against clocks it does not control (the host's, the object store's `Date`): a disagreement
//! of more than a few minutes refuses the run, whatever the gap.

use super::Db;
use super::audit::{NewEntry, append};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use std::time::Duration;

/// A backwards step smaller than this is ordinary clock slew, not a jump.
const BACKWARD_TOLERANCE_SECS: i64 = 300;

/// The guard refused destructive work: exit code 4.
#[derive(Debug)]
pub struct ClockJump(pub String);

impl std::fmt::Display for ClockJump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}; nothing was deleted. If the clock is right (e.g. after planned downtime), record it with `lethe clock confirm --by NAME` and run again",
            self.0
        )
    }
}

impl std::error::Error for ClockJump {}

/// The database's `now()` and the newest time lethe recorded, if any.
async fn readings(db: &Db) -> Result<(DateTime<Utc>, Option<DateTime<Utc>>)> {
    match db {
        Db::Pg(p) => sqlx::query_as(
            "SELECT now(), greatest(
                 (SELECT max(greatest(started_at, coalesce(finished_at, started_at))) FROM lethe.job_runs WHERE NOT dry_run),
                 (SELECT at FROM lethe.audit_log ORDER BY seq DESC LIMIT 1))",
        )
        .persistent(false)
        .fetch_one(p)
        .await,
        // Times are canonical text, so the greatest string is the latest time.
        Db::Lite(p) => sqlx::query_as(
            "SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), (SELECT max(t) FROM (
                 SELECT max(max(started_at, coalesce(finished_at, started_at))) AS t FROM lethe_job_runs WHERE NOT dry_run
                 UNION ALL SELECT at FROM (SELECT at FROM lethe_audit_log ORDER BY seq DESC LIMIT 1)))",
        )
        .fetch_one(p)
        .await,
    }
    .context("reading the database clock")
}

/// How far the database clock may be from another clock before a run is refused: ordinary
/// drift between NTP-synchronised machines is milliseconds; a jump is minutes or days.
pub const WITNESS_TOLERANCE_SECS: i64 = 300;

/// Errs with `ClockJump` when the database clock disagrees with any of `witnesses` (other
/// clocks, by name and reading: the host's, the object store's) by more than
/// `WITNESS_TOLERANCE_SECS`, moved backwards, or moved forwards by more than `max_gap` (None:
/// no forward limit) since lethe last recorded a time.
pub async fn check(
    db: &Db,
    max_gap: Option<Duration>,
    witnesses: &[(&str, DateTime<Utc>)],
) -> Result<()> {
    let (now, last) = readings(db).await?;
    for (name, reading) in witnesses {
        let apart = (now - *reading).num_seconds();
        if apart.abs() > WITNESS_TOLERANCE_SECS {
            return Err(ClockJump(format!(
                "the database clock ({now}) is {}s {} {name} ({reading}), more than the {}s \
                 two synchronised clocks may differ: one of them jumped",
                apart.abs(),
                if apart > 0 { "ahead of" } else { "behind" },
                WITNESS_TOLERANCE_SECS
            ))
            .into());
        }
    }
    let Some(last) = last else { return Ok(()) };
    let ahead = (now - last).num_seconds();
    if ahead < -BACKWARD_TOLERANCE_SECS {
        return Err(ClockJump(format!(
            "the database clock ({now}) is {}s behind the newest time lethe recorded ({last})",
            -ahead
        ))
        .into());
    }
    if let Some(gap) = max_gap
        && ahead > gap.as_secs() as i64
    {
        return Err(ClockJump(format!(
            "the database clock ({now}) is {ahead}s past the newest time lethe recorded ({last}), more than LETHE_CLOCK_MAX_GAP_SECONDS={}",
            gap.as_secs()
        ))
        .into());
    }
    Ok(())
}

/// Records that an operator vouches for the database clock now: an audit entry, which also
/// becomes the newest recorded time.
pub async fn confirm(db: &Db, by: &str) -> Result<(DateTime<Utc>, Option<DateTime<Utc>>)> {
    anyhow::ensure!(
        !by.trim().is_empty(),
        "--by must name who confirms the clock"
    );
    let (now, last) = readings(db).await?;
    let mut tx = db.begin().await?;
    append(
        &mut tx,
        vec![NewEntry {
            run_id: None,
            job: None,
            subject_key: None,
            owner: None,
            event: crate::audit::event::CLOCK_CONFIRMED,
            hold_id: None,
            detail: serde_json::json!({ "by": by, "database_now": now, "previous_recorded": last }),
        }],
    )
    .await?;
    tx.commit()
        .await
        .context("recording the clock confirmation")?;
    Ok((now, last))
}

/// The database's clock now.
pub async fn now(db: &Db) -> Result<DateTime<Utc>> {
    let sql = format!("SELECT {}", db.dialect().now());
    Ok(
        crate::on_db!(db, p => sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(p)
        .await)?,
    )
}
