//! What the daemon watches between runs: whether the object store answers, every job's gauges,
//! and the erasure requests (a new one fires the jobs it reaches at once).

use super::{State, refresh_plan};
use crate::context::Context;
use crate::pipeline;
use crate::spec::Job;
use chrono::Utc;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How often the object store is checked for `lethe_object_store_up`.
const STORE_CHECK_EVERY: Duration = Duration::from_secs(30);
const STORE_CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// How often every job's gauges are read again from the database, runs or not.
const PLAN_REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);
/// How often the erasure requests are read: a new one fires the jobs it reaches at once.
const REQUESTS_CHECK_EVERY: Duration = Duration::from_secs(5);
/// How often the jobs are fired again while a request stays open (a run that found a job busy,
/// or left a subject failing: the jobs a request fires run side by side, and two of them taking
/// the same rows at once can deadlock in the database, which fails one subject until the next
/// run). Cheap: subjects waiting out a retry backoff are skipped by discovery.
const REQUESTS_REFIRE_EVERY: Duration = Duration::from_secs(30);

/// Every `STORE_CHECK_EVERY`: whether the object store answers for the jobs' buckets; every
/// `PLAN_REFRESH_EVERY`: every job's gauges, so a replica whose fires find the job locked still
/// reports what the replica that ran it left (a stale overdue count would keep an alert firing).
pub(super) async fn watch(ctx: Context, jobs: Arc<Vec<Job>>, state: Arc<State>) {
    let mut was_up = true;
    let mut last_plans = Instant::now();
    loop {
        let up = match tokio::time::timeout(
            STORE_CHECK_TIMEOUT,
            pipeline::store_answers(&ctx, &jobs),
        )
        .await
        {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                if was_up {
                    tracing::warn!(error = %format!("{e:#}"), "the object store does not answer");
                }
                false
            }
            Err(_) => {
                if was_up {
                    tracing::warn!(
                        timeout_s = STORE_CHECK_TIMEOUT.as_secs(),
                        "the object store does not answer in time"
                    );
                }
                false
            }
        };
        was_up = up;
        state.metrics().object_store_up = up;
        if last_plans.elapsed() >= PLAN_REFRESH_EVERY {
            for i in 0..jobs.len() {
                refresh_plan(&ctx, &jobs, i, &state).await;
            }
            last_plans = Instant::now();
        }
        tokio::time::sleep(STORE_CHECK_EVERY).await;
    }
}

/// Every `REQUESTS_CHECK_EVERY`: the live erasure requests, for their gauges; a request not
/// seen before fires every job that takes requests at once (they take requested subjects
/// first), and while it stays open they are fired again every `REQUESTS_REFIRE_EVERY`.
pub(super) async fn watch_requests(
    ctx: Context,
    jobs: Arc<Vec<Job>>,
    state: Arc<State>,
    fire: mpsc::Sender<usize>,
) {
    let reach: Vec<usize> = (0..jobs.len())
        .filter(|&i| jobs[i].erase_on_request)
        .collect();
    let mut fired: HashMap<i64, Instant> = HashMap::new();
    let mut every = tokio::time::interval(REQUESTS_CHECK_EVERY);
    loop {
        every.tick().await;
        let live = match crate::db::requests::live_erasures(&ctx.db).await {
            Ok(live) => live,
            Err(e) => {
                tracing::debug!(error = %format!("{e:#}"), "cannot read the erasure requests");
                continue;
            }
        };
        state.metrics().requests(&live, Utc::now());
        let due: Vec<i64> = live
            .iter()
            .filter(|r| r.state == "open")
            .filter(|r| {
                fired
                    .get(&r.id)
                    .is_none_or(|t| t.elapsed() >= REQUESTS_REFIRE_EVERY)
            })
            .map(|r| r.id)
            .collect();
        fired.retain(|id, _| live.iter().any(|r| r.id == *id));
        if due.is_empty() || reach.is_empty() {
            continue;
        }
        tracing::info!(requests = ?due, "erasure requests open: running the jobs they reach");
        for id in due {
            fired.insert(id, Instant::now());
        }
        for &i in &reach {
            let _ = fire.try_send(i);
        }
    }
}
