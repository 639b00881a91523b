//! The commands that set up and run jobs: `demo`, `migrate`, `check`, `plan`, `run`.

use super::records::audit_verify;
use super::{config, load_jobs, outln, ready_jobs};
use crate::config::Settings;
use crate::context::Context;
use crate::db::{self, holds};
use crate::pipeline::{self, JobReport, RunOptions, plan};
use crate::spec::Job;
use anyhow::{Context as _, Result, anyhow};
use std::io::Write;

/// `lethe demo`: builds the embedded world, then runs the same commands a user would.
pub(super) async fn demo_cmd(dir: &std::path::Path) -> Result<u8> {
    // A closed pipe is noticed by the next write that is checked.
    let step = |s: &str| drop(outln!("\n==> {s}"));
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
    outln!("{}", census(crate::demo::census(&demo).await?))?;
    let ctx = &demo.ctx;

    step("lethe check: the job specs against the database");
    let all = ready_jobs(ctx).await?;
    outln!(
        "{} job specs are valid: {}",
        all.len(),
        all.iter()
            .map(|j| j.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    )?;

    step("lethe hold place --account 9: a litigation hold on a closed account past its deadline");
    let hold = holds::place(
        &ctx.db,
        &holds::Scope::Account("9".into()),
        "litigation hold #42",
        "legal@example.com",
    )
    .await?;
    outln!("hold {hold} placed")?;

    step("lethe plan: what a run would do now");
    plan_cmd(ctx, &all, &all, "table").await?;

    step("lethe run --all: purge what is eligible and unheld");
    let ran = run_cmd(
        ctx,
        &all,
        &all,
        &RunOptions::default(),
        pipeline::Stages::start(),
    )
    .await?;

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
    outln!("{rows} report rows")?;

    step("what is where");
    outln!("{}", census(crate::demo::census(&demo).await?))?;
    // The binary that runs now, by its path: `lethe` itself is on PATH only after
    // `cargo install --path .`, so the line works as printed.
    let lethe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "lethe".into());
    let env = format!(
        "DATABASE_URL=sqlite://{} LETHE_JOBS_DIR={} LETHE_OBJECT_STORE=file://{}",
        demo.database.display(),
        demo.jobs.display(),
        demo.objects.display()
    );
    outln!(
        "  database  {}   (platform tables, and lethe's own as lethe_*)\n  objects   {}/{}\n  jobs      {}\n  report    {}\n\n  explore:  {env} {lethe} report --summary",
        demo.database.display(),
        demo.objects.display(),
        crate::demo::BUCKET,
        demo.jobs.display(),
        demo.report.display()
    )?;
    Ok(ran.max(verified))
}

pub(super) fn select(all: &[Job], names: &[String], everything: bool) -> Result<Vec<Job>> {
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

pub(super) async fn migrate(ctx: &Context, down: bool) -> Result<u8> {
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

pub(super) async fn check(ctx: &Context) -> Result<u8> {
    let jobs = load_jobs(ctx).await?;
    config(pipeline::check_clocks(ctx, &jobs).await)?;
    let mut out = std::io::stdout().lock();
    let left_out = ctx.rejected().len();
    if left_out == 0 {
        writeln!(
            out,
            "{} job spec(s) in {} are valid against the database",
            jobs.len(),
            ctx.settings.jobs_dir.display()
        )?;
    } else {
        writeln!(
            out,
            "{} of {} job spec(s) in {} are valid against the database; {left_out} left out \
             (--keep-going)",
            jobs.len(),
            jobs.len() + left_out,
            ctx.settings.jobs_dir.display()
        )?;
    }
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
        if job.owner.is_none() {
            writeln!(
                out,
                "  warning: no `owner` column, so account holds cannot reach this job's subjects \
                 (add `owner` under [subject] if they belong to an account)"
            )?;
        }
        if job.erase_on_request {
            writeln!(
                out,
                "  erasure requests: take its subjects now, whatever their window and filter{}",
                if job.leave_out.is_empty() {
                    String::new()
                } else {
                    let cols: Vec<String> = job
                        .leave_out
                        .iter()
                        .map(|(t, c)| format!("{t}.{c}"))
                        .collect();
                    format!("; exports leave out {}", cols.join(", "))
                }
            )?;
        }
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
            .filter(|&&i| !job.nodes[i].by_database)
            .map(|&i| job.nodes[i].name.to_string())
            .collect();
        writeln!(out, "  deletes, in order: {}", order.join(" -> "))?;
        for (i, n) in job.nodes.iter().enumerate().filter(|(_, n)| n.by_database) {
            let parent = n.link.as_ref().map(|l| &job.nodes[l.parent]);
            let counted = if job.counted_elsewhere(i) {
                "counted on its other path".to_string()
            } else {
                format!("lethe counts them as `{}`", n.name)
            };
            writeln!(
                out,
                "  the database deletes `{}` rows with their `{}` row (ON DELETE CASCADE); {counted}",
                n.table,
                parent.map_or(String::new(), |p| p.table.to_string()),
            )?;
        }
        for note in &job.notes {
            writeln!(out, "  note: {note}")?;
        }
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
    writeln!(
        out,
        "\neffective configuration (by environment variable; secrets masked):"
    )?;
    for line in ctx.settings.describe() {
        writeln!(out, "  {line}")?;
    }
    Ok(0)
}

pub(super) async fn plan_cmd(
    ctx: &Context,
    all: &[Job],
    selected: &[Job],
    format: &str,
) -> Result<u8> {
    let mut out = std::io::stdout().lock();
    if format == "jsonl" {
        for job in selected {
            plan::subjects(ctx, job, all, &mut out).await?;
        }
        return Ok(0);
    }
    writeln!(
        out,
        "{:<28} {:>10} {:>10} {:>10} {:>10} {:>12} {:>10}",
        "job", "eligible", "held", "waiting", "overdue", "future clock", "store name"
    )?;
    let mut unnamed = 0;
    let mut requested = Vec::new();
    for job in selected {
        let c = plan::counts(ctx, job, all).await?;
        unnamed += c.store_name;
        let (unheld, held) = pipeline::requests::covered_in(ctx, job, all).await?;
        if unheld + held > 0 {
            requested.push(format!("job {}: {unheld} ({held} more held)", job.name));
        }
        writeln!(
            out,
            "{:<28} {:>10} {:>10} {:>10} {:>10} {:>12} {:>10}",
            c.job, c.eligible, c.held, c.waiting, c.overdue, c.future_clock, c.store_name
        )?;
    }
    if !requested.is_empty() {
        eprintln!(
            "erasure requests cover subjects the next run purges first, whatever their window \
             and filter (`lethe request list`): {}",
            requested.join(", ")
        );
    }
    if unnamed > 0 {
        eprintln!(
            "{unnamed} eligible subject(s) failed at the last run because the object store keeps \
             one of their names differently than it was written (`store name`): lethe cannot \
             purge them as things are; `lethe plan --format jsonl` lists them (status \
             `store_name`) and `lethe report --summary` says why"
        );
    }
    Ok(0)
}

pub(super) async fn run_cmd(
    ctx: &Context,
    all: &[Job],
    selected: &[Job],
    opts: &RunOptions,
    mut stages: pipeline::Stages,
) -> Result<u8> {
    config(pipeline::preflight(ctx, selected, opts.dry_run).await)?;
    stages.mark("preflight");
    tracing::info!(stages_ms = %stages, "start-up done");
    let summary = pipeline::run_all(ctx, all, selected, opts).await?;
    for job in &summary.locked_out {
        eprintln!("job `{job}` is being run by another lethe process; skipped");
    }
    print_summary(&summary.reports, opts.dry_run)?;
    Ok(summary.exit_code())
}

pub(super) fn print_summary(reports: &[JobReport], dry_run: bool) -> Result<()> {
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
        if r.backing_off > 0 {
            writeln!(
                out,
                "  {}: {} failed subjects wait out their retry backoff (work left undone; \
                 `lethe report` says why each failed)",
                r.job, r.backing_off
            )?;
        }
    }
    for r in reports {
        for e in r.errors.iter().take(20) {
            eprintln!("{}: {e}", r.job);
        }
        let more = (r.errors.len().saturating_sub(20)) as u64 + r.errors_not_listed;
        if more > 0 {
            eprintln!(
                "{}: {more} more errors (see `lethe report` or the work items' last_error)",
                r.job
            );
        }
    }
    Ok(())
}
