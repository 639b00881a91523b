//! A local directory as an object store, for platforms that keep artifacts on a disk or a
//! network mount: `LETHE_OBJECT_STORE=file:///srv/artifacts`.
//!
//! The root holds one directory per bucket; a key is a path below it, `/`-separated. Listings
//! answer regular files (and symlinks, as entries of their own) in the byte order S3 uses, so
//! everything above this trait (walkers, range listings, verification) works unchanged.
//!
//! Symlinks are never followed: every directory is opened relative to its parent with
//! `O_NOFOLLOW`, so a symlink planted inside the tree can neither widen a listing nor make a
//! delete act outside the root. A symlink is itself an entry and deleting it removes the link,
//! never its target. Directories a purge empties are removed too, except the top-level ones
//! directly under a bucket (`runs/`), which platforms often create with their own ownership.
//!
//! Local directories keep no versions, no multipart uploads and no Object Lock: `versioning`
//! answers `Unversioned`, upload listings are empty, and the seeding methods that need those
//! features are refused.

use super::{
    KeyOutcome, ObjectStore, ObjectVersion, Page, PageToken, StoreError, Upload, Versioning,
};
use async_trait::async_trait;
use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};
use rustix::io::Errno;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// Keys per listing page, as S3 answers.
const PAGE: usize = 1000;

#[derive(Clone)]
pub struct LocalStore {
    root: std::sync::Arc<PathBuf>,
}

impl LocalStore {
    /// A store rooted at `root`, which must be an existing directory.
    pub fn open(root: &Path) -> Result<Self, String> {
        let meta = std::fs::metadata(root).map_err(|e| {
            format!(
                "the object root {} cannot be read ({e}): create it, or fix LETHE_OBJECT_STORE",
                root.display()
            )
        })?;
        if !meta.is_dir() {
            return Err(format!(
                "the object root {} is not a directory: fix LETHE_OBJECT_STORE",
                root.display()
            ));
        }
        let root = root
            .canonicalize()
            .map_err(|e| format!("resolving the object root {}: {e}", root.display()))?;
        Ok(LocalStore {
            root: std::sync::Arc::new(root),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The bucket's directory, opened without following a symlink.
    fn bucket_dir(&self, bucket: &str) -> Result<OwnedFd, StoreError> {
        check_name(bucket)?;
        let root = open_dir(rustix::fs::CWD, self.root.as_path()).map_err(|e| {
            StoreError::Other(format!(
                "opening the object root {}: {e}",
                self.root.display()
            ))
        })?;
        match open_dir(&root, bucket) {
            Ok(fd) => Ok(fd),
            Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => Err(StoreError::NotFound(format!(
                "{bucket} (no directory {})",
                self.root.join(bucket).display()
            ))),
            Err(e) => Err(io_error(&format!("opening bucket directory `{bucket}`"), e)),
        }
    }

    fn list_sync(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
    ) -> Result<Page, StoreError> {
        let top = self.bucket_dir(bucket)?;
        // Descend straight to the deepest directory the prefix names; a missing or symlinked
        // component means nothing is stored under the prefix.
        let (dir_part, _) = prefix.rsplit_once('/').unwrap_or(("", prefix));
        let mut fd = top;
        let mut rel = String::new();
        for seg in dir_part.split('/').filter(|s| !s.is_empty()) {
            match open_dir(&fd, seg) {
                Ok(next) => fd = next,
                Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => return Ok(Page::default()),
                Err(e) => return Err(io_error(&format!("listing {bucket}/{prefix}"), e)),
            }
            rel.push_str(seg);
            rel.push('/');
        }
        let mut keys = Vec::new();
        collect(&fd, &rel, prefix, after, &mut keys)
            .map_err(|e| io_error(&format!("listing {bucket}/{prefix}"), e))
            .and_then(|r| r.map_err(StoreError::Other))?;
        let more = keys.len() > PAGE;
        keys.truncate(PAGE);
        let next = more.then(|| PageToken {
            key: keys.last().cloned().unwrap_or_default(),
            version: None,
        });
        Ok(Page {
            items: keys
                .into_iter()
                .map(|key| ObjectVersion {
                    key,
                    version_id: None,
                    delete_marker: false,
                })
                .collect(),
            next,
        })
    }

    fn delete_sync(
        &self,
        bucket: &str,
        items: &[ObjectVersion],
    ) -> Result<Vec<KeyOutcome>, StoreError> {
        let top = self.bucket_dir(bucket)?;
        Ok(items.iter().map(|it| delete_key(&top, &it.key)).collect())
    }

    fn put_sync(&self, bucket: &str, key: &str, body: &[u8]) -> Result<(), StoreError> {
        let top = self.bucket_dir(bucket)?;
        let segs = segments(key).map_err(StoreError::Other)?;
        let what = || format!("writing {bucket}/{key}");
        let mut fd = top;
        for seg in &segs[..segs.len() - 1] {
            match rustix::fs::mkdirat(&fd, *seg, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(io_error(&what(), e)),
            }
            fd = open_dir(&fd, *seg).map_err(|e| io_error(&what(), e))?;
        }
        let file = rustix::fs::openat(
            &fd,
            *segs.last().expect("a key has a name"),
            OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .map_err(|e| io_error(&what(), e))?;
        use std::io::Write;
        std::fs::File::from(file)
            .write_all(body)
            .map_err(|e| StoreError::Other(format!("{}: {e}", what())))
    }
}

/// Runs blocking file system work off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Other(format!("file system task failed: {e}")))?
}

fn open_dir(at: impl std::os::fd::AsFd, name: impl rustix::path::Arg) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(
        at,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

fn io_error(what: &str, e: Errno) -> StoreError {
    let msg = format!("{what}: {e}");
    match e {
        Errno::ACCESS | Errno::PERM => StoreError::Auth(msg),
        Errno::INTR | Errno::AGAIN | Errno::NOMEM | Errno::NFILE | Errno::MFILE => {
            StoreError::Transient(msg)
        }
        _ => StoreError::Other(msg),
    }
}

fn check_name(bucket: &str) -> Result<(), StoreError> {
    if bucket.is_empty()
        || bucket == "."
        || bucket == ".."
        || bucket.contains('/')
        || bucket.contains('\0')
    {
        return Err(StoreError::Other(format!(
            "`{bucket}` cannot name a directory under the object root"
        )));
    }
    Ok(())
}

/// A key's path segments; refuses what a path could not store or would resolve elsewhere.
fn segments(key: &str) -> Result<Vec<&str>, String> {
    let segs: Vec<&str> = key.split('/').collect();
    if segs
        .iter()
        .any(|s| s.is_empty() || *s == "." || *s == ".." || s.contains('\0'))
    {
        return Err(format!(
            "key `{key}` has an empty, `.` or `..` segment, which a directory cannot store"
        ));
    }
    Ok(segs)
}

/// Keys under `rel` (a directory path ending in `/`, or empty) that start with `prefix` and
/// sort after `after`, in byte order, until one more than a page is found. Siblings are sorted
/// with `/` appended to directory names, which makes a depth-first walk answer full keys in
/// exactly the order S3 lists them.
fn collect(
    dir: &OwnedFd,
    rel: &str,
    prefix: &str,
    after: Option<&str>,
    out: &mut Vec<String>,
) -> Result<Result<(), String>, Errno> {
    let mut entries: Vec<(String, bool)> = Vec::new();
    let mut reader = Dir::read_from(dir)?;
    while let Some(entry) = reader.read() {
        let entry = entry?;
        let raw = entry.file_name().to_bytes();
        if raw == b"." || raw == b".." {
            continue;
        }
        let Ok(name) = std::str::from_utf8(raw) else {
            // A name no key can spell would be invisible to listings and verification alike,
            // so a purge would call the subject clean with the file still there.
            return Ok(Err(format!(
                "{rel}{}: a file name that is not UTF-8 cannot be listed as a key",
                String::from_utf8_lossy(raw)
            )));
        };
        let is_dir = match entry.file_type() {
            FileType::Directory => true,
            FileType::Unknown => {
                let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
                FileType::from_raw_mode(st.st_mode) == FileType::Directory
            }
            _ => false,
        };
        let full = if is_dir {
            format!("{rel}{name}/")
        } else {
            format!("{rel}{name}")
        };
        let under = full.starts_with(prefix) || (is_dir && prefix.starts_with(&full));
        let later = match after {
            None => true,
            Some(a) if is_dir => full.as_str() > a || a.starts_with(&full),
            Some(a) => full.as_str() > a,
        };
        if under && later {
            entries.push((full, is_dir));
        }
    }
    entries.sort_unstable();
    for (full, is_dir) in entries {
        if out.len() > PAGE {
            break;
        }
        if !is_dir {
            out.push(full);
            continue;
        }
        let name = full[rel.len()..full.len() - 1].to_string();
        let sub = match open_dir(dir, name.as_str()) {
            Ok(fd) => fd,
            // Removed, or replaced by a symlink, since it was read: nothing of ours is there.
            Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => continue,
            Err(e) => return Err(e),
        };
        let after = after.filter(|a| a.starts_with(&full));
        if let Err(e) = collect(&sub, &full, prefix, after, out)? {
            return Ok(Err(e));
        }
    }
    Ok(Ok(()))
}

/// Deletes one key below the bucket directory `top`, never through a symlink, then removes the
/// directories this emptied (below the top level).
fn delete_key(top: &OwnedFd, key: &str) -> KeyOutcome {
    let segs = match segments(key) {
        Ok(s) => s,
        Err(e) => return KeyOutcome::Failed(e),
    };
    let mut chain: Vec<OwnedFd> = Vec::new();
    for seg in &segs[..segs.len() - 1] {
        let parent = chain.last().unwrap_or(top);
        match open_dir(parent, *seg) {
            Ok(fd) => chain.push(fd),
            // No such directory, or a symlink in its place: no file of ours has this key.
            Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => return KeyOutcome::Deleted,
            Err(e) => return KeyOutcome::Failed(format!("{key}: {e}")),
        }
    }
    let parent = chain.last().unwrap_or(top);
    match rustix::fs::unlinkat(
        parent,
        *segs.last().expect("a key has a name"),
        AtFlags::empty(),
    ) {
        Ok(()) | Err(Errno::NOENT) => {}
        Err(Errno::ISDIR) => {
            return KeyOutcome::Failed(format!("{key}: is a directory, not an object"));
        }
        Err(e) => return KeyOutcome::Failed(format!("{key}: {e}")),
    }
    // chain[j] is the directory segs[..=j]; keep chain[0], the top-level directory.
    for j in (1..chain.len()).rev() {
        if rustix::fs::unlinkat(&chain[j - 1], segs[j], AtFlags::REMOVEDIR).is_err() {
            break;
        }
    }
    KeyOutcome::Deleted
}

fn unsupported(what: &str) -> StoreError {
    StoreError::Other(format!(
        "{what} is not supported by a local directory store"
    ))
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn versioning(&self, bucket: &str) -> Result<Versioning, StoreError> {
        let me = self.clone();
        let bucket = bucket.to_string();
        blocking(move || me.bucket_dir(&bucket).map(|_| Versioning::Unversioned)).await
    }

    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        _versions: bool,
        token: Option<PageToken>,
    ) -> Result<Page, StoreError> {
        let me = self.clone();
        let (bucket, prefix) = (bucket.to_string(), prefix.to_string());
        blocking(move || me.list_sync(&bucket, &prefix, token.as_ref().map(|t| t.key.as_str())))
            .await
    }

    async fn delete_batch(
        &self,
        bucket: &str,
        items: &[ObjectVersion],
    ) -> Result<Vec<KeyOutcome>, StoreError> {
        let me = self.clone();
        let (bucket, items) = (bucket.to_string(), items.to_vec());
        blocking(move || me.delete_sync(&bucket, &items)).await
    }

    async fn list_uploads(&self, bucket: &str, _prefix: &str) -> Result<Vec<Upload>, StoreError> {
        self.versioning(bucket).await.map(|_| Vec::new())
    }

    async fn abort_upload(&self, _bucket: &str, _upload: &Upload) -> Result<(), StoreError> {
        Ok(())
    }

    async fn put(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
    ) -> Result<Option<String>, StoreError> {
        let me = self.clone();
        let (bucket, key) = (bucket.to_string(), key.to_string());
        blocking(move || me.put_sync(&bucket, &key, &body)).await?;
        Ok(None)
    }

    async fn read(
        &self,
        bucket: &str,
        item: &ObjectVersion,
        each: &mut (dyn for<'b> FnMut(&'b [u8]) -> std::io::Result<()> + Send),
    ) -> Result<u64, StoreError> {
        use std::io::Read;
        let what = || format!("reading {bucket}/{}", item.key);
        let mut fd = self.bucket_dir(bucket)?;
        let segs = segments(&item.key).map_err(StoreError::Other)?;
        for seg in &segs[..segs.len() - 1] {
            fd = open_dir(&fd, *seg).map_err(|e| io_error(&what(), e))?;
        }
        let file = rustix::fs::openat(
            &fd,
            *segs.last().expect("a key has a name"),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_error(&what(), e))?;
        let mut file = std::fs::File::from(file);
        let mut buf = vec![0u8; 64 * 1024];
        let mut n = 0u64;
        loop {
            let got = file
                .read(&mut buf)
                .map_err(|e| StoreError::Other(format!("{}: {e}", what())))?;
            if got == 0 {
                return Ok(n);
            }
            each(&buf[..got]).map_err(|e| StoreError::Other(format!("{}: {e}", what())))?;
            n += got as u64;
        }
    }

    async fn create_bucket(&self, bucket: &str, versioning: Versioning) -> Result<(), StoreError> {
        if versioning != Versioning::Unversioned {
            return Err(unsupported("versioning"));
        }
        check_name(bucket)?;
        std::fs::create_dir_all(self.root.join(bucket))
            .map_err(|e| StoreError::Other(format!("creating bucket directory `{bucket}`: {e}")))
    }

    async fn object_lock_enabled(&self, bucket: &str) -> Result<bool, StoreError> {
        self.versioning(bucket).await.map(|_| false)
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
        Err(unsupported("Object Lock"))
    }

    async fn put_retained(
        &self,
        _: &str,
        _: &str,
        _: Vec<u8>,
        _: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), StoreError> {
        Err(unsupported("Object Lock"))
    }

    async fn create_locked_bucket(&self, _: &str) -> Result<(), StoreError> {
        Err(unsupported("Object Lock"))
    }

    async fn start_upload(&self, _: &str, _: &str) -> Result<Upload, StoreError> {
        Err(unsupported("a multipart upload"))
    }
}
