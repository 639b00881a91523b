//! The daemon's schedule: catch-up after downtime, fires, several processes on one job, a
//! database that is not there yet, and spec files left out with `--keep-going`.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_catches_up_fires_on_schedule_serves_metrics_and_stops_on_sigterm() {
    let w = World::new(Versioning::Unversioned).await;
    w.account(1, "free", None).await;
    w.run_row(1, 1, Some(GRACE + 60)).await;
    w.run_row(2, 1, Some(GRACE + 60)).await;
    w.run_row(3, 1, Some(DAY)).await; // in grace: must survive every run
    set_schedule(&w, "deleted-runs.toml", "*/2 * * * * *");
    let anchors = w.jobs_dir.join("anchors.jsonl");
    let mut d = Daemon::start(&w, &[("LETHE_AUDIT_ANCHOR", anchors.to_str().unwrap())]);

    // Never ran before: the first run happens at start.
    wait_for("the catch-up run", &d, async || {
        w.rows_of_run(1).await + w.rows_of_run(2).await == 0
    })
    .await;
    wait_for("the metrics", &d, async || {
        d.metric("lethe_subjects_purged_total{lethe_job=\"deleted-runs\"}") == Some(2.0)
    })
    .await;
    assert_eq!(d.get("/healthz").unwrap().0, 200);
    let (code, body) = d.get("/readyz").unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        d.metric("lethe_database_up"),
        Some(1.0),
        "{:?}",
        d.get("/metrics")
    );

    // A subject that becomes eligible now is taken by a scheduled fire, not by the catch-up.
    w.run_row(4, 1, Some(GRACE + 60)).await;
    wait_for("a scheduled run", &d, async || w.rows_of_run(4).await == 0).await;
    assert!(w.keys("runs/4/").await.is_empty());
    assert!(runs_of(&w, "deleted-runs").await >= 2);
    assert_eq!(
        w.rows_of_run(3).await,
        7,
        "the subject in grace keeps its rows"
    );
    assert_eq!(w.keys("runs/3/").await.len(), 2);
    let purged = w.audit_events("purged").await;
    assert_eq!(
        purged,
        vec![
            "deleted-runs:1".to_string(),
            "deleted-runs:2".into(),
            "deleted-runs:4".into()
        ]
    );
    assert_eq!(
        d.metric("lethe_overdue_subjects{lethe_job=\"deleted-runs\"}"),
        Some(0.0)
    );

    // The daemon anchors the audit chain after each run (after its rows are committed, so
    // wait for it); the chain matches the anchors.
    let lines = || {
        std::fs::read_to_string(&anchors)
            .unwrap_or_default()
            .lines()
            .count()
    };
    wait_for("the second anchor", &d, async || lines() >= 2).await;
    let (code, out, err) = w.cli(&["audit", "verify", "--anchor", anchors.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("anchors: all"), "{out}");

    let (code, took) = d.terminate();
    assert_eq!(code, 0, "clean shutdown; log:\n{}", d.logs());
    assert!(took < Duration::from_secs(30), "took {took:?}");
    // Every log line is one JSON object.
    let logs = d.logs();
    assert!(logs.lines().count() >= 3, "{logs}");
    for line in logs.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v.get("level").is_some(), "{line}");
    }
    assert!(logs.contains("stopped cleanly"), "{logs}");
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_week_of_downtime_each_overdue_job_runs_once_and_a_fresh_one_waits() {
    let w = World::new(Versioning::Unversioned).await;
    w.account(1, "free", None).await;
    w.run_row(1, 1, Some(GRACE + 60)).await;
    // Daily jobs. deleted-runs last finished a week ago; deleted-snapshots an hour ago.
    for f in [
        "deleted-runs.toml",
        "deleted-snapshots.toml",
        "closed-accounts.toml",
    ] {
        set_schedule(&w, f, "0 3 * * *");
    }
    w.sql(
        "INSERT INTO lethe.job_runs (job, started_at, finished_at, status, host) VALUES
           ('deleted-runs', now() - interval '7 days 1 minute', now() - interval '7 days', 'ok', 'test'),
           ('deleted-snapshots', now() - interval '61 minutes', now() - interval '1 hour', 'ok', 'test'),
           ('closed-accounts', now() - interval '61 minutes', now() - interval '1 hour', 'ok', 'test')",
    )
    .await;
    let mut d = Daemon::start(&w, &[]);
    wait_for("the catch-up run", &d, async || {
        w.rows_of_run(1).await == 0
            && w
                .count(
                    "SELECT count(*) FROM lethe.job_runs WHERE job = 'deleted-runs' AND finished_at IS NOT NULL",
                )
                .await
                == 2
    })
    .await;
    // Give a wrong second catch-up (or a run of a fresh job) time to show up.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(runs_of(&w, "deleted-runs").await, 2, "exactly one catch-up");
    assert_eq!(runs_of(&w, "deleted-snapshots").await, 1, "not due");
    assert_eq!(runs_of(&w, "closed-accounts").await, 1, "not due");
    assert_eq!(d.terminate().0, 0);
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_and_a_one_shot_purge_every_subject_exactly_once() {
    let w = World::new(Versioning::Unversioned).await;
    w.account(1, "free", None).await;
    let n = 120;
    w.sql(&format!(
        "INSERT INTO runs SELECT g, 1, 'r', 'deleted',
             (extract(epoch from now() - interval '8 days') * 1000)::bigint, NULL
         FROM generate_series(1, {n}) g;
         INSERT INTO metrics (run_id, key, value, step) SELECT g, 'loss', 0.5, 1 FROM generate_series(1, {n}) g"
    ))
    .await;
    w.put_many((1..=n).map(|i| format!("runs/{i}/model.bin")).collect())
        .await;
    set_schedule(&w, "deleted-runs.toml", "* * * * * *");
    // Small batches, so the three processes interleave over many claims.
    let env = [("LETHE_BATCH_SUBJECTS", "7")];
    let mut a = Daemon::start(&w, &env);
    let mut b = Daemon::start(&w, &env);
    let out = Command::new(env!("CARGO_BIN_EXE_lethe"))
        .args(["run", "--job", "deleted-runs", "--wait"])
        .env("DATABASE_URL", &w.url)
        .env("LETHE_JOBS_DIR", &w.jobs_dir)
        .env("LETHE_BATCH_SUBJECTS", "7")
        .env("LETHE_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.code() == Some(0),
        "one-shot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("every subject purged", &a, async || {
        w.count("SELECT count(*) FROM runs").await == 0
    })
    .await;
    let purged = w.audit_events("purged").await;
    let mut distinct = purged.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(purged.len(), n as usize, "one purged entry per subject");
    assert_eq!(distinct.len(), n as usize);
    assert!(w.keys("runs/").await.is_empty());
    // Runs of one job never overlapped: each started after the previous one finished.
    let overlaps = w
        .count(
            "SELECT count(*) FROM lethe.job_runs a JOIN lethe.job_runs b
               ON a.job = b.job AND a.id < b.id
              AND b.started_at < coalesce(a.finished_at, 'infinity') AND a.started_at < coalesce(b.finished_at, 'infinity')",
        )
        .await;
    assert_eq!(overlaps, 0, "runs of one job overlapped");
    assert_eq!(a.terminate().0, 0, "{}", a.logs());
    assert_eq!(b.terminate().0, 0, "{}", b.logs());
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_waits_for_an_unreachable_database_instead_of_exiting() {
    let w = World::new(Versioning::Unversioned).await;
    // Nothing listens on this port: the daemon must keep retrying, stay alive, report not
    // ready, and still stop cleanly on SIGTERM.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut d = Daemon::start(
        &w,
        &[(
            "DATABASE_URL",
            &format!("postgres://postgres@127.0.0.1:{dead}/nowhere"),
        )],
    );
    let t = Instant::now();
    let (code, body) = loop {
        if let Some(r) = d.get("/readyz") {
            break r;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "{}", d.logs());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("database"), "{body}");
    assert_eq!(d.get("/healthz").unwrap().0, 200);
    // A connection attempt gives up after the pool's acquire timeout (10 s); then it warns,
    // backs off and tries again, alive all along.
    let t = Instant::now();
    while !d.logs().contains("cannot reach the platform database") {
        assert!(
            d.child.as_mut().unwrap().try_wait().unwrap().is_none(),
            "the daemon exited: {}",
            d.logs()
        );
        assert!(t.elapsed() < Duration::from_secs(40), "{}", d.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(d.child.as_mut().unwrap().try_wait().unwrap().is_none());
    assert_eq!(d.terminate().0, 0);
    w.cleanup().await;
}

/// A daemon with LETHE_KEEP_GOING runs its valid jobs beside a draft spec that does not match
/// the database, reports the draft in its log and counts it in `lethe_invalid_specs`; without
/// it, the same directory stops the daemon with exit 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_going_daemon_runs_the_valid_jobs_and_counts_the_invalid_spec() {
    let w = World::new(Versioning::Unversioned).await;
    w.account(1, "free", None).await;
    w.run_row(1, 1, Some(GRACE + 60)).await;
    std::fs::write(
        w.jobs_dir.join("draft-experiments.toml"),
        "schedule = \"0 3 * * *\"\n[subject]\ntable = \"experiments\"\nclock = \"deleted_at\"\n\
         clock_kind = \"timestamptz\"\n[window]\ngrace = \"1d\"\ndeadline = \"2d\"\n",
    )
    .unwrap();
    let mut strict = Daemon::start(&w, &[]);
    let code = strict.exit_code();
    assert_eq!(code, Some(2), "{}", strict.logs());
    assert_eq!(w.rows_of_run(1).await, 7, "nothing ran");

    let mut d = Daemon::start(&w, &[("LETHE_KEEP_GOING", "true")]);
    wait_for("the catch-up run", &d, async || w.rows_of_run(1).await == 0).await;
    wait_for("the metric", &d, async || {
        d.metric("lethe_invalid_specs") == Some(1.0)
    })
    .await;
    // The daemon records itself as the actor of its runs and their entries.
    assert!(
        w.count("SELECT count(*) FROM lethe.job_runs WHERE actor LIKE 'lethe-daemon@%'")
            .await
            >= 1
    );
    assert_eq!(
        w.count("SELECT count(*) FROM lethe.audit_log WHERE event = 'purged' AND detail->>'by' LIKE 'lethe-daemon@%'")
            .await,
        1
    );
    let (code, _) = d.terminate();
    assert_eq!(code, 0, "{}", d.logs());
    let logs = d.logs();
    assert_eq!(
        logs.lines()
            .filter(|l| l.contains("draft-experiments.toml"))
            .count(),
        1,
        "said once: {logs}"
    );
    w.cleanup().await;
}
