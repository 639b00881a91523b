//! The ownership proof's one query: which rows of the platform, other than those a batch is about
//! to purge, name a place inside (or equal to) a location the batch would delete. A claim is a
//! URI column's value or a prefix template rendered in SQL; a location is matched by its text
//! (`s3://bucket/dir/` or, for templates, `dir/`), so the query answers per pattern how many rows
//! claim it and one of them as an example.
//!
//! It must not decide anything: the pipeline says which locations to ask about and what a claim
//! means for the subject.

use super::exprs::{as_text, chain, lite, new_sql, null_text, realias, scope_of};
use crate::db::sql::{Bind, Sql};
use crate::db::{Db, Tx};
use crate::spec::TemplatePart as Part;
use crate::spec::{Ident, Job, TableName, Template};

/// What makes a row claim a place.
pub enum Claim<'a> {
    /// Every row of `table` whose `column` holds a URI. `name` (a key column) names the row in
    /// errors.
    Uri {
        table: TableName,
        column: Ident,
        name: Option<Ident>,
    },
    /// Every row of `job`'s node `from` that the job would render `template` for.
    Template {
        job: &'a Job,
        from: usize,
        template: &'a Template,
    },
}

impl Claim<'_> {
    /// The table whose rows claim.
    pub fn table(&self) -> &TableName {
        match self {
            Claim::Uri { table, .. } => table,
            Claim::Template { job, from, .. } => &job.nodes[*from].table,
        }
    }
}

/// The places asked about, as text, each ending in `/` (a directory: every claim starting with
/// it) or not (one object: a claim equal to it).
pub struct Places<'a>(pub &'a [String]);

/// `(place index, rows, one claiming value, that row's name)` for each place in `places` that
/// a row of `claim` points at or inside, leaving out the rows `current` purges for `keys` (with
/// `whole`, the subjects' rows and their trees whatever their state: for an export, where the
/// question is whether anything but the subjects themselves claims the place).
///
/// PostgreSQL compares in the `C` collation (a prefix is a byte range whatever the database's
/// collation) and joins each directory place on the claim's first characters, so one pass over
/// the table serves a whole batch; SQLite compares text bytewise by default.
pub fn claims(current: &Job, keys: &[String], claim: &Claim, places: &Places, whole: bool) -> Sql {
    let mut sql = new_sql(current);
    let (tables, mut conds, row, value, name) = match claim {
        Claim::Uri {
            table,
            column,
            name,
        } => (
            vec![format!("{} cl", table.quoted_in(current.dialect))],
            vec![format!("cl.{} IS NOT NULL", column.quoted())],
            "cl".to_string(),
            as_text(current, &format!("cl.{}", column.quoted())),
            name.as_ref()
                .map(|k| as_text(current, &format!("cl.{}", k.quoted()))),
        ),
        Claim::Template {
            job,
            from,
            template,
        } => {
            let (tables, conds) = chain(job, *from, &mut sql);
            let tables = tables.iter().map(|t| t.replace(" n", " c")).collect();
            let conds = conds.iter().map(|c| realias(c)).collect();
            let value = rendered(job, *from, template, &mut sql);
            let name = as_text(job, &format!("c0.{}", job.key.quoted()));
            (tables, conds, format!("c{from}"), value, Some(name))
        }
    };
    // The rows this batch purges are no claim. They are left out after the match, so the
    // check runs for the few rows that match, not for every row of the table.
    let mut excused = Vec::new();
    for (i, node) in current.nodes.iter().enumerate() {
        if node.table != *claim.table() {
            continue;
        }
        let (t, c, _) = scope_of(current, i, keys, &mut sql, !whole);
        let same = if lite(current) {
            format!("n{i}.rowid = m.rid")
        } else {
            format!("n{i}.tableoid = m.toid AND n{i}.ctid = m.tid")
        };
        excused.push(format!(
            "NOT EXISTS (SELECT 1 FROM {} WHERE {} AND {same})",
            t.join(", "),
            c.join(" AND ")
        ));
    }
    if conds.is_empty() {
        conds.push("1 = 1".into());
    }
    if excused.is_empty() {
        excused.push("1 = 1".into());
    }
    let name = name.unwrap_or_else(|| null_text(current).into());
    let ids = if lite(current) {
        format!("{row}.rowid AS rid")
    } else {
        format!("{row}.tableoid AS toid, {row}.ctid AS tid")
    };
    // A claim is matched as written and as a store that reads `\` as `/` keeps it (SeaweedFS
    // stores `runs/b\c` under `runs/b/`): a place holding either is claimed.
    let inner = format!(
        "SELECT {value} AS val, replace({value}, '\\', '/') AS alt, {name} AS name, {ids} \
         FROM {} WHERE {}",
        tables.join(", "),
        conds.join(" AND ")
    );
    let excused = excused.join(" AND ");
    if lite(current) {
        lite_match(&mut sql, &inner, places, &excused);
    } else {
        pg_match(&mut sql, &inner, places, &excused);
    }
    sql
}

/// A template rendered in SQL from the aliases of a realiased chain (`c0` the subject).
fn rendered(job: &Job, from: usize, template: &Template, sql: &mut Sql) -> String {
    let parts: Vec<String> = template
        .0
        .iter()
        .map(|p| match p {
            Part::Text(t) => sql.bind(Bind::Text(t.clone())),
            Part::Column(c) => match c.as_str() {
                "key" => as_text(job, &format!("c0.{}", job.key.quoted())),
                "owner" => match &job.owner {
                    Some(o) => as_text(job, &format!("c0.{}", o.quoted())),
                    None => "NULL".into(),
                },
                _ => as_text(job, &format!("c{from}.{}", c.quoted())),
            },
        })
        .collect();
    format!("({})", parts.join(" || "))
}

/// SQLite: a directory place `p` matches a claim in `[p, p with its last `/` turned into `0`)`,
/// the bytewise range of text starting with `p` (`0` follows `/`); an object place matches an
/// equal claim.
fn lite_match(sql: &mut Sql, inner: &str, places: &Places, excused: &str) {
    let p = sql.bind(Bind::Texts(places.0.to_vec()));
    sql.push(&format!(
        "SELECT CAST(p.key AS TEXT), CAST(count(*) AS TEXT), min(m.val), min(m.name) \
         FROM ({inner}) m, json_each({p}) p \
         WHERE CASE WHEN substr(p.value, -1) = '/' \
         THEN (m.val >= p.value AND m.val < substr(p.value, 1, length(p.value) - 1) || '0') \
         OR (m.alt >= p.value AND m.alt < substr(p.value, 1, length(p.value) - 1) || '0') \
         ELSE m.val = p.value OR m.alt = p.value END AND {excused} GROUP BY p.key"
    ));
}

/// PostgreSQL: one arm per length of place, each a hash join of the claims' first `n` characters
/// with the places of that length: a claim starts with a directory place exactly when they are
/// equal, and equals an object place when it is moreover `n` long.
fn pg_match(sql: &mut Sql, inner: &str, places: &Places, excused: &str) {
    let mut lengths: Vec<usize> = places.0.iter().map(|p| p.chars().count()).collect();
    lengths.sort_unstable();
    lengths.dedup();
    let all = sql.bind(Bind::Texts(places.0.to_vec()));
    // Each length is asked of the claim as written and of its `\`-as-`/` form (rows with a
    // backslash only); UNION keeps a row matching both ways once.
    let arms: Vec<String> = lengths
        .iter()
        .flat_map(|n| {
            [("val", ""), ("alt", " AND v.alt <> v.val")].map(|(col, only)| {
                format!(
                    "SELECT p.i, v.val, v.name, v.toid, v.tid FROM v JOIN unnest(CAST({all} AS \
                     text[])) WITH ORDINALITY p(place, i) ON left(v.{col}, {n}) COLLATE \"C\" = \
                     p.place COLLATE \"C\" WHERE (right(p.place, 1) = '/' OR length(v.{col}) = \
                     {n}){only}"
                )
            })
        })
        .collect();
    sql.push(&format!(
        "WITH v AS MATERIALIZED ({inner}) SELECT (m.i - 1)::text, count(*)::text, min(m.val), \
         min(m.name) FROM ({}) m WHERE {excused} GROUP BY m.i",
        arms.join(" UNION ")
    ));
}

/// One answer of `claims`: the place's index, how many rows claim it, one claiming value and
/// that row's name.
pub type ClaimRow = (String, String, Option<String>, Option<String>);

/// Runs `claims` statements one after another on one connection, in one read transaction: the
/// proof takes one connection from the pool, not one per question, while another batch may be
/// purging beside it (measured on the MLflow world: seven questions on fresh connections took
/// 145 ms, mostly waiting for connections to open). Any error fails them all. On PostgreSQL the
/// transaction turns off JIT (the estimate of a join with a bound array crosses
/// `jit_above_cost`, and compiling costs more than the query), merge joins and nested loops:
/// measured on 100,000 runs and 2,000 places, the planner otherwise sorts the whole table once
/// per arm and probes the batch's rows once per match (370-430 ms) where hash joins take a tenth
/// of that.
pub async fn fetch_claims(db: &Db, statements: &[Sql]) -> anyhow::Result<Vec<Vec<ClaimRow>>> {
    let mut out = Vec::with_capacity(statements.len());
    match db {
        Db::Pg(_) => {
            let mut tx = db.begin().await?;
            if let Tx::Pg(t) = &mut tx {
                sqlx::raw_sql(
                    "SET LOCAL jit = off; SET LOCAL enable_mergejoin = off; \
                     SET LOCAL enable_nestloop = off",
                )
                .execute(&mut **t)
                .await?;
            }
            for sql in statements {
                out.push(sql.fetch_all_tx(&mut tx).await?);
            }
            tx.commit().await?;
        }
        Db::Lite(_) => {
            for sql in statements {
                out.push(sql.fetch_all(db).await?);
            }
        }
    }
    Ok(out)
}
