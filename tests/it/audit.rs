//! Tampering with a 1,000-entry audit log, one kind at a time, at the first, a middle and the
//! last entries: `lethe audit verify` must catch each and name the first bad entry, the
//! rewrites that recompute every later hash (and cut tails) only through the anchors.

use crate::helpers::World;
use lethe::anchor::{Anchor, Target};
use lethe::db::audit::{NewEntry, append};
use lethe::storage::Versioning;

const N: i64 = 1000;

async fn seed_log(w: &World, anchors: &Target) {
    for chunk in 0..(N / 100) {
        let mut tx = w.ctx.db.begin().await.unwrap();
        let entries = (1..=100)
            .map(|i| NewEntry {
                run_id: None,
                job: Some("deleted-runs".into()),
                subject_key: Some((chunk * 100 + i).to_string()),
                owner: Some("1".into()),
                event: "purged",
                hold_id: None,
                detail: serde_json::json!({ "rows": { "runs": 1 }, "n": chunk * 100 + i }),
            })
            .collect();
        append(&mut tx, entries).await.unwrap();
        tx.commit().await.unwrap();
        // As the daemon does after each run.
        let head = lethe::anchor::head(&w.ctx.db).await.unwrap().unwrap();
        anchors.write(w.store(), &head, 1).await.unwrap();
    }
}

/// Runs `lethe audit verify` (with the anchors or without): (exit code, stdout).
fn verify(w: &World, anchor: Option<&str>) -> (i32, String) {
    let mut args = vec!["audit", "verify"];
    if let Some(a) = anchor {
        args.extend(["--anchor", a]);
    }
    let (code, out, err) = w.cli(&args);
    (code, out + &err)
}

/// Recomputes and stores the hashes of entries `from..` in order, as a forger would.
async fn rehash_from(w: &World, from: i64) {
    let mut prev: String = sqlx::query_scalar("SELECT hash FROM lethe.audit_log WHERE seq = $1")
        .bind(from - 1)
        .fetch_optional(&w.pool)
        .await
        .unwrap()
        .unwrap_or_else(|| lethe::audit::GENESIS.to_string());
    for (mut e, _) in lethe::db::audit::page(&w.ctx.db, from - 1, N * 2)
        .await
        .unwrap()
    {
        e.prev_hash = prev.clone();
        let h = lethe::audit::hash(&e);
        sqlx::query("UPDATE lethe.audit_log SET prev_hash = $2, hash = $3 WHERE seq = $1")
            .bind(e.seq)
            .bind(&e.prev_hash)
            .bind(&h)
            .execute(&w.pool)
            .await
            .unwrap();
        prev = h;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_tampering_is_caught_and_the_first_bad_entry_named() {
    let w = World::new(Versioning::Unversioned).await;
    let file = w.jobs_dir.join("anchors.jsonl");
    let file_arg = file.to_str().unwrap().to_string();
    seed_log(&w, &Target::File(file.clone())).await;
    assert_eq!(verify(&w, Some(&file_arg)).0, 0);
    // The forger has the database's superuser: the append-only triggers are off.
    w.sql(
        "CREATE TABLE lethe.pristine AS SELECT * FROM lethe.audit_log;
         ALTER TABLE lethe.audit_log DISABLE TRIGGER USER",
    )
    .await;
    let restore =
        "DELETE FROM lethe.audit_log; INSERT INTO lethe.audit_log SELECT * FROM lethe.pristine";

    for at in [1, 450, 500, N - 1] {
        // (kind, tampering, first bad entry without anchors (None: invisible), with anchors)
        let cases: Vec<(&str, String, Option<i64>, i64)> = vec![
            (
                "changed field",
                format!("UPDATE lethe.audit_log SET owner = '2' WHERE seq = {at}"),
                Some(at),
                at,
            ),
            (
                "deleted entry",
                format!("DELETE FROM lethe.audit_log WHERE seq = {at}"),
                Some(at),
                at,
            ),
            (
                "swapped entries",
                format!(
                    "UPDATE lethe.audit_log a SET subject_key = b.subject_key, detail = b.detail,
                            prev_hash = b.prev_hash, hash = b.hash
                     FROM lethe.pristine b
                     WHERE (a.seq, b.seq) IN (({at}, {n}), ({n}, {at}))",
                    n = at + 1
                ),
                Some(at),
                at,
            ),
            (
                "duplicated entry",
                format!(
                    "INSERT INTO lethe.audit_log SELECT {} AS seq, at, run_id, job, subject_key, owner, event,
                            hold_id, detail, prev_hash, hash FROM lethe.pristine WHERE seq = {at}",
                    N + 1
                ),
                Some(N + 1),
                N + 1,
            ),
            (
                "truncated tail",
                format!("DELETE FROM lethe.audit_log WHERE seq >= {at}"),
                None,
                at,
            ),
        ];
        for (kind, sql, plain, anchored) in cases {
            w.sql(restore).await;
            w.sql(&sql).await;
            let (code, out) = verify(&w, None);
            match plain {
                Some(seq) => {
                    assert_eq!(code, 1, "{kind} at {at} went unnoticed: {out}");
                    assert!(
                        out.contains(&format!("BROKEN: entry {seq}:")),
                        "{kind} at {at}: {out}"
                    );
                }
                None => assert_eq!(code, 0, "{kind} at {at}: only the anchors can tell: {out}"),
            }
            let (code, out) = verify(&w, Some(&file_arg));
            assert_eq!(code, 1, "{kind} at {at} went unnoticed with anchors: {out}");
            assert!(
                out.contains(&format!("BROKEN: entry {anchored}:")),
                "{kind} at {at}: {out}"
            );
        }

        // Rewritten and rehashed from `at` on: a consistent chain, caught by the first anchor
        // at or after `at` (anchors every 100 entries, like one per run).
        w.sql(restore).await;
        w.sql(&format!(
            "UPDATE lethe.audit_log SET owner = '2' WHERE seq = {at}"
        ))
        .await;
        rehash_from(&w, at).await;
        let (code, out) = verify(&w, None);
        assert_eq!(code, 0, "a rehashed suffix is consistent in itself: {out}");
        let (code, out) = verify(&w, Some(&file_arg));
        assert_eq!(code, 1, "rewritten at {at}: {out}");
        let first_anchor = (at + 99) / 100 * 100;
        assert!(
            out.contains(&format!("BROKEN: entry {first_anchor}:"))
                && out.contains(&format!("entries up to {} match", first_anchor - 100)),
            "rewritten at {at}: {out}"
        );
    }

    // Anchors in S3 work the same way.
    w.sql(restore).await;
    let s3 = format!("s3://{}/anchors", w.bucket);
    let (code, out, err) = w.cli(&["audit", "anchor", "--to", &s3]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("anchored entry {N}")), "{out}");
    assert_eq!(verify(&w, Some(&s3)).0, 0);
    w.sql(&format!("DELETE FROM lethe.audit_log WHERE seq = {N}"))
        .await;
    let (code, out) = verify(&w, Some(&s3));
    assert_eq!(code, 1);
    assert!(out.contains(&format!("BROKEN: entry {N}:")), "{out}");
    let anchors: Vec<Anchor> = Target::parse(&s3).unwrap().read(w.store()).await.unwrap();
    assert_eq!(anchors.len(), 1);

    // In a bucket with Object Lock, the anchor is retained: its version cannot be deleted.
    w.sql(restore).await;
    let locked = format!("{}-lock", w.bucket);
    w.store().create_locked_bucket(&locked).await.unwrap();
    let target = format!("s3://{locked}/anchors/");
    let (code, _, err) = w.cli(&["audit", "anchor", "--to", &target]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(verify(&w, Some(&target)).0, 0);
    let versions = w
        .store()
        .list_page(&locked, "anchors/", true, None)
        .await
        .unwrap()
        .items;
    assert_eq!(versions.len(), 1, "{versions:?}");
    let outcome = w.store().delete_batch(&locked, &versions).await.unwrap();
    assert!(
        matches!(outcome[0], lethe::storage::KeyOutcome::Denied(_)),
        "the retained anchor was deletable: {outcome:?}"
    );

    // What Object Lock alone does not stop: the tail is cut, the retained anchor hidden behind a
    // delete marker (which the lock allows), and a new anchor put for the new head. A listing
    // of current objects shows only the new anchor; the versions show the hidden one too.
    w.sql(&format!("DELETE FROM lethe.audit_log WHERE seq = {N}"))
        .await;
    let marker = lethe::storage::ObjectVersion {
        key: versions[0].key.clone(),
        version_id: None,
        delete_marker: false,
    };
    let hidden = w.store().delete_batch(&locked, &[marker]).await.unwrap();
    assert!(
        matches!(hidden[0], lethe::storage::KeyOutcome::Deleted),
        "a delete marker could not be added: {hidden:?}"
    );
    let current = w
        .store()
        .list_page(&locked, "anchors/", false, None)
        .await
        .unwrap()
        .items;
    assert!(current.is_empty(), "the anchor is hidden: {current:?}");
    let head = lethe::anchor::head(&w.ctx.db).await.unwrap().unwrap();
    assert_eq!(head.seq, N - 1);
    Target::parse(&target)
        .unwrap()
        .write(w.store(), &head, 1)
        .await
        .unwrap();
    let (code, out) = verify(&w, Some(&target));
    assert_eq!(code, 1, "the hidden anchor went unnoticed: {out}");
    assert!(
        out.contains("BROKEN") && out.contains("delete marker"),
        "{out}"
    );
    w.cleanup().await;
}
