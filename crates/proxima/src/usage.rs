//! The record of one finished request: who, which model, which upstream, tokens, outcome.
//!
//! Exactly one record is emitted per request, whether it succeeded, failed, or its client went
//! away mid-stream (then from `Drop`). Today records go to the log (target `proxima::usage`);
//! the usage ledger consumes the same records.

use std::sync::Arc;

use tokio::time::Instant;

use crate::canonical::Usage;

#[derive(Debug)]
pub struct UsageRecord {
    pub request_id: Arc<str>,
    pub key: String,
    pub team: Option<String>,
    pub user: Option<String>,
    pub public_model: String,
    pub provider: Option<Arc<str>>,
    pub upstream_model: Option<String>,
    pub attempts: u32,
    pub usage: Option<Usage>,
    pub stream: bool,
    pub started: Instant,
    pub first_token: Option<Instant>,
    /// `ok`, `client_closed`, or the SPEC error code.
    pub outcome: &'static str,
}

impl UsageRecord {
    pub fn emit(self) {
        let usage = self.usage.unwrap_or_default();
        tracing::debug!(
            target: "proxima::usage",
            request_id = &*self.request_id,
            key = %self.key,
            team = self.team.as_deref(),
            user = self.user.as_deref(),
            model = %self.public_model,
            provider = self.provider.as_deref(),
            upstream_model = self.upstream_model.as_deref(),
            attempts = self.attempts,
            input_tokens = usage.input_tokens,
            output_tokens = usage.output_tokens,
            cached_tokens = usage.cached_input_tokens.unwrap_or(0),
            stream = self.stream,
            latency_ms = self.started.elapsed().as_secs_f64() * 1000.0,
            ttft_ms = self.first_token.map(|t| (t - self.started).as_secs_f64() * 1000.0),
            outcome = self.outcome,
            "request finished"
        );
    }
}
