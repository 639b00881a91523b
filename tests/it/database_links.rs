//! What the database itself says about its rows, heard before anything is deleted (issue 29,
//! item 4): a unique index proves a key unique only when it is valid; a cascading foreign key
//! back into a job's own chain, or into a table whose rows locate objects, is refused by
//! `check`; a SQLite filter literal that the column's affinity would turn into another value is
//! refused. Each through the binary against the real services, with nothing deleted when
//! refused.

use crate::behaviour::{LiteWorld, Platform};
use crate::helpers::items_world;

/// A failed `CREATE UNIQUE INDEX CONCURRENTLY` (it fails precisely because the key is
/// duplicated) leaves an invalid index behind: it proves nothing, and `check` and `run` refuse
/// the job with nothing deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_unique_index_is_no_proof_that_a_key_is_unique() {
    let w = items_world(
        "CREATE TABLE items (id text, deleted_at timestamptz);
         INSERT INTO items VALUES ('a', now() - interval '10 days'), ('a', NULL);",
        "",
    )
    .await;
    let made = sqlx::query("CREATE UNIQUE INDEX CONCURRENTLY items_id ON items (id)")
        .execute(&w.pool)
        .await;
    assert!(made.is_err(), "the duplicate fails the index");
    let invalid = w
        .count(
            "SELECT count(*) FROM pg_index WHERE indrelid = 'items'::regclass AND NOT indisvalid",
        )
        .await;
    assert_eq!(invalid, 1, "an invalid index is left behind");
    for args in [&["check"][..], &["run", "--all"][..]] {
        let (code, out, err) = w.cli(args);
        assert_eq!(code, 2, "{args:?}: {out}\n{err}");
        assert!(err.contains("under a unique index"), "{args:?}: {err}");
    }
    assert_eq!(
        w.count("SELECT count(*) FROM items").await,
        2,
        "both rows stay"
    );
    w.cleanup().await;
}

/// A foreign key from a table to itself `ON DELETE CASCADE` would make the database delete a
/// purged row's live children: `check` refuses it, naming the key and the way out, and nothing
/// is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_referencing_cascade_is_refused_naming_the_key() {
    let w = items_world(
        "CREATE TABLE items (id bigint PRIMARY KEY,
             parent_id bigint REFERENCES items (id) ON DELETE CASCADE, deleted_at timestamptz);
         INSERT INTO items VALUES (1, NULL, now() - interval '10 days'), (2, 1, NULL), (3, 2, NULL);",
        "",
    )
    .await;
    for args in [&["check"][..], &["run", "--all"][..]] {
        let (code, out, err) = w.cli(args);
        assert_eq!(code, 2, "{args:?}: {out}\n{err}");
        assert!(
            err.contains("items_parent_id_fkey") && err.contains("ON DELETE SET NULL"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(
        w.count("SELECT count(*) FROM items").await,
        3,
        "the children stay"
    );
    w.cleanup().await;
}

/// A child table the database deletes by cascade whose rows locate objects (another job maps
/// its URI column) is refused unless the job lists it with its objects; listed, both the rows
/// and the objects go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cascade_child_that_owns_objects_must_be_listed_with_them() {
    let schema = "CREATE TABLE items (id bigint PRIMARY KEY, deleted_at timestamptz);
         CREATE TABLE parts (id bigint PRIMARY KEY,
             item_id bigint NOT NULL REFERENCES items ON DELETE CASCADE,
             deleted_at timestamptz, uri text);";
    let w = items_world(schema, "").await;
    w.write_spec(
        "parts.toml",
        "schedule = \"0 0 3 * * *\"\n\n[subject]\ntable = \"parts\"\nclock = \"deleted_at\"\n\
         clock_kind = \"timestamptz\"\n\n[window]\ngrace = \"1d\"\ndeadline = \"30d\"\n\n\
         [[objects]]\nuri_column = \"uri\"\nuri_within = \"s3://lethe-artifacts/\"\n",
    );
    w.sql(&format!(
        "INSERT INTO items VALUES (1, now() - interval '10 days');
         INSERT INTO parts VALUES (10, 1, NULL, '{}');",
        w.uri("parts/10/")
    ))
    .await;
    w.put("parts/10/blob").await;
    let (code, out, err) = w.cli(&["check"]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains("`parts.uri` (job `parts`)") && err.contains("[[rows]] entry"),
        "{err}"
    );
    let (code, _, _) = w.cli(&["run", "--all"]);
    assert_eq!(code, 2);
    assert_eq!(w.keys("parts/").await.len(), 1, "nothing deleted");

    let listed = format!(
        "\n[[rows]]\ntable = \"parts\"\ncolumn = \"item_id\"\n\n[[objects]]\nuri_column = \"uri\"\n\
         from = \"parts\"\nuri_within = \"s3://{}/\"\n",
        w.bucket
    );
    let spec = std::fs::read_to_string(w.jobs_dir.join("items.toml")).unwrap();
    std::fs::write(w.jobs_dir.join("items.toml"), spec + &listed).unwrap();
    let (code, out, err) = w.cli(&["run", "--all"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(w.count("SELECT count(*) FROM parts").await, 0);
    assert!(
        w.keys("parts/").await.is_empty(),
        "the part's objects go with it"
    );
    w.cleanup().await;
}

/// SQLite casts a literal by the declared type's affinity: `archived = true` on a BOOLEAN
/// column compared with 0 (and purged the unarchived row), `created_on > '2024-01-01'` on a
/// DATE column with 2024. Both are refused by `check` and `run`, naming the value; written as
/// SQLite keeps them (`archived = 1`), the job selects exactly what it says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_filter_literals_that_change_under_the_columns_affinity_are_refused() {
    let w = LiteWorld::new().await;
    w.sql(
        "CREATE TABLE items (id INTEGER PRIMARY KEY, archived BOOLEAN NOT NULL, created_on DATE,
             deleted_at TEXT);
         INSERT INTO items VALUES (1, 1, '2023-06-01', strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-10 days')),
             (2, 0, '2025-06-01', strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-10 days'));",
    )
    .await;
    let spec = |filter: &str| {
        format!(
            "schedule = \"0 0 3 * * *\"\n\n[subject]\ntable = \"items\"\nclock = \"deleted_at\"\n\
             clock_kind = \"timestamptz\"\nfilter = \"{filter}\"\n\n[window]\ngrace = \"1d\"\n\
             deadline = \"30d\"\n"
        )
    };
    let file = w.jobs_dir().join("items.toml");
    for (filter, value) in [
        ("archived = true", "\"true\""),
        ("created_on > '2024-01-01'", "\"2024-01-01\""),
    ] {
        std::fs::write(&file, spec(filter)).unwrap();
        for args in [&["check"][..], &["run", "--job", "items"][..]] {
            let (code, out, err) = w.cli(args);
            assert_eq!(code, 2, "{filter}: {args:?}: {out}\n{err}");
            assert!(
                err.contains(value) && err.contains("affinity"),
                "{filter}: {args:?}: {err}"
            );
        }
        assert_eq!(w.count("SELECT count(*) FROM items").await, 2, "{filter}");
    }
    std::fs::write(&file, spec("archived = 1")).unwrap();
    let (code, out, err) = w.cli(&["run", "--job", "items"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        w.count("SELECT count(*) FROM items WHERE id = 2").await,
        1,
        "the unarchived item stays"
    );
    assert_eq!(
        w.count("SELECT count(*) FROM items").await,
        1,
        "the archived one goes"
    );
    w.finish().await;
}
