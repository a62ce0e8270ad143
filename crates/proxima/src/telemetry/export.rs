//! The span exporter: finished spans go into a bounded queue on the request path (never
//! waiting: when it is full the span is dropped and counted), and a background task sends them
//! in batches as OTLP/HTTP protobuf to `{otlp_endpoint}/v1/traces`.
//!
//! A batch leaves when it holds [`BATCH`] spans or [`BATCH_DELAY`] after its first span. A
//! collector that is down, slow or refusing gets a short retry ([`RETRY_WAITS`], each try
//! bounded by [`EXPORT_TIMEOUT`]); then the batch is dropped and counted, and while it retries
//! the queue fills and new spans are dropped rather than held. At shutdown what is queued is
//! sent once more.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use http::header::{CONTENT_TYPE, USER_AGENT};
use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::metrics::ExportGauges;
use super::otlp::{self, Resource};
use super::trace::SpanData;
use crate::config::TelemetryConfig;
use crate::error::{Error, Result};
use crate::http_client::{HttpClient, USER_AGENT_VALUE};

/// Spans waiting for export, at most; more are dropped.
const QUEUE: usize = 8192;
/// Spans per export request, at most.
const BATCH: usize = 512;
/// Longest a span waits for its batch to fill.
const BATCH_DELAY: Duration = Duration::from_secs(1);
/// Longest one export request may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(3);
/// Waits before the retries of a failed export.
const RETRY_WAITS: [Duration; 2] = [Duration::from_millis(200), Duration::from_millis(800)];

enum Message {
    Span(SpanData),
    /// Export everything queued before this, then answer.
    Flush(oneshot::Sender<()>),
}

pub struct Exporter {
    queue: mpsc::Sender<Message>,
    stats: Arc<Stats>,
}

#[derive(Default)]
struct Stats {
    exported: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_export_failed: AtomicU64,
}

impl Exporter {
    /// Starts the export task for `config.otlp_endpoint`.
    pub fn start(config: &TelemetryConfig, http: Arc<HttpClient>) -> Result<Option<Exporter>> {
        let Some(endpoint) = &config.otlp_endpoint else {
            return Ok(None);
        };
        let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        let uri: Uri = url.parse().map_err(|e| {
            Error::internal(format!(
                "telemetry.otlp_endpoint `{endpoint}` is not a URL: {e}"
            ))
        })?;
        let mut headers = HeaderMap::new();
        headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        for (name, value) in &config.otlp_headers {
            // Validation has refused invalid names and values.
            if let (Ok(name), Ok(mut value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value.expose()),
            ) {
                value.set_sensitive(true);
                headers.insert(name, value);
            }
        }
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-protobuf"),
        );
        let (queue, receiver) = mpsc::channel(QUEUE);
        let stats = Arc::new(Stats::default());
        let sender = Sender {
            http,
            uri,
            headers,
            resource: Resource {
                service_name: config.service_name.clone(),
            },
            stats: stats.clone(),
            failing: false,
        };
        tokio::spawn(sender.run(receiver));
        Ok(Some(Exporter { queue, stats }))
    }

    /// Queues a finished span; drops it when the queue is full.
    pub fn push(&self, span: SpanData) {
        if self.queue.try_send(Message::Span(span)).is_err() {
            self.stats.dropped_queue_full.fetch_add(1, Relaxed);
        }
    }

    pub fn gauges(&self) -> ExportGauges {
        ExportGauges {
            exported: self.stats.exported.load(Relaxed),
            dropped_queue_full: self.stats.dropped_queue_full.load(Relaxed),
            dropped_export_failed: self.stats.dropped_export_failed.load(Relaxed),
            queued: QUEUE - self.queue.capacity(),
        }
    }

    /// Sends what is queued, waiting at most `deadline`.
    pub async fn flush(&self, deadline: Duration) {
        let (done, flushed) = oneshot::channel();
        let flush = async {
            if self.queue.send(Message::Flush(done)).await.is_ok() {
                let _ = flushed.await;
            }
        };
        if tokio::time::timeout(deadline, flush).await.is_err() {
            tracing::warn!("spans still queued at shutdown were not all exported in time");
        }
    }
}

/// The export task's side.
struct Sender {
    http: Arc<HttpClient>,
    uri: Uri,
    headers: HeaderMap,
    resource: Resource,
    stats: Arc<Stats>,
    /// The last export failed: the next failure is not logged again at warn level.
    failing: bool,
}

impl Sender {
    async fn run(mut self, mut receiver: mpsc::Receiver<Message>) {
        let mut batch: Vec<SpanData> = Vec::with_capacity(BATCH);
        while let Some(first) = receiver.recv().await {
            let mut flush = None;
            match first {
                Message::Span(span) => batch.push(span),
                Message::Flush(done) => flush = Some(done),
            }
            let deadline = Instant::now() + BATCH_DELAY;
            while flush.is_none() && batch.len() < BATCH {
                match tokio::time::timeout_at(deadline, receiver.recv()).await {
                    Ok(Some(Message::Span(span))) => batch.push(span),
                    Ok(Some(Message::Flush(done))) => flush = Some(done),
                    Ok(None) | Err(_) => break,
                }
            }
            for chunk in batch.chunks(BATCH) {
                self.export(chunk).await;
            }
            batch.clear();
            if let Some(done) = flush {
                let _ = done.send(());
            }
        }
    }

    async fn export(&mut self, spans: &[SpanData]) {
        let body = otlp::encode(&self.resource, spans);
        let count = spans.len() as u64;
        let mut tries = 0;
        let failure = loop {
            let sent = tokio::time::timeout(EXPORT_TIMEOUT, async {
                let response = self
                    .http
                    .post(self.uri.clone(), self.headers.clone(), body.clone())
                    .await
                    .map_err(|e| (true, e.to_string()))?;
                let status = response.status;
                // Read the answer to the end, so the connection can be used again.
                let _ = response.bytes().await;
                if status.is_success() {
                    Ok(())
                } else {
                    // OTLP/HTTP: these may succeed later; other refusals will not.
                    let retryable = matches!(status.as_u16(), 429 | 502 | 503 | 504);
                    Err((retryable, format!("the collector answered {status}")))
                }
            })
            .await
            .unwrap_or_else(|_| Err((true, format!("no answer within {EXPORT_TIMEOUT:?}"))));
            match sent {
                Ok(()) => {
                    self.stats.exported.fetch_add(count, Relaxed);
                    if std::mem::replace(&mut self.failing, false) {
                        tracing::info!(collector = %self.uri, "trace export works again");
                    }
                    return;
                }
                Err((retryable, reason)) => match RETRY_WAITS.get(tries) {
                    Some(wait) if retryable => {
                        tries += 1;
                        tokio::time::sleep(*wait).await;
                    }
                    _ => break reason,
                },
            }
        };
        self.stats.dropped_export_failed.fetch_add(count, Relaxed);
        if std::mem::replace(&mut self.failing, true) {
            tracing::debug!(collector = %self.uri, spans = count, "trace export failed: {failure}");
        } else {
            tracing::warn!(collector = %self.uri, spans = count, "trace export failed, spans dropped until the collector answers: {failure}");
        }
    }
}
