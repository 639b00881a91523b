//! `lethe request export`: everything an account owns, written out. Rows: every row any job's
//! graph reaches from a subject the account owns (its subject rows whatever their state, and
//! every `[[rows]]` table under them), once each, one JSON Lines file per table, without the
//! columns specs leave out. Objects: the current version of every object under the locations
//! those subjects name (as a purge would find them, and only where the ownership proof finds no
//! other row claiming them), keys and version ids recorded. `MANIFEST.jsonl` lists every file
//! with its sha256; its own sha256 goes into the audit log (`exported`). Everything is
//! streamed: memory stays flat however large the account. Deletes nothing.

use crate::config::config_error;
use crate::context::Context;
use crate::db::holds::Scope;
use crate::db::requests::{self, Kind};
use crate::db::{catalog, platform};
use crate::domain::Location;
use crate::spec::{Ident, Job, TableName};
use crate::storage::ObjectVersion;
use anyhow::{Context as _, Result, anyhow};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where an export goes.
enum Target {
    Dir(PathBuf),
    S3 { bucket: String, prefix: String },
}

fn target(out: &str) -> Result<Target> {
    match out.strip_prefix("s3://") {
        Some(rest) => {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(anyhow!(
                    "--out `{out}` names no bucket: write s3://BUCKET/PREFIX/"
                ));
            }
            let mut prefix = prefix.to_string();
            if !prefix.is_empty() && !prefix.ends_with('/') {
                prefix.push('/');
            }
            Ok(Target::S3 {
                bucket: bucket.into(),
                prefix,
            })
        }
        None => Ok(Target::Dir(PathBuf::from(out))),
    }
}

/// A new directory readable by its owner alone; an existing one only if empty.
fn fresh_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(anyhow!(
                    "--out {} is not empty: an export goes into a new or empty directory",
                    dir.display()
                ));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display())),
        Err(e) => Err(anyhow!("--out {}: {e}", dir.display())),
    }
}

/// A key as a relative path that stays inside the export: every byte but `[A-Za-z0-9._-]`
/// percent-encoded, segments `.`, `..` and empty ones encoded too, and the object's own name
/// ending in `~` (no directory name can), so `a` and `a/b` never collide.
pub fn safe_path(key: &str) -> PathBuf {
    let segs: Vec<&str> = key.split('/').collect();
    let mut out = PathBuf::new();
    for (i, seg) in segs.iter().enumerate() {
        let mut s = String::new();
        match *seg {
            "" => s.push_str("%E"),
            "." | ".." => s.push_str(&"%2E".repeat(seg.len())),
            _ => {
                for b in seg.bytes() {
                    if b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-' {
                        s.push(b as char);
                    } else {
                        s.push_str(&format!("%{b:02X}"));
                    }
                }
            }
        }
        if s.len() > 200 {
            s = format!("%H{}", hex(&Sha256::digest(seg.as_bytes())));
        }
        if i + 1 == segs.len() {
            s.push('~');
        }
        out.push(s);
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A file being written, with its running sha256 and size.
struct Hashed {
    file: std::io::BufWriter<std::fs::File>,
    sha: Sha256,
    bytes: u64,
}

impl Hashed {
    fn create(path: &Path) -> Result<Hashed> {
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(path)
            .with_context(|| format!("creating {}", path.display()))?;
        Ok(Hashed {
            file: std::io::BufWriter::new(file),
            sha: Sha256::new(),
            bytes: 0,
        })
    }

    fn write(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.sha.update(b);
        self.bytes += b.len() as u64;
        self.file.write_all(b)
    }

    fn finish(mut self) -> Result<(String, u64)> {
        self.file.flush()?;
        Ok((hex(&self.sha.finalize()), self.bytes))
    }
}

/// Running totals, said on stderr every two seconds.
struct Progress {
    rows: u64,
    objects: u64,
    bytes: u64,
    said: std::time::Instant,
}

impl Progress {
    fn tick(&mut self) {
        if self.said.elapsed() >= std::time::Duration::from_secs(2) {
            eprintln!(
                "export: {} rows, {} objects, {} bytes so far",
                self.rows, self.objects, self.bytes
            );
            self.said = std::time::Instant::now();
        }
    }
}

/// Exports `account` to `out` and records it. Exit code 0, or 1 when something it owns could
/// not be exported (named on stderr and in the manifest).
pub async fn run(
    ctx: &Context,
    jobs: &[Job],
    account: &str,
    out: &str,
    reason: &str,
    by: &str,
    force: bool,
) -> Result<u8> {
    if reason.trim().is_empty() || by.trim().is_empty() {
        return Err(config_error(anyhow!(
            "an export needs a non-empty --reason and --by"
        )));
    }
    let target = target(out).map_err(config_error)?;
    // The subjects it owns, per job.
    let mut owned: Vec<(&Job, Vec<String>)> = Vec::new();
    for job in jobs {
        let Some(sql) = platform::owned_keys(job, account) else {
            continue;
        };
        let keys: Vec<(String,)> = sql.fetch_all(&ctx.db).await.with_context(|| {
            format!("reading what account {account} owns in job `{}`", job.name)
        })?;
        owned.push((job, keys.into_iter().map(|(k,)| k).collect()));
    }
    let subjects: usize = owned.iter().map(|(_, k)| k.len()).sum();
    if subjects == 0 && !force {
        return Err(config_error(anyhow!(
            "account {account} owns no subject in any job (jobs with an `owner` column: {}): \
             check the id, or pass --force to export it anyway; nothing was written",
            jobs.iter()
                .filter(|j| j.owner.is_some())
                .map(|j| j.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let staging = match &target {
        Target::Dir(d) => {
            fresh_dir(d).map_err(config_error)?;
            d.clone()
        }
        Target::S3 { bucket, prefix } => {
            let page = ctx
                .store
                .list_page(bucket, prefix, false, None)
                .await
                .map_err(|e| config_error(anyhow!("--out {out}: {e}")))?;
            if !page.items.is_empty() {
                return Err(config_error(anyhow!(
                    "--out {out} already holds objects: an export goes under a new prefix"
                )));
            }
            let d = std::env::temp_dir().join(format!(
                "lethe-export-{}-{}",
                std::process::id(),
                chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
            ));
            fresh_dir(&d)?;
            d
        }
    };
    let mut progress = Progress {
        rows: 0,
        objects: 0,
        bytes: 0,
        said: std::time::Instant::now(),
    };
    let mut manifest = Hashed::create(&staging.join("MANIFEST.jsonl"))?;
    let line = |m: &mut Hashed, v: serde_json::Value| -> Result<()> {
        m.write(v.to_string().as_bytes())?;
        m.write(b"\n")?;
        Ok(())
    };
    let rows = export_rows(ctx, jobs, account, &staging, &mut progress).await?;
    let mut row_counts = BTreeMap::new();
    for (path, table, n, sha, bytes) in rows {
        line(
            &mut manifest,
            serde_json::json!({"path": path, "table": table, "rows": n, "sha256": sha, "bytes": bytes}),
        )?;
        row_counts.insert(table, n);
    }
    let (objects, problems) =
        export_objects(ctx, jobs, &owned, &staging, &mut progress, &mut |m| {
            line(&mut manifest, m)
        })
        .await?;
    for p in &problems {
        line(&mut manifest, serde_json::json!({"not_exported": p}))?;
    }
    let (manifest_sha, _) = manifest.finish()?;
    let files = row_counts.len() as u64 + objects;
    if let Target::S3 { bucket, prefix } = &target {
        upload(ctx, &staging, bucket, prefix).await?;
        let _ = std::fs::remove_dir_all(&staging);
    }
    let now = crate::db::clock::now(&ctx.db).await?;
    let detail = serde_json::json!({
        "manifest_sha256": manifest_sha,
        "out": out,
        "files": files,
        "rows": row_counts,
        "objects": objects,
        "bytes": progress.bytes,
        "not_exported": problems.len(),
    });
    let id = requests::record(
        &ctx.db,
        Kind::Export,
        &Scope::Account(account.to_string()),
        reason,
        by,
        now,
        detail,
    )
    .await?;
    writeln!(std::io::stdout(), "{id}")?;
    eprintln!(
        "export {id} of account {account} to {out}: {} rows in {} tables, {objects} objects, {} \
         bytes; MANIFEST.jsonl sha256 {manifest_sha} (recorded in the audit log)",
        row_counts.values().sum::<u64>(),
        row_counts.len(),
        progress.bytes
    );
    for p in &problems {
        eprintln!("  not exported: {p}");
    }
    Ok(if problems.is_empty() { 0 } else { 1 })
}

/// `(file, table, rows, sha256, bytes)` per table written.
async fn export_rows(
    ctx: &Context,
    jobs: &[Job],
    account: &str,
    staging: &Path,
    progress: &mut Progress,
) -> Result<Vec<(String, String, u64, String, u64)>> {
    let mut paths: BTreeMap<TableName, Vec<(&Job, usize)>> = BTreeMap::new();
    let mut leave_out: BTreeMap<TableName, BTreeSet<Ident>> = BTreeMap::new();
    for job in jobs.iter().filter(|j| j.owner.is_some()) {
        for (i, node) in job.nodes.iter().enumerate() {
            paths.entry(node.table.clone()).or_default().push((job, i));
        }
    }
    for job in jobs {
        for (t, c) in &job.leave_out {
            leave_out.entry(t.clone()).or_default().insert(c.clone());
        }
    }
    let catalog = match ctx.db.dialect() {
        crate::domain::Dialect::Sqlite => Some(catalog::load(&ctx.db).await?),
        crate::domain::Dialect::Postgres => None,
    };
    let mut out = Vec::new();
    for (table, reached) in &paths {
        let columns: Vec<String> = catalog
            .as_ref()
            .and_then(|c| c.columns.get(table))
            .map(|cols| cols.iter().map(|c| c.name.clone()).collect())
            .unwrap_or_default();
        let left: Vec<Ident> = leave_out
            .get(table)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        let sql = platform::export_rows(table, reached, account, &columns, &left);
        let rel = format!("rows/{table}.jsonl");
        let mut file = Hashed::create(&staging.join(&rel))?;
        let mut n = 0u64;
        sql.for_each::<(String,)>(&ctx.db, |(row,)| {
            file.write(row.as_bytes())?;
            file.write(b"\n")?;
            n += 1;
            progress.rows += 1;
            progress.bytes += row.len() as u64 + 1;
            progress.tick();
            Ok(())
        })
        .await
        .with_context(|| format!("exporting rows of {table}"))?;
        let (sha, bytes) = file.finish()?;
        out.push((rel, table.to_string(), n, sha, bytes));
    }
    Ok(out)
}

/// Writes the current version of every object under the account's locations; answers how many,
/// and what could not be exported.
async fn export_objects(
    ctx: &Context,
    all: &[Job],
    owned: &[(&Job, Vec<String>)],
    staging: &Path,
    progress: &mut Progress,
    line: &mut (dyn FnMut(serde_json::Value) -> Result<()> + Send),
) -> Result<(u64, Vec<String>)> {
    let mut exported: BTreeSet<Location> = BTreeSet::new();
    let mut refused: BTreeMap<Location, String> = BTreeMap::new();
    for (job, keys) in owned {
        for chunk in keys.chunks(500) {
            let manifests = crate::pipeline::manifest::build(ctx, job, chunk, false).await?;
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
    let mut n = 0u64;
    for l in &exported {
        if !versioning.contains_key(&l.bucket) {
            let v = ctx
                .store
                .versioning(&l.bucket)
                .await
                .map_err(|e| anyhow!("bucket `{}`: {e}", l.bucket))?;
            versioning.insert(l.bucket.clone(), v.keeps_versions());
        }
        let versions = versioning[&l.bucket];
        for item in current_objects(ctx, l, versions).await? {
            let rel = Path::new("objects")
                .join(&l.bucket)
                .join(safe_path(&item.key));
            let mut file = Hashed::create(&staging.join(&rel))?;
            ctx.store
                .read(&l.bucket, &item, &mut |b| file.write(b))
                .await
                .map_err(|e| anyhow!("{e}"))?;
            let (sha, bytes) = file.finish()?;
            line(serde_json::json!({
                "path": rel.to_string_lossy(), "bucket": l.bucket, "key": item.key,
                "version_id": item.version_id, "sha256": sha, "bytes": bytes,
            }))?;
            n += 1;
            progress.objects += 1;
            progress.bytes += bytes;
            progress.tick();
        }
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
async fn upload(ctx: &Context, staging: &Path, bucket: &str, prefix: &str) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::safe_path;

    #[test]
    fn every_key_stays_inside_and_a_file_never_meets_a_directory() {
        assert_eq!(
            safe_path("runs/1/model.bin").to_str().unwrap(),
            "runs/1/model.bin~"
        );
        assert_eq!(safe_path("runs/1").to_str().unwrap(), "runs/1~");
        assert_eq!(
            safe_path("../../etc/passwd").to_str().unwrap(),
            "%2E%2E/%2E%2E/etc/passwd~"
        );
        assert_eq!(safe_path("/a//b\\c").to_str().unwrap(), "%E/a/%E/b%5Cc~");
        assert_eq!(safe_path("a~").to_str().unwrap(), "a%7E~");
    }
}
