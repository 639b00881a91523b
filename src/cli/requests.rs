//! `lethe request`: recording erasure requests (with what they cover now, per job), exports,
//! and the list of requests with their due dates.

use super::args::RequestCommand;
use super::{config, outln, ready_jobs};
use crate::context::Context;
use crate::db::holds::Scope;
use crate::db::requests::{self, Kind};
use crate::db::{self, platform};
use crate::spec::Job;
use anyhow::{Context as _, Result, anyhow};
use std::io::Write;

pub(super) async fn request_cmd(ctx: &Context, cmd: RequestCommand) -> Result<u8> {
    config(db::require_current_schema(&ctx.db).await)?;
    match cmd {
        RequestCommand::Erase {
            account,
            subject,
            reason,
            by,
            due,
            dry_run,
            force,
        } => {
            let jobs = ready_jobs(ctx).await?;
            let scope = match (account, subject) {
                (Some(a), None) => Scope::Account(a),
                (None, Some(s)) => config(subject_scope(ctx, &jobs, &s).await)?,
                _ => {
                    return config(Err(anyhow!(
                        "give exactly one of --account, --subject JOB:KEY"
                    )));
                }
            };
            let due = config(
                crate::spec::Window::parse(&due).map_err(|e| anyhow!("--due `{due}`: {e}")),
            )?;
            let by = by.unwrap_or_else(|| ctx.settings.actor.clone());
            erase(
                ctx,
                &jobs,
                scope,
                &reason,
                &by,
                due.seconds(),
                dry_run,
                force,
            )
            .await
        }
        RequestCommand::Export {
            account,
            out,
            reason,
            by,
            force,
        } => {
            let jobs = ready_jobs(ctx).await?;
            let by = by.unwrap_or_else(|| ctx.settings.actor.clone());
            crate::export::run(ctx, &jobs, &account, &out, &reason, &by, force).await
        }
        RequestCommand::List { all } => list(ctx, all).await,
    }
}

/// `JOB:KEY` as a subject scope, its key spelled as the database spells it.
async fn subject_scope(ctx: &Context, jobs: &[Job], s: &str) -> Result<Scope> {
    let (j, key) = s
        .split_once(':')
        .ok_or_else(|| anyhow!("--subject takes JOB:KEY, got `{s}`"))?;
    let job = jobs.iter().find(|x| x.name == j).ok_or_else(|| {
        anyhow!(
            "there is no job `{j}` in {}",
            ctx.settings.jobs_dir.display()
        )
    })?;
    if !job.erase_on_request {
        return Err(anyhow!(
            "job `{j}` takes no erasure requests: its spec ({}) has no `[requests] erase = true`",
            job.file.display()
        ));
    }
    let found: Option<(String,)> = platform::canonical_key(job, key)
        .fetch_all(&ctx.db)
        .await
        .map_err(|e| {
            anyhow!(
                "`{key}` is not a key of {}.{}: {e}",
                job.subject_table(),
                job.key
            )
        })?
        .into_iter()
        .next();
    Ok(Scope::Subject {
        job: j.to_string(),
        key: found.map_or_else(|| key.to_string(), |(k,)| k),
    })
}

/// What an erasure request on `scope` covers now, per job: `(lines, subjects, held)`.
async fn reach(ctx: &Context, jobs: &[Job], scope: &Scope) -> Result<(Vec<String>, i64, i64)> {
    let (account, key) = match scope {
        Scope::Account(a) => (Some(a.as_str()), None),
        Scope::Subject { key, .. } => (None, Some(key.as_str())),
        Scope::Job(_) => unreachable!("requests are never on a whole job"),
    };
    let (mut lines, mut total, mut held_total) = (Vec::new(), 0, 0);
    for job in jobs {
        if let Scope::Subject { job: j, .. } = scope
            && *j != job.name
        {
            continue;
        }
        let Some(sql) = platform::erasure_reach(job, jobs, account, key) else {
            lines.push(format!(
                "job {}: not reached ({})",
                job.name,
                if job.erase_on_request {
                    "it has no `owner` column"
                } else {
                    "its spec has no `[requests] erase = true`"
                }
            ));
            continue;
        };
        let (n, held): (i64, i64) = sql
            .fetch_one(&ctx.db)
            .await
            .with_context(|| format!("counting what the request covers in job `{}`", job.name))?;
        total += n;
        held_total += held;
        let kept = if held > 0 {
            format!(", {held} of them held (kept, and named in the report)")
        } else {
            String::new()
        };
        lines.push(format!(
            "job {}: {n} row(s) of {}{kept}",
            job.name,
            job.subject_table()
        ));
    }
    Ok((lines, total, held_total))
}

#[allow(clippy::too_many_arguments)]
async fn erase(
    ctx: &Context,
    jobs: &[Job],
    scope: Scope,
    reason: &str,
    by: &str,
    due_secs: i64,
    dry_run: bool,
    force: bool,
) -> Result<u8> {
    let what = db::holds::describe(&scope);
    let (live, done) = requests::same_erasure(&ctx.db, &scope).await?;
    if let Some(r) = live {
        eprintln!(
            "erasure request {} on {what} is already open (state {}, due {}): nothing recorded",
            r.id,
            r.state,
            r.due_at.to_rfc3339()
        );
        outln!("{}", r.id)?;
        return Ok(0);
    }
    let (lines, total, held) = reach(ctx, jobs, &scope).await?;
    if total == 0 && !force {
        if let Some(r) = done {
            eprintln!(
                "{what} was erased by request {} (fulfilled {}); nothing of it is left to erase: \
                 nothing recorded",
                r.id,
                r.closed_at.map(|t| t.to_rfc3339()).unwrap_or_default()
            );
            outln!("{}", r.id)?;
            return Ok(0);
        }
        return config(Err(anyhow!(
            "an erasure request on {what} would cover nothing now:\n  {}\ncheck the value (an \
             account id, a job's key), or pass --force to record it anyway; nothing was recorded",
            lines.join("\n  ")
        )));
    }
    if dry_run {
        eprintln!(
            "an erasure request on {what} would cover {total} subject(s) now ({held} held); nothing recorded:"
        );
        for line in lines {
            eprintln!("  {line}");
        }
        return Ok(0);
    }
    let now = db::clock::now(&ctx.db).await?;
    let due = now + chrono::Duration::seconds(due_secs);
    let id = config(
        requests::record(
            &ctx.db,
            Kind::Erase,
            &scope,
            reason,
            by,
            due,
            serde_json::json!({}),
        )
        .await,
    )?;
    outln!("{id}")?;
    eprintln!(
        "erasure request {id} on {what} recorded by {by}, due {}: the next run purges what it \
         covers ({total} subject(s) now, {held} held)",
        due.to_rfc3339()
    );
    for line in lines {
        eprintln!("  {line}");
    }
    Ok(0)
}

async fn list(ctx: &Context, all: bool) -> Result<u8> {
    let now = db::clock::now(&ctx.db).await?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:>6}  {:<7} {:<28} {:<21} {:<21} {:<10} reason",
        "id", "kind", "scope", "requested_at", "due_at", "state"
    )?;
    for r in requests::list(&ctx.db, all).await? {
        let state = if r.state != "fulfilled" && r.due_at < now {
            format!("{} OVERDUE", r.state)
        } else {
            r.state.clone()
        };
        writeln!(
            out,
            "{:>6}  {:<7} {:<28} {:<21} {:<21} {:<10} {} (by {})",
            r.id,
            r.kind,
            r.scope_text(),
            r.requested_at.format("%Y-%m-%dT%H:%M:%SZ"),
            r.due_at.format("%Y-%m-%dT%H:%M:%SZ"),
            state,
            r.reason,
            r.requested_by
        )?;
    }
    Ok(0)
}
