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
    /// Where the walk stopped because it may not go on (see `handed_back`).
    handed_back_from: Option<usize>,
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
            handed_back_from: None,
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

    /// Whether `key`, as a listing's continuation, names a directory of this walk not yet
    /// passed (or one of its parents): `runs/1000` for `runs/1000/` or `runs/1000/a/`.
    fn shadows_a_directory(&self, key: &str) -> bool {
        let dir = format!("{key}/");
        self.dirs[self.next_dir..]
            .iter()
            .any(|(p, _)| p.starts_with(&dir))
    }

    /// The directories this walk stopped before, with their owners, because it could only have
    /// continued from a key named like one of them (`shadows_a_directory`). The caller lists
    /// each under its own prefix.
    pub fn handed_back(&self) -> &[(String, Vec<usize>)] {
        match self.handed_back_from {
            Some(i) => &self.dirs[i..],
            None => &[],
        }
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
            let page = self
                .store
                .list_page(self.bucket, &self.common, self.versions, token)
                .await?;
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
            // A page that ends on `runs/1000` while the directory `runs/1000/` is still to come:
            // SeaweedFS reads a listing continued from that key as past the whole directory,
            // and may even call such a page the last one. Never continue from it: the
            // directories not yet passed are handed back, to be listed each on its own.
            if last.as_deref().is_some_and(|k| self.shadows_a_directory(k)) {
                self.handed_back_from = Some(self.next_dir);
                self.done = true;
            }
            match page.next {
                _ if self.done => {}
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
