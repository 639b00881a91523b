//! `lethe daemon`: every job on its cron schedule (UTC, via tokio-cron-scheduler), forever.
//!
//! - A job never overlaps itself: in this process a fire that finds the previous run still
//!   going is skipped (and counted); across processes the job's run lock decides, so a replica
//!   or a one-shot `lethe run` already running the job makes this fire a `locked` no-op.
//! - After downtime, a job whose last finished run is older than one schedule period runs once
//!   at start (catch-up; missed fires are coalesced into that one run).
//! - A run that fails outright (database or store unreachable) is retried with exponential
//!   backoff and jitter, never in a tight loop; a panic is that run's failure only.
//! - SIGTERM or SIGINT: stop claiming, let the batches in flight finish for up to
//!   `LETHE_SHUTDOWN_SECONDS`, then exit.
//! - Liveness: the main loop and the scheduler each tick every few seconds; `/healthz` fails
//!   when either has not ticked for `LETHE_LIVENESS_SECONDS`, so a wedged daemon is restarted.

mod http;
mod watch;
use watch::{watch, watch_requests};
pub mod metrics;
mod state;

use crate::config::Settings;
use crate::context::Context;
use crate::pipeline::{self, RunOptions, plan};
use crate::spec::Job;
use anyhow::{Context as _, Result};
use chrono::Utc;
use metrics::Outcome;
use state::{State, now_millis};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// First retry after a failed run; doubles up to `RETRY_MAX`.
const RETRY_FIRST: Duration = Duration::from_secs(15);
const RETRY_MAX: Duration = Duration::from_secs(30 * 60);
/// How often the main loop and the scheduler tick for `/healthz`.
const BEAT: Duration = Duration::from_secs(5);
/// How often the database is asked whether it answers, for `lethe_database_up` and `/readyz`.
const WATCH_DATABASE_EVERY: Duration = Duration::from_secs(5);

/// Runs until SIGTERM or SIGINT. Returns the exit code: 0 after a clean shutdown, 1 when runs
/// were still in flight at the end of the grace period.
pub async fn run(mut settings: Settings) -> Result<u8> {
    // The daemon records itself as the actor of its runs, unless told otherwise.
    if !crate::config::actor_given() {
        settings.actor = format!("lethe-daemon@{}", crate::db::runs::host());
    }
    let state = Arc::new(State::new(settings.liveness));
    state.metrics().started(Utc::now());
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;

    if let Some(addr) = settings.listen {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            crate::config::config_error(anyhow::anyhow!("LETHE_LISTEN={addr}: {e}"))
        })?;
        tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
        tokio::spawn(http::serve(listener, state.clone()));
        // The database is asked here, on the daemon's schedule, never by a request.
        let watched = state.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(WATCH_DATABASE_EVERY);
            loop {
                every.tick().await;
                watched.check_database().await;
            }
        });
    }

    // The database may be down when we start (a failover, a restart): wait for it, never exit.
    let mut attempt = 0;
    let ctx = loop {
        match Context::build(&settings).await {
            Ok(ctx) => break ctx,
            // A certificate or a password the server refuses: waiting will not mend it.
            Err(e) if e.downcast_ref::<crate::config::ConfigError>().is_some() => return Err(e),
            Err(e) => {
                let wait = backoff(attempt);
                attempt += 1;
                tracing::warn!(error = %format!("{e:#}"), retry_in_s = wait.as_secs(), "cannot reach the platform database");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = term.recv() => return Ok(0),
                    _ = int.recv() => return Ok(0),
                }
            }
        }
    };
    *state.pool.lock().expect("pool lock") = Some(ctx.db.clone());
    state.check_database().await;
    crate::db::require_current_schema(&ctx.db)
        .await
        .map_err(crate::config::config_error)?;
    let jobs = Arc::new(ctx.load_jobs().await.map_err(crate::config::config_error)?);
    for r in ctx.rejected() {
        tracing::error!(file = %r.file.display(), error = %r.error, "job spec left out (--keep-going); its job does not run");
        state
            .metrics()
            .invalid_specs
            .push(r.file.display().to_string());
    }
    // Jobs run side by side, each with its batches: the pool must hold them all at once.
    let ctx = ctx
        .fit_pool(jobs.len())
        .await
        .map_err(crate::config::config_error)?;
    *state.pool.lock().expect("pool lock") = Some(ctx.db.clone());
    if let Some(t) = &ctx.settings.audit_anchor {
        crate::anchor::Target::parse(t)
            .map_err(|e| crate::config::config_error(e.context("LETHE_AUDIT_ANCHOR")))?;
    }
    for job in jobs.iter() {
        state.metrics().add_job(&job.name, period(job, Utc::now()));
    }
    tokio::spawn(watch(ctx.clone(), jobs.clone(), state.clone()));

    let (fire_tx, mut fire_rx) = mpsc::channel::<usize>(64);
    let mut scheduler = tokio_cron_scheduler::JobScheduler::new()
        .await
        .context("starting the scheduler")?;
    for (i, job) in jobs.iter().enumerate() {
        let tx = fire_tx.clone();
        let cron = with_seconds(&job.schedule_text);
        let fire = tokio_cron_scheduler::Job::new_async(cron.as_str(), move |_, _| {
            let tx = tx.clone();
            Box::pin(async move {
                // A full queue means fires are already waiting: this one coalesces with them.
                let _ = tx.try_send(i);
            })
        })
        .map_err(|e| anyhow::anyhow!("job `{}`: schedule `{cron}`: {e}", job.name))?;
        scheduler
            .add(fire)
            .await
            .with_context(|| format!("scheduling job `{}`", job.name))?;
    }
    // The scheduler's own tick, for `/healthz`: a scheduler that stopped firing stops it.
    let beat_state = state.clone();
    let beat = tokio_cron_scheduler::Job::new_async("*/5 * * * * *", move |_, _| {
        beat_state
            .scheduler_beat
            .store(now_millis(), Ordering::Relaxed);
        Box::pin(async {})
    })
    .map_err(|e| anyhow::anyhow!("the scheduler's heartbeat: {e}"))?;
    scheduler
        .add(beat)
        .await
        .context("scheduling the heartbeat")?;
    scheduler.start().await.context("starting the scheduler")?;
    state.scheduler_beat.store(now_millis(), Ordering::Relaxed);
    for (i, job) in jobs.iter().enumerate() {
        let due = catch_up_due(&ctx, job).await.unwrap_or_else(|e| {
            tracing::warn!(job = %job.name, error = %format!("{e:#}"), "cannot read the last run; running now");
            true
        });
        if due {
            tracing::info!(job = %job.name, "last run is older than one period (or none): catching up now");
            let _ = fire_tx.try_send(i);
        } else {
            refresh_plan(&ctx, &jobs, i, &state).await;
        }
    }
    tokio::spawn(watch_requests(
        ctx.clone(),
        jobs.clone(),
        state.clone(),
        fire_tx.clone(),
    ));
    tracing::info!(jobs = jobs.len(), "daemon started");

    let stop = Arc::new(AtomicBool::new(false));
    let mut running: JoinSet<(usize, bool)> = JoinSet::new();
    let mut task_job: HashMap<tokio::task::Id, usize> = HashMap::new();
    let mut busy = vec![false; jobs.len()];
    let mut failures = vec![0u32; jobs.len()];
    let mut tick = tokio::time::interval(BEAT);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                state.loop_beat.store(now_millis(), Ordering::Relaxed);
                if crate::controls::on("wedged-loop") {
                    // A blocking call in the loop: it never ticks again, nor fires a run.
                    std::thread::sleep(Duration::from_secs(3600));
                }
            }
            Some(i) = fire_rx.recv() => {
                let job = &jobs[i];
                if busy[i] {
                    tracing::info!(job = %job.name, "previous run still going; this fire is skipped");
                    state.metrics().fire_skipped(&job.name);
                    continue;
                }
                busy[i] = true;
                let (ctx, jobs, stop, state) = (ctx.clone(), jobs.clone(), stop.clone(), state.clone());
                let handle = running.spawn(async move {
                    let ok = run_once(&ctx, &jobs, i, stop, &state).await;
                    (i, ok)
                });
                task_job.insert(handle.id(), i);
            }
            Some(done) = running.join_next_with_id() => {
                let (id, outcome) = match done {
                    Ok((id, (_, ok))) => (id, Some(ok)),
                    Err(e) => (e.id(), None),
                };
                let Some(i) = task_job.remove(&id) else { continue };
                busy[i] = false;
                if outcome == Some(true) {
                    failures[i] = 0;
                } else {
                    // Failed outright (or the task died): try again after a backoff rather
                    // than waiting a whole period, without hammering a server that is down.
                    let wait = backoff(failures[i]);
                    failures[i] += 1;
                    tracing::warn!(job = %jobs[i].name, retry_in_s = wait.as_secs(), "run failed; retrying after a backoff");
                    let tx = fire_tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(wait).await;
                        let _ = tx.try_send(i);
                    });
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }

    tracing::info!(
        runs_in_flight = running.len(),
        "shutting down: no new claims"
    );
    stop.store(true, Ordering::Relaxed);
    state.metrics().shutting_down = true;
    let _ = scheduler.shutdown().await;
    let grace = ctx.settings.shutdown_grace;
    let drained = tokio::time::timeout(grace, async {
        while running.join_next().await.is_some() {}
    })
    .await
    .is_ok();
    if drained {
        tracing::info!("stopped cleanly");
        Ok(0)
    } else {
        tracing::warn!(
            grace_s = grace.as_secs(),
            "runs still in flight at the end of the grace period; exiting anyway (their leases expire and the next run takes their subjects over)"
        );
        Ok(1)
    }
}

/// Runs job `i` once and records what happened. True unless the run failed outright.
async fn run_once(
    ctx: &Context,
    jobs: &[Job],
    i: usize,
    stop: Arc<AtomicBool>,
    state: &State,
) -> bool {
    let job = &jobs[i];
    state.metrics().set_running(&job.name, true);
    let started = Instant::now();
    let opts = RunOptions {
        dry_run: false,
        limit: ctx.settings.max_subjects_per_run,
        deadline: ctx.settings.run_budget.map(|b| started + b),
        stop: Some(stop),
        wait: false,
        run_lock: None,
    };
    let one = std::slice::from_ref(job);
    let result = async {
        pipeline::preflight(ctx, one, false).await?;
        pipeline::run_all(ctx, jobs, one, &opts).await
    }
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    let ok = result.is_ok();
    let (outcome, reports, error) = match &result {
        Err(e) if e.downcast_ref::<crate::db::clock::ClockJump>().is_some() => {
            (Outcome::clock_refused, &[][..], Some(format!("{e:#}")))
        }
        Err(e) => (Outcome::failed, &[][..], Some(format!("{e:#}"))),
        Ok(s) if !s.locked_out.is_empty() => (Outcome::locked, &[][..], None),
        Ok(s) => {
            let left = s
                .reports
                .iter()
                .any(|r| r.incomplete() || !r.errors.is_empty());
            let outcome = if left { Outcome::partial } else { Outcome::ok };
            (outcome, &s.reports[..], None)
        }
    };
    state
        .metrics()
        .run_finished(&job.name, outcome, elapsed, reports, error);
    match &result {
        Err(e) => {
            tracing::error!(job = %job.name, error = %format!("{e:#}"), "run failed")
        }
        Ok(s) if !s.locked_out.is_empty() => {
            tracing::info!(job = %job.name, "another process is running this job; skipped")
        }
        Ok(s) => {
            for r in &s.reports {
                for e in &r.errors {
                    tracing::warn!(job = %r.job, error = %e, "subject failed");
                }
                if r.errors_not_listed > 0 {
                    tracing::warn!(job = %r.job, more = r.errors_not_listed, "more subjects failed; see `lethe report`");
                }
            }
        }
    }
    refresh_plan(ctx, jobs, i, state).await;
    if let Some(target) = &ctx.settings.audit_anchor
        && let Err(e) = anchor(ctx, target).await
    {
        tracing::error!(error = %format!("{e:#}"), "anchoring the audit chain failed");
    }
    ok
}

/// Writes the audit chain head to `LETHE_AUDIT_ANCHOR`.
async fn anchor(ctx: &Context, target: &str) -> Result<()> {
    let target = crate::anchor::Target::parse(target)?;
    if let Some(head) = crate::anchor::head(&ctx.db).await? {
        target
            .write(&*ctx.store, &head, ctx.settings.anchor_retention_days)
            .await?;
        tracing::info!(seq = head.seq, "audit chain anchored");
    }
    Ok(())
}

/// Updates the job's gauges from the database: eligible, held and overdue subjects, the next
/// deadline, and the last successful run by any process (a replica's runs count too).
async fn refresh_plan(ctx: &Context, jobs: &[Job], i: usize, state: &State) {
    let job = &jobs[i];
    let read = async {
        let p = plan::counts(ctx, job, jobs).await?;
        let last = crate::db::runs::last_success(&ctx.db, &job.name).await?;
        anyhow::Ok((p, last))
    };
    match read.await {
        Ok((p, last)) => state.metrics().plan(&job.name, &p, last, Utc::now()),
        Err(e) => {
            tracing::warn!(job = %job.name, error = %format!("{e:#}"), "cannot count the job's subjects")
        }
    }
}

/// Whether the job's last finished run is older than one period of its schedule (or it never
/// ran), by the database's clock.
async fn catch_up_due(ctx: &Context, job: &Job) -> Result<bool> {
    let Some(last) = crate::db::runs::last_finished(&ctx.db, &job.name).await? else {
        return Ok(true);
    };
    let now = crate::db::clock::now(&ctx.db).await?;
    Ok(match period(job, now) {
        Some(p) => now - last > p,
        None => false,
    })
}

/// The time between the schedule's next two fires after `now`.
pub fn period(job: &Job, now: chrono::DateTime<Utc>) -> Option<chrono::Duration> {
    let mut fires = job.schedule.iter_after(now);
    let a = fires.next()?;
    let b = fires.next()?;
    Some(b - a)
}

/// tokio-cron-scheduler wants the seconds field; a 5-field spec fires at second 0.
pub fn with_seconds(schedule: &str) -> String {
    if schedule.split_whitespace().count() == 5 {
        format!("0 {}", schedule.trim())
    } else {
        schedule.trim().to_string()
    }
}

/// Exponential backoff from `RETRY_FIRST` to `RETRY_MAX`, with ±20% jitter so replicas that
/// failed together do not retry together.
fn backoff(attempt: u32) -> Duration {
    let base = RETRY_FIRST
        .saturating_mul(1u32 << attempt.min(16))
        .min(RETRY_MAX);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let jitter = (f64::from(nanos % 1000) / 1000.0 - 0.5) * 0.4;
    base.mul_f64(1.0 + jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_field_schedules_fire_at_second_zero() {
        assert_eq!(with_seconds("15 3 * * *"), "0 15 3 * * *");
        assert_eq!(with_seconds(" */5 * * * * * "), "*/5 * * * * *");
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let first = backoff(0);
        assert!(first >= RETRY_FIRST.mul_f64(0.8) && first <= RETRY_FIRST.mul_f64(1.2));
        let third = backoff(2);
        assert!(third >= (RETRY_FIRST * 4).mul_f64(0.8), "{third:?}");
        assert!(backoff(40) <= RETRY_MAX.mul_f64(1.2));
    }
}
