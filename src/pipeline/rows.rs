//! The last step: in one transaction per batch, take the holds lock shared, lock the subject
//! rows and re-check eligibility and holds, delete children before parents and the subject row
//! last, mark the items done (fenced by epoch) and append the `purged` entries. A batch that
//! fails is retried one subject at a time, so one bad subject cannot block the others.

use super::Ready;
use crate::audit::event;
use crate::context::Context;
use crate::db::{audit, holds, items, platform};
use crate::domain::{ItemState, Location};
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

/// Purges the rows of `ready`, whose objects were purged and verified at `manifest[key]`.
pub async fn purge(
    ctx: &Context,
    job: &Job,
    all: &[Job],
    run_id: i64,
    ready: &[Ready],
    manifest: &HashMap<String, Vec<Location>>,
) -> Vec<RowOutcome> {
    if ready.is_empty() {
        return Vec::new();
    }
    match purge_batch(ctx, job, all, run_id, ready, manifest).await {
        Ok(out) => out,
        Err(e) if ready.len() == 1 => vec![RowOutcome::Failed(format!("{e:#}"))],
        Err(e) => {
            tracing::warn!(job = %job.name, subjects = ready.len(), error = %format!("{e:#}"), "row batch failed; retrying one subject at a time");
            let mut out = Vec::with_capacity(ready.len());
            for r in ready {
                out.push(
                    match purge_batch(ctx, job, all, run_id, std::slice::from_ref(r), manifest)
                        .await
                    {
                        Ok(mut o) => o.remove(0),
                        Err(e) => RowOutcome::Failed(format!("{e:#}")),
                    },
                );
            }
            out
        }
    }
}

/// Deletes node `i`'s rows of subjects `go` inside `tx`, answering `(key, deleted)` per subject
/// (see `platform::RowDelete`).
async fn delete_node(
    tx: &mut crate::db::Tx,
    job: &Job,
    i: usize,
    go: &[String],
) -> Result<Vec<(String, i64)>> {
    let d = platform::delete_rows(job, i, go);
    let counted: Vec<(String, i64)> = match &d.count {
        Some(count) => count.fetch_all_tx(tx).await?,
        None => go.iter().map(|k| (k.clone(), 1)).collect(),
    };
    let total: i64 = counted.iter().map(|c| c.1).sum();
    let savepoint = |verb: &str| {
        let mut s = crate::db::sql::Sql::new(job.dialect);
        s.push(&format!("{verb} lethe_rows"));
        s
    };
    if d.returning.is_some() {
        savepoint("SAVEPOINT").execute_tx(tx).await?;
    }
    let n = d.delete.execute_tx(tx).await?;
    if n == total as u64 {
        return Ok(counted);
    }
    match &d.returning {
        Some(returning) => {
            tracing::info!(
                table = %job.nodes[i].table,
                counted = total,
                deleted = n,
                "rows changed between count and delete; deleting again with per-subject answers"
            );
            savepoint("ROLLBACK TO SAVEPOINT").execute_tx(tx).await?;
            Ok(returning.fetch_all_tx(tx).await?)
        }
        None => bail!("deleted {n} rows where {total} were counted; nothing was committed"),
    }
}

async fn purge_batch(
    ctx: &Context,
    job: &Job,
    all: &[Job],
    run_id: i64,
    ready: &[Ready],
    manifest: &HashMap<String, Vec<Location>>,
) -> Result<Vec<RowOutcome>> {
    let started = std::time::Instant::now();
    let keys: Vec<String> = ready.iter().map(|r| r.key.clone()).collect();
    let mut tx = ctx.db.begin().await?;
    // A platform session holding a subject's row (or a child's) must not stall the purge
    // indefinitely: give up on the batch, retry its subjects one by one, and leave the locked
    // ones to the next run. (SQLite waits its busy timeout.)
    tx.set_lock_timeout(ctx.settings.lock_timeout).await?;
    let mut t = std::time::Instant::now();
    let mut lap = |what: &str| {
        tracing::debug!(
            step = what,
            ms = t.elapsed().as_millis() as u64,
            "row transaction step"
        );
        t = std::time::Instant::now();
    };
    holds::lock_shared(&mut tx).await?;
    let still: HashSet<String> = platform::lock_still_eligible(job, all, &keys)
        .fetch_all_tx::<(String,)>(&mut tx)
        .await
        .context("re-checking eligibility")?
        .into_iter()
        .map(|r| r.0)
        .collect();
    lap("eligibility");
    let held: HashMap<String, i64> = if crate::controls::on("no-hold-recheck") {
        HashMap::new()
    } else {
        platform::holds_for(job, all, &keys)
            .fetch_all_tx::<(String, i64)>(&mut tx)
            .await
            .context("re-checking holds")?
            .into_iter()
            .collect()
    };
    lap("holds");
    let go: Vec<String> = keys
        .iter()
        .filter(|k| still.contains(*k) && !held.contains_key(*k))
        .cloned()
        .collect();
    if !go.is_empty() && !crate::controls::on("no-late-row-check") {
        unlisted_objects(&mut tx, ctx, job, &go, manifest).await?;
        lap("objects named since the manifest");
    }
    let mut rows: HashMap<String, BTreeMap<String, i64>> = HashMap::new();
    if !go.is_empty() {
        for i in job.delete_order() {
            let node = &job.nodes[i];
            let what = || format!("deleting rows of `{}` (table {})", node.name, node.table);
            let deleted = if job.counted_elsewhere(i) {
                Vec::new()
            } else if node.by_database {
                // The database deletes these with their parent (ON DELETE CASCADE): counted
                // now, before the parent goes, so the audit says what went.
                platform::count_rows(job, i, &go)
                    .fetch_all_tx::<(String, i64)>(&mut tx)
                    .await
                    .with_context(|| {
                        format!("counting rows of `{}` (table {})", node.name, node.table)
                    })?
            } else {
                delete_node(&mut tx, job, i, &go).await.with_context(what)?
            };
            lap(node.name.as_str());
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
    lap("advance");
    if moved.len() != fenced.len() {
        bail!(
            "{} of {} work items could not be marked done (the lease was lost to another \
             process, or an item with object locations never reached `verified`); nothing was \
             committed",
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
            items::entry(
                &r.subject(job, run_id, &ctx.settings.actor),
                event::PURGED,
                None,
                detail,
            )
        })
        .collect();
    audit::append(&mut tx, entries).await?;
    lap("audit");
    tx.commit().await.context("committing the row purge")?;
    lap("commit");
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

/// Refuses the row transaction when a row of `go`'s subjects now names objects outside the
/// locations purged and verified for it (a snapshot written under the run after its manifest
/// was built): deleting the row would leave those objects named by nothing. The batch is then
/// retried one subject at a time, so only the subject concerned fails, with its rows, and the
/// next run builds its manifest again. Rows inserted under a subject after this check and
/// before the deletes are kept out only where a foreign key to the subject row (locked above)
/// makes their writer wait.
async fn unlisted_objects(
    tx: &mut crate::db::Tx,
    ctx: &Context,
    job: &Job,
    go: &[String],
    manifest: &HashMap<String, Vec<Location>>,
) -> Result<()> {
    let file_root = ctx.settings.object_root.as_deref();
    for q in super::locate::queries(job, go) {
        let answered = q
            .sql
            .fetch_texts_tx(tx)
            .await
            .context("reading the subjects' object locations again")?;
        for (key, resolved) in q.resolve(answered, file_root) {
            let listed = manifest.get(&key).map(Vec::as_slice).unwrap_or_default();
            let unlisted = match resolved {
                Ok(None) => continue,
                Ok(Some(loc)) if listed.iter().any(|m| *m == loc || m.contains(&loc)) => continue,
                Ok(Some(loc)) => loc.to_string(),
                Err(e) => e,
            };
            bail!(
                "subject `{key}` has rows naming objects that are not in its manifest ({unlisted}), \
                 written since the manifest was built: its rows are kept so those objects stay \
                 named, and the next run takes it again with them; nothing was committed"
            );
        }
    }
    Ok(())
}
