//! A tiny builder for statements assembled from specs: text plus values bound in order.
//! Identifiers enter the text only through `Ident::quoted`; every value goes through `bind`.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgArguments;
use sqlx::{AssertSqlSafe, Postgres};

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
}

impl Sql {
    /// Adds a value and returns its placeholder (`$n`).
    pub fn bind(&mut self, b: Bind) -> String {
        self.binds.push(b);
        format!("${}", self.binds.len())
    }

    pub fn push(&mut self, s: &str) {
        self.text.push_str(s);
    }

    pub fn query_as<T>(&self) -> sqlx::query::QueryAs<'_, Postgres, T, PgArguments>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
    {
        let mut q = sqlx::query_as(AssertSqlSafe(self.text.clone()));
        for b in &self.binds {
            q = match b {
                Bind::Text(s) => q.bind(s.as_str()),
                Bind::Texts(v) => q.bind(v.as_slice()),
                Bind::Int(n) => q.bind(*n),
                Bind::Time(t) => q.bind(*t),
            };
        }
        q
    }

    pub fn query(&self) -> sqlx::query::Query<'_, Postgres, PgArguments> {
        let mut q = sqlx::query(AssertSqlSafe(self.text.clone()));
        for b in &self.binds {
            q = match b {
                Bind::Text(s) => q.bind(s.as_str()),
                Bind::Texts(v) => q.bind(v.as_slice()),
                Bind::Int(n) => q.bind(*n),
                Bind::Time(t) => q.bind(*t),
            };
        }
        q
    }
}
