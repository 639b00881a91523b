//! Builds each subject's manifest before it is claimed: every object location, resolved from
//! templates and URI columns while the rows that name them still exist, and (for dry runs) the
//! rows per table. A real run counts rows in its row transaction, right before it deletes them,
//! and records those counts in the `purged` entry.

use crate::context::Context;
use crate::db::platform;
use crate::domain::Location;
use crate::spec::{Job, ObjectSource};
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
    for q in super::locate::queries(job, keys) {
        let rows = q.sql.fetch_texts(&ctx.db).await?;
        for (key, resolved) in q.resolve(rows, file_root) {
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
