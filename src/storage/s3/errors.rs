//! What S3's answers mean to lethe: an SDK error mapped to the kinds callers branch on, and one
//! key's answer inside a DeleteObjects response (gone, held by Object Lock, or failed).

use crate::storage::{KeyOutcome, StoreError};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

/// Maps an SDK error to the kinds callers branch on.
pub(super) fn classify<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
    what: &str,
    err: SdkError<E>,
) -> StoreError {
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = err.code().unwrap_or("").to_string();
    // The SDK reports credentials it could not load as a failure to send the request.
    let no_credentials =
        matches!(err, SdkError::DispatchFailure(_)) && causes(&err).contains("credentials");
    let msg = match (err.code(), err.message()) {
        (Some(c), Some(m)) => format!("{what}: {c}: {m}"),
        (Some(c), None) => format!("{what}: {c} (HTTP {})", status.unwrap_or(0)),
        _ if no_credentials => format!(
            "{what}: no S3 credentials could be loaded ({}): set AWS_ACCESS_KEY_ID and \
             AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run with a role that provides them",
            causes(&err)
        ),
        _ if matches!(
            err,
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_)
        ) =>
        {
            format!(
                "{what}: the S3 endpoint did not answer ({}): check AWS_ENDPOINT_URL (unset for AWS \
             itself), AWS_REGION and the network, or set LETHE_OBJECT_STORE=file:///DIR if the \
             buckets are directories on this machine",
                causes(&err)
            )
        }
        _ => format!("{what}: {}", causes(&err)),
    };
    if no_credentials {
        return StoreError::Auth(msg);
    }
    match (code.as_str(), status) {
        ("NoSuchBucket", _) => StoreError::NotFound(msg),
        (
            "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "AccessDenied"
            | "InvalidToken"
            | "ExpiredToken",
            _,
        )
        | (_, Some(401 | 403)) => StoreError::Auth(msg),
        ("SlowDown" | "ServiceUnavailable" | "InternalError" | "RequestTimeout", _)
        | (_, Some(500..=599)) => StoreError::Transient(msg),
        _ if matches!(
            err,
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_)
        ) =>
        {
            StoreError::Transient(msg)
        }
        _ => StoreError::Other(msg),
    }
}

/// An error and its causes on one line, each said once, without the SDK's debug dump.
fn causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

/// One key's answer inside a DeleteObjects response.
pub(super) fn per_key(code: &str, message: &str) -> KeyOutcome {
    match code {
        "NoSuchKey" | "NoSuchVersion" => KeyOutcome::Deleted,
        // Object Lock refuses a locked version with AccessDenied, per key.
        "AccessDenied" | "ObjectLocked" | "InvalidRequest" if is_lock_message(code, message) => {
            KeyOutcome::Denied(format!("{code}: {message}"))
        }
        _ => KeyOutcome::Failed(format!("{code}: {message}")),
    }
}

/// Whether a per-key refusal may be a lock (the caller then asks the store whether the version
/// is locked, on a bucket with Object Lock, before calling it a hold). Servers word a lock
/// refusal as a bare `AccessDenied` too, so that code stays a candidate; the check that decides
/// is `objects::confirm_denial`.
fn is_lock_message(code: &str, message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    code == "AccessDenied"
        || code == "ObjectLocked"
        || m.contains("lock")
        || m.contains("retention")
        || m.contains("legal hold")
}
