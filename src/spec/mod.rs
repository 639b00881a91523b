//! Job specs: the declarative `jobs/*.toml` files. Parsing is strict (unknown keys rejected) and
//! separate from validation: `load_dir` parses and checks each file on its own (`compile`), and
//! `validate` checks the result against the live database catalog.
//!
//! The field reference with defaults and examples is `jobs/README.md`; keep the two in step.

mod compile;
pub mod duration;
pub mod filter;
pub mod ident;
mod template;
pub mod validate;

#[cfg(test)]
mod props;

pub use compile::{
    ClockKind, Job, Link, Node, ObjectSource, Protect, Rejected, Windows, load_dir, load_dir_each,
    load_file, parse_job,
};
pub use duration::Window;
pub use filter::Filter;
pub use ident::{Columns, Ident, TableName};
pub use template::{Part as TemplatePart, Template};
pub use validate::{Catalog, validate};

use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use toml::Spanned;

/// One job spec file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// The job's name, used on the command line, in holds and in the audit log.
    /// Default: the file name without `.toml`.
    pub name: Option<Spanned<String>>,
    /// Free text shown by `lethe check` and in reports. Default: empty.
    #[serde(default)]
    pub description: String,
    /// When the daemon fires the job: cron, UTC, 5 fields (minute first) or 6 (seconds first).
    pub schedule: Spanned<String>,
    /// What one subject is and when it became deletable.
    pub subject: SubjectSpec,
    /// The restore window and the promised deadline.
    pub window: Spanned<WindowSpec>,
    /// Tables whose rows belong to a subject, deleted children first, the subject row last.
    #[serde(default)]
    pub rows: Vec<Spanned<RowsSpec>>,
    /// Where a subject's objects live.
    #[serde(default)]
    pub objects: Vec<Spanned<ObjectsSpec>>,
    /// Columns of other tables whose URIs point into objects nobody may purge while the row
    /// lives (MLflow's `model_versions.storage_location`): a location they point at or into
    /// fails its subject, in every loaded job.
    #[serde(default)]
    pub protects: Vec<Spanned<ProtectsSpec>>,
    /// What data-subject requests may do through this job: `[requests]`. Default: an erasure
    /// request cannot reach it; an export writes every column.
    pub requests: Option<Spanned<RequestsSpec>>,
}

/// How data-subject requests reach a job's subjects.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RequestsSpec {
    /// An erasure request (`lethe request erase`) makes the subjects it names eligible now,
    /// whatever their window, clock and filter: every subject its account owns (`owner`), or
    /// the one subject it names. At most one job per subject table. Default: false.
    #[serde(default)]
    pub erase: bool,
    /// Columns an export never writes, as `table.column` (`api_keys.key_hash`): secrets and
    /// internal values. The table must be one of the job's. Default: none.
    #[serde(default)]
    pub export_leave_out: Vec<String>,
}

/// A column holding URIs that claim the objects they point at or into.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtectsSpec {
    /// The table (`model_versions`, `schema.table`).
    pub table: TableName,
    /// Its column holding `s3://bucket/path` (or `file://` with a local store) URIs.
    pub uri_column: Ident,
}

/// The subject table and its clock.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectSpec {
    /// The table whose rows are the subjects (`runs`, `accounts`, `schema.table`).
    pub table: Spanned<TableName>,
    /// The column that identifies one subject. Default: `id`.
    #[serde(default = "default_id")]
    pub key: Spanned<Ident>,
    /// The column naming the account a subject belongs to, so account holds cover it.
    /// Default: none (only subject and job holds apply). For an account subject use its key.
    pub owner: Option<Spanned<Ident>>,
    /// The column that says when the subject became deletable; NULL means "not deleted".
    pub clock: Spanned<Ident>,
    /// The clock column's kind: `timestamptz`, `epoch_seconds` or `epoch_milliseconds`.
    pub clock_kind: Spanned<ClockKind>,
    /// Narrows the subjects: e.g. `lifecycle_stage = 'deleted'`. Default: every row with a clock.
    pub filter: Option<Spanned<FilterText>>,
}

/// Grace and deadline, optionally varying by the value of a subject column.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    /// The restore window: a subject is eligible at clock + grace.
    pub grace: Window,
    /// The promise: a subject must be gone by clock + deadline. At least `grace`.
    pub deadline: Window,
    /// A column of the subject table (or, with `vary_on`, of a related row) whose value picks
    /// an entry of `overrides`.
    pub vary_by: Option<Ident>,
    /// The related row `vary_by` is read from, e.g. the subject's account: `[window.vary_on]`.
    pub vary_on: Option<RelatedRow>,
    /// Per-value windows, e.g. `[window.overrides.enterprise]`; other values use the defaults.
    #[serde(default)]
    pub overrides: BTreeMap<String, WindowPair>,
    /// Retention read from a related row, for age-based retention of live records ("traces
    /// older than their project's retention"): `[window.from_row]`. `grace` and `deadline` are
    /// then the defaults for subjects whose value is NULL or that have no related row.
    pub from_row: Option<FromRowSpec>,
}

/// Where a per-subject retention is read: `table.column` of the row whose `key` equals the
/// subject's `link` column, counted in `unit`s.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct FromRowSpec {
    /// The related table, e.g. `projects`.
    pub table: TableName,
    /// Its key column. Default: `id`.
    #[serde(default = "default_id_plain")]
    pub key: Ident,
    /// The subject column that points at the related row, e.g. `project_id`.
    pub link: Ident,
    /// The related column holding the retention, e.g. `retention_days`. A whole number; NULL
    /// uses the defaults, and zero or less means "keep forever" (never eligible).
    pub column: Ident,
    /// The column's unit: `days`, `hours` or `seconds`.
    pub unit: RetentionUnit,
    /// How long after the retention ends the subject must be gone (the deadline's slack).
    pub deadline_after: Window,
}

/// A row related to the subject: the row of `table` whose `key` equals the subject's `link`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RelatedRow {
    /// The related table, e.g. `accounts`.
    pub table: TableName,
    /// Its key column. Default: `id`.
    #[serde(default = "default_id_plain")]
    pub key: Ident,
    /// The subject column that points at the related row, e.g. `account_id`.
    pub link: Ident,
}

/// The unit of a retention column.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RetentionUnit {
    Days,
    Hours,
    Seconds,
}

impl RetentionUnit {
    pub fn seconds(self) -> i64 {
        match self {
            RetentionUnit::Days => 86_400,
            RetentionUnit::Hours => 3_600,
            RetentionUnit::Seconds => 1,
        }
    }
}

/// One override's windows.
#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub struct WindowPair {
    pub grace: Window,
    pub deadline: Window,
}

/// A table whose rows belong to a subject through a link column.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowsSpec {
    /// How other entries refer to this one as a `parent`. Default: the table name.
    pub name: Option<Ident>,
    /// The table (`metrics`, `schema.table`).
    pub table: TableName,
    /// This table's column that points at the parent, or its columns (`["trace_id",
    /// "span_id"]`) for a foreign key over several.
    pub column: Columns,
    /// The entry this one hangs under: another entry's name, or the subject table. Default: subject.
    pub parent: Option<Ident>,
    /// The parent's column that `column` matches, or its columns, in the same order. Default:
    /// for one column, the subject key for the subject and `id` for another entry; for
    /// several, the same names as `column`.
    pub parent_column: Option<Columns>,
    /// Narrows the link, for association tables: `destination_type = 'RUN'`.
    pub filter: Option<FilterText>,
}

/// A place objects live: a bucket and key-prefix template, or a column holding a URI.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectsSpec {
    /// S3 bucket, with `prefix`.
    pub bucket: Option<String>,
    /// Key prefix template ending in `/`: `runs/{key}/`, `{owner}/snapshots/{id}/`.
    pub prefix: Option<String>,
    /// A column holding `s3://bucket/path` (a directory, or a single object), instead of
    /// bucket and prefix.
    pub uri_column: Option<Ident>,
    /// Where the URIs may point: `s3://bucket/` or `s3://bucket/prefix/`. Required with
    /// `uri_column` (docs/decisions/0006). A URI outside it, or naming it whole, fails its
    /// subject.
    pub uri_within: Option<String>,
    /// A column of the `from` table (or `key`, the subject's key) whose value each URI must hold
    /// as one whole path segment, as MLflow's `<location>/<run_uuid>/artifacts` holds the run's
    /// id: a URI without it fails its subject. Default: unset (no shape required).
    pub uri_segment: Option<Ident>,
    /// What a URI names: `directory` (everything under `path/`) or `object` (the one key
    /// `path`). Unset, a URI without a trailing `/` is taken as both.
    pub uri_kind: Option<UriKind>,
    /// Whose rows fill the template or hold the URI: the subject (default) or a `rows` entry.
    pub from: Option<Ident>,
}

/// What a URI column's value names.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum UriKind {
    Directory,
    Object,
}

/// A filter as written, parsed on load so a bad one is reported at its line.
#[derive(Debug, Clone)]
pub struct FilterText(pub Filter);

impl<'de> Deserialize<'de> for FilterText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Filter::parse(&s)
            .map(FilterText)
            .map_err(|e| serde::de::Error::custom(format!("filter: {e}")))
    }
}

fn default_id_plain() -> Ident {
    Ident::new("id").expect("`id` is a valid identifier")
}

fn default_id() -> Spanned<Ident> {
    Spanned::new(0..0, Ident::new("id").expect("`id` is a valid identifier"))
}
