//! Negative controls: known bugs that the fault suite switches on to prove its checks can
//! fail (a suite that cannot fail proves nothing). Only debug builds read
//! `LETHE_NEGATIVE_CONTROL` (a comma-separated list); in a release build every control is off
//! and compiled away.
//!
//! - `no-hold-recheck`: holds are never consulted, so held subjects are purged.
//! - `rows-before-objects`: a subject's rows go first and its objects after, unverified, so
//!   objects that fail to delete outlive the rows that pointed at them.
//! - `plain-deletes`: deletes name no version, so on a versioned bucket every version stays
//!   behind a new delete marker (verification then fails those subjects closed, and the purge
//!   never converges).
//! - `offset-pagination`: discovery pages with OFFSET over the eligible set, which shrinks as
//!   subjects are purged, so whole pages of subjects are skipped while the run reports success.
//! - `ignore-key-errors`: a key a DeleteObjects answer reports failed counts as deleted.
//! - `no-fencing`: object deletes are sent without confirming the lease, so a process that was
//!   paused past its lease deletes objects of subjects another process has since taken over.
//! - `no-hold-fence`: the checks before each delete request confirm the lease but never look
//!   for holds placed since the batch's hold check, so a hold placed mid-purge does not stop
//!   the deletes already under way.
//! - `no-ownership-proof`: no location is asked about before it is deleted, so a subject whose
//!   URI points at a live neighbour's directory (or a shared parent) deletes its objects.
//! - `no-late-row-check`: the row transaction does not look for rows naming objects written
//!   under a subject since its manifest, so they go with their subject and their objects stay.
//! - `wedged-loop`: the daemon's main loop blocks its thread after its first tick (a blocking
//!   call in async code), so it runs nothing more while its HTTP listener still answers.

/// Whether the negative control `name` is switched on.
#[cfg(debug_assertions)]
pub fn on(name: &str) -> bool {
    std::env::var("LETHE_NEGATIVE_CONTROL").is_ok_and(|v| v.split(',').any(|c| c.trim() == name))
}

/// Whether the negative control `name` is switched on: never, in a release build.
#[cfg(not(debug_assertions))]
pub fn on(_name: &str) -> bool {
    false
}
