//! The fault suites' checker. It shares no code with lethe: each deleted run's expected fate is
//! computed here from the seeded world (the spec's seven-day grace, the holds the test placed),
//! and the outcome is read straight from PostgreSQL (with `sqlx`) and from the S3 server (with
//! its own `aws-sdk-s3` client). It asserts the six invariants of docs/safety.md:
//!
//! - after any run, finished or cut short ([`Checker::after_run`]): nothing held or in grace
//!   touched (1); a subject's rows are all there or all gone, and gone only with every version,
//!   marker and upload gone before them; one `purged` entry per purged subject (3); a committed
//!   intent for each (4); an unbroken hash chain and `lethe audit verify` (5); and a run that
//!   exits 0 leaves nothing eligible behind (6);
//! - after a clean run ([`Checker::converged`]): all of that, and every eligible subject purged
//!   before its deadline (2) with each held one's exception naming its hold (4).
//!
//! A violation message names the subject and what was found; the callers add the seed and the
//! fault schedule.

use crate::helpers::World;
use aws_sdk_s3::Client;
use std::collections::{BTreeMap, HashMap};

const DAY_MS: i64 = 86_400_000;
/// The shipped `deleted-runs` spec: grace 7 days, deadline 30 days after `deleted_time`.
const GRACE_MS: i64 = 7 * DAY_MS;
const DEADLINE_MS: i64 = 30 * DAY_MS;
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fate {
    Purge,
    InGrace,
    Held(i64),
}

struct Expect {
    fate: Fate,
    deleted_ms: i64,
    rows: i64,
    versions: usize,
}

/// What the store holds under one run's prefix.
#[derive(Default, Debug)]
struct Left {
    versions: usize,
    markers: usize,
    uploads: usize,
}

impl Left {
    fn any(&self) -> bool {
        self.versions + self.markers + self.uploads > 0
    }
}

pub struct Checker {
    subjects: BTreeMap<i64, Expect>,
    s3: Client,
    bucket: String,
}

pub struct Findings {
    pub violations: Vec<String>,
    /// Subjects to purge that are purged (rows and objects gone).
    pub purged: usize,
    /// Subjects to purge.
    pub expected: usize,
}

impl Findings {
    /// Panics with every violation and the seed to replay.
    pub fn assert_clean(&self, seed: u64) {
        assert!(
            self.violations.is_empty(),
            "seed {seed} (replay: LETHE_TEST_SEED={seed}): {} violations: {}",
            self.violations.len(),
            self.violations.join("; ")
        );
    }

    pub fn any(&self, needle: &str) -> bool {
        self.violations.iter().any(|v| v.contains(needle))
    }
}

impl Checker {
    /// Reads the seeded world before any run: every deleted run with its rows, its versions
    /// and its deletion time. `held` maps run ids to the hold the test placed on them (by
    /// subject or by account).
    pub async fn new(w: &World, held: &HashMap<i64, i64>) -> Checker {
        let now_ms: i64 = w
            .count("SELECT (extract(epoch from now()) * 1000)::bigint")
            .await;
        let runs: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT id, deleted_time FROM runs WHERE lifecycle_stage = 'deleted' ORDER BY id",
        )
        .fetch_all(&w.pool)
        .await
        .unwrap();
        let c = Checker {
            subjects: BTreeMap::new(),
            s3: client().await,
            bucket: w.bucket.clone(),
        };
        let rows = rows_by_run(w).await;
        let left = c.left_by_run().await;
        let subjects = runs
            .into_iter()
            .map(|(id, deleted_ms)| {
                let fate = match held.get(&id) {
                    Some(&h) => Fate::Held(h),
                    None if now_ms - deleted_ms < GRACE_MS => Fate::InGrace,
                    None => Fate::Purge,
                };
                let l = left.get(&id);
                let versions = l.map_or(0, |l| l.versions);
                assert!(l.is_none_or(|l| l.markers == 0), "seeded with markers");
                let rows = rows.get(&id).copied().unwrap_or(0);
                (
                    id,
                    Expect {
                        fate,
                        deleted_ms,
                        rows,
                        versions,
                    },
                )
            })
            .collect();
        Checker { subjects, ..c }
    }

    /// A hold the test placed on `account` after seeding: its runs that were to be purged are
    /// now held by `hold`.
    pub async fn hold_account_runs(&mut self, w: &World, account: i64, hold: i64) {
        let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM runs WHERE account_id = $1")
            .bind(account)
            .fetch_all(&w.pool)
            .await
            .unwrap();
        for id in ids {
            if let Some(e) = self.subjects.get_mut(&id).filter(|e| e.fate == Fate::Purge) {
                e.fate = Fate::Held(hold);
            }
        }
    }

    /// How many subjects the seeded world gives each fate: (purge, in grace, held).
    pub fn counts(&self) -> (usize, usize, usize) {
        let n = |f: fn(&Fate) -> bool| self.subjects.values().filter(|e| f(&e.fate)).count();
        (
            n(|f| *f == Fate::Purge),
            n(|f| *f == Fate::InGrace),
            n(|f| matches!(f, Fate::Held(_))),
        )
    }

    /// The invariants that hold after any run, whether it finished or was cut short; `exit` is
    /// the run's exit code (`None` when it was killed).
    pub async fn after_run(&self, w: &World, exit: Option<i32>) -> Findings {
        let rows = rows_by_run(w).await;
        let left = self.left_by_run().await;
        let none = Left::default();
        let purged_entries = entries_by_subject(w, "purged").await;
        let intents = intents(w).await;
        let mut v = Vec::new();
        let mut purged = 0;
        for (id, e) in &self.subjects {
            let r = rows.get(id).copied().unwrap_or(0);
            let l = left.get(id).unwrap_or(&none);
            let entries = purged_entries.get(id).map_or(0, Vec::len);
            match e.fate {
                Fate::InGrace | Fate::Held(_) => {
                    if r != e.rows || l.versions != e.versions || l.markers > 0 {
                        v.push(format!(
                            "run {id} ({:?}) was touched: {r} of {} rows, {} of {} versions, {} markers",
                            e.fate, e.rows, l.versions, e.versions, l.markers
                        ));
                    }
                    if entries > 0 {
                        v.push(format!("run {id} ({:?}) has a `purged` entry", e.fate));
                    }
                    continue;
                }
                Fate::Purge => {}
            }
            if r == 0 {
                purged += usize::from(!l.any());
                if l.any() {
                    v.push(format!(
                        "run {id} has no rows but kept objects: {} versions, {} markers, {} uploads",
                        l.versions, l.markers, l.uploads
                    ));
                }
                if entries != 1 {
                    v.push(format!(
                        "run {id} was purged with {entries} `purged` entries, not one"
                    ));
                }
                if !intents.contains(&id.to_string()) {
                    v.push(format!(
                        "run {id} was purged without a committed intent (work item with its manifest)"
                    ));
                }
                if let Some(at) = purged_entries.get(id).and_then(|a| a.first())
                    && *at > e.deleted_ms + DEADLINE_MS
                {
                    v.push(format!("run {id} was purged after its deadline"));
                }
            } else if r != e.rows {
                v.push(format!(
                    "run {id} was half-purged: {r} of {} rows left",
                    e.rows
                ));
            } else if entries > 0 {
                v.push(format!("run {id} has a `purged` entry but kept its rows"));
            }
        }
        let expected = self.counts().0;
        if exit == Some(0) && purged < expected {
            v.push(format!(
                "the run exited 0 but left {} of {expected} eligible subjects unpurged",
                expected - purged
            ));
        }
        v.extend(chain_breaks(w).await);
        let (code, out, err) = w.cli(&["audit", "verify"]);
        if code != 0 {
            v.push(format!("`lethe audit verify` failed: {out}{err}"));
        }
        Findings {
            violations: v,
            purged,
            expected,
        }
    }

    /// After a clean run that exited `exit`: every invariant, including that every eligible
    /// subject is purged and every held one's exception names its hold.
    pub async fn converged(&self, w: &World, exit: i32) -> Findings {
        let mut f = self.after_run(w, Some(exit)).await;
        if exit != 0 {
            f.violations
                .push(format!("the clean run exited {exit}, not 0"));
        }
        if f.purged < f.expected {
            f.violations.push(format!(
                "not converged: {} of {} eligible subjects are not purged",
                f.expected - f.purged,
                f.expected
            ));
        }
        let held = held_entries(w).await;
        for (id, e) in &self.subjects {
            if let Fate::Held(h) = e.fate
                && !held.get(&id.to_string()).is_some_and(|hs| hs.contains(&h))
            {
                f.violations
                    .push(format!("run {id} has no exception naming hold {h}"));
            }
        }
        f
    }

    /// Every version, delete marker and unfinished upload under `runs/`, by run id.
    async fn left_by_run(&self) -> HashMap<i64, Left> {
        let mut out: HashMap<i64, Left> = HashMap::new();
        let (mut key, mut version) = (None, None);
        loop {
            let page = self
                .s3
                .list_object_versions()
                .bucket(&self.bucket)
                .prefix("runs/")
                .set_key_marker(key)
                .set_version_id_marker(version)
                .send()
                .await
                .expect("listing versions");
            for o in page.versions() {
                out.entry(run_of(o.key())).or_default().versions += 1;
            }
            for m in page.delete_markers() {
                out.entry(run_of(m.key())).or_default().markers += 1;
            }
            if !page.is_truncated().unwrap_or(false) {
                break;
            }
            key = page.next_key_marker().map(str::to_string);
            version = page.next_version_id_marker().map(str::to_string);
        }
        let (mut key, mut upload) = (None, None);
        loop {
            let page = self
                .s3
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix("runs/")
                .set_key_marker(key)
                .set_upload_id_marker(upload)
                .send()
                .await
                .expect("listing uploads");
            for u in page.uploads() {
                out.entry(run_of(u.key())).or_default().uploads += 1;
            }
            if !page.is_truncated().unwrap_or(false) {
                break;
            }
            key = page.next_key_marker().map(str::to_string);
            upload = page.next_upload_id_marker().map(str::to_string);
        }
        out
    }
}

pub async fn client() -> Client {
    let endpoint =
        std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "http://127.0.0.1:8333".into());
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(lethe::storage::s3::https_client())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .load()
        .await;
    Client::from_conf(
        aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(true)
            .build(),
    )
}

/// `runs/{id}/...` -> id (0 for anything else, which no subject owns).
fn run_of(key: Option<&str>) -> i64 {
    key.and_then(|k| k.strip_prefix("runs/"))
        .and_then(|k| k.split('/').next())
        .and_then(|id| id.parse().ok())
        .unwrap_or(0)
}

/// Each run's rows in every table that hangs off it.
async fn rows_by_run(w: &World) -> HashMap<i64, i64> {
    sqlx::query_as::<_, (i64, i64)>(
        "SELECT id, count(*) FROM (
             SELECT id FROM runs
             UNION ALL SELECT run_id FROM metrics
             UNION ALL SELECT run_id FROM params
             UNION ALL SELECT destination_id::bigint FROM links WHERE destination_type = 'RUN'
         ) r GROUP BY id",
    )
    .fetch_all(&w.pool)
    .await
    .unwrap()
    .into_iter()
    .collect()
}

/// The `deleted-runs` entries of `event` per run id, as epoch milliseconds.
async fn entries_by_subject(w: &World, event: &str) -> HashMap<i64, Vec<i64>> {
    let mut out: HashMap<i64, Vec<i64>> = HashMap::new();
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT subject_key, (extract(epoch from at) * 1000)::bigint FROM lethe.audit_log
         WHERE event = $1 AND job = 'deleted-runs' ORDER BY seq",
    )
    .bind(event)
    .fetch_all(&w.pool)
    .await
    .unwrap();
    for (k, at) in rows {
        out.entry(k.parse().unwrap_or(0)).or_default().push(at);
    }
    out
}

/// The hold ids named by each subject's `held` entries.
async fn held_entries(w: &World) -> HashMap<String, Vec<i64>> {
    let rows: Vec<(String, Option<i64>)> = sqlx::query_as(
        "SELECT subject_key, hold_id FROM lethe.audit_log WHERE event = 'held' AND job = 'deleted-runs'",
    )
    .fetch_all(&w.pool)
    .await
    .unwrap();
    let mut out: HashMap<String, Vec<i64>> = HashMap::new();
    for (k, h) in rows {
        out.entry(k).or_default().extend(h);
    }
    out
}

/// Subjects with a committed intent: a work item that recorded the manifest's locations.
async fn intents(w: &World) -> std::collections::HashSet<String> {
    sqlx::query_scalar(
        "SELECT DISTINCT subject_key FROM lethe.work_items
         WHERE job = 'deleted-runs' AND manifest ? 'locations'",
    )
    .fetch_all(&w.pool)
    .await
    .unwrap()
    .into_iter()
    .collect()
}

/// The chain's structure, checked here without lethe's code: sequence numbers 1, 2, 3, ...
/// and each entry's `prev_hash` equal to the hash before it. (`lethe audit verify` recomputes
/// the hashes themselves.)
async fn chain_breaks(w: &World) -> Vec<String> {
    let rows: Vec<(i64, String, String)> =
        sqlx::query_as("SELECT seq, prev_hash, hash FROM lethe.audit_log ORDER BY seq")
            .fetch_all(&w.pool)
            .await
            .unwrap();
    let mut prev = GENESIS.to_string();
    for (i, (seq, prev_hash, hash)) in rows.into_iter().enumerate() {
        if seq != i as i64 + 1 {
            return vec![format!("audit chain: entry {} has seq {seq}", i + 1)];
        }
        if prev_hash != prev {
            return vec![format!(
                "audit chain: seq {seq} does not link to seq {}",
                seq - 1
            )];
        }
        prev = hash;
    }
    Vec::new()
}
