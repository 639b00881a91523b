//! The fence in front of every object deletion. Work items are claimed under a lease with an
//! epoch; before a DeleteObjects request (or an upload abort) is sent, the batch's leases must
//! be known to be ours. A renewal extends them in one statement, fenced by epoch and run, and
//! answers which items are still ours; it holds for `validity()` of the local monotonic clock,
//! well inside the lease, so a request sent in that time cannot race another process's
//! take-over (which needs the lease to have expired). A process that was paused or cut off
//! finds the validity spent when it wakes, renews, learns it lost the items, and deletes nothing
//! more for them.

use crate::db::items;
use std::collections::HashSet;
use std::time::{Duration, Instant};

pub struct Lease {
    db: crate::db::Db,
    run_id: i64,
    lease_secs: i64,
    /// `(work item id, epoch)` per subject index of the purge.
    items: Vec<(i64, i64)>,
    state: tokio::sync::Mutex<Renewed>,
}

struct Renewed {
    until: Instant,
    lost: HashSet<usize>,
}

/// Why subjects' objects may not be deleted now.
pub const LOST: &str = "the lease on this subject was lost (taken over by another process, or it expired); nothing more was deleted";

impl Lease {
    /// Leases just claimed (or advanced) by this process: valid for now.
    pub fn new(db: crate::db::Db, run_id: i64, lease_secs: i64, items: Vec<(i64, i64)>) -> Self {
        Lease {
            db,
            run_id,
            lease_secs,
            items,
            state: tokio::sync::Mutex::new(Renewed {
                until: Instant::now(),
                lost: HashSet::new(),
            }),
        }
    }

    /// How long a renewal is trusted: a quarter of the lease, at most 30 s.
    fn validity(&self) -> Duration {
        Duration::from_secs((self.lease_secs as u64 / 4).clamp(1, 30))
    }

    /// Of `subjects`, those whose objects must not be deleted: the lease was lost, or it could
    /// not be confirmed (then the error says why).
    pub async fn refused(&self, subjects: &HashSet<usize>) -> Result<HashSet<usize>, String> {
        let mut s = self.state.lock().await;
        if Instant::now() >= s.until {
            let asked = Instant::now();
            let ours: HashSet<i64> =
                items::renew(&self.db, self.run_id, self.lease_secs, &self.items)
                    .await
                    .map_err(|e| {
                        format!("cannot confirm the lease, so nothing was deleted: {e:#}")
                    })?
                    .into_iter()
                    .collect();
            for (i, (id, _)) in self.items.iter().enumerate() {
                if !ours.contains(id) {
                    s.lost.insert(i);
                }
            }
            s.until = asked + self.validity();
        }
        Ok(subjects.intersection(&s.lost).copied().collect())
    }
}
