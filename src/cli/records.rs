//! The commands over lethe's records: `hold`, `report`, `audit verify`.

use super::args::{HoldCommand, ReportArgs};
use super::commands::ready_jobs;
use super::config;
use crate::context::Context;
use crate::db::{self, holds};
use anyhow::{Context as _, Result, anyhow, bail};
use std::io::Write;

pub(super) async fn hold_cmd(ctx: &Context, cmd: HoldCommand) -> Result<u8> {
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
pub(super) fn known_job(ctx: &Context, name: &str) -> Result<()> {
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

pub(super) async fn report_cmd(ctx: &Context, args: ReportArgs) -> Result<u8> {
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

pub(super) async fn audit_verify(
    ctx: &Context,
    anchor: Option<crate::anchor::Target>,
) -> Result<u8> {
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
