//! `lethe request export`: everything an account owns, written out. Rows: every row any job's
//! graph reaches from a subject the account owns (its subject rows whatever their state, and
//! every `[[rows]]` table under them), once each, one JSON Lines file per table, without the
//! columns specs leave out. Objects: the current version of every object under the locations
//! those subjects name (as a purge would find them, and only where the ownership proof finds no
//! other row claiming them), keys and version ids recorded. `MANIFEST.jsonl` lists every file
//! with its sha256; its own sha256 goes into the audit log (`exported`). Everything is
//! streamed: memory stays flat however large the account. Deletes nothing.

mod files;
mod objects;

use crate::config::config_error;
use crate::context::Context;
use crate::db::holds::Scope;
use crate::db::requests::{self, Kind};
use crate::db::{catalog, platform};
use crate::spec::{Ident, Job, TableName};
use anyhow::{Context as _, Result, anyhow};
use files::{Hashed, Progress};
use objects::{export_objects, upload};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where an export goes.
enum Target {
    Dir(PathBuf),
    S3 { bucket: String, prefix: String },
}

/// The local copy of an export to a bucket, removed when dropped.
struct Staged(PathBuf);

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
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
        let Some(sql) = platform::owned_keys(job, jobs, account) else {
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
    // A bucket export's local copy holds the account's data: gone however the export ends.
    let _staged = matches!(target, Target::S3 { .. }).then(|| Staged(staging.clone()));
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
        let sql = platform::export_rows(table, jobs, reached, account, &columns, &left);
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
