//! Work items: lethe's durable record of one subject's purge. A claim writes the complete
//! manifest and the promised deadline before anything is touched, under a lease with a fencing
//! epoch; every later transition names the epoch it holds, so a process whose lease was taken
//! over changes nothing.

use super::audit::{NewEntry, append};
use super::{Db, Tx, lite_time};
use crate::audit::event;
use crate::domain::ItemState;
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use sqlx::{PgPool, SqlitePool};

/// What a claim records for one subject.
#[derive(Clone, Debug)]
pub struct ClaimInput {
    pub key: String,
    pub owner: Option<String>,
    pub clock_at: DateTime<Utc>,
    pub eligible_at: DateTime<Utc>,
    pub deadline_at: DateTime<Utc>,
    pub manifest: serde_json::Value,
}

/// A claimed item: what later steps need to act on it and to fence their writes.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Claimed {
    pub id: i64,
    pub subject_key: String,
    pub epoch: i64,
    pub manifest: serde_json::Value,
    pub prev_hold: Option<i64>,
}

/// Claims items for `run_id`: new subjects are inserted; open items are taken over when held,
/// failed, claimed by another run of the job, or their lease has expired. The caller holds the
/// job's run lock (`runs::try_lock_job`), a lock tied to its database session: holding it proves
/// that no other run of the job is alive (a killed process's session ended and freed it), so the
/// items another run left in progress are taken over at once instead of after their lease. A run
/// that was only cut off, not dead, is stopped by the fence: its next lease check before a delete
/// finds the epoch moved. On take-over the manifest's locations are the union of the old and the
/// new, so objects named by an earlier claim are never forgotten.
pub async fn claim(
    db: &Db,
    job: &str,
    run_id: i64,
    lease_secs: i64,
    items: &[ClaimInput],
) -> Result<Vec<Claimed>> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    match db {
        Db::Pg(p) => claim_pg(p, job, run_id, lease_secs, items).await,
        Db::Lite(p) => claim_lite(p, job, run_id, lease_secs, items).await,
    }
    .with_context(|| format!("claiming work items for job `{job}`"))
}

/// SQLite: one upsert per subject, all in one write transaction.
async fn claim_lite(
    pool: &SqlitePool,
    job: &str,
    run_id: i64,
    lease_secs: i64,
    items: &[ClaimInput],
) -> Result<Vec<Claimed>> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let mut out = Vec::with_capacity(items.len());
    for i in items {
        let got: Option<Claimed> = sqlx::query_as(
            "INSERT INTO lethe_work_items
                 (job, subject_key, owner, state, clock_at, eligible_at, deadline_at, manifest, run_id, lease_until)
             VALUES ($1, $2, $3, 'claimed', $4, $5, $6, $7, $8,
                     strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '+' || $9 || ' seconds'))
             ON CONFLICT (job, subject_key) WHERE state <> 'done' DO UPDATE SET
                 state = 'claimed', run_id = excluded.run_id, lease_until = excluded.lease_until,
                 epoch = lethe_work_items.epoch + 1, attempts = lethe_work_items.attempts + 1,
                 owner = excluded.owner, clock_at = excluded.clock_at,
                 eligible_at = excluded.eligible_at, deadline_at = excluded.deadline_at,
                 manifest = json_set(excluded.manifest, '$.locations', json((
                     SELECT json_group_array(json(value)) FROM (
                         SELECT value FROM json_each(lethe_work_items.manifest, '$.locations')
                         UNION SELECT value FROM json_each(excluded.manifest, '$.locations'))))),
                 error_class = NULL, last_error = NULL,
                 updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
               WHERE lethe_work_items.state IN ('held', 'failed')
                  OR lethe_work_items.run_id IS NOT $8
                  OR lethe_work_items.lease_until < strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
             RETURNING id, subject_key, epoch, manifest, hold_id AS prev_hold",
        )
        .bind(job)
        .bind(&i.key)
        .bind(&i.owner)
        .bind(lite_time(i.clock_at))
        .bind(lite_time(i.eligible_at))
        .bind(lite_time(i.deadline_at))
        .bind(&i.manifest)
        .bind(run_id)
        .bind(lease_secs)
        .fetch_optional(&mut *tx)
        .await?;
        out.extend(got);
    }
    tx.commit().await?;
    Ok(out)
}

async fn claim_pg(
    pool: &PgPool,
    job: &str,
    run_id: i64,
    lease_secs: i64,
    items: &[ClaimInput],
) -> Result<Vec<Claimed>> {
    let keys: Vec<&str> = items.iter().map(|i| i.key.as_str()).collect();
    let owners: Vec<Option<&str>> = items.iter().map(|i| i.owner.as_deref()).collect();
    let clocks: Vec<DateTime<Utc>> = items.iter().map(|i| i.clock_at).collect();
    let eligibles: Vec<DateTime<Utc>> = items.iter().map(|i| i.eligible_at).collect();
    let deadlines: Vec<DateTime<Utc>> = items.iter().map(|i| i.deadline_at).collect();
    let manifests: Vec<&serde_json::Value> = items.iter().map(|i| &i.manifest).collect();
    sqlx::query_as(
        "INSERT INTO lethe.work_items AS w
             (job, subject_key, owner, state, clock_at, eligible_at, deadline_at, manifest, run_id, lease_until)
         SELECT $1, k, o, 'claimed', c, e, d, m, $2, now() + $3 * interval '1 second'
         FROM unnest($4::text[], $5::text[], $6::timestamptz[], $7::timestamptz[], $8::timestamptz[], $9::jsonb[])
              AS t(k, o, c, e, d, m)
         ON CONFLICT (job, subject_key) WHERE state <> 'done' DO UPDATE SET
             state = 'claimed', run_id = EXCLUDED.run_id, lease_until = EXCLUDED.lease_until,
             epoch = w.epoch + 1, attempts = w.attempts + 1, owner = EXCLUDED.owner,
             clock_at = EXCLUDED.clock_at, eligible_at = EXCLUDED.eligible_at, deadline_at = EXCLUDED.deadline_at,
             manifest = EXCLUDED.manifest || jsonb_build_object('locations',
                 (SELECT coalesce(jsonb_agg(DISTINCT l), '[]'::jsonb)
                  FROM jsonb_array_elements(coalesce(w.manifest->'locations', '[]'::jsonb)
                                            || coalesce(EXCLUDED.manifest->'locations', '[]'::jsonb)) l)),
             error_class = NULL, last_error = NULL, updated_at = now()
           WHERE w.state IN ('held', 'failed') OR w.run_id IS DISTINCT FROM $2 OR w.lease_until < now()
         RETURNING id, subject_key, epoch, manifest, hold_id AS prev_hold",
    )
    .bind(job)
    .bind(run_id)
    .bind(lease_secs)
    .bind(&keys)
    .bind(&owners)
    .bind(&clocks)
    .bind(&eligibles)
    .bind(&deadlines)
    .bind(&manifests)
    .fetch_all(pool)
    .await
    .map_err(Into::into)
}

/// Moves items from one in-progress state to the next, fenced by epoch and run. Returns the ids
/// that moved; an id missing from the answer lost its lease and must not be acted on.
pub async fn advance(
    tx: &mut Tx,
    run_id: i64,
    fenced: &[(i64, i64)],
    to: ItemState,
    purged: bool,
) -> Result<Vec<i64>> {
    let ids: Vec<i64> = fenced.iter().map(|f| f.0).collect();
    let epochs: Vec<i64> = fenced.iter().map(|f| f.1).collect();
    let conn = match tx {
        Tx::Pg(t) => &mut **t,
        Tx::Lite(t) => {
            return sqlx::query_scalar(
                "UPDATE lethe_work_items SET state = $2, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
                        purged_at = CASE WHEN $3 THEN strftime('%Y-%m-%dT%H:%M:%fZ', 'now') ELSE purged_at END,
                        lease_until = CASE WHEN $3 THEN NULL ELSE lease_until END
                 WHERE (id, epoch) IN (SELECT value ->> 0, value ->> 1 FROM json_each($1))
                   AND run_id = $4 AND state IN ('claimed', 'objects_purged', 'verified')
                   AND ($2 <> 'done' OR state = 'verified'
                        OR (state = 'claimed'
                            AND coalesce(json_array_length(manifest, '$.locations'), 0) = 0))
                 RETURNING id",
            )
            .bind(serde_json::to_string(fenced).expect("pairs serialize"))
            .bind(to.as_str())
            .bind(purged)
            .bind(run_id)
            .fetch_all(&mut **t)
            .await
            .context("advancing work items");
        }
    };
    sqlx::query_scalar(
        "UPDATE lethe.work_items w SET state = $3, updated_at = now(),
                purged_at = CASE WHEN $4 THEN now() ELSE w.purged_at END,
                lease_until = CASE WHEN $4 THEN NULL ELSE w.lease_until END
         FROM unnest($1::bigint[], $2::bigint[]) AS f(id, ep)
         WHERE w.id = f.id AND w.epoch = f.ep AND w.run_id = $5
           AND w.state IN ('claimed', 'objects_purged', 'verified')
           AND ($3 <> 'done' OR w.state = 'verified'
                OR (w.state = 'claimed'
                    AND coalesce(jsonb_array_length(w.manifest->'locations'), 0) = 0))
         RETURNING w.id",
    )
    .bind(&ids)
    .bind(&epochs)
    .bind(to.as_str())
    .bind(purged)
    .bind(run_id)
    .fetch_all(&mut *conn)
    .await
    .context("advancing work items")
}

/// Extends the leases of `fenced` items still ours (same run, same epoch, in progress, lease
/// not yet expired). Returns the ids renewed; any other id was lost.
pub async fn renew(
    db: &Db,
    run_id: i64,
    lease_secs: i64,
    fenced: &[(i64, i64)],
) -> Result<Vec<i64>> {
    let ids: Vec<i64> = fenced.iter().map(|f| f.0).collect();
    let epochs: Vec<i64> = fenced.iter().map(|f| f.1).collect();
    let pool = match db {
        Db::Pg(p) => p,
        Db::Lite(p) => {
            return sqlx::query_scalar(
                "UPDATE lethe_work_items
                    SET lease_until = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '+' || $2 || ' seconds')
                 WHERE (id, epoch) IN (SELECT value ->> 0, value ->> 1 FROM json_each($1))
                   AND run_id = $3 AND state IN ('claimed', 'objects_purged', 'verified')
                   AND lease_until > strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
                 RETURNING id",
            )
            .bind(serde_json::to_string(fenced).expect("pairs serialize"))
            .bind(lease_secs)
            .bind(run_id)
            .fetch_all(p)
            .await
            .context("renewing work item leases");
        }
    };
    sqlx::query_scalar(
        "UPDATE lethe.work_items w SET lease_until = now() + $3 * interval '1 second'
         FROM unnest($1::bigint[], $2::bigint[]) AS f(id, ep)
         WHERE w.id = f.id AND w.epoch = f.ep AND w.run_id = $4
           AND w.state IN ('claimed', 'objects_purged', 'verified') AND w.lease_until > now()
         RETURNING w.id",
    )
    .bind(&ids)
    .bind(&epochs)
    .bind(lease_secs)
    .bind(run_id)
    .fetch_all(pool)
    .await
    .context("renewing work item leases")
}

/// Of `keys`, the subjects of `job` that wait, each answered `true` when it is failed and waiting
/// out its `retry_at` (work left undone), `false` when recorded held by a hold still active (it
/// comes back when the hold is released). Discovery leaves them out. (Asked per page by key, through the open-items index: a plan that does not depend on
/// the statistics of a table that grows by thousands of rows within one run.)
pub async fn waiting(
    db: &Db,
    job: &str,
    keys: &[String],
) -> Result<std::collections::HashMap<String, bool>> {
    let cond = db.t(&format!(
        "w.state <> 'done' AND ((w.state = 'held' AND EXISTS (SELECT 1 FROM lethe.holds h \
         WHERE h.id = w.hold_id AND h.released_at IS NULL)) OR (w.state = 'failed' AND w.retry_at > {}))",
        db.dialect().now()
    ));
    let rows: Vec<(String, bool)> = match db {
        Db::Pg(p) => sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT w.subject_key, w.state = 'failed' FROM lethe.work_items w WHERE w.job = $1 AND w.subject_key = ANY($2) AND {cond}"
        )))
        .bind(job)
        .bind(keys)
        .fetch_all(p)
        .await,
        Db::Lite(p) => sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT w.subject_key, w.state = 'failed' FROM lethe_work_items w WHERE w.job = $1 \
             AND w.subject_key IN (SELECT value FROM json_each($2)) AND {cond}"
        )))
        .bind(job)
        .bind(serde_json::to_string(keys).expect("keys serialize"))
        .fetch_all(p)
        .await,
    }
    .with_context(|| format!("reading the waiting subjects of job `{job}`"))?;
    Ok(rows.into_iter().collect())
}

/// The subjects whose open work item failed because the object store keeps one of their names
/// differently (`domain::STORE_NAME`), per job (`job` alone, when given): job, key, owner and
/// the error, by job and key.
pub async fn store_name_failures(
    db: &Db,
    job: Option<&str>,
) -> Result<Vec<(String, String, Option<String>, String)>> {
    let sql = db.t(&format!(
        "SELECT job, subject_key, owner, coalesce(last_error, '') FROM lethe.work_items \
         WHERE state = 'failed' AND error_class = '{}' AND ($1 IS NULL OR job = $1) \
         ORDER BY job, subject_key",
        crate::domain::STORE_NAME
    ));
    let sql = if db.dialect() == super::Dialect::Postgres {
        sql.replace("$1 IS NULL", "$1::text IS NULL")
    } else {
        sql
    };
    crate::on_db!(db, p => sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(job)
        .fetch_all(p)
        .await)
    .context("reading the subjects failed for names the store keeps differently")
}

/// Context for recording one subject's exception or failure in the audit log.
pub struct Subject<'a> {
    pub job: &'a str,
    pub run_id: i64,
    pub id: i64,
    pub epoch: i64,
    pub key: &'a str,
    pub owner: Option<&'a str>,
    /// Who ran the run (`--by`, LETHE_ACTOR, the OS user, or the daemon itself), recorded in
    /// each of its audit entries.
    pub by: &'a str,
}

/// Marks an item held by `hold_id` (or by storage evidence) and, unless it was already held by
/// the same hold, records the exception. Returns false if the lease was lost.
pub async fn mark_held(
    db: &Db,
    s: &Subject<'_>,
    hold_id: Option<i64>,
    prev_hold: Option<i64>,
    detail: serde_json::Value,
) -> Result<bool> {
    let one = Held {
        subject: Subject { ..*s },
        hold_id,
        prev_hold,
        detail,
    };
    Ok(mark_held_many(db, vec![one]).await? == 1)
}

/// One subject to mark held (see `mark_held`).
pub struct Held<'a> {
    pub subject: Subject<'a>,
    pub hold_id: Option<i64>,
    pub prev_hold: Option<i64>,
    pub detail: serde_json::Value,
}

/// `mark_held` for many subjects in one transaction. Returns how many were still ours.
pub async fn mark_held_many(db: &Db, held: Vec<Held<'_>>) -> Result<usize> {
    if held.is_empty() {
        return Ok(0);
    }
    let mut tx = db.begin().await?;
    let sql = db.t(&format!(
        "UPDATE lethe.work_items SET state = 'held', hold_id = $3, lease_until = NULL, updated_at = {},
                last_error = $5
         WHERE id = $1 AND epoch = $2 AND run_id = $4 AND state IN ('claimed', 'objects_purged', 'verified')",
        db.dialect().now()
    ));
    let mut entries = Vec::new();
    let mut moved = 0;
    for h in held {
        let s = &h.subject;
        let evidence = h.detail.get("evidence").and_then(|v| v.as_str());
        let ours = crate::on_tx!(&mut tx, c => sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .bind(s.id)
            .bind(s.epoch)
            .bind(h.hold_id)
            .bind(s.run_id)
            .bind(evidence)
            .execute(c)
            .await?
            .rows_affected())
            == 1;
        if ours {
            moved += 1;
            if h.hold_id.is_none() || h.hold_id != h.prev_hold {
                entries.push(entry(s, event::HELD, h.hold_id, h.detail));
            }
        }
    }
    if !entries.is_empty() {
        append(&mut tx, entries).await?;
    }
    tx.commit().await?;
    Ok(moved)
}

/// Marks an item failed with an error class and message, and records it. The item stays open:
/// the next run takes it again, at once after its first two attempts (most failures pass: a
/// throttled store, a lost lease), then only after `retry_at`, 1 minute after the third,
/// doubling up to an hour, so a subject that keeps failing is not re-claimed and re-audited by
/// every run. Without `backoff` (a failure of the run's, not the subject's: a lost database
/// session, a lease that could not be confirmed) the next run takes it at once whatever its
/// attempts: a failover must not make every subject it touched wait.
pub async fn mark_failed(
    db: &Db,
    s: &Subject<'_>,
    class: &str,
    message: &str,
    detail: serde_json::Value,
    backoff: bool,
) -> Result<bool> {
    let mut tx = db.begin().await?;
    let wait = match db.dialect() {
        _ if !backoff => db.dialect().now(),
        super::Dialect::Postgres => {
            "now() + CASE WHEN attempts < 3 THEN 0 \
             ELSE least(3600, 60 * power(2, least(attempts - 3, 10))) END * interval '1 second'"
        }
        super::Dialect::Sqlite => {
            "strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '+' || (CASE WHEN attempts < 3 THEN 0 \
             ELSE min(3600, 60 * (1 << min(attempts - 3, 10))) END) || ' seconds')"
        }
    };
    let sql = db.t(&format!(
        "UPDATE lethe.work_items SET state = 'failed', error_class = $3, last_error = $4, retry_at = {wait},
                hold_id = NULL, lease_until = NULL, updated_at = {now}
         WHERE id = $1 AND epoch = $2 AND run_id = $5 AND state IN ('claimed', 'objects_purged', 'verified')",
        now = db.dialect().now()
    ));
    let moved = crate::on_tx!(&mut tx, c => sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(s.id)
        .bind(s.epoch)
        .bind(class)
        .bind(message)
        .bind(s.run_id)
        .execute(c)
        .await?
        .rows_affected())
        == 1;
    if moved {
        let mut d = detail;
        d["error_class"] = class.into();
        d["error"] = message.into();
        append(&mut tx, vec![entry(s, event::FAILED, None, d)]).await?;
    }
    tx.commit().await?;
    Ok(moved)
}

pub fn entry(
    s: &Subject<'_>,
    event: &'static str,
    hold_id: Option<i64>,
    mut detail: serde_json::Value,
) -> NewEntry {
    if let Some(d) = detail.as_object_mut() {
        d.insert("by".into(), s.by.into());
    }
    NewEntry {
        run_id: Some(s.run_id),
        job: Some(s.job.to_string()),
        subject_key: Some(s.key.to_string()),
        owner: s.owner.map(String::from),
        event,
        hold_id,
        detail,
    }
}

/// After a run aborted: every item it still holds in progress becomes `failed` (lease dropped),
/// so the next run claims it at once. Returns how many.
pub async fn release_run(db: &Db, run_id: i64, reason: &str) -> Result<u64> {
    let sql = db.t(&format!(
        "UPDATE lethe.work_items SET state = 'failed', error_class = 'run_aborted', last_error = $2,
                lease_until = NULL, retry_at = {now}, updated_at = {now}
         WHERE run_id = $1 AND state IN ('claimed', 'objects_purged', 'verified')",
        now = db.dialect().now()
    ));
    let n = crate::on_db!(db, p => sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(run_id)
        .bind(reason)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))
    .context("releasing the work items of an aborted run")?;
    Ok(n)
}
