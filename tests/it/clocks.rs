//! Clocks: eligibility is judged by the database's clock only, so lethe's own process clock
//! skewed by hours or weeks (libfaketime, from Debian) changes nothing that is purged, nor do
//! the time zones of the process and of the database session (zones with DST changes).
//! Objects are in a local directory here: S3 request signing rightly fails with a skewed clock.

use crate::helpers::{DAY, World};

const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
const GRACE: i64 = 7 * DAY;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skewed_process_clock_or_odd_time_zones_change_nothing_that_is_purged() {
    assert!(
        std::path::Path::new(FAKETIME).exists(),
        "libfaketime is not installed (scripts/test.sh installs Debian's libfaketime)"
    );
    let cases: [(&str, &[(&str, &str)]); 5] = [
        ("+3 hours", &[("FAKETIME", "+3h")]),
        ("+14 days", &[("FAKETIME", "+14d")]),
        ("-14 days", &[("FAKETIME", "-14d")]),
        (
            "-6 hours, New York",
            &[("FAKETIME", "-6h"), ("TZ", "America/New_York")],
        ),
        (
            "+8 days, Lord Howe",
            &[("FAKETIME", "+8d"), ("TZ", "Australia/Lord_Howe")],
        ),
    ];
    for (what, env) in cases {
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
