//! The OTLP trace export request in protobuf, written by hand: the few messages a span batch
//! needs, with the field numbers of opentelemetry-proto (`collector/trace/v1`, `trace/v1`,
//! `common/v1`, `resource/v1`). A small writer beats a code generator and its build step.
//!
//! ```text
//! ExportTraceServiceRequest { repeated ResourceSpans resource_spans = 1 }
//! ResourceSpans  { Resource resource = 1; repeated ScopeSpans scope_spans = 2 }
//! Resource       { repeated KeyValue attributes = 1 }
//! ScopeSpans     { InstrumentationScope scope = 1; repeated Span spans = 2 }
//! InstrumentationScope { string name = 1; string version = 2 }
//! Span { bytes trace_id = 1; bytes span_id = 2; bytes parent_span_id = 4; string name = 5;
//!        SpanKind kind = 6; fixed64 start_time_unix_nano = 7; fixed64 end_time_unix_nano = 8;
//!        repeated KeyValue attributes = 9; Status status = 15; fixed32 flags = 16 }
//! Status   { string message = 2; StatusCode code = 3 }      // code 2: ERROR
//! KeyValue { string key = 1; AnyValue value = 2 }
//! AnyValue { oneof: string 1, bool 2, int64 3, double 4, ArrayValue 5 }
//! ArrayValue { repeated AnyValue values = 1 }
//! ```

use super::trace::{SpanData, Value};

/// Protobuf wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

/// `Status.code` of a failed span.
const STATUS_ERROR: u64 = 2;

/// Who sends the spans: the `Resource` attributes and the instrumentation scope.
pub struct Resource {
    pub service_name: String,
}

/// An `ExportTraceServiceRequest` holding `spans`.
pub fn encode(resource: &Resource, spans: &[SpanData]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + 512 * spans.len());
    message(&mut out, 1, |resource_spans| {
        message(resource_spans, 1, |r| {
            key_value(
                r,
                1,
                "service.name",
                &Value::Str(resource.service_name.clone().into()),
            );
            key_value(
                r,
                1,
                "service.version",
                &Value::Str(env!("CARGO_PKG_VERSION").into()),
            );
            key_value(r, 1, "telemetry.sdk.name", &Value::Str("proxima".into()));
            key_value(r, 1, "telemetry.sdk.language", &Value::Str("rust".into()));
        });
        message(resource_spans, 2, |scope_spans| {
            message(scope_spans, 1, |scope| {
                string(scope, 1, "proxima");
                string(scope, 2, env!("CARGO_PKG_VERSION"));
            });
            for span in spans {
                message(scope_spans, 2, |s| encode_span(s, span));
            }
        });
    });
    out
}

fn encode_span(out: &mut Vec<u8>, span: &SpanData) {
    bytes(out, 1, &span.context.trace_id);
    bytes(out, 2, &span.context.span_id);
    if let Some(parent) = &span.context.parent_span_id {
        bytes(out, 4, parent);
    }
    string(out, 5, &span.name);
    tag(out, 6, VARINT);
    varint(out, span.kind as u64);
    tag(out, 7, FIXED64);
    out.extend_from_slice(&span.start_unix_nanos.to_le_bytes());
    tag(out, 8, FIXED64);
    out.extend_from_slice(&span.end_unix_nanos.to_le_bytes());
    for (key, value) in &span.attributes {
        key_value(out, 9, key, value);
    }
    if let Some(error) = span.error {
        message(out, 15, |status| {
            string(status, 2, error);
            tag(status, 3, VARINT);
            varint(status, STATUS_ERROR);
        });
    }
    tag(out, 16, FIXED32);
    out.extend_from_slice(&span.context.otlp_flags().to_le_bytes());
}

fn key_value(out: &mut Vec<u8>, field: u32, key: &str, value: &Value) {
    message(out, field, |kv| {
        string(kv, 1, key);
        message(kv, 2, |any| any_value(any, value));
    });
}

fn any_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Str(s) => string(out, 1, s),
        Value::Bool(b) => {
            tag(out, 2, VARINT);
            varint(out, u64::from(*b));
        }
        Value::Int(n) => {
            tag(out, 3, VARINT);
            // int64 is sent as its two's complement bit pattern.
            varint(out, u64::from_ne_bytes(n.to_ne_bytes()));
        }
        Value::Double(x) => {
            tag(out, 4, FIXED64);
            out.extend_from_slice(&x.to_le_bytes());
        }
        Value::StrList(items) => message(out, 5, |array| {
            for item in items {
                message(array, 1, |any| string(any, 1, item));
            }
        }),
    }
}

/// A length-delimited field whose content `fill` writes.
fn message(out: &mut Vec<u8>, field: u32, fill: impl FnOnce(&mut Vec<u8>)) {
    let mut inner = Vec::new();
    fill(&mut inner);
    bytes(out, field, &inner);
}

fn string(out: &mut Vec<u8>, field: u32, s: &str) {
    bytes(out, field, s.as_bytes());
}

fn bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    tag(out, field, LEN);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn tag(out: &mut Vec<u8>, field: u32, wire_type: u8) {
    varint(out, u64::from(field) << 3 | u64::from(wire_type));
}

fn varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_negative_ints_use_the_wire_encoding() {
        let mut out = Vec::new();
        varint(&mut out, 300);
        assert_eq!(out, [0xac, 0x02]);
        let mut out = Vec::new();
        any_value(&mut out, &Value::Int(-1));
        // tag 3 varint, then ten bytes of the 64-bit pattern.
        assert_eq!(out.len(), 11);
        assert_eq!(out[0], 3 << 3);
        assert_eq!(out[10], 0x01);
        let mut out = Vec::new();
        tag(&mut out, 16, FIXED32);
        assert_eq!(out, [0x85, 0x01]);
    }
}
