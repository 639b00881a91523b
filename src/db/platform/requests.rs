//! SQL for erasure requests over a job's subjects: the subjects open requests cover (discovery's
//! request pass), what they still cover per hold (to settle them), and what a request would
//! cover before it is recorded.

use super::super::sql::{Bind, Sql};
use super::Cursor;
use super::exprs::{as_text, cast_bind, new_sql};
use super::owner_text;
use super::reach::{hold_expr, other_owners, request_expr};
use crate::spec::Job;

/// Subjects an erasure request not yet fulfilled covers, after `cursor`'s key, in key order,
/// whatever their clock, window and filter: each with the request's time as its clock and
/// eligibility, its due date as its deadline, and the hold covering it if any. `None` when the
/// job takes no erasure requests.
pub fn discover_requested(job: &Job, all: &[Job], cursor: &Cursor, limit: i64) -> Option<Sql> {
    let mut sql = new_sql(job);
    let req = request_expr(job, all, &mut sql)?;
    let held = hold_expr(job, all, &mut sql);
    let key = format!("n0.{}", job.key.quoted());
    let mut where_ = format!("{req} IS NOT NULL");
    if let Some((_, k)) = cursor {
        let k = cast_bind(job, 0, job.key.as_str(), k.clone(), &mut sql);
        where_.push_str(&format!(" AND {key} > {k}"));
    }
    let limit = sql.bind(Bind::Int(limit));
    sql.push(&job.dialect.t(&format!(
        "SELECT s.key, s.owner, r.requested_at AS clock_at, r.requested_at AS eligible_at, \
         r.due_at AS deadline_at, s.held FROM (SELECT {} AS key, {} AS owner, {held} AS held, \
         {req} AS rq, {key} AS k FROM {} n0 WHERE {where_} ORDER BY {key} LIMIT {limit}) s \
         JOIN lethe.requests r ON r.id = s.rq ORDER BY s.k",
        as_text(job, &key),
        owner_text(job),
        job.subject_table().quoted_in(job.dialect)
    )));
    Some(sql)
}

/// `(request, hold, subjects)`: per erasure request not yet fulfilled and per hold keeping
/// some of them (NULL: unheld), how many subjects of this job it covers now. `None` when the
/// job takes no erasure requests.
pub fn request_coverage(job: &Job, all: &[Job]) -> Option<Sql> {
    let mut sql = new_sql(job);
    let req = request_expr(job, all, &mut sql)?;
    let held = hold_expr(job, all, &mut sql);
    sql.push(&format!(
        "SELECT rq, h, count(*) FROM (SELECT {req} AS rq, {held} AS h FROM {} n0) s \
         WHERE rq IS NOT NULL GROUP BY rq, h",
        job.subject_table().quoted_in(job.dialect)
    ));
    Some(sql)
}

/// `(subjects, held)`: how many subjects of the job an erasure request on `account` (or, with
/// `key`, on that one subject) would cover now, and how many of them a hold keeps. `None` when
/// the job takes no erasure requests, or the request is on an account and the job has no owner.
pub fn erasure_reach(
    job: &Job,
    all: &[Job],
    account: Option<&str>,
    key: Option<&str>,
) -> Option<Sql> {
    if !job.erase_on_request {
        return None;
    }
    let mut sql = new_sql(job);
    let held = hold_expr(job, all, &mut sql);
    let cond = match (account, key) {
        (Some(a), _) => {
            job.owner.as_ref()?;
            let a = sql.bind(Bind::Text(a.to_string()));
            let disputed: String = other_owners(job, all, &mut sql, &a)
                .iter()
                .map(|d| format!(" AND NOT EXISTS ({d})"))
                .collect();
            format!("{} = {a}{disputed}", owner_text(job))
        }
        (None, Some(k)) => {
            let k = sql.bind(Bind::Text(k.to_string()));
            format!(
                "{} = {k}",
                as_text(job, &format!("n0.{}", job.key.quoted()))
            )
        }
        (None, None) => return None,
    };
    sql.push(&format!(
        "SELECT count(*), count(h) FROM (SELECT {held} AS h FROM {} n0 WHERE {cond}) s",
        job.subject_table().quoted_in(job.dialect)
    ));
    Some(sql)
}
