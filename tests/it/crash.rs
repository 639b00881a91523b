//! SIGKILL at random moments: a one-shot run is killed again and again mid-purge, then runs to
//! completion, and the world is checked against the six invariants of ARCHITECTURE.md.

use crate::helpers::{World, seed};
use lethe::storage::Versioning;
use rand::{Rng, SeedableRng};
use std::process::{Command, Stdio};
use std::time::Duration;

const SUBJECTS: i64 = 300;
const KILLS: usize = 20;

fn in_grace(id: i64) -> bool {
    id % 10 == 0
}

fn held(id: i64) -> bool {
    id % 10 == 5
}

/// Runs 1..=300 on a versioned bucket: every tenth (10, 20, ...) deleted only a day ago (in
/// grace), every tenth plus five held by a subject hold, the rest eligible. Each has 6 rows and
/// 3 versions (two of `model.bin`, one log). Returns the hold id per held subject.
async fn seed_world(w: &World) -> std::collections::HashMap<i64, i64> {
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
    holds
}

/// The six invariants of ARCHITECTURE.md over the seeded world, after a run that exited 0.
async fn check_invariants(w: &World, seed: u64, holds: &std::collections::HashMap<i64, i64>) {
    // 1. No over-deletion: held and in-grace subjects keep every row and every version.
    // 2. No under-deletion: every other subject has no rows, versions or markers left, and was
    //    purged before its deadline.
    for id in 1..=SUBJECTS {
        let rows = w.rows_of_run(id).await;
        let versions = w.versions(&format!("runs/{id}/")).await;
        if held(id) || in_grace(id) {
            assert_eq!(rows, 1 + 3 + 1 + 1, "seed {seed}: subject {id} lost rows");
            assert_eq!(versions.len(), 3, "seed {seed}: subject {id} lost versions");
            assert!(versions.iter().all(|v| !v.delete_marker));
        } else {
            assert_eq!(rows, 0, "seed {seed}: subject {id} kept rows");
            assert!(
                versions.is_empty(),
                "seed {seed}: subject {id} kept {versions:?}"
            );
        }
    }
    let late = w
        .count("SELECT count(*) FROM lethe.work_items WHERE state = 'done' AND purged_at > deadline_at")
        .await;
    assert_eq!(late, 0);
    // 3. Exactly once: one `purged` entry per purged subject.
    let purged = w.audit_events("purged").await;
    let mut distinct = purged.clone();
    distinct.sort();
    distinct.dedup();
    let expected = (1..=SUBJECTS)
        .filter(|&id| !held(id) && !in_grace(id))
        .count();
    assert_eq!(purged.len(), expected, "seed {seed}: purged entries");
    assert_eq!(distinct.len(), expected);
    // 4. Audit completeness: every purge has its claimed work item (the committed intent with
    //    the manifest), and every held subject's exception names its hold.
    let done = w
        .count(
            "SELECT count(*) FROM lethe.work_items WHERE state = 'done' AND manifest ? 'locations'",
        )
        .await;
    assert_eq!(done, expected as i64);
    for (id, hold) in holds {
        let n = w
            .count(&format!(
                "SELECT count(*) FROM lethe.audit_log WHERE event = 'held' AND subject_key = '{id}' AND hold_id = {hold}"
            ))
            .await;
        assert!(
            n >= 1,
            "seed {seed}: subject {id} has no exception naming hold {hold}"
        );
    }
    // 5. Audit integrity.
    let (code, out, err) = w.cli(&["audit", "verify"]);
    assert_eq!(code, 0, "seed {seed}: {out}{err}");
    // 6. Convergence: nothing eligible is left.
    let (code, out, _) = w.cli(&["plan", "--job", "deleted-runs"]);
    assert_eq!(code, 0);
    let line = out.lines().find(|l| l.starts_with("deleted-runs")).unwrap();
    let eligible: i64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_eq!(eligible, 0, "seed {seed}: {out}");
}

const ENV: [(&str, &str); 2] = [
    ("LETHE_BATCH_SUBJECTS", "10"),
    ("LETHE_LEASE_SECONDS", "10"),
];

fn spawn_run(w: &World, app: &str) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_lethe"))
        .args(["run", "--job", "deleted-runs"])
        .env("DATABASE_URL", format!("{}?application_name={app}", w.url))
        .env("LETHE_JOBS_DIR", &w.jobs_dir)
        .env("LETHE_LOG", "off")
        .envs(ENV)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_twenty_times_then_run_to_completion_keeps_every_invariant() {
    let seed = seed();
    eprintln!("seed {seed} (rerun with LETHE_TEST_SEED={seed})");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let w = World::new(Versioning::Enabled).await;
    let holds = seed_world(&w).await;
    let mut schedule = Vec::new();
    for _ in 0..KILLS {
        let after = Duration::from_millis(rng.random_range(150..900));
        schedule.push(after);
        let mut child = spawn_run(&w, "lethe-killed");
        tokio::time::sleep(after).await;
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
    }
    eprintln!("kill schedule (ms after start): {schedule:?}");
    let purged_before = w.audit_events("purged").await.len();
    // Leases of the killed runs expire; then one run finishes the job.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let (code, out, err) = w.cli_env(&["run", "--job", "deleted-runs"], &ENV);
    assert_eq!(code, 0, "seed {seed}: the run after the kills: {out}{err}");
    check_invariants(&w, seed, &holds).await;
    eprintln!("seed {seed}: {purged_before} purged during the {KILLS} killed runs, the rest after");
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_sessions_cut_mid_run_converge_on_the_next_run() {
    let seed = seed();
    eprintln!("seed {seed} (rerun with LETHE_TEST_SEED={seed})");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let w = World::new(Versioning::Enabled).await;
    let holds = seed_world(&w).await;
    // What a database restart looks like from lethe's side: every session it has ends at once,
    // mid-transaction, a few times during the run.
    let mut child = spawn_run(&w, "lethe-cut");
    let mut cut = 0;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..500))).await;
        if child.try_wait().unwrap().is_some() {
            break;
        }
        cut += w
            .count(
                // OFFSET 0 keeps the filter inside: only lethe's sessions in this database end.
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM (
                     SELECT pid FROM pg_stat_activity
                     WHERE application_name = 'lethe-cut' AND datname = current_database() OFFSET 0) s",
            )
            .await;
    }
    let status = child.wait().unwrap();
    let during = w.audit_events("purged").await.len();
    eprintln!("{cut} sessions cut mid-run; the run exited with {status} after purging {during}");
    assert!(cut > 0, "the run ended before any session was cut");
    tokio::time::sleep(Duration::from_secs(11)).await;
    let (code, out, err) = w.cli_env(&["run", "--job", "deleted-runs"], &ENV);
    assert_eq!(code, 0, "seed {seed}: the next run: {out}{err}");
    check_invariants(&w, seed, &holds).await;
    w.cleanup().await;
}

/// An immediate restart of the PostgreSQL server (a throwaway cluster of its own) in the middle
/// of a run: the run either stops with an error or reconnects and finishes; nothing is
/// half-done, and after the leases expire the next run converges with every invariant holding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_immediate_database_restart_mid_run_converges_on_the_next_run() {
    let seed = seed();
    eprintln!("seed {seed} (rerun with LETHE_TEST_SEED={seed})");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let cluster = crate::helpers::ThrowawayCluster::start();
    let w = World::new_on(&cluster.admin_url(), Versioning::Enabled).await;
    let holds = seed_world(&w).await;
    let mut child = spawn_run(&w, "lethe-restarted");
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
    if status.success() {
        // The restart fell between two transactions and the pool reconnected: the run went
        // on, and what it reports as done must be so.
        check_invariants(&w, seed, &holds).await;
    }
    tokio::time::sleep(Duration::from_secs(11)).await;
    let (code, out, err) = w.cli_env(&["run", "--job", "deleted-runs"], &ENV);
    assert_eq!(
        code, 0,
        "seed {seed}: the run after the restart: {out}{err}"
    );
    check_invariants(&w, seed, &holds).await;
    w.cleanup().await;
    drop(cluster);
}
