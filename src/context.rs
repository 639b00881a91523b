//! The one composition root: `Context::build` creates the pool, the object store and the job
//! catalog. `main`, every subcommand and the tests go through it.

use crate::config::Settings;
use crate::db::Db;
use crate::spec::{self, Job};
use crate::storage::ObjectStore;
use crate::storage::local::LocalStore;
use crate::storage::s3::S3Store;
use anyhow::{Context as _, Result, anyhow};
use std::sync::Arc;

#[derive(Clone)]
pub struct Context {
    pub settings: Settings,
    pub db: Db,
    pub store: Arc<dyn ObjectStore>,
    /// With `--keep-going`: the specs the last `load_jobs` left out, and why.
    rejected: Arc<std::sync::Mutex<Vec<spec::Rejected>>>,
}

impl Context {
    /// Connects to the database and sets up the object store (an S3 client connects lazily; a
    /// local root must exist).
    pub async fn build(settings: &Settings) -> Result<Self> {
        // Side by side: the S3 client's set-up (its credential chain and TLS roots) takes as
        // long as the database's first connections.
        let (db, store) = tokio::join!(
            crate::db::connect(&settings.database_url, settings.db_connections),
            async {
                Ok::<Arc<dyn ObjectStore>, anyhow::Error>(match &settings.object_root {
                    None => Arc::new(S3Store::connect(&settings.s3).await),
                    Some(root) => Arc::new(
                        LocalStore::open(root)
                            .map_err(|e| crate::config::config_error(anyhow!(e)))?,
                    ),
                })
            }
        );
        let (db, store) = (db?, store?);
        Ok(Context {
            settings: settings.clone(),
            db,
            store,
            rejected: Default::default(),
        })
    }

    /// Makes sure the pool can serve `jobs_at_once` jobs side by side (the daemon runs every
    /// job on its own schedule; `lethe run` those that share no table): each job runs
    /// `LETHE_BATCH_CONCURRENCY` batches, and a batch may hold two connections at once (its
    /// work and its lease's checks), plus one for lethe's own checks. Run locks take
    /// connections of their own, outside the pool. An explicit `LETHE_DB_CONNECTIONS` that is
    /// too small is a configuration error naming the size that fits; the default grows to fit.
    pub async fn fit_pool(mut self, jobs_at_once: usize) -> Result<Self> {
        let batches = self.settings.batch_concurrency;
        let needed = pool_needed(jobs_at_once, batches);
        if self.settings.db_connections as usize >= needed {
            return Ok(self);
        }
        if crate::config::db_connections_given() {
            anyhow::bail!(
                "LETHE_DB_CONNECTIONS={} is too small: {jobs_at_once} job(s) may run at once, each \
                 with LETHE_BATCH_CONCURRENCY={batches} batches of up to 2 connections, and lethe \
                 needs 1 of its own: set LETHE_DB_CONNECTIONS={needed} or more, and let the \
                 server (or PgBouncer's pool) accept that many, plus one per job for the run locks",
                self.settings.db_connections
            );
        }
        tracing::info!(
            connections = needed,
            jobs = jobs_at_once,
            batch_concurrency = batches,
            "the default connection pool is too small for these jobs; using a larger one"
        );
        self.settings.db_connections = needed as u32;
        let db = crate::db::connect(&self.settings.database_url, needed as u32).await?;
        let old = std::mem::replace(&mut self.db, db);
        crate::on_db!(&old, p => p.close().await);
        Ok(self)
    }

    /// How many jobs the pool serves at once (at least one): `run_all` runs no more side by
    /// side, so an explicit `LETHE_DB_CONNECTIONS` that fits one job still runs them all.
    pub fn jobs_fitting(&self) -> usize {
        let per_job = self.settings.batch_concurrency * 2;
        ((self.settings.db_connections as usize).saturating_sub(1) / per_job.max(1)).max(1)
    }

    /// With a given store (unit tests use the in-memory one).
    pub fn with_store(settings: &Settings, db: Db, store: Arc<dyn ObjectStore>) -> Self {
        Context {
            settings: settings.clone(),
            db,
            store,
            rejected: Default::default(),
        }
    }

    /// Loads the job specs and validates them against the live catalog. Strict by default:
    /// one bad spec fails the load. With `keep_going` (`--keep-going`, `LETHE_KEEP_GOING`),
    /// each bad spec is left out and kept in `rejected` (for the caller to say), and the rest
    /// load.
    pub async fn load_jobs(&self) -> Result<Vec<Job>> {
        if !self.settings.keep_going {
            let mut jobs = spec::load_dir(&self.settings.jobs_dir)?;
            let catalog = crate::db::catalog::load(&self.db).await?;
            spec::validate(&mut jobs, &catalog)
                .context("the job specs do not match the database")?;
            crate::db::catalog::check_literals(&self.db, &jobs)
                .await
                .context("the job specs do not match the database")?;
            return Ok(jobs);
        }
        let (jobs, mut rejected) = spec::load_dir_each(&self.settings.jobs_dir)?;
        let mut jobs = jobs;
        let catalog = crate::db::catalog::load(&self.db).await?;
        let problems = spec::validate::problems(&mut jobs, &catalog);
        let mut jobs = keep_valid(jobs, problems, &mut rejected);
        let problems = crate::db::catalog::literal_problems(&self.db, &jobs).await?;
        jobs = keep_valid(jobs, problems, &mut rejected);
        let problems = crate::db::catalog::clock_problems(&self.db, &jobs).await?;
        jobs = keep_valid(jobs, problems, &mut rejected);
        if jobs.is_empty() {
            let errors: Vec<&str> = rejected.iter().map(|r| r.error.as_str()).collect();
            anyhow::bail!(
                "no valid job spec in {}: {}",
                self.settings.jobs_dir.display(),
                errors.join("\n")
            );
        }
        self.holds_on_rejected(&jobs, &rejected).await?;
        *self.rejected.lock().expect("rejected lock") = rejected;
        Ok(jobs)
    }

    /// The specs the last `load_jobs` left out (`--keep-going` only).
    pub fn rejected(&self) -> Vec<spec::Rejected> {
        self.rejected.lock().expect("rejected lock").clone()
    }

    /// A hold that names a job whose spec was left out cannot be mapped to the rows it
    /// protects in the other jobs (an experiment job must not take a run a `deleted-runs` hold
    /// keeps), so it stops the load, and every run after it (`pipeline::run_all` asks again: a
    /// daemon loads its specs once, and the hold may come later). When a spec did not even
    /// parse, its job's name is unknown: then any active hold naming a job that did not load
    /// stops it.
    pub async fn holds_on_rejected(&self, jobs: &[Job], rejected: &[spec::Rejected]) -> Result<()> {
        if rejected.is_empty() {
            return Ok(());
        }
        let named: Vec<(i64, String)> = crate::db::holds::active_job_names(&self.db).await?;
        let unparsed = rejected.iter().any(|r| r.job.is_none());
        for (id, job) in named {
            let left_out = rejected
                .iter()
                .any(|r| r.job.as_deref() == Some(job.as_str()))
                || (unparsed && !jobs.iter().any(|j| j.name == job));
            if left_out {
                anyhow::bail!(
                    "hold {id} names job `{job}`, whose spec was left out (or did not parse), so \
                     what it protects in the other jobs is unknown: fix the spec, or release the \
                     hold; nothing was deleted"
                );
            }
        }
        Ok(())
    }
}

/// The jobs without problems; the others join `rejected` with their problems.
fn keep_valid(
    jobs: Vec<Job>,
    problems: Vec<Vec<String>>,
    rejected: &mut Vec<spec::Rejected>,
) -> Vec<Job> {
    let mut keep = Vec::new();
    for (job, p) in jobs.into_iter().zip(problems) {
        if p.is_empty() {
            keep.push(job);
        } else {
            rejected.push(spec::Rejected {
                file: job.file.clone(),
                job: Some(job.name.clone()),
                error: p.join("\n"),
            });
        }
    }
    keep
}

/// Connections `jobs_at_once` jobs of `batches` batches each may hold at once (`fit_pool`).
pub fn pool_needed(jobs_at_once: usize, batches: usize) -> usize {
    jobs_at_once.max(1) * batches * 2 + 1
}
