//! The MLflow pack against a real MLflow: a pinned MLflow (installed by `scripts/mlflow-env.sh`
//! into a virtualenv the project owns) runs a tracking server on a fresh PostgreSQL database
//! with its artifact root in a fresh versioned bucket. `tests/mlflow/world.py` builds a world
//! through MLflow's own client, deletes runs, logged models and an experiment through MLflow's
//! API and backdates them; lethe runs the shipped pack; the same script then checks every
//! table and every object version: what belongs to what was deleted is gone, everything else
//! is as it was, and MLflow's client still reads every kept run.

use crate::helpers::{World, repo, unique};
use lethe::storage::Versioning;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

/// The virtualenv holding the pinned MLflow, installed if missing.
fn mlflow_venv() -> PathBuf {
    let out = Command::new("bash")
        .arg(repo().join("scripts/mlflow-env.sh"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scripts/mlflow-env.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// A running `mlflow server`, stopped when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    /// Stops the server and every process it started (uvicorn, job workers): its whole process
    /// group, which it leads.
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        for signal in ["-TERM", "-KILL"] {
            let _ = Command::new("kill").args([signal, "--", &group]).status();
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// MLflow's own environment for its S3 artifact store, from the test environment.
fn s3_env() -> Vec<(&'static str, String)> {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL (scripts/test.sh)");
    vec![
        ("MLFLOW_S3_ENDPOINT_URL", endpoint),
        // No usage reports to a network this machine does not reach, and no background job
        // workers (a pool of processes of about 170 MB each) the test has no use for.
        ("MLFLOW_DISABLE_TELEMETRY", "true".into()),
        ("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false".into()),
        ("DO_NOT_TRACK", "true".into()),
    ]
}

fn start_server(venv: &Path, db: &str, bucket: &str, log: &Path) -> Server {
    let port = free_port();
    use std::os::unix::process::CommandExt;
    let child = Command::new(venv.join("bin/mlflow"))
        .process_group(0)
        .args(["server", "--backend-store-uri", db])
        .args(["--default-artifact-root", &format!("s3://{bucket}")])
        .args(["--no-serve-artifacts", "--host", "127.0.0.1"])
        .args(["--port", &port.to_string(), "--workers", "1"])
        .envs(s3_env())
        .stdout(std::fs::File::create(log).unwrap())
        .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
        .spawn()
        .unwrap();
    let server = Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed().as_secs() < 120,
            "mlflow server did not listen within 120 s: {}",
            std::fs::read_to_string(log.with_extension("err")).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    server
}

/// Column `n` of `job`'s line in `lethe run`'s summary (1: purged, 2: held).
fn column(out: &str, job: &str, n: usize) -> u64 {
    out.lines()
        .find(|l| l.starts_with(job))
        .and_then(|l| l.split_whitespace().nth(n))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no line for {job}: {out}"))
}

fn python(venv: &Path, env: &[(&str, String)], args: &[&str]) -> (i32, String, String) {
    let out = Command::new(venv.join("bin/python"))
        .arg(repo().join("tests/mlflow/world.py"))
        .args(args)
        .envs(s3_env())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("PYTHONWARNINGS", "ignore")
        .output()
        .unwrap();
    crate::helpers::outcome(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mlflow_pack_purges_a_real_mlflow_world_completely() {
    let venv = tokio::task::spawn_blocking(mlflow_venv).await.unwrap();
    let w = World::bare(Versioning::Enabled).await;
    // SQLAlchemy's URL for the same database, through psycopg 3.
    let sa_url = w.url.replacen("postgres://", "postgresql+psycopg://", 1);
    let out = Command::new(venv.join("bin/mlflow"))
        .args(["db", "upgrade", &sa_url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mlflow db upgrade: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let logs = std::env::temp_dir().join(unique("lethe-mlflow-"));
    std::fs::create_dir_all(&logs).unwrap();
    let server = start_server(&venv, &sa_url, &w.bucket, &logs.join("server.log"));
    let state = logs.join("world.json");
    let state_arg = state.display().to_string();
    let env = [
        ("MLFLOW_TRACKING_URI", server.url.clone()),
        (
            "MLFLOW_DB",
            w.url.replacen("postgres://", "postgresql://", 1),
        ),
        ("BUCKET", w.bucket.clone()),
    ];
    let (code, out, err) =
        tokio::task::block_in_place(|| python(&venv, &env, &["build", &state_arg]));
    assert_eq!(code, 0, "world.py build: {out}{err}");
    println!("{out}");

    w.use_specs(&repo().join("jobs/packs/mlflow"), &[]);
    lethe::db::migrator().run(&w.pool).await.unwrap();
    let (code, out, err) = w.cli(&["check"]);
    assert_eq!(
        code, 0,
        "the pack is valid against MLflow's schema: {out}{err}"
    );

    // A legal hold on one run of the deleted experiment keeps that run and the experiment with
    // everything under it; the experiment's other deleted runs go on their own.
    let world: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    let held = world["runs"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(_, v)| v["experiment"] == "1")
        .map(|(k, _)| k.clone())
        .unwrap();
    let subject = format!("deleted-runs:{held}");
    let (code, out, err) = w.cli(&[
        "hold",
        "place",
        "--subject",
        &subject,
        "--reason",
        "litigation #7",
        "--by",
        "legal",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = w.cli(&["run", "--all"]);
    assert_eq!(code, 0, "{out}{err}");
    println!("{out}");
    assert_eq!(
        (
            column(&out, "deleted-experiments", 1),
            column(&out, "deleted-experiments", 2)
        ),
        (0, 1),
        "the experiment is held: {out}"
    );
    let mut held_env = env.to_vec();
    held_env.push(("HELD_RUN", held.clone()));
    let (code, out, err) =
        tokio::task::block_in_place(|| python(&venv, &held_env, &["check", &state_arg]));
    assert_eq!(code, 0, "world.py check with the hold: {out}{err}");

    let (_, holds, _) = w.cli(&["hold", "list"]);
    let id = holds
        .lines()
        .find(|l| l.contains(&held))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("the hold in {holds}"))
        .to_string();
    let (code, out, err) = w.cli(&[
        "hold",
        "release",
        &id,
        "--reason",
        "case closed",
        "--by",
        "legal",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = w.cli(&["run", "--all"]);
    assert_eq!(code, 0, "{out}{err}");
    println!("{out}");
    assert_eq!(
        column(&out, "deleted-experiments", 1),
        1,
        "released, it goes: {out}"
    );
    assert_eq!(
        column(&out, "deleted-runs", 1),
        0,
        "the first run took the others: {out}"
    );

    let (code, out, err) =
        tokio::task::block_in_place(|| python(&venv, &env, &["check", &state_arg]));
    assert_eq!(code, 0, "world.py check: {out}{err}");
    println!("{out}");
    let (code, out, err) = w.cli(&["audit", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = w.cli(&["run", "--all"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.lines()
            .skip(1)
            .all(|l| l.split_whitespace().nth(1) == Some("0")),
        "a second run purges nothing: {out}"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&logs);
    w.cleanup().await;
}
