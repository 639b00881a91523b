//! The commands over lethe's records: `hold`, `report`, `audit verify`.

use super::args::{HoldCommand, ReportArgs};
use super::ready_jobs;
use super::{config, outln};
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
            force,
        } => {
            let scope = match (account, subject, job) {
                (Some(a), None, None) => holds::Scope::Account(a),
                (None, Some(s), None) => {
                    let (job, key) = config(
                        s.split_once(':')
                            .ok_or_else(|| anyhow!("--subject takes JOB:KEY, got `{s}`")),
                    )?;
                    config(held_job(ctx, job, force))?;
                    holds::Scope::Subject {
                        job: job.into(),
                        key: key.into(),
                    }
                }
                (None, None, Some(j)) => {
                    config(held_job(ctx, &j, force))?;
                    holds::Scope::Job(j)
                }
                _ => {
                    return config(Err(anyhow!(
                        "give exactly one of --account, --subject JOB:KEY, --job NAME"
                    )));
                }
            };
            let (scope, covered, total) = config(coverage(ctx, scope).await)?;
            if total == Some(0) && !force {
                return config(Err(anyhow!(
                    "a hold on {} would cover no subject now:\n  {}\ncheck the value (a typo \
                     in a legal hold must not pass unnoticed), or pass --force to place it for \
                     subjects that appear later; no hold was placed",
                    holds::describe(&scope),
                    covered.join("\n  ")
                )));
            }
            let by = by.unwrap_or_else(|| ctx.settings.actor.clone());
            let id = config(holds::place(&ctx.db, &scope, &reason, &by).await)?;
            outln!("{id}")?;
            eprintln!(
                "hold {id} placed on {} by {by}: nothing it covers will be purged until it is released",
                holds::describe(&scope)
            );
            for line in covered {
                eprintln!("  {line}");
            }
        }
        HoldCommand::Release { id, by, reason } => {
            let by = by.unwrap_or_else(|| ctx.settings.actor.clone());
            config(holds::release(&ctx.db, id, &reason, &by).await)?;
            eprintln!("hold {id} released");
        }
        HoldCommand::Confirm { id, by, reason } => {
            let by = by.unwrap_or_else(|| ctx.settings.actor.clone());
            let what = config(db::hold_ledger::confirm(&ctx.db, id, &reason, &by).await)?;
            eprintln!("{what}, by {by}");
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
/// What a hold on `scope` covers now, per job, and in all (`None` when the specs do not load
/// and nothing can be counted). A subject scope comes back with its key as the database spells
/// it (`42` for `042` on an integer key), the form holds are compared in.
async fn coverage(
    ctx: &Context,
    scope: holds::Scope,
) -> Result<(holds::Scope, Vec<String>, Option<u64>)> {
    use crate::db::platform;
    let jobs = match ctx.load_jobs().await {
        Ok(jobs) => jobs,
        Err(e) => {
            let why = format!("what it covers is unknown: the job specs do not load ({e:#})");
            return Ok((scope, vec![why], None));
        }
    };
    let count = |sql: db::sql::Sql| async move {
        sql.fetch_one::<(i64,)>(&ctx.db)
            .await
            .map(|r| r.0 as u64)
            .context("counting what the hold covers")
    };
    let (mut lines, mut total) = (Vec::new(), 0);
    let scope = match scope {
        holds::Scope::Account(a) => {
            for job in &jobs {
                match platform::owned_by(job, &jobs, &a) {
                    Some(sql) => {
                        let n = count(sql).await?;
                        total += n;
                        lines.push(format!(
                            "job {}: {n} row(s) of {} owned by account {a}, or holding its rows",
                            job.name,
                            job.subject_table()
                        ));
                    }
                    None => lines.push(format!(
                        "job {}: not covered (it has no `owner` column, and none of its rows is \
                         another job's subject with one, so account holds cannot reach it)",
                        job.name
                    )),
                }
            }
            holds::Scope::Account(a)
        }
        holds::Scope::Job(j) => {
            let Some(job) = jobs.iter().find(|x| x.name == j) else {
                lines.push(not_loaded(ctx, &j));
                return Ok((holds::Scope::Job(j), lines, None));
            };
            let n = count(platform::subject_rows(job)).await?;
            total += n;
            lines.push(format!(
                "job {j}: every subject, {n} row(s) of {} now",
                job.subject_table()
            ));
            holds::Scope::Job(j)
        }
        holds::Scope::Subject { job: j, key } => {
            let Some(job) = jobs.iter().find(|x| x.name == j) else {
                lines.push(not_loaded(ctx, &j));
                return Ok((holds::Scope::Subject { job: j, key }, lines, None));
            };
            let found: Vec<(String,)> = platform::canonical_key(job, &key)
                .fetch_all(&ctx.db)
                .await
                .map_err(|e| {
                    anyhow!(
                        "`{key}` is not a key of {}.{}: {}",
                        job.subject_table(),
                        job.key,
                        e.as_database_error()
                            .map(|d| d.message().to_string())
                            .unwrap_or_else(|| e.to_string())
                    )
                })?;
            match found.into_iter().next() {
                Some((k,)) => {
                    total += 1;
                    let spelled = if k == key {
                        String::new()
                    } else {
                        format!(" (written `{key}`)")
                    };
                    lines.push(format!(
                        "job {j}: subject {k}{spelled}, a row of {}",
                        job.subject_table()
                    ));
                    holds::Scope::Subject { job: j, key: k }
                }
                None => {
                    lines.push(format!(
                        "job {j}: no row of {} has {} = `{key}`",
                        job.subject_table(),
                        job.key
                    ));
                    holds::Scope::Subject { job: j, key }
                }
            }
        }
    };
    Ok((scope, lines, Some(total)))
}

/// A job a report may name: one with a spec, or one the audit log has entries of (a job whose
/// spec was removed keeps its history).
async fn reported_job(ctx: &Context, name: &str) -> Result<()> {
    if known_job(ctx, name).is_ok() {
        return Ok(());
    }
    if db::audit::has_job(&ctx.db, name).await? {
        return Ok(());
    }
    bail!(
        "there is no job `{name}`: no spec in {} and no entry in the audit log",
        ctx.settings.jobs_dir.display()
    )
}

/// A job a hold may name: one a spec names, or one whose spec file (by its name) does not
/// parse now; any other name is refused as a likely typo unless `force` (a hold for a job about
/// to be deployed).
fn held_job(ctx: &Context, name: &str, force: bool) -> Result<()> {
    let (jobs, rejected) = crate::spec::load_dir_each(&ctx.settings.jobs_dir)?;
    let stem = |r: &crate::spec::Rejected| r.file.file_stem().is_some_and(|s| s == name);
    if force || jobs.iter().any(|j| j.name == name) || rejected.iter().any(stem) {
        return Ok(());
    }
    let unparsed: Vec<String> = rejected
        .iter()
        .map(|r| r.file.display().to_string())
        .collect();
    let also = if unparsed.is_empty() {
        String::new()
    } else {
        format!(
            " (these spec files do not parse, so a name in them is unknown: {})",
            unparsed.join(", ")
        )
    };
    bail!(
        "there is no job `{name}` in {}{also}: check the name (a typo in a legal hold must not \
         pass unnoticed), or pass --force to place it for a job whose spec comes later; no hold \
         was placed",
        ctx.settings.jobs_dir.display()
    )
}

/// What a hold on a job that did not load covers: unknown, and what that means for runs.
fn not_loaded(ctx: &Context, job: &str) -> String {
    let why = ctx
        .rejected()
        .into_iter()
        .find(|r| r.job.as_deref() == Some(job) || r.file.file_stem().is_some_and(|s| s == job))
        .map(|r| {
            let first = r.error.lines().next().unwrap_or_default().to_string();
            format!(
                "its spec is left out ({first}); while this hold is active every run stops, \
                 since what it keeps in the other jobs is unknown: fix the spec, or release the hold"
            )
        })
        .unwrap_or_else(|| {
            "no spec names it now; the hold covers its subjects once one does".to_string()
        });
    format!("job {job}: what the hold covers is unknown: {why}")
}

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
    if let Some(id) = args.request {
        return request_report(ctx, id, &args).await;
    }
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
    if let (Some(from), Some(to)) = (filter.from, filter.to)
        && from >= to
    {
        return config(Err(anyhow!(
            "--from {} is not before --to {}: the period is empty",
            from.to_rfc3339(),
            to.to_rfc3339()
        )));
    }
    let named = filter.job.iter().chain(filter.subject.iter().map(|s| &s.0));
    for job in named {
        config(reported_job(ctx, job).await)?;
    }
    let format = if args.format == "jsonl" {
        Format::Jsonl
    } else {
        Format::Csv
    };
    if args.format == "html" {
        let all = ready_jobs(ctx).await?;
        let n = match &args.out {
            Some(path) => {
                let file = config(create_out(path, args.force))?;
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
            Some(path) => Box::new(config(create_out(path, args.force))?),
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
            let file = config(create_out(path, args.force))?;
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

/// `report --request ID`: the proof of one request.
async fn request_report(ctx: &Context, id: i64, args: &ReportArgs) -> Result<u8> {
    let Some(r) = db::requests::get(&ctx.db, id).await? else {
        return config(Err(anyhow!(
            "there is no request {id}: see `lethe request list`"
        )));
    };
    let all = ready_jobs(ctx).await?;
    let (proof, rows) = crate::report::request::build(ctx, &all, r).await?;
    let mut out: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(std::io::BufWriter::new(config(create_out(
            path, args.force,
        ))?)),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    crate::report::request::write(&proof, &rows, &args.format, &mut out)?;
    eprintln!("request {id}: {}", proof.verdict);
    Ok(0)
}

/// The file a report goes to: created readable by its owner alone (it holds account ids and
/// hold reasons), never through a symbolic link, and an existing file replaced only with
/// `force`.
fn create_out(path: &std::path::Path, force: bool) -> Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut open = std::fs::OpenOptions::new();
    open.write(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
    if force {
        open.create(true).truncate(true);
    } else {
        open.create_new(true);
    }
    let file = open.open(path).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                "it exists: pass --force to replace it (never through a symbolic link)".to_string()
            }
            _ if path.is_symlink() => {
                "it is a symbolic link, which lethe does not follow: name the file itself".into()
            }
            _ => e.to_string(),
        };
        anyhow!("--out {}: {why}; nothing was written", path.display())
    })?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .with_context(|| {
            format!(
                "--out {}: making it readable by its owner alone",
                path.display()
            )
        })?;
    Ok(file)
}

pub(super) async fn audit_verify(
    ctx: &Context,
    anchor: Option<crate::anchor::Target>,
) -> Result<u8> {
    let (anchors, hidden) = match &anchor {
        Some(t) => config(t.read_checked(&*ctx.store).await)?,
        None => Default::default(),
    };
    if !hidden.is_empty() {
        for h in &hidden {
            outln!("audit chain BROKEN: {h}")?;
        }
        return Ok(1);
    }
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
                outln!("audit chain BROKEN: {msg}")?;
                return Ok(1);
            }
        }
    }
    if let Err(msg) = check.end(v.head().0) {
        outln!("audit chain BROKEN: {msg}")?;
        return Ok(1);
    }
    if anchor.is_some() {
        outln!("anchors: all {n_anchors} match the chain")?;
    }
    // The holds table against the chain: a change made outside lethe breaks the promise the
    // chain records, even though every entry still links.
    let findings = db::hold_ledger::findings(&ctx.db).await?;
    let (broken, noted): (Vec<_>, Vec<_>) = findings.iter().partition(|f| !f.unrecorded);
    for f in &noted {
        outln!("note: {} (the next run records it)", f.what)?;
    }
    if !broken.is_empty() {
        for f in &broken {
            outln!("holds BROKEN: {}", f.what)?;
        }
        outln!(
            "the audit chain links, but {} hold(s) differ from what it records: find out who \
             changed them, then `lethe hold confirm ID --by NAME --reason TEXT`",
            broken.len()
        )?;
        return Ok(1);
    }
    let (seq, hash) = v.head();
    outln!(
        "audit chain verified: {} entries, head {seq} {hash}",
        v.checked
    )?;
    Ok(0)
}
