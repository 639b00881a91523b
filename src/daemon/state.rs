//! What the daemon shares with its HTTP listener: the metrics, the database pool it checks on its
//! own schedule for readiness, and the heartbeats of the main loop and the scheduler for
//! liveness. Nothing here is asked of the database on a request.

use super::metrics::Metrics;
use chrono::Utc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

const DB_CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// Shared with the HTTP listener.
pub struct State {
    pub(super) metrics: Mutex<Metrics>,
    pub(super) pool: Mutex<Option<crate::db::Db>>,
    /// Unix milliseconds of the last tick of the main loop and of the scheduler (0: not
    /// started yet).
    pub(super) loop_beat: AtomicI64,
    pub(super) scheduler_beat: AtomicI64,
    pub(super) liveness: Duration,
}

pub(super) fn now_millis() -> i64 {
    Utc::now().timestamp_millis()
}

/// How long ago `beat` was, when that is longer than `limit` (a beat of 0 has not started).
fn stale(beat: i64, now: i64, limit: Duration) -> Option<Duration> {
    let age = now - beat;
    (beat > 0 && age > limit.as_millis() as i64).then(|| Duration::from_millis(age as u64))
}

impl State {
    pub(super) fn new(liveness: Duration) -> Self {
        State {
            metrics: Mutex::default(),
            pool: Mutex::default(),
            loop_beat: AtomicI64::new(0),
            scheduler_beat: AtomicI64::new(0),
            liveness,
        }
    }

    pub(super) fn metrics(&self) -> std::sync::MutexGuard<'_, Metrics> {
        self.metrics.lock().expect("metrics lock")
    }

    /// Alive unless the main loop or the scheduler stopped ticking.
    pub(super) fn liveness(&self) -> (bool, String) {
        let now = now_millis();
        let mut problems = Vec::new();
        for (what, beat) in [
            ("main loop", &self.loop_beat),
            ("scheduler", &self.scheduler_beat),
        ] {
            if let Some(age) = stale(beat.load(Ordering::Relaxed), now, self.liveness) {
                problems.push(format!(
                    "the daemon's {what} has not ticked for {} s (LETHE_LIVENESS_SECONDS={})",
                    age.as_secs(),
                    self.liveness.as_secs()
                ));
            }
        }
        if problems.is_empty() {
            (true, "ok\n".into())
        } else {
            (false, problems.join("\n") + "\n")
        }
    }

    /// Asks the database whether it answers, and records it for the metrics and `/readyz`.
    /// Called by the daemon on its own schedule (`WATCH_DATABASE_EVERY`), never by a request:
    /// scrapes and probes cost the database nothing, and answer at once when it is down.
    pub(super) async fn check_database(&self) {
        let pool = self.pool.lock().expect("pool lock").clone();
        let up = match pool {
            Some(db) => {
                tokio::time::timeout(DB_CHECK_TIMEOUT, async { crate::db::ping(&db).await })
                    .await
                    .unwrap_or(false)
            }
            None => false,
        };
        self.metrics().database_up = up;
    }

    pub(super) fn metrics_text(&self, openmetrics: bool) -> String {
        self.metrics().render(openmetrics)
    }

    /// Ready when the database answered at the last check, the jobs are loaded and we are not
    /// shutting down. The answer says which in a word; the details (a job's last error, which
    /// bucket did not answer) are in the logs and the metrics, never on the port.
    pub(super) fn readiness(&self) -> (bool, String) {
        let m = self.metrics();
        let why = if m.shutting_down {
            Some("shutting-down")
        } else if !m.database_up {
            Some("database")
        } else if m.jobs.is_empty() {
            Some("starting")
        } else {
            None
        };
        match why {
            None => (true, "ready\n".into()),
            Some(w) => (false, format!("not ready: {w}\n")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_fails_only_for_a_started_beat_older_than_the_limit() {
        let limit = Duration::from_secs(60);
        assert_eq!(stale(0, 1_000_000, limit), None, "not started yet");
        assert_eq!(stale(1_000_000 - 59_000, 1_000_000, limit), None);
        assert_eq!(
            stale(1_000_000 - 61_000, 1_000_000, limit),
            Some(Duration::from_secs(61))
        );
        let state = State::new(limit);
        state
            .loop_beat
            .store(now_millis() - 120_000, Ordering::Relaxed);
        state.scheduler_beat.store(now_millis(), Ordering::Relaxed);
        let (alive, why) = state.liveness();
        assert!(!alive);
        assert!(why.contains("main loop has not ticked for 120 s"), "{why}");
        state.loop_beat.store(now_millis(), Ordering::Relaxed);
        assert_eq!(state.liveness(), (true, "ok\n".to_string()));
    }
}
