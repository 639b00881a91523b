//! Which of a run's jobs may run at once: jobs that name no table in common (rows, protected
//! URI columns, the rows their windows are read from) run side by side, each group of jobs that
//! do one after another, in the order they were selected. The daemon already runs every job on
//! its own schedule, so two jobs at once is nothing new to the safety argument; keeping jobs that
//! meet in a table apart keeps their row transactions from waiting on each other's locks.

use crate::spec::{Job, TableName};
use std::collections::BTreeSet;

/// Every platform table a job names.
pub fn named_tables(job: &Job) -> BTreeSet<&TableName> {
    let mut out: BTreeSet<&TableName> = job.nodes.iter().map(|n| &n.table).collect();
    out.extend(job.protects.iter().map(|p| &p.table));
    out.extend(job.windows.from_row.iter().map(|r| &r.table));
    out.extend(job.windows.vary_on.iter().map(|r| &r.table));
    out
}

/// The jobs' indices in groups that share no table with each other; within a group, and the
/// groups among themselves, in the order of `jobs`. Two jobs meeting in a table through a third
/// are in one group.
pub fn groups(jobs: &[Job]) -> Vec<Vec<usize>> {
    let tables: Vec<BTreeSet<&TableName>> = jobs.iter().map(named_tables).collect();
    // Each job's group, as the index of the group's first job.
    let mut root: Vec<usize> = (0..jobs.len()).collect();
    fn find(root: &mut [usize], mut i: usize) -> usize {
        while root[i] != i {
            root[i] = root[root[i]];
            i = root[i];
        }
        i
    }
    for i in 0..jobs.len() {
        for j in i + 1..jobs.len() {
            if !tables[i].is_disjoint(&tables[j]) {
                let (a, b) = (find(&mut root, i), find(&mut root, j));
                root[a.max(b)] = a.min(b);
            }
        }
    }
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut first: Vec<Option<usize>> = vec![None; jobs.len()];
    for i in 0..jobs.len() {
        let r = find(&mut root, i);
        match first[r] {
            Some(g) => out[g].push(i),
            None => {
                first[r] = Some(out.len());
                out.push(vec![i]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str, tables: &[&str], protects: &[&str]) -> Job {
        let mut text = format!(
            "schedule = \"0 0 3 * * *\"\n[subject]\ntable = \"{}\"\nkey = \"id\"\nclock = \"t\"\nclock_kind = \"timestamptz\"\n\
             [window]\ngrace = \"1d\"\ndeadline = \"30d\"\n",
            tables[0]
        );
        for t in &tables[1..] {
            text.push_str(&format!("[[rows]]\ntable = \"{t}\"\ncolumn = \"x\"\n"));
        }
        for t in protects {
            text.push_str(&format!(
                "[[protects]]\ntable = \"{t}\"\nuri_column = \"u\"\n"
            ));
        }
        crate::spec::parse_job(&text, std::path::Path::new(&format!("{name}.toml")))
            .expect("test spec parses")
    }

    #[test]
    fn jobs_meeting_in_a_table_share_a_group_even_through_a_third() {
        let jobs = [
            job("a", &["runs", "metrics"], &[]),
            job("b", &["traces", "spans"], &[]),
            job("c", &["snapshots"], &["metrics"]),
            job("d", &["accounts"], &[]),
            job("e", &["sessions", "spans"], &["snapshots"]),
        ];
        // a and c meet in metrics; c and e in snapshots; b and e in spans: one group.
        assert_eq!(groups(&jobs), vec![vec![0, 1, 2, 4], vec![3]]);
        let apart = [job("a", &["runs"], &[]), job("b", &["traces"], &[])];
        assert_eq!(groups(&apart), vec![vec![0], vec![1]]);
        assert!(groups(&[]).is_empty());
    }

    #[test]
    fn a_schema_makes_another_table() {
        let jobs = [
            job("a", &["audit.events"], &[]),
            job("b", &["events"], &[]),
            job("c", &["audit.events"], &[]),
        ];
        assert_eq!(groups(&jobs), vec![vec![0, 2], vec![1]]);
    }
}
