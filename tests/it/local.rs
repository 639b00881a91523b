//! The whole pipeline through the binary with a local directory object store
//! (`LETHE_OBJECT_STORE=file:///ROOT`) and the same specs as on S3: prefix templates and
//! `file://` URI columns, holds, the audit chain, and configuration errors that delete nothing.

use crate::helpers::{DAY, World};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_directory_store_purges_with_the_same_specs() {
    let w = World::local().await;
    w.account(1, "free", None).await;
    w.account(2, "free", None).await;
    w.run_row(1, 1, Some(10 * DAY)).await;
    w.run_row(2, 1, None).await;
    w.run_row(3, 2, Some(10 * DAY)).await;
    w.snapshot(30, 1, 1, Some(10 * DAY)).await;
    w.snapshot(31, 2, 1, None).await;
    w.put("runs/10/model.bin").await;
    let held = w.hold(&["--account", "2"]).await;
    let root = w.object_root.clone().unwrap().join(&w.bucket);
    assert!(root.join("runs/1/model.bin").is_file(), "seeded on disk");

    let (code, out, err) = w.cli(&["run", "--all"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(w.rows_of_run(1).await, 0);
    assert!(!root.join("runs/1").exists(), "run 1's directory is gone");
    assert!(
        !root.join("snaps/30").exists(),
        "the snapshot named by file:// URI is gone"
    );
    assert_eq!(
        w.count("SELECT count(*) FROM snapshots WHERE id = 30")
            .await,
        0
    );
    for kept in [
        "runs/2/model.bin",
        "runs/3/model.bin",
        "runs/10/model.bin",
        "snaps/31/weights.pt",
    ] {
        assert!(root.join(kept).is_file(), "{kept} is kept");
    }
    assert_eq!(w.rows_of_run(3).await, 7, "held by account");
    let held_by: Vec<i64> = sqlx::query_scalar(
        "SELECT hold_id FROM lethe.audit_log WHERE event = 'held' AND subject_key = '3'",
    )
    .fetch_all(&w.pool)
    .await
    .unwrap();
    assert_eq!(held_by, vec![held]);
    let route: String = sqlx::query_scalar(
        "SELECT detail->'objects'->'routes'->>0 FROM lethe.audit_log WHERE event = 'purged' LIMIT 1",
    )
    .fetch_one(&w.pool)
    .await
    .unwrap();
    assert_eq!(route, "unversioned");
    let (code, out, err) = w.cli(&["audit", "verify"]);
    assert_eq!(code, 0, "{out}\n{err}");
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_store_refuses_what_it_cannot_reach_and_deletes_nothing() {
    let w = World::local().await;
    w.account(1, "free", None).await;
    w.run_row(1, 1, Some(10 * DAY)).await;
    w.snapshot(30, 1, 1, Some(10 * DAY)).await;
    let root = w.object_root.clone().unwrap().join(&w.bucket);

    // A root that does not exist: a configuration error naming it, exit 2.
    let (code, _, err) = w.cli_env(
        &["run", "--all"],
        &[("LETHE_OBJECT_STORE", "file:///no/such/lethe-root")],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/no/such/lethe-root"), "{err}");
    let (code, _, err) = w.cli_env(&["run", "--all"], &[("LETHE_OBJECT_STORE", "relative/dir")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("LETHE_OBJECT_STORE"), "{err}");
    assert!(root.join("runs/1/model.bin").is_file());
    assert_eq!(w.rows_of_run(1).await, 7);

    // A URI naming S3, or a path outside the root: that subject fails, nothing of it goes.
    w.sql("UPDATE snapshots SET storage_uri = 's3://elsewhere/snaps/30/' WHERE id = 30")
        .await;
    let (code, out, err) = w.cli(&["run", "--job", "deleted-snapshots"]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains("s3://elsewhere/snaps/30/") || out.contains("s3://elsewhere"),
        "{out}\n{err}"
    );
    assert!(root.join("snaps/30/weights.pt").is_file());
    assert_eq!(
        w.count("SELECT count(*) FROM snapshots WHERE id = 30")
            .await,
        1
    );
    w.sql("UPDATE snapshots SET storage_uri = 'file:///etc/snaps/30/' WHERE id = 30")
        .await;
    let (code, out, err) = w.cli(&["run", "--job", "deleted-snapshots"]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        format!("{out}{err}").contains("outside the object root"),
        "{out}\n{err}"
    );
    assert_eq!(
        w.count("SELECT count(*) FROM snapshots WHERE id = 30")
            .await,
        1
    );
    w.cleanup().await;
}
