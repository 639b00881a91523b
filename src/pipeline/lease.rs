//! The fence in front of every object deletion. Work items are claimed under a lease with an
//! epoch; before each DeleteObjects attempt (and each upload abort) the batch's leases must be
//! confirmed ours and its subjects confirmed unheld by a database check that *started after the
//! request was queued*. Concurrent requests share one check (a read barrier: a request waits for
//! the next check to start, never reuses one that began before it asked), so the cost is one
//! round trip per wave of requests, not per request. A check is trusted for a quarter of the
//! lease (at most 30 s) from when it started, by the monotonic clock, and not at all when it
//! took longer than that: a process paused in the middle of a check (or after it) checks again
//! when it wakes, finds its lease expired or taken over, and deletes nothing more.
//!
//! A renewal extends the leases in one statement fenced by epoch and run, and answers which
//! items are still ours: an item taken over by another run (its epoch moved), or whose lease ran
//! out while this process was paused, is lost, and nothing more is deleted for it.
//!
//! Holds: a hold committed after the batch's hold check must stop its remaining deletes. Every
//! check reads the holds' change counter (bumped by a trigger in the transaction of any insert,
//! update or delete of a hold, lethe's or another tool's); when it moved, the batch's subjects
//! are checked against the holds again, with the same query as the hold check, and the newly
//! held ones are refused. What can still reach
//! the store after a hold commits is only a request that passed its check before the commit.

use crate::db::sql::Sql;
use crate::db::{Db, holds, items};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

pub struct Lease {
    db: Db,
    run_id: i64,
    lease_secs: i64,
    /// `(work item id, epoch)` per subject index of the purge.
    items: Vec<(i64, i64)>,
    watch: Option<HoldWatch>,
    /// The job's run lock: lost, every check fails and nothing more is deleted.
    run_lock: Option<crate::db::runs::LockCheck>,
    state: tokio::sync::Mutex<Checked>,
}

/// How to ask whether the purge's subjects are held: the batch's hold query (answering
/// `(key, hold id)`) and each key's subject indexes.
pub struct HoldWatch {
    pub query: Sql,
    pub keys: Vec<String>,
}

struct Checked {
    /// When the last check started; a request queued after it waits for the next one.
    started: Option<Instant>,
    /// The holds' change counter as the last hold check saw it.
    holds_seen: i64,
    lost: HashSet<usize>,
    held: HashMap<usize, i64>,
}

/// Why a subject's objects may not be deleted now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The lease was lost or could not be confirmed.
    Lost(String),
    /// A hold placed during the purge covers the subject.
    Held(i64),
}

/// Checks one request may make before it gives up on confirming its lease.
const CHECK_TRIES: u32 = 3;

/// Why subjects' objects may not be deleted now.
pub const LOST: &str = "the lease on this subject was lost (taken over by another process, or it expired); nothing more was deleted";

impl Lease {
    /// Leases just claimed (or advanced) by this process. `holds_seen` is the holds' change
    /// counter read before the batch's hold check: any change since is checked at the first
    /// request.
    pub fn new(
        db: Db,
        run_id: i64,
        lease_secs: i64,
        items: Vec<(i64, i64)>,
        watch: Option<HoldWatch>,
        holds_seen: i64,
        run_lock: Option<crate::db::runs::LockCheck>,
    ) -> Self {
        Lease {
            db,
            run_id,
            lease_secs,
            items,
            watch,
            run_lock,
            state: tokio::sync::Mutex::new(Checked {
                started: None,
                holds_seen,
                lost: HashSet::new(),
                held: HashMap::new(),
            }),
        }
    }

    /// How long a check is trusted after it started: a quarter of the lease, at most 30 s. A
    /// check that took longer (a paused process, a stalled database) is not trusted at all.
    fn validity(&self) -> Duration {
        Duration::from_secs((self.lease_secs as u64 / 4).clamp(1, 30))
    }

    /// Of `subjects`, those whose objects must not be deleted, each with the reason. Answers
    /// from a check that started after this call, and no longer ago than `validity()`.
    pub async fn refused(&self, subjects: &HashSet<usize>) -> HashMap<usize, Refusal> {
        let asked = Instant::now();
        let mut s = self.state.lock().await;
        let mut tries = 0;
        while s
            .started
            .is_none_or(|t| t < asked || t.elapsed() >= self.validity())
        {
            tries += 1;
            let started = Instant::now();
            let checked = match self.check(&mut s).await {
                Ok(()) if started.elapsed() < self.validity() => Ok(()),
                Ok(()) => Err(format!(
                    "the check took {:?}, longer than a lease check is trusted",
                    started.elapsed()
                )),
                Err(e) => Err(format!("{e:#}")),
            };
            match checked {
                Ok(()) => s.started = Some(started),
                Err(e) if tries >= CHECK_TRIES => {
                    // Not confirmed: nothing may be deleted, and the next request asks again.
                    let why =
                        format!("cannot confirm the lease and holds, so nothing was deleted: {e}");
                    return subjects
                        .iter()
                        .map(|&i| (i, Refusal::Lost(why.clone())))
                        .collect();
                }
                Err(_) => {}
            }
        }
        subjects
            .iter()
            .filter_map(|&i| {
                // A lost item is not ours to record, held or not.
                if s.lost.contains(&i) {
                    Some((i, Refusal::Lost(LOST.into())))
                } else {
                    s.held.get(&i).map(|&h| (i, Refusal::Held(h)))
                }
            })
            .collect()
    }

    async fn check(&self, s: &mut Checked) -> anyhow::Result<()> {
        if let Some(lock) = &self.run_lock
            && !lock.held().await
        {
            anyhow::bail!("the run lock was lost (its database session ended)");
        }
        let (renewed, latest) = tokio::join!(
            items::renew(&self.db, self.run_id, self.lease_secs, &self.items),
            holds::changes(&self.db),
        );
        let ours: HashSet<i64> = renewed?.into_iter().collect();
        for (i, (id, _)) in self.items.iter().enumerate() {
            if !ours.contains(id) {
                s.lost.insert(i);
            }
        }
        let latest = latest?;
        if latest != s.holds_seen {
            if let Some(w) = self
                .watch
                .as_ref()
                .filter(|_| !crate::controls::on("no-hold-fence"))
            {
                let found: Vec<(String, i64)> = w.query.fetch_all(&self.db).await?;
                let found: HashMap<&str, i64> =
                    found.iter().map(|(k, h)| (k.as_str(), *h)).collect();
                for (i, key) in w.keys.iter().enumerate() {
                    if let Some(&h) = found.get(key.as_str()) {
                        s.held.entry(i).or_insert(h);
                    }
                }
            }
            s.holds_seen = latest;
        }
        Ok(())
    }
}
