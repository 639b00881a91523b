//! The daemon's guards: leases against a process cut off or paused mid-purge, the clock guard,
//! the blast-radius cap and time budget, and the run lock's own connection and the pool size.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_cut_off_past_its_lease_deletes_nothing_after_the_take_over() {
    let w = one_subject_long_to_purge().await;
    let log = w.jobs_dir.join("old.log");
    // The old process: short lease, one delete request at a time, so it is caught mid-purge.
    let mut old = Command::new(env!("CARGO_BIN_EXE_lethe"))
        .args(["run", "--job", "deleted-runs"])
        .env(
            "DATABASE_URL",
            format!("{}?application_name=lethe-old", w.url),
        )
        .env("LETHE_JOBS_DIR", &w.jobs_dir)
        .env("LETHE_LEASE_SECONDS", "10")
        // One four-second attempt per request, so a ten-second lease passes the start-up check.
        .env("LETHE_S3_ATTEMPTS", "1")
        .env("LETHE_S3_TIMEOUT_SECONDS", "4")
        .env("LETHE_DELETE_CONCURRENCY", "1")
        .env("LETHE_LOG", "lethe=info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let pid = old.id().to_string();
    wait_for_line(&log, "purging objects");
    assert!(
        Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    // Cut off: its database sessions end (its run lock with them), as in a network partition.
    w.cut_sessions("lethe-old").await;
    let at_stop = w.keys("runs/1/").await.len();
    assert!(
        at_stop > 0,
        "the old process finished before it was stopped; the test needs more objects"
    );
    // Meanwhile an operator holds the subject, and once the lease has expired a new run takes
    // the item over and records the hold.
    w.hold(&["--subject", "deleted-runs:1"]).await;
    tokio::time::sleep(Duration::from_secs(11)).await;
    let (code, _, err) = w.cli(&["run", "--job", "deleted-runs"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        w.count("SELECT count(*) FROM lethe.work_items WHERE state = 'held'")
            .await,
        1
    );
    let kept = w.keys("runs/1/").await.len();
    assert!(kept > 0);

    // The old process wakes up: it must not delete another object of the held subject.
    assert!(
        Command::new("kill")
            .args(["-CONT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let t = Instant::now();
    let status = loop {
        if let Some(s) = old.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(90), "old process hangs");
        std::thread::sleep(Duration::from_millis(100));
    };
    let logs = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        w.keys("runs/1/").await.len(),
        kept,
        "objects were deleted after the take-over; old process log:\n{logs}"
    );
    assert_ne!(status.code(), Some(0), "{logs}");
    assert_eq!(w.rows_of_run(1).await, 7, "the held subject keeps its rows");
    assert!(w.audit_events("purged").await.is_empty());
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_guard_refuses_after_a_jump_until_an_operator_confirms() {
    let w = World::new(Versioning::Unversioned).await;
    deletable_runs(&w, 3).await;
    // The newest time lethe recorded is 30 days ago: the clock jumped (or lethe was down).
    w.sql(
        "INSERT INTO lethe.job_runs (job, started_at, finished_at, status, host)
         VALUES ('deleted-runs', now() - interval '30 days', now() - interval '30 days', 'ok', 'test')",
    )
    .await;
    let (code, _, err) = w.cli(&["run", "--all"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("lethe clock confirm"), "{err}");
    assert_eq!(
        w.count("SELECT count(*) FROM runs").await,
        3,
        "nothing deleted"
    );
    let (code, _, err) = w.cli(&["run", "--all", "--dry-run"]);
    assert_eq!(code, 0, "a dry run is not destructive: {err}");

    let (code, _, err) = w.cli(&["clock", "confirm", "--by", "ops@example.com"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        w.audit_events("clock_confirmed").await,
        vec![":".to_string()]
    );
    let (code, _, err) = w.cli(&["run", "--all"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(w.count("SELECT count(*) FROM runs").await, 0);

    // Backwards: the database clock is now a day behind what lethe recorded.
    deletable_runs_more(&w, 10, 12).await;
    w.sql(
        "INSERT INTO lethe.job_runs (job, started_at, finished_at, status, host)
         VALUES ('deleted-runs', now() + interval '1 day', now() + interval '1 day', 'ok', 'test')",
    )
    .await;
    let (code, _, err) = w.cli(&["run", "--all"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("behind"), "{err}");
    assert_eq!(w.count("SELECT count(*) FROM runs").await, 3);
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blast_radius_cap_and_the_time_budget_leave_the_rest_for_the_next_run() {
    let w = World::new(Versioning::Unversioned).await;
    deletable_runs(&w, 200).await;
    let (code, out, err) = w.cli_env(
        &["run", "--job", "deleted-runs"],
        &[("LETHE_MAX_SUBJECTS_PER_RUN", "5")],
    );
    assert_eq!(code, 1, "more were eligible than the cap: {out}{err}");
    assert!(out.contains("limit reached"), "{out}");
    assert_eq!(w.count("SELECT count(*) FROM runs").await, 195);

    // One subject per batch, one batch at a time: 195 batches cannot fit in one second.
    let (code, out, err) = w.cli_env(
        &["run", "--job", "deleted-runs"],
        &[
            ("LETHE_RUN_BUDGET_SECONDS", "1"),
            ("LETHE_BATCH_SUBJECTS", "1"),
            ("LETHE_BATCH_CONCURRENCY", "1"),
        ],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("time budget"), "{out}");
    let left = w.count("SELECT count(*) FROM runs").await;
    assert!(left > 0 && left < 195, "some purged, some left: {left}");
    let status: String =
        sqlx::query_scalar("SELECT status FROM lethe.job_runs ORDER BY id DESC LIMIT 1")
            .fetch_one(&w.pool)
            .await
            .unwrap();
    assert_eq!(status, "partial");
    // Nothing half-done: every subject is either fully purged or untouched.
    assert_eq!(
        w.count("SELECT count(*) FROM lethe.work_items WHERE state NOT IN ('done')")
            .await,
        0
    );
    let (code, _, err) = w.cli(&["run", "--job", "deleted-runs"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(w.count("SELECT count(*) FROM runs").await, 0);
    assert_eq!(w.audit_events("purged").await.len(), 200);
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_stopped_past_its_lease_deletes_nothing_when_continued() {
    let w = one_subject_long_to_purge().await;
    // Daily schedules: the only run is the catch-up at start.
    for f in [
        "deleted-runs.toml",
        "deleted-snapshots.toml",
        "closed-accounts.toml",
    ] {
        set_schedule(&w, f, "0 3 * * *");
    }
    let mut d = Daemon::start(
        &w,
        &[
            ("LETHE_LEASE_SECONDS", "10"),
            ("LETHE_S3_ATTEMPTS", "1"),
            ("LETHE_S3_TIMEOUT_SECONDS", "4"),
            ("LETHE_DELETE_CONCURRENCY", "1"),
            ("LETHE_DELETE_BATCH", "100"),
        ],
    );
    // Stopped while it deletes (not while it reads the bucket's versioning, which would time
    // out when it wakes and fail the subject before any lease check).
    let t = Instant::now();
    while w.keys("runs/1/").await.len() > 3900 {
        assert!(t.elapsed() < Duration::from_secs(60), "{}", d.logs());
    }
    d.signal("-STOP");
    let at_stop = w.keys("runs/1/").await.len();
    assert!(
        at_stop > 0,
        "the purge finished before the stop; the test needs more objects"
    );
    // Past its lease, the subject is held (holds are checked before objects go, so only the
    // lease can stop a purge already under way).
    tokio::time::sleep(Duration::from_secs(11)).await;
    w.hold(&["--subject", "deleted-runs:1"]).await;
    let kept = w.keys("runs/1/").await.len();
    d.signal("-CONT");
    wait_for("the run to end", &d, async || {
        w.count("SELECT count(*) FROM lethe.job_runs WHERE job = 'deleted-runs' AND finished_at IS NOT NULL")
            .await
            == 1
    })
    .await;
    // The one request that may have passed its lease check just before the stop can still
    // reach the store when the process wakes (no fence in front of a store without fencing
    // tokens closes that gap): at most one request of 100 keys. Every later one is refused; the
    // purge of the remaining thousands stops.
    let after = w.keys("runs/1/").await.len();
    assert!(
        after + 100 >= kept,
        "{} objects were deleted after the lease expired, more than the one request that may be \
         past its check; log:\n{}",
        kept - after,
        d.logs()
    );
    assert_eq!(w.rows_of_run(1).await, 7);
    assert!(
        d.logs().contains("lease"),
        "the failure names the lease: {}",
        d.logs()
    );
    assert_eq!(d.terminate().0, 0);
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_lock_has_a_session_of_its_own_and_a_pool_too_small_is_refused() {
    let w = one_subject_long_to_purge().await;
    // Too small a pool, said before anything is claimed: three jobs side by side in the daemon,
    // one batch's worth in a one-shot run.
    let mut d = Daemon::start(&w, &[("LETHE_DB_CONNECTIONS", "5")]);
    let code = d.exit_code();
    assert_eq!(code, Some(2), "{}", d.logs());
    assert!(
        d.logs().contains("LETHE_DB_CONNECTIONS=5 is too small")
            && d.logs().contains("set LETHE_DB_CONNECTIONS=13 or more"),
        "{}",
        d.logs()
    );
    let (code, _, err) = w.cli_env(
        &["run", "--all"],
        &[
            ("LETHE_DB_CONNECTIONS", "4"),
            ("LETHE_BATCH_CONCURRENCY", "2"),
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("set LETHE_DB_CONNECTIONS=5 or more"), "{err}");
    assert_eq!(w.rows_of_run(1).await, 7, "nothing deleted");
    assert_eq!(w.keys("runs/1/").await.len(), 4002);

    // Exactly the pool it needs: the run lock is held by a session outside it, named for the
    // job, while the run works.
    let log = w.jobs_dir.join("run.log");
    let mut run = Command::new(env!("CARGO_BIN_EXE_lethe"))
        .args(["run", "--job", "deleted-runs"])
        .env("DATABASE_URL", &w.url)
        .env("LETHE_JOBS_DIR", &w.jobs_dir)
        .env("LETHE_DB_CONNECTIONS", "5")
        .env("LETHE_DELETE_CONCURRENCY", "1")
        .env("LETHE_LOG", "lethe=info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_for_line(&log, "purging objects");
    let holders: Vec<String> = sqlx::query_scalar(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
          WHERE l.locktype = 'advisory' AND l.granted AND a.datname = current_database()",
    )
    .fetch_all(&w.pool)
    .await
    .unwrap();
    assert_eq!(holders, vec!["lethe run lock: deleted-runs".to_string()]);
    let status = run.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert!(w.keys("runs/1/").await.is_empty());
    assert_eq!(
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
              WHERE l.locktype = 'advisory' AND a.datname = current_database()"
        )
        .fetch_one(&w.pool)
        .await
        .unwrap(),
        0,
        "the lock ended with the run"
    );
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_told_to_wait_waits_on_one_session_then_purges() {
    let w = World::new(Versioning::Unversioned).await;
    w.account(1, "free", None).await;
    w.run_row(1, 1, Some(GRACE + 60)).await;
    // Another process holds the job's run lock.
    let mut holder = w.pool.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(hashtextextended('lethe:job:deleted-runs', 0))")
        .execute(&mut *holder)
        .await
        .unwrap();
    let mut run = Command::new(env!("CARGO_BIN_EXE_lethe"))
        .args(["run", "--job", "deleted-runs", "--wait"])
        .env("DATABASE_URL", &w.url)
        .env("LETHE_JOBS_DIR", &w.jobs_dir)
        .env("LETHE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // While it waits: nothing deleted, and one session of its own asking, the same throughout.
    let waiter = async || -> Vec<i32> {
        sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity
              WHERE application_name = 'lethe run lock: deleted-runs' AND datname = current_database()",
        )
        .fetch_all(&w.pool)
        .await
        .unwrap()
    };
    let t = Instant::now();
    let first = loop {
        let pids = waiter().await;
        if !pids.is_empty() {
            break pids;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "no waiting session");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(waiter().await, first, "one session for the whole wait");
    assert!(run.try_wait().unwrap().is_none(), "it did not wait");
    assert_eq!(w.rows_of_run(1).await, 7, "nothing deleted while waiting");

    // The other process finishes: the waiting run takes the lock and purges.
    sqlx::query("SELECT pg_advisory_unlock(hashtextextended('lethe:job:deleted-runs', 0))")
        .execute(&mut *holder)
        .await
        .unwrap();
    let status = run.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut run.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert_eq!(w.rows_of_run(1).await, 0);
    assert!(w.keys("runs/1/").await.is_empty());
    drop(holder);
    w.cleanup().await;
}

/// A daemon loads its specs once. A hold placed later (here with plain SQL) on a job whose spec
/// it left out cannot be mapped to the rows that job protects in the others, so every run after
/// it refuses, deleting nothing, as a fresh load would: before, only the load looked, and the
/// daemon went on purging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_placed_later_on_a_left_out_job_stops_the_daemons_runs() {
    let w = World::new(Versioning::Unversioned).await;
    w.account(1, "free", None).await;
    w.run_row(1, 1, Some(10 * DAY)).await;
    std::fs::write(
        w.jobs_dir.join("draft-experiments.toml"),
        "schedule = \"0 3 * * *\"\n[subject]\ntable = \"experiments\"\nclock = \"deleted_at\"\n\
         clock_kind = \"timestamptz\"\n[window]\ngrace = \"1d\"\ndeadline = \"2d\"\n",
    )
    .unwrap();
    set_schedule(&w, "deleted-runs.toml", "*/2 * * * * *");
    let d = Daemon::start(&w, &[("LETHE_KEEP_GOING", "true")]);
    wait_for("the first run", &d, async || w.rows_of_run(1).await == 0).await;
    w.sql(
        "INSERT INTO lethe.holds (job, reason, placed_by) VALUES ('draft-experiments', 'litigation', 'sql')",
    )
    .await;
    w.run_row(2, 1, Some(10 * DAY)).await;
    let failed = "lethe_runs_total{lethe_job=\"deleted-runs\",status=\"failed\"}";
    wait_for("a refused run", &d, async || {
        d.metric(failed).is_some_and(|n| n >= 2.0)
    })
    .await;
    assert_eq!(w.rows_of_run(2).await, 7, "nothing deleted: {}", d.logs());
    assert_eq!(w.keys("runs/2/").await.len(), 2, "nothing deleted");
    assert!(
        d.logs().contains("names job `draft-experiments`"),
        "{}",
        d.logs()
    );
    w.cleanup().await;
}
