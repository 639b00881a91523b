//! The report as one self-contained HTML file: the summary, a chart of purges per day split by
//! whether they kept their deadline, the exceptions, and the full table with sorting and
//! filtering. No network fetches: the styles, the chart (inline SVG) and the script are in the
//! file. Rows are streamed into it, so memory stays flat however long the log is.

use super::summary::{self, Summary};
use super::{COLUMNS, Filter, Row, for_each_row};
use crate::context::Context;
use crate::spec::Job;
use anyhow::Result;
use chrono::NaiveDate;
use std::io::Write;

/// Bar colours; the browser test looks for them in its screenshot.
pub const MET: &str = "#2e7d32";
pub const BREACHED: &str = "#c62828";

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Purges per UTC day: (day, met, breached).
async fn per_day(ctx: &Context, filter: &Filter) -> Result<Vec<(NaiveDate, i64, i64)>> {
    crate::db::report::purges_per_day(&ctx.db, &filter.scope()).await
}

fn chart(days: &[(NaiveDate, i64, i64)]) -> String {
    let (w, h, pad) = (900.0, 260.0, 40.0);
    if days.is_empty() {
        return "<p class=\"muted\">No purges in this period.</p>".into();
    }
    let max = days.iter().map(|d| d.1 + d.2).max().unwrap_or(1).max(1) as f64;
    let slot = (w - 2.0 * pad) / days.len() as f64;
    let bar = (slot * 0.8).clamp(2.0, 60.0);
    let y = |v: f64| h - pad - v / max * (h - 2.0 * pad);
    let mut svg = format!(
        "<svg id=\"chart\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\" \
         aria-label=\"Purges per day, met and breached deadlines\">\
         <line x1=\"{pad}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#555\"/>\
         <text x=\"4\" y=\"{top}\" font-size=\"11\">{max}</text>\
         <text x=\"4\" y=\"{b}\" font-size=\"11\">0</text>",
        b = h - pad,
        r = w - pad,
        top = pad,
        max = max as i64
    );
    for (i, (day, met, breached)) in days.iter().enumerate() {
        let x = pad + i as f64 * slot + (slot - bar) / 2.0;
        let (m, br) = (*met as f64, *breached as f64);
        svg.push_str(&format!(
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{:.1}\" fill=\"{MET}\">\
             <title>{day}: {met} met</title></rect>",
            y(m),
            h - pad - y(m)
        ));
        if *breached > 0 {
            svg.push_str(&format!(
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{:.1}\" fill=\"{BREACHED}\">\
                 <title>{day}: {breached} breached</title></rect>",
                y(m + br),
                y(m) - y(m + br)
            ));
        }
        if days.len() <= 31 || i % (days.len() / 15).max(1) == 0 {
            svg.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\">{}</text>",
                x + bar / 2.0,
                h - pad + 14.0,
                day.format("%m-%d")
            ));
        }
    }
    svg.push_str(&format!(
        "<rect x=\"{l}\" y=\"8\" width=\"10\" height=\"10\" fill=\"{MET}\"/>\
         <text x=\"{lt}\" y=\"17\" font-size=\"11\">purged by the deadline</text>\
         <rect x=\"{l2}\" y=\"8\" width=\"10\" height=\"10\" fill=\"{BREACHED}\"/>\
         <text x=\"{lt2}\" y=\"17\" font-size=\"11\">purged after the deadline</text></svg>",
        l = w - 380.0,
        lt = w - 366.0,
        l2 = w - 210.0,
        lt2 = w - 196.0
    ));
    svg
}

fn summary_html(s: &Summary) -> String {
    let t = |d: chrono::DateTime<chrono::Utc>| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut h = String::from(
        "<section id=\"summary\"><h2>Summary</h2><table><thead><tr><th>job</th><th>purged</th>\
         <th>held</th><th>failed</th><th>deadline met</th><th>overdue now</th>\
         <th>held past deadline</th><th>store name</th></tr></thead><tbody>",
    );
    for (job, j) in &s.jobs {
        let share = j
            .deadline_met_share
            .map(|x| format!("{:.1}%", x * 100.0))
            .unwrap_or_else(|| "–".into());
        let overdue_class = if j.overdue_now > 0 {
            " class=\"bad\""
        } else {
            ""
        };
        h.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{share}</td><td{overdue_class}>{}</td><td>{}</td><td>{}</td></tr>",
            esc(job),
            j.purged,
            j.held,
            j.failed,
            j.overdue_now,
            j.held_past_deadline_now,
            j.store_name_now
        ));
    }
    h.push_str("</tbody></table>");
    let overdue: Vec<String> = s
        .jobs
        .iter()
        .flat_map(|(job, j)| {
            j.overdue_subjects.iter().map(move |o| {
                format!(
                    "<li class=\"bad\">{}:{} (owner {}), deadline {}</li>",
                    esc(job),
                    esc(&o.key),
                    esc(o.owner.as_deref().unwrap_or("–")),
                    t(o.deadline_at)
                )
            })
        })
        .chain(s.jobs.iter().flat_map(|(job, j)| {
            j.held_past_deadline_subjects.iter().map(move |o| {
                format!(
                    "<li>held: {}:{}, deadline {}, {}</li>",
                    esc(job),
                    esc(&o.key),
                    t(o.deadline_at),
                    esc(&super::summary::held_by(o.hold_id))
                )
            })
        }))
        .collect();
    if !overdue.is_empty() {
        h.push_str(&format!(
            "<h3>Past their deadline now</h3><ul>{}</ul>",
            overdue.concat()
        ));
    }
    let unnamed: Vec<String> = s
        .jobs
        .iter()
        .flat_map(|(job, j)| {
            j.store_name_subjects.iter().map(move |u| {
                format!(
                    "<li class=\"bad\">{}:{}: {}</li>",
                    esc(job),
                    esc(&u.key),
                    esc(&u.error)
                )
            })
        })
        .collect();
    if !unnamed.is_empty() {
        h.push_str(&format!(
            "<h3>Subjects lethe cannot purge as things are (a name the store keeps \
             differently)</h3><ul>{}</ul>",
            unnamed.concat()
        ));
    }
    h.push_str(&format!(
        "<h3>Holds active in the period ({})</h3><ul>",
        s.holds.len()
    ));
    for hold in &s.holds {
        h.push_str(&format!(
            "<li>hold {} on {}: {} (by {}, placed {}{})</li>",
            hold.id,
            esc(&hold.scope),
            esc(&hold.reason),
            esc(&hold.placed_by),
            t(hold.placed_at),
            hold.released_at
                .map(|r| format!(", released {}", t(r)))
                .unwrap_or_default()
        ));
    }
    h.push_str(&format!("</ul><h3>Runs ({})</h3><ul>", s.runs.len()));
    for r in &s.runs {
        h.push_str(&format!(
            "<li>run {} {} started {}: {}</li>",
            r.id,
            esc(&r.job),
            t(r.started_at),
            esc(&r.status)
        ));
    }
    h.push_str("</ul></section>");
    h
}

fn row_html(r: &Row) -> String {
    let cells: String = r
        .csv_fields()
        .iter()
        .map(|f| format!("<td>{}</td>", esc(f)))
        .collect();
    format!("<tr class=\"{}\">{cells}</tr>\n", esc(&r.outcome))
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:24px;color:#222}\
#summary{background:#e3f2fd;padding:12px 16px;border-radius:6px}\
table{border-collapse:collapse;font-size:13px}th,td{border:1px solid #ccc;padding:3px 6px;text-align:left}\
th{background:#f3f3f3;cursor:pointer}.bad{color:#c62828;font-weight:bold}.muted{color:#777}\
tr.held td{background:#fff8e1}tr.failed td{background:#ffebee}#rows{margin-top:8px}";

const SCRIPT: &str = "(function(){var t=document.getElementById('rows');var f=document.getElementById('filter');\
var b=t.tBodies[0];f.addEventListener('input',function(){var q=f.value.toLowerCase();\
for(var i=0;i<b.rows.length;i++){var r=b.rows[i];r.style.display=r.textContent.toLowerCase().indexOf(q)<0?'none':'';}});\
var hs=t.tHead.rows[0].cells;for(var c=0;c<hs.length;c++){(function(c){var asc=true;hs[c].addEventListener('click',function(){\
var rs=Array.prototype.slice.call(b.rows);rs.sort(function(x,y){var a=x.cells[c].textContent,z=y.cells[c].textContent;\
var n=parseFloat(a),m=parseFloat(z);var k=(!isNaN(n)&&!isNaN(m))?n-m:a.localeCompare(z);return asc?k:-k;});\
asc=!asc;rs.forEach(function(r){b.appendChild(r);});});})(c);}\
document.body.setAttribute('data-ready','1');})();";

/// Writes the HTML report. Returns the number of rows in its full table.
pub async fn write(
    ctx: &Context,
    all: &[Job],
    filter: &Filter,
    out: &mut dyn Write,
) -> Result<u64> {
    let s = summary::build(ctx, all, filter).await?;
    let days = per_day(ctx, filter).await?;
    let period = format!(
        "{} to {}",
        s.from
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|| "the beginning".into()),
        s.to.map(|t| t.to_rfc3339()).unwrap_or_else(|| "now".into())
    );
    write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>lethe compliance report</title><style>{STYLE}</style></head><body>\
         <h1>lethe compliance report</h1><p class=\"muted\">{} (UTC), generated {}</p>{}\
         <h2>Purges per day</h2>{}",
        esc(&period),
        s.generated_at.to_rfc3339(),
        summary_html(&s),
        chart(&days)
    )?;
    let header: String = COLUMNS.iter().map(|c| format!("<th>{c}</th>")).collect();
    write!(
        out,
        "<h2>Exceptions</h2><table id=\"exceptions\"><thead><tr>{header}</tr></thead><tbody>"
    )?;
    for_each_row(&ctx.db, filter, true, |r| {
        out.write_all(row_html(&r).as_bytes())?;
        Ok(())
    })
    .await?;
    write!(
        out,
        "</tbody></table><h2>Every subject</h2>\
         <input id=\"filter\" placeholder=\"filter rows\" size=\"40\">\
         <table id=\"rows\"><thead><tr>{header}</tr></thead><tbody>"
    )?;
    let n = for_each_row(&ctx.db, filter, false, |r| {
        out.write_all(row_html(&r).as_bytes())?;
        Ok(())
    })
    .await?;
    writeln!(
        out,
        "</tbody></table><script>{SCRIPT}</script></body></html>"
    )?;
    out.flush()?;
    Ok(n)
}

/// The proof of one request as a self-contained page: the verdict, the request, the holds that
/// kept anything, and its outcome rows.
pub fn write_request(
    p: &super::request::Proof,
    rows: &[Row],
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let r = &p.request;
    write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>lethe: request {id}\
         </title><style>body{{font-family:sans-serif;margin:2em}}td,th{{border:1px solid #ccc;\
         padding:2px 6px;font-size:13px}}table{{border-collapse:collapse}}#verdict{{font-size:1.2em;\
         font-weight:bold}}</style></head><body><h1>Request {id}: {kind} {scope}</h1>\
         <p id=\"verdict\">{verdict}</p><table id=\"request\">",
        id = r.id,
        kind = esc(&r.kind),
        scope = esc(&r.scope_text()),
        verdict = esc(&p.verdict),
    )?;
    let facts = [
        ("reason", r.reason.clone()),
        ("requested by", r.requested_by.clone()),
        ("requested at", r.requested_at.to_rfc3339()),
        ("due at", r.due_at.to_rfc3339()),
        ("state", r.state.clone()),
        (
            "closed at",
            r.closed_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
        ),
        ("subjects purged", p.subjects_purged.to_string()),
        ("subjects held", p.subjects_held.to_string()),
        ("subjects failed", p.subjects_failed.to_string()),
        ("subjects left", p.subjects_left.to_string()),
        (
            "rows deleted",
            p.rows_by_table
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        (
            "object versions deleted",
            p.object_versions_deleted.to_string(),
        ),
        ("every purge verified", p.all_verified.to_string()),
    ];
    for (k, v) in facts {
        write!(out, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(&v))?;
    }
    write!(
        out,
        "</table><h2>Holds that kept part of it</h2><ul id=\"holds\">"
    )?;
    if p.holds.is_empty() {
        write!(out, "<li>none</li>")?;
    }
    for h in &p.holds {
        write!(
            out,
            "<li>hold {}: {} (placed by {}) {}</li>",
            h.hold_id,
            esc(h.reason.as_deref().unwrap_or("")),
            esc(h.placed_by.as_deref().unwrap_or("")),
            esc(&h.subjects.join(", "))
        )?;
    }
    write!(out, "</ul><h2>Outcomes</h2><table id=\"rows\"><tr>")?;
    for c in COLUMNS {
        write!(out, "<th>{c}</th>")?;
    }
    write!(out, "</tr>")?;
    for row in rows {
        write!(out, "<tr>")?;
        for f in row.csv_fields() {
            write!(out, "<td>{}</td>", esc(&f))?;
        }
        write!(out, "</tr>")?;
    }
    writeln!(out, "</table></body></html>")
}
