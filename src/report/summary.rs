//! The report's summary: outcomes per job in the period, the share of purges that kept their
//! deadline, what is overdue right now (held subjects apart, with their holds), the holds active
//! in the period, and the runs.

use super::Filter;
use crate::context::Context;
use crate::db::holds;
use crate::spec::Job;
use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::io::Write;

/// Overdue subjects listed per job (all are counted).
const LIST_AT_MOST: usize = 100;

#[derive(Debug, Default, Serialize)]
pub struct JobSummary {
    pub purged: i64,
    pub held: i64,
    pub failed: i64,
    pub purged_by_deadline: i64,
    /// Of the purges in the period, the share that met their deadline (None: no purges).
    pub deadline_met_share: Option<f64>,
    /// Unheld subjects past their deadline and not purged, now.
    pub overdue_now: i64,
    pub overdue_subjects: Vec<Overdue>,
    /// Held subjects past their deadline, now: exceptions, not breaches.
    pub held_past_deadline_now: i64,
    pub held_past_deadline_subjects: Vec<Overdue>,
    /// Subjects the last run failed because the object store keeps one of their names
    /// differently than it was written: lethe cannot purge them as things are.
    pub store_name_now: i64,
    pub store_name_subjects: Vec<Unnamed>,
}

/// A subject lethe cannot purge as things are, and why.
#[derive(Debug, Serialize)]
pub struct Unnamed {
    pub key: String,
    pub error: String,
}

#[derive(Debug, Serialize)]
pub struct Overdue {
    pub key: String,
    pub owner: Option<String>,
    pub deadline_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_id: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct RunLine {
    pub id: i64,
    pub job: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub status: String,
}

#[derive(Debug, Serialize)]
pub struct HoldLine {
    pub id: i64,
    pub scope: String,
    pub reason: String,
    pub placed_by: String,
    pub placed_at: DateTime<Utc>,
    pub released_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub generated_at: DateTime<Utc>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub jobs: BTreeMap<String, JobSummary>,
    pub holds: Vec<HoldLine>,
    pub runs: Vec<RunLine>,
}

pub async fn build(ctx: &Context, all: &[Job], filter: &Filter) -> Result<Summary> {
    let db = &ctx.db;
    let generated_at = crate::db::clock::now(db).await?;
    let mut jobs: BTreeMap<String, JobSummary> = all
        .iter()
        .filter(|j| filter.job.as_ref().is_none_or(|f| *f == j.name))
        .map(|j| (j.name.clone(), JobSummary::default()))
        .collect();
    let counts = crate::db::report::outcomes(db, &filter.scope()).await?;
    for (job, event, n, met) in counts {
        let s = jobs.entry(job).or_default();
        match event.as_str() {
            "purged" => {
                s.purged = n;
                s.purged_by_deadline = met;
            }
            "held" => s.held = n,
            _ => s.failed = n,
        }
    }
    for s in jobs.values_mut() {
        s.deadline_met_share =
            (s.purged > 0).then(|| s.purged_by_deadline as f64 / s.purged as f64);
    }
    for job in all {
        let Some(s) = jobs.get_mut(&job.name) else {
            continue;
        };
        crate::db::plan::each_subject(&ctx.db, job, all, |p| {
            if !p.overdue || !filter.covers(&job.name, &p.key, p.owner.as_deref()) {
                return Ok(());
            }
            let line = Overdue {
                key: p.key,
                owner: p.owner,
                deadline_at: p.deadline_at,
                hold_id: p.hold_id,
            };
            let (count, list) = if p.hold_id.is_some() || p.storage_held {
                (
                    &mut s.held_past_deadline_now,
                    &mut s.held_past_deadline_subjects,
                )
            } else {
                (&mut s.overdue_now, &mut s.overdue_subjects)
            };
            *count += 1;
            if list.len() < LIST_AT_MOST {
                list.push(line);
            }
            Ok(())
        })
        .await?;
    }
    for (job, key, owner, error) in
        crate::db::items::store_name_failures(db, filter.job.as_deref()).await?
    {
        if !filter.covers(&job, &key, owner.as_deref()) {
            continue;
        }
        let Some(s) = jobs.get_mut(&job) else {
            continue;
        };
        s.store_name_now += 1;
        if s.store_name_subjects.len() < LIST_AT_MOST {
            s.store_name_subjects.push(Unnamed { key, error });
        }
    }
    // Scoped to an account or a subject, the report names only the holds that named it, or
    // held one of its subjects (a job hold that kept it), never another account's.
    let scoped = match filter.scoped() {
        true => Some(scoped_ids(db, filter).await?),
        false => None,
    };
    let held_ids = scoped.as_ref().map(|(holds, _)| holds);
    let chain = crate::db::hold_ledger::recorded(db).await?;
    let holds = holds::list(db, true)
        .await?
        .into_iter()
        .filter(|h| {
            held_ids.as_ref().is_none_or(|ids| {
                ids.contains(&h.id)
                    || (h.account.is_some() && h.account == filter.account)
                    || filter.subject.as_ref().is_some_and(|(j, k)| {
                        h.job.as_deref() == Some(j.as_str())
                            && h.subject_key.as_deref() == Some(k.as_str())
                    })
            })
        })
        .filter(|h| {
            filter.to.is_none_or(|to| h.placed_at < to)
                && filter
                    .from
                    .is_none_or(|from| h.released_at.is_none_or(|r| r >= from))
        })
        .map(|h| HoldLine {
            id: h.id,
            scope: h.scope_text(),
            // As the audit chain records them: the table is not the record.
            reason: chain
                .get(&h.id)
                .map_or(h.reason.clone(), |r| r.reason.clone()),
            placed_by: chain
                .get(&h.id)
                .map_or(h.placed_by.clone(), |r| r.by.clone()),
            placed_at: h.placed_at,
            released_at: h.released_at,
        })
        .collect();
    let mut runs: Vec<RunLine> = crate::db::report::runs(db, &filter.scope())
        .await?
        .into_iter()
        .map(|(id, job, started_at, finished_at, status)| RunLine {
            id,
            job,
            started_at,
            finished_at,
            status,
        })
        .collect();
    if let Some((_, run_ids)) = &scoped {
        // Only the runs that recorded something of the account or subject.
        runs.retain(|r| run_ids.contains(&r.id));
    }
    Ok(Summary {
        generated_at,
        from: filter.from,
        to: filter.to,
        jobs,
        holds,
        runs,
    })
}

/// From the account's (or the subject's) entries, in one pass: the holds that kept one of its
/// subjects, and the runs that recorded something of it.
async fn scoped_ids(db: &crate::db::Db, filter: &Filter) -> Result<(HashSet<i64>, HashSet<i64>)> {
    let (mut holds, mut runs) = (HashSet::new(), HashSet::new());
    super::for_each_row(db, filter, false, |r| {
        holds.extend(r.hold_id);
        runs.extend(r.run_id);
        Ok(())
    })
    .await?;
    Ok((holds, runs))
}

fn t(d: DateTime<Utc>) -> String {
    d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The summary as text for a person.
pub fn write_text(s: &Summary, out: &mut dyn Write) -> std::io::Result<()> {
    let period = format!(
        "{} .. {}",
        s.from.map(t).unwrap_or_else(|| "the beginning".into()),
        s.to.map(t).unwrap_or_else(|| "now".into())
    );
    writeln!(
        out,
        "lethe report, {period} (generated {})",
        t(s.generated_at)
    )?;
    writeln!(
        out,
        "\n{:<28} {:>8} {:>8} {:>8} {:>14} {:>12} {:>14} {:>11}",
        "job",
        "purged",
        "held",
        "failed",
        "deadline met",
        "overdue now",
        "held overdue",
        "store name"
    )?;
    for (job, j) in &s.jobs {
        let share = j
            .deadline_met_share
            .map(|x| format!("{:.1}%", x * 100.0))
            .unwrap_or_else(|| "-".into());
        writeln!(
            out,
            "{job:<28} {:>8} {:>8} {:>8} {share:>14} {:>12} {:>14} {:>11}",
            j.purged, j.held, j.failed, j.overdue_now, j.held_past_deadline_now, j.store_name_now
        )?;
    }
    for (job, j) in &s.jobs {
        for o in &j.overdue_subjects {
            writeln!(
                out,
                "OVERDUE {job}:{} (owner {}) deadline {}",
                o.key,
                o.owner.as_deref().unwrap_or("-"),
                t(o.deadline_at)
            )?;
        }
        for o in &j.held_past_deadline_subjects {
            writeln!(
                out,
                "held past deadline {job}:{} deadline {} {}",
                o.key,
                t(o.deadline_at),
                held_by(o.hold_id)
            )?;
        }
        for u in &j.store_name_subjects {
            writeln!(out, "CANNOT PURGE {job}:{}: {}", u.key, u.error)?;
        }
    }
    writeln!(out, "\nholds active in the period: {}", s.holds.len())?;
    for h in &s.holds {
        let released = h
            .released_at
            .map(|r| format!(", released {}", t(r)))
            .unwrap_or_default();
        writeln!(
            out,
            "  hold {} on {}: {} (by {}, placed {}{released})",
            h.id,
            h.scope,
            h.reason,
            h.placed_by,
            t(h.placed_at)
        )?;
    }
    writeln!(out, "\nruns: {}", s.runs.len())?;
    for r in &s.runs {
        writeln!(
            out,
            "  run {} {} started {} {}",
            r.id,
            r.job,
            t(r.started_at),
            r.status
        )?;
    }
    Ok(())
}

/// What keeps a subject past its deadline: a hold of lethe's, or else the object store.
pub(super) fn held_by(hold_id: Option<i64>) -> String {
    match hold_id {
        Some(id) => format!("hold {id}"),
        None => "by the object store (S3 Object Lock)".into(),
    }
}
