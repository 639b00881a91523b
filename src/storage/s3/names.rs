//! Keys a listing cannot carry as they are. S3 answers listings in XML 1.0, which cannot hold
//! most control characters: a server sends U+FFFD in their place (SeaweedFS) or bytes a parser
//! refuses, and reads a bare CR as LF. `EncodingType=url` asks for percent-encoded keys, but
//! servers differ: AWS encodes (a space as `+`) and says so, SeaweedFS encodes ListObjectsV2
//! without saying so and ignores it for version and upload listings.
//!
//! So a page is read raw, and only when one of its keys shows such a character is it read again
//! with `EncodingType=url`; each encoded key is decoded both ways (`%XX` only, and `+` as a
//! space too) and kept only if it reads back as the raw key. A key no decoding explains, or one
//! still holding U+FFFD, cannot be named exactly: its subject fails (`StoreError::Unnameable`),
//! never a delete sent by a name the store may read as another object's.

use super::entries;
use crate::storage::{ObjectVersion, StoreError};
use aws_sdk_s3::operation::list_object_versions::ListObjectVersionsOutput;

/// Whether a raw listing may have carried `key` differently than it is stored.
pub(super) fn doubtful(key: &str) -> bool {
    key.chars().any(|c| c.is_control() || c == '\u{FFFD}')
}

/// Whether `key` can travel in a DeleteObjects XML body as it is (XML 1.0 cannot carry most
/// control characters, and reads a CR as LF); such keys go one DeleteObject each, in the URL.
pub(super) fn xml_safe(key: &str) -> bool {
    !key.chars()
        .any(|c| c.is_control() || c == '\u{FFFE}' || c == '\u{FFFF}')
}

/// Percent-decoding of `%XX`; with `plus`, `+` reads as a space. `None` when the result is not
/// UTF-8 or an escape is malformed.
fn decode(s: &str, plus: bool) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// What a raw XML listing delivers of `key`: CR (and CRLF) as LF, any other character XML 1.0
/// cannot carry as U+FFFD.
fn as_raw(key: &str) -> String {
    key.replace("\r\n", "\n")
        .chars()
        .map(|c| match c {
            '\r' => '\n',
            '\t' | '\n' => c,
            c if c.is_control() || c == '\u{FFFE}' || c == '\u{FFFF}' => '\u{FFFD}',
            c => c,
        })
        .collect()
}

/// The exact key of one entry read raw as `raw` and encoded as `encoded`.
pub(super) fn resolve_one(raw: &str, encoded: &str) -> Result<String, StoreError> {
    if !doubtful(raw) {
        return Ok(raw.to_string());
    }
    let found = [false, true]
        .into_iter()
        .filter_map(|plus| decode(encoded, plus))
        .find(|k| !k.contains('\u{FFFD}') && (k == raw || as_raw(k) == raw));
    found.ok_or_else(|| {
        StoreError::Unnameable(format!(
            "the object store lists a key as `{}` (a character XML cannot carry, replaced) and \
             its url-encoded listing does not say what it is (`{}`)",
            raw.escape_debug(),
            encoded.escape_debug()
        ))
    })
}

/// The exact keys of one page read twice, raw and encoded, entry by entry. The two readings
/// must list the same entries (`same` compares what is not a key: version or upload ids).
pub(super) fn resolve<T>(
    raw: &[T],
    encoded: &[T],
    key: impl Fn(&T) -> &str,
    same: impl Fn(&T, &T) -> bool,
) -> Result<Vec<String>, StoreError> {
    if raw.len() != encoded.len() || raw.iter().zip(encoded).any(|(a, b)| !same(a, b)) {
        return Err(StoreError::Transient(
            "the listing changed between its raw and its url-encoded reading".into(),
        ));
    }
    raw.iter()
        .zip(encoded)
        .map(|(r, e)| resolve_one(key(r), key(e)))
        .collect()
}

/// A ListObjectVersions page's entries and next key marker with their exact keys: `raw` as
/// read, and when a key or the marker shows a character XML cannot carry, the same request read
/// again url-encoded (`encoded`).
pub(super) async fn versions_page(
    raw: &ListObjectVersionsOutput,
    encoded: impl AsyncFnOnce() -> Result<ListObjectVersionsOutput, StoreError>,
) -> Result<(Vec<ObjectVersion>, Option<String>), StoreError> {
    let mut items = entries(raw);
    let mut next_key = raw.next_key_marker().map(String::from);
    if items.iter().any(|o| doubtful(&o.key)) || next_key.as_deref().is_some_and(doubtful) {
        let enc = encoded().await?;
        let keys = resolve(
            &items,
            &entries(&enc),
            |o| o.key.as_str(),
            |a, b| a.version_id == b.version_id && a.delete_marker == b.delete_marker,
        )?;
        for (o, k) in items.iter_mut().zip(keys) {
            o.key = k;
        }
        if let (Some(r), Some(e)) = (&next_key, enc.next_key_marker()) {
            next_key = Some(resolve_one(r, e)?);
        }
    }
    Ok((items, next_key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_each_stores_encoding_and_keeps_only_what_reads_back_as_the_raw_key() {
        // SeaweedFS: `%01`, a literal `+` left as it is.
        assert_eq!(
            resolve_one("p/c\u{FFFD}d+e", "p/c%01d+e").unwrap(),
            "p/c\u{1}d+e"
        );
        // AWS: a space as `+`, a `+` as `%2B`.
        assert_eq!(
            resolve_one("p/a b\u{FFFD}", "p/a+b%02").unwrap(),
            "p/a b\u{2}"
        );
        assert_eq!(
            resolve_one("p/a+\u{FFFD}", "p/a%2B%02").unwrap(),
            "p/a+\u{2}"
        );
        // A CR that the raw reading turned into LF.
        assert_eq!(resolve_one("p/a\nb", "p/a%0Db").unwrap(), "p/a\rb");
        assert_eq!(resolve_one("p/a\rb", "p/a%0Db").unwrap(), "p/a\rb");
        // Plain keys need no second reading.
        assert_eq!(resolve_one("p/a%01", "whatever").unwrap(), "p/a%01");
    }

    #[test]
    fn a_key_no_reading_explains_cannot_be_named() {
        // The store ignored EncodingType (SeaweedFS versions): U+FFFD both times.
        assert!(matches!(
            resolve_one("p/c\u{FFFD}d", "p/c\u{FFFD}d"),
            Err(StoreError::Unnameable(_))
        ));
        // An encoded key that is another key.
        assert!(matches!(
            resolve_one("p/c\u{FFFD}d", "p/x%01d"),
            Err(StoreError::Unnameable(_))
        ));
        let two = |n: usize| vec!["a".to_string(); n];
        assert!(matches!(
            resolve(&two(2), &two(3), |s| s, |_, _| true),
            Err(StoreError::Transient(_))
        ));
    }
}
