//! Which holds and which erasure requests reach a subject row `n0`: along the job's own rows
//! (a row another job purges as its subject), upward (the subject row is a row of another job's
//! subject), and by the owner columns, whose claims must agree for a request to take it.

use super::super::sql::{Bind, Sql};
use super::exprs::{as_text, chain, correlated_chain, lite, upalias};
use crate::spec::Job;

/// An expression giving the lowest erasure request (not yet fulfilled) covering subject row
/// `n0`, or NULL: one on its owner's account, or one naming it. `None` when the job does not
/// take erasure requests (`[requests] erase`).
pub(super) fn request_expr(job: &Job, all: &[Job], sql: &mut Sql) -> Option<String> {
    if !job.erase_on_request {
        return None;
    }
    let job_name = sql.bind(Bind::Text(job.name.clone()));
    let owner = match &job.owner {
        Some(o) => {
            // The subject's owner column is one claim; when the row also hangs under another
            // job's subject owned by another account (a snapshot saying account 7 under a run
            // of account 8), the claims disagree and an account request does not take it.
            let disputed = other_owners(job, all, sql, "r.account");
            format!(
                "(r.account IS NOT NULL AND r.account = {}{}) OR ",
                as_text(job, &format!("n0.{}", o.quoted())),
                disputed
                    .iter()
                    .map(|d| format!(" AND NOT EXISTS ({d})"))
                    .collect::<String>()
            )
        }
        None => String::new(),
    };
    Some(job.dialect.t(&format!(
        "(SELECT min(r.id) FROM lethe.requests r WHERE r.kind = 'erase' AND r.state <> 'fulfilled' \
         AND ({owner}(r.job = {job_name} AND r.subject_key = {})))",
        as_text(job, &format!("n0.{}", job.key.quoted()))
    )))
}

/// For each other job that deletes this job's subject table as one of its rows, with an owner
/// column: a query finding the subject row `n0` under one of that job's subjects owned by an
/// account other than `account` (an expression: the request `r`'s, or a bound value).
pub(super) fn other_owners(job: &Job, all: &[Job], sql: &mut Sql, account: &str) -> Vec<String> {
    let mut out = Vec::new();
    for other in all.iter().filter(|o| o.name != job.name) {
        let Some(o) = &other.owner else { continue };
        for (k, node) in other.nodes.iter().enumerate().skip(1) {
            if &node.table != job.subject_table() {
                continue;
            }
            let (tables, mut where_) = under(job, other, k, sql);
            where_.push(format!(
                "{} <> {account}",
                as_text(job, &format!("u0.{}", o.quoted()))
            ));
            out.push(format!(
                "SELECT 1 FROM {} WHERE {}",
                tables.join(", "),
                where_.join(" AND ")
            ));
        }
    }
    out
}

/// An expression giving the lowest active hold id covering subject row `n0`, or NULL: an account
/// hold on its owner, a job or subject hold of this job, or, on a row this job would delete that
/// is another job's subject, that job's job or subject hold or an account hold on that row's
/// owner (an account purge must not take a held run with it; an experiment job without an owner
/// must not take a held user's runs).
pub(super) fn hold_expr(job: &Job, all: &[Job], sql: &mut Sql) -> String {
    let job_name = sql.bind(Bind::Text(job.name.clone()));
    let owner = match &job.owner {
        Some(o) => format!(
            "(h.account IS NOT NULL AND h.account = {}) OR ",
            as_text(job, &format!("n0.{}", o.quoted()))
        ),
        None => String::new(),
    };
    let mut parts = vec![job.dialect.t(&format!(
        "(SELECT min(h.id) FROM lethe.holds h WHERE h.released_at IS NULL AND ({owner}(h.job = {job_name} \
         AND (h.subject_key IS NULL OR h.subject_key = {}))))",
        as_text(job, &format!("n0.{}", job.key.quoted()))
    ))];
    for (i, node) in job.nodes.iter().enumerate().skip(1) {
        for other in all
            .iter()
            .filter(|o| o.name != job.name && o.subject_table() == &node.table)
        {
            let other_name = sql.bind(Bind::Text(other.name.clone()));
            let (tables, mut where_) = correlated_chain(job, i, sql);
            let account = match &other.owner {
                Some(o) => format!(
                    " OR (h.account IS NOT NULL AND h.account = {})",
                    as_text(job, &format!("c{i}.{}", o.quoted()))
                ),
                None => String::new(),
            };
            where_.push(format!(
                "h.released_at IS NULL AND ((h.job = {other_name} AND (h.subject_key IS NULL OR h.subject_key = {})){account})",
                as_text(job, &format!("c{i}.{}", other.key.quoted()))
            ));
            parts.push(format!(
                "(SELECT min(h.id) FROM {}, {} h WHERE {})",
                tables.join(", "),
                job.dialect.t("lethe.holds"),
                where_.join(" AND ")
            ));
        }
    }
    // Upward: this subject row is a row another job deletes with one of its subjects (a
    // snapshot of a run): a job or subject hold on that subject, or an account hold on its
    // owner, keeps this row too.
    for other in all.iter().filter(|o| o.name != job.name) {
        for (k, node) in other.nodes.iter().enumerate().skip(1) {
            if &node.table != job.subject_table() {
                continue;
            }
            let other_name = sql.bind(Bind::Text(other.name.clone()));
            let (tables, mut where_) = under(job, other, k, sql);
            let account = match &other.owner {
                Some(o) => format!(
                    " OR (h.account IS NOT NULL AND h.account = {})",
                    as_text(job, &format!("u0.{}", o.quoted()))
                ),
                None => String::new(),
            };
            where_.push(format!(
                "h.released_at IS NULL AND ((h.job = {other_name} AND (h.subject_key IS NULL OR h.subject_key = {})){account})",
                as_text(job, &format!("u0.{}", other.key.quoted()))
            ));
            parts.push(format!(
                "(SELECT min(h.id) FROM {}, {} h WHERE {})",
                tables.join(", "),
                job.dialect.t("lethe.holds"),
                where_.join(" AND ")
            ));
        }
    }
    if parts.len() == 1 {
        parts.remove(0)
    } else if lite(job) {
        // SQLite's many-argument min() is NULL if any argument is; LEAST skips NULLs.
        let none = i64::MAX;
        let parts: Vec<String> = parts
            .iter()
            .map(|p| format!("coalesce({p}, {none})"))
            .collect();
        format!("NULLIF(min({}), {none})", parts.join(", "))
    } else {
        format!("LEAST({})", parts.join(", "))
    }
}

/// `(tables, conditions)` finding `other`'s subject (aliased `u0`) whose node `k` is the subject
/// row `n0` of `job`: `other`'s chain from node `k` up, re-aliased `u{j}`, correlated on `job`'s
/// key. Holds and requests both ask it of a row another job deletes with one of its subjects.
fn under(job: &Job, other: &Job, k: usize, sql: &mut Sql) -> (Vec<String>, Vec<String>) {
    let (tables, conds) = chain(other, k, sql);
    let mut where_: Vec<String> = conds.iter().map(|c| upalias(c)).collect();
    let tables: Vec<String> = tables.iter().map(|t| t.replace(" n", " u")).collect();
    where_.push(format!("u{k}.{key} = n0.{key}", key = job.key.quoted()));
    (tables, where_)
}
