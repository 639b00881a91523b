use super::*;
use crate::storage::Versioning;
use crate::storage::memory::MemoryStore;

/// A memory store whose unversioned bucket `b` holds `per` keys (`0`, `1`, ...) in each of
/// `dirs`.
async fn bucket_of(dirs: impl IntoIterator<Item = String>, per: usize) -> MemoryStore {
    let store = plain_bucket().await;
    for d in dirs {
        for j in 0..per {
            store.put("b", &format!("{d}{j}"), vec![]).await.unwrap();
        }
    }
    store
}

/// 300 subjects of 3 objects (`runs/0000/` to `runs/0299/`), and a batch of 3 of them.
async fn three_of_300() -> (MemoryStore, Vec<(String, usize)>) {
    let store = bucket_of((0..300).map(|i| format!("runs/{i:04}/")), 3).await;
    let dirs = [5, 150, 290]
        .iter()
        .enumerate()
        .map(|(n, i)| (format!("runs/{i:04}/"), n))
        .collect();
    (store, dirs)
}

/// A memory store with one unversioned bucket `b`.
async fn plain_bucket() -> MemoryStore {
    let store = MemoryStore::default();
    store
        .create_bucket("b", Versioning::Unversioned)
        .await
        .unwrap();
    store
}

async fn collect(
    store: &MemoryStore,
    versions: bool,
    dirs: &[(String, usize)],
) -> (Vec<(usize, String)>, u64, bool) {
    let mut w = RangeWalker::new(store, "b", versions, dirs);
    let mut out = Vec::new();
    while let Some(page) = w.next_page().await.unwrap() {
        for (owners, o) in page {
            for i in owners {
                out.push((i, o.key.clone()));
            }
        }
    }
    out.sort();
    (out, w.requests, w.jumped)
}

#[tokio::test]
async fn assigns_every_key_to_its_directory_and_nothing_else() {
    let store = MemoryStore::default();
    store.create_bucket("b", Versioning::Enabled).await.unwrap();
    for k in [
        "runs/1/a",
        "runs/1/b/c",
        "runs/1",
        "runs/1-x/a",
        "runs/10/a",
        "runs/100/a",
        "runs/2/a",
        "runs/3/a",
        "z/1/a",
    ] {
        store.put("b", k, vec![]).await.unwrap();
    }
    store.put("b", "runs/1/a", vec![]).await.unwrap();
    let dirs = vec![
        ("runs/1/".to_string(), 0),
        ("runs/100/".to_string(), 1),
        ("runs/3/".to_string(), 2),
    ];
    let (got, _, _) = collect(&store, true, &dirs).await;
    assert_eq!(
        got,
        vec![
            (0, "runs/1/a".into()),
            (0, "runs/1/a".into()),
            (0, "runs/1/b/c".into()),
            (1, "runs/100/a".into()),
            (2, "runs/3/a".into())
        ]
    );
}

#[test]
fn markers_sort_before_their_directory_in_every_order() {
    let m = |p: &str| RangeWalker::marker_before(p).map(|t| t.key);
    assert_eq!(m("runs/1/").as_deref(), Some("runs/0~"));
    assert_eq!(m("runs/19/").as_deref(), Some("runs/18~"));
    assert_eq!(m("runs/a0/").as_deref(), Some("runs/a"));
    assert_eq!(m("runs/0/").as_deref(), Some("runs/"));
    assert_eq!(m("x/").as_deref(), Some("w~"));
    assert_eq!(m("0/"), None);
    for p in [
        "runs/1/", "runs/19/", "runs/a0/", "runs/0/", "runs/10/", "a/b-c/", "runs/a-/", "runs/é/",
    ] {
        let k = m(p).unwrap();
        assert!(
            k.as_str() < p && tree_cmp(&k, p).is_lt() && !p.starts_with(&format!("{k}/")),
            "{p} -> {k}"
        );
    }
}

#[test]
fn common_prefix_stops_at_a_character_boundary() {
    assert_eq!(common_prefix(["runs/1/", "runs/10/", "runs/2/"]), "runs/");
    // é and è share their first UTF-8 byte; cutting there would split a character.
    assert_eq!(common_prefix(["runs/é/", "runs/è/"]), "runs/");
    assert_eq!(common_prefix(["a/"]), "a/");
    assert_eq!(common_prefix(Vec::<&str>::new()), "");
}

#[test]
fn orders_that_disagree_are_detected() {
    let d = |v: &[&str]| v.iter().map(|s| (s.to_string(), 0)).collect::<Vec<_>>();
    assert!(same_order(&d(&["runs/1/", "runs/10/", "runs/2/"])));
    assert!(
        !same_order(&d(&["runs/1-x/", "runs/1/"])),
        "bytes put 1-x first, a tree puts 1 first"
    );
    assert!(past("runs/10/a", "runs/1/"));
    assert!(
        !past("runs/1-x/a", "runs/1/"),
        "before runs/1/ in byte order"
    );
    assert!(!past("runs/1/z", "runs/1/"));
    assert!(!past("runs/1", "runs/1/"));
}

#[tokio::test]
async fn sparse_directories_jump_instead_of_reading_everything_between() {
    // 300 subjects of 3 objects; only 3 of them are in the batch.
    let (store, dirs) = three_of_300().await;
    let (got, requests, jumped) = collect(&store, false, &dirs).await;
    assert_eq!(got.len(), 9);
    // The memory store pages 7 keys at a time: reading the whole range would take 129 pages.
    assert!(requests <= 9, "{requests} requests");
    assert!(jumped);
}

#[tokio::test]
async fn dense_directories_are_read_in_one_pass() {
    let store = bucket_of((0..50).map(|i| format!("runs/{i}/")), 7).await;
    let dirs: Vec<(String, usize)> = (0..50).map(|i| (format!("runs/{i}/"), i)).collect();
    let (got, requests, jumped) = collect(&store, false, &dirs).await;
    assert_eq!(got.len(), 350);
    assert!(requests <= 51, "{requests} requests for 50 pages of keys");
    assert!(!jumped);
}

/// Regression: a page that ended on the object `runs/10` was continued from it, which SeaweedFS
/// reads as past the directory `runs/10/`, so that directory was never listed.
#[tokio::test]
async fn a_walk_never_continues_from_a_key_named_like_a_directory_to_come() {
    let store = plain_bucket().await;
    // Pages of 7: six keys of runs/1/, then the object runs/10 ends the first page.
    for k in ["a", "b", "c", "d", "e", "f"] {
        store
            .put("b", &format!("runs/1/{k}"), vec![])
            .await
            .unwrap();
    }
    for k in [
        "runs/10",
        "runs/10/x",
        "runs/10/y",
        "runs/11/z",
        "runs/11/w",
    ] {
        store.put("b", k, vec![]).await.unwrap();
    }
    let dirs: Vec<(String, usize)> = ["runs/1/", "runs/10/", "runs/11/"]
        .iter()
        .enumerate()
        .map(|(i, d)| (d.to_string(), i))
        .collect();
    let mut w = RangeWalker::new(&store, "b", false, &dirs);
    let mut seen = 0;
    while let Some(page) = w.next_page().await.unwrap() {
        seen += page.len();
    }
    assert_eq!((seen, w.requests), (6, 1), "stopped after the first page");
    let back: Vec<&str> = w.handed_back().iter().map(|(d, _)| d.as_str()).collect();
    assert_eq!(back, ["runs/10/", "runs/11/"]);
    // Through the task that lists a range, every key of every directory is sent, and the
    // object runs/10 (no directory's) is not.
    let task = crate::pipeline::listing::list_tasks(
        &dirs
            .iter()
            .map(|(d, _)| {
                vec![crate::domain::Location {
                    store: "s3".into(),
                    bucket: "b".into(),
                    prefix: d.clone(),
                    exact: false,
                    object_only: false,
                }]
            })
            .collect::<Vec<_>>(),
        1,
    );
    assert_eq!(task.len(), 1);
    let (tx, mut rx) = tokio::sync::mpsc::channel(100);
    task[0].send_all(&store, false, &tx).await.unwrap();
    drop(tx);
    let mut keys = Vec::new();
    while let Some((owner, _, o)) = rx.recv().await {
        keys.push((owner, o.key));
    }
    keys.sort();
    assert_eq!(keys.len(), 10, "{keys:?}");
    assert!(keys.iter().all(|(_, k)| k != "runs/10"));
    assert!(keys.contains(&(1, "runs/10/x".to_string())));
    assert!(keys.contains(&(2, "runs/11/w".to_string())));
}
