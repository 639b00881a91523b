//! Clocks: eligibility is judged by the database's clock only; the time zones of the process and
//! of the database session (zones with DST changes) change nothing that is purged. lethe's own
//! process clock skewed by hours or weeks (libfaketime, from Debian) is a witness that one of
//! the two clocks jumped: a destructive run refuses with exit 4 and deletes nothing.
//! Objects are in a local directory here: S3 request signing rightly fails with a skewed clock.

use crate::helpers::{DAY, World, items_world};

const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
const GRACE: i64 = 7 * DAY;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skewed_process_clock_or_odd_time_zones_change_nothing_that_is_purged() {
    assert!(
        std::path::Path::new(FAKETIME).exists(),
        "libfaketime is not installed (scripts/test.sh installs Debian's libfaketime)"
    );
    let cases: [(&str, &[(&str, &str)]); 6] = [
        ("+3 hours", &[("FAKETIME", "+3h")]),
        ("+14 days", &[("FAKETIME", "+14d")]),
        ("-14 days", &[("FAKETIME", "-14d")]),
        (
            "-6 hours, New York",
            &[("FAKETIME", "-6h"), ("TZ", "America/New_York")],
        ),
        (
            "New York",
            &[("FAKETIME", "+0"), ("TZ", "America/New_York")],
        ),
        (
            "Lord Howe",
            &[("FAKETIME", "+0"), ("TZ", "Australia/Lord_Howe")],
        ),
    ];
    for (what, env) in cases {
        let skewed = env.iter().any(|(k, v)| *k == "FAKETIME" && *v != "+0");
        let w = World::local().await;
        w.account(1, "free", None).await;
        // One minute either side of the end of the grace window, by the database's clock.
        w.run_row(1, 1, Some(GRACE + 60)).await;
        w.run_row(2, 1, Some(GRACE - 60)).await;
        w.run_row(3, 1, None).await;
        // The database session in a zone with DST changes too.
        let url = format!("{}?options=-c%20TimeZone%3DEurope%2FBerlin", w.url);
        let mut env: Vec<(&str, &str)> = env.to_vec();
        env.extend([
            ("LD_PRELOAD", FAKETIME),
            ("FAKETIME_DONT_RESET", "1"),
            ("DATABASE_URL", url.as_str()),
        ]);
        let (code, out, err) = w.cli_env(&["run", "--job", "deleted-runs"], &env);
        if skewed {
            assert_eq!(code, 4, "{what}: the clocks disagree: {out}\n{err}");
            assert!(err.contains("the host clock"), "{what}: {err}");
            for id in 1..=3 {
                assert_eq!(w.rows_of_run(id).await, 7, "{what}: nothing deleted");
            }
            assert_eq!(w.keys("runs/1/").await.len(), 2, "{what}: nothing deleted");
            w.cleanup().await;
            continue;
        }
        assert_eq!(code, 0, "{what}: {out}\n{err}");
        assert_eq!(
            w.rows_of_run(1).await,
            0,
            "{what}: past grace by the database clock"
        );
        assert_eq!(
            w.rows_of_run(2).await,
            7,
            "{what}: still in grace by the database clock"
        );
        assert_eq!(w.rows_of_run(3).await, 7, "{what}: never deleted");
        assert!(w.keys("runs/1/").await.is_empty(), "{what}");
        assert_eq!(w.keys("runs/2/").await.len(), 2, "{what}");
        // The times lethe recorded are the database's, not the skewed process clock's.
        let off: f64 = sqlx::query_scalar(
            "SELECT abs(extract(epoch FROM now() - (detail->>'eligible_at')::timestamptz) - 60)::float8
             FROM lethe.audit_log WHERE event = 'purged'",
        )
        .fetch_one(&w.pool)
        .await
        .unwrap();
        assert!(
            off < 120.0,
            "{what}: eligible_at is {off} s off the database clock"
        );
        w.cleanup().await;
    }
}

/// Left unset, the clock guard's forward limit is the shortest grace of the loaded jobs when
/// that is shorter than 14 days: a database clock two days past lethe's last record, with a job
/// whose grace is one day, could make subjects eligible a whole grace early, so the run
/// refuses (exit 4) and deletes nothing. Set explicitly, the operator's limit is used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_no_clock_jump_longer_than_the_shortest_grace_passes() {
    let w = items_world(
        "CREATE TABLE items (id bigint PRIMARY KEY, deleted_at timestamptz);",
        "",
    )
    .await;
    w.sql(
        "INSERT INTO items VALUES (1, now() - interval '3 days');
         INSERT INTO lethe.job_runs (job, started_at, finished_at, status, host)
         VALUES ('items', now() - interval '2 days', now() - interval '2 days', 'ok', 'test')",
    )
    .await;
    let (code, out, err) = w.cli(&["run", "--all"]);
    assert_eq!(code, 4, "{out}\n{err}");
    assert!(err.contains("LETHE_CLOCK_MAX_GAP_SECONDS=86400"), "{err}");
    assert_eq!(
        w.count("SELECT count(*) FROM items").await,
        1,
        "nothing deleted"
    );
    let (code, out, err) = w.cli_env(
        &["run", "--all"],
        &[("LETHE_CLOCK_MAX_GAP_SECONDS", "1209600")],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(w.count("SELECT count(*) FROM items").await, 0);
    w.cleanup().await;
}
