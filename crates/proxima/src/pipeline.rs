//! The request pipeline behind every surface: policy, then routing to provider attempts, then
//! the usage record. Surfaces translate wire formats; this module decides what happens.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::{stream, Stream, StreamExt};
use tokio::time::Instant;

use crate::canonical::{
    ChatChunk, ChatRequest, ChatResponse, ChunkStream, EmbeddingsRequest, EmbeddingsResponse,
};
use crate::error::{Error, ErrorKind, Result};
use crate::gateway::Gateway;
use crate::policy::Caller;
use crate::router::{RequestShape, Resolved, Routed};
use crate::usage::UsageRecord;

/// Output tokens assumed for choosing the cheapest target when the client set no limit.
const DEFAULT_OUTPUT_ESTIMATE: u32 = 512;

/// What every stage knows about the request in hand.
pub struct RequestContext {
    pub id: Arc<str>,
    pub caller: Arc<Caller>,
    /// The gateway this request started on; it keeps it to the end, across reloads.
    pub gateway: Arc<Gateway>,
    pub started: Instant,
}

pub enum ChatOutput {
    Complete(ChatResponse),
    /// Chunks after the first one arrived (so the attempt could still fail over before it).
    Stream(ChunkStream),
}

impl RequestContext {
    /// The public model `model`, if it exists and the caller may use it (404, 403).
    pub fn resolve(&self, model: &str) -> Result<Resolved> {
        let resolved = self.gateway.router.resolve(model).ok_or_else(|| {
            Error::new(
                ErrorKind::ModelNotFound,
                format!("the model `{model}` does not exist; GET /v1/models lists the models you can use"),
            )
            .with_param("model")
        })?;
        self.caller.authorize_model(model, &resolved.model.name)?;
        Ok(resolved)
    }

    fn record(&self, model: &str, user: Option<&str>, stream: bool) -> UsageRecord {
        UsageRecord {
            request_id: self.id.clone(),
            key: self.caller.name.clone(),
            team: self.caller.team.clone(),
            user: user.map(str::to_owned),
            public_model: model.to_owned(),
            provider: None,
            upstream_model: None,
            attempts: 0,
            usage: None,
            stream,
            started: self.started,
            first_token: None,
            outcome: "ok",
        }
    }
}

fn not_routed<T>(error: Error) -> Routed<T> {
    Routed {
        result: Err(error),
        provider: None,
        upstream_model: None,
        attempts: 0,
    }
}

/// Serves a chat request: a complete answer, or a stream whose first chunk has arrived.
pub async fn chat(cx: &RequestContext, req: ChatRequest) -> Routed<ChatOutput> {
    let mut record = cx.record(&req.model, req.user.as_deref(), req.stream);
    let resolved = match cx.resolve(&req.model) {
        Ok(resolved) => resolved,
        Err(e) => {
            record.outcome = e.kind.code();
            record.emit();
            return not_routed(e);
        }
    };
    let req = &req;
    let shape = RequestShape {
        input_tokens: crate::canonical::estimate_input_tokens(req),
        output_tokens: u64::from(req.sampling.max_tokens.unwrap_or(DEFAULT_OUTPUT_ESTIMATE)),
    };
    let routed = cx
        .gateway
        .router
        .execute(&resolved, &shape, |provider, model| async move {
            if req.stream {
                let mut upstream = provider.chat_stream(req, &model).await?;
                // Peek inside the attempt: a stream that fails before its first chunk can
                // still fail over, since nothing has gone to the client yet.
                match upstream.next().await {
                    Some(Ok(first)) => Ok(ChatOutput::Stream(Box::pin(
                        stream::iter([Ok(first)]).chain(upstream),
                    ))),
                    Some(Err(e)) => Err(e),
                    None => Err(Error::upstream(format!(
                        "provider `{}` ended the stream without an answer",
                        provider.name
                    ))),
                }
            } else {
                provider.chat(req, &model).await.map(ChatOutput::Complete)
            }
        })
        .await;
    record.provider = routed.provider.clone();
    record.upstream_model = routed.upstream_model.clone();
    record.attempts = routed.attempts;
    let Routed {
        result,
        provider,
        upstream_model,
        attempts,
    } = routed;
    let result = match result {
        // The record goes with the stream and is emitted when it ends.
        Ok(ChatOutput::Stream(upstream)) => {
            record.first_token = Some(Instant::now());
            Ok(ChatOutput::Stream(Box::pin(Recorded {
                inner: upstream,
                record: Some(record),
            })))
        }
        Ok(ChatOutput::Complete(response)) => {
            record.usage = response.usage;
            record.emit();
            Ok(ChatOutput::Complete(response))
        }
        Err(e) => {
            record.outcome = e.kind.code();
            record.emit();
            Err(e)
        }
    };
    Routed {
        result,
        provider,
        upstream_model,
        attempts,
    }
}

pub async fn embed(cx: &RequestContext, req: EmbeddingsRequest) -> Routed<EmbeddingsResponse> {
    let mut record = cx.record(&req.model, req.user.as_deref(), false);
    let resolved = match cx.resolve(&req.model) {
        Ok(resolved) => resolved,
        Err(e) => {
            record.outcome = e.kind.code();
            record.emit();
            return not_routed(e);
        }
    };
    let req = &req;
    let shape = RequestShape {
        input_tokens: 0,
        output_tokens: 0,
    };
    let routed = cx
        .gateway
        .router
        .execute(&resolved, &shape, |provider, model| async move {
            provider.embed(req, &model).await
        })
        .await;
    record.provider = routed.provider.clone();
    record.upstream_model = routed.upstream_model.clone();
    record.attempts = routed.attempts;
    match &routed.result {
        Ok(response) => record.usage = Some(response.usage),
        Err(e) => record.outcome = e.kind.code(),
    }
    record.emit();
    routed
}

/// Counts a request's input tokens with the provider that would serve it.
pub async fn count_tokens(cx: &RequestContext, req: ChatRequest) -> Routed<u64> {
    let resolved = match cx.resolve(&req.model) {
        Ok(resolved) => resolved,
        Err(e) => return not_routed(e),
    };
    let req = &req;
    let shape = RequestShape {
        input_tokens: 0,
        output_tokens: 0,
    };
    cx.gateway
        .router
        .execute(&resolved, &shape, |provider, model| async move {
            provider.count_tokens(req, &model).await
        })
        .await
}

/// Passes a stream through, noting usage, and emits the usage record when the stream ends,
/// fails, or is dropped because the client went away.
struct Recorded {
    inner: ChunkStream,
    record: Option<UsageRecord>,
}

impl Stream for Recorded {
    type Item = Result<ChatChunk>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = std::task::ready!(self.inner.as_mut().poll_next(cx));
        match &item {
            Some(Ok(chunk)) => {
                if let (Some(usage), Some(record)) = (chunk.usage, self.record.as_mut()) {
                    record.usage = Some(usage);
                }
            }
            Some(Err(e)) => {
                if let Some(mut record) = self.record.take() {
                    record.outcome = e.kind.code();
                    record.emit();
                }
            }
            None => {
                if let Some(record) = self.record.take() {
                    record.emit();
                }
            }
        }
        Poll::Ready(item)
    }
}

impl Drop for Recorded {
    fn drop(&mut self) {
        if let Some(mut record) = self.record.take() {
            record.outcome = "client_closed";
            record.emit();
        }
    }
}
