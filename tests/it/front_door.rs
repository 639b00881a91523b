//! Errors a newcomer meets first, each with the fix in its message and exit 2 (nothing deleted),
//! and output that ends quietly when its reader goes away. No services needed: a SQLite world.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn lethe(env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lethe"))
        .args(args)
        .env_remove("DATABASE_URL")
        .env("LETHE_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    crate::helpers::outcome(out)
}

fn scratch() -> PathBuf {
    let d = std::env::temp_dir().join(crate::helpers::unique("lethe-front-"));
    std::fs::create_dir_all(d.join("jobs")).unwrap();
    d
}

fn url(file: &Path) -> String {
    format!("sqlite://{}", file.display())
}

#[test]
fn a_sqlite_file_that_does_not_exist_is_refused_never_created() {
    let d = scratch();
    let db = d.join("platfrom.db"); // a typo
    let jobs = d.join("jobs").display().to_string();
    let env = [("DATABASE_URL", url(&db)), ("LETHE_JOBS_DIR", jobs)];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for args in [
        &["check"][..],
        &["run", "--all"][..],
        &["migrate"][..],
        &["hold", "list"][..],
    ] {
        let (code, out, err) = lethe(&env, args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(
            err.contains(&db.display().to_string()) && err.contains("migrate --create"),
            "{args:?}: {err}"
        );
        assert_eq!(err.matches("does not exist").count(), 1, "said once: {err}");
        assert!(!db.exists(), "{args:?} created the file");
    }
    let (code, out, err) = lethe(&env, &["migrate", "--create"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(db.exists());
    let (code, out, err) = lethe(&env, &["hold", "list"]);
    assert_eq!(code, 0, "{out}{err}");
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn a_database_lethe_does_not_speak_is_refused_naming_the_ones_it_does() {
    for u in [
        "mysql://app:s3cret@db:3306/platform",
        "redis://localhost",
        "platform.db",
    ] {
        let (code, out, err) = lethe(&[("DATABASE_URL", u)], &["check"]);
        assert_eq!(code, 2, "{u}: {out}{err}");
        assert!(
            err.contains("postgres://") && err.contains("sqlite://"),
            "{u}: {err}"
        );
        assert!(
            !err.contains("s3cret"),
            "the password is never printed: {err}"
        );
    }
}

/// A PostgreSQL server that is not there: exit 2 naming the server and the cause (not only that
/// a pool timed out), the password masked.
#[test]
fn an_unreachable_database_is_named_with_its_cause() {
    let (code, out, err) = lethe(
        &[(
            "DATABASE_URL",
            "postgres://lethe:s3cret@127.0.0.1:1/platform",
        )],
        &["check"],
    );
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("postgres://lethe:***@127.0.0.1:1/platform")
            && err.contains("refused")
            && err.contains("DATABASE_URL"),
        "{err}"
    );
    assert!(
        !err.contains("s3cret") && !err.contains("timed out"),
        "{err}"
    );
}

/// Runs `f` on the demo's SQLite platform database, then closes it.
fn on_demo_db<T>(demo: &Path, f: impl AsyncFnOnce(&sqlx::SqlitePool) -> T) -> T {
    let url = url(&demo.join("platform.db"));
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let db = lethe::db::connect(&url, 1).await.unwrap();
        let lethe::db::Db::Lite(pool) = &db else {
            unreachable!("a SQLite demo")
        };
        let out = f(pool).await;
        db.close().await;
        out
    })
}

/// A demo world: a SQLite platform with history, specs and objects.
fn demo() -> (PathBuf, Vec<(&'static str, String)>) {
    let d = scratch().join("demo");
    let (code, out, err) = lethe(&[], &["demo", "--dir", &d.display().to_string()]);
    assert_eq!(code, 0, "{out}{err}");
    let env = vec![
        ("DATABASE_URL", url(&d.join("platform.db"))),
        ("LETHE_JOBS_DIR", d.join("jobs").display().to_string()),
        (
            "LETHE_OBJECT_STORE",
            format!("file://{}", d.join("objects").display()),
        ),
    ];
    (d, env)
}

#[test]
fn report_refuses_an_unknown_job_and_an_empty_period() {
    let (d, env) = demo();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (code, out, err) = lethe(&env, &["report", "--job", "deleted-rnus"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("no job `deleted-rnus`"), "{err}");
    let (code, out, err) = lethe(&env, &["report", "--subject", "nope:1"]);
    assert_eq!(code, 2, "{out}{err}");
    let (code, out, err) = lethe(
        &env,
        &["report", "--from", "2026-12-01", "--to", "2026-11-01"],
    );
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("is not before --to"), "{err}");
    let (code, out, err) = lethe(&env, &["report", "--job", "deleted-runs"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.lines().count() > 1, "{out}");
    std::fs::remove_dir_all(d.parent().unwrap()).unwrap();
}

/// `lethe check | head -1`: the reader goes away before lethe has written; lethe ends quietly
/// with exit 0, without a panic or a "Broken pipe" error.
#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let (d, env) = demo();
    for args in [
        &["check"][..],
        &["report", "--format", "jsonl"][..],
        &["plan", "--format", "jsonl"][..],
        &["audit", "verify"][..],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lethe"))
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("LETHE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(
            !err.contains("panicked") && !err.to_lowercase().contains("broken pipe"),
            "{args:?}: {err}"
        );
    }
    std::fs::remove_dir_all(d.parent().unwrap()).unwrap();
}

/// Every command's `--help` names the environment it reads; `lethe run` with neither `--job`
/// nor `--all` says both are possible.
#[test]
fn help_names_the_environment_and_run_says_how_to_choose_jobs() {
    for cmd in [
        "check", "plan", "run", "daemon", "hold", "report", "audit", "migrate", "clock",
    ] {
        let (code, out, err) = lethe(&[], &[cmd, "--help"]);
        assert_eq!(code, 0, "{cmd}: {err}");
        for var in ["DATABASE_URL", "LETHE_JOBS_DIR", "LETHE_OBJECT_STORE"] {
            assert!(out.contains(var), "lethe {cmd} --help names {var}: {out}");
        }
    }
    let (_, out, _) = lethe(&[], &["run", "--help"]);
    assert!(
        out.contains("LETHE_MAX_SUBJECTS_PER_RUN") && out.contains("--dry-run"),
        "{out}"
    );
    let (code, out, err) = lethe(&[], &["run"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("--job NAME") && err.contains("--all"), "{err}");
}

/// Every file under `dir`, to show nothing was deleted.
fn files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                files(&e.path())
            } else {
                1
            }
        })
        .sum()
}

/// The demo's specs run with the S3 store (the default) instead of its object directory: with
/// no credentials, or an endpoint that does not answer, one line says which setting to set,
/// without the SDK's debug output, and nothing is deleted.
#[test]
fn an_s3_store_without_credentials_or_endpoint_says_which_setting_to_set() {
    let (d, env) = demo();
    let before = files(&d.join("objects"));
    let home = d.join("empty-home");
    std::fs::create_dir_all(&home).unwrap();
    let base: Vec<(&str, String)> = env
        .iter()
        .filter(|(k, _)| *k != "LETHE_OBJECT_STORE")
        .cloned()
        .chain([
            ("HOME", home.display().to_string()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("LETHE_S3_ATTEMPTS", "1".into()),
        ])
        .collect();
    let run = |extra: &[(&'static str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lethe"));
        for k in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
            "AWS_CONFIG_FILE",
            "AWS_SHARED_CREDENTIALS_FILE",
            "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_S3",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "LETHE_LOG",
        ] {
            cmd.env_remove(k);
        }
        cmd.args(["run", "--all"])
            .envs(base.iter().map(|(k, v)| (*k, v.as_str())))
            .envs(extra.iter().copied());
        crate::helpers::outcome(cmd.output().unwrap())
    };
    let (code, out, err) = run(&[]);
    assert_eq!(code, 2, "{out}{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("no S3 credentials")
            && err.contains("AWS_ACCESS_KEY_ID")
            && err.contains("LETHE_OBJECT_STORE=file://"),
        "{err}"
    );
    let (code, out, err) = run(&[
        ("AWS_ACCESS_KEY_ID", "lethe-test"),
        ("AWS_SECRET_ACCESS_KEY", "lethe-test"),
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
    ]);
    assert_eq!(code, 2, "{out}{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("did not answer") && err.contains("AWS_ENDPOINT_URL"),
        "{err}"
    );
    assert!(
        !err.contains("DispatchFailure(") && !err.contains("ConnectorError"),
        "no SDK debug output: {err}"
    );
    assert_eq!(files(&d.join("objects")), before, "nothing deleted");
    std::fs::remove_dir_all(d.parent().unwrap()).unwrap();
}

/// `lethe check` ends with the effective configuration, one `NAME=value` per setting named by
/// its environment variable, defaults marked, secrets masked; never a debug struct.
#[test]
fn check_prints_the_configuration_by_variable_name_with_secrets_masked() {
    let (d, env) = demo();
    let mut env: Vec<(&str, String)> = env
        .into_iter()
        .filter(|(k, _)| *k != "LETHE_OBJECT_STORE")
        .collect();
    env.extend([
        ("LETHE_BATCH_SUBJECTS", "500".to_string()),
        ("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEKEY".into()),
        ("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMIsecret".into()),
    ]);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (code, out, err) = lethe(&env, &["check"]);
    assert_eq!(code, 0, "{out}{err}");
    let config: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("effective configuration"))
        .skip(1)
        .map(str::trim)
        .collect();
    for line in [
        "LETHE_BATCH_SUBJECTS=500",
        "LETHE_DELETE_BATCH=100  (default)",
        "LETHE_OBJECT_STORE=s3  (default)",
        "AWS_SECRET_ACCESS_KEY=set (masked)",
        "AWS_ACCESS_KEY_ID=set (masked)",
    ] {
        assert!(config.contains(&line), "{line} in {config:#?}");
    }
    assert!(
        config
            .iter()
            .any(|l| l.starts_with("DATABASE_URL=sqlite://")),
        "{config:#?}"
    );
    assert!(
        config.iter().all(|l| l.contains('=')) && !out.contains("Settings {"),
        "{out}"
    );
    assert!(
        !out.contains("wJalrXUtnFEMIsecret") && !out.contains("AKIAEXAMPLEKEY"),
        "{out}"
    );
    std::fs::remove_dir_all(d.parent().unwrap()).unwrap();
}

/// One draft spec beside valid ones: by default it stops every job (exit 2); with
/// `--keep-going` (or LETHE_KEEP_GOING=true) it is left out, said once, the other jobs run, and
/// the exit is 1. A hold naming the left-out job stops the run, since what it protects in the
/// other jobs is unknown; nothing is deleted then.
#[test]
fn keep_going_leaves_a_bad_spec_out_and_runs_the_others() {
    let (d, env) = demo();
    let jobs = d.join("jobs");
    std::fs::write(
        jobs.join("draft-experiments.toml"),
        "schedule = \"0 3 * * *\"\n[subject]\ntable = \"experiments\"\nclock = \"deleted_at\"\n\
         clock_kind = \"timestamptz\"\n[window]\ngrace = \"1d\"\ndeadline = \"2d\"\n",
    )
    .unwrap();
    std::fs::write(
        jobs.join("half-written.toml"),
        "schedule = \"0 3 * * *\"\n[subject\n",
    )
    .unwrap();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (code, out, err) = lethe(&env, &["check"]);
    assert_eq!(code, 2, "strict by default: {out}{err}");
    assert!(err.contains("half-written.toml"), "{err}");

    let (code, out, err) = lethe(&env, &["check", "--keep-going"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.starts_with("3 of 5 job spec(s)"), "{out}");
    assert!(
        out.contains("job deleted-runs"),
        "the valid jobs are checked: {out}"
    );
    for file in ["draft-experiments.toml", "half-written.toml"] {
        assert_eq!(
            err.lines()
                .filter(|l| l.contains("left out") && l.contains(file))
                .count(),
            1,
            "{file} said once: {err}"
        );
    }
    let mut keep: Vec<(&str, &str)> = env.clone();
    keep.push(("LETHE_KEEP_GOING", "true"));
    let (code, out, err) = lethe(&keep, &["run", "--all"]);
    assert_eq!(code, 1, "{out}{err}");
    for job in ["closed-accounts", "deleted-runs", "deleted-snapshots"] {
        assert!(out.lines().any(|l| l.starts_with(job)), "{job} ran: {out}");
    }

    // A hold on the left-out job: what it keeps elsewhere is unknown, so nothing runs.
    on_demo_db(&d, async |pool| {
        sqlx::query(
            "INSERT INTO lethe_holds (job, reason, placed_by) VALUES ('draft-experiments', 'audit', 'legal')",
        )
        .execute(pool)
        .await
        .unwrap();
    });
    let (code, out, err) = lethe(
        &env,
        &["hold", "place", "--job", "deleted-rnus", "--reason", "x"],
    );
    assert_eq!(code, 2, "an unknown job name is a likely typo: {out}{err}");
    assert!(
        err.contains("no job `deleted-rnus`") && err.contains("--force"),
        "{err}"
    );
    let (code, out, err) = lethe(
        &env,
        &[
            "hold",
            "place",
            "--job",
            "deleted-rnus",
            "--reason",
            "x",
            "--force",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");

    let before = files(&d.join("objects"));
    let (code, out, err) = lethe(&keep, &["run", "--all"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("draft-experiments") && err.contains("hold"),
        "{err}"
    );
    assert_eq!(files(&d.join("objects")), before, "nothing deleted");
    std::fs::remove_dir_all(d.parent().unwrap()).unwrap();
}

/// A hold placed while a spec does not load (the `deleted-runs` spec is half-edited, the others
/// run with `--keep-going`): `hold place` still places it (a legal hold never waits for a spec
/// fix) and says what that means; every run stops while it is active, so `closed-accounts`
/// does not take the held run with its account. Once the spec is fixed the hold reaches the
/// held run through the other job. A job name no spec names is refused unless `--force`.
#[test]
fn a_hold_on_a_job_whose_spec_does_not_load_stops_every_run() {
    let (d, env) = demo();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut keep = env.clone();
    keep.push(("LETHE_KEEP_GOING", "true"));
    // Account 10 closed long ago: closed-accounts takes it, run 134 included.
    on_demo_db(&d, async |pool| {
        sqlx::query("UPDATE accounts SET closed_at = '2026-08-01T00:00:00Z' WHERE id = 10")
            .execute(pool)
            .await
            .unwrap();
    });
    let spec = d.join("jobs").join("deleted-runs.toml");
    let good = std::fs::read_to_string(&spec).unwrap();
    std::fs::write(&spec, good.replace("grace = \"7d\"", "grace = \"7 days\"")).unwrap();
    let held = d.join("objects/lethe-artifacts/runs/134/output.txt");
    assert!(held.exists());

    let (code, out, err) = lethe(
        &keep,
        &[
            "hold",
            "place",
            "--subject",
            "deleted-runs:134",
            "--reason",
            "case 7",
            "--by",
            "legal",
        ],
    );
    assert_eq!(code, 0, "placed whatever the specs: {out}{err}");
    assert!(
        err.contains("left out") && err.contains("every run stops"),
        "{err}"
    );
    let before = files(&d.join("objects"));
    let (code, out, err) = lethe(&keep, &["run", "--all"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("deleted-runs") && err.contains("hold"),
        "{err}"
    );
    assert_eq!(files(&d.join("objects")), before, "nothing deleted");

    std::fs::write(&spec, good).unwrap();
    let (code, out, err) = lethe(&env, &["run", "--all"]);
    assert!(code == 0 || code == 1, "{out}{err}");
    assert!(held.exists(), "the held run's objects stay: {out}{err}");
    let run = on_demo_db(&d, async |pool| {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM runs WHERE id = 134")
            .fetch_one(pool)
            .await
            .unwrap()
    });
    assert_eq!(run, 1, "the held run's row stays");
    std::fs::remove_dir_all(d.parent().unwrap()).unwrap();
}

/// A clock column that does not look like time (every deleted run's `deleted_time` reads as
/// 1970: the unit is wrong) stops every job by default; with --keep-going only that job is left
/// out.
#[test]
fn keep_going_leaves_out_a_job_whose_clock_is_not_time() {
    let (d, env) = demo();
    let changed = on_demo_db(&d, async |pool| {
        sqlx::query("UPDATE runs SET deleted_time = 5 WHERE lifecycle_stage = 'deleted'")
            .execute(pool)
            .await
            .unwrap()
            .rows_affected()
    });
    assert!(changed > 1, "{changed}");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (code, out, err) = lethe(&env, &["run", "--all"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("deleted-runs") && err.contains("before 2000"),
        "{err}"
    );
    let (code, out, err) = lethe(&env, &["run", "--all", "--keep-going"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("left out") && err.contains("before 2000"),
        "{err}"
    );
    assert!(!out.lines().any(|l| l.starts_with("deleted-runs")), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("closed-accounts")),
        "{out}"
    );
    std::fs::remove_dir_all(d.parent().unwrap()).unwrap();
}

/// Who ran it: `lethe run --by` is recorded with the run and in each of its audit entries;
/// holds and their release take LETHE_ACTOR when `--by` is not given.
#[test]
fn the_actor_is_recorded_with_runs_holds_and_their_entries() {
    let (d, env) = demo();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut legal = env.clone();
    legal.push(("LETHE_ACTOR", "legal-team"));
    let (code, holds, err) = lethe(&env, &["hold", "list"]);
    assert_eq!(code, 0, "{err}");
    let id = holds
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("the demo's hold: {holds}"))
        .to_string();
    let (code, out, err) = lethe(&legal, &["hold", "release", &id, "--reason", "closed"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = lethe(&legal, &["run", "--all", "--by", "ops-alice"]);
    assert!(code == 0 || code == 1, "{out}{err}");
    let (released_by, actors, entries, by_alice) = on_demo_db(&d, async |pool| {
        let released_by: String =
            sqlx::query_scalar("SELECT released_by FROM lethe_holds WHERE id = $1")
                .bind(id.parse::<i64>().unwrap())
                .fetch_one(pool)
                .await
                .unwrap();
        let actors: Vec<String> = sqlx::query_scalar(
                "SELECT actor FROM lethe_job_runs WHERE id > (SELECT max(id) - 3 FROM lethe_job_runs) ORDER BY id",
            )
            .fetch_all(pool)
            .await
            .unwrap();
        let last_run: i64 = sqlx::query_scalar("SELECT max(id) - 2 FROM lethe_job_runs")
            .fetch_one(pool)
            .await
            .unwrap();
        let (entries, by_alice): (i64, i64) = sqlx::query_as(
            "SELECT count(*), sum(json_extract(detail, '$.by') = 'ops-alice') FROM lethe_audit_log \
                 WHERE run_id >= $1 AND event IN ('purged', 'held', 'failed')",
        )
        .bind(last_run)
        .fetch_one(pool)
        .await
        .unwrap();
        (released_by, actors, entries, by_alice)
    });
    assert_eq!(released_by, "legal-team");
    assert_eq!(
        actors,
        ["ops-alice", "ops-alice", "ops-alice"],
        "one per job"
    );
    assert!(entries > 0, "the released subjects were purged");
    assert_eq!(by_alice, entries, "every entry of the run names its actor");
    std::fs::remove_dir_all(d.parent().unwrap()).unwrap();
}
