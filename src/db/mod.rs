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
pub mod demo;
pub mod hold_ledger;
pub mod holds;
pub mod items;
pub mod plan;
pub mod platform;
pub mod report;
pub mod requests;
pub mod runs;
pub mod sql;
pub mod url;

pub use url::redact_url;

use anyhow::{Context, Result, bail};
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{PgPool, SqlitePool};
use std::str::FromStr;
use std::time::Duration;

pub use crate::domain::Dialect;

/// The platform database, where lethe's own state lives too: PostgreSQL (schema `lethe`) or a
/// SQLite file (tables `lethe_*`).
#[derive(Clone, Debug)]
pub enum Db {
    Pg(PgPool),
    Lite(SqlitePool),
}

/// A transaction on either database. SQLite transactions start with `BEGIN IMMEDIATE`: the
/// file has one writer at a time, taken up front rather than on a read's upgrade (which fails
/// instead of waiting).
pub enum Tx {
    Pg(sqlx::Transaction<'static, sqlx::Postgres>),
    Lite(sqlx::Transaction<'static, sqlx::Sqlite>),
}

/// Runs one expression against whichever pool this is: `on_db!(db, p => query.fetch_all(p))`.
/// The expression is compiled once per backend, so it must type-check for both.
#[macro_export]
macro_rules! on_db {
    ($db:expr, $p:ident => $e:expr) => {
        match $db {
            $crate::db::Db::Pg($p) => $e,
            $crate::db::Db::Lite($p) => $e,
        }
    };
}

/// As `on_db!`, for a transaction: `$c` is the transaction's connection.
#[macro_export]
macro_rules! on_tx {
    ($tx:expr, $c:ident => $e:expr) => {
        match $tx {
            $crate::db::Tx::Pg(t) => {
                let $c = &mut **t;
                $e
            }
            $crate::db::Tx::Lite(t) => {
                let $c = &mut **t;
                $e
            }
        }
    };
}

impl Db {
    pub fn dialect(&self) -> Dialect {
        match self {
            Db::Pg(_) => Dialect::Postgres,
            Db::Lite(_) => Dialect::Sqlite,
        }
    }

    pub async fn begin(&self) -> Result<Tx> {
        Ok(match self {
            Db::Pg(p) => Tx::Pg(p.begin().await?),
            Db::Lite(p) => Tx::Lite(p.begin_with("BEGIN IMMEDIATE").await?),
        })
    }

    pub async fn close(&self) {
        on_db!(self, p => p.close().await)
    }

    /// lethe's table `name` as this database names it: `lethe.name` or `lethe_name`.
    pub fn t(&self, sql: &str) -> String {
        self.dialect().t(sql)
    }
}

impl Dialect {
    /// Rewrites `lethe.` table references for this dialect (`lethe_` on SQLite).
    pub fn t(self, sql: &str) -> String {
        match self {
            Dialect::Postgres => sql.to_string(),
            Dialect::Sqlite => sql.replace("lethe.", "lethe_"),
        }
    }

    /// The database's current time as SQL, in lethe's canonical form on SQLite.
    pub fn now(self) -> &'static str {
        match self {
            Dialect::Postgres => "now()",
            Dialect::Sqlite => "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
        }
    }
}

impl Tx {
    /// PostgreSQL: how long a statement of this transaction waits for a row lock before it
    /// fails. SQLite waits its busy timeout.
    pub async fn set_lock_timeout(&mut self, timeout: Duration) -> Result<()> {
        if let Tx::Pg(t) = self {
            let ms = timeout.as_millis();
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SET LOCAL lock_timeout = {ms}"
            )))
            .execute(&mut **t)
            .await?;
        }
        Ok(())
    }

    pub async fn commit(self) -> Result<()> {
        match self {
            Tx::Pg(t) => t.commit().await?,
            Tx::Lite(t) => t.commit().await?,
        }
        Ok(())
    }

    pub fn dialect(&self) -> Dialect {
        match self {
            Tx::Pg(_) => Dialect::Postgres,
            Tx::Lite(_) => Dialect::Sqlite,
        }
    }
}

/// Whether the database answers a trivial query.
pub async fn ping(db: &Db) -> bool {
    on_db!(db, p => sqlx::query("SELECT 1").execute(p).await.is_ok())
}

/// A time as lethe stores it in SQLite: UTC text with milliseconds, which sorts as it compares.
pub fn lite_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// lethe's migrations for `dialect`, with their bookkeeping table beside lethe's own tables so
/// nothing of lethe's lands among the platform's (PostgreSQL: schema `lethe`).
pub fn migrator_for(dialect: Dialect) -> Migrator {
    match dialect {
        Dialect::Postgres => migrator(),
        Dialect::Sqlite => {
            let mut m = sqlx::migrate!("./migrations/sqlite");
            m.dangerous_set_table_name("lethe__sqlx_migrations");
            m
        }
    }
}

/// lethe's PostgreSQL migrations.
pub fn migrator() -> Migrator {
    let mut m = sqlx::migrate!("./migrations");
    m.create_schema("lethe");
    m.dangerous_set_table_name("lethe._sqlx_migrations");
    m
}

/// Applies lethe's migrations.
pub async fn migrate(db: &Db) -> Result<()> {
    let m = migrator_for(db.dialect());
    on_db!(db, p => m.run(p).await)?;
    Ok(())
}

/// Reverts every lethe migration.
pub async fn unmigrate(db: &Db) -> Result<()> {
    let m = migrator_for(db.dialect());
    on_db!(db, p => m.undo(p, 0).await)?;
    Ok(())
}

/// Connects to the platform database, failing fast with a message that names the server:
/// `postgres://…`, or `sqlite://PATH` (created if missing) for a SQLite file.
/// Refuses a DATABASE_URL lethe cannot use, before anything connects: a scheme it does not
/// speak, or (unless `create`) a SQLite file that does not exist, which SQLite would otherwise
/// create empty.
pub fn check_url(url: &str, create: bool) -> Result<()> {
    let scheme = url.split_once(':').map_or("", |(s, _)| s);
    match scheme {
        "postgres" | "postgresql" => url::check_params(url, false),
        "sqlite" => {
            url::check_params(url, true)?;
            let opts = SqliteConnectOptions::from_str(url).with_context(|| {
                format!(
                    "DATABASE_URL `{}` is not a valid sqlite:// URL",
                    redact_url(url)
                )
            })?;
            let file = opts.get_filename();
            let memory = url.contains(":memory:") || file.as_os_str().is_empty();
            if !memory && !create && !file.exists() {
                anyhow::bail!(
                    "DATABASE_URL names the SQLite file {}, which does not exist: check the path \
                     (lethe never creates an empty platform database by accident), or create it \
                     with `lethe migrate --create`",
                    file.display()
                );
            }
            Ok(())
        }
        _ => anyhow::bail!(
            "DATABASE_URL `{}` is not a database lethe speaks: use postgres://user@host:5432/db \
             (or postgresql://) for PostgreSQL, or sqlite:///path/to/platform.db for SQLite",
            redact_url(url)
        ),
    }
}

pub async fn connect(url: &str, max_connections: u32) -> Result<Db> {
    if url.starts_with("sqlite:") {
        let opts = SqliteConnectOptions::from_str(url)
            .with_context(|| {
                format!(
                    "DATABASE_URL `{}` is not a valid sqlite:// URL",
                    redact_url(url)
                )
            })?
            .create_if_missing(true)
            .foreign_keys(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts)
            .await
            .with_context(|| format!("opening the SQLite platform database {}", redact_url(url)))?;
        return Ok(Db::Lite(pool));
    }
    let options = sqlx::postgres::PgConnectOptions::from_str(url)
        .map_err(|e| {
            crate::domain::config_error(anyhow::anyhow!(
                "DATABASE_URL `{}` is not a valid postgres:// URL: {e}",
                redact_url(url)
            ))
        })?
        // Not sent: PgBouncer refuses startup parameters it does not know, and PostgreSQL 12
        // and later print floats exactly without it.
        .extra_float_digits(None);
    // One connection first, on its own: a pool that cannot connect reports only that it timed
    // out, where this names the cause (refused, unknown host, bad password).
    let probe = tokio::time::timeout(
        Duration::from_secs(10),
        <sqlx::PgConnection as sqlx::Connection>::connect_with(&options),
    )
    .await;
    let (cause, first) = match probe {
        Ok(Ok(conn)) => (None, Some(conn)),
        Ok(Err(e)) => (Some(e.to_string()), None),
        Err(_) => (Some("no answer within 10 s".to_string()), None),
    };
    if let Some(cause) = cause {
        // A certificate, a TLS requirement or credentials the server refuses will not mend
        // themselves: configuration errors (the daemon exits 2 rather than retrying forever).
        // A server that does not answer may come back.
        let (fix, settled) = if cause.contains("certificate") {
            (
                "check sslrootcert in DATABASE_URL (the CA that signed the server's certificate) \
                 and sslmode (verify-full checks the host name too)",
                true,
            )
        } else if cause.contains("no encryption") {
            (
                "the server accepts only TLS: set sslmode=require, or verify-full with \
                 sslrootcert, in DATABASE_URL",
                true,
            )
        } else if cause.contains("password authentication failed") {
            ("check the user and password in DATABASE_URL", true)
        } else {
            ("check DATABASE_URL and that the server is running", false)
        };
        let e = anyhow::anyhow!(
            "connecting to the platform database at {}: {cause}: {fix}",
            redact_url(url)
        );
        return Err(if settled {
            crate::domain::config_error(e)
        } else {
            e
        });
    }
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .with_context(|| {
            format!(
                "connecting to the platform database at {}: check DATABASE_URL and that the server is running",
                redact_url(url)
            )
        })?;
    if let Some(first) = first {
        owns_its_session(first, &pool)
            .await
            .map_err(|e| e.context(format!("connecting to {}", redact_url(url))))?;
    }
    Ok(Db::Pg(pool))
}

/// Refuses a connection pooler in transaction or statement mode (PgBouncer's `pool_mode =
/// transaction`): it hands each transaction whichever server session is free, so the run lock,
/// a session lock, would neither stay with its run nor keep another run out (measured with
/// PgBouncer: the unlock lands on another session and the lock leaks; a later run on the
/// holder's session takes it again). Two connections tell, in simple queries (no prepared
/// statement, which such a pooler may break first): a connection that owns its server session
/// keeps one backend across statements and never lends it to another connection's transaction.
/// Direct connections and session pooling always pass; transaction pooling fails as soon as
/// one of three rounds reuses a backend, which an idle pooler does at once.
async fn owns_its_session(mut a: sqlx::PgConnection, pool: &PgPool) -> Result<()> {
    use sqlx::Connection;
    // The other connection is the pool's first, which the command goes on to use.
    let mut b = pool.acquire().await?;
    let mut pooled = false;
    for _ in 0..3 {
        let a1 = backend_pid(&mut a).await?;
        sqlx::raw_sql("BEGIN").execute(&mut *b).await?;
        let in_b = backend_pid(&mut b).await?;
        let a2 = backend_pid(&mut a).await?;
        sqlx::raw_sql("COMMIT").execute(&mut *b).await?;
        if in_b == a1 || a2 != a1 {
            pooled = true;
            break;
        }
    }
    let _ = a.close().await;
    drop(b);
    if pooled {
        return Err(crate::domain::config_error(anyhow::anyhow!(
            "the connection does not keep its database session: a pooler in transaction or \
             statement mode (PgBouncer's pool_mode = transaction) is in between, where lethe's \
             run lock would neither hold nor keep other runs out: connect lethe directly to \
             PostgreSQL, or through a pool in session mode (docs/operations.md#pgbouncer)"
        )));
    }
    Ok(())
}

async fn backend_pid(c: &mut sqlx::PgConnection) -> Result<i32> {
    use sqlx::Row;
    let row = sqlx::raw_sql("SELECT pg_backend_pid()")
        .fetch_one(c)
        .await?;
    Ok(row.try_get(0)?)
}

/// A hint for errors a connection pooler between lethe and PostgreSQL causes.
pub fn pooler_hint(error: &str) -> Option<&'static str> {
    (error.contains("prepared statement \"sqlx_s_")
        || error.contains("unsupported startup parameter"))
    .then_some(
        "a connection pooler (PgBouncer) between lethe and PostgreSQL: lethe needs session \
             pooling with server_reset_query = DISCARD ALL, or a direct connection \
             (docs/operations.md#pgbouncer)",
    )
}

/// Where lethe's schema stands against the migrations this binary carries.
#[derive(Debug, PartialEq, Eq)]
pub enum SchemaStatus {
    Current,
    Missing,
    Behind { applied: usize, known: usize },
    Ahead { version: i64 },
}

pub async fn schema_status(db: &Db) -> Result<SchemaStatus> {
    let exists: bool = match db {
        Db::Pg(p) => sqlx::query_scalar("SELECT to_regclass('lethe._sqlx_migrations') IS NOT NULL")
            .fetch_one(p)
            .await
            .context("reading lethe's migration table")?,
        Db::Lite(p) => sqlx::query_scalar(
            "SELECT count(*) > 0 FROM sqlite_schema WHERE type = 'table' AND name = 'lethe__sqlx_migrations'",
        )
        .fetch_one(p)
        .await
        .context("reading lethe's migration table")?,
    };
    if !exists {
        return Ok(SchemaStatus::Missing);
    }
    let sql = db.t("SELECT version FROM lethe._sqlx_migrations WHERE success ORDER BY version");
    let applied: Vec<i64> = on_db!(db, p => sqlx::query_scalar(sqlx::AssertSqlSafe(sql.clone()))
        .fetch_all(p)
        .await)
    .context("reading lethe's migration table")?;
    let m = migrator_for(db.dialect());
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
pub async fn require_current_schema(db: &Db) -> Result<()> {
    match schema_status(db).await? {
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
