//! The holds as the audit chain records them, set against `lethe.holds`. The chain is
//! append-only and hash-linked; the holds table is a plain table anyone with write access can
//! change. Every placement (`hold_placed`), release (`hold_released`) and operator confirmation
//! (`hold_confirmed`, a snapshot of the row as the operator found it) is an entry, so the chain
//! says what each hold must look like, and anything else was done outside lethe:
//!
//! - released, deleted, or its scope changed while the chain says active: the purge must not
//!   trust the table, so every run refuses (`HoldsTampered`, exit 5) until an operator looks and
//!   records what they found (`lethe hold confirm`);
//! - made active again, or its reason or author changed: safe for the data (a hold covers at
//!   least as much), but `audit verify` fails, and reports read reason and author from the chain;
//! - inserted outside lethe (another tool's SQL): honoured as soon as it commits, and recorded
//!   (`hold_placed` with `adopted`) by the next run.
//!
//! This module reads and compares; the pipeline and `audit verify` decide what follows.

use super::audit::{NewEntry, append};
use super::{Db, holds};
use crate::audit::event;
use anyhow::{Context, Result};
use std::collections::BTreeMap;

/// A run refused because a hold changed outside lethe: exit code 5.
#[derive(Debug)]
pub struct HoldsTampered(pub String);

impl std::fmt::Display for HoldsTampered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}; nothing was deleted. Find out who changed it and why; then record what you \
             found with `lethe hold confirm ID --by NAME --reason TEXT` and run again",
            self.0
        )
    }
}

impl std::error::Error for HoldsTampered {}

/// One hold as the chain says it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub account: Option<String>,
    pub job: Option<String>,
    pub subject_key: Option<String>,
    pub reason: String,
    pub by: String,
    pub released: bool,
    /// False once a confirmation recorded the row gone.
    pub exists: bool,
}

/// A difference between the chain and the table.
#[derive(Clone, Debug)]
pub struct Finding {
    pub hold: i64,
    pub what: String,
    /// The table covers less than the chain says: runs must not purge on its word.
    pub unsafe_for_purge: bool,
    /// Placed outside lethe and not yet recorded: a run records it.
    pub unrecorded: bool,
}

type ChainRow = (
    i64,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
);

/// Every hold the chain knows, by id, replayed in chain order.
pub async fn recorded(db: &Db) -> Result<BTreeMap<i64, Recorded>> {
    let sql = db.t(
        "SELECT hold_id, event, job, subject_key, owner, CAST(detail AS TEXT) FROM lethe.audit_log \
         WHERE event IN ('hold_placed', 'hold_released', 'hold_confirmed') AND hold_id IS NOT NULL \
         ORDER BY hold_id, seq",
    );
    let rows: Vec<ChainRow> = crate::on_db!(db, p => sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_all(p)
        .await)
    .context("reading the holds' entries in the audit log")?;
    let mut out: BTreeMap<i64, Recorded> = BTreeMap::new();
    for (id, ev, job, key, owner, detail) in rows {
        let d: serde_json::Value = serde_json::from_str(&detail).unwrap_or_default();
        let text = |k: &str| d[k].as_str().map(String::from);
        match ev.as_str() {
            event::HOLD_PLACED => {
                out.insert(
                    id,
                    Recorded {
                        account: owner,
                        job,
                        subject_key: key,
                        reason: text("reason").unwrap_or_default(),
                        by: text("by").unwrap_or_default(),
                        released: d["released"].as_bool().unwrap_or(false),
                        exists: true,
                    },
                );
            }
            event::HOLD_RELEASED => {
                if let Some(r) = out.get_mut(&id) {
                    r.released = true;
                }
            }
            _ => {
                let found = &d["found"];
                out.insert(
                    id,
                    Recorded {
                        account: found["account"].as_str().map(String::from),
                        job: found["job"].as_str().map(String::from),
                        subject_key: found["subject_key"].as_str().map(String::from),
                        reason: found["reason"].as_str().unwrap_or_default().into(),
                        by: found["placed_by"].as_str().unwrap_or_default().into(),
                        released: found["released"].as_bool().unwrap_or(true),
                        exists: found["exists"].as_bool().unwrap_or(false),
                    },
                );
            }
        }
    }
    Ok(out)
}

fn as_recorded(h: &holds::Hold) -> Recorded {
    Recorded {
        account: h.account.clone(),
        job: h.job.clone(),
        subject_key: h.subject_key.clone(),
        reason: h.reason.clone(),
        by: h.placed_by.clone(),
        released: h.released_at.is_some(),
        exists: true,
    }
}

/// What differs between the chain and the table, hold by hold.
pub async fn findings(db: &Db) -> Result<Vec<Finding>> {
    let chain = recorded(db).await?;
    let table = holds::list(db, true).await?;
    let mut out = Vec::new();
    let mut finding = |hold: i64, what: String, unsafe_for_purge: bool, unrecorded: bool| {
        out.push(Finding {
            hold,
            what,
            unsafe_for_purge,
            unrecorded,
        })
    };
    for h in &table {
        let now = as_recorded(h);
        let Some(rec) = chain.get(&h.id).filter(|r| r.exists) else {
            finding(
                h.id,
                format!(
                    "hold {} on {} was placed outside lethe (it is not in the audit log)",
                    h.id,
                    h.scope_text()
                ),
                false,
                true,
            );
            continue;
        };
        let scope = |r: &Recorded| (r.account.clone(), r.job.clone(), r.subject_key.clone());
        if scope(rec) != scope(&now) {
            finding(
                h.id,
                format!(
                    "hold {}'s scope was changed outside lethe (the audit log says {})",
                    h.id,
                    scope_text(rec)
                ),
                true,
                false,
            );
        }
        if !rec.released && now.released {
            finding(
                h.id,
                format!(
                    "hold {} on {} was released outside lethe (no hold_released entry; \
                     released_by says {:?})",
                    h.id,
                    scope_text(rec),
                    h.released_by.as_deref().unwrap_or("")
                ),
                true,
                false,
            );
        }
        if rec.released && !now.released {
            finding(
                h.id,
                format!("hold {} was made active again outside lethe", h.id),
                false,
                false,
            );
        }
        if (&rec.reason, &rec.by) != (&now.reason, &now.by) {
            finding(
                h.id,
                format!(
                    "hold {}'s reason or author was changed outside lethe (the audit log says \
                     {:?} by {:?})",
                    h.id, rec.reason, rec.by
                ),
                false,
                false,
            );
        }
    }
    for (id, rec) in &chain {
        if rec.exists && !table.iter().any(|h| h.id == *id) {
            finding(
                *id,
                format!(
                    "hold {id} on {} was deleted outside lethe{}",
                    scope_text(rec),
                    if rec.released { "" } else { " while active" }
                ),
                !rec.released,
                false,
            );
        }
    }
    Ok(out)
}

fn scope_text(r: &Recorded) -> String {
    holds::scope_words(
        r.account.as_deref(),
        r.job.as_deref(),
        r.subject_key.as_deref(),
    )
}

/// Before a run: records the holds placed outside lethe, and refuses (`HoldsTampered`) when the
/// table covers less than the chain says. A dry run records nothing.
pub async fn check_before_run(db: &Db, dry_run: bool) -> Result<()> {
    let found = findings(db).await?;
    let refused: Vec<&str> = found
        .iter()
        .filter(|f| f.unsafe_for_purge)
        .map(|f| f.what.as_str())
        .collect();
    if !refused.is_empty() {
        return Err(HoldsTampered(refused.join("; ")).into());
    }
    let adopt: Vec<i64> = found
        .iter()
        .filter(|f| f.unrecorded)
        .map(|f| f.hold)
        .collect();
    if dry_run || adopt.is_empty() {
        return Ok(());
    }
    let rows = holds::get_many(db, &adopt).await?;
    let mut tx = db.begin().await?;
    holds::lock_exclusive(&mut tx).await?;
    let entries = rows
        .iter()
        .map(|h| NewEntry {
            run_id: None,
            job: h.job.clone(),
            subject_key: h.subject_key.clone(),
            owner: h.account.clone(),
            event: event::HOLD_PLACED,
            hold_id: Some(h.id),
            detail: serde_json::json!({
                "reason": h.reason,
                "by": h.placed_by,
                "adopted": true,
                "released": h.released_at.is_some(),
            }),
        })
        .collect();
    append(&mut tx, entries).await?;
    tx.commit().await?;
    for h in rows {
        tracing::info!(hold = h.id, scope = %h.scope_text(), "recorded a hold placed outside lethe in the audit log");
    }
    Ok(())
}

/// `lethe hold confirm`: records the hold as the operator found it (or its absence), so the
/// chain agrees with the table again. Answers what was recorded, in words.
pub async fn confirm(db: &Db, id: i64, reason: &str, by: &str) -> Result<String> {
    anyhow::ensure!(
        !reason.trim().is_empty() && !by.trim().is_empty(),
        "confirming a hold needs a non-empty --reason and --by"
    );
    let found = findings(db).await?;
    anyhow::ensure!(
        found.iter().any(|f| f.hold == id),
        "hold {id} agrees with the audit log: there is nothing to confirm"
    );
    let row = holds::get_many(db, &[id]).await?.into_iter().next();
    let snapshot = match &row {
        Some(h) => serde_json::json!({
            "exists": true,
            "account": h.account,
            "job": h.job,
            "subject_key": h.subject_key,
            "reason": h.reason,
            "placed_by": h.placed_by,
            "released": h.released_at.is_some(),
        }),
        None => serde_json::json!({ "exists": false }),
    };
    let mut tx = db.begin().await?;
    holds::lock_exclusive(&mut tx).await?;
    append(
        &mut tx,
        vec![NewEntry {
            run_id: None,
            job: row.as_ref().and_then(|h| h.job.clone()),
            subject_key: row.as_ref().and_then(|h| h.subject_key.clone()),
            owner: row.as_ref().and_then(|h| h.account.clone()),
            event: event::HOLD_CONFIRMED,
            hold_id: Some(id),
            detail: serde_json::json!({ "reason": reason, "by": by, "found": snapshot }),
        }],
    )
    .await?;
    tx.commit().await?;
    Ok(match row {
        Some(h) if h.released_at.is_some() => format!("hold {id} recorded as found: released"),
        Some(h) => format!("hold {id} recorded as found: active on {}", h.scope_text()),
        None => format!("hold {id} recorded as found: gone"),
    })
}
