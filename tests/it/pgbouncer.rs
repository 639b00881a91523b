//! lethe behind PgBouncer (Debian's package; `scripts/test.sh` installs it, each test starts
//! its own). In session mode lethe purges as it does on a direct connection and its run lock
//! ends with the run. In transaction mode its run lock could neither stay with the run nor keep
//! another run out, so lethe refuses at start, naming the pooler, and deletes nothing.

use crate::helpers::{DAY, World, unique};
use lethe::storage::Versioning;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const GRACE: i64 = 7 * DAY;
const PGBOUNCER: &str = "/usr/sbin/pgbouncer";

/// A PgBouncer in front of the local PostgreSQL, every database passed through.
struct Bouncer {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Bouncer {
    fn start(pool_mode: &str) -> Bouncer {
        assert!(
            std::path::Path::new(PGBOUNCER).exists(),
            "PgBouncer is not installed (scripts/test.sh installs Debian's pgbouncer)"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(unique("lethe-pgbouncer-"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("users.txt"), "\"postgres\" \"\"\n").unwrap();
        // A stock configuration but for the pool mode: no ignore_startup_parameters needed.
        std::fs::write(
            dir.join("pgbouncer.ini"),
            format!(
                "[databases]\n* = host=127.0.0.1 port=5432\n\n[pgbouncer]\n\
                 listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
                 auth_type = trust\nauth_file = {users}\npool_mode = {pool_mode}\n\
                 max_client_conn = 200\ndefault_pool_size = 20\n",
                users = dir.join("users.txt").display()
            ),
        )
        .unwrap();
        // PgBouncer will not run as root: as root, it runs as postgres, which must read these.
        let _ = Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(&dir)
            .status();
        let mut cmd = Command::new(PGBOUNCER);
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
        if root {
            cmd.args(["-u", "postgres"]);
        }
        let child = cmd
            .arg(dir.join("pgbouncer.ini"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("pgbouncer.log")).unwrap())
            .spawn()
            .unwrap();
        let b = Bouncer { child, port, dir };
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "PgBouncer did not listen: {}",
                std::fs::read_to_string(b.dir.join("pgbouncer.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        b
    }

    /// The world's database, through this PgBouncer.
    fn url(&self, w: &World) -> String {
        let db = w.url.rsplit_once('/').unwrap().1;
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn two_eligible_runs() -> World {
    let w = World::new(Versioning::Unversioned).await;
    w.account(1, "free", None).await;
    w.run_row(1, 1, Some(GRACE + 60)).await;
    w.run_row(2, 1, Some(GRACE + 60)).await;
    w.run_row(3, 1, Some(DAY)).await;
    w
}

async fn advisory_locks(w: &World) -> i64 {
    w.count(
        "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
          WHERE l.locktype = 'advisory' AND d.datname = current_database()",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_session_pooling_lethe_purges_and_its_run_lock_ends_with_the_run() {
    let w = two_eligible_runs().await;
    let b = Bouncer::start("session");
    let url = b.url(&w);
    for _ in 0..2 {
        let (code, out, err) = w.cli_env(&["run", "--all"], &[("DATABASE_URL", &url)]);
        assert_eq!(code, 0, "{out}{err}");
    }
    assert_eq!(w.rows_of_run(1).await + w.rows_of_run(2).await, 0);
    assert_eq!(w.rows_of_run(3).await, 7, "in grace");
    assert!(w.keys("runs/1/").await.is_empty() && w.keys("runs/2/").await.is_empty());
    assert_eq!(w.keys("runs/3/").await.len(), 2);
    assert_eq!(advisory_locks(&w).await, 0, "no run lock outlives its run");
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_transaction_pooling_lethe_refuses_to_start_and_deletes_nothing() {
    let w = two_eligible_runs().await;
    let b = Bouncer::start("transaction");
    let url = b.url(&w);
    for args in [&["run", "--all"][..], &["check"], &["hold", "list"]] {
        let (code, out, err) = w.cli_env(args, &[("DATABASE_URL", &url)]);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(
            err.contains("pool_mode = transaction") && err.contains("session mode"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(w.rows_of_run(1).await, 7, "nothing deleted");
    assert_eq!(w.keys("runs/1/").await.len(), 2);
    assert_eq!(
        w.count("SELECT count(*) FROM lethe.job_runs").await,
        0,
        "no run started"
    );
    assert_eq!(advisory_locks(&w).await, 0);
    w.cleanup().await;
}
