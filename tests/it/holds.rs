//! Holds reach everything they name (issue 30): an account hold covers a subject of any job
//! whose rows include the account's rows, found along the job's graph (a row that is another
//! job's subject, with that job's owner column), not only through the subject table's own owner.

use crate::helpers::{DAY, World};
use lethe::storage::Versioning;

/// An experiment job has no owner column; its runs do (another job's subject, owned by a user).
/// A hold on user 7 keeps the experiment holding user 7's run, whole; an experiment of user 8
/// alone is purged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_hold_reaches_a_job_without_an_owner_through_its_rows() {
    let w = World::bare(Versioning::Unversioned).await;
    w.sql(
        "CREATE TABLE experiments (id bigint PRIMARY KEY, deleted_at timestamptz);
         CREATE TABLE runs (id bigint PRIMARY KEY, experiment_id bigint NOT NULL REFERENCES experiments,
             user_id text NOT NULL, deleted_at timestamptz);",
    )
    .await;
    lethe::db::migrator().run(&w.pool).await.unwrap();
    let window = "[window]\ngrace = \"1d\"\ndeadline = \"30d\"\n";
    w.write_spec(
        "deleted-experiments.toml",
        &format!(
            "schedule = \"0 0 3 * * *\"\n\n[subject]\ntable = \"experiments\"\nclock = \"deleted_at\"\n\
             clock_kind = \"timestamptz\"\n\n{window}\n[[rows]]\ntable = \"runs\"\ncolumn = \"experiment_id\"\n"
        ),
    );
    w.write_spec(
        "deleted-runs.toml",
        &format!(
            "schedule = \"0 0 3 * * *\"\n\n[subject]\ntable = \"runs\"\nowner = \"user_id\"\n\
             clock = \"deleted_at\"\nclock_kind = \"timestamptz\"\n\n{window}"
        ),
    );
    w.sql(&format!(
        "INSERT INTO experiments VALUES (1, now() - interval '{d} seconds'), (2, now() - interval '{d} seconds');
         INSERT INTO runs VALUES (10, 1, '7', NULL), (11, 1, '8', NULL), (20, 2, '8', NULL);",
        d = 10 * DAY
    ))
    .await;
    let (code, out, err) = w.cli(&[
        "hold",
        "place",
        "--account",
        "7",
        "--reason",
        "case 7",
        "--by",
        "legal",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("job deleted-experiments: 1 row(s) of experiments owned by account 7, or holding its rows"),
        "what the hold covers is said, the experiment included: {err}"
    );
    let hold: i64 = out.trim().parse().unwrap();
    let (code, out, err) = w.cli(&["run", "--all"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        w.count("SELECT count(*) FROM experiments WHERE id = 1")
            .await,
        1,
        "the experiment holding the held user's run is kept"
    );
    assert_eq!(
        w.count("SELECT count(*) FROM runs WHERE experiment_id = 1")
            .await,
        2,
        "whole"
    );
    assert_eq!(
        w.count(&format!(
            "SELECT count(*) FROM lethe.audit_log WHERE event = 'held' AND job = 'deleted-experiments' \
             AND subject_key = '1' AND hold_id = {hold}"
        ))
        .await,
        1,
        "the exception names the hold"
    );
    assert_eq!(
        w.count("SELECT count(*) FROM experiments WHERE id = 2")
            .await,
        0,
        "the other user's experiment is purged"
    );
    w.cleanup().await;
}

/// Issue 31, reproduced on SQLite: a plain SQL UPDATE that lifts a legal hold (setting
/// `released_at` and `released_by`) wrote no `hold_released` entry, `audit verify` passed, and the
/// next run purged what the hold covered. Now verify names the hold, every run refuses (exit 5)
/// and deletes nothing, until an operator records what they found (`hold confirm`, audited).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_lifted_by_plain_sql_stops_every_run_until_confirmed() {
    use crate::behaviour::{LiteWorld, Platform};
    let w = LiteWorld::new().await;
    w.account(1, "free", None).await;
    w.run_row(1, 1, Some(10 * DAY)).await;
    let id = w.hold(&["--account", "1"]);
    w.sql(&format!(
        "UPDATE lethe_holds SET released_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), \
         released_by = 'mallory', release_reason = 'quietly' WHERE id = {id}"
    ))
    .await;
    let (code, out, err) = w.cli(&["audit", "verify"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("holds BROKEN")
            && out.contains(&format!("hold {id}"))
            && out.contains("released outside lethe"),
        "{out}"
    );
    let (code, out, err) = w.cli(&["run", "--job", "deleted-runs"]);
    assert_eq!(code, 5, "{out}{err}");
    assert!(err.contains("lethe hold confirm"), "{err}");
    assert_eq!(w.rows_of_run(1).await, 7, "nothing deleted");
    assert!(!w.keys("runs/1/").await.is_empty(), "nothing deleted");

    let (code, out, err) = w.cli(&[
        "hold",
        "confirm",
        &id.to_string(),
        "--by",
        "ops",
        "--reason",
        "legal released it by mail",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        w.count("SELECT count(*) FROM lethe_audit_log WHERE event = 'hold_confirmed'")
            .await,
        1,
        "the confirmation is in the chain"
    );
    let (code, out, err) = w.cli(&["audit", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = w.cli(&["run", "--job", "deleted-runs"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        w.rows_of_run(1).await,
        0,
        "purged once the release is confirmed"
    );
    w.finish().await;
}

/// On PostgreSQL: a hold's reason and author rewritten in the table leave the report's reason and
/// author as the chain recorded them (and fail `audit verify`, though the hold still holds); a
/// hold narrowed outside lethe (its subject changed) stops every run; a hold inserted by another
/// tool's SQL is honoured and recorded in the chain by the next run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chain_is_the_record_of_every_hold() {
    let w = World::new(Versioning::Unversioned).await;
    w.account(1, "free", None).await;
    for id in 1..=3 {
        w.run_row(id, 1, Some(10 * DAY)).await;
    }
    let (code, out, err) = w.cli(&[
        "hold",
        "place",
        "--subject",
        "deleted-runs:2",
        "--reason",
        "case-A",
        "--by",
        "legal-a",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let id: i64 = out.trim().parse().unwrap();
    w.sql(&format!(
        "UPDATE lethe.holds SET reason = 'nothing to see', placed_by = 'mallory' WHERE id = {id}"
    ))
    .await;
    // Another tool's hold, by plain SQL.
    w.sql(
        "INSERT INTO lethe.holds (job, subject_key, reason, placed_by) \
         VALUES ('deleted-runs', '3', 'case-B', 'other-tool')",
    )
    .await;
    let (code, out, err) = w.cli(&["run", "--job", "deleted-runs"]);
    assert_eq!(
        code, 0,
        "a rewritten reason is no reason to stop: {out}{err}"
    );
    assert_eq!(w.rows_of_run(1).await, 0);
    assert!(
        w.rows_of_run(2).await > 0 && w.rows_of_run(3).await > 0,
        "both holds hold"
    );
    assert_eq!(
        w.count(
            "SELECT count(*) FROM lethe.audit_log WHERE event = 'hold_placed' \
             AND detail->>'adopted' = 'true' AND detail->>'reason' = 'case-B'"
        )
        .await,
        1,
        "the other tool's hold is recorded"
    );
    let (code, csv, err) = w.cli(&["report", "--subject", "deleted-runs:2"]);
    assert_eq!(code, 0, "{err}");
    assert!(csv.contains("case-A") && csv.contains("legal-a"), "{csv}");
    assert!(
        !csv.contains("nothing to see") && !csv.contains("mallory"),
        "{csv}"
    );
    let (code, out, _) = w.cli(&["audit", "verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("reason or author was changed"), "{out}");

    // Narrowed: the hold now names a subject that does not exist.
    w.sql(&format!(
        "UPDATE lethe.holds SET subject_key = '999' WHERE id = {id}"
    ))
    .await;
    let (code, out, err) = w.cli(&["run", "--job", "deleted-runs"]);
    assert_eq!(code, 5, "{out}{err}");
    assert!(err.contains("scope was changed outside lethe"), "{err}");
    assert!(w.rows_of_run(2).await > 0, "the held run is kept");
    w.cleanup().await;
}
