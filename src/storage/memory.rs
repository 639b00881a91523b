//! An in-memory object store for unit tests: versioning, delete markers and multipart uploads
//! modelled after S3's documented behaviour. Not for integration tests (use the real server).

use super::{
    KeyOutcome, ObjectStore, ObjectVersion, Page, PageToken, StoreError, Upload, Versioning,
};
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

#[derive(Default)]
struct Bucket {
    versioning: Option<Versioning>,
    /// key → versions, oldest first: (version id, is delete marker).
    objects: BTreeMap<String, Vec<(String, bool)>>,
    uploads: Vec<Upload>,
    object_lock: bool,
}

#[derive(Default)]
pub struct MemoryStore {
    buckets: Mutex<HashMap<String, Bucket>>,
    counter: Mutex<u64>,
    /// Keys whose deletion is refused, as S3 Object Lock would.
    pub locked: Mutex<Vec<String>>,
    /// Places in the key space a listing walks past slowly, as SeaweedFS walks emptied
    /// directories: a page whose stretch (from its marker, or its prefix's start, to its last
    /// key, or its prefix's end) holds one of these takes that long. In tokio's time.
    pub slow_spots: Mutex<Vec<(String, std::time::Duration)>>,
}

/// Page size, small so pagination is exercised.
const PAGE: usize = 7;

impl MemoryStore {
    fn next_id(&self) -> String {
        let mut c = self.counter.lock().expect("counter lock");
        *c += 1;
        format!("v{:08}", *c)
    }

    /// One page of a listing, as `list_page` answers it (without `slow_spots`).
    fn page(
        &self,
        bucket: &str,
        prefix: &str,
        versions: bool,
        token: Option<PageToken>,
    ) -> Result<Page, StoreError> {
        let b = self.buckets.lock().expect("lock");
        let b = b
            .get(bucket)
            .ok_or_else(|| StoreError::NotFound(bucket.into()))?;
        let mut all = Vec::new();
        for (key, vs) in b
            .objects
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
        {
            if versions {
                for (v, marker) in vs.iter().rev() {
                    all.push(ObjectVersion {
                        key: key.clone(),
                        version_id: Some(v.clone()),
                        delete_marker: *marker,
                    });
                }
            } else if vs.last().is_some_and(|(_, m)| !m) {
                all.push(ObjectVersion {
                    key: key.clone(),
                    version_id: None,
                    delete_marker: false,
                });
            }
        }
        // Continue strictly after the token whether or not its entry still exists: `purge`
        // deletes what earlier pages listed before asking for the next one, as S3's
        // start-after and key/version-id markers allow. (Looking the token's entry up ended the
        // listing after the first page once that entry was deleted.) Within a key, versions are
        // listed newest first and ids grow with time, so "after" means a smaller id.
        let start = match &token {
            None => 0,
            Some(t) => all
                .iter()
                .position(|o| {
                    o.key > t.key
                        || (o.key == t.key
                            && matches!((&o.version_id, &t.version), (Some(v), Some(tv)) if v < tv))
                })
                .unwrap_or(all.len()),
        };
        let items: Vec<ObjectVersion> = all[start..].iter().take(PAGE).cloned().collect();
        let next = (start + PAGE < all.len())
            .then(|| {
                items.last().map(|l| PageToken {
                    key: l.key.clone(),
                    version: l.version_id.clone(),
                })
            })
            .flatten();
        Ok(Page { items, next })
    }
}

#[async_trait]
impl ObjectStore for MemoryStore {
    async fn versioning(&self, bucket: &str) -> Result<Versioning, StoreError> {
        let b = self.buckets.lock().expect("lock");
        let b = b
            .get(bucket)
            .ok_or_else(|| StoreError::NotFound(bucket.into()))?;
        Ok(b.versioning.unwrap_or(Versioning::Unversioned))
    }

    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        versions: bool,
        token: Option<PageToken>,
    ) -> Result<Page, StoreError> {
        let after = token.as_ref().map(|t| t.key.clone());
        let page = self.page(bucket, prefix, versions, token)?;
        let slow = self
            .slow_spots
            .lock()
            .expect("lock")
            .iter()
            .filter(|(spot, _)| {
                spot.starts_with(prefix)
                    && after.as_ref().is_none_or(|a| spot > a)
                    && page.next.as_ref().is_none_or(|n| *spot <= n.key)
            })
            .map(|(_, d)| *d)
            .max();
        if let Some(d) = slow {
            tokio::time::sleep(d).await;
        }
        Ok(page)
    }
    async fn delete_batch(
        &self,
        bucket: &str,
        items: &[ObjectVersion],
    ) -> Result<Vec<KeyOutcome>, StoreError> {
        let locked = self.locked.lock().expect("lock").clone();
        let mut guard = self.buckets.lock().expect("lock");
        let b = guard
            .get_mut(bucket)
            .ok_or_else(|| StoreError::NotFound(bucket.into()))?;
        let keeps = b
            .versioning
            .unwrap_or(Versioning::Unversioned)
            .keeps_versions();
        let mut out = Vec::new();
        for it in items {
            if locked.contains(&it.key) && !it.delete_marker {
                out.push(KeyOutcome::Denied("AccessDenied: object is locked".into()));
                continue;
            }
            match (&it.version_id, keeps) {
                (Some(v), _) => {
                    if let Some(vs) = b.objects.get_mut(&it.key) {
                        vs.retain(|(id, _)| id != v);
                        if vs.is_empty() {
                            b.objects.remove(&it.key);
                        }
                    }
                }
                (None, true) => {
                    // A fresh id per marker: one derived from key length and object count gave
                    // every marker of a key the same id, so deleting one by id deleted them all.
                    let id = self.next_id();
                    b.objects
                        .entry(it.key.clone())
                        .or_default()
                        .push((id, true));
                }
                (None, false) => {
                    b.objects.remove(&it.key);
                }
            }
            out.push(KeyOutcome::Deleted);
        }
        Ok(out)
    }

    async fn list_uploads(&self, bucket: &str, prefix: &str) -> Result<Vec<Upload>, StoreError> {
        let b = self.buckets.lock().expect("lock");
        let b = b
            .get(bucket)
            .ok_or_else(|| StoreError::NotFound(bucket.into()))?;
        Ok(b.uploads
            .iter()
            .filter(|u| u.key.starts_with(prefix))
            .cloned()
            .collect())
    }

    async fn abort_upload(&self, bucket: &str, upload: &Upload) -> Result<(), StoreError> {
        let mut b = self.buckets.lock().expect("lock");
        let b = b
            .get_mut(bucket)
            .ok_or_else(|| StoreError::NotFound(bucket.into()))?;
        b.uploads.retain(|u| u != upload);
        Ok(())
    }

    async fn put(
        &self,
        bucket: &str,
        key: &str,
        _body: Vec<u8>,
    ) -> Result<Option<String>, StoreError> {
        let mut b = self.buckets.lock().expect("lock");
        // Taken under the bucket lock so a key's versions are stored in id order, which
        // `list_page` relies on to continue after a token.
        let id = self.next_id();
        let b = b
            .get_mut(bucket)
            .ok_or_else(|| StoreError::NotFound(bucket.into()))?;
        let keeps = b
            .versioning
            .unwrap_or(Versioning::Unversioned)
            .keeps_versions();
        let vs = b.objects.entry(key.to_string()).or_default();
        if !keeps {
            vs.clear();
        }
        vs.push((id.clone(), false));
        Ok(keeps.then_some(id))
    }

    async fn object_lock_enabled(&self, bucket: &str) -> Result<bool, StoreError> {
        let b = self.buckets.lock().expect("lock");
        b.get(bucket)
            .map(|b| b.object_lock)
            .ok_or_else(|| StoreError::NotFound(bucket.into()))
    }

    async fn lock_of(
        &self,
        _bucket: &str,
        item: &ObjectVersion,
    ) -> Result<Option<String>, StoreError> {
        let locked = self.locked.lock().expect("lock");
        Ok((!item.delete_marker && locked.contains(&item.key)).then(|| "legal hold ON".into()))
    }

    async fn set_legal_hold(
        &self,
        _bucket: &str,
        key: &str,
        _version_id: Option<&str>,
        on: bool,
    ) -> Result<(), StoreError> {
        let mut locked = self.locked.lock().expect("lock");
        locked.retain(|k| k != key);
        if on {
            locked.push(key.to_string());
        }
        Ok(())
    }

    async fn put_retained(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
        _until: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), StoreError> {
        self.put(bucket, key, body).await.map(|_| ())
    }

    async fn create_locked_bucket(&self, bucket: &str) -> Result<(), StoreError> {
        self.create_bucket(bucket, Versioning::Enabled).await?;
        let mut b = self.buckets.lock().expect("lock");
        b.entry(bucket.to_string()).or_default().object_lock = true;
        Ok(())
    }

    async fn create_bucket(&self, bucket: &str, versioning: Versioning) -> Result<(), StoreError> {
        let mut b = self.buckets.lock().expect("lock");
        let entry = b.entry(bucket.to_string()).or_default();
        entry.versioning = Some(versioning);
        Ok(())
    }

    async fn start_upload(&self, bucket: &str, key: &str) -> Result<Upload, StoreError> {
        let id = self.next_id();
        let mut b = self.buckets.lock().expect("lock");
        let b = b
            .get_mut(bucket)
            .ok_or_else(|| StoreError::NotFound(bucket.into()))?;
        let u = Upload {
            key: key.into(),
            upload_id: id,
        };
        b.uploads.push(u.clone());
        Ok(u)
    }
}
