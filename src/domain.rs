//! Vocabulary shared by every layer: where objects live, work-item states, and outcomes.

use serde::{Deserialize, Serialize};
use std::fmt;

/// One place a subject's objects live, resolved at claim time and kept in the work item's
/// manifest, so a retry can find the objects even if the row that named them is gone.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Location {
    /// The store: `s3` (the configured endpoint).
    pub store: String,
    /// The bucket.
    pub bucket: String,
    /// A directory prefix, always ending in `/`, so `runs/1/` never matches `runs/10/`.
    pub prefix: String,
    /// Whether the object named exactly like the prefix without its `/` is purged too
    /// (a URI column may name a single object rather than a directory).
    #[serde(default)]
    pub exact: bool,
    /// Only the exact object, not the directory (`uri_kind = "object"`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub object_only: bool,
}

impl Location {
    /// A directory location; refuses a prefix that would cover a whole bucket.
    pub fn dir(bucket: &str, prefix: &str) -> Result<Self, String> {
        check_bucket(bucket)?;
        // No normalisation, ever: a leading `/` is a key of its own on S3 and nothing on a
        // file system, so the text and the store would disagree on what it names.
        if prefix.starts_with('/') {
            return Err(format!(
                "prefix `{prefix}` starts with `/`, which one store keeps and another drops; \
                 refused"
            ));
        }
        let trimmed = prefix;
        if trimmed.trim_matches('/').is_empty() {
            return Err(format!(
                "prefix `{prefix}` in bucket `{bucket}` would cover the whole bucket"
            ));
        }
        if trimmed.split('/').any(|seg| seg == "." || seg == "..") {
            return Err(format!("prefix `{prefix}` contains `.` or `..` segments"));
        }
        check_store_safe(prefix)?;
        check_not_encoded(prefix)?;
        let inner = trimmed.strip_suffix('/').unwrap_or(trimmed);
        if inner.split('/').any(str::is_empty) {
            return Err(format!(
                "prefix `{prefix}` has an empty path segment (`//`), which object stores with \
                 directories fold into one `/`; refused"
            ));
        }
        let prefix = if trimmed.ends_with('/') {
            trimmed.to_string()
        } else {
            format!("{trimmed}/")
        };
        Ok(Location {
            store: "s3".into(),
            bucket: bucket.into(),
            prefix,
            exact: false,
            object_only: false,
        })
    }

    /// Parses `s3://bucket/path` from a URI column: the directory `path/` and the object `path`.
    pub fn from_uri(uri: &str) -> Result<Self, String> {
        check_plain_uri(uri)?;
        let rest = uri
            .strip_prefix("s3://")
            .ok_or_else(|| format!("`{uri}` is not an s3:// URI"))?;
        let (bucket, path) = rest
            .split_once('/')
            .ok_or_else(|| format!("`{uri}` names a whole bucket, not a path inside it"))?;
        let mut loc = Location::dir(bucket, path).map_err(|e| format!("`{uri}`: {e}"))?;
        loc.exact = !path.ends_with('/');
        Ok(loc)
    }

    /// Parses a URI column's value for the configured store: `s3://bucket/path`, or, with a
    /// local object root, `file:///ROOT/bucket/path`. A URI of the other kind, or a file path
    /// outside the root, is refused: it names objects this lethe cannot reach.
    pub fn from_uri_for(uri: &str, file_root: Option<&std::path::Path>) -> Result<Self, String> {
        match (uri.strip_prefix("file://"), file_root) {
            (None, None) => Location::from_uri(uri),
            (Some(_), None) => Err(format!(
                "`{uri}` is a file:// URI but the object store is S3 (set LETHE_OBJECT_STORE=file:///ROOT)"
            )),
            (None, Some(root)) => Err(format!(
                "`{uri}` is not a file:// URI under the object root {}",
                root.display()
            )),
            (Some(path), Some(root)) => {
                check_plain_uri(uri)?;
                let root = root.to_string_lossy();
                let rest = path
                    .strip_prefix(root.trim_end_matches('/'))
                    .and_then(|r| r.strip_prefix('/'))
                    .ok_or_else(|| format!("`{uri}` is outside the object root {root}"))?;
                let (bucket, path) = rest.split_once('/').ok_or_else(|| {
                    format!("`{uri}` names a whole bucket directory, not a path inside it")
                })?;
                let mut loc = Location::dir(bucket, path).map_err(|e| format!("`{uri}`: {e}"))?;
                loc.store = "file".into();
                loc.exact = !path.ends_with('/');
                Ok(loc)
            }
        }
    }

    /// The single object key purged besides the directory, if any.
    pub fn exact_key(&self) -> Option<&str> {
        self.exact.then(|| self.prefix.trim_end_matches('/'))
    }

    /// The directory purged, unless the location names one object only.
    pub fn dir_prefix(&self) -> Option<&str> {
        (!self.object_only).then_some(self.prefix.as_str())
    }

    /// This location as a store that reads `\` as `/` keeps it (SeaweedFS stores `runs/b\c/x`
    /// as `runs/b/c/x`), when it holds a backslash.
    pub fn as_slashes(&self) -> Option<Location> {
        self.prefix.contains('\\').then(|| Location {
            prefix: self.prefix.replace('\\', "/"),
            ..self.clone()
        })
    }

    /// Whether `key` is one this location purges.
    pub fn covers(&self, key: &str) -> bool {
        self.exact_key() == Some(key) || self.dir_prefix().is_some_and(|p| key.starts_with(p))
    }

    /// Whether everything `other` purges lies in this location's directory, in the same store
    /// and bucket: purging and verifying this one does the other's work.
    pub fn contains(&self, other: &Location) -> bool {
        let Some(dir) = self.dir_prefix() else {
            return false;
        };
        self != other
            && self.store == other.store
            && self.bucket == other.bucket
            && other.dir_prefix().is_none_or(|p| p.starts_with(dir))
            && other.exact_key().is_none_or(|k| k.starts_with(dir))
    }
}

/// The locations without those another of them contains (MLflow's `7/<run>/artifacts/` inside
/// the run's `7/<run>/`): each object is listed, deleted and verified once.
pub fn outermost(locations: impl IntoIterator<Item = Location>) -> Vec<Location> {
    let all: Vec<Location> = locations.into_iter().collect();
    all.iter()
        .filter(|l| !all.iter().any(|o| o.contains(l)))
        .cloned()
        .collect()
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}/{}", self.store, self.bucket, self.prefix)
    }
}

/// Refuses a key or prefix holding NUL, which no store keeps. A backslash or another control
/// character is kept: AWS S3 and a local directory store them as they are, listings that cannot
/// carry them are read url-encoded (`storage::s3::names`), and a store that keeps `\` as `/`
/// (SeaweedFS) is caught by verification, which also looks where such a store would have put
/// the objects (`Location::as_slashes`).
pub fn check_store_safe(path: &str) -> Result<(), String> {
    if path.contains('\0') {
        return Err(format!(
            "`{}` contains the NUL character, which no object store keeps; refused",
            path.escape_debug()
        ));
    }
    Ok(())
}

/// Refuses percent-encoding (`%2F`, `%20`): S3 keeps `%2F` as three characters where a URL
/// reader (and a platform that wrote the URI with one) means `/`, so the text and the store
/// would disagree on which objects it names.
fn check_not_encoded(path: &str) -> Result<(), String> {
    let b = path.as_bytes();
    let encoded = b
        .windows(3)
        .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit());
    if encoded {
        return Err(format!(
            "`{}` holds percent-encoding, which the object store keeps as text where a URL \
             reader decodes it; refused",
            path.escape_debug()
        ));
    }
    Ok(())
}

/// Refuses a URI with a query or a fragment (`?`, `#`): a URL reader drops them, the object
/// store keeps them as part of the key.
fn check_plain_uri(uri: &str) -> Result<(), String> {
    match uri.find(['?', '#']) {
        None => Ok(()),
        Some(i) => Err(format!(
            "`{}` holds `{}`, which a URL reader takes as a query or fragment and the object \
             store as part of the key; refused",
            uri.escape_debug(),
            &uri[i..i + 1]
        )),
    }
}

/// S3 bucket naming rules, enough to refuse typos and injection.
pub fn check_bucket(bucket: &str) -> Result<(), String> {
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && !bucket.starts_with(['-', '.'])
        && !bucket.ends_with(['-', '.']);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{bucket}` is not a valid bucket name (3-63 lowercase letters, digits, `-`, `.`)"
        ))
    }
}

/// Which SQL the platform database speaks (its SQL is `db`'s: `Dialect::t`, `Dialect::now`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Dialect {
    #[default]
    Postgres,
    Sqlite,
}

/// The error class of a subject failed because the object store keeps one of its names
/// differently than it was written (`storage::NAME_KEPT_DIFFERENTLY`): work lethe cannot do as
/// things are, shown apart by `plan`, `report --summary` and the daemon's metrics.
pub const STORE_NAME: &str = "store_name";

/// A work item's state. Every transition is one transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemState {
    Claimed,
    ObjectsPurged,
    Verified,
    Done,
    Held,
    Failed,
}

impl ItemState {
    pub fn as_str(self) -> &'static str {
        match self {
            ItemState::Claimed => "claimed",
            ItemState::ObjectsPurged => "objects_purged",
            ItemState::Verified => "verified",
            ItemState::Done => "done",
            ItemState::Held => "held",
            ItemState::Failed => "failed",
        }
    }
}

/// An error in what the user asked for or configured: exit 2, nothing deleted.
#[derive(Debug)]
pub struct ConfigError(anyhow::Error);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Marks an error as the user's configuration's: the process exits 2.
pub fn config_error(e: anyhow::Error) -> anyhow::Error {
    anyhow::anyhow!(ConfigError(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_is_directory_and_object() {
        let l = Location::from_uri("s3://art-1/runs/7").unwrap();
        assert_eq!(
            (l.bucket.as_str(), l.prefix.as_str(), l.exact_key()),
            ("art-1", "runs/7/", Some("runs/7"))
        );
        let l = Location::from_uri("s3://art-1/runs/7/").unwrap();
        assert_eq!(l.exact_key(), None);
    }

    #[test]
    fn a_location_inside_another_of_the_subject_is_dropped_and_only_then() {
        let dir = |b: &str, p: &str| Location::dir(b, p).unwrap();
        let uri = |u: &str| Location::from_uri(u).unwrap();
        let run = dir("art", "7/abc/");
        let kept = outermost([
            run.clone(),
            uri("s3://art/7/abc/artifacts"), // inside, as a directory and an object
            uri("s3://art/7/abcd/"),         // a neighbour sharing the prefix
            uri("s3://art/7/abc"),           // the directory and the object `7/abc`
            uri("s3://other/7/abc/artifacts/"), // another bucket
        ]);
        let names: Vec<String> = kept.iter().map(ToString::to_string).collect();
        // `s3://art/7/abc` is the directory `7/abc/` and the object `7/abc`: it holds `run`.
        assert_eq!(
            kept,
            [
                uri("s3://art/7/abcd/"),
                uri("s3://art/7/abc"),
                uri("s3://other/7/abc/artifacts/")
            ],
            "{names:?}"
        );
        let mut object = uri("s3://art/7/abc/x");
        object.object_only = true;
        assert!(
            !object.contains(&run),
            "an object-only location contains nothing"
        );
        assert_eq!(outermost([run.clone(), object]), [run]);
    }

    #[test]
    fn refuses_whole_bucket_and_escapes() {
        for bad in [
            "s3://b",
            "s3://bkt/",
            "s3://bkt//",
            "gs://bkt/x",
            "s3://bkt/a/../b",
            "s3://B_ad/x",
            "s3://bkt//x/",
            "s3://bkt/a%2Fb/",
            "s3://bkt/a/b?versionId=1",
            "s3://bkt/a/b#c",
        ] {
            assert!(Location::from_uri(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn refuses_what_no_store_keeps_and_takes_odd_characters_as_written() {
        for bad in ["runs//x/", "runs//", "runs/\u{0}/"] {
            let err = Location::dir("bkt", bad).unwrap_err();
            assert!(err.contains("refused"), "{bad}: {err}");
        }
        // Kept as written; verification also asks where SeaweedFS would have put them.
        let l = Location::from_uri("s3://bkt/runs/q\\r").unwrap();
        assert_eq!(l.exact_key(), Some("runs/q\\r"));
        assert_eq!(l.as_slashes().unwrap().prefix, "runs/q/r/");
        let l = Location::dir("bkt", "runs/a\nb/").unwrap();
        assert_eq!((l.prefix.as_str(), l.as_slashes()), ("runs/a\nb/", None));
        assert!(Location::dir("bkt", "runs/b c/é/").is_ok());
    }

    #[test]
    fn file_uris_resolve_under_the_root_only() {
        let root = std::path::Path::new("/srv/objs");
        let l = Location::from_uri_for("file:///srv/objs/artifacts/runs/7", Some(root)).unwrap();
        assert_eq!(
            (
                l.store.as_str(),
                l.bucket.as_str(),
                l.prefix.as_str(),
                l.exact_key()
            ),
            ("file", "artifacts", "runs/7/", Some("runs/7"))
        );
        for bad in [
            "file:///srv/objsx/artifacts/runs/7",
            "file:///etc/passwd",
            "file:///srv/objs/artifacts",
            "file:///srv/objs/artifacts/",
            "file:///srv/objs/artifacts/../../etc/x",
            "file:///srv/objs/../etc/x/y",
            "file:///srv/objs/artifacts//custom/105/",
            "file:///srv/objs/artifacts/custom/./105/",
            "file:///srv/objs/artifacts/my%20run/",
            "s3://bkt/runs/7",
        ] {
            assert!(
                Location::from_uri_for(bad, Some(root)).is_err(),
                "{bad} accepted"
            );
        }
        assert!(Location::from_uri_for("file:///srv/objs/a/b", None).is_err());
    }
}
