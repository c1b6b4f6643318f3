//! IAM's own clock, read from the `Date` header of its answers: a session cut-off is
//! never earlier than IAM's time when the worker's clock is behind (docs, "Revoking
//! sessions").

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeDeserializationInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use aws_smithy_types::date_time::{DateTime, Format};

/// The latest time IAM's answers reported (their `Date` header), in whole seconds.
#[derive(Debug, Default)]
pub struct ServerClock {
    latest_secs: AtomicI64,
}

impl ServerClock {
    /// `t`, or later when IAM's clock is ahead: the second after the latest `Date` IAM
    /// sent (a `Date` is cut to the second, so IAM's time may be up to a second later).
    pub fn at_least(&self, t: DateTime) -> DateTime {
        let server = self.latest_secs.load(Ordering::Relaxed);
        if server > 0 && server + 1 > t.secs() {
            DateTime::from_secs(server + 1)
        } else {
            t
        }
    }

    fn saw(&self, date: DateTime) {
        self.latest_secs.fetch_max(date.secs(), Ordering::Relaxed);
    }
}

/// Reads IAM's clock off the `Date` header of every answer.
#[derive(Debug, Clone)]
pub struct ClockReader(Arc<ServerClock>);

impl ClockReader {
    pub fn new(clock: Arc<ServerClock>) -> Self {
        Self(clock)
    }
}

impl Intercept for ClockReader {
    fn name(&self) -> &'static str {
        "ClockReader"
    }

    fn read_after_transmit(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let date = context
            .response()
            .headers()
            .get("date")
            .and_then(|d| DateTime::from_str(d, Format::HttpDate).ok());
        if let Some(date) = date {
            self.0.saw(date);
        }
        Ok(())
    }
}
