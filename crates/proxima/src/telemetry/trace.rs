//! Trace context and spans: W3C `traceparent` in and out, a span per call and a child span per
//! upstream attempt, with the OpenTelemetry GenAI semantic conventions.
//!
//! A request joins the caller's trace when its `traceparent` is valid (a malformed one is
//! ignored and a new trace starts); the gateway's span for the call is the caller's span's
//! child, and each upstream attempt is a child of that, whose id goes upstream as the
//! provider request's `traceparent`. A caller's sampled flag decides whether its trace is
//! recorded; a new trace is recorded for `sample_ratio` of trace ids. Spans are built only for
//! a recorded trace, so an unrecorded call costs two random ids and a header.
//!
//! The routing of a call runs inside [`CallScope`] (a task-local, so the router and the
//! provider client need no extra parameter): [`attempt`] reads it to make each attempt's span
//! and metrics, and scopes the attempt's context for [`upstream_traceparent`].

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderValue;
use tokio::time::Instant;

use super::export::Exporter;
use super::metrics::AttemptSeries;
use super::Operation;
use crate::error::{ErrorKind, Result};

/// The `traceparent` header, both ways.
pub const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

/// `flags` bit of a sampled trace.
const SAMPLED: u8 = 0x01;

/// Where one span sits in its trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    /// The parent is the caller's span (from its `traceparent`), not one of ours.
    pub remote_parent: bool,
    /// The trace's sampled flag, as passed on.
    pub sampled: bool,
    /// Spans of this trace are exported (sampled, and an exporter is configured).
    pub recorded: bool,
}

/// Decides which new traces are recorded.
#[derive(Clone, Copy, Debug)]
pub struct Sampler {
    /// A new trace is sampled when the top 64 bits of its id fall below this.
    threshold: u64,
    /// An exporter is configured.
    exporting: bool,
}

impl Sampler {
    pub fn new(ratio: f64, exporting: bool) -> Sampler {
        let threshold = if ratio >= 1.0 {
            u64::MAX
        } else if ratio <= 0.0 {
            0
        } else {
            // Truncation is the intent: the share of ids below the threshold.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let t = (ratio * u64::MAX as f64) as u64;
            t
        };
        Sampler {
            threshold,
            exporting,
        }
    }

    fn samples_new(&self, trace_id: &[u8; 16]) -> bool {
        let mut top = [0u8; 8];
        top.copy_from_slice(&trace_id[..8]);
        self.exporting && (self.threshold == u64::MAX || u64::from_be_bytes(top) < self.threshold)
    }
}

impl TraceContext {
    /// The context of a request's span: a child of the caller's `traceparent` when it is valid,
    /// else the root of a new trace.
    pub fn start(traceparent: Option<&HeaderValue>, sampler: &Sampler) -> TraceContext {
        let parent = traceparent
            .and_then(|v| v.to_str().ok())
            .and_then(parse_traceparent);
        match parent {
            Some((trace_id, parent_id, flags)) => {
                let sampled = flags & SAMPLED != 0;
                TraceContext {
                    trace_id,
                    span_id: span_id(),
                    parent_span_id: Some(parent_id),
                    remote_parent: true,
                    sampled,
                    recorded: sampled && sampler.exporting,
                }
            }
            None => {
                let trace_id = fastrand::u128(1..).to_be_bytes();
                let sampled = sampler.samples_new(&trace_id);
                TraceContext {
                    trace_id,
                    span_id: span_id(),
                    parent_span_id: None,
                    remote_parent: false,
                    sampled,
                    recorded: sampled,
                }
            }
        }
    }

    /// A new span under this one, in the same trace.
    pub fn child(&self) -> TraceContext {
        TraceContext {
            span_id: span_id(),
            parent_span_id: Some(self.span_id),
            remote_parent: false,
            ..*self
        }
    }

    /// This span as a `traceparent` header value.
    pub fn traceparent(&self) -> HeaderValue {
        let mut text = [0u8; 55];
        text[..3].copy_from_slice(b"00-");
        hex(&self.trace_id, &mut text[3..35]);
        text[35] = b'-';
        hex(&self.span_id, &mut text[36..52]);
        text[52] = b'-';
        text[53] = b'0';
        text[54] = if self.sampled { b'1' } else { b'0' };
        // Only ASCII hex digits and dashes: always a valid header value.
        HeaderValue::from_bytes(&text).unwrap_or(HeaderValue::from_static(""))
    }

    /// The span's flags as OTLP carries them: the trace flags, and whether the parent is remote.
    pub fn otlp_flags(&self) -> u32 {
        const HAS_IS_REMOTE: u32 = 0x100;
        const IS_REMOTE: u32 = 0x200;
        let mut flags = u32::from(if self.sampled { SAMPLED } else { 0 }) | HAS_IS_REMOTE;
        if self.remote_parent {
            flags |= IS_REMOTE;
        }
        flags
    }
}

fn span_id() -> [u8; 8] {
    fastrand::u64(1..).to_be_bytes()
}

fn hex(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 0x0f)];
    }
}

/// Trace id, parent span id and flags of a W3C `traceparent`, if it is valid: version `00`
/// exactly 55 characters; a later version at least that, with a `-` after the flags when
/// longer; lowercase hex; ids not all zero; version `ff` invalid.
pub fn parse_traceparent(text: &str) -> Option<([u8; 16], [u8; 8], u8)> {
    let bytes = text.trim().as_bytes();
    if bytes.len() < 55 || bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
        return None;
    }
    let version = unhex::<1>(&bytes[..2])?[0];
    if version == 0xff
        || (version == 0 && bytes.len() != 55)
        || (bytes.len() > 55 && bytes[55] != b'-')
    {
        return None;
    }
    let trace_id = unhex::<16>(&bytes[3..35])?;
    let parent_id = unhex::<8>(&bytes[36..52])?;
    let flags = unhex::<1>(&bytes[53..55])?[0];
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    Some((trace_id, parent_id, flags))
}

fn unhex<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    if text.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// The kind of a span, as OTLP numbers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    /// The gateway serving a call.
    Server = 2,
    /// The gateway calling an upstream.
    Client = 3,
}

/// An attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Str(Cow<'static, str>),
    Int(i64),
    Double(f64),
    Bool(bool),
    StrList(Vec<Cow<'static, str>>),
}

/// A finished span, waiting for export.
#[derive(Debug)]
pub struct SpanData {
    pub context: TraceContext,
    pub name: String,
    pub kind: SpanKind,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    pub attributes: Vec<(&'static str, Value)>,
    /// Set for a failed span: its status is ERROR with this message.
    pub error: Option<&'static str>,
}

impl SpanData {
    /// A span that ends now and lasted `elapsed`.
    pub fn ending_now(
        context: TraceContext,
        kind: SpanKind,
        name: String,
        elapsed: Duration,
    ) -> SpanData {
        let end = SystemTime::now();
        let start = end.checked_sub(elapsed).unwrap_or(end);
        SpanData {
            context,
            name,
            kind,
            start_unix_nanos: unix_nanos(start),
            end_unix_nanos: unix_nanos(end),
            attributes: Vec::with_capacity(16),
            error: None,
        }
    }

    pub fn set(&mut self, key: &'static str, value: impl Into<Value>) {
        self.attributes.push((key, value.into()));
    }
}

fn unix_nanos(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl From<&'static str> for Value {
    fn from(s: &'static str) -> Value {
        Value::Str(Cow::Borrowed(s))
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Str(Cow::Owned(s))
    }
}

impl From<u64> for Value {
    fn from(n: u64) -> Value {
        Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}

impl From<f64> for Value {
    fn from(x: f64) -> Value {
        Value::Double(x)
    }
}

/// Text a caller chose (a model name), cut to a length fit for a span attribute.
pub fn caller_text(text: &str) -> String {
    const MAX: usize = 256;
    if text.len() <= MAX {
        return text.to_owned();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// What the attempts of a call need to know about it while it is routed.
#[derive(Clone)]
pub struct CallScope {
    pub trace: TraceContext,
    pub operation: Operation,
    /// Set when the call's trace is recorded.
    pub exporter: Option<Arc<Exporter>>,
}

tokio::task_local! {
    static CALL: CallScope;
    static UPSTREAM: TraceContext;
}

/// Runs the routing of a call inside its scope.
pub async fn within_call<F: Future>(scope: CallScope, routing: F) -> F::Output {
    CALL.scope(scope, routing).await
}

/// The `traceparent` of the upstream attempt running on this task, if any.
pub fn upstream_traceparent() -> Option<HeaderValue> {
    UPSTREAM.try_with(TraceContext::traceparent).ok()
}

/// One upstream attempt of the call in scope, observed: its span (a child of the call's span,
/// whose id the provider request carries) and its metrics. Outside a call (a token count),
/// the attempt runs as it is.
pub async fn attempt<T>(
    series: Option<&AttemptSeries>,
    provider: &str,
    upstream_model: &str,
    call: impl Future<Output = Result<T>>,
) -> Result<T> {
    let Ok((parent, operation)) = CALL.try_with(|scope| (scope.trace, scope.operation)) else {
        return call.await;
    };
    let context = parent.child();
    let started = Instant::now();
    let outcome = UPSTREAM.scope(context, call).await;
    let elapsed = started.elapsed();
    let error = outcome.as_ref().err();
    if let Some(series) = series {
        series.record(operation, elapsed, error.map(|e| e.kind.code()));
    }
    if context.recorded {
        let mut span = SpanData::ending_now(
            context,
            SpanKind::Client,
            format!("{} {upstream_model}", operation.as_str()),
            elapsed,
        );
        span.set("gen_ai.operation.name", operation.as_str());
        span.set("gen_ai.provider.name", provider.to_owned());
        span.set("gen_ai.request.model", upstream_model.to_owned());
        match error {
            None => span.set("http.response.status_code", 200u64),
            Some(e) => {
                if let Some(status) = upstream_status(e.kind) {
                    span.set("http.response.status_code", u64::from(status));
                }
                span.set("error.type", e.kind.code());
                span.error = Some(e.kind.code());
            }
        }
        // The scope's exporter is taken only now: most attempts are not recorded.
        let _ = CALL.try_with(|scope| {
            if let Some(exporter) = &scope.exporter {
                exporter.push(span);
            }
        });
    }
    outcome
}

/// The upstream's HTTP status, where the error kind tells it.
fn upstream_status(kind: ErrorKind) -> Option<u16> {
    match kind {
        ErrorKind::UpstreamRejected(status) => Some(status),
        ErrorKind::UpstreamRateLimited => Some(429),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const VALID: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn traceparent_is_parsed_and_written_back() {
        let (trace, parent, flags) = parse_traceparent(VALID).unwrap();
        assert_eq!(trace[0], 0x0a);
        assert_eq!(parent[7], 0x31);
        assert_eq!(flags, 1);
        let sampler = Sampler::new(1.0, true);
        let cx = TraceContext::start(Some(&HeaderValue::from_static(VALID)), &sampler);
        assert_eq!(cx.trace_id, trace);
        assert_eq!(cx.parent_span_id, Some(parent));
        assert!(cx.recorded && cx.remote_parent);
        let written = cx.traceparent();
        let written = written.to_str().unwrap();
        assert_eq!(&written[..36], &VALID[..36]);
        assert_ne!(&written[36..52], &VALID[36..52]);
        assert!(written.ends_with("-01"));
        assert_eq!(parse_traceparent(written).unwrap().0, trace);
    }

    #[test]
    fn malformed_traceparents_are_refused() {
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01x",
            "00_0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "0g-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
        // A later version may carry more fields.
        assert!(
            parse_traceparent("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-later")
                .is_some()
        );
    }

    #[test]
    fn a_malformed_parent_starts_a_new_trace_and_sampling_follows_the_caller() {
        let sampler = Sampler::new(1.0, true);
        let cx = TraceContext::start(Some(&HeaderValue::from_static("garbage")), &sampler);
        assert!(cx.parent_span_id.is_none() && cx.recorded);
        let unsampled =
            HeaderValue::from_static("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00");
        let cx = TraceContext::start(Some(&unsampled), &sampler);
        assert!(!cx.sampled && !cx.recorded);
        assert!(cx.traceparent().to_str().unwrap().ends_with("-00"));
        // Without an exporter nothing is recorded, but a caller's sampled flag is passed on.
        let off = Sampler::new(1.0, false);
        let cx = TraceContext::start(Some(&HeaderValue::from_static(VALID)), &off);
        assert!(cx.sampled && !cx.recorded);
        assert!(!TraceContext::start(None, &off).sampled);
        assert!(!TraceContext::start(None, &Sampler::new(0.0, true)).recorded);
    }

    #[test]
    fn children_share_the_trace() {
        let root = TraceContext::start(None, &Sampler::new(1.0, true));
        let child = root.child();
        assert_eq!(child.trace_id, root.trace_id);
        assert_eq!(child.parent_span_id, Some(root.span_id));
        assert_ne!(child.span_id, root.span_id);
        assert!(!child.remote_parent && child.recorded);
    }

    #[test]
    fn sample_ratio_records_about_that_share() {
        let sampler = Sampler::new(0.25, true);
        let recorded = (0..4000)
            .filter(|_| TraceContext::start(None, &sampler).recorded)
            .count();
        assert!((800..1200).contains(&recorded), "{recorded}");
    }
}
