//! Process and database faults: a one-shot run is killed again and again mid-purge, its
//! database sessions are cut every second, the database server restarts under it; then a clean
//! run must converge, and the independent checker (`checker.rs`) asserts the six invariants of
//! docs/safety.md after every run.

use crate::checker::Checker;
use crate::helpers::{World, seed};
use lethe::storage::Versioning;
use rand::{Rng, SeedableRng};
use std::time::Duration;

const SUBJECTS: i64 = 300;
const KILLS: usize = 20;

fn held(id: i64) -> bool {
    id % 10 == 5
}

/// Runs 1..=300 on a versioned bucket: every tenth (10, 20, ...) deleted only a day ago (in
/// grace), every tenth plus five held by a subject hold, the rest eligible. Each has 6 rows and
/// 3 versions (two of `model.bin`, one log). Returns the checker, which knows each one's fate.
async fn seed_world(w: &World) -> Checker {
    w.account(1, "free", None).await;
    w.sql(&format!(
        "INSERT INTO runs SELECT g, 1, 'r', 'deleted',
             (extract(epoch from now() - CASE WHEN g % 10 = 0 THEN interval '1 day' ELSE interval '8 days' END) * 1000)::bigint, NULL
         FROM generate_series(1, {SUBJECTS}) g;
         INSERT INTO metrics (run_id, key, value, step) SELECT g, 'loss', 0.5, s FROM generate_series(1, {SUBJECTS}) g, generate_series(1, 3) s;
         INSERT INTO params SELECT g, 'lr', '0.1' FROM generate_series(1, {SUBJECTS}) g;
         INSERT INTO links (destination_type, destination_id, label) SELECT 'RUN', g::text, 'l' FROM generate_series(1, {SUBJECTS}) g"
    ))
    .await;
    let mut keys = Vec::new();
    for id in 1..=SUBJECTS {
        keys.push(format!("runs/{id}/model.bin"));
        keys.push(format!("runs/{id}/logs/0.txt"));
    }
    w.put_many(keys.clone()).await;
    w.put_many(
        keys.iter()
            .filter(|k| k.ends_with("model.bin"))
            .cloned()
            .collect(),
    )
    .await;
    let mut holds = std::collections::HashMap::new();
    for id in (1..=SUBJECTS).filter(|&id| held(id)) {
        holds.insert(
            id,
            w.hold(&["--subject", &format!("deleted-runs:{id}")]).await,
        );
    }
    let c = Checker::new(w, &holds).await;
    assert_eq!(c.counts(), (240, 30, 30));
    c
}

/// Small batches, so a kill lands between many claims; the default lease (15 minutes), so a
/// run that waited for the killed runs' leases would time out the test.
const ENV: [(&str, &str); 1] = [("LETHE_BATCH_SUBJECTS", "10")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_twenty_times_then_run_to_completion_keeps_every_invariant() {
    let seed = seed();
    eprintln!("seed {seed} (rerun with LETHE_TEST_SEED={seed})");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let w = World::new(Versioning::Enabled).await;
    let c = seed_world(&w).await;
    let mut schedule = Vec::new();
    for _ in 0..KILLS {
        let after = Duration::from_millis(rng.random_range(150..900));
        schedule.push(after);
        let mut child = w.spawn_run("lethe-killed", &ENV);
        tokio::time::sleep(after).await;
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
    }
    eprintln!("kill schedule (ms after start): {schedule:?}");
    let purged_before = w.audit_events("purged").await.len();
    c.after_run(&w, None).await.assert_clean(seed);
    let left = w
        .count("SELECT count(*) FROM lethe.work_items WHERE state IN ('claimed', 'objects_purged', 'verified')")
        .await;
    // At once, under the killed runs' leases: their run lock went with their sessions, so the
    // next run takes their subjects over without waiting the lease out.
    let t = std::time::Instant::now();
    let (code, _, _) = w.cli_env(&["run", "--job", "deleted-runs"], &ENV);
    c.converged(&w, code).await.assert_clean(seed);
    eprintln!(
        "{left} subjects were left claimed by killed runs; the next run took {:?}",
        t.elapsed()
    );
    eprintln!("seed {seed}: {purged_before} purged during the {KILLS} killed runs, the rest after");
    w.cleanup().await;
}

/// A run killed (SIGKILL) while it holds subjects under a fifteen-minute lease: the next run,
/// started at once, takes them over and purges everything; it does not wait the lease out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_runs_subjects_are_taken_over_at_once() {
    let seed = seed();
    let w = World::new(Versioning::Enabled).await;
    let c = seed_world(&w).await;
    let in_progress = "SELECT count(*) FROM lethe.work_items
         WHERE state IN ('claimed', 'objects_purged', 'verified') AND lease_until > now() + interval '10 minutes'";
    let mut child = w.spawn_run("lethe-killed", &ENV);
    let t = std::time::Instant::now();
    while w.count(in_progress).await == 0 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it was caught holding subjects"
        );
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the run never claimed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
    let left = w.count(in_progress).await;
    assert!(left > 0, "the killed run left nothing claimed");
    c.after_run(&w, None).await.assert_clean(seed);
    let t = std::time::Instant::now();
    let (code, out, err) = w.cli_env(&["run", "--job", "deleted-runs"], &ENV);
    assert_eq!(code, 0, "{out}{err}");
    c.converged(&w, code).await.assert_clean(seed);
    assert_eq!(
        w.count("SELECT count(*) FROM lethe.work_items WHERE state NOT IN ('done', 'held')")
            .await,
        0,
        "subjects left open after the run that followed the kill"
    );
    eprintln!(
        "{left} subjects under a live lease after the kill; the next run purged everything in {:?}",
        t.elapsed()
    );
    w.cleanup().await;
}

/// `pg_terminate_backend` on every session lethe has, every second, for eight seconds: each run
/// that ends is checked (an exit 0 must mean all done) and a new one started, so the cuts keep
/// landing mid-run. Then a clean run converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_sessions_cut_every_second_converge_on_the_next_run() {
    let seed = seed();
    eprintln!("seed {seed} (rerun with LETHE_TEST_SEED={seed})");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let w = World::new(Versioning::Enabled).await;
    let c = seed_world(&w).await;
    // What a database failover looks like from lethe's side: every session it has ends at
    // once, mid-transaction. The first cut comes at a random moment, then one every second.
    let mut child = w.spawn_run("lethe-cut", &ENV);
    tokio::time::sleep(Duration::from_millis(rng.random_range(100..900))).await;
    let (mut cut, mut runs) = (0, 1);
    for _ in 0..8 {
        if let Some(status) = child.try_wait().unwrap() {
            c.after_run(&w, status.code()).await.assert_clean(seed);
            child = w.spawn_run("lethe-cut", &ENV);
            runs += 1;
        }
        cut += w.cut_sessions("lethe-cut").await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let status = child.wait().unwrap();
    c.after_run(&w, status.code()).await.assert_clean(seed);
    let during = w.audit_events("purged").await.len();
    eprintln!("{cut} sessions cut over {runs} runs, which purged {during} subjects");
    assert!(cut >= 4, "too few sessions were cut: {cut}");
    let (code, _, _) = w.cli_env(&["run", "--job", "deleted-runs"], &ENV);
    c.converged(&w, code).await.assert_clean(seed);
    w.cleanup().await;
}

/// An immediate restart of the PostgreSQL server (a throwaway cluster of its own) in the middle
/// of a run: the run either stops with an error or reconnects and finishes; nothing is
/// half-done, and the next run converges at once with every invariant holding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_immediate_database_restart_mid_run_converges_on_the_next_run() {
    let seed = seed();
    eprintln!("seed {seed} (rerun with LETHE_TEST_SEED={seed})");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let cluster = crate::helpers::ThrowawayCluster::start();
    let w = World::new_on(&cluster.admin_url(), Versioning::Enabled).await;
    let c = seed_world(&w).await;
    let mut child = w.spawn_run("lethe-restarted", &ENV);
    // Wait until the run has committed some purges, then restart mid-batch.
    let started = std::time::Instant::now();
    while w.audit_events("purged").await.is_empty() && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
    let finished_first = child.try_wait().unwrap().is_some();
    w.pool.close().await;
    cluster.ctl("restart");
    let status = child.wait().unwrap();
    eprintln!(
        "restarted mid-run (run already finished: {finished_first}); it exited with {status}"
    );
    assert!(
        !finished_first,
        "the run finished before the restart; nothing was tested"
    );
    let w = World {
        pool: sqlx::PgPool::connect(&w.url).await.unwrap(),
        ..w
    };
    // Whether it stopped or (when the restart fell between two transactions) reconnected and
    // went on, nothing is half-done, and an exit 0 means all done.
    c.after_run(&w, status.code()).await.assert_clean(seed);
    let (code, _, _) = w.cli_env(&["run", "--job", "deleted-runs"], &ENV);
    c.converged(&w, code).await.assert_clean(seed);
    w.cleanup().await;
    drop(cluster);
}
