use super::*;

#[test]
fn templates_must_be_directories_with_a_placeholder() {
    assert!(Template::parse("runs/{key}/").is_ok());
    assert!(
        Template::parse("{experiment_id}/{key}/").is_ok(),
        "a placeholder may come first: each value is one segment"
    );
    assert!(Template::parse("runs/").is_err(), "no placeholder");
    assert!(Template::parse("runs/{key}").is_err(), "not a directory");
    assert!(Template::parse("runs/{ke y}/").is_err());
    assert!(Template::parse("runs/{key/").is_err());
}

#[test]
fn rendered_values_stay_one_segment() {
    let t = Template::parse("runs/{key}/").unwrap();
    assert_eq!(t.render(|_| Some("42".into())).unwrap(), "runs/42/");
    for bad in ["", "a/b", "..", "."] {
        assert!(t.render(|_| Some(bad.into())).is_err(), "{bad:?}");
    }
    assert!(t.render(|_| None).is_err(), "NULL");
}

#[test]
fn errors_name_file_line_and_field() {
    let text = "schedule = \"0 3 * * *\"\n[subject]\ntable = \"runs\"\nclock = \"deleted_at\"\nclock_kind = \"timestamptz\"\n\
                [window]\ngrace = \"40d\"\ndeadline = \"30d\"\n";
    let err = parse_job(text, Path::new("jobs/x.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("jobs/x.toml:6:"), "{err}");
    assert!(err.contains("shorter than grace"), "{err}");
    let err = parse_job(
        &text.replace("clock_kind", "clok_kind"),
        Path::new("jobs/x.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("line 5") && err.contains("clok_kind"), "{err}");
}

#[test]
fn rows_are_deleted_deepest_first_and_the_subject_last() {
    let text = "schedule = \"0 3 * * *\"\n[subject]\ntable = \"runs\"\nclock = \"d\"\nclock_kind = \"timestamptz\"\n\
                [window]\ngrace = \"1d\"\ndeadline = \"2d\"\n\
                [[rows]]\ntable = \"files\"\ncolumn = \"snapshot_id\"\nparent = \"snapshots\"\n\
                [[rows]]\ntable = \"snapshots\"\ncolumn = \"run_id\"\n";
    let job = parse_job(text, Path::new("x.toml")).unwrap();
    let order: Vec<&str> = job
        .delete_order()
        .iter()
        .map(|&i| job.nodes[i].name.as_str())
        .collect();
    assert_eq!(order, ["files", "snapshots", "runs"]);
    let cyclic = text.replace(
        "column = \"run_id\"\n",
        "column = \"run_id\"\nparent = \"files\"\n",
    );
    assert!(parse_job(&cyclic, Path::new("x.toml")).is_err());
}

#[test]
fn a_link_over_several_columns_pairs_them_in_order() {
    let base = "schedule = \"0 3 * * *\"\n[subject]\ntable = \"traces\"\nclock = \"d\"\nclock_kind = \"timestamptz\"\n\
                [window]\ngrace = \"1d\"\ndeadline = \"2d\"\n[[rows]]\ntable = \"spans\"\ncolumn = \"trace_id\"\n\
                [[rows]]\ntable = \"span_metrics\"\nparent = \"spans\"\n";
    let pairs = |extra: &str| -> Result<Vec<(String, String)>, String> {
        let job =
            parse_job(&format!("{base}{extra}"), Path::new("x.toml")).map_err(|e| e.to_string())?;
        Ok(job.nodes[2]
            .link
            .as_ref()
            .unwrap()
            .pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect())
    };
    let p = |a: &str, b: &str| (a.to_string(), b.to_string());
    assert_eq!(
        pairs("column = [\"trace_id\", \"span_id\"]\n").unwrap(),
        [p("trace_id", "trace_id"), p("span_id", "span_id")],
        "several columns default to the same names"
    );
    assert_eq!(
        pairs("column = [\"t\", \"s\"]\nparent_column = [\"trace_id\", \"span_id\"]\n").unwrap(),
        [p("t", "trace_id"), p("s", "span_id")]
    );
    assert_eq!(
        pairs("column = \"span_pk\"\n").unwrap(),
        [p("span_pk", "id")]
    );
    for (bad, says) in [
        ("column = []\n", "empty array"),
        ("column = [\"a\", \"a\"]\n", "named twice"),
        (
            "column = [\"a\", \"b\"]\nparent_column = \"x\"\n",
            "give one parent column",
        ),
        ("column = [\"a\", 1]\n", "invalid type"),
    ] {
        let e = pairs(bad).unwrap_err();
        assert!(e.contains(says) && e.starts_with("x.toml:"), "{bad}: {e}");
    }
}
