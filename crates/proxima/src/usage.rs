//! The record of one request — who, which model, which upstream, tokens, cost, outcome — and
//! the [`Meter`] that closes it exactly once.
//!
//! A meter is made when a request has a caller and a model. It carries the rate-limit grant and
//! the budget reservation taken for the request, and when it closes — the answer is complete,
//! the request failed, or (from `Drop`) the client went away — it settles both with the real
//! usage and cost, and queues the ledger row. The counters and the ledger are fed the same
//! cost, so they cannot drift apart.

pub mod ledger;
pub mod retention;

use std::sync::Arc;

use tokio::time::Instant;

use crate::canonical::Usage;
use crate::error::Error;
use crate::policy::limits::{RateGrant, Reservation};
use crate::policy::Caller;
use crate::pricing::{self, Nanos, Price};
use crate::store::LedgerRow;
use crate::telemetry::{CallEnd, CallTelemetry};
pub use ledger::Ledger;

/// Status recorded when the client went away before the answer was complete (nginx's code).
const CLIENT_CLOSED: u16 = 499;

#[derive(Debug)]
pub struct UsageRecord {
    pub request_id: Arc<str>,
    /// When the request arrived, epoch ms.
    pub at: i64,
    pub caller: Arc<Caller>,
    pub user: Option<Arc<str>>,
    pub public_model: Arc<str>,
    pub provider: Option<Arc<str>>,
    pub upstream_model: Option<String>,
    /// The price of the target that answered, to cost the usage.
    pub price: Option<Price>,
    pub attempts: u32,
    pub usage: Option<Usage>,
    pub stream: bool,
    pub started: Instant,
    pub first_token: Option<Instant>,
    /// Tags from `x-proxima-metadata`, as JSON text.
    pub metadata: Option<Arc<str>>,
    /// The response cache's verdict, for a model with caching on.
    pub cache: Option<&'static str>,
    /// Set on a cache hit: what the stored answer cost when it was made. A hit used no upstream
    /// tokens, so it settles limits, and is recorded, with none.
    pub saved: Option<Nanos>,
    /// The call's metrics and trace span, fed the same figures as the ledger row.
    pub telemetry: CallTelemetry,
}

/// The gateway's own tags for a call's ledger row, by name (`proxima.*`) with their values.
pub type Tags = Vec<(&'static str, serde_json::Value)>;

impl UsageRecord {
    /// Adds the gateway's own tags (named `proxima.*`, which `x-proxima-metadata` may not set)
    /// to the row's metadata, beside the caller's: a guardrail's flag, the prompt a run used.
    pub fn add_tags<'a>(&mut self, tags: impl IntoIterator<Item = (&'a str, serde_json::Value)>) {
        use serde_json::{Map, Value};
        let mut tags = tags.into_iter().peekable();
        if tags.peek().is_none() {
            return;
        }
        let mut all = self
            .metadata
            .as_deref()
            .and_then(|m| serde_json::from_str::<Map<String, Value>>(m).ok())
            .unwrap_or_default();
        all.extend(tags.map(|(name, value)| (name.to_owned(), value)));
        self.metadata = Some(Arc::from(Value::Object(all).to_string()));
    }
}

/// Closes a request's record, its rate-limit grant and its budget reservation, once.
pub struct Meter {
    /// Boxed: the record is hundreds of bytes, and the meter travels with the call through
    /// every phase (and so through every future that holds the call), moved at each step.
    open: Option<Box<Open>>,
}

struct Open {
    record: UsageRecord,
    grant: Option<RateGrant>,
    reservation: Option<Reservation>,
    ledger: Arc<Ledger>,
}

impl Meter {
    pub fn new(record: UsageRecord, ledger: Arc<Ledger>) -> Meter {
        Meter {
            open: Some(Box::new(Open {
                record,
                grant: None,
                reservation: None,
                ledger,
            })),
        }
    }

    /// The record, to fill in as the request goes.
    pub fn record(&mut self) -> Option<&mut UsageRecord> {
        self.open.as_mut().map(|o| &mut o.record)
    }

    /// What was taken from rate limits and budgets, settled when the meter closes.
    pub fn hold(&mut self, grant: RateGrant, reservation: Option<Reservation>) {
        if let Some(open) = self.open.as_mut() {
            open.grant = Some(grant);
            open.reservation = reservation;
        }
    }

    /// Closes the record with the request's outcome: `Ok` when answered in full.
    pub fn close(self, outcome: Result<(), &Error>) {
        let (status, code) = match outcome {
            Ok(()) => (200, None),
            Err(e) => (e.kind.status().as_u16(), Some(e.kind.code())),
        };
        self.close_with(status, code);
    }

    /// Closes the record with an HTTP status and error code as they were sent.
    pub fn close_with(mut self, status: u16, code: Option<&'static str>) {
        if let Some(open) = self.open.take() {
            open.close(status, code);
        }
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        if let Some(open) = self.open.take() {
            open.close(CLIENT_CLOSED, Some("client_closed"));
        }
    }
}

impl Open {
    fn close(self, status: u16, code: Option<&'static str>) {
        let Open {
            record,
            grant,
            reservation,
            ledger,
        } = self;
        let usage = match record.saved {
            Some(_) => Usage::default(),
            None => record.usage.unwrap_or_default(),
        };
        let cost = record
            .price
            .map_or(0, |price| pricing::nanos(price.cost(&usage)));
        crate::policy::limits::settle(
            grant,
            reservation,
            usage.input_tokens + usage.output_tokens,
            cost,
        );
        let latency = record.started.elapsed();
        record.telemetry.ended(
            &record,
            &CallEnd {
                usage: &usage,
                cost,
                status,
                code,
                latency,
            },
        );
        tracing::debug!(
            target: "proxima::usage",
            request_id = &*record.request_id,
            key = &*record.caller.id,
            team = record.caller.team.as_deref(),
            user = record.user.as_deref(),
            model = %record.public_model,
            provider = record.provider.as_deref(),
            upstream_model = record.upstream_model.as_deref(),
            attempts = record.attempts,
            input_tokens = usage.input_tokens,
            output_tokens = usage.output_tokens,
            cost_usd = pricing::usd(cost),
            status,
            "request finished"
        );
        let millis = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let tokens = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        ledger.push(LedgerRow {
            id: crate::store::ledger_id(record.at),
            request_id: record.request_id,
            at: record.at,
            key_id: Some(record.caller.id.clone()),
            key_name: Some(record.caller.name.clone()),
            team: record.caller.team.clone(),
            user: record.user,
            model: record.public_model,
            provider: record.provider,
            upstream_model: record.upstream_model.map(Arc::from),
            input_tokens: tokens(usage.input_tokens),
            output_tokens: tokens(usage.output_tokens),
            cached_tokens: tokens(usage.cached_input_tokens.unwrap_or(0)),
            cost_nanos: cost,
            latency_ms: millis(latency),
            ttft_ms: record.first_token.map(|t| millis(t - record.started)),
            status: i64::from(status),
            error_code: code.map(Arc::from),
            cache: record.cache.map(Arc::from),
            saved_nanos: record.saved.unwrap_or(0),
            attempts: i64::from(record.attempts),
            stream: record.stream,
            metadata: record.metadata,
        });
    }
}
