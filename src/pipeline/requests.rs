//! Erasure requests after a run: each request not yet fulfilled is set against what it still
//! covers in every job that takes requests. Nothing left: `fulfilled`. Only held subjects left:
//! `partly`, naming the holds (they stay covered, and go when their hold is released).

use crate::context::Context;
use crate::db::{platform, requests};
use crate::spec::Job;
use anyhow::{Context as _, Result};
use std::collections::{BTreeMap, BTreeSet};

/// What one erasure request still covers: subjects left unheld, and the holds keeping others.
#[derive(Debug, Default)]
pub struct Left {
    pub unheld: i64,
    pub held: i64,
    pub holds: BTreeSet<i64>,
}

/// Per live erasure request, what it covers now in `all`'s jobs.
pub async fn left(ctx: &Context, all: &[Job]) -> Result<BTreeMap<i64, Left>> {
    let mut out: BTreeMap<i64, Left> = BTreeMap::new();
    for job in all {
        let Some(sql) = platform::request_coverage(job, all) else {
            continue;
        };
        let rows: Vec<(i64, Option<i64>, i64)> =
            sql.fetch_all(&ctx.db).await.with_context(|| {
                format!("reading what erasure requests cover in job `{}`", job.name)
            })?;
        for (request, hold, n) in rows {
            let l = out.entry(request).or_default();
            match hold {
                Some(h) => {
                    l.held += n;
                    l.holds.insert(h);
                }
                None => l.unheld += n,
            }
        }
    }
    Ok(out)
}

/// `(unheld, held)`: the subjects of `job` that live erasure requests cover now.
pub async fn covered_in(ctx: &Context, job: &Job, all: &[Job]) -> Result<(i64, i64)> {
    let Some(sql) = platform::request_coverage(job, all) else {
        return Ok((0, 0));
    };
    let rows: Vec<(i64, Option<i64>, i64)> = sql.fetch_all(&ctx.db).await?;
    Ok(rows.iter().fold((0, 0), |(u, h), (_, hold, n)| {
        if hold.is_some() {
            (u, h + n)
        } else {
            (u + n, h)
        }
    }))
}

/// Closes the erasure requests nothing unheld is left of. Skipped when a job spec did not
/// load: what a request covers in it is unknown.
pub async fn settle(ctx: &Context, all: &[Job]) -> Result<()> {
    if !ctx.rejected().is_empty() {
        return Ok(());
    }
    let live = requests::live_erasures(&ctx.db).await?;
    if live.is_empty() {
        return Ok(());
    }
    let left = left(ctx, all).await?;
    for r in &live {
        let l = left.get(&r.id);
        let (unheld, held) = l.map_or((0, 0), |l| (l.unheld, l.held));
        if unheld > 0 {
            continue;
        }
        let holds: Vec<i64> = l
            .map(|l| l.holds.iter().copied().collect())
            .unwrap_or_default();
        let state = if held > 0 { "partly" } else { "fulfilled" };
        requests::close(&ctx.db, r, state, &holds, held).await?;
        tracing::info!(request = r.id, state, held, "erasure request settled");
    }
    Ok(())
}
