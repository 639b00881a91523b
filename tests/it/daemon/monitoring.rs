//! What the daemon tells its monitoring: metrics a stock Prometheus reads (checked with
//! `promtool` and against every series the shipped alert rules and dashboard use), outcomes
//! that need an operator, and a liveness probe that fails when the daemon is wedged.

use super::*;

/// Every sample of a Prometheus text exposition: name → the label names it carries.
fn series(body: &str) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let mut out: std::collections::BTreeMap<_, std::collections::BTreeSet<String>> =
        Default::default();
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = out.entry(line[..name_end].to_string()).or_default();
        if let Some(inner) = line[name_end..]
            .strip_prefix('{')
            .and_then(|r| r.split_once('}'))
        {
            let re = regex_lite::Regex::new(r#"([a-zA-Z_][a-zA-Z0-9_]*)="#).unwrap();
            labels.extend(re.captures_iter(inner.0).map(|c| c[1].to_string()));
        }
    }
    out
}

/// What a query text uses: (metric names, label names in `lethe_…{…}` selectors of each
/// metric, label names in `by (…)` / `on (…)` / `without (…)` clauses).
type Used = (
    std::collections::BTreeSet<String>,
    Vec<(String, String)>,
    std::collections::BTreeSet<String>,
);

fn used_in(text: &str) -> Used {
    let name = regex_lite::Regex::new(r"\blethe_[a-z_]+\b").unwrap();
    let selector = regex_lite::Regex::new(r#"\b(lethe_[a-z_]+)\s*\{([^}]*)\}"#).unwrap();
    let matcher = regex_lite::Regex::new(r#"([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)"#).unwrap();
    let clause = regex_lite::Regex::new(
        r"\b(?:by|on|without|ignoring|group_left|group_right)\s*\(([^)]*)\)",
    )
    .unwrap();
    let names = name
        .find_iter(text)
        .map(|m| m.as_str().to_string())
        .collect();
    let mut in_selectors = Vec::new();
    for c in selector.captures_iter(text) {
        // JSON escapes quotes inside the dashboard's queries.
        let inner = c[2].replace("\\\"", "\"");
        for m in matcher.captures_iter(&inner) {
            in_selectors.push((c[1].to_string(), m[1].to_string()));
        }
    }
    let in_clauses = clause
        .captures_iter(text)
        .flat_map(|c| {
            c[1].split(',')
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
        })
        .collect();
    (names, in_selectors, in_clauses)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_prometheus_reads_every_series_the_alerts_and_the_dashboard_use() {
    let w = World::new(Versioning::Unversioned).await;
    w.account(1, "free", None).await;
    w.run_row(1, 1, Some(GRACE + 60)).await;
    w.run_row(2, 1, Some(DAY)).await; // in grace: gives the job a next deadline
    set_schedule(&w, "deleted-runs.toml", "*/2 * * * * *");
    let mut d = Daemon::start(&w, &[]);
    let job = "{lethe_job=\"deleted-runs\"}";
    wait_for("a successful run counted", &d, async || {
        d.metric(&format!("lethe_last_success_timestamp_seconds{job}"))
            .is_some()
            && d.metric("lethe_object_store_up") == Some(1.0)
    })
    .await;

    // The classic text format (what curl and promtool get) passes promtool's own lint.
    let (code, body) = d.get("/metrics").unwrap();
    assert_eq!(code, 200);
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (scripts/test.sh installs Debian's prometheus package)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Prometheus asks for OpenMetrics and gets it.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: test\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n\r\n"
    )
    .unwrap();
    let mut om = String::new();
    s.read_to_string(&mut om).unwrap();
    assert!(
        om.contains("Content-Type: application/openmetrics-text"),
        "{om}"
    );
    assert!(om.ends_with("# EOF\n"), "{om}");

    // No series is labelled `job` (Prometheus would rename it `exported_job`).
    let exported = series(&body);
    for (name, labels) in &exported {
        assert!(!labels.contains("job"), "{name} carries a `job` label");
    }
    for name in [
        "lethe_subjects_purged_total",
        "lethe_subjects_held_total",
        "lethe_subjects_storage_held_total",
        "lethe_subjects_failed_total",
        "lethe_rows_deleted_total",
        "lethe_object_versions_deleted_total",
        "lethe_run_duration_seconds_bucket",
        "lethe_oldest_overdue_age_seconds",
        "lethe_next_deadline_timestamp_seconds",
        "lethe_schedule_period_seconds",
    ] {
        assert!(
            exported.get(name).is_some_and(|l| l.contains("lethe_job")),
            "{name} per job in\n{body}"
        );
    }
    assert_eq!(
        d.metric(&format!("lethe_subjects_purged_total{job}")),
        Some(1.0)
    );
    assert_eq!(
        d.metric(&format!("lethe_rows_deleted_total{job}")),
        Some(7.0)
    );
    assert_eq!(
        d.metric(&format!("lethe_schedule_period_seconds{job}")),
        Some(2.0)
    );
    assert!(
        d.metric("lethe_run_duration_seconds_count{lethe_job=\"deleted-runs\"}")
            .is_some_and(|n| n >= 1.0)
    );
    let deadline = d
        .metric(&format!("lethe_next_deadline_timestamp_seconds{job}"))
        .unwrap();
    let now = chrono::Utc::now().timestamp() as f64;
    assert!(
        deadline > now + 20.0 * DAY as f64 && deadline < now + 30.0 * DAY as f64,
        "run 2 was deleted a day ago with a 30-day deadline: {deadline} vs now {now}"
    );

    // Every metric and label the shipped alert rules and dashboard use is exported.
    let root = crate::helpers::repo();
    let mut texts = Vec::new();
    for dir in ["deploy/prometheus", "deploy/grafana"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let p = entry.unwrap().path();
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
            if ["yaml", "yml", "json"].contains(&ext) {
                texts.push((p.clone(), std::fs::read_to_string(&p).unwrap()));
            }
        }
    }
    assert!(texts.len() >= 2, "rules and dashboard: {texts:?}");
    let all_labels: std::collections::BTreeSet<String> =
        exported.values().flatten().cloned().collect();
    for (path, text) in &texts {
        let (names, selectors, clauses) = used_in(text);
        // `lethe_job` is a label, not a metric.
        for name in names.iter().filter(|n| !all_labels.contains(*n)) {
            assert!(
                exported.contains_key(name),
                "{}: {name} is not exported",
                path.display()
            );
        }
        for (name, label) in &selectors {
            assert!(
                exported[name].contains(label) || label == "instance",
                "{}: {name} has no label {label}",
                path.display()
            );
        }
        // `job` and `instance` are the labels Prometheus gives every target (`up` has them).
        for label in &clauses {
            assert!(
                all_labels.contains(label) || ["job", "instance"].contains(&label.as_str()),
                "{}: no lethe series has the label {label} it aggregates by",
                path.display()
            );
        }
    }
    assert_eq!(d.get("/healthz").unwrap(), (200, "ok\n".to_string()));
    assert_eq!(d.terminate().0, 0, "{}", d.logs());
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_refusal_and_an_unreachable_store_each_show_in_the_metrics() {
    let w = World::new(Versioning::Unversioned).await;
    deletable_runs(&w, 2).await;
    set_schedule(&w, "deleted-runs.toml", "0 3 * * *");
    // The newest time lethe recorded is 30 days ago: the clock guard refuses the run.
    w.sql(
        "INSERT INTO lethe.job_runs (job, started_at, finished_at, status, host)
         VALUES ('deleted-runs', now() - interval '30 days', now() - interval '30 days', 'ok', 'test')",
    )
    .await;
    let mut d = Daemon::start(&w, &[]);
    let refused = "lethe_runs_total{lethe_job=\"deleted-runs\",status=\"clock_refused\"}";
    let failed = "lethe_runs_total{lethe_job=\"deleted-runs\",status=\"failed\"}";
    wait_for("the refused run", &d, async || {
        d.metric(refused).is_some_and(|n| n >= 1.0)
    })
    .await;
    assert_eq!(d.metric(failed), Some(0.0), "a refusal is not a failure");
    assert_eq!(d.metric("lethe_object_store_up"), Some(1.0));
    assert_eq!(
        w.count("SELECT count(*) FROM runs").await,
        2,
        "nothing deleted"
    );
    // The refusal and its fix are in the logs; the port says ready, in a word.
    assert_eq!(d.get("/readyz").unwrap(), (200, "ready\n".to_string()));
    assert!(d.logs().contains("lethe clock confirm"), "{}", d.logs());
    assert_eq!(d.terminate().0, 0, "{}", d.logs());

    // The store does not answer (nothing listens on this port): the run fails outright.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{dead}");
    let mut d = Daemon::start(
        &w,
        &[
            ("AWS_ENDPOINT_URL", &endpoint),
            ("LETHE_S3_ATTEMPTS", "1"),
            ("LETHE_S3_TIMEOUT_SECONDS", "2"),
        ],
    );
    wait_for("the failed run", &d, async || {
        d.metric(failed).is_some_and(|n| n >= 1.0)
    })
    .await;
    assert_eq!(d.metric("lethe_object_store_up"), Some(0.0));
    assert_eq!(d.metric("lethe_database_up"), Some(1.0));
    // The database answers: ready. Which store did not answer, and where, is for the logs and
    // the metrics, not for whoever reaches the port.
    assert_eq!(d.get("/readyz").unwrap(), (200, "ready\n".to_string()));
    assert!(
        d.logs().contains("the object store does not answer") && d.logs().contains(&w.bucket),
        "{}",
        d.logs()
    );
    assert_eq!(
        w.count("SELECT count(*) FROM runs").await,
        2,
        "nothing deleted"
    );
    assert_eq!(d.terminate().0, 0, "{}", d.logs());
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wedged_daemon_fails_its_liveness_probe_while_still_answering() {
    let w = World::new(Versioning::Unversioned).await;
    // Negative control: the main loop blocks its thread after its first tick; the listener
    // keeps answering on the runtime's workers.
    let d = Daemon::start(
        &w,
        &[
            ("LETHE_NEGATIVE_CONTROL", "wedged-loop"),
            ("LETHE_LIVENESS_SECONDS", "10"),
        ],
    );
    wait_for("the daemon to start", &d, async || {
        d.logs().contains("daemon started")
    })
    .await;
    assert_eq!(d.get("/healthz").unwrap(), (200, "ok\n".to_string()));
    let t = Instant::now();
    let (code, body) = loop {
        let (code, body) = d.get("/healthz").unwrap();
        if code != 200 {
            break (code, body);
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "still alive after 30 s: {}",
            d.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("main loop has not ticked") && !body.contains("scheduler"),
        "{body}"
    );
    assert!(
        t.elapsed() >= Duration::from_secs(4),
        "failed before LETHE_LIVENESS_SECONDS passed: {body}"
    );
    w.cleanup().await;
}

/// The port is bounded and asks nothing of the database: past the listener's connection limit
/// (16) further clients are closed at once, while the ones it took are let go after its read
/// timeout; a burst of scrapes and probes adds no database work (readiness comes from the
/// daemon's own periodic check); and once the crowd is gone it answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_is_bounded_and_asks_nothing_of_the_database() {
    let w = World::new(Versioning::Unversioned).await;
    let d = Daemon::start(&w, &[]);
    wait_for("the daemon to start", &d, async || {
        d.logs().contains("daemon started")
    })
    .await;

    // Its catch-up runs at start are done (their transactions are not the requests').
    wait_for("the catch-up runs", &d, async || {
        d.logs().matches("job finished").count() >= 3
    })
    .await;
    // 200 scrapes and probes: the database's committed transactions move only with the
    // daemon's own work (its check every 5 s), where a query per request would add 200. A backend
    // publishes its counts when its session ends: the daemon's sessions are ended before and
    // after (its pool opens new ones), so both readings are complete.
    let flushed = async || {
        w.sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        w.count("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
            .await
    };
    let before = flushed().await;
    for i in 0..200 {
        let path = if i % 2 == 0 { "/metrics" } else { "/readyz" };
        assert_eq!(d.get(path).unwrap().0, 200);
    }
    let added = flushed().await - before;
    assert!(
        added < 100,
        "200 requests added {added} transactions to the platform database"
    );

    // 40 clients connect and send nothing.
    let idle: Vec<std::net::TcpStream> = (0..40)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", d.port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let mut closed_at_once = 0;
    for s in &idle {
        s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 64];
        match (&*s).read(&mut b) {
            Ok(0) => closed_at_once += 1,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => closed_at_once += 1,
            _ => {}
        }
    }
    assert!(
        closed_at_once >= 40 - 16,
        "only {closed_at_once} of 40 idle connections were turned away at once"
    );
    // The ones it took are let go after the read timeout (5 s).
    let t = Instant::now();
    for s in &idle {
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut rest = Vec::new();
        let _ = (&*s).read_to_end(&mut rest);
    }
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "idle connections held for {:?}",
        t.elapsed()
    );
    drop(idle);
    assert_eq!(d.get("/healthz").unwrap(), (200, "ok\n".to_string()));
    assert_eq!(d.get("/readyz").unwrap(), (200, "ready\n".to_string()));
    w.cleanup().await;
}
