//! Ownership (invariant 7, issue 29): a deleted row's URI is a claim, never the truth. A run whose
//! `artifact_uri` points where live runs, runs in grace, snapshots or another job's templates
//! keep their objects fails alone with the claiming rows named, and every neighbour keeps every
//! object; a URI the store would read otherwise than its text is refused. Built on the reference
//! platform with the shipped specs, on S3 and on the local directory store, with each bad run
//! alone in its batch and among the others; the negative control (the proof switched off) loses
//! the neighbours' objects in the same world.

use crate::helpers::{DAY, World};

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
async fn world(local: bool) -> World {
    let w = if local {
        World::local().await
    } else {
        World::new(lethe::storage::Versioning::Enabled).await
    };
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
    w
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

async fn last_error(w: &World, id: i64) -> String {
    sqlx::query_scalar::<_, Option<String>>(
        "SELECT last_error FROM lethe.work_items WHERE job = 'deleted-runs' AND subject_key = $1",
    )
    .bind(id.to_string())
    .fetch_optional(&w.pool)
    .await
    .unwrap()
    .flatten()
    .unwrap_or_default()
}

async fn left_of(w: &World, wanted: &[String]) -> Vec<String> {
    let all = w.keys("").await;
    wanted.iter().filter(|k| all.contains(k)).cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uri_where_other_rows_keep_their_objects_fails_alone_and_nothing_of_theirs_goes() {
    for local in [false, true] {
        for batch in ["2000", "1"] {
            let w = world(local).await;
            let (code, out, err) = w.cli_env(
                &["run", "--job", "deleted-runs"],
                &[("LETHE_BATCH_SUBJECTS", batch)],
            );
            let at = format!("local {local}, batch {batch}");
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
                    "{at}: good run {id} purged: {}",
                    last_error(&w, id).await
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
                let error = last_error(&w, *id).await;
                // Alone in its batch, only the rows of the database can refuse it.
                let whys: Vec<&str> = why
                    .split('|')
                    .take(if batch == "1" { 1 } else { 2 })
                    .collect();
                assert!(
                    whys.iter().any(|w| error.contains(w)),
                    "{at}: {path}: {error}"
                );
            }
            let failed = w.audit_events("failed");
            assert_eq!(
                failed.await.len(),
                BAD.len(),
                "{at}: one failure per bad run"
            );
            w.cleanup().await;
        }
    }
}

/// The same world with the proof switched off loses the neighbours' objects: the test above
/// can fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_without_the_proof_the_neighbours_lose_their_objects() {
    let w = world(false).await;
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
    w.cleanup().await;
}
