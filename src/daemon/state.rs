//! What the daemon shares with its HTTP listener: the metrics, the database pool for readiness,
//! and the heartbeats of the main loop and the scheduler for liveness.

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

    pub(super) async fn database_up(&self) -> bool {
        let pool = self.pool.lock().expect("pool lock").clone();
        let up = match pool {
            Some(db) => tokio::time::timeout(DB_CHECK_TIMEOUT, async {
                crate::on_db!(&db, p => sqlx::query("SELECT 1").execute(p).await.is_ok())
            })
            .await
            .unwrap_or(false),
            None => false,
        };
        self.metrics().database_up = up;
        up
    }

    pub(super) async fn metrics_text(&self, openmetrics: bool) -> String {
        self.database_up().await;
        self.metrics().render(openmetrics)
    }

    /// Ready when the database answers, the jobs are loaded and we are not shutting down.
    pub(super) async fn readiness(&self) -> (bool, String) {
        let db = self.database_up().await;
        let m = self.metrics();
        let mut problems = Vec::new();
        if !db {
            problems.push("the platform database does not answer".to_string());
        }
        if m.jobs.is_empty() {
            problems.push("no jobs loaded yet".to_string());
        } else if !m.object_store_up {
            // Said, but not a reason to be unready: runs retry, and the metrics carry it.
            problems.push("the object store does not answer for every bucket".to_string());
        }
        if m.shutting_down {
            problems.push("shutting down".to_string());
        }
        for (job, j) in &m.jobs {
            if let Some(e) = &j.last_error {
                problems.push(format!("job {job}: last run failed: {e}"));
            }
        }
        let ready = db && !m.jobs.is_empty() && !m.shutting_down;
        if problems.is_empty() {
            (ready, "ready\n".into())
        } else {
            (ready, problems.join("\n") + "\n")
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
