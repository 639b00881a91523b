//! All of lethe's SQL. lethe's own tables live in schema `lethe` (see `migrations/`); platform
//! tables are reached only through `platform`, by identifiers validated against the live catalog
//! and quoted, with every value bound.
//!
//! Queries are built at run time with `sqlx::query` rather than the `query!` macros: the platform
//! half must be built from specs anyway, and one style for both keeps the crate buildable without
//! a database or committed offline data (docs/decisions/0001-runtime-sql.md).

pub mod audit;
pub mod catalog;
pub mod clock;
pub mod holds;
pub mod items;
pub mod platform;
pub mod runs;
pub mod sql;

use anyhow::{Context, Result, bail};
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;
use std::time::Duration;

/// lethe's migrations, with their bookkeeping table inside schema `lethe` so nothing of lethe's
/// lands in the platform's `public` schema.
pub fn migrator() -> Migrator {
    let mut m = sqlx::migrate!("./migrations");
    m.create_schema("lethe");
    m.dangerous_set_table_name("lethe._sqlx_migrations");
    m
}

/// Connects to the platform database, failing fast with a message that names the server.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool> {
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
        .with_context(|| {
            format!(
                "connecting to the platform database at {}: check DATABASE_URL and that the server is running",
                redact_url(url)
            )
        })?;
    Ok(pool)
}

/// The URL without its password, for messages and `lethe check`.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Where lethe's schema stands against the migrations this binary carries.
#[derive(Debug, PartialEq, Eq)]
pub enum SchemaStatus {
    Current,
    Missing,
    Behind { applied: usize, known: usize },
    Ahead { version: i64 },
}

pub async fn schema_status(pool: &PgPool) -> Result<SchemaStatus> {
    let exists: bool =
        sqlx::query_scalar("SELECT to_regclass('lethe._sqlx_migrations') IS NOT NULL")
            .fetch_one(pool)
            .await
            .context("reading lethe's migration table")?;
    if !exists {
        return Ok(SchemaStatus::Missing);
    }
    let applied: Vec<i64> = sqlx::query_scalar(
        "SELECT version FROM lethe._sqlx_migrations WHERE success ORDER BY version",
    )
    .fetch_all(pool)
    .await
    .context("reading lethe's migration table")?;
    let m = migrator();
    let known: Vec<i64> = m
        .iter()
        .filter(|x| x.migration_type.is_up_migration())
        .map(|x| x.version)
        .collect();
    if let Some(v) = applied.iter().find(|v| !known.contains(v)) {
        return Ok(SchemaStatus::Ahead { version: *v });
    }
    if applied.len() < known.len() {
        return Ok(SchemaStatus::Behind {
            applied: applied.len(),
            known: known.len(),
        });
    }
    Ok(SchemaStatus::Current)
}

/// Refuses to go on unless lethe's schema matches this binary.
pub async fn require_current_schema(pool: &PgPool) -> Result<()> {
    match schema_status(pool).await? {
        SchemaStatus::Current => Ok(()),
        SchemaStatus::Missing => {
            bail!("lethe's schema is not installed in this database: run `lethe migrate` first")
        }
        SchemaStatus::Behind { applied, known } => bail!(
            "lethe's schema is out of date ({applied} of {known} migrations applied): run `lethe migrate`"
        ),
        SchemaStatus::Ahead { version } => bail!(
            "the database has lethe migration {version}, which this lethe does not know: use the newer lethe"
        ),
    }
}
