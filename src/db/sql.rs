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
        sqlx::query_as_with(AssertSqlSafe(self.text.clone()), self.arguments())
    }

    pub fn query(&self) -> sqlx::query::Query<'_, Postgres, PgArguments> {
        sqlx::query_with(AssertSqlSafe(self.text.clone()), self.arguments())
    }

    fn arguments(&self) -> PgArguments {
        use sqlx::Arguments;
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
}
