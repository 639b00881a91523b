//! Names the store keeps otherwise than XML can carry them: control characters in subject keys
//! and object keys, through SeaweedFS. Where the store can name them (ListObjectsV2 read
//! url-encoded) they are purged like any other; where it cannot (SeaweedFS ignores the
//! encoding in version listings) their subject fails alone, with class `store_name`, and
//! `plan`, `report --summary` and the daemon's metric show it apart.

use crate::edges::{TEMPLATE, items, row_exists, world};
use lethe::pipeline::RunOptions;
use lethe::storage::Versioning;

/// Every key under `prefix`, as an independent client lists it url-encoded (`%01` for U+0001).
async fn encoded_keys(bucket: &str, prefix: &str) -> Vec<String> {
    let out = crate::checker::client()
        .await
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .encoding_type(aws_sdk_s3::types::EncodingType::Url)
        .send()
        .await
        .unwrap();
    let mut keys: Vec<String> = out
        .contents()
        .iter()
        .filter_map(|o| o.key().map(String::from))
        .collect();
    keys.sort();
    keys
}

/// A subject whose key holds U+0001 (its directory `runs/a\u{1}b/`), and an ordinary subject
/// with an object named with U+0002: both purged, nothing of theirs left, the neighbour `a` kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_are_purged_where_the_store_can_name_them() {
    let w = world(Versioning::Unversioned, TEMPLATE).await;
    items(&w, &["a\u{1}b", "c"], true, |_| None).await;
    items(&w, &["a"], false, |_| None).await;
    for k in [
        "runs/a\u{1}b/x",
        "runs/c/y\u{2}z",
        "runs/c/plain",
        "runs/a/k",
    ] {
        w.put(k).await;
    }
    assert_eq!(
        encoded_keys(&w.bucket, "runs/").await,
        vec!["runs/a%01b/x", "runs/a/k", "runs/c/plain", "runs/c/y%02z"],
        "the store keeps the names as written"
    );
    let summary = w.run(&["edges"], RunOptions::default()).await;
    assert_eq!(summary.exit_code(), 0, "{:?}", summary.reports[0].errors);
    assert_eq!(summary.reports[0].purged, 2);
    assert_eq!(encoded_keys(&w.bucket, "runs/").await, vec!["runs/a/k"]);
    assert!(!row_exists(&w, "a\u{1}b").await && !row_exists(&w, "c").await);
    assert!(row_exists(&w, "a").await, "the neighbour keeps its row");
    w.cleanup().await;
}

/// On a versioned bucket SeaweedFS lists versions with U+FFFD in place of U+0002, url-encoded or
/// not: lethe cannot name that version, so its subject fails alone (rows and that version kept,
/// class `store_name`); the subjects beside it in the same listings (of versions and of
/// unfinished uploads; `runs/c0/` and `runs/c1/` are walked as one range) are purged whole. `plan`,
/// `report --summary` and the metric count it apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_the_store_cannot_give_fails_its_subject_alone_and_is_shown() {
    let w = world(Versioning::Enabled, TEMPLATE).await;
    let eligible = ["c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7"];
    items(&w, &eligible, true, |_| None).await;
    items(&w, &["k"], false, |_| None).await;
    for id in eligible {
        w.put(&format!("runs/{id}/plain")).await;
    }
    w.put("runs/c1/y\u{2}z").await;
    w.put("runs/k/kept").await;
    // An unfinished upload SeaweedFS cannot name either (its upload listing ignores the
    // encoding too): the batch's shared upload listing meets it, and only c1 may fail for it.
    crate::checker::client()
        .await
        .create_multipart_upload()
        .bucket(&w.bucket)
        .key("runs/c1/u\u{3}v")
        .send()
        .await
        .unwrap();
    let summary = w.run(&["edges"], RunOptions::default()).await;
    assert_eq!(summary.exit_code(), 1, "a failed subject is work undone");
    let report = &summary.reports[0];
    assert_eq!(
        (report.purged, report.failed),
        (7, 1),
        "{:?}",
        report.errors
    );
    for id in eligible.iter().filter(|id| **id != "c1") {
        assert!(!row_exists(&w, id).await, "{id} is purged");
        assert!(w.versions(&format!("runs/{id}/")).await.is_empty(), "{id}");
    }
    assert!(row_exists(&w, "c1").await && row_exists(&w, "k").await);
    let left = crate::checker::client()
        .await
        .list_object_versions()
        .bucket(&w.bucket)
        .prefix("runs/c1/y")
        .send()
        .await
        .unwrap();
    assert_eq!(left.versions().len(), 1, "c1's unnamed version is kept");
    assert_eq!(
        w.count(
            "SELECT count(*) FROM lethe.work_items WHERE subject_key = 'c1' AND state = 'failed' \
             AND error_class = 'store_name'"
        )
        .await,
        1
    );

    let (code, out, err) = w.cli(&["plan"]);
    assert_eq!(code, 0, "{out}{err}");
    let line = out.lines().find(|l| l.starts_with("edges")).unwrap();
    assert_eq!(
        line.split_whitespace().last(),
        Some("1"),
        "the store name column: {out}"
    );
    assert!(
        err.contains("keeps one of their names differently"),
        "{err}"
    );
    let (code, out, err) = w.cli(&["plan", "--format", "jsonl"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l.contains("\"key\":\"c1\"") && l.contains("\"status\":\"store_name\"")),
        "{out}"
    );
    let (code, out, err) = w.cli(&["report", "--summary"]);
    assert_eq!(code, 0, "{err}");
    let cannot = out
        .lines()
        .find(|l| l.starts_with("CANNOT PURGE edges:c1:"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        cannot.contains("U+FFFD") || cannot.contains("replaced"),
        "{cannot}"
    );
    w.cleanup().await;
}
