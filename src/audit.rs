//! The audit chain: each entry's hash is SHA-256 over the previous hash and a canonical JSON
//! encoding of the entry, so any edit, deletion, reordering or insertion breaks every later link.
//! Storage of entries is `db::audit`; this module is the pure part, shared with `audit verify`.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `prev_hash` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened, as recorded.
pub mod event {
    /// A subject's objects and rows were purged and verified.
    pub const PURGED: &str = "purged";
    /// A subject was skipped because a hold covers it (the exception).
    pub const HELD: &str = "held";
    /// A subject's purge failed; it stays pending and is retried by the next run.
    pub const FAILED: &str = "failed";
    pub const HOLD_PLACED: &str = "hold_placed";
    pub const HOLD_RELEASED: &str = "hold_released";
    /// An operator recorded a hold as they found it after it was changed outside lethe.
    pub const HOLD_CONFIRMED: &str = "hold_confirmed";
    /// An operator vouched for the database clock after the clock guard tripped.
    pub const CLOCK_CONFIRMED: &str = "clock_confirmed";
    /// A data-subject erasure request was recorded (`detail.request` is its id).
    pub const REQUEST_PLACED: &str = "request_placed";
    /// Every subject an erasure request covers is purged (`detail.state` `fulfilled`), or
    /// purged or held (`partly`, with the holds in `detail.holds`).
    pub const REQUEST_CLOSED: &str = "request_closed";
    /// An account or subject was exported (`detail.manifest_sha256` fingerprints what was
    /// written).
    pub const EXPORTED: &str = "exported";
}

/// One audit entry. Ids, counts, times and outcomes only: never row or object content.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub run_id: Option<i64>,
    pub job: Option<String>,
    pub subject_key: Option<String>,
    pub owner: Option<String>,
    pub event: String,
    pub hold_id: Option<i64>,
    pub detail: serde_json::Value,
    pub prev_hash: String,
}

/// The canonical encoding that is hashed: fixed field order, times in RFC 3339 UTC with
/// microseconds (PostgreSQL's precision), object keys sorted.
pub fn canonical(e: &Entry) -> String {
    #[derive(Serialize)]
    struct Canon<'a> {
        seq: i64,
        at: String,
        run_id: Option<i64>,
        job: &'a Option<String>,
        subject_key: &'a Option<String>,
        owner: &'a Option<String>,
        event: &'a str,
        hold_id: Option<i64>,
        detail: serde_json::Value,
    }
    let c = Canon {
        seq: e.seq,
        at: e.at.to_rfc3339_opts(SecondsFormat::Micros, true),
        run_id: e.run_id,
        job: &e.job,
        subject_key: &e.subject_key,
        owner: &e.owner,
        event: &e.event,
        hold_id: e.hold_id,
        detail: sorted(&e.detail),
    };
    serde_json::to_string(&c).expect("audit entries always serialize")
}

fn sorted(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => {
            let ordered: std::collections::BTreeMap<&String, serde_json::Value> =
                m.iter().map(|(k, v)| (k, sorted(v))).collect();
            serde_json::to_value(ordered).expect("a map of values serializes")
        }
        serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// The entry's hash: hex SHA-256 of `prev_hash`, a newline, and the canonical encoding.
pub fn hash(e: &Entry) -> String {
    let mut h = Sha256::new();
    h.update(e.prev_hash.as_bytes());
    h.update(b"\n");
    h.update(canonical(e).as_bytes());
    hex::encode(h.finalize())
}

/// Incremental chain check, fed entries in `seq` order.
#[derive(Debug)]
pub struct Verifier {
    expect_seq: i64,
    prev_hash: String,
    pub checked: u64,
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier {
            expect_seq: 1,
            prev_hash: GENESIS.to_string(),
            checked: 0,
        }
    }
}

impl Verifier {
    /// Checks the next entry against its stored hash; the error names the first bad sequence
    /// number and what is wrong with it.
    pub fn next(&mut self, e: &Entry, stored_hash: &str) -> Result<(), String> {
        if e.seq != self.expect_seq {
            return Err(format!(
                "entry {}: found sequence number {} where {} belongs (an entry was deleted, inserted, \
                 duplicated or reordered)",
                self.expect_seq, e.seq, self.expect_seq
            ));
        }
        if e.prev_hash != self.prev_hash {
            return Err(format!(
                "entry {}: prev_hash does not match the hash of entry {}",
                e.seq,
                e.seq - 1
            ));
        }
        let h = hash(e);
        if h != stored_hash {
            return Err(format!(
                "entry {}: content does not match its hash (the entry was altered)",
                e.seq
            ));
        }
        self.expect_seq += 1;
        self.prev_hash = h;
        self.checked += 1;
        Ok(())
    }

    /// The head after the last entry checked: `(seq, hash)`.
    pub fn head(&self) -> (i64, &str) {
        (self.expect_seq - 1, &self.prev_hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: i64, prev: &str) -> Entry {
        Entry {
            seq,
            at: DateTime::from_timestamp(1_700_000_000, 123_456_000).unwrap(),
            run_id: Some(7),
            job: Some("deleted-runs".into()),
            subject_key: Some(seq.to_string()),
            owner: None,
            event: event::PURGED.into(),
            hold_id: None,
            detail: serde_json::json!({"rows": {"runs": 1, "metrics": 3}, "objects": 2}),
            prev_hash: prev.into(),
        }
    }

    #[test]
    fn key_order_in_detail_does_not_change_the_hash() {
        let a = entry(1, GENESIS);
        let mut b = a.clone();
        b.detail = serde_json::json!({"objects": 2, "rows": {"metrics": 3, "runs": 1}});
        assert_eq!(hash(&a), hash(&b));
    }

    #[test]
    fn chain_detects_edits_and_gaps() {
        let e1 = entry(1, GENESIS);
        let h1 = hash(&e1);
        let e2 = entry(2, &h1);
        let h2 = hash(&e2);
        let mut v = Verifier::default();
        v.next(&e1, &h1).unwrap();
        v.next(&e2, &h2).unwrap();
        assert_eq!(v.head().0, 2);

        let mut edited = e2.clone();
        edited.detail = serde_json::json!({"objects": 3});
        let mut v = Verifier::default();
        v.next(&e1, &h1).unwrap();
        assert!(v.next(&edited, &h2).unwrap_err().starts_with("entry 2:"));

        let mut v = Verifier::default();
        assert!(v.next(&e2, &h2).unwrap_err().starts_with("entry 1:"));
    }
}
