//! The storage behaviour suite: every `ObjectStore` backend (the in-memory one, the real S3
//! server and a local directory) must give the same answers to the same questions, and
//! `Walker`, `purge` and `verify` must behave the same on top of each. Each test gets its own
//! fresh bucket. A local directory keeps no versions or uploads, and cannot hold a file and a
//! directory of the same name, so those tests run on the other two only.

use crate::helpers;
use futures::StreamExt;
use lethe::context::Context;
use lethe::domain::Location;
use lethe::pipeline::listing::Walker;
use lethe::pipeline::objects::{self, Buckets};
use lethe::pipeline::verify;
use lethe::storage::local::LocalStore;
use lethe::storage::memory::MemoryStore;
use lethe::storage::s3::S3Store;
use lethe::storage::{
    KeyOutcome, MAX_BATCH, ObjectStore, ObjectVersion, PageToken, StoreError, Versioning,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Memory,
    S3,
    Local,
}

impl Kind {
    /// The bucket kinds this backend has.
    fn versionings(self) -> Vec<Versioning> {
        match self {
            Kind::Local => vec![Versioning::Unversioned],
            _ => vec![Versioning::Unversioned, Versioning::Enabled],
        }
    }

    /// Whether `a` and `a/b` can both be keys (not on a file system).
    fn file_beside_dir(self) -> bool {
        self != Kind::Local
    }
}

/// One backend with one fresh bucket, and a `Context` around it for `purge` and `verify`
/// (which never touch the database, so the pool is lazy and never connects).
struct Backend {
    store: Arc<dyn ObjectStore>,
    bucket: String,
    ctx: Context,
}

async fn backend(kind: Kind, versioning: Versioning) -> Backend {
    let mut settings = helpers::settings(&helpers::admin_url(), &std::env::temp_dir());
    let store: Arc<dyn ObjectStore> = match kind {
        Kind::Memory => Arc::new(MemoryStore::default()),
        Kind::S3 => Arc::new(S3Store::connect(&settings.s3).await),
        Kind::Local => {
            let root = std::env::temp_dir().join(helpers::unique("lethe-objects-"));
            std::fs::create_dir_all(&root).unwrap();
            let store = LocalStore::open(&root).unwrap();
            settings.object_root = Some(store.root().to_path_buf());
            Arc::new(store)
        }
    };
    let bucket = helpers::unique("it-");
    store
        .create_bucket(&bucket, versioning)
        .await
        .expect("S3 server is up (bash scripts/services.sh start)");
    let pool = sqlx::PgPool::connect_lazy(&settings.database_url).expect("a valid DATABASE_URL");
    let ctx = Context::with_store(&settings, lethe::db::Db::Pg(pool), store.clone());
    Backend { store, bucket, ctx }
}

impl Backend {
    fn s(&self) -> &dyn ObjectStore {
        &*self.store
    }

    async fn put(&self, key: &str) -> Option<String> {
        let body = format!("body of {key}").into_bytes();
        self.s().put(&self.bucket, key, body).await.unwrap()
    }

    /// Puts every key, 16 requests in flight.
    async fn put_all(&self, keys: &[String]) {
        futures::stream::iter(keys)
            .for_each_concurrent(16, |k| async move {
                self.put(k).await;
            })
            .await;
    }

    /// Every page under `prefix`, following the tokens; also answers the number of pages.
    async fn list_all(&self, prefix: &str, versions: bool) -> (Vec<ObjectVersion>, usize) {
        let (mut all, mut pages, mut token) = (Vec::new(), 0, None);
        loop {
            let page = self
                .s()
                .list_page(&self.bucket, prefix, versions, token)
                .await
                .unwrap();
            pages += 1;
            assert!(pages < 10_000, "listing {prefix} does not end");
            all.extend(page.items);
            match page.next {
                Some(t) => token = Some(t),
                None => return (all, pages),
            }
        }
    }

    /// Deletes in batches of `MAX_BATCH`, asserting one `Deleted` per entry. Versions go oldest
    /// first, as the purge sends them: SeaweedFS moves a key's "latest version" pointer at every
    /// delete of its newest version, so 1,100 versions of one key deleted newest first took 6.0 s
    /// against 0.6 s oldest first, and over 30 s (the attempt timeout) on a loaded CI machine.
    async fn delete_all(&self, items: &[ObjectVersion]) {
        let mut items = items.to_vec();
        if items.iter().any(|v| v.version_id.is_some()) {
            items.reverse();
        }
        for chunk in items.chunks(MAX_BATCH) {
            let out = self.s().delete_batch(&self.bucket, chunk).await.unwrap();
            assert_eq!(
                out,
                vec![KeyOutcome::Deleted; chunk.len()],
                "deleting {chunk:?}"
            );
        }
    }

    /// Every key `Walker` yields for `loc`, sorted, with its number of entries.
    async fn walk(&self, loc: &Location, versions: bool) -> BTreeMap<String, usize> {
        let mut seen = BTreeMap::new();
        let mut w = Walker::new(self.s(), loc, versions);
        while let Some(page) = w.next_page().await.unwrap() {
            assert!(!page.is_empty(), "Walker answered an empty page");
            for o in page {
                *seen.entry(o.key).or_default() += 1;
            }
        }
        seen
    }
}

fn object(key: &str, version_id: Option<&str>) -> ObjectVersion {
    ObjectVersion {
        key: key.into(),
        version_id: version_id.map(String::from),
        delete_marker: false,
    }
}

fn keys<'a>(items: impl IntoIterator<Item = &'a ObjectVersion>) -> BTreeSet<String> {
    items.into_iter().map(|o| o.key.clone()).collect()
}

/// More than one S3 page (1,000 keys) under one prefix.
const MANY: usize = 1_100;

async fn unversioned_listing_pages_through_everything_and_batch_delete_empties_it(kind: Kind) {
    let b = backend(kind, Versioning::Unversioned).await;
    assert_eq!(
        b.s().versioning(&b.bucket).await.unwrap(),
        Versioning::Unversioned
    );
    let want: Vec<String> = (0..MANY).map(|i| format!("big/{i:05}")).collect();
    b.put_all(&want).await;
    b.put("bigger/neighbour").await;

    let (listed, pages) = b.list_all("big/", false).await;
    assert!(
        pages > 1,
        "{} entries in one page: pagination was not exercised",
        listed.len()
    );
    assert_eq!(listed.len(), MANY, "every object listed exactly once");
    assert_eq!(keys(&listed), want.iter().cloned().collect());
    assert!(
        listed
            .iter()
            .all(|o| o.version_id.is_none() && !o.delete_marker),
        "{listed:?}"
    );

    b.delete_all(&listed).await;
    assert_eq!(b.list_all("big/", false).await.0, vec![]);
    assert_eq!(
        keys(&b.list_all("bigger/", false).await.0),
        BTreeSet::from(["bigger/neighbour".into()])
    );
}

/// `purge` deletes what the first pages listed while it is still listing: a continuation must
/// not depend on the entries it continues after still being there.
async fn listing_continues_after_deleting_the_pages_already_listed(kind: Kind) {
    for versioning in kind.versionings() {
        let b = backend(kind, versioning).await;
        let v = versioning.keeps_versions();
        // Versioned: a few keys with hundreds of versions each, so pages end inside a key and the
        // continuation names a version that has just been deleted.
        let want: Vec<String> = (0..MANY)
            .map(|i| {
                if v {
                    format!("p/{}", i % 3)
                } else {
                    format!("p/{i:05}")
                }
            })
            .collect();
        b.put_all(&want).await;
        let (mut seen, mut token, mut pages) = (0, None::<PageToken>, 0);
        loop {
            let page = b.s().list_page(&b.bucket, "p/", v, token).await.unwrap();
            pages += 1;
            assert!(pages < 10_000, "listing does not end");
            b.delete_all(&page.items).await;
            seen += page.items.len();
            match page.next {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        assert!(pages > 1, "{versioning:?}");
        assert_eq!(
            seen, MANY,
            "{versioning:?}: entries listed before the walk stopped"
        );
        assert_eq!(b.list_all("p/", v).await.0, vec![], "{versioning:?}");
    }
}

async fn deleting_what_is_already_gone_is_success(kind: Kind) {
    let b = backend(kind, Versioning::Unversioned).await;
    b.put("a/present").await;
    let batch = [object("a/never-existed", None), object("a/present", None)];
    let out = b.s().delete_batch(&b.bucket, &batch).await.unwrap();
    assert_eq!(out, vec![KeyOutcome::Deleted, KeyOutcome::Deleted]);
    assert_eq!(b.list_all("a/", false).await.0, vec![]);
    // Again: both are gone now, which is what a retry after a lost answer sees.
    let out = b.s().delete_batch(&b.bucket, &batch).await.unwrap();
    assert_eq!(out, vec![KeyOutcome::Deleted, KeyOutcome::Deleted]);

    // A version deleted twice (a retried batch on a versioned bucket).
    if !kind.versionings().contains(&Versioning::Enabled) {
        return;
    }
    let v = backend(kind, Versioning::Enabled).await;
    let id = v
        .put("a/x")
        .await
        .expect("a versioned put answers a version id");
    for _ in 0..2 {
        let out = v
            .s()
            .delete_batch(&v.bucket, &[object("a/x", Some(&id))])
            .await
            .unwrap();
        assert_eq!(out, vec![KeyOutcome::Deleted]);
    }
    assert_eq!(v.list_all("a/", true).await.0, vec![]);
}

async fn versioned_bucket_keeps_versions_and_markers_until_each_is_deleted(kind: Kind) {
    let b = backend(kind, Versioning::Enabled).await;
    assert_eq!(
        b.s().versioning(&b.bucket).await.unwrap(),
        Versioning::Enabled
    );
    let mut ids = BTreeSet::new();
    for _ in 0..3 {
        ids.insert(
            b.put("doc/report.pdf")
                .await
                .expect("a versioned put answers a version id"),
        );
    }
    assert_eq!(ids.len(), 3, "three puts, three distinct versions: {ids:?}");
    // Without a version id, a delete on a versioned bucket only adds a delete marker.
    let out = b
        .s()
        .delete_batch(&b.bucket, &[object("doc/report.pdf", None)])
        .await
        .unwrap();
    assert_eq!(out, vec![KeyOutcome::Deleted]);

    assert_eq!(
        b.list_all("doc/", false).await.0,
        vec![],
        "the current version is the marker"
    );
    let (all, _) = b.list_all("doc/", true).await;
    let versions: BTreeSet<String> = all
        .iter()
        .filter(|o| !o.delete_marker)
        .map(|o| o.version_id.clone().unwrap())
        .collect();
    let markers: Vec<_> = all.iter().filter(|o| o.delete_marker).collect();
    assert_eq!(versions, ids, "{all:?}");
    assert_eq!(markers.len(), 1, "{all:?}");
    assert!(
        markers[0].version_id.is_some(),
        "a marker is deleted by its version id"
    );
    assert!(all.iter().all(|o| o.key == "doc/report.pdf"));

    b.delete_all(&all).await;
    assert_eq!(
        b.list_all("doc/", true).await.0,
        vec![],
        "no version and no marker left"
    );
}

/// Regression: the memory store gave every delete marker of a key the same version id, so two
/// markers looked like one and deleting one by id deleted both.
async fn each_delete_marker_is_a_version_of_its_own(kind: Kind) {
    let b = backend(kind, Versioning::Enabled).await;
    b.put("m/k").await;
    for _ in 0..2 {
        b.delete_all(&[object("m/k", None)]).await;
    }
    let (all, _) = b.list_all("m/", true).await;
    let markers: BTreeSet<_> = all
        .iter()
        .filter(|o| o.delete_marker)
        .map(|o| o.version_id.clone())
        .collect();
    assert_eq!(
        markers.len(),
        2,
        "two deletes, two markers with distinct ids: {all:?}"
    );
    b.delete_all(&all[..1]).await;
    assert_eq!(
        b.list_all("m/", true).await.0.len(),
        2,
        "deleting one version by id deleted others"
    );
}

/// Many versions of one key span pages: the continuation must carry the version-id marker.
async fn versioned_listing_pages_through_many_versions_of_one_key(kind: Kind) {
    let b = backend(kind, Versioning::Enabled).await;
    let hot: Vec<String> = vec!["v/hot".to_string(); MANY];
    b.put_all(&hot).await;
    b.put_all(&["v/a".into(), "v/z".into()]).await;
    let (all, pages) = b.list_all("v/", true).await;
    assert!(pages > 1);
    let distinct: BTreeSet<_> = all
        .iter()
        .map(|o| (o.key.clone(), o.version_id.clone()))
        .collect();
    assert_eq!(
        (all.len(), distinct.len()),
        (MANY + 2, MANY + 2),
        "each version listed once"
    );
    b.delete_all(&all).await;
    assert_eq!(b.list_all("v/", true).await.0, vec![]);
}

async fn walker_never_strays_into_neighbouring_prefixes(kind: Kind) {
    for versioning in kind.versionings() {
        let b = backend(kind, versioning).await;
        // `runs/1` and `runs/10` are objects beside the directories of the same name, where the
        // backend can store both.
        let exact = kind.file_beside_dir();
        for k in [
            "runs/1/a",
            "runs/1/b/c",
            "runs/10/a",
            "runs/1-x/a",
            "runs/1",
            "runs/10",
            "runs/1a",
        ] {
            if exact || !["runs/1", "runs/10"].contains(&k) {
                b.put(k).await;
            }
        }
        if versioning.keeps_versions() {
            b.put("runs/1").await;
            b.delete_all(&[object("runs/1", None), object("runs/10/a", None)])
                .await;
        }
        let v = versioning.keeps_versions();
        let dir = Location::dir(&b.bucket, "runs/1/").unwrap();
        let seen = b.walk(&dir, v).await;
        assert_eq!(
            seen.keys().collect::<Vec<_>>(),
            ["runs/1/a", "runs/1/b/c"],
            "{versioning:?}"
        );

        let uri = Location::from_uri(&format!("s3://{}/runs/1", b.bucket)).unwrap();
        let seen = b.walk(&uri, v).await;
        let want: &[&str] = if exact {
            &["runs/1", "runs/1/a", "runs/1/b/c"]
        } else {
            &["runs/1/a", "runs/1/b/c"]
        };
        assert_eq!(seen.keys().collect::<Vec<_>>(), want, "{versioning:?}");
        if exact {
            // Two puts and a marker on the exact object of the versioned bucket.
            assert_eq!(seen["runs/1"], if v { 3 } else { 1 }, "{versioning:?}");
        }
    }
}

/// On a plain bucket: one subject's URI names a single object, another's a directory; each
/// loses exactly its own, however alike the neighbours' names.
async fn purge_and_verify_remove_each_subject_only_on_a_plain_bucket(kind: Kind) {
    let b = backend(kind, Versioning::Unversioned).await;
    let mine = [
        "runs/1/model.bin",
        "runs/2/a",
        "runs/2/deep/er/b",
        "runs/2/c",
    ];
    let neighbours = [
        "runs/1/model.bin.bak",
        "runs/1/model.binx/y",
        "runs/10/z",
        "runs/2-b/k",
        "runs/20/a",
        "runs/2.txt",
    ];
    for k in mine.iter().chain(&neighbours) {
        b.put(k).await;
    }
    let subjects = vec![
        vec![Location::from_uri(&format!("s3://{}/runs/1/model.bin", b.bucket)).unwrap()],
        vec![Location::dir(&b.bucket, "runs/2/").unwrap()],
    ];
    let buckets = Buckets::default();
    assert!(
        verify_all(&b, &buckets, &subjects)
            .await
            .iter()
            .all(|c| c.is_err())
    );
    let tallies = objects::purge(&b.ctx, &buckets, &subjects, false, None).await;
    let t: Vec<_> = tallies
        .iter()
        .map(|t| (t.versions, t.failed.clone()))
        .collect();
    assert_eq!(t, [(1, None), (3, None)], "{tallies:?}");
    assert_eq!(
        verify_all(&b, &buckets, &subjects).await,
        vec![Ok(()), Ok(())]
    );
    assert_eq!(
        keys(&b.list_all("runs/", false).await.0),
        neighbours.iter().map(|k| k.to_string()).collect(),
        "only the neighbours are left"
    );
}

/// Ranges of several directories start from a marker just before their first directory, and
/// jump to one just before the next (`runs/19/` -> `runs/18~`); on every backend and bucket
/// kind, nothing of a directory sorts before its marker and nothing beside one is taken, with
/// 600 keys in `runs/18~/` (more than half a page of 1,000: the walk jumps over them).
async fn range_markers_take_each_directory_whole_and_nothing_beside(kind: Kind) {
    for versioning in kind.versionings() {
        let b = backend(kind, versioning).await;
        let dirs = ["1", "19", "2", "20", "a-", "é"];
        let mine: Vec<String> = dirs
            .iter()
            .flat_map(|d| [format!("runs/{d}/a"), format!("runs/{d}/~/b")])
            .collect();
        let mut neighbours: Vec<String> = [
            "runs/0~/k",
            "runs/1~x",
            "runs/189/k",
            "runs/18z/k",
            "runs/2~/k",
            "runs/a,/k",
            "runs/a,~/k",
            "runs/è~/k",
            "runs/éa/k",
        ]
        .iter()
        .map(|k| k.to_string())
        .collect();
        neighbours.extend((0..600).map(|i| format!("runs/18~/{i:03}")));
        b.put_all(&mine).await;
        b.put_all(&neighbours).await;
        let subjects: Vec<Vec<Location>> = dirs
            .iter()
            .map(|d| vec![Location::dir(&b.bucket, &format!("runs/{d}/")).unwrap()])
            .collect();
        let buckets = Buckets::default();
        // Before the purge every subject fails verification, by range and by directory alike;
        // also `runs/1/` and `runs/19/` alone, one range under the prefix `runs/1` that its
        // marker (`runs/0~`) sorts before.
        for batch in [&subjects[..], &subjects[..2]] {
            let before = verify_all(&b, &buckets, batch).await;
            assert!(
                before.iter().all(|c| c.is_err()),
                "{versioning:?} {before:?}"
            );
        }
        let tallies = objects::purge(&b.ctx, &buckets, &subjects, false, None).await;
        let t: Vec<_> = tallies
            .iter()
            .map(|t| (t.versions, t.failed.clone()))
            .collect();
        assert_eq!(t, vec![(2, None); dirs.len()], "{versioning:?}");
        assert_eq!(
            verify_all(&b, &buckets, &subjects).await,
            vec![Ok(()); dirs.len()],
            "{versioning:?}"
        );
        assert_eq!(
            keys(&b.list_all("runs/", versioning.keeps_versions()).await.0),
            neighbours.into_iter().collect(),
            "{versioning:?}: only the neighbours are left"
        );
    }
}

async fn purge_and_verify_remove_every_version_and_marker_of_each_subject_only(kind: Kind) {
    let b = backend(kind, Versioning::Enabled).await;
    // Subject 0: a URI naming `runs/1` (the directory and the object); subject 1: `runs/2/`.
    for k in [
        "runs/1/x", "runs/1/x", "runs/1/x", "runs/1/y", "runs/1", "runs/1",
    ] {
        b.put(k).await;
    }
    for k in [
        "runs/2/k",
        "runs/2/k",
        "runs/10/z",
        "runs/10/z",
        "runs/1-x/q",
    ] {
        b.put(k).await;
    }
    b.delete_all(&[
        object("runs/1/y", None),
        object("runs/2/k", None),
        object("runs/10/z", None),
    ])
    .await;
    let neighbours_before = b.list_all("runs/10/", true).await.0;
    assert_eq!(neighbours_before.len(), 3);

    let subjects = vec![
        vec![Location::from_uri(&format!("s3://{}/runs/1", b.bucket)).unwrap()],
        vec![Location::dir(&b.bucket, "runs/2/").unwrap()],
    ];
    let buckets = Buckets::default();
    assert!(
        verify_all(&b, &buckets, &subjects[1..2]).await[0].is_err(),
        "verify before purge"
    );
    assert_eq!(
        objects::count(&b.ctx, &buckets, &subjects[0])
            .await
            .unwrap(),
        (6, 1, 0)
    );

    let tallies = objects::purge(&b.ctx, &buckets, &subjects, false, None).await;
    let t: Vec<_> = tallies
        .iter()
        .map(|t| (t.versions, t.delete_markers, t.uploads_aborted))
        .collect();
    assert_eq!(t, [(6, 1, 0), (2, 1, 0)], "{tallies:?}");
    for (t, locs) in tallies.iter().zip(&subjects) {
        assert_eq!((&t.failed, &t.denied), (&None, &None));
        assert_eq!(t.routes, BTreeSet::from(["versioned".to_string()]));
        assert_eq!(
            verify_all(&b, &buckets, std::slice::from_ref(locs)).await,
            vec![Ok(())]
        );
    }
    assert_eq!(b.list_all("runs/1/", true).await.0, vec![]);
    assert_eq!(b.list_all("runs/2/", true).await.0, vec![]);
    let left = keys(&b.list_all("runs/", true).await.0);
    assert_eq!(
        left,
        BTreeSet::from(["runs/10/z".into(), "runs/1-x/q".into()]),
        "`runs/1` is gone"
    );
    let mut after = b.list_all("runs/10/", true).await.0;
    let mut before = neighbours_before;
    after.sort();
    before.sort();
    assert_eq!(
        after, before,
        "the neighbour keeps every version and its marker"
    );
}

async fn purge_aborts_unfinished_uploads(kind: Kind) {
    let b = backend(kind, Versioning::Unversioned).await;
    let up = b
        .s()
        .start_upload(&b.bucket, "runs/5/big.bin")
        .await
        .unwrap();
    b.s()
        .start_upload(&b.bucket, "runs/50/big.bin")
        .await
        .unwrap();
    assert_eq!(
        b.s().list_uploads(&b.bucket, "runs/5/").await.unwrap(),
        vec![up.clone()]
    );
    // Invisible to listings, yet stored: verify must see it.
    assert_eq!(b.list_all("runs/5/", false).await.0, vec![]);
    let loc = vec![Location::dir(&b.bucket, "runs/5/").unwrap()];
    let buckets = Buckets::default();
    let err = verify_all(&b, &buckets, std::slice::from_ref(&loc))
        .await
        .remove(0)
        .unwrap_err();
    assert!(err.contains("1 unfinished uploads"), "{err}");

    let tallies = objects::purge(&b.ctx, &buckets, std::slice::from_ref(&loc), false, None).await;
    assert_eq!(tallies[0].uploads_aborted, 1, "{tallies:?}");
    assert_eq!(tallies[0].failed, None);
    assert_eq!(
        verify_all(&b, &buckets, std::slice::from_ref(&loc)).await,
        vec![Ok(())]
    );
    assert_eq!(
        b.s().list_uploads(&b.bucket, "runs/5/").await.unwrap(),
        vec![]
    );
    assert_eq!(
        b.s()
            .list_uploads(&b.bucket, "runs/50/")
            .await
            .unwrap()
            .len(),
        1,
        "neighbour kept"
    );
    // Aborting an upload that is already aborted is success.
    b.s().abort_upload(&b.bucket, &up).await.unwrap();
}

async fn missing_bucket_is_not_found_and_absent_prefix_is_empty(kind: Kind) {
    let b = backend(kind, Versioning::Unversioned).await;
    let missing = helpers::unique("it-missing-");
    let err = b.s().versioning(&missing).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    assert!(
        err.to_string().contains(&missing),
        "the error names the bucket: {err}"
    );
    for versions in [false, true] {
        let page = b
            .s()
            .list_page(&b.bucket, "nothing/here/", versions, None)
            .await
            .unwrap();
        assert_eq!((page.items, page.next), (vec![], None));
    }
}

macro_rules! backend_tests {
    (every: [$($name:ident),* $(,)?], versioned: [$($v:ident),* $(,)?] $(,)?) => {
        mod memory {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Kind::Memory).await
            })*
            $(#[tokio::test]
            async fn $v() {
                super::$v(super::Kind::Memory).await
            })*
        }
        mod s3 {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Kind::S3).await
            })*
            $(#[tokio::test]
            async fn $v() {
                super::$v(super::Kind::S3).await
            })*
        }
        mod local {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Kind::Local).await
            })*
        }
    };
}

backend_tests!(
    every: [
        unversioned_listing_pages_through_everything_and_batch_delete_empties_it,
        listing_continues_after_deleting_the_pages_already_listed,
        deleting_what_is_already_gone_is_success,
        walker_never_strays_into_neighbouring_prefixes,
        purge_and_verify_remove_each_subject_only_on_a_plain_bucket,
        missing_bucket_is_not_found_and_absent_prefix_is_empty,
        range_markers_take_each_directory_whole_and_nothing_beside,
    ],
    versioned: [
        versioned_bucket_keeps_versions_and_markers_until_each_is_deleted,
        each_delete_marker_is_a_version_of_its_own,
        versioned_listing_pages_through_many_versions_of_one_key,
        purge_and_verify_remove_every_version_and_marker_of_each_subject_only,
        purge_aborts_unfinished_uploads,
    ],
);

/// Refused credentials are a configuration error (exit 2) that names the bucket, never a
/// partial run: nothing is deleted. Through the binary, since the store reads the environment.
#[tokio::test]
async fn s3_wrong_secret_key_stops_the_run_before_anything_is_deleted() {
    let w = helpers::World::new(Versioning::Unversioned).await;
    w.account(1, "free", None).await;
    w.run_row(1, 1, Some(10 * helpers::DAY)).await;
    let run = |secret: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_lethe"))
            .args(["run", "--all"])
            .env("DATABASE_URL", &w.url)
            .env("LETHE_JOBS_DIR", &w.jobs_dir)
            .env("LETHE_LOG", "warn")
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = run("not-the-secret");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains(&w.bucket), "names the bucket: {stderr}");
    assert!(stderr.contains("refused our credentials"), "{stderr}");
    assert_eq!(w.keys("runs/1/").await.len(), 2, "nothing deleted");
    assert_eq!(w.rows_of_run(1).await, 7, "no row deleted");

    // The same world with the right secret does purge the run: the test above could fail.
    let (code, stderr) = run(&std::env::var("AWS_SECRET_ACCESS_KEY").unwrap());
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(w.keys("runs/1/").await, Vec::<String>::new());
    w.cleanup().await;
}

/// A version under an Object Lock legal hold is refused per key (`Denied`, a hold, never a
/// failure), `lock_of` names the protection, and lifting the hold makes it deletable.
async fn object_lock_refuses_a_held_version_and_names_the_hold(kind: Kind) {
    let b = backend(kind, Versioning::Enabled).await;
    let bucket = helpers::unique("it-lock-");
    b.s().create_locked_bucket(&bucket).await.unwrap();
    assert!(b.s().object_lock_enabled(&bucket).await.unwrap());
    assert!(!b.s().object_lock_enabled(&b.bucket).await.unwrap());
    let put = |k: &'static str| {
        let (s, bucket) = (b.s(), bucket.clone());
        async move { s.put(&bucket, k, b"x".to_vec()).await.unwrap() }
    };
    let (a, other) = (put("runs/1/a").await, put("runs/1/b").await);
    b.s()
        .set_legal_hold(&bucket, "runs/1/a", a.as_deref(), true)
        .await
        .unwrap();
    let va = object("runs/1/a", a.as_deref());
    let vb = object("runs/1/b", other.as_deref());
    assert_eq!(
        b.s().lock_of(&bucket, &va).await.unwrap().as_deref(),
        Some("legal hold ON")
    );
    assert_eq!(b.s().lock_of(&bucket, &vb).await.unwrap(), None);
    let out = b
        .s()
        .delete_batch(&bucket, &[va.clone(), vb.clone()])
        .await
        .unwrap();
    assert!(matches!(out[0], KeyOutcome::Denied(_)), "{out:?}");
    assert_eq!(out[1], KeyOutcome::Deleted);
    assert_eq!(b.s().lock_of(&bucket, &vb).await.unwrap(), None, "gone");

    b.s()
        .set_legal_hold(&bucket, "runs/1/a", a.as_deref(), false)
        .await
        .unwrap();
    assert_eq!(b.s().lock_of(&bucket, &va).await.unwrap(), None);
    assert_eq!(
        b.s().delete_batch(&bucket, &[va]).await.unwrap(),
        vec![KeyOutcome::Deleted]
    );
}

#[tokio::test]
async fn memory_object_lock_refuses_a_held_version_and_names_the_hold() {
    object_lock_refuses_a_held_version_and_names_the_hold(Kind::Memory).await
}

#[tokio::test]
async fn s3_object_lock_refuses_a_held_version_and_names_the_hold() {
    object_lock_refuses_a_held_version_and_names_the_hold(Kind::S3).await
}

/// A local store never follows a symlink: a link inside a subject's directory is deleted as a
/// link (its target, outside the root, is untouched), and a subject directory that is itself a
/// link to elsewhere is not entered at all.
#[tokio::test]
async fn local_symlinks_are_never_followed_out_of_the_root() {
    let b = backend(Kind::Local, Versioning::Unversioned).await;
    let outside = std::env::temp_dir().join(helpers::unique("lethe-outside-"));
    std::fs::create_dir_all(outside.join("sub")).unwrap();
    std::fs::write(outside.join("secret.txt"), "keep").unwrap();
    std::fs::write(outside.join("sub/deep.txt"), "keep").unwrap();
    b.put("runs/1/a").await;
    b.put("runs/3/a").await;
    let root = lethe_root(&b);
    let dir1 = root.join(&b.bucket).join("runs/1");
    std::os::unix::fs::symlink(&outside, dir1.join("dirlink")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret.txt"), dir1.join("filelink")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join(&b.bucket).join("runs/2")).unwrap();

    let subjects = vec![
        vec![Location::dir(&b.bucket, "runs/1/").unwrap()],
        vec![Location::dir(&b.bucket, "runs/2/").unwrap()],
    ];
    assert_eq!(
        keys(&b.list_all("runs/", false).await.0),
        BTreeSet::from([
            "runs/1/a".into(),
            "runs/1/dirlink".into(),
            "runs/1/filelink".into(),
            "runs/2".into(),
            "runs/3/a".into(),
        ]),
        "links are entries of their own; nothing behind them is listed"
    );
    let buckets = Buckets::default();
    let tallies = objects::purge(&b.ctx, &buckets, &subjects, false, None).await;
    assert_eq!(tallies[0].versions, 3, "{tallies:?}");
    assert_eq!(tallies[1].versions, 0, "{tallies:?}");
    assert_eq!(
        verify_all(&b, &buckets, &subjects).await,
        vec![Ok(()), Ok(())]
    );
    assert_eq!(
        std::fs::read_to_string(outside.join("secret.txt")).unwrap(),
        "keep"
    );
    assert_eq!(
        std::fs::read_to_string(outside.join("sub/deep.txt")).unwrap(),
        "keep"
    );
    assert!(!dir1.exists(), "the emptied subject directory is removed");
    assert!(
        root.join(&b.bucket).join("runs").is_dir(),
        "the top-level directory stays"
    );
    assert_eq!(
        keys(&b.list_all("runs/", false).await.0),
        BTreeSet::from(["runs/2".into(), "runs/3/a".into()])
    );
    // A delete asked to go through the link is refused as "not here", and deletes nothing.
    let out = b
        .s()
        .delete_batch(&b.bucket, &[object("runs/2/secret.txt", None)])
        .await
        .unwrap();
    assert_eq!(out, vec![KeyOutcome::Deleted]);
    assert!(outside.join("secret.txt").exists());
    let _ = std::fs::remove_dir_all(&outside);
}

/// A file whose name no key can spell would be invisible to verification: the subject fails
/// and keeps it, rather than being called clean.
#[tokio::test]
async fn local_unlistable_file_name_fails_the_subject() {
    use std::os::unix::ffi::OsStrExt;
    let b = backend(Kind::Local, Versioning::Unversioned).await;
    b.put("runs/4/a").await;
    let dir = lethe_root(&b).join(&b.bucket).join("runs/4");
    let odd = dir.join(std::ffi::OsStr::from_bytes(b"bad-\xff"));
    std::fs::write(&odd, "x").unwrap();
    let subjects = vec![vec![Location::dir(&b.bucket, "runs/4/").unwrap()]];
    let buckets = Buckets::default();
    let tallies = objects::purge(&b.ctx, &buckets, &subjects, false, None).await;
    let failed = tallies[0].failed.clone().unwrap_or_default();
    assert!(failed.contains("not UTF-8"), "{tallies:?}");
    let check = verify_all(&b, &buckets, &subjects).await.remove(0);
    assert!(check.is_err(), "verification must not call it clean");
    assert!(odd.exists());
}

/// Verification's answer for each subject.
async fn verify_all(
    b: &Backend,
    buckets: &Buckets,
    subjects: &[Vec<Location>],
) -> Vec<Result<(), String>> {
    verify::verify(&b.ctx, buckets, subjects).await
}

fn lethe_root(b: &Backend) -> std::path::PathBuf {
    b.ctx
        .settings
        .object_root
        .clone()
        .expect("a local backend has a root")
}
