//! A fresh world per test: a database with the reference schema and lethe's migrations, a bucket
//! (versioned or not), and a copy of the shipped job specs pointing at that bucket. Seeding is
//! relative to the database's `now()`, the clock lethe itself uses.

#![allow(dead_code)]

use lethe::config::Settings;
use lethe::context::Context;
use lethe::pipeline::{self, RunOptions, RunSummary};
use lethe::storage::s3::S3Store;
use lethe::storage::{ObjectStore, ObjectVersion, Versioning};
use sqlx::{AssertSqlSafe, PgPool};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const DAY: i64 = 86_400;

/// The bucket names the shipped specs use, replaced by each world's own bucket.
const SHIPPED_BUCKETS: [&str; 4] = [
    "lethe-artifacts",
    "lethe-traces",
    "lethe-inference",
    "mlflow-artifacts",
];

pub fn admin_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn with_db(url: &str, db: &str) -> String {
    let (base, _) = url
        .rsplit_once('/')
        .expect("DATABASE_URL has a database name");
    format!("{base}/{db}")
}

/// The seed of a randomised test: `LETHE_TEST_SEED` to replay one, else a fresh one.
/// A finished command as (exit code, stdout, stderr); -1 when a signal ended it.
pub fn outcome(out: std::process::Output) -> (i32, String, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn seed() -> u64 {
    std::env::var("LETHE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random)
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub struct World {
    /// The cluster's administrative URL (`DATABASE_URL`, or a throwaway cluster's).
    pub admin: String,
    pub db: String,
    pub url: String,
    pub pool: PgPool,
    pub bucket: String,
    pub jobs_dir: PathBuf,
    pub ctx: Context,
    /// Where objects live when the world uses a local directory store instead of S3.
    pub object_root: Option<PathBuf>,
}

impl World {
    /// The reference training platform, lethe migrated, specs pointing at a fresh bucket.
    pub async fn new(versioning: Versioning) -> World {
        World::new_on(&admin_url(), versioning).await
    }

    /// As `new`, in the cluster at `admin` (a throwaway one, say).
    pub async fn new_on(admin: &str, versioning: Versioning) -> World {
        let w = World::bare_on(admin, versioning).await;
        let schema =
            std::fs::read_to_string(repo().join("jobs/reference/training-platform.sql")).unwrap();
        sqlx::raw_sql(AssertSqlSafe(schema))
            .execute(&w.pool)
            .await
            .unwrap();
        lethe::db::migrator().run(&w.pool).await.unwrap();
        w.use_specs(&repo().join("jobs"), &[]);
        w
    }

    /// A policy pack's world: its reference schema (`jobs/packs/NAME/schema.sql`), lethe
    /// migrated, and the pack's specs pointing at a fresh bucket.
    pub async fn pack(name: &str) -> World {
        let w = World::bare(Versioning::Unversioned).await;
        let dir = repo().join("jobs/packs").join(name);
        let schema = std::fs::read_to_string(dir.join("schema.sql")).unwrap();
        sqlx::raw_sql(AssertSqlSafe(schema))
            .execute(&w.pool)
            .await
            .unwrap();
        lethe::db::migrator().run(&w.pool).await.unwrap();
        w.use_specs(&dir, &[]);
        w
    }

    /// An empty database and bucket, no schema, no specs.
    pub async fn bare(versioning: Versioning) -> World {
        World::bare_on(&admin_url(), versioning).await
    }

    async fn bare_on(admin_url: &str, versioning: Versioning) -> World {
        let admin = PgPool::connect(admin_url)
            .await
            .expect("PostgreSQL is up (run scripts/test.sh)");
        let db = unique("lethe_it_");
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {db}")))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        let url = with_db(admin_url, &db);
        let pool = PgPool::connect(&url).await.unwrap();
        let bucket = unique("it-");
        let jobs_dir = std::env::temp_dir().join(unique("lethe-jobs-"));
        std::fs::create_dir_all(&jobs_dir).unwrap();
        let settings = settings(&url, &jobs_dir);
        let store: Arc<dyn ObjectStore> = Arc::new(S3Store::connect(&settings.s3).await);
        store
            .create_bucket(&bucket, versioning)
            .await
            .expect("S3 server is up (run scripts/test.sh)");
        let ctx = Context::with_store(&settings, lethe::db::Db::Pg(pool.clone()), store);
        World {
            admin: admin_url.to_string(),
            db,
            url,
            pool,
            bucket,
            jobs_dir,
            ctx,
            object_root: None,
        }
    }

    /// As `new`, with objects in a fresh local directory store (`LETHE_OBJECT_STORE`).
    pub async fn local() -> World {
        let mut w = World::new(Versioning::Unversioned).await;
        let root = std::env::temp_dir().join(unique("lethe-objects-"));
        std::fs::create_dir_all(&root).unwrap();
        let store = lethe::storage::local::LocalStore::open(&root).unwrap();
        let root = store.root().to_path_buf();
        store
            .create_bucket(&w.bucket, Versioning::Unversioned)
            .await
            .unwrap();
        let mut settings = w.ctx.settings.clone();
        settings.object_root = Some(root.clone());
        w.ctx = Context::with_store(
            &settings,
            lethe::db::Db::Pg(w.pool.clone()),
            Arc::new(store),
        );
        w.object_root = Some(root);
        w
    }

    /// A URI column's value naming `path` in this world's bucket, for its store.
    pub fn uri(&self, path: &str) -> String {
        match &self.object_root {
            Some(root) => format!("file://{}/{}/{path}", root.display(), self.bucket),
            None => format!("s3://{}/{path}", self.bucket),
        }
    }

    /// Copies the specs in `from` (minus `skip`) into this world's job dir, bucket renamed.
    pub fn use_specs(&self, from: &Path, skip: &[&str]) {
        for e in std::fs::read_dir(&self.jobs_dir).unwrap() {
            std::fs::remove_file(e.unwrap().path()).unwrap();
        }
        for e in std::fs::read_dir(from).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            if p.extension().is_some_and(|x| x == "toml") && !skip.contains(&name.as_str()) {
                let mut text = std::fs::read_to_string(&p).unwrap();
                for shipped in SHIPPED_BUCKETS {
                    text = text.replace(shipped, &self.bucket);
                }
                std::fs::write(self.jobs_dir.join(name), text).unwrap();
            }
        }
    }

    pub fn write_spec(&self, name: &str, text: &str) {
        std::fs::write(
            self.jobs_dir.join(name),
            text.replace("lethe-artifacts", &self.bucket),
        )
        .unwrap();
    }

    pub fn store(&self) -> &dyn ObjectStore {
        &*self.ctx.store
    }

    pub async fn sql(&self, sql: &str) {
        sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
            .execute(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(AssertSqlSafe(sql.to_string()))
            .fetch_one(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Runs jobs in-process, as `lethe run` does.
    pub async fn run(&self, jobs: &[&str], opts: RunOptions) -> RunSummary {
        let all = self.ctx.load_jobs().await.expect("specs are valid");
        let selected: Vec<_> = if jobs.is_empty() {
            all.clone()
        } else {
            all.iter()
                .filter(|j| jobs.contains(&j.name.as_str()))
                .cloned()
                .collect()
        };
        pipeline::preflight(&self.ctx, &selected, opts.dry_run)
            .await
            .unwrap();
        pipeline::run_all(&self.ctx, &all, &selected, &opts)
            .await
            .unwrap()
    }

    /// Runs the real binary against this world: (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        self.cli_env(args, &[])
    }

    /// As `cli`, with extra environment variables.
    pub fn cli_env(&self, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_lethe"))
            .args(args)
            .env("DATABASE_URL", &self.url)
            .env("LETHE_JOBS_DIR", &self.jobs_dir)
            .env("LETHE_LOG", "warn")
            .envs(
                self.object_root
                    .iter()
                    .map(|r| ("LETHE_OBJECT_STORE", format!("file://{}", r.display()))),
            )
            .envs(env.iter().copied())
            .output()
            .unwrap();
        outcome(out)
    }

    pub async fn put(&self, key: &str) {
        self.store()
            .put(&self.bucket, key, b"payload".to_vec())
            .await
            .unwrap();
    }

    /// Every version and delete marker under `prefix` (the whole bucket for "").
    pub async fn versions(&self, prefix: &str) -> Vec<ObjectVersion> {
        let v = self.store().versioning(&self.bucket).await.unwrap();
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .store()
                .list_page(&self.bucket, prefix, v.keeps_versions(), token)
                .await
                .unwrap();
            out.extend(page.items);
            match page.next {
                Some(t) => token = Some(t),
                None => return out,
            }
        }
    }

    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        let mut k: Vec<String> = self
            .versions(prefix)
            .await
            .into_iter()
            .map(|v| v.key)
            .collect();
        k.sort();
        k.dedup();
        k
    }

    // ---- seeding, relative to the database clock ----

    /// An account; `closed_secs_ago` sets status 'closed' and `closed_at`.
    pub async fn account(&self, id: i64, plan: &str, closed_secs_ago: Option<i64>) {
        let (status, at) = match closed_secs_ago {
            Some(s) => ("closed", format!("now() - interval '{s} seconds'")),
            None => ("active", "NULL".into()),
        };
        self.sql(&format!(
            "INSERT INTO accounts VALUES ({id}, 'u{id}@example.com', '{plan}', '{status}', {at})"
        ))
        .await;
        self.sql(&format!(
            "INSERT INTO api_keys (account_id, key_hash) VALUES ({id}, 'sha256:{id}')"
        ))
        .await;
    }

    /// A run with 3 metrics, 2 params, a link, and two objects under `runs/{id}/`;
    /// `deleted_secs_ago` marks it deleted (epoch-ms clock).
    pub async fn run_row(&self, id: i64, account: i64, deleted_secs_ago: Option<i64>) {
        let (stage, at) = match deleted_secs_ago {
            Some(s) => (
                "deleted",
                format!("(extract(epoch from now() - interval '{s} seconds') * 1000)::bigint"),
            ),
            None => ("active", "NULL".into()),
        };
        self.sql(&format!(
            "INSERT INTO runs VALUES ({id}, {account}, 'run {id}', '{stage}', {at}, NULL);
             INSERT INTO metrics (run_id, key, value, step) SELECT {id}, 'loss', 0.5, g FROM generate_series(1, 3) g;
             INSERT INTO params VALUES ({id}, 'lr', '0.1'), ({id}, 'seed', '7');
             INSERT INTO links (destination_type, destination_id, label) VALUES ('RUN', '{id}', 'l{id}')"
        ))
        .await;
        self.put(&format!("runs/{id}/model.bin")).await;
        self.put(&format!("runs/{id}/logs/0.txt")).await;
    }

    /// A snapshot of a run, with two files and one object under `snaps/{id}/` named by URI.
    pub async fn snapshot(&self, id: i64, run: i64, account: i64, deleted_secs_ago: Option<i64>) {
        let at = match deleted_secs_ago {
            Some(s) => format!("now() - interval '{s} seconds'"),
            None => "NULL".into(),
        };
        let uri = self.uri(&format!("snaps/{id}/"));
        self.sql(&format!(
            "INSERT INTO snapshots VALUES ({id}, {run}, {account}, {at}, '{uri}');
             INSERT INTO snapshot_files (snapshot_id, path, size_bytes) VALUES ({id}, 'a', 1), ({id}, 'b', 2)"
        ))
        .await;
        self.put(&format!("snaps/{id}/weights.pt")).await;
    }

    pub async fn rows_of_run(&self, id: i64) -> i64 {
        self.count(&format!(
            "SELECT (SELECT count(*) FROM runs WHERE id = {id}) + (SELECT count(*) FROM metrics WHERE run_id = {id})
                  + (SELECT count(*) FROM params WHERE run_id = {id})
                  + (SELECT count(*) FROM links WHERE destination_type = 'RUN' AND destination_id = '{id}')"
        ))
        .await
    }

    pub async fn audit_events(&self, event: &str) -> Vec<String> {
        sqlx::query_scalar(
            "SELECT coalesce(job, '') || ':' || coalesce(subject_key, '') FROM lethe.audit_log WHERE event = $1 ORDER BY seq",
        )
        .bind(event)
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }

    /// Drops the database and the job dir. Objects stay in the per-test bucket.
    pub async fn cleanup(self) {
        self.pool.close().await;
        let admin = PgPool::connect(&self.admin).await.unwrap();
        sqlx::query(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.db
        )))
        .execute(&admin)
        .await
        .unwrap();
        let _ = std::fs::remove_dir_all(&self.jobs_dir);
        if let Some(root) = &self.object_root {
            let _ = std::fs::remove_dir_all(root);
        }
    }
}

pub fn settings(url: &str, jobs_dir: &Path) -> Settings {
    // SAFETY of the test setup: the environment is only read here, never written.
    let mut s =
        Settings::from_env_with(Some(url.to_string())).expect("settings from the environment");
    s.jobs_dir = jobs_dir.to_path_buf();
    s
}

impl World {
    /// Writes many small objects, a few dozen at a time.
    /// Puts keys concurrently, deepest first, one depth at a time. SeaweedFS loses one of an
    /// object and a directory of the same name (`custom/1` and `custom/1/a`) when both are
    /// created at once (measured: 6 of 60 trials), so a key is never put while a key below it
    /// is being put.
    pub async fn put_many(&self, keys: Vec<String>) {
        use futures::StreamExt;
        let mut by_depth: std::collections::BTreeMap<usize, Vec<String>> = Default::default();
        for k in keys {
            by_depth.entry(k.matches('/').count()).or_default().push(k);
        }
        for (_, keys) in by_depth.into_iter().rev() {
            futures::stream::iter(keys)
                .for_each_concurrent(32, |k| async move { self.put(&k).await })
                .await;
        }
    }

    /// Starts `lethe run --job deleted-runs` in the background with its database sessions
    /// named `app` (for `cut_sessions`), logs off, and `env` on top.
    pub fn spawn_run(&self, app: &str, env: &[(&str, &str)]) -> std::process::Child {
        std::process::Command::new(env!("CARGO_BIN_EXE_lethe"))
            .args(["run", "--job", "deleted-runs"])
            .env(
                "DATABASE_URL",
                format!("{}?application_name={app}", self.url),
            )
            .env("LETHE_JOBS_DIR", &self.jobs_dir)
            .env("LETHE_LOG", "off")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Ends every session named `app` in this world's database at once, as a failover or a
    /// network partition would; answers how many ended.
    pub async fn cut_sessions(&self, app: &str) -> i64 {
        // OFFSET 0 keeps the filter inside: only the named sessions in this database end.
        sqlx::query_scalar(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM (
                 SELECT pid FROM pg_stat_activity
                 WHERE application_name = $1 AND datname = current_database() OFFSET 0) s",
        )
        .bind(app)
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    pub async fn hold(&self, args: &[&str]) -> i64 {
        let mut full = vec!["hold", "place"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["--reason", "litigation", "--by", "legal@example.com"]);
        let (code, out, err) = self.cli(&full);
        assert_eq!(code, 0, "hold place failed: {err}");
        out.trim().parse().unwrap()
    }
}

/// A PostgreSQL cluster of its own, for tests that restart the server. Created with the
/// Debian binaries, as the `postgres` user when the tests run as root; stopped and removed on
/// drop.
pub struct ThrowawayCluster {
    pub dir: PathBuf,
    pub port: u16,
    bin: PathBuf,
}

impl ThrowawayCluster {
    pub fn start() -> ThrowawayCluster {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's binaries are in /usr/lib/postgresql")
            .flatten()
            .map(|e| e.path().join("bin"))
            .find(|p| p.join("initdb").exists())
            .expect("initdb is installed");
        let dir = std::env::temp_dir().join(unique("lethe-pg-"));
        std::fs::create_dir_all(&dir).unwrap();
        let port = 20_000 + (rand::random::<u16>() % 20_000);
        let c = ThrowawayCluster { dir, port, bin };
        if Self::root() {
            let ok = std::process::Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&c.dir)
                .status()
                .unwrap();
            assert!(ok.success());
        }
        let data = c.dir.join("data");
        c.pg(
            &["initdb", "-A", "trust", "-U", "postgres", "-D"],
            &[data.to_str().unwrap()],
        );
        c.ctl("start");
        c
    }

    fn root() -> bool {
        std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
    }

    fn pg(&self, args: &[&str], more: &[&str]) {
        let program = self.bin.join(args[0]);
        let mut cmd = if Self::root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            std::process::Command::new(&program)
        };
        let out = cmd
            .args(&args[1..])
            .args(more)
            .current_dir(&self.dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `pg_ctl start|stop|restart`, immediate mode (no clean shutdown), waiting for it (up to
    /// three minutes: a loaded CI machine once took longer than pg_ctl's default minute). A
    /// failure shows the server's log.
    pub fn ctl(&self, action: &str) {
        let data = self.dir.join("data");
        let log = self.dir.join("log");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.pg(
                &["pg_ctl", action, "-w", "-t", "180", "-m", "immediate", "-D"],
                &[
                    data.to_str().unwrap(),
                    "-l",
                    log.to_str().unwrap(),
                    "-o",
                    &opts,
                ],
            )
        }));
        if let Err(e) = run {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(30).collect();
            eprintln!("pg_ctl {action} failed; the server's log ends:");
            for line in tail.into_iter().rev() {
                eprintln!("  {line}");
            }
            std::panic::resume_unwind(e);
        }
    }

    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for ThrowawayCluster {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.pg(
                &["pg_ctl", "stop", "-w", "-m", "immediate", "-D"],
                &[data.to_str().unwrap()],
            )
        }));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A bare platform built by `schema` (an `items(id, deleted_at)` table at least) and one job
/// `items` over it (grace 1 day, deadline 30), `spec_tail` appended to its spec.
pub async fn items_world(schema: &str, spec_tail: &str) -> World {
    let w = World::bare(lethe::storage::Versioning::Unversioned).await;
    w.sql(schema).await;
    lethe::db::migrator().run(&w.pool).await.unwrap();
    w.write_spec(
        "items.toml",
        &format!(
            "schedule = \"0 0 3 * * *\"\n\n[subject]\ntable = \"items\"\nclock = \"deleted_at\"\n\
             clock_kind = \"timestamptz\"\n\n[window]\ngrace = \"1d\"\ndeadline = \"30d\"\n{spec_tail}"
        ),
    );
    w
}
