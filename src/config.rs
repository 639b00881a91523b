//! Settings, from the environment first (`LETHE_*`, `DATABASE_URL`, standard `AWS_*`). Every
//! batch size, concurrency and time limit is a named, validated setting with its default here;
//! `lethe check` prints the effective values with secrets masked.

use crate::storage::s3::S3Settings;
use anyhow::{Result, anyhow, bail};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone)]
pub struct Settings {
    /// `DATABASE_URL`: the platform database, where lethe's own schema lives too.
    pub database_url: String,
    /// `LETHE_JOBS_DIR` (default `jobs`): where the job specs are.
    pub jobs_dir: PathBuf,
    pub s3: S3Settings,
    /// `LETHE_OBJECT_STORE` (default `s3`): `s3`, or `file:///ROOT` for a local directory store
    /// whose buckets are the directories under ROOT.
    pub object_root: Option<PathBuf>,
    /// `LETHE_BATCH_SUBJECTS` (default 2000): subjects claimed, purged and committed together.
    /// Their rows are deleted in one transaction per batch. Measured (bench/, 26 November
    /// 2026): 100,000 runs x 20 child rows, 2,000 -> 0.81x the raw SQL baseline at the same
    /// batch size, 1,000 -> 0.73x; 20,000 objects, no clear difference. See docs/performance.md.
    pub batch_subjects: usize,
    /// `LETHE_BATCH_CONCURRENCY` (default 2): batches of one job in flight at once. While one
    /// batch's rows are deleted the next is claimed and its objects purged, so the database
    /// and the object store both stay busy. Measured (bench/, 100,000 runs x 20 child rows,
    /// 2 cores): 1 batch in flight 21-30 s, 2 batches 12-18 s. See docs/performance.md.
    pub batch_concurrency: usize,
    /// `LETHE_DELETE_CONCURRENCY` (default 160): DeleteObjects requests in flight per batch.
    pub delete_concurrency: usize,
    /// `LETHE_DELETE_BATCH` (default 100; at most 1,000, the S3 limit): keys per DeleteObjects
    /// request. Measured (bench/, 20,000 objects, SeaweedFS, paired rounds): 100 keys x 160 in
    /// flight purged 10-25% faster than 1,000 x 16; a server deletes a request's keys one after
    /// another, so more, smaller requests keep more of it busy. See docs/performance.md.
    pub delete_batch: usize,
    /// `LETHE_LIST_CONCURRENCY` (default 32): listings in flight.
    pub list_concurrency: usize,
    /// `LETHE_LIST_RANGES` (default 4): contiguous ranges a batch's directories in one bucket
    /// are split into for the purge's listing, walked concurrently. Each range's last page
    /// reads on into the next range's keys, so more ranges list more keys twice.
    pub list_ranges: usize,
    /// `LETHE_KEY_RETRIES` (default 5): attempts for keys a DeleteObjects answer reports failed.
    pub key_retries: u32,
    /// `LETHE_LEASE_SECONDS` (default 900): how long a claim is ours before another run may take it.
    pub lease_seconds: i64,
    /// Object versions one subject may have before it fails instead of being purged further.
    pub max_objects_per_subject: u64,
    /// `LETHE_DB_CONNECTIONS` (default 8): connection pool size.
    pub db_connections: u32,
    /// `LETHE_RUN_BUDGET_SECONDS` (default 0, none): a run stops claiming after this long; the
    /// batches it started finish, the rest wait for the next run, and the run counts as partial.
    pub run_budget: Option<Duration>,
    /// `LETHE_MAX_SUBJECTS_PER_RUN` (default 0, none): the blast-radius cap. A run purges at most
    /// this many subjects and reports the run partial (exit 1) when more were eligible.
    /// `lethe run --limit` overrides it.
    pub max_subjects_per_run: Option<u64>,
    /// `LETHE_LOCK_TIMEOUT_SECONDS` (default 10): how long a row transaction waits for a lock
    /// the platform holds (a subject row being edited) before giving up on that batch; its
    /// subjects are retried one by one and those still locked wait for the next run.
    pub lock_timeout: Duration,
    /// `LETHE_SHUTDOWN_SECONDS` (default 30): after SIGTERM or SIGINT the daemon stops claiming
    /// and waits this long for the batches in flight, then exits.
    pub shutdown_grace: Duration,
    /// `LETHE_LIVENESS_SECONDS` (default 60): the daemon's `/healthz` fails when its scheduler
    /// or its main loop has not ticked for this long (they tick every few seconds).
    pub liveness: Duration,
    /// `LETHE_CLOCK_MAX_GAP_SECONDS` (default 1,209,600: 14 days; 0 disables): a destructive
    /// run refuses (exit 4) when the database clock is this far past the newest time lethe
    /// recorded, or behind it, until `lethe clock confirm`. Left unset, a run uses the shortest
    /// grace of its loaded jobs when that is shorter (`pipeline::max_gap`).
    pub clock_max_gap: Option<Duration>,
    /// `LETHE_AUDIT_ANCHOR` (default none): where `lethe audit anchor` writes and `lethe audit
    /// verify` reads anchors (a file or s3://BUCKET/PREFIX); the daemon anchors after each run.
    pub audit_anchor: Option<String>,
    /// `LETHE_ANCHOR_RETENTION_DAYS` (default 400): how long an anchor written to an S3 bucket
    /// with Object Lock is retained, in compliance mode (it cannot be shortened).
    pub anchor_retention_days: i64,
    /// `LETHE_LISTEN` (default none): address of the daemon's HTTP listener (`/metrics`,
    /// `/healthz`, `/readyz`), e.g. `127.0.0.1:9187`.
    pub listen: Option<std::net::SocketAddr>,
    /// `LETHE_KEEP_GOING` (default false; `--keep-going`): a spec that does not parse or
    /// validate is left out, said and counted, and the other jobs run. Default: one bad spec
    /// stops every job.
    pub keep_going: bool,
    /// `LETHE_ACTOR` (default: the OS user, `USER`): who runs lethe, recorded with each run
    /// and in its audit entries, and the default `--by` of holds and clock confirmations. The
    /// daemon records itself (`lethe-daemon@HOST`) unless this is set.
    pub actor: String,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("database_url", &crate::db::redact_url(&self.database_url))
            .field("jobs_dir", &self.jobs_dir)
            .field("s3", &self.s3)
            .field("object_root", &self.object_root)
            .field("batch_subjects", &self.batch_subjects)
            .field("batch_concurrency", &self.batch_concurrency)
            .field("delete_concurrency", &self.delete_concurrency)
            .field("delete_batch", &self.delete_batch)
            .field("list_concurrency", &self.list_concurrency)
            .field("list_ranges", &self.list_ranges)
            .field("key_retries", &self.key_retries)
            .field("lease_seconds", &self.lease_seconds)
            .field("max_objects_per_subject", &self.max_objects_per_subject)
            .field("db_connections", &self.db_connections)
            .field("run_budget", &self.run_budget)
            .field("max_subjects_per_run", &self.max_subjects_per_run)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("liveness", &self.liveness)
            .field("lock_timeout", &self.lock_timeout)
            .field("clock_max_gap", &self.clock_max_gap)
            .field("audit_anchor", &self.audit_anchor)
            .field("anchor_retention_days", &self.anchor_retention_days)
            .field("listen", &self.listen)
            .field("keep_going", &self.keep_going)
            .field("actor", &self.actor)
            .finish()
    }
}

impl Settings {
    /// The effective configuration, one `NAME=value` line per setting, named by the
    /// environment variable that sets it and marked `(default)` where none did. Secrets are
    /// masked: a password in `DATABASE_URL`, and AWS credentials, of which only whether they
    /// are set is shown.
    pub fn describe(&self) -> Vec<String> {
        fn secs(d: Option<Duration>) -> String {
            d.map_or_else(|| "0 (none)".into(), |d| d.as_secs().to_string())
        }
        let none = || "(none)".to_string();
        let s3 = &self.s3;
        let store = match &self.object_root {
            Some(root) => format!("file://{}", root.display()),
            None => "s3".into(),
        };
        let mut rows: Vec<(&str, String)> = vec![
            ("DATABASE_URL", crate::db::redact_url(&self.database_url)),
            ("LETHE_JOBS_DIR", self.jobs_dir.display().to_string()),
            ("LETHE_OBJECT_STORE", store),
        ];
        if self.object_root.is_none() {
            rows.extend([
                (
                    "AWS_ENDPOINT_URL",
                    s3.endpoint.clone().unwrap_or_else(|| "(AWS)".into()),
                ),
                ("AWS_REGION", s3.region.clone()),
                ("LETHE_S3_PATH_STYLE", s3.path_style.to_string()),
                ("LETHE_S3_ATTEMPTS", s3.max_attempts.to_string()),
                (
                    "LETHE_S3_TIMEOUT_SECONDS",
                    s3.attempt_timeout.as_secs().to_string(),
                ),
            ]);
            for name in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"] {
                let shown = match var(name) {
                    Some(_) if name == "AWS_PROFILE" => var(name).unwrap_or_default(),
                    Some(_) => "set (masked)".into(),
                    None => "not set (the rest of the AWS chain applies)".into(),
                };
                rows.push((name, shown));
            }
        }
        rows.extend([
            ("LETHE_BATCH_SUBJECTS", self.batch_subjects.to_string()),
            (
                "LETHE_BATCH_CONCURRENCY",
                self.batch_concurrency.to_string(),
            ),
            (
                "LETHE_DELETE_CONCURRENCY",
                self.delete_concurrency.to_string(),
            ),
            ("LETHE_DELETE_BATCH", self.delete_batch.to_string()),
            ("LETHE_LIST_CONCURRENCY", self.list_concurrency.to_string()),
            ("LETHE_LIST_RANGES", self.list_ranges.to_string()),
            ("LETHE_KEY_RETRIES", self.key_retries.to_string()),
            ("LETHE_LEASE_SECONDS", self.lease_seconds.to_string()),
            (
                "LETHE_MAX_OBJECTS_PER_SUBJECT",
                self.max_objects_per_subject.to_string(),
            ),
            ("LETHE_DB_CONNECTIONS", self.db_connections.to_string()),
            ("LETHE_RUN_BUDGET_SECONDS", secs(self.run_budget)),
            (
                "LETHE_MAX_SUBJECTS_PER_RUN",
                self.max_subjects_per_run
                    .map_or_else(|| "0 (none)".into(), |n| n.to_string()),
            ),
            (
                "LETHE_LOCK_TIMEOUT_SECONDS",
                self.lock_timeout.as_secs().to_string(),
            ),
            (
                "LETHE_SHUTDOWN_SECONDS",
                self.shutdown_grace.as_secs().to_string(),
            ),
            (
                "LETHE_LIVENESS_SECONDS",
                self.liveness.as_secs().to_string(),
            ),
            ("LETHE_CLOCK_MAX_GAP_SECONDS", secs(self.clock_max_gap)),
            (
                "LETHE_AUDIT_ANCHOR",
                self.audit_anchor.clone().unwrap_or_else(none),
            ),
            (
                "LETHE_ANCHOR_RETENTION_DAYS",
                self.anchor_retention_days.to_string(),
            ),
            (
                "LETHE_LISTEN",
                self.listen.map_or_else(none, |a| a.to_string()),
            ),
            ("LETHE_KEEP_GOING", self.keep_going.to_string()),
            ("LETHE_ACTOR", self.actor.clone()),
            (
                "LETHE_LOG",
                var("LETHE_LOG").unwrap_or_else(|| DEFAULT_LOG.into()),
            ),
            (
                "LETHE_LOG_FORMAT",
                var("LETHE_LOG_FORMAT").unwrap_or_else(|| "json for the daemon, else text".into()),
            ),
        ]);
        rows.into_iter()
            .map(|(name, value)| {
                let defaulted = (name.starts_with("LETHE_") || name == "AWS_REGION")
                    && var(name).is_none()
                    && !(name == "AWS_REGION" && var("AWS_DEFAULT_REGION").is_some());
                let from = if defaulted { "  (default)" } else { "" };
                format!("{name}={value}{from}")
            })
            .collect()
    }
}

/// Whether `LETHE_ACTOR` names who runs lethe (an empty value does not).
pub fn actor_given() -> bool {
    var("LETHE_ACTOR").is_some()
}

/// The log filter when `LETHE_LOG` is unset.
pub const DEFAULT_LOG: &str = "lethe=info,warn,aws_config=error";

/// Whether `LETHE_CLOCK_MAX_GAP_SECONDS` was set (rather than left at its default).
pub fn clock_max_gap_given() -> bool {
    var("LETHE_CLOCK_MAX_GAP_SECONDS").is_some()
}

/// Whether `LETHE_DB_CONNECTIONS` was set (rather than left at its default).
pub fn db_connections_given() -> bool {
    var("LETHE_DB_CONNECTIONS").is_some()
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn number<T: std::str::FromStr + PartialOrd + fmt::Display + Copy>(
    name: &str,
    default: T,
    min: T,
    max: T,
) -> Result<T> {
    let Some(raw) = var(name) else {
        return Ok(default);
    };
    match raw.trim().parse::<T>() {
        Ok(v) if v >= min && v <= max => Ok(v),
        _ => bail!("{name}={raw:?} is not a whole number from {min} to {max}"),
    }
}

/// `LETHE_OBJECT_STORE`: `s3` (the default) or a local root as `file:///ROOT` or `/ROOT`.
fn object_root() -> Result<Option<PathBuf>> {
    let Some(raw) = var("LETHE_OBJECT_STORE") else {
        return Ok(None);
    };
    let raw = raw.trim();
    if raw == "s3" {
        return Ok(None);
    }
    let path = raw.strip_prefix("file://").unwrap_or(raw);
    if !path.starts_with('/') {
        bail!("LETHE_OBJECT_STORE={raw:?} must be `s3` or a local root as file:///absolute/path");
    }
    Ok(Some(PathBuf::from(path)))
}

impl Settings {
    pub fn from_env() -> Result<Self> {
        Self::from_env_with(None)
    }

    /// As `from_env`, with the database URL given rather than read (tests, the demo).
    pub fn from_env_with(database_url: Option<String>) -> Result<Self> {
        let Some(database_url) = database_url.or_else(|| var("DATABASE_URL")) else {
            bail!(
                "DATABASE_URL is not set: point it at the platform's PostgreSQL, e.g. postgres://user@host:5432/db"
            );
        };
        let endpoint = var("AWS_ENDPOINT_URL_S3").or_else(|| var("AWS_ENDPOINT_URL"));
        let path_style = match var("LETHE_S3_PATH_STYLE").as_deref() {
            None => endpoint.is_some(),
            Some("true" | "1") => true,
            Some("false" | "0") => false,
            Some(other) => bail!("LETHE_S3_PATH_STYLE={other:?} must be true or false"),
        };
        let settings = Settings {
            database_url,
            jobs_dir: var("LETHE_JOBS_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("jobs")),
            s3: S3Settings {
                endpoint,
                region: var("AWS_REGION")
                    .or_else(|| var("AWS_DEFAULT_REGION"))
                    .unwrap_or_else(|| "us-east-1".into()),
                path_style,
                max_attempts: number("LETHE_S3_ATTEMPTS", 5, 1, 20)?,
                attempt_timeout: Duration::from_secs(number(
                    "LETHE_S3_TIMEOUT_SECONDS",
                    30,
                    1,
                    600,
                )?),
            },
            object_root: object_root()?,
            batch_subjects: number("LETHE_BATCH_SUBJECTS", 2000, 1, 10_000)?,
            batch_concurrency: number("LETHE_BATCH_CONCURRENCY", 2, 1, 16)?,
            delete_concurrency: number("LETHE_DELETE_CONCURRENCY", 160, 1, 256)?,
            delete_batch: number("LETHE_DELETE_BATCH", 100, 1, crate::storage::MAX_BATCH)?,
            list_concurrency: number("LETHE_LIST_CONCURRENCY", 32, 1, 512)?,
            list_ranges: number("LETHE_LIST_RANGES", 4, 1, 512)?,
            key_retries: number("LETHE_KEY_RETRIES", 5, 1, 50)?,
            lease_seconds: number("LETHE_LEASE_SECONDS", 900, 10, 86_400)?,
            max_objects_per_subject: number(
                "LETHE_MAX_OBJECTS_PER_SUBJECT",
                1_000_000u64,
                1,
                u64::MAX,
            )?,
            db_connections: number("LETHE_DB_CONNECTIONS", 8, 2, 200)?,
            run_budget: Some(number("LETHE_RUN_BUDGET_SECONDS", 0u64, 0, 604_800)?)
                .filter(|s| *s > 0)
                .map(Duration::from_secs),
            max_subjects_per_run: Some(number("LETHE_MAX_SUBJECTS_PER_RUN", 0u64, 0, u64::MAX)?)
                .filter(|n| *n > 0),
            clock_max_gap: Some(number(
                "LETHE_CLOCK_MAX_GAP_SECONDS",
                1_209_600u64,
                0,
                u64::MAX,
            )?)
            .filter(|s| *s > 0)
            .map(Duration::from_secs),
            shutdown_grace: Duration::from_secs(number("LETHE_SHUTDOWN_SECONDS", 30, 1, 3_600)?),
            liveness: Duration::from_secs(number("LETHE_LIVENESS_SECONDS", 60, 10, 3_600)?),
            lock_timeout: Duration::from_secs(number("LETHE_LOCK_TIMEOUT_SECONDS", 10, 1, 3_600)?),
            audit_anchor: var("LETHE_AUDIT_ANCHOR"),
            anchor_retention_days: number("LETHE_ANCHOR_RETENTION_DAYS", 400, 1, 36_500)?,
            actor: var("LETHE_ACTOR")
                .or_else(|| var("USER"))
                .or_else(|| var("LOGNAME"))
                .unwrap_or_else(|| "unknown".into()),
            keep_going: match var("LETHE_KEEP_GOING").as_deref() {
                None | Some("false" | "0") => false,
                Some("true" | "1") => true,
                Some(other) => bail!("LETHE_KEEP_GOING={other:?} must be true or false"),
            },
            listen: match var("LETHE_LISTEN") {
                None => None,
                Some(a) => Some(a.trim().parse().map_err(|_| {
                    anyhow!("LETHE_LISTEN={a:?} is not an address like 127.0.0.1:9187")
                })?),
            },
        };
        settings.check_lease()?;
        Ok(settings)
    }

    /// The lease is confirmed before each delete request is sent, so it must outlast the
    /// longest one request can take (every SDK attempt timing out, with the SDK's backoff of
    /// up to 20 s between attempts), twice over: otherwise a request still in flight could
    /// land after another run took its subjects over.
    fn check_lease(&self) -> Result<()> {
        if self.object_root.is_some() {
            return Ok(());
        }
        let s = &self.s3;
        let worst = u64::from(s.max_attempts) * s.attempt_timeout.as_secs()
            + u64::from(s.max_attempts - 1) * SDK_MAX_BACKOFF_SECS;
        if (self.lease_seconds as u64) < 2 * worst {
            bail!(
                "LETHE_LEASE_SECONDS={} is shorter than twice the longest one delete request can \
                 take ({worst} s: LETHE_S3_ATTEMPTS={} x LETHE_S3_TIMEOUT_SECONDS={} plus up to \
                 {SDK_MAX_BACKOFF_SECS} s between attempts), so a lease could run out while a \
                 delete is in flight: raise LETHE_LEASE_SECONDS to at least {} or lower the other two",
                self.lease_seconds,
                s.max_attempts,
                s.attempt_timeout.as_secs(),
                2 * worst
            );
        }
        Ok(())
    }
}

/// The AWS SDK's standard retry strategy waits at most this long between attempts.
const SDK_MAX_BACKOFF_SECS: u64 = 20;

pub use crate::domain::{ConfigError, config_error};
