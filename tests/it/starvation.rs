//! Held and failing subjects do not starve the rest: a subject recorded held is left out of
//! discovery while its hold is active and never counts against the blast-radius cap; a subject
//! that keeps failing waits a growing `retry_at` instead of being claimed and audited by every
//! run.

use crate::helpers::{DAY, World};
use lethe::storage::Versioning;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_thousand_held_subjects_ahead_do_not_starve_ten_eligible_ones() {
    let w = World::new(Versioning::Unversioned).await;
    w.account(1, "free", None).await;
    w.account(2, "free", None).await;
    // Account 2's 50,000 runs, deleted 20 days ago, come first in discovery's order.
    w.sql(
        "INSERT INTO runs SELECT g, 2, 'r', 'deleted',
             (extract(epoch from now() - interval '20 days') * 1000)::bigint, NULL
         FROM generate_series(1000, 50999) g",
    )
    .await;
    for id in 1..=10 {
        w.run_row(id, 1, Some(10 * DAY)).await;
    }
    let hold = w.hold(&["--account", "2"]).await;
    let cap = [("LETHE_MAX_SUBJECTS_PER_RUN", "1000")];

    let t = std::time::Instant::now();
    let (code, out, err) = w.cli_env(&["run", "--job", "deleted-runs"], &cap);
    eprintln!("first run: {:?}", t.elapsed());
    assert_eq!(code, 0, "{out}{err}");
    for id in 1..=10 {
        assert_eq!(
            w.rows_of_run(id).await,
            0,
            "run {id} is purged in the first run"
        );
        assert!(w.keys(&format!("runs/{id}/")).await.is_empty());
    }
    let held_items =
        format!("SELECT count(*) FROM lethe.work_items WHERE state = 'held' AND hold_id = {hold}");
    assert_eq!(
        w.count(&held_items).await,
        50_000,
        "each exception recorded"
    );
    let held_entries =
        format!("SELECT count(*) FROM lethe.audit_log WHERE event = 'held' AND hold_id = {hold}");
    assert_eq!(w.count(&held_entries).await, 50_000);

    let t = std::time::Instant::now();
    let (code, out, err) = w.cli_env(&["run", "--job", "deleted-runs"], &cap);
    eprintln!("second run: {:?}", t.elapsed());
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        w.count("SELECT count(*) FROM lethe.work_items WHERE attempts > 1")
            .await,
        0,
        "a held subject is not claimed again while its hold lasts"
    );
    assert_eq!(w.count(&held_entries).await, 50_000, "nor audited again");
    assert_eq!(w.count(&held_items).await, 50_000);
    w.cleanup().await;
}

/// A subject that fails every run (its URI cannot be purged) is taken by the next run at once
/// twice, then waits: the run after its third failure leaves it alone, and says so with exit 1
/// (a subject waiting out its backoff is work left undone, not success).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_that_keeps_failing_waits_before_it_is_tried_again() {
    let w = World::new(Versioning::Unversioned).await;
    w.account(1, "free", None).await;
    w.run_row(1, 1, Some(10 * DAY)).await;
    w.sql("UPDATE runs SET artifact_uri = 'gs://elsewhere/1/' WHERE id = 1")
        .await;
    let attempts = "SELECT attempts::bigint FROM lethe.work_items WHERE subject_key = '1'";
    for run in 1..=3 {
        let (code, out, err) = w.cli(&["run", "--job", "deleted-runs"]);
        assert_eq!(code, 1, "run {run}: {out}{err}");
        assert!(err.contains("s3://"), "run {run}: {err}");
        assert_eq!(w.count(attempts).await, run);
    }
    assert_eq!(
        w.count(
            "SELECT count(*) FROM lethe.work_items
             WHERE retry_at > now() + interval '50 seconds' AND state = 'failed'"
        )
        .await,
        1,
        "after a third failure it waits a minute"
    );
    let (code, out, err) = w.cli(&["run", "--job", "deleted-runs"]);
    assert_eq!(code, 1, "work left undone: {out}{err}");
    assert!(
        out.contains("1 failed subjects wait out their retry backoff"),
        "{out}"
    );
    assert_eq!(
        w.count(attempts).await,
        3,
        "not claimed again while it waits"
    );
    assert_eq!(
        w.count("SELECT count(*) FROM lethe.audit_log WHERE event = 'failed'")
            .await,
        3
    );
    assert_eq!(w.rows_of_run(1).await, 7);
    w.cleanup().await;
}
