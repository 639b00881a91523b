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

impl RangeBudget {
    /// Keys of other subjects a range of `dirs` directories may read.
    fn others_for(self, dirs: usize) -> u64 {
        self.others_per_directory.saturating_mul(dirs as u64)
    }
}

impl RangeWalker<'_> {
    /// Whether the walk so far read its directories as one cheap stretch: no jump, at most
    /// `others_per_directory` keys of other subjects per directory, and no request slower than
    /// `slowest_request`. Only then is a verification of the same range by one listing no
    /// dearer than the walk was (see `verify`).
    pub fn dense(&self, budget: RangeBudget) -> bool {
        !self.jumped
            && self.others <= budget.others_for(self.dirs.len())
            && self.slowest <= budget.slowest_request
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
        let others_limit = budget.others_for(self.dirs.len());
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
mod tests;
