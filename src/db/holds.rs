//! Placing, releasing and listing holds. Each change writes its audit entry in the same
//! transaction, and takes the holds lock exclusively: a purge transaction holds it shared while
//! it re-checks holds and deletes, so a hold placed mid-purge either waits for that purge to
//! commit or is seen by it (never neither).

use super::audit::{NewEntry, append};
use super::{Db, Tx};
use crate::audit::event;
use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use serde::Serialize;

pub const HOLDS_LOCK: i64 = 0x6c65_7468_6500_0002;

/// What a hold covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Everything the account owns, in every job.
    Account(String),
    /// Every subject of one job.
    Job(String),
    /// One subject of one job.
    Subject { job: String, key: String },
}

/// A scope in words: `account 7`, `subject deleted-runs:42`, `every subject of job x`.
pub fn describe(scope: &Scope) -> String {
    match scope {
        Scope::Account(a) => format!("account {a}"),
        Scope::Job(j) => format!("every subject of job {j}"),
        Scope::Subject { job, key } => format!("subject {job}:{key}"),
    }
}

#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct Hold {
    pub id: i64,
    pub account: Option<String>,
    pub job: Option<String>,
    pub subject_key: Option<String>,
    pub reason: String,
    pub placed_by: String,
    pub placed_at: DateTime<Utc>,
    pub released_at: Option<DateTime<Utc>>,
    pub released_by: Option<String>,
    pub release_reason: Option<String>,
}

impl Hold {
    pub fn scope_text(&self) -> String {
        scope_words(
            self.account.as_deref(),
            self.job.as_deref(),
            self.subject_key.as_deref(),
        )
    }
}

/// A hold's scope from its columns: `account 7`, `subject deleted-runs:42`, `job x`.
pub fn scope_words(account: Option<&str>, job: Option<&str>, key: Option<&str>) -> String {
    match (account, job, key) {
        (Some(a), _, _) => format!("account {a}"),
        (None, Some(j), Some(k)) => format!("subject {j}:{k}"),
        (None, Some(j), None) => format!("job {j}"),
        _ => "?".into(),
    }
}

/// On SQLite the transaction's write lock (`BEGIN IMMEDIATE`) already excludes every other
/// writer, so both locks are that lock.
pub async fn lock_exclusive(tx: &mut Tx) -> Result<()> {
    if let Tx::Pg(t) = tx {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(HOLDS_LOCK)
            .execute(&mut **t)
            .await?;
    }
    Ok(())
}

pub async fn lock_shared(tx: &mut Tx) -> Result<()> {
    if let Tx::Pg(t) = tx {
        sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
            .bind(HOLDS_LOCK)
            .execute(&mut **t)
            .await?;
    }
    Ok(())
}

pub async fn place(db: &Db, scope: &Scope, reason: &str, by: &str) -> Result<i64> {
    if reason.trim().is_empty() || by.trim().is_empty() {
        bail!("a hold needs a non-empty --reason and --by");
    }
    let (account, job, key) = match scope {
        Scope::Account(a) => (Some(a.as_str()), None, None),
        Scope::Job(j) => (None, Some(j.as_str()), None),
        Scope::Subject { job, key } => (None, Some(job.as_str()), Some(key.as_str())),
    };
    let mut tx = db.begin().await?;
    lock_exclusive(&mut tx).await?;
    let sql = db.t(
        "INSERT INTO lethe.holds (account, job, subject_key, reason, placed_by) VALUES ($1, $2, $3, $4, $5) RETURNING id",
    );
    let id: i64 = crate::on_tx!(&mut tx, c => sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(account)
        .bind(job)
        .bind(key)
        .bind(reason)
        .bind(by)
        .fetch_one(c)
        .await)
    .context("placing the hold")?;
    append(
        &mut tx,
        vec![NewEntry {
            run_id: None,
            job: job.map(String::from),
            subject_key: key.map(String::from),
            owner: account.map(String::from),
            event: event::HOLD_PLACED,
            hold_id: Some(id),
            detail: serde_json::json!({ "reason": reason, "by": by }),
        }],
    )
    .await?;
    tx.commit().await?;
    Ok(id)
}

pub async fn release(db: &Db, id: i64, reason: &str, by: &str) -> Result<()> {
    if reason.trim().is_empty() || by.trim().is_empty() {
        bail!("releasing a hold needs a non-empty --reason and --by");
    }
    let mut tx = db.begin().await?;
    lock_exclusive(&mut tx).await?;
    let lock = if db.dialect() == super::Dialect::Postgres {
        " FOR UPDATE"
    } else {
        ""
    };
    let sql = db.t(&format!("SELECT * FROM lethe.holds WHERE id = $1{lock}"));
    let hold: Option<Hold> = crate::on_tx!(&mut tx, c => sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(c)
        .await)?;
    let Some(hold) = hold else {
        bail!("there is no hold {id}: see `lethe hold list`")
    };
    if hold.released_at.is_some() {
        bail!(
            "hold {id} was already released by {}",
            hold.released_by.unwrap_or_default()
        );
    }
    let sql = db.t(&format!(
        "UPDATE lethe.holds SET released_at = {}, released_by = $2, release_reason = $3 WHERE id = $1",
        db.dialect().now()
    ));
    crate::on_tx!(&mut tx, c => sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(by)
        .bind(reason)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    append(
        &mut tx,
        vec![NewEntry {
            run_id: None,
            job: hold.job.clone(),
            subject_key: hold.subject_key.clone(),
            owner: hold.account.clone(),
            event: event::HOLD_RELEASED,
            hold_id: Some(id),
            detail: serde_json::json!({ "reason": reason, "by": by }),
        }],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The holds' change counter: every insert, update or delete of a hold bumps it in the same
/// transaction (a trigger, so writes by other tools with plain SQL count too), and its row is
/// locked by each writer until commit, so it grows in commit order. A value other than one read
/// earlier means the holds changed since. (The newest id did not: a hold committed out of id
/// order, or one released and made active again, left it where it was.)
pub async fn changes(db: &Db) -> Result<i64> {
    let sql = db.t("SELECT counter FROM lethe.hold_changes");
    crate::on_db!(db, p => sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(p)
        .await)
    .context("reading the holds' change counter")
}

/// Active holds that name a job (job and subject holds): (id, job).
pub async fn active_job_names(db: &Db) -> Result<Vec<(i64, String)>> {
    let sql = db.t(
        "SELECT id, job FROM lethe.holds WHERE released_at IS NULL AND job IS NOT NULL ORDER BY id",
    );
    crate::on_db!(db, p => sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_all(p)
        .await)
    .context("reading the active holds")
}

pub async fn list(db: &Db, include_released: bool) -> Result<Vec<Hold>> {
    let sql = db.t("SELECT * FROM lethe.holds WHERE $1 OR released_at IS NULL ORDER BY id");
    crate::on_db!(db, p => sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(include_released)
        .fetch_all(p)
        .await)
    .context("listing holds")
}

pub async fn get_many(db: &Db, ids: &[i64]) -> Result<Vec<Hold>> {
    Ok(match db {
        Db::Pg(p) => {
            sqlx::query_as("SELECT * FROM lethe.holds WHERE id = ANY($1)")
                .bind(ids)
                .fetch_all(p)
                .await?
        }
        Db::Lite(p) => {
            sqlx::query_as(
                "SELECT * FROM lethe_holds WHERE id IN (SELECT value FROM json_each($1))",
            )
            .bind(serde_json::to_string(ids).expect("ids serialize"))
            .fetch_all(p)
            .await?
        }
    })
}
