//! From a parsed spec to a `Job`: names resolved, windows and templates checked, the rows tree
//! built and ordered children first. Everything here is offline; `validate` does the catalog.

use super::template::Template;
use super::{Filter, Ident, TableName};
use super::{FilterText, JobSpec, RowsSpec, WindowPair};
use anyhow::{Result, anyhow};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// How the clock column stores time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockKind {
    Timestamptz,
    EpochSeconds,
    EpochMilliseconds,
}

impl std::fmt::Display for ClockKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ClockKind::Timestamptz => "timestamptz",
            ClockKind::EpochSeconds => "epoch_seconds",
            ClockKind::EpochMilliseconds => "epoch_milliseconds",
        })
    }
}

/// A checked job, ready for the database layer.
#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub file: PathBuf,
    pub description: String,
    pub schedule_text: String,
    pub schedule: croner::Cron,
    /// Node 0 is the subject table; the others are `rows` entries.
    pub nodes: Vec<Node>,
    pub key: Ident,
    pub owner: Option<Ident>,
    pub clock: Ident,
    pub clock_kind: ClockKind,
    pub windows: Windows,
    pub objects: Vec<ObjectSource>,
    /// URI columns of other tables whose rows claim what they point at or into.
    pub protects: Vec<Protect>,
    /// Whether an erasure request makes this job's subjects eligible now (`[requests] erase`).
    pub erase_on_request: bool,
    /// Columns an export never writes: `(table, column)`.
    pub leave_out: Vec<(TableName, Ident)>,
    /// Line of the `[requests]` table (else the subject's), for validation errors.
    pub requests_line: usize,
    /// Line of the subject table, for validation errors.
    pub subject_line: usize,
    /// Types of the columns values are cast to, keyed by (node, column); filled by `validate`.
    pub types: std::collections::HashMap<(usize, String), String>,
    /// The dialect of the database the job was validated against; filled by `validate`.
    pub dialect: crate::domain::Dialect,
    /// What `lethe check` should tell about the job beyond errors (links the database clears
    /// itself); filled by `validate`.
    pub notes: Vec<String>,
}

/// A table in the job's rows tree.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: Ident,
    pub table: TableName,
    /// How this node's rows hang off their parent; `None` for the subject.
    pub link: Option<Link>,
    pub filter: Option<Filter>,
    pub line: usize,
    /// Rows the database deletes itself, through a foreign key `ON DELETE CASCADE` that no
    /// `[[rows]]` entry lists: lethe counts them before their parent goes, and never deletes
    /// them itself. Added by `validate`.
    pub by_database: bool,
}

/// How a node's rows hang off their parent: each `(column, parent_column)` pair equal, one pair
/// for most links, several for a foreign key over several columns.
#[derive(Debug, Clone)]
pub struct Link {
    pub pairs: Vec<(Ident, Ident)>,
    pub parent: usize,
}

impl Link {
    pub fn columns(&self) -> impl Iterator<Item = &Ident> {
        self.pairs.iter().map(|p| &p.0)
    }

    pub fn parent_columns(&self) -> impl Iterator<Item = &Ident> {
        self.pairs.iter().map(|p| &p.1)
    }

    /// The one pair of a one-column link.
    pub fn single(&self) -> Option<&(Ident, Ident)> {
        match self.pairs.as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }

    /// Whether this link matches exactly the column pairs of a foreign key, in any order.
    pub fn matches(&self, columns: &[String], ref_columns: &[String]) -> bool {
        columns.len() == self.pairs.len()
            && columns.len() == ref_columns.len()
            && columns.iter().zip(ref_columns).all(|(c, r)| {
                self.pairs
                    .iter()
                    .any(|(a, b)| a.as_str() == c && b.as_str() == r)
            })
    }
}

#[derive(Debug, Clone)]
pub struct Windows {
    pub default: WindowPair,
    pub vary_by: Option<Ident>,
    pub overrides: Vec<(String, WindowPair)>,
    /// Retention read from a related row; `default` applies where it is NULL.
    pub from_row: Option<super::FromRowSpec>,
    /// The related row `vary_by` is read from, if not the subject row.
    pub vary_on: Option<super::RelatedRow>,
}

/// A `[[protects]]` entry: every row's URI in `table.column` claims its objects.
#[derive(Debug, Clone)]
pub struct Protect {
    pub table: TableName,
    pub column: Ident,
    pub line: usize,
}

/// Where objects are found, per subject.
#[derive(Debug, Clone)]
pub enum ObjectSource {
    Prefix {
        bucket: String,
        template: Template,
        from: usize,
        line: usize,
    },
    Uri {
        column: Ident,
        from: usize,
        line: usize,
        /// `uri_within`: the bucket and prefix (`""` for the whole bucket) URIs must lie under.
        within: Option<(String, String)>,
        kind: Option<super::UriKind>,
        /// `uri_segment`: the column (of `from`'s table, or `key`) each URI must hold as a
        /// whole path segment.
        segment: Option<Ident>,
    },
}

impl Job {
    /// Whether node `i` is one the database deletes (`by_database`) of a table the spec lists
    /// unfiltered elsewhere, or lies under such a node: those rows are counted, and their
    /// foreign keys checked, under the spec's own entry.
    pub fn counted_elsewhere(&self, i: usize) -> bool {
        let node = &self.nodes[i];
        node.by_database
            && (self
                .nodes
                .iter()
                .any(|n| !n.by_database && n.filter.is_none() && n.table == node.table)
                || node
                    .link
                    .as_ref()
                    .is_some_and(|l| self.counted_elsewhere(l.parent)))
    }

    /// Node indices in deletion order: deepest first, the subject last.
    pub fn delete_order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.nodes.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(self.depth(i)));
        order
    }

    /// The chain of nodes from `i` up to the subject, `i` first.
    pub fn chain(&self, mut i: usize) -> Vec<usize> {
        let mut out = vec![i];
        while let Some(link) = &self.nodes[i].link {
            i = link.parent;
            out.push(i);
        }
        out
    }

    fn depth(&self, i: usize) -> usize {
        self.chain(i).len() - 1
    }

    pub fn subject_table(&self) -> &TableName {
        &self.nodes[0].table
    }

    pub fn filter(&self) -> Option<&Filter> {
        self.nodes[0].filter.as_ref()
    }
}

/// Parses and checks one spec's text; errors start with `file:line:`.
pub fn parse_job(text: &str, path: &Path) -> Result<Job> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let spec: JobSpec = toml::from_str(text)
        .map_err(|e| anyhow!("{}: {}", path.display(), e.to_string().trim_end()))?;
    let at = |span: std::ops::Range<usize>, field: &str, msg: String| {
        anyhow!(
            "{}:{}: `{field}`: {msg}",
            path.display(),
            line_of(text, span.start)
        )
    };
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("")
        .to_string();
    let (name, name_span) = match &spec.name {
        Some(n) => (n.get_ref().clone(), n.span()),
        None => (stem, 0..0),
    };
    if name.is_empty()
        || name.len() > 63
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        return Err(at(
            name_span,
            "name",
            format!("`{name}` must be 1-63 of a-z, 0-9, `-`, `_`"),
        ));
    }
    let schedule = parse_schedule(spec.schedule.get_ref())
        .map_err(|e| at(spec.schedule.span(), "schedule", e))?;

    let subject = &spec.subject;
    let mut nodes = vec![Node {
        name: Ident::new(subject.table.get_ref().table.as_str())
            .expect("table names are identifiers"),
        table: subject.table.get_ref().clone(),
        link: None,
        filter: subject.filter.as_ref().map(|f| f.get_ref().0.clone()),
        line: line_of(text, subject.table.span().start),
        by_database: false,
    }];
    for r in &spec.rows {
        let line = line_of(text, r.span().start);
        nodes.push(node_from(r.get_ref(), line));
    }
    resolve_parents(&spec.rows, &mut nodes, subject.key.get_ref())
        .map_err(|(i, msg)| at(spec.rows[i].span(), "rows", msg))?;

    let windows =
        compile_windows(&spec).map_err(|(field, msg)| at(spec.window.span(), field, msg))?;
    let mut objects = Vec::new();
    for o in &spec.objects {
        let line = line_of(text, o.span().start);
        objects.push(
            compile_objects(o.get_ref(), &nodes, line)
                .map_err(|msg| at(o.span(), "objects", msg))?,
        );
    }
    let protects = spec
        .protects
        .iter()
        .map(|p| Protect {
            table: p.get_ref().table.clone(),
            column: p.get_ref().uri_column.clone(),
            line: line_of(text, p.span().start),
        })
        .collect();
    let (erase_on_request, leave_out, requests_line) = match &spec.requests {
        None => (false, Vec::new(), nodes[0].line),
        Some(r) => {
            let mut leave_out = Vec::new();
            for c in &r.get_ref().export_leave_out {
                leave_out.push(leave_out_column(c).map_err(|m| at(r.span(), "requests", m))?);
            }
            (r.get_ref().erase, leave_out, line_of(text, r.span().start))
        }
    };
    Ok(Job {
        name,
        file: path.to_path_buf(),
        description: spec.description.clone(),
        schedule_text: spec.schedule.get_ref().clone(),
        schedule,
        key: subject.key.get_ref().clone(),
        owner: subject.owner.as_ref().map(|o| o.get_ref().clone()),
        clock: subject.clock.get_ref().clone(),
        clock_kind: *subject.clock_kind.get_ref(),
        windows,
        objects,
        protects,
        erase_on_request,
        leave_out,
        requests_line,
        subject_line: nodes[0].line,
        types: Default::default(),
        dialect: Default::default(),
        notes: Vec::new(),
        nodes,
    })
}

/// `table.column` (or `schema.table.column`) of `export_leave_out`.
fn leave_out_column(text: &str) -> Result<(TableName, Ident), String> {
    let bad = || format!("export_leave_out: `{text}` is not `table.column`");
    let (table, column) = text.rsplit_once('.').ok_or_else(bad)?;
    let table = TableName::parse(table).map_err(|e| format!("export_leave_out: `{text}`: {e}"))?;
    let column = Ident::new(column).map_err(|e| format!("export_leave_out: `{text}`: {e}"))?;
    Ok((table, column))
}

/// Parses a cron expression: 5 fields (minute first) or 6 (seconds first), always UTC.
pub fn parse_schedule(text: &str) -> Result<croner::Cron, String> {
    use croner::parser::{CronParser, Seconds, Year};
    let fields = text.split_whitespace().count();
    if !(5..=6).contains(&fields) {
        return Err(format!(
            "`{text}` has {fields} fields: write 5 (minute first) or 6 (seconds first)"
        ));
    }
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        // As tokio-cron-scheduler fires them: a day-of-month and a day-of-week must both match.
        .dom_and_dow(true)
        .build()
        .parse(text)
        .map_err(|e| format!("`{text}` is not a valid cron expression: {e}"))
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

fn node_from(r: &RowsSpec, line: usize) -> Node {
    Node {
        name: r.name.clone().unwrap_or_else(|| r.table.table.clone()),
        table: r.table.clone(),
        link: None,
        filter: r.filter.as_ref().map(|f: &FilterText| f.0.clone()),
        line,
        by_database: false,
    }
}

fn resolve_parents(
    rows: &[Spanned<RowsSpec>],
    nodes: &mut [Node],
    key: &Ident,
) -> Result<(), (usize, String)> {
    for i in 0..rows.len() {
        let me = &nodes[i + 1].name;
        if nodes.iter().filter(|n| &n.name == me).count() > 1 {
            return Err((
                i,
                format!("two entries are named `{me}`: give one a distinct `name`"),
            ));
        }
    }
    for (i, r) in rows.iter().enumerate() {
        let r = r.get_ref();
        let parent = match &r.parent {
            None => 0,
            Some(p) => nodes.iter().position(|n| &n.name == p).ok_or_else(|| {
                (
                    i,
                    format!("parent `{p}` is neither the subject table nor a rows entry name"),
                )
            })?,
        };
        if parent == i + 1 {
            return Err((
                i,
                format!("`{}` names itself as its parent", nodes[i + 1].name),
            ));
        }
        let columns = &r.column.0;
        let parent_columns = match &r.parent_column {
            Some(p) => p.0.clone(),
            None if columns.len() > 1 => columns.clone(),
            None if parent == 0 => vec![key.clone()],
            None => vec![Ident::new("id").expect("valid")],
        };
        if parent_columns.len() != columns.len() {
            return Err((
                i,
                format!(
                    "`column` names {} column(s) and `parent_column` {}: give one parent column \
                     for each column, in the same order",
                    columns.len(),
                    parent_columns.len()
                ),
            ));
        }
        nodes[i + 1].link = Some(Link {
            pairs: columns.iter().cloned().zip(parent_columns).collect(),
            parent,
        });
    }
    // Every chain must reach the subject; a cycle would never end.
    for start in 1..nodes.len() {
        let mut seen = 0;
        let mut i = start;
        while let Some(link) = &nodes[i].link {
            i = link.parent;
            seen += 1;
            if seen > nodes.len() {
                return Err((
                    start - 1,
                    format!("`{}` is part of a parent cycle", nodes[start].name),
                ));
            }
        }
    }
    Ok(())
}

fn compile_windows(spec: &JobSpec) -> Result<Windows, (&'static str, String)> {
    let w = spec.window.get_ref();
    let check = |label: &str, p: &WindowPair| {
        if p.deadline < p.grace {
            Err((
                "window",
                format!(
                    "{label}deadline {} is shorter than grace {}",
                    p.deadline, p.grace
                ),
            ))
        } else {
            Ok(())
        }
    };
    let default = WindowPair {
        grace: w.grace,
        deadline: w.deadline,
    };
    check("", &default)?;
    for (value, pair) in &w.overrides {
        check(&format!("override `{value}`: "), pair)?;
    }
    match (&w.vary_by, w.overrides.is_empty()) {
        (Some(c), true) => {
            return Err((
                "vary_by",
                format!("`{c}` is set but no `[window.overrides.VALUE]` is given"),
            ));
        }
        (None, false) => {
            return Err((
                "overrides",
                "overrides need `vary_by` to name the column they depend on".into(),
            ));
        }
        _ => {}
    }
    if w.vary_on.is_some() && w.vary_by.is_none() {
        return Err((
            "vary_on",
            "`vary_on` says where `vary_by` is read, but `vary_by` is not set".into(),
        ));
    }
    if w.from_row.is_some() && w.vary_by.is_some() {
        return Err((
            "from_row",
            "`from_row` and `vary_by` cannot be combined: the window comes from one place".into(),
        ));
    }
    Ok(Windows {
        default,
        vary_by: w.vary_by.clone(),
        overrides: w.overrides.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        from_row: w.from_row.clone(),
        vary_on: w.vary_on.clone(),
    })
}

mod load;
mod objects;
pub use load::{Rejected, load_dir, load_dir_each, load_file};
use objects::compile_objects;

#[cfg(test)]
mod tests;
