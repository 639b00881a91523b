//! Reads the live catalog (tables, column types, foreign keys) that specs are validated against.

use super::{Db, Dialect};
use crate::spec::validate::{Column, ForeignKey, OnDelete};
use crate::spec::{Catalog, TableName};
use anyhow::{Context, Result};
use sqlx::{PgPool, SqlitePool};

/// A foreign key as read: name, schema, table, referenced schema, table, columns, ref columns,
/// `ON DELETE` action.
type FkRow = (
    String,
    String,
    String,
    String,
    String,
    Vec<String>,
    Vec<String>,
    String,
);

pub async fn load(db: &Db) -> Result<Catalog> {
    match db {
        Db::Pg(p) => load_pg(p).await,
        Db::Lite(p) => load_lite(p).await,
    }
}

/// SQLite's catalog: every table but SQLite's and lethe's own, its declared column types, and
/// its foreign keys (named `TABLE_COLUMN_fkey`, as PostgreSQL would, since SQLite's are
/// unnamed). A key that names no columns of its parent refers to the parent's primary key.
async fn load_lite(pool: &SqlitePool) -> Result<Catalog> {
    let what = "reading the database catalog (tables, columns and foreign keys)";
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
         AND name NOT LIKE 'lethe\\_%' ESCAPE '\\' ORDER BY name",
    )
    .fetch_all(pool)
    .await
    .context(what)?;
    let mut cat = Catalog {
        dialect: Dialect::Sqlite,
        ..Default::default()
    };
    let mut primary: std::collections::HashMap<String, Vec<String>> = Default::default();
    for table in &tables {
        let cols: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT name, type, pk FROM pragma_table_info($1) ORDER BY cid")
                .bind(table)
                .fetch_all(pool)
                .await
                .context(what)?;
        let mut pk: Vec<(i64, String)> = cols
            .iter()
            .filter(|c| c.2 > 0)
            .map(|c| (c.2, c.0.clone()))
            .collect();
        pk.sort();
        let pk: Vec<String> = pk.into_iter().map(|p| p.1).collect();
        primary.insert(table.clone(), pk.clone());
        let Ok(t) = TableName::parse(table) else {
            continue;
        };
        let mut unique = vec![pk]
            .into_iter()
            .filter(|k| !k.is_empty())
            .collect::<Vec<_>>();
        let indexes: Vec<(String,)> = sqlx::query_as(
            "SELECT name FROM pragma_index_list($1) WHERE \"unique\" AND NOT partial",
        )
        .bind(table)
        .fetch_all(pool)
        .await
        .context(what)?;
        for (index,) in indexes {
            let cols: Vec<Option<String>> =
                sqlx::query_scalar("SELECT name FROM pragma_index_info($1) ORDER BY seqno")
                    .bind(&index)
                    .fetch_all(pool)
                    .await
                    .context(what)?;
            // An expression column has no name: such an index makes no column unique.
            if let Some(cols) = cols.into_iter().collect::<Option<Vec<_>>>() {
                unique.push(cols);
            }
        }
        cat.unique.insert(t.clone(), unique);
        cat.columns.insert(
            t,
            cols.into_iter()
                .map(|(name, ty, _)| Column { name, ty })
                .collect(),
        );
    }
    for table in &tables {
        let rows: Vec<(i64, i64, String, String, Option<String>, String)> = sqlx::query_as(
            "SELECT id, seq, \"table\", \"from\", \"to\", on_delete FROM pragma_foreign_key_list($1) ORDER BY id, seq",
        )
        .bind(table)
        .fetch_all(pool)
        .await
        .context(what)?;
        type Part = (String, String, Option<String>, String);
        let mut by_id: std::collections::BTreeMap<i64, Vec<Part>> = Default::default();
        for (id, _, parent, from, to, on_delete) in rows {
            by_id
                .entry(id)
                .or_default()
                .push((parent, from, to, on_delete));
        }
        for cols in by_id.into_values() {
            let parent = cols[0].0.clone();
            let columns: Vec<String> = cols.iter().map(|c| c.1.clone()).collect();
            let mut ref_columns: Vec<String> = cols.iter().filter_map(|c| c.2.clone()).collect();
            if ref_columns.is_empty() {
                ref_columns = primary.get(&parent).cloned().unwrap_or_default();
            }
            let (Ok(t), Ok(references)) = (TableName::parse(table), TableName::parse(&parent))
            else {
                continue;
            };
            cat.foreign_keys.push(ForeignKey {
                name: format!("{table}_{}_fkey", columns.join("_")),
                table: t,
                columns,
                references,
                ref_columns,
                on_delete: OnDelete::parse(&cols[0].3),
            });
        }
    }
    Ok(cat)
}

async fn load_pg(pool: &PgPool) -> Result<Catalog> {
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
    let uniques: Vec<(String, String, Vec<String>)> = sqlx::query_as(
        "SELECT n.nspname::text, c.relname::text,
                ARRAY(SELECT attname::text FROM unnest(i.indkey) WITH ORDINALITY k(n, o)
                      JOIN pg_attribute ON attrelid = i.indrelid AND attnum = k.n ORDER BY k.o)
         FROM pg_index i
         JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE i.indisunique AND i.indisvalid AND i.indisready AND i.indislive
           AND i.indpred IS NULL AND NOT (0 = ANY (i.indkey::int2[]))
           AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'lethe')",
    )
    .fetch_all(pool)
    .await
    .context("reading the database catalog (unique indexes)")?;
    for (schema, table, columns) in uniques {
        if let Ok(t) = TableName::parse(&format!("{schema}.{table}")) {
            cat.unique.entry(t).or_default().push(columns);
        }
    }
    let fks: Vec<FkRow> = sqlx::query_as(
        "SELECT con.conname::text, sn.nspname::text, sc.relname::text, tn.nspname::text, tc.relname::text,
                ARRAY(SELECT attname::text FROM unnest(con.conkey) WITH ORDINALITY k(n, o)
                      JOIN pg_attribute ON attrelid = con.conrelid AND attnum = k.n ORDER BY k.o),
                ARRAY(SELECT attname::text FROM unnest(con.confkey) WITH ORDINALITY k(n, o)
                      JOIN pg_attribute ON attrelid = con.confrelid AND attnum = k.n ORDER BY k.o),
                con.confdeltype::text
         FROM pg_constraint con
         JOIN pg_class sc ON sc.oid = con.conrelid JOIN pg_namespace sn ON sn.oid = sc.relnamespace
         JOIN pg_class tc ON tc.oid = con.confrelid JOIN pg_namespace tn ON tn.oid = tc.relnamespace
         WHERE con.contype = 'f' AND sn.nspname <> 'lethe'",
    )
    .fetch_all(pool)
    .await
    .context("reading the database catalog (foreign keys)")?;
    for (name, ss, st, ts, tt, cols, ref_cols, on_delete) in fks {
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
            on_delete: OnDelete::parse(&on_delete),
        });
    }
    Ok(cat)
}

/// Checks that every filter literal is a valid value of its column's type (`id = 'abc'` on a
/// bigint column), so `check` refuses what `run` would otherwise fail on.
pub async fn check_literals(db: &Db, jobs: &[crate::spec::Job]) -> Result<()> {
    crate::spec::validate::all_or_nothing(literal_problems(db, jobs).await?)
}

/// Each job's clock problem, index for index: the job's clock read in its `clock_kind` gives
/// times before 2000 or after 2200 for most of its subjects (the unit is wrong). One such
/// subject among plausible ones fails alone in the pipeline; this stops the job.
pub async fn clock_problems(db: &Db, jobs: &[crate::spec::Job]) -> Result<Vec<Vec<String>>> {
    let mut out = Vec::with_capacity(jobs.len());
    for job in jobs {
        let (subjects, implausible, sample): (i64, i64, Option<String>) =
            super::platform::clock_census(job)
                .fetch_one(db)
                .await
                .with_context(|| format!("sampling the clock of job `{}`", job.name))?;
        if implausible * 2 <= subjects {
            out.push(Vec::new());
            continue;
        }
        out.push(vec![format!(
            "{}:{}: job `{}`: clock `{}` read as {} gives times before 2000 or after 2200 for \
             {implausible} of its {subjects} subjects ({}): a clock in another unit than its \
             clock_kind makes every subject eligible at once, or never: check clock_kind, or \
             correct those rows; nothing was deleted",
            job.file.display(),
            job.subject_line,
            job.name,
            job.clock,
            job.clock_kind,
            sample.unwrap_or_default()
        )]);
    }
    Ok(out)
}

/// Each job's invalid filter literals, index for index.
pub async fn literal_problems(db: &Db, jobs: &[crate::spec::Job]) -> Result<Vec<Vec<String>>> {
    let mut out = Vec::with_capacity(jobs.len());
    for job in jobs {
        out.push(match db {
            Db::Pg(p) => literals_pg(p, job).await?,
            Db::Lite(_) => literals_lite(job),
        });
    }
    Ok(out)
}

async fn literals_pg(pool: &PgPool, job: &crate::spec::Job) -> Result<Vec<String>> {
    let mut errors = Vec::new();
    {
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
                    // Only a data exception (SQLSTATE class 22: invalid text, out of range, an
                    // unknown enum label) says the literal is wrong; anything else is the
                    // database's own problem, not the spec's.
                    let Some(d) = e
                        .as_database_error()
                        .filter(|d| d.code().is_some_and(|c| c.starts_with("22")))
                    else {
                        return Err(anyhow::Error::new(e).context(format!(
                            "checking the filter literals of job `{}`",
                            job.name
                        )));
                    };
                    let why = d.message().to_string();
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
    Ok(errors)
}

/// SQLite converts rather than refuses (`CAST('abc' AS INTEGER)` is 0), so literals of numeric
/// columns are checked here: a filter `id = 'abc'` would otherwise match rows it never meant.
/// Whether a filter literal, bound as text and cast to a SQLite column's declared type, keeps its
/// value: by the type's affinity (<https://www.sqlite.org/datatype3.html>, 3.1), `INTEGER` takes
/// a whole number written plainly, `REAL` any number, `NUMERIC` (`BOOLEAN`, `DATE`,
/// `DATETIME`, `DECIMAL`, ...) a plain whole number or a number, and `TEXT` or `BLOB` anything.
/// `CAST('true' AS BOOLEAN)` is 0 and `CAST('2024-01-01' AS DATE)` is 2024: refused.
fn lite_literal_round_trips(ty: &str, text: &str) -> bool {
    let t = ty.to_ascii_uppercase();
    let whole = text.parse::<i64>().is_ok_and(|n| n.to_string() == text);
    let number = text.trim() == text && text.parse::<f64>().is_ok_and(f64::is_finite);
    if t.contains("INT") {
        whole
    } else if t.contains("CHAR")
        || t.contains("CLOB")
        || t.contains("TEXT")
        || t.contains("BLOB")
        || t.is_empty()
    {
        true
    } else if t.contains("REAL") || t.contains("FLOA") || t.contains("DOUB") {
        number
    } else {
        whole || number
    }
}

fn literals_lite(job: &crate::spec::Job) -> Vec<String> {
    let mut errors = Vec::new();
    {
        for (i, node) in job.nodes.iter().enumerate() {
            let Some(f) = &node.filter else { continue };
            for (column, literal) in f.literals() {
                let Some(ty) = job.types.get(&(i, column.to_string())) else {
                    continue;
                };
                let text = literal.as_bind();
                let ok = lite_literal_round_trips(ty, &text);
                if !ok {
                    errors.push(format!(
                        "{}:{}: filter: {text:?} is not a valid value for `{}.{column}` ({ty}): \
                         SQLite casts it by the type's affinity to another value than written, \
                         so the filter would select other rows (write a number, e.g. 1 or 0 \
                         for a BOOLEAN, or declare a date column TEXT)",
                        job.file.display(),
                        node.line,
                        node.table
                    ));
                }
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    #[test]
    fn sqlite_literals_must_keep_their_value_under_the_columns_affinity() {
        use super::lite_literal_round_trips as ok;
        for (ty, text) in [
            ("BOOLEAN", "1"),
            ("bigint", "-42"),
            ("REAL", "0.5"),
            ("DECIMAL(10,2)", "12.5"),
            ("TEXT", "true"),
            ("varchar(20)", "2024-01-01"),
        ] {
            assert!(ok(ty, text), "{ty} {text}");
        }
        for (ty, text) in [
            ("BOOLEAN", "true"),
            ("DATE", "2024-01-01"),
            ("DATETIME", "2024-01-01 00:00:00"),
            ("integer", "01"),
            ("integer", "1.0"),
            ("NUMERIC", " 7"),
            ("REAL", "abc"),
        ] {
            assert!(!ok(ty, text), "{ty} {text}");
        }
    }
}
