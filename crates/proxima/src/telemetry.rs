//! Telemetry: logs, Prometheus metrics and OpenTelemetry traces.
//!
//! - Logs: `tracing` to stderr, filtered by `PROXIMA_LOG`, as text or JSON; coloured only when
//!   stderr is a terminal (a file or a pipe gets plain text) — [`init`]. A request's lines carry
//!   its id ([`log`]).
//! - [`metrics`]: counters and histograms, scraped at `GET /metrics`.
//! - [`trace`]: W3C trace context and spans, which [`export`] sends to an OTLP/HTTP collector,
//!   encoded by [`otlp`].
//!
//! One [`Telemetry`] per process, built from `[telemetry]` at start, outlives reloads (a change
//! to the section takes effect at the next restart). It plugs in at one place per concern:
//!
//! 1. the server's authentication starts each `/v1` request's [`TraceContext`] from the
//!    caller's `traceparent` ([`Telemetry::start_trace`]) and echoes it on the answer;
//! 2. a call's routing runs in its [`trace::CallScope`] ([`Telemetry::route`]), and the router
//!    observes every upstream attempt with [`trace::attempt`]: attempt metrics, the attempt's
//!    span, and the `traceparent` the provider client sends upstream;
//! 3. the call's [`Meter`](crate::usage::Meter), closing with the one ledger row, hands the
//!    record to [`CallTelemetry::ended`]: the call's metrics and span, from the same figures as
//!    the ledger;
//! 4. `GET /metrics` renders everything ([`Telemetry::render`]), gauges read at that moment.

pub mod export;
pub mod log;
pub mod metrics;
pub mod otlp;
pub mod trace;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::future::Future;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use tracing_subscriber::EnvFilter;

use crate::canonical::{ChatChunk, ChatResponse, FinishReason, Usage};
use crate::config::{LogFormat, TelemetryConfig};
use crate::error::Result;
use crate::http_client::HttpClient;
use crate::pricing::{self, Nanos};
use crate::router::health::BreakerState;
use crate::router::Router;
use crate::usage::ledger::LedgerStatus;
use crate::usage::UsageRecord;
use export::Exporter;
use metrics::{CallOutcome, CircuitState, Gauges, Metrics, ModelSeries};
pub use trace::TraceContext;
use trace::{CallScope, Sampler, SpanData, SpanKind, Value};

/// Installs the global subscriber. Later calls (tests) are no-ops.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_env("PROXIMA_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Json => builder.json().event_format(log::Lines::json()).try_init(),
        LogFormat::Text => builder.event_format(log::Lines::text()).try_init(),
    };
}

/// What kind of model call, as `gen_ai.operation.name` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Chat = 0,
    Embeddings = 1,
}

impl Operation {
    pub const COUNT: usize = 2;
    pub const ALL: [Operation; Operation::COUNT] = [Operation::Chat, Operation::Embeddings];

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Chat => "chat",
            Operation::Embeddings => "embeddings",
        }
    }

    /// The operation a `/v1` path serves, for a call refused before its body was read.
    pub fn for_path(path: &str) -> Operation {
        if path.starts_with("/v1/embeddings") {
            Operation::Embeddings
        } else {
            Operation::Chat
        }
    }
}

/// Metrics and traces of this process.
pub struct Telemetry {
    /// What it was built from, to tell when a reload asks for something else.
    pub config: TelemetryConfig,
    /// `None` with `metrics = false`.
    metrics: Option<Metrics>,
    /// `None` without `otlp_endpoint`.
    exporter: Option<Arc<Exporter>>,
    sampler: Sampler,
}

impl Telemetry {
    /// Builds it, starting the span exporter's task when an endpoint is configured.
    pub fn start(config: &TelemetryConfig, http: Arc<HttpClient>) -> Result<Arc<Telemetry>> {
        let exporter = Exporter::start(config, http)?.map(Arc::new);
        Ok(Arc::new(Telemetry {
            config: config.clone(),
            metrics: config.metrics.then(Metrics::new),
            sampler: Sampler::new(config.sample_ratio, exporter.is_some()),
            exporter,
        }))
    }

    /// The metric series, when metrics are on: the router takes its models' and targets' here.
    pub fn metrics(&self) -> Option<&Metrics> {
        self.metrics.as_ref()
    }

    /// The trace context of a request with these headers.
    pub fn start_trace(&self, headers: &HeaderMap) -> TraceContext {
        TraceContext::start(headers.get(trace::TRACEPARENT), &self.sampler)
    }

    /// What a call's meter carries for its metrics and span.
    pub fn call(self: &Arc<Self>, operation: Operation, trace: TraceContext) -> CallTelemetry {
        CallTelemetry {
            telemetry: self.clone(),
            operation,
            trace,
            series: None,
            answer: None,
        }
    }

    /// Runs a call's routing in its scope, so that each attempt gets its span, its metrics and
    /// the `traceparent` it sends upstream.
    pub async fn route<F: Future>(
        &self,
        trace: &TraceContext,
        operation: Operation,
        routing: F,
    ) -> F::Output {
        let scope = CallScope {
            trace: *trace,
            operation,
            exporter: self.exporter.as_ref().filter(|_| trace.recorded).cloned(),
        };
        trace::within_call(scope, routing).await
    }

    /// The Prometheus exposition, or `None` when metrics are off.
    pub fn render(&self, router: &Router, ledger: &LedgerStatus) -> Option<String> {
        let metrics = self.metrics.as_ref()?;
        let mut circuits = BTreeMap::new();
        for model in router.all_models() {
            for target in &model.targets {
                let state = match target.health.state() {
                    BreakerState::Closed => CircuitState::Closed,
                    BreakerState::HalfOpen => CircuitState::HalfOpen,
                    BreakerState::Open => CircuitState::Open,
                };
                let key = (
                    model.name.clone(),
                    target.provider.name.clone(),
                    target.model.clone(),
                );
                // Two targets alike in all three: the worse state stands for both.
                let entry = circuits.entry(key).or_insert(state);
                *entry = (*entry).max(state);
            }
        }
        Some(metrics.render(&Gauges {
            circuits,
            ledger_queued: ledger.queued,
            ledger_spilled: ledger.spilled,
            export: self.exporter.as_ref().map(|e| e.gauges()),
        }))
    }

    /// Exports the spans still queued, waiting at most `deadline`.
    pub async fn flush(&self, deadline: Duration) {
        if let Some(exporter) = &self.exporter {
            exporter.flush(deadline).await;
        }
    }
}

/// A call's part in metrics and traces, carried on its usage record.
pub struct CallTelemetry {
    telemetry: Arc<Telemetry>,
    pub operation: Operation,
    pub trace: TraceContext,
    /// The public model's series, once the model is resolved.
    pub series: Option<Arc<ModelSeries>>,
    /// Noted only for a call whose span is recorded.
    answer: Option<Box<AnswerNotes>>,
}

/// What the answer tells the call's span.
#[derive(Default)]
struct AnswerNotes {
    /// The model the upstream says answered.
    model: Option<String>,
    finish_reasons: Vec<Cow<'static, str>>,
}

/// How a call ended, with the figures its ledger row gets.
pub struct CallEnd<'a> {
    /// The tokens charged (none for a cache hit).
    pub usage: &'a Usage,
    pub cost: Nanos,
    pub status: u16,
    pub code: Option<&'static str>,
    pub latency: Duration,
}

impl std::fmt::Debug for CallTelemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallTelemetry")
            .field("operation", &self.operation)
            .field("trace", &self.trace)
            .finish_non_exhaustive()
    }
}

impl CallTelemetry {
    fn notes(&mut self) -> Option<&mut AnswerNotes> {
        self.trace
            .recorded
            .then(|| &mut **self.answer.get_or_insert_with(Box::default))
    }

    /// A streamed chunk on its way out.
    pub fn note_chunk(&mut self, chunk: &ChatChunk) {
        if let Some(notes) = self.notes() {
            if notes.model.is_none() && !chunk.model.is_empty() {
                notes.model = Some(chunk.model.clone());
            }
            let reasons = chunk
                .choices
                .iter()
                .filter_map(|c| c.finish_reason.as_ref());
            notes.finish_reasons.extend(reasons.map(finish_reason));
        }
    }

    /// A whole answer on its way out.
    pub fn note_answer(&mut self, answer: &ChatResponse) {
        if let Some(notes) = self.notes() {
            notes.model = Some(answer.model.clone()).filter(|m| !m.is_empty());
            let reasons = answer
                .choices
                .iter()
                .filter_map(|c| c.finish_reason.as_ref());
            notes.finish_reasons = reasons.map(finish_reason).collect();
        }
    }

    /// The model an embeddings answer names.
    pub fn note_model(&mut self, model: &str) {
        if let Some(notes) = self.notes() {
            notes.model = Some(model.to_owned()).filter(|m| !m.is_empty());
        }
    }

    /// The call ended: it is counted, and its span (when recorded) queued for export.
    pub fn ended(&self, record: &UsageRecord, end: &CallEnd<'_>) {
        let hit = record.saved.is_some();
        if let Some(metrics) = &self.telemetry.metrics {
            let model = self.series.as_ref().unwrap_or(metrics.unresolved());
            let series = model.calls(record.provider.as_deref(), metrics);
            series.record(&CallOutcome {
                operation: self.operation,
                status: end.status,
                code: end.code,
                latency: end.latency,
                first_token: record
                    .first_token
                    .map(|t| t.saturating_duration_since(record.started)),
                usage: record.usage.as_ref().filter(|_| !hit),
                cost: end.cost,
                cache: record.cache,
                attempts: record.attempts,
            });
        }
        if self.trace.recorded {
            if let Some(exporter) = &self.telemetry.exporter {
                exporter.push(self.span(record, end));
            }
        }
    }

    /// The call's span, with the GenAI semantic conventions' attributes.
    fn span(&self, record: &UsageRecord, end: &CallEnd<'_>) -> SpanData {
        let operation = self.operation.as_str();
        let requested = trace::caller_text(&record.public_model);
        let name = if requested.is_empty() {
            operation.to_owned()
        } else {
            format!("{operation} {requested}")
        };
        let mut span = SpanData::ending_now(self.trace, SpanKind::Server, name, end.latency);
        span.set("gen_ai.operation.name", operation);
        if !requested.is_empty() {
            span.set("gen_ai.request.model", requested);
        }
        if let Some(provider) = &record.provider {
            span.set("gen_ai.provider.name", provider.to_string());
        }
        let answered_by = self.answer.as_ref().and_then(|a| a.model.clone());
        if let Some(model) = answered_by.or_else(|| record.upstream_model.clone()) {
            span.set("gen_ai.response.model", model);
        }
        if record.usage.is_some() || record.saved.is_some() {
            span.set("gen_ai.usage.input_tokens", end.usage.input_tokens);
            span.set("gen_ai.usage.output_tokens", end.usage.output_tokens);
        }
        if let Some(notes) = self
            .answer
            .as_ref()
            .filter(|a| !a.finish_reasons.is_empty())
        {
            let reasons = notes.finish_reasons.clone();
            span.set("gen_ai.response.finish_reasons", Value::StrList(reasons));
        }
        span.set("http.response.status_code", u64::from(end.status));
        if end.status >= 400 {
            let code = end.code.unwrap_or("_OTHER");
            span.set("error.type", code);
            // A server span's 4xx is the caller's error, not the gateway's.
            if end.status >= 500 {
                span.error = Some(code);
            }
        }
        span.set("proxima.request_id", record.request_id.to_string());
        span.set("proxima.attempts", u64::from(record.attempts));
        span.set("proxima.stream", record.stream);
        if let Some(cache) = record.cache {
            span.set("proxima.cache", cache);
        }
        if end.cost > 0 {
            span.set("proxima.cost_usd", pricing::usd(end.cost));
        }
        span
    }
}

/// A finish reason as `gen_ai.response.finish_reasons` lists it (OpenAI's words).
fn finish_reason(reason: &FinishReason) -> Cow<'static, str> {
    match reason {
        FinishReason::Stop | FinishReason::StopSequence(_) => "stop".into(),
        FinishReason::Length => "length".into(),
        FinishReason::ToolCalls => "tool_calls".into(),
        FinishReason::ContentFilter => "content_filter".into(),
        FinishReason::Other(other) => trace::caller_text(other).into(),
    }
}
