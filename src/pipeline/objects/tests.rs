use super::*;
use crate::storage::memory::MemoryStore;
use crate::storage::{KeyOutcome, Page, PageToken, Upload};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

/// An unversioned one-bucket store that lists 1,000 keys at a time at once and deletes
/// slowly, recording the most keys listed and not yet deleted.
#[derive(Default)]
struct SlowDeletes {
    keys: Mutex<std::collections::BTreeSet<String>>,
    seen: Mutex<std::collections::HashSet<String>>,
    deleted: AtomicUsize,
    most_waiting: AtomicUsize,
    largest_request: AtomicUsize,
}

#[async_trait::async_trait]
impl ObjectStore for SlowDeletes {
    async fn versioning(&self, _: &str) -> Result<Versioning, StoreError> {
        Ok(Versioning::Unversioned)
    }
    async fn list_page(
        &self,
        _: &str,
        prefix: &str,
        _: bool,
        token: Option<PageToken>,
    ) -> Result<Page, StoreError> {
        let from = token.map(|t| t.key).unwrap_or_default();
        let items: Vec<ObjectVersion> = self
            .keys
            .lock()
            .unwrap()
            .range::<String, _>((std::ops::Bound::Excluded(from), std::ops::Bound::Unbounded))
            .filter(|k| k.starts_with(prefix))
            .take(MAX_BATCH)
            .map(|k| ObjectVersion {
                key: k.clone(),
                version_id: None,
                delete_marker: false,
            })
            .collect();
        let listed = {
            let mut seen = self.seen.lock().unwrap();
            seen.extend(items.iter().map(|o| o.key.clone()));
            seen.len()
        };
        let waiting = listed.saturating_sub(self.deleted.load(SeqCst));
        self.most_waiting.fetch_max(waiting, SeqCst);
        let next = (items.len() == MAX_BATCH).then(|| PageToken {
            key: items[MAX_BATCH - 1].key.clone(),
            version: None,
        });
        Ok(Page { items, next })
    }
    async fn delete_batch(
        &self,
        _: &str,
        items: &[ObjectVersion],
    ) -> Result<Vec<KeyOutcome>, StoreError> {
        self.largest_request.fetch_max(items.len(), SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut keys = self.keys.lock().unwrap();
        for o in items {
            keys.remove(&o.key);
        }
        self.deleted.fetch_add(items.len(), SeqCst);
        Ok(vec![KeyOutcome::Deleted; items.len()])
    }
    async fn list_uploads(&self, _: &str, _: &str) -> Result<Vec<Upload>, StoreError> {
        Ok(Vec::new())
    }
    async fn abort_upload(&self, _: &str, _: &Upload) -> Result<(), StoreError> {
        Ok(())
    }
    async fn put(&self, _: &str, key: &str, _: Vec<u8>) -> Result<Option<String>, StoreError> {
        self.keys.lock().unwrap().insert(key.to_string());
        Ok(None)
    }
    async fn create_bucket(&self, _: &str, _: Versioning) -> Result<(), StoreError> {
        Ok(())
    }
    async fn start_upload(&self, _: &str, _: &str) -> Result<Upload, StoreError> {
        Err(StoreError::Other("not supported here".into()))
    }
    async fn object_lock_enabled(&self, _: &str) -> Result<bool, StoreError> {
        Ok(false)
    }
    async fn put_retained(
        &self,
        _: &str,
        _: &str,
        _: Vec<u8>,
        _: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), StoreError> {
        Err(StoreError::Other("not supported here".into()))
    }
    async fn lock_of(&self, _: &str, _: &ObjectVersion) -> Result<Option<String>, StoreError> {
        Ok(None)
    }
    async fn set_legal_hold(
        &self,
        _: &str,
        _: &str,
        _: Option<&str>,
        _: bool,
    ) -> Result<(), StoreError> {
        unreachable!("the slow store has no locks")
    }
    async fn create_locked_bucket(&self, _: &str) -> Result<(), StoreError> {
        Err(StoreError::Other("not supported here".into()))
    }
}

/// Purges `subjects` directories of `per` keys each from a `SlowDeletes` store with
/// `settings` and checks every key was deleted exactly once. The directories are zero-padded
/// (`runs/007/`), so `list_tasks` keeps them in one range when `list_ranges` is 1.
async fn slow_purge(
    subjects: usize,
    per: usize,
    settings: crate::config::Settings,
) -> Arc<SlowDeletes> {
    let store = Arc::new(SlowDeletes::default());
    for i in 0..subjects {
        for j in 0..per {
            store
                .put("bkt", &format!("runs/{i:03}/{j}"), vec![])
                .await
                .unwrap();
        }
    }
    let pool = sqlx::PgPool::connect_lazy("postgres://unused/unused").unwrap();
    let ctx = Context::with_store(&settings, crate::db::Db::Pg(pool), store.clone());
    let locations: Vec<Vec<Location>> = (0..subjects)
        .map(|i| vec![Location::dir("bkt", &format!("runs/{i:03}/")).unwrap()])
        .collect();
    let tallies = purge(&ctx, &Buckets::default(), &locations, false, None).await;
    assert!(
        tallies
            .iter()
            .all(|t| t.versions == per as u64 && t.failed.is_none())
    );
    assert_eq!(store.deleted.load(SeqCst), subjects * per);
    store
}

fn settings() -> crate::config::Settings {
    crate::config::Settings::from_env_with(Some("postgres://unused/unused".into())).unwrap()
}

#[tokio::test]
async fn a_listing_faster_than_the_deletes_waits_instead_of_filling_memory() {
    let mut settings = settings();
    settings.delete_concurrency = 2;
    settings.delete_batch = MAX_BATCH;
    // One listing walks every directory in order, so each key it lists is one the purge
    // holds until it is deleted.
    settings.list_ranges = 1;
    let store = slow_purge(40, 500, settings.clone()).await;
    // The store counts a page as waiting the moment it lists it, before the lister has sent
    // any of it. So at most: the channel (4 full requests), the batch being filled or waiting
    // for a slot, the requests in flight, and that page (the lister lists the next page only
    // once the last is all in the channel); never the whole 20,000-key backlog.
    let bound = (4 + 1 + settings.delete_concurrency + 1) * MAX_BATCH;
    let most = store.most_waiting.load(SeqCst);
    assert!(
        most <= bound,
        "{most} listed keys waited at once (bound {bound})"
    );
}

#[tokio::test]
async fn no_request_carries_more_keys_than_the_delete_batch_setting() {
    for batch in [1000, 250, 7] {
        let mut settings = settings();
        settings.delete_batch = batch;
        // Two slots, so they are soon both busy and the keys listed meanwhile fill requests.
        settings.delete_concurrency = 2;
        let store = slow_purge(30, 100, settings).await;
        let largest = store.largest_request.load(SeqCst);
        assert_eq!(largest, batch, "the largest request (setting {batch})");
    }
}

#[tokio::test]
async fn one_upload_listing_per_bucket_still_matches_each_subject_exactly() {
    let store = MemoryStore::default();
    store
        .create_bucket("bkt", Versioning::Unversioned)
        .await
        .unwrap();
    store
        .create_bucket("other", Versioning::Unversioned)
        .await
        .unwrap();
    let u5 = store.start_upload("bkt", "runs/5/big.bin").await.unwrap();
    let u50 = store.start_upload("bkt", "runs/50/big.bin").await.unwrap();
    let exact = store.start_upload("bkt", "custom/7").await.unwrap();
    store.start_upload("bkt", "custom/70").await.unwrap();
    let elsewhere = store.start_upload("other", "runs/5/x").await.unwrap();
    let locations = vec![
        vec![
            Location::dir("bkt", "runs/5/").unwrap(),
            Location::from_uri("s3://bkt/custom/7").unwrap(),
        ],
        vec![Location::dir("bkt", "runs/50/").unwrap()],
        vec![
            Location::dir("bkt", "runs/6/").unwrap(),
            Location::dir("other", "runs/5/").unwrap(),
        ],
    ];
    let found: Vec<_> = uploads_by_subject(&store, &locations)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let ids = |i: usize| {
        found[i]
            .iter()
            .map(|(_, u)| u.upload_id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(0), vec![u5.upload_id, exact.upload_id]);
    assert_eq!(ids(1), vec![u50.upload_id]);
    assert_eq!(ids(2), vec![elsewhere.upload_id]);
}

/// Regression (issue 20): a per-key `AccessDenied` on a bucket without Object Lock (a role that
/// may not delete versions) was taken for a storage hold, so the subject was "held", the run
/// exited 0 and nothing was ever deleted. It is a failure; on a bucket with Object Lock, a
/// version the store says is locked is still a hold.
#[tokio::test]
async fn access_denied_is_a_hold_only_where_object_lock_protects_the_version() {
    for lock in [false, true] {
        let store = Arc::new(MemoryStore::default());
        if lock {
            store.create_locked_bucket("bkt").await.unwrap();
        } else {
            store
                .create_bucket("bkt", Versioning::Unversioned)
                .await
                .unwrap();
        }
        store.put("bkt", "runs/1/a", vec![]).await.unwrap();
        // The memory store refuses these keys with `AccessDenied`, whatever the bucket.
        store.locked.lock().unwrap().push("runs/1/a".into());
        let mut s = settings();
        s.key_retries = 1;
        let pool = sqlx::PgPool::connect_lazy("postgres://unused/unused").unwrap();
        let ctx = Context::with_store(&s, crate::db::Db::Pg(pool), store.clone());
        let locations = vec![vec![Location::dir("bkt", "runs/1/").unwrap()]];
        let t = purge(&ctx, &Buckets::default(), &locations, false, None)
            .await
            .remove(0);
        if lock {
            assert!(t.failed.is_none(), "{t:?}");
            assert!(
                t.denied.as_deref().unwrap().contains("legal hold ON"),
                "{t:?}"
            );
        } else {
            assert!(t.denied.is_none(), "not a hold: {t:?}");
            let failed = t.failed.unwrap_or_default();
            assert!(failed.contains("s3:DeleteObjectVersion"), "{failed}");
            assert!(failed.contains("bkt"), "names the bucket: {failed}");
        }
    }
}
