use super::*;

#[test]
fn per_job_series_carry_lethe_job_and_count_each_outcome_apart() {
    let mut m = Metrics {
        database_up: true,
        ..Default::default()
    };
    m.add_job("a\"b", Some(chrono::Duration::hours(24)));
    m.run_finished(
        "a\"b",
        Outcome::partial,
        2.5,
        &[JobReport {
            purged: 3,
            held: 5,
            storage_held: 2,
            failed: 1,
            rows_deleted: 40,
            ..Default::default()
        }],
        None,
    );
    let text = m.render(true);
    for line in [
        "lethe_database_up 1\n",
        "lethe_subjects_purged_total{lethe_job=\"a\\\"b\"} 3\n",
        "lethe_subjects_held_total{lethe_job=\"a\\\"b\"} 3\n",
        "lethe_subjects_storage_held_total{lethe_job=\"a\\\"b\"} 2\n",
        "lethe_subjects_failed_total{lethe_job=\"a\\\"b\"} 1\n",
        "lethe_rows_deleted_total{lethe_job=\"a\\\"b\"} 40\n",
        "lethe_runs_total{lethe_job=\"a\\\"b\",status=\"partial\"} 1\n",
        "lethe_runs_total{lethe_job=\"a\\\"b\",status=\"ok\"} 0\n",
        "lethe_run_duration_seconds_bucket{le=\"5.0\",lethe_job=\"a\\\"b\"} 1\n",
        "lethe_schedule_period_seconds{lethe_job=\"a\\\"b\"} 86400.0\n",
    ] {
        assert!(text.contains(line), "no {line:?} in\n{text}");
    }
    assert!(!text.contains("{job="), "{text}");
    assert!(text.ends_with("# EOF\n"), "{text}");
    let classic = m.render(false);
    assert!(
        classic.contains(
            "# TYPE lethe_subjects_purged_total counter\nlethe_subjects_purged_total{lethe_job=\"a\\\"b\"} 3\n"
        ),
        "{classic}"
    );
    assert!(
        classic.contains("# TYPE lethe_run_duration_seconds histogram\n"),
        "{classic}"
    );
    assert!(!classic.contains("# EOF"), "{classic}");
    m.run_finished("a\"b", Outcome::locked, 0.01, &[], None);
    let text = m.render(true);
    assert!(
        text.contains("lethe_run_duration_seconds_count{lethe_job=\"a\\\"b\"} 1\n")
            && text.contains("lethe_runs_total{lethe_job=\"a\\\"b\",status=\"locked\"} 1\n"),
        "a locked fire is counted, not timed: {text}"
    );
}

#[test]
fn overdue_age_and_deadline_follow_the_plan() {
    let mut m = Metrics::default();
    m.add_job("j", None);
    let at = Utc::now();
    let mut p = PlanCounts {
        job: "j".into(),
        eligible: 1,
        held: 0,
        waiting: 0,
        overdue: 1,
        oldest_eligible_at: Some(at - chrono::Duration::days(30)),
        next_deadline_at: Some(at - chrono::Duration::hours(2)),
        future_clock: 0,
        store_name: 1,
    };
    m.plan("j", &p, None, at);
    let text = m.render(true);
    assert!(
        text.contains("lethe_oldest_overdue_age_seconds{lethe_job=\"j\"} 7200.0\n"),
        "{text}"
    );
    assert!(
        text.contains("lethe_store_name_subjects{lethe_job=\"j\"} 1\n"),
        "{text}"
    );
    assert!(
        !text.contains("lethe_last_success_timestamp_seconds{"),
        "{text}"
    );
    p.next_deadline_at = None;
    p.overdue = 0;
    m.plan("j", &p, Some(at), at);
    let text = m.render(true);
    assert!(
        text.contains("lethe_oldest_overdue_age_seconds{lethe_job=\"j\"} 0.0\n"),
        "{text}"
    );
    assert!(
        !text.contains("lethe_next_deadline_timestamp_seconds{"),
        "{text}"
    );
    assert!(
        text.contains("lethe_last_success_timestamp_seconds{lethe_job=\"j\"}"),
        "{text}"
    );
}
