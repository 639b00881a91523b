//! Listing a batch's locations: one location at a time (`Walker`), a bucket's directories in
//! contiguous runs (`ListTask`, over `RangeWalker`), and unfinished uploads matched to subjects.

use super::ranges::RangeWalker;
use crate::domain::Location;
use crate::storage::{ObjectStore, ObjectVersion, StoreError};
use tokio::sync::mpsc;

/// A listed version, with the subject it is tallied to and its bucket.
pub(super) type Tagged = (usize, String, ObjectVersion);

/// Pages through everything under one location. A directory prefix yields only keys under it,
/// listed under its own prefix; the exact key (if any) comes last, from
/// `ObjectStore::exact_versions` (asked about that key alone, never read off a wider listing).
pub struct Walker<'a> {
    store: &'a dyn ObjectStore,
    loc: &'a Location,
    versions: bool,
    exact_phase: bool,
    token: Option<crate::storage::PageToken>,
    done: bool,
}

impl<'a> Walker<'a> {
    pub fn new(store: &'a dyn ObjectStore, loc: &'a Location, versions: bool) -> Self {
        if loc.object_only {
            return Walker::exact_only(store, loc, versions);
        }
        Walker {
            store,
            loc,
            versions,
            exact_phase: false,
            token: None,
            done: false,
        }
    }

    /// Only the exact key of `loc` (its directory is listed by a `RangeWalker`).
    pub fn exact_only(store: &'a dyn ObjectStore, loc: &'a Location, versions: bool) -> Self {
        Walker {
            store,
            loc,
            versions,
            exact_phase: true,
            token: None,
            done: loc.exact_key().is_none(),
        }
    }

    /// The next non-empty page, or `None` at the end.
    pub async fn next_page(&mut self) -> Result<Option<Vec<ObjectVersion>>, StoreError> {
        while !self.done {
            if self.exact_phase {
                self.done = true;
                let key = self.loc.exact_key().unwrap_or_default();
                let items = self
                    .store
                    .exact_versions(&self.loc.bucket, key, self.versions)
                    .await?;
                return Ok((!items.is_empty()).then_some(items));
            }
            let page = self
                .store
                .list_page(
                    &self.loc.bucket,
                    &self.loc.prefix,
                    self.versions,
                    self.token.take(),
                )
                .await?;
            let mut items = page.items;
            items.retain(|i| i.key.starts_with(&self.loc.prefix));
            self.token = page.next;
            if self.token.is_none() {
                if self.loc.exact_key().is_some() {
                    self.exact_phase = true;
                } else {
                    self.done = true;
                }
            }
            if !items.is_empty() {
                return Ok(Some(items));
            }
        }
        Ok(None)
    }
}

/// One listing job: a contiguous run of a bucket's directories, or one exact object key.
pub enum ListTask {
    Dirs {
        bucket: String,
        dirs: Vec<(String, usize)>,
    },
    Exact {
        owner: usize,
        loc: Location,
    },
}

impl ListTask {
    pub(super) fn owners(&self) -> Vec<usize> {
        match self {
            ListTask::Dirs { dirs, .. } => dirs.iter().map(|d| d.1).collect(),
            ListTask::Exact { owner, .. } => vec![*owner],
        }
    }

    pub(super) fn bucket(&self) -> &str {
        match self {
            ListTask::Dirs { bucket, .. } => bucket,
            ListTask::Exact { loc, .. } => &loc.bucket,
        }
    }

    pub(super) fn describe(&self) -> String {
        match self {
            ListTask::Dirs { bucket, dirs } => format!(
                "s3://{bucket}/{}..{} ({} directories)",
                dirs.first().map(|d| d.0.as_str()).unwrap_or(""),
                dirs.last().map(|d| d.0.as_str()).unwrap_or(""),
                dirs.len()
            ),
            ListTask::Exact { loc, .. } => {
                format!("s3://{}/{}", loc.bucket, loc.exact_key().unwrap_or(""))
            }
        }
    }

    /// Sends every entry this task lists into `tx`, tagged with its first owner: a key inside
    /// two subjects' directories is deleted once and tallied to the first; verification checks
    /// it for every owner. Stops early if the receiver is gone. A range walk that stops where it
    /// may not continue (`RangeWalker::handed_back`) lists the rest of its directories each
    /// under its own prefix.
    pub(super) async fn send_all(
        &self,
        store: &dyn ObjectStore,
        versions: bool,
        tx: &mpsc::Sender<Tagged>,
    ) -> Result<(), StoreError> {
        let send =
            |owner: usize, item: ObjectVersion| tx.send((owner, self.bucket().to_string(), item));
        match self {
            ListTask::Dirs { bucket, dirs } => {
                let mut w = RangeWalker::new(store, bucket, versions, dirs);
                while let Some(page) = w.next_page().await? {
                    for (owners, item) in page {
                        if send(owners[0], item).await.is_err() {
                            return Ok(());
                        }
                    }
                }
                tracing::debug!(
                    range = %self.describe(),
                    requests = w.requests,
                    others = w.others,
                    jumped = w.jumped,
                    handed_back = w.handed_back().len(),
                    "range listed"
                );
                for (dir, owners) in w.handed_back() {
                    let mut one =
                        RangeWalker::new(store, bucket, versions, &[(dir.clone(), owners[0])]);
                    while let Some(page) = one.next_page().await? {
                        for (_, item) in page {
                            if send(owners[0], item).await.is_err() {
                                return Ok(());
                            }
                        }
                    }
                }
            }
            ListTask::Exact { owner, loc } => {
                let mut w = Walker::exact_only(store, loc, versions);
                while let Some(page) = w.next_page().await? {
                    for item in page {
                        if send(*owner, item).await.is_err() {
                            return Ok(());
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Splits the batch's locations into listing tasks: per bucket, the sorted directories in up to
/// `parts` contiguous runs (walked concurrently), and one task per exact object key. Sparse
/// neighbours are listed apart (`apart`).
pub fn list_tasks(locations: &[Vec<Location>], parts: usize) -> Vec<ListTask> {
    let mut by_bucket: std::collections::BTreeMap<&str, Vec<(String, usize)>> = Default::default();
    let mut tasks = Vec::new();
    for (i, locs) in locations.iter().enumerate() {
        for l in locs {
            if let Some(p) = l.dir_prefix() {
                by_bucket
                    .entry(&l.bucket)
                    .or_default()
                    .push((p.to_string(), i));
            }
            if l.exact_key().is_some() {
                tasks.push(ListTask::Exact {
                    owner: i,
                    loc: l.clone(),
                });
            }
        }
    }
    for (bucket, mut dirs) in by_bucket {
        dirs.sort();
        if !super::ranges::same_order(&dirs) {
            // The server's listing order of these directories is unknown: list each on its own.
            tasks.extend(dirs.into_iter().map(|d| ListTask::Dirs {
                bucket: bucket.to_string(),
                dirs: vec![d],
            }));
            continue;
        }
        let chunk = dirs.len().div_ceil(parts.max(1)).max(1);
        // Keep equal prefixes in one task so no directory is listed twice, and end a task
        // between sparse neighbours (`apart`): any number of other directories may lie between
        // them, and each side lists under a longer prefix of its own.
        let mut start = 0;
        while start < dirs.len() {
            let mut end = (start + chunk).min(dirs.len());
            while end < dirs.len() && dirs[end].0 == dirs[end - 1].0 {
                end += 1;
            }
            if let Some(gap) = (start + 1..end).find(|&k| apart(&dirs[k - 1].0, &dirs[k].0)) {
                end = gap;
            }
            tasks.push(ListTask::Dirs {
                bucket: bucket.to_string(),
                dirs: dirs[start..end].to_vec(),
            });
            start = end;
        }
    }
    tasks
}

/// Whether two neighbouring directories are to be listed apart, because a range from one to the
/// other may read any number of other directories only to skip them: they share nothing beyond
/// the parent directory of either (`runs/100000/` and `runs/98001/`; not `runs/1/a/` and
/// `runs/10/`), or, under that parent, their names are numbers with room for more than
/// `NUMBERS_APART` others between them in byte order (`runs/98002/` and `runs/99999/`; not
/// `runs/1009/` and `runs/101/`, neighbours in any listing), or other names sharing less than
/// half of the shorter (`8/61d4…/` and `8/6eb2…/`: MLflow's random run ids, with room for
/// thousands of directories between them). Consecutive ids (`runs/109/`, `runs/110/`) stay in
/// one range.
///
/// What a skipped directory costs depends on the server: SeaweedFS walks each directory a
/// listing passes (about 1 ms of its CPU for a 5-object MLflow run, and every emptied one
/// too), so reading others' keys is not cheap there even on a plain bucket; on the MLflow
/// world, ranges read 480 live runs to find 470 deleted ones, and listing apart took 9-14% less
/// of the server's CPU in two sets of paired runs (docs/performance.md). A range still serves
/// consecutive ids, where it reads few others and saves requests.
fn apart(a: &str, b: &str) -> bool {
    let parent = |d: &str| {
        let d = d.strip_suffix('/').unwrap_or(d);
        d.rfind('/').map_or(0, |i| i + 1)
    };
    let under = parent(a).min(parent(b));
    let common = super::ranges::common_prefix([a, b]).len();
    if common <= under {
        return true;
    }
    let (x, y) = (first_name(a, under), first_name(b, under));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    if digits(x) && digits(y) {
        return numbers_between(x, y).is_none_or(|n| n > NUMBERS_APART);
    }
    (common - under) * 2 < x.len().min(y.len())
}

/// How many other numbers, written with no more digits than the longer of `x` and `y`, sort
/// strictly between them in byte order, the order a listing walks: none between `1009` and
/// `101` (neighbours in a listing of ids 1-2,000), 2,215 between `98002` and `99999`, 3 between
/// `10` and `100000` (`100`, `1000`, `10000`). `None` for numbers too long to count.
fn numbers_between(x: &str, y: &str) -> Option<u128> {
    let len = x.len().max(y.len());
    // Strings of at most `k` digits, the empty one included: (10^(k+1) - 1) / 9.
    let up_to = |k: usize| -> Option<u128> {
        Some((10u128.checked_pow(u32::try_from(k).ok()? + 1)? - 1) / 9)
    };
    // Strings of at most `len` digits sorting before `s`: each proper prefix of `s`, and at
    // each position the strings that branch off there with a smaller digit.
    let before = |s: &str| -> Option<u128> {
        s.bytes().enumerate().try_fold(0u128, |n, (i, d)| {
            n.checked_add(1)?
                .checked_add(u128::from(d - b'0').checked_mul(up_to(len - 1 - i)?)?)
        })
    };
    let (p, q) = (before(x)?, before(y)?);
    Some(p.abs_diff(q).saturating_sub(1))
}

/// The first path segment of `dir` from byte `at` (a segment's start).
fn first_name(dir: &str, at: usize) -> &str {
    dir[at..].split('/').next().unwrap_or_default()
}

/// Numbered directories with more possible others than this between them in a listing
/// (`numbers_between`) are listed apart (`apart`): a range may read them all only to skip them.
const NUMBERS_APART: u128 = 100;

/// The uploads one listing found, or why it could not.
type Listed = Result<Vec<crate::storage::Upload>, StoreError>;

/// Unfinished uploads at each subject's locations, found with one listing per bucket under the
/// longest prefix the batch's locations share (uploads are rare, so one call usually answers
/// for a whole batch), then matched to locations here exactly as objects are: under the
/// directory prefix, or equal to the exact key. A subject whose uploads could not be listed
/// gets the error: when the shared listing meets an upload the store cannot name
/// (`StoreError::Unnameable`), each location is listed on its own, so only the subject holding
/// it fails.
pub(super) async fn uploads_by_subject(
    store: &dyn ObjectStore,
    locations: &[Vec<Location>],
) -> Vec<Result<Vec<(String, crate::storage::Upload)>, String>> {
    let mut out: Vec<Result<Vec<_>, String>> = vec![Ok(Vec::new()); locations.len()];
    let mut buckets: Vec<&str> = locations
        .iter()
        .flatten()
        .map(|l| l.bucket.as_str())
        .collect();
    buckets.sort_unstable();
    buckets.dedup();
    for bucket in buckets {
        let locs: Vec<(usize, &Location)> = locations
            .iter()
            .enumerate()
            .flat_map(|(i, ls)| {
                ls.iter()
                    .filter(|l| l.bucket == bucket)
                    .map(move |l| (i, l))
            })
            .collect();
        let at = |l: &Location| l.exact_key().unwrap_or(&l.prefix).to_string();
        let common = super::ranges::common_prefix(
            locs.iter().map(|(_, l)| l.exact_key().unwrap_or(&l.prefix)),
        );
        let whys = |e: StoreError| format!("listing unfinished uploads in bucket `{bucket}`: {e}");
        let lists: Vec<(Vec<usize>, Listed)> = match store.list_uploads(bucket, common).await {
            Err(StoreError::Unnameable(_)) if locs.len() > 1 => {
                let mut each = Vec::new();
                for (i, l) in &locs {
                    each.push((vec![*i], store.list_uploads(bucket, &at(l)).await));
                }
                each
            }
            r => vec![(locs.iter().map(|(i, _)| *i).collect(), r)],
        };
        for (owners, listed) in lists {
            match listed {
                Ok(uploads) => {
                    for u in uploads {
                        for (i, l) in locs.iter().filter(|(i, _)| owners.contains(i)) {
                            if let (true, Ok(found)) = (l.covers(&u.key), &mut out[*i]) {
                                found.push((bucket.to_string(), u.clone()));
                            }
                        }
                    }
                }
                Err(e) => {
                    let why = whys(e);
                    for i in owners {
                        if out[i].is_ok() {
                            out[i] = Err(why.clone());
                        }
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(prefixes: &[&str], parts: usize) -> Vec<Vec<String>> {
        let locations: Vec<Vec<Location>> = prefixes
            .iter()
            .map(|p| vec![Location::dir("bkt", p).unwrap()])
            .collect();
        list_tasks(&locations, parts)
            .into_iter()
            .map(|t| match t {
                ListTask::Dirs { dirs, .. } => dirs.into_iter().map(|d| d.0).collect(),
                ListTask::Exact { loc, .. } => panic!("{loc:?} is no directory"),
            })
            .collect()
    }

    #[test]
    fn a_range_never_spans_neighbours_that_share_only_their_parent_or_are_far_apart() {
        let got = ranges(
            &[
                "runs/98001/",
                "runs/100000/",
                "runs/99999/",
                "runs/1/a/",
                "runs/10/",
                "runs/1/",
                "runs/98002/",
            ],
            1,
        );
        assert_eq!(
            got,
            vec![
                vec!["runs/1/", "runs/1/a/", "runs/10/", "runs/100000/"],
                vec!["runs/98001/", "runs/98002/"],
                vec!["runs/99999/"],
            ]
        );
        // Within the size of a part, the same split.
        let got = ranges(&["runs/19/", "runs/2/", "runs/20/", "runs/21/"], 2);
        assert_eq!(
            got,
            vec![
                vec!["runs/19/"],
                vec!["runs/2/", "runs/20/"],
                vec!["runs/21/"]
            ]
        );
    }

    #[test]
    fn sparse_neighbours_are_listed_apart() {
        // MLflow's run directories: random hex under an experiment's directory.
        let mlflow = [
            "8/61d43c249e5a4034a8d4996fbcaf14aa/",
            "8/6eb27ff30d4f4be9bdb83cd8b3d0be4b/",
            "8/6eb2ffff0d4f4be9bdb83cd8b3d0be4b/",
            "8/7b094457077d4792a4d8113a422ace2f/",
        ];
        assert_eq!(ranges(&mlflow, 1).len(), 4);
        let got = ranges(&["runs/1041/", "runs/1042/", "runs/1043/", "runs/1099/"], 1);
        assert_eq!(
            got,
            vec![vec!["runs/1041/", "runs/1042/", "runs/1043/", "runs/1099/"]]
        );
        let got = ranges(&["runs/1099/", "runs/1100/", "runs/1301/"], 1);
        assert_eq!(
            got,
            vec![vec!["runs/1099/", "runs/1100/"], vec!["runs/1301/"]]
        );
        let got = ranges(
            &[
                "runs/10/",
                "runs/100000/",
                "runs/98001/",
                "runs/98002/",
                "runs/99999/",
            ],
            1,
        );
        assert_eq!(
            got,
            vec![
                vec!["runs/10/", "runs/100000/"],
                vec!["runs/98001/", "runs/98002/"],
                vec!["runs/99999/"],
            ]
        );
        // Ids 1-2,000 in byte order jump numerically (`runs/1009/`, `runs/101/`) with nothing
        // between them: one range per first digit (`runs/1999/` and `runs/2/` share only
        // their parent).
        let dense: Vec<String> = (1..=2000).map(|i| format!("runs/{i}/")).collect();
        let dense: Vec<&str> = dense.iter().map(String::as_str).collect();
        let got = ranges(&dense, 1);
        assert_eq!(got.len(), 9);
        assert_eq!(got[0].len(), 1111, "runs/1/ to runs/1999/ in one range");
    }

    #[test]
    fn numbers_between_counts_what_a_listing_walks_past() {
        assert_eq!(numbers_between("1009", "101"), Some(0));
        assert_eq!(numbers_between("101", "1009"), Some(0));
        assert_eq!(numbers_between("100", "1000"), Some(0));
        assert_eq!(numbers_between("10", "100000"), Some(3));
        assert_eq!(numbers_between("7", "7"), Some(0));
        // 98003-99998, and 9801-9999, 981-999, 99 with fewer digits.
        assert_eq!(numbers_between("98002", "99999"), Some(2215));
        // 1044-1098, and 105-109 of three digits.
        assert_eq!(numbers_between("1043", "1099"), Some(60));
        assert_eq!(numbers_between(&"9".repeat(40), "1"), None);
    }
}
