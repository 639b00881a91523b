//! `lethe report --request ID`: the proof of one data-subject request. The request (scope,
//! reason, who, when, due), a one-line verdict, totals (subjects, rows per table, objects,
//! verification), the holds that kept anything, then every outcome recorded since it was placed
//! for what it covers, as the other reports write them.

use super::{COLUMNS, Filter, Row, for_each_row, write_csv_line};
use crate::context::Context;
use crate::db::requests::Request;
use crate::spec::Job;
use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

/// What the proof says above its rows.
#[derive(Debug, Serialize)]
pub struct Proof {
    pub request: Request,
    pub verdict: String,
    pub subjects_purged: u64,
    pub subjects_held: u64,
    pub subjects_failed: u64,
    /// Subjects it covers that are still in the database, unheld (an open request's work left).
    pub subjects_left: i64,
    pub rows_by_table: BTreeMap<String, i64>,
    pub object_versions_deleted: u64,
    pub delete_markers_deleted: u64,
    pub uploads_aborted: u64,
    /// Whether every purge it made was verified (the store listed nothing left).
    pub all_verified: bool,
    pub holds: Vec<HoldKept>,
}

/// A hold that kept some of what the request covers.
#[derive(Debug, Serialize)]
pub struct HoldKept {
    pub hold_id: i64,
    pub reason: Option<String>,
    pub placed_by: Option<String>,
    pub subjects: Vec<String>,
}

fn at(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The verdict in one line.
fn verdict(r: &Request, now: DateTime<Utc>, left: i64, holds: &[HoldKept], held: usize) -> String {
    let due = at(r.due_at);
    let closed = r.closed_at.map(at).unwrap_or_default();
    let in_time = r.closed_at.is_some_and(|c| c <= r.due_at);
    let when = if in_time { "in time" } else { "late" };
    match (r.kind.as_str(), r.state.as_str()) {
        ("export", _) => format!("exported {closed} (due {due})"),
        (_, "fulfilled") => {
            format!("fulfilled {when}: nothing it covers is left (closed {closed}, due {due})")
        }
        (_, "partly") => {
            let ids: Vec<String> = holds.iter().map(|h| h.hold_id.to_string()).collect();
            format!(
                "partly fulfilled under hold {}: {held} subject(s) kept, everything else purged \
                 {when} (closed {closed}, due {due})",
                ids.join(", ")
            )
        }
        _ if now > r.due_at => format!("overdue: {left} subject(s) still to purge, due {due}"),
        _ => format!("open: {left} subject(s) still to purge, due {due}"),
    }
}

/// The proof of request `r`: the header and the outcome rows since it was placed.
pub async fn build(ctx: &Context, all: &[Job], r: Request) -> Result<(Proof, Vec<Row>)> {
    let filter = Filter {
        from: Some(r.requested_at),
        account: r.account.clone(),
        subject: r.job.clone().zip(r.subject_key.clone()),
        ..Default::default()
    };
    let mut rows = Vec::new();
    if r.kind == "erase" {
        for_each_row(&ctx.db, &filter, false, |row| {
            rows.push(row);
            Ok(())
        })
        .await?;
    }
    let left = crate::pipeline::requests::left(ctx, all).await?;
    let mine = left.get(&r.id);
    let mut holds: BTreeMap<i64, HoldKept> = BTreeMap::new();
    let mut held_subjects = BTreeSet::new();
    let mut proof = Proof {
        verdict: String::new(),
        subjects_purged: 0,
        subjects_held: 0,
        subjects_failed: 0,
        subjects_left: mine.map_or(0, |l| l.unheld),
        rows_by_table: BTreeMap::new(),
        object_versions_deleted: 0,
        delete_markers_deleted: 0,
        uploads_aborted: 0,
        all_verified: true,
        holds: Vec::new(),
        request: r,
    };
    for row in &rows {
        match row.outcome.as_str() {
            "purged" => {
                proof.subjects_purged += 1;
                for (t, n) in row.rows_by_table.iter().flatten() {
                    *proof.rows_by_table.entry(t.clone()).or_default() += n;
                }
                proof.object_versions_deleted += row.object_versions_deleted.unwrap_or(0);
                proof.delete_markers_deleted += row.delete_markers_deleted.unwrap_or(0);
                proof.uploads_aborted += row.uploads_aborted.unwrap_or(0);
                proof.all_verified &= row.verified != Some(false);
            }
            "held" => {
                proof.subjects_held += 1;
                let subject = format!("{}:{}", row.job, row.subject_key);
                held_subjects.insert(subject.clone());
                if let Some(id) = row.hold_id {
                    let h = holds.entry(id).or_insert_with(|| HoldKept {
                        hold_id: id,
                        reason: row.hold_reason.clone(),
                        placed_by: row.hold_placed_by.clone(),
                        subjects: Vec::new(),
                    });
                    if !h.subjects.contains(&subject) {
                        h.subjects.push(subject);
                    }
                }
            }
            _ => proof.subjects_failed += 1,
        }
    }
    // Holds keeping what it covers now, recorded held before the request was placed.
    for id in mine.map(|l| l.holds.clone()).unwrap_or_default() {
        holds.entry(id).or_insert_with(|| HoldKept {
            hold_id: id,
            reason: None,
            placed_by: None,
            subjects: Vec::new(),
        });
    }
    proof.holds = holds.into_values().collect();
    let now = crate::db::clock::now(&ctx.db).await?;
    let held = held_subjects.len().max(mine.map_or(0, |l| l.held as usize));
    proof.verdict = verdict(&proof.request, now, proof.subjects_left, &proof.holds, held);
    Ok((proof, rows))
}

/// The header's CSV columns.
const HEAD: [&str; 18] = [
    "request_id",
    "kind",
    "scope",
    "reason",
    "requested_by",
    "requested_at",
    "due_at",
    "state",
    "closed_at",
    "verdict",
    "subjects_purged",
    "subjects_held",
    "subjects_failed",
    "subjects_left",
    "rows_by_table",
    "object_versions_deleted",
    "all_verified",
    "holds",
];

fn head_fields(p: &Proof) -> Vec<String> {
    let r = &p.request;
    vec![
        r.id.to_string(),
        r.kind.clone(),
        r.scope_text(),
        r.reason.clone(),
        r.requested_by.clone(),
        at(r.requested_at),
        at(r.due_at),
        r.state.clone(),
        r.closed_at.map(at).unwrap_or_default(),
        p.verdict.clone(),
        p.subjects_purged.to_string(),
        p.subjects_held.to_string(),
        p.subjects_failed.to_string(),
        p.subjects_left.to_string(),
        p.rows_by_table
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";"),
        p.object_versions_deleted.to_string(),
        p.all_verified.to_string(),
        p.holds
            .iter()
            .map(|h| format!("{}: {}", h.hold_id, h.reason.clone().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(";"),
    ]
}

/// Writes the proof: CSV (the request's line under its header, a blank line, then the outcome
/// rows under theirs), JSON Lines (the proof, then one line per row) or HTML.
pub fn write(p: &Proof, rows: &[Row], format: &str, out: &mut dyn Write) -> Result<()> {
    match format {
        "jsonl" => {
            serde_json::to_writer(&mut *out, p)?;
            out.write_all(b"\n")?;
            for row in rows {
                serde_json::to_writer(&mut *out, row)?;
                out.write_all(b"\n")?;
            }
        }
        "html" => super::html::write_request(p, rows, out)?,
        _ => {
            write_csv_line(out, &HEAD.map(String::from))?;
            write_csv_line(out, &head_fields(p))?;
            out.write_all(b"\r\n")?;
            write_csv_line(out, &COLUMNS.map(String::from))?;
            for row in rows {
                write_csv_line(out, &row.csv_fields())?;
            }
        }
    }
    out.flush()?;
    Ok(())
}
