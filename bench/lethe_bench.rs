//! Benchmark helper for `bench/run.sh` (not part of lethe):
//!
//! - `seed BUCKET SUBJECTS PER [--versions V] [--markers]`: objects of 1 KiB under
//!   `runs/{i}/obj-{j}` for subjects 1..=SUBJECTS, deterministic, 64 writes in flight. With
//!   `--versions`, the bucket is versioned and each key gets V versions; `--markers` adds a
//!   delete marker on every key.
//! - `floor BUCKET`: the server's own floor for a purge. Lists everything first (untimed), then
//!   deletes it with a tight loop of concurrent DeleteObjects over the keys known in advance
//!   (`LETHE_DELETE_BATCH` keys per request and `LETHE_DELETE_CONCURRENCY` requests in flight
//!   set the shape, as for lethe; bench/run.sh uses the server's best measured shape; on a
//!   versioned bucket each key's older versions go first, as lethe sends them) and lists
//!   each location (`runs/{i}/`) once, as a verification must; prints the seconds.
//!   `floor BUCKET --prefixes FILE`: the same for what lies under the prefixes in FILE (one a
//!   line), each prefix listed once after the deletes.
//! - `count BUCKET`: prints how many versions and delete markers are left.
//!
//! Endpoint and credentials come from the environment, as for lethe.

use futures::StreamExt;
use lethe::storage::s3::S3Store;
use lethe::storage::{ObjectStore, ObjectVersion, Versioning};
use std::time::Instant;

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> T {
    args.get(i)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("argument {i} ({what}) missing or invalid"))
}

async fn all_versions(store: &dyn ObjectStore, bucket: &str) -> Vec<ObjectVersion> {
    versions_under(store, bucket, "").await
}

/// Every version and delete marker under `prefix`.
async fn versions_under(store: &dyn ObjectStore, bucket: &str, prefix: &str) -> Vec<ObjectVersion> {
    let versioned = store
        .versioning(bucket)
        .await
        .expect("bucket exists")
        .keeps_versions();
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let page = store
            .list_page(bucket, prefix, versioned, token)
            .await
            .expect("listing");
        out.extend(page.items);
        match page.next {
            Some(t) => token = Some(t),
            None => return out,
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let settings = lethe::config::Settings::from_env_with(Some("postgres://unused/unused".into()))
        .expect("settings");
    let store = S3Store::connect(&settings.s3).await;
    let bucket: String = arg(&args, 2, "bucket");
    match args.get(1).map(String::as_str) {
        Some("seed") => {
            let subjects: u64 = arg(&args, 3, "subjects");
            let per: u64 = arg(&args, 4, "objects per subject");
            let versions: u64 = args
                .iter()
                .position(|a| a == "--versions")
                .map(|i| arg(&args, i + 1, "versions"))
                .unwrap_or(1);
            let markers = args.iter().any(|a| a == "--markers");
            let versioning = if versions > 1 || markers {
                Versioning::Enabled
            } else {
                Versioning::Unversioned
            };
            store
                .create_bucket(&bucket, versioning)
                .await
                .expect("create bucket");
            let body = vec![b'x'; 1024];
            let keys: Vec<String> = (1..=subjects)
                .flat_map(|i| (0..per).map(move |j| format!("runs/{i}/obj-{j:04}")))
                .collect();
            let started = Instant::now();
            let store = &store;
            futures::stream::iter(keys.iter())
                .for_each_concurrent(64, |k| {
                    let body = body.clone();
                    let bucket = bucket.clone();
                    async move {
                        for _ in 0..versions {
                            store.put(&bucket, k, body.clone()).await.expect("put");
                        }
                        if markers {
                            let m = ObjectVersion {
                                key: k.clone(),
                                version_id: None,
                                delete_marker: false,
                            };
                            store
                                .delete_batch(&bucket, &[m])
                                .await
                                .expect("delete marker");
                        }
                    }
                })
                .await;
            eprintln!(
                "seeded {} keys x {versions} versions{} in {:.1}s",
                keys.len(),
                if markers { " + markers" } else { "" },
                started.elapsed().as_secs_f64()
            );
        }
        Some("floor") => {
            // The server's own floor for a purge: everything under the bucket is listed first
            // (untimed, so the keys are known in advance), then timed: the deletes by key in a
            // tight loop of concurrent DeleteObjects (`LETHE_DELETE_BATCH` keys per request,
            // `LETHE_DELETE_CONCURRENCY` in flight), then one listing of each location (the
            // directory of each key, up to its second `/`: `runs/{i}/`), 32 in flight, as a
            // verification must ask after the deletes.
            let versioned = store
                .versioning(&bucket)
                .await
                .expect("bucket exists")
                .keeps_versions();
            let mut list_seconds = None;
            let (items, dirs) = match args.iter().position(|a| a == "--prefixes") {
                // Only what lies under the prefixes listed in FILE, one a line (the purged
                // directories of a world that keeps others), each listed once afterwards.
                Some(i) => {
                    let file: String = arg(&args, i + 1, "a file of prefixes");
                    let text = std::fs::read_to_string(&file).expect("prefix file");
                    let mut dirs: Vec<String> = text.split_whitespace().map(String::from).collect();
                    dirs.sort();
                    dirs.dedup();
                    // Listed 32 at a time and timed apart: what a purge that does not know the
                    // keys must ask first (`list_seconds`, not part of `seconds`). Prefixes may
                    // nest (a deleted experiment's directory holds deleted runs): each version
                    // is kept once, in listing order.
                    let listed = Instant::now();
                    let pages: Vec<Vec<ObjectVersion>> = futures::stream::iter(dirs.iter())
                        .map(|d| versions_under(&store, &bucket, d))
                        .buffered(32)
                        .collect()
                        .await;
                    list_seconds = Some(listed.elapsed().as_secs_f64());
                    let mut seen = std::collections::HashSet::new();
                    let mut items = Vec::new();
                    for v in pages.into_iter().flatten() {
                        if seen.insert((v.key.clone(), v.version_id.clone())) {
                            items.push(v);
                        }
                    }
                    (items, dirs)
                }
                None => {
                    let items = all_versions(&store, &bucket).await;
                    let mut dirs: Vec<String> = items
                        .iter()
                        .filter_map(|v| {
                            let mut parts = v.key.splitn(3, '/');
                            Some(format!("{}/{}/", parts.next()?, parts.next()?))
                        })
                        .collect();
                    dirs.sort();
                    dirs.dedup();
                    (items, dirs)
                }
            };
            // Listings give each key's versions newest first; sent in reverse, older versions go
            // before the current one, as lethe sends them: on SeaweedFS 1.21-1.36 s against
            // 1.66-1.71 s for the versioned MLflow world's 4,750 versions (3 pairs); alike
            // (7.98-9.10 s against 7.82-9.42 s) for bench/run.sh's 1,000 x 10 keys x 3.
            let mut items = items;
            if versioned {
                items.reverse();
            }
            let n = items.len();
            let started = Instant::now();
            let store = &store;
            let bucket = &bucket;
            let failed: usize = futures::stream::iter(items.chunks(settings.delete_batch))
                .map(|chunk| async move {
                    let out = store.delete_batch(bucket, chunk).await.expect("delete");
                    out.iter()
                        .filter(|o| **o != lethe::storage::KeyOutcome::Deleted)
                        .count()
                })
                .buffer_unordered(settings.delete_concurrency)
                .fold(0, |a, b| async move { a + b })
                .await;
            let deletes = started.elapsed().as_secs_f64();
            let left: usize = futures::stream::iter(dirs.iter())
                .map(|d| async move {
                    let page = store
                        .list_page(bucket, d, versioned, None)
                        .await
                        .expect("listing");
                    page.items.len()
                })
                .buffer_unordered(32)
                .fold(0, |a, b| async move { a + b })
                .await;
            let secs = started.elapsed().as_secs_f64();
            let listing = list_seconds
                .map(|s| format!(", \"list_seconds\": {s:.3}"))
                .unwrap_or_default();
            println!(
                "{{\"deleted\": {n}, \"failed\": {failed}, \"listings\": {}, \"left\": {left}, \"seconds\": {secs:.3}, \"delete_seconds\": {deletes:.3}, \"per_second\": {:.0}{listing}}}",
                dirs.len(),
                n as f64 / secs
            );
        }
        Some("lists") => {
            // lists BUCKET N MODE: one listing of each of runs/1/ .. runs/N/, 32 in flight.
            let n: usize = arg(&args, 3, "directories");
            let mode: String = arg(&args, 4, "mode: plain, max1 or delimiter");
            let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .http_client(lethe::storage::s3::https_client())
                .endpoint_url(settings.s3.endpoint.clone().expect("an endpoint"))
                .region(aws_config::Region::new("us-east-1"))
                .load()
                .await;
            let client = aws_sdk_s3::Client::from_conf(
                aws_sdk_s3::config::Builder::from(&conf)
                    .force_path_style(true)
                    .build(),
            );
            let started = Instant::now();
            let (client, bucket, mode) = (&client, &bucket, &mode);
            let found: usize = futures::stream::iter(1..=n)
                .map(|i| async move {
                    let mut req = client
                        .list_objects_v2()
                        .bucket(bucket)
                        .prefix(format!("runs/{i}/"));
                    match mode.as_str() {
                        "max1" => req = req.max_keys(1),
                        "delimiter" => req = req.delimiter("/").max_keys(1),
                        _ => {}
                    }
                    let out = req.send().await.expect("list");
                    out.contents().len() + out.common_prefixes().len()
                })
                .buffer_unordered(32)
                .fold(0, |a, b| async move { a + b })
                .await;
            println!(
                "{{\"lists\": {n}, \"mode\": \"{mode}\", \"found\": {found}, \"seconds\": {:.3}}}",
                started.elapsed().as_secs_f64()
            );
        }
        Some("count") => {
            let items = all_versions(&store, &bucket).await;
            let markers = items.iter().filter(|v| v.delete_marker).count();
            println!("{} {}", items.len() - markers, markers);
        }
        _ => {
            eprintln!("usage: lethe-bench seed|floor|lists|count BUCKET ...");
            std::process::exit(2);
        }
    }
}
