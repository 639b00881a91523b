//! Anchors: the audit chain's head `(seq, hash)` written outside the database, so that someone
//! able to rewrite the table and recompute every hash (or cut its tail) is still caught: every
//! anchor must be an entry of the chain with that very hash.
//!
//! A target is a file (one JSON line appended per anchor) or `s3://bucket/prefix`, where each
//! anchor is an object named `{prefix}anchor-{seq:020}-{hash}.json`: a listing alone reads
//! them back (every version of them: a delete marker hiding an anchor is itself reported). Point
//! it at a bucket with Object Lock (default retention) or versioning so the anchors themselves
//! cannot be quietly replaced.

use crate::storage::ObjectStore;
use anyhow::{Context as _, Result, bail};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::PathBuf;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    pub seq: i64,
    pub hash: String,
    /// When it was written (the database clock); not kept for S3 anchors, whose names carry
    /// the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug)]
pub enum Target {
    File(PathBuf),
    S3 { bucket: String, prefix: String },
}

impl Target {
    pub fn parse(text: &str) -> Result<Target> {
        if let Some(rest) = text.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                bail!("`{text}`: no bucket; write s3://BUCKET/PREFIX");
            }
            let mut prefix = prefix.to_string();
            if !prefix.is_empty() && !prefix.ends_with('/') {
                prefix.push('/');
            }
            return Ok(Target::S3 {
                bucket: bucket.to_string(),
                prefix,
            });
        }
        if text.trim().is_empty() {
            bail!("an anchor target is a file path or s3://BUCKET/PREFIX");
        }
        Ok(Target::File(PathBuf::from(text)))
    }

    /// Records `a`; S3 anchors in a bucket with Object Lock are retained `retention_days`.
    pub async fn write(
        &self,
        store: &dyn ObjectStore,
        a: &Anchor,
        retention_days: i64,
    ) -> Result<()> {
        let line = serde_json::to_string(a)?;
        match self {
            Target::File(path) => {
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("opening the anchor file {}", path.display()))?;
                writeln!(f, "{line}")?;
                f.sync_all()
                    .with_context(|| format!("writing the anchor file {}", path.display()))?;
            }
            Target::S3 { bucket, prefix } => {
                let key = format!("{prefix}anchor-{:020}-{}.json", a.seq, a.hash);
                let fail = |e| anyhow::anyhow!("writing the anchor s3://{bucket}/{key}: {e}");
                // Retained in compliance mode where the bucket has Object Lock, so not even the
                // bucket's owner can remove or replace the anchor before the retention ends.
                if store.object_lock_enabled(bucket).await.map_err(fail)? {
                    let until = Utc::now() + chrono::Duration::days(retention_days);
                    store
                        .put_retained(bucket, &key, line.into_bytes(), until)
                        .await
                        .map_err(fail)?;
                } else {
                    store
                        .put(bucket, &key, line.into_bytes())
                        .await
                        .map_err(fail)?;
                }
            }
        }
        Ok(())
    }

    /// Every anchor recorded, in `seq` order (for S3, every version of every anchor object,
    /// hidden or not).
    pub async fn read(&self, store: &dyn ObjectStore) -> Result<Vec<Anchor>> {
        Ok(self.read_checked(store).await?.0)
    }

    /// Every anchor recorded, in `seq` order, and the signs that someone tried to remove one.
    /// S3 anchors are read from a listing of versions, not of current objects: with Object Lock
    /// an anchor's version cannot be deleted, but a delete marker can hide it, and a new anchor
    /// put beside it would then be all a plain listing shows. A hidden anchor is still read (and
    /// checked against the chain), and its delete marker is reported.
    pub async fn read_checked(
        &self,
        store: &dyn ObjectStore,
    ) -> Result<(Vec<Anchor>, Vec<String>)> {
        let mut out = Vec::new();
        let mut hidden = Vec::new();
        match self {
            Target::File(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading the anchor file {}", path.display()))?;
                for (i, line) in text
                    .lines()
                    .enumerate()
                    .filter(|(_, l)| !l.trim().is_empty())
                {
                    out.push(
                        serde_json::from_str(line).with_context(|| {
                            format!("{}:{}: not an anchor", path.display(), i + 1)
                        })?,
                    );
                }
            }
            Target::S3 { bucket, prefix } => {
                let mut token = None;
                loop {
                    let page = store
                        .list_page(bucket, prefix, true, token)
                        .await
                        .map_err(|e| {
                            anyhow::anyhow!("listing anchors in s3://{bucket}/{prefix}: {e}")
                        })?;
                    for item in page.items {
                        let name = &item.key[prefix.len().min(item.key.len())..];
                        let Some(stem) = name
                            .strip_prefix("anchor-")
                            .and_then(|n| n.strip_suffix(".json"))
                        else {
                            continue;
                        };
                        if item.delete_marker {
                            hidden.push(format!(
                                "anchor s3://{bucket}/{} is hidden by a delete marker (version \
                                 {}): someone tried to remove it",
                                item.key,
                                item.version_id.as_deref().unwrap_or("null")
                            ));
                            continue;
                        }
                        let (seq, hash) = stem.split_once('-').with_context(|| {
                            format!("s3://{bucket}/{}: not an anchor name", item.key)
                        })?;
                        let anchor = Anchor {
                            seq: seq.parse().with_context(|| {
                                format!("s3://{bucket}/{}: bad sequence number", item.key)
                            })?,
                            hash: hash.to_string(),
                            at: None,
                        };
                        // Versions of one object name one anchor.
                        if !out.contains(&anchor) {
                            out.push(anchor);
                        }
                    }
                    match page.next {
                        Some(t) => token = Some(t),
                        None => break,
                    }
                }
            }
        }
        out.sort_by(|a, b| (a.seq, &a.hash).cmp(&(b.seq, &b.hash)));
        Ok((out, hidden))
    }
}

/// The chain head as stored (not re-verified): what an anchor records.
pub async fn head(db: &crate::db::Db) -> Result<Option<Anchor>> {
    let row = crate::db::audit::head(db).await?;
    Ok(row.map(|(seq, hash, at)| Anchor {
        seq,
        hash,
        at: Some(at),
    }))
}

/// Checks anchors against the chain as it is verified, entry by entry.
pub struct AnchorCheck {
    anchors: std::collections::VecDeque<Anchor>,
    last_good: i64,
}

impl AnchorCheck {
    pub fn new(anchors: Vec<Anchor>) -> Self {
        AnchorCheck {
            anchors: anchors.into(),
            last_good: 0,
        }
    }

    /// After entry `seq` verified with hash `hash`.
    pub fn entry(&mut self, seq: i64, hash: &str) -> Result<(), String> {
        while let Some(a) = self.anchors.front() {
            if a.seq > seq {
                break;
            }
            if a.seq == seq && a.hash != hash {
                return Err(format!(
                    "entry {seq}: does not match the anchor recorded for it ({}): the log was rewritten \
                     and rehashed at entry {seq} or before (entries up to {} match their anchors)",
                    a.hash, self.last_good
                ));
            }
            self.last_good = a.seq;
            self.anchors.pop_front();
        }
        Ok(())
    }

    /// After the last entry (`head`): an anchor beyond it means the tail was cut.
    pub fn end(&self, head: i64) -> Result<(), String> {
        match self.anchors.back() {
            Some(a) => Err(format!(
                "entry {}: missing: the chain ends at entry {head} but an anchor records entry {} \
                 (the tail of the log was removed)",
                head + 1,
                a.seq
            )),
            None => Ok(()),
        }
    }
}
