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
