use super::*;
use crate::spec::compile::parse_job;
use std::path::Path;

fn job(file: &str, filter: Option<&str>) -> Job {
    let filter = filter.map_or(String::new(), |f| format!("filter = {f:?}\n"));
    let text = format!(
        "schedule = \"0 3 * * *\"\n[subject]\ntable = \"runs\"\nclock = \"d\"\nclock_kind = \"timestamptz\"\n\
         {filter}[window]\ngrace = \"1d\"\ndeadline = \"2d\"\n"
    );
    parse_job(&text, Path::new(file)).unwrap()
}

fn overlaps(a: Option<&str>, b: Option<&str>) -> Vec<String> {
    let mut errors = Vec::new();
    check_overlaps(&[job("a.toml", a), job("b.toml", b)], &mut errors);
    errors
}

#[test]
fn jobs_on_one_table_must_pin_a_column_to_different_values() {
    for (a, b) in [
        (Some("plan = 'free'"), Some("plan = 'team'")),
        (
            Some("plan IN ('free', 'pro') AND stage = 'deleted'"),
            Some("stage = 'deleted' AND plan = 'team'"),
        ),
    ] {
        assert_eq!(overlaps(a, b), Vec::<String>::new(), "{a:?} / {b:?}");
    }
    for (a, b) in [
        (None, Some("plan = 'team'")),
        (Some("plan = 'free'"), Some("plan IN ('free', 'team')")),
        (Some("plan = 'free' OR plan = 'pro'"), Some("plan = 'team'")),
        (Some("plan <> 'free'"), Some("plan = 'team'")),
        (Some("plan = 'free'"), Some("stage = 'deleted'")),
        // Equal once the database casts them to the column's type, or by its collation.
        (Some("n = 1"), Some("n = '01'")),
        (Some("n IN (2, 3)"), Some("n = '3.0'")),
        (Some("active = true"), Some("active = 't'")),
        (Some("plan = 'Free'"), Some("plan = ' free'")),
    ] {
        let e = overlaps(a, b);
        assert_eq!(e.len(), 1, "{a:?} / {b:?}");
        assert!(
            e[0].starts_with("b.toml:3:") && e[0].contains("job `a` (a.toml)"),
            "{e:?}"
        );
    }
}
