//! Ownership (invariant 7, issue 29): a deleted row's URI is a claim, never the truth. A run whose
//! `artifact_uri` points where live runs, runs in grace, snapshots or another job's templates
//! keep their objects fails alone with the claiming rows named, and every neighbour keeps every
//! object; a URI the store would read otherwise than its text is refused. Built on the reference
//! platform with the shipped specs, on S3 and on the local directory store, with each bad run
//! alone in its batch and among the others; the negative control (the proof switched off) loses
//! the neighbours' objects in the same world.

use crate::behaviour::{LiteWorld, Platform};
use crate::helpers::{DAY, World};
use lethe::storage::Versioning;

/// The bad runs: (id, artifact_uri path, what its error must say: one of `|`). In one batch
/// with the good runs, the first four are refused already as overlapping another subject of
/// the batch; alone, by the rows that claim their locations.
const BAD: &[(i64, &str, &str)] = &[
    (201, "custom/", "runs.artifact_uri|subject `"),
    (202, "custom", "runs.artifact_uri|subject `"),
    (203, "custom/105/", "runs.id = 105|subject `204`"),
    (204, "custom/105", "runs.id = 105|subject `203`"),
    (205, "/custom/105/", "starts with `/`"),
    (206, "custom/./105/", "`.` or `..`"),
    (207, "custom/x/../105/", "`.` or `..`"),
    (208, "runs/104/", "(prefix runs/"),
    (209, "custom/106/", "runs.id = 106"),
    (210, "snaps/30/", "snapshots.storage_uri"),
    (211, "custom/%31%30%35/", "percent-encoding"),
];

/// Live runs 101-105 and run 106 (deleted a day ago, in its 7-day grace) keep their artifacts
/// under `custom/ID/` (and `runs/ID/` by template); snapshot 30 of run 101 under `snaps/30/`.
/// Runs 1-3 are deleted past their grace with their own `custom/gID/`; the bad runs beside them.
async fn seed(w: &impl Platform) {
    w.account(1, "free", None).await;
    let uri = |id: i64, path: &str| {
        format!(
            "UPDATE runs SET artifact_uri = '{}' WHERE id = {id}",
            w.uri(path)
        )
    };
    for id in 101..=105 {
        w.run_row(id, 1, None).await;
        w.sql(&uri(id, &format!("custom/{id}/"))).await;
        w.put(&format!("custom/{id}/model.bin")).await;
    }
    w.run_row(106, 1, Some(DAY)).await;
    w.sql(&uri(106, "custom/106/")).await;
    w.put("custom/106/model.bin").await;
    w.snapshot(30, 101, 1, None).await;
    for id in 1..=3 {
        w.run_row(id, 1, Some(10 * DAY)).await;
        w.sql(&uri(id, &format!("custom/g{id}/"))).await;
        w.put(&format!("custom/g{id}/model.bin")).await;
    }
    for (id, path, _) in BAD {
        w.run_row(*id, 1, Some(10 * DAY)).await;
        w.sql(&uri(*id, path)).await;
    }
}

/// Every object of the live runs, the run in grace and the snapshot.
fn neighbours() -> Vec<String> {
    let mut keys: Vec<String> = (101..=106)
        .flat_map(|id| {
            [
                format!("custom/{id}/model.bin"),
                format!("runs/{id}/logs/0.txt"),
                format!("runs/{id}/model.bin"),
            ]
        })
        .collect();
    keys.push("snaps/30/weights.pt".into());
    keys.sort();
    keys
}

async fn left_of(w: &impl Platform, wanted: &[String]) -> Vec<String> {
    let all = w.keys("").await;
    wanted.iter().filter(|k| all.contains(k)).cloned().collect()
}

/// Runs `deleted-runs` over the seeded world in batches of `batch` and checks every promise.
async fn bad_runs_fail_alone(w: impl Platform, batch: &str) {
    seed(&w).await;
    let (code, out, err) = w.cli_env(
        &["run", "--job", "deleted-runs"],
        &[("LETHE_BATCH_SUBJECTS", batch)],
    );
    let at = format!("{:?}, batch {batch}", w.dialect());
    assert_eq!(code, 1, "{at}: failures are exit 1\n{out}\n{err}");
    assert_eq!(
        left_of(&w, &neighbours()).await,
        neighbours(),
        "{at}: every neighbour keeps every object"
    );
    for id in 101..=106 {
        assert_eq!(w.rows_of_run(id).await, 7, "{at}: run {id} keeps its rows");
    }
    for id in 1..=3 {
        assert_eq!(
            w.rows_of_run(id).await,
            0,
            "{at}: good run {id} purged\n{err}"
        );
        assert!(w.keys(&format!("custom/g{id}/")).await.is_empty(), "{at}");
        assert!(w.keys(&format!("runs/{id}/")).await.is_empty(), "{at}");
    }
    for (id, path, why) in BAD {
        assert_eq!(w.rows_of_run(*id).await, 7, "{at}: {path} keeps its rows");
        assert!(
            !w.keys(&format!("runs/{id}/")).await.is_empty(),
            "{at}: nothing of {path} is deleted"
        );
        // Alone in its batch, only the rows of the database can refuse it.
        let whys: Vec<&str> = why
            .split('|')
            .take(if batch == "1" { 1 } else { 2 })
            .collect();
        let mut said = 0;
        for w_ in &whys {
            said += w
                .count(&format!(
                    "SELECT count(*) FROM lethe.work_items WHERE job = 'deleted-runs' AND \
                     subject_key = '{id}' AND state = 'failed' AND last_error LIKE '%{w_}%'"
                ))
                .await;
        }
        assert_eq!(said, 1, "{at}: {path} fails saying one of {whys:?}\n{err}");
    }
    let failed = w
        .count(
            "SELECT count(*) FROM lethe.audit_log WHERE event = 'failed' AND job = 'deleted-runs'",
        )
        .await;
    assert_eq!(failed, BAD.len() as i64, "{at}: one failure per bad run");
    // The compliance report says why, for the subject asked about.
    let (code, report, err) = w.cli(&[
        "report",
        "--format",
        "jsonl",
        "--subject",
        "deleted-runs:209",
    ]);
    assert_eq!(code, 0, "{at}: {err}");
    let row: serde_json::Value = report
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["outcome"] == "failed")
        .unwrap_or_else(|| panic!("{at}: no failed row for run 209 in\n{report}"));
    assert_eq!(row["error_class"], "ownership", "{at}: {row}");
    assert!(
        row["error"]
            .as_str()
            .is_some_and(|e| e.contains("runs.id = 106")),
        "{at}: {row}"
    );
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_runs_fail_alone_on_postgres_and_s3() {
    for batch in ["2000", "1"] {
        bad_runs_fail_alone(World::new(Versioning::Enabled).await, batch).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_runs_fail_alone_on_postgres_and_a_local_directory() {
    bad_runs_fail_alone(World::local().await, "1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_runs_fail_alone_on_sqlite_and_a_local_directory() {
    for batch in ["2000", "1"] {
        bad_runs_fail_alone(LiteWorld::new().await, batch).await;
    }
}

/// The same world with the proof switched off loses the neighbours' objects: the tests above
/// can fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_without_the_proof_the_neighbours_lose_their_objects() {
    let w = World::new(Versioning::Enabled).await;
    seed(&w).await;
    let (_, out, err) = w.cli_env(
        &["run", "--job", "deleted-runs"],
        &[("LETHE_NEGATIVE_CONTROL", "no-ownership-proof")],
    );
    // Alone in the batch (nothing else there overlaps them), the bad runs pointing at run
    // 106's artifacts, run 104's template directory and snapshot 30 take them.
    let left = left_of(&w, &neighbours()).await;
    for lost in [
        "custom/106/model.bin",
        "runs/104/model.bin",
        "snaps/30/weights.pt",
    ] {
        assert!(
            !left.contains(&lost.to_string()),
            "the control deletes {lost}: {left:?}\n{out}\n{err}"
        );
    }
    w.finish().await;
}

/// MLflow's shape: an experiment's `artifact_location` holds its runs' directories, and two
/// experiments may share one. The deleted experiment sharing a live one's location fails (the
/// live one's row and its runs' URIs claim it); a deleted experiment alone in its directory is
/// purged with its runs (a row pointing above a location is no claim on it); one whose run's
/// artifacts a registered model version points into (`[[protects]]`) fails.
const EXPERIMENTS: &str = r#"schedule = "0 0 3 * * *"

[subject]
table = "experiments"
key = "experiment_id"
clock = "last_update_time"
clock_kind = "epoch_milliseconds"
filter = "lifecycle_stage = 'deleted'"

[window]
grace = "1d"
deadline = "30d"

[[rows]]
table = "runs"
column = "experiment_id"

[[objects]]
uri_column = "artifact_location"
uri_within = "s3://lethe-artifacts/"
uri_kind = "directory"

[[objects]]
uri_column = "artifact_uri"
from = "runs"
uri_within = "s3://lethe-artifacts/"
uri_kind = "directory"

[[protects]]
table = "model_versions"
uri_column = "storage_location"
"#;

async fn experiments_world() -> World {
    let w = World::bare(Versioning::Enabled).await;
    w.sql(
        "CREATE TABLE experiments (experiment_id bigint PRIMARY KEY, artifact_location text,
             lifecycle_stage text NOT NULL, last_update_time bigint);
         CREATE TABLE runs (run_uuid text PRIMARY KEY,
             experiment_id bigint NOT NULL REFERENCES experiments, artifact_uri text);
         CREATE TABLE model_versions (name text, version int, storage_location text,
             PRIMARY KEY (name, version));",
    )
    .await;
    lethe::db::migrator().run(&w.pool).await.unwrap();
    w.write_spec("deleted-experiments.toml", EXPERIMENTS);
    let old = format!(
        "(extract(epoch from now() - interval '{} seconds') * 1000)::bigint",
        10 * DAY
    );
    for (id, location, deleted) in [
        (1, "shared/", true),
        (2, "shared/", false),
        (3, "solo3/", true),
        (4, "four/", true),
    ] {
        let stage = if deleted { "deleted" } else { "active" };
        w.sql(&format!(
            "INSERT INTO experiments VALUES ({id}, '{}', '{stage}', {old})",
            w.uri(location)
        ))
        .await;
    }
    for (run, exp, dir) in [
        ("r1a", 1, "shared"),
        ("r2a", 2, "shared"),
        ("r2b", 2, "shared"),
        ("r3a", 3, "solo3"),
        ("r4a", 4, "four"),
    ] {
        w.sql(&format!(
            "INSERT INTO runs VALUES ('{run}', {exp}, '{}')",
            w.uri(&format!("{dir}/{run}/artifacts"))
        ))
        .await;
        w.put(&format!("{dir}/{run}/artifacts/model.pkl")).await;
    }
    w.put("solo3/meta.yaml").await;
    w.sql(&format!(
        "INSERT INTO model_versions VALUES ('m', 1, '{}')",
        w.uri("four/r4a/artifacts/model.pkl")
    ))
    .await;
    w
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_experiment_sharing_a_live_ones_location_or_a_registered_models_fails_alone() {
    let w = experiments_world().await;
    let (code, out, err) = w.cli(&["run", "--all"]);
    assert_eq!(code, 1, "{out}\n{err}");
    let kept: Vec<String> = [
        "four/r4a/artifacts/model.pkl",
        "shared/r1a/artifacts/model.pkl",
        "shared/r2a/artifacts/model.pkl",
        "shared/r2b/artifacts/model.pkl",
    ]
    .map(String::from)
    .to_vec();
    assert_eq!(w.keys("").await, kept, "experiment 3 alone is purged");
    assert_eq!(w.count("SELECT count(*) FROM experiments").await, 3);
    assert_eq!(w.count("SELECT count(*) FROM runs").await, 4);
    for (id, why) in [
        (1, "experiments.artifact_location not purged with it"),
        (1, "(row experiments.experiment_id = 2)"),
        (4, "model_versions.storage_location"),
    ] {
        let error: String = sqlx::query_scalar(
            "SELECT last_error FROM lethe.work_items WHERE subject_key = $1 AND state = 'failed'",
        )
        .bind(id.to_string())
        .fetch_one(&w.pool)
        .await
        .unwrap();
        assert!(error.contains(why), "experiment {id}: {error}");
    }
    w.cleanup().await;

    // Negative control: without the proof, the live experiment's runs lose their artifacts.
    let w = experiments_world().await;
    w.cli_env(
        &["run", "--all"],
        &[("LETHE_NEGATIVE_CONTROL", "no-ownership-proof")],
    );
    assert!(
        w.keys("shared/r2a/").await.is_empty(),
        "the control deletes the live experiment's objects"
    );
    w.cleanup().await;
}
