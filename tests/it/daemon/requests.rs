//! An erasure request recorded while the daemon runs is fulfilled within seconds, not at the
//! jobs' next scheduled fire (a year away here), and its gauges say so.

use super::{Daemon, runs_of, set_schedule, wait_for};
use crate::helpers::World;
use lethe::storage::Versioning;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_placed_while_the_daemon_runs_is_fulfilled_by_its_next_tick() {
    let w = World::new(Versioning::Unversioned).await;
    w.account(5, "free", None).await;
    w.run_row(50, 5, None).await;
    w.run_row(51, 5, None).await;
    w.account(6, "free", None).await;
    w.run_row(60, 6, None).await;
    for f in [
        "closed-accounts.toml",
        "deleted-runs.toml",
        "deleted-snapshots.toml",
    ] {
        set_schedule(&w, f, "0 0 0 1 1 *");
    }
    let mut d = Daemon::start(&w, &[]);
    // The catch-up runs at start (no job ever ran), then nothing is due for a year.
    wait_for("the catch-up runs", &d, async || {
        w.count("SELECT count(*) FROM lethe.job_runs WHERE finished_at IS NOT NULL")
            .await
            >= 3
    })
    .await;
    wait_for("the request gauge", &d, async || {
        d.metric("lethe_requests_open ") == Some(0.0)
    })
    .await;
    let before = runs_of(&w, "deleted-runs").await;
    assert_eq!(
        w.rows_of_run(50).await,
        7,
        "live runs are not eligible by themselves"
    );

    let (code, out, err) = w.cli(&[
        "request",
        "erase",
        "--account",
        "5",
        "--reason",
        "DSR-5",
        "--by",
        "privacy",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let id = out.trim().to_string();
    wait_for("the request to be fulfilled", &d, async || {
        w.count(&format!(
            "SELECT count(*) FROM lethe.requests WHERE id = {id} AND state = 'fulfilled'"
        ))
        .await
            == 1
    })
    .await;
    assert!(
        runs_of(&w, "deleted-runs").await > before,
        "a run fired for it"
    );
    assert_eq!(
        w.rows_of_run(50).await + w.rows_of_run(51).await,
        0,
        "{}",
        d.logs()
    );
    assert!(w.keys("runs/50/").await.is_empty());
    assert_eq!(
        w.count("SELECT count(*) FROM accounts WHERE id = 5").await,
        0
    );
    assert_eq!(w.rows_of_run(60).await, 7, "the neighbour stays");
    wait_for("the request gauge back at 0", &d, async || {
        d.metric("lethe_requests_open ") == Some(0.0)
    })
    .await;
    let (code, _) = d.terminate();
    assert_eq!(code, 0, "{}", d.logs());
    w.cleanup().await;
}
