//! The objects of an export: the locations the account's subjects name (as a purge finds them),
//! each asked of the ownership proof on its own, and the current version of every object under
//! those no other row claims, copied with its key and version id.

use super::files::{Hashed, Progress, safe_path};
use crate::context::Context;
use crate::domain::Location;
use crate::spec::Job;
use crate::storage::ObjectVersion;
use anyhow::{Result, anyhow};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Locations listed at once.
const LISTINGS_AT_ONCE: usize = 16;
/// Objects copied at once.
const COPIES_AT_ONCE: usize = 64;

/// Writes the current version of every object under the account's locations; answers how many,
/// and what could not be exported.
pub(super) async fn export_objects(
    ctx: &Context,
    all: &[Job],
    owned: &[(&Job, Vec<String>)],
    staging: &Path,
    progress: &mut Progress,
    line: &mut (dyn FnMut(serde_json::Value) -> Result<()> + Send),
) -> Result<(u64, Vec<String>)> {
    let mut exported: BTreeSet<Location> = BTreeSet::new();
    let mut refused: BTreeMap<Location, String> = BTreeMap::new();
    // Jobs with the most subjects first (the runs before the account that holds them all): a
    // location one job's subject already settled is not asked again for another's, so the
    // account's subject, which names every run's directory, asks only about its own.
    let mut owned: Vec<&(&Job, Vec<String>)> = owned.iter().collect();
    owned.sort_by_key(|(_, keys)| std::cmp::Reverse(keys.len()));
    for (job, keys) in owned {
        for chunk in keys.chunks(500) {
            let mut manifests = crate::pipeline::manifest::build(ctx, job, chunk, false).await?;
            for m in manifests.values_mut() {
                m.locations
                    .retain(|l| !exported.contains(l) && !refused.contains_key(l));
            }
            // Each location is asked about on its own (round r asks every subject's r-th), so a
            // claimed one keeps only itself out of the export.
            let most = manifests
                .values()
                .map(|m| m.locations.len())
                .max()
                .unwrap_or(0);
            for r in 0..most {
                let subjects: Vec<(String, Vec<Location>)> = manifests
                    .iter()
                    .filter(|(_, m)| m.error.is_none())
                    .filter_map(|(k, m)| m.locations.get(r).map(|l| (k.clone(), vec![l.clone()])))
                    .collect();
                let claimed = crate::pipeline::claimed_by_others(ctx, job, all, &subjects).await;
                for (key, l) in subjects.iter().map(|(k, l)| (k, &l[0])) {
                    match claimed.get(key) {
                        None => {
                            exported.insert(l.clone());
                        }
                        Some(why) => {
                            refused
                                .entry(l.clone())
                                .or_insert_with(|| format!("{}:{key}: {why}", job.name));
                        }
                    }
                }
            }
            for (key, m) in &manifests {
                if let Some(why) = &m.error {
                    let place = m.locations.first().cloned().unwrap_or_else(|| Location {
                        store: String::new(),
                        bucket: String::new(),
                        prefix: format!("{}:{key}", job.name),
                        exact: false,
                        object_only: false,
                    });
                    refused.insert(place, format!("{}:{key}: {why}", job.name));
                }
            }
        }
    }
    let exported = crate::domain::outermost(exported);
    let problems: Vec<String> = refused
        .into_iter()
        .filter(|(l, _)| {
            !exported
                .iter()
                .any(|e| e.bucket == l.bucket && l.prefix.starts_with(&e.prefix))
        })
        .map(|(_, w)| w)
        .collect();
    let mut versioning = BTreeMap::new();
    for l in &exported {
        if !versioning.contains_key(&l.bucket) {
            let v = ctx
                .store
                .versioning(&l.bucket)
                .await
                .map_err(|e| anyhow!("bucket `{}`: {e}", l.bucket))?;
            versioning.insert(l.bucket.clone(), v.keeps_versions());
        }
    }
    // Locations are listed, and objects copied, many at a time (the store answers each
    // request slowly, not each byte): files are independent, and manifest lines are written
    // here, one at a time, as copies finish.
    use futures::{StreamExt, TryStreamExt};
    let versioning = &versioning;
    let listed = futures::stream::iter(exported.iter())
        .map(|l| async move {
            let items = current_objects(ctx, l, versioning[&l.bucket]).await?;
            Ok::<_, anyhow::Error>(futures::stream::iter(
                items
                    .into_iter()
                    .map(move |item| Ok::<_, anyhow::Error>((l, item))),
            ))
        })
        .buffer_unordered(LISTINGS_AT_ONCE)
        .try_flatten();
    let mut copies = std::pin::pin!(
        listed
            .map_ok(|(l, item)| async move {
                let rel = Path::new("objects")
                    .join(&l.bucket)
                    .join(safe_path(&item.key));
                let mut file = Hashed::create(&staging.join(&rel))?;
                ctx.store
                    .read(&l.bucket, &item, &mut |b| file.write(b))
                    .await
                    .map_err(|e| anyhow!("{e}"))?;
                let (sha, bytes) = file.finish()?;
                Ok::<_, anyhow::Error>((rel, l, item, sha, bytes))
            })
            .try_buffer_unordered(COPIES_AT_ONCE)
    );
    let mut n = 0u64;
    while let Some((rel, l, item, sha, bytes)) = copies.try_next().await? {
        line(serde_json::json!({
            "path": rel.to_string_lossy(), "bucket": l.bucket, "key": item.key,
            "version_id": item.version_id, "sha256": sha, "bytes": bytes,
        }))?;
        n += 1;
        progress.objects += 1;
        progress.bytes += bytes;
        progress.tick();
    }
    Ok((n, problems))
}

/// The current objects at `l`: with `versions`, the newest version of each key that is not a
/// delete marker (a listing of versions gives each key's newest first).
async fn current_objects(
    ctx: &Context,
    l: &Location,
    versions: bool,
) -> Result<Vec<ObjectVersion>> {
    let store = &*ctx.store;
    let mut all = Vec::new();
    if l.exact || l.object_only {
        let key = l.prefix.trim_end_matches('/');
        all.extend(
            store
                .exact_versions(&l.bucket, key, versions)
                .await
                .map_err(|e| anyhow!("listing {}: {e}", l.bucket))?,
        );
    }
    if !l.object_only {
        let mut token = None;
        loop {
            let page = store
                .list_page(&l.bucket, &l.prefix, versions, token)
                .await
                .map_err(|e| anyhow!("listing {}/{}: {e}", l.bucket, l.prefix))?;
            all.extend(page.items);
            match page.next {
                Some(t) => token = Some(t),
                None => break,
            }
        }
    }
    let mut seen = BTreeSet::new();
    Ok(all
        .into_iter()
        .filter(|o| seen.insert(o.key.clone()) && !o.delete_marker)
        .collect())
}

/// Copies every file of `staging` to `bucket` under `prefix`, keeping relative paths.
pub(super) async fn upload(
    ctx: &Context,
    staging: &Path,
    bucket: &str,
    prefix: &str,
) -> Result<()> {
    let mut stack = vec![staging.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(staging).expect("under staging");
            let key = format!("{prefix}{}", rel.to_string_lossy());
            ctx.store
                .put_file(bucket, &key, &path)
                .await
                .map_err(|e| anyhow!("{e}"))?;
        }
    }
    Ok(())
}
