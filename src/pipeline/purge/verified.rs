//! Step 5 of a batch, verification: every location of every purged subject asked of the store
//! again, on its own; leftovers purged again directory by directory while a pass still deletes
//! something; a subject with anything left fails with its rows kept.

use super::{Batch, advance};
use crate::domain::ItemState;
use crate::pipeline::{JobReport, Ready, objects, verify};
use anyhow::Result;

/// Purges after the first, each directory listed on its own, while verification still finds
/// leftovers and the previous pass deleted something.
const CAREFUL_PASSES: usize = 3;

impl Batch<'_> {
    /// Step 5, verification: each location asked of the store on its own. Leftovers (a listing
    /// that surprised us) are purged again, each directory listed on its own by its own prefix,
    /// and verified again, for as long as a pass still deletes something; a subject with
    /// anything left fails with its rows kept. The rest move to `verified`.
    pub(super) async fn verify(
        &self,
        purged: Vec<Ready>,
        report: &mut JobReport,
    ) -> Result<Vec<Ready>> {
        let mut purged = purged;
        let to_verify: Vec<_> = purged.iter().map(|r| self.locations(r)).collect();
        let mut checks = verify::verify(self.ctx, self.buckets, &to_verify).await;
        for pass in 1..=CAREFUL_PASSES {
            let again: Vec<usize> = checks
                .iter()
                .enumerate()
                .filter(|(_, c)| c.is_err())
                .map(|(i, _)| i)
                .collect();
            if again.is_empty() {
                break;
            }
            tracing::warn!(
                subjects = again.len(),
                pass,
                "leftovers after the purge; purging those again, directory by directory"
            );
            let locs: Vec<_> = again.iter().map(|&i| to_verify[i].clone()).collect();
            let owners: Vec<&Ready> = again.iter().map(|&i| &purged[i]).collect();
            let extra =
                objects::purge(self.ctx, self.buckets, &locs, true, self.lease(&owners)).await;
            let rechecks = verify::verify(self.ctx, self.buckets, &locs).await;
            let mut progress = false;
            for ((&i, t), c) in again.iter().zip(extra).zip(rechecks) {
                let r = &mut purged[i];
                progress |= t.versions + t.delete_markers + t.uploads_aborted > 0;
                r.tally.add_counts(&t);
                r.tally.held_by = r.tally.held_by.or(t.held_by);
                report.count_objects(&t);
                checks[i] = match (t.failed, t.denied) {
                    (Some(e), _) => Err(e),
                    (None, Some(d)) => Err(format!("refused by the store on a later pass: {d}")),
                    (None, None) => c,
                };
            }
            if !progress {
                break;
            }
        }
        let mut verified = Vec::new();
        for (r, check) in purged.into_iter().zip(checks) {
            match (r.tally.held_by, check) {
                (Some(hold), _) => {
                    self.held_mid_purge(&r, hold).await?;
                    report.held += 1;
                }
                (None, Ok(())) => verified.push(r),
                (None, Err(e)) => self.fail(&r, "verification", &e, report).await?,
            }
        }
        let fenced: Vec<(i64, i64)> = verified
            .iter()
            .filter(|r| self.has_objects(r))
            .map(|r| (r.id, r.epoch))
            .collect();
        if !fenced.is_empty() {
            advance(self.ctx, self.run_id, &fenced, ItemState::Verified).await?;
        }
        Ok(verified)
    }
}
