//! `lethe.job_runs`: one row per run of one job, opened before any work and closed with its
//! outcome, so an operator can see runs that died (still `running`) and what each did.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use sqlx::PgPool;

pub async fn start(pool: &PgPool, job: &str, dry_run: bool) -> Result<i64> {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    sqlx::query_scalar(
        "INSERT INTO lethe.job_runs (job, dry_run, host) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(job)
    .bind(dry_run)
    .bind(format!("{host}/{}", std::process::id()))
    .fetch_one(pool)
    .await
    .with_context(|| format!("recording the start of job `{job}`"))
}

pub async fn finish(
    pool: &PgPool,
    id: i64,
    status: &str,
    summary: &serde_json::Value,
) -> Result<()> {
    sqlx::query(
        "UPDATE lethe.job_runs SET finished_at = now(), status = $2, summary = $3 WHERE id = $1",
    )
    .bind(id)
    .bind(status)
    .bind(summary)
    .execute(pool)
    .await
    .context("recording the end of the run")?;
    Ok(())
}

/// A session-level advisory lock per job, so two runs of one job never overlap, whichever
/// process starts them. Held on its own connection for the run's length. Dropped without
/// `unlock_job` (a panic, a cancelled task), the connection is closed rather than returned to
/// the pool, so the lock cannot outlive the run on a pooled session.
pub struct JobLock(Option<sqlx::pool::PoolConnection<sqlx::Postgres>>);

impl Drop for JobLock {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            // Detached, the connection is closed when dropped: the session and its lock end.
            drop(conn.detach());
        }
    }
}

fn lock_key(job: &str) -> String {
    format!("lethe:job:{job}")
}

pub async fn try_lock_job(pool: &PgPool, job: &str) -> Result<Option<JobLock>> {
    let mut conn = pool.acquire().await?;
    let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
        .bind(lock_key(job))
        .fetch_one(&mut *conn)
        .await
        .with_context(|| format!("taking the run lock of job `{job}`"))?;
    Ok(got.then(|| JobLock(Some(conn))))
}

/// Waits until the job's run lock is free and takes it, checking every `every`.
pub async fn lock_job_waiting(
    pool: &PgPool,
    job: &str,
    every: std::time::Duration,
) -> Result<JobLock> {
    loop {
        if let Some(lock) = try_lock_job(pool, job).await? {
            return Ok(lock);
        }
        tokio::time::sleep(every).await;
    }
}

pub async fn unlock_job(mut lock: JobLock, job: &str) {
    let Some(mut conn) = lock.0.take() else {
        return;
    };
    let res = sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
        .bind(lock_key(job))
        .execute(&mut *conn)
        .await;
    if res.is_err() {
        // Closing the connection releases a session lock for certain.
        let _ = conn.close().await;
    }
}

/// When the job last finished a run that was not a dry run, by the database's clock.
pub async fn last_finished(pool: &PgPool, job: &str) -> Result<Option<DateTime<Utc>>> {
    sqlx::query_scalar(
        "SELECT max(finished_at) FROM lethe.job_runs
         WHERE job = $1 AND NOT dry_run AND status IN ('ok', 'partial')",
    )
    .bind(job)
    .fetch_one(pool)
    .await
    .with_context(|| format!("reading the last run of job `{job}`"))
}
