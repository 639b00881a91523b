//! How a batch records the outcomes that leave it early: a subject a hold stopped part way, one
//! held by the object store, one that failed (with its error class). Each is one work-item
//! transition and its audit entry; nothing here deletes.

use super::Batch;
use crate::db::items;
use crate::domain::STORE_NAME;
use crate::pipeline::{JobReport, Ready};
use anyhow::Result;

/// Whether a failure is the run's rather than the subject's: its lease or its database session
/// was lost (a failover, `pg_terminate_backend`, a pool that timed out). Such a subject is not
/// made to wait out a retry backoff.
fn of_the_run(msg: &str) -> bool {
    [
        crate::pipeline::lease::LOST,
        "cannot confirm the lease",
        "terminating connection",
        "connection closed",
        "error communicating with database",
        "pool timed out",
        "broken pipe",
        "connection reset",
    ]
    .iter()
    .any(|s| msg.contains(s))
}

impl Batch<'_> {
    /// Records a subject whose purge a hold stopped part way: the deletes sent before the hold
    /// committed happened, none after.
    pub(super) async fn held_mid_purge(&self, r: &Ready, hold: i64) -> Result<()> {
        tracing::info!(subject = %r.key, hold, "a hold placed during the purge stopped it");
        let mut d = r.detail();
        d["placed_during_purge"] = true.into();
        let s = r.subject(self.job, self.run_id, &self.ctx.settings.actor);
        items::mark_held(&self.ctx.db, &s, Some(hold), self.prev_hold[&r.id], d)
            .await
            .map(|_| ())
    }

    /// Records a subject held by the object store (Object Lock), with the store's evidence.
    pub(super) async fn held_by_storage(&self, r: &Ready, evidence: String) -> Result<()> {
        tracing::info!(subject = %r.key, %evidence, "held by the object store");
        let mut d = r.detail();
        d["source"] = "storage".into();
        d["evidence"] = evidence.into();
        let s = r.subject(self.job, self.run_id, &self.ctx.settings.actor);
        items::mark_held(&self.ctx.db, &s, None, self.prev_hold[&r.id], d)
            .await
            .map(|_| ())
    }

    pub(super) async fn fail(
        &self,
        r: &Ready,
        class: &str,
        msg: &str,
        report: &mut JobReport,
    ) -> Result<()> {
        // A name the store keeps differently is said apart: `plan`, `report --summary` and the
        // metrics count these subjects as ones lethe cannot purge as they are.
        let class = if msg.contains(crate::storage::NAME_KEPT_DIFFERENTLY) {
            STORE_NAME
        } else {
            class
        };
        // Said once: `lethe run` prints the run's failures in its summary, the daemon logs them
        // after the run.
        tracing::debug!(subject = %r.key, class, error = msg, "subject failed");
        let s = r.subject(self.job, self.run_id, &self.ctx.settings.actor);
        let backoff = !of_the_run(msg);
        items::mark_failed(&self.ctx.db, &s, class, msg, r.detail(), backoff).await?;
        report.failed += 1;
        report.error(format!("{}: {class}: {msg}", r.key));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::of_the_run;

    #[test]
    fn only_a_lost_session_or_lease_is_the_runs_failure() {
        for run in [
            crate::pipeline::lease::LOST,
            "cannot confirm the lease and holds, so nothing was deleted: pool timed out",
            "deleting rows: error returned from database: terminating connection due to administrator command",
            "error communicating with database: connection reset by peer",
        ] {
            assert!(of_the_run(run), "{run}");
        }
        for subject in [
            "s3://b/runs/1/x: AccessDenied (after 3 attempts)",
            "verification found object versions left (first: s3://b/runs/1/x)",
            "a name the object store keeps differently: …",
            "its location s3://b/runs/1/ holds what 1 row(s) of runs.artifact_uri point at",
        ] {
            assert!(!of_the_run(subject), "{subject}");
        }
    }
}
