//! Placing, releasing and listing holds. Each change writes its audit entry in the same
//! transaction, and takes the holds lock exclusively: a purge transaction holds it shared while
//! it re-checks holds and deletes, so a hold placed mid-purge either waits for that purge to
//! commit or is seen by it (never neither).

use super::audit::{NewEntry, append};
use crate::audit::event;
use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

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
        match (&self.account, &self.job, &self.subject_key) {
            (Some(a), _, _) => format!("account {a}"),
            (None, Some(j), Some(k)) => format!("subject {j}:{k}"),
            (None, Some(j), None) => format!("job {j}"),
            _ => "?".into(),
        }
    }
}

pub async fn lock_exclusive(tx: &mut PgConnection) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(HOLDS_LOCK)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

pub async fn lock_shared(tx: &mut PgConnection) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
        .bind(HOLDS_LOCK)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

pub async fn place(pool: &PgPool, scope: &Scope, reason: &str, by: &str) -> Result<i64> {
    if reason.trim().is_empty() || by.trim().is_empty() {
        bail!("a hold needs a non-empty --reason and --by");
    }
    let (account, job, key) = match scope {
        Scope::Account(a) => (Some(a.as_str()), None, None),
        Scope::Job(j) => (None, Some(j.as_str()), None),
        Scope::Subject { job, key } => (None, Some(job.as_str()), Some(key.as_str())),
    };
    let mut tx = pool.begin().await?;
    lock_exclusive(&mut tx).await?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO lethe.holds (account, job, subject_key, reason, placed_by) VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(account)
    .bind(job)
    .bind(key)
    .bind(reason)
    .bind(by)
    .fetch_one(&mut *tx)
    .await
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

pub async fn release(pool: &PgPool, id: i64, reason: &str, by: &str) -> Result<()> {
    if reason.trim().is_empty() || by.trim().is_empty() {
        bail!("releasing a hold needs a non-empty --reason and --by");
    }
    let mut tx = pool.begin().await?;
    lock_exclusive(&mut tx).await?;
    let hold: Option<Hold> = sqlx::query_as("SELECT * FROM lethe.holds WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(hold) = hold else {
        bail!("there is no hold {id}: see `lethe hold list`")
    };
    if hold.released_at.is_some() {
        bail!(
            "hold {id} was already released by {}",
            hold.released_by.unwrap_or_default()
        );
    }
    sqlx::query("UPDATE lethe.holds SET released_at = now(), released_by = $2, release_reason = $3 WHERE id = $1")
        .bind(id)
        .bind(by)
        .bind(reason)
        .execute(&mut *tx)
        .await?;
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

pub async fn list(pool: &PgPool, include_released: bool) -> Result<Vec<Hold>> {
    sqlx::query_as("SELECT * FROM lethe.holds WHERE $1 OR released_at IS NULL ORDER BY id")
        .bind(include_released)
        .fetch_all(pool)
        .await
        .context("listing holds")
}

pub async fn get_many(pool: &PgPool, ids: &[i64]) -> Result<Vec<Hold>> {
    Ok(
        sqlx::query_as("SELECT * FROM lethe.holds WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(pool)
            .await?,
    )
}
