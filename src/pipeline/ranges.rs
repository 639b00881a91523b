//! Listing many subjects' directories in one bucket with as few LIST requests as possible.
//!
//! The directories of a batch are sorted and listed as ranges of one listing under their
//! longest common prefix; each key is assigned to the directory (or directories) containing it.
//! When a page is mostly keys that belong to no directory of the batch, the next request jumps
//! straight to the next directory. A dense backlog (every run deleted) then costs about one LIST
//! per 1,000 objects instead of one per subject; a sparse one costs at most about one LIST per
//! directory, as listing each directory would.
//!
//! Servers disagree on listing order: S3 sorts keys by bytes, SeaweedFS by path component
//! (`runs/1/a` before `runs/1-x/a`, where bytes say the opposite). Every ordering judgement here
//! holds under both: a directory counts as passed only when the last key seen is past it in
//! both orders, jump markers sort before their directory in both, and `list_tasks` only groups
//! directories whose sorted order is the same in both (otherwise it lists each on its own).

use crate::storage::{ObjectStore, ObjectVersion, PageToken, StoreError};
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

pub struct RangeWalker<'a> {
    store: &'a dyn ObjectStore,
    bucket: &'a str,
    versions: bool,
    /// Sorted directory prefixes (each ends in `/`) with the subjects that own them.
    dirs: Vec<(String, Vec<usize>)>,
    owners: HashMap<String, usize>,
    common: String,
    next_dir: usize,
    token: Option<PageToken>,
    done: bool,
    pub requests: u64,
    /// Keys read that belong to no directory of the range.
    pub others: u64,
    /// Whether the walk jumped over a stretch of other keys.
    pub jumped: bool,
    /// The longest one of the walk's LIST requests took.
    pub slowest: Duration,
}

impl<'a> RangeWalker<'a> {
    /// `dirs`: (directory prefix ending in `/`, subject index), in any order, repeats allowed.
    pub fn new(
        store: &'a dyn ObjectStore,
        bucket: &'a str,
        versions: bool,
        dirs: &[(String, usize)],
    ) -> Self {
        let mut grouped: Vec<(String, Vec<usize>)> = Vec::new();
        let mut sorted: Vec<&(String, usize)> = dirs.iter().collect();
        sorted.sort();
        for (p, i) in sorted {
            match grouped.last_mut() {
                Some((last, owners)) if last == p => owners.push(*i),
                _ => grouped.push((p.clone(), vec![*i])),
            }
        }
        let common = common_prefix(grouped.iter().map(|(p, _)| p.as_str())).to_string();
        let owners = grouped
            .iter()
            .enumerate()
            .map(|(j, (p, _))| (p.clone(), j))
            .collect();
        let done = grouped.is_empty();
        RangeWalker {
            store,
            bucket,
            versions,
            dirs: grouped,
            owners,
            common,
            next_dir: 0,
            token: None,
            done,
            requests: 0,
            others: 0,
            jumped: false,
            slowest: Duration::ZERO,
        }
    }

    /// The subjects owning `key`: every directory of the batch that contains it.
    fn owners_of(&self, key: &str) -> Vec<usize> {
        let mut out = Vec::new();
        for (pos, _) in key.match_indices('/') {
            if let Some(&j) = self.owners.get(&key[..=pos]) {
                out.extend_from_slice(&self.dirs[j].1);
            }
        }
        out
    }

    /// A listing position strictly before every key of directory `p`, whatever the server's
    /// order and marker semantics, and as close to it as is safe: the directory's last path
    /// component with its last character lowered by one and `~` after it (`runs/19/` ->
    /// `runs/18~`, which sorts after `runs/180/` to `runs/189/`). Where lowering would give `/`
    /// (a component ending in `0`), the component shortened by one character (`runs/a0/` ->
    /// `runs/a`), or for a one-character component the parent directory itself. Never the
    /// directory's own name: SeaweedFS's ListObjectsV2 treats `StartAfter=runs/1` as past the
    /// whole directory `runs/1/`. Keys between the marker and the directory are filtered out
    /// like any other. `None` means "from the start of the listing".
    pub fn marker_before(p: &str) -> Option<PageToken> {
        let dir = &p[..p.len() - 1];
        let (parent, last) = match dir.rfind('/') {
            Some(i) => (&dir[..=i], &dir[i + 1..]),
            None => ("", dir),
        };
        let mut chars: Vec<char> = last.chars().collect();
        let lowered = chars
            .last()
            .and_then(|c| (*c as u32).checked_sub(1))
            .and_then(char::from_u32)
            .filter(|c| *c != '/');
        let key = match lowered {
            Some(prev) => {
                chars.pop();
                let stem: String = chars.into_iter().collect();
                format!("{parent}{stem}{prev}~")
            }
            None if chars.len() > 1 => {
                chars.pop();
                format!("{parent}{}", chars.into_iter().collect::<String>())
            }
            None => parent.to_string(),
        };
        (!key.is_empty()).then_some(PageToken { key, version: None })
    }

    /// Where to start listing for directory `p` of this walk: `marker_before(p)`, or the start
    /// of the listing when that marker sorts before the walk's prefix. (SeaweedFS answers a
    /// ListObjectVersions whose key marker sorts before its prefix with nothing at all, where
    /// S3 lists the prefix from its start.)
    fn start_for(&self, p: &str) -> Option<PageToken> {
        Self::marker_before(p).filter(|t| t.key.starts_with(&self.common))
    }

    /// The next page of keys that belong to the batch's directories, each with its owners.
    pub async fn next_page(
        &mut self,
    ) -> Result<Option<Vec<(Vec<usize>, ObjectVersion)>>, StoreError> {
        while !self.done {
            // One directory alone is listed by its own prefix, with no marker at all.
            let token = match self.token.take() {
                Some(t) => Some(t),
                None if self.dirs.len() == 1 => None,
                None => self.start_for(&self.dirs[self.next_dir].0),
            };
            let started = Instant::now();
            let page = self
                .store
                .list_page(self.bucket, &self.common, self.versions, token)
                .await?;
            self.slowest = self.slowest.max(started.elapsed());
            self.requests += 1;
            let total = page.items.len();
            let last = page.items.last().map(|o| o.key.clone());
            let matched: Vec<(Vec<usize>, ObjectVersion)> = page
                .items
                .into_iter()
                .filter_map(|o| {
                    let owners = self.owners_of(&o.key);
                    (!owners.is_empty()).then_some((owners, o))
                })
                .collect();
            self.others += (total - matched.len()) as u64;
            // Directories wholly before the last key seen are finished.
            if let Some(last) = &last {
                while self.next_dir < self.dirs.len() {
                    let p = &self.dirs[self.next_dir].0;
                    if past(last, p) {
                        self.next_dir += 1;
                    } else {
                        break;
                    }
                }
            }
            match page.next {
                None => self.done = true,
                Some(next) => {
                    if self.next_dir >= self.dirs.len() {
                        self.done = true;
                    } else {
                        let jump = self.start_for(&self.dirs[self.next_dir].0);
                        let mostly_waste = matched.len() * 2 < total;
                        // Jump only forward, and only when this stretch was mostly other keys.
                        let forward = jump.as_ref().is_some_and(|j| past(&j.key, &next.key));
                        self.token = if mostly_waste && forward {
                            self.jumped = true;
                            jump
                        } else {
                            Some(next)
                        };
                    }
                }
            }
            if !matched.is_empty() {
                return Ok(Some(matched));
            }
        }
        Ok(None)
    }
}

/// When listing a range once more, as one, is not worth it (see `verify`): SeaweedFS, for one,
/// walks every emptied directory between two keys, which no key count shows but time does.
#[derive(Clone, Copy, Debug)]
pub struct RangeBudget {
    /// Keys of other subjects per directory of the range.
    pub others_per_directory: u64,
    /// The longest one LIST request of the range may take.
    pub slowest_request: Duration,
}

impl RangeWalker<'_> {
    /// Whether the walk so far read its directories as one cheap stretch: no jump, at most
    /// `others_per_directory` keys of other subjects per directory, and no request slower than
    /// `slowest_request`. Only then is a verification of the same range by one listing no
    /// dearer than the walk was (see `verify`).
    pub fn dense(&self, budget: RangeBudget) -> bool {
        let others = budget
            .others_per_directory
            .saturating_mul(self.dirs.len() as u64);
        !self.jumped && self.others <= others && self.slowest <= budget.slowest_request
    }

    /// Lists everything under the directories' common prefix from its very start, paging only
    /// with the server's own continuation (no constructed markers, so no ordering assumption),
    /// and reports every key inside one of the directories.
    pub async fn scan_all(
        &mut self,
        mut each: impl FnMut(&[usize], &ObjectVersion),
    ) -> Result<(), StoreError> {
        let mut token = None;
        loop {
            let page = self
                .store
                .list_page(self.bucket, &self.common, self.versions, token)
                .await?;
            self.requests += 1;
            for o in &page.items {
                let owners = self.owners_of(&o.key);
                if !owners.is_empty() {
                    each(&owners, o);
                }
            }
            match page.next {
                Some(t) => token = Some(t),
                None => return Ok(()),
            }
        }
    }
}

/// How a range verification ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Scan {
    /// The listing reached the end of the range (or of the prefix): every key of every
    /// directory was seen.
    Covered,
    /// The range holds more keys of other subjects than the budget: listing each directory on
    /// its own is cheaper.
    TooManyOthers,
    /// A request took longer than the budget (and was abandoned): the server is walking a long
    /// stretch of something, and listing each directory on its own is cheaper.
    TooSlow,
}

impl RangeWalker<'_> {
    /// Lists the range once, from just before its first directory until the last key seen is
    /// past every one of its directories (or the listing ends), paging only with the server's own
    /// continuation: none of the jumps `next_page` makes. Reports every key inside one of the
    /// directories. Gives up once more keys of no directory of the range have been read than
    /// the budget allows (a range interleaved with live subjects), or when a request takes
    /// longer than it allows (a range through a long stretch of emptied directories).
    pub async fn scan_range(
        &mut self,
        budget: RangeBudget,
        mut each: impl FnMut(&[usize], &ObjectVersion),
    ) -> Result<Scan, StoreError> {
        if self.dirs.is_empty() {
            return Ok(Scan::Covered);
        }
        let mut token = match self.dirs.len() {
            1 => None,
            _ => self.start_for(&self.dirs[0].0),
        };
        let others_limit = budget
            .others_per_directory
            .saturating_mul(self.dirs.len() as u64);
        let mut others = 0;
        loop {
            let request = self
                .store
                .list_page(self.bucket, &self.common, self.versions, token);
            self.requests += 1;
            let Ok(page) = tokio::time::timeout(budget.slowest_request, request).await else {
                return Ok(Scan::TooSlow);
            };
            let page = page?;
            for o in &page.items {
                let owners = self.owners_of(&o.key);
                if owners.is_empty() {
                    others += 1;
                } else {
                    each(&owners, o);
                }
            }
            // Past every directory, not just the last in sorted order: `runs/1/` sorts before
            // `runs/1/a/` yet ends after it.
            let beyond = page
                .items
                .last()
                .is_some_and(|o| self.dirs.iter().all(|(d, _)| past(&o.key, d)));
            match page.next {
                Some(t) if !beyond => token = Some(t),
                _ => return Ok(Scan::Covered),
            }
            if others > others_limit {
                return Ok(Scan::TooManyOthers);
            }
        }
    }
}

/// The longest prefix all of `items` share, cut back to a character boundary; "" for none.
pub fn common_prefix<'a>(items: impl IntoIterator<Item = &'a str>) -> &'a str {
    let mut items = items.into_iter();
    let Some(mut common) = items.next() else {
        return "";
    };
    for p in items {
        let mut n = common
            .bytes()
            .zip(p.bytes())
            .take_while(|(x, y)| x == y)
            .count();
        while !common.is_char_boundary(n) {
            n -= 1;
        }
        common = &common[..n];
    }
    common
}

/// Compares keys by path component, as a directory tree lists them.
pub fn tree_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    a.split('/').cmp(b.split('/'))
}

/// Whether `key` sorts after everything in or at `p` (a directory, or a key), in byte order and
/// in tree order alike.
fn past(key: &str, p: &str) -> bool {
    key > p && !key.starts_with(p) && tree_cmp(key, p) == std::cmp::Ordering::Greater
}

/// Whether directories sorted by bytes are also sorted in tree order, so one walk can serve them.
pub fn same_order(sorted_dirs: &[(String, usize)]) -> bool {
    sorted_dirs
        .windows(2)
        .all(|w| tree_cmp(&w[0].0, &w[1].0) != std::cmp::Ordering::Greater)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Versioning;
    use crate::storage::memory::MemoryStore;

    /// The budget `verify` uses, with `others` keys of other subjects per directory.
    fn budget(others: u64) -> RangeBudget {
        RangeBudget {
            others_per_directory: others,
            slowest_request: Duration::from_secs(2),
        }
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
            "runs/1/", "runs/19/", "runs/a0/", "runs/0/", "runs/10/", "a/b-c/", "runs/a-/",
            "runs/é/",
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
        let store = plain_bucket().await;
        // 300 subjects of 3 objects; only 3 of them are in the batch.
        for i in 0..300 {
            for j in 0..3 {
                store
                    .put("b", &format!("runs/{i:04}/{j}"), vec![])
                    .await
                    .unwrap();
            }
        }
        let dirs: Vec<(String, usize)> = [5, 150, 290]
            .iter()
            .enumerate()
            .map(|(n, i)| (format!("runs/{i:04}/"), n))
            .collect();
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
        let dirs: Vec<(String, usize)> =
            (0..50).map(|i| (format!("runs/{}/", 100 + i), i)).collect();
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
        let store = plain_bucket().await;
        for i in 0..300 {
            for j in 0..3 {
                store
                    .put("b", &format!("runs/{i:04}/{j}"), vec![])
                    .await
                    .unwrap();
            }
        }
        let dirs: Vec<(String, usize)> = [5, 150, 290]
            .iter()
            .enumerate()
            .map(|(n, i)| (format!("runs/{i:04}/"), n))
            .collect();
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
        let store = plain_bucket().await;
        for i in 0..50 {
            for j in 0..7 {
                store
                    .put("b", &format!("runs/{i}/{j}"), vec![])
                    .await
                    .unwrap();
            }
        }
        let dirs: Vec<(String, usize)> = (0..50).map(|i| (format!("runs/{i}/"), i)).collect();
        let (got, requests, dense) = collect(&store, false, &dirs).await;
        assert_eq!(got.len(), 350);
        assert!(requests <= 51, "{requests} requests for 50 pages of keys");
        assert!(dense, "one stretch: verification may list it as one range");
    }

    /// 40 directories of 2 keys, `runs/10/` to `runs/49/`, and a stretch the server walks for
    /// 30 s (emptied directories) between `runs/29/` and `runs/30/`.
    async fn a_range_over_a_slow_stretch() -> (MemoryStore, Vec<(String, usize)>) {
        let store = plain_bucket().await;
        for i in 10..50 {
            for j in 0..2 {
                store
                    .put("b", &format!("runs/{i}/{j}"), vec![])
                    .await
                    .unwrap();
            }
        }
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
}
