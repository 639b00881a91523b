//! Rows the database deletes by cascade that locate objects: the one check that needs every
//! loaded job at once (whose URI columns, templates and `[[protects]]` name which tables hold
//! locations). It reads jobs only; the cascade nodes themselves are `links::add_cascades`'.

use crate::spec::{Job, ObjectSource};

/// A table the database deletes by cascade under a job's rows, whose rows locate objects (a URI
/// column or a prefix template of any loaded job on that table, or a `[[protects]]` column; `all`
/// holds `job`), must be an entry of the job with those objects: otherwise its rows go with their
/// parent and their objects stay, named by nothing.
pub(super) fn check_cascaded_objects(job: &Job, all: &[Job], err: &mut dyn FnMut(usize, String)) {
    for node in job.nodes.iter().filter(|n| n.by_database) {
        let mut located: Vec<String> = Vec::new();
        for other in all {
            for src in &other.objects {
                let (from, what) = match src {
                    ObjectSource::Uri { column, from, .. } => {
                        (*from, format!("`{}.{column}`", other.nodes[*from].table))
                    }
                    ObjectSource::Prefix { from, .. } => (
                        *from,
                        format!("a prefix template of `{}`", other.nodes[*from].table),
                    ),
                };
                if other.nodes[from].table == node.table {
                    located.push(format!("{what} (job `{}`)", other.name));
                }
            }
            for p in other.protects.iter().filter(|p| p.table == node.table) {
                located.push(format!("`{}.{}` (job `{}`)", p.table, p.column, other.name));
            }
        }
        located.sort();
        located.dedup();
        if located.is_empty() {
            continue;
        }
        let parent = &job.nodes[node.link.as_ref().expect("added under a parent").parent];
        err(
            parent.line,
            format!(
                "the database deletes `{}` rows with their `{}` row (ON DELETE CASCADE), and \
                 those rows locate objects: {}; list `{}` as a [[rows]] entry with its \
                 [[objects]] (`from` that entry), or its objects would stay with nothing \
                 naming them",
                node.table,
                parent.table,
                located.join(", "),
                node.table
            ),
        );
    }
}
