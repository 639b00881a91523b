//! `lethe daemon` as a real process: schedules, catch-up, non-overlap across processes,
//! metrics and health, JSON logs, and a clean SIGTERM.

use crate::helpers::{DAY, World};
use lethe::storage::Versioning;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const GRACE: i64 = 7 * DAY;

/// A running `lethe daemon` whose stderr goes to a file.
struct Daemon {
    child: Option<Child>,
    log: PathBuf,
    port: u16,
}

impl Daemon {
    fn start(w: &World, extra_env: &[(&str, &str)]) -> Daemon {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = w.jobs_dir.join(format!("daemon-{port}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lethe"));
        cmd.arg("daemon")
            .env("DATABASE_URL", &w.url)
            .env("LETHE_JOBS_DIR", &w.jobs_dir)
            .env("LETHE_LISTEN", format!("127.0.0.1:{port}"))
            .env("LETHE_LOG", "lethe=info,warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        Daemon {
            child: Some(cmd.spawn().unwrap()),
            log,
            port,
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// `GET path`: (status, body); None while nothing listens.
    fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n")?.1.to_string();
        Some((status, body))
    }

    fn metric(&self, sample: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics")?;
        body.lines()
            .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }

    /// Sends SIGTERM and waits for the exit: (code, how long it took).
    fn terminate(&mut self) -> (i32, Duration) {
        self.signal("-TERM");
        let t = Instant::now();
        let mut child = self.child.take().unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return (status.code().unwrap_or(-1), t.elapsed());
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "daemon ignored SIGTERM:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Rewrites the schedule of every spec in the world's job dir.
fn set_schedule(w: &World, file: &str, schedule: &str) {
    let p = w.jobs_dir.join(file);
    let text = std::fs::read_to_string(&p).unwrap();
    let text: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with("schedule = ") {
                format!("schedule = \"{schedule}\"")
            } else {
                l.to_string()
            }
        })
        .collect();
    std::fs::write(&p, text.join("\n") + "\n").unwrap();
}

async fn wait_for(what: &str, d: &Daemon, mut done: impl AsyncFnMut() -> bool) {
    let t = Instant::now();
    while !done().await {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}; daemon log:\n{}",
            d.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn runs_of(w: &World, job: &str) -> i64 {
    w.count(&format!(
        "SELECT count(*) FROM lethe.job_runs WHERE job = '{job}'"
    ))
    .await
}

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

/// Run 1, eligible, with 4,000 more objects: with one delete request at a time its purge takes
/// long enough to be caught in the middle.
async fn one_subject_long_to_purge() -> World {
    let w = World::new(Versioning::Unversioned).await;
    w.account(1, "free", None).await;
    w.run_row(1, 1, Some(GRACE + 60)).await;
    w.put_many((0..4000).map(|i| format!("runs/1/f/{i:05}")).collect())
        .await;
    w
}

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
    let t = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("purging objects")
    {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "old process never reached its objects"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
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

async fn deletable_runs(w: &World, n: i64) {
    w.account(1, "free", None).await;
    w.sql(&format!(
        "INSERT INTO runs SELECT g, 1, 'r', 'deleted',
             (extract(epoch from now() - interval '8 days') * 1000)::bigint, NULL
         FROM generate_series(1, {n}) g"
    ))
    .await;
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

async fn deletable_runs_more(w: &World, from: i64, to: i64) {
    w.sql(&format!(
        "INSERT INTO runs SELECT g, 1, 'r', 'deleted',
             (extract(epoch from now() - interval '8 days') * 1000)::bigint, NULL
         FROM generate_series({from}, {to}) g"
    ))
    .await;
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
    let t = Instant::now();
    let code = loop {
        if let Some(s) = strict.child.as_mut().unwrap().try_wait().unwrap() {
            break s.code();
        }
        assert!(t.elapsed() < Duration::from_secs(60), "{}", strict.logs());
        std::thread::sleep(Duration::from_millis(50));
    };
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

/// Every sample of a Prometheus text exposition: name → the label names it carries.
fn series(body: &str) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let mut out: std::collections::BTreeMap<_, std::collections::BTreeSet<String>> =
        Default::default();
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = out.entry(line[..name_end].to_string()).or_default();
        if let Some(inner) = line[name_end..]
            .strip_prefix('{')
            .and_then(|r| r.split_once('}'))
        {
            let re = regex_lite::Regex::new(r#"([a-zA-Z_][a-zA-Z0-9_]*)="#).unwrap();
            labels.extend(re.captures_iter(inner.0).map(|c| c[1].to_string()));
        }
    }
    out
}

/// What a query text uses: (metric names, label names in `lethe_…{…}` selectors of each
/// metric, label names in `by (…)` / `on (…)` / `without (…)` clauses).
type Used = (
    std::collections::BTreeSet<String>,
    Vec<(String, String)>,
    std::collections::BTreeSet<String>,
);

fn used_in(text: &str) -> Used {
    let name = regex_lite::Regex::new(r"\blethe_[a-z_]+\b").unwrap();
    let selector = regex_lite::Regex::new(r#"\b(lethe_[a-z_]+)\s*\{([^}]*)\}"#).unwrap();
    let matcher = regex_lite::Regex::new(r#"([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)"#).unwrap();
    let clause = regex_lite::Regex::new(
        r"\b(?:by|on|without|ignoring|group_left|group_right)\s*\(([^)]*)\)",
    )
    .unwrap();
    let names = name
        .find_iter(text)
        .map(|m| m.as_str().to_string())
        .collect();
    let mut in_selectors = Vec::new();
    for c in selector.captures_iter(text) {
        // JSON escapes quotes inside the dashboard's queries.
        let inner = c[2].replace("\\\"", "\"");
        for m in matcher.captures_iter(&inner) {
            in_selectors.push((c[1].to_string(), m[1].to_string()));
        }
    }
    let in_clauses = clause
        .captures_iter(text)
        .flat_map(|c| {
            c[1].split(',')
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
        })
        .collect();
    (names, in_selectors, in_clauses)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_prometheus_reads_every_series_the_alerts_and_the_dashboard_use() {
    let w = World::new(Versioning::Unversioned).await;
    w.account(1, "free", None).await;
    w.run_row(1, 1, Some(GRACE + 60)).await;
    w.run_row(2, 1, Some(DAY)).await; // in grace: gives the job a next deadline
    set_schedule(&w, "deleted-runs.toml", "*/2 * * * * *");
    let mut d = Daemon::start(&w, &[]);
    let job = "{lethe_job=\"deleted-runs\"}";
    wait_for("a successful run counted", &d, async || {
        d.metric(&format!("lethe_last_success_timestamp_seconds{job}"))
            .is_some()
            && d.metric("lethe_object_store_up") == Some(1.0)
    })
    .await;

    // The classic text format (what curl and promtool get) passes promtool's own lint.
    let (code, body) = d.get("/metrics").unwrap();
    assert_eq!(code, 200);
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (scripts/test.sh installs Debian's prometheus package)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Prometheus asks for OpenMetrics and gets it.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: test\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n\r\n"
    )
    .unwrap();
    let mut om = String::new();
    s.read_to_string(&mut om).unwrap();
    assert!(
        om.contains("Content-Type: application/openmetrics-text"),
        "{om}"
    );
    assert!(om.ends_with("# EOF\n"), "{om}");

    // No series is labelled `job` (Prometheus would rename it `exported_job`).
    let exported = series(&body);
    for (name, labels) in &exported {
        assert!(!labels.contains("job"), "{name} carries a `job` label");
    }
    for name in [
        "lethe_subjects_purged_total",
        "lethe_subjects_held_total",
        "lethe_subjects_storage_held_total",
        "lethe_subjects_failed_total",
        "lethe_rows_deleted_total",
        "lethe_object_versions_deleted_total",
        "lethe_run_duration_seconds_bucket",
        "lethe_oldest_overdue_age_seconds",
        "lethe_next_deadline_timestamp_seconds",
        "lethe_schedule_period_seconds",
    ] {
        assert!(
            exported.get(name).is_some_and(|l| l.contains("lethe_job")),
            "{name} per job in\n{body}"
        );
    }
    assert_eq!(
        d.metric(&format!("lethe_subjects_purged_total{job}")),
        Some(1.0)
    );
    assert_eq!(
        d.metric(&format!("lethe_rows_deleted_total{job}")),
        Some(7.0)
    );
    assert_eq!(
        d.metric(&format!("lethe_schedule_period_seconds{job}")),
        Some(2.0)
    );
    assert!(
        d.metric("lethe_run_duration_seconds_count{lethe_job=\"deleted-runs\"}")
            .is_some_and(|n| n >= 1.0)
    );
    let deadline = d
        .metric(&format!("lethe_next_deadline_timestamp_seconds{job}"))
        .unwrap();
    let now = chrono::Utc::now().timestamp() as f64;
    assert!(
        deadline > now + 20.0 * DAY as f64 && deadline < now + 30.0 * DAY as f64,
        "run 2 was deleted a day ago with a 30-day deadline: {deadline} vs now {now}"
    );

    // Every metric and label the shipped alert rules and dashboard use is exported.
    let root = crate::helpers::repo();
    let mut texts = Vec::new();
    for dir in ["deploy/prometheus", "deploy/grafana"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let p = entry.unwrap().path();
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
            if ["yaml", "yml", "json"].contains(&ext) {
                texts.push((p.clone(), std::fs::read_to_string(&p).unwrap()));
            }
        }
    }
    assert!(texts.len() >= 2, "rules and dashboard: {texts:?}");
    let all_labels: std::collections::BTreeSet<String> =
        exported.values().flatten().cloned().collect();
    for (path, text) in &texts {
        let (names, selectors, clauses) = used_in(text);
        // `lethe_job` is a label, not a metric.
        for name in names.iter().filter(|n| !all_labels.contains(*n)) {
            assert!(
                exported.contains_key(name),
                "{}: {name} is not exported",
                path.display()
            );
        }
        for (name, label) in &selectors {
            assert!(
                exported[name].contains(label) || label == "instance",
                "{}: {name} has no label {label}",
                path.display()
            );
        }
        // `job` and `instance` are the labels Prometheus gives every target (`up` has them).
        for label in &clauses {
            assert!(
                all_labels.contains(label) || ["job", "instance"].contains(&label.as_str()),
                "{}: no lethe series has the label {label} it aggregates by",
                path.display()
            );
        }
    }
    assert_eq!(d.get("/healthz").unwrap(), (200, "ok\n".to_string()));
    assert_eq!(d.terminate().0, 0, "{}", d.logs());
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_refusal_and_an_unreachable_store_each_show_in_the_metrics() {
    let w = World::new(Versioning::Unversioned).await;
    deletable_runs(&w, 2).await;
    set_schedule(&w, "deleted-runs.toml", "0 3 * * *");
    // The newest time lethe recorded is 30 days ago: the clock guard refuses the run.
    w.sql(
        "INSERT INTO lethe.job_runs (job, started_at, finished_at, status, host)
         VALUES ('deleted-runs', now() - interval '30 days', now() - interval '30 days', 'ok', 'test')",
    )
    .await;
    let mut d = Daemon::start(&w, &[]);
    let refused = "lethe_runs_total{lethe_job=\"deleted-runs\",status=\"clock_refused\"}";
    let failed = "lethe_runs_total{lethe_job=\"deleted-runs\",status=\"failed\"}";
    wait_for("the refused run", &d, async || {
        d.metric(refused).is_some_and(|n| n >= 1.0)
    })
    .await;
    assert_eq!(d.metric(failed), Some(0.0), "a refusal is not a failure");
    assert_eq!(d.metric("lethe_object_store_up"), Some(1.0));
    assert_eq!(
        w.count("SELECT count(*) FROM runs").await,
        2,
        "nothing deleted"
    );
    let (_, body) = d.get("/readyz").unwrap();
    assert!(body.contains("lethe clock confirm"), "{body}");
    assert_eq!(d.terminate().0, 0, "{}", d.logs());

    // The store does not answer (nothing listens on this port): the run fails outright.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{dead}");
    let mut d = Daemon::start(
        &w,
        &[
            ("AWS_ENDPOINT_URL", &endpoint),
            ("LETHE_S3_ATTEMPTS", "1"),
            ("LETHE_S3_TIMEOUT_SECONDS", "2"),
        ],
    );
    wait_for("the failed run", &d, async || {
        d.metric(failed).is_some_and(|n| n >= 1.0)
    })
    .await;
    assert_eq!(d.metric("lethe_object_store_up"), Some(0.0));
    assert_eq!(d.metric("lethe_database_up"), Some(1.0));
    let (code, body) = d.get("/readyz").unwrap();
    assert_eq!(code, 200, "the database answers: {body}");
    assert!(body.contains("object store does not answer"), "{body}");
    assert_eq!(
        w.count("SELECT count(*) FROM runs").await,
        2,
        "nothing deleted"
    );
    assert_eq!(d.terminate().0, 0, "{}", d.logs());
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_lock_has_a_session_of_its_own_and_a_pool_too_small_is_refused() {
    let w = one_subject_long_to_purge().await;
    // Too small a pool, said before anything is claimed: three jobs side by side in the daemon,
    // one batch's worth in a one-shot run.
    let mut d = Daemon::start(&w, &[("LETHE_DB_CONNECTIONS", "5")]);
    let t = Instant::now();
    let code = loop {
        if let Some(s) = d.child.as_mut().unwrap().try_wait().unwrap() {
            break s.code();
        }
        assert!(t.elapsed() < Duration::from_secs(60), "{}", d.logs());
        std::thread::sleep(Duration::from_millis(50));
    };
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
    let t = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("purging objects")
    {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "never reached objects"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
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
async fn a_wedged_daemon_fails_its_liveness_probe_while_still_answering() {
    let w = World::new(Versioning::Unversioned).await;
    // Negative control: the main loop blocks its thread after its first tick; the listener
    // keeps answering on the runtime's workers.
    let d = Daemon::start(
        &w,
        &[
            ("LETHE_NEGATIVE_CONTROL", "wedged-loop"),
            ("LETHE_LIVENESS_SECONDS", "10"),
        ],
    );
    wait_for("the daemon to start", &d, async || {
        d.logs().contains("daemon started")
    })
    .await;
    assert_eq!(d.get("/healthz").unwrap(), (200, "ok\n".to_string()));
    let t = Instant::now();
    let (code, body) = loop {
        let (code, body) = d.get("/healthz").unwrap();
        if code != 200 {
            break (code, body);
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "still alive after 30 s: {}",
            d.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("main loop has not ticked") && !body.contains("scheduler"),
        "{body}"
    );
    assert!(
        t.elapsed() >= Duration::from_secs(4),
        "failed before LETHE_LIVENESS_SECONDS passed: {body}"
    );
    w.cleanup().await;
}
