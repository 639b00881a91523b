//! The compliance report's SQL: its rows (outcomes from the audit log, with each hold's reason
//! and author as the chain recorded them), outcome counts and purges per day over a period, and
//! the runs in it. `report` turns these into its formats; nothing here knows them.

use super::{Db, Dialect};
use anyhow::{Context, Result};
use chrono::{DateTime, NaiveDate, Utc};
use futures::TryStreamExt;

/// What a report is about: a period, and optionally one job, one account or one subject.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub job: Option<String>,
    pub account: Option<String>,
    pub subject: Option<(String, String)>,
}

/// One outcome entry: `(seq, at, run_id, job, subject_key, owner, event, hold_id, detail, hold
/// reason, hold placed_by)`.
pub type Raw = (
    i64,
    DateTime<Utc>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    Option<i64>,
    serde_json::Value,
    Option<String>,
    Option<String>,
);

/// An audit query over a scope, in a dialect: `IN_PERIOD` becomes the scope's filter on `at`
/// (bounds `$1` and `$2` bound as text, the job as `$3`, the account as `$4`, a subject's job
/// and key as `$5` and `$6`), `MET` and `LATE` whether a purge kept its recorded deadline.
/// SQLite compares times as numbers, since the deadline in an entry's detail has another
/// precision than `at`.
fn period_sql(lite: bool, sql: &str) -> String {
    let (period, met, late) = if lite {
        (
            "($1 IS NULL OR at >= $1) AND ($2 IS NULL OR at < $2) AND ($3 IS NULL OR job = $3) \
             AND ($4 IS NULL OR owner = $4) AND ($5 IS NULL OR (job = $5 AND subject_key = $6))",
            "unixepoch(at, 'subsec') <= unixepoch(detail->>'deadline_at', 'subsec')",
            "unixepoch(at, 'subsec') > unixepoch(detail->>'deadline_at', 'subsec')",
        )
    } else {
        (
            "($1::text IS NULL OR at >= $1::text::timestamptz) AND ($2::text IS NULL OR at < $2::text::timestamptz) \
             AND ($3::text IS NULL OR job = $3) AND ($4::text IS NULL OR owner = $4) \
             AND ($5::text IS NULL OR (job = $5 AND subject_key = $6))",
            "at <= (detail->>'deadline_at')::timestamptz",
            "at > (detail->>'deadline_at')::timestamptz",
        )
    };
    let sql = sql
        .replace("IN_PERIOD", period)
        .replace("MET", met)
        .replace("LATE", late);
    if lite {
        sql.replace("lethe.", "lethe_")
    } else {
        sql
    }
}

fn bound(t: Option<DateTime<Utc>>) -> Option<String> {
    t.map(super::lite_time)
}

/// Per job and event (`purged`, `held`, `failed`): how many, and of the purges how many kept
/// their deadline.
pub async fn outcomes(db: &Db, s: &Scope) -> Result<Vec<(String, String, i64, i64)>> {
    let sql = period_sql(
        db.dialect() == Dialect::Sqlite,
        "SELECT job, event, count(*), count(*) FILTER (WHERE event = 'purged' AND MET)
         FROM lethe.audit_log
         WHERE event IN ('purged', 'held', 'failed') AND job IS NOT NULL AND IN_PERIOD
         GROUP BY 1, 2",
    );
    scoped(db, sql, s).await.context("counting outcomes")
}

/// Runs a `period_sql` query with the scope bound as its `$1`..`$6`.
async fn scoped<T: super::sql::AnyRow>(db: &Db, sql: String, s: &Scope) -> sqlx::Result<Vec<T>> {
    let (subject_job, subject_key) = s.subject.clone().unzip();
    crate::on_db!(db, p => sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(bound(s.from))
        .bind(bound(s.to))
        .bind(&s.job)
        .bind(&s.account)
        .bind(&subject_job)
        .bind(&subject_key)
        .fetch_all(p)
        .await)
}

/// Purges per UTC day: `(day, deadline met, deadline breached)`.
pub async fn purges_per_day(db: &Db, s: &Scope) -> Result<Vec<(NaiveDate, i64, i64)>> {
    let lite = db.dialect() == Dialect::Sqlite;
    let day = if lite {
        "date(at)"
    } else {
        "(at AT TIME ZONE 'UTC')::date"
    };
    let sql = period_sql(
        lite,
        &format!(
            "SELECT {day}, count(*) FILTER (WHERE MET), count(*) FILTER (WHERE LATE)
             FROM lethe.audit_log WHERE event = 'purged' AND IN_PERIOD GROUP BY 1 ORDER BY 1"
        ),
    );
    scoped(db, sql, s).await.context("counting purges per day")
}

/// The real (not dry) runs that overlap the period: `(id, job, started_at, finished_at,
/// status)`.
pub async fn runs(
    db: &Db,
    s: &Scope,
) -> Result<Vec<(i64, String, DateTime<Utc>, Option<DateTime<Utc>>, String)>> {
    let sql = if db.dialect() == Dialect::Sqlite {
        "SELECT id, job, started_at, finished_at, status FROM lethe_job_runs
         WHERE NOT dry_run AND ($1 IS NULL OR finished_at IS NULL OR finished_at >= $1)
           AND ($2 IS NULL OR started_at < $2) AND ($3 IS NULL OR job = $3)
         ORDER BY id"
    } else {
        "SELECT id, job, started_at, finished_at, status FROM lethe.job_runs
         WHERE NOT dry_run AND ($1::text IS NULL OR coalesce(finished_at, 'infinity') >= $1::text::timestamptz)
           AND ($2::text IS NULL OR started_at < $2::text::timestamptz) AND ($3::text IS NULL OR job = $3)
         ORDER BY id"
    };
    crate::on_db!(db, p => sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(bound(s.from))
        .bind(bound(s.to))
        .bind(&s.job)
        .fetch_all(p)
        .await)
    .context("listing runs")
}

/// Calls `each` with every outcome entry in scope (only `held` and `failed` ones with
/// `exceptions_only`), in audit order, streaming. Returns how many.
pub async fn for_each_outcome(
    db: &Db,
    s: &Scope,
    exceptions_only: bool,
    mut each: impl FnMut(Raw) -> Result<()>,
) -> Result<u64> {
    let (subject_job, subject_key) = s.subject.clone().unzip();
    // Bounds are bound as text: PostgreSQL casts them (and needs the parameters' type to test
    // them for NULL), SQLite compares its canonical text.
    let (t, at) = match db.dialect() {
        Dialect::Postgres => ("::text", "::text::timestamptz"),
        Dialect::Sqlite => ("", ""),
    };
    let sql = db.t(&format!(
        "SELECT a.seq, a.at, a.run_id, a.job, a.subject_key, a.owner, a.event, a.hold_id, a.detail,
                h.detail->>'reason', h.detail->>'by'
         FROM lethe.audit_log a LEFT JOIN lethe.audit_log h ON a.hold_id IS NOT NULL
              AND h.seq = (SELECT min(x.seq) FROM lethe.audit_log x
                           WHERE x.hold_id = a.hold_id AND x.event = 'hold_placed')
         WHERE a.event IN ('purged', 'held', 'failed') AND NOT ($7 AND a.event = 'purged')
           AND ($1{t} IS NULL OR a.at >= $1{at}) AND ($2{t} IS NULL OR a.at < $2{at})
           AND ($3{t} IS NULL OR a.job = $3) AND ($4{t} IS NULL OR a.owner = $4)
           AND ($5{t} IS NULL OR (a.job = $5 AND a.subject_key = $6))
         ORDER BY a.seq"
    ));
    let n = crate::on_db!(db, p => {
        let mut rows = sqlx::query_as::<_, Raw>(sqlx::AssertSqlSafe(sql))
            .bind(bound(s.from))
            .bind(bound(s.to))
            .bind(&s.job)
            .bind(&s.account)
            .bind(subject_job)
            .bind(subject_key)
            .bind(exceptions_only)
            .fetch(p);
        let mut n = 0;
        while let Some(raw) = rows.try_next().await.context("reading the audit log")? {
            each(raw)?;
            n += 1;
        }
        n
    });
    Ok(n)
}
