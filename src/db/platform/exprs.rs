//! SQL expressions over a job's tables, shared by the queries in the module above: the clock and
//! the policy windows, filters, key matches, the chain from a node to the subject, and holds.

use super::super::Dialect;
use super::super::sql::{Bind, Sql};
use crate::spec::filter::Literal;
use crate::spec::{ClockKind, Filter, Ident, Job};

pub(super) fn lite(job: &Job) -> bool {
    job.dialect == Dialect::Sqlite
}

/// A new statement in the job's dialect.
pub(super) fn new_sql(job: &Job) -> Sql {
    Sql::new(job.dialect)
}

/// `expr` as text.
pub(super) fn as_text(job: &Job, expr: &str) -> String {
    if lite(job) {
        format!("CAST({expr} AS TEXT)")
    } else {
        format!("{expr}::text")
    }
}

pub(super) fn null_text(job: &Job) -> &'static str {
    if lite(job) { "NULL" } else { "NULL::text" }
}

/// The database's clock, in the form clock expressions compare with: a timestamptz on
/// PostgreSQL, epoch seconds on SQLite.
pub(super) fn now(job: &Job) -> &'static str {
    if lite(job) {
        "unixepoch('now', 'subsec')"
    } else {
        "now()"
    }
}

/// A clock expression as a time to read back.
pub(super) fn time_out(job: &Job, expr: &str) -> String {
    if lite(job) {
        format!("strftime('%Y-%m-%dT%H:%M:%fZ', {expr}, 'unixepoch')")
    } else {
        expr.to_string()
    }
}

/// The clock column as a timestamptz expression (PostgreSQL) or epoch seconds (SQLite, where a
/// timestamp is text that `unixepoch` reads; unreadable text is NULL, which is never eligible).
pub(super) fn clock_ts(job: &Job) -> String {
    let c = format!("n0.{}", job.clock.quoted());
    if lite(job) {
        return match job.clock_kind {
            ClockKind::Timestamptz => format!("unixepoch({c}, 'subsec')"),
            ClockKind::EpochSeconds => format!("({c} * 1.0)"),
            ClockKind::EpochMilliseconds => format!("({c} / 1000.0)"),
        };
    }
    match job.clock_kind {
        ClockKind::Timestamptz => c,
        ClockKind::EpochSeconds => format!("to_timestamp({c}::double precision)"),
        ClockKind::EpochMilliseconds => format!("to_timestamp({c}::double precision / 1000)"),
    }
}

/// The window of a subject kept forever: about 3,000 years.
const FOREVER_SECONDS: i64 = 3_000 * 366 * 86_400;

#[derive(Clone, Copy)]
pub(super) enum Which {
    Grace,
    Deadline,
}

/// The window in seconds for the subject row `n0`, honouring `vary_by` overrides.
fn window_secs(job: &Job, which: Which, sql: &mut Sql) -> String {
    let pick = |p: &crate::spec::duration::Window, q: &crate::spec::duration::Window| match which {
        Which::Grace => p.seconds(),
        Which::Deadline => q.seconds(),
    };
    let w = &job.windows;
    let default = pick(&w.default.grace, &w.default.deadline);
    if let Some(r) = &w.from_row {
        // NULL (or no related row) takes the defaults; zero or less keeps the subject forever
        // (a window of 3,000 years, so every comparison stays ordinary arithmetic).
        let column = format!("wr.{}", r.column.quoted());
        let column = if lite(job) {
            format!("CAST({column} AS INTEGER)")
        } else {
            format!("{column}::bigint")
        };
        let v = format!(
            "(SELECT {column} FROM {} wr WHERE wr.{} = n0.{})",
            r.table.quoted_in(job.dialect),
            r.key.quoted(),
            r.link.quoted()
        );
        let extra = match which {
            Which::Grace => 0,
            Which::Deadline => r.deadline_after.seconds(),
        };
        return format!(
            "CASE WHEN {v} IS NULL THEN {default} WHEN {v} > 0 THEN {v} * {} + {extra} \
             ELSE {FOREVER_SECONDS} END",
            r.unit.seconds()
        );
    }
    match &w.vary_by {
        None => default.to_string(),
        Some(col) => {
            let value = match &w.vary_on {
                None => as_text(job, &format!("n0.{}", col.quoted())),
                Some(r) => format!(
                    "(SELECT {} FROM {} wv WHERE wv.{} = n0.{})",
                    as_text(job, &format!("wv.{}", col.quoted())),
                    r.table.quoted_in(job.dialect),
                    r.key.quoted(),
                    r.link.quoted()
                ),
            };
            let mut s = format!("CASE {value}");
            for (value, pair) in &w.overrides {
                let p = sql.bind(Bind::Text(value.clone()));
                s.push_str(&format!(
                    " WHEN {p} THEN {}",
                    pick(&pair.grace, &pair.deadline)
                ));
            }
            s.push_str(&format!(" ELSE {default} END"));
            s
        }
    }
}

/// `clock + window` for the subject row `n0`.
pub(super) fn clock_plus(job: &Job, which: Which, sql: &mut Sql) -> String {
    if lite(job) {
        return format!("({} + ({}))", clock_ts(job), window_secs(job, which, sql));
    }
    format!(
        "({} + ({}) * interval '1 second')",
        clock_ts(job),
        window_secs(job, which, sql)
    )
}

/// A bound literal cast to the type of column `column` of node `node`.
pub(super) fn cast_bind(
    job: &Job,
    node: usize,
    column: &str,
    value: String,
    sql: &mut Sql,
) -> String {
    let p = sql.bind(Bind::Text(value));
    match job.types.get(&(node, column.to_string())) {
        Some(ty) => format!("CAST({p} AS {ty})"),
        None => p,
    }
}

/// Renders a filter against node `node`'s alias.
fn render_filter(job: &Job, node: usize, f: &Filter, sql: &mut Sql) -> String {
    let col = |c: &Ident| format!("n{node}.{}", c.quoted());
    match f {
        Filter::Compare { column, op, value } => {
            let v = cast_bind(job, node, column.as_str(), value.as_bind(), sql);
            format!("{} {} {v}", col(column), op.sql())
        }
        Filter::In {
            column,
            values,
            negated,
        } => {
            let vs: Vec<String> = values
                .iter()
                .map(|v: &Literal| cast_bind(job, node, column.as_str(), v.as_bind(), sql))
                .collect();
            format!(
                "{} {}IN ({})",
                col(column),
                if *negated { "NOT " } else { "" },
                vs.join(", ")
            )
        }
        Filter::IsNull { column, negated } => {
            format!(
                "{} IS {}NULL",
                col(column),
                if *negated { "NOT " } else { "" }
            )
        }
        Filter::And(parts) | Filter::Or(parts) => {
            let joiner = if matches!(f, Filter::And(_)) {
                " AND "
            } else {
                " OR "
            };
            let inner: Vec<String> = parts
                .iter()
                .map(|p| render_filter(job, node, p, sql))
                .collect();
            format!("({})", inner.join(joiner))
        }
    }
}

/// `n0.key = ANY(...)` for a batch of subject keys, cast to the key column's type so the
/// platform's index on it is used.
pub(super) fn keys_match(job: &Job, keys: &[String], sql: &mut Sql) -> String {
    column_in(job, 0, &job.key, keys, sql)
}

/// `n{node}.column = ANY(keys)`, the keys cast to the column's type so its index serves.
fn column_in(job: &Job, node: usize, column: &Ident, keys: &[String], sql: &mut Sql) -> String {
    let p = sql.bind(Bind::Texts(keys.to_vec()));
    let k = format!("n{node}.{}", column.quoted());
    if lite(job) {
        // The keys arrive as a JSON array; each is cast to the column's declared type, so an
        // integer key matches an integer column.
        return match job.types.get(&(node, column.as_str().to_string())) {
            Some(ty) => format!("{k} IN (SELECT CAST(value AS {ty}) FROM json_each({p}))"),
            None => format!("CAST({k} AS TEXT) IN (SELECT value FROM json_each({p}))"),
        };
    }
    match job.types.get(&(node, column.as_str().to_string())) {
        Some(ty) => format!("{k} = ANY(CAST({p} AS {ty}[]))"),
        None => format!("{} = ANY({p})", as_text(job, &k)),
    }
}

/// The rows of node `i` that belong to `keys`: tables (as `table alias`), conditions, and the
/// expression giving each row's subject key (in its own type). A direct child of the subject
/// that links to the subject's key is matched on its own column, with no join: the same rows,
/// found through the child's index alone.
pub(super) fn scope(
    job: &Job,
    i: usize,
    keys: &[String],
    sql: &mut Sql,
) -> (Vec<String>, Vec<String>, String) {
    scope_of(job, i, keys, sql, true)
}

/// As `scope`; without `eligible_only`, the subject rows of `keys` whatever their state.
pub(super) fn scope_of(
    job: &Job,
    i: usize,
    keys: &[String],
    sql: &mut Sql,
    eligible_only: bool,
) -> (Vec<String>, Vec<String>, String) {
    let node = &job.nodes[i];
    if let Some((column, _)) = node
        .link
        .as_ref()
        .filter(|l| l.parent == 0)
        .and_then(|l| l.single())
        .filter(|(_, parent_column)| *parent_column == job.key)
    {
        let mut conds = Vec::new();
        if let Some(f) = &node.filter {
            conds.push(render_filter(job, i, f, sql));
        }
        conds.push(column_in(job, i, column, keys, sql));
        let key = format!("n{i}.{}", column.quoted());
        return (
            vec![format!("{} n{i}", node.table.quoted_in(job.dialect))],
            conds,
            key,
        );
    }
    let (tables, mut conds) = chain(job, i, sql);
    conds.push(keys_match(job, keys, sql));
    if i == 0 && eligible_only {
        // The subject row itself goes only while it is what the job selects (its filter, a
        // clock, past its grace) or an open erasure request covers it. Never by key alone.
        // (The row transaction deletes only the keys its locked re-check found eligible,
        // request disputes included; this condition guards the delete itself.)
        conds.push(eligible_now(job, &[], sql));
    }
    (tables, conds, format!("n0.{}", job.key.quoted()))
}

/// Whether subject row `n0` may be purged now: the job selects it (its filter, a clock, past
/// its grace), or an erasure request not yet fulfilled covers it.
pub(super) fn eligible_now(job: &Job, all: &[Job], sql: &mut Sql) -> String {
    let base = subject_base(job, sql);
    let eligible = clock_plus(job, Which::Grace, sql);
    let selected = format!("({base} AND {eligible} <= {})", now(job));
    match super::reach::request_expr(job, all, sql) {
        Some(r) => format!("({selected} OR {r} IS NOT NULL)"),
        None => selected,
    }
}

/// The base condition for a subject row: it has a clock and passes the job's filter.
pub(super) fn subject_base(job: &Job, sql: &mut Sql) -> String {
    let mut s = format!("n0.{} IS NOT NULL", job.clock.quoted());
    if let Some(f) = job.filter() {
        s.push_str(&format!(" AND {}", render_filter(job, 0, f, sql)));
    }
    s
}

/// Tables (as `table alias`) and conditions that join node `i` up to the subject `n0`, with the
/// filters of every rows entry on the way.
pub(super) fn chain(job: &Job, i: usize, sql: &mut Sql) -> (Vec<String>, Vec<String>) {
    let mut tables = Vec::new();
    let mut conds = Vec::new();
    for j in job.chain(i) {
        let node = &job.nodes[j];
        tables.push(format!("{} n{j}", node.table.quoted_in(job.dialect)));
        if let Some(link) = &node.link {
            for (column, parent_column) in &link.pairs {
                let (a, b) = (
                    format!("n{j}.{}", column.quoted()),
                    format!("n{}.{}", link.parent, parent_column.quoted()),
                );
                let same = job.types.get(&(j, column.to_string()))
                    == job.types.get(&(link.parent, parent_column.to_string()));
                conds.push(if same {
                    format!("{a} = {b}")
                } else {
                    format!("{} = {}", as_text(job, &a), as_text(job, &b))
                });
            }
            if let Some(f) = &node.filter {
                conds.push(render_filter(job, j, f, sql));
            }
        }
    }
    (tables, conds)
}

/// The chain from the subject to node `i`, re-aliased (`c0`..) and correlated with an outer
/// subject row `n0`: `(tables, conditions)` for a subquery about that row's node-`i` rows.
pub(super) fn correlated_chain(job: &Job, i: usize, sql: &mut Sql) -> (Vec<String>, Vec<String>) {
    let (tables, conds) = chain(job, i, sql);
    let tables: Vec<String> = tables.iter().map(|t| t.replace(" n", " c")).collect();
    let mut conds: Vec<String> = conds.iter().map(|c| realias(c)).collect();
    conds.push(format!("c0.{k} = n0.{k}", k = job.key.quoted()));
    (tables, conds)
}

/// Renames the `n{j}.` aliases of an expression to `u{j}.`, as `realias` does to `c{j}.`.
pub(super) fn upalias(expr: &str) -> String {
    realias_to(expr, 'u')
}

/// Renames the `n{j}.` aliases of an expression to `c{j}.`, leaving quoted identifiers and
/// literals alone.
pub(super) fn realias(expr: &str) -> String {
    realias_to(expr, 'c')
}

fn realias_to(expr: &str, to: char) -> String {
    let mut out = String::with_capacity(expr.len());
    let mut quote: Option<char> = None;
    let mut prev: Option<char> = None;
    let mut chars = expr.chars().peekable();
    while let Some(ch) = chars.next() {
        match quote {
            Some(q) if ch == q => quote = None,
            Some(_) => {}
            None if ch == '"' || ch == '\'' => quote = Some(ch),
            None => {
                let starts_word = !prev.is_some_and(|p| p.is_ascii_alphanumeric() || p == '_');
                if ch == 'n' && starts_word && chars.peek().is_some_and(char::is_ascii_digit) {
                    out.push(to);
                    prev = Some(to);
                    continue;
                }
            }
        }
        out.push(ch);
        prev = Some(ch);
    }
    out
}
