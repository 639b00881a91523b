//! Checks jobs against the live catalog: every table and column exists, the clock column has the
//! declared kind, and every foreign key into a table a job deletes from is covered by the job's
//! rows, so a new child table can never be orphaned (or block the purge) silently.

use super::{ClockKind, Filter, Ident, Job, ObjectSource, TableName};
use anyhow::{Result, bail};
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
    pub dialect: crate::db::Dialect,
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
    let errors: Vec<String> = problems(jobs, catalog).into_iter().flatten().collect();
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
        if errors.is_empty() {
            job.types = collect_types(job, catalog);
            job.dialect = catalog.dialect;
        }
        out.push(errors);
    }
    for (i, a) in jobs.iter().enumerate() {
        let mut errors = Vec::new();
        check_overlaps_of(a, &jobs[..i], &mut errors);
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
        let lite = cat.dialect == crate::db::Dialect::Sqlite;
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
                column, from, line, ..
            } => (*from, vec![column.as_str()], *line),
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
    check_foreign_keys(job, cat, &mut err);
    check_links_follow_the_graph(job, cat, &mut err);
}

/// Rows entries stay below their subject in the database's foreign-key graph. A link column
/// that is a foreign key to some other table than its parent would match the parent's keys
/// against unrelated rows; a table the subject itself references (directly or through others)
/// is above it, shared by other subjects. Links with no foreign key at all (an association such
/// as `links.destination_id`) are allowed: the database says nothing about them.
fn check_links_follow_the_graph(job: &Job, cat: &Catalog, err: &mut dyn FnMut(usize, String)) {
    let mut above: Vec<(&TableName, &str)> = Vec::new();
    let mut todo = vec![&job.nodes[0].table];
    while let Some(t) = todo.pop() {
        for fk in cat.foreign_keys.iter().filter(|fk| &fk.table == t) {
            if fk.references != job.nodes[0].table
                && !above.iter().any(|(a, _)| *a == &fk.references)
            {
                above.push((&fk.references, &fk.name));
                todo.push(&fk.references);
            }
        }
    }
    for node in &job.nodes[1..] {
        if let Some((_, via)) = above.iter().find(|(a, _)| *a == &node.table) {
            err(
                node.line,
                format!(
                    "rows `{}`: table `{}` is above the subject `{}` in the database's foreign-key \
                     graph (reached through foreign key `{via}`), so its rows belong to other \
                     subjects too; a job deletes only rows that hang below its subject",
                    node.name, node.table, job.nodes[0].table
                ),
            );
            continue;
        }
        let Some(link) = &node.link else { continue };
        let parent = &job.nodes[link.parent];
        let mine: Vec<&str> = link.columns().map(Ident::as_str).collect();
        // A foreign key over some of this link's columns is no conflict when the link is the
        // more specific (`span_metrics.trace_id -> traces` beside the link on `(trace_id,
        // span_id)` to `spans`); one that shares a column otherwise must be the link itself.
        for fk in cat.foreign_keys.iter().filter(|fk| {
            fk.table == node.table
                && fk.columns.iter().any(|c| mine.contains(&c.as_str()))
                && !(fk.columns.len() < mine.len()
                    && fk.columns.iter().all(|c| mine.contains(&c.as_str())))
        }) {
            if fk.references != parent.table || !link.matches(&fk.columns, &fk.ref_columns) {
                let wanted: Vec<String> = link.pairs.iter().map(|p| p.1.to_string()).collect();
                err(
                    node.line,
                    format!(
                        "rows `{}`: column {} of `{}` is in foreign key `{}` ({}), which does not \
                         link it to its parent `{}.{}`, so it would match unrelated rows; {}",
                        node.name,
                        link_columns(link),
                        node.table,
                        fk.name,
                        fk.describe(),
                        parent.table,
                        paren(&wanted),
                        if fk.references == parent.table {
                            format!(
                                "link it as the key does: {}",
                                link_fields(&fk.columns, &fk.ref_columns)
                            )
                        } else {
                            format!("link it to `{}` or fix `parent`", fk.references)
                        },
                    ),
                );
            }
        }
    }
}

/// `` `a` `` or `` `(a, b)` ``: a link's own columns, for messages.
fn link_columns(link: &super::Link) -> String {
    let cols: Vec<String> = link.columns().map(ToString::to_string).collect();
    format!("`{}`", paren(&cols))
}

/// `column = "a"` or `column = ["a", "b"], parent_column = ["x", "y"]`, as a spec writes it.
fn link_fields(columns: &[String], ref_columns: &[String]) -> String {
    let list = |c: &[String]| match c {
        [one] => format!("{one:?}"),
        many => format!(
            "[{}]",
            many.iter()
                .map(|c| format!("{c:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    format!(
        "column = {}, parent_column = {}",
        list(columns),
        list(ref_columns)
    )
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

/// Whether a `[[rows]]` entry (or a node the database deletes) under node `i` is exactly the
/// foreign key `fk`: its table, no filter (rows outside a filter would still reference the
/// parent), and the same column pairs.
fn covers(job: &Job, i: usize, fk: &ForeignKey) -> bool {
    job.nodes.iter().any(|child| {
        child.table == fk.table
            && child.filter.is_none()
            && child
                .link
                .as_ref()
                .is_some_and(|l| l.parent == i && l.matches(&fk.columns, &fk.ref_columns))
    })
}

/// Tables on the way from node `i` up to the subject, `i`'s own first.
fn chain_tables(job: &Job, i: usize) -> Vec<&TableName> {
    job.chain(i)
        .into_iter()
        .map(|j| &job.nodes[j].table)
        .collect()
}

/// Adds, under every node, the rows the database deletes itself: each foreign key `ON DELETE
/// CASCADE` into a node's table that no entry lists becomes a node lethe counts (so the audit
/// says what went) and never deletes. Its own children are found the same way; a key back into
/// a table on its own chain (a table referencing itself) is left to the database uncounted.
/// Every path the database deletes by is a node, so the holds of other jobs on those rows are
/// checked along it too; a table the spec also lists unfiltered (MLflow's spans, under the
/// experiment and by cascade under its traces) is counted there, once (`Job::counted_elsewhere`).
fn add_cascades(job: &mut Job, cat: &Catalog) {
    let mut i = 0;
    let mut names: Vec<String> = job.nodes.iter().map(|n| n.name.to_string()).collect();
    while i < job.nodes.len() && job.nodes.len() < 200 {
        let adds: Vec<super::Node> = cat
            .foreign_keys
            .iter()
            .filter(|fk| {
                fk.references == job.nodes[i].table
                    && fk.on_delete == OnDelete::Cascade
                    && !covers(job, i, fk)
                    && !chain_tables(job, i).contains(&&fk.table)
            })
            .filter_map(|fk| {
                let pairs = fk
                    .columns
                    .iter()
                    .zip(&fk.ref_columns)
                    .map(|(c, r)| Some((Ident::new(c).ok()?, Ident::new(r).ok()?)))
                    .collect::<Option<Vec<_>>>()?;
                Some(super::Node {
                    name: Ident::new(&fresh_name(&fk.table, &mut names)).ok()?,
                    table: fk.table.clone(),
                    link: Some(super::Link { pairs, parent: i }),
                    filter: None,
                    line: job.nodes[i].line,
                    by_database: true,
                })
            })
            .collect();
        job.nodes.extend(adds);
        i += 1;
    }
}

/// Foreign keys `ON DELETE SET NULL` / `SET DEFAULT` into a table the job deletes from: the
/// database keeps those rows and clears their link, and lethe leaves them (unless an entry
/// lists them). Told by `lethe check`.
fn cleared_links(job: &Job, cat: &Catalog) -> Vec<String> {
    let mut out = Vec::new();
    for (i, node) in job.nodes.iter().enumerate() {
        for fk in cat.foreign_keys.iter().filter(|fk| {
            fk.references == node.table
                && matches!(fk.on_delete, OnDelete::SetNull | OnDelete::SetDefault)
                && !covers(job, i, fk)
        }) {
            let action = if fk.on_delete == OnDelete::SetNull {
                "SET NULL"
            } else {
                "SET DEFAULT"
            };
            out.push(format!(
                "`{}` rows stay when their `{}` row goes: foreign key `{}` ({}) is ON DELETE \
                 {action}, so the database clears their link; lethe deletes them only if a \
                 [[rows]] entry lists them",
                fk.table,
                node.table,
                fk.name,
                fk.describe()
            ));
        }
    }
    out
}

/// Every foreign key that points into a table this job deletes from must be one of the job's
/// links, unless the database handles it: `ON DELETE CASCADE` (counted, see `add_cascades`),
/// `SET NULL` or `SET DEFAULT` (the rows stay). Otherwise the referencing rows would be
/// orphaned, or the delete would fail half-way. The hint is the entries to add, complete.
fn check_foreign_keys(job: &Job, cat: &Catalog, err: &mut dyn FnMut(usize, String)) {
    for (i, node) in job.nodes.iter().enumerate() {
        for fk in cat
            .foreign_keys
            .iter()
            .filter(|fk| fk.references == node.table)
        {
            // The database deletes cascaded rows (counted where `add_cascades` could) and
            // keeps cleared ones.
            let handled = fk.on_delete != OnDelete::Refuse
                // The spec's own entry for that table carries its foreign keys.
                || job.counted_elsewhere(i);
            if handled || covers(job, i, fk) {
                continue;
            }
            // Names the entries take once pasted: the nodes lethe added for cascades go then.
            let mut names: Vec<String> = job
                .nodes
                .iter()
                .filter(|n| !n.by_database)
                .map(|n| n.name.to_string())
                .collect();
            // Entries the database deletes are named by lethe: spell out the way down to this
            // one from the nearest entry of the spec's own.
            let mut from = i;
            let mut spelled = Vec::new();
            while job.nodes[from].by_database {
                spelled.push(from);
                from = job.nodes[from]
                    .link
                    .as_ref()
                    .expect("added under a parent")
                    .parent;
            }
            let mut entries = Vec::new();
            let mut parent_name = job.nodes[from].name.to_string();
            for &j in spelled.iter().rev() {
                let n = &job.nodes[j];
                let link = n.link.as_ref().expect("added under a parent");
                let (cols, refs): (Vec<String>, Vec<String>) = link
                    .pairs
                    .iter()
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .unzip();
                let name = fresh_name(&n.table, &mut names);
                entries.push(entry(
                    job,
                    &name,
                    &n.table,
                    &cols,
                    &refs,
                    &parent_name,
                    link.parent,
                ));
                parent_name = name;
            }
            let mut path: Vec<TableName> = chain_tables(job, i).into_iter().cloned().collect();
            required_entries(
                job,
                cat,
                fk,
                &parent_name,
                i,
                &mut names,
                &mut path,
                &mut entries,
            );
            let via = if spelled.is_empty() {
                String::new()
            } else {
                " (whose rows the database deletes through ON DELETE CASCADE)".to_string()
            };
            err(
                node.line,
                format!(
                    "table `{}` references `{}`{via} through foreign key `{}` ({}), which the \
                     database neither cascades nor clears, and no [[rows]] entry covers it, so \
                     its rows would be orphaned or the delete would fail: add\n\n{}\n",
                    fk.table,
                    node.table,
                    fk.name,
                    fk.describe(),
                    entries.join("\n\n"),
                ),
            );
        }
    }
}

/// A name for a new entry on `table`: the table's own, or with a number when that is taken.
fn fresh_name(table: &TableName, names: &mut Vec<String>) -> String {
    let base = table.table.to_string();
    let name = std::iter::once(base.clone())
        .chain((2..).map(|n| format!("{base}_{n}")))
        .find(|n| !names.contains(n))
        .expect("some number is free");
    names.push(name.clone());
    name
}

/// One `[[rows]]` entry as a spec writes it, with only the fields that differ from their
/// defaults (`parent_index` says whether the parent is the subject, whose default parent
/// column is the key).
fn entry(
    job: &Job,
    name: &str,
    table: &TableName,
    cols: &[String],
    refs: &[String],
    parent: &str,
    parent_index: usize,
) -> String {
    let list = |c: &[String]| match c {
        [one] => format!("{one:?}"),
        many => format!(
            "[{}]",
            many.iter()
                .map(|c| format!("{c:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut out = vec!["[[rows]]".to_string()];
    if name != table.table.as_str() {
        out.push(format!("name = {name:?}"));
    }
    out.push(format!("table = {:?}", table.to_string()));
    out.push(format!("column = {}", list(cols)));
    if parent_index != 0 || parent != job.nodes[0].name.as_str() {
        out.push(format!("parent = {parent:?}"));
    }
    let default_refs: Vec<String> = match cols {
        [_] if parent_index == 0 => vec![job.key.to_string()],
        [_] => vec!["id".into()],
        many => many.to_vec(),
    };
    if refs != default_refs.as_slice() {
        out.push(format!("parent_column = {}", list(refs)));
    }
    out.join("\n")
}

/// The entry covering `fk` under the node named `parent` (index `parent_index`; `usize::MAX`
/// for one being written), then, so that the hint passes when pasted, the entries its own
/// table needs: every foreign key into it that the database would refuse.
#[allow(clippy::too_many_arguments)]
fn required_entries(
    job: &Job,
    cat: &Catalog,
    fk: &ForeignKey,
    parent: &str,
    parent_index: usize,
    names: &mut Vec<String>,
    path: &mut Vec<TableName>,
    entries: &mut Vec<String>,
) {
    let name = fresh_name(&fk.table, names);
    entries.push(entry(
        job,
        &name,
        &fk.table,
        &fk.columns,
        &fk.ref_columns,
        parent,
        parent_index,
    ));
    if path.contains(&fk.table) || path.len() > 12 {
        return;
    }
    path.push(fk.table.clone());
    for below in cat
        .foreign_keys
        .iter()
        .filter(|b| b.references == fk.table && b.on_delete == OnDelete::Refuse)
    {
        required_entries(job, cat, below, &name, usize::MAX, names, path, entries);
    }
    path.pop();
}

/// The types of every column the job's SQL casts values to: (node index, column) → type.
fn collect_types(job: &Job, cat: &Catalog) -> HashMap<(usize, String), String> {
    let mut out = HashMap::new();
    let mut add = |i: usize, c: &str| {
        // A SQLite column may declare no type: it is compared as it is stored.
        if let Some(t) = cat
            .column_type(&job.nodes[i].table, c)
            .filter(|t| !t.is_empty())
        {
            out.insert((i, c.to_string()), t.to_string());
        }
    };
    add(0, job.key.as_str());
    for (i, node) in job.nodes.iter().enumerate() {
        for c in node.filter.iter().flat_map(Filter::columns) {
            add(i, c.as_str());
        }
        if let Some(link) = &node.link {
            for (column, parent_column) in &link.pairs {
                add(i, column.as_str());
                add(link.parent, parent_column.as_str());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::compile::parse_job;
    use std::path::Path;

    fn job(file: &str, filter: Option<&str>) -> Job {
        let filter = filter.map_or(String::new(), |f| format!("filter = {f:?}\n"));
        let text = format!(
            "schedule = \"0 3 * * *\"\n[subject]\ntable = \"runs\"\nclock = \"d\"\nclock_kind = \"timestamptz\"\n\
             {filter}[window]\ngrace = \"1d\"\ndeadline = \"2d\"\n"
        );
        parse_job(&text, Path::new(file)).unwrap()
    }

    fn overlaps(a: Option<&str>, b: Option<&str>) -> Vec<String> {
        let mut errors = Vec::new();
        check_overlaps(&[job("a.toml", a), job("b.toml", b)], &mut errors);
        errors
    }

    #[test]
    fn jobs_on_one_table_must_pin_a_column_to_different_values() {
        for (a, b) in [
            (Some("plan = 'free'"), Some("plan = 'team'")),
            (
                Some("plan IN ('free', 'pro') AND stage = 'deleted'"),
                Some("stage = 'deleted' AND plan = 'team'"),
            ),
        ] {
            assert_eq!(overlaps(a, b), Vec::<String>::new(), "{a:?} / {b:?}");
        }
        for (a, b) in [
            (None, Some("plan = 'team'")),
            (Some("plan = 'free'"), Some("plan IN ('free', 'team')")),
            (Some("plan = 'free' OR plan = 'pro'"), Some("plan = 'team'")),
            (Some("plan <> 'free'"), Some("plan = 'team'")),
            (Some("plan = 'free'"), Some("stage = 'deleted'")),
            // Equal once the database casts them to the column's type, or by its collation.
            (Some("n = 1"), Some("n = '01'")),
            (Some("n IN (2, 3)"), Some("n = '3.0'")),
            (Some("active = true"), Some("active = 't'")),
            (Some("plan = 'Free'"), Some("plan = ' free'")),
        ] {
            let e = overlaps(a, b);
            assert_eq!(e.len(), 1, "{a:?} / {b:?}");
            assert!(
                e[0].starts_with("b.toml:3:") && e[0].contains("job `a` (a.toml)"),
                "{e:?}"
            );
        }
    }
}

#[cfg(test)]
mod cascade_tests {
    use super::*;
    use crate::spec::compile::parse_job;
    use std::path::Path;

    /// MLflow's shape: spans are listed under the experiment, and the database also deletes
    /// them by cascade with their trace, which it deletes with the experiment.
    fn catalog() -> Catalog {
        let t = |n: &str| TableName::parse(n).unwrap();
        let cols = |names: &[&str]| -> Vec<Column> {
            names
                .iter()
                .map(|n| Column {
                    name: n.to_string(),
                    ty: "bigint".into(),
                })
                .collect()
        };
        let fk = |name: &str, table: &str, col: &str, to: &str, on_delete| ForeignKey {
            name: name.into(),
            table: t(table),
            columns: vec![col.into()],
            references: t(to),
            ref_columns: vec!["id".into()],
            on_delete,
        };
        Catalog {
            columns: [
                (t("experiments"), cols(&["id", "gone"])),
                (t("traces"), cols(&["id", "experiment_id"])),
                (t("spans"), cols(&["id", "experiment_id", "trace_id"])),
            ]
            .into(),
            foreign_keys: vec![
                fk(
                    "t_e",
                    "traces",
                    "experiment_id",
                    "experiments",
                    OnDelete::Cascade,
                ),
                fk(
                    "s_e",
                    "spans",
                    "experiment_id",
                    "experiments",
                    OnDelete::Refuse,
                ),
                fk("s_t", "spans", "trace_id", "traces", OnDelete::Cascade),
            ],
            unique: [(t("experiments"), vec![vec!["id".to_string()]])].into(),
            dialect: crate::db::Dialect::Postgres,
        }
    }

    #[test]
    fn every_path_the_database_deletes_by_is_a_node_and_each_row_is_counted_once() {
        let text = "schedule = \"0 3 * * *\"\n[subject]\ntable = \"experiments\"\nclock = \"gone\"\n\
                    clock_kind = \"epoch_milliseconds\"\n[window]\ngrace = \"1d\"\ndeadline = \"2d\"\n\
                    [[rows]]\ntable = \"spans\"\ncolumn = \"experiment_id\"\n";
        let mut jobs = vec![parse_job(text, Path::new("e.toml")).unwrap()];
        validate(&mut jobs, &catalog()).unwrap();
        let job = &jobs[0];
        let by_db: Vec<(String, String, bool)> = job
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.by_database)
            .map(|(i, n)| {
                let parent = &job.nodes[n.link.as_ref().unwrap().parent];
                (
                    n.table.to_string(),
                    parent.table.to_string(),
                    job.counted_elsewhere(i),
                )
            })
            .collect();
        assert_eq!(
            by_db,
            [
                ("traces".to_string(), "experiments".to_string(), false),
                // Held spans of another job are checked along this path too; they are
                // counted once, under the spec's own `spans` entry.
                ("spans".to_string(), "traces".to_string(), true),
            ]
        );
    }
}
