//! Data-subject requests: recording an erasure or export request, reading them, and closing an
//! erasure once nothing it covers is left unheld. Each change writes its audit entry in the same
//! transaction; a run refuses a live erasure request the audit chain does not record (one
//! inserted with plain SQL would otherwise make data eligible now without a trace).

use super::audit::{NewEntry, append};
use super::holds::{self, Scope};
use super::{Db, lite_time};
use crate::audit::event;
use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use serde::Serialize;

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Erase,
    Export,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Erase => "erase",
            Kind::Export => "export",
        }
    }
}

#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct Request {
    pub id: i64,
    pub kind: String,
    pub account: Option<String>,
    pub job: Option<String>,
    pub subject_key: Option<String>,
    pub reason: String,
    pub requested_by: String,
    pub requested_at: DateTime<Utc>,
    pub due_at: DateTime<Utc>,
    /// `open`, `partly` (holds keep some of it) or `fulfilled`.
    pub state: String,
    pub closed_at: Option<DateTime<Utc>>,
}

/// The columns of `Request`, for every read.
const COLUMNS: &str = "id, kind, account, job, subject_key, reason, requested_by, requested_at, \
                       due_at, state, closed_at";

impl Request {
    pub fn scope(&self) -> Scope {
        match (&self.account, &self.job, &self.subject_key) {
            (Some(a), _, _) => Scope::Account(a.clone()),
            (None, Some(j), Some(k)) => Scope::Subject {
                job: j.clone(),
                key: k.clone(),
            },
            _ => Scope::Job(self.job.clone().unwrap_or_default()),
        }
    }

    pub fn scope_text(&self) -> String {
        holds::scope_words(
            self.account.as_deref(),
            self.job.as_deref(),
            self.subject_key.as_deref(),
        )
    }
}

fn columns(scope: &Scope) -> Result<(Option<&str>, Option<&str>, Option<&str>)> {
    Ok(match scope {
        Scope::Account(a) => (Some(a.as_str()), None, None),
        Scope::Subject { job, key } => (None, Some(job.as_str()), Some(key.as_str())),
        Scope::Job(_) => bail!("a request names an account or one subject, never a whole job"),
    })
}

/// Records a request and its audit entry (`request_placed`, or `exported` for an export done
/// already, whose `detail` says what was written). An export is recorded fulfilled.
pub async fn record(
    db: &Db,
    kind: Kind,
    scope: &Scope,
    reason: &str,
    by: &str,
    due: DateTime<Utc>,
    detail: serde_json::Value,
) -> Result<i64> {
    if reason.trim().is_empty() || by.trim().is_empty() {
        bail!("a request needs a non-empty --reason and --by");
    }
    let (account, job, key) = columns(scope)?;
    let mut tx = db.begin().await?;
    let (state, closed) = match kind {
        Kind::Erase => ("open", "NULL"),
        Kind::Export => ("fulfilled", db.dialect().now()),
    };
    let due_text = lite_time(due);
    let sql = db.t(&format!(
        "INSERT INTO lethe.requests (kind, account, job, subject_key, reason, requested_by, due_at, \
         state, closed_at, detail) VALUES ($1, $2, $3, $4, $5, $6, {}, $8, {closed}, {}) RETURNING id",
        if db.dialect() == super::Dialect::Postgres {
            "CAST($7 AS timestamptz)"
        } else {
            "$7"
        },
        if db.dialect() == super::Dialect::Postgres {
            "CAST($9 AS jsonb)"
        } else {
            "$9"
        },
    ));
    let id: i64 = crate::on_tx!(&mut tx, c => sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(kind.as_str())
        .bind(account)
        .bind(job)
        .bind(key)
        .bind(reason)
        .bind(by)
        .bind(&due_text)
        .bind(state)
        .bind(detail.to_string())
        .fetch_one(c)
        .await)
    .context("recording the request")?;
    let mut entry = serde_json::json!({
        "request": id, "kind": kind.as_str(), "reason": reason, "by": by, "due_at": due,
    });
    if let (Some(e), Some(d)) = (entry.as_object_mut(), detail.as_object()) {
        e.extend(d.clone());
    }
    append(
        &mut tx,
        vec![NewEntry {
            run_id: None,
            job: job.map(String::from),
            subject_key: key.map(String::from),
            owner: account.map(String::from),
            event: match kind {
                Kind::Erase => event::REQUEST_PLACED,
                Kind::Export => event::EXPORTED,
            },
            hold_id: None,
            detail: entry,
        }],
    )
    .await?;
    tx.commit().await?;
    Ok(id)
}

pub async fn get(db: &Db, id: i64) -> Result<Option<Request>> {
    let sql = db.t(&format!(
        "SELECT {COLUMNS} FROM lethe.requests WHERE id = $1"
    ));
    crate::on_db!(db, p => sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(p)
        .await)
    .context("reading the request")
}

/// Requests, newest first: every one with `all`, else those open or partly fulfilled and those
/// closed in the last 30 days.
pub async fn list(db: &Db, all: bool) -> Result<Vec<Request>> {
    let recent = match db.dialect() {
        super::Dialect::Postgres => "now() - interval '30 days'",
        super::Dialect::Sqlite => "strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-30 days')",
    };
    let sql = db.t(&format!(
        "SELECT {COLUMNS} FROM lethe.requests WHERE $1 OR state <> 'fulfilled' OR closed_at >= {recent} \
         ORDER BY id DESC"
    ));
    crate::on_db!(db, p => sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(all)
        .fetch_all(p)
        .await)
    .context("listing requests")
}

/// Erasure requests not yet fulfilled (open, or partly under holds), oldest first.
pub async fn live_erasures(db: &Db) -> Result<Vec<Request>> {
    let sql =
        db.t(&format!("SELECT {COLUMNS} FROM lethe.requests WHERE kind = 'erase' AND state <> 'fulfilled' ORDER BY id"));
    crate::on_db!(db, p => sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_all(p)
        .await)
    .context("reading the open erasure requests")
}

/// The erasure request with this scope that is not yet fulfilled, if any; else the last one
/// fulfilled.
pub async fn same_erasure(db: &Db, scope: &Scope) -> Result<(Option<Request>, Option<Request>)> {
    let (account, job, key) = columns(scope)?;
    let sql = db.t(&format!(
        "SELECT {COLUMNS} FROM lethe.requests WHERE kind = 'erase' AND account IS NOT DISTINCT FROM $1 \
         AND job IS NOT DISTINCT FROM $2 AND subject_key IS NOT DISTINCT FROM $3 ORDER BY id DESC",
    ));
    let sql = if db.dialect() == super::Dialect::Sqlite {
        sql.replace("IS NOT DISTINCT FROM", "IS")
    } else {
        sql
    };
    let found: Vec<Request> = crate::on_db!(db, p => sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(account)
        .bind(job)
        .bind(key)
        .fetch_all(p)
        .await)
    .context("reading earlier requests")?;
    let live = found.iter().find(|r| r.state != "fulfilled").cloned();
    let done = found.into_iter().find(|r| r.state == "fulfilled");
    Ok((live, done))
}

/// Moves an erasure request to `state` (`partly` or `fulfilled`) with its audit entry, unless
/// it is there already. `holds` are the holds that keep some of what it covers.
pub async fn close(db: &Db, r: &Request, state: &str, holds: &[i64], subjects: i64) -> Result<()> {
    if r.state == state {
        return Ok(());
    }
    let mut tx = db.begin().await?;
    let sql = db.t(&format!(
        "UPDATE lethe.requests SET state = $2, closed_at = {} WHERE id = $1 AND state = $3",
        db.dialect().now()
    ));
    let changed = crate::on_tx!(&mut tx, c => sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(r.id)
        .bind(state)
        .bind(&r.state)
        .execute(c)
        .await
        .map(|x| x.rows_affected()))?;
    if changed == 0 {
        // Another process moved it first, and recorded that.
        return Ok(());
    }
    append(
        &mut tx,
        vec![NewEntry {
            run_id: None,
            job: r.job.clone(),
            subject_key: r.subject_key.clone(),
            owner: r.account.clone(),
            event: event::REQUEST_CLOSED,
            hold_id: holds.first().copied(),
            detail: serde_json::json!({
                "request": r.id, "state": state, "holds": holds, "held_subjects": subjects,
                "due_at": r.due_at,
            }),
        }],
    )
    .await?;
    tx.commit().await
}

/// The live erasure requests the audit chain records no placement of (inserted with plain SQL,
/// or with their scope rewritten since): `(id, what is wrong)`.
pub async fn unrecorded(db: &Db) -> Result<Vec<(i64, String)>> {
    let live = live_erasures(db).await?;
    if live.is_empty() {
        return Ok(Vec::new());
    }
    let sql = db.t(
        "SELECT job, subject_key, owner, CAST(detail AS TEXT) FROM lethe.audit_log \
         WHERE event = 'request_placed'",
    );
    type Placed = (Option<String>, Option<String>, Option<String>, String);
    let placed: Vec<Placed> = crate::on_db!(db, p => sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_all(p)
        .await)
    .context("reading the recorded requests")?;
    let mut bad = Vec::new();
    for r in live {
        let entry = placed.iter().find(|(_, _, _, d)| {
            serde_json::from_str::<serde_json::Value>(d)
                .ok()
                .and_then(|d| d.get("request").and_then(|v| v.as_i64()))
                == Some(r.id)
        });
        match entry {
            None => bad.push((
                r.id,
                format!(
                    "erasure request {} on {} is in lethe.requests but no `request_placed` entry \
                     of the audit log records it (inserted with plain SQL?)",
                    r.id,
                    r.scope_text()
                ),
            )),
            Some((job, key, owner, _))
                if (job, key, owner) != (&r.job, &r.subject_key, &r.account) =>
            {
                bad.push((
                    r.id,
                    format!(
                        "erasure request {} now covers {}, but the audit log recorded it on {}",
                        r.id,
                        r.scope_text(),
                        holds::scope_words(owner.as_deref(), job.as_deref(), key.as_deref())
                    ),
                ))
            }
            Some(_) => {}
        }
    }
    Ok(bad)
}

/// A run refused because a live erasure request is not the one the audit chain recorded:
/// exit code 5.
#[derive(Debug)]
pub struct RequestsTampered(pub String);

impl std::fmt::Display for RequestsTampered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}; nothing was deleted. Find out who wrote it: delete that row of lethe.requests, \
             and record a genuine request with `lethe request erase`",
            self.0
        )
    }
}

impl std::error::Error for RequestsTampered {}

/// Before a run: refuses when a live erasure request is not the one the chain recorded.
pub async fn check_before_run(db: &Db) -> Result<()> {
    let bad = unrecorded(db).await?;
    if bad.is_empty() {
        return Ok(());
    }
    let what: Vec<String> = bad.into_iter().map(|(_, w)| w).collect();
    Err(RequestsTampered(what.join("; ")).into())
}
