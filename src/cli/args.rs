//! The command line's shape: every command, argument and help text (clap).

use clap::{Args, Parser, Subcommand};

/// What every command that touches the platform reads.
const ENV_COMMON: &str = "Environment:
  DATABASE_URL        the platform database (required): postgres://user@host:5432/db, or
                      sqlite:///path/to/platform.db (the file must exist)
  LETHE_JOBS_DIR      where the job specs are (default: jobs)
  LETHE_OBJECT_STORE  s3 (default), or file:///ROOT for objects in a local directory
  AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, AWS_REGION, and credentials by the AWS SDK's chain
  LETHE_LOG           log filter on stderr (default: lethe=info,warn,aws_config=error)
  LETHE_KEEP_GOING    true: as --keep-going
  LETHE_ACTOR         who runs lethe, for the audit log (default: the OS user; --by overrides)
Every setting, with defaults and ranges: docs/configuration.md.";

/// What runs (one-shot or scheduled) read besides.
const ENV_RUN: &str = "Environment:
  DATABASE_URL, LETHE_JOBS_DIR, LETHE_OBJECT_STORE, AWS_* as for every command (see lethe --help)
  LETHE_MAX_SUBJECTS_PER_RUN     blast-radius cap (--limit overrides it)
  LETHE_RUN_BUDGET_SECONDS       stop claiming after this long
  LETHE_MAX_OBJECTS_PER_SUBJECT  object versions one subject may have (default 1,000,000)
  LETHE_LEASE_SECONDS            lease on claimed subjects (default 900)
  LETHE_CLOCK_MAX_GAP_SECONDS    the clock guard (default 14 days)
  LETHE_BATCH_SUBJECTS, LETHE_BATCH_CONCURRENCY, LETHE_DELETE_BATCH, LETHE_DELETE_CONCURRENCY,
  LETHE_LIST_CONCURRENCY, LETHE_LIST_RANGES, LETHE_KEY_RETRIES, LETHE_S3_ATTEMPTS,
  LETHE_S3_TIMEOUT_SECONDS, LETHE_LOCK_TIMEOUT_SECONDS, LETHE_DB_CONNECTIONS  tuning
Every setting, with defaults and ranges: docs/configuration.md.";

/// What the daemon reads besides a run's settings.
const ENV_DAEMON: &str = "Environment: DATABASE_URL, LETHE_JOBS_DIR, LETHE_OBJECT_STORE, AWS_*
and everything else `lethe run --help` lists, and
  LETHE_LISTEN            address of /metrics, /healthz and /readyz (--listen overrides it)
  LETHE_SHUTDOWN_SECONDS  grace for batches in flight after SIGTERM (default 30)
  LETHE_LIVENESS_SECONDS  /healthz fails when the scheduler has not ticked this long (default 60)
  LETHE_AUDIT_ANCHOR      where to anchor the audit log after every run (a file or s3://…)
  LETHE_LOG_FORMAT        json (default for the daemon) or text
Every setting, with defaults and ranges: docs/configuration.md.";

#[derive(Parser, Debug)]
#[command(
    name = "lethe",
    version,
    about = "Purges deleted subjects inside their policy windows, honours legal holds, and proves it.",
    after_help = ENV_COMMON
)]
pub(super) struct Cli {
    #[command(subcommand)]
    pub(super) command: Command,
    /// Leave out a job spec that does not parse or does not match the database (said on
    /// stderr, exit 1 at the end) and go on with the others. Default (and LETHE_KEEP_GOING
    /// unset): one bad spec stops every job with exit 2.
    #[arg(long, global = true)]
    pub(super) keep_going: bool,
}

#[derive(Subcommand, Debug)]
pub(super) enum Command {
    /// Install or upgrade lethe's own schema (`lethe.*`) in the platform database.
    #[command(after_help = ENV_COMMON)]
    Migrate {
        /// Undo every lethe migration instead (drops lethe's tables, the audit log included).
        #[arg(long, requires = "yes")]
        down: bool,
        /// Confirm --down.
        #[arg(long)]
        yes: bool,
        /// With a `sqlite:` DATABASE_URL naming a file that does not exist yet: create it.
        /// (Every other command refuses a missing SQLite file, so a typo in the path never
        /// becomes a new, empty database.)
        #[arg(long)]
        create: bool,
    },
    /// Validate every job spec against the live database and print the effective configuration.
    #[command(after_help = ENV_COMMON)]
    Check,
    /// Say what a run would do now, per job, and why. Deletes nothing.
    #[command(after_help = ENV_COMMON)]
    Plan {
        /// Only these jobs (repeatable). Default: all.
        #[arg(long = "job")]
        jobs: Vec<String>,
        /// `table` (counts per job) or `jsonl` (one line per subject).
        #[arg(long, default_value = "table", value_parser = ["table", "jsonl"])]
        format: String,
    },
    /// Purge what is eligible now: `--job NAME` (repeatable) or `--all`.
    #[command(after_help = ENV_RUN)]
    Run(RunArgs),
    /// Run every job on its schedule until SIGTERM or SIGINT (JSON logs on stderr).
    #[command(after_help = ENV_DAEMON)]
    Daemon {
        /// Serve /metrics, /healthz and /readyz here (default: LETHE_LISTEN; none if unset).
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
    },
    /// Place, release and list legal or compliance holds.
    #[command(subcommand, after_help = ENV_COMMON)]
    Hold(HoldCommand),
    /// Data-subject requests: erase an account (or one subject) now, export everything an
    /// account owns, list them with their due dates. `lethe report --request ID` proves each.
    #[command(subcommand, after_help = ENV_COMMON)]
    Request(RequestCommand),
    /// The audit log: verify its hash chain, anchor its head.
    #[command(subcommand, after_help = ENV_COMMON)]
    Audit(AuditCommand),
    /// The clock guard: confirm a clock jump after planned downtime.
    #[command(subcommand, after_help = ENV_COMMON)]
    Clock(ClockCommand),
    /// A tour with nothing installed: a SQLite platform database and a local object directory
    /// in a fresh directory, a seeded world, then plan, a hold, a purge, an audit check and the
    /// HTML report.
    Demo {
        /// Where to build the demo (replaced if it holds an earlier demo).
        #[arg(long, default_value = "lethe-demo")]
        dir: std::path::PathBuf,
    },
    /// The compliance report: one row per subject outcome (purged, held, failed) recorded in
    /// the period, with its deadline and whether it was met. Streams CSV or JSON Lines.
    #[command(after_help = ENV_COMMON)]
    Report(ReportArgs),
}

#[derive(Args, Debug)]
pub(super) struct RunArgs {
    /// Run these jobs (repeatable).
    #[arg(long = "job", conflicts_with = "all")]
    pub(super) jobs: Vec<String>,
    /// Run every job.
    #[arg(long)]
    pub(super) all: bool,
    /// Do every read (discovery, holds, manifests, listings) and delete nothing.
    #[arg(long)]
    pub(super) dry_run: bool,
    /// Purge at most N subjects in this invocation; exit 1 if more were eligible.
    /// Default: LETHE_MAX_SUBJECTS_PER_RUN, if set.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(super) limit: Option<u64>,
    /// When another lethe process is running a job, wait for it and then run the job, instead
    /// of skipping it with exit code 3.
    #[arg(long)]
    pub(super) wait: bool,
    /// Who runs it, recorded with the run and in each of its audit entries. Default:
    /// LETHE_ACTOR, else the OS user.
    #[arg(long, value_name = "NAME")]
    pub(super) by: Option<String>,
}

#[derive(Subcommand, Debug)]
pub(super) enum HoldCommand {
    /// Place a hold. Exactly one of --account, --subject, --job.
    Place {
        /// Everything this account owns, in every job.
        #[arg(long, group = "scope")]
        account: Option<String>,
        /// One subject: JOB:KEY.
        #[arg(long, group = "scope")]
        subject: Option<String>,
        /// Every subject of a job.
        #[arg(long, group = "scope")]
        job: Option<String>,
        /// Why: a case, a ticket (recorded in the audit log).
        #[arg(long)]
        reason: String,
        /// Who places it (recorded in the audit log). Default: LETHE_ACTOR, else the OS user.
        #[arg(long)]
        by: Option<String>,
        /// Place it even when it covers no subject now (it will cover subjects that appear
        /// later), or names a job no spec names (a job about to be deployed); without it, such
        /// a hold is refused as a likely typo.
        #[arg(long)]
        force: bool,
    },
    /// Release a hold by id.
    Release {
        id: i64,
        /// Who releases it (recorded in the audit log). Default: LETHE_ACTOR, else the OS user.
        #[arg(long)]
        by: Option<String>,
        #[arg(long)]
        reason: String,
    },
    /// Record a hold changed outside lethe (released, deleted, narrowed by plain SQL) as you
    /// found it, after finding out who changed it and why: runs refuse until then.
    Confirm {
        id: i64,
        /// Who confirms (recorded in the audit log). Default: LETHE_ACTOR, else the OS user.
        #[arg(long)]
        by: Option<String>,
        /// What you found (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// List active holds (`--all` includes released ones).
    List {
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand, Debug)]
pub(super) enum RequestCommand {
    /// Record an erasure request: every subject it covers, in every job whose spec says
    /// `[requests] erase = true`, becomes eligible now, whatever its window, clock and filter;
    /// the next run (or daemon tick) purges it first. Holds still win: a held subject stays and
    /// the request is recorded as partly fulfilled. Prints the request's id on stdout and what
    /// it covers on stderr. Exactly one of --account, --subject.
    Erase {
        /// Everything this account owns.
        #[arg(long, group = "scope")]
        account: Option<String>,
        /// One subject: JOB:KEY.
        #[arg(long, group = "scope")]
        subject: Option<String>,
        /// Why: the ticket or letter (recorded in the audit log).
        #[arg(long)]
        reason: String,
        /// Who records it (recorded in the audit log). Default: LETHE_ACTOR, else the OS user.
        #[arg(long)]
        by: Option<String>,
        /// When it must be done, from now: `30d` (the GDPR's month), `72h`.
        #[arg(long, default_value = "30d", value_name = "DURATION")]
        due: String,
        /// Say what it would cover, record nothing.
        #[arg(long)]
        dry_run: bool,
        /// Record it even when it covers nothing now.
        #[arg(long)]
        force: bool,
    },
    /// Export everything an account owns, now: every row each job's graph reaches, one JSON
    /// Lines file per table, and every object under its locations (keys kept, version ids
    /// recorded), with MANIFEST.json listing each file's sha256. Recorded in the audit log with
    /// the manifest's hash. Deletes nothing.
    Export {
        /// The account.
        #[arg(long)]
        account: String,
        /// A new (or empty) directory, or s3://BUCKET/PREFIX/.
        #[arg(long, value_name = "DIR|S3_URI")]
        out: String,
        /// Why: the ticket or letter (recorded in the audit log).
        #[arg(long)]
        reason: String,
        /// Who records it (recorded in the audit log). Default: LETHE_ACTOR, else the OS user.
        #[arg(long)]
        by: Option<String>,
        /// Export even when the account owns nothing now.
        #[arg(long)]
        force: bool,
    },
    /// Requests open, partly fulfilled under holds, or closed in the last 30 days, newest
    /// first, with their due dates (`--all`: every one).
    List {
        #[arg(long)]
        all: bool,
    },
}

#[derive(Args, Debug)]
pub(super) struct ReportArgs {
    /// The proof of one data-subject request: the request, its due date, a one-line verdict,
    /// then every outcome since it was placed for what it covers (CSV, JSON Lines or HTML).
    #[arg(long, value_name = "ID", conflicts_with_all = ["from", "to", "job", "account", "subject", "summary"])]
    pub(super) request: Option<i64>,
    /// Entries recorded at or after this date (2026-11-01, UTC) or time (RFC 3339).
    #[arg(long)]
    pub(super) from: Option<String>,
    /// Entries recorded up to this date (the whole day included) or before this time.
    #[arg(long)]
    pub(super) to: Option<String>,
    /// Only this job.
    #[arg(long)]
    pub(super) job: Option<String>,
    /// Only subjects this account owns (for a data-subject request).
    #[arg(long, conflicts_with = "subject")]
    pub(super) account: Option<String>,
    /// Only this subject: JOB:KEY.
    #[arg(long)]
    pub(super) subject: Option<String>,
    /// `csv`, `jsonl`, or `html` (one self-contained page: summary, chart, exceptions, and the
    /// full table with sorting and filtering).
    #[arg(long, default_value = "csv", value_parser = ["csv", "jsonl", "html"])]
    pub(super) format: String,
    /// The summary instead of the rows: outcomes per job, the share of deadlines met, what is
    /// overdue now (held subjects apart), holds active in the period, runs. Text, or one JSON
    /// object with --format jsonl. With --account or --subject, every part is about that
    /// account or subject alone.
    #[arg(long)]
    pub(super) summary: bool,
    /// Write here instead of stdout: a new file readable by its owner alone (0600), never
    /// through a symbolic link.
    #[arg(long, value_name = "FILE")]
    pub(super) out: Option<std::path::PathBuf>,
    /// Replace the --out file if it exists.
    #[arg(long, requires = "out")]
    pub(super) force: bool,
}

#[derive(Subcommand, Debug)]
pub(super) enum ClockCommand {
    /// Vouch for the database clock after the clock guard refused a run (exit 4): recorded in
    /// the audit log, after which runs go ahead.
    Confirm {
        /// Who confirms (recorded in the audit log). Default: LETHE_ACTOR, else the OS user.
        #[arg(long)]
        by: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub(super) enum AuditCommand {
    /// Recompute the hash chain and name the first bad entry. With --anchor, also check that
    /// every anchor recorded there is an entry of the chain with that hash.
    Verify {
        /// A file or s3://BUCKET/PREFIX written by `lethe audit anchor` (default:
        /// LETHE_AUDIT_ANCHOR, if set).
        #[arg(long, value_name = "TARGET")]
        anchor: Option<String>,
    },
    /// Record the chain head (sequence number and hash) outside the database.
    Anchor {
        /// A file (one JSON line per anchor) or s3://BUCKET/PREFIX (default: LETHE_AUDIT_ANCHOR).
        #[arg(long, value_name = "TARGET")]
        to: Option<String>,
    },
}
