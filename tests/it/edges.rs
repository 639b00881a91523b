//! Shapes of a bucket in which lethe once deleted a subject's rows while objects of it were still
//! in the store, and exited 0: each built through SeaweedFS exactly as described in issue 20, and
//! each ending with the promise checked from outside: a subject whose row is gone has nothing
//! left under its location, every eligible subject is gone after the runs, and every neighbour
//! keeps every version.

use crate::helpers::{DAY, World};
use lethe::pipeline::RunOptions;
use lethe::storage::Versioning;

/// A platform with text keys: `items(id, deleted_at, uri)`, one job over it.
pub(crate) async fn world(versioning: Versioning, objects: &str) -> World {
    let w = World::bare(versioning).await;
    w.sql("CREATE TABLE items (id text PRIMARY KEY, deleted_at timestamptz, uri text);")
        .await;
    lethe::db::migrator().run(&w.pool).await.unwrap();
    w.write_spec(
        "edges.toml",
        &format!(
            r#"description = "deleted items"
schedule = "0 0 3 * * *"

[subject]
table = "items"
key = "id"
clock = "deleted_at"
clock_kind = "timestamptz"

[window]
grace = "1d"
deadline = "30d"

{objects}
"#
        ),
    );
    w
}

pub(crate) const TEMPLATE: &str =
    "[[objects]]\nbucket = \"lethe-artifacts\"\nprefix = \"runs/{key}/\"\n";
const URIS: &str = "[[objects]]\nuri_column = \"uri\"\n";
/// `URIS` anywhere in the bucket.
const URIS_IN_BUCKET: &str =
    "[[objects]]\nuri_column = \"uri\"\nuri_within = \"s3://lethe-artifacts/\"\n";

/// Eligible (deleted 10 days ago) or kept (not deleted) items.
pub(crate) async fn items(
    w: &World,
    ids: &[&str],
    eligible: bool,
    uri: impl Fn(&str) -> Option<String>,
) {
    for id in ids {
        let at = if eligible {
            format!("now() - interval '{} seconds'", 10 * DAY)
        } else {
            "NULL".into()
        };
        let uri = uri(id).map_or("NULL".into(), |u| format!("'{}'", u.replace('\'', "''")));
        w.sql(&format!(
            "INSERT INTO items VALUES ('{}', {at}, {uri})",
            id.replace('\'', "''")
        ))
        .await;
    }
}

pub(crate) async fn row_exists(w: &World, id: &str) -> bool {
    w.count(&format!(
        "SELECT count(*) FROM items WHERE id = '{}'",
        id.replace('\'', "''")
    ))
    .await
        == 1
}

/// Runs the job until it stops making progress (at most 3 runs), asserting after each run that
/// no subject lost its row while anything is left at `location(id)`.
async fn run_and_check(w: &World, ids: &[&str], location: impl Fn(&str) -> String) -> u8 {
    let mut code = 0;
    for _ in 0..3 {
        code = w.run(&["edges"], RunOptions::default()).await.exit_code();
        for id in ids {
            let left = w.versions(&location(id)).await;
            assert!(
                row_exists(w, id).await || left.is_empty(),
                "subject {id}: row deleted with {} versions left at {} (first {:?})",
                left.len(),
                location(id),
                left.first()
            );
        }
        if code == 0 {
            break;
        }
    }
    code
}

/// A LIST page of the purge's range under `runs/1` ends exactly on the object `runs/1000`, named
/// like the subject directory `runs/1000/` that follows it. SeaweedFS calls that page the last
/// (or, continued from `runs/1000`, skips the directory): before, neither the purge nor range
/// verification ever listed `runs/1000/`, and its rows went.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_ending_on_an_object_named_like_a_directory_hides_nothing() {
    for versioning in [Versioning::Unversioned, Versioning::Enabled] {
        let w = world(versioning, TEMPLATE).await;
        // Eight directories in the default four listing ranges of two: `runs/100/` and
        // `runs/1000/` are listed as one range under `runs/100`, whose first page holds the 999
        // keys of `runs/100/` and ends on the object `runs/1000`.
        let subjects = ["1", "10", "100", "1000", "1001", "1002", "1003", "1004"];
        items(&w, &subjects, true, |_| None).await;
        let mut keys: Vec<String> = (0..999).map(|j| format!("runs/100/{j:03}")).collect();
        keys.extend(["runs/1000/a", "runs/1000/b"].map(String::from));
        keys.extend(["1", "10", "1001", "1002", "1003", "1004"].map(|d| format!("runs/{d}/k")));
        w.put_many(keys).await;
        w.put("runs/1000").await; // a neighbour: no subject's directory
        let code = run_and_check(&w, &subjects, |id| format!("runs/{id}/")).await;
        assert_eq!(code, 0, "{versioning:?}");
        for id in subjects {
            assert!(!row_exists(&w, id).await, "{versioning:?}: {id} purged");
            assert!(w.versions(&format!("runs/{id}/")).await.is_empty());
        }
        assert_eq!(w.keys("").await, vec!["runs/1000"], "{versioning:?}");
        w.cleanup().await;
    }
}

/// Hundreds of subject directories under a short shared prefix, beside one neighbour directory
/// with over a thousand versions, on a versioned bucket: SeaweedFS's ListObjectVersions drops
/// keys at page boundaries there, and range verification paged the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_subjects_beside_a_neighbour_with_thousands_of_versions_lose_nothing() {
    let w = world(Versioning::Enabled, TEMPLATE).await;
    let ids: Vec<String> = (1..=400).map(|i| i.to_string()).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    items(&w, &ids, true, |_| None).await;
    let mut keys: Vec<String> = ids
        .iter()
        .flat_map(|i| [format!("runs/{i}/a"), format!("runs/{i}/b/c")])
        .collect();
    keys.extend((0..40).map(|j| format!("runs/15x/{j:02}")));
    w.put_many(keys).await;
    // One neighbour key with 1,100 versions, in the middle of the subjects' range.
    for _ in 0..1100 {
        w.put("runs/15x/hot").await;
    }
    let code = run_and_check(&w, &ids, |id| format!("runs/{id}/")).await;
    assert_eq!(code, 0);
    assert_eq!(w.count("SELECT count(*) FROM items").await, 0);
    assert_eq!(w.versions("runs/15x/").await.len(), 40 + 1100);
    assert_eq!(
        w.versions("").await.len(),
        40 + 1100,
        "only the neighbour is left"
    );
    w.cleanup().await;
}

/// A URI naming the object `custom/1` on a versioned bucket, beside a sibling directory
/// `custom/1-x/` with over a thousand versions: a lookup under the prefix `custom/1` got pages
/// of the sibling's versions only, and stopped. The purge left `custom/1`; verification looked
/// the same way and passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exact_object_beside_a_sibling_with_thousands_of_versions_is_found() {
    let w = world(Versioning::Enabled, URIS_IN_BUCKET).await;
    let bucket = w.bucket.clone();
    items(&w, &["a"], true, |_| {
        Some(format!("s3://{bucket}/custom/1"))
    })
    .await;
    items(&w, &["kept"], false, |_| {
        Some(format!("s3://{bucket}/custom/1-x/"))
    })
    .await;
    for _ in 0..3 {
        w.put("custom/1").await;
    }
    w.put("custom/1/inside").await;
    let sibling: Vec<String> = (0..1100).map(|j| format!("custom/1-x/{j:04}")).collect();
    w.put_many(sibling).await;
    let code = run_and_check(&w, &["a"], |_| "custom/1/".into()).await;
    assert_eq!(code, 0);
    assert!(!row_exists(&w, "a").await);
    // Asked with a client of the test's own: a HEAD of the exact key, and its directory.
    let head = crate::checker::client()
        .await
        .head_object()
        .bucket(&w.bucket)
        .key("custom/1")
        .send()
        .await;
    assert!(head.is_err(), "custom/1 is still there: {head:?}");
    assert!(w.versions("custom/1/").await.is_empty());
    assert_eq!(
        w.versions("custom/1-x/").await.len(),
        1100,
        "the sibling is kept"
    );
    assert!(row_exists(&w, "kept").await);
    w.cleanup().await;
}

/// SeaweedFS keeps `\` as `/` in object keys but not in listing prefixes. Purging `b` took the
/// objects of a kept subject `b\c` (stored under `runs/b/c/`); purging `q\r` listed
/// `runs/q\r/`, found nothing, and deleted its row with its objects left under `runs/q/r/`.
/// Both now fail closed with a reason, and nothing of either is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_the_store_would_rewrite_are_refused_and_keep_their_neighbours() {
    let w = world(Versioning::Unversioned, TEMPLATE).await;
    items(&w, &["b", "q\\r", "z"], true, |_| None).await;
    items(&w, &["b\\c"], false, |_| None).await;
    for k in ["runs/b/x", "runs/b\\c/y", "runs/q\\r/z", "runs/z/k"] {
        w.put(k).await;
    }
    assert_eq!(
        w.keys("runs/").await,
        vec!["runs/b/c/y", "runs/b/x", "runs/q/r/z", "runs/z/k"],
        "the store rewrote the backslashes"
    );
    let summary = w.run(&["edges"], RunOptions::default()).await;
    assert_eq!(summary.exit_code(), 1, "refused subjects are failures");
    let errors = summary.reports[0].errors.join("\n");
    assert!(errors.contains("backslash"), "{errors}");
    assert!(
        errors.contains("b\\\\c"),
        "names the nested subject: {errors}"
    );
    assert!(!row_exists(&w, "z").await, "an ordinary subject is purged");
    for id in ["b", "q\\r", "b\\c"] {
        assert!(row_exists(&w, id).await, "{id} keeps its row");
    }
    assert_eq!(
        w.count("SELECT count(*) FROM lethe.work_items WHERE subject_key = 'q\\r' AND error_class = 'store_name'")
            .await,
        1,
        "counted apart as a name the store keeps differently"
    );
    assert_eq!(
        w.keys("runs/").await,
        vec!["runs/b/c/y", "runs/b/x", "runs/q/r/z"],
        "nothing of b, b\\c or q\\r is deleted"
    );
    w.cleanup().await;
}

/// The error recorded for subject `id`'s work item.
async fn error_of(w: &World, id: &str) -> String {
    sqlx::query_scalar::<_, Option<String>>(
        "SELECT last_error FROM lethe.work_items WHERE job = 'edges' AND subject_key = $1",
    )
    .bind(id)
    .fetch_optional(&w.pool)
    .await
    .unwrap()
    .flatten()
    .unwrap_or_default()
}

/// URI values that would widen a purge fail their own subject, and the rest are purged: a URI
/// outside `uri_within`, one naming the scope itself, one that holds another subject's
/// directory (both in one batch), and two subjects pointing at one directory. With
/// `uri_kind = "directory"`, a URI without a trailing `/` names the directory only, not an
/// object of the same name beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uri_values_wider_than_their_scope_fail_their_own_subject() {
    let spec =
        format!("{URIS}uri_within = \"s3://lethe-artifacts/data/\"\nuri_kind = \"directory\"\n");
    let w = world(Versioning::Enabled, &spec).await;
    let uri_of = |id: &str| match id {
        "ok" => "data/ok",
        "scope" => "data/",
        "outside" => "other/x/",
        "parent" => "data/p/",
        "child" => "data/p/c/",
        "twin1" | "twin2" => "data/t/",
        _ => unreachable!(),
    };
    let ids = [
        "ok", "scope", "outside", "parent", "child", "twin1", "twin2",
    ];
    items(&w, &ids, true, |id| Some(w.uri(uri_of(id)))).await;
    for k in [
        "data/ok/1",
        "data/ok",
        "data/x/1",
        "other/x/1",
        "data/p/1",
        "data/p/c/1",
        "data/t/1",
    ] {
        w.put(k).await;
    }
    let summary = w.run(&["edges"], RunOptions::default()).await;
    assert_eq!(summary.exit_code(), 1, "{:?}", summary.reports);
    for id in ["ok", "child"] {
        assert!(!row_exists(&w, id).await, "{id} is purged");
    }
    for (id, why) in [
        ("scope", "names the whole of uri_within"),
        ("outside", "is outside uri_within"),
        ("parent", "of subject `child`"),
        ("twin1", "subject `twin2`"),
        ("twin2", "subject `twin1`"),
    ] {
        assert!(row_exists(&w, id).await, "{id} keeps its row");
        let error = error_of(&w, id).await;
        assert!(error.contains(why), "{id}: {error}");
    }
    assert_eq!(
        w.keys("").await,
        vec!["data/ok", "data/p/1", "data/t/1", "data/x/1", "other/x/1"],
        "only the directories of `ok` and `child` are purged"
    );
    w.cleanup().await;
}

/// `uri_kind = "object"`: the URI names one object; a directory of the same name is another
/// thing and stays. A value ending in `/` contradicts the spec and fails its subject.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uri_of_kind_object_purges_that_object_only() {
    let w = world(
        Versioning::Enabled,
        &format!("{URIS_IN_BUCKET}uri_kind = \"object\"\n"),
    )
    .await;
    items(&w, &["one"], true, |_| Some(w.uri("files/one.bin"))).await;
    items(&w, &["dir"], true, |_| Some(w.uri("files/dir/"))).await;
    for k in [
        "files/one.bin",
        "files/one.bin",
        "files/one.bin/inner",
        "files/dir/x",
    ] {
        w.put(k).await;
    }
    let summary = w.run(&["edges"], RunOptions::default()).await;
    assert_eq!(summary.exit_code(), 1, "{:?}", summary.reports);
    assert!(!row_exists(&w, "one").await);
    assert!(row_exists(&w, "dir").await);
    assert!(error_of(&w, "dir").await.contains("uri_kind"));
    assert!(
        w.versions("files/one.bin")
            .await
            .iter()
            .all(|v| v.key != "files/one.bin")
    );
    assert_eq!(w.keys("").await, vec!["files/dir/x", "files/one.bin/inner"]);
    w.cleanup().await;
}

/// A subject whose locations hold more object versions than `LETHE_MAX_OBJECTS_PER_SUBJECT`
/// fails naming the cap, keeps its row, and is not purged further; the others go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_past_the_object_cap_fails_and_keeps_its_row() {
    let w = world(Versioning::Unversioned, TEMPLATE).await;
    items(&w, &["big", "small"], true, |_| None).await;
    let mut keys: Vec<String> = (0..300).map(|i| format!("runs/big/{i:03}")).collect();
    keys.push("runs/small/1".into());
    w.put_many(keys).await;
    let (code, out, err) = w.cli_env(
        &["run", "--job", "edges"],
        &[("LETHE_MAX_OBJECTS_PER_SUBJECT", "50")],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(row_exists(&w, "big").await);
    assert!(!row_exists(&w, "small").await);
    let error = error_of(&w, "big").await;
    assert!(
        error.contains("more than 50") && error.contains("LETHE_MAX_OBJECTS_PER_SUBJECT"),
        "{error}"
    );
    let left = w.keys("runs/big/").await.len();
    assert!(
        left >= 250,
        "at most the cap is deleted: {left} of 300 left"
    );
    w.cleanup().await;
}

/// `uri_segment = "key"`: a URI must hold its row's key as one whole path segment (MLflow's
/// `<location>/<run_uuid>/artifacts`). One whose key is only part of a segment (`bb` for `b`),
/// or absent, fails its own subject with nothing deleted; the others are purged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uri_without_its_key_as_a_whole_segment_fails_its_subject() {
    let w = world(
        Versioning::Unversioned,
        &format!("{URIS_IN_BUCKET}uri_segment = \"key\"\nuri_kind = \"directory\"\n"),
    )
    .await;
    let uri_of = |id: &str| match id {
        "a" => "exp/a/artifacts/",
        "b" => "exp/bb/artifacts/",
        "c" => "exp/a/c-artifacts/",
        _ => unreachable!(),
    };
    items(&w, &["a", "b", "c"], true, |id| Some(w.uri(uri_of(id)))).await;
    for k in [
        "exp/a/artifacts/1",
        "exp/bb/artifacts/1",
        "exp/a/c-artifacts/1",
    ] {
        w.put(k).await;
    }
    let summary = w.run(&["edges"], RunOptions::default()).await;
    assert_eq!(summary.exit_code(), 1, "{:?}", summary.reports);
    assert!(!row_exists(&w, "a").await, "a is purged");
    for id in ["b", "c"] {
        assert!(row_exists(&w, id).await, "{id} keeps its row");
        let error = error_of(&w, id).await;
        assert!(
            error.contains("does not hold uri_segment `key`"),
            "{id}: {error}"
        );
    }
    assert_eq!(
        w.keys("").await,
        vec!["exp/a/c-artifacts/1", "exp/bb/artifacts/1"],
        "only a's directory is purged"
    );
    w.cleanup().await;
}

/// The same shapes through a prefix template's value: `data/{dir}/` filled from a column. A
/// deleted item whose `dir` is a live item's lands in the live one's directory (the live row
/// claims it: refused); one whose value is percent-encoded, `..`, or holds a `/` is refused as
/// the store would read it otherwise; one alone in its directory is purged. Nothing of the live
/// item goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_values_that_land_in_another_rows_directory_fail_alone() {
    let w = World::bare(Versioning::Unversioned).await;
    w.sql("CREATE TABLE items (id text PRIMARY KEY, deleted_at timestamptz, dir text);")
        .await;
    lethe::db::migrator().run(&w.pool).await.unwrap();
    w.write_spec(
        "edges.toml",
        "schedule = \"0 0 3 * * *\"\n\n[subject]\ntable = \"items\"\nclock = \"deleted_at\"\n\
         clock_kind = \"timestamptz\"\n\n[window]\ngrace = \"1d\"\ndeadline = \"30d\"\n\n\
         [[objects]]\nbucket = \"lethe-artifacts\"\nprefix = \"data/{dir}/\"\n",
    );
    for (id, deleted, dir) in [
        ("live", false, "p"),
        ("shares", true, "p"),
        ("encoded", true, "%70"),
        ("dots", true, ".."),
        ("nested", true, "p/q"),
        ("alone", true, "z"),
    ] {
        let at = if deleted {
            format!("now() - interval '{} seconds'", 10 * DAY)
        } else {
            "NULL".into()
        };
        w.sql(&format!("INSERT INTO items VALUES ('{id}', {at}, '{dir}')"))
            .await;
    }
    for k in ["data/p/1", "data/p/q/1", "data/%70/1", "data/z/1"] {
        w.put(k).await;
    }
    let summary = w.run(&["edges"], RunOptions::default()).await;
    assert_eq!(summary.exit_code(), 1, "{:?}", summary.reports);
    assert!(!row_exists(&w, "alone").await, "alone is purged");
    for (id, why) in [
        ("shares", "(row items.id = live)"),
        ("encoded", "percent-encoding"),
        ("dots", "not a single path segment"),
        ("nested", "not a single path segment"),
    ] {
        assert!(row_exists(&w, id).await, "{id} keeps its row");
        let error = error_of(&w, id).await;
        assert!(error.contains(why), "{id}: {error}");
    }
    assert_eq!(
        w.keys("").await,
        vec!["data/%70/1", "data/p/1", "data/p/q/1"],
        "only the lone item's directory is purged"
    );
    w.cleanup().await;
}
