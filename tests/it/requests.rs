//! Data-subject requests (issue 32): an erasure takes an active account now, whatever its
//! windows, except what a hold keeps; it is idempotent, proven by `report --request`, refused
//! when it covers nothing, and refused by every run when the chain does not record it.

use crate::behaviour::{LiteWorld, Platform, on_both};
use crate::helpers::{DAY, World};
use lethe::storage::Versioning;

/// `lethe request erase --account ACCOUNT --reason REASON --by privacy` with `extra` arguments.
fn erase(w: &impl Platform, account: &str, reason: &str, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec![
        "request",
        "erase",
        "--account",
        account,
        "--reason",
        reason,
        "--by",
        "privacy",
    ];
    args.extend_from_slice(extra);
    w.cli(&args)
}

fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

/// Account 7 is active: live runs 70, 71 and 72, run 73 deleted an hour ago (inside its restore
/// window), live snapshots 700 (of run 70) and 720 (of run 72), an API key, objects of its own.
/// Run 72 is held. Account 8 lives beside it. An erasure request on account 7 purges, in the
/// next run, everything of 7 but the held run, what hangs under it, and the account row whose
/// purge would take the held run with it; the request is partly fulfilled, naming the hold.
/// Released, the rest goes and the request is fulfilled. Asked again, nothing new is recorded.
/// A snapshot of account 8's run whose own `account_id` says 7 is not taken: the claims disagree.
async fn an_erasure_takes_an_active_account_now_except_what_a_hold_keeps(w: impl Platform) {
    for (account, runs) in [(7, vec![70, 71, 72]), (8, vec![80])] {
        w.account(account, "free", None).await;
        for r in runs {
            w.run_row(r, account, None).await;
        }
        w.put(&format!("accounts/{account}/profile.json")).await;
    }
    w.run_row(73, 7, Some(3600)).await;
    w.snapshot(700, 70, 7, None).await;
    w.snapshot(720, 72, 7, None).await;
    w.snapshot(800, 80, 8, None).await;
    // A snapshot whose own column says account 7, under a run of account 8: the claims
    // disagree, so a request on 7 does not take it.
    w.snapshot(900, 80, 7, None).await;
    let hold = w.hold(&["--subject", "deleted-runs:72"]);

    let (code, out, err) = erase(&w, "7", "DSR-1", &["--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("job deleted-runs: 4 row(s) of runs, 1 of them held"),
        "the dry run says what it covers: {err}"
    );
    assert_eq!(
        w.count("SELECT count(*) FROM lethe.requests").await,
        0,
        "a dry run records nothing"
    );

    let (code, out, err) = erase(&w, "7", "DSR-1", &["--due", "30d"]);
    assert_eq!(code, 0, "{out}{err}");
    let id: i64 = out.trim().parse().unwrap();
    let (code, out, err) = w.cli(&["plan"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("job deleted-runs: 3 (1 more held)"),
        "plan says what the request makes eligible: {err}"
    );
    // One job alone: the request stays open while another job's subjects are left.
    let (code, out, err) = w.cli(&["run", "--job", "deleted-snapshots"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        w.count("SELECT count(*) FROM snapshots WHERE id = 700")
            .await,
        0
    );
    assert_eq!(
        w.count(&format!(
            "SELECT count(*) FROM lethe.requests WHERE id = {id} AND state = 'open'"
        ))
        .await,
        1,
        "open while runs 70, 71 and 73 are left"
    );
    let (code, out, err) = w.cli(&["run", "--all"]);
    assert_eq!(code, 0, "{out}{err}");

    for r in [70, 71, 73] {
        assert_eq!(
            w.rows_of_run(r).await,
            0,
            "run {r} erased, live or inside its window"
        );
        assert!(
            w.keys(&format!("runs/{r}/")).await.is_empty(),
            "run {r}'s objects"
        );
    }
    assert_eq!(
        w.count("SELECT count(*) FROM snapshots WHERE id = 700")
            .await,
        0
    );
    assert!(w.keys("snaps/700/").await.is_empty());
    assert_eq!(w.rows_of_run(72).await, 7, "the held run is kept whole");
    assert_eq!(w.keys("runs/72/").await.len(), 2);
    assert_eq!(
        w.count("SELECT count(*) FROM snapshots WHERE id = 720")
            .await
            + w.count("SELECT count(*) FROM snapshot_files WHERE snapshot_id = 720")
                .await,
        3,
        "the held run's snapshot is kept: the hold on the run covers it"
    );
    assert_eq!(w.keys("snaps/720/").await.len(), 1);
    assert_eq!(
        w.count("SELECT count(*) FROM accounts WHERE id = 7").await,
        1,
        "the account row holds the held run"
    );
    for r in [80] {
        assert_eq!(w.rows_of_run(r).await, 7, "the neighbour's run");
    }
    assert_eq!(w.keys("runs/80/").await.len(), 2);
    assert_eq!(w.keys("snaps/800/").await.len(), 1);
    assert_eq!(w.keys("accounts/8/").await.len(), 1);
    assert_eq!(
        w.count("SELECT count(*) FROM api_keys WHERE account_id = 8")
            .await,
        1
    );
    assert_eq!(
        w.count(&format!(
            "SELECT count(*) FROM lethe.requests WHERE id = {id} AND state = 'partly'"
        ))
        .await,
        1,
        "partly fulfilled"
    );

    let (code, out, err) = w.cli(&["report", "--request", &id.to_string(), "--format", "jsonl"]);
    assert_eq!(code, 0, "{out}{err}");
    let lines = json_lines(&out);
    let verdict = lines[0]["verdict"].as_str().unwrap();
    assert!(
        verdict.starts_with(&format!("partly fulfilled under hold {hold}: ")),
        "{verdict}"
    );
    assert_eq!(
        lines[0]["holds"].as_array().unwrap().len(),
        1,
        "{}",
        lines[0]
    );
    assert_eq!(lines[0]["holds"][0]["hold_id"], hold);
    assert_eq!(lines[0]["holds"][0]["reason"], "litigation");
    // Snapshot 700 (by the snapshot job), then runs 70, 71 and 73.
    assert_eq!(lines[0]["subjects_purged"], 4, "{}", lines[0]);
    assert_eq!(lines[0]["rows_by_table"]["metrics"], 9, "{}", lines[0]);
    assert_eq!(lines[0]["rows_by_table"]["snapshots"], 1, "{}", lines[0]);
    let purged: Vec<String> = lines[1..]
        .iter()
        .filter(|r| r["outcome"] == "purged")
        .map(|r| {
            format!(
                "{}:{}",
                r["job"].as_str().unwrap(),
                r["subject_key"].as_str().unwrap()
            )
        })
        .collect();
    for s in [
        "deleted-runs:70",
        "deleted-runs:71",
        "deleted-runs:73",
        "deleted-snapshots:700",
    ] {
        assert!(purged.contains(&s.to_string()), "{s} in {purged:?}");
    }
    assert!(
        lines[1..]
            .iter()
            .any(|r| r["outcome"] == "held" && r["subject_key"] == "72" && r["hold_id"] == hold),
        "the held run is named with its hold"
    );
    assert!(
        lines[1..].iter().all(|r| r["owner"] == "7"),
        "only account 7's outcomes"
    );

    // Asked again while partly fulfilled: the same request, nothing new.
    let (code, out, err) = erase(&w, "7", "DSR-1 again", &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), id.to_string(), "{err}");
    assert_eq!(w.count("SELECT count(*) FROM lethe.requests").await, 1);

    let (code, out, err) = w.cli(&[
        "hold",
        "release",
        &hold.to_string(),
        "--reason",
        "case closed",
        "--by",
        "legal",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = w.cli(&["run", "--all"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(w.rows_of_run(72).await, 0);
    assert!(w.keys("runs/72/").await.is_empty());
    assert!(w.keys("snaps/720/").await.is_empty());
    assert!(
        w.keys("accounts/7/").await.is_empty(),
        "the account's own objects"
    );
    assert_eq!(
        w.count("SELECT count(*) FROM accounts WHERE id = 7").await
            + w.count("SELECT count(*) FROM api_keys WHERE account_id = 7")
                .await
            + w.count("SELECT count(*) FROM snapshots WHERE account_id = 7 AND id <> 900")
                .await,
        0,
        "nothing of account 7 is left"
    );
    assert_eq!(w.rows_of_run(80).await, 7, "the neighbour is untouched");
    assert_eq!(
        w.count("SELECT count(*) FROM snapshot_files WHERE snapshot_id = 900")
            .await,
        2,
        "a snapshot under the neighbour's run stays, whatever its own column says"
    );
    assert_eq!(w.keys("snaps/900/").await.len(), 1);
    assert_eq!(w.keys("accounts/8/").await.len(), 1);
    let (code, out, err) = w.cli(&["report", "--request", &id.to_string(), "--format", "jsonl"]);
    assert_eq!(code, 0, "{out}{err}");
    let verdict = json_lines(&out)[0]["verdict"].as_str().unwrap().to_string();
    assert!(verdict.starts_with("fulfilled in time"), "{verdict}");

    // Erased twice: nothing is recorded, nothing fails.
    let (code, out, err) = erase(&w, "7", "DSR-1 again", &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains(&format!("was erased by request {id}")),
        "{err}"
    );
    assert_eq!(w.count("SELECT count(*) FROM lethe.requests").await, 1);
    let (code, out, err) = w.cli(&["run", "--all"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = w.cli(&["request", "list"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.lines()
            .any(|l| l.contains("account 7") && l.contains("fulfilled")),
        "{out}"
    );
    let (code, out, err) = w.cli(&["report", "--request", &id.to_string(), "--format", "csv"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("request_id,kind,scope"), "{out}");
    let (code, out, err) = w.cli(&["report", "--request", &id.to_string(), "--format", "html"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("fulfilled in time") && out.contains("deleted-runs"),
        "{out}"
    );
    let (code, out, err) = w.cli(&["audit", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
    w.finish().await;
}

/// A request nobody's data answers to is refused as a likely typo (exit 2, nothing recorded);
/// with `--force` it is recorded, and the next run finds it fulfilled. A request row written
/// with plain SQL, which the audit chain does not record, stops every run (exit 5) with
/// nothing deleted.
async fn a_request_that_covers_nothing_or_that_the_chain_does_not_know_is_refused(
    w: impl Platform,
) {
    w.account(1, "free", None).await;
    w.run_row(10, 1, None).await;
    let (code, out, err) = erase(&w, "999", "DSR-2", &[]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("would cover nothing now"), "{err}");
    assert_eq!(w.count("SELECT count(*) FROM lethe.requests").await, 0);
    let (code, out, err) = erase(&w, "999", "DSR-2", &["--force"]);
    assert_eq!(code, 0, "{out}{err}");
    let id = out.trim().to_string();
    let (code, out, err) = w.cli(&["run", "--all"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        w.count(&format!(
            "SELECT count(*) FROM lethe.requests WHERE id = {id} AND state = 'fulfilled'"
        ))
        .await,
        1
    );
    let (code, out, err) = w.cli(&[
        "request",
        "erase",
        "--subject",
        "deleted-runs:10",
        "--reason",
        "x",
        "--by",
        "y",
        "--dry-run",
    ]);
    assert_eq!(code, 0, "{out}{err}");

    let (due, kind) = match w.dialect() {
        lethe::domain::Dialect::Postgres => ("now() + interval '1 day'", "'erase'"),
        lethe::domain::Dialect::Sqlite => {
            ("strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '+1 day')", "'erase'")
        }
    };
    w.sql(&format!(
        "INSERT INTO lethe.requests (kind, account, reason, requested_by, due_at) \
         VALUES ({kind}, '1', 'forged', 'mallory', {due})"
    ))
    .await;
    let (code, out, err) = w.cli(&["run", "--all"]);
    assert_eq!(code, 5, "{out}{err}");
    assert!(err.contains("no `request_placed` entry"), "{err}");
    assert_eq!(w.rows_of_run(10).await, 7, "nothing deleted");
    assert_eq!(w.keys("runs/10/").await.len(), 2);
    w.finish().await;
}

on_both!(
    an_erasure_takes_an_active_account_now_except_what_a_hold_keeps,
    a_request_that_covers_nothing_or_that_the_chain_does_not_know_is_refused,
    an_export_holds_the_account_and_nothing_else,
);

/// Every file of an export directory: relative path → content.
fn files_under(root: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().to_string();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// An export of account 7 (a live run, a deleted run, a snapshot, an API key, objects of its
/// own) holds exactly its rows, read back equal to the database's, without the left-out
/// `api_keys.key_hash`, and exactly its objects byte for byte, each in the manifest with its
/// sha256, whose own sha256 is in the audit log. A run of 7 whose URI points into neighbour 8's
/// directory exports nothing of 8's (the ownership proof refuses it, named, exit 1). Into a
/// directory that is not empty: refused, nothing written. Into a bucket: the same files.
async fn an_export_holds_the_account_and_nothing_else(w: impl Platform) {
    let store = &w.ctx().store;
    for (account, run) in [(7, 70), (8, 80)] {
        w.account(account, "team", None).await;
        w.run_row(run, account, None).await;
        store
            .put(
                w.bucket(),
                &format!("accounts/{account}/profile.json"),
                format!("profile of {account}").into_bytes(),
            )
            .await
            .unwrap();
    }
    w.run_row(71, 7, Some(40 * DAY)).await;
    w.snapshot(700, 70, 7, None).await;
    w.snapshot(900, 80, 7, None).await;
    store
        .put(
            w.bucket(),
            "runs/70/odd name+%.txt",
            vec![0u8, 255, 1, 2, 3],
        )
        .await
        .unwrap();
    let pointing = w.uri("runs/80/");
    w.sql(&format!(
        "UPDATE runs SET artifact_uri = '{pointing}' WHERE id = 71"
    ))
    .await;

    let dir = std::env::temp_dir().join(crate::helpers::unique("lethe-export-"));
    let dir_s = dir.to_string_lossy().to_string();
    let (code, out, err) = w.cli(&[
        "request",
        "export",
        "--account",
        "7",
        "--out",
        &dir_s,
        "--reason",
        "DSR-3",
        "--by",
        "privacy",
    ]);
    assert_eq!(
        code, 1,
        "the refused location makes it incomplete: {out}{err}"
    );
    assert!(
        err.lines()
            .any(|l| l.contains("not exported: ") && l.contains("runs/80/")),
        "{err}"
    );
    let id: i64 = out.trim().parse().unwrap();
    let files = files_under(&dir);

    // Rows, read back, equal the account's rows.
    let rows = |table: &str| -> Vec<serde_json::Value> {
        files
            .get(&format!("rows/{table}.jsonl"))
            .map(|b| json_lines(std::str::from_utf8(b).unwrap()))
            .unwrap_or_default()
    };
    let mut run_ids: Vec<i64> = rows("runs")
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    run_ids.sort();
    assert_eq!(run_ids, vec![70, 71]);
    let keys = rows("api_keys");
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["account_id"], 7);
    assert!(keys[0].get("key_hash").is_none(), "left out: {}", keys[0]);
    assert_eq!(rows("accounts").len(), 1);
    assert!(
        rows("accounts")[0]["email"]
            .as_str()
            .unwrap()
            .ends_with("7@example.com")
    );
    assert_eq!(rows("metrics").len(), 6, "3 per run");
    assert!(
        rows("metrics")
            .iter()
            .all(|m| [70, 71].contains(&m["run_id"].as_i64().unwrap()))
    );
    assert_eq!(rows("params").len(), 4);
    assert_eq!(rows("snapshots").len(), 1);
    assert_eq!(rows("snapshot_files").len(), 2);
    assert_eq!(rows("links").len(), 2, "the two runs' links, once each");
    if w.dialect() == lethe::domain::Dialect::Postgres {
        for (table, filter) in [
            ("runs", "account_id = 7"),
            ("metrics", "run_id IN (70, 71)"),
            ("snapshot_files", "snapshot_id = 700"),
        ] {
            let mut db: Vec<serde_json::Value> =
                sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(format!(
                    "SELECT to_jsonb(t)::text FROM {table} t WHERE {filter}"
                )))
                .fetch_all(match &w.ctx().db {
                    lethe::db::Db::Pg(p) => p,
                    _ => unreachable!(),
                })
                .await
                .unwrap()
                .iter()
                .map(|s| serde_json::from_str(s).unwrap())
                .collect();
            let mut got = rows(table);
            let key = |v: &serde_json::Value| v.to_string();
            db.sort_by_key(key);
            got.sort_by_key(key);
            assert_eq!(got, db, "{table} read back equals the database");
        }
    }

    // Objects: exactly the account's, byte for byte.
    let objects: Vec<&String> = files.keys().filter(|k| k.starts_with("objects/")).collect();
    let b = w.bucket();
    let expect = [
        (
            format!("objects/{b}/accounts/7/profile.json~"),
            b"profile of 7".to_vec(),
        ),
        (
            format!("objects/{b}/runs/70/model.bin~"),
            b"payload".to_vec(),
        ),
        (
            format!("objects/{b}/runs/70/logs/0.txt~"),
            b"payload".to_vec(),
        ),
        (
            format!("objects/{b}/runs/70/odd%20name%2B%25.txt~"),
            vec![0u8, 255, 1, 2, 3],
        ),
        (
            format!("objects/{b}/runs/71/model.bin~"),
            b"payload".to_vec(),
        ),
        (
            format!("objects/{b}/runs/71/logs/0.txt~"),
            b"payload".to_vec(),
        ),
        (
            format!("objects/{b}/snaps/700/weights.pt~"),
            b"payload".to_vec(),
        ),
    ];
    assert_eq!(objects.len(), expect.len(), "{objects:?}");
    for (path, body) in &expect {
        assert_eq!(files.get(path), Some(body), "{path}");
    }
    assert!(
        !files
            .keys()
            .any(|k| k.contains("/80/") || k.contains("accounts/8") || k.contains("/900/")),
        "nothing of account 8's, nor the snapshot under its run"
    );

    // The manifest: every file with its sha256; its own hash is in the audit log.
    let manifest = files.get("MANIFEST.jsonl").unwrap();
    for entry in json_lines(std::str::from_utf8(manifest).unwrap()) {
        if let Some(path) = entry["path"].as_str() {
            assert_eq!(
                entry["sha256"].as_str().unwrap(),
                sha256_hex(&files[path]),
                "{path}"
            );
        }
    }
    assert!(
        json_lines(std::str::from_utf8(manifest).unwrap())
            .iter()
            .any(|e| e["key"] == "runs/70/odd name+%.txt")
    );
    let recorded = w
        .count(&format!(
            "SELECT count(*) FROM lethe.audit_log WHERE event = 'exported' AND owner = '7' AND detail LIKE '%{}%'",
            sha256_hex(manifest)
        ).replace("detail LIKE", if w.dialect() == lethe::domain::Dialect::Postgres { "detail::text LIKE" } else { "detail LIKE" }))
        .await;
    assert_eq!(recorded, 1, "the manifest's hash is in the audit log");
    let (code, out, err) = w.cli(&["report", "--request", &id.to_string(), "--format", "jsonl"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        json_lines(&out)[0]["verdict"]
            .as_str()
            .unwrap()
            .starts_with("exported"),
        "{out}"
    );

    // Not into a directory that holds anything.
    let (code, out, err) = w.cli(&[
        "request",
        "export",
        "--account",
        "7",
        "--out",
        &dir_s,
        "--reason",
        "DSR-3",
        "--by",
        "privacy",
    ]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("is not empty"), "{err}");
    assert_eq!(files_under(&dir), files, "nothing written");

    // Into a bucket: the same files under the prefix.
    let (code, out, err) = w.cli(&[
        "request",
        "export",
        "--account",
        "7",
        "--out",
        &format!("s3://{b}/exports/7/"),
        "--reason",
        "DSR-3",
        "--by",
        "privacy",
    ]);
    assert_eq!(code, 1, "{out}{err}");
    let keys = w.keys("exports/7/").await;
    assert!(
        keys.contains(&"exports/7/MANIFEST.jsonl".to_string()),
        "{keys:?}"
    );
    assert!(
        keys.contains(&format!("exports/7/objects/{b}/runs/70/model.bin~")),
        "{keys:?}"
    );
    assert_eq!(keys.len(), files.len(), "{keys:?}");
    let _ = std::fs::remove_dir_all(&dir);
    w.finish().await;
}

/// An export of an account nothing covers is refused (exit 2), nothing written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_of_nobody_is_refused() {
    let w = World::new(Versioning::Unversioned).await;
    let dir = std::env::temp_dir().join(crate::helpers::unique("lethe-export-"));
    let (code, out, err) = w.cli(&[
        "request",
        "export",
        "--account",
        "404",
        "--out",
        &dir.to_string_lossy(),
        "--reason",
        "x",
        "--by",
        "y",
    ]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("owns no subject"), "{err}");
    assert!(!dir.exists(), "nothing written");
    w.cleanup().await;
}
