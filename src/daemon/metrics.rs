//! What the daemon knows about its jobs, exported for Prometheus with `prometheus-client`.
//!
//! Every per-job series carries the label `lethe_job`, never `job`: `job` is the label
//! Prometheus gives every scrape target, and with the default `honor_labels: false` an exported
//! `job` would be renamed `exported_job`, so queries filtering on `job` would match nothing.
//! Every replica exports the gauges of every job (they are read from the database), so
//! dashboards and alerts take `max by (lethe_job)` of gauges across replicas.

use crate::pipeline::JobReport;
use crate::pipeline::plan::PlanCounts;
use chrono::{DateTime, Utc};
use prometheus_client::metrics::counter::Counter;
use std::collections::BTreeMap;

/// The content types of [`Metrics::render`]'s two formats.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

mod exported;

pub use exported::Outcome;
use exported::{Exported, JobLabel, PerJob, RunLabel};

/// What the daemon keeps per job: its last run's error, logged when it happened and never shown
/// on the port (whether a run is going is the `lethe_job_running` gauge).
#[derive(Debug, Default, Clone)]
pub struct JobState {
    pub last_error: Option<String>,
}

/// The whole daemon's state for `/metrics` and `/readyz`.
#[derive(Default)]
pub struct Metrics {
    pub jobs: BTreeMap<String, JobState>,
    pub database_up: bool,
    pub object_store_up: bool,
    pub shutting_down: bool,
    /// Spec files left out at start-up (`--keep-going`), by file name.
    pub invalid_specs: Vec<String>,
    exported: Exported,
}

fn label(job: &str) -> JobLabel {
    JobLabel {
        lethe_job: job.to_string(),
    }
}

fn seconds(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

impl Metrics {
    /// Registers a job: every series of it exists from the start, counters at zero, so
    /// `increase()` sees its first run.
    pub fn add_job(&mut self, job: &str, period: Option<chrono::Duration>) {
        self.jobs.entry(job.to_string()).or_default();
        let l = label(job);
        let e = &self.exported;
        for family in [
            &e.purged,
            &e.held,
            &e.storage_held,
            &e.failed,
            &e.rows,
            &e.versions,
            &e.markers,
            &e.uploads,
            &e.fires_skipped,
        ] {
            drop(family.get_or_create(&l));
        }
        for status in Outcome::ALL {
            drop(e.runs.get_or_create(&RunLabel {
                lethe_job: job.to_string(),
                status,
            }));
        }
        drop(e.running.get_or_create(&l));
        drop(e.duration.get_or_create(&l));
        if let Some(p) = period {
            e.period
                .get_or_create(&l)
                .set(p.num_milliseconds() as f64 / 1000.0);
        }
    }

    pub fn started(&mut self, at: DateTime<Utc>) {
        self.exported.start_time.set(seconds(at));
    }

    pub fn set_running(&mut self, job: &str, running: bool) {
        self.exported
            .running
            .get_or_create(&label(job))
            .set(i64::from(running));
    }

    pub fn fire_skipped(&mut self, job: &str) {
        self.exported.fires_skipped.get_or_create(&label(job)).inc();
    }

    /// Records a finished run of `job`: its outcome, its duration and what its reports did.
    pub fn run_finished(
        &mut self,
        job: &str,
        outcome: Outcome,
        seconds: f64,
        reports: &[JobReport],
        error: Option<String>,
    ) {
        let l = label(job);
        let e = &self.exported;
        e.runs
            .get_or_create(&RunLabel {
                lethe_job: job.to_string(),
                status: outcome,
            })
            .inc();
        // A locked fire did nothing: it would only pull the durations towards zero.
        if outcome != Outcome::locked {
            e.duration.get_or_create(&l).observe(seconds);
            e.last_duration.get_or_create(&l).set(seconds);
        }
        for r in reports {
            let count = |family: &PerJob<Counter>, n: u64| {
                family.get_or_create(&l).inc_by(n);
            };
            count(&e.purged, r.purged);
            count(&e.held, r.held.saturating_sub(r.storage_held));
            count(&e.storage_held, r.storage_held);
            count(&e.failed, r.failed);
            count(&e.rows, r.rows_deleted.max(0) as u64);
            count(&e.versions, r.object_versions_deleted);
            count(&e.markers, r.delete_markers_deleted);
            count(&e.uploads, r.uploads_aborted);
        }
        let state = self.jobs.entry(job.to_string()).or_default();
        // A locked run says nothing about the job's health; the others replace the last error.
        if outcome != Outcome::locked {
            state.last_error = error;
        }
        e.running.get_or_create(&l).set(0);
    }

    /// The job's gauges from the database, as of `at`.
    pub fn plan(
        &mut self,
        job: &str,
        p: &PlanCounts,
        last_success: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    ) {
        let l = label(job);
        let e = &self.exported;
        e.eligible.get_or_create(&l).set(p.eligible);
        e.held_now.get_or_create(&l).set(p.held);
        e.overdue.get_or_create(&l).set(p.overdue);
        e.future_clock.get_or_create(&l).set(p.future_clock);
        e.store_name.get_or_create(&l).set(p.store_name);
        let age = |since: Option<DateTime<Utc>>| {
            since.map_or(0.0, |t| (at - t).num_milliseconds().max(0) as f64 / 1000.0)
        };
        e.oldest_eligible_age
            .get_or_create(&l)
            .set(age(p.oldest_eligible_at));
        e.oldest_overdue_age
            .get_or_create(&l)
            .set(age(p.next_deadline_at.filter(|d| *d < at)));
        match p.next_deadline_at {
            Some(d) => {
                e.next_deadline.get_or_create(&l).set(seconds(d));
            }
            None => {
                e.next_deadline.remove(&l);
            }
        }
        match last_success {
            Some(t) => {
                e.last_success.get_or_create(&l).set(seconds(t));
            }
            None => {
                e.last_success.remove(&l);
            }
        }
    }

    /// The request gauges from the live erasure requests, as of `at`.
    pub fn requests(&mut self, live: &[crate::db::requests::Request], at: DateTime<Utc>) {
        let open: Vec<_> = live.iter().filter(|r| r.state == "open").collect();
        let e = &self.exported;
        e.requests_open.set(open.len() as i64);
        e.requests_partly
            .set(live.iter().filter(|r| r.state == "partly").count() as i64);
        let oldest = open.iter().map(|r| r.requested_at).min();
        e.request_oldest_open_age
            .set(oldest.map_or(0.0, |t| (at - t).num_milliseconds().max(0) as f64 / 1000.0));
        e.request_next_due
            .set(open.iter().map(|r| r.due_at).min().map_or(0.0, seconds));
    }

    /// The exposition: OpenMetrics when the scraper asks for it (Prometheus does), else the
    /// classic Prometheus text format (curl, `promtool check metrics`, older scrapers).
    pub fn render(&self, openmetrics: bool) -> String {
        let e = &self.exported;
        e.database_up.set(i64::from(self.database_up));
        e.object_store_up.set(i64::from(self.object_store_up));
        e.invalid_specs.set(self.invalid_specs.len() as i64);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &e.registry)
            .expect("writing to a String does not fail");
        if openmetrics { out } else { classic_text(&out) }
    }
}

/// OpenMetrics text as the classic Prometheus text format. The two differ only where a counter
/// family is named: OpenMetrics names it without `_total` and its samples with it, the classic
/// format names both with it. `# EOF` and `# UNIT` are OpenMetrics only.
fn classic_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let head = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        match head {
            Some((p, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counters.contains(name) {
                    "_total"
                } else {
                    ""
                };
                out.push_str(&format!("{p}{name}{suffix} {tail}"));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests;
