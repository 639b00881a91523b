//! `lethe demo`: the embedded default. A fresh directory with a SQLite platform database (the
//! reference training platform and a seeded world), a local object directory and the shipped
//! job specs, so the whole product runs with nothing installed but the Rust toolchain.
//! `cli.rs` drives the tour (plan, run, verify, report) over what `prepare` builds.

use crate::config::Settings;
use crate::context::Context;
use crate::storage::local::LocalStore;
use crate::storage::{ObjectStore, Versioning};
use anyhow::{Context as _, Result, bail};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Marks a directory as the demo's, so running it again may replace it.
const MARKER: &str = ".lethe-demo";

const SCHEMA: &str = include_str!("../jobs/reference/training-platform.sqlite.sql");
const SEED: &str = include_str!("../jobs/reference/seed-demo.sqlite.sql");
const JOBS: [(&str, &str); 3] = [
    (
        "deleted-runs.toml",
        include_str!("../jobs/deleted-runs.toml"),
    ),
    (
        "deleted-snapshots.toml",
        include_str!("../jobs/deleted-snapshots.toml"),
    ),
    (
        "closed-accounts.toml",
        include_str!("../jobs/closed-accounts.toml"),
    ),
];

/// The bucket the shipped specs name: a directory under the demo's object root.
pub const BUCKET: &str = "lethe-artifacts";

/// Where the demo keeps each thing.
pub struct Demo {
    pub dir: PathBuf,
    pub database: PathBuf,
    pub objects: PathBuf,
    pub jobs: PathBuf,
    pub report: PathBuf,
    pub ctx: Context,
}

/// Creates the demo world in `dir` (replacing an earlier demo there, refusing anything else).
pub async fn prepare(dir: &Path, base: &Settings) -> Result<Demo> {
    // The demo's rows name their objects by file:// URI, and lethe refuses a URI whose text a
    // URL reader would read otherwise (a query, a fragment, percent-encoding).
    let text = std::path::absolute(dir)?.display().to_string();
    if let Some(c) = text.chars().find(|c| matches!(c, '?' | '#' | '%')) {
        bail!(
            "{} holds `{c}`, which the demo's file:// URIs cannot carry as text (lethe refuses \
             such URIs rather than guess what they name): choose another directory with --dir",
            dir.display()
        );
    }
    if dir.exists() {
        let empty = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .next()
            .is_none();
        if !empty && !dir.join(MARKER).exists() {
            bail!(
                "{} exists and is not a lethe demo directory: choose another with --dir",
                dir.display()
            );
        }
        std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join(MARKER), "created by `lethe demo`\n")?;
    let dir = dir.canonicalize()?;
    let (database, objects, jobs) = (
        dir.join("platform.db"),
        dir.join("objects"),
        dir.join("jobs"),
    );
    std::fs::create_dir_all(&objects)?;
    std::fs::create_dir_all(&jobs)?;
    for (name, text) in JOBS {
        std::fs::write(jobs.join(name), text)?;
    }

    let mut settings = base.clone();
    settings.database_url = sqlite_url(&database);
    settings.jobs_dir = jobs.clone();
    settings.object_root = Some(objects.clone());
    settings.clock_max_gap = None;
    let ctx = Context::build(&settings).await?;
    let uri = format!("file://{}/{BUCKET}", objects.display());
    crate::db::demo::seed(&ctx.db, SCHEMA, SEED, &uri).await?;
    crate::db::migrate(&ctx.db).await?;

    let store = LocalStore::open(&objects).map_err(anyhow::Error::msg)?;
    store.create_bucket(BUCKET, Versioning::Unversioned).await?;
    let keys = crate::db::demo::object_keys(&ctx.db, &uri).await?;
    let store: Arc<dyn ObjectStore> = Arc::new(store);
    for key in keys {
        store
            .put(BUCKET, &key, b"demo object\n".to_vec())
            .await
            .with_context(|| format!("writing {key}"))?;
    }
    Ok(Demo {
        report: dir.join("report.html"),
        dir,
        database,
        objects,
        jobs,
        ctx,
    })
}

/// A `sqlite://` URL naming `path` exactly: `%`, `?` and `#` in it are percent-encoded (the
/// driver decodes them), so a file's name never reads as parameters.
fn sqlite_url(path: &Path) -> String {
    let text = path.display().to_string();
    let mut out = String::from("sqlite://");
    for c in text.chars() {
        match c {
            '%' => out.push_str("%25"),
            '?' => out.push_str("%3F"),
            '#' => out.push_str("%23"),
            c => out.push(c),
        }
    }
    out
}

/// Rows and objects in the demo world now: (accounts, runs, snapshots, metrics, objects).
pub async fn census(demo: &Demo) -> Result<(i64, i64, i64, i64, usize)> {
    let (a, r, s, m) = crate::db::demo::census(&demo.ctx.db).await?;
    let files = walk(&demo.objects.join(BUCKET));
    Ok((a, r, s, m, files))
}

fn walk(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => walk(&e.path()),
                    _ => 1,
                })
                .sum()
        })
        .unwrap_or(0)
}
