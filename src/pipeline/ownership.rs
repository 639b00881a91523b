//! The ownership proof (invariant 7), right before a batch's first delete: a location is purged
//! only when no row the batch does not purge, in any table any loaded job maps to objects,
//! points at it or inside it. A row's URI is a claim, never the truth; the rest of the database
//! decides. A row pointing above a location (an MLflow experiment's directory over its runs') is
//! no claim on it.
//!
//! It owns the questions asked (every URI column, every prefix template and every `[[protects]]`
//! column of every loaded job) and what a claim means for a subject (it fails, alone); the SQL is
//! `db::platform::claims`. It never deletes, and it never stops the batch: a subject whose
//! location is claimed fails with the claiming rows named, and the others go on.

use crate::context::Context;
use crate::db::platform::{self, Claim, Places};
use crate::domain::Location;
use crate::spec::{Ident, Job, ObjectSource, TableName};
use std::collections::{BTreeSet, HashMap};

/// For each subject of `subjects` (key and locations) whose objects another row claims, why.
/// The rows these subjects purge (their own and their `[[rows]]` tree) are no claim.
pub(super) async fn claimed(
    ctx: &Context,
    job: &Job,
    all: &[Job],
    subjects: &[(String, Vec<Location>)],
) -> HashMap<String, String> {
    claimed_as(ctx, job, all, subjects, false).await
}

/// As `claimed`, with the subjects' own rows no claim whatever their state (live subjects too):
/// whether anything else claims their objects, for an export.
pub async fn claimed_by_others(
    ctx: &Context,
    job: &Job,
    all: &[Job],
    subjects: &[(String, Vec<Location>)],
) -> HashMap<String, String> {
    claimed_as(ctx, job, all, subjects, true).await
}

async fn claimed_as(
    ctx: &Context,
    job: &Job,
    all: &[Job],
    subjects: &[(String, Vec<Location>)],
    whole: bool,
) -> HashMap<String, String> {
    let mut why: HashMap<String, String> = HashMap::new();
    if subjects.is_empty() || crate::controls::on("no-ownership-proof") {
        return why;
    }
    let keys: Vec<String> = subjects.iter().map(|(k, _)| k.clone()).collect();
    let file_root = ctx
        .settings
        .object_root
        .as_deref()
        .map(|r| format!("file://{}/", r.to_string_lossy().trim_end_matches('/')));
    let uri_base = |bucket: &str| match &file_root {
        Some(root) => format!("{root}{bucket}/"),
        None => format!("s3://{bucket}/"),
    };
    let asks = questions(all);
    let mut asked = Vec::new();
    let mut statements = Vec::new();
    for ask in &asks {
        // The places of this question, and which subject and location each stands for.
        let mut places: Vec<String> = Vec::new();
        let mut owners: Vec<(&str, &Location)> = Vec::new();
        for (key, locations) in subjects {
            for l in locations {
                for place in places_of(l, ask, &uri_base(&l.bucket)) {
                    places.push(place);
                    owners.push((key, l));
                }
            }
        }
        if !places.is_empty() {
            statements.push(platform::claims(
                job,
                &keys,
                &ask.claim,
                &Places(&places),
                whole,
            ));
            asked.push((ask, owners));
        }
    }
    let started = std::time::Instant::now();
    let answers = match platform::fetch_claims(&ctx.db, &statements).await {
        Ok(answers) => answers,
        Err(e) => {
            // Unproven is unowned: every subject asked about fails, nothing is deleted.
            let msg = format!("the ownership proof could not be made: {e:#}; nothing was deleted");
            for (key, _) in subjects {
                why.insert(key.clone(), msg.clone());
            }
            return why;
        }
    };
    tracing::debug!(
        questions = statements.len(),
        ms = started.elapsed().as_millis() as u64,
        "ownership asked"
    );
    for ((ask, owners), rows) in asked.into_iter().zip(answers) {
        for (place, n, example, name) in rows {
            // An index that names no place asked about claims them all: unproven is unowned.
            let asked = match place.parse::<usize>().ok().and_then(|i| owners.get(i)) {
                Some(one) => vec![*one],
                None => owners.clone(),
            };
            let example = example
                .as_deref()
                .unwrap_or_default()
                .escape_debug()
                .to_string();
            let name = name
                .as_deref()
                .map(|v| format!(" (row {} = {})", ask.name, v.escape_debug()))
                .unwrap_or_default();
            for (key, location) in asked {
                why.entry(key.to_string()).or_insert_with(|| {
                    format!(
                        "its location {location} holds what {n} row(s) of {} not purged with it \
                         point at, e.g. `{example}`{name}: the objects there are not this \
                         subject's alone; refused, nothing was deleted",
                        ask.what
                    )
                });
            }
        }
    }
    why
}

/// One question the proof asks of the database: a claim, and how its places are spelt.
struct Ask<'a> {
    claim: Claim<'a>,
    /// `Some(bucket)` for a template (places are keys in that bucket); `None` for URIs.
    bucket: Option<&'a str>,
    /// `table.column` or `table prefix template`, for errors.
    what: String,
    /// The column naming a claiming row, for errors.
    name: String,
}

/// Every claim of every loaded job, each asked once: a URI column per table and column, a
/// template per job and entry, and each `[[protects]]` column.
fn questions(all: &[Job]) -> Vec<Ask<'_>> {
    let mut asks = Vec::new();
    let mut uri_seen = BTreeSet::new();
    let mut uri = |table: &TableName, column: &Ident| {
        if !uri_seen.insert((table.to_string(), column.to_string())) {
            return;
        }
        // A key column that names the table's rows: that of a job whose subject table it is.
        let name = all
            .iter()
            .find(|j| j.subject_table() == table)
            .map(|j| j.key.clone());
        asks.push(Ask {
            what: format!("{table}.{column}"),
            name: name
                .as_ref()
                .map(|n| format!("{table}.{n}"))
                .unwrap_or_default(),
            claim: Claim::Uri {
                table: table.clone(),
                column: column.clone(),
                name,
            },
            bucket: None,
        });
    };
    let mut templates = Vec::new();
    for job in all {
        for src in &job.objects {
            match src {
                ObjectSource::Uri { column, from, .. } => uri(&job.nodes[*from].table, column),
                ObjectSource::Prefix {
                    bucket,
                    template,
                    from,
                    ..
                } => templates.push(Ask {
                    claim: Claim::Template {
                        job,
                        from: *from,
                        template,
                    },
                    bucket: Some(bucket),
                    what: format!(
                        "{} (prefix {} of job {})",
                        job.nodes[*from].table, template, job.name
                    ),
                    name: format!("{}.{}", job.subject_table(), job.key),
                }),
            }
        }
        for p in &job.protects {
            uri(&p.table, &p.column);
        }
    }
    asks.extend(templates);
    asks
}

/// The places a location is asked about, as `ask` spells them: a directory `dir/` (every claim
/// inside it) and the object `dir` (a claim naming it, which names the directory too); for an
/// object-only location, the object alone. A template renders directories only, so it claims an
/// object-only location never.
fn places_of(l: &Location, ask: &Ask, uri_base: &str) -> Vec<String> {
    match ask.bucket {
        None => {
            let mut out = Vec::new();
            if let Some(dir) = l.dir_prefix() {
                out.push(format!("{uri_base}{dir}"));
                out.push(format!("{uri_base}{}", dir.trim_end_matches('/')));
            } else if let Some(k) = l.exact_key() {
                out.push(format!("{uri_base}{k}"));
            }
            out
        }
        Some(bucket) if bucket == l.bucket => {
            l.dir_prefix().map(str::to_string).into_iter().collect()
        }
        Some(_) => Vec::new(),
    }
}
