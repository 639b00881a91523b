//! `lethe report`: the compliance report, read from the audit log. One row per subject outcome
//! recorded in the period (`purged`, `held`, `failed`), with the subject's promised deadline and
//! whether it was met. CSV and JSON Lines are streamed row by row from the database, so memory
//! stays flat however long the log is.

pub mod html;
pub mod request;
pub mod summary;

use crate::db::Db;
use anyhow::{Context as _, Result, bail};
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;

/// Which entries a report covers.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Entries at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Entries before this time.
    pub to: Option<DateTime<Utc>>,
    pub job: Option<String>,
    /// Subjects this account owns.
    pub account: Option<String>,
    /// One subject: `(job, key)`.
    pub subject: Option<(String, String)>,
}

impl Filter {
    /// The scope as the database reads it.
    pub fn scope(&self) -> crate::db::report::Scope {
        crate::db::report::Scope {
            from: self.from,
            to: self.to,
            job: self.job.clone(),
            account: self.account.clone(),
            subject: self.subject.clone(),
        }
    }

    /// Whether the report is about one account or one subject (a data-subject request): then
    /// every part of it is scoped, not only its rows.
    pub fn scoped(&self) -> bool {
        self.account.is_some() || self.subject.is_some()
    }

    /// Whether subject `key` of `job`, owned by `owner`, is within the report's scope.
    pub fn covers(&self, job: &str, key: &str, owner: Option<&str>) -> bool {
        self.job.as_deref().is_none_or(|j| j == job)
            && self.account.as_deref().is_none_or(|a| owner == Some(a))
            && self
                .subject
                .as_ref()
                .is_none_or(|(j, k)| j == job && k == key)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Csv,
    Jsonl,
}

/// Parses `--from`/`--to`: a date (`2026-11-01`, midnight UTC) or an RFC 3339 time. A date given
/// as `--to` includes that whole day.
pub fn parse_bound(text: &str, is_end: bool) -> Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    match NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        Ok(d) => {
            let d = if is_end {
                d.succ_opt().context("date out of range")?
            } else {
                d
            };
            Ok(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc())
        }
        Err(_) => bail!(
            "`{text}` is neither a date (2026-11-01) nor an RFC 3339 time (2026-11-01T00:00:00Z)"
        ),
    }
}

/// One report row: what lethe did (or withheld) for one subject, from one audit entry.
#[derive(Debug, Serialize)]
pub struct Row {
    pub audit_seq: i64,
    pub recorded_at: String,
    pub job: String,
    pub subject_key: String,
    pub owner: Option<String>,
    /// `purged`, `held` or `failed`.
    pub outcome: String,
    pub clock_at: Option<String>,
    pub eligible_at: Option<String>,
    pub deadline_at: Option<String>,
    pub purged_at: Option<String>,
    /// `met` or `breached` for purges; empty otherwise.
    pub deadline: Option<&'static str>,
    /// Seconds between the purge and the deadline: positive is early, negative is late.
    pub deadline_margin_seconds: Option<i64>,
    pub rows_deleted: Option<i64>,
    pub rows_by_table: Option<BTreeMap<String, i64>>,
    pub object_versions_deleted: Option<u64>,
    pub delete_markers_deleted: Option<u64>,
    pub uploads_aborted: Option<u64>,
    pub verified: Option<bool>,
    pub hold_id: Option<i64>,
    pub hold_reason: Option<String>,
    pub hold_placed_by: Option<String>,
    /// Storage-level evidence for a hold (an Object Lock refusal).
    pub hold_evidence: Option<String>,
    pub error_class: Option<String>,
    pub error: Option<String>,
    pub run_id: Option<i64>,
}

/// The CSV header, in the order of `Row`'s fields.
pub const COLUMNS: [&str; 25] = [
    "audit_seq",
    "recorded_at",
    "job",
    "subject_key",
    "owner",
    "outcome",
    "clock_at",
    "eligible_at",
    "deadline_at",
    "purged_at",
    "deadline",
    "deadline_margin_seconds",
    "rows_deleted",
    "rows_by_table",
    "object_versions_deleted",
    "delete_markers_deleted",
    "uploads_aborted",
    "verified",
    "hold_id",
    "hold_reason",
    "hold_placed_by",
    "hold_evidence",
    "error_class",
    "error",
    "run_id",
];

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn detail_time(d: &serde_json::Value, k: &str) -> Option<DateTime<Utc>> {
    d.get(k)?.as_str()?.parse().ok()
}

use crate::db::report::Raw;

impl Row {
    fn from_raw(r: Raw) -> Row {
        let (seq, at, run_id, job, key, owner, event, hold_id, d, reason, by) = r;
        let deadline_at = detail_time(&d, "deadline_at");
        let purged = event == crate::audit::event::PURGED;
        let deadline_of_purge = deadline_at.filter(|_| purged);
        // Met or breached by the times themselves (as the summary and the chart count them),
        // not by the margin, which is truncated to whole seconds.
        let met = deadline_of_purge.map(|dl| at <= dl);
        let objects = d.get("objects");
        let count = |k: &str| objects.and_then(|o| o.get(k)).and_then(|v| v.as_u64());
        let rows_by_table: Option<BTreeMap<String, i64>> = d
            .get("rows")
            .and_then(|r| serde_json::from_value(r.clone()).ok());
        let text = |k: &str| d.get(k).and_then(|v| v.as_str()).map(String::from);
        Row {
            audit_seq: seq,
            recorded_at: time(at),
            job: job.unwrap_or_default(),
            subject_key: key.unwrap_or_default(),
            owner,
            outcome: event,
            clock_at: detail_time(&d, "clock_at").map(time),
            eligible_at: detail_time(&d, "eligible_at").map(time),
            deadline_at: deadline_at.map(time),
            purged_at: purged.then(|| time(at)),
            deadline: met.map(|m| if m { "met" } else { "breached" }),
            deadline_margin_seconds: deadline_of_purge.map(|dl| (dl - at).num_seconds()),
            rows_deleted: rows_by_table.as_ref().map(|r| r.values().sum()),
            rows_by_table,
            object_versions_deleted: count("versions").filter(|_| purged),
            delete_markers_deleted: count("delete_markers").filter(|_| purged),
            uploads_aborted: count("uploads_aborted").filter(|_| purged),
            verified: d.get("verified").and_then(|v| v.as_bool()),
            hold_id,
            hold_reason: reason,
            hold_placed_by: by,
            hold_evidence: text("evidence"),
            error_class: text("error_class"),
            error: text("error"),
            run_id,
        }
    }

    pub fn csv_fields(&self) -> Vec<String> {
        fn o<T: ToString>(v: &Option<T>) -> String {
            v.as_ref().map(|v| v.to_string()).unwrap_or_default()
        }
        vec![
            self.audit_seq.to_string(),
            self.recorded_at.clone(),
            self.job.clone(),
            self.subject_key.clone(),
            o(&self.owner),
            self.outcome.clone(),
            o(&self.clock_at),
            o(&self.eligible_at),
            o(&self.deadline_at),
            o(&self.purged_at),
            o(&self.deadline),
            o(&self.deadline_margin_seconds),
            o(&self.rows_deleted),
            self.rows_by_table
                .as_ref()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(";")
                })
                .unwrap_or_default(),
            o(&self.object_versions_deleted),
            o(&self.delete_markers_deleted),
            o(&self.uploads_aborted),
            o(&self.verified),
            o(&self.hold_id),
            o(&self.hold_reason),
            o(&self.hold_placed_by),
            o(&self.hold_evidence),
            o(&self.error_class),
            o(&self.error),
            o(&self.run_id),
        ]
    }
}

/// RFC 4180 quoting: fields with a comma, quote or line break are quoted, quotes doubled. A
/// field starting with `=`, `+`, `-` or `@` gets a leading `'` so spreadsheets do not run it.
fn csv_field(f: &str) -> String {
    let f = if f.starts_with(['=', '+', '@']) || (f.starts_with('-') && f.parse::<f64>().is_err()) {
        format!("'{f}")
    } else {
        f.to_string()
    };
    if f.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", f.replace('"', "\"\""))
    } else {
        f
    }
}

pub(crate) fn write_csv_line(out: &mut dyn Write, fields: &[String]) -> std::io::Result<()> {
    let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
    out.write_all(line.join(",").as_bytes())?;
    out.write_all(b"\r\n")
}

/// Calls `each` with every report row matching `filter` (only `held` and `failed` ones with
/// `exceptions_only`), in audit order, streaming from the database. Returns how many.
pub async fn for_each_row(
    db: &Db,
    filter: &Filter,
    exceptions_only: bool,
    mut each: impl FnMut(Row) -> Result<()>,
) -> Result<u64> {
    crate::db::report::for_each_outcome(db, &filter.scope(), exceptions_only, |raw| {
        each(Row::from_raw(raw))
    })
    .await
}

/// Streams the report rows matching `filter`, in audit order, to `out`. Returns how many.
pub async fn write(db: &Db, filter: &Filter, format: Format, out: &mut dyn Write) -> Result<u64> {
    if format == Format::Csv {
        let header: Vec<String> = COLUMNS.iter().map(|c| c.to_string()).collect();
        write_csv_line(out, &header)?;
    }
    let n = for_each_row(db, filter, false, |row| {
        match format {
            Format::Csv => write_csv_line(out, &row.csv_fields())?,
            Format::Jsonl => {
                serde_json::to_writer(&mut *out, &row)?;
                out.write_all(b"\n")?;
            }
        }
        Ok(())
    })
    .await?;
    out.flush()?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_take_dates_or_times_and_a_to_date_includes_its_day() {
        assert_eq!(
            parse_bound("2026-11-01", false).unwrap().to_rfc3339(),
            "2026-11-01T00:00:00+00:00"
        );
        assert_eq!(
            parse_bound("2026-11-01", true).unwrap().to_rfc3339(),
            "2026-11-02T00:00:00+00:00"
        );
        assert_eq!(
            parse_bound("2026-11-01T10:00:00+02:00", true)
                .unwrap()
                .to_rfc3339(),
            "2026-11-01T08:00:00+00:00"
        );
        assert!(parse_bound("yesterday", false).is_err());
    }

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=cmd()"), "'=cmd()");
        assert_eq!(csv_field("-42"), "-42");
        assert_eq!(csv_field("-x"), "'-x");
    }

    /// The row of a `purged` entry recorded at `at` with `detail`.
    fn purged_at(at: DateTime<Utc>, detail: serde_json::Value) -> Row {
        Row::from_raw((
            1,
            at,
            None,
            Some("j".into()),
            Some("k".into()),
            None,
            "purged".into(),
            None,
            detail,
            None,
            None,
        ))
    }

    #[test]
    fn half_a_second_late_is_breached() {
        let deadline = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let at = deadline + chrono::Duration::milliseconds(500);
        let row = purged_at(at, serde_json::json!({ "deadline_at": deadline }));
        assert_eq!(row.deadline, Some("breached"));
        assert_eq!(row.deadline_margin_seconds, Some(0));
    }

    #[test]
    fn header_matches_row_fields() {
        let row = purged_at(Utc::now(), serde_json::json!({}));
        assert_eq!(row.csv_fields().len(), COLUMNS.len());
        let json = serde_json::to_value(&row).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        let mut expected: Vec<&str> = COLUMNS.to_vec();
        expected.sort();
        let mut keys = keys;
        keys.sort();
        assert_eq!(keys, expected);
    }
}
