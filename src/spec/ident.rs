//! SQL identifiers from specs: plain names only, so that quoting them can never change meaning.

use serde::{Deserialize, Deserializer};
use std::fmt;

/// A column or table name: ASCII letters, digits and `_`, not starting with a digit, at most 63
/// bytes (PostgreSQL's limit). Always emitted double-quoted.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ident(String);

impl Ident {
    pub fn new(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 63
            && !s.starts_with(|c: char| c.is_ascii_digit())
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if ok {
            Ok(Ident(s.to_string()))
        } else {
            Err(format!(
                "`{s}` is not a plain identifier: use letters, digits and `_` only (at most 63), \
                 not starting with a digit"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The identifier double-quoted for SQL. Safe because `new` admits no quote characters.
    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Ident {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ident::new(&s).map_err(serde::de::Error::custom)
    }
}

/// A table, optionally schema-qualified (`audit.events`); the schema defaults to `public`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    pub schema: Ident,
    pub table: Ident,
}

impl TableName {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.split_once('.') {
            Some((schema, table)) => Ok(TableName {
                schema: Ident::new(schema)?,
                table: Ident::new(table)?,
            }),
            None => Ok(TableName {
                schema: Ident::new("public")?,
                table: Ident::new(s)?,
            }),
        }
    }

    pub fn quoted(&self) -> String {
        format!("{}.{}", self.schema.quoted(), self.table.quoted())
    }

    /// As `quoted`, for a dialect: SQLite's tables live in its `main` file, where the default
    /// schema `public` does not exist.
    pub fn quoted_in(&self, dialect: crate::db::Dialect) -> String {
        match dialect {
            crate::db::Dialect::Sqlite if self.schema.as_str() == "public" => self.table.quoted(),
            _ => self.quoted(),
        }
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.schema.as_str() == "public" {
            write!(f, "{}", self.table)
        } else {
            write!(f, "{}.{}", self.schema, self.table)
        }
    }
}

impl<'de> Deserialize<'de> for TableName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TableName::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_identifiers_are_refused() {
        for bad in ["", "a\"b", "a;b", "a b", "1a", "a-b", "é", &"x".repeat(64)] {
            assert!(Ident::new(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            TableName::parse("runs").unwrap().quoted(),
            "\"public\".\"runs\""
        );
        assert_eq!(TableName::parse("s.t").unwrap().quoted(), "\"s\".\"t\"");
        assert!(TableName::parse("a.b.c").is_err());
    }
}
