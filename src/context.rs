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
}

impl Context {
    /// Connects to the database and sets up the object store (an S3 client connects lazily; a
    /// local root must exist).
    pub async fn build(settings: &Settings) -> Result<Self> {
        let db = crate::db::connect(&settings.database_url, settings.db_connections).await?;
        let store: Arc<dyn ObjectStore> = match &settings.object_root {
            None => Arc::new(S3Store::connect(&settings.s3).await),
            Some(root) => Arc::new(
                LocalStore::open(root).map_err(|e| crate::config::config_error(anyhow!(e)))?,
            ),
        };
        Ok(Context {
            settings: settings.clone(),
            db,
            store,
        })
    }

    /// With a given store (unit tests use the in-memory one).
    pub fn with_store(settings: &Settings, db: Db, store: Arc<dyn ObjectStore>) -> Self {
        Context {
            settings: settings.clone(),
            db,
            store,
        }
    }

    /// Loads the job specs and validates them against the live catalog.
    pub async fn load_jobs(&self) -> Result<Vec<Job>> {
        let mut jobs = spec::load_dir(&self.settings.jobs_dir)?;
        let catalog = crate::db::catalog::load(&self.db).await?;
        spec::validate(&mut jobs, &catalog).context("the job specs do not match the database")?;
        crate::db::catalog::check_literals(&self.db, &jobs)
            .await
            .context("the job specs do not match the database")?;
        Ok(jobs)
    }
}
