//! Command line: parsing (the only module that imports clap), logging setup, and mapping each
//! outcome to an exit code. Exit codes, documented in the README:
//! 0 all done; 1 some subjects failed or were left undone; 2 usage or configuration error
//! (nothing was deleted); 3 another lethe process is running the job; 4 the clock guard refused
//! to run (nothing was deleted).

use crate::config::{ConfigError, Settings, config_error};
use crate::context::Context;
use crate::db::{self, holds};
use crate::pipeline::{self, JobReport, RunOptions, plan};
use crate::spec::Job;
use anyhow::{Context as _, Result, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use std::io::Write;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "lethe",
    version,
    about = "Purges deleted subjects inside their policy windows, honours legal holds, and proves it."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Install or upgrade lethe's own schema (`lethe.*`) in the platform database.
    Migrate {
        /// Undo every lethe migration instead (drops lethe's tables, the audit log included).
        #[arg(long, requires = "yes")]
        down: bool,
        /// Confirm --down.
        #[arg(long)]
        yes: bool,
    },
    /// Validate every job spec against the live database and print the effective configuration.
    Check,
    /// Say what a run would do now, per job, and why. Deletes nothing.
    Plan {
        /// Only these jobs (repeatable). Default: all.
        #[arg(long = "job")]
        jobs: Vec<String>,
        /// `table` (counts per job) or `jsonl` (one line per subject).
        #[arg(long, default_value = "table", value_parser = ["table", "jsonl"])]
        format: String,
    },
    /// Purge what is eligible now.
    Run(RunArgs),
    /// Run every job on its schedule until SIGTERM or SIGINT (JSON logs on stderr).
    Daemon {
        /// Serve /metrics, /healthz and /readyz here (default: LETHE_LISTEN; none if unset).
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
    },
    /// Place, release and list legal or compliance holds.
    #[command(subcommand)]
    Hold(HoldCommand),
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The clock guard.
    #[command(subcommand)]
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
    Report(ReportArgs),
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Run these jobs (repeatable).
    #[arg(long = "job", required_unless_present = "all", conflicts_with = "all")]
    jobs: Vec<String>,
    /// Run every job.
    #[arg(long)]
    all: bool,
    /// Do every read (discovery, holds, manifests, listings) and delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// Purge at most N subjects in this invocation; exit 1 if more were eligible.
    /// Default: LETHE_MAX_SUBJECTS_PER_RUN, if set.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    limit: Option<u64>,
    /// When another lethe process is running a job, wait for it and then run the job, instead
    /// of skipping it with exit code 3.
    #[arg(long)]
    wait: bool,
}

#[derive(Subcommand, Debug)]
enum HoldCommand {
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
        #[arg(long)]
        reason: String,
        #[arg(long)]
        by: String,
    },
    /// Release a hold by id.
    Release {
        id: i64,
        #[arg(long)]
        by: String,
        #[arg(long)]
        reason: String,
    },
    /// List active holds (`--all` includes released ones).
    List {
        #[arg(long)]
        all: bool,
    },
}

#[derive(Args, Debug)]
struct ReportArgs {
    /// Entries recorded at or after this date (2026-11-01, UTC) or time (RFC 3339).
    #[arg(long)]
    from: Option<String>,
    /// Entries recorded up to this date (the whole day included) or before this time.
    #[arg(long)]
    to: Option<String>,
    /// Only this job.
    #[arg(long)]
    job: Option<String>,
    /// Only subjects this account owns (for a data-subject request).
    #[arg(long, conflicts_with = "subject")]
    account: Option<String>,
    /// Only this subject: JOB:KEY.
    #[arg(long)]
    subject: Option<String>,
    /// `csv`, `jsonl`, or `html` (one self-contained page: summary, chart, exceptions, and the
    /// full table with sorting and filtering).
    #[arg(long, default_value = "csv", value_parser = ["csv", "jsonl", "html"])]
    format: String,
    /// The summary instead of the rows: outcomes per job, the share of deadlines met, what is
    /// overdue now (held subjects apart), holds active in the period, runs. Text, or one JSON
    /// object with --format jsonl.
    #[arg(long, conflicts_with_all = ["account", "subject"])]
    summary: bool,
    /// Write here instead of stdout.
    #[arg(long, value_name = "FILE")]
    out: Option<std::path::PathBuf>,
}

#[derive(Subcommand, Debug)]
enum ClockCommand {
    /// Vouch for the database clock after the clock guard refused a run (exit 4): recorded in
    /// the audit log, after which runs go ahead.
    Confirm {
        /// Who confirms.
        #[arg(long)]
        by: String,
    },
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
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

fn config<T>(r: Result<T>) -> Result<T> {
    r.map_err(config_error)
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(matches!(cli.command, Command::Daemon { .. }));
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(dispatch(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(if e.downcast_ref::<ConfigError>().is_some() {
                2
            } else if e.downcast_ref::<db::clock::ClockJump>().is_some() {
                4
            } else {
                1
            })
        }
    }
}

/// Logs go to stderr: JSON lines for the daemon (or with LETHE_LOG_FORMAT=json), text otherwise.
fn init_logging(daemon: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LETHE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("lethe=info,warn"));
    let json = match std::env::var("LETHE_LOG_FORMAT").as_deref() {
        Ok("json") => true,
        Ok("text") => false,
        _ => daemon,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init()
    };
}

async fn dispatch(cli: Cli) -> Result<u8> {
    if let Command::Demo { dir } = &cli.command {
        return demo_cmd(dir).await;
    }
    let mut settings = config(Settings::from_env())?;
    if let Command::Daemon { listen } = cli.command {
        if listen.is_some() {
            settings.listen = listen;
        }
        return crate::daemon::run(settings).await;
    }
    let ctx = config(Context::build(&settings).await)?;
    match cli.command {
        Command::Migrate { down, .. } => migrate(&ctx, down).await,
        Command::Check => check(&ctx).await,
        Command::Plan { jobs, format } => {
            let all = ready_jobs(&ctx).await?;
            let selected = config(select(&all, &jobs, jobs.is_empty()))?;
            plan_cmd(&ctx, &all, &selected, &format).await
        }
        Command::Run(args) => {
            let all = ready_jobs(&ctx).await?;
            let selected = config(select(&all, &args.jobs, args.all))?;
            run_cmd(
                &ctx,
                &all,
                &selected,
                &RunOptions {
                    dry_run: args.dry_run,
                    limit: args.limit.or(ctx.settings.max_subjects_per_run),
                    deadline: ctx
                        .settings
                        .run_budget
                        .map(|b| std::time::Instant::now() + b),
                    stop: None,
                    wait: args.wait,
                },
            )
            .await
        }
        Command::Daemon { .. } | Command::Demo { .. } => unreachable!("handled before connecting"),
        Command::Hold(h) => hold_cmd(&ctx, h).await,
        Command::Report(args) => report_cmd(&ctx, args).await,
        Command::Clock(ClockCommand::Confirm { by }) => {
            config(db::require_current_schema(&ctx.db).await)?;
            let (now, last) = config(db::clock::confirm(&ctx.db, &by).await)?;
            let last = last
                .map(|t| t.to_rfc3339())
                .unwrap_or_else(|| "nothing".into());
            eprintln!("clock confirmed by {by}: database now {now}, previously recorded {last}");
            Ok(0)
        }
        Command::Audit(cmd) => {
            config(db::require_current_schema(&ctx.db).await)?;
            let target = |t: Option<String>| -> Result<Option<crate::anchor::Target>> {
                t.or_else(|| ctx.settings.audit_anchor.clone())
                    .map(|t| crate::anchor::Target::parse(&t))
                    .transpose()
            };
            match cmd {
                AuditCommand::Verify { anchor } => {
                    audit_verify(&ctx, config(target(anchor))?).await
                }
                AuditCommand::Anchor { to } => {
                    let Some(target) = config(target(to))? else {
                        return config(Err(anyhow!(
                            "where to? give --to FILE or --to s3://BUCKET/PREFIX (or set LETHE_AUDIT_ANCHOR)"
                        )));
                    };
                    match crate::anchor::head(&ctx.db).await? {
                        None => eprintln!("the audit log is empty; nothing to anchor"),
                        Some(a) => {
                            target
                                .write(&*ctx.store, &a, ctx.settings.anchor_retention_days)
                                .await?;
                            println!("anchored entry {} {}", a.seq, a.hash);
                        }
                    }
                    Ok(0)
                }
            }
        }
    }
}

/// `lethe demo`: builds the embedded world, then runs the same commands a user would.
async fn demo_cmd(dir: &std::path::Path) -> Result<u8> {
    let step = |s: &str| println!("\n==> {s}");
    // The demo's own database, jobs and objects; other settings (batch sizes...) still apply.
    let base = config(Settings::from_env_with(Some("sqlite::memory:".into())))?;
    step(&format!(
        "creating the demo in {}: a SQLite platform database, a local object directory, the shipped jobs",
        dir.display()
    ));
    let demo = config(crate::demo::prepare(dir, &base).await)?;
    let census = |c: (i64, i64, i64, i64, usize)| {
        format!(
            "{} accounts, {} runs, {} snapshots, {} metric rows; {} objects",
            c.0, c.1, c.2, c.3, c.4
        )
    };
    println!("{}", census(crate::demo::census(&demo).await?));
    let ctx = &demo.ctx;

    step("lethe check: the job specs against the database");
    let all = ready_jobs(ctx).await?;
    println!(
        "{} job specs are valid: {}",
        all.len(),
        all.iter()
            .map(|j| j.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );

    step("lethe hold place --account 9: a litigation hold on a closed account past its deadline");
    let hold = holds::place(
        &ctx.db,
        &holds::Scope::Account("9".into()),
        "litigation hold #42",
        "legal@example.com",
    )
    .await?;
    println!("hold {hold} placed");

    step("lethe plan: what a run would do now");
    plan_cmd(ctx, &all, &all, "table").await?;

    step("lethe run --all: purge what is eligible and unheld");
    let ran = run_cmd(ctx, &all, &all, &RunOptions::default()).await?;

    step("lethe plan again: held and waiting subjects remain");
    plan_cmd(ctx, &all, &all, "table").await?;

    step("lethe audit verify: recompute the hash chain");
    let verified = audit_verify(ctx, None).await?;

    step("lethe report --format html");
    let file = std::fs::File::create(&demo.report)
        .with_context(|| format!("writing {}", demo.report.display()))?;
    let mut w = std::io::BufWriter::new(file);
    let rows = crate::report::html::write(ctx, &all, &Default::default(), &mut w).await?;
    w.flush()?;
    println!("{rows} report rows");

    step("what is where");
    println!("{}", census(crate::demo::census(&demo).await?));
    let env = format!(
        "DATABASE_URL=sqlite://{} LETHE_JOBS_DIR={} LETHE_OBJECT_STORE=file://{}",
        demo.database.display(),
        demo.jobs.display(),
        demo.objects.display()
    );
    println!(
        "  database  {}   (platform tables, and lethe's own as lethe_*)\n  objects   {}/{}\n  jobs      {}\n  report    {}\n\n  explore:  {env} lethe report --summary",
        demo.database.display(),
        demo.objects.display(),
        crate::demo::BUCKET,
        demo.jobs.display(),
        demo.report.display()
    );
    Ok(ran.max(verified))
}

/// Jobs loaded and validated, with lethe's schema current: the precondition of plan and run.
async fn ready_jobs(ctx: &Context) -> Result<Vec<Job>> {
    config(db::require_current_schema(&ctx.db).await)?;
    config(ctx.load_jobs().await)
}

fn select(all: &[Job], names: &[String], everything: bool) -> Result<Vec<Job>> {
    if everything {
        return Ok(all.to_vec());
    }
    names
        .iter()
        .map(|n| {
            all.iter().find(|j| &j.name == n).cloned().ok_or_else(|| {
                let known: Vec<&str> = all.iter().map(|j| j.name.as_str()).collect();
                anyhow!("there is no job `{n}`; the jobs are: {}", known.join(", "))
            })
        })
        .collect()
}

async fn migrate(ctx: &Context, down: bool) -> Result<u8> {
    if down {
        db::unmigrate(&ctx.db)
            .await
            .context("undoing lethe's migrations")?;
        eprintln!("lethe's schema was removed");
    } else {
        db::migrate(&ctx.db)
            .await
            .context("applying lethe's migrations")?;
        eprintln!("lethe's schema is up to date");
    }
    Ok(0)
}

async fn check(ctx: &Context) -> Result<u8> {
    let jobs = config(ctx.load_jobs().await)?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{} job spec(s) in {} are valid against the database",
        jobs.len(),
        ctx.settings.jobs_dir.display()
    )?;
    let now = chrono::DateTime::from_timestamp(chrono::Utc::now().timestamp(), 0)
        .expect("now is representable");
    for job in &jobs {
        let w = &job.windows.default;
        writeln!(out, "\njob {} ({})", job.name, job.file.display())?;
        if !job.description.is_empty() {
            writeln!(out, "  {}", job.description)?;
        }
        writeln!(
            out,
            "  subject: {}.{} clock {} ({}), grace {}, deadline {}",
            job.subject_table(),
            job.key,
            job.clock,
            job.clock_kind,
            w.grace,
            w.deadline
        )?;
        if let Some(r) = &job.windows.from_row {
            writeln!(
                out,
                "    retention from {}.{} ({}) where {}.{} = {}; deadline {} after it; \
                 NULL uses the defaults above, zero or less keeps forever",
                r.table,
                r.column,
                format!("{:?}", r.unit).to_lowercase(),
                r.table,
                r.key,
                r.link,
                r.deadline_after
            )?;
        }
        for (value, p) in &job.windows.overrides {
            let by = job
                .windows
                .vary_by
                .as_ref()
                .map(|c| c.as_str())
                .unwrap_or("?");
            let col = match &job.windows.vary_on {
                Some(r) => format!(
                    "{}.{by} (where {}.{} = {})",
                    r.table, r.table, r.key, r.link
                ),
                None => by.to_string(),
            };
            writeln!(
                out,
                "    when {col} = {value:?}: grace {}, deadline {}",
                p.grace, p.deadline
            )?;
        }
        let order: Vec<String> = job
            .delete_order()
            .iter()
            .map(|&i| job.nodes[i].name.to_string())
            .collect();
        writeln!(out, "  deletes, in order: {}", order.join(" -> "))?;
        let fires: Vec<String> = job
            .schedule
            .iter_after(now)
            .take(3)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .collect();
        writeln!(
            out,
            "  schedule {:?}, next (UTC): {}",
            job.schedule_text,
            fires.join(", ")
        )?;
    }
    match db::schema_status(&ctx.db).await? {
        db::SchemaStatus::Current => writeln!(out, "\nlethe schema: current")?,
        other => writeln!(out, "\nlethe schema: {other:?} (run `lethe migrate`)")?,
    }
    writeln!(out, "\neffective configuration: {:#?}", ctx.settings)?;
    Ok(0)
}

async fn plan_cmd(ctx: &Context, all: &[Job], selected: &[Job], format: &str) -> Result<u8> {
    let mut out = std::io::stdout().lock();
    if format == "jsonl" {
        for job in selected {
            plan::subjects(ctx, job, all, &mut out).await?;
        }
        return Ok(0);
    }
    writeln!(
        out,
        "{:<28} {:>10} {:>10} {:>10} {:>10}",
        "job", "eligible", "held", "waiting", "overdue"
    )?;
    for job in selected {
        let c = plan::counts(ctx, job, all).await?;
        writeln!(
            out,
            "{:<28} {:>10} {:>10} {:>10} {:>10}",
            c.job, c.eligible, c.held, c.waiting, c.overdue
        )?;
    }
    Ok(0)
}

async fn run_cmd(ctx: &Context, all: &[Job], selected: &[Job], opts: &RunOptions) -> Result<u8> {
    config(pipeline::preflight(ctx, selected).await)?;
    let summary = pipeline::run_all(ctx, all, selected, opts).await?;
    for job in &summary.locked_out {
        eprintln!("job `{job}` is being run by another lethe process; skipped");
    }
    print_summary(&summary.reports, opts.dry_run)?;
    Ok(summary.exit_code())
}

fn print_summary(reports: &[JobReport], dry_run: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let verb = if dry_run { "would purge" } else { "purged" };
    writeln!(
        out,
        "{:<28} {:>11} {:>8} {:>8} {:>8} {:>12} {:>12} {:>9}",
        "job", verb, "held", "failed", "busy", "rows", "versions", "markers"
    )?;
    for r in reports {
        let n = if dry_run { r.would_purge } else { r.purged };
        writeln!(
            out,
            "{:<28} {:>11} {:>8} {:>8} {:>8} {:>12} {:>12} {:>9}",
            r.job,
            n,
            r.held,
            r.failed,
            r.busy,
            r.rows_deleted,
            r.object_versions_deleted,
            r.delete_markers_deleted
        )?;
        if let Some(why) = &r.halted {
            writeln!(
                out,
                "  {}: stopped claiming: {why}; the rest waits for the next run",
                r.job
            )?;
        }
        if r.left_by_limit {
            writeln!(
                out,
                "  {}: --limit reached; more subjects are eligible",
                r.job
            )?;
        }
    }
    for r in reports {
        for e in r.errors.iter().take(20) {
            eprintln!("{}: {e}", r.job);
        }
    }
    Ok(())
}

async fn hold_cmd(ctx: &Context, cmd: HoldCommand) -> Result<u8> {
    config(db::require_current_schema(&ctx.db).await)?;
    match cmd {
        HoldCommand::Place {
            account,
            subject,
            job,
            reason,
            by,
        } => {
            let scope = match (account, subject, job) {
                (Some(a), None, None) => holds::Scope::Account(a),
                (None, Some(s), None) => {
                    let (job, key) = config(
                        s.split_once(':')
                            .ok_or_else(|| anyhow!("--subject takes JOB:KEY, got `{s}`")),
                    )?;
                    config(known_job(ctx, job))?;
                    holds::Scope::Subject {
                        job: job.into(),
                        key: key.into(),
                    }
                }
                (None, None, Some(j)) => {
                    config(known_job(ctx, &j))?;
                    holds::Scope::Job(j)
                }
                _ => {
                    return config(Err(anyhow!(
                        "give exactly one of --account, --subject JOB:KEY, --job NAME"
                    )));
                }
            };
            let id = config(holds::place(&ctx.db, &scope, &reason, &by).await)?;
            println!("{id}");
            eprintln!("hold {id} placed on {scope:?}");
        }
        HoldCommand::Release { id, by, reason } => {
            config(holds::release(&ctx.db, id, &reason, &by).await)?;
            eprintln!("hold {id} released");
        }
        HoldCommand::List { all } => {
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{:>6}  {:<32} {:<22} {:<16} reason",
                "id", "scope", "placed_at", "by"
            )?;
            for h in holds::list(&ctx.db, all).await? {
                let released = h
                    .released_at
                    .map(|t| {
                        format!(
                            " [released {} by {}]",
                            t.format("%Y-%m-%d"),
                            h.released_by.clone().unwrap_or_default()
                        )
                    })
                    .unwrap_or_default();
                writeln!(
                    out,
                    "{:>6}  {:<32} {:<22} {:<16} {}{released}",
                    h.id,
                    h.scope_text(),
                    h.placed_at.format("%Y-%m-%dT%H:%M:%SZ"),
                    h.placed_by,
                    h.reason
                )?;
            }
        }
    }
    Ok(0)
}

/// A subject or job hold must name a job that exists, or it would protect nothing.
fn known_job(ctx: &Context, name: &str) -> Result<()> {
    let jobs = crate::spec::load_dir(&ctx.settings.jobs_dir)?;
    if jobs.iter().any(|j| j.name == name) {
        Ok(())
    } else {
        bail!(
            "there is no job `{name}` in {}",
            ctx.settings.jobs_dir.display()
        )
    }
}

async fn report_cmd(ctx: &Context, args: ReportArgs) -> Result<u8> {
    use crate::report::{Filter, Format, parse_bound};
    config(db::require_current_schema(&ctx.db).await)?;
    let bound = |t: &Option<String>, end: bool, flag: &str| -> Result<_> {
        t.as_deref()
            .map(|t| parse_bound(t, end).with_context(|| format!("--{flag}")))
            .transpose()
    };
    let subject = match &args.subject {
        None => None,
        Some(s) => Some(config(
            s.split_once(':')
                .map(|(j, k)| (j.to_string(), k.to_string()))
                .ok_or_else(|| anyhow!("--subject takes JOB:KEY, got `{s}`")),
        )?),
    };
    let filter = Filter {
        from: config(bound(&args.from, false, "from"))?,
        to: config(bound(&args.to, true, "to"))?,
        job: args.job.clone(),
        account: args.account.clone(),
        subject,
    };
    let format = if args.format == "jsonl" {
        Format::Jsonl
    } else {
        Format::Csv
    };
    if args.format == "html" {
        let all = ready_jobs(ctx).await?;
        let n = match &args.out {
            Some(path) => {
                let file = config(
                    std::fs::File::create(path)
                        .with_context(|| format!("--out {}", path.display())),
                )?;
                let mut w = std::io::BufWriter::new(file);
                crate::report::html::write(ctx, &all, &filter, &mut w).await?
            }
            None => {
                let mut w = std::io::BufWriter::new(std::io::stdout().lock());
                crate::report::html::write(ctx, &all, &filter, &mut w).await?
            }
        };
        eprintln!("report: {n} rows");
        return Ok(0);
    }
    if args.summary {
        let all = ready_jobs(ctx).await?;
        let s = crate::report::summary::build(ctx, &all, &filter).await?;
        let mut out: Box<dyn Write> = match &args.out {
            Some(path) => Box::new(config(
                std::fs::File::create(path).with_context(|| format!("--out {}", path.display())),
            )?),
            None => Box::new(std::io::stdout().lock()),
        };
        if format == Format::Jsonl {
            serde_json::to_writer_pretty(&mut out, &s)?;
            writeln!(out)?;
        } else {
            crate::report::summary::write_text(&s, &mut out)?;
        }
        return Ok(0);
    }
    let n = match &args.out {
        Some(path) => {
            let file = config(
                std::fs::File::create(path).with_context(|| format!("--out {}", path.display())),
            )?;
            let mut w = std::io::BufWriter::new(file);
            crate::report::write(&ctx.db, &filter, format, &mut w).await?
        }
        None => {
            let mut w = std::io::BufWriter::new(std::io::stdout().lock());
            crate::report::write(&ctx.db, &filter, format, &mut w).await?
        }
    };
    eprintln!("report: {n} rows");
    Ok(0)
}

async fn audit_verify(ctx: &Context, anchor: Option<crate::anchor::Target>) -> Result<u8> {
    let anchors = match &anchor {
        Some(t) => config(t.read(&*ctx.store).await)?,
        None => Vec::new(),
    };
    let n_anchors = anchors.len();
    let mut check = crate::anchor::AnchorCheck::new(anchors);
    let mut v = crate::audit::Verifier::default();
    let mut after = 0;
    loop {
        let page = db::audit::page(&ctx.db, after, 5_000).await?;
        let Some((last, _)) = page.last() else { break };
        after = last.seq;
        for (e, h) in &page {
            if let Err(msg) = v.next(e, h).and_then(|()| check.entry(e.seq, h)) {
                println!("audit chain BROKEN: {msg}");
                return Ok(1);
            }
        }
    }
    if let Err(msg) = check.end(v.head().0) {
        println!("audit chain BROKEN: {msg}");
        return Ok(1);
    }
    if anchor.is_some() {
        println!("anchors: all {n_anchors} match the chain");
    }
    let (seq, hash) = v.head();
    println!(
        "audit chain verified: {} entries, head {seq} {hash}",
        v.checked
    );
    Ok(0)
}
