//! `[[objects]]` entries, compiled: a bucket and prefix template, or a URI column with the scope
//! its URIs must lie in (`uri_within`), what they name (`uri_kind`) and the segment they must
//! hold (`uri_segment`). Offline checks only; the columns are `validate`'s.

use super::super::ObjectsSpec;
use super::super::template::Template;
use super::{Node, ObjectSource};
use crate::domain::check_bucket;

pub(super) fn compile_objects(
    o: &ObjectsSpec,
    nodes: &[Node],
    line: usize,
) -> Result<ObjectSource, String> {
    let from = match &o.from {
        None => 0,
        Some(f) => nodes.iter().position(|n| &n.name == f).ok_or_else(|| {
            format!("from `{f}` is neither the subject table nor a rows entry name")
        })?,
    };
    if o.uri_column.is_none()
        && (o.uri_within.is_some() || o.uri_kind.is_some() || o.uri_segment.is_some())
    {
        return Err("`uri_within`, `uri_kind` and `uri_segment` go with `uri_column`".into());
    }
    if o.uri_column.is_some() && o.uri_within.is_none() {
        return Err(
            "`uri_column` needs `uri_within`: say where its URIs may point (`uri_within = \
             \"s3://BUCKET/\"`, or a prefix in it), so that no row can send a purge into a \
             bucket the spec never named"
                .into(),
        );
    }
    match (&o.bucket, &o.prefix, &o.uri_column) {
        (Some(bucket), Some(prefix), None) => {
            check_bucket(bucket)?;
            Ok(ObjectSource::Prefix {
                bucket: bucket.clone(),
                template: Template::parse(prefix)?,
                from,
                line,
            })
        }
        (None, None, Some(column)) => Ok(ObjectSource::Uri {
            column: column.clone(),
            from,
            line,
            within: o.uri_within.as_deref().map(parse_scope).transpose()?,
            kind: o.uri_kind,
            segment: o.uri_segment.clone(),
        }),
        _ => Err("give either `bucket` and `prefix`, or `uri_column`".into()),
    }
}

/// `uri_within = "s3://bucket/"` or `"s3://bucket/prefix/"`: (bucket, prefix).
fn parse_scope(scope: &str) -> Result<(String, String), String> {
    let bad = |why: &str| {
        format!("uri_within {scope:?} {why}: write s3://bucket/ or s3://bucket/prefix/")
    };
    let rest = scope
        .strip_prefix("s3://")
        .ok_or_else(|| bad("is not an s3:// URI"))?;
    let (bucket, prefix) = rest
        .split_once('/')
        .ok_or_else(|| bad("has no `/` after the bucket"))?;
    check_bucket(bucket)?;
    if !(prefix.is_empty() || prefix.ends_with('/')) {
        return Err(bad("must end in `/`"));
    }
    if !prefix.is_empty() {
        crate::domain::Location::dir(bucket, prefix).map_err(|e| bad(&e))?;
    }
    Ok((bucket.to_string(), prefix.to_string()))
}
