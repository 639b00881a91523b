//! The series the daemon exports, registered once with their help texts: the registry and
//! every metric family in it. `Metrics` (the parent) sets them; nothing here reads the daemon.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Run durations, from a quick run to a four-hour one.
const DURATION_BUCKETS: [f64; 10] = [
    1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct JobLabel {
    pub(super) lethe_job: String,
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
    pub(super) const ALL: [Outcome; 5] = [
        Outcome::ok,
        Outcome::partial,
        Outcome::failed,
        Outcome::locked,
        Outcome::clock_refused,
    ];
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct RunLabel {
    pub(super) lethe_job: String,
    pub(super) status: Outcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct BuildLabel {
    pub(super) version: String,
}

pub(super) type FloatGauge = Gauge<f64, AtomicU64>;
pub(super) type PerJob<M> = Family<JobLabel, M>;

pub(super) fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// The exported families. Cloning a family shares its values, so the registry and these
/// handles see the same numbers.
pub(super) struct Exported {
    pub(super) registry: Registry,
    pub(super) database_up: Gauge,
    pub(super) object_store_up: Gauge,
    pub(super) purged: PerJob<Counter>,
    pub(super) held: PerJob<Counter>,
    pub(super) storage_held: PerJob<Counter>,
    pub(super) failed: PerJob<Counter>,
    pub(super) rows: PerJob<Counter>,
    pub(super) versions: PerJob<Counter>,
    pub(super) markers: PerJob<Counter>,
    pub(super) uploads: PerJob<Counter>,
    pub(super) runs: Family<RunLabel, Counter>,
    pub(super) fires_skipped: PerJob<Counter>,
    pub(super) running: PerJob<Gauge>,
    pub(super) last_success: PerJob<FloatGauge>,
    pub(super) period: PerJob<FloatGauge>,
    pub(super) duration: Family<JobLabel, Histogram, fn() -> Histogram>,
    pub(super) last_duration: PerJob<FloatGauge>,
    pub(super) eligible: PerJob<Gauge>,
    pub(super) held_now: PerJob<Gauge>,
    pub(super) overdue: PerJob<Gauge>,
    pub(super) future_clock: PerJob<Gauge>,
    pub(super) store_name: PerJob<Gauge>,
    pub(super) oldest_eligible_age: PerJob<FloatGauge>,
    pub(super) oldest_overdue_age: PerJob<FloatGauge>,
    pub(super) next_deadline: PerJob<FloatGauge>,
    pub(super) invalid_specs: Gauge,
    pub(super) start_time: FloatGauge,
    pub(super) requests_open: Gauge,
    pub(super) requests_partly: Gauge,
    pub(super) request_oldest_open_age: FloatGauge,
    pub(super) request_next_due: FloatGauge,
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
            requests_open: Gauge::default(),
            requests_partly: Gauge::default(),
            request_oldest_open_age: FloatGauge::default(),
            request_next_due: FloatGauge::default(),
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
        r.register(
            "lethe_requests_open",
            "Erasure requests recorded and not yet fulfilled (subjects they cover are still to purge)",
            e.requests_open.clone(),
        );
        r.register(
            "lethe_requests_partly_fulfilled",
            "Erasure requests fulfilled but for what holds keep (it goes when the hold is released)",
            e.requests_partly.clone(),
        );
        r.register(
            "lethe_request_oldest_open_age_seconds",
            "Age of the oldest open erasure request (0 when none is open)",
            e.request_oldest_open_age.clone(),
        );
        r.register(
            "lethe_request_next_due_timestamp_seconds",
            "Due date of the open erasure request due first (Unix time; 0 when none is open)",
            e.request_next_due.clone(),
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
