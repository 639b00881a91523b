//! `lethe.job_runs`: one row per run of one job, opened before any work and closed with its
//! outcome, so an operator can see runs that died (still `running`) and what each did.

use super::{Db, lite_time};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use sqlx::{PgPool, SqlitePool};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// This machine's name: `HOSTNAME`, else `/etc/hostname`.
pub fn host() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

pub async fn start(db: &Db, job: &str, dry_run: bool, actor: &str) -> Result<i64> {
    let host = host();
    let sql =
        db.t("INSERT INTO lethe.job_runs (job, dry_run, host, actor) VALUES ($1, $2, $3, $4) RETURNING id");
    crate::on_db!(db, p => sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(job)
        .bind(dry_run)
        .bind(format!("{host}/{}", std::process::id()))
        .bind(actor)
        .fetch_one(p)
        .await)
    .with_context(|| format!("recording the start of job `{job}`"))
}

pub async fn finish(db: &Db, id: i64, status: &str, summary: &serde_json::Value) -> Result<()> {
    let sql = db.t(&format!(
        "UPDATE lethe.job_runs SET finished_at = {}, status = $2, summary = $3 WHERE id = $1",
        db.dialect().now()
    ));
    crate::on_db!(db, p => sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(status)
        .bind(summary)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))
    .context("recording the end of the run")?;
    Ok(())
}

/// The run lock of one job, so two runs of one job never overlap, whichever process starts
/// them.
///
/// PostgreSQL: a session-level advisory lock held on a connection of its own, opened for the
/// run and never part of the work pool: the pool's connections stay free for the run's work,
/// and the lock ends with its session. Dropped without `unlock_job` (a panic, a cancelled
/// task), the connection is closed, so the lock cannot outlive the run. (Behind PgBouncer in
/// transaction pooling, a session lock does not hold: docs/operations.md says what to do.)
///
/// SQLite: a row in `lethe_locks` with an expiry, renewed while the run lasts and deleted at
/// its end; a crashed holder's lock expires after `SQLITE_LOCK_SECONDS`.
///
/// Either can be lost while the run goes on (the session ended by `idle_session_timeout`, a
/// failover or `pg_terminate_backend`; a renewal that failed): `checker` answers whether it is
/// still held, and the run asks before every row transaction and lease renewal.
pub enum JobLock {
    Pg(Arc<tokio::sync::Mutex<Option<sqlx::PgConnection>>>),
    Lite {
        pool: SqlitePool,
        name: String,
        holder: String,
        renew: tokio::task::JoinHandle<()>,
        lost: Arc<AtomicBool>,
    },
}

/// Asks whether a run lock is still held; cloned into every part of the run that deletes.
#[derive(Clone)]
pub enum LockCheck {
    Pg(Arc<tokio::sync::Mutex<Option<sqlx::PgConnection>>>),
    Lite(Arc<AtomicBool>),
}

impl std::fmt::Debug for LockCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LockCheck::Pg(_) => "LockCheck::Pg",
            LockCheck::Lite(_) => "LockCheck::Lite",
        })
    }
}

impl LockCheck {
    /// Whether the lock is still ours: on PostgreSQL, its session still answers and still holds
    /// an advisory lock; on SQLite, every renewal so far succeeded.
    pub async fn held(&self) -> bool {
        match self {
            LockCheck::Pg(conn) => {
                let mut conn = conn.lock().await;
                let Some(c) = conn.as_mut() else { return false };
                sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' \
                     AND pid = pg_backend_pid() AND granted",
                )
                .fetch_one(c)
                .await
                .is_ok_and(|n| n > 0)
            }
            LockCheck::Lite(lost) => !lost.load(Ordering::Relaxed),
        }
    }
}

impl JobLock {
    pub fn checker(&self) -> LockCheck {
        match self {
            JobLock::Pg(conn) => LockCheck::Pg(conn.clone()),
            JobLock::Lite { lost, .. } => LockCheck::Lite(lost.clone()),
        }
    }
}

/// How long a SQLite run lock outlives a holder that stopped renewing it.
const SQLITE_LOCK_SECONDS: i64 = 60;

impl Drop for JobLock {
    fn drop(&mut self) {
        match self {
            JobLock::Pg(conn) => {
                // Dropped, the connection's socket closes: the session and its lock end.
                if let Ok(mut c) = conn.try_lock() {
                    drop(c.take());
                }
            }
            JobLock::Lite { renew, .. } => renew.abort(),
        }
    }
}

fn lock_key(job: &str) -> String {
    format!("lethe:job:{job}")
}

pub async fn try_lock_job(db: &Db, job: &str) -> Result<Option<JobLock>> {
    match db {
        Db::Pg(p) => try_lock_pg(p, job).await,
        Db::Lite(p) => try_lock_lite(p, job).await,
    }
}

async fn try_lock_pg(pool: &PgPool, job: &str) -> Result<Option<JobLock>> {
    let mut conn = lock_connection(pool, job).await?;
    Ok(try_on(&mut conn, job)
        .await?
        .then(|| JobLock::Pg(Arc::new(tokio::sync::Mutex::new(Some(conn))))))
}

/// The run lock's own connection (see `JobLock`).
async fn lock_connection(pool: &PgPool, job: &str) -> Result<sqlx::PgConnection> {
    use sqlx::Connection;
    // Named, so an operator sees in pg_stat_activity which session holds which job (unless
    // DATABASE_URL names the application itself).
    let mut options = (*pool.connect_options()).clone();
    if options.get_application_name().is_none() {
        options = options.application_name(&format!("lethe run lock: {job}"));
    }
    sqlx::PgConnection::connect_with(&options)
        .await
        .with_context(|| format!("opening the run lock's connection for job `{job}`"))
}

/// Takes the job's run lock on `conn` if it is free.
async fn try_on(conn: &mut sqlx::PgConnection, job: &str) -> Result<bool> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
        .bind(lock_key(job))
        .fetch_one(conn)
        .await
        .with_context(|| format!("taking the run lock of job `{job}`"))
}

async fn try_lock_lite(pool: &SqlitePool, job: &str) -> Result<Option<JobLock>> {
    let name = lock_key(job);
    let holder = format!("{}:{}", std::process::id(), rand_token());
    let until = |secs: i64| lite_time(Utc::now() + chrono::Duration::seconds(secs));
    let got = sqlx::query(
        "INSERT INTO lethe_locks (name, holder, until) VALUES ($1, $2, $3)
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until
         WHERE lethe_locks.until < strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
    )
    .bind(&name)
    .bind(&holder)
    .bind(until(SQLITE_LOCK_SECONDS))
    .execute(pool)
    .await
    .with_context(|| format!("taking the run lock of job `{job}`"))?
    .rows_affected()
        == 1;
    if !got {
        return Ok(None);
    }
    let lost = Arc::new(AtomicBool::new(false));
    let renew = {
        let (pool, name, holder, lost) = (pool.clone(), name.clone(), holder.clone(), lost.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(
                    SQLITE_LOCK_SECONDS as u64 / 4,
                ))
                .await;
                let renewed = sqlx::query(
                    "UPDATE lethe_locks SET until = $3 WHERE name = $1 AND holder = $2",
                )
                .bind(&name)
                .bind(&holder)
                .bind(until(SQLITE_LOCK_SECONDS))
                .execute(&pool)
                .await;
                // A renewal that failed, or found the lock another holder's, may have let the
                // lock expire: the run stops deleting.
                if !renewed.is_ok_and(|r| r.rows_affected() == 1) {
                    tracing::error!(lock = %name, "the run lock could not be renewed; it may be lost");
                    lost.store(true, Ordering::Relaxed);
                    return;
                }
            }
        })
    };
    Ok(Some(JobLock::Lite {
        pool: pool.clone(),
        name,
        holder,
        renew,
        lost,
    }))
}

/// A hard-to-guess token: a randomly keyed hash of the time.
pub(crate) fn rand_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Utc::now().timestamp_nanos_opt().unwrap_or_default() as u128);
    format!("{:016x}", h.finish())
}

/// Waits until the job's run lock is free and takes it, checking every `every`.
pub async fn lock_job_waiting(db: &Db, job: &str, every: std::time::Duration) -> Result<JobLock> {
    if let Db::Pg(pool) = db {
        // One connection for the whole wait, which becomes the lock's.
        let mut conn = lock_connection(pool, job).await?;
        while !try_on(&mut conn, job).await? {
            tokio::time::sleep(every).await;
        }
        return Ok(JobLock::Pg(Arc::new(tokio::sync::Mutex::new(Some(conn)))));
    }
    loop {
        if let Some(lock) = try_lock_job(db, job).await? {
            return Ok(lock);
        }
        tokio::time::sleep(every).await;
    }
}

pub async fn unlock_job(mut lock: JobLock, job: &str) {
    match &mut lock {
        JobLock::Pg(conn) => {
            let Some(mut conn) = conn.lock().await.take() else {
                return;
            };
            use sqlx::Connection;
            let _ = sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
                .bind(lock_key(job))
                .execute(&mut conn)
                .await;
            // The connection is the lock's own: closing it ends the session, which releases a
            // session lock whether or not the unlock above answered.
            let _ = conn.close().await;
        }
        JobLock::Lite {
            pool,
            name,
            holder,
            renew,
            ..
        } => {
            renew.abort();
            let _ = sqlx::query("DELETE FROM lethe_locks WHERE name = $1 AND holder = $2")
                .bind(&*name)
                .bind(&*holder)
                .execute(&*pool)
                .await;
        }
    }
}

/// When the job last finished a run with nothing left undone (`ok`, not a dry run), by any
/// process.
pub async fn last_success(db: &Db, job: &str) -> Result<Option<DateTime<Utc>>> {
    let sql = db.t("SELECT max(finished_at) FROM lethe.job_runs
         WHERE job = $1 AND NOT dry_run AND status = 'ok'");
    crate::on_db!(db, p => sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(job)
        .fetch_one(p)
        .await)
    .with_context(|| format!("reading the last successful run of job `{job}`"))
}

/// When the job last finished a run that was not a dry run, by the database's clock.
pub async fn last_finished(db: &Db, job: &str) -> Result<Option<DateTime<Utc>>> {
    let sql = db.t("SELECT max(finished_at) FROM lethe.job_runs
         WHERE job = $1 AND NOT dry_run AND status IN ('ok', 'partial')");
    crate::on_db!(db, p => sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(job)
        .fetch_one(p)
        .await)
    .with_context(|| format!("reading the last run of job `{job}`"))
}
