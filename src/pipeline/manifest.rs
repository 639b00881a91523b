//! Builds each subject's manifest before it is claimed: every object location, resolved from
//! templates and URI columns while the rows that name them still exist, and (for dry runs) the
//! rows per table. A real run counts rows in its row transaction, right before it deletes them,
//! and records those counts in the `purged` entry.

use crate::context::Context;
use crate::db::platform;
use crate::domain::Location;
use crate::spec::{Ident, Job, ObjectSource, UriKind};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The stored manifest format. A stored manifest of another version, or one that does not
/// decode, fails its subject: it never reads as "no objects".
pub const FORMAT: u32 = 2;

/// What a work item records before anything is touched.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// `FORMAT` when written; absent in manifests written before formats were numbered.
    #[serde(default)]
    pub format: u32,
    /// Rows per rows-entry name (the subject table included), counted for dry runs only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rows: BTreeMap<String, i64>,
    /// Every object location.
    pub locations: Vec<Location>,
    /// Why the manifest could not be completed; such a subject fails closed and nothing is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Manifest {
    /// Reads a work item's stored manifest. Anything but a manifest of this `FORMAT` is an error
    /// naming what was found: a manifest that does not decode must fail its subject, never
    /// pass as one with no objects (whose rows would then go straight away).
    pub fn decode(stored: &serde_json::Value) -> Result<Manifest, String> {
        let m: Manifest = serde_json::from_value(stored.clone()).map_err(|e| {
            format!("the stored manifest does not decode ({e}); nothing was deleted")
        })?;
        if m.format != FORMAT {
            return Err(format!(
                "the stored manifest is format {} where this lethe reads format {FORMAT}; nothing \
                 was deleted",
                m.format
            ));
        }
        Ok(m)
    }
}

/// Manifests for a batch of subject keys.
pub async fn build(
    ctx: &Context,
    job: &Job,
    keys: &[String],
    count_rows: bool,
) -> Result<HashMap<String, Manifest>> {
    let file_root = ctx.settings.object_root.as_deref();
    let mut out: HashMap<String, Manifest> = keys
        .iter()
        .map(|k| {
            let m = Manifest {
                format: FORMAT,
                ..Default::default()
            };
            (k.clone(), m)
        })
        .collect();
    for (i, node) in job
        .nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| count_rows && !job.counted_elsewhere(*i))
    {
        let sql = platform::count_rows(job, i, keys);
        let rows: Vec<(String, i64)> = sql.fetch_all(&ctx.db).await?;
        for (k, n) in rows {
            if let Some(m) = out.get_mut(&k) {
                m.rows.insert(node.name.to_string(), n);
            }
        }
    }
    let mut locations: HashMap<String, BTreeSet<Location>> = HashMap::new();
    for src in &job.objects {
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
        let sql = platform::object_values(job, from, &columns, keys);
        let rows = sql.fetch_texts(&ctx.db).await?;
        for mut row in rows {
            let key: String = row[0].take().unwrap_or_default();
            let owner: Option<String> = row[1].take();
            let mut values: HashMap<&str, Option<String>> = HashMap::new();
            for (j, c) in columns.iter().enumerate() {
                values.insert(c.as_str(), row[j + 2].take());
            }
            let resolved = match src {
                ObjectSource::Prefix {
                    bucket, template, ..
                } => template
                    .render(|c| match c.as_str() {
                        "key" => Some(key.clone()),
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
                                "key" => Some(key.clone()),
                                other => values.get(other).cloned().flatten(),
                            };
                            shaped(l, &uri, c, value.as_deref())
                        })
                        .map(Some),
                },
            };
            match resolved {
                Ok(Some(loc)) => {
                    locations.entry(key).or_default().insert(loc);
                }
                Ok(None) => {}
                Err(e) => {
                    if let Some(m) = out.get_mut(&key) {
                        m.error.get_or_insert(format!("cannot locate objects: {e}"));
                    }
                }
            }
        }
    }
    for (k, locs) in locations {
        if let Some(m) = out.get_mut(&k) {
            m.locations = crate::domain::outermost(locs);
        }
    }
    refuse_nested(ctx, job, &mut out).await?;
    refuse_overlaps(&mut out);
    Ok(out)
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

/// Fails every subject of the batch one of whose locations holds (or is) another subject's:
/// purging it would delete the other's objects (a URI naming a parent directory, two subjects
/// pointing at one place). Subjects outside the batch are not seen here; `uri_within` bounds
/// where a URI may point at all.
fn refuse_overlaps(out: &mut HashMap<String, Manifest>) {
    // Every place purged: (bucket, key or directory prefix, is a directory, subject).
    let mut places: Vec<(&str, &str, bool, &str)> = Vec::new();
    for (key, m) in out.iter() {
        for l in &m.locations {
            if let Some(p) = l.dir_prefix() {
                places.push((&l.bucket, p, true, key));
            }
            if let Some(k) = l.exact_key() {
                places.push((&l.bucket, k, false, key));
            }
        }
    }
    places.sort_unstable();
    let mut refused: Vec<(String, String)> = Vec::new();
    for (i, &(bucket, at, dir, key)) in places.iter().enumerate() {
        for &(b, other_at, other_dir, other) in &places[i + 1..] {
            let inside = b == bucket
                && if dir {
                    other_at.starts_with(at)
                } else {
                    other_at == at
                };
            if !inside {
                break;
            }
            if other == key {
                continue;
            }
            let what =
                |d: bool, p: &str| format!("s3://{b}/{p}{}", if d { " (a directory)" } else { "" });
            refused.push((
                key.to_string(),
                format!(
                    "its location {} holds {} of subject `{other}` in the same batch: purging it \
                     would delete that subject's objects; refused",
                    what(dir, at),
                    what(other_dir, other_at)
                ),
            ));
            if other_at == at {
                refused.push((
                    other.to_string(),
                    format!(
                        "its location {} is also subject `{key}`'s: purging it would delete \
                         that subject's objects; refused",
                        what(other_dir, other_at)
                    ),
                ));
            }
        }
    }
    for (key, why) in refused {
        if let Some(m) = out.get_mut(&key) {
            m.error.get_or_insert(why);
        }
    }
}

/// Fails every subject whose key, rendered into a template, names a directory that holds
/// another subject's directory as the object store sees it: `b` beside a subject `b\c` or
/// `b/c`, whose objects (SeaweedFS stores `\` as `/`) lie under `runs/b/`. Purging `b` would
/// take them.
async fn refuse_nested(
    ctx: &Context,
    job: &Job,
    out: &mut HashMap<String, Manifest>,
) -> Result<()> {
    let templated = job.objects.iter().any(|src| {
        matches!(src, ObjectSource::Prefix { template, .. }
            if template.columns().any(|c| c.as_str() == "key"))
    });
    let Some(sql) = platform::nested_keys(job).filter(|_| templated) else {
        return Ok(());
    };
    let nested: Vec<(String,)> = sql.fetch_all(&ctx.db).await?;
    for (other,) in nested {
        let seen = other.replace('\\', "/");
        for (key, m) in out.iter_mut() {
            if *key != other && seen.starts_with(&format!("{key}/")) {
                m.error.get_or_insert(format!(
                    "subject `{}` is stored inside this subject's directory (the object store \
                     reads `\\` as `/`): purging this one would delete its objects; refused",
                    other.escape_debug()
                ));
            }
        }
    }
    Ok(())
}
