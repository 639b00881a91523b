//! Reading spec files: every `*.toml` of a directory, each on its own (a file that does not
//! parse, or reuses a name, is rejected with why), bounded in size. Parsing and checking one
//! spec's text is `compile`'s.

use super::{Job, parse_job};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// Reads every `*.toml` in `dir`, sorted by name. Any bad file fails the whole load.
pub fn load_dir(dir: &Path) -> Result<Vec<Job>> {
    let (jobs, rejected) = load_dir_each(dir)?;
    if !rejected.is_empty() {
        let errors: Vec<&str> = rejected.iter().map(|r| r.error.as_str()).collect();
        bail!("{}", errors.join("\n"));
    }
    if jobs.is_empty() {
        bail!("no job specs (*.toml) in {}", dir.display());
    }
    Ok(jobs)
}

/// A spec file that could not be used, and why (its first line names the file).
#[derive(Debug, Clone)]
pub struct Rejected {
    pub file: PathBuf,
    /// The job's name, when the file parsed far enough to have one.
    pub job: Option<String>,
    pub error: String,
}

/// Every spec in `dir`, each on its own: the jobs that parse, and the files that do not (or
/// reuse a name an earlier file took). Only an unreadable directory is an error here.
pub fn load_dir_each(dir: &Path) -> Result<(Vec<Job>, Vec<Rejected>)> {
    let entries = std::fs::read_dir(dir).with_context(|| {
        format!(
            "reading the job directory {} (set LETHE_JOBS_DIR)",
            dir.display()
        )
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    let mut jobs: Vec<Job> = Vec::new();
    let mut rejected = Vec::new();
    for p in &paths {
        match load_file(p) {
            Ok(job) => {
                if let Some(other) = jobs.iter().find(|j| j.name == job.name) {
                    rejected.push(Rejected {
                        file: p.clone(),
                        job: None,
                        error: format!(
                            "{}: job name `{}` is already used by {}",
                            p.display(),
                            job.name,
                            other.file.display()
                        ),
                    });
                } else {
                    jobs.push(job);
                }
            }
            Err(e) => rejected.push(Rejected {
                file: p.clone(),
                job: None,
                error: format!("{e:#}"),
            }),
        }
    }
    Ok((jobs, rejected))
}

/// The largest spec file accepted; specs are small, a huge one is a mistake.
const MAX_SPEC_BYTES: u64 = 1 << 20;

pub fn load_file(path: &Path) -> Result<Job> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if meta.len() > MAX_SPEC_BYTES {
        bail!(
            "{}: {} bytes is larger than a job spec may be (1 MiB)",
            path.display(),
            meta.len()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {} as UTF-8", path.display()))?;
    parse_job(&text, path)
}
