//! SQL over the platform's own tables, built from a validated `Job`. Table and column names come
//! only from `Ident::quoted`; literals are bound and cast to the column's catalog type. Node `i`
//! of a job is always aliased `n{i}` (`n0` is the subject table).
//!
//! Eligibility uses the database's `now()` as the only clock (PITFALLS 11): lethe's own process
//! clock never decides what is deletable.

use super::sql::{Bind, Sql};

mod claims;
mod export;
mod exprs;
mod reach;
mod requests;
use reach::hold_expr;
pub use requests::{discover_requested, erasure_reach, request_coverage};

pub use claims::{Claim, ClaimRow, Places, claims, fetch_claims};
pub use export::{export_rows, owned_keys};

use crate::spec::{Ident, Job};
use chrono::{DateTime, Utc};
use exprs::{
    Which, as_text, cast_bind, chain, clock_plus, clock_ts, correlated_chain, eligible_now,
    keys_match, lite, new_sql, now, null_text, scope, subject_base, time_out,
};

/// One subject found eligible by discovery.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Candidate {
    pub key: String,
    pub owner: Option<String>,
    pub clock_at: DateTime<Utc>,
    pub eligible_at: DateTime<Utc>,
    pub deadline_at: DateTime<Utc>,
    /// The lowest active hold covering it when discovered, if any.
    pub held: Option<i64>,
}

/// Keyset cursor over `(clock, key)`: never an OFFSET over a set that shrinks as we delete.
pub type Cursor = Option<(DateTime<Utc>, String)>;

/// The subject's owner column as text, or NULL.
fn owner_text(job: &Job) -> String {
    match &job.owner {
        Some(o) => as_text(job, &format!("n0.{}", o.quoted())),
        None => null_text(job).into(),
    }
}

/// Eligible subjects after `cursor`, oldest clock first, each with the hold covering it if any.
pub fn discover(job: &Job, all: &[Job], cursor: &Cursor, limit: i64) -> Sql {
    let mut sql = new_sql(job);
    let base = subject_base(job, &mut sql);
    let eligible = clock_plus(job, Which::Grace, &mut sql);
    let deadline = clock_plus(job, Which::Deadline, &mut sql);
    let held = hold_expr(job, all, &mut sql);
    let clock = clock_ts(job);
    let key = format!("n0.{}", job.key.quoted());
    let owner = owner_text(job);
    let mut where_ = format!("{base} AND {eligible} <= {}", now(job));
    if let Some((t, k)) = cursor {
        let t = sql.bind(Bind::Time(*t));
        let k = cast_bind(job, 0, job.key.as_str(), k.clone(), &mut sql);
        where_.push_str(&format!(" AND ({clock}, {key}) > ({t}, {k})"));
    }
    let limit = sql.bind(Bind::Int(limit));
    sql.push(&format!(
        "SELECT {} AS key, {owner} AS owner, {} AS clock_at, {} AS eligible_at, \
         {} AS deadline_at, {held} AS held FROM {} n0 WHERE {where_} ORDER BY {clock}, {key} LIMIT {limit}",
        as_text(job, &key),
        time_out(job, &clock),
        time_out(job, &eligible),
        time_out(job, &deadline),
        job.subject_table().quoted_in(job.dialect)
    ));
    sql
}

/// The subject key as the database spells it (`42` for `042` on an integer key, lower case for
/// a UUID): `key` compared in the key column's own type. No row when no subject has that key.
pub fn canonical_key(job: &Job, key: &str) -> Sql {
    let mut sql = new_sql(job);
    let column = format!("n0.{}", job.key.quoted());
    let value = if lite(job) {
        // SQLite compares with the column's affinity (`'042'` meets the integer 42), where a
        // CAST would turn text that is no number into 0.
        sql.bind(Bind::Text(key.to_string()))
    } else {
        cast_bind(job, 0, job.key.as_str(), key.to_string(), &mut sql)
    };
    sql.push(&format!(
        "SELECT {} FROM {} n0 WHERE {column} = {value} LIMIT 1",
        as_text(job, &column),
        job.subject_table().quoted_in(job.dialect)
    ));
    sql
}

/// How many rows of the job's subject table an account hold on `account` covers (`owner`
/// compared as text, as holds compare it): those it owns, and those whose rows include a row of
/// another job's subject that it owns (the experiment of a held user's runs), as `hold_expr`
/// finds them. `None` when neither can be: no owner column here, and no other job's subject
/// with one in this job's rows.
pub fn owned_by(job: &Job, all: &[Job], account: &str) -> Option<Sql> {
    let mut sql = new_sql(job);
    let a = sql.bind(Bind::Text(account.to_string()));
    let mut covered = Vec::new();
    if job.owner.is_some() {
        covered.push(format!("{} = {a}", owner_text(job)));
    }
    for (i, node) in job.nodes.iter().enumerate().skip(1) {
        for other in all
            .iter()
            .filter(|o| o.name != job.name && o.subject_table() == &node.table)
        {
            let Some(o) = &other.owner else { continue };
            let (tables, mut where_) = correlated_chain(job, i, &mut sql);
            where_.push(format!(
                "{} = {a}",
                as_text(job, &format!("c{i}.{}", o.quoted()))
            ));
            covered.push(format!(
                "EXISTS (SELECT 1 FROM {} WHERE {})",
                tables.join(", "),
                where_.join(" AND ")
            ));
        }
    }
    if covered.is_empty() {
        return None;
    }
    sql.push(&format!(
        "SELECT count(*) FROM {} n0 WHERE {}",
        job.subject_table().quoted_in(job.dialect),
        covered.join(" OR ")
    ));
    Some(sql)
}

/// How many rows the job's subject table has.
pub fn subject_rows(job: &Job) -> Sql {
    let mut sql = new_sql(job);
    sql.push(&format!(
        "SELECT count(*) FROM {}",
        job.subject_table().quoted_in(job.dialect)
    ));
    sql
}

/// The job's subjects (past its filter, with a clock) whose clock no platform wrote: before 2000,
/// or after 2200. `(subjects, implausible, up to five of those as "key: clock")`. An
/// `epoch_milliseconds` column that holds seconds reads as January 1970 (every subject eligible
/// at once), an `epoch_seconds` one holding milliseconds as the year 50,000 (none ever).
pub fn clock_census(job: &Job) -> Sql {
    let mut sql = new_sql(job);
    let base = subject_base(job, &mut sql);
    let clock = clock_ts(job);
    let (floor, ceiling) = if lite(job) {
        ("946684800".to_string(), "7258118400".to_string())
    } else {
        (
            "timestamptz '2000-01-01T00:00:00Z'".to_string(),
            "timestamptz '2200-01-01T00:00:00Z'".to_string(),
        )
    };
    let shown = if lite(job) {
        time_out(job, &clock)
    } else {
        as_text(job, &clock)
    };
    let key = as_text(job, &format!("n0.{}", job.key.quoted()));
    let table = job.subject_table().quoted_in(job.dialect);
    let bad = format!("({clock} < {floor} OR {clock} > {ceiling})");
    let sample = if lite(job) {
        format!(
            "(SELECT group_concat(v, ', ') FROM (SELECT {key} || ': ' || coalesce({shown}, '?') AS v \
             FROM {table} n0 WHERE {base} AND {bad} LIMIT 5))"
        )
    } else {
        format!(
            "(SELECT string_agg(v, ', ') FROM (SELECT {key} || ': ' || coalesce({shown}, '?') AS v \
             FROM {table} n0 WHERE {base} AND {bad} LIMIT 5) s)"
        )
    };
    // The filter's placeholders appear twice (the count and the sample), bound once.
    sql.push(&format!(
        "SELECT count(*), count(*) FILTER (WHERE {bad}), {sample} FROM {table} n0 WHERE {base}"
    ));
    sql
}

/// Of `keys`, those still eligible now, locked `FOR UPDATE` so a concurrent restore waits for
/// us (on SQLite the row transaction already holds the only write lock).
pub fn lock_still_eligible(job: &Job, all: &[Job], keys: &[String]) -> Sql {
    still_eligible_sql(
        job,
        all,
        keys,
        if lite(job) { "" } else { " FOR UPDATE OF n0" },
    )
}

/// Of `keys`, those still eligible now (no lock: the row step checks again under one).
pub fn still_eligible(job: &Job, all: &[Job], keys: &[String]) -> Sql {
    still_eligible_sql(job, all, keys, "")
}

fn still_eligible_sql(job: &Job, all: &[Job], keys: &[String], lock: &str) -> Sql {
    let mut sql = new_sql(job);
    let eligible = eligible_now(job, all, &mut sql);
    let m = keys_match(job, keys, &mut sql);
    sql.push(&format!(
        "SELECT {} FROM {} n0 WHERE {m} AND {eligible}{lock}",
        as_text(job, &format!("n0.{}", job.key.quoted())),
        job.subject_table().quoted_in(job.dialect),
    ));
    sql
}

/// `(key, hold id)` for each of `keys` that an active hold covers.
pub fn holds_for(job: &Job, all: &[Job], keys: &[String]) -> Sql {
    let mut sql = new_sql(job);
    let h = hold_expr(job, all, &mut sql);
    let m = keys_match(job, keys, &mut sql);
    sql.push(&format!(
        "SELECT key, hold FROM (SELECT {} AS key, {h} AS hold FROM {} n0 WHERE {m}) s WHERE hold IS NOT NULL",
        as_text(job, &format!("n0.{}", job.key.quoted())),
        job.subject_table().quoted_in(job.dialect)
    ));
    sql
}

/// Every subject key (eligible or not) holding a `/` or a `\`: such a key, rendered into a
/// template, names a directory inside another subject's (`b/c` or `b\c` inside `b`, as a store
/// that keeps `\` as `/` sees it). `None` when the key column cannot hold either (integers,
/// UUIDs).
pub fn nested_keys(job: &Job) -> Option<Sql> {
    let ty = job
        .types
        .get(&(0, job.key.as_str().to_string()))
        .map(|t| t.to_ascii_lowercase())
        .unwrap_or_default();
    if ty.contains("int") || ty == "uuid" {
        return None;
    }
    let mut sql = new_sql(job);
    let key = as_text(job, &format!("n0.{}", job.key.quoted()));
    let find = if lite(job) { "instr" } else { "strpos" };
    sql.push(&format!(
        "SELECT {key} FROM {} n0 WHERE {find}({key}, '/') > 0 OR {find}({key}, '\\') > 0",
        job.subject_table().quoted_in(job.dialect)
    ));
    Some(sql)
}

/// Rows of node `i` per subject key: `(key, count)`.
pub fn count_rows(job: &Job, i: usize, keys: &[String]) -> Sql {
    let mut sql = new_sql(job);
    let (tables, conds, key) = scope(job, i, keys, &mut sql);
    sql.push(&format!(
        "SELECT {}, count(*) FROM {} WHERE {} GROUP BY {key}",
        as_text(job, &key),
        tables.join(", "),
        conds.join(" AND ")
    ));
    sql
}

/// The values that locate objects for node `i`: `(key, owner, columns...)` as text, one row per
/// row of node `i` belonging to one of `keys`.
pub fn object_values(job: &Job, i: usize, columns: &[Ident], keys: &[String]) -> Sql {
    let mut sql = new_sql(job);
    let (tables, mut conds) = chain(job, i, &mut sql);
    conds.push(keys_match(job, keys, &mut sql));
    let owner = owner_text(job);
    let cols: Vec<String> = columns
        .iter()
        .map(|c| format!(", {}", as_text(job, &format!("n{i}.{}", c.quoted()))))
        .collect();
    sql.push(&format!(
        "SELECT {}, {owner}{} FROM {} WHERE {}",
        as_text(job, &format!("n0.{}", job.key.quoted())),
        cols.concat(),
        tables.join(", "),
        conds.join(" AND ")
    ));
    sql
}

/// How node `i`'s rows for `keys` are deleted, with the rows each subject loses.
///
/// The rows are counted per subject first and then deleted with a plain DELETE, in the same
/// transaction; the delete must affect exactly the counted total. (Measured on PostgreSQL, a
/// plain delete of 24,000 rows takes 27 ms where `DELETE … RETURNING` grouped per subject takes
/// 54 ms.) Under PostgreSQL's READ COMMITTED a row committed between the two statements makes
/// them disagree: the delete is then rolled back to a savepoint and redone answering its own
/// per-subject counts (`returning`). SQLite's single writer keeps them in step.
pub struct RowDelete {
    /// `(key, rows)` per subject; `None` for the subject table, where each subject is one row
    /// (already locked by the transaction).
    pub count: Option<Sql>,
    pub delete: Sql,
    /// The delete answering `(key, deleted)` per subject (PostgreSQL).
    pub returning: Option<Sql>,
}

/// Deletes node `i`'s rows for `keys`.
pub fn delete_rows(job: &Job, i: usize, keys: &[String]) -> RowDelete {
    let count = (i != 0).then(|| count_rows(job, i, keys));
    let mut sql = new_sql(job);
    let (tables, conds, key) = scope(job, i, keys, &mut sql);
    if lite(job) {
        sql.push(&format!(
            "DELETE FROM {} WHERE rowid IN (SELECT n{i}.rowid FROM {} WHERE {})",
            job.nodes[i].table.quoted_in(job.dialect),
            tables.join(", "),
            conds.join(" AND ")
        ));
        return RowDelete {
            count,
            delete: sql,
            returning: None,
        };
    }
    let using = if tables.len() > 1 {
        format!(" USING {}", tables[1..].join(", "))
    } else {
        String::new()
    };
    let mut returning = sql.clone();
    sql.push(&format!(
        "DELETE FROM {}{using} WHERE {}",
        tables[0],
        conds.join(" AND "),
    ));
    returning.push(&format!(
        "WITH d AS (DELETE FROM {}{using} WHERE {} RETURNING {key} AS k) SELECT k::text, count(*) FROM d GROUP BY k",
        tables[0],
        conds.join(" AND "),
    ));
    RowDelete {
        count,
        delete: sql,
        returning: Some(returning),
    }
}

/// Plan counts for one job: eligible, held, waiting for grace, overdue (past deadline, unheld),
/// the oldest eligible time, the next deadline, and how many clocks are in the future.
pub fn plan_counts(job: &Job, all: &[Job]) -> Sql {
    let mut sql = new_sql(job);
    let inner = plan_rows_inner(job, all, &mut sql);
    let now = now(job);
    // Held: by a lethe hold (h) or, at the last run, by the object store (st: S3 Object Lock).
    let unheld = "h IS NULL AND NOT st";
    sql.push(&format!(
        "SELECT count(*) FILTER (WHERE e <= {now} AND {unheld}), count(*) FILTER (WHERE e <= {now} AND NOT ({unheld})), \
         count(*) FILTER (WHERE e > {now}), count(*) FILTER (WHERE d < {now} AND {unheld}), \
         {}, {}, count(*) FILTER (WHERE c > {now}), \
         count(*) FILTER (WHERE e <= {now} AND {unheld} AND sn) FROM ({inner}) s",
        time_out(job, &format!("min(e) FILTER (WHERE e <= {now} AND {unheld})")),
        time_out(job, &format!("min(d) FILTER (WHERE {unheld})"))
    ));
    sql
}

/// Every subject with a clock and its times, for `plan --format jsonl`.
pub fn plan_rows(job: &Job, all: &[Job]) -> Sql {
    let mut sql = new_sql(job);
    let inner = plan_rows_inner(job, all, &mut sql);
    let now = now(job);
    sql.push(&format!(
        "SELECT key, owner, {}, {}, {}, h, st, e <= {now}, d < {now}, c > {now}, sn FROM ({inner}) s ORDER BY c, key",
        time_out(job, "c"),
        time_out(job, "e"),
        time_out(job, "d")
    ));
    sql
}

fn plan_rows_inner(job: &Job, all: &[Job], sql: &mut Sql) -> String {
    let base = subject_base(job, sql);
    let e = clock_plus(job, Which::Grace, sql);
    let d = clock_plus(job, Which::Deadline, sql);
    let h = hold_expr(job, all, sql);
    let key = as_text(job, &format!("n0.{}", job.key.quoted()));
    // Held by the object store: the last run found S3 Object Lock on one of its versions and
    // recorded it held with no hold of lethe's (the next run asks the store again).
    let job_name = sql.bind(Bind::Text(job.name.clone()));
    let st = job.dialect.t(&format!(
        "EXISTS (SELECT 1 FROM lethe.work_items w WHERE w.job = {job_name} AND w.subject_key = {key} \
         AND w.state = 'held' AND w.hold_id IS NULL)"
    ));
    // Failed at the last run because the store keeps one of its names differently: the next
    // run fails it again, so the plan counts it apart from what a run would purge.
    let sn = job.dialect.t(&format!(
        "EXISTS (SELECT 1 FROM lethe.work_items w WHERE w.job = {job_name} AND w.subject_key = {key} \
         AND w.state = 'failed' AND w.error_class = '{}')",
        crate::domain::STORE_NAME
    ));
    format!(
        "SELECT {key} AS key, {} AS owner, {} AS c, {e} AS e, {d} AS d, {h} AS h, {st} AS st, {sn} AS sn FROM {} n0 WHERE {base}",
        owner_text(job),
        clock_ts(job),
        job.subject_table().quoted_in(job.dialect)
    )
}

#[cfg(test)]
mod tests {
    use super::exprs::realias;

    #[test]
    fn realias_touches_only_aliases() {
        assert_eq!(
            realias("n1.\"run_id\" = n0.\"id\" AND n12.\"n1x\" = 'n2'"),
            "c1.\"run_id\" = c0.\"id\" AND c12.\"n1x\" = 'n2'"
        );
        assert_eq!(
            realias("CAST($1 AS bigint) AND n0.\"in2\""),
            "CAST($1 AS bigint) AND c0.\"in2\""
        );
    }
}
