//! `lethe report` against a world purged for real: golden CSV and JSON Lines (times and
//! run-dependent numbers normalized), a breached deadline, a hold with its reason, filters.

use crate::helpers::{DAY, World, repo};
use lethe::storage::Versioning;

/// Replaces what differs from run to run (times, margins near a known value) with markers.
fn normalize(text: &str) -> String {
    let time = regex_lite::Regex::new(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ").unwrap();
    time.replace_all(text, "<time>").into_owned()
}

fn golden(name: &str, actual: &str) {
    let path = repo().join("tests/golden").join(name);
    if std::env::var_os("LETHE_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{} is missing (LETHE_BLESS=1 writes it)", path.display()));
    assert_eq!(
        actual, expected,
        "{name} differs from the golden file (LETHE_BLESS=1 rewrites it)"
    );
}

/// Margins are seconds from purge to deadline: round them to days for the golden files.
fn margin_days(v: &str) -> String {
    let s: i64 = v.parse().unwrap();
    format!("{}d", (s as f64 / DAY as f64).round() as i64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_proves_each_deadline_and_names_each_hold() {
    let w = World::new(Versioning::Unversioned).await;
    w.account(1, "free", None).await;
    w.account(2, "free", None).await;
    w.run_row(1, 1, Some(8 * DAY)).await; // purged, 22 days early
    w.run_row(2, 1, Some(9 * DAY)).await; // held
    w.run_row(3, 2, Some(40 * DAY)).await; // purged 10 days after its 30-day deadline
    w.run_row(4, 2, Some(DAY)).await; // in grace: not in the report
    w.hold(&["--subject", "deleted-runs:2"]).await;
    let (code, _, err) = w.cli(&["run", "--job", "deleted-runs"]);
    assert_eq!(code, 0, "{err}");

    let (code, csv, err) = w.cli(&["report", "--format", "csv"]);
    assert_eq!(code, 0, "{err}");
    let mut lines: Vec<String> = csv.lines().map(String::from).collect();
    assert_eq!(lines[0], lethe::report::COLUMNS.join(","));
    assert_eq!(lines.len(), 4, "{csv}");
    let col = |name: &str| {
        lethe::report::COLUMNS
            .iter()
            .position(|c| *c == name)
            .unwrap()
    };
    for line in lines.iter_mut().skip(1) {
        let mut f: Vec<String> = line.split(',').map(String::from).collect();
        let m = col("deadline_margin_seconds");
        if !f[m].is_empty() {
            f[m] = margin_days(&f[m]);
        }
        *line = f.join(",");
    }
    let csv = normalize(&(lines.join("\n") + "\n"));
    golden("report.csv", &csv);
    assert!(
        csv.contains(",3,2,purged,") && csv.contains(",breached,-10d,"),
        "{csv}"
    );
    assert!(
        csv.contains(",1,1,purged,") && csv.contains(",met,22d,"),
        "{csv}"
    );
    assert!(
        csv.contains(",2,1,held,") && csv.contains(",litigation,legal@example.com,"),
        "{csv}"
    );

    let (code, jsonl, err) = w.cli(&["report", "--format", "jsonl", "--job", "deleted-runs"]);
    assert_eq!(code, 0, "{err}");
    // Normalized as text, so the golden file also pins the field order.
    let margin = regex_lite::Regex::new(r#""deadline_margin_seconds":(-?\d+)"#).unwrap();
    let out = margin.replace_all(&jsonl, |c: &regex_lite::Captures| {
        format!(r#""deadline_margin_seconds":"{}""#, margin_days(&c[1]))
    });
    golden("report.jsonl", &normalize(&out));

    // One account, one subject: what a data-subject request needs.
    let (_, acct, _) = w.cli(&["report", "--account", "2", "--format", "jsonl"]);
    let keys: Vec<String> = acct
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["subject_key"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(keys, vec!["3".to_string()]);
    let (_, one, _) = w.cli(&["report", "--subject", "deleted-runs:2", "--format", "jsonl"]);
    assert_eq!(one.lines().count(), 1);
    assert!(one.contains("\"outcome\":\"held\""), "{one}");
    // A period with nothing in it, and a bad date.
    let (code, none, _) = w.cli(&["report", "--from", "2099-01-01"]);
    assert_eq!(code, 0);
    assert_eq!(none.lines().count(), 1, "the header only: {none}");
    let (code, _, err) = w.cli(&["report", "--from", "last tuesday"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--from"), "{err}");
    // --out writes the same report to a file.
    let file = w.jobs_dir.join("report.csv");
    let (code, stdout, _) = w.cli(&["report", "--out", file.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(stdout.is_empty());
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 4);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600,
        "a report holds account ids and hold reasons: its owner alone reads it"
    );
    // An existing file is replaced only with --force; a symbolic link is never followed.
    let (code, _, err) = w.cli(&["report", "--out", file.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--force"), "{err}");
    let (code, _, err) = w.cli(&["report", "--out", file.to_str().unwrap(), "--force"]);
    assert_eq!(code, 0, "{err}");
    let target = w.jobs_dir.join("elsewhere.txt");
    std::fs::write(&target, "keep me").unwrap();
    let link = w.jobs_dir.join("link.csv");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    for force in [false, true] {
        let mut args = vec!["report", "--out", link.to_str().unwrap()];
        if force {
            args.push("--force");
        }
        let (code, _, err) = w.cli(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
    }

    // The summary: outcomes, the share of deadlines met, and what is overdue now, held
    // subjects apart with their holds.
    w.run_row(5, 1, Some(40 * DAY)).await;
    let hold5 = w.hold(&["--subject", "deleted-runs:5"]).await;
    w.run_row(6, 2, Some(35 * DAY)).await; // eligible, past its deadline, not purged yet
    let (code, json, err) = w.cli(&["report", "--summary", "--format", "jsonl"]);
    assert_eq!(code, 0, "{err}");
    let s: serde_json::Value = serde_json::from_str(&json).unwrap();
    let j = &s["jobs"]["deleted-runs"];
    assert_eq!(j["purged"], 2, "{json}");
    assert_eq!(j["held"], 1);
    assert_eq!(j["failed"], 0);
    assert_eq!(j["purged_by_deadline"], 1);
    assert_eq!(j["deadline_met_share"], 0.5);
    assert_eq!(j["overdue_now"], 1);
    assert_eq!(j["overdue_subjects"][0]["key"], "6");
    assert_eq!(j["held_past_deadline_now"], 1);
    assert_eq!(j["held_past_deadline_subjects"][0]["key"], "5");
    assert_eq!(j["held_past_deadline_subjects"][0]["hold_id"], hold5);
    assert_eq!(s["holds"].as_array().unwrap().len(), 2);
    assert_eq!(s["runs"][0]["status"], "ok");
    let (code, text, _) = w.cli(&["report", "--summary"]);
    assert_eq!(code, 0);
    assert!(text.contains("OVERDUE deleted-runs:6"), "{text}");
    assert!(text.contains("50.0%"), "{text}");
    assert!(text.contains("held past deadline deleted-runs:5"), "{text}");
    w.cleanup().await;
}

/// Pixels of exactly this colour in a PNG.
fn pixels_of(png_path: &std::path::Path, rgb: [u8; 3]) -> usize {
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(png_path).unwrap(),
    ));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let step = info.color_type.samples();
    buf[..info.buffer_size()]
        .chunks(step)
        .filter(|p| p[..3] == rgb)
        .count()
}

fn hex(c: &str) -> [u8; 3] {
    let v = u32::from_str_radix(c.trim_start_matches('#'), 16).unwrap();
    [(v >> 16) as u8, (v >> 8) as u8, v as u8]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_report_renders_its_summary_and_chart_in_chromium() {
    let chromium = std::path::Path::new("/usr/bin/chromium");
    assert!(
        chromium.exists(),
        "Debian's chromium is needed (scripts/test.sh installs it: apt-get install chromium)"
    );
    let w = World::new(Versioning::Unversioned).await;
    w.account(1, "free", None).await;
    for id in 1..=6 {
        // Four purged in time, two after their deadline.
        let ago = if id <= 4 { 8 * DAY } else { 40 * DAY };
        w.run_row(id, 1, Some(ago)).await;
    }
    w.run_row(7, 1, Some(9 * DAY)).await;
    w.hold(&["--subject", "deleted-runs:7"]).await;
    let (code, _, err) = w.cli(&["run", "--job", "deleted-runs"]);
    assert_eq!(code, 0, "{err}");
    let html = w.jobs_dir.join("report.html");
    let (code, _, err) = w.cli(&[
        "report",
        "--format",
        "html",
        "--out",
        html.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        !page.contains("src=\"http") && !page.contains("href=\"http") && !page.contains("url(http"),
        "the page must not fetch anything"
    );

    let url = format!("file://{}", html.display());
    let flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
    ];
    let dom = std::process::Command::new(chromium)
        .args(flags)
        .args(["--dump-dom", &url])
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains("data-ready=\"1\""),
        "the page's script did not run: {dom}"
    );
    assert!(
        dom.contains("id=\"summary\"") && dom.contains("66.7%"),
        "{dom}"
    );
    assert!(
        dom.contains("litigation"),
        "the exception names its hold: {dom}"
    );

    let shot = w.jobs_dir.join("report.png");
    let out = std::process::Command::new(chromium)
        .args(flags)
        .arg(format!("--screenshot={}", shot.display()))
        .args(["--window-size=1280,1000", &url])
        .output()
        .unwrap();
    assert!(
        shot.exists(),
        "no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let met = pixels_of(&shot, hex(lethe::report::html::MET));
    let breached = pixels_of(&shot, hex(lethe::report::html::BREACHED));
    let summary = pixels_of(&shot, [0xe3, 0xf2, 0xfd]);
    assert!(
        met > 200,
        "the chart's met bars are not on screen ({met} px)"
    );
    assert!(
        breached > 200,
        "the chart's breached bars are not on screen ({breached} px)"
    );
    assert!(
        summary > 5_000,
        "the summary box is not on screen ({summary} px)"
    );
    w.cleanup().await;
}
