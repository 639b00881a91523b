//! Credentials that may read and list but not delete (SeaweedFS's `reader` identity, made by
//! `scripts/services.sh`): a run refuses before it claims anything, naming the bucket and the
//! action to grant, and deletes nothing.

use crate::helpers::{DAY, World};
use lethe::storage::Versioning;

fn reader() -> [(&'static str, String); 2] {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!(
                "{name} is not set: start the services with scripts/services.sh and eval its `env`"
            )
        })
    };
    [
        ("AWS_ACCESS_KEY_ID", var("LETHE_TEST_S3_READER_KEY")),
        ("AWS_SECRET_ACCESS_KEY", var("LETHE_TEST_S3_READER_SECRET")),
    ]
}

async fn refused_on(versioning: Versioning, action: &str) {
    let w = World::new(versioning).await;
    w.account(1, "free", None).await;
    for id in 1..=3 {
        w.run_row(id, 1, Some(10 * DAY)).await;
    }
    let before = w.versions("runs/").await.len();
    assert_eq!(before, 6);
    let env = reader();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    // A dry run only reads: read-only credentials are enough for it.
    let (code, out, err) = w.cli_env(&["run", "--job", "deleted-runs", "--dry-run"], &env);
    assert_eq!(code, 0, "a dry run with read-only credentials: {out}{err}");
    let counts: Vec<&str> = out
        .lines()
        .find(|l| l.starts_with("deleted-runs"))
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(counts.get(1), Some(&"3"), "would purge all three: {out}");
    assert_eq!(
        err.matches("storage holds are not checked").count(),
        1,
        "said once: {err}"
    );

    let (code, out, err) = w.cli_env(&["run", "--job", "deleted-runs"], &env);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains(&w.bucket) && err.contains(action), "{err}");
    assert_eq!(err.matches(action).count(), 1, "said once: {err}");
    assert_eq!(w.versions("runs/").await.len(), before, "nothing deleted");
    for id in 1..=3 {
        assert_eq!(w.rows_of_run(id).await, 7, "run {id} keeps its rows");
    }
    assert_eq!(
        w.count("SELECT count(*) FROM lethe.work_items").await,
        0,
        "nothing was claimed"
    );

    // The probe leaves nothing behind, not even a delete marker.
    let (code, out, err) = w.cli(&["run", "--job", "deleted-runs"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        w.versions("").await.is_empty(),
        "{:?}",
        w.versions("").await
    );
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_that_may_not_delete_versions_is_refused_before_anything_is_claimed() {
    refused_on(Versioning::Enabled, "s3:DeleteObjectVersion").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_that_may_not_delete_objects_is_refused_before_anything_is_claimed() {
    refused_on(Versioning::Unversioned, "s3:DeleteObject").await;
}
