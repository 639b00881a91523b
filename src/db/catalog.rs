//! Reads the live catalog (tables, column types, foreign keys) that specs are validated against.

use crate::spec::validate::{Column, ForeignKey};
use crate::spec::{Catalog, TableName};
use anyhow::{Context, Result};
use sqlx::PgPool;

/// A foreign key as read: name, schema, table, referenced schema, table, columns, ref columns.
type FkRow = (
    String,
    String,
    String,
    String,
    String,
    Vec<String>,
    Vec<String>,
);

pub async fn load(pool: &PgPool) -> Result<Catalog> {
    let rows: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT n.nspname::text, c.relname::text, a.attname::text, format_type(a.atttypid, a.atttypmod)
         FROM pg_attribute a
         JOIN pg_class c ON c.oid = a.attrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
           AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'lethe')",
    )
    .fetch_all(pool)
    .await
    .context("reading the database catalog (tables and columns)")?;
    let mut cat = Catalog::default();
    for (schema, table, column, ty) in rows {
        let Ok(t) = TableName::parse(&format!("{schema}.{table}")) else {
            continue;
        };
        cat.columns
            .entry(t)
            .or_default()
            .push(Column { name: column, ty });
    }
    let fks: Vec<FkRow> = sqlx::query_as(
        "SELECT con.conname::text, sn.nspname::text, sc.relname::text, tn.nspname::text, tc.relname::text,
                ARRAY(SELECT attname::text FROM unnest(con.conkey) WITH ORDINALITY k(n, o)
                      JOIN pg_attribute ON attrelid = con.conrelid AND attnum = k.n ORDER BY k.o),
                ARRAY(SELECT attname::text FROM unnest(con.confkey) WITH ORDINALITY k(n, o)
                      JOIN pg_attribute ON attrelid = con.confrelid AND attnum = k.n ORDER BY k.o)
         FROM pg_constraint con
         JOIN pg_class sc ON sc.oid = con.conrelid JOIN pg_namespace sn ON sn.oid = sc.relnamespace
         JOIN pg_class tc ON tc.oid = con.confrelid JOIN pg_namespace tn ON tn.oid = tc.relnamespace
         WHERE con.contype = 'f' AND sn.nspname <> 'lethe'",
    )
    .fetch_all(pool)
    .await
    .context("reading the database catalog (foreign keys)")?;
    for (name, ss, st, ts, tt, cols, ref_cols) in fks {
        let (Ok(table), Ok(references)) = (
            TableName::parse(&format!("{ss}.{st}")),
            TableName::parse(&format!("{ts}.{tt}")),
        ) else {
            continue;
        };
        cat.foreign_keys.push(ForeignKey {
            name,
            table,
            columns: cols,
            references,
            ref_columns: ref_cols,
        });
    }
    Ok(cat)
}

/// Checks that every filter literal is a valid value of its column's type (`id = 'abc'` on a
/// bigint column), so `check` refuses what `run` would otherwise fail on.
pub async fn check_literals(pool: &PgPool, jobs: &[crate::spec::Job]) -> Result<()> {
    let mut errors = Vec::new();
    for job in jobs {
        for (i, node) in job.nodes.iter().enumerate() {
            let Some(f) = &node.filter else { continue };
            for (column, literal) in f.literals() {
                let Some(ty) = job.types.get(&(i, column.to_string())) else {
                    continue;
                };
                let sql = format!("SELECT CAST($1 AS {ty})::text");
                if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(literal.as_bind())
                    .execute(pool)
                    .await
                {
                    let why = e
                        .as_database_error()
                        .map(|d| d.message().to_string())
                        .unwrap_or_else(|| e.to_string());
                    errors.push(format!(
                        "{}:{}: filter: {:?} is not a valid value for `{}.{column}` ({ty}): {why}",
                        job.file.display(),
                        node.line,
                        literal.as_bind(),
                        node.table
                    ));
                }
            }
        }
    }
    if !errors.is_empty() {
        anyhow::bail!("{}", errors.join("\n"));
    }
    Ok(())
}
