//! The S3 server's clock, read from the `Date` header of its answers (every answer carries one,
//! errors included: RFC 9110, 6.6.1), so that a run can cross-check the database's clock with
//! a clock the database does not control. An SDK interceptor keeps the latest one; it changes
//! no request and no answer.

use super::super::StoreClock;
use aws_sdk_s3::config::interceptors::BeforeDeserializationInterceptorContextRef;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::error::BoxError;
use std::sync::{Arc, Mutex};

/// The latest `Date` an answer carried, with the host's clock when it arrived.
#[derive(Clone, Debug, Default)]
pub(super) struct DateWatch(Arc<Mutex<Option<StoreClock>>>);

impl DateWatch {
    pub(super) fn latest(&self) -> Option<StoreClock> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Intercept for DateWatch {
    fn name(&self) -> &'static str {
        "lethe-date-watch"
    }

    fn read_after_transmit(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let date = context
            .response()
            .headers()
            .get("date")
            .and_then(|d| chrono::DateTime::parse_from_rfc2822(d).ok());
        if let Some(d) = date {
            let reading = StoreClock {
                store: d.with_timezone(&chrono::Utc),
                host: chrono::Utc::now(),
            };
            *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(reading);
        }
        Ok(())
    }
}
