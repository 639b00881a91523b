//! The purge pipeline end to end, against real PostgreSQL and S3: eligibility boundaries, holds,
//! filters, object locations, versioned buckets, idempotence, dry runs, limits, and a seeded world
//! checked table by table and version by version.

use crate::helpers::{DAY, World};
use lethe::pipeline::RunOptions;
use lethe::storage::Versioning;

const GRACE: i64 = 7 * DAY;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subjects_one_second_either_side_of_grace() {
    let w = World::new(Versioning::Unversioned).await;
    w.account(1, "free", None).await;
    w.run_row(100, 1, None).await; // never deleted
    // The clocks are set in one statement right before the run, relative to the database clock.
    // An attempt counts only if the run started within 0.8 s of that statement; on a slow
    // machine a later attempt uses fresh subjects.
    for attempt in 0..5 {
        let (early, late) = (attempt * 10 + 1, attempt * 10 + 2);
        w.run_row(early, 1, None).await;
        w.run_row(late, 1, None).await;
        let t0: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "UPDATE runs SET lifecycle_stage = 'deleted', deleted_time = CASE id
                 WHEN {early} THEN (extract(epoch FROM clock_timestamp() - interval '{} seconds') * 1000)::bigint
                 ELSE (extract(epoch FROM clock_timestamp() - interval '{} seconds') * 1000)::bigint END
             WHERE id IN ({early}, {late}) RETURNING clock_timestamp()",
            GRACE + 1,
            GRACE - 1
        )))
        .fetch_one(&w.pool)
        .await
        .unwrap();
        let s = w.run(&["deleted-runs"], RunOptions::default()).await;
        assert_eq!(s.exit_code(), 0, "{:?}", s.reports);
        let started: chrono::DateTime<chrono::Utc> =
            sqlx::query_scalar("SELECT max(started_at) FROM lethe.job_runs")
                .fetch_one(&w.pool)
                .await
                .unwrap();
        if (started - t0).num_milliseconds() >= 800 {
            continue;
        }
        assert_eq!(
            s.reports[0].purged, 1,
            "only the subject one second past grace"
        );
        assert_eq!(w.rows_of_run(early).await, 0);
        assert!(w.keys(&format!("runs/{early}/")).await.is_empty());
        assert_eq!(
            w.rows_of_run(late).await,
            1 + 3 + 2 + 1,
            "one second before grace ends, nothing goes"
        );
        assert_eq!(w.keys(&format!("runs/{late}/")).await.len(), 2);
        assert_eq!(w.rows_of_run(100).await, 7);
        assert_eq!(w.keys("runs/100/").await.len(), 2);
        assert_eq!(
            w.audit_events("purged").await.last().unwrap(),
            &format!("deleted-runs:{early}")
        );
        // The promise: purged before the deadline, recorded in the work item.
        let met: bool = sqlx::query_scalar(
            "SELECT purged_at <= deadline_at FROM lethe.work_items WHERE subject_key = $1",
        )
        .bind(early.to_string())
        .fetch_one(&w.pool)
        .await
        .unwrap();
        assert!(met);
        w.cleanup().await;
        return;
    }
    panic!(
        "no attempt started its run within 0.8 s of setting the clocks: the machine is too loaded to test a one-second boundary"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_by_account_and_by_subject_win_and_are_recorded_once() {
    let w = World::new(Versioning::Unversioned).await;
    w.account(1, "free", None).await;
    w.account(2, "free", None).await;
    w.run_row(1, 1, Some(10 * DAY)).await;
    w.run_row(2, 1, Some(10 * DAY)).await;
    w.run_row(3, 2, Some(10 * DAY)).await;
    w.snapshot(30, 3, 2, Some(10 * DAY)).await;
    let account_hold = w.hold(&["--account", "2"]).await;
    let subject_hold = w.hold(&["--subject", "deleted-runs:2"]).await;

    let s = w.run(&[], RunOptions::default()).await;
    assert_eq!(s.exit_code(), 0, "{:?}", s.reports);
    assert_eq!(w.rows_of_run(1).await, 0, "the unheld run is purged");
    assert_eq!(w.rows_of_run(2).await, 7, "held by subject");
    assert_eq!(w.keys("runs/2/").await.len(), 2);
    assert_eq!(w.rows_of_run(3).await, 7, "held by account");
    assert_eq!(w.keys("runs/3/").await.len(), 2);
    assert_eq!(
        w.count("SELECT count(*) FROM snapshot_files WHERE snapshot_id = 30")
            .await,
        2,
        "snapshot held by account"
    );
    assert_eq!(w.keys("snaps/30/").await.len(), 1);

    let held: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT job, subject_key, hold_id FROM lethe.audit_log WHERE event = 'held' ORDER BY job, subject_key",
    )
    .fetch_all(&w.pool)
    .await
    .unwrap();
    assert_eq!(
        held,
        vec![
            ("deleted-runs".into(), "2".into(), subject_hold),
            ("deleted-runs".into(), "3".into(), account_hold),
            ("deleted-snapshots".into(), "30".into(), account_hold),
        ]
    );
    // A second run records no new exception for the same hold.
    w.run(&[], RunOptions::default()).await;
    assert_eq!(w.audit_events("held").await.len(), 3);

    // Released: the next run purges.
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
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_excludes_and_uri_column_objects_are_found_without_touching_neighbours() {
    let w = World::new(Versioning::Unversioned).await;
    w.account(1, "free", None).await;
    w.run_row(1, 1, Some(10 * DAY)).await;
    w.run_row(10, 1, None).await;
    w.run_row(11, 1, Some(10 * DAY)).await;
    // Run 11 has a deletion time but is not in the 'deleted' stage: the filter excludes it.
    w.sql("UPDATE runs SET lifecycle_stage = 'active' WHERE id = 11")
        .await;
    let b = w.bucket.clone();
    w.sql(&format!(
        "UPDATE runs SET artifact_uri = 's3://{b}/custom/1' WHERE id = 1"
    ))
    .await;
    w.sql(&format!(
        "UPDATE runs SET artifact_uri = 's3://{b}/custom/10' WHERE id = 10"
    ))
    .await;
    w.put_many(
        [
            "custom/1",
            "custom/1/a",
            "custom/1/b/c",
            "custom/10",
            "custom/10/a",
            "custom/1-x/a",
            "runs/1-x/a",
            "runs/1",
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    let s = w.run(&["deleted-runs"], RunOptions::default()).await;
    assert_eq!(s.exit_code(), 0, "{:?}", s.reports);
    assert_eq!(s.reports[0].purged, 1);
    assert_eq!(
        w.keys("").await,
        vec![
            "custom/1-x/a",
            "custom/10",
            "custom/10/a",
            "runs/1",
            "runs/1-x/a",
            "runs/10/logs/0.txt",
            "runs/10/model.bin",
            "runs/11/logs/0.txt",
            "runs/11/model.bin"
        ],
        "only run 1's directory prefix and its URI (directory and exact object) are purged"
    );
    assert_eq!(w.rows_of_run(11).await, 7);
    assert_eq!(w.rows_of_run(10).await, 7);
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_a_thousand_objects_under_one_prefix() {
    let w = World::new(Versioning::Unversioned).await;
    w.account(1, "free", None).await;
    w.run_row(1, 1, Some(10 * DAY)).await;
    w.run_row(2, 1, None).await;
    w.put_many(
        (0..1_100)
            .map(|i| format!("runs/1/chunks/{i:05}"))
            .collect(),
    )
    .await;
    let s = w.run(&["deleted-runs"], RunOptions::default()).await;
    assert_eq!(s.exit_code(), 0, "{:?}", s.reports);
    assert_eq!(s.reports[0].object_versions_deleted, 1_102);
    assert!(w.keys("runs/1/").await.is_empty());
    assert_eq!(w.keys("runs/2/").await.len(), 2);
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versioned_bucket_loses_every_version_and_delete_marker() {
    let w = World::new(Versioning::Enabled).await;
    w.account(1, "free", None).await;
    w.run_row(1, 1, Some(10 * DAY)).await;
    w.run_row(2, 1, None).await;
    // More versions of one key, and a delete marker on another.
    w.put("runs/1/model.bin").await;
    w.put("runs/1/model.bin").await;
    let marker = lethe::storage::ObjectVersion {
        key: "runs/1/logs/0.txt".into(),
        version_id: None,
        delete_marker: false,
    };
    w.store().delete_batch(&w.bucket, &[marker]).await.unwrap();
    w.put("runs/2/model.bin").await;
    let before = w.versions("runs/1/").await;
    assert_eq!(
        before.len(),
        5,
        "3 versions of model.bin, 1 of logs, 1 delete marker: {before:?}"
    );
    assert_eq!(before.iter().filter(|v| v.delete_marker).count(), 1);

    let s = w.run(&["deleted-runs"], RunOptions::default()).await;
    assert_eq!(s.exit_code(), 0, "{:?}", s.reports);
    assert_eq!(s.reports[0].object_versions_deleted, 4);
    assert_eq!(s.reports[0].delete_markers_deleted, 1);
    assert!(
        w.versions("runs/1/").await.is_empty(),
        "no version and no delete marker is left"
    );
    assert_eq!(
        w.versions("runs/2/").await.len(),
        3,
        "the neighbour keeps every version"
    );
    let route: String = sqlx::query_scalar(
        "SELECT detail->'objects'->'routes'->>0 FROM lethe.audit_log WHERE event = 'purged'",
    )
    .fetch_one(&w.pool)
    .await
    .unwrap();
    assert_eq!(
        route, "versioned",
        "the audit records how the bucket was purged"
    );
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_deletes_nothing_and_a_second_run_is_a_no_op() {
    let w = World::new(Versioning::Unversioned).await;
    w.account(1, "free", None).await;
    w.run_row(1, 1, Some(10 * DAY)).await;
    w.run_row(2, 1, Some(10 * DAY)).await;
    let (code, out, err) = w.cli(&["run", "--all", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("deleted-runs"))
        .unwrap()
        .to_string();
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cols[1], "2", "would purge 2: {out}");
    assert_eq!(cols[6], "4", "4 objects would go: {out}");
    assert_eq!(
        w.rows_of_run(1).await + w.rows_of_run(2).await,
        14,
        "dry run deleted rows"
    );
    assert_eq!(w.keys("runs/").await.len(), 4, "dry run deleted objects");
    assert_eq!(w.count("SELECT count(*) FROM lethe.audit_log").await, 0);
    assert_eq!(w.count("SELECT count(*) FROM lethe.work_items").await, 0);

    let (code, _, err) = w.cli(&["run", "--all"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(w.audit_events("purged").await.len(), 2);
    let (code, out, err) = w.cli(&["run", "--all"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()[..2] == ["deleted-runs", "0"]),
        "{out}"
    );
    assert_eq!(
        w.audit_events("purged").await.len(),
        2,
        "exactly one purged entry per subject"
    );
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_caps_the_blast_radius_and_reports_undone_work() {
    let w = World::new(Versioning::Unversioned).await;
    w.account(1, "free", None).await;
    for id in 1..=5 {
        w.run_row(id, 1, Some(10 * DAY + id)).await;
    }
    let (code, out, _) = w.cli(&["run", "--job", "deleted-runs", "--limit", "2"]);
    assert_eq!(code, 1, "more were eligible than the limit allowed: {out}");
    assert!(out.contains("--limit reached"), "{out}");
    assert_eq!(w.count("SELECT count(*) FROM runs").await, 3);
    let (code, _, _) = w.cli(&["run", "--job", "deleted-runs", "--limit", "3"]);
    assert_eq!(code, 0, "exactly the rest fits the limit");
    assert_eq!(w.count("SELECT count(*) FROM runs").await, 0);
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_account_takes_everything_it_owns_within_its_plan_window() {
    let w = World::new(Versioning::Unversioned).await;
    w.account(1, "free", Some(20 * DAY)).await; // past the 14-day grace
    w.account(2, "enterprise", Some(20 * DAY)).await; // inside the 30-day enterprise grace
    w.account(3, "free", Some(20 * DAY)).await; // owns a run held by a subject hold of another job
    w.account(4, "free", None).await;
    w.run_row(1, 1, None).await;
    w.snapshot(10, 1, 1, None).await;
    w.run_row(2, 2, None).await;
    w.run_row(3, 3, None).await;
    w.run_row(4, 4, Some(DAY)).await;
    w.put_many(vec![
        "accounts/1/export.zip".into(),
        "accounts/2/export.zip".into(),
    ])
    .await;
    let hold = w.hold(&["--subject", "deleted-runs:3"]).await;

    let s = w.run(&["closed-accounts"], RunOptions::default()).await;
    assert_eq!(s.exit_code(), 0, "{:?}", s.reports);
    assert_eq!(s.reports[0].purged, 1);
    assert_eq!(s.reports[0].held, 1);
    assert_eq!(w.count("SELECT count(*) FROM accounts").await, 3);
    assert_eq!(
        w.count("SELECT count(*) FROM accounts WHERE id = 1").await,
        0
    );
    assert_eq!(
        w.count("SELECT count(*) FROM api_keys WHERE account_id = 1")
            .await,
        0
    );
    assert_eq!(w.rows_of_run(1).await, 0);
    assert_eq!(
        w.count("SELECT count(*) FROM snapshots WHERE id = 10")
            .await,
        0
    );
    assert_eq!(
        w.count("SELECT count(*) FROM snapshot_files WHERE snapshot_id = 10")
            .await,
        0
    );
    assert!(w.keys("runs/1/").await.is_empty());
    assert!(w.keys("snaps/10/").await.is_empty());
    assert!(w.keys("accounts/1/").await.is_empty());
    assert_eq!(
        w.keys("accounts/2/").await.len(),
        1,
        "enterprise account is still in its grace window"
    );
    assert_eq!(w.rows_of_run(2).await, 7);
    assert_eq!(
        w.rows_of_run(3).await,
        7,
        "a held run is never deleted as another job's child"
    );
    assert_eq!(w.keys("runs/3/").await.len(), 2, "nor are its objects");
    assert_eq!(
        w.count("SELECT count(*) FROM accounts WHERE id = 3").await,
        1
    );
    let held: i64 = sqlx::query_scalar(
        "SELECT hold_id FROM lethe.audit_log WHERE event = 'held' AND subject_key = '3'",
    )
    .fetch_one(&w.pool)
    .await
    .unwrap();
    assert_eq!(held, hold);
    assert_eq!(w.rows_of_run(4).await, 7);
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_chain_verifies_and_an_edited_entry_is_detected() {
    let w = World::new(Versioning::Unversioned).await;
    w.account(1, "free", None).await;
    for id in 1..=4 {
        w.run_row(id, 1, Some(10 * DAY)).await;
    }
    w.hold(&["--subject", "deleted-runs:4"]).await;
    w.run(&[], RunOptions::default()).await;
    let (code, out, _) = w.cli(&["audit", "verify"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("verified: 5 entries"), "{out}");

    // The database refuses edits outright.
    let refused = sqlx::query("UPDATE lethe.audit_log SET detail = '{}' WHERE seq = 3")
        .execute(&w.pool)
        .await;
    assert!(refused.unwrap_err().to_string().contains("append-only"));
    let refused = sqlx::query("DELETE FROM lethe.audit_log WHERE seq = 5")
        .execute(&w.pool)
        .await;
    assert!(refused.is_err());

    // Someone with the power to disable the trigger edits entry 3: verify names it.
    w.sql(
        "ALTER TABLE lethe.audit_log DISABLE TRIGGER audit_log_no_update_delete;
         UPDATE lethe.audit_log SET detail = jsonb_set(detail, '{rows,metrics}', '0') WHERE seq = 3;",
    )
    .await;
    let (code, out, _) = w.cli(&["audit", "verify"]);
    assert_eq!(code, 1);
    assert!(out.contains("entry 3:"), "{out}");

    // A deleted entry is named too.
    w.sql("DELETE FROM lethe.audit_log WHERE seq >= 3 AND seq < 5")
        .await;
    let (code, out, _) = w.cli(&["audit", "verify"]);
    assert_eq!(code, 1);
    assert!(out.contains("entry 3:"), "{out}");
    w.cleanup().await;
}

/// A world of a few thousand subjects of every kind; every table and every object is checked
/// against each subject's expected fate, computed here independently of lethe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_world_ends_with_exactly_the_expected_rows_and_objects() {
    let w = World::new(Versioning::Unversioned).await;
    let accounts = 40;
    let runs_per_account = 60;
    let mut keys = Vec::new();
    for a in 1..=accounts {
        // Accounts 1-4 closed long ago (purged), 5-6 closed recently (in grace), 7 held.
        let closed = match a {
            1..=4 => Some(100 * DAY),
            5 | 6 => Some(3 * DAY),
            7 => Some(100 * DAY),
            _ => None,
        };
        w.account(a, "free", closed).await;
    }
    let mut seeds = String::new();
    for a in 1..=accounts {
        for r in 0..runs_per_account {
            let id = a * 1000 + r;
            // A third of runs deleted long ago, a sixth recently, the rest active.
            let deleted = match r % 6 {
                0 | 1 => Some(20 * DAY),
                2 => Some(2 * DAY),
                _ => None,
            };
            let (stage, at) = match deleted {
                Some(s) => (
                    "deleted",
                    format!("(extract(epoch from now() - interval '{s} seconds') * 1000)::bigint"),
                ),
                None => ("active", "NULL".into()),
            };
            seeds.push_str(&format!(
                "INSERT INTO runs VALUES ({id}, {a}, 'r', '{stage}', {at}, NULL);
                 INSERT INTO metrics (run_id, key, value, step) VALUES ({id}, 'l', 1, 1), ({id}, 'l', 1, 2);
                 INSERT INTO links (destination_type, destination_id, label) VALUES ('RUN', '{id}', 'x');\n"
            ));
            keys.push(format!("runs/{id}/m"));
            if r % 10 == 0 {
                let snap_deleted = if r % 20 == 0 {
                    "now() - interval '10 days'"
                } else {
                    "NULL"
                };
                let b = &w.bucket;
                seeds.push_str(&format!(
                    "INSERT INTO snapshots VALUES ({id}, {id}, {a}, {snap_deleted}, 's3://{b}/snaps/{id}/');
                     INSERT INTO snapshot_files (snapshot_id, path, size_bytes) VALUES ({id}, 'f', 1);\n"
                ));
                keys.push(format!("snaps/{id}/w"));
            }
        }
    }
    w.sql(&seeds).await;
    w.put_many(keys).await;
    w.hold(&["--account", "7"]).await;

    let s = w.run(&[], RunOptions::default()).await;
    assert_eq!(s.exit_code(), 0, "{:?}", s.reports);

    // Expected fate per run, computed from the seeding rules.
    let mut expect_runs = Vec::new();
    let mut expect_snaps = Vec::new();
    for a in 1..=accounts {
        for r in 0..runs_per_account {
            let id = a * 1000 + r;
            let account_gone = (1..=4).contains(&a);
            let held = a == 7;
            let run_gone = account_gone || (!held && r % 6 <= 1);
            if !run_gone {
                expect_runs.push(id);
            }
            // A snapshot survives if its run does and it was not itself deleted (or is held).
            let snapshot_deleted = r % 20 == 0 && !held;
            if r % 10 == 0 && !run_gone && !snapshot_deleted {
                expect_snaps.push(id);
            }
        }
    }
    let runs: Vec<i64> = sqlx::query_scalar("SELECT id FROM runs ORDER BY id")
        .fetch_all(&w.pool)
        .await
        .unwrap();
    assert_eq!(runs, expect_runs);
    let snaps: Vec<i64> = sqlx::query_scalar("SELECT id FROM snapshots ORDER BY id")
        .fetch_all(&w.pool)
        .await
        .unwrap();
    assert_eq!(snaps, expect_snaps);
    for (table, sql) in [
        ("metrics", "SELECT DISTINCT run_id FROM metrics ORDER BY 1"),
        (
            "links",
            "SELECT DISTINCT destination_id::bigint FROM links ORDER BY 1",
        ),
    ] {
        let ids: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_all(&w.pool)
            .await
            .unwrap();
        assert_eq!(ids, expect_runs, "{table}");
    }
    let files: Vec<i64> = sqlx::query_scalar("SELECT snapshot_id FROM snapshot_files ORDER BY 1")
        .fetch_all(&w.pool)
        .await
        .unwrap();
    assert_eq!(files, expect_snaps);
    let accounts_left: Vec<i64> = sqlx::query_scalar("SELECT id FROM accounts ORDER BY id")
        .fetch_all(&w.pool)
        .await
        .unwrap();
    assert_eq!(accounts_left, (5..=accounts).collect::<Vec<_>>());
    assert_eq!(
        w.count("SELECT count(*) FROM api_keys WHERE account_id <= 4")
            .await,
        0
    );

    let mut expect_keys: Vec<String> = expect_runs
        .iter()
        .map(|id| format!("runs/{id}/m"))
        .collect();
    expect_keys.extend(expect_snaps.iter().map(|id| format!("snaps/{id}/w")));
    expect_keys.sort();
    assert_eq!(
        w.keys("").await,
        expect_keys,
        "every object left is one that must stay, and all of them are there"
    );

    let purged = w
        .count("SELECT count(*) FROM lethe.audit_log WHERE event = 'purged'")
        .await;
    let distinct = w
        .count(
            "SELECT count(DISTINCT (job, subject_key)) FROM lethe.audit_log WHERE event = 'purged'",
        )
        .await;
    assert_eq!(purged, distinct, "exactly one purged entry per subject");
    let (code, out, _) = w.cli(&["audit", "verify"]);
    assert_eq!(code, 0, "{out}");
    w.cleanup().await;
}

/// Range listings against the real server, whose listing order (by path component) differs from
/// S3's (by bytes): every directory of a batch is found, dense or sparse, and nothing else is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_listing_finds_every_directory_on_a_versioned_bucket() {
    range_listing_finds_every_directory(Versioning::Enabled).await;
}

/// The unversioned case is where SeaweedFS's StartAfter skips a directory named by the marker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_listing_finds_every_directory_on_an_unversioned_bucket() {
    range_listing_finds_every_directory(Versioning::Unversioned).await;
}

async fn range_listing_finds_every_directory(versioning: Versioning) {
    use lethe::domain::Location;
    use lethe::pipeline::objects::{self, Buckets};
    use lethe::pipeline::verify;
    let w = World::new(versioning).await;
    let names = ["1", "1-x", "1.5", "10", "100", "2", "a_b", "Z", "1_0"];
    let mut keys = Vec::new();
    for n in names {
        for j in 0..3 {
            keys.push(format!("runs/{n}/f{j}"));
        }
    }
    // Neighbours that belong to nobody in the batches below.
    for k in ["runs/1", "runs/11/f", "runs/1-y/f", "runs/3/f", "runsx/1/f"] {
        keys.push(k.to_string());
    }
    // A dense stretch: 120 more subjects, of which the batch takes every one.
    for i in 200..320 {
        keys.push(format!("runs/{i}/m"));
    }
    w.put_many(keys).await;
    w.put("runs/1-x/f0").await; // a second version (or the same object again, unversioned)
    let extra = u64::from(versioning.keeps_versions());

    let mut batch: Vec<Vec<Location>> = names
        .iter()
        .map(|n| vec![Location::dir(&w.bucket, &format!("runs/{n}/")).unwrap()])
        .collect();
    batch
        .extend((200..320).map(|i| vec![Location::dir(&w.bucket, &format!("runs/{i}/")).unwrap()]));
    let buckets = Buckets::default();
    let tallies = objects::purge(&w.ctx, &buckets, &batch, false, None).await;
    assert!(
        tallies
            .iter()
            .all(|t| t.failed.is_none() && t.denied.is_none()),
        "{tallies:?}"
    );
    assert_eq!(
        tallies[1].versions,
        3 + extra,
        "runs/1-x/ has 3 keys, one with 2 versions if versioned"
    );
    assert_eq!(
        tallies.iter().map(|t| t.versions).sum::<u64>(),
        (names.len() * 3 + 120) as u64 + extra
    );
    assert!(
        verify::verify(&w.ctx, &buckets, &batch)
            .await
            .iter()
            .all(|r| r.is_ok())
    );
    assert_eq!(
        w.keys("").await,
        vec!["runs/1", "runs/1-y/f", "runs/11/f", "runs/3/f", "runsx/1/f"]
    );

    // Verification is not fooled either: a leftover in any directory fails that subject only.
    w.put("runs/1-x/late").await;
    w.put("runs/250/late").await;
    let failed = failed_subjects(&w, &buckets, &batch).await;
    assert_eq!(failed, vec![1, names.len() + 50]);
    w.cleanup().await;
}

/// The subjects verification fails, by index.
pub(crate) async fn failed_subjects(
    w: &World,
    buckets: &lethe::pipeline::objects::Buckets,
    batch: &[Vec<lethe::domain::Location>],
) -> Vec<usize> {
    lethe::pipeline::verify::verify(&w.ctx, buckets, batch)
        .await
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_err())
        .map(|(i, _)| i)
        .collect()
}

/// Verification asks about each location on its own: on the real server it finds a leftover in
/// the first, a middle and the last directory of a batch (and deep inside one), never blames a
/// neighbour before or after them, also when live neighbours interleave the batch densely.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_finds_every_leftover_dense_or_interleaved() {
    use lethe::domain::Location;
    use lethe::pipeline::objects::{self, Buckets};
    for versioning in [Versioning::Unversioned, Versioning::Enabled] {
        let w = World::new(versioning).await;
        let mut keys: Vec<String> = (100..160)
            .flat_map(|n| [format!("runs/{n}/a"), format!("runs/{n}/b/c")])
            .collect();
        keys.extend([
            "runs/099/x".into(),
            "runs/160/x".into(),
            "runs/1000/x".into(),
        ]);
        w.put_many(keys).await;
        let batch: Vec<Vec<Location>> = (100..160)
            .map(|n| vec![Location::dir(&w.bucket, &format!("runs/{n}/")).unwrap()])
            .collect();
        let buckets = Buckets::default();
        let tallies = objects::purge(&w.ctx, &buckets, &batch, false, None).await;
        assert!(
            tallies
                .iter()
                .all(|t| t.failed.is_none() && t.versions == 2),
            "{tallies:?}"
        );
        assert_eq!(
            failed_subjects(&w, &buckets, &batch).await,
            Vec::<usize>::new(),
            "{versioning:?}"
        );
        // Leftovers at both ends of the range, in its middle and deep inside a directory.
        for k in ["runs/100/late", "runs/131/x/y/z", "runs/159/late"] {
            w.put(k).await;
        }
        let leftovers = vec![0, 31, 59];
        assert_eq!(
            failed_subjects(&w, &buckets, &batch).await,
            leftovers,
            "{versioning:?}"
        );
        // 20 live keys beside every directory: a first page of 1,000 keys ends inside the
        // range holding more other keys than a range reads (10 per directory) before it gives up.
        let live: Vec<String> = (100..160)
            .flat_map(|n| (0..20).map(move |j| format!("runs/{n}a/{j:02}")))
            .collect();
        w.put_many(live).await;
        assert_eq!(
            failed_subjects(&w, &buckets, &batch).await,
            leftovers,
            "interleaved, {versioning:?}"
        );
        assert_eq!(
            w.keys("runs/099/").await.len() + w.keys("runs/160/").await.len(),
            2,
            "neighbours before and after the range are untouched"
        );
        w.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_lock_holds_keep_the_whole_subject_and_are_recorded_as_evidence() {
    let mut w = World::new(Versioning::Enabled).await;
    let locked = crate::helpers::unique("it-lock-");
    w.store().create_locked_bucket(&locked).await.unwrap();
    w.bucket = locked;
    w.use_specs(&crate::helpers::repo().join("jobs"), &[]);
    w.account(1, "free", None).await;
    for run in 1..=3 {
        w.run_row(run, 1, Some(10 * DAY)).await;
        w.put(&format!("runs/{run}/model.bin")).await;
    }
    // Run 1: a legal hold on one version of one of its two objects.
    let held_version = w
        .store()
        .put(&w.bucket, "runs/1/weights.bin", b"w".to_vec())
        .await
        .unwrap();
    w.store()
        .set_legal_hold(
            &w.bucket,
            "runs/1/weights.bin",
            held_version.as_deref(),
            true,
        )
        .await
        .unwrap();
    // Run 2: a compliance-mode retention that has not expired.
    let until = chrono::Utc::now() + chrono::Duration::minutes(10);
    w.store()
        .put_retained(&w.bucket, "runs/2/retained.bin", b"r".to_vec(), until)
        .await
        .unwrap();

    let kept1 = w.versions("runs/1/").await.len();
    let kept2 = w.versions("runs/2/").await.len();
    let dry = w
        .run(
            &["deleted-runs"],
            RunOptions {
                dry_run: true,
                ..Default::default()
            },
        )
        .await;
    assert_eq!(dry.reports[0].held, 2, "the dry run sees the storage holds");
    assert_eq!(
        dry.reports[0].storage_held, 2,
        "held by the store, not by lethe"
    );
    assert_eq!(dry.reports[0].would_purge, 1);

    let s = w.run(&["deleted-runs"], RunOptions::default()).await;
    assert_eq!(
        s.exit_code(),
        0,
        "a storage hold is never a failure: {:?}",
        s.reports
    );
    assert_eq!((s.reports[0].purged, s.reports[0].held), (1, 2));
    assert_eq!(
        s.reports[0].storage_held, 2,
        "counted apart (lethe_subjects_storage_held_total)"
    );
    assert_eq!(w.rows_of_run(3).await, 0);
    assert!(w.versions("runs/3/").await.is_empty());
    for run in [1, 2] {
        assert_eq!(w.rows_of_run(run).await, 7, "run {run} keeps every row");
    }
    assert_eq!(
        w.versions("runs/1/").await.len(),
        kept1,
        "nothing of run 1 is deleted, not even its unlocked objects"
    );
    assert_eq!(w.versions("runs/2/").await.len(), kept2);

    let evidence: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT subject_key, detail->>'source', detail->>'evidence' FROM lethe.audit_log \
         WHERE event = 'held' ORDER BY subject_key",
    )
    .fetch_all(&w.pool)
    .await
    .unwrap();
    assert_eq!(evidence.len(), 2, "{evidence:?}");
    assert_eq!(
        (evidence[0].0.as_str(), evidence[0].1.as_str()),
        ("1", "storage")
    );
    assert!(
        evidence[0].2.contains("runs/1/weights.bin") && evidence[0].2.contains("legal hold ON"),
        "{evidence:?}"
    );
    assert!(
        evidence[1].2.contains("runs/2/retained.bin")
            && evidence[1].2.contains("COMPLIANCE retention until"),
        "{evidence:?}"
    );

    // Past their deadline, subjects the store holds are held, not a breach: the plan (and the
    // daemon's lethe_overdue_subjects, which alerts page on) counts them apart.
    w.sql(
        "UPDATE runs SET deleted_time = (extract(epoch from now() - interval '40 days') * 1000)::bigint
          WHERE id IN (1, 2)",
    )
    .await;
    let all = w.ctx.load_jobs().await.unwrap();
    let job = all.iter().find(|j| j.name == "deleted-runs").unwrap();
    let p = lethe::pipeline::plan::counts(&w.ctx, job, &all)
        .await
        .unwrap();
    assert_eq!((p.held, p.overdue, p.eligible), (2, 0, 0), "{p:?}");
    assert_eq!(
        p.next_deadline_at, None,
        "no unheld subject is waiting: {p:?}"
    );
    let (code, out, err) = w.cli(&["plan", "--job", "deleted-runs", "--format", "jsonl"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{out}");
    for l in &lines {
        assert_eq!(
            (&l["status"], &l["held_by_storage"], &l["hold_id"]),
            (&"held".into(), &true.into(), &serde_json::Value::Null),
            "{out}"
        );
    }

    let (code, out, err) = w.cli(&["report", "--summary", "--job", "deleted-runs"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("held past deadline deleted-runs:1 ")
            && out.contains("by the object store (S3 Object Lock)")
            && !out.contains("hold 0"),
        "{out}"
    );

    // The legal hold is lifted: the next run purges run 1 whole; run 2 stays retained.
    w.store()
        .set_legal_hold(
            &w.bucket,
            "runs/1/weights.bin",
            held_version.as_deref(),
            false,
        )
        .await
        .unwrap();
    let s = w.run(&["deleted-runs"], RunOptions::default()).await;
    assert_eq!(
        (s.reports[0].purged, s.reports[0].held),
        (1, 1),
        "{:?}",
        s.reports
    );
    assert_eq!(w.rows_of_run(1).await, 0);
    assert!(w.versions("runs/1/").await.is_empty());
    assert_eq!(w.rows_of_run(2).await, 7);
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versioning_suspended_bucket_loses_old_versions_and_null_versions() {
    let w = World::new(Versioning::Enabled).await;
    w.account(1, "free", None).await;
    w.run_row(1, 1, Some(10 * DAY)).await;
    w.run_row(2, 1, None).await;
    // Versions written while versioning was on, then null versions after it was suspended.
    w.put("runs/1/model.bin").await;
    w.put("runs/1/model.bin").await;
    w.put("runs/2/model.bin").await;
    w.store()
        .create_bucket(&w.bucket, Versioning::Suspended)
        .await
        .unwrap();
    assert_eq!(
        w.store().versioning(&w.bucket).await.unwrap(),
        Versioning::Suspended
    );
    w.put("runs/1/model.bin").await;
    w.put("runs/1/notes.txt").await;
    let neighbour = w.versions("runs/2/").await;
    let before = w.versions("runs/1/").await;
    assert!(
        before.len() >= 4,
        "two old versions and the null versions: {before:?}"
    );
    assert!(
        before
            .iter()
            .any(|v| v.version_id.as_deref() == Some("null")),
        "{before:?}"
    );

    let s = w.run(&["deleted-runs"], RunOptions::default()).await;
    assert_eq!(s.exit_code(), 0, "{:?}", s.reports);
    assert!(
        w.versions("runs/1/").await.is_empty(),
        "no old version and no null version is left"
    );
    assert_eq!(
        w.versions("runs/2/").await,
        neighbour,
        "the neighbour is kept"
    );
    let route: String = sqlx::query_scalar(
        "SELECT detail->'objects'->'routes'->>0 FROM lethe.audit_log WHERE event = 'purged'",
    )
    .fetch_one(&w.pool)
    .await
    .unwrap();
    assert_eq!(route, "versioning-suspended");
    w.cleanup().await;
}

/// Rows are counted per subject and then deleted in the same transaction; when the two
/// disagree (here a trigger keeps some rows, as a concurrent writer could add some), the delete
/// is rolled back to a savepoint and redone answering its own counts, and a subject whose
/// rows cannot all go fails closed: nothing of its rows is committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_that_change_between_count_and_delete_never_commit_a_partial_purge() {
    let w = World::new(Versioning::Unversioned).await;
    w.account(1, "free", None).await;
    w.run_row(1, 1, Some(10 * DAY)).await;
    w.run_row(2, 1, Some(10 * DAY)).await;
    w.sql(
        "CREATE FUNCTION keep_step_two() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF OLD.run_id = 2 AND OLD.step = 2 THEN RETURN NULL; END IF; RETURN OLD; END $$;
         CREATE TRIGGER keep_step_two BEFORE DELETE ON metrics FOR EACH ROW EXECUTE FUNCTION keep_step_two();",
    )
    .await;
    let (code, out, err) = w.cli_env(
        &["run", "--job", "deleted-runs"],
        &[("LETHE_LOG", "lethe=info")],
    );
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains("rows changed between count and delete"),
        "the per-subject fallback ran: {err}"
    );
    assert_eq!(w.rows_of_run(1).await, 0, "the other subject is purged");
    assert_eq!(
        w.rows_of_run(2).await,
        7,
        "not one row of the subject whose rows would not all go"
    );
    let failed = w.audit_events("failed").await;
    assert_eq!(failed, ["deleted-runs:2"]);
    w.cleanup().await;
}

/// A platform session holding a subject's row does not stall the purge: after
/// `LETHE_LOCK_TIMEOUT_SECONDS` that subject fails with its rows intact, the others are
/// purged, and the next run, once the lock is gone, converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_competing_row_lock_times_out_that_subject_only_and_the_next_run_converges() {
    let w = World::new(Versioning::Unversioned).await;
    w.account(1, "free", None).await;
    for id in 1..=3 {
        w.run_row(id, 1, Some(10 * DAY)).await;
    }
    let mut other = w.pool.begin().await.unwrap();
    sqlx::query("SELECT id FROM runs WHERE id = 2 FOR UPDATE")
        .execute(&mut *other)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let (code, out, err) = w.cli_env(
        &["run", "--job", "deleted-runs"],
        &[("LETHE_LOCK_TIMEOUT_SECONDS", "1")],
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "the run did not wait for the lock indefinitely"
    );
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains("lock timeout"), "{err}");
    assert_eq!(w.rows_of_run(1).await, 0);
    assert_eq!(w.rows_of_run(3).await, 0);
    assert_eq!(
        w.rows_of_run(2).await,
        7,
        "the locked subject keeps its rows"
    );
    assert_eq!(w.audit_events("failed").await, ["deleted-runs:2"]);
    other.rollback().await.unwrap();

    let (code, out, err) = w.cli(&["run", "--job", "deleted-runs"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(w.rows_of_run(2).await, 0);
    assert_eq!(w.audit_events("purged").await.len(), 3);
    w.cleanup().await;
}

/// Subjects with no objects skip the hold and eligibility check before the object step: their
/// row transaction makes both, under lock. A held one keeps its rows and is recorded once; one
/// in grace is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_only_subjects_are_held_and_kept_by_the_row_transaction() {
    let w = World::new(Versioning::Unversioned).await;
    w.use_specs(&crate::helpers::repo().join("bench/jobs-rows"), &[]);
    w.account(1, "free", None).await;
    w.run_row(1, 1, Some(10 * DAY)).await;
    w.run_row(2, 1, Some(10 * DAY)).await;
    w.run_row(3, 1, Some(DAY)).await;
    let hold = w.hold(&["--subject", "deleted-runs:1"]).await;
    for _ in 0..2 {
        let s = w.run(&["deleted-runs"], RunOptions::default()).await;
        assert_eq!(s.exit_code(), 0, "{:?}", s.reports);
    }
    assert_eq!(w.rows_of_run(1).await, 7, "held");
    assert_eq!(w.rows_of_run(2).await, 0);
    assert_eq!(w.rows_of_run(3).await, 7, "in grace");
    assert_eq!(
        w.audit_events("held").await,
        ["deleted-runs:1"],
        "recorded once"
    );
    let held: i64 = sqlx::query_scalar("SELECT hold_id FROM lethe.audit_log WHERE event = 'held'")
        .fetch_one(&w.pool)
        .await
        .unwrap();
    assert_eq!(held, hold);
    assert_eq!(w.audit_events("purged").await, ["deleted-runs:2"]);
    w.cleanup().await;
}
