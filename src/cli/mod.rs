//! Command line: parsing (the only module that imports clap), logging setup, and mapping each
//! outcome to an exit code. Exit codes, documented in the README:
//! 0 all done; 1 some subjects failed or were left undone; 2 usage or configuration error
//! (nothing was deleted); 3 another lethe process is running the job; 4 the clock guard refused
//! to run (nothing was deleted).

use crate::config::{ConfigError, Settings, config_error};
use crate::context::Context;
use crate::db::{self};
use crate::pipeline::RunOptions;
use anyhow::{Result, anyhow};
use clap::Parser;
use std::process::ExitCode;

mod args;
mod commands;
mod records;
mod requests;

use args::{AuditCommand, Cli, ClockCommand, Command};
use commands::{check, demo_cmd, migrate, plan_cmd, run_cmd, select};
use records::{audit_verify, hold_cmd, report_cmd};

/// `println!` that answers a closed pipe (`lethe check | head -1`) with an error, which ends the
/// command quietly with exit 0 (see `main`), instead of panicking.
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($t)*)
    }};
}
pub(crate) use outln;

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
        // The reader of our output went away (`| head`): nothing more to say to anyone.
        Err(e) if closed_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if let Some(hint) = db::pooler_hint(&format!("{e:#}")) {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(if e.downcast_ref::<ConfigError>().is_some() {
                2
            } else if e.downcast_ref::<db::clock::ClockJump>().is_some() {
                4
            } else if e.downcast_ref::<db::hold_ledger::HoldsTampered>().is_some()
                || e.downcast_ref::<db::requests::RequestsTampered>().is_some()
            {
                5
            } else {
                1
            })
        }
    }
}

fn closed_pipe(e: &anyhow::Error) -> bool {
    use std::io::ErrorKind::BrokenPipe;
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == BrokenPipe)
            || c.downcast_ref::<serde_json::Error>()
                .is_some_and(|j| j.io_error_kind() == Some(BrokenPipe))
    })
}

/// Logs go to stderr: JSON lines for the daemon (or with LETHE_LOG_FORMAT=json), text otherwise.
fn init_logging(daemon: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LETHE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(crate::config::DEFAULT_LOG))
        // sqlx logs a URL parameter it does not know with its value, which may be a secret;
        // `db::check_url` refuses such parameters by name before anything connects.
        .add_directive(
            "sqlx_postgres::options=off"
                .parse()
                .expect("a valid directive"),
        );
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
    if let Command::Run(args) = &cli.command
        && args.jobs.is_empty()
        && !args.all
    {
        return config(Err(anyhow!(
            "say which jobs to run: --job NAME (repeatable) or --all (see lethe run --help)"
        )));
    }
    let mut settings = config(Settings::from_env())?;
    settings.keep_going |= cli.keep_going;
    if let Command::Run(args::RunArgs { by: Some(by), .. }) = &cli.command {
        settings.actor = by.clone();
    }
    if let Command::Daemon { listen } = cli.command {
        if listen.is_some() {
            settings.listen = listen;
        }
        // As every command: a mistyped SQLite path is not created empty, and a URL parameter
        // lethe's driver would ignore (logging its value) is refused.
        config(db::check_url(&settings.database_url, false))?;
        return crate::daemon::run(settings).await;
    }
    let create = matches!(cli.command, Command::Migrate { create: true, .. });
    let mut stages = crate::pipeline::Stages::start();
    config(db::check_url(&settings.database_url, create))?;
    let mut ctx = config(Context::build(&settings).await)?;
    stages.mark("connect");
    let runs_jobs = matches!(
        cli.command,
        Command::Run(_) | Command::Plan { .. } | Command::Check
    );
    let code = match cli.command {
        Command::Run(args) => {
            let all = ready_jobs(&ctx).await?;
            let selected = config(select(&all, &args.jobs, args.all))?;
            stages.mark("specs");
            let opts = run_options(&ctx, &args);
            // Jobs that share no table run side by side: the default pool grows to serve them
            // all at once; an explicit size that fits fewer runs fewer at once (`run_all`).
            let at_once = if crate::config::db_connections_given() {
                1
            } else {
                crate::pipeline::at_once(&selected, &opts).len()
            };
            ctx = config(ctx.fit_pool(at_once).await)?;
            stages.mark("pool");
            run_cmd(&ctx, &all, &selected, &opts, stages).await?
        }
        other => command(&ctx, other).await?,
    };
    // A spec left out by --keep-going is work undone: never a clean exit (a hold placed or a
    // report written is done whatever the specs).
    if code == 0 && runs_jobs && !ctx.rejected().is_empty() {
        return Ok(1);
    }
    Ok(code)
}

async fn command(ctx: &Context, command: Command) -> Result<u8> {
    match command {
        Command::Migrate { down, .. } => migrate(ctx, down).await,
        Command::Check => check(ctx).await,
        Command::Plan { jobs, format } => {
            let all = ready_jobs(ctx).await?;
            let selected = config(select(&all, &jobs, jobs.is_empty()))?;
            plan_cmd(ctx, &all, &selected, &format).await
        }
        Command::Daemon { .. } | Command::Demo { .. } => unreachable!("handled before connecting"),
        Command::Run(_) => unreachable!("handled in dispatch"),
        Command::Hold(h) => hold_cmd(ctx, h).await,
        Command::Request(r) => requests::request_cmd(ctx, r).await,
        Command::Report(args) => report_cmd(ctx, args).await,
        Command::Clock(ClockCommand::Confirm { by }) => {
            let by = by.unwrap_or_else(|| ctx.settings.actor.clone());
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
                AuditCommand::Verify { anchor } => audit_verify(ctx, config(target(anchor))?).await,
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
                            outln!("anchored entry {} {}", a.seq, a.hash)?;
                        }
                    }
                    Ok(0)
                }
            }
        }
    }
}

/// What `lethe run` was asked to do, with the settings' limit and time budget.
fn run_options(ctx: &Context, args: &args::RunArgs) -> RunOptions {
    RunOptions {
        dry_run: args.dry_run,
        limit: args.limit.or(ctx.settings.max_subjects_per_run),
        deadline: ctx
            .settings
            .run_budget
            .map(|b| std::time::Instant::now() + b),
        stop: None,
        wait: args.wait,
        run_lock: None,
    }
}

/// Jobs loaded and validated, with lethe's schema current: the precondition of plan and run.
async fn ready_jobs(ctx: &Context) -> Result<Vec<crate::spec::Job>> {
    config(db::require_current_schema(&ctx.db).await)?;
    load_jobs(ctx).await
}

/// The jobs, each spec left out by --keep-going said once on stderr.
async fn load_jobs(ctx: &Context) -> Result<Vec<crate::spec::Job>> {
    let jobs = config(ctx.load_jobs().await)?;
    for r in ctx.rejected() {
        eprintln!("left out (--keep-going): {}", r.error);
    }
    Ok(jobs)
}
