use super::*;
use crate::storage::Versioning;
use crate::storage::memory::MemoryStore;

/// The budget `verify` uses, with `others` keys of other subjects per directory.
fn budget(others: u64) -> RangeBudget {
    RangeBudget {
        others_per_directory: others,
        ..crate::pipeline::verify::BUDGET
    }
}

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
    (out, w.requests, w.dense(budget(10)))
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
    let (got, requests, dense) = collect(&store, false, &dirs).await;
    assert_eq!(got.len(), 9);
    // The memory store pages 7 keys at a time: reading the whole range would take 129 pages.
    assert!(requests <= 9, "{requests} requests");
    assert!(
        !dense,
        "a walk that jumped is not dense: verification lists each directory"
    );
}

#[tokio::test]
async fn a_range_scan_sees_every_leftover_and_stops_past_the_last_directory() {
    let store = plain_bucket().await;
    // Leftovers in the first, a middle and the last directory; 200 live keys after the
    // range, which the scan must not read through.
    for k in ["runs/100/a", "runs/120/x/y", "runs/149/z", "runs/099/n"] {
        store.put("b", k, vec![]).await.unwrap();
    }
    for i in 0..200 {
        store
            .put("b", &format!("runs/5{i:02}/k"), vec![])
            .await
            .unwrap();
    }
    let dirs: Vec<(String, usize)> = (0..50).map(|i| (format!("runs/{}/", 100 + i), i)).collect();
    let mut w = RangeWalker::new(&store, "b", false, &dirs);
    let mut seen = Vec::new();
    let scan = w
        .scan_range(budget(10), |owners, o| {
            seen.push((owners.to_vec(), o.key.clone()))
        })
        .await
        .unwrap();
    assert_eq!(scan, Scan::Covered);
    assert_eq!(
        seen,
        vec![
            (vec![0], "runs/100/a".to_string()),
            (vec![20], "runs/120/x/y".to_string()),
            (vec![49], "runs/149/z".to_string())
        ]
    );
    // Pages of 7: the three leftovers and the first live keys fit in one.
    assert_eq!(w.requests, 1);
}

#[tokio::test]
async fn a_range_scan_reads_to_the_end_of_a_directory_that_contains_another() {
    let store = plain_bucket().await;
    // `runs/1/a/` sorts last but ends first: a page ending in `runs/1/b*` is past it, not
    // past `runs/1/`, whose last leftover comes pages later.
    for i in 0..20 {
        store
            .put("b", &format!("runs/1/b{i:02}"), vec![])
            .await
            .unwrap();
    }
    for k in ["runs/1/a/x", "runs/1/z", "runs/2/k"] {
        store.put("b", k, vec![]).await.unwrap();
    }
    let dirs = vec![("runs/1/a/".to_string(), 1), ("runs/1/".to_string(), 0)];
    let mut w = RangeWalker::new(&store, "b", false, &dirs);
    let mut seen = Vec::new();
    let scan = w
        .scan_range(budget(500), |owners, o| {
            seen.push((owners.to_vec(), o.key.clone()))
        })
        .await
        .unwrap();
    assert_eq!(scan, Scan::Covered);
    assert_eq!(seen.len(), 22, "{seen:?}");
    assert_eq!(seen[0], (vec![0, 1], "runs/1/a/x".to_string()));
    assert_eq!(seen[21], (vec![0], "runs/1/z".to_string()));
}

#[tokio::test]
async fn a_range_scan_gives_up_when_other_subjects_fill_the_range() {
    let (store, dirs) = three_of_300().await;
    let mut w = RangeWalker::new(&store, "b", false, &dirs);
    let mut seen = 0;
    let scan = w.scan_range(budget(10), |_, _| seen += 1).await.unwrap();
    assert_eq!(scan, Scan::TooManyOthers);
    // 31 other keys in pages of 7: five pages, not the 125 to the end of the range.
    assert_eq!(w.requests, 5);
    assert_eq!(
        seen, 3,
        "the first directory's keys were reported on the way"
    );
}

#[tokio::test]
async fn dense_directories_are_read_in_one_pass() {
    let store = bucket_of((0..50).map(|i| format!("runs/{i}/")), 7).await;
    let dirs: Vec<(String, usize)> = (0..50).map(|i| (format!("runs/{i}/"), i)).collect();
    let (got, requests, dense) = collect(&store, false, &dirs).await;
    assert_eq!(got.len(), 350);
    assert!(requests <= 51, "{requests} requests for 50 pages of keys");
    assert!(dense, "one stretch: verification may list it as one range");
}

/// 40 directories of 2 keys, `runs/10/` to `runs/49/`, and a stretch the server walks for
/// 30 s (emptied directories) between `runs/29/` and `runs/30/`.
async fn a_range_over_a_slow_stretch() -> (MemoryStore, Vec<(String, usize)>) {
    let store = bucket_of((10..50).map(|i| format!("runs/{i}/")), 2).await;
    let spot = ("runs/29/~".to_string(), Duration::from_secs(30));
    store.slow_spots.lock().unwrap().push(spot);
    let dirs = (10..50).map(|i| (format!("runs/{i}/"), i)).collect();
    (store, dirs)
}

#[tokio::test(start_paused = true)]
async fn a_walk_with_a_slow_request_is_not_one_cheap_stretch() {
    let (store, dirs) = a_range_over_a_slow_stretch().await;
    let (got, _, dense) = collect(&store, false, &dirs).await;
    assert_eq!(got.len(), 80, "every key is still listed");
    assert!(!dense, "a 30 s request: verification lists each directory");
    store.slow_spots.lock().unwrap().clear();
    let (_, _, dense) = collect(&store, false, &dirs).await;
    assert!(dense, "the same range without the slow stretch");
}

#[tokio::test(start_paused = true)]
async fn a_range_scan_gives_up_on_a_slow_request_within_the_budget() {
    let (store, dirs) = a_range_over_a_slow_stretch().await;
    let started = tokio::time::Instant::now();
    let mut w = RangeWalker::new(&store, "b", false, &dirs);
    let mut seen = 0;
    let scan = w.scan_range(budget(10), |_, _| seen += 1).await.unwrap();
    assert_eq!(scan, Scan::TooSlow);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "abandoned at the 2 s budget, not after the 30 s walk: {:?}",
        started.elapsed()
    );
    // Pages of 7: the keys before the slow stretch were reported on the way.
    assert_eq!(seen, 35);
    store.slow_spots.lock().unwrap().clear();
    let mut w = RangeWalker::new(&store, "b", false, &dirs);
    let mut seen = 0;
    let scan = w.scan_range(budget(10), |_, _| seen += 1).await.unwrap();
    assert_eq!((scan, seen), (Scan::Covered, 80));
}
