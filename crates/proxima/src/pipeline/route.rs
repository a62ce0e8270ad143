//! Phase 4, route: the call goes to its model's targets through the [`Router`] — strategy
//! order, circuit breakers, retries, fallbacks — each attempt one provider call. A stream is
//! an attempt until its first chunk arrives: a stream that fails before it fails over like any
//! attempt, since nothing has reached the client yet. Fails with 502, 503 or 504 when no
//! attempt succeeds.

use futures_util::{stream, StreamExt};

use super::ChatOutput;
use crate::canonical::{self, ChatRequest, EmbeddingsRequest, EmbeddingsResponse};
use crate::error::Error;
use crate::providers::SameApi;
use crate::router::{RequestShape, Resolved, Routed, Router};

/// Output tokens assumed for choosing the cheapest target when the client set no limit.
const DEFAULT_OUTPUT_ESTIMATE: u32 = 512;

/// Routes a chat call. A target whose upstream speaks the client's API may take and give what
/// `same_api` allows (see [`crate::providers::Provider::chat`]).
pub async fn chat(
    router: &Router,
    resolved: &Resolved,
    req: &ChatRequest,
    same_api: SameApi<'_>,
) -> Routed<ChatOutput> {
    let shape = RequestShape {
        input_tokens: canonical::estimate_input_tokens(req),
        output_tokens: u64::from(req.sampling.max_tokens.unwrap_or(DEFAULT_OUTPUT_ESTIMATE)),
    };
    router
        .execute(resolved, &shape, |provider, model| async move {
            if !req.stream {
                let answer = provider.chat(req, &model, same_api).await;
                return answer.map(ChatOutput::Complete);
            }
            let mut upstream = provider.chat_stream(req, &model, same_api).await?;
            // Peek inside the attempt: a stream that fails before its first chunk can still
            // fail over, since nothing has gone to the client yet.
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
        })
        .await
}

/// Routes an embeddings call.
pub async fn embed(
    router: &Router,
    resolved: &Resolved,
    req: &EmbeddingsRequest,
) -> Routed<EmbeddingsResponse> {
    router
        .execute(resolved, &NO_SHAPE, |provider, model| async move {
            provider.embed(req, &model).await
        })
        .await
}

/// Routes a token count to the provider that would serve the call.
pub async fn count_tokens(router: &Router, resolved: &Resolved, req: &ChatRequest) -> Routed<u64> {
    router
        .execute(resolved, &NO_SHAPE, |provider, model| async move {
            provider.count_tokens(req, &model).await
        })
        .await
}

/// Calls whose cost does not depend on the target's price per token.
const NO_SHAPE: RequestShape = RequestShape {
    input_tokens: 0,
    output_tokens: 0,
};

/// The outcome of a call refused before any attempt.
pub fn not_routed<T>(error: Error) -> Routed<T> {
    Routed {
        result: Err(error),
        provider: None,
        upstream_model: None,
        attempts: 0,
        price: None,
        limit_headers: Vec::new(),
    }
}
