//! SQL for exports: the subject keys an account owns in a job, and every row of one table that
//! any job's graph reaches from a subject the account owns, each row once, as a JSON object
//! without the columns specs leave out.

use super::super::sql::{Bind, Sql};
use super::exprs::{as_text, chain, lite, new_sql};
use super::owner_text;
use super::reach::other_owners;
use crate::spec::{Ident, Job, TableName};

/// The keys of the job's subjects that `account` owns, whatever their state, unless the row
/// also hangs under another job's subject owned by another account (the claims disagree).
/// `None` when the job has no owner column.
pub fn owned_keys(job: &Job, all: &[Job], account: &str) -> Option<Sql> {
    job.owner.as_ref()?;
    let mut sql = new_sql(job);
    let a = sql.bind(Bind::Text(account.to_string()));
    let disputed = undisputed(job, all, &mut sql, &a);
    sql.push(&format!(
        "SELECT {} FROM {} n0 WHERE {} = {a}{disputed} ORDER BY n0.{}",
        as_text(job, &format!("n0.{}", job.key.quoted())),
        job.subject_table().quoted_in(job.dialect),
        owner_text(job),
        job.key.quoted()
    ));
    Some(sql)
}

/// ` AND NOT EXISTS (...)` for every other job whose subject owned by another account than
/// `a` holds the subject row `n0`.
fn undisputed(job: &Job, all: &[Job], sql: &mut Sql, a: &str) -> String {
    other_owners(job, all, sql, a)
        .iter()
        .map(|d| format!(" AND NOT EXISTS ({d})"))
        .collect()
}

/// Every row of `table` reached by one of `paths` (`(job, node)`, node `i` of the job being a
/// `table` node) from a subject that `account` owns, once each, as JSON text without
/// `leave_out`. `columns` are the table's columns (SQLite builds the object from them).
pub fn export_rows(
    table: &TableName,
    all: &[Job],
    paths: &[(&Job, usize)],
    account: &str,
    columns: &[String],
    leave_out: &[Ident],
) -> Sql {
    let first = paths[0].0;
    let mut sql = new_sql(first);
    let a = sql.bind(Bind::Text(account.to_string()));
    let mut reached = Vec::new();
    for (job, i) in paths {
        let (tables, conds) = chain(job, *i, &mut sql);
        let mut conds: Vec<String> = conds.iter().map(|c| to_outer(c, *i)).collect();
        let disputed = undisputed(job, all, &mut sql, &a);
        conds.push(to_outer(
            &format!("{} = {a}{disputed}", owner_text(job)),
            *i,
        ));
        let rest: Vec<&String> = tables.iter().skip(1).collect();
        reached.push(if rest.is_empty() {
            format!("({})", conds.join(" AND "))
        } else {
            format!(
                "EXISTS (SELECT 1 FROM {} WHERE {})",
                rest.iter()
                    .map(|t| t.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                conds.join(" AND ")
            )
        });
    }
    let object = if lite(first) {
        let fields: Vec<String> = columns
            .iter()
            .filter(|c| !leave_out.iter().any(|l| l.as_str() == c.as_str()))
            .map(|c| {
                let name = Ident::new(c).map(|i| i.quoted()).unwrap_or_default();
                format!("'{}', x.{name}", c.replace('\'', "''"))
            })
            .collect();
        format!("json_object({})", fields.join(", "))
    } else {
        let out = sql.bind(Bind::Texts(
            leave_out.iter().map(|c| c.as_str().to_string()).collect(),
        ));
        format!("(to_jsonb(x) - CAST({out} AS text[]))::text")
    };
    sql.push(&format!(
        "SELECT {object} FROM {} x WHERE {}",
        table.quoted_in(first.dialect),
        reached.join(" OR ")
    ));
    sql
}

/// `expr` with node `i`'s alias (`n{i}.`) renamed to the outer row's (`x.`).
fn to_outer(expr: &str, i: usize) -> String {
    let from = format!("n{i}.");
    let mut out = String::with_capacity(expr.len());
    let mut quote: Option<char> = None;
    let mut rest = expr;
    while let Some(ch) = rest.chars().next() {
        let boundary = out
            .chars()
            .last()
            .is_none_or(|p| !(p.is_ascii_alphanumeric() || p == '_'));
        match quote {
            Some(q) if ch == q => quote = None,
            Some(_) => {}
            None if ch == '"' || ch == '\'' => quote = Some(ch),
            None if boundary && rest.starts_with(&from) => {
                out.push_str("x.");
                rest = &rest[from.len()..];
                continue;
            }
            None => {}
        }
        out.push(ch);
        rest = &rest[ch.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_the_node_alias_becomes_the_outer_row() {
        assert_eq!(
            super::to_outer("n1.\"run_id\" = n0.\"id\" AND n12.\"n1.\" = 'n1.'", 1),
            "x.\"run_id\" = n0.\"id\" AND n12.\"n1.\" = 'n1.'"
        );
    }
}
