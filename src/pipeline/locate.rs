//! Where a subject's objects are, from its rows: each object source of a job asks the database
//! for the values that locate objects (a template's placeholders, a URI column) and turns each
//! answered row into a location, or into the reason it cannot be one (a NULL placeholder, a URI
//! outside `uri_within`, without its `uri_segment`, or one the store would read otherwise).
//! The manifest asks before the claim; the row transaction asks again, to find objects named
//! since. It reads and decides nothing else.

use crate::db::platform;
use crate::domain::Location;
use crate::spec::{Ident, Job, ObjectSource, UriKind};
use std::collections::HashMap;

/// One object source's question to the database: the values that locate objects, one row per
/// row of its `from` node belonging to the keys asked about.
pub struct LocationQuery<'a> {
    pub sql: crate::db::sql::Sql,
    src: &'a ObjectSource,
    columns: Vec<Ident>,
}

/// The questions that locate the objects of `keys`, one per object source of the job.
pub fn queries<'a>(job: &'a Job, keys: &[String]) -> Vec<LocationQuery<'a>> {
    job.objects
        .iter()
        .map(|src| {
            let (from, columns): (usize, Vec<Ident>) = match src {
                ObjectSource::Prefix { template, from, .. } => (
                    *from,
                    template
                        .columns()
                        .filter(|c| !matches!(c.as_str(), "key" | "owner"))
                        .cloned()
                        .collect(),
                ),
                ObjectSource::Uri {
                    column,
                    from,
                    segment,
                    ..
                } => {
                    let mut columns = vec![column.clone()];
                    columns.extend(segment.iter().filter(|c| c.as_str() != "key").cloned());
                    (*from, columns)
                }
            };
            LocationQuery {
                sql: platform::object_values(job, from, &columns, keys),
                src,
                columns,
            }
        })
        .collect()
}

impl LocationQuery<'_> {
    /// Each answered row as `(subject key, its location)`: `None` for a row naming no objects (a
    /// NULL or blank URI), an error for one whose value cannot be a location of this subject.
    pub fn resolve(
        &self,
        rows: Vec<Vec<Option<String>>>,
        file_root: Option<&std::path::Path>,
    ) -> Vec<(String, Result<Option<Location>, String>)> {
        rows.into_iter()
            .map(|mut row| {
                let key: String = row[0].take().unwrap_or_default();
                let owner: Option<String> = row[1].take();
                let mut values: HashMap<&str, Option<String>> = HashMap::new();
                for (j, c) in self.columns.iter().enumerate() {
                    values.insert(c.as_str(), row[j + 2].take());
                }
                let resolved = locate(self.src, &key, owner, &values, file_root);
                (key, resolved)
            })
            .collect()
    }
}

/// One row's location for one object source.
fn locate(
    src: &ObjectSource,
    key: &str,
    owner: Option<String>,
    values: &HashMap<&str, Option<String>>,
    file_root: Option<&std::path::Path>,
) -> Result<Option<Location>, String> {
    match src {
        ObjectSource::Prefix {
            bucket, template, ..
        } => template
            .render(|c| match c.as_str() {
                "key" => Some(key.to_string()),
                "owner" => owner.clone(),
                other => values.get(other).cloned().flatten(),
            })
            .and_then(|p| Location::dir(bucket, &p))
            .map(|mut l| {
                if file_root.is_some() {
                    l.store = "file".into();
                }
                Some(l)
            }),
        ObjectSource::Uri {
            column,
            within,
            kind,
            segment,
            ..
        } => match values.get(column.as_str()).cloned().flatten() {
            None => Ok(None),
            Some(uri) if uri.trim().is_empty() => Ok(None),
            Some(uri) => Location::from_uri_for(&uri, file_root)
                .and_then(|l| scoped(l, &uri, within.as_ref(), *kind))
                .and_then(|l| {
                    let Some(c) = segment else { return Ok(l) };
                    let value = match c.as_str() {
                        "key" => Some(key.to_string()),
                        other => values.get(other).cloned().flatten(),
                    };
                    shaped(l, &uri, c, value.as_deref())
                })
                .map(Some),
        },
    }
}

/// A URI column's location as the spec scopes it: `uri_kind` says whether it names a directory
/// or one object, and `uri_within` where it may point.
fn scoped(
    mut loc: Location,
    uri: &str,
    within: Option<&(String, String)>,
    kind: Option<UriKind>,
) -> Result<Location, String> {
    match kind {
        None => {}
        Some(UriKind::Directory) => loc.exact = false,
        Some(UriKind::Object) if uri.ends_with('/') => {
            return Err(format!(
                "`{uri}` ends in `/`, but uri_kind = \"object\" says the column names single objects"
            ));
        }
        Some(UriKind::Object) => {
            loc.exact = true;
            loc.object_only = true;
        }
    }
    if let Some((bucket, prefix)) = within {
        let scope = format!("s3://{bucket}/{prefix}");
        if loc.bucket != *bucket || !loc.prefix.starts_with(prefix.as_str()) {
            return Err(format!("`{uri}` is outside uri_within {scope}"));
        }
        if loc.prefix == *prefix {
            return Err(format!("`{uri}` names the whole of uri_within {scope}"));
        }
    }
    Ok(loc)
}

/// A URI holds `uri_segment`'s value as one whole path segment, or its subject fails: a row
/// whose URI does not name its own key points somewhere the spec did not promise.
fn shaped(
    loc: Location,
    uri: &str,
    column: &Ident,
    value: Option<&str>,
) -> Result<Location, String> {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Err(format!(
            "uri_segment `{column}` is NULL or empty, so `{uri}` cannot be shown to be this row's"
        ));
    };
    if loc
        .prefix
        .trim_end_matches('/')
        .split('/')
        .any(|s| s == value)
    {
        Ok(loc)
    } else {
        Err(format!(
            "`{uri}` does not hold uri_segment `{column}` ({}) as a whole path segment: it points \
             somewhere that is not shown to be this row's",
            value.escape_debug()
        ))
    }
}
