//! The declared types of the columns a job's SQL casts values to. PostgreSQL's come from
//! `format_type`, which quotes any name that needs it; SQLite's are the declaration's text,
//! dequoted, so a schema could declare `"TEXT) OR (1=1"` and turn a cast into a condition that
//! holds for every row. A SQLite type is taken only as a plain type name.

use super::{Catalog, Filter, Job};
use crate::domain::Dialect;
use std::collections::HashMap;

/// The types of every column the job's SQL casts values to: (node index, column) → type, and
/// a problem for each SQLite column whose declared type is not a plain type name.
pub(super) fn collect_types(
    job: &Job,
    cat: &Catalog,
) -> (HashMap<(usize, String), String>, Vec<String>) {
    let mut out = HashMap::new();
    let mut odd = Vec::new();
    let mut add = |i: usize, c: &str| {
        // A SQLite column may declare no type: it is compared as it is stored.
        let node = &job.nodes[i];
        let Some(t) = cat.column_type(&node.table, c).filter(|t| !t.is_empty()) else {
            return;
        };
        if cat.dialect == Dialect::Sqlite && !plain_type(t) {
            let problem = format!(
                "{}:{}: column `{}.{c}` declares the type `{}`, which is not a plain type name \
                 (a name of letters, digits, `_` and spaces, and an optional `(n)` or `(n, m)`): \
                 lethe puts a column's type into SQL and will not put this one; declare a plain \
                 type",
                job.file.display(),
                node.line,
                node.table,
                t.escape_debug()
            );
            if !odd.contains(&problem) {
                odd.push(problem);
            }
            return;
        }
        out.insert((i, c.to_string()), t.to_string());
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
    (out, odd)
}

/// `INTEGER`, `VARCHAR(255)`, `DECIMAL(10, 2)`, `UNSIGNED BIG INT`: SQLite's type-name grammar
/// without quoted names.
fn plain_type(t: &str) -> bool {
    let (name, args) = match t.find('(') {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    let name_ok = name
        .trim_start()
        .starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ' ');
    let number = |n: &str| {
        let n = n.trim();
        let n = n.strip_prefix(['+', '-']).unwrap_or(n);
        !n.is_empty() && n.chars().all(|c| c.is_ascii_digit())
    };
    let args_ok = args.is_none_or(|a| {
        a.strip_suffix(')').is_some_and(|inner| {
            let parts: Vec<&str> = inner.split(',').collect();
            parts.len() <= 2 && parts.iter().all(|p| number(p))
        })
    });
    name_ok && args_ok
}

#[cfg(test)]
mod tests {
    use super::plain_type;

    #[test]
    fn only_plain_type_names_are_taken() {
        for ok in [
            "INTEGER",
            "int",
            "VARCHAR(255)",
            "DECIMAL(10, 2)",
            "UNSIGNED BIG INT",
            "numeric(-1)",
        ] {
            assert!(plain_type(ok), "{ok}");
        }
        for bad in [
            "TEXT) OR (1=1",
            "int(1) --",
            "\"x\"",
            "text; DROP",
            "(1)",
            "int(1,2,3)",
            "int(a)",
        ] {
            assert!(!plain_type(bad), "{bad}");
        }
    }
}
