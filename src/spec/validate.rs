//! Checks jobs against the live catalog: every table and column exists, the clock column has the
//! declared kind, and every foreign key into a table a job deletes from is covered by the job's
//! rows, so a new child table can never be orphaned (or block the purge) silently.

mod cascaded;
mod links;
mod types;

use super::{ClockKind, Filter, Ident, Job, ObjectSource, TableName};
use anyhow::{Result, bail};
use links::{add_cascades, check_foreign_keys, check_links_follow_the_graph, cleared_links};
use std::collections::HashMap;

#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    /// `format_type` of the column, e.g. `bigint`, `timestamp with time zone`.
    pub ty: String,
}

#[derive(Debug, Clone)]
pub struct ForeignKey {
    pub name: String,
    pub table: TableName,
    pub columns: Vec<String>,
    pub references: TableName,
    pub ref_columns: Vec<String>,
    /// What the database does to the referencing rows when a referenced row is deleted.
    pub on_delete: OnDelete,
}

/// A foreign key's `ON DELETE` action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnDelete {
    /// `NO ACTION` or `RESTRICT`: the delete fails while referencing rows remain.
    #[default]
    Refuse,
    /// `CASCADE`: the database deletes the referencing rows too.
    Cascade,
    /// `SET NULL`: the referencing rows stay, their link set to NULL.
    SetNull,
    /// `SET DEFAULT`: the referencing rows stay, their link set to its default.
    SetDefault,
}

impl OnDelete {
    /// From PostgreSQL's `confdeltype` letter or SQLite's `on_delete` text.
    pub fn parse(s: &str) -> OnDelete {
        match s.to_ascii_uppercase().as_str() {
            "C" | "CASCADE" => OnDelete::Cascade,
            "N" | "SET NULL" => OnDelete::SetNull,
            "D" | "SET DEFAULT" => OnDelete::SetDefault,
            _ => OnDelete::Refuse,
        }
    }
}

impl ForeignKey {
    /// `table(a, b) -> references(x, y)`, for messages.
    pub fn describe(&self) -> String {
        format!(
            "{}.{} -> {}.{}",
            self.table,
            paren(&self.columns),
            self.references,
            paren(&self.ref_columns)
        )
    }
}

fn paren(cols: &[String]) -> String {
    match cols {
        [one] => one.clone(),
        many => format!("({})", many.join(", ")),
    }
}

/// The parts of the catalog specs are checked against.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub columns: HashMap<TableName, Vec<Column>>,
    pub foreign_keys: Vec<ForeignKey>,
    /// Per table, the column sets that identify one row: the primary key and every unique
    /// index or constraint without a predicate.
    pub unique: HashMap<TableName, Vec<Vec<String>>>,
    /// Which database the catalog was read from.
    pub dialect: crate::domain::Dialect,
}

impl Catalog {
    pub fn column_type(&self, table: &TableName, column: &str) -> Option<&str> {
        self.columns
            .get(table)?
            .iter()
            .find(|c| c.name == column)
            .map(|c| c.ty.as_str())
    }
}

/// Validates every job; all problems are reported together, each naming file and line.
pub fn validate(jobs: &mut [Job], catalog: &Catalog) -> Result<()> {
    all_or_nothing(problems(jobs, catalog))
}

/// Every job's problems (index for index, as `problems` gives them) as one error, one per line;
/// `Ok` when there are none.
pub fn all_or_nothing(problems: Vec<Vec<String>>) -> Result<()> {
    let errors: Vec<String> = problems.into_iter().flatten().collect();
    if !errors.is_empty() {
        bail!("{}", errors.join("\n"));
    }
    Ok(())
}

/// Each job's problems against the catalog (empty for a valid job), index for index. A clash
/// between two jobs on one subject table is the later file's problem.
pub fn problems(jobs: &mut [Job], catalog: &Catalog) -> Vec<Vec<String>> {
    let mut out = Vec::with_capacity(jobs.len());
    for job in jobs.iter_mut() {
        let mut errors = Vec::new();
        add_cascades(job, catalog);
        job.notes = cleared_links(job, catalog);
        check_job(job, catalog, &mut errors);
        let (types, odd) = types::collect_types(job, catalog);
        errors.extend(odd);
        if errors.is_empty() {
            job.types = types;
            job.dialect = catalog.dialect;
        }
        out.push(errors);
    }
    for (i, a) in jobs.iter().enumerate() {
        let mut errors = Vec::new();
        check_overlaps_of(a, &jobs[..i], &mut errors);
        let file = a.file.display().to_string();
        cascaded::check_cascaded_objects(a, jobs, &mut |line, msg| {
            errors.push(format!("{file}:{line}: {msg}"))
        });
        out[i].extend(errors);
    }
    out
}

/// Whether a catalog type holds whole numbers (PostgreSQL's names, or a SQLite declared type).
fn is_whole_number(ty: &str) -> bool {
    matches!(
        ty.to_ascii_lowercase().as_str(),
        "smallint" | "integer" | "bigint" | "int2" | "int4" | "int8" | "int"
    )
}

fn check_job(job: &Job, cat: &Catalog, errors: &mut Vec<String>) {
    let file = job.file.display().to_string();
    let mut err = |line: usize, msg: String| errors.push(format!("{file}:{line}: {msg}"));
    for node in &job.nodes {
        if !cat.columns.contains_key(&node.table) {
            err(
                node.line,
                format!("table `{}` does not exist in the database", node.table),
            );
        }
    }
    let subject = &job.nodes[0];
    let need = |node: usize, column: &str, what: &str, err: &mut dyn FnMut(usize, String)| {
        let n = &job.nodes[node];
        if cat.columns.contains_key(&n.table) && cat.column_type(&n.table, column).is_none() {
            err(
                n.line,
                format!("{what}: table `{}` has no column `{column}`", n.table),
            );
        }
    };
    need(0, job.key.as_str(), "subject key", &mut err);
    let key_unique = cat.unique.get(&subject.table).is_some_and(|sets| {
        sets.iter()
            .any(|s| s.len() == 1 && s[0] == job.key.as_str())
    });
    if cat.column_type(&subject.table, job.key.as_str()).is_some() && !key_unique {
        err(
            job.subject_line,
            format!(
                "subject key `{}` is neither the primary key of `{}` nor under a unique index of \
                 its own: two rows could share a key, and purging one would take the other's \
                 rows and objects with it; key the job by a unique column, or add a unique index \
                 on `{}`",
                job.key, subject.table, job.key
            ),
        );
    }
    if let Some(o) = &job.owner {
        need(0, o.as_str(), "subject owner", &mut err);
    }
    if let Some(r) = &job.windows.from_row {
        need(0, r.link.as_str(), "window from_row link", &mut err);
        if !cat.columns.contains_key(&r.table) {
            err(
                job.subject_line,
                format!(
                    "window from_row: table `{}` does not exist in the database",
                    r.table
                ),
            );
        } else {
            if cat.column_type(&r.table, r.key.as_str()).is_none() {
                err(
                    job.subject_line,
                    format!(
                        "window from_row key: table `{}` has no column `{}`",
                        r.table, r.key
                    ),
                );
            }
            match cat.column_type(&r.table, r.column.as_str()) {
                None => err(
                    job.subject_line,
                    format!(
                        "window from_row column: table `{}` has no column `{}`",
                        r.table, r.column
                    ),
                ),
                Some(ty) if !is_whole_number(ty) => err(
                    job.subject_line,
                    format!(
                        "window from_row column `{}.{}` is `{ty}`: a retention must be a whole number (smallint, integer, bigint)",
                        r.table, r.column
                    ),
                ),
                Some(_) => {}
            }
        }
    }
    if let (Some(v), Some(r)) = (&job.windows.vary_by, &job.windows.vary_on) {
        need(0, r.link.as_str(), "window vary_on link", &mut err);
        for (c, what) in [(r.key.as_str(), "vary_on key"), (v.as_str(), "vary_by")] {
            if cat.column_type(&r.table, c).is_none() {
                err(
                    job.subject_line,
                    format!("window {what}: table `{}` has no column `{c}`", r.table),
                );
            }
        }
    } else if let Some(v) = &job.windows.vary_by {
        need(0, v.as_str(), "window vary_by", &mut err);
    }
    if let Some(ty) = cat.column_type(&subject.table, job.clock.as_str()) {
        // SQLite has declared types only: a timestamp is text SQLite's date functions read
        // (UTC when it names no zone), an epoch a number.
        let lite = cat.dialect == crate::domain::Dialect::Sqlite;
        let lower = ty.to_ascii_lowercase();
        let ok = match job.clock_kind {
            ClockKind::Timestamptz if lite => {
                matches!(
                    lower.as_str(),
                    "timestamptz" | "timestamp" | "datetime" | "text"
                )
            }
            ClockKind::Timestamptz => ty == "timestamp with time zone",
            ClockKind::EpochSeconds | ClockKind::EpochMilliseconds if lite => {
                matches!(
                    lower.as_str(),
                    "integer" | "int" | "bigint" | "real" | "numeric"
                )
            }
            ClockKind::EpochSeconds | ClockKind::EpochMilliseconds => {
                matches!(
                    ty,
                    "bigint" | "integer" | "smallint" | "numeric" | "double precision"
                )
            }
        };
        if !ok {
            let hint = if ty == "timestamp without time zone" {
                " (a timestamp without time zone is read in the session's time zone; convert it to timestamptz)"
            } else {
                ""
            };
            err(
                job.subject_line,
                format!(
                    "clock `{}` is `{ty}`, which does not match clock_kind `{}`{hint}",
                    job.clock, job.clock_kind
                ),
            );
        }
    } else {
        need(0, job.clock.as_str(), "subject clock", &mut err);
    }
    for (i, node) in job.nodes.iter().enumerate() {
        if let Some(f) = &node.filter {
            for c in f.columns() {
                need(i, c.as_str(), "filter", &mut err);
            }
        }
        if let Some(link) = &node.link {
            for (column, parent_column) in &link.pairs {
                need(i, column.as_str(), "rows column", &mut err);
                let parent = &job.nodes[link.parent].table;
                if cat.columns.contains_key(parent)
                    && cat.column_type(parent, parent_column.as_str()).is_none()
                {
                    err(
                        node.line,
                        format!("parent_column: table `{parent}` has no column `{parent_column}`"),
                    );
                }
            }
        }
    }
    for src in &job.objects {
        let (from, cols, line): (usize, Vec<&str>, usize) = match src {
            ObjectSource::Prefix {
                template,
                from,
                line,
                ..
            } => (
                *from,
                template
                    .columns()
                    .map(|c| c.as_str())
                    .filter(|c| !matches!(*c, "key" | "owner"))
                    .collect(),
                *line,
            ),
            ObjectSource::Uri {
                column,
                from,
                line,
                segment,
                ..
            } => {
                let mut cols = vec![column.as_str()];
                cols.extend(segment.iter().map(Ident::as_str).filter(|c| *c != "key"));
                (*from, cols, *line)
            }
        };
        let table = &job.nodes[from].table;
        for c in cols {
            if cat.columns.contains_key(table) && cat.column_type(table, c).is_none() {
                err(
                    line,
                    format!("objects: table `{table}` has no column `{c}`"),
                );
            }
        }
        if let ObjectSource::Prefix { template, .. } = src
            && template.columns().any(|c| c.as_str() == "owner")
            && job.owner.is_none()
        {
            err(
                line,
                "objects: the prefix uses `{owner}` but the subject has no `owner`".into(),
            );
        }
    }
    for p in &job.protects {
        if !cat.columns.contains_key(&p.table) {
            err(
                p.line,
                format!(
                    "protects: table `{}` does not exist in the database",
                    p.table
                ),
            );
        } else if cat.column_type(&p.table, p.column.as_str()).is_none() {
            err(
                p.line,
                format!("protects: table `{}` has no column `{}`", p.table, p.column),
            );
        }
    }
    for (table, column) in &job.leave_out {
        if !job.nodes.iter().any(|n| &n.table == table) {
            err(
                job.requests_line,
                format!(
                    "requests: export_leave_out names `{table}.{column}`, but `{table}` is not \
                     one of this job's tables (its subject table or a [[rows]] table)"
                ),
            );
        } else if cat.column_type(table, column.as_str()).is_none() {
            err(
                job.requests_line,
                format!("requests: export_leave_out: table `{table}` has no column `{column}`"),
            );
        }
    }
    check_foreign_keys(job, cat, &mut err);
    check_links_follow_the_graph(job, cat, &mut err);
}

/// Two jobs with one subject table must select disjoint subjects, or a subject would have two
/// windows and whichever job ran first would decide. Disjoint is proven only one way: a column
/// that both subject filters pin to literal values (`=` or `IN`, alone or inside `AND`) with no
/// value in common, like `plan = 'free'` and `plan = 'team'`.
#[cfg(test)]
fn check_overlaps(jobs: &[Job], errors: &mut Vec<String>) {
    for (i, a) in jobs.iter().enumerate() {
        check_overlaps_of(a, &jobs[..i], errors);
    }
}

/// `a` against the jobs before it.
fn check_overlaps_of(a: &Job, earlier: &[Job], errors: &mut Vec<String>) {
    {
        for b in earlier {
            if a.nodes[0].table != b.nodes[0].table {
                continue;
            }
            if a.erase_on_request && b.erase_on_request {
                // A request sets every filter aside: both jobs would take the same subjects.
                errors.push(format!(
                    "{}:{}: `[requests] erase = true` here and in job `{}` ({}), whose subject \
                     table `{}` is the same: an erasure request sets both filters aside, so both \
                     would take the same subjects. Let one of them take erasure requests",
                    a.file.display(),
                    a.requests_line,
                    b.name,
                    b.file.display(),
                    a.nodes[0].table,
                ));
            }
            let pins = |j: &Job| j.nodes[0].filter.as_ref().map(pinned).unwrap_or_default();
            let (pa, pb) = (pins(a), pins(b));
            let disjoint = pa
                .iter()
                .any(|(c, va)| pb.get(c).is_some_and(|vb| va.is_disjoint(vb)));
            if !disjoint {
                errors.push(format!(
                    "{}:{}: subject table `{}` is also the subject of job `{}` ({}), and their \
                     filters may overlap: one subject would have two windows. Give both a filter \
                     on one column with different values (e.g. `plan = 'free'` and `plan = \
                     'team'`), or make them one job with [window.vary_on] and overrides",
                    a.file.display(),
                    a.subject_line,
                    a.nodes[0].table,
                    b.name,
                    b.file.display(),
                ));
            }
        }
    }
}

/// A literal as the database may read it, so that values it would take as equal never count
/// as different: every literal is cast to its column's type, where `'01'` is `1`, `'1.0'` is
/// `1`, `'t'` is `true`, and a case-insensitive collation makes `'Free'` `'free'`. Folding more
/// than a given column would only ever finds more overlaps, never fewer.
fn pin_value(l: &super::filter::Literal) -> String {
    let v = l.as_bind().trim().to_lowercase();
    if let Ok(n) = v.parse::<f64>() {
        return n.to_string();
    }
    match v.as_str() {
        "t" | "true" | "y" | "yes" | "on" => "true".into(),
        "f" | "false" | "n" | "no" | "off" => "false".into(),
        _ => v,
    }
}

/// The literal values a filter pins each column to, where it pins any.
fn pinned(f: &Filter) -> HashMap<String, std::collections::HashSet<String>> {
    let mut out: HashMap<String, std::collections::HashSet<String>> = HashMap::new();
    let mut add = |c: &str, vals: std::collections::HashSet<String>| match out.get_mut(c) {
        Some(have) => have.retain(|v| vals.contains(v)),
        None => {
            out.insert(c.to_string(), vals);
        }
    };
    match f {
        Filter::Compare {
            column,
            op: super::filter::Op::Eq,
            value,
        } => add(column.as_str(), [pin_value(value)].into()),
        Filter::In {
            column,
            values,
            negated: false,
        } => add(column.as_str(), values.iter().map(pin_value).collect()),
        Filter::And(parts) => {
            for p in parts {
                for (c, v) in pinned(p) {
                    add(&c, v);
                }
            }
        }
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests;
