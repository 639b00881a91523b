//! The last step: in one transaction per batch, take the holds lock shared, lock the subject
//! rows and re-check eligibility and holds, delete children before parents and the subject row
//! last, mark the items done (fenced by epoch) and append the `purged` entries. A batch that
//! fails is retried one subject at a time, so one bad subject cannot block the others.

use super::Ready;
use crate::audit::event;
use crate::context::Context;
use crate::db::{audit, holds, items, platform};
use crate::domain::ItemState;
use crate::spec::Job;
use anyhow::{Context as _, Result, bail};
use std::collections::{BTreeMap, HashMap, HashSet};

/// The outcome of one subject's row purge.
#[derive(Debug)]
pub enum RowOutcome {
    Purged {
        rows: BTreeMap<String, i64>,
    },
    Held {
        hold_id: i64,
    },
    /// No longer eligible at the last moment (restored, or its clock changed). Its objects are
    /// already gone; its rows are kept and the item fails for an operator to look at.
    NoLongerEligible,
    Failed(String),
}

pub async fn purge(
    ctx: &Context,
    job: &Job,
    all: &[Job],
    run_id: i64,
    ready: &[Ready],
) -> Vec<RowOutcome> {
    if ready.is_empty() {
        return Vec::new();
    }
    match purge_batch(ctx, job, all, run_id, ready).await {
        Ok(out) => out,
        Err(e) if ready.len() == 1 => vec![RowOutcome::Failed(format!("{e:#}"))],
        Err(e) => {
            tracing::warn!(job = %job.name, subjects = ready.len(), error = %format!("{e:#}"), "row batch failed; retrying one subject at a time");
            let mut out = Vec::with_capacity(ready.len());
            for r in ready {
                out.push(
                    match purge_batch(ctx, job, all, run_id, std::slice::from_ref(r)).await {
                        Ok(mut o) => o.remove(0),
                        Err(e) => RowOutcome::Failed(format!("{e:#}")),
                    },
                );
            }
            out
        }
    }
}

async fn purge_batch(
    ctx: &Context,
    job: &Job,
    all: &[Job],
    run_id: i64,
    ready: &[Ready],
) -> Result<Vec<RowOutcome>> {
    let started = std::time::Instant::now();
    let keys: Vec<String> = ready.iter().map(|r| r.key.clone()).collect();
    let mut tx = ctx.db.begin().await?;
    holds::lock_shared(&mut tx).await?;
    let still: HashSet<String> = platform::lock_still_eligible(job, &keys)
        .fetch_all_tx::<(String,)>(&mut tx)
        .await
        .context("re-checking eligibility")?
        .into_iter()
        .map(|r| r.0)
        .collect();
    let held: HashMap<String, i64> = platform::holds_for(job, all, &keys)
        .fetch_all_tx::<(String, i64)>(&mut tx)
        .await
        .context("re-checking holds")?
        .into_iter()
        .collect();
    let go: Vec<String> = keys
        .iter()
        .filter(|k| still.contains(*k) && !held.contains_key(*k))
        .cloned()
        .collect();
    let mut rows: HashMap<String, BTreeMap<String, i64>> = HashMap::new();
    if !go.is_empty() {
        for i in job.delete_order() {
            let node = &job.nodes[i];
            let what = || format!("deleting rows of `{}` (table {})", node.name, node.table);
            let deleted: Vec<(String, i64)> = match platform::delete_rows(job, i, &go) {
                platform::RowDelete::Counted(sql) => {
                    sql.fetch_all_tx(&mut tx).await.with_context(what)?
                }
                platform::RowDelete::CountThenDelete { count, delete } => {
                    let counted: Vec<(String, i64)> =
                        count.fetch_all_tx(&mut tx).await.with_context(what)?;
                    let total: i64 = counted.iter().map(|c| c.1).sum();
                    let n = delete.execute_tx(&mut tx).await.with_context(what)?;
                    if n != total as u64 {
                        bail!(
                            "{}: deleted {n} rows where {total} were counted; nothing was committed",
                            what()
                        );
                    }
                    counted
                }
            };
            for (k, n) in deleted {
                *rows
                    .entry(k)
                    .or_default()
                    .entry(node.name.to_string())
                    .or_default() += n;
            }
        }
    }
    let by_key: HashMap<&str, &Ready> = ready.iter().map(|r| (r.key.as_str(), r)).collect();
    let fenced: Vec<(i64, i64)> = go
        .iter()
        .map(|k| (by_key[k.as_str()].id, by_key[k.as_str()].epoch))
        .collect();
    let moved = items::advance(&mut tx, run_id, &fenced, ItemState::Done, true).await?;
    if moved.len() != fenced.len() {
        bail!(
            "lost the lease on {} of {} work items to another process; nothing was committed",
            fenced.len() - moved.len(),
            fenced.len()
        );
    }
    let entries = go
        .iter()
        .map(|k| {
            let r = by_key[k.as_str()];
            let mut detail = r.detail();
            detail["rows"] = serde_json::to_value(rows.get(k).cloned().unwrap_or_default())
                .expect("counts serialize");
            detail["verified"] = true.into();
            items::entry(&r.subject(job, run_id), event::PURGED, None, detail)
        })
        .collect();
    audit::append(&mut tx, entries).await?;
    tx.commit().await.context("committing the row purge")?;
    tracing::info!(
        subjects = go.len(),
        duration_ms = started.elapsed().as_millis() as u64,
        "rows committed"
    );
    Ok(keys
        .iter()
        .map(|k| {
            if let Some(h) = held.get(k) {
                RowOutcome::Held { hold_id: *h }
            } else if !still.contains(k) {
                RowOutcome::NoLongerEligible
            } else {
                RowOutcome::Purged {
                    rows: rows.remove(k).unwrap_or_default(),
                }
            }
        })
        .collect())
}
