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

    /// Waits for a daemon that should stop on its own (a configuration error): its exit code.
    fn exit_code(&mut self) -> Option<i32> {
        let t = Instant::now();
        loop {
            if let Some(s) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return s.code();
            }
            assert!(t.elapsed() < Duration::from_secs(60), "{}", self.logs());
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

mod guards;
mod monitoring;
mod requests;
mod schedule;

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

async fn deletable_runs(w: &World, n: i64) {
    w.account(1, "free", None).await;
    w.sql(&format!(
        "INSERT INTO runs SELECT g, 1, 'r', 'deleted',
             (extract(epoch from now() - interval '8 days') * 1000)::bigint, NULL
         FROM generate_series(1, {n}) g"
    ))
    .await;
}

async fn deletable_runs_more(w: &World, from: i64, to: i64) {
    w.sql(&format!(
        "INSERT INTO runs SELECT g, 1, 'r', 'deleted',
             (extract(epoch from now() - interval '8 days') * 1000)::bigint, NULL
         FROM generate_series({from}, {to}) g"
    ))
    .await;
}

/// Waits until the log file at `log` says `what` (a process reaching a stage).
fn wait_for_line(log: &std::path::Path, what: &str) {
    let t = Instant::now();
    while !std::fs::read_to_string(log).unwrap().contains(what) {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the process never said {what:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}
