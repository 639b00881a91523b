//! S3 faults, through a fault-injecting HTTP proxy on loopback in front of SeaweedFS: a share
//! of DELETE, POST `?delete` and LIST requests is answered `503 SlowDown`, half of them before
//! forwarding and half after (the ambiguous case: the server did the work, the client hears
//! it failed). lethe's bounded retries must purge everything at 10% (five attempts per
//! request); at 30% with two attempts whatever is left must be pending with its reason, the
//! exit code non-zero, and a clean rerun must converge. Whatever happens, a held subject or one
//! in grace is untouched and no run loses its rows while keeping an object. The seed is printed;
//! `LETHE_TEST_SEED` replays the fault schedule.

use crate::checker::Checker;
use crate::helpers::{DAY, World};
use lethe::storage::Versioning;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy did, for the test's own checks.
#[derive(Default)]
struct Counts {
    faulted: AtomicU64,
    forwarded_then_faulted: AtomicU64,
    destructive: AtomicU64,
    stalled: AtomicU64,
    keys_failed: AtomicU64,
    swallowed: AtomicU64,
    lists: AtomicU64,
    /// While set, every DeleteObjects request of the purge (keys under `runs/`) is held
    /// unanswered (and counted here); once cleared, the held ones are answered `503 SlowDown`
    /// without having been forwarded.
    refuse_deletes: std::sync::atomic::AtomicBool,
    deletes_refused: AtomicU64,
}

/// What the proxy injects, as shares of the requests (or keys) it may fault.
#[derive(Clone, Copy, Default)]
struct Faults {
    /// `503 SlowDown`, half before forwarding and half after.
    slow_down: f64,
    /// Held past the client's timeout, not forwarded.
    stall: f64,
    /// Per key, inside a `200` DeleteObjects answer: the key reported failed (it was deleted).
    key_error: f64,
    /// DeleteObjects requests not forwarded at all, answered `200` with every key failed.
    swallow: f64,
    /// Every listing held this long before it is forwarded.
    list_delay: std::time::Duration,
    /// Every DeleteObjects answer held this long after the server did the work: a slow store.
    delete_delay: std::time::Duration,
    /// Seconds added to the `Date` of every answer: a store whose clock is off.
    date_skew_secs: i64,
    /// DeleteObjects answered `501 NotImplemented`: a store without batch deletes.
    no_batch_delete: bool,
}

struct Proxy {
    url: String,
    counts: Arc<Counts>,
    faults: Faults,
}

/// Starts a proxy to `upstream` (host:port) that injects `faults`.
async fn proxy(upstream: String, faults: Faults, seed: u64) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let counts = Arc::new(Counts::default());
    let rng = Arc::new(Mutex::new(StdRng::seed_from_u64(seed)));
    let c = counts.clone();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let (upstream, rng, counts) = (upstream.clone(), rng.clone(), c.clone());
            tokio::spawn(async move {
                let _ = serve(client, &upstream, faults, &rng, &counts).await;
            });
        }
    });
    Proxy {
        url,
        counts,
        faults,
    }
}

/// One HTTP/1.1 message: head lines and body.
struct Message {
    head: Vec<String>,
    body: Vec<u8>,
}

/// Reads one message; `bodiless` for the answer to a HEAD request.
async fn read_message<R: AsyncBufReadExt + Unpin>(
    r: &mut R,
    bodiless: bool,
) -> std::io::Result<Option<Message>> {
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Ok(None);
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            break;
        }
        head.push(line);
    }
    let header = |name: &str| {
        head.iter().skip(1).find_map(|h| {
            let (k, v) = h.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let mut body = Vec::new();
    if bodiless {
        return Ok(Some(Message { head, body }));
    }
    if let Some(n) = header("content-length") {
        body.resize(n.parse().unwrap_or(0), 0);
        r.read_exact(&mut body).await?;
    } else if header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).await?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .unwrap_or(0);
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).await?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        // Re-framed with a length.
        head.retain(|h| !h.to_ascii_lowercase().starts_with("transfer-encoding"));
        head.push(format!("Content-Length: {}", body.len()));
    }
    Ok(Some(Message { head, body }))
}

async fn write_message(w: &mut (impl AsyncWriteExt + Unpin), m: &Message) -> std::io::Result<()> {
    let mut out = m.head.join("\r\n").into_bytes();
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(&m.body);
    w.write_all(&out).await?;
    w.flush().await
}

fn slow_down() -> Message {
    let body = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>".to_vec();
    Message {
        head: vec![
            "HTTP/1.1 503 Slow Down".into(),
            "Content-Type: application/xml".into(),
            format!("Content-Length: {}", body.len()),
        ],
        body,
    }
}

fn not_implemented() -> Message {
    let body = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NotImplemented</Code><Message>DeleteObjects is not implemented.</Message></Error>".to_vec();
    Message {
        head: vec![
            "HTTP/1.1 501 Not Implemented".into(),
            "Content-Type: application/xml".into(),
            format!("Content-Length: {}", body.len()),
        ],
        body,
    }
}

/// Requests that delete or list: the ones the issue faults.
fn faultable(request_line: &str) -> bool {
    let mut parts = request_line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let bucket_level = path.trim_matches('/').split('/').count() == 1;
    match method {
        "DELETE" => true,
        "POST" => query
            .split('&')
            .any(|q| q == "delete" || q.starts_with("delete=")),
        "GET" => {
            bucket_level
                && query
                    .split('&')
                    .any(|q| q.starts_with("list-type") || q == "versions" || q == "uploads")
        }
        _ => false,
    }
}

/// Reports a share of the keys of a DeleteObjects request as failed (`InternalError`) in its
/// `200` answer, though the server deleted them: the client must retry them, and find them
/// gone. A quiet request's answer lists only failures, so the failed keys are taken from the
/// request.
fn fail_keys(req: &Message, resp: &mut Message, rate: f64, rng: &Mutex<StdRng>, counts: &Counts) {
    let (Ok(request), Ok(body)) = (
        std::str::from_utf8(&req.body),
        String::from_utf8(resp.body.clone()),
    ) else {
        return;
    };
    let mut errors = String::new();
    for object in request.split("<Object>").skip(1) {
        let inner = object.split("</Object>").next().unwrap_or("");
        if rng.lock().unwrap().random_bool(rate) {
            counts.keys_failed.fetch_add(1, Relaxed);
            errors.push_str(&format!(
                "<Error>{inner}<Code>InternalError</Code><Message>injected</Message></Error>"
            ));
        }
    }
    if errors.is_empty() {
        return;
    }
    // Drop the keys' `Deleted` entries (a verbose answer), then add the errors.
    let mut kept = String::new();
    let mut parts = body.split("<Deleted>");
    kept.push_str(parts.next().unwrap_or(""));
    for part in parts {
        let (inner, rest) = part.split_once("</Deleted>").unwrap_or((part, ""));
        let key = inner.split("</Key>").next().unwrap_or("");
        if !errors.contains(&format!("{key}</Key>")) {
            kept.push_str(&format!("<Deleted>{inner}</Deleted>"));
        }
        kept.push_str(rest);
    }
    let body = match kept.rfind("</DeleteResult>") {
        Some(at) => format!("{}{errors}{}", &kept[..at], &kept[at..]),
        None => return,
    };
    resp.body = body.into_bytes();
    resp.head
        .retain(|h| !h.to_ascii_lowercase().starts_with("content-length"));
    resp.head
        .push(format!("Content-Length: {}", resp.body.len()));
}

/// A `200` answer to a DeleteObjects request that was never forwarded: every key of the
/// request reported failed (`InternalError`), so nothing was deleted and the client must retry.
fn all_keys_failed(req: &Message) -> Message {
    let request = String::from_utf8_lossy(&req.body);
    let mut body = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<DeleteResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">",
    );
    for object in request.split("<Object>").skip(1) {
        let inner = object.split("</Object>").next().unwrap_or("");
        body.push_str(&format!(
            "<Error>{inner}<Code>InternalError</Code><Message>injected</Message></Error>"
        ));
    }
    body.push_str("</DeleteResult>");
    Message {
        head: vec![
            "HTTP/1.1 200 OK".into(),
            "Content-Type: application/xml".into(),
            format!("Content-Length: {}", body.len()),
        ],
        body: body.into_bytes(),
    }
}

async fn serve(
    client: TcpStream,
    upstream: &str,
    faults: Faults,
    rng: &Mutex<StdRng>,
    counts: &Counts,
) -> std::io::Result<()> {
    let (cr, mut cw) = client.into_split();
    let mut cr = BufReader::new(cr);
    let server = TcpStream::connect(upstream).await?;
    let (sr, mut sw) = server.into_split();
    let mut sr = BufReader::new(sr);
    while let Some(req) = read_message(&mut cr, false).await? {
        let line = req.head[0].clone();
        let destructive = line.starts_with("DELETE") || line.starts_with("POST");
        let may = faultable(&line);
        if may && rng.lock().unwrap().random_bool(faults.stall) {
            counts.stalled.fetch_add(1, Relaxed);
            // Past the client's timeout (the tests set 1 s): it gives up on this connection.
            tokio::time::sleep(std::time::Duration::from_secs(3)).await;
            return Ok(());
        }
        let batch_delete = line.starts_with("POST") && line.contains("?delete");
        if batch_delete && faults.no_batch_delete {
            write_message(&mut cw, &not_implemented()).await?;
            continue;
        }
        // The purge's deletes, not the bucket probe before it (a key under `.lethe-probe/`).
        let purge_delete =
            batch_delete && String::from_utf8_lossy(&req.body).contains("<Key>runs/");
        if purge_delete && counts.refuse_deletes.load(Relaxed) {
            counts.deletes_refused.fetch_add(1, Relaxed);
            while counts.refuse_deletes.load(Relaxed) {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            write_message(&mut cw, &slow_down()).await?;
            continue;
        }
        if faults.swallow > 0.0
            && line.starts_with("POST")
            && line.contains("?delete")
            && rng.lock().unwrap().random_bool(faults.swallow)
        {
            counts.swallowed.fetch_add(1, Relaxed);
            write_message(&mut cw, &all_keys_failed(&req)).await?;
            continue;
        }
        if may && line.starts_with("GET") {
            counts.lists.fetch_add(1, Relaxed);
            tokio::time::sleep(faults.list_delay).await;
        }
        let fault = may && rng.lock().unwrap().random_bool(faults.slow_down);
        let after = fault && rng.lock().unwrap().random_bool(0.5);
        if fault && !after {
            counts.faulted.fetch_add(1, Relaxed);
            write_message(&mut cw, &slow_down()).await?;
            continue;
        }
        write_message(&mut sw, &req).await?;
        let mut resp = read_message(&mut sr, line.starts_with("HEAD"))
            .await?
            .ok_or_else(|| std::io::Error::other("upstream closed"))?;
        if faults.date_skew_secs != 0 {
            skew_date(&mut resp, faults.date_skew_secs);
        }
        if line.starts_with("POST") && resp.head[0].contains(" 200") && faults.key_error > 0.0 {
            fail_keys(&req, &mut resp, faults.key_error, rng, counts);
        }
        if destructive {
            counts.destructive.fetch_add(1, Relaxed);
            tokio::time::sleep(faults.delete_delay).await;
        }
        if fault {
            counts.forwarded_then_faulted.fetch_add(1, Relaxed);
            write_message(&mut cw, &slow_down()).await?;
        } else {
            write_message(&mut cw, &resp).await?;
        }
    }
    Ok(())
}

/// Moves the `Date` of an answer by `secs`.
fn skew_date(resp: &mut Message, secs: i64) {
    for h in resp.head.iter_mut().skip(1) {
        let Some((k, v)) = h.split_once(':') else {
            continue;
        };
        if k.trim().eq_ignore_ascii_case("date")
            && let Ok(d) = chrono::DateTime::parse_from_rfc2822(v.trim())
        {
            let moved = d + chrono::Duration::seconds(secs);
            *h = format!("Date: {}", moved.format("%a, %d %b %Y %H:%M:%S GMT"));
        }
    }
}

fn seed() -> u64 {
    let seed = crate::helpers::seed();
    eprintln!("fault schedule seed {seed} (replay: LETHE_TEST_SEED={seed})");
    seed
}

/// A world of `n` deleted runs (two objects each) on a versioned bucket, a held one (1000)
/// and one in grace (1001), with the checker that knows each one's fate.
async fn world(n: i64) -> (World, Checker) {
    let w = World::new(Versioning::Enabled).await;
    w.account(1, "free", None).await;
    w.account(2, "free", None).await;
    w.sql(&format!(
        "INSERT INTO runs SELECT g, 1, 'r', 'deleted', (extract(epoch from now() - interval '10 days') * 1000)::bigint, NULL
             FROM generate_series(1, {n}) g;
         INSERT INTO metrics (run_id, key, value, step) SELECT g, 'loss', 0.5, s FROM generate_series(1, {n}) g, generate_series(1, 3) s;
         INSERT INTO params SELECT g, k, '0.1' FROM generate_series(1, {n}) g, unnest(ARRAY['lr', 'seed']) k;
         INSERT INTO links (destination_type, destination_id, label) SELECT 'RUN', g::text, 'l' FROM generate_series(1, {n}) g"
    ))
    .await;
    w.put_many(
        (1..=n)
            .flat_map(|id| {
                [
                    format!("runs/{id}/model.bin"),
                    format!("runs/{id}/logs/0.txt"),
                ]
            })
            .collect(),
    )
    .await;
    w.run_row(1000, 2, Some(10 * DAY)).await;
    w.run_row(1001, 1, Some(DAY)).await;
    let hold = w.hold(&["--account", "2"]).await;
    let c = Checker::new(&w, &HashMap::from([(1000, hold)])).await;
    assert_eq!(c.counts(), (n as usize, 1, 1));
    (w, c)
}

/// Runs every job through the proxy: (exit code, stderr).
fn run_through(w: &World, p: &Proxy, attempts: &str) -> (i32, String) {
    run_through_env(w, p, &[("LETHE_S3_ATTEMPTS", attempts)])
}

fn run_through_env(w: &World, p: &Proxy, extra: &[(&str, &str)]) -> (i32, String) {
    let out = w.cli_env(
        &["run", "--all"],
        &[
            ("AWS_ENDPOINT_URL", p.url.as_str()),
            ("AWS_ENDPOINT_URL_S3", p.url.as_str()),
            ("LETHE_BATCH_SUBJECTS", "20"),
        ]
        .into_iter()
        .chain(extra.iter().copied())
        .collect::<Vec<_>>(),
    );
    let c = &p.counts;
    let injected = [
        c.faulted.load(Relaxed),
        c.forwarded_then_faulted.load(Relaxed),
        c.stalled.load(Relaxed),
        c.keys_failed.load(Relaxed),
        c.swallowed.load(Relaxed),
    ];
    eprintln!(
        "proxy: 503 unforwarded {}, forwarded then 503 {}, stalled {}, keys reported failed {}, \
         deletes swallowed {}; {} deletes forwarded; exit {}",
        injected[0],
        injected[1],
        injected[2],
        injected[3],
        injected[4],
        c.destructive.load(Relaxed),
        out.0
    );
    // At 1% a short run may draw no fault at all; at 5% and more, none means a broken proxy.
    let f = p.faults;
    if [f.slow_down, f.stall, f.key_error, f.swallow]
        .iter()
        .any(|r| *r >= 0.05)
    {
        assert!(
            injected.iter().sum::<u64>() > 0,
            "the proxy injected no fault"
        );
    }
    (out.0, out.2)
}

/// The real server's host:port, behind the proxy.
fn upstream() -> String {
    std::env::var("AWS_ENDPOINT_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:8333".into())
        .trim_start_matches("http://")
        .to_string()
}

/// At 1% and at 10% SlowDown (half of them answered after the server did the work), every
/// eligible subject is purged in one run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_and_ten_percent_slowdowns_purge_everything_in_one_run() {
    let seed = seed();
    for (rate, n) in [(0.01, 200), (0.10, 60)] {
        let (w, c) = world(n).await;
        let faults = Faults {
            slow_down: rate,
            ..Default::default()
        };
        let p = proxy(upstream(), faults, seed).await;
        // At 10%, `run_through` also checks that the proxy injected faults.
        let (code, _) = run_through(&w, &p, "5");
        c.converged(&w, code).await.assert_clean(seed);
        w.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_percent_slowdowns_leave_reasons_and_a_clean_rerun_converges() {
    let seed = seed();
    let (w, c) = world(60).await;
    let faults = Faults {
        slow_down: 0.30,
        ..Default::default()
    };
    let p = proxy(upstream(), faults, seed).await;
    // Two attempts per request, so faults outlast the retries and work is left over. The
    // checker also holds the exit code to account: work left means non-zero.
    let (code, err) = run_through(&w, &p, "2");
    let f = c.after_run(&w, Some(code)).await;
    f.assert_clean(seed);
    eprintln!(
        "seed {seed}: {} of {} purged through the faults",
        f.purged, f.expected
    );
    if f.purged < f.expected {
        let reasons = w
            .count(
                "SELECT count(*) FROM lethe.work_items WHERE state = 'failed' AND last_error <> ''",
            )
            .await;
        assert!(
            reasons > 0,
            "seed {seed}: unfinished subjects carry no reason: {err}"
        );
    }
    // A clean rerun, straight to the server, converges.
    let (code, _, _) = w.cli(&["run", "--all"]);
    c.converged(&w, code).await.assert_clean(seed);
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalls_per_key_errors_and_swallowed_deletes_are_retried_to_completion() {
    let seed = seed();
    let (w, c) = world(60).await;
    let faults = Faults {
        stall: 0.05,
        key_error: 0.10,
        swallow: 0.10,
        ..Default::default()
    };
    let p = proxy(upstream(), faults, seed).await;
    // A key fails an attempt about one time in five here (a swallowed request fails all its
    // keys, 10%, and 10% of the rest fail on their own), so five attempts left one of the 120
    // keys failing in about one run in seven (measured: 2 of 12 runs with one seed, before and
    // after 4 Dec). Eight attempts make that about one run in 4,000; the test is about every
    // fault being retried, not about the default number of attempts.
    let (code, _) = run_through_env(
        &w,
        &p,
        &[
            ("LETHE_S3_TIMEOUT_SECONDS", "1"),
            ("LETHE_S3_ATTEMPTS", "5"),
            ("LETHE_KEY_RETRIES", "8"),
        ],
    );
    assert!(
        p.counts.keys_failed.load(Relaxed) + p.counts.swallowed.load(Relaxed) > 0,
        "seed {seed}: no key was failed"
    );
    c.converged(&w, code).await.assert_clean(seed);
    w.cleanup().await;
}

// Negative controls: with a known bug switched on (debug builds read
// `LETHE_NEGATIVE_CONTROL`), the same checker must find the damage; otherwise it proves
// nothing.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_without_hold_rechecks_is_caught() {
    let (w, c) = world(10).await;
    let (code, _, _) = w.cli_env(
        &["run", "--all"],
        &[("LETHE_NEGATIVE_CONTROL", "no-hold-recheck")],
    );
    let f = c.after_run(&w, Some(code)).await;
    assert!(
        f.any("run 1000 (Held"),
        "the checker missed a purged held subject: {:?}",
        f.violations
    );
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_rows_before_objects_is_caught_under_faults() {
    let seed = seed();
    let (w, c) = world(30).await;
    let faults = Faults {
        slow_down: 0.6,
        ..Default::default()
    };
    let p = proxy(upstream(), faults, seed).await;
    let (code, _) = run_through_env(
        &w,
        &p,
        &[
            ("LETHE_S3_ATTEMPTS", "1"),
            ("LETHE_KEY_RETRIES", "1"),
            ("LETHE_NEGATIVE_CONTROL", "rows-before-objects"),
        ],
    );
    let f = c.after_run(&w, Some(code)).await;
    assert!(
        f.any("has no rows but kept objects"),
        "seed {seed}: the checker missed rows deleted before their objects: {:?}",
        f.violations
    );
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_plain_deletes_on_a_versioned_bucket_never_converge() {
    let (w, c) = world(10).await;
    let mut code = 0;
    for _ in 0..2 {
        code = w
            .cli_env(
                &["run", "--all"],
                &[("LETHE_NEGATIVE_CONTROL", "plain-deletes")],
            )
            .0;
    }
    let f = c.converged(&w, code).await;
    assert!(
        f.any("not converged") && !f.any("kept objects"),
        "verification keeps the rows, and the convergence check fails: {:?}",
        f.violations
    );
    assert!(
        w.versions("runs/1/").await.iter().any(|v| v.delete_marker),
        "the plain deletes left delete markers"
    );
    w.cleanup().await;
}

/// Keys reported failed counted as deleted: verification then finds them and keeps those
/// subjects' rows, so a run at 80% swallowed deletes no longer purges everything at once.
/// Batches of one subject make 40 DeleteObjects requests, about 32 of them swallowed; the up to
/// three directory-by-directory passes over those subjects get each one through with a chance
/// of about one half, so the run converges about once in 10^10. (At 50%, with three passes, it
/// converged often enough to make the control flaky.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_ignoring_per_key_errors_is_caught() {
    let seed = seed();
    let (w, c) = world(40).await;
    let faults = Faults {
        swallow: 0.8,
        ..Default::default()
    };
    let p = proxy(upstream(), faults, seed).await;
    let (code, _) = run_through_env(
        &w,
        &p,
        &[
            ("LETHE_NEGATIVE_CONTROL", "ignore-key-errors"),
            ("LETHE_BATCH_SUBJECTS", "1"),
        ],
    );
    let f = c.converged(&w, code).await;
    assert!(
        f.any("not converged"),
        "seed {seed}: the checker missed keys that were never deleted: {:?}",
        f.violations
    );
    w.cleanup().await;
}

/// OFFSET paging over the shrinking set of eligible subjects skips whole pages while the run
/// says it is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_offset_pagination_is_caught() {
    let (w, c) = world(120).await;
    let (code, _, err) = w.cli_env(
        &["run", "--all"],
        &[
            ("LETHE_NEGATIVE_CONTROL", "offset-pagination"),
            ("LETHE_BATCH_SUBJECTS", "5"),
        ],
    );
    let f = c.after_run(&w, Some(code)).await;
    assert!(
        f.any("exited 0 but left"),
        "the checker missed subjects skipped by OFFSET paging (exit {code}, {} of {} purged): {:?} {err}",
        f.purged,
        f.expected,
        f.violations
    );
    w.cleanup().await;
}

/// A run cut off from the database while it waits on its listings (held up by the proxy) must
/// confirm its lease before it deletes: meanwhile a hold was placed, its sessions were cut, and
/// another run took the subjects over and recorded the exception. Without the fence the stale
/// run deletes the held subjects' objects, and the checker says so. (`daemon.rs` has the same
/// take-over with a stopped process; this one is timed by the proxy, so the negative control
/// meets exactly the scenario the fenced run passes.)
async fn stale_run_after_takeover(control: &str) -> crate::checker::Findings {
    let seed = seed();
    let (w, mut c) = world(20).await;
    let faults = Faults {
        list_delay: std::time::Duration::from_secs(16),
        ..Default::default()
    };
    let p = proxy(upstream(), faults, seed).await;
    let mut stale = w.spawn_run(
        "lethe-stale",
        &[
            ("AWS_ENDPOINT_URL", &p.url),
            ("AWS_ENDPOINT_URL_S3", &p.url),
            ("LETHE_S3_TIMEOUT_SECONDS", "30"),
            ("LETHE_NEGATIVE_CONTROL", control),
        ],
    );
    // The stale run has claimed the subjects and checked their holds once it lists.
    let t0 = std::time::Instant::now();
    while p.counts.lists.load(Relaxed) == 0 {
        assert!(t0.elapsed().as_secs() < 30, "the run never listed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let hold = w.hold(&["--account", "1"]).await;
    c.hold_account_runs(&w, 1, hold).await;
    // Its database sessions end (a network partition, say), which frees the job's run lock;
    // its process goes on, waiting on the listings.
    let cut = w.cut_sessions("lethe-stale").await;
    assert!(cut > 0, "the stale run had no session to cut");
    // Under the stale run's lease, well before its listings come back: the run lock it lost
    // with its sessions is all the next run needs to take its subjects over.
    let (code, out, err) = w.cli(&["run", "--job", "deleted-runs"]);
    assert_eq!(code, 0, "the run that took over: {out}{err}");
    let stale_exit = stale.wait().unwrap().code();
    eprintln!("the stale run exited {stale_exit:?} after the take-over");
    let f = c.after_run(&w, stale_exit).await;
    w.cleanup().await;
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_lost_its_lease_deletes_nothing_more() {
    let f = stale_run_after_takeover("").await;
    assert!(f.violations.is_empty(), "{:?}", f.violations);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_without_fencing_is_caught() {
    let f = stale_run_after_takeover("no-fencing").await;
    assert!(
        f.any("(Held"),
        "the checker missed a stale run deleting held subjects: {:?}",
        f.violations
    );
}

/// `lethe run --job deleted-runs` (as `app`, with the negative control `control`) through a
/// slow store: each DeleteObjects answer held 150 ms after the work is done, 20 keys a request,
/// one request at a time, so that something can happen while it deletes.
async fn slow_purge(
    w: &World,
    app: &str,
    control: &str,
    seed: u64,
) -> (Proxy, std::process::Child) {
    let faults = Faults {
        delete_delay: std::time::Duration::from_millis(150),
        ..Default::default()
    };
    let p = proxy(upstream(), faults, seed).await;
    let run = w.spawn_run(
        app,
        &[
            ("AWS_ENDPOINT_URL", &p.url),
            ("AWS_ENDPOINT_URL_S3", &p.url),
            ("LETHE_DELETE_BATCH", "20"),
            ("LETHE_DELETE_CONCURRENCY", "1"),
            ("LETHE_NEGATIVE_CONTROL", control),
        ],
    );
    (p, run)
}

/// Runs 1..=20, eligible, 60 objects each on a versioned bucket; odd runs belong to account 1,
/// even ones to account 2, so their keys interleave in every listing. A slow store (each
/// DeleteObjects answer held 150 ms after the work is done, 20 keys a request, one at a time)
/// keeps the purge going for seconds. While it deletes, a hold is placed on account 2. Answers
/// the world, the hold, the account's versions right after the hold committed, and how many it
/// had before the run.
async fn hold_placed_mid_purge(
    control: &str,
) -> (World, i64, Vec<lethe::storage::ObjectVersion>, usize) {
    hold_mid_purge(
        control,
        async |_| (),
        async |w| w.hold(&["--account", "2"]).await,
    )
    .await
}

/// As `hold_placed_mid_purge`, with `before` run on the world before the purge starts and
/// `place` (answering the hold's id) while it deletes the account's objects.
async fn hold_mid_purge(
    control: &str,
    before: impl AsyncFnOnce(&World),
    place: impl AsyncFnOnce(&World) -> i64,
) -> (World, i64, Vec<lethe::storage::ObjectVersion>, usize) {
    let w = World::new(Versioning::Enabled).await;
    w.account(1, "free", None).await;
    w.account(2, "free", None).await;
    for id in 1..=20 {
        w.run_row(id, 2 - id % 2, Some(10 * DAY)).await;
    }
    w.put_many(
        (1..=20)
            .flat_map(|id| (0..58).map(move |i| format!("runs/{id}/f/{i:03}")))
            .collect(),
    )
    .await;
    let account2 = async || {
        let mut v = Vec::new();
        for id in (2..=20).step_by(2) {
            v.extend(w.versions(&format!("runs/{id}/")).await);
        }
        v
    };
    before(&w).await;
    let before = account2().await.len();
    assert_eq!(before, 600);
    let (p, mut run) = slow_purge(&w, "lethe-mid-hold", control, 1).await;
    // Once the purge has reached the account's objects.
    let t = std::time::Instant::now();
    while p.counts.destructive.load(Relaxed) == 0 || account2().await.len() == before {
        assert!(
            t.elapsed().as_secs() < 60,
            "the run never deleted the account's objects"
        );
    }
    let hold = place(&w).await;
    let at_hold = account2().await;
    let status = run.wait().unwrap();
    eprintln!(
        "the run exited {status}; account 2 had {before} versions, {} when the hold committed",
        at_hold.len()
    );
    (w, hold, at_hold, before)
}

/// What a hold placed during the purge must leave: every version the held account had when the
/// hold committed. Answers the versions missing since.
async fn deleted_after_hold(w: &World, at_hold: &[lethe::storage::ObjectVersion]) -> Vec<String> {
    let mut now = std::collections::HashSet::new();
    for id in (2..=20).step_by(2) {
        for v in w.versions(&format!("runs/{id}/")).await {
            now.insert((v.key, v.version_id));
        }
    }
    at_hold
        .iter()
        .filter(|v| !now.contains(&(v.key.clone(), v.version_id.clone())))
        .map(|v| v.key.clone())
        .collect()
}

/// What a hold that takes effect mid-purge must leave: every version the account had when it
/// committed (but the one request that may have passed its check before), the held runs' rows,
/// an exception naming the hold for each, and the other account's runs purged.
async fn assert_the_hold_stopped_the_deletes(
    (w, hold, at_hold, before): (World, i64, Vec<lethe::storage::ObjectVersion>, usize),
) {
    assert!(
        !at_hold.is_empty() && at_hold.len() < before,
        "the hold did not land mid-purge ({} of {before} versions left); nothing was tested",
        at_hold.len()
    );
    // The one request that passed its check before the hold committed (one in flight, 20
    // keys) may still reach the store, possibly after the snapshot above was listed; none after.
    let gone = deleted_after_hold(&w, &at_hold).await;
    assert!(
        gone.len() <= 20,
        "{} versions of the held account were deleted after the hold committed, more than the \
         one request that may have been past its check: {:?}",
        gone.len(),
        &gone[..gone.len().min(5)]
    );
    for id in (2..=20).step_by(2) {
        assert_eq!(w.rows_of_run(id).await, 7, "held run {id} keeps its rows");
    }
    assert_eq!(
        w.count(&format!(
            "SELECT count(*) FROM lethe.work_items WHERE state = 'held' AND hold_id = {hold}
               AND subject_key::bigint % 2 = 0"
        ))
        .await,
        10,
        "every run of the held account is recorded held by the hold"
    );
    assert_eq!(
        w.count(&format!(
            "SELECT count(*) FROM lethe.audit_log WHERE event = 'held' AND hold_id = {hold}"
        ))
        .await,
        10
    );
    for id in (1..=19).step_by(2) {
        assert_eq!(
            w.rows_of_run(id).await,
            0,
            "run {id} of the other account is purged"
        );
        assert!(w.versions(&format!("runs/{id}/")).await.is_empty());
    }
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_placed_while_objects_are_deleted_stops_the_deletes_it_covers() {
    assert_the_hold_stopped_the_deletes(hold_placed_mid_purge("").await).await;
}

/// A released hold made active again with plain SQL (`released_at = NULL`) moves no hold id:
/// the fence reads the holds' change counter, which the trigger bumps for any update.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_reactivated_by_sql_mid_purge_stops_the_deletes_it_covers() {
    let released = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let (r1, r2) = (released.clone(), released.clone());
    let world = hold_mid_purge(
        "",
        async move |w| {
            let id = w.hold(&["--account", "2"]).await;
            let (code, _, err) = w.cli(&[
                "hold",
                "release",
                &id.to_string(),
                "--by",
                "legal",
                "--reason",
                "settled",
            ]);
            assert_eq!(code, 0, "{err}");
            r1.store(id, Relaxed);
        },
        async move |w| {
            let id = r2.load(Relaxed);
            w.sql(&format!(
                "UPDATE lethe.holds SET released_at = NULL, released_by = NULL WHERE id = {id}"
            ))
            .await;
            id
        },
    )
    .await;
    assert_the_hold_stopped_the_deletes(world).await;
}

/// Two sessions insert holds with plain SQL at once: the one on account 2 takes its id first
/// and commits last, after another hold with a higher id committed. The newest id had already
/// moved past it, so a fence watching ids never saw it; the change counter makes the second
/// writer wait for the first, and the fence sees the first's commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_committed_out_of_id_order_by_sql_stops_the_deletes_it_covers() {
    let world = hold_mid_purge("", async |_| (), async |w| {
        let mut first = w.pool.begin().await.unwrap();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO lethe.holds (account, reason, placed_by) VALUES ('2', 'litigation', 'sql') \
             RETURNING id",
        )
        .fetch_one(&mut *first)
        .await
        .unwrap();
        let pool = w.pool.clone();
        let second = tokio::spawn(async move {
            sqlx::query(
                "INSERT INTO lethe.holds (job, reason, placed_by) VALUES ('deleted-snapshots', 'audit', 'sql')",
            )
            .execute(&pool)
            .await
            .unwrap();
        });
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        first.commit().await.unwrap();
        second.await.unwrap();
        id
    })
    .await;
    assert_the_hold_stopped_the_deletes(world).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_without_the_hold_fence_is_caught() {
    let (w, _, at_hold, _) = hold_placed_mid_purge("no-hold-fence").await;
    assert!(
        deleted_after_hold(&w, &at_hold).await.len() > 20,
        "without the hold fence the deletes should have gone on past one request; the test \
         cannot tell"
    );
    w.cleanup().await;
}

/// A snapshot written under a run while the run's objects are being purged (after its manifest
/// was built) names objects the purge never listed. Its row would go with the run's rows and
/// its objects stay, named by nothing. The row transaction finds it: that run keeps its rows and
/// fails, the other runs are purged, and the next run takes the run with the snapshot's objects.
/// Answers the world after the first run, and that run's exit code.
async fn snapshot_written_mid_purge(control: &str) -> (World, i32) {
    let w = World::new(Versioning::Enabled).await;
    w.account(1, "free", None).await;
    for id in 1..=20 {
        w.run_row(id, 1, Some(10 * DAY)).await;
    }
    w.put_many(
        (1..=20)
            .flat_map(|id| (0..28).map(move |i| format!("runs/{id}/f/{i:03}")))
            .collect(),
    )
    .await;
    let (p, mut run) = slow_purge(&w, "lethe-mid-snapshot", control, 2).await;
    // Once the purge has deleted objects (the bucket probe before it deletes nothing).
    let t = std::time::Instant::now();
    while p.counts.destructive.load(Relaxed) == 0 || w.versions("runs/").await.len() == 600 {
        assert!(t.elapsed().as_secs() < 60, "the run never started deleting");
    }
    w.snapshot(900, 20, 1, None).await;
    assert!(
        !w.versions("runs/20/").await.is_empty(),
        "run 20's objects were still being purged when the snapshot was written"
    );
    let status = run.wait().unwrap();
    assert!(
        w.count("SELECT count(*) FROM lethe.work_items WHERE state = 'claimed'")
            .await
            == 0,
        "the run finished its batch"
    );
    (w, status.code().unwrap_or(-1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_naming_objects_written_after_the_manifest_keeps_its_subject() {
    let (w, code) = snapshot_written_mid_purge("").await;
    assert_eq!(code, 1, "the run with the new snapshot failed");
    assert_eq!(
        w.count("SELECT count(*) FROM snapshots WHERE id = 900")
            .await,
        1,
        "the snapshot's row stays while its objects do"
    );
    assert_eq!(w.keys("snaps/900/").await, vec!["snaps/900/weights.pt"]);
    assert_eq!(w.rows_of_run(20).await, 7, "run 20 keeps its rows");
    let error: String = sqlx::query_scalar(
        "SELECT last_error FROM lethe.work_items WHERE subject_key = '20' AND state = 'failed'",
    )
    .fetch_one(&w.pool)
    .await
    .unwrap();
    assert!(error.contains("not in its manifest"), "{error}");
    for id in 1..=19 {
        assert_eq!(w.rows_of_run(id).await, 0, "run {id} is purged");
    }
    // The next run builds run 20's manifest again, the snapshot's objects in it.
    let (code, out, err) = w.cli(&["run", "--all"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(w.rows_of_run(20).await, 0);
    assert_eq!(w.count("SELECT count(*) FROM snapshots").await, 0);
    assert!(w.keys("").await.is_empty(), "{:?}", w.keys("").await);
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_without_the_late_row_check_orphans_objects() {
    let (w, _) = snapshot_written_mid_purge("no-late-row-check").await;
    assert_eq!(
        (
            w.count("SELECT count(*) FROM snapshots WHERE id = 900")
                .await,
            w.keys("snaps/900/").await.len()
        ),
        (0, 1),
        "without the check the snapshot's row goes and its object stays"
    );
    w.cleanup().await;
}

/// The database clock is held against the object store's (the `Date` of its answers): a store
/// an hour ahead of the database means one of the two clocks jumped, and the run refuses with
/// exit 4, naming both, before anything is deleted. Two minutes apart is ordinary and runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_clock_an_hour_off_the_database_clock_refuses_the_run() {
    let w = World::new(Versioning::Unversioned).await;
    w.account(1, "free", None).await;
    w.run_row(1, 1, Some(10 * DAY)).await;
    for (skew, code) in [(3_600, 4), (-3_600, 4), (120, 0)] {
        let p = proxy(
            upstream(),
            Faults {
                date_skew_secs: skew,
                ..Default::default()
            },
            3,
        )
        .await;
        let (got, out, err) = w.cli_env(
            &["run", "--all"],
            &[
                ("AWS_ENDPOINT_URL", &p.url),
                ("AWS_ENDPOINT_URL_S3", &p.url),
            ],
        );
        assert_eq!(got, code, "store clock {skew}s off: {out}\n{err}");
        if code == 4 {
            assert!(
                err.contains("the object store's clock") && err.contains("jumped"),
                "{err}"
            );
            assert_eq!(w.rows_of_run(1).await, 7, "nothing deleted");
            assert_eq!(w.keys("runs/1/").await.len(), 2, "nothing deleted");
        }
    }
    assert_eq!(w.rows_of_run(1).await, 0, "purged once the clocks agree");
    w.cleanup().await;
}

/// Account 2's runs: the store holds the first DeleteObjects unanswered while a hold is placed
/// on the account, then answers it `503 SlowDown` (nothing deleted) and takes deletes again.
/// Before, the SDK re-sent the same request itself (up to four more times, with its own
/// backoff), with no new check: the re-sent request deleted the held account's objects. Now
/// each attempt is lethe's, fenced, and nothing of the account goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_delete_is_not_resent_after_a_hold_without_a_new_check() {
    let w = World::new(Versioning::Enabled).await;
    w.account(2, "free", None).await;
    for id in 1..=4 {
        w.run_row(id, 2, Some(10 * DAY)).await;
    }
    let before = w.versions("runs/").await.len();
    let p = proxy(upstream(), Faults::default(), 4).await;
    p.counts.refuse_deletes.store(true, Relaxed);
    let mut run = w.spawn_run(
        "lethe-throttled",
        &[
            ("AWS_ENDPOINT_URL", &p.url),
            ("AWS_ENDPOINT_URL_S3", &p.url),
            ("LETHE_DELETE_CONCURRENCY", "1"),
        ],
    );
    let t = std::time::Instant::now();
    while p.counts.deletes_refused.load(Relaxed) == 0 {
        assert!(t.elapsed().as_secs() < 60, "the run never tried to delete");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let hold = w.hold(&["--account", "2"]).await;
    p.counts.refuse_deletes.store(false, Relaxed);
    let status = run.wait().unwrap();
    assert_eq!(
        w.versions("runs/").await.len(),
        before,
        "a delete re-sent after the hold took the held account's objects (run exited {status})"
    );
    for id in 1..=4 {
        assert_eq!(w.rows_of_run(id).await, 7, "run {id} keeps its rows");
    }
    assert_eq!(
        w.count(&format!(
            "SELECT count(*) FROM lethe.work_items WHERE state = 'held' AND hold_id = {hold}"
        ))
        .await,
        4,
        "every run is recorded held by the hold"
    );
    w.cleanup().await;
}

/// On a store without batch deletes (NotImplemented), each key goes in a request of its own,
/// and each waits for its own check: a hold placed while they go stops the rest at once. Before,
/// one check let a whole batch of single deletes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_batch_deletes_each_single_delete_is_fenced() {
    let w = World::new(Versioning::Enabled).await;
    w.account(1, "free", None).await;
    w.account(2, "free", None).await;
    for id in 1..=6 {
        w.run_row(id, 2 - id % 2, Some(10 * DAY)).await;
    }
    w.put_many(
        (1..=6)
            .flat_map(|id| (0..38).map(move |i| format!("runs/{id}/f/{i:03}")))
            .collect(),
    )
    .await;
    let account2 = async || {
        let mut v = Vec::new();
        for id in [2, 4, 6] {
            v.extend(w.versions(&format!("runs/{id}/")).await);
        }
        v
    };
    let before = account2().await.len();
    assert_eq!(before, 120);
    let faults = Faults {
        no_batch_delete: true,
        delete_delay: std::time::Duration::from_millis(30),
        ..Default::default()
    };
    let p = proxy(upstream(), faults, 5).await;
    let mut run = w.spawn_run(
        "lethe-single-deletes",
        &[
            ("AWS_ENDPOINT_URL", &p.url),
            ("AWS_ENDPOINT_URL_S3", &p.url),
            ("LETHE_DELETE_CONCURRENCY", "1"),
        ],
    );
    let t = std::time::Instant::now();
    while account2().await.len() == before {
        assert!(
            t.elapsed().as_secs() < 60,
            "the run never deleted the account's objects"
        );
    }
    w.hold(&["--account", "2"]).await;
    let at_hold: std::collections::HashSet<_> = account2()
        .await
        .into_iter()
        .map(|v| (v.key, v.version_id))
        .collect();
    run.wait().unwrap();
    let now: std::collections::HashSet<_> = account2()
        .await
        .into_iter()
        .map(|v| (v.key, v.version_id))
        .collect();
    assert!(
        !at_hold.is_empty(),
        "the hold came after the account's objects were gone; nothing was tested"
    );
    let gone = at_hold.difference(&now).count();
    assert!(
        gone <= 2,
        "{gone} single deletes of the held account went after the hold committed"
    );
    for id in [2, 4, 6] {
        assert_eq!(w.rows_of_run(id).await, 7, "held run {id} keeps its rows");
    }
    for id in [1, 3, 5] {
        assert_eq!(
            w.rows_of_run(id).await,
            0,
            "run {id} of the other account is purged"
        );
    }
    w.cleanup().await;
}

/// The run lock lives in a database session of its own. Ended mid-purge (an
/// `idle_session_timeout`, a failover, `pg_terminate_backend`), the lock is gone and a second
/// process may take every open item at once: the run stops deleting at its next request (each
/// waits for a check of the lock with the lease), leaves its items, and exits non-zero; the
/// next run takes them over and finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_lock_session_ends_stops_deleting() {
    let (w, _, at_kill, _) = hold_mid_purge(
        "",
        async |_| (),
        async |w| {
            let ended = w
                .count(
                    "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_locks \
                 WHERE locktype = 'advisory' AND granted AND database = \
                 (SELECT oid FROM pg_database WHERE datname = current_database())) t",
                )
                .await;
            assert_eq!(ended, 1, "the run lock's session was found and ended");
            0
        },
    )
    .await;
    assert!(
        !at_kill.is_empty(),
        "the lock ended after the purge; nothing was tested"
    );
    let gone = deleted_after_hold(&w, &at_kill).await;
    assert!(
        gone.len() <= 20,
        "{} versions were deleted after the run lock's session ended",
        gone.len()
    );
    for id in (2..=20).step_by(2) {
        assert!(w.rows_of_run(id).await > 0 || w.versions(&format!("runs/{id}/")).await.is_empty());
    }
    let (code, out, err) = w.cli(&["run", "--job", "deleted-runs"]);
    assert_eq!(code, 0, "the next run takes the items over: {out}\n{err}");
    for id in 1..=20 {
        assert_eq!(w.rows_of_run(id).await, 0, "run {id}");
    }
    w.cleanup().await;
}

/// On SQLite the run lock is a row renewed every 15 s. When a renewal finds the row another
/// holder's (a second process took it after it looked expired: a stalled disk, a suspended VM),
/// the run stops deleting at its next request, leaves its items, and exits non-zero; the next
/// run finishes. The purge goes through a slow store so that it is still deleting when the
/// renewal comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_run_whose_lock_renewal_fails_stops_deleting() {
    use crate::behaviour::{LiteWorld, Platform};
    let w = LiteWorld::new().await;
    let bucket = crate::helpers::unique("it-lite-");
    let s3 = crate::checker::client().await;
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    for e in std::fs::read_dir(w.jobs_dir()).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().is_some_and(|n| n != "deleted-runs.toml") {
            std::fs::remove_file(p).unwrap();
        }
    }
    let spec = w.jobs_dir().join("deleted-runs.toml");
    let text = std::fs::read_to_string(&spec).unwrap();
    std::fs::write(&spec, text.replace("lethe-artifacts", &bucket)).unwrap();
    w.account(1, "free", None).await;
    for id in 1..=20 {
        w.run_row(id, 1, Some(10 * DAY)).await;
    }
    let keys: Vec<String> = (1..=20)
        .flat_map(|id| (0..60).map(move |i| format!("runs/{id}/f/{i:03}")))
        .collect();
    futures::future::join_all(keys.chunks(100).map(|chunk| {
        let s3 = s3.clone();
        let bucket = bucket.clone();
        async move {
            for k in chunk {
                s3.put_object()
                    .bucket(&bucket)
                    .key(k)
                    .body(b"x".to_vec().into())
                    .send()
                    .await
                    .unwrap();
            }
        }
    }))
    .await;
    let left = async || {
        let mut n = 0;
        let mut token = None;
        loop {
            let page = s3
                .list_objects_v2()
                .bucket(&bucket)
                .prefix("runs/")
                .set_continuation_token(token)
                .send()
                .await
                .unwrap();
            n += page.contents().len();
            match page.next_continuation_token() {
                Some(t) => token = Some(t.to_string()),
                None => return n,
            }
        }
    };
    assert_eq!(left().await, 1200);

    let faults = Faults {
        delete_delay: std::time::Duration::from_millis(400),
        ..Default::default()
    };
    let p = proxy(upstream(), faults, 1).await;
    let run = |env: &[(&str, &str)]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_lethe"))
            .args(["run", "--job", "deleted-runs"])
            .env("DATABASE_URL", &w.url)
            .env("LETHE_JOBS_DIR", w.jobs_dir())
            .env("LETHE_OBJECT_STORE", "s3")
            .env("LETHE_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let slow = run(&[
        ("AWS_ENDPOINT_URL", &p.url),
        ("LETHE_DELETE_BATCH", "20"),
        ("LETHE_DELETE_CONCURRENCY", "1"),
    ]);
    let t = std::time::Instant::now();
    // Once the run holds its lock and deletes (the first delete is the permission probe).
    while p.counts.destructive.load(Relaxed) < 2
        || w.count("SELECT count(*) FROM lethe_locks").await == 0
    {
        assert!(t.elapsed().as_secs() < 30, "the purge never started");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Another process takes the lock over, as if it had expired.
    w.sql("UPDATE lethe_locks SET holder = 'another process'")
        .await;
    let out = tokio::task::spawn_blocking(move || slow.wait_with_output().unwrap())
        .await
        .unwrap();
    let (code, stdout, stderr) = crate::helpers::outcome(out);
    let remaining = left().await;
    assert!(
        remaining > 0,
        "the run purged everything though its lock was taken over mid-purge (or it finished before its renewal came, after {:?}): {stdout}{stderr}",
        t.elapsed()
    );
    assert_eq!(code, 1, "a lost run lock is work undone: {stdout}{stderr}");
    assert!(stderr.contains("run lock"), "{stderr}");
    for id in 1..=20 {
        let objects = s3
            .list_objects_v2()
            .bucket(&bucket)
            .prefix(format!("runs/{id}/"))
            .send()
            .await
            .unwrap()
            .contents()
            .len();
        assert!(
            objects == 0
                || w.count(&format!("SELECT count(*) FROM runs WHERE id = {id}"))
                    .await
                    == 1,
            "run {id} lost its row with {objects} objects left"
        );
    }

    w.sql("DELETE FROM lethe_locks").await;
    let out = run(&[]).wait_with_output().unwrap();
    let (code, stdout, stderr) = crate::helpers::outcome(out);
    assert_eq!(code, 0, "the next run finishes: {stdout}{stderr}");
    assert_eq!(left().await, 0);
    assert_eq!(w.count("SELECT count(*) FROM runs").await, 0);
    w.finish().await;
}
