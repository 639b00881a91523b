//! A job's run, batch by batch: discovery walks the eligible subjects in keyset order, a page
//! at a time, and hands out batches; up to `LETHE_BATCH_CONCURRENCY` of them go through the
//! pipeline at once. A time budget, a stop signal or an error stops new batches; those started
//! finish.

use super::objects::Buckets;
use super::purge::purge_batch;
use super::{JobReport, RunOptions, dry_run};
use crate::context::Context;
use crate::db::platform;
use crate::db::sql::Sql;
use crate::spec::Job;
use anyhow::{Context as _, Result};
use std::sync::atomic::{AtomicBool, Ordering};

/// Discovers the job's eligible subjects in order and purges them batch by batch, with up to
/// `batch_concurrency` batches in flight while the next one is being discovered. After an
/// error, no new batch starts, the batches in flight finish (each is safe on its own) and the
/// first error is returned.
#[allow(clippy::too_many_arguments)]
pub(super) async fn run_batches(
    ctx: &Context,
    job: &Job,
    all: &[Job],
    opts: &RunOptions,
    budget: &mut Option<u64>,
    run_id: Option<i64>,
    buckets: &Buckets,
    report: &mut JobReport,
) -> Result<()> {
    use futures::StreamExt;
    let stopped = AtomicBool::new(false);
    let stopped = &stopped;
    let mut halted = None;
    let halted_at = &mut halted;
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<platform::Candidate>>(1);
    let mut backing_off = 0;
    let backed = &mut backing_off;
    let discovery = async move {
        let mut cursor: platform::Cursor = None;
        let mut offset = 0;
        // Subjects of open erasure requests first (the user asked, and their due date is
        // nearer), then those the job selects by its clock and window.
        let mut pass = if job.erase_on_request {
            Pass::Requested
        } else {
            Pass::Clock
        };
        while !stopped.load(Ordering::Relaxed) {
            if let Some(why) = opts.halt_reason() {
                *halted_at = Some(why);
                break;
            }
            let page = next_page(
                ctx,
                job,
                all,
                pass,
                budget,
                &mut cursor,
                &mut offset,
                backed,
            );
            match page.await? {
                Next::Page(mut page) => {
                    while !page.is_empty() {
                        let rest = page.split_off(page.len().min(ctx.settings.batch_subjects));
                        if tx.send(std::mem::replace(&mut page, rest)).await.is_err() {
                            return Ok(false);
                        }
                    }
                }
                Next::End {
                    left_by_limit: false,
                } if pass == Pass::Requested => {
                    pass = Pass::Clock;
                    cursor = None;
                }
                Next::End { left_by_limit } => return Ok(left_by_limit),
            }
        }
        Ok::<bool, anyhow::Error>(false)
    };
    let purging = async {
        let batches =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
        let mut done = std::pin::pin!(
            batches
                .map(|batch| async move {
                    let mut part = JobReport::default();
                    if stopped.load(Ordering::Relaxed) {
                        return Ok(part);
                    }
                    if let Some(why) = opts.halt_reason() {
                        // Discovered but not started: left for the next run, like the rest.
                        part.halted = Some(why.to_string());
                        return Ok(part);
                    }
                    match run_id {
                        None => dry_run::batch(ctx, job, all, buckets, &batch, &mut part).await?,
                        Some(run_id) => {
                            let lock = opts.run_lock.as_ref();
                            purge_batch(ctx, job, all, run_id, buckets, &batch, lock, &mut part)
                                .await?
                        }
                    }
                    Ok::<JobReport, anyhow::Error>(part)
                })
                .buffer_unordered(ctx.settings.batch_concurrency)
        );
        let mut first_error = None;
        while let Some(part) = done.next().await {
            match part {
                Ok(part) => report.absorb(part),
                Err(e) => {
                    stopped.store(true, Ordering::Relaxed);
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error
    };
    let (discovered, failed) = tokio::join!(discovery, purging);
    if let Some(e) = failed {
        return Err(e);
    }
    report.left_by_limit |= discovered?;
    report.backing_off += backing_off;
    if let Some(why) = halted {
        report.halted.get_or_insert(why.to_string());
    }
    if let Some(why) = &report.halted {
        tracing::warn!(reason = %why, "stopped claiming; the subjects left are taken by the next run");
    }
    Ok(())
}

/// Discovery reads this many batches' worth of candidates per query. Each query scans the
/// candidates left (the clock has no index to serve the order on most platforms), so larger
/// pages make a long backlog cheaper to walk; eligibility and holds are checked again before
/// anything is deleted, so a page going stale costs nothing but a skip.
const DISCOVERY_PAGE_BATCHES: u64 = 8;

/// Which subjects a discovery pass walks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Those an open erasure request covers, in key order.
    Requested,
    /// Those the job selects by its clock and window, oldest clock first.
    Clock,
}

/// The next page of `pass` after `cursor`.
fn discovery(job: &Job, all: &[Job], pass: Pass, cursor: &platform::Cursor, n: i64) -> Sql {
    match pass {
        Pass::Requested => platform::discover_requested(job, all, cursor, n)
            .expect("the requested pass runs only for jobs that take erasure requests"),
        Pass::Clock => platform::discover(job, all, cursor, n),
    }
}

enum Next {
    Page(Vec<platform::Candidate>),
    /// No more: everything was discovered, or the budget is spent (and unheld subjects were
    /// left, when `left_by_limit`).
    End {
        left_by_limit: bool,
    },
}

/// `page` without the subjects that wait (held under a hold already recorded, or failing and
/// waiting out their `retry_at`): they are not claimed. Those waiting out a retry are counted
/// in `backing_off`: work left undone.
async fn without_waiting(
    ctx: &Context,
    job: &Job,
    page: Vec<platform::Candidate>,
    backing_off: &mut u64,
) -> Result<Vec<platform::Candidate>> {
    let keys: Vec<String> = page.iter().map(|c| c.key.clone()).collect();
    let waiting = crate::db::items::waiting(&ctx.db, &job.name, &keys).await?;
    *backing_off += waiting.values().filter(|retrying| **retrying).count() as u64;
    Ok(page
        .into_iter()
        .filter(|c| !waiting.contains_key(&c.key))
        .collect())
}

/// The next page of eligible subjects after `cursor`, within the budget (an empty page when
/// every subject on it waits).
#[allow(clippy::too_many_arguments)]
async fn next_page(
    ctx: &Context,
    job: &Job,
    all: &[Job],
    pass: Pass,
    budget: &mut Option<u64>,
    cursor: &mut platform::Cursor,
    offset: &mut u64,
    backing_off: &mut u64,
) -> Result<Next> {
    let want = match budget {
        Some(0) => {
            // Only unheld subjects count as left undone; held ones are exceptions.
            loop {
                let n = ctx.settings.batch_subjects as i64;
                let more: Vec<platform::Candidate> = discovery(job, all, pass, cursor, n)
                    .fetch_all(&ctx.db)
                    .await?;
                let Some(last) = more.last() else {
                    return Ok(Next::End {
                        left_by_limit: false,
                    });
                };
                *cursor = Some((last.clock_at, last.key.clone()));
                let more = without_waiting(ctx, job, more, backing_off).await?;
                if more.iter().any(|c| c.held.is_none()) {
                    return Ok(Next::End {
                        left_by_limit: true,
                    });
                }
            }
        }
        // A full page even under a budget: held subjects do not use it up, and a page cut to
        // the budget would make a backlog of held subjects cost one scan per budget's worth.
        _ => ctx.settings.batch_subjects as u64 * DISCOVERY_PAGE_BATCHES,
    };
    let query = if crate::controls::on("offset-pagination") && pass == Pass::Clock {
        // Negative control: an OFFSET over a set that shrinks as subjects are purged.
        let mut q = platform::discover(job, all, &None, want as i64);
        q.push(&format!(" OFFSET {offset}"));
        *offset += want;
        q
    } else {
        discovery(job, all, pass, cursor, want as i64)
    };
    let batch: Vec<platform::Candidate> = query
        .fetch_all(&ctx.db)
        .await
        .with_context(|| format!("discovering eligible subjects of job `{}`", job.name))?;
    let Some(last) = batch.last() else {
        return Ok(Next::End {
            left_by_limit: false,
        });
    };
    *cursor = Some((last.clock_at, last.key.clone()));
    let mut batch = without_waiting(ctx, job, batch, backing_off).await?;
    if let Some(b) = budget {
        // Held subjects are recorded, not purged: they never use up the budget. The page ends
        // with the unheld subject that spends it.
        let mut unheld = 0;
        let end = batch
            .iter()
            .position(|c| {
                unheld += u64::from(c.held.is_none());
                unheld == *b
            })
            .map_or(batch.len(), |i| i + 1);
        if end < batch.len() {
            batch.truncate(end);
            let last = &batch[end - 1];
            *cursor = Some((last.clock_at, last.key.clone()));
        }
        *b -= batch.iter().filter(|c| c.held.is_none()).count() as u64;
    }
    tracing::info!(subjects = batch.len(), "subjects discovered");
    Ok(Next::Page(batch))
}
