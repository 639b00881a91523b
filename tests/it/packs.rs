//! The two policy packs beside the training platform (`jobs/packs/`), each run against its
//! reference schema on real PostgreSQL and S3: every subject of a seeded world ends as its
//! policy says, and age-based retention reads its window from a related row.

use crate::helpers::{DAY, World};
use lethe::pipeline::RunOptions;
use std::collections::BTreeSet;

const HOUR: i64 = 3_600;

fn ago(secs: i64) -> String {
    format!("now() - interval '{secs} seconds'")
}

async fn strings(w: &World, sql: &str) -> BTreeSet<String> {
    sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_all(&w.pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Seconds from clock to deadline that the audit log promised for one purged subject.
async fn promised(w: &World, job: &str, key: &str) -> (i64, i64) {
    sqlx::query_as(
        "SELECT extract(epoch from (detail->>'eligible_at')::timestamptz - (detail->>'clock_at')::timestamptz)::bigint, \
                extract(epoch from (detail->>'deadline_at')::timestamptz - (detail->>'clock_at')::timestamptz)::bigint \
         FROM lethe.audit_log WHERE event = 'purged' AND job = $1 AND subject_key = $2",
    )
    .bind(job)
    .bind(key)
    .fetch_one(&w.pool)
    .await
    .unwrap_or_else(|e| panic!("{job}:{key} was not purged: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_trace_pack_keeps_each_project_retention_and_purges_deleted_projects_and_accounts() {
    let w = World::pack("llm-traces").await;
    w.sql(&format!(
        "INSERT INTO accounts (id, status, closed_at) VALUES
           (1, 'active', NULL), (2, 'active', NULL), (3, 'closed', {}), (4, 'closed', {});
         INSERT INTO api_keys (account_id, key_hash) VALUES (1, 'sha256:aa'), (3, 'sha256:bb');
         INSERT INTO projects (id, account_id, name, retention_days, deleted_at) VALUES
           (10, 1, 'week', 7, NULL), (11, 1, 'default', NULL, NULL), (12, 1, 'forever', 0, NULL),
           (13, 2, 'held', 7, NULL), (14, 1, 'deleted', NULL, {}), (15, 3, 'closed', 7, NULL),
           (16, 4, 'in grace', 7, NULL)",
        ago(20 * DAY),
        ago(5 * DAY),
        ago(10 * DAY)
    ))
    .await;
    // (trace, project, account, age)
    let traces: [(&str, i64, i64, i64); 11] = [
        ("t10a", 10, 1, 8 * DAY),
        ("t10b", 10, 1, 6 * DAY),
        ("t10c", 10, 1, 7 * DAY + HOUR),
        ("t11a", 11, 1, 20 * DAY),
        ("t11b", 11, 1, 31 * DAY),
        ("t12a", 12, 1, 400 * DAY),
        ("t13a", 13, 2, 30 * DAY),
        ("t14a", 14, 1, DAY),
        ("t15a", 15, 3, DAY),
        ("t15b", 15, 3, 30 * DAY),
        ("t16a", 16, 4, 3 * DAY),
    ];
    for (t, p, a, age) in traces {
        w.sql(&format!(
            "INSERT INTO traces (id, project_id, account_id, created_at) VALUES ('{t}', {p}, {a}, {});
             INSERT INTO spans (id, trace_id, name) SELECT '{t}-' || g, '{t}', 'llm' FROM generate_series(1, 3) g;
             INSERT INTO grader_results (trace_id, grader, score) VALUES ('{t}', 'exact', 1)",
            ago(age)
        ))
        .await;
        w.put(&format!("projects/{p}/traces/{t}/spans.json")).await;
    }
    let uri = w.uri("datasets/140/");
    w.sql(&format!(
        "INSERT INTO datasets VALUES (140, 14, 'golden', '{uri}');
         INSERT INTO dataset_items (id, dataset_id) VALUES (1400, 140);
         INSERT INTO grader_results (trace_id, dataset_item_id, grader) VALUES ('t14a', 1400, 'judge')"
    ))
    .await;
    w.put("datasets/140/data.jsonl").await;
    w.put("datasets/1400/other.jsonl").await;
    w.hold(&["--account", "2"]).await;

    let s = w.run(&[], RunOptions::default()).await;
    assert_eq!(s.exit_code(), 0, "{:?}", s.reports);

    let kept = set(&["t10b", "t11a", "t12a", "t13a", "t16a"]);
    assert_eq!(strings(&w, "SELECT id FROM traces").await, kept);
    assert_eq!(
        strings(&w, "SELECT DISTINCT trace_id FROM spans").await,
        kept,
        "spans go with their traces"
    );
    assert_eq!(
        strings(&w, "SELECT DISTINCT trace_id FROM grader_results").await,
        kept
    );
    assert_eq!(
        strings(&w, "SELECT id::text FROM projects").await,
        set(&["10", "11", "12", "13", "16"])
    );
    assert_eq!(w.count("SELECT count(*) FROM datasets").await, 0);
    assert_eq!(w.count("SELECT count(*) FROM dataset_items").await, 0);
    assert_eq!(
        strings(&w, "SELECT key_hash FROM api_keys").await,
        set(&["sha256:aa"])
    );
    assert_eq!(
        strings(&w, "SELECT id::text FROM accounts").await,
        set(&["1", "2", "4"])
    );
    let objects: BTreeSet<String> = w.keys("").await.into_iter().collect();
    assert_eq!(
        objects,
        set(&[
            "datasets/1400/other.jsonl",
            "projects/10/traces/t10b/spans.json",
            "projects/11/traces/t11a/spans.json",
            "projects/12/traces/t12a/spans.json",
            "projects/13/traces/t13a/spans.json",
            "projects/16/traces/t16a/spans.json",
        ])
    );
    // The promise recorded for each trace follows its project's retention.
    assert_eq!(
        promised(&w, "expired-traces", "t10a").await,
        (7 * DAY, 8 * DAY)
    );
    assert_eq!(
        promised(&w, "expired-traces", "t11b").await,
        (30 * DAY, 31 * DAY)
    );
    assert_eq!(
        w.audit_events("held").await,
        vec!["expired-traces:t13a".to_string()]
    );

    // The owner shortens project 11's retention to 10 days: t11a (20 days old) goes next run.
    w.sql("UPDATE projects SET retention_days = 10 WHERE id = 11")
        .await;
    w.run(&["expired-traces"], RunOptions::default()).await;
    assert!(!strings(&w, "SELECT id FROM traces").await.contains("t11a"));
    assert_eq!(
        promised(&w, "expired-traces", "t11a").await,
        (10 * DAY, 11 * DAY)
    );
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inference_pack_retention_follows_the_account_plan_and_status() {
    let w = World::pack("inference").await;
    w.sql(&format!(
        "INSERT INTO accounts (id, status, plan, closed_at) VALUES
           (1, 'active', 'free', NULL), (2, 'active', 'pro', NULL), (3, 'active', 'enterprise', NULL),
           (4, 'active', 'zdr', NULL), (5, 'closed', 'free', {ten}), (6, 'closed', 'enterprise', {ten}),
           (7, 'suspended', 'pro', NULL)",
        ten = ago(10 * DAY)
    ))
    .await;
    // (log id, account, age)
    let logs: [(i64, i64, i64); 11] = [
        (1, 1, 8 * DAY),
        (2, 1, 6 * DAY),
        (3, 2, 31 * DAY),
        (4, 2, 29 * DAY),
        (5, 3, 91 * DAY),
        (6, 3, 89 * DAY),
        (7, 4, 2 * HOUR),
        (8, 4, HOUR / 2),
        (9, 5, DAY),
        (10, 6, DAY),
        (11, 7, 40 * DAY),
    ];
    for (id, a, age) in logs {
        w.sql(&format!(
            "INSERT INTO inference_logs (id, account_id, model, created_at) VALUES ({id}, {a}, 'm', {})",
            ago(age)
        ))
        .await;
        w.put(&format!("logs/{a}/{id}/request.json")).await;
    }
    // Fine-tuning jobs: 100 deleted 5 days ago (past its 3-day grace), 101 deleted yesterday,
    // 102 live but owned by closed account 5.
    for (job, account, deleted) in [
        (100, 2, ago(5 * DAY)),
        (101, 2, ago(DAY)),
        (102, 5, "NULL".into()),
    ] {
        let train = w.uri(&format!("files/{job}-train.jsonl"));
        let ckpt = w.uri(&format!("ckpt/{job}/step-10/"));
        w.sql(&format!(
            "INSERT INTO fine_tuning_jobs (id, account_id, base_model, method, deleted_at) VALUES ({job}, {account}, 'base', 'rl', {deleted});
             INSERT INTO fine_tuning_files VALUES ({job}0, {job}, 'training', '{train}');
             INSERT INTO checkpoints VALUES ({job}0, {job}, 10, '{ckpt}');
             INSERT INTO rl_episodes (job_id, reward) SELECT {job}, g FROM generate_series(1, 4) g"
        ))
        .await;
        for key in [
            format!("files/{job}-train.jsonl"),
            format!("ckpt/{job}/step-10/model.safetensors"),
            format!("fine-tunes/{job}/rollouts/0.jsonl"),
        ] {
            w.put(&key).await;
        }
    }
    w.put("files/100-train.jsonl.bak").await;
    w.hold(&["--account", "7"]).await;

    let s = w.run(&[], RunOptions::default()).await;
    assert_eq!(s.exit_code(), 0, "{:?}", s.reports);

    assert_eq!(
        strings(&w, "SELECT id::text FROM inference_logs").await,
        set(&["10", "11", "2", "4", "6", "8"]),
        "free keeps 7 days, pro 30, enterprise 90, zdr an hour; closed free account 5 is gone, \
         closed enterprise account 6 is in its grace, held account 7 keeps everything"
    );
    assert_eq!(
        strings(&w, "SELECT id::text FROM fine_tuning_jobs").await,
        set(&["101"])
    );
    assert_eq!(
        w.count("SELECT count(*) FROM rl_episodes WHERE job_id <> 101")
            .await,
        0
    );
    assert_eq!(
        strings(&w, "SELECT id::text FROM accounts").await,
        set(&["1", "2", "3", "4", "6", "7"])
    );
    let objects: BTreeSet<String> = w.keys("").await.into_iter().collect();
    assert_eq!(
        objects,
        set(&[
            "ckpt/101/step-10/model.safetensors",
            "files/100-train.jsonl.bak",
            "files/101-train.jsonl",
            "fine-tunes/101/rollouts/0.jsonl",
            "logs/1/2/request.json",
            "logs/2/4/request.json",
            "logs/3/6/request.json",
            "logs/4/8/request.json",
            "logs/6/10/request.json",
            "logs/7/11/request.json",
        ])
    );
    assert_eq!(promised(&w, "inference-logs", "7").await, (HOUR, DAY));
    assert_eq!(
        promised(&w, "inference-logs", "5").await,
        (90 * DAY, 91 * DAY)
    );
    assert_eq!(
        promised(&w, "inference-logs", "3").await,
        (30 * DAY, 31 * DAY)
    );

    // An upgrade to enterprise lengthens the retention of what is left: nothing more goes.
    w.sql("UPDATE accounts SET plan = 'enterprise' WHERE id = 1")
        .await;
    w.sql(&format!(
        "UPDATE inference_logs SET created_at = {} WHERE id = 2",
        ago(30 * DAY)
    ))
    .await;
    w.run(&["inference-logs"], RunOptions::default()).await;
    assert!(
        strings(&w, "SELECT id::text FROM inference_logs")
            .await
            .contains("2")
    );
    w.cleanup().await;
}
