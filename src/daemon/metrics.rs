//! What the daemon knows about its jobs, rendered in the Prometheus text format.

use crate::pipeline::JobReport;
use crate::pipeline::plan::PlanCounts;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::fmt::Write;

/// Per-job figures since the daemon started (counters) or as last measured (gauges).
#[derive(Debug, Default, Clone)]
pub struct JobMetrics {
    /// Runs by final status: ok, partial, failed, locked (another process had the job).
    pub runs: BTreeMap<&'static str, u64>,
    pub fires_skipped: u64,
    pub running: bool,
    pub last_success: Option<DateTime<Utc>>,
    pub last_duration_seconds: f64,
    pub last_error: Option<String>,
    pub purged: u64,
    pub held: u64,
    pub failed: u64,
    pub rows_deleted: u64,
    pub object_versions_deleted: u64,
    pub delete_markers_deleted: u64,
    pub uploads_aborted: u64,
    pub plan: Option<PlanCounts>,
    pub plan_at: Option<DateTime<Utc>>,
}

impl JobMetrics {
    pub fn record(&mut self, r: &JobReport) {
        self.purged += r.purged;
        self.held += r.held;
        self.failed += r.failed;
        self.rows_deleted += r.rows_deleted.max(0) as u64;
        self.object_versions_deleted += r.object_versions_deleted;
        self.delete_markers_deleted += r.delete_markers_deleted;
        self.uploads_aborted += r.uploads_aborted;
    }
}

/// The whole daemon's state for `/metrics` and `/readyz`.
#[derive(Debug, Default)]
pub struct Metrics {
    pub jobs: BTreeMap<String, JobMetrics>,
    pub database_up: bool,
    pub started: Option<DateTime<Utc>>,
    pub shutting_down: bool,
    /// Spec files left out at start-up (`--keep-going`), by file name.
    pub invalid_specs: Vec<String>,
}

struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        let _ = writeln!(self.out, "{name}{{{}}} {value}", labels.join(","));
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn seconds(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

/// The Prometheus text exposition of `m`, with `now` for ages.
pub fn render(m: &Metrics, now: DateTime<Utc>) -> String {
    let mut out = String::new();
    let mut f = Family { out: &mut out };
    f.head(
        "lethe_database_up",
        "gauge",
        "1 if the platform database answered the last check.",
    );
    let _ = writeln!(f.out, "lethe_database_up {}", u8::from(m.database_up));
    type Counter = fn(&JobMetrics) -> u64;
    let counters: [(&str, &str, Counter); 7] = [
        (
            "lethe_subjects_purged_total",
            "Subjects purged (objects, rows, audit entry).",
            |j| j.purged,
        ),
        (
            "lethe_subjects_held_total",
            "Subjects skipped because a hold covers them.",
            |j| j.held,
        ),
        (
            "lethe_subjects_failed_total",
            "Subjects whose purge failed and was left for the next run.",
            |j| j.failed,
        ),
        (
            "lethe_rows_deleted_total",
            "Platform database rows deleted.",
            |j| j.rows_deleted,
        ),
        (
            "lethe_object_versions_deleted_total",
            "Object versions deleted.",
            |j| j.object_versions_deleted,
        ),
        (
            "lethe_delete_markers_deleted_total",
            "Delete markers deleted.",
            |j| j.delete_markers_deleted,
        ),
        (
            "lethe_uploads_aborted_total",
            "Unfinished multipart uploads aborted.",
            |j| j.uploads_aborted,
        ),
    ];
    for (name, help, get) in counters {
        f.head(name, "counter", help);
        for (job, j) in &m.jobs {
            f.sample(name, &[("job", job)], get(j) as f64);
        }
    }
    f.head(
        "lethe_runs_total",
        "counter",
        "Runs by outcome: ok, partial (work left for the next run), failed, locked (another process had the job).",
    );
    for (job, j) in &m.jobs {
        for status in ["ok", "partial", "failed", "locked"] {
            let n = j.runs.get(status).copied().unwrap_or(0);
            f.sample(
                "lethe_runs_total",
                &[("job", job), ("status", status)],
                n as f64,
            );
        }
    }
    f.head(
        "lethe_fires_skipped_total",
        "counter",
        "Scheduled fires skipped because the job's previous run was still going.",
    );
    for (job, j) in &m.jobs {
        f.sample(
            "lethe_fires_skipped_total",
            &[("job", job)],
            j.fires_skipped as f64,
        );
    }
    f.head(
        "lethe_job_running",
        "gauge",
        "1 while a run of the job is in progress in this process.",
    );
    for (job, j) in &m.jobs {
        f.sample(
            "lethe_job_running",
            &[("job", job)],
            f64::from(u8::from(j.running)),
        );
    }
    f.head(
        "lethe_last_success_timestamp_seconds",
        "gauge",
        "When the job last finished a run with nothing left undone (Unix time).",
    );
    for (job, j) in &m.jobs {
        if let Some(t) = j.last_success {
            f.sample(
                "lethe_last_success_timestamp_seconds",
                &[("job", job)],
                seconds(t),
            );
        }
    }
    f.head(
        "lethe_last_run_duration_seconds",
        "gauge",
        "How long the job's last run took.",
    );
    for (job, j) in &m.jobs {
        f.sample(
            "lethe_last_run_duration_seconds",
            &[("job", job)],
            j.last_duration_seconds,
        );
    }
    type Gauge = fn(&PlanCounts) -> i64;
    let gauges: [(&str, &str, Gauge); 3] = [
        (
            "lethe_eligible_subjects",
            "Subjects past their grace, unheld and not yet purged, at the last check.",
            |p| p.eligible,
        ),
        (
            "lethe_held_subjects",
            "Subjects past their grace that a hold keeps, at the last check.",
            |p| p.held,
        ),
        (
            "lethe_overdue_subjects",
            "Unheld subjects past their promised deadline and not purged, at the last check.",
            |p| p.overdue,
        ),
    ];
    for (name, help, get) in gauges {
        f.head(name, "gauge", help);
        for (job, j) in &m.jobs {
            if let Some(p) = &j.plan {
                f.sample(name, &[("job", job)], get(p) as f64);
            }
        }
    }
    f.head(
        "lethe_oldest_eligible_age_seconds",
        "gauge",
        "How long the longest-waiting eligible, unheld subject has been eligible (0: none).",
    );
    for (job, j) in &m.jobs {
        if let (Some(p), Some(at)) = (&j.plan, j.plan_at) {
            let age = p
                .oldest_eligible_at
                .map(|e| (at - e).num_milliseconds().max(0) as f64 / 1000.0)
                .unwrap_or(0.0);
            f.sample("lethe_oldest_eligible_age_seconds", &[("job", job)], age);
        }
    }
    f.head(
        "lethe_invalid_specs",
        "gauge",
        "Job spec files left out at start-up because they do not parse or do not match the database (--keep-going); their jobs do not run.",
    );
    let _ = writeln!(f.out, "lethe_invalid_specs {}", m.invalid_specs.len());
    if let Some(s) = m.started {
        f.head(
            "lethe_uptime_seconds",
            "gauge",
            "Seconds since the daemon started.",
        );
        let _ = writeln!(
            f.out,
            "lethe_uptime_seconds {}",
            (now - s).num_milliseconds().max(0) as f64 / 1000.0
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_per_job_with_escaped_labels() {
        let mut m = Metrics {
            database_up: true,
            ..Default::default()
        };
        let mut j = JobMetrics::default();
        j.record(&JobReport {
            purged: 3,
            rows_deleted: 40,
            ..Default::default()
        });
        j.runs.insert("ok", 2);
        m.jobs.insert("a\"b".into(), j);
        let text = render(&m, Utc::now());
        assert!(text.contains("lethe_database_up 1\n"), "{text}");
        assert!(
            text.contains("lethe_subjects_purged_total{job=\"a\\\"b\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("lethe_runs_total{job=\"a\\\"b\",status=\"ok\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("lethe_rows_deleted_total{job=\"a\\\"b\"} 40\n"),
            "{text}"
        );
    }
}
