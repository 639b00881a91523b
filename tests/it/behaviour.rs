//! The behaviour suite on both platform databases: the same specs and the same tests against
//! PostgreSQL (objects in SeaweedFS S3) and SQLite (objects in a local directory, lethe's state
//! in the platform's own file), through the same `Platform` interface. Seeding is the only part
//! that speaks each dialect.

use crate::helpers::{self, DAY, World};
use lethe::config::Settings;
use lethe::context::Context;
use lethe::db::{Db, Dialect};
use lethe::pipeline::{self, RunOptions, RunSummary};
use lethe::storage::local::LocalStore;
use lethe::storage::{ObjectStore, Versioning};
use std::path::PathBuf;
use std::sync::Arc;

/// What a behaviour test needs of a world, whichever database and store it runs on.
pub(crate) trait Platform {
    fn ctx(&self) -> &Context;
    fn bucket(&self) -> &str;
    fn cli(&self, args: &[&str]) -> (i32, String, String) {
        self.cli_env(args, &[])
    }
    /// As `cli`, with extra environment variables.
    fn cli_env(&self, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String);
    /// Where the world's specs are (the shipped ones, rewritten for its bucket).
    fn jobs_dir(&self) -> &std::path::Path;
    /// Runs portable SQL; `lethe.` tables are renamed for the dialect.
    async fn sql(&self, sql: &str);
    async fn count(&self, sql: &str) -> i64;
    async fn account(&self, id: i64, plan: &str, closed_secs_ago: Option<i64>);
    async fn run_row(&self, id: i64, account: i64, deleted_secs_ago: Option<i64>);
    async fn snapshot(&self, id: i64, run: i64, account: i64, deleted_secs_ago: Option<i64>);
    fn uri(&self, path: &str) -> String;
    async fn finish(self);
    /// Marks runs deleted `secs` seconds before the database's clock, in one statement.
    async fn delete_runs_at(&self, runs: &[(i64, i64)]);

    fn dialect(&self) -> Dialect {
        self.ctx().db.dialect()
    }

    async fn put(&self, key: &str) {
        self.ctx()
            .store
            .put(self.bucket(), key, b"payload".to_vec())
            .await
            .unwrap();
    }

    /// Every key under `prefix`, sorted.
    async fn keys(&self, prefix: &str) -> Vec<String> {
        let store = &*self.ctx().store;
        let (mut out, mut token) = (Vec::new(), None);
        loop {
            let page = store
                .list_page(self.bucket(), prefix, true, token)
                .await
                .unwrap();
            out.extend(page.items.into_iter().map(|v| v.key));
            match page.next {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        out.sort();
        out
    }

    async fn rows_of_run(&self, id: i64) -> i64 {
        self.count(&format!(
            "SELECT (SELECT count(*) FROM runs WHERE id = {id}) + (SELECT count(*) FROM metrics WHERE run_id = {id})
                  + (SELECT count(*) FROM params WHERE run_id = {id})
                  + (SELECT count(*) FROM links WHERE destination_type = 'RUN' AND destination_id = '{id}')"
        ))
        .await
    }

    async fn run(&self, jobs: &[&str], opts: RunOptions) -> RunSummary {
        let ctx = self.ctx();
        let all = ctx.load_jobs().await.expect("specs are valid");
        let selected: Vec<_> = all
            .iter()
            .filter(|j| jobs.is_empty() || jobs.contains(&j.name.as_str()))
            .cloned()
            .collect();
        pipeline::preflight(ctx, &selected, opts.dry_run)
            .await
            .unwrap();
        pipeline::run_all(ctx, &all, &selected, &opts)
            .await
            .unwrap()
    }

    fn hold(&self, args: &[&str]) -> i64 {
        let mut full = vec!["hold", "place"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["--reason", "litigation", "--by", "legal@example.com"]);
        let (code, out, err) = self.cli(&full);
        assert_eq!(code, 0, "hold place failed: {err}");
        out.trim().parse().unwrap()
    }

    /// `job:key` of every audit entry of `event`, in order.
    async fn audit_events(&self, event: &str) -> Vec<String> {
        let sql = self.dialect().t(
            "SELECT coalesce(job, '') || ':' || coalesce(subject_key, '') FROM lethe.audit_log WHERE event = $1 ORDER BY seq",
        );
        lethe::on_db!(&self.ctx().db, p => sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(event)
            .fetch_all(p)
            .await)
        .unwrap()
    }
}

impl Platform for World {
    fn ctx(&self) -> &Context {
        &self.ctx
    }
    fn bucket(&self) -> &str {
        &self.bucket
    }
    fn jobs_dir(&self) -> &std::path::Path {
        &self.jobs_dir
    }
    fn cli_env(&self, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
        World::cli_env(self, args, env)
    }
    async fn sql(&self, sql: &str) {
        World::sql(self, sql).await
    }
    async fn count(&self, sql: &str) -> i64 {
        World::count(self, sql).await
    }
    async fn account(&self, id: i64, plan: &str, closed: Option<i64>) {
        World::account(self, id, plan, closed).await
    }
    async fn run_row(&self, id: i64, account: i64, deleted: Option<i64>) {
        World::run_row(self, id, account, deleted).await
    }
    async fn snapshot(&self, id: i64, run: i64, account: i64, deleted: Option<i64>) {
        World::snapshot(self, id, run, account, deleted).await
    }
    fn uri(&self, path: &str) -> String {
        World::uri(self, path)
    }
    async fn finish(self) {
        self.cleanup().await
    }
    async fn delete_runs_at(&self, runs: &[(i64, i64)]) {
        let cases: String = runs
            .iter()
            .map(|(id, s)| {
                format!(
                    " WHEN {id} THEN (extract(epoch FROM clock_timestamp() - interval '{s} seconds') * 1000)::bigint"
                )
            })
            .collect();
        let ids: Vec<String> = runs.iter().map(|r| r.0.to_string()).collect();
        self.sql(&format!(
            "UPDATE runs SET lifecycle_stage = 'deleted', deleted_time = CASE id{cases} END WHERE id IN ({})",
            ids.join(", ")
        ))
        .await;
    }
}

/// The embedded default: a SQLite file with the reference schema and lethe's tables, objects in
/// a local directory, the shipped specs unchanged.
pub(crate) struct LiteWorld {
    dir: PathBuf,
    pub(crate) url: String,
    jobs_dir: PathBuf,
    objects: PathBuf,
    ctx: Context,
}

const BUCKET: &str = "lethe-artifacts";

impl LiteWorld {
    pub(crate) async fn new() -> LiteWorld {
        let dir = std::env::temp_dir().join(helpers::unique("lethe-lite-"));
        let (jobs_dir, objects) = (dir.join("jobs"), dir.join("objects"));
        std::fs::create_dir_all(&jobs_dir).unwrap();
        std::fs::create_dir_all(objects.join(BUCKET)).unwrap();
        for e in std::fs::read_dir(helpers::repo().join("jobs")).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                std::fs::copy(&p, jobs_dir.join(p.file_name().unwrap())).unwrap();
            }
        }
        let url = format!("sqlite://{}", dir.join("platform.db").display());
        let mut settings = Settings::from_env_with(Some(url.clone())).unwrap();
        settings.jobs_dir = jobs_dir.clone();
        settings.object_root = Some(objects.canonicalize().unwrap());
        let db = lethe::db::connect(&url, 4).await.unwrap();
        let store = LocalStore::open(&objects).unwrap();
        let ctx = Context::with_store(&settings, db, Arc::new(store));
        let schema = std::fs::read_to_string(
            helpers::repo().join("jobs/reference/training-platform.sqlite.sql"),
        )
        .unwrap();
        let w = LiteWorld {
            objects: settings.object_root.clone().unwrap(),
            dir,
            url,
            jobs_dir,
            ctx,
        };
        w.sql(&schema).await;
        lethe::db::migrate(&w.ctx.db).await.unwrap();
        w
    }

    fn pool(&self) -> &sqlx::SqlitePool {
        match &self.ctx.db {
            Db::Lite(p) => p,
            Db::Pg(_) => unreachable!("a SQLite world"),
        }
    }
}

/// `now - secs` as lethe's SQLite time text.
fn lite_ago(secs: i64) -> String {
    format!("strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-{secs} seconds')")
}

impl Platform for LiteWorld {
    fn ctx(&self) -> &Context {
        &self.ctx
    }
    fn bucket(&self) -> &str {
        BUCKET
    }
    fn jobs_dir(&self) -> &std::path::Path {
        &self.jobs_dir
    }
    fn cli_env(&self, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_lethe"))
            .args(args)
            .env("DATABASE_URL", &self.url)
            .env("LETHE_JOBS_DIR", &self.jobs_dir)
            .env(
                "LETHE_OBJECT_STORE",
                format!("file://{}", self.objects.display()),
            )
            .env("LETHE_LOG", "warn")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        crate::helpers::outcome(out)
    }
    async fn sql(&self, sql: &str) {
        sqlx::raw_sql(sqlx::AssertSqlSafe(Dialect::Sqlite.t(sql)))
            .execute(self.pool())
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(Dialect::Sqlite.t(sql)))
            .fetch_one(self.pool())
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }
    async fn account(&self, id: i64, plan: &str, closed: Option<i64>) {
        let (status, at) = match closed {
            Some(s) => ("closed", lite_ago(s)),
            None => ("active", "NULL".into()),
        };
        self.sql(&format!(
            "INSERT INTO accounts VALUES ({id}, 'a{id}@example.com', '{plan}', '{status}', {at});
             INSERT INTO api_keys (account_id, key_hash) VALUES ({id}, 'sha256:{id}')"
        ))
        .await;
    }
    async fn run_row(&self, id: i64, account: i64, deleted: Option<i64>) {
        let (stage, at) = match deleted {
            Some(s) => (
                "deleted",
                format!("CAST((unixepoch('now', 'subsec') - {s}) * 1000 AS INTEGER)"),
            ),
            None => ("active", "NULL".into()),
        };
        self.sql(&format!(
            "INSERT INTO runs VALUES ({id}, {account}, 'run {id}', '{stage}', {at}, NULL);
             INSERT INTO metrics (run_id, key, value, step) VALUES ({id}, 'loss', 0.5, 1), ({id}, 'loss', 0.4, 2), ({id}, 'loss', 0.3, 3);
             INSERT INTO params VALUES ({id}, 'lr', '0.1'), ({id}, 'seed', '7');
             INSERT INTO links (destination_type, destination_id, label) VALUES ('RUN', '{id}', 'l{id}')"
        ))
        .await;
        self.put(&format!("runs/{id}/model.bin")).await;
        self.put(&format!("runs/{id}/logs/0.txt")).await;
    }
    async fn snapshot(&self, id: i64, run: i64, account: i64, deleted: Option<i64>) {
        let at = deleted.map(lite_ago).unwrap_or_else(|| "NULL".into());
        let uri = self.uri(&format!("snaps/{id}/"));
        self.sql(&format!(
            "INSERT INTO snapshots VALUES ({id}, {run}, {account}, {at}, '{uri}');
             INSERT INTO snapshot_files (snapshot_id, path, size_bytes) VALUES ({id}, 'a', 1), ({id}, 'b', 2)"
        ))
        .await;
        self.put(&format!("snaps/{id}/weights.pt")).await;
    }
    fn uri(&self, path: &str) -> String {
        format!("file://{}/{BUCKET}/{path}", self.objects.display())
    }
    async fn delete_runs_at(&self, runs: &[(i64, i64)]) {
        let cases: String = runs
            .iter()
            .map(|(id, s)| {
                format!(
                    " WHEN {id} THEN CAST((unixepoch('now', 'subsec') - {s}) * 1000 AS INTEGER)"
                )
            })
            .collect();
        let ids: Vec<String> = runs.iter().map(|r| r.0.to_string()).collect();
        self.sql(&format!(
            "UPDATE runs SET lifecycle_stage = 'deleted', deleted_time = CASE id{cases} END WHERE id IN ({})",
            ids.join(", ")
        ))
        .await;
    }
    async fn finish(self) {
        self.ctx.db.close().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn holds_win_are_recorded_once_and_release_lets_the_purge_go(w: impl Platform) {
    w.account(1, "free", None).await;
    w.account(2, "free", None).await;
    w.run_row(1, 1, Some(10 * DAY)).await;
    w.run_row(2, 1, Some(10 * DAY)).await;
    w.run_row(3, 2, Some(10 * DAY)).await;
    w.snapshot(30, 3, 2, Some(10 * DAY)).await;
    let account_hold = w.hold(&["--account", "2"]);
    let subject_hold = w.hold(&["--subject", "deleted-runs:2"]);

    let s = w.run(&[], RunOptions::default()).await;
    assert_eq!(s.exit_code(), 0, "{:?}", s.reports);
    assert_eq!(w.rows_of_run(1).await, 0, "the unheld run is purged");
    assert!(w.keys("runs/1/").await.is_empty());
    assert_eq!(w.rows_of_run(2).await, 7, "held by subject");
    assert_eq!(w.keys("runs/2/").await.len(), 2);
    assert_eq!(w.rows_of_run(3).await, 7, "held by account");
    assert_eq!(
        w.count("SELECT count(*) FROM snapshot_files WHERE snapshot_id = 30")
            .await,
        2,
        "snapshot held by account"
    );
    assert_eq!(w.keys("snaps/30/").await.len(), 1);
    assert_eq!(
        w.audit_events("held").await,
        ["deleted-runs:2", "deleted-runs:3", "deleted-snapshots:30"]
    );
    let holds = w
        .count("SELECT count(DISTINCT hold_id) FROM lethe.audit_log WHERE event = 'held'")
        .await;
    assert_eq!(holds, 2, "holds {account_hold} and {subject_hold}");
    w.run(&[], RunOptions::default()).await;
    assert_eq!(w.audit_events("held").await.len(), 3, "recorded once");

    let (code, _, err) = w.cli(&[
        "hold",
        "release",
        &subject_hold.to_string(),
        "--by",
        "legal",
        "--reason",
        "case closed",
    ]);
    assert_eq!(code, 0, "{err}");
    w.run(&["deleted-runs"], RunOptions::default()).await;
    assert_eq!(w.rows_of_run(2).await, 0);
    assert!(w.keys("runs/2/").await.is_empty());
    assert_eq!(w.rows_of_run(3).await, 7, "the account hold still stands");
    w.finish().await;
}

async fn grace_filter_and_uri_columns_decide_exactly_what_goes(w: impl Platform) {
    w.account(1, "free", None).await;
    w.run_row(1, 1, Some(7 * DAY + 120)).await; // two minutes past its grace
    w.run_row(2, 1, Some(7 * DAY - 120)).await; // two minutes before
    w.run_row(10, 1, None).await;
    w.run_row(11, 1, Some(10 * DAY)).await;
    // Run 11 has a deletion time but is not in the 'deleted' stage: the filter excludes it.
    w.sql("UPDATE runs SET lifecycle_stage = 'active' WHERE id = 11")
        .await;
    let (u1, u10) = (w.uri("custom/1/"), w.uri("custom/10/"));
    w.sql(&format!(
        "UPDATE runs SET artifact_uri = '{u1}' WHERE id = 1; UPDATE runs SET artifact_uri = '{u10}' WHERE id = 10"
    ))
    .await;
    for k in [
        "custom/1/a",
        "custom/1/b/c",
        "custom/10/a",
        "custom/1-x/a",
        "runs/1-x/a",
    ] {
        w.put(k).await;
    }
    let s = w.run(&["deleted-runs"], RunOptions::default()).await;
    assert_eq!(s.exit_code(), 0, "{:?}", s.reports);
    assert_eq!(s.reports[0].purged, 1);
    assert_eq!(
        w.keys("").await,
        [
            "custom/1-x/a",
            "custom/10/a",
            "runs/1-x/a",
            "runs/10/logs/0.txt",
            "runs/10/model.bin",
            "runs/11/logs/0.txt",
            "runs/11/model.bin",
            "runs/2/logs/0.txt",
            "runs/2/model.bin",
        ],
        "only run 1's prefix and its URI directory are purged"
    );
    for kept in [2, 10, 11] {
        assert_eq!(w.rows_of_run(kept).await, 7, "run {kept}");
    }
    let met = w
        .count(
            "SELECT count(*) FROM lethe.work_items WHERE subject_key = '1' AND state = 'done' \
             AND purged_at <= deadline_at",
        )
        .await;
    assert_eq!(met, 1, "purged before its recorded deadline");
    w.finish().await;
}

async fn closed_account_takes_what_it_owns_within_its_plan_window(w: impl Platform) {
    w.account(1, "free", Some(20 * DAY)).await; // past the 14-day grace
    w.account(2, "enterprise", Some(20 * DAY)).await; // inside the 30-day enterprise grace
    w.account(3, "free", Some(20 * DAY)).await; // owns a run held by another job's hold
    w.run_row(1, 1, None).await;
    w.snapshot(10, 1, 1, None).await;
    w.run_row(2, 2, None).await;
    w.run_row(3, 3, None).await;
    w.put("accounts/1/export.zip").await;
    w.put("accounts/2/export.zip").await;
    w.hold(&["--subject", "deleted-runs:3"]);

    let s = w.run(&["closed-accounts"], RunOptions::default()).await;
    assert_eq!(s.exit_code(), 0, "{:?}", s.reports);
    assert_eq!((s.reports[0].purged, s.reports[0].held), (1, 1));
    assert_eq!(w.count("SELECT count(*) FROM accounts").await, 2);
    assert_eq!(
        w.count("SELECT count(*) FROM api_keys WHERE account_id = 1")
            .await,
        0
    );
    assert_eq!(w.rows_of_run(1).await, 0);
    assert_eq!(
        w.count("SELECT count(*) FROM snapshot_files WHERE snapshot_id = 10")
            .await,
        0
    );
    assert!(w.keys("runs/1/").await.is_empty());
    assert!(w.keys("snaps/10/").await.is_empty());
    assert!(w.keys("accounts/1/").await.is_empty());
    assert_eq!(w.keys("accounts/2/").await.len(), 1, "enterprise grace");
    assert_eq!(w.rows_of_run(3).await, 7, "a held run is never a child");
    w.finish().await;
}

async fn dry_run_deletes_nothing_and_a_second_run_is_a_no_op(w: impl Platform) {
    w.account(1, "free", None).await;
    for id in 1..=3 {
        w.run_row(id, 1, Some(10 * DAY)).await;
    }
    let dry = w
        .run(
            &["deleted-runs"],
            RunOptions {
                dry_run: true,
                ..Default::default()
            },
        )
        .await;
    assert_eq!(dry.reports[0].would_purge, 3);
    assert_eq!(dry.reports[0].object_versions_deleted, 6);
    assert_eq!(w.rows_of_run(1).await, 7);
    assert_eq!(w.keys("runs/").await.len(), 6);
    assert_eq!(w.count("SELECT count(*) FROM lethe.audit_log").await, 0);
    let s = w.run(&["deleted-runs"], RunOptions::default()).await;
    assert_eq!(s.reports[0].purged, 3);
    let again = w.run(&["deleted-runs"], RunOptions::default()).await;
    assert_eq!(again.reports[0].purged, 0);
    assert_eq!(w.audit_events("purged").await.len(), 3);
    w.finish().await;
}

async fn uncovered_foreign_key_stops_everything_naming_the_constraint(w: impl Platform) {
    w.account(1, "free", None).await;
    w.run_row(1, 1, Some(10 * DAY)).await;
    w.sql(
        "CREATE TABLE run_notes (id INTEGER PRIMARY KEY, run_id BIGINT REFERENCES runs (id), note TEXT);
         INSERT INTO run_notes (id, run_id, note) VALUES (1, 1, 'keep me')",
    )
    .await;
    for args in [&["check"][..], &["run", "--all"][..]] {
        let (code, _, err) = w.cli(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.contains("deleted-runs.toml") && err.contains("run_notes_run_id_fkey"),
            "{err}"
        );
    }
    assert_eq!(w.rows_of_run(1).await, 7);
    assert_eq!(w.keys("runs/1/").await.len(), 2);
    w.finish().await;
}

/// A subject key two rows could share: purging one would take the other's rows (and every
/// child row and object keyed by it) along. `check` and `run` refuse it until the key is the
/// primary key or under a unique index of its own; a partial unique index is not enough.
async fn a_subject_key_two_rows_could_share_is_refused(w: impl Platform) {
    w.account(1, "free", None).await;
    w.run_row(1, 1, Some(10 * DAY)).await;
    w.sql(
        "CREATE TABLE notes (name TEXT NOT NULL, deleted_at TIMESTAMPTZ);
         INSERT INTO notes VALUES ('a', NULL), ('a', '2020-01-01T00:00:00Z')",
    )
    .await;
    std::fs::write(
        w.jobs_dir().join("deleted-notes.toml"),
        r#"description = "deleted notes"
schedule = "0 0 3 * * *"

[subject]
table = "notes"
key = "name"
clock = "deleted_at"
clock_kind = "timestamptz"

[window]
grace = "1d"
deadline = "30d"
"#,
    )
    .unwrap();
    let refused = |why: &str| {
        for args in [&["check"][..], &["run", "--all"][..]] {
            let (code, out, err) = w.cli(args);
            assert_eq!(code, 2, "{why}: {args:?}: {out}{err}");
            assert!(
                err.contains("deleted-notes.toml") && err.contains("subject key `name`"),
                "{why}: {err}"
            );
        }
    };
    refused("no index");
    w.sql("CREATE UNIQUE INDEX notes_live ON notes (name) WHERE deleted_at IS NULL")
        .await;
    refused("a partial unique index");
    assert_eq!(w.count("SELECT count(*) FROM notes").await, 2);
    assert_eq!(w.rows_of_run(1).await, 7, "nothing deleted while refused");

    w.sql("DELETE FROM notes WHERE deleted_at IS NULL; CREATE UNIQUE INDEX notes_name ON notes (name)")
        .await;
    let (code, out, err) = w.cli(&["check"]);
    assert_eq!(code, 0, "a unique index of its own is enough: {out}{err}");
    assert!(
        out.contains("warning: no `owner` column, so account holds cannot reach"),
        "a job without owner is pointed out: {out}"
    );
    w.finish().await;
}

/// `hold place` says what a hold covers, per job, in sentences; compares a subject key the way
/// the database does (`042` is run 42 on an integer key, and the hold is stored as `42`, the
/// form purges compare); and refuses a hold that covers nothing, a likely typo, unless --force.
async fn a_hold_says_what_it_covers_and_one_covering_nothing_is_refused(w: impl Platform) {
    w.account(1, "free", None).await;
    w.run_row(42, 1, Some(10 * DAY)).await;
    let place = |args: &[&str]| {
        let mut full = vec!["hold", "place"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["--reason", "case 7", "--by", "legal@example.com"]);
        w.cli(&full)
    };
    let (code, _, err) = place(&["--subject", "deleted-runs:042"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("placed on subject deleted-runs:42 by legal@example.com")
            && err.contains("written `042`"),
        "{err}"
    );
    assert!(
        !err.contains("Subject {"),
        "a sentence, not a debug struct: {err}"
    );
    w.run(&[], RunOptions::default()).await;
    assert_eq!(
        w.rows_of_run(42).await,
        7,
        "the hold written 042 keeps run 42"
    );
    assert_eq!(w.keys("runs/42/").await.len(), 2);

    for args in [
        &["--subject", "deleted-runs:43"][..],
        &["--account", "99"][..],
    ] {
        let (code, _, err) = place(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.contains("would cover no subject") && err.contains("--force"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(w.count("SELECT count(*) FROM lethe.holds").await, 1);
    let (code, _, err) = place(&["--account", "99", "--force"]);
    assert_eq!(code, 0, "--force places it: {err}");
    let (code, _, err) = place(&["--account", "1"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("job deleted-runs: 1 row(s) of runs owned by account 1"),
        "{err}"
    );
    w.finish().await;
}

/// Clocks no platform wrote (issue 30): seconds in an epoch-milliseconds column read as January
/// 1970, which would make the subject eligible at once. One such row among plausible ones fails
/// alone, naming its value, and the others are purged; clocks in the future (two days ahead, the
/// year 2100) wait, and `check` passes; only when most of a job's clocks are implausible (the
/// unit itself is wrong) do `check` and `run` refuse the job, naming subjects and values, with
/// nothing deleted.
async fn implausible_clocks_fail_alone_and_stop_the_job_only_when_most_are(w: impl Platform) {
    w.account(1, "free", None).await;
    for id in 1..=3 {
        w.run_row(id, 1, Some(10 * DAY)).await;
    }
    w.run_row(4, 1, None).await;
    w.run_row(5, 1, None).await;
    w.sql("UPDATE runs SET deleted_time = 1700000000 WHERE id = 2")
        .await;
    let (code, out, err) = w.cli(&["check"]);
    assert_eq!(
        code, 0,
        "one bad clock among three is that row's problem: {out}{err}"
    );
    let (code, out, err) = w.cli(&["run", "--all"]);
    assert_eq!(code, 1, "a failed subject is exit 1: {out}{err}");
    for id in [1, 3] {
        assert_eq!(w.rows_of_run(id).await, 0, "run {id} is purged");
    }
    assert_eq!(w.rows_of_run(2).await, 7, "run 2 keeps its rows");
    assert_eq!(w.keys("runs/2/").await.len(), 2, "and its objects");
    assert_eq!(
        w.count(
            "SELECT count(*) FROM lethe.work_items WHERE subject_key = '2' AND state = 'failed' \
             AND error_class = 'clock' AND last_error LIKE '%1970%before 2000%'"
        )
        .await,
        1,
        "run 2 fails with its value"
    );

    // Future clocks wait, whatever their distance: not eligible, not a problem.
    w.sql("UPDATE runs SET lifecycle_stage = 'active', deleted_time = NULL WHERE id = 2")
        .await;
    w.sql("UPDATE runs SET lifecycle_stage = 'deleted', deleted_time = 4102444800000 WHERE id = 4")
        .await;
    w.delete_runs_at(&[(5, -2 * DAY)]).await;
    for args in [&["check"][..], &["run", "--all"][..]] {
        let (code, out, err) = w.cli(args);
        assert_eq!(code, 0, "{args:?}: {out}{err}");
    }
    for id in [4, 5] {
        assert_eq!(w.rows_of_run(id).await, 7, "run {id} waits");
    }

    // Most clocks implausible: the unit is wrong, and the job stops.
    w.sql(
        "UPDATE runs SET lifecycle_stage = 'deleted', deleted_time = 1700000000 WHERE id IN (2, 5)",
    )
    .await;
    for args in [
        &["check"][..],
        &["run", "--all"][..],
        &["run", "--all", "--dry-run"][..],
    ] {
        let (code, out, err) = w.cli(args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(
            err.contains("deleted-runs.toml") && err.contains("2: ") && err.contains("1970"),
            "{args:?}: {err}"
        );
    }
    for id in [2, 4, 5] {
        assert_eq!(w.rows_of_run(id).await, 7, "nothing deleted while refused");
    }
    w.finish().await;
}

async fn audit_chain_verifies_refuses_edits_and_names_a_forged_entry(w: impl Platform) {
    w.account(1, "free", None).await;
    for id in 1..=4 {
        w.run_row(id, 1, Some(10 * DAY)).await;
    }
    w.hold(&["--subject", "deleted-runs:4"]);
    w.run(&[], RunOptions::default()).await;
    let (code, out, _) = w.cli(&["audit", "verify"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("verified: 5 entries"), "{out}");
    let (code, csv, err) = w.cli(&["report"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(csv.lines().filter(|l| l.contains(",purged,")).count(), 3);
    assert_eq!(csv.lines().filter(|l| l.contains(",held,")).count(), 1);

    let sql = w
        .dialect()
        .t("UPDATE lethe.audit_log SET detail = '{}' WHERE seq = 3");
    let refused = lethe::on_db!(&w.ctx().db, p => sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(p)
        .await
        .map(|_| ()));
    assert!(
        refused.unwrap_err().to_string().contains("append-only"),
        "the database refuses edits"
    );
    // Someone able to drop the guard edits entry 3: verify names it.
    match w.dialect() {
        Dialect::Postgres => {
            w.sql(
                "ALTER TABLE lethe.audit_log DISABLE TRIGGER audit_log_no_update_delete;
                 UPDATE lethe.audit_log SET detail = jsonb_set(detail, '{rows,metrics}', '0') WHERE seq = 3;",
            )
            .await
        }
        Dialect::Sqlite => {
            w.sql(
                "DROP TRIGGER lethe_audit_log_no_update;
                 UPDATE lethe_audit_log SET detail = json_set(detail, '$.rows.metrics', 0) WHERE seq = 3;",
            )
            .await
        }
    }
    let (code, out, _) = w.cli(&["audit", "verify"]);
    assert_eq!(code, 1);
    assert!(out.contains("entry 3:"), "{out}");
    w.finish().await;
}

/// Two fresh runs deleted `ago` seconds back (by the database's clock), then one run of
/// `deleted-runs`: the attempt's run ids and summary, or `None` when the run did not come within
/// 0.8 s of setting the clocks (a one-second boundary needs that), so the caller tries again.
async fn runs_deleted_just_now(
    w: &impl Platform,
    attempt: i64,
    ago: [i64; 2],
) -> Option<(i64, i64, RunSummary)> {
    let (a, b) = (attempt * 10 + 1, attempt * 10 + 2);
    w.run_row(a, 1, None).await;
    w.run_row(b, 1, None).await;
    let t0 = std::time::Instant::now();
    w.delete_runs_at(&[(a, ago[0]), (b, ago[1])]).await;
    let s = w.run(&["deleted-runs"], RunOptions::default()).await;
    (t0.elapsed() <= std::time::Duration::from_millis(800)).then_some((a, b, s))
}

const TOO_LOADED: &str =
    "no attempt ran within 0.8 s of setting the clocks: the machine is too loaded";

/// One second either side of the end of the grace window, by the database's clock. A slow
/// machine retries with fresh subjects.
async fn one_second_either_side_of_grace(w: impl Platform) {
    const GRACE: i64 = 7 * DAY;
    w.account(1, "free", None).await;
    for attempt in 0..5 {
        let Some((early, late, s)) =
            runs_deleted_just_now(&w, attempt, [GRACE + 1, GRACE - 1]).await
        else {
            continue;
        };
        assert_eq!(s.exit_code(), 0, "{:?}", s.reports);
        assert_eq!(
            s.reports[0].purged, 1,
            "only the subject one second past grace"
        );
        assert_eq!(w.rows_of_run(early).await, 0);
        assert!(w.keys(&format!("runs/{early}/")).await.is_empty());
        assert_eq!(
            w.rows_of_run(late).await,
            7,
            "one second before grace ends, nothing goes"
        );
        assert_eq!(w.keys(&format!("runs/{late}/")).await.len(), 2);
        w.finish().await;
        return;
    }
    panic!("{TOO_LOADED}");
}

/// One second either side of the deadline, by the database's clock: both subjects are past
/// grace and purged, and the audit records which one kept its promise. The one whose deadline
/// passed a second ago is recorded late; the one due a second from now is purged in time.
async fn one_second_either_side_of_the_deadline(w: impl Platform) {
    const DEADLINE: i64 = 30 * DAY;
    w.account(1, "free", None).await;
    let late = |key: i64| match w.dialect() {
        Dialect::Postgres => format!(
            "SELECT count(*) FROM lethe.audit_log WHERE event = 'purged' AND subject_key = '{key}'
             AND at > (detail->>'deadline_at')::timestamptz"
        ),
        Dialect::Sqlite => format!(
            "SELECT count(*) FROM lethe_audit_log WHERE event = 'purged' AND subject_key = '{key}'
             AND unixepoch(at, 'subsec') > unixepoch(detail->>'deadline_at', 'subsec')"
        ),
    };
    for attempt in 0..5 {
        let Some((overdue, due, s)) =
            runs_deleted_just_now(&w, attempt, [DEADLINE + 1, DEADLINE - 1]).await
        else {
            continue;
        };
        assert_eq!(s.exit_code(), 0, "{:?}", s.reports);
        for id in [overdue, due] {
            assert_eq!(w.rows_of_run(id).await, 0);
            assert!(w.keys(&format!("runs/{id}/")).await.is_empty());
        }
        assert_eq!(
            w.count(&late(overdue)).await,
            1,
            "a second past its deadline: recorded late"
        );
        assert_eq!(
            w.count(&late(due)).await,
            0,
            "a second before its deadline: recorded in time"
        );
        w.finish().await;
        return;
    }
    panic!("{TOO_LOADED}");
}

/// `lethe run` with failing subjects says each failure once on stderr (not once as a log line
/// and again in the summary), and exits 1.
async fn each_failure_is_said_once(w: impl Platform) {
    w.account(1, "free", None).await;
    for id in [1, 2] {
        w.run_row(id, 1, Some(8 * DAY)).await;
    }
    // An empty path segment fails a subject before anything of it is deleted.
    for (id, uri) in [(1, w.uri("custom//1/")), (2, w.uri("custom//2/"))] {
        w.sql(&format!(
            "UPDATE runs SET artifact_uri = '{uri}' WHERE id = {id}"
        ))
        .await;
    }
    let (code, out, err) = w.cli(&["run", "--job", "deleted-runs"]);
    assert_eq!(code, 1, "{out}{err}");
    let mentions = |id: &str| {
        err.lines()
            .filter(|l| l.contains(&format!("//{id}/")))
            .count()
    };
    assert_eq!(
        (mentions("1"), mentions("2")),
        (1, 1),
        "each failure once: {err}"
    );
    assert_eq!(w.rows_of_run(1).await, 7, "a failed subject keeps its rows");
    w.finish().await;
}

/// Foreign keys as the schema declares them: a key over two columns is linked column by column
/// (`span_metrics (trace_id, span_id) -> spans`, where span ids repeat across traces); `ON
/// DELETE SET NULL` rows stay with their link cleared; `ON DELETE CASCADE` rows no entry lists
/// are left to the database and counted in the audit. `check`'s hint for the missing entry is
/// pasted into the spec as printed, and then passes.
async fn foreign_keys_as_the_schema_declares_them(w: impl Platform) {
    w.sql(
        "CREATE TABLE tr_traces (id BIGINT PRIMARY KEY, deleted_ms BIGINT);
         CREATE TABLE tr_spans (trace_id BIGINT NOT NULL REFERENCES tr_traces (id),
             span_id TEXT NOT NULL, PRIMARY KEY (trace_id, span_id));
         CREATE TABLE tr_span_metrics (trace_id BIGINT NOT NULL, span_id TEXT NOT NULL, v BIGINT,
             FOREIGN KEY (trace_id, span_id) REFERENCES tr_spans (trace_id, span_id));
         CREATE TABLE tr_span_events (trace_id BIGINT NOT NULL, span_id TEXT NOT NULL, e TEXT,
             FOREIGN KEY (span_id, trace_id) REFERENCES tr_spans (span_id, trace_id) ON DELETE CASCADE);
         CREATE TABLE tr_tags (trace_id BIGINT NOT NULL REFERENCES tr_traces (id) ON DELETE CASCADE, k TEXT);
         CREATE TABLE tr_issues (id BIGINT PRIMARY KEY,
             source_trace_id BIGINT REFERENCES tr_traces (id) ON DELETE SET NULL);",
    )
    .await;
    let gone = chrono::Utc::now().timestamp_millis() - 3 * DAY * 1000;
    w.sql(&format!(
        "INSERT INTO tr_traces VALUES (1, {gone}), (2, NULL);
         INSERT INTO tr_spans VALUES (1, 'a'), (1, 'b'), (2, 'a');
         INSERT INTO tr_span_metrics VALUES (1, 'a', 1), (1, 'b', 2), (1, 'b', 3), (2, 'a', 4);
         INSERT INTO tr_span_events VALUES (1, 'a', 'x'), (2, 'a', 'y');
         INSERT INTO tr_tags VALUES (1, 'k1'), (1, 'k2'), (2, 'k3');
         INSERT INTO tr_issues VALUES (10, 1), (11, 2);"
    ))
    .await;
    let spec = w.jobs_dir().join("deleted-traces.toml");
    let base = "schedule = \"0 0 3 * * *\"\n[subject]\ntable = \"tr_traces\"\nclock = \"deleted_ms\"\n\
                clock_kind = \"epoch_milliseconds\"\n[window]\ngrace = \"1d\"\ndeadline = \"2d\"\n\n\
                [[rows]]\ntable = \"tr_spans\"\ncolumn = \"trace_id\"\n";
    std::fs::write(&spec, base).unwrap();
    let (code, out, err) = w.cli(&["check"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("tr_span_metrics"), "{err}");
    let hint = err
        .split("add\n\n")
        .nth(1)
        .unwrap_or_else(|| panic!("a hint: {err}"))
        .trim_end();
    assert!(
        hint.contains(r#"column = ["trace_id", "span_id"]"#)
            && hint.contains(r#"parent = "tr_spans""#),
        "{hint}"
    );
    std::fs::write(&spec, format!("{base}\n{hint}\n")).unwrap();
    let (code, out, err) = w.cli(&["check"]);
    assert_eq!(code, 0, "the pasted hint passes: {hint}\n{out}{err}");
    assert!(
        out.contains("tr_issues") && out.contains("ON DELETE SET NULL"),
        "check says the database clears tr_issues' link: {out}"
    );
    assert!(
        out.contains("the database deletes `tr_tags` rows")
            && out.contains("the database deletes `tr_span_events` rows"),
        "{out}"
    );
    let (code, out, err) = w.cli(&["run", "--job", "deleted-traces"]);
    assert_eq!(code, 0, "{out}{err}");
    for (table, kept) in [
        ("tr_traces", 1),
        ("tr_spans", 1),
        ("tr_span_metrics", 1),
        ("tr_span_events", 1),
        ("tr_tags", 1),
        ("tr_issues", 2),
    ] {
        assert_eq!(
            w.count(&format!("SELECT count(*) FROM {table}")).await,
            kept,
            "{table}"
        );
    }
    assert_eq!(
        w.count(
            "SELECT count(*) FROM tr_span_metrics WHERE trace_id = 2 AND span_id = 'a' AND v = 4"
        )
        .await,
        1,
        "trace 2's span `a` keeps its metric"
    );
    assert_eq!(
        w.count("SELECT count(*) FROM tr_issues WHERE id = 10 AND source_trace_id IS NULL")
            .await,
        1,
        "the issue outlives its trace, its link cleared"
    );
    let rows = |name: &str| match w.dialect() {
        Dialect::Postgres => format!(
            "SELECT CAST(detail->'rows'->>'{name}' AS BIGINT) FROM lethe.audit_log WHERE event = 'purged' AND job = 'deleted-traces'"
        ),
        Dialect::Sqlite => format!(
            "SELECT json_extract(detail, '$.rows.{name}') FROM lethe.audit_log WHERE event = 'purged' AND job = 'deleted-traces'"
        ),
    };
    for (name, n) in [
        ("tr_traces", 1),
        ("tr_spans", 2),
        ("tr_span_metrics", 3),
        ("tr_span_events", 1),
        ("tr_tags", 2),
    ] {
        assert_eq!(w.count(&rows(name)).await, n, "audit rows of {name}");
    }
    std::fs::remove_file(&spec).unwrap();
    w.finish().await;
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(crate::helpers::World::new(lethe::storage::Versioning::Unversioned).await).await
            })*
        }
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(super::LiteWorld::new().await).await
            })*
        }
    };
}
pub(crate) use on_both;

on_both!(
    one_second_either_side_of_grace,
    one_second_either_side_of_the_deadline,
    holds_win_are_recorded_once_and_release_lets_the_purge_go,
    grace_filter_and_uri_columns_decide_exactly_what_goes,
    closed_account_takes_what_it_owns_within_its_plan_window,
    dry_run_deletes_nothing_and_a_second_run_is_a_no_op,
    uncovered_foreign_key_stops_everything_naming_the_constraint,
    audit_chain_verifies_refuses_edits_and_names_a_forged_entry,
    a_subject_key_two_rows_could_share_is_refused,
    implausible_clocks_fail_alone_and_stop_the_job_only_when_most_are,
    a_hold_says_what_it_covers_and_one_covering_nothing_is_refused,
    each_failure_is_said_once,
    foreign_keys_as_the_schema_declares_them,
);

/// The same SQLite platform with its objects in S3: the database and the store are chosen
/// independently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_platform_with_objects_in_s3() {
    let lite = LiteWorld::new().await;
    let settings = {
        let mut s = lite.ctx.settings.clone();
        s.object_root = None;
        s
    };
    let store: Arc<dyn ObjectStore> =
        Arc::new(lethe::storage::s3::S3Store::connect(&settings.s3).await);
    let bucket = helpers::unique("it-");
    store
        .create_bucket(&bucket, Versioning::Unversioned)
        .await
        .unwrap();
    for e in std::fs::read_dir(&lite.jobs_dir).unwrap() {
        let p = e.unwrap().path();
        let text = std::fs::read_to_string(&p)
            .unwrap()
            .replace(BUCKET, &bucket);
        std::fs::write(&p, text).unwrap();
    }
    let ctx = Context::with_store(&settings, lite.ctx.db.clone(), store.clone());
    let w = LiteWorld { ctx, ..lite };
    w.account(1, "free", None).await;
    w.sql("INSERT INTO runs VALUES (1, 1, 'r', 'deleted', CAST((unixepoch('now') - 864000) * 1000 AS INTEGER), NULL)")
        .await;
    store
        .put(&bucket, "runs/1/model.bin", b"x".to_vec())
        .await
        .unwrap();
    let s = w.run(&["deleted-runs"], RunOptions::default()).await;
    assert_eq!(
        (s.exit_code(), s.reports[0].purged),
        (0, 1),
        "{:?}",
        s.reports
    );
    let left = store
        .list_page(&bucket, "runs/", false, None)
        .await
        .unwrap();
    assert!(left.items.is_empty(), "{:?}", left.items);
    w.finish().await;
}

/// Two runs of one job never overlap on SQLite either: the run lock is a row with an expiry.
/// A live lock makes `lethe run` skip the job (exit 3); an expired one (a crashed holder) is
/// taken over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_run_lock_excludes_a_second_runner_until_it_expires() {
    let w = LiteWorld::new().await;
    w.account(1, "free", None).await;
    w.run_row(1, 1, Some(10 * DAY)).await;
    w.sql(
        "INSERT INTO lethe_locks VALUES ('lethe:job:deleted-runs', 'another process',
             strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '+60 seconds'))",
    )
    .await;
    let (code, _, err) = w.cli(&["run", "--job", "deleted-runs"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("another lethe process"), "{err}");
    assert_eq!(w.rows_of_run(1).await, 7);

    w.sql("UPDATE lethe_locks SET until = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-1 seconds')")
        .await;
    let (code, out, err) = w.cli(&["run", "--job", "deleted-runs"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(w.rows_of_run(1).await, 0);
    assert_eq!(
        w.count("SELECT count(*) FROM lethe_locks").await,
        0,
        "released at the end of the run"
    );
    w.finish().await;
}

/// The README's first command: `lethe demo` builds its world in a fresh directory with
/// nothing but the binary, and every step succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_the_whole_tour_on_sqlite_and_a_local_directory() {
    let dir = std::env::temp_dir().join(helpers::unique("lethe-demo-"));
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_lethe"))
            .args(["demo", "--dir"])
            .arg(&dir)
            .env_remove("DATABASE_URL")
            .env_remove("AWS_ENDPOINT_URL")
            .env("LETHE_LOG", "warn")
            .output()
            .unwrap()
    };
    let out = run();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for step in [
        "lethe check",
        "lethe plan",
        "lethe run --all",
        "audit chain verified",
        "report rows",
    ] {
        assert!(stdout.contains(step), "missing `{step}`:\n{stdout}");
    }
    assert!(dir.join("platform.db").is_file());
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(
        html.contains("litigation hold #42"),
        "the held account is in the report"
    );
    // The held account's objects are still there; a purged run's are gone.
    let objects = dir.join("objects/lethe-artifacts");
    assert!(objects.join("accounts/9/profile.json").is_file());
    assert!(
        !objects.join("runs/101").exists(),
        "run 101 (deleted 40 days ago) is purged"
    );
    assert!(
        objects.join("runs/105/output.txt").is_file(),
        "an active run is kept"
    );

    // Running it again replaces the earlier demo; a foreign directory is refused.
    assert!(run().status.success());
    let foreign = std::env::temp_dir().join(helpers::unique("lethe-foreign-"));
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("keep.txt"), "mine").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lethe"))
        .args(["demo", "--dir"])
        .arg(&foreign)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(foreign.join("keep.txt").exists());
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&foreign);
}

/// Age-based retention on SQLite: the window read from a related row (`[window.from_row]`),
/// NULL taking the default and zero keeping forever, as the PostgreSQL pack tests check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_windows_read_from_related_rows() {
    let w = LiteWorld::new().await;
    w.sql(
        "CREATE TABLE projects (id INTEGER PRIMARY KEY, retention_days INTEGER);
         CREATE TABLE traces (id TEXT PRIMARY KEY, project_id INTEGER NOT NULL REFERENCES projects (id),
                              created_at TIMESTAMPTZ NOT NULL);
         CREATE TABLE spans (id INTEGER PRIMARY KEY, trace_id TEXT NOT NULL REFERENCES traces (id));
         INSERT INTO projects VALUES (1, 7), (2, NULL), (3, 0);",
    )
    .await;
    for (id, project, days) in [
        ("a", 1, 8),   // past its project's 7 days
        ("b", 1, 6),   // within them
        ("c", 2, 31),  // past the 30-day default
        ("d", 2, 20),  // within it
        ("e", 3, 400), // retention 0: kept forever
    ] {
        w.sql(&format!(
            "INSERT INTO traces VALUES ('{id}', {project}, {});
             INSERT INTO spans (trace_id) VALUES ('{id}'), ('{id}')",
            lite_ago(days * DAY)
        ))
        .await;
        w.put(&format!("traces/{id}/payload.json")).await;
    }
    std::fs::write(
        w.jobs_dir.join("expired-traces.toml"),
        r#"schedule = "0 0 * * * *"
[subject]
table = "traces"
clock = "created_at"
clock_kind = "timestamptz"

[window]
grace = "30d"
deadline = "31d"

[window.from_row]
table = "projects"
link = "project_id"
column = "retention_days"
unit = "days"
deadline_after = "1d"

[[rows]]
table = "spans"
column = "trace_id"

[[objects]]
bucket = "lethe-artifacts"
prefix = "traces/{key}/"
"#,
    )
    .unwrap();
    let s = w.run(&["expired-traces"], RunOptions::default()).await;
    assert_eq!(s.exit_code(), 0, "{:?}", s.reports);
    let left: Vec<String> = sqlx::query_scalar("SELECT id FROM traces ORDER BY id")
        .fetch_all(w.pool())
        .await
        .unwrap();
    assert_eq!(left, ["b", "d", "e"]);
    assert_eq!(w.count("SELECT count(*) FROM spans").await, 6);
    assert!(w.keys("traces/a/").await.is_empty());
    assert_eq!(w.keys("traces/e/").await.len(), 1, "kept forever");
    let promised: i64 = sqlx::query_scalar(
        "SELECT CAST(round((unixepoch(json_extract(detail, '$.deadline_at'), 'subsec')
                - unixepoch(json_extract(detail, '$.clock_at'), 'subsec')) / 86400) AS INTEGER)
         FROM lethe_audit_log WHERE event = 'purged' AND subject_key = 'a'",
    )
    .fetch_one(w.pool())
    .await
    .unwrap();
    assert_eq!(promised, 8, "7 days of retention and 1 day after it");
    w.finish().await;
}
