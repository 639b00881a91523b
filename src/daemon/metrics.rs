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
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

/// The content types of [`Metrics::render`]'s two formats.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Run durations, from a quick run to a four-hour one.
const DURATION_BUCKETS: [f64; 10] = [
    1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabel {
    lethe_job: String,
}

/// How a run of a job ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Outcome {
    /// Finished with nothing left undone.
    ok,
    /// Finished with work left for the next run (failed, capped or halted subjects).
    partial,
    /// Failed outright (database or store unreachable, a configuration the database refuses).
    failed,
    /// Another process had the job's run lock.
    locked,
    /// The clock guard refused the run: an operator must confirm the database clock.
    clock_refused,
}

impl Outcome {
    const ALL: [Outcome; 5] = [
        Outcome::ok,
        Outcome::partial,
        Outcome::failed,
        Outcome::locked,
        Outcome::clock_refused,
    ];
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabel {
    lethe_job: String,
    status: Outcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabel {
    version: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;
type PerJob<M> = Family<JobLabel, M>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// The exported families. Cloning a family shares its values, so the registry and these
/// handles see the same numbers.
struct Exported {
    registry: Registry,
    database_up: Gauge,
    object_store_up: Gauge,
    purged: PerJob<Counter>,
    held: PerJob<Counter>,
    storage_held: PerJob<Counter>,
    failed: PerJob<Counter>,
    rows: PerJob<Counter>,
    versions: PerJob<Counter>,
    markers: PerJob<Counter>,
    uploads: PerJob<Counter>,
    runs: Family<RunLabel, Counter>,
    fires_skipped: PerJob<Counter>,
    running: PerJob<Gauge>,
    last_success: PerJob<FloatGauge>,
    period: PerJob<FloatGauge>,
    duration: Family<JobLabel, Histogram, fn() -> Histogram>,
    last_duration: PerJob<FloatGauge>,
    eligible: PerJob<Gauge>,
    held_now: PerJob<Gauge>,
    overdue: PerJob<Gauge>,
    future_clock: PerJob<Gauge>,
    store_name: PerJob<Gauge>,
    oldest_eligible_age: PerJob<FloatGauge>,
    oldest_overdue_age: PerJob<FloatGauge>,
    next_deadline: PerJob<FloatGauge>,
    invalid_specs: Gauge,
    start_time: FloatGauge,
}

impl Default for Exported {
    fn default() -> Self {
        let mut registry = Registry::default();
        let mut e = Exported {
            registry: Registry::default(),
            database_up: Gauge::default(),
            object_store_up: Gauge::default(),
            purged: Family::default(),
            held: Family::default(),
            storage_held: Family::default(),
            failed: Family::default(),
            rows: Family::default(),
            versions: Family::default(),
            markers: Family::default(),
            uploads: Family::default(),
            runs: Family::default(),
            fires_skipped: Family::default(),
            running: Family::default(),
            last_success: Family::default(),
            period: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            last_duration: Family::default(),
            eligible: Family::default(),
            held_now: Family::default(),
            overdue: Family::default(),
            future_clock: Family::default(),
            store_name: Family::default(),
            oldest_eligible_age: Family::default(),
            oldest_overdue_age: Family::default(),
            next_deadline: Family::default(),
            invalid_specs: Gauge::default(),
            start_time: FloatGauge::default(),
        };
        let r = &mut registry;
        r.register(
            "lethe_database_up",
            "1 if the platform database answered the last check",
            e.database_up.clone(),
        );
        r.register(
            "lethe_object_store_up",
            "1 if every bucket the jobs use answered the last check",
            e.object_store_up.clone(),
        );
        for (name, help, family) in [
            (
                "lethe_subjects_purged",
                "Subjects purged (objects, rows, audit entry)",
                &e.purged,
            ),
            (
                "lethe_subjects_held",
                "Subjects skipped because a lethe hold covers them",
                &e.held,
            ),
            (
                "lethe_subjects_storage_held",
                "Subjects skipped because the object store holds one of their versions (S3 Object Lock)",
                &e.storage_held,
            ),
            (
                "lethe_subjects_failed",
                "Subjects whose purge failed and was left for the next run",
                &e.failed,
            ),
            (
                "lethe_rows_deleted",
                "Platform database rows deleted",
                &e.rows,
            ),
            (
                "lethe_object_versions_deleted",
                "Object versions deleted",
                &e.versions,
            ),
            (
                "lethe_delete_markers_deleted",
                "Delete markers deleted",
                &e.markers,
            ),
            (
                "lethe_uploads_aborted",
                "Unfinished multipart uploads aborted",
                &e.uploads,
            ),
            (
                "lethe_fires_skipped",
                "Scheduled fires skipped because the job's previous run was still going",
                &e.fires_skipped,
            ),
        ] {
            r.register(name, help, family.clone());
        }
        r.register(
            "lethe_runs",
            "Runs by outcome: ok; partial (work left for the next run); failed (outright); locked (another process had the job); clock_refused (the clock guard refused: confirm the clock)",
            e.runs.clone(),
        );
        r.register(
            "lethe_job_running",
            "1 while a run of the job is in progress in this process",
            e.running.clone(),
        );
        r.register(
            "lethe_run_duration_seconds",
            "How long the job's runs took",
            e.duration.clone(),
        );
        for (name, help, family) in [
            (
                "lethe_last_success_timestamp_seconds",
                "When the job last finished a run with nothing left undone, by any process (Unix time; absent: never)",
                &e.last_success,
            ),
            (
                "lethe_schedule_period_seconds",
                "Seconds between two fires of the job's schedule",
                &e.period,
            ),
            (
                "lethe_last_run_duration_seconds",
                "How long the job's last run in this process took",
                &e.last_duration,
            ),
            (
                "lethe_oldest_eligible_age_seconds",
                "How long the longest-waiting eligible, unheld subject has been eligible (0: none)",
                &e.oldest_eligible_age,
            ),
            (
                "lethe_oldest_overdue_age_seconds",
                "How long the oldest overdue subject has been past its promised deadline (0: none)",
                &e.oldest_overdue_age,
            ),
            (
                "lethe_next_deadline_timestamp_seconds",
                "The earliest promised deadline among unheld subjects not yet purged (Unix time; absent: none)",
                &e.next_deadline,
            ),
        ] {
            r.register(name, help, family.clone());
        }
        for (name, help, family) in [
            (
                "lethe_eligible_subjects",
                "Subjects past their grace, unheld and not yet purged, at the last check",
                &e.eligible,
            ),
            (
                "lethe_held_subjects",
                "Subjects past their grace that a hold keeps, at the last check",
                &e.held_now,
            ),
            (
                "lethe_overdue_subjects",
                "Unheld subjects past their promised deadline and not purged, at the last check",
                &e.overdue,
            ),
            (
                "lethe_future_clock_subjects",
                "Subjects whose clock is in the future (they wait; a skewed application server?), at the last check",
                &e.future_clock,
            ),
            (
                "lethe_store_name_subjects",
                "Eligible subjects the last run failed because the object store keeps one of their names differently than it was written (lethe cannot purge them as things are; `lethe report --summary` lists them)",
                &e.store_name,
            ),
        ] {
            r.register(name, help, family.clone());
        }
        r.register(
            "lethe_invalid_specs",
            "Job spec files left out at start-up (--keep-going); their jobs do not run",
            e.invalid_specs.clone(),
        );
        r.register(
            "lethe_start_time_seconds",
            "When the daemon started (Unix time)",
            e.start_time.clone(),
        );
        let build: Family<BuildLabel, Gauge> = Family::default();
        build
            .get_or_create(&BuildLabel {
                version: env!("CARGO_PKG_VERSION").to_string(),
            })
            .set(1);
        r.register("lethe_build_info", "lethe's version", build);
        e.registry = registry;
        e
    }
}

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
