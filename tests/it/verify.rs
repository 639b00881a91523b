//! Verification's one shortcut (ADR 0008): many directories side by side under one parent are
//! settled by one question to the parent, but only when nothing at all is stored under it.
//! These assert, on the real server, that the shortcut never passes a directory its own
//! listing would fail: a leftover object, a lone delete marker, a neighbour in the parent, names
//! the shortcut leaves alone.

use crate::helpers::World;
use crate::pipeline::failed_subjects as failed;
use lethe::domain::Location;
use lethe::pipeline::objects::{self, Buckets};
use lethe::storage::{ObjectVersion, Versioning};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_settles_its_directories_only_when_nothing_is_under_it() {
    for versioning in [Versioning::Unversioned, Versioning::Enabled] {
        let w = World::new(versioning).await;
        // 40 subject directories under `runs/`, one of them with a name the shortcut leaves to
        // its own listing (a space), and 12 under `deep/x/` (a parent of its own).
        let mut dirs: Vec<String> = (1..=39).map(|i| format!("runs/{i}/")).collect();
        dirs.push("runs/a b/".into());
        dirs.extend((1..=12).map(|i| format!("deep/x/{i}/")));
        let keys: Vec<String> = dirs
            .iter()
            .flat_map(|d| [format!("{d}a"), format!("{d}b/c")])
            .collect();
        w.put_many(keys).await;
        let batch: Vec<Vec<Location>> = dirs
            .iter()
            .map(|d| vec![Location::dir(&w.bucket, d).unwrap()])
            .collect();
        let buckets = Buckets::default();
        let tallies = objects::purge(&w.ctx, &buckets, &batch, false, None).await;
        assert!(tallies.iter().all(|t| t.failed.is_none()), "{tallies:?}");
        assert!(
            w.versions("").await.is_empty(),
            "{versioning:?}: all purged"
        );
        assert!(
            failed(&w, &buckets, &batch).await.is_empty(),
            "{versioning:?}: an empty parent passes every directory under it"
        );

        // One object left in one directory: that subject fails, and only it.
        w.put("runs/17/late").await;
        assert_eq!(
            failed(&w, &buckets, &batch).await,
            vec![16],
            "{versioning:?}"
        );
        // The same inside the other parent and in the oddly named one.
        w.put("deep/x/12/late").await;
        w.put("runs/a b/late").await;
        assert_eq!(
            failed(&w, &buckets, &batch).await,
            vec![16, 39, 51],
            "{versioning:?}"
        );
        let late: Vec<ObjectVersion> = w.versions("").await;
        w.store().delete_batch(&w.bucket, &late).await.unwrap();
        assert!(
            failed(&w, &buckets, &batch).await.is_empty(),
            "{versioning:?}"
        );

        if versioning == Versioning::Enabled {
            // Only a delete marker left: still something stored under the directory.
            w.put("runs/30/gone").await;
            let plain = ObjectVersion {
                key: "runs/30/gone".into(),
                version_id: None,
                delete_marker: false,
            };
            w.store().delete_batch(&w.bucket, &[plain]).await.unwrap();
            let left = w.versions("runs/30/").await;
            assert!(left.iter().any(|v| v.key == "runs/30/gone"), "{left:?}");
            assert_eq!(failed(&w, &buckets, &batch).await, vec![29]);
            let left = w.versions("").await;
            w.store().delete_batch(&w.bucket, &left).await.unwrap();
        }

        // A live neighbour under the same parent: no shortcut, every directory is listed on its
        // own, and a leftover beside it is still found.
        w.put("runs/live/x").await;
        assert!(
            failed(&w, &buckets, &batch).await.is_empty(),
            "{versioning:?}"
        );
        w.put("runs/5/late").await;
        assert_eq!(
            failed(&w, &buckets, &batch).await,
            vec![4],
            "{versioning:?}"
        );
        w.cleanup().await;
    }
}
