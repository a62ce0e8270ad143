//! Metrics and traces as an operator sees them: `/metrics` scraped and parsed as Prometheus
//! text after calls that succeed, fail upstream, are refused by a limit, hit the cache or
//! stream; spans received by an OTLP/HTTP collector in the test and decoded from protobuf by a
//! decoder of its own, joined to the caller's `traceparent`, which the upstream receives too;
//! and calls that do not wait for a collector that is down or hangs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use bytes::Bytes;
use mock_upstream::{MockUpstream, Reply};
use serde_json::json;
use tokio::time::Instant;

use crate::harness::{chat_body, one_model_with, Conf, Gateway};

// ------------------------------------------------------------------ Prometheus text, strictly

/// Label pairs, sorted.
type Labels = Vec<(String, String)>;

/// A parsed exposition: every sample by name and sorted labels, and each family's type.
struct Scrape {
    samples: BTreeMap<(String, Labels), f64>,
    types: BTreeMap<String, String>,
}

impl Scrape {
    /// Parses `text`, failing on anything the text format does not allow: every line a
    /// `# HELP`/`# TYPE` comment or `name{labels} value`, every sample after its family's HELP
    /// and TYPE, no sample twice, histogram buckets cumulative and ending at `+Inf` == count.
    fn parse(text: &str) -> Scrape {
        let mut samples = BTreeMap::new();
        let mut types = BTreeMap::new();
        let mut helps = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("HELP without text");
                assert!(valid_name(name), "bad metric name in {line:?}");
                assert!(!help.is_empty(), "empty HELP: {line:?}");
                assert!(
                    helps.insert(name.to_owned(), ()).is_none(),
                    "HELP twice: {line:?}"
                );
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE without type");
                assert!(
                    ["counter", "gauge", "histogram"].contains(&kind),
                    "unknown type: {line:?}"
                );
                assert!(helps.contains_key(name), "TYPE before HELP: {line:?}");
                assert!(types.insert(name.to_owned(), kind.to_owned()).is_none());
                continue;
            }
            assert!(
                !line.starts_with('#') && !line.is_empty(),
                "stray line {line:?}"
            );
            let (name, labels, value) = sample_line(line);
            let family = family_of(&name, &types);
            let kind = types
                .get(&family)
                .unwrap_or_else(|| panic!("sample before its TYPE: {line:?}"));
            if kind != "histogram" {
                assert_eq!(name, family, "suffix on a {kind}: {line:?}");
            }
            assert!(
                samples.insert((name, labels), value).is_none(),
                "sample twice: {line:?}"
            );
        }
        let scrape = Scrape { samples, types };
        scrape.check_histograms();
        scrape
    }

    fn check_histograms(&self) {
        // Buckets by (histogram, labels without le).
        let mut buckets: BTreeMap<(String, Labels), Vec<(f64, f64)>> = BTreeMap::new();
        for ((name, labels), value) in &self.samples {
            if let Some(family) = name.strip_suffix("_bucket") {
                let le = labels
                    .iter()
                    .find(|(k, _)| k == "le")
                    .expect("bucket without le");
                let le = if le.1 == "+Inf" {
                    f64::INFINITY
                } else {
                    le.1.parse().expect("le is a number")
                };
                let rest = labels.iter().filter(|(k, _)| k != "le").cloned().collect();
                buckets
                    .entry((family.to_owned(), rest))
                    .or_default()
                    .push((le, *value));
            }
        }
        for ((family, labels), mut series) in buckets {
            series.sort_by(|a, b| a.0.total_cmp(&b.0));
            assert!(
                series.windows(2).all(|w| w[0].1 <= w[1].1),
                "{family}{labels:?}: buckets not cumulative: {series:?}"
            );
            let last = series.last().unwrap();
            assert!(last.0.is_infinite(), "{family}{labels:?}: no +Inf bucket");
            let count = self.samples[&(format!("{family}_count"), labels.clone())];
            assert_eq!(last.1, count, "{family}{labels:?}: +Inf bucket != count");
            assert!(self
                .samples
                .contains_key(&(format!("{family}_sum"), labels.clone())));
        }
    }

    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut key: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        key.sort();
        self.samples.get(&(name.to_owned(), key)).copied()
    }

    /// The value of a sample that must be there.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or_else(|| {
            let near: Vec<_> = self.samples.keys().filter(|(n, _)| n == name).collect();
            panic!("no {name}{labels:?}; there are {near:?}")
        })
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `name{k="v",...} value` → name, sorted labels, value.
fn sample_line(line: &str) -> (String, Labels, f64) {
    let name_end = line.find(['{', ' ']).expect("sample without value");
    let name = &line[..name_end];
    assert!(valid_name(name), "bad name in {line:?}");
    let mut labels = Vec::new();
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        loop {
            // key
            let start = chars.peek().expect("unterminated labels").0;
            let mut eq = None;
            for (i, c) in chars.by_ref() {
                if c == '=' {
                    eq = Some(i);
                    break;
                }
            }
            let key = &inner[start..eq.expect("label without =")];
            assert!(
                valid_name(key) && !key.contains(':'),
                "bad label name {key:?} in {line:?}"
            );
            assert_eq!(
                chars.next().map(|c| c.1),
                Some('"'),
                "unquoted label in {line:?}"
            );
            let mut value = String::new();
            loop {
                match chars.next().expect("unterminated label value").1 {
                    '\\' => match chars.next().expect("dangling escape").1 {
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        'n' => value.push('\n'),
                        other => panic!("bad escape \\{other} in {line:?}"),
                    },
                    '"' => break,
                    '\n' => panic!("raw newline in {line:?}"),
                    c => value.push(c),
                }
            }
            assert!(
                labels.iter().all(|(k, _): &(String, String)| k != key),
                "label twice in {line:?}"
            );
            labels.push((key.to_owned(), value));
            match chars.next().expect("unterminated labels") {
                (_, ',') => continue,
                (i, '}') => {
                    rest = &inner[i + 1..];
                    break;
                }
                (_, c) => panic!("unexpected {c:?} in {line:?}"),
            }
        }
    }
    let value = rest.strip_prefix(' ').expect("no space before the value");
    assert!(!value.contains(' '), "timestamps are not written: {line:?}");
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}")),
    };
    labels.sort();
    (name.to_owned(), labels, value)
}

fn family_of(name: &str, types: &BTreeMap<String, String>) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if types.get(base).is_some_and(|t| t == "histogram") {
                return base.to_owned();
            }
        }
    }
    name.to_owned()
}

async fn scrape(gw: &Gateway) -> Scrape {
    let answer = gw.get("/metrics").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(
        answer.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    Scrape::parse(&answer.text())
}

#[tokio::test]
async fn a_scrape_counts_calls_by_model_provider_status_code_cache_and_limit() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(
        one_model_with(
            &mock,
            "retries = 0\nprice = { input_per_mtok = 1000.0, output_per_mtok = 2000.0 }",
        )
        .model_with("capped", "up", "gpt-capped", "rpm = 1")
        .section("[cache]\nexact = { ttl = \"1h\" }\n"),
    )
    .await;

    // Two answered calls, the second from the cache.
    gw.chat_ok(chat_body("chat", "hello there")).await;
    let hit = gw.chat_ok(chat_body("chat", "hello there")).await;
    assert_eq!(hit.header("x-proxima-cache"), Some("hit"));
    // An upstream failure.
    mock.enqueue(Reply::error(500, "upstream is down"));
    gw.chat(chat_body("chat", "this fails"))
        .await
        .assert_error(502, "upstream_error");
    // A stream, read to the end.
    let mut body = chat_body("chat", "stream these words please");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let mut sse = gw.stream(body).await;
    assert_eq!(sse.status, 200);
    assert!(!sse.data().await.is_empty());
    // A model's own rate limit: one call, then a refusal.
    gw.chat_ok(chat_body("capped", "one")).await;
    gw.chat(chat_body("capped", "two"))
        .await
        .assert_error(429, "rate_limit_exceeded");
    // A model that does not exist: counted without its (caller-chosen) name.
    gw.chat(chat_body("no-such-model-xyzzy", "hi"))
        .await
        .assert_error(404, "model_not_found");

    // The stream's meter closes as its body ends; give it a moment.
    let mut metrics = scrape(&gw).await;
    for _ in 0..50 {
        let ok = metrics.get(
            "proxima_requests_total",
            &[
                ("model", "chat"),
                ("provider", "up"),
                ("status", "200"),
                ("code", ""),
            ],
        );
        if ok == Some(3.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        metrics = scrape(&gw).await;
    }
    let m = metrics;
    let requests = |model, provider, status, code| {
        m.value(
            "proxima_requests_total",
            &[
                ("model", model),
                ("provider", provider),
                ("status", status),
                ("code", code),
            ],
        )
    };
    assert_eq!(m.types["proxima_requests_total"], "counter");
    assert_eq!(requests("chat", "up", "200", ""), 3.0);
    assert_eq!(requests("chat", "up", "502", "upstream_error"), 1.0);
    assert_eq!(requests("capped", "up", "200", ""), 1.0);
    assert_eq!(requests("capped", "", "429", "rate_limit_exceeded"), 1.0);
    assert_eq!(requests("", "", "404", "model_not_found"), 1.0);
    assert_eq!(
        m.value(
            "proxima_limit_refusals_total",
            &[("model", "capped"), ("code", "rate_limit_exceeded")]
        ),
        1.0
    );
    // The upstream's 502 is not a limit refusal.
    assert_eq!(
        m.samples
            .keys()
            .filter(|(n, _)| n == "proxima_limit_refusals_total")
            .count(),
        1
    );
    let cache = |result| {
        m.value(
            "proxima_cache_results_total",
            &[("model", "chat"), ("result", result)],
        )
    };
    assert_eq!(cache("hit"), 1.0);
    assert_eq!(cache("miss"), 3.0);

    // Upstream attempts: the hit made none.
    let attempts = |model| {
        m.value(
            "proxima_upstream_attempts_total",
            &[("model", model), ("provider", "up")],
        )
    };
    assert_eq!(attempts("chat"), 3.0);
    assert_eq!(attempts("capped"), 1.0);
    assert_eq!(
        m.value(
            "proxima_upstream_errors_total",
            &[
                ("model", "chat"),
                ("provider", "up"),
                ("code", "upstream_error")
            ]
        ),
        1.0
    );

    // GenAI histograms, with the conventions' label names.
    let genai = [
        ("gen_ai_operation_name", "chat"),
        ("gen_ai_request_model", "chat"),
        ("gen_ai_provider_name", "up"),
    ];
    assert_eq!(
        m.types["gen_ai_server_request_duration_seconds"],
        "histogram"
    );
    assert_eq!(
        m.value("gen_ai_server_request_duration_seconds_count", &genai),
        3.0
    );
    assert!(m.value("gen_ai_server_request_duration_seconds_sum", &genai) > 0.0);
    assert_eq!(
        m.value("gen_ai_server_time_to_first_token_seconds_count", &genai),
        1.0
    );
    assert_eq!(
        m.value("gen_ai_client_operation_duration_seconds_count", &genai),
        2.0
    );
    let tokens = |kind| {
        let mut labels = genai.to_vec();
        labels.push(("gen_ai_token_type", kind));
        (
            m.value("gen_ai_client_token_usage_count", &labels),
            m.value("gen_ai_client_token_usage_sum", &labels),
        )
    };
    let (input_calls, input_tokens) = tokens("input");
    let (output_calls, output_tokens) = tokens("output");
    // The miss and the stream reported usage; the hit used no tokens; the failure none known.
    assert_eq!((input_calls, output_calls), (2.0, 2.0));
    assert!(input_tokens >= 2.0 && output_tokens >= 2.0);
    // At $1000 / $2000 per million tokens, the cost counter is the same sum.
    let cost = m.value(
        "proxima_cost_usd_total",
        &[("model", "chat"), ("provider", "up")],
    );
    let expected = (input_tokens * 1000.0 + output_tokens * 2000.0) / 1e6;
    assert!((cost - expected).abs() < 1e-9, "{cost} vs {expected}");

    // Gauges read at scrape time.
    assert_eq!(
        m.value(
            "proxima_circuit_state",
            &[
                ("model", "chat"),
                ("provider", "up"),
                ("upstream_model", "gpt-upstream")
            ]
        ),
        0.0
    );
    assert!(m.get("proxima_ledger_queue_depth", &[]).is_some());
    assert!(m.get("proxima_ledger_spilled_records", &[]).is_some());
    // No tracing configured: no exporter figures.
    assert!(!m.types.contains_key("proxima_trace_spans_exported_total"));

    // Labels stay bounded: no caller text, no request id.
    let text = gw.get("/metrics").await.text();
    for leaked in ["no-such-model-xyzzy", "hello there", "req_"] {
        assert!(!text.contains(leaked), "{leaked} in the exposition");
    }
}

#[tokio::test]
async fn an_open_circuit_shows_in_its_gauge_and_metrics_can_be_turned_off() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(
        one_model_with(&mock, "retries = 0")
            .section("[routing.breaker]\nconsecutive_failures = 2\ncooldown = \"1m\"\n"),
    )
    .await;
    for _ in 0..2 {
        mock.enqueue(Reply::error(503, "overloaded"));
        assert_eq!(gw.chat(chat_body("chat", "x")).await.status, 502);
    }
    let m = scrape(&gw).await;
    let labels = [
        ("model", "chat"),
        ("provider", "up"),
        ("upstream_model", "gpt-upstream"),
    ];
    assert_eq!(m.value("proxima_circuit_state", &labels), 2.0);
    gw.chat(chat_body("chat", "x"))
        .await
        .assert_error(503, "no_healthy_upstream");
    let m = scrape(&gw).await;
    assert_eq!(
        m.value(
            "proxima_requests_total",
            &[
                ("model", "chat"),
                ("provider", ""),
                ("status", "503"),
                ("code", "no_healthy_upstream")
            ]
        ),
        1.0
    );

    let off =
        Gateway::start(one_model_with(&mock, "").section("[telemetry]\nmetrics = false\n")).await;
    off.chat_ok(chat_body("chat", "x")).await;
    let answer = off.get("/metrics").await;
    answer.assert_error(404, "not_found");
}

// ------------------------------------------------------------------ OTLP, decoded on its own

/// An OTLP/HTTP collector: keeps every export request's body, or never answers.
#[derive(Default)]
struct Collector {
    bodies: Mutex<Vec<(Option<String>, Bytes)>>,
    hang: bool,
}

impl Collector {
    async fn start(hang: bool) -> (Arc<Collector>, String) {
        let collector = Arc::new(Collector {
            hang,
            ..Collector::default()
        });
        let app = axum::Router::new()
            .route("/v1/traces", post(receive))
            .with_state(collector.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (collector, url)
    }

    fn spans(&self) -> Vec<Span> {
        let bodies = self.bodies.lock().unwrap().clone();
        bodies
            .iter()
            .flat_map(|(content_type, body)| {
                assert_eq!(content_type.as_deref(), Some("application/x-protobuf"));
                decode_export(body)
            })
            .collect()
    }

    /// The spans of `trace`, once `n` have arrived (within 10 s).
    async fn wait_for(&self, trace: &str, n: usize) -> Vec<Span> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let spans: Vec<Span> = self
                .spans()
                .into_iter()
                .filter(|s| hex(&s.trace_id) == trace)
                .collect();
            if spans.len() >= n || Instant::now() > deadline {
                assert_eq!(spans.len(), n, "spans of trace {trace}: {spans:#?}");
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn receive(
    State(collector): State<Arc<Collector>>,
    request: axum::extract::Request,
) -> &'static str {
    if collector.hang {
        std::future::pending::<()>().await;
    }
    let content_type = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = axum::body::to_bytes(request.into_body(), usize::MAX)
        .await
        .unwrap();
    collector.bodies.lock().unwrap().push((content_type, body));
    ""
}

/// Protobuf wire format, read field by field: (number, value).
#[derive(Debug)]
enum Wire {
    Varint(u64),
    Fixed64(u64),
    Len(Vec<u8>),
    Fixed32(u32),
}

fn read_varint(buf: &[u8], at: &mut usize) -> u64 {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = buf[*at];
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return value;
        }
    }
    panic!("varint longer than 10 bytes");
}

fn fields(buf: &[u8]) -> Vec<(u64, Wire)> {
    let mut at = 0;
    let mut out = Vec::new();
    while at < buf.len() {
        let key = read_varint(buf, &mut at);
        let value = match key & 7 {
            0 => Wire::Varint(read_varint(buf, &mut at)),
            1 => {
                let v = u64::from_le_bytes(buf[at..at + 8].try_into().unwrap());
                at += 8;
                Wire::Fixed64(v)
            }
            2 => {
                let len = usize::try_from(read_varint(buf, &mut at)).unwrap();
                let v = buf[at..at + len].to_vec();
                at += len;
                Wire::Len(v)
            }
            5 => {
                let v = u32::from_le_bytes(buf[at..at + 4].try_into().unwrap());
                at += 4;
                Wire::Fixed32(v)
            }
            other => panic!("wire type {other}"),
        };
        out.push((key >> 3, value));
    }
    assert_eq!(at, buf.len(), "message overran its length");
    out
}

fn bytes_of(w: &Wire) -> &[u8] {
    match w {
        Wire::Len(b) => b,
        other => panic!("expected a length-delimited field, got {other:?}"),
    }
}

fn text_of(w: &Wire) -> String {
    String::from_utf8(bytes_of(w).to_vec()).unwrap()
}

#[derive(Debug, Clone, PartialEq)]
enum Attr {
    Str(String),
    Int(i64),
    Bool(bool),
    Double(f64),
    List(Vec<Attr>),
}

fn any_value(buf: &[u8]) -> Attr {
    let fields = fields(buf);
    assert_eq!(fields.len(), 1, "AnyValue holds one value");
    match &fields[0] {
        (1, w) => Attr::Str(text_of(w)),
        (2, Wire::Varint(v)) => Attr::Bool(*v != 0),
        (3, Wire::Varint(v)) => Attr::Int(i64::from_ne_bytes(v.to_ne_bytes())),
        (4, Wire::Fixed64(v)) => Attr::Double(f64::from_bits(*v)),
        (5, w) => Attr::List(
            fields_of(bytes_of(w), 1)
                .iter()
                .map(|b| any_value(b))
                .collect(),
        ),
        other => panic!("unexpected AnyValue field {other:?}"),
    }
}

/// The length-delimited fields numbered `n`.
fn fields_of(buf: &[u8], n: u64) -> Vec<Vec<u8>> {
    fields(buf)
        .into_iter()
        .filter(|(number, _)| *number == n)
        .map(|(_, w)| bytes_of(&w).to_vec())
        .collect()
}

fn attributes(kvs: Vec<Vec<u8>>) -> BTreeMap<String, Attr> {
    kvs.iter()
        .map(|kv| {
            let f = fields(kv);
            let key = f
                .iter()
                .find(|(n, _)| *n == 1)
                .map(|(_, w)| text_of(w))
                .unwrap();
            let value = f
                .iter()
                .find(|(n, _)| *n == 2)
                .map(|(_, w)| any_value(bytes_of(w)))
                .unwrap();
            (key, value)
        })
        .collect()
}

#[derive(Debug, Clone)]
struct Span {
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    name: String,
    kind: u64,
    start: u64,
    end: u64,
    attributes: BTreeMap<String, Attr>,
    status_code: u64,
    flags: u32,
    service_name: Attr,
    scope_name: String,
}

impl Span {
    fn attr(&self, key: &str) -> &Attr {
        self.attributes
            .get(key)
            .unwrap_or_else(|| panic!("span {} has no {key}: {:?}", self.name, self.attributes))
    }

    fn str(&self, key: &str) -> &str {
        match self.attr(key) {
            Attr::Str(s) => s,
            other => panic!("{key} is {other:?}"),
        }
    }

    fn int(&self, key: &str) -> i64 {
        match self.attr(key) {
            Attr::Int(n) => *n,
            other => panic!("{key} is {other:?}"),
        }
    }
}

/// An `ExportTraceServiceRequest`, decoded into its spans.
fn decode_export(body: &[u8]) -> Vec<Span> {
    let mut spans = Vec::new();
    for resource_spans in fields_of(body, 1) {
        let resource = fields_of(&resource_spans, 1).pop().expect("no resource");
        let resource = attributes(fields_of(&resource, 1));
        for scope_spans in fields_of(&resource_spans, 2) {
            let scope = fields_of(&scope_spans, 1).pop().expect("no scope");
            let scope_name = text_of(&fields(&scope).into_iter().find(|(n, _)| *n == 1).unwrap().1);
            for span in fields_of(&scope_spans, 2) {
                let mut s = Span {
                    trace_id: Vec::new(),
                    span_id: Vec::new(),
                    parent_span_id: Vec::new(),
                    name: String::new(),
                    kind: 0,
                    start: 0,
                    end: 0,
                    attributes: BTreeMap::new(),
                    status_code: 0,
                    flags: 0,
                    service_name: resource["service.name"].clone(),
                    scope_name: scope_name.clone(),
                };
                let mut kvs = Vec::new();
                for (number, w) in fields(&span) {
                    match (number, w) {
                        (1, w) => s.trace_id = bytes_of(&w).to_vec(),
                        (2, w) => s.span_id = bytes_of(&w).to_vec(),
                        (4, w) => s.parent_span_id = bytes_of(&w).to_vec(),
                        (5, w) => s.name = text_of(&w),
                        (6, Wire::Varint(k)) => s.kind = k,
                        (7, Wire::Fixed64(t)) => s.start = t,
                        (8, Wire::Fixed64(t)) => s.end = t,
                        (9, w) => kvs.push(bytes_of(&w).to_vec()),
                        (15, w) => {
                            for (n, v) in fields(bytes_of(&w)) {
                                if let (3, Wire::Varint(code)) = (n, v) {
                                    s.status_code = code;
                                }
                            }
                        }
                        (16, Wire::Fixed32(f)) => s.flags = f,
                        (n, w) => panic!("unexpected span field {n}: {w:?}"),
                    }
                }
                s.attributes = attributes(kvs);
                spans.push(s);
            }
        }
    }
    spans
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Trace id and span id of a `traceparent`, and its flags.
fn split_traceparent(value: &str) -> (String, String, String) {
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "{value}");
    assert_eq!(parts[0], "00");
    (
        parts[1].to_owned(),
        parts[2].to_owned(),
        parts[3].to_owned(),
    )
}

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn traced_conf(mock: &MockUpstream, collector: &str) -> Conf {
    one_model_with(mock, "retries = 1").section(&format!(
        "[telemetry]\notlp_endpoint = \"{collector}\"\nservice_name = \"proxima-test\"\n"
    ))
}

#[tokio::test]
async fn a_call_joins_the_callers_trace_with_a_span_per_attempt_passed_upstream() {
    let (collector, url) = Collector::start(false).await;
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(traced_conf(&mock, &url)).await;

    // The first attempt fails, the retry answers.
    mock.enqueue(Reply::error(500, "first attempt fails"));
    let answer = gw
        .send(
            gw.client()
                .post(gw.url("/v1/chat/completions"))
                .header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"))
                .header("content-type", "application/json")
                .body(chat_body("chat", "trace me").to_string()),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let (trace, server_span, flags) = split_traceparent(answer.header("traceparent").unwrap());
    assert_eq!((trace.as_str(), flags.as_str()), (CALLER_TRACE, "01"));
    assert_ne!(server_span, CALLER_SPAN);

    // Every upstream request carried the trace, each attempt its own span.
    let sent: Vec<(String, String, String)> = mock
        .received()
        .iter()
        .map(|r| split_traceparent(r.header("traceparent").expect("no traceparent upstream")))
        .collect();
    assert_eq!(sent.len(), 2);
    assert!(sent.iter().all(|(t, _, f)| t == CALLER_TRACE && f == "01"));
    assert_ne!(sent[0].1, sent[1].1);

    let spans = collector.wait_for(CALLER_TRACE, 3).await;
    let server = spans.iter().find(|s| s.kind == 2).expect("no server span");
    assert_eq!(hex(&server.span_id), server_span);
    assert_eq!(hex(&server.parent_span_id), CALLER_SPAN);
    assert_eq!(server.name, "chat chat");
    assert_eq!(server.service_name, Attr::Str("proxima-test".into()));
    assert_eq!(server.scope_name, "proxima");
    // Sampled, with a remote parent.
    assert_eq!(server.flags, 0x301);
    assert!(server.start > 0 && server.end >= server.start);
    assert_eq!(server.str("gen_ai.operation.name"), "chat");
    assert_eq!(server.str("gen_ai.request.model"), "chat");
    assert_eq!(server.str("gen_ai.provider.name"), "up");
    assert_eq!(server.str("gen_ai.response.model"), "gpt-upstream");
    let usage = answer.json()["usage"].clone();
    assert_eq!(
        server.int("gen_ai.usage.input_tokens"),
        usage["prompt_tokens"].as_i64().unwrap()
    );
    assert_eq!(
        server.int("gen_ai.usage.output_tokens"),
        usage["completion_tokens"].as_i64().unwrap()
    );
    assert_eq!(
        server.attr("gen_ai.response.finish_reasons"),
        &Attr::List(vec![Attr::Str("stop".into())])
    );
    assert_eq!(server.int("http.response.status_code"), 200);
    assert_eq!(server.int("proxima.attempts"), 2);
    assert_eq!(server.attr("proxima.stream"), &Attr::Bool(false));
    assert_eq!(
        server.str("proxima.request_id"),
        answer.header("x-request-id").unwrap()
    );
    assert!(!server.attributes.contains_key("error.type"));
    assert_eq!(server.status_code, 0);

    // The attempts: children of the call's span, with the ids the upstream received.
    let mut attempts: Vec<&Span> = spans.iter().filter(|s| s.kind == 3).collect();
    attempts.sort_by_key(|s| s.start);
    assert_eq!(attempts.len(), 2);
    for (attempt, (_, upstream_span, _)) in attempts.iter().zip(&sent) {
        assert_eq!(hex(&attempt.parent_span_id), server_span);
        assert_eq!(&hex(&attempt.span_id), upstream_span);
        assert_eq!(attempt.name, "chat gpt-upstream");
        assert_eq!(attempt.flags, 0x101);
        assert_eq!(attempt.str("gen_ai.request.model"), "gpt-upstream");
        assert_eq!(attempt.str("gen_ai.provider.name"), "up");
        assert!(attempt.start >= server.start && attempt.end <= server.end);
    }
    assert_eq!(attempts[0].str("error.type"), "upstream_error");
    assert_eq!(attempts[0].status_code, 2);
    assert_eq!(attempts[1].int("http.response.status_code"), 200);
    assert_eq!(attempts[1].status_code, 0);
}

#[tokio::test]
async fn streams_failures_bad_and_unsampled_parents_are_traced_as_they_should() {
    let (collector, url) = Collector::start(false).await;
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(traced_conf(&mock, &url)).await;
    let traced = |traceparent: &str| {
        gw.client()
            .post(gw.url("/v1/chat/completions"))
            .header("traceparent", traceparent)
    };
    let send = |traceparent: &str, body: serde_json::Value| {
        traced(traceparent)
            .header("content-type", "application/json")
            .body(body.to_string())
    };

    // A malformed traceparent is ignored: a new trace starts, its span a root.
    let answer = gw
        .send(send("00-not-a-trace-01", chat_body("chat", "fresh")))
        .await;
    assert_eq!(answer.status, 200);
    let (trace, span, flags) = split_traceparent(answer.header("traceparent").unwrap());
    assert_eq!(flags, "01");
    let spans = collector.wait_for(&trace, 2).await;
    let root = spans.iter().find(|s| s.kind == 2).unwrap();
    assert_eq!(hex(&root.span_id), span);
    assert!(root.parent_span_id.is_empty());
    assert_eq!(root.flags, 0x101);

    // A stream: its span ends with the stream, with the finish reason.
    let mut body = chat_body("chat", "stream me");
    body["stream"] = json!(true);
    let mut sse = gw
        .stream_with(
            traced("00-11111111111111111111111111111111-2222222222222222-01"),
            body,
        )
        .await;
    assert_eq!(sse.status, 200);
    sse.data().await;
    let spans = collector
        .wait_for("11111111111111111111111111111111", 2)
        .await;
    let server = spans.iter().find(|s| s.kind == 2).unwrap();
    assert_eq!(server.attr("proxima.stream"), &Attr::Bool(true));
    assert_eq!(
        server.attr("gen_ai.response.finish_reasons"),
        &Attr::List(vec![Attr::Str("stop".into())])
    );

    // A call that fails upstream: the span says so (502, an error of the gateway's side);
    // an unknown model is the caller's error (404), the span status stays unset.
    mock.enqueue(Reply::error(500, "down"));
    mock.enqueue(Reply::error(500, "still down"));
    for (trace, model, status, code, spans, span_status) in [
        (
            "33333333333333333333333333333333",
            "chat",
            502,
            "upstream_error",
            3,
            2,
        ),
        (
            "55555555555555555555555555555555",
            "nope",
            404,
            "model_not_found",
            1,
            0,
        ),
    ] {
        let traceparent = format!("00-{trace}-6666666666666666-01");
        let answer = gw
            .send(
                traced(&traceparent)
                    .header("content-type", "application/json")
                    .body(chat_body(model, "fails").to_string()),
            )
            .await;
        answer.assert_error(status, code);
        let spans = collector.wait_for(trace, spans).await;
        let server = spans.iter().find(|s| s.kind == 2).unwrap();
        assert_eq!(server.str("error.type"), code);
        assert_eq!(server.int("http.response.status_code"), i64::from(status));
        assert_eq!(server.status_code, span_status);
    }

    // A caller that does not sample its trace: passed on unsampled, nothing exported.
    mock.clear();
    let answer = gw
        .send(send(
            "00-77777777777777777777777777777777-8888888888888888-00",
            chat_body("chat", "quiet"),
        ))
        .await;
    assert_eq!(answer.status, 200);
    assert!(answer.header("traceparent").unwrap().ends_with("-00"));
    let upstream = mock.received()[0].header("traceparent").unwrap().to_owned();
    let (trace, _, flags) = split_traceparent(&upstream);
    assert_eq!(
        (trace.as_str(), flags.as_str()),
        ("77777777777777777777777777777777", "00")
    );
    gw.shutdown().await;
    assert!(collector
        .spans()
        .iter()
        .all(|s| hex(&s.trace_id) != "77777777777777777777777777777777"));
}

#[tokio::test]
async fn spans_queued_at_shutdown_are_exported_before_it_ends() {
    let (collector, url) = Collector::start(false).await;
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(traced_conf(&mock, &url)).await;
    let answer = gw.chat_ok(chat_body("chat", "last words")).await;
    let (trace, _, _) = split_traceparent(answer.header("traceparent").unwrap());
    // Well within the exporter's batch delay: only the shutdown flush can have sent them.
    gw.shutdown().await;
    let spans: Vec<Span> = collector
        .spans()
        .into_iter()
        .filter(|s| hex(&s.trace_id) == trace)
        .collect();
    assert_eq!(spans.len(), 2, "{spans:#?}");
}

#[tokio::test]
async fn a_collector_that_is_down_or_hangs_neither_slows_nor_fails_calls() {
    let mock = MockUpstream::start().await.unwrap();
    // Nothing listens on this port.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let (_hanging, hanging) = Collector::start(true).await;
    for (collector, refused) in [(closed, true), (hanging, false)] {
        let gw = Gateway::start(traced_conf(&mock, &collector)).await;
        let started = Instant::now();
        for i in 0..20 {
            let call = Instant::now();
            gw.chat_ok(chat_body("chat", &format!("call {i}"))).await;
            assert!(
                call.elapsed() < Duration::from_secs(1),
                "a call waited on the collector"
            );
        }
        assert!(started.elapsed() < Duration::from_secs(5));
        if refused {
            // The spans the collector did not take are counted as dropped, after the retries.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let m = scrape(&gw).await;
                let dropped = m.value(
                    "proxima_trace_spans_dropped_total",
                    &[("reason", "export_failed")],
                );
                if dropped == 40.0 {
                    assert_eq!(m.value("proxima_trace_spans_exported_total", &[]), 0.0);
                    break;
                }
                assert!(Instant::now() < deadline, "dropped {dropped}, not 40");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
