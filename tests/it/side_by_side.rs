//! `lethe run --all` runs jobs that share no table side by side, and jobs that do one after
//! another (each job's run is one row of `lethe.job_runs`, with its start and finish).

use crate::helpers::World;
use lethe::storage::Versioning;

/// A job on a table of its own: old traces, with their objects under `traces/{id}/`.
const TRACES: &str = r#"
description = "Traces older than a day"
schedule = "0 0 4 * * *"

[subject]
table = "traces"
key = "id"
clock = "created_at"
clock_kind = "timestamptz"

[window]
grace = "1d"
deadline = "30d"

[[rows]]
table = "trace_spans"
column = "trace_id"

[[objects]]
bucket = "lethe-artifacts"
prefix = "traces/{key}/"
"#;

async fn world() -> World {
    let w = World::new(Versioning::Unversioned).await;
    w.use_specs(
        &crate::helpers::repo().join("jobs"),
        &["closed-accounts.toml"],
    );
    w.write_spec("old-traces.toml", TRACES);
    w.sql(
        "CREATE TABLE traces (id bigint PRIMARY KEY, created_at timestamptz NOT NULL);
         CREATE TABLE trace_spans (trace_id bigint NOT NULL REFERENCES traces (id), name text);
         INSERT INTO accounts VALUES (1, 'u1@example.com', 'free', 'active', NULL);
         INSERT INTO traces SELECT g, now() - interval '3 days' FROM generate_series(1, 40) g;
         INSERT INTO traces SELECT g, now() FROM generate_series(41, 45) g;
         INSERT INTO trace_spans SELECT id, 'span' FROM traces, generate_series(1, 3);",
    )
    .await;
    for id in 1..=40 {
        w.run_row(id, 1, Some(10 * 86_400)).await;
    }
    let traces: Vec<String> = (1..=45)
        .flat_map(|id| {
            [
                format!("traces/{id}/spans.json"),
                format!("traces/{id}/io/in.txt"),
            ]
        })
        .collect();
    w.put_many(traces).await;
    w
}

/// Each job's run: (job, started, finished), in start order.
async fn job_runs(
    w: &World,
) -> Vec<(
    String,
    chrono::DateTime<chrono::Utc>,
    chrono::DateTime<chrono::Utc>,
)> {
    sqlx::query_as(
        "SELECT job, started_at, finished_at FROM lethe.job_runs WHERE NOT dry_run ORDER BY started_at",
    )
    .fetch_all(&w.pool)
    .await
    .unwrap()
}

fn overlap(
    runs: &[(
        String,
        chrono::DateTime<chrono::Utc>,
        chrono::DateTime<chrono::Utc>,
    )],
    a: &str,
    b: &str,
) -> bool {
    let find = |j: &str| {
        runs.iter()
            .find(|r| r.0 == j)
            .unwrap_or_else(|| panic!("no run of {j}: {runs:?}"))
    };
    let (x, y) = (find(a), find(b));
    x.1 < y.2 && y.1 < x.2
}

#[tokio::test]
async fn jobs_sharing_no_table_run_side_by_side_the_others_in_turn() {
    let w = world().await;
    let (code, out, err) = w.cli(&["run", "--all"]);
    assert_eq!(code, 0, "{out}{err}");
    // Everything eligible went, in both jobs, and nothing else.
    assert_eq!(w.count("SELECT count(*) FROM runs").await, 0);
    assert_eq!(w.count("SELECT count(*) FROM metrics").await, 0);
    assert_eq!(w.count("SELECT count(*) FROM traces").await, 5);
    assert_eq!(w.count("SELECT count(*) FROM trace_spans").await, 15);
    assert!(w.keys("runs/").await.is_empty());
    let left: Vec<String> = w.keys("traces/").await;
    let young: Vec<String> = (41..=45)
        .flat_map(|id| {
            [
                format!("traces/{id}/io/in.txt"),
                format!("traces/{id}/spans.json"),
            ]
        })
        .collect();
    let mut young = young;
    young.sort();
    assert_eq!(left, young);
    let runs = job_runs(&w).await;
    assert_eq!(runs.len(), 3, "{runs:?}");
    // deleted-runs and deleted-snapshots meet in snapshots and links: one after the other;
    // old-traces names neither table: beside them.
    assert!(
        !overlap(&runs, "deleted-runs", "deleted-snapshots"),
        "{runs:?}"
    );
    assert!(
        overlap(&runs, "deleted-runs", "old-traces")
            || overlap(&runs, "deleted-snapshots", "old-traces"),
        "old-traces ran beside neither job that shares no table with it: {runs:?}"
    );
    w.cleanup().await;
}

#[tokio::test]
async fn a_limit_spent_across_jobs_runs_them_one_after_another() {
    let w = world().await;
    let (code, out, err) = w.cli(&["run", "--all", "--limit", "1000"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(w.count("SELECT count(*) FROM runs").await, 0);
    assert_eq!(w.count("SELECT count(*) FROM traces").await, 5);
    let runs = job_runs(&w).await;
    assert_eq!(runs.len(), 3, "{runs:?}");
    for (a, b) in [
        ("deleted-runs", "old-traces"),
        ("deleted-snapshots", "old-traces"),
    ] {
        assert!(
            !overlap(&runs, a, b),
            "{a} and {b} overlap under --limit: {runs:?}"
        );
    }
    w.cleanup().await;
}
