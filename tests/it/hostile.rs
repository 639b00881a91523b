//! Hostile specs: a corpus of malformed and dangerous job specs (`tests/hostile-specs/`, one
//! file each, with what its error must name in `EXPECTED.tsv`). Each, placed beside the shipped
//! specs, makes `lethe run --all` refuse to start: exit 2, an error naming the file, a line and
//! the offending field or value, and nothing deleted.

use crate::helpers::{DAY, World, repo};
use lethe::storage::Versioning;

fn corpus() -> Vec<(String, String)> {
    let dir = repo().join("tests/hostile-specs");
    std::fs::read_to_string(dir.join("EXPECTED.tsv"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (file, needle) = l.split_once('\t').expect("file<TAB>needle");
            (file.to_string(), needle.to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_spec_is_refused_naming_file_line_and_field_and_nothing_is_deleted() {
    let w = World::new(Versioning::Unversioned).await;
    w.account(1, "free", None).await;
    w.run_row(1, 1, Some(10 * DAY)).await;
    w.snapshot(10, 1, 1, Some(10 * DAY)).await;
    let cases = corpus();
    assert!(cases.len() >= 50, "the corpus has {} specs", cases.len());
    let line = regex_lite::Regex::new(r"\.toml:\d+|line \d+").unwrap();
    let mut wrong = Vec::new();
    let mut check = |file: &str, needle: &str, text: &[u8], needs_line: bool| {
        w.use_specs(&repo().join("jobs"), &["deleted-runs.toml"]);
        std::fs::write(w.jobs_dir.join(file), text).unwrap();
        let (code, _, err) = w.cli(&["run", "--all"]);
        let problems: Vec<&str> = [
            (code != 2).then_some("exit code is not 2"),
            (!err.contains(file)).then_some("the file is not named"),
            (needs_line && !line.is_match(&err)).then_some("no line is named"),
            (!err.to_lowercase().contains(&needle.to_lowercase()))
                .then_some("the field is not named"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !problems.is_empty() {
            wrong.push(format!("{file} ({}): {err}", problems.join(", ")));
        }
        std::fs::remove_file(w.jobs_dir.join(file)).unwrap();
    };
    for (file, needle) in &cases {
        let text = std::fs::read(repo().join("tests/hostile-specs").join(file)).unwrap();
        check(file, needle, &text, true);
    }
    // A spec larger than a spec may be (1 MiB), generated here rather than committed. The whole
    // file is the problem, so no line is named.
    let mut huge = std::fs::read(repo().join("jobs/deleted-runs.toml")).unwrap();
    huge.extend(std::iter::repeat_n(b"# padding\n".as_slice(), 110_000).flatten());
    check("huge.toml", "1 MiB", &huge, false);
    assert!(
        wrong.is_empty(),
        "{} of {} specs:\n{}",
        wrong.len(),
        cases.len() + 1,
        wrong.join("\n")
    );

    assert_eq!(w.rows_of_run(1).await, 7, "rows were deleted");
    assert_eq!(w.keys("runs/1/").await.len(), 2, "objects were deleted");
    assert_eq!(w.keys("snaps/10/").await.len(), 1, "objects were deleted");
    assert_eq!(
        w.count("SELECT count(*) FROM lethe.audit_log").await,
        0,
        "nothing was even recorded"
    );
    w.cleanup().await;
}
