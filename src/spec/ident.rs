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

/// One column or several, as a foreign key matches them: `"run_id"`, or `["trace_id",
/// "span_id"]` for a key over two columns. Never empty, no column twice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Columns(pub Vec<Ident>);

impl Columns {
    pub fn one(c: Ident) -> Self {
        Columns(vec![c])
    }
}

impl fmt::Display for Columns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "{one}"),
            many => {
                let names: Vec<&str> = many.iter().map(Ident::as_str).collect();
                write!(f, "({})", names.join(", "))
            }
        }
    }
}

impl<'de> Deserialize<'de> for Columns {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Columns;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a column name, or an array of column names")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Columns, E> {
                Ident::new(s).map(Columns::one).map_err(E::custom)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Columns, A::Error> {
                let mut out: Vec<Ident> = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    let c = Ident::new(&s).map_err(serde::de::Error::custom)?;
                    if out.contains(&c) {
                        return Err(serde::de::Error::custom(format!(
                            "column `{c}` is named twice"
                        )));
                    }
                    out.push(c);
                }
                if out.is_empty() {
                    return Err(serde::de::Error::custom(
                        "an empty array of columns: name at least one",
                    ));
                }
                Ok(Columns(out))
            }
        }
        d.deserialize_any(V)
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
    pub fn quoted_in(&self, dialect: crate::domain::Dialect) -> String {
        match dialect {
            crate::domain::Dialect::Sqlite if self.schema.as_str() == "public" => {
                self.table.quoted()
            }
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
