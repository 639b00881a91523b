//! The job's links checked against the database's foreign keys: links follow the graph,
//! every foreign key into a table the job deletes from is covered (or handled by the database,
//! as its `ON DELETE` says), and the hints `check` gives are complete entries.

use super::{Catalog, ForeignKey, OnDelete, paren};
use crate::spec::{Ident, Job, TableName};

/// Rows entries stay below their subject in the database's foreign-key graph. A link column
/// that is a foreign key to some other table than its parent would match the parent's keys
/// against unrelated rows; a table the subject itself references (directly or through others)
/// is above it, shared by other subjects. Links with no foreign key at all (an association such
/// as `links.destination_id`) are allowed: the database says nothing about them.
pub(super) fn check_links_follow_the_graph(
    job: &Job,
    cat: &Catalog,
    err: &mut dyn FnMut(usize, String),
) {
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
fn link_columns(link: &crate::spec::Link) -> String {
    let cols: Vec<String> = link.columns().map(ToString::to_string).collect();
    format!("`{}`", paren(&cols))
}

/// Columns as a spec writes them: `"a"`, or `["a", "b"]`.
fn toml_list(columns: &[String]) -> String {
    match columns {
        [one] => format!("{one:?}"),
        many => format!(
            "[{}]",
            many.iter()
                .map(|c| format!("{c:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `column = "a"` or `column = ["a", "b"], parent_column = ["x", "y"]`, as a spec writes it.
fn link_fields(columns: &[String], ref_columns: &[String]) -> String {
    format!(
        "column = {}, parent_column = {}",
        toml_list(columns),
        toml_list(ref_columns)
    )
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
pub(super) fn add_cascades(job: &mut Job, cat: &Catalog) {
    let mut i = 0;
    let mut names: Vec<String> = job.nodes.iter().map(|n| n.name.to_string()).collect();
    while i < job.nodes.len() && job.nodes.len() < 200 {
        let adds: Vec<crate::spec::Node> = cat
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
                Some(crate::spec::Node {
                    name: Ident::new(&fresh_name(&fk.table, &mut names)).ok()?,
                    table: fk.table.clone(),
                    link: Some(crate::spec::Link { pairs, parent: i }),
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
pub(super) fn cleared_links(job: &Job, cat: &Catalog) -> Vec<String> {
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
pub(super) fn check_foreign_keys(job: &Job, cat: &Catalog, err: &mut dyn FnMut(usize, String)) {
    for (i, node) in job.nodes.iter().enumerate() {
        for fk in cat
            .foreign_keys
            .iter()
            .filter(|fk| fk.references == node.table)
        {
            // A key back into the node's own chain (a table referencing itself, or a cycle)
            // that cascades would make the database delete rows under the subject to any
            // depth, live, held or in grace, uncounted: refused, whatever entry covers it.
            if fk.on_delete == OnDelete::Cascade && chain_tables(job, i).contains(&&fk.table) {
                err(
                    node.line,
                    format!(
                        "table `{}` references `{}` through foreign key `{}` ({}) ON DELETE \
                         CASCADE, back into its own chain: purging one row would make the \
                         database delete the rows under it to any depth (live, held or in \
                         grace), uncounted; make the key ON DELETE SET NULL or NO ACTION, or \
                         give the job a filter that leaves out rows other rows hang from",
                        fk.table,
                        node.table,
                        fk.name,
                        fk.describe()
                    ),
                );
                continue;
            }
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
    let mut out = vec!["[[rows]]".to_string()];
    if name != table.table.as_str() {
        out.push(format!("name = {name:?}"));
    }
    out.push(format!("table = {:?}", table.to_string()));
    out.push(format!("column = {}", toml_list(cols)));
    if parent_index != 0 || parent != job.nodes[0].name.as_str() {
        out.push(format!("parent = {parent:?}"));
    }
    let default_refs: Vec<String> = match cols {
        [_] if parent_index == 0 => vec![job.key.to_string()],
        [_] => vec!["id".into()],
        many => many.to_vec(),
    };
    if refs != default_refs.as_slice() {
        out.push(format!("parent_column = {}", toml_list(refs)));
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

#[cfg(test)]
mod tests {
    use super::super::*;
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
            dialect: crate::domain::Dialect::Postgres,
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
