//! Specs and the command line: malformed specs, uncovered foreign keys, missing schema and
//! unknown jobs are refused with an error that names the thing, exit 2, and nothing deleted.

use crate::helpers::{DAY, World};
use lethe::storage::Versioning;

async fn world_with_deletable_run() -> World {
    let w = World::new(Versioning::Unversioned).await;
    w.account(1, "free", None).await;
    w.run_row(1, 1, Some(10 * DAY)).await;
    w
}

async fn assert_nothing_deleted(w: &World) {
    assert_eq!(w.rows_of_run(1).await, 7, "rows were deleted");
    assert_eq!(w.keys("runs/1/").await.len(), 2, "objects were deleted");
    assert_eq!(
        w.count("SELECT count(*) FROM lethe.audit_log WHERE event = 'purged'")
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncovered_foreign_key_is_rejected_naming_table_and_constraint() {
    let w = world_with_deletable_run().await;
    w.sql("CREATE TABLE run_notes (id serial PRIMARY KEY, run_id bigint REFERENCES runs (id), note text);
           INSERT INTO run_notes (run_id, note) VALUES (1, 'keep me')")
        .await;
    for args in [&["check"][..], &["run", "--all"][..], &["plan"][..]] {
        let (code, _, err) = w.cli(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.contains("run_notes") && err.contains("run_notes_run_id_fkey"),
            "{err}"
        );
        assert!(
            err.contains("deleted-runs.toml"),
            "names the spec file: {err}"
        );
    }
    assert_nothing_deleted(&w).await;
    assert_eq!(w.count("SELECT count(*) FROM run_notes").await, 1);
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_specs_name_file_line_and_field_and_delete_nothing() {
    let w = world_with_deletable_run().await;
    let base =
        std::fs::read_to_string(crate::helpers::repo().join("jobs/deleted-runs.toml")).unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "unknown key",
            base.replace("grace = \"7d\"", "grace = \"7d\"\nretention = \"1d\""),
            "retention",
        ),
        (
            "missing unit",
            base.replace("grace = \"7d\"", "grace = \"7\""),
            "no unit",
        ),
        (
            "number for a window",
            base.replace("grace = \"7d\"", "grace = 7"),
            "no unit",
        ),
        (
            "zero window",
            base.replace("grace = \"7d\"", "grace = \"0d\""),
            "zero",
        ),
        (
            "grace after deadline",
            base.replace("grace = \"7d\"", "grace = \"40d\""),
            "shorter than grace",
        ),
        (
            "raw SQL filter",
            base.replace(
                "lifecycle_stage = 'deleted'",
                "lifecycle_stage = 'deleted'; DROP TABLE runs",
            ),
            "filter",
        ),
        (
            "quote in identifier",
            base.replace("table = \"metrics\"", "table = \"metrics\\\"; --\""),
            "identifier",
        ),
        (
            "prefix without placeholder",
            base.replace("runs/{key}/", "runs/"),
            "placeholder",
        ),
        (
            "bad cron",
            base.replace("0 15 3 * * *", "every day"),
            "schedule",
        ),
        (
            "unknown column",
            base.replace("column = \"run_id\"", "column = \"runid\""),
            "runid",
        ),
        (
            "value of the wrong type",
            base.replace(
                "lifecycle_stage = 'deleted'",
                "lifecycle_stage = 'deleted' AND account_id = 'abc'",
            ),
            "abc",
        ),
        (
            "filtered entry cannot cover a foreign key",
            base.replace(
                "table = \"metrics\"\ncolumn = \"run_id\"",
                "table = \"metrics\"\ncolumn = \"run_id\"\nfilter = \"step > 0\"",
            ),
            "metrics_run_id_fkey",
        ),
        (
            "from_row and vary_by together",
            base.replace(
                "deadline = \"30d\"",
                "deadline = \"30d\"\nvary_by = \"name\"\n[window.overrides.x]\ngrace = \"1d\"\ndeadline = \"2d\"\n\
                 [window.from_row]\ntable = \"accounts\"\nlink = \"account_id\"\ncolumn = \"id\"\nunit = \"days\"\ndeadline_after = \"1d\"",
            ),
            "from_row",
        ),
        (
            "from_row retention that is not a whole number",
            base.replace(
                "deadline = \"30d\"",
                "deadline = \"30d\"\n[window.from_row]\ntable = \"accounts\"\nlink = \"account_id\"\n\
                 column = \"plan\"\nunit = \"days\"\ndeadline_after = \"1d\"",
            ),
            "whole number",
        ),
        (
            "from_row unit unknown",
            base.replace(
                "deadline = \"30d\"",
                "deadline = \"30d\"\n[window.from_row]\ntable = \"accounts\"\nlink = \"account_id\"\n\
                 column = \"id\"\nunit = \"fortnights\"\ndeadline_after = \"1d\"",
            ),
            "fortnights",
        ),
        (
            "from_row table unknown",
            base.replace(
                "deadline = \"30d\"",
                "deadline = \"30d\"\n[window.from_row]\ntable = \"projects\"\nlink = \"account_id\"\n\
                 column = \"retention_days\"\nunit = \"days\"\ndeadline_after = \"1d\"",
            ),
            "projects",
        ),
        (
            "vary_on without vary_by",
            base.replace(
                "deadline = \"30d\"",
                "deadline = \"30d\"\n[window.vary_on]\ntable = \"accounts\"\nlink = \"account_id\"",
            ),
            "vary_on",
        ),
        (
            "vary_by column missing on the related row",
            base.replace(
                "deadline = \"30d\"",
                "deadline = \"30d\"\nvary_by = \"tier\"\n[window.vary_on]\ntable = \"accounts\"\nlink = \"account_id\"\n\
                 [window.overrides.gold]\ngrace = \"1d\"\ndeadline = \"2d\"",
            ),
            "tier",
        ),
    ];
    for (what, text, needle) in cases {
        w.use_specs(&crate::helpers::repo().join("jobs"), &["deleted-runs.toml"]);
        w.write_spec("deleted-runs.toml", &text);
        let (code, _, err) = w.cli(&["run", "--all"]);
        assert_eq!(code, 2, "{what}: {err}");
        assert!(
            err.contains("deleted-runs.toml"),
            "{what}: names the file: {err}"
        );
        assert!(
            err.contains("line") || err.contains(".toml:"),
            "{what}: names the line: {err}"
        );
        assert!(
            err.contains(needle),
            "{what}: names the field ({needle}): {err}"
        );
    }
    assert_nothing_deleted(&w).await;
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_schema_unknown_job_and_missing_bucket_are_configuration_errors() {
    let w = World::bare(Versioning::Unversioned).await;
    w.use_specs(&crate::helpers::repo().join("jobs"), &[]);
    let schema = std::fs::read_to_string(
        crate::helpers::repo().join("jobs/reference/training-platform.sql"),
    )
    .unwrap();
    w.sql(&schema).await;
    let (code, _, err) = w.cli(&["run", "--all"]);
    assert_eq!(code, 2);
    assert!(err.contains("lethe migrate"), "{err}");
    let (code, _, err) = w.cli(&["migrate"]);
    assert_eq!(code, 0, "{err}");

    w.account(1, "free", None).await;
    w.run_row(1, 1, Some(10 * DAY)).await;
    let (code, _, err) = w.cli(&["run", "--job", "no-such-job"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("no-such-job") && err.contains("deleted-runs"),
        "{err}"
    );

    let original = std::fs::read_to_string(w.jobs_dir.join("deleted-runs.toml")).unwrap();
    std::fs::write(
        w.jobs_dir.join("deleted-runs.toml"),
        original.replace(&w.bucket, "no-such-bucket-zz"),
    )
    .unwrap();
    let (code, _, err) = w.cli(&["run", "--all"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no-such-bucket-zz"), "{err}");
    assert_nothing_deleted(&w).await;
    // The bucket a URI column must point into is checked the same way.
    std::fs::write(
        w.jobs_dir.join("deleted-runs.toml"),
        original.replace(
            &format!(
                "uri_column = \"artifact_uri\"\nuri_within = \"s3://{}/\"\n",
                w.bucket
            ),
            "uri_column = \"artifact_uri\"\nuri_within = \"s3://no-such-bucket-yy/\"\n",
        ),
    )
    .unwrap();
    let (code, _, err) = w.cli(&["run", "--all"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("no-such-bucket-yy") && err.contains("deleted-runs.toml:"),
        "{err}"
    );
    assert_nothing_deleted(&w).await;

    // Migrations are reversible.
    let (code, _, err) = w.cli(&["migrate", "--down", "--yes"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(w.count("SELECT count(*) FROM pg_namespace WHERE nspname = 'lethe' AND EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = 'lethe' AND tablename = 'audit_log')").await, 0);
    let (code, _, err) = w.cli(&["migrate"]);
    assert_eq!(code, 0, "{err}");
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_counts_eligible_held_waiting_and_overdue() {
    let w = World::new(Versioning::Unversioned).await;
    w.account(1, "free", None).await;
    w.run_row(1, 1, Some(10 * DAY)).await; // eligible
    w.run_row(2, 1, Some(40 * DAY)).await; // overdue
    w.run_row(3, 1, Some(DAY)).await; // waiting
    w.run_row(4, 1, Some(10 * DAY)).await; // held
    w.run_row(5, 1, Some(-2 * DAY)).await; // a clock two days ahead: waits, counted apart
    w.hold(&["--subject", "deleted-runs:4"]).await;
    let (code, out, err) = w.cli(&["plan", "--job", "deleted-runs"]);
    assert_eq!(code, 0, "{err}");
    let cols: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        cols,
        ["deleted-runs", "2", "1", "2", "1", "1", "0"],
        "{out}"
    );
    let (code, out, _) = w.cli(&["plan", "--job", "deleted-runs", "--format", "jsonl"]);
    assert_eq!(code, 0);
    let statuses: Vec<String> = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| {
            format!(
                "{}:{}",
                v["key"].as_str().unwrap(),
                v["status"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            "2:overdue",
            "1:eligible",
            "4:held",
            "3:waiting",
            "5:future_clock"
        ]
    );
    assert_eq!(w.rows_of_run(1).await, 7, "plan deletes nothing");
    w.cleanup().await;
}
