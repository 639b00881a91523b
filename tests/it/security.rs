//! Issue 31: what lethe shows and accepts, tried as a careless operator and an attacker would.

use std::process::Command;

fn lethe(env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let jobs = std::env::temp_dir().join(crate::helpers::unique("lethe-sec-"));
    std::fs::create_dir_all(&jobs).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lethe"))
        .args(args)
        .env_remove("DATABASE_URL")
        .env("LETHE_JOBS_DIR", &jobs)
        .env("LETHE_LOG", "debug")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&jobs);
    crate::helpers::outcome(out)
}

/// The PostgreSQL server the tests use, as `host:port`.
fn server() -> String {
    let admin = crate::helpers::admin_url();
    let rest = admin.split_once("://").unwrap().1;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap().to_string()
}

/// Generated passwords hold `/`, `?`, `@`, `#` and `%`, and a parameter name may be
/// percent-encoded (`pass%77ord` is `password` to the driver): whatever lethe says about such a
/// URL (an error naming it, `check`'s settings, its logs at debug level), no part of the secret
/// appears in its output. An unknown parameter is refused by its name, never its value, and
/// nothing connects.
#[test]
fn a_secret_in_database_url_is_never_printed() {
    let host = server();
    let urls = [
        (
            format!("postgres://nobody:Sx9/Q1zz@{host}/x"),
            ["Sx9", "Q1zz"],
        ),
        (
            format!("postgres://nobody:Sx9?Q2zz@{host}/x"),
            ["Sx9", "Q2zz"],
        ),
        (
            format!("postgres://nobody:Sx9@Q3zz@{host}/x"),
            ["Sx9", "Q3zz"],
        ),
        (
            format!("postgres://nobody:Sx9#Q4zz@{host}/x"),
            ["Sx9", "Q4zz"],
        ),
        (
            format!("postgres://nobody:Sx9%Q5zz@{host}/x"),
            ["Sx9", "Q5zz"],
        ),
        (
            format!("postgres://nobody:12/Q6zz@{host}/x"),
            ["12/", "Q6zz"],
        ),
        (
            format!("postgres://{host}/x?user=nobody&pass%77ord=Sx9Q7zz"),
            ["Sx9", "Q7zz"],
        ),
        (
            format!("postgres://{host}/x?user=nobody&sslpassword=Sx9Q8zz"),
            ["Sx9", "Q8zz"],
        ),
        // Encoded as it should be: this one connects (the test server trusts local users).
        (
            format!("postgres://postgres:Sx9%2FQ9zz@{host}/postgres"),
            ["Sx9", "Q9zz"],
        ),
    ];
    for (url, parts) in &urls {
        // The daemon only where the URL is refused before anything connects (it waits for a
        // server that does not answer, as it should).
        let daemon = url.contains("sslpassword");
        let commands = [&["hold", "list"][..], &["check"][..], &["daemon"][..]];
        for args in commands.iter().filter(|a| daemon || a[0] != "daemon") {
            let (code, out, err) = lethe(
                &[("DATABASE_URL", url), ("LETHE_LISTEN", "127.0.0.1:0")],
                args,
            );
            assert_ne!(code, 0, "{args:?} with {url}: {out}{err}");
            for part in parts {
                assert!(
                    !out.contains(part) && !err.contains(part),
                    "`{part}` of the secret in {url} was printed by {args:?}:\n{out}\n{err}"
                );
            }
        }
    }
    let (code, _, err) = lethe(
        &[(
            "DATABASE_URL",
            &format!("postgres://{host}/x?sslpassword=Sx9Q8zz"),
        )],
        &["hold", "list"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("`sslpassword`") && err.contains("does not know"),
        "{err}"
    );
}

/// The daemon checks DATABASE_URL as every command does: a mistyped SQLite path is refused,
/// never created empty; a SQLite URL with options that turn off locking is refused.
#[test]
fn the_daemon_never_creates_a_database_and_sqlite_options_are_refused() {
    let dir = std::env::temp_dir().join(crate::helpers::unique("lethe-sec-"));
    std::fs::create_dir_all(&dir).unwrap();
    let typo = dir.join("platfrom.db");
    let url = format!("sqlite://{}", typo.display());
    let (code, out, err) = lethe(
        &[("DATABASE_URL", &url), ("LETHE_LISTEN", "127.0.0.1:0")],
        &["daemon"],
    );
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("does not exist"), "{err}");
    assert!(!typo.exists(), "the daemon created {}", typo.display());

    let real = dir.join("platform.db");
    std::fs::write(&real, b"").unwrap();
    for option in ["vfs=unix-none", "immutable=1", "mode=memory", "nolock=1"] {
        let url = format!("sqlite://{}?{option}", real.display());
        for args in [&["hold", "list"][..], &["daemon"][..]] {
            let (code, out, err) = lethe(
                &[("DATABASE_URL", &url), ("LETHE_LISTEN", "127.0.0.1:0")],
                args,
            );
            assert_eq!(code, 2, "{option} {args:?}: {out}{err}");
            assert!(err.contains("without parameters"), "{err}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `lethe report --account 2` answers a data-subject request: every format and every part of it
/// (rows, summary, holds, runs, the lists of subjects past their deadline) is about account 2
/// alone. Another account's held subject, its hold's reason and who placed it appear nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_subject_report_shows_only_that_account() {
    use crate::helpers::{DAY, World};
    let w = World::new(lethe::storage::Versioning::Unversioned).await;
    for a in 1..=3 {
        w.account(a, "free", None).await;
    }
    w.run_row(11, 1, Some(40 * DAY)).await; // held past its deadline
    w.run_row(31, 3, Some(9 * DAY)).await; // held by a subject hold
    w.run_row(21, 2, Some(9 * DAY)).await; // purged
    let (code, out, err) = w.cli(&[
        "hold",
        "place",
        "--account",
        "1",
        "--reason",
        "lawsuit-about-one",
        "--by",
        "counsel-one",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = w.cli(&[
        "hold",
        "place",
        "--subject",
        "deleted-runs:31",
        "--reason",
        "reason-three",
        "--by",
        "by-three",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = w.cli(&["run", "--job", "deleted-runs"]);
    assert_eq!(code, 0, "{out}{err}");

    let (code, all, err) = w.cli(&["report", "--summary"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        all.contains("lawsuit-about-one") && all.contains("reason-three"),
        "the whole report names every hold: {all}"
    );
    let others = [
        "lawsuit-about-one",
        "counsel-one",
        "reason-three",
        "by-three",
        "deleted-runs:11",
        "deleted-runs:31",
        "account 1",
    ];
    for args in [
        &["report", "--account", "2", "--format", "csv"][..],
        &["report", "--account", "2", "--format", "jsonl"][..],
        &["report", "--account", "2", "--format", "html"][..],
        &["report", "--account", "2", "--summary"][..],
        &["report", "--subject", "deleted-runs:21", "--format", "html"][..],
        &["report", "--subject", "deleted-runs:21", "--summary"][..],
    ] {
        let (code, out, err) = w.cli(args);
        assert_eq!(code, 0, "{args:?}: {err}");
        for other in others {
            assert!(
                !out.contains(other),
                "{args:?} shows `{other}`, which is not account 2's:\n{out}"
            );
        }
        if !args.contains(&"--summary") {
            assert!(
                out.contains("21"),
                "{args:?} shows account 2's purge: {out}"
            );
        }
    }
    w.cleanup().await;
}

/// A SQLite schema can declare a column type that is SQL text (`"TEXT) OR (1=1"`, stored
/// dequoted): put into a cast, it would turn "the children of these subjects" into "every row".
/// Such a type is refused by `check` and `run`, naming the column, and nothing is deleted.
#[test]
fn a_sqlite_column_type_that_is_sql_is_refused() {
    let dir = std::env::temp_dir().join(crate::helpers::unique("lethe-sec-"));
    let (jobs, objects) = (dir.join("jobs"), dir.join("objects"));
    std::fs::create_dir_all(&jobs).unwrap();
    std::fs::create_dir_all(objects.join("lethe-artifacts")).unwrap();
    let db = dir.join("platform.db");
    let url = format!("sqlite://{}", db.display());
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let pool = lethe::db::connect(&url, 1).await.unwrap();
        let lethe::db::Db::Lite(p) = &pool else {
            unreachable!()
        };
        sqlx::raw_sql(
            "CREATE TABLE items (id \"TEXT) OR (1=1\" PRIMARY KEY, deleted_at TEXT);
             CREATE TABLE parts (id INTEGER PRIMARY KEY, item_id TEXT NOT NULL REFERENCES items (id));
             INSERT INTO items VALUES ('gone', '2026-01-01T00:00:00Z'), ('kept', NULL);
             INSERT INTO parts (item_id) VALUES ('gone'), ('kept'), ('kept');",
        )
        .execute(p)
        .await
        .unwrap();
        pool.close().await;
    });
    std::fs::write(
        jobs.join("items.toml"),
        "schedule = \"0 0 3 * * *\"\n[subject]\ntable = \"items\"\nkey = \"id\"\nclock = \"deleted_at\"\n\
         clock_kind = \"timestamptz\"\n[window]\ngrace = \"1d\"\ndeadline = \"30d\"\n\
         [[rows]]\ntable = \"parts\"\ncolumn = \"item_id\"\n",
    )
    .unwrap();
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("LETHE_JOBS_DIR", jobs.to_str().unwrap()),
        (
            "LETHE_OBJECT_STORE",
            &format!("file://{}", objects.display()),
        ),
    ];
    let (code, out, err) = lethe(&env, &["migrate"]);
    assert_eq!(code, 0, "{out}{err}");
    for args in [&["check"][..], &["run", "--all"][..]] {
        let (code, out, err) = lethe(&env, args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(
            err.contains("items.id") && err.contains("not a plain type name"),
            "{err}"
        );
    }
    let left = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let pool = lethe::db::connect(&url, 1).await.unwrap();
        let lethe::db::Db::Lite(p) = &pool else {
            unreachable!()
        };
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM parts")
            .fetch_one(p)
            .await
            .unwrap();
        pool.close().await;
        n
    });
    assert_eq!(left, 3, "nothing deleted");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `lethe demo --dir` takes the directory's name as data: a quote or a space in it changes no
/// SQL and no URL (the tour runs and purges), and a name its file:// URIs could not carry as
/// text (`?`, `#`, `%`) is refused before anything is created.
#[test]
fn the_demo_takes_its_directory_as_data() {
    let base = std::env::temp_dir().join(crate::helpers::unique("lethe-sec-"));
    let dir = base.join("it's a demo");
    let (code, out, err) = lethe(&[], &["demo", "--dir", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(dir.join("platform.db").exists() && dir.join("report.html").exists());
    assert!(
        !out.contains("refused") && !err.contains("refused"),
        "{out}{err}"
    );
    let odd = base.join("a?vfs=unix-none");
    let (code, out, err) = lethe(&[], &["demo", "--dir", odd.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("`?`") && !odd.exists(), "{err}");
    std::fs::remove_dir_all(&base).unwrap();
}
