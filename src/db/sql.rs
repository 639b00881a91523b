//! A tiny builder for statements assembled from specs: text plus values bound in order, for one
//! dialect. Identifiers enter the text only through `Ident::quoted`; every value goes through
//! `bind`. `$n` placeholders serve both PostgreSQL and SQLite.

use super::{Db, Dialect, Tx};
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Arguments, AssertSqlSafe, Row};

/// Every column of a row as text (NULL as `None`).
fn texts<R: Row>(row: &R) -> sqlx::Result<Vec<Option<String>>>
where
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    (0..row.len())
        .map(|i| row.try_get::<Option<String>, _>(i))
        .collect()
}

#[derive(Clone, Debug)]
pub enum Bind {
    Text(String),
    Texts(Vec<String>),
    Int(i64),
    Time(DateTime<Utc>),
}

#[derive(Clone, Debug, Default)]
pub struct Sql {
    pub text: String,
    pub binds: Vec<Bind>,
    pub dialect: Dialect,
}

/// A row type both databases can decode.
pub trait AnyRow:
    for<'r> sqlx::FromRow<'r, PgRow> + for<'r> sqlx::FromRow<'r, SqliteRow> + Send + Unpin
{
}
impl<T> AnyRow for T where
    T: for<'r> sqlx::FromRow<'r, PgRow> + for<'r> sqlx::FromRow<'r, SqliteRow> + Send + Unpin
{
}

impl Sql {
    pub fn new(dialect: Dialect) -> Self {
        Sql {
            dialect,
            ..Default::default()
        }
    }

    /// Adds a value and returns its placeholder (`$n`).
    pub fn bind(&mut self, b: Bind) -> String {
        self.binds.push(b);
        format!("${}", self.binds.len())
    }

    pub fn push(&mut self, s: &str) {
        self.text.push_str(s);
    }

    fn pg_args(&self) -> PgArguments {
        let mut args = PgArguments::default();
        for b in &self.binds {
            let added = match b {
                Bind::Text(s) => args.add(s.as_str()),
                Bind::Texts(v) => args.add(v.as_slice()),
                Bind::Int(n) => args.add(*n),
                Bind::Time(t) => args.add(*t),
            };
            // Encoding these plain types into a buffer cannot fail.
            added.expect("text, integer and time values always encode");
        }
        args
    }

    /// SQLite has no arrays: a list is bound as a JSON array (read with `json_each`), and a
    /// time as epoch seconds, the form SQLite clock expressions compare in.
    fn lite_args(&self) -> SqliteArguments {
        let mut args = SqliteArguments::default();
        for b in &self.binds {
            let added = match b {
                Bind::Text(s) => args.add(s.clone()),
                Bind::Texts(v) => args.add(serde_json::to_string(v).expect("strings serialize")),
                Bind::Int(n) => args.add(*n),
                Bind::Time(t) => args.add(t.timestamp_millis() as f64 / 1000.0),
            };
            added.expect("text, integer and real values always encode");
        }
        args
    }

    pub async fn fetch_all<T: AnyRow>(&self, db: &Db) -> sqlx::Result<Vec<T>> {
        match db {
            Db::Pg(p) => {
                sqlx::query_as_with(AssertSqlSafe(self.text.clone()), self.pg_args())
                    .fetch_all(p)
                    .await
            }
            Db::Lite(p) => {
                sqlx::query_as_with(AssertSqlSafe(self.text.clone()), self.lite_args())
                    .fetch_all(p)
                    .await
            }
        }
    }

    pub async fn fetch_one<T: AnyRow>(&self, db: &Db) -> sqlx::Result<T> {
        match db {
            Db::Pg(p) => {
                sqlx::query_as_with(AssertSqlSafe(self.text.clone()), self.pg_args())
                    .fetch_one(p)
                    .await
            }
            Db::Lite(p) => {
                sqlx::query_as_with(AssertSqlSafe(self.text.clone()), self.lite_args())
                    .fetch_one(p)
                    .await
            }
        }
    }

    pub async fn fetch_all_tx<T: AnyRow>(&self, tx: &mut Tx) -> sqlx::Result<Vec<T>> {
        match tx {
            Tx::Pg(t) => {
                sqlx::query_as_with(AssertSqlSafe(self.text.clone()), self.pg_args())
                    .fetch_all(&mut **t)
                    .await
            }
            Tx::Lite(t) => {
                sqlx::query_as_with(AssertSqlSafe(self.text.clone()), self.lite_args())
                    .fetch_all(&mut **t)
                    .await
            }
        }
    }

    /// Runs a statement in a transaction; answers the rows it affected.
    pub async fn execute_tx(&self, tx: &mut Tx) -> sqlx::Result<u64> {
        Ok(match tx {
            Tx::Pg(t) => sqlx::query_with(AssertSqlSafe(self.text.clone()), self.pg_args())
                .execute(&mut **t)
                .await?
                .rows_affected(),
            Tx::Lite(t) => sqlx::query_with(AssertSqlSafe(self.text.clone()), self.lite_args())
                .execute(&mut **t)
                .await?
                .rows_affected(),
        })
    }

    /// Every row as its columns' text (NULL as `None`), for queries whose width depends on the
    /// spec.
    pub async fn fetch_texts(&self, db: &Db) -> sqlx::Result<Vec<Vec<Option<String>>>> {
        match db {
            Db::Pg(p) => sqlx::query_with(AssertSqlSafe(self.text.clone()), self.pg_args())
                .fetch_all(p)
                .await?
                .iter()
                .map(texts)
                .collect(),
            Db::Lite(p) => sqlx::query_with(AssertSqlSafe(self.text.clone()), self.lite_args())
                .fetch_all(p)
                .await?
                .iter()
                .map(texts)
                .collect(),
        }
    }

    /// As `fetch_texts`, inside a transaction.
    pub async fn fetch_texts_tx(&self, tx: &mut Tx) -> sqlx::Result<Vec<Vec<Option<String>>>> {
        match tx {
            Tx::Pg(t) => sqlx::query_with(AssertSqlSafe(self.text.clone()), self.pg_args())
                .fetch_all(&mut **t)
                .await?
                .iter()
                .map(texts)
                .collect(),
            Tx::Lite(t) => sqlx::query_with(AssertSqlSafe(self.text.clone()), self.lite_args())
                .fetch_all(&mut **t)
                .await?
                .iter()
                .map(texts)
                .collect(),
        }
    }

    /// Streams rows to `each`, one at a time, from a cursor.
    pub async fn for_each<T: AnyRow>(
        &self,
        db: &Db,
        mut each: impl FnMut(T) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        use futures::TryStreamExt;
        match db {
            Db::Pg(p) => {
                let args = self.pg_args();
                let mut rows =
                    sqlx::query_as_with::<_, T, _>(AssertSqlSafe(self.text.clone()), args).fetch(p);
                while let Some(r) = rows.try_next().await? {
                    each(r)?;
                }
            }
            Db::Lite(p) => {
                let args = self.lite_args();
                let mut rows =
                    sqlx::query_as_with::<_, T, _>(AssertSqlSafe(self.text.clone()), args).fetch(p);
                while let Some(r) = rows.try_next().await? {
                    each(r)?;
                }
            }
        }
        Ok(())
    }
}
