//! The demo world's own SQL (`lethe demo`): its schema and seed, the objects its rows name, and
//! a census of its rows. SQLite only: the demo runs on a SQLite file.

use super::Db;
use anyhow::{Context, Result, bail};
use sqlx::SqlitePool;

fn lite(db: &Db) -> Result<&SqlitePool> {
    match db {
        Db::Lite(p) => Ok(p),
        Db::Pg(_) => bail!("the demo runs on SQLite"),
    }
}

/// Creates the demo's tables and rows. `seed` names the bucket's URI as `'{URI}...'`, which is
/// read from a temporary table the URI is bound into, never pasted as SQL text (the
/// directory's name may hold a quote).
pub async fn seed(db: &Db, schema: &str, seed: &str, uri: &str) -> Result<()> {
    let mut conn = lite(db)?.acquire().await?;
    sqlx::raw_sql("CREATE TEMP TABLE demo_uri (uri TEXT NOT NULL)")
        .execute(&mut *conn)
        .await?;
    sqlx::query("INSERT INTO temp.demo_uri VALUES ($1)")
        .bind(uri)
        .execute(&mut *conn)
        .await?;
    let seed = seed.replace("'{URI}", "(SELECT uri FROM temp.demo_uri) || '");
    for sql in [schema.to_string(), seed] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut *conn)
            .await
            .context("creating the demo database")?;
    }
    Ok(())
}

/// The keys of the objects the demo's rows name, under the bucket at `uri`.
pub async fn object_keys(db: &Db, uri: &str) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT 'runs/' || id || '/output.txt' FROM runs
         UNION ALL SELECT 'snaps/' || id || '/checkpoint.bin' FROM snapshots
         UNION ALL SELECT 'accounts/' || id || '/profile.json' FROM accounts
         UNION ALL SELECT substr(artifact_uri, length($1) + 2) || '/report.html' FROM runs
                   WHERE artifact_uri IS NOT NULL",
    )
    .bind(uri)
    .fetch_all(lite(db)?)
    .await?)
}

/// `(accounts, runs, snapshots, metrics)` rows now.
pub async fn census(db: &Db) -> Result<(i64, i64, i64, i64)> {
    Ok(sqlx::query_as(
        "SELECT (SELECT count(*) FROM accounts), (SELECT count(*) FROM runs),
                (SELECT count(*) FROM snapshots), (SELECT count(*) FROM metrics)",
    )
    .fetch_one(lite(db)?)
    .await?)
}
