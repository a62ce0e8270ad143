//! Prometheus metrics, written by hand in the text exposition format (`GET /metrics`).
//!
//! Names follow OpenTelemetry's GenAI semantic conventions where they exist (the histograms
//! `gen_ai_*`, labelled with the conventions' attribute names) and are `proxima_*` for the
//! gateway's own (labelled `model`, `provider`, `status`, `code`). Every label value comes
//! from the config (public model and provider names) or a fixed vocabulary (statuses, error
//! codes, cache verdicts): never a request id, a key or anything a caller typed. A call whose
//! model does not exist is counted under `model=""`.
//!
//! The hot path only touches atomics. Series are made when a config is loaded: each public
//! model gets its [`ModelSeries`], the series of every provider that can answer for it
//! (fallbacks included), and each target its [`AttemptSeries`]; a call or an attempt finds
//! them on the router's model and target, without a lock or an allocation. Series outlive
//! reloads (the registry hands the same one to the rebuilt router), so counters never go
//! back. Gauges (circuit state, queue depths) are read when scraped.

use std::collections::BTreeMap;
use std::fmt::{Display, Write};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use super::Operation;
use crate::canonical::Usage;
use crate::pricing::Nanos;

/// Histogram bucket bounds in the unit values are recorded in (nanoseconds, tokens), and how
/// many of that unit make one of the exposed unit (seconds, tokens).
pub struct Buckets {
    bounds: &'static [u64],
    per_unit: f64,
}

const MS: u64 = 1_000_000;

/// OpenTelemetry's advice for `gen_ai.server.request.duration` and
/// `gen_ai.client.operation.duration`: 10 ms to 82 s, doubling.
static DURATION: Buckets = Buckets {
    bounds: &[
        10 * MS,
        20 * MS,
        40 * MS,
        80 * MS,
        160 * MS,
        320 * MS,
        640 * MS,
        1280 * MS,
        2560 * MS,
        5120 * MS,
        10240 * MS,
        20480 * MS,
        40960 * MS,
        81920 * MS,
    ],
    per_unit: 1e9,
};

/// OpenTelemetry's advice for `gen_ai.server.time_to_first_token`: 1 ms to 10 s.
static FIRST_TOKEN: Buckets = Buckets {
    bounds: &[
        MS,
        5 * MS,
        10 * MS,
        20 * MS,
        40 * MS,
        60 * MS,
        80 * MS,
        100 * MS,
        250 * MS,
        500 * MS,
        750 * MS,
        1000 * MS,
        2500 * MS,
        5000 * MS,
        7500 * MS,
        10000 * MS,
    ],
    per_unit: 1e9,
};

/// OpenTelemetry's advice for `gen_ai.client.token.usage`: powers of 4 up to 67M.
static TOKENS: Buckets = Buckets {
    bounds: &[
        1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262_144, 1_048_576, 4_194_304, 16_777_216,
        67_108_864,
    ],
    per_unit: 1.0,
};

/// A histogram of lock-free counters: one per bucket (not cumulative; summed when scraped)
/// and the sum of the values.
pub struct Histogram {
    buckets: &'static Buckets,
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
}

impl Histogram {
    fn new(buckets: &'static Buckets) -> Histogram {
        Histogram {
            buckets,
            counts: (0..=buckets.bounds.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            sum: AtomicU64::new(0),
        }
    }

    fn observe(&self, value: u64) {
        let bucket = self.buckets.bounds.partition_point(|&bound| bound < value);
        self.counts[bucket].fetch_add(1, Relaxed);
        self.sum.fetch_add(value, Relaxed);
    }

    fn observe_duration(&self, duration: Duration) {
        self.observe(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX));
    }

    fn is_empty(&self) -> bool {
        self.counts.iter().all(|c| c.load(Relaxed) == 0)
    }

    /// `NAME_bucket` lines (cumulative, ending with `+Inf`), `NAME_sum` and `NAME_count`,
    /// all from one reading of the counters so that `+Inf` equals the count.
    fn write(&self, out: &mut String, name: &str, labels: &[(&str, &str)]) {
        let mut cumulative = 0;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Relaxed);
            let le = match self.buckets.bounds.get(i) {
                Some(&bound) => number(bound as f64 / self.buckets.per_unit),
                None => "+Inf".to_owned(),
            };
            sample(out, name, "_bucket", labels, Some(("le", &le)), cumulative);
        }
        let sum = self.sum.load(Relaxed) as f64 / self.buckets.per_unit;
        sample(out, name, "_sum", labels, None, number(sum));
        sample(out, name, "_count", labels, None, cumulative);
    }
}

/// Counters keyed by a small set of values met at run time (status and error code pairs),
/// without a lock: a key takes the first free slot once and keeps it. Past `N` distinct keys
/// the rest are counted together as `other`.
struct Slots<K: 'static, const N: usize> {
    keys: [OnceLock<K>; N],
    counts: [AtomicU64; N],
    overflow: AtomicU64,
}

impl<K: Copy + PartialEq, const N: usize> Slots<K, N> {
    fn new() -> Self {
        Slots {
            keys: [const { OnceLock::new() }; N],
            counts: [const { AtomicU64::new(0) }; N],
            overflow: AtomicU64::new(0),
        }
    }

    fn add(&self, key: K) {
        for (slot, count) in self.keys.iter().zip(&self.counts) {
            let taken = match slot.get() {
                Some(taken) => *taken,
                None => match slot.set(key) {
                    Ok(()) => key,
                    // Another thread took it first, maybe for another key.
                    Err(_) => match slot.get() {
                        Some(taken) => *taken,
                        None => continue,
                    },
                },
            };
            if taken == key {
                count.fetch_add(1, Relaxed);
                return;
            }
        }
        self.overflow.fetch_add(1, Relaxed);
    }

    fn each(&self, mut f: impl FnMut(Option<K>, u64)) {
        for (slot, count) in self.keys.iter().zip(&self.counts) {
            if let Some(key) = slot.get() {
                f(Some(*key), count.load(Relaxed));
            }
        }
        let overflow = self.overflow.load(Relaxed);
        if overflow > 0 {
            f(None, overflow);
        }
    }
}

/// The response cache's verdicts, as the ledger and `x-proxima-cache` name them.
const CACHE_RESULTS: [&str; 4] = ["hit", "semantic-hit", "miss", "bypass"];
/// The gateway's own refusals, by error code.
const REFUSALS: [&str; 2] = ["rate_limit_exceeded", "budget_exceeded"];

/// Histograms of one operation.
struct CallHistograms {
    duration: Histogram,
    first_token: Histogram,
    input_tokens: Histogram,
    output_tokens: Histogram,
}

/// Calls of one public model answered by (or refused before reaching) one provider.
pub struct CallSeries {
    model: Arc<str>,
    /// Empty for calls that never reached a provider.
    provider: Arc<str>,
    outcomes: Slots<(u16, &'static str), 24>,
    operations: [CallHistograms; Operation::COUNT],
    cost_nanos: AtomicU64,
    cache: [AtomicU64; CACHE_RESULTS.len()],
    refusals: [AtomicU64; REFUSALS.len()],
}

/// How a call ended, as its metrics see it.
pub struct CallOutcome<'a> {
    pub operation: Operation,
    pub status: u16,
    pub code: Option<&'static str>,
    pub latency: Duration,
    pub first_token: Option<Duration>,
    /// Tokens the upstream used; `None` for a cache hit or when unknown.
    pub usage: Option<&'a Usage>,
    pub cost: Nanos,
    pub cache: Option<&'a str>,
    pub attempts: u32,
}

impl CallSeries {
    fn new(model: Arc<str>, provider: Arc<str>) -> CallSeries {
        let histograms = || CallHistograms {
            duration: Histogram::new(&DURATION),
            first_token: Histogram::new(&FIRST_TOKEN),
            input_tokens: Histogram::new(&TOKENS),
            output_tokens: Histogram::new(&TOKENS),
        };
        CallSeries {
            model,
            provider,
            outcomes: Slots::new(),
            operations: [histograms(), histograms()],
            cost_nanos: AtomicU64::new(0),
            cache: [const { AtomicU64::new(0) }; CACHE_RESULTS.len()],
            refusals: [const { AtomicU64::new(0) }; REFUSALS.len()],
        }
    }

    /// Counts one call. Durations are of answered calls (status below 400); failures are
    /// counted by status and code.
    pub fn record(&self, call: &CallOutcome<'_>) {
        self.outcomes.add((call.status, call.code.unwrap_or("")));
        let histograms = &self.operations[call.operation as usize];
        if call.status < 400 {
            histograms.duration.observe_duration(call.latency);
            if let Some(first) = call.first_token {
                histograms.first_token.observe_duration(first);
            }
        }
        if let Some(usage) = call.usage {
            histograms.input_tokens.observe(usage.input_tokens);
            histograms.output_tokens.observe(usage.output_tokens);
        }
        if call.cost > 0 {
            self.cost_nanos
                .fetch_add(u64::try_from(call.cost).unwrap_or(0), Relaxed);
        }
        if let Some(i) = call
            .cache
            .and_then(|verdict| CACHE_RESULTS.iter().position(|v| *v == verdict))
        {
            self.cache[i].fetch_add(1, Relaxed);
        }
        // The gateway's limits refuse before any attempt; an upstream's 429 comes after one.
        if call.attempts == 0 {
            if let Some(i) = call
                .code
                .and_then(|code| REFUSALS.iter().position(|r| *r == code))
            {
                self.refusals[i].fetch_add(1, Relaxed);
            }
        }
    }
}

/// The call series of one public model by provider, made when the config is loaded.
pub struct ModelSeries {
    name: Arc<str>,
    /// The providers of the model's targets and fallbacks' targets, and `""`.
    by_provider: Vec<(Arc<str>, Arc<CallSeries>)>,
}

impl ModelSeries {
    /// The series for calls answered by `provider` (`None`: never routed).
    pub fn calls(&self, provider: Option<&str>, metrics: &Metrics) -> Arc<CallSeries> {
        let provider = provider.unwrap_or("");
        match self.by_provider.iter().find(|(p, _)| **p == *provider) {
            Some((_, series)) => series.clone(),
            // A provider the config did not link to this model (a wildcard fallback, a cached
            // answer from before a reload): rare, so a lock is fine.
            None => metrics.call_series(&self.name, provider),
        }
    }
}

/// Upstream attempts on the targets of one public model at one provider.
pub struct AttemptSeries {
    model: Arc<str>,
    provider: Arc<str>,
    attempts: AtomicU64,
    errors: Slots<&'static str, 16>,
    /// Durations of successful attempts (for a stream: until its first chunk).
    durations: [Histogram; Operation::COUNT],
}

impl AttemptSeries {
    pub fn record(&self, operation: Operation, elapsed: Duration, error: Option<&'static str>) {
        self.attempts.fetch_add(1, Relaxed);
        match error {
            None => self.durations[operation as usize].observe_duration(elapsed),
            Some(code) => self.errors.add(code),
        }
    }
}

/// What is read when scraped rather than counted.
pub struct Gauges {
    /// Circuit state per target: public model, provider, upstream model, state.
    pub circuits: BTreeMap<(Arc<str>, Arc<str>, String), CircuitState>,
    pub ledger_queued: usize,
    pub ledger_spilled: usize,
    pub export: Option<ExportGauges>,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CircuitState {
    Closed = 0,
    HalfOpen = 1,
    Open = 2,
}

/// The trace exporter's counters.
pub struct ExportGauges {
    pub exported: u64,
    pub dropped_queue_full: u64,
    pub dropped_export_failed: u64,
    pub queued: usize,
}

/// Series by (public model, provider).
type BySeries<S> = BTreeMap<(Arc<str>, Arc<str>), Arc<S>>;

/// Every series.
pub struct Metrics {
    calls: Mutex<BySeries<CallSeries>>,
    attempts: Mutex<BySeries<AttemptSeries>>,
    /// Calls whose model does not exist, or which were refused before naming one.
    unresolved: Arc<ModelSeries>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let metrics = Metrics {
            calls: Mutex::default(),
            attempts: Mutex::default(),
            unresolved: Arc::new(ModelSeries {
                name: Arc::from(""),
                by_provider: Vec::new(),
            }),
        };
        Metrics {
            unresolved: metrics.model_series("", &[]),
            ..metrics
        }
    }

    /// The series of calls whose model was never resolved.
    pub fn unresolved(&self) -> &Arc<ModelSeries> {
        &self.unresolved
    }

    /// The series of public model `model`, for calls answered by `providers` or by none.
    pub fn model_series(&self, model: &str, providers: &[&str]) -> Arc<ModelSeries> {
        let name: Arc<str> = Arc::from(model);
        let mut by_provider: Vec<(Arc<str>, Arc<CallSeries>)> = Vec::new();
        for provider in std::iter::once("").chain(providers.iter().copied()) {
            if !by_provider.iter().any(|(p, _)| **p == *provider) {
                let series = self.call_series(&name, provider);
                by_provider.push((series.provider.clone(), series));
            }
        }
        Arc::new(ModelSeries { name, by_provider })
    }

    fn call_series(&self, model: &str, provider: &str) -> Arc<CallSeries> {
        lock(&self.calls)
            .entry((Arc::from(model), Arc::from(provider)))
            .or_insert_with_key(|(m, p)| Arc::new(CallSeries::new(m.clone(), p.clone())))
            .clone()
    }

    /// The attempt series of the targets of `model` at `provider`.
    pub fn attempt_series(&self, model: &str, provider: &str) -> Arc<AttemptSeries> {
        lock(&self.attempts)
            .entry((Arc::from(model), Arc::from(provider)))
            .or_insert_with_key(|(m, p)| {
                Arc::new(AttemptSeries {
                    model: m.clone(),
                    provider: p.clone(),
                    attempts: AtomicU64::new(0),
                    errors: Slots::new(),
                    durations: [Histogram::new(&DURATION), Histogram::new(&DURATION)],
                })
            })
            .clone()
    }

    /// The exposition: every family with its `HELP` and `TYPE`, series in a stable order.
    pub fn render(&self, gauges: &Gauges) -> String {
        let calls: Vec<Arc<CallSeries>> = lock(&self.calls).values().cloned().collect();
        let attempts: Vec<Arc<AttemptSeries>> = lock(&self.attempts).values().cloned().collect();
        let mut out = String::with_capacity(4096 + 2048 * calls.len());
        write_calls(&mut out, &calls);
        write_attempts(&mut out, &attempts);
        write_gauges(&mut out, gauges);
        out
    }
}

/// A metric family: its `HELP` and `TYPE` lines, then a sample per label set.
fn family<'a, L, V>(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, V)>,
) where
    L: AsRef<[(&'a str, &'a str)]>,
    V: Display,
{
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        sample(out, name, "", labels.as_ref(), None, value);
    }
}

/// A histogram family: its `HELP` and `TYPE` lines, then the non-empty histograms.
fn histograms<'a, L: AsRef<[(&'a str, &'a str)]>>(
    out: &mut String,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, &'a Histogram)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (labels, histogram) in series {
        if !histogram.is_empty() {
            histogram.write(out, name, labels.as_ref());
        }
    }
}

fn write_calls(out: &mut String, calls: &[Arc<CallSeries>]) {
    let mut outcomes = Vec::new();
    for s in calls {
        s.outcomes.each(|key, count| {
            let (status, code) = match key {
                Some((status, code)) => (status.to_string(), code),
                None => ("other".to_owned(), "other"),
            };
            outcomes.push((&*s.model, &*s.provider, status, code, count));
        });
    }
    family(
        out,
        "proxima_requests_total",
        "counter",
        "Calls by public model, provider that answered (empty: none), HTTP status and error code (empty: none).",
        outcomes.iter().map(|(model, provider, status, code, count)| {
            let labels = [
                ("model", *model),
                ("provider", *provider),
                ("status", status.as_str()),
                ("code", *code),
            ];
            (labels, count)
        }),
    );
    let by_operation = |pick: fn(&CallHistograms) -> &Histogram| {
        calls.iter().flat_map(move |s| {
            Operation::ALL.map(|operation| {
                let labels = gen_ai_labels(operation, &s.model, &s.provider);
                (labels, pick(&s.operations[operation as usize]))
            })
        })
    };
    histograms(
        out,
        "gen_ai_server_request_duration_seconds",
        "Duration of answered calls, to the last byte of the answer.",
        by_operation(|h| &h.duration),
    );
    histograms(
        out,
        "gen_ai_server_time_to_first_token_seconds",
        "Time to the first chunk of answered streams.",
        by_operation(|h| &h.first_token),
    );
    let tokens = |kind: &'static str, pick: fn(&CallHistograms) -> &Histogram| {
        by_operation(pick)
            .map(move |([a, b, c], histogram)| ([a, b, c, ("gen_ai_token_type", kind)], histogram))
    };
    histograms(
        out,
        "gen_ai_client_token_usage",
        "Tokens used per call, by gen_ai_token_type (input, output).",
        tokens("input", |h| &h.input_tokens).chain(tokens("output", |h| &h.output_tokens)),
    );
    family(
        out,
        "proxima_cost_usd_total",
        "counter",
        "What calls cost at the answering target's price, in US dollars.",
        calls.iter().filter_map(|s| {
            let nanos = s.cost_nanos.load(Relaxed);
            let labels = [("model", &*s.model), ("provider", &*s.provider)];
            (nanos > 0).then(|| (labels, number(nanos as f64 / 1e9)))
        }),
    );
    // Per model: summed over the providers that answered.
    let mut cache: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    let mut refusals: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for s in calls {
        for (verdict, count) in CACHE_RESULTS.iter().zip(&s.cache) {
            add_nonzero(&mut cache, (&s.model, verdict), count);
        }
        for (code, count) in REFUSALS.iter().zip(&s.refusals) {
            add_nonzero(&mut refusals, (&s.model, code), count);
        }
    }
    family(
        out,
        "proxima_cache_results_total",
        "counter",
        "Response cache verdicts by public model: hit, semantic-hit, miss, bypass.",
        cache
            .into_iter()
            .map(|((model, result), count)| ([("model", model), ("result", result)], count)),
    );
    family(
        out,
        "proxima_limit_refusals_total",
        "counter",
        "Calls refused by the gateway's rate limits and budgets (429), by public model and code.",
        refusals
            .into_iter()
            .map(|((model, code), count)| ([("model", model), ("code", code)], count)),
    );
}

fn add_nonzero<'a>(
    map: &mut BTreeMap<(&'a str, &'a str), u64>,
    key: (&'a str, &'a str),
    count: &AtomicU64,
) {
    let count = count.load(Relaxed);
    if count > 0 {
        *map.entry(key).or_default() += count;
    }
}

fn write_attempts(out: &mut String, attempts: &[Arc<AttemptSeries>]) {
    family(
        out,
        "proxima_upstream_attempts_total",
        "counter",
        "Upstream attempts (retries and fallbacks included) by public model and provider.",
        attempts.iter().filter_map(|s| {
            let count = s.attempts.load(Relaxed);
            let labels = [("model", &*s.model), ("provider", &*s.provider)];
            (count > 0).then_some((labels, count))
        }),
    );
    let mut errors = Vec::new();
    for s in attempts {
        s.errors.each(|code, count| {
            let labels = [
                ("model", &*s.model),
                ("provider", &*s.provider),
                ("code", code.unwrap_or("other")),
            ];
            errors.push((labels, count));
        });
    }
    family(
        out,
        "proxima_upstream_errors_total",
        "counter",
        "Failed upstream attempts by public model, provider and error code.",
        errors,
    );
    histograms(
        out,
        "gen_ai_client_operation_duration_seconds",
        "Duration of successful upstream attempts (a stream: to its first chunk).",
        attempts.iter().flat_map(|s| {
            Operation::ALL.map(|operation| {
                let labels = gen_ai_labels(operation, &s.model, &s.provider);
                (labels, &s.durations[operation as usize])
            })
        }),
    );
}

fn write_gauges(out: &mut String, gauges: &Gauges) {
    const NONE: [(&str, &str); 0] = [];
    family(
        out,
        "proxima_circuit_state",
        "gauge",
        "Circuit breaker of each target: 0 closed, 1 half-open (probing), 2 open.",
        gauges
            .circuits
            .iter()
            .map(|((model, provider, upstream), state)| {
                let labels = [
                    ("model", &**model),
                    ("provider", &**provider),
                    ("upstream_model", upstream.as_str()),
                ];
                (labels, *state as u8)
            }),
    );
    family(
        out,
        "proxima_ledger_queue_depth",
        "gauge",
        "Usage records waiting to be written to the database.",
        [(NONE, gauges.ledger_queued)],
    );
    family(
        out,
        "proxima_ledger_spilled_records",
        "gauge",
        "Usage records in the spill file, waiting for the database.",
        [(NONE, gauges.ledger_spilled)],
    );
    if let Some(export) = &gauges.export {
        family(
            out,
            "proxima_trace_spans_exported_total",
            "counter",
            "Spans the OTLP collector accepted.",
            [(NONE, export.exported)],
        );
        family(
            out,
            "proxima_trace_spans_dropped_total",
            "counter",
            "Spans dropped: the export queue was full (queue_full) or the collector failed (export_failed).",
            [
                ([("reason", "queue_full")], export.dropped_queue_full),
                ([("reason", "export_failed")], export.dropped_export_failed),
            ],
        );
        family(
            out,
            "proxima_trace_queue_depth",
            "gauge",
            "Spans waiting for export.",
            [(NONE, export.queued)],
        );
    }
}

fn gen_ai_labels<'a>(
    operation: Operation,
    model: &'a str,
    provider: &'a str,
) -> [(&'a str, &'a str); 3] {
    [
        ("gen_ai_operation_name", operation.as_str()),
        ("gen_ai_request_model", model),
        ("gen_ai_provider_name", provider),
    ]
}

/// One sample line: `NAME{labels} value`, with label values escaped as the format asks.
fn sample(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &[(&str, &str)],
    extra: Option<(&str, &str)>,
    value: impl Display,
) {
    out.push_str(name);
    out.push_str(suffix);
    let mut all = labels.iter().copied().chain(extra).peekable();
    if all.peek().is_some() {
        out.push('{');
        for (i, (key, value)) in all.enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(key);
            out.push_str("=\"");
            for c in value.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '"' => out.push_str("\\\""),
                    '\n' => out.push_str("\\n"),
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// A float as the format reads it (Rust's shortest form, never an exponent).
fn number(x: f64) -> String {
    format!("{x}")
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Counters behind a poisoned lock are still consistent enough to count on.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn gauges() -> Gauges {
        Gauges {
            circuits: BTreeMap::new(),
            ledger_queued: 3,
            ledger_spilled: 0,
            export: None,
        }
    }

    #[test]
    fn histogram_buckets_are_cumulative_with_le_bounds() {
        let h = Histogram::new(&DURATION);
        h.observe_duration(Duration::from_millis(5));
        h.observe_duration(Duration::from_millis(10));
        h.observe_duration(Duration::from_millis(15));
        h.observe_duration(Duration::from_secs(100));
        let mut out = String::new();
        h.write(&mut out, "x", &[("a", "b")]);
        assert!(out.contains("x_bucket{a=\"b\",le=\"0.01\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"0.02\"} 3\n"));
        assert!(out.contains("x_bucket{a=\"b\",le=\"81.92\"} 3\n"));
        assert!(out.contains("x_bucket{a=\"b\",le=\"+Inf\"} 4\n"));
        assert!(out.contains("x_sum{a=\"b\"} 100.03\n"));
        assert!(out.contains("x_count{a=\"b\"} 4\n"));
    }

    #[test]
    fn slots_keep_keys_apart_and_count_the_overflow() {
        let slots: Slots<u16, 2> = Slots::new();
        for key in [200, 200, 404, 500, 502] {
            slots.add(key);
        }
        let mut seen = Vec::new();
        slots.each(|k, n| seen.push((k, n)));
        assert_eq!(seen, vec![(Some(200), 2), (Some(404), 1), (None, 2)]);
    }

    #[test]
    fn series_survive_being_asked_for_again_and_labels_are_escaped() {
        let metrics = Metrics::new();
        let first = metrics.model_series("m\"x", &["p"]);
        let again = metrics.model_series("m\"x", &["p", "q"]);
        let call = CallOutcome {
            operation: Operation::Chat,
            status: 200,
            code: None,
            latency: Duration::from_millis(30),
            first_token: None,
            usage: None,
            cost: 1_500_000_000,
            cache: Some("miss"),
            attempts: 1,
        };
        first.calls(Some("p"), &metrics).record(&call);
        again.calls(Some("p"), &metrics).record(&call);
        let text = metrics.render(&gauges());
        assert!(
            text.contains("proxima_requests_total{model=\"m\\\"x\",provider=\"p\",status=\"200\",code=\"\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("proxima_cost_usd_total{model=\"m\\\"x\",provider=\"p\"} 3\n"));
        assert!(text.contains("proxima_cache_results_total{model=\"m\\\"x\",result=\"miss\"} 2\n"));
        assert!(text.contains("proxima_ledger_queue_depth 3\n"));
        // Providers with no calls print nothing.
        assert!(!text.contains("provider=\"q\""));
    }
}
