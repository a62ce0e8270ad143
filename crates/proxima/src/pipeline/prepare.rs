//! Phase 2, prepare: the request as it will really be sent, and its measure. This is where the
//! prompt is made final — conversation context, prompt templates, retrieved passages, PII
//! masking ([`crate::pii`], last, on the prompt as assembled) and guardrails belong here —
//! before [`limit`](super::limit) charges it, so that limits and budgets see what goes
//! upstream.
//!
//! Counting a long prompt's tokens is CPU work of about a millisecond per 10 KiB of new text:
//! large prompts are counted on the blocking pool, never on the async workers.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use super::{Exchange, RequestContext};
use crate::canonical::{self, ChatRequest, EmbeddingInput, EmbeddingsRequest};
use crate::context::{self, passages, passages::Retrieval};
use crate::error::Result;
use crate::pii;

/// The prompt tokens the gateway assembled for a conversation turn.
const CONTEXT_TOKENS: HeaderName = HeaderName::from_static("x-proxima-context-tokens");

/// The passages retrieved from vector stores into the prompt.
const RETRIEVED: HeaderName = HeaderName::from_static("x-proxima-retrieved");

/// Prompts with more text than this are counted on the blocking pool; shorter ones (and texts
/// seen before, which the tokenizer remembers) cost less than the hand-over.
const COUNT_INLINE_BYTES: u64 = 4 * 1024;

/// What the limits need to know of a request.
pub trait Measure: Send + Sync + 'static {
    /// Bytes of prompt text: what counting its tokens costs.
    fn text_bytes(&self) -> u64;
    /// Prompt tokens, with the real tokenizer.
    fn count_tokens(&self) -> u64;
    /// The output the client asked for at most; `None` when it set no limit.
    fn max_output(&self) -> Option<u32>;
}

impl Measure for ChatRequest {
    fn text_bytes(&self) -> u64 {
        canonical::input_tokens(self, |text| text.len() as u64)
    }

    fn count_tokens(&self) -> u64 {
        crate::tokenizer::prompt_tokens(self)
    }

    fn max_output(&self) -> Option<u32> {
        self.sampling.max_tokens
    }
}

impl Measure for EmbeddingsRequest {
    fn text_bytes(&self) -> u64 {
        match &self.input {
            EmbeddingInput::Text(text) => text.len() as u64,
            EmbeddingInput::Texts(texts) => texts.iter().map(|t| t.len() as u64).sum(),
            // Token ids need no counting.
            EmbeddingInput::Tokens(_) | EmbeddingInput::TokenLists(_) => 0,
        }
    }

    fn count_tokens(&self) -> u64 {
        crate::tokenizer::embedding_tokens(&self.input)
    }

    fn max_output(&self) -> Option<u32> {
        Some(0)
    }
}

/// A request ready to be sent.
pub struct Prepared<R> {
    /// Shared, so that a long prompt can be counted on another thread without a copy.
    pub request: Arc<R>,
    /// The client's body, when it still says exactly what `request` does: nothing was
    /// assembled, retrieved or masked into the prompt (see [`super::Directives::body`]).
    pub body: Option<Bytes>,
}

impl<R> Prepared<R> {
    /// `request`, which its client's body no longer says (or which had none).
    fn new(request: R) -> Prepared<R> {
        Prepared {
            request: Arc::new(request),
            body: None,
        }
    }
}

impl<R: Measure> Prepared<R> {
    /// The prompt's tokens: counted here when short, on the blocking pool when long.
    pub async fn prompt_tokens(&self) -> u64 {
        crate::tokenizer::load().await;
        if self.request.text_bytes() <= COUNT_INLINE_BYTES {
            return self.request.count_tokens();
        }
        let request = self.request.clone();
        match tokio::task::spawn_blocking(move || request.count_tokens()).await {
            Ok(tokens) => tokens,
            // Only if the runtime is shutting down: an estimate will do.
            Err(_) => self.request.text_bytes().div_ceil(4),
        }
    }
}

/// Prepares a chat request: a conversation turn gets its stored context assembled in (and a
/// stage that stores the turn), within the model's window; passages retrieved for the new
/// message go into the conversation's context, or, without one, after the instructions. The
/// guardrails check the prompt so made, with the values the caller wrote; then the caller's
/// PII policy applies to it ([`pii`]). The client's `body` is kept if none of this changed the
/// request.
///
/// Not an `async fn`: one keeps its arguments twice, as arguments and again as the body's
/// locals, in a future that is part of every call's.
#[allow(clippy::manual_async_fn)]
pub fn chat<'a, 'e>(
    exchange: &'a mut Exchange<'e>,
    cx: &'a Arc<RequestContext>,
    req: ChatRequest,
    conversation: Option<String>,
    retrieval: Retrieval,
    body: Option<Bytes>,
) -> impl Future<Output = Result<Prepared<ChatRequest>>> + Send + use<'a, 'e> {
    async move {
        let body = body.filter(|_| conversation.is_none() && retrieval.stores.is_empty());
        // Boxed, and only for a call that has something to assemble: the future of every other
        // call stays without the room assembly takes, and without copying it.
        let prepared = if conversation.is_none() && retrieval.stores.is_empty() {
            Prepared::new(req)
        } else {
            Box::pin(assemble(exchange, cx, req, conversation, retrieval)).await?
        };
        crate::guardrails::screen(exchange, &prepared.request).await?;
        // Nothing else holds the request once it is assembled and screened: no copy is made.
        let mut req = Arc::unwrap_or_clone(prepared.request);
        let masked = pii::protect_chat(exchange, &mut req)?;
        Ok(Prepared {
            request: Arc::new(req),
            body: body.filter(|_| !masked),
        })
    }
}

/// The prompt with its conversation context and retrieved passages.
async fn assemble(
    exchange: &mut Exchange<'_>,
    cx: &Arc<RequestContext>,
    mut req: ChatRequest,
    conversation: Option<String>,
    retrieval: Retrieval,
) -> Result<Prepared<ChatRequest>> {
    if let Some(conversation) = conversation {
        // Boxed: a turn's large state lives on the heap only for calls that have one, so the
        // future of every other call stays as small as before.
        let turn = Box::pin(context::open_turn(
            cx,
            &conversation,
            &exchange.resolved,
            &mut req,
            retrieval,
        ))
        .await?;
        exchange
            .headers
            .push((CONTEXT_TOKENS, HeaderValue::from(turn.tokens)));
        if let Some(retrieved) = turn.retrieved {
            exchange
                .headers
                .push((RETRIEVED, HeaderValue::from(retrieved)));
        }
        let (keep, observe) = turn.into_stages();
        exchange.stages.push(keep);
        exchange.stages.push(observe);
        return Ok(Prepared::new(req));
    }
    let prepared = Prepared::new(req);
    if retrieval.stores.is_empty() {
        return Ok(prepared);
    }
    Box::pin(retrieve(exchange, cx, prepared, retrieval)).await
}

/// Puts the passages retrieved for a call without a conversation after its instructions, as
/// many as fit in what its prompt leaves of the model's window.
async fn retrieve(
    exchange: &mut Exchange<'_>,
    cx: &Arc<RequestContext>,
    prepared: Prepared<ChatRequest>,
    mut retrieval: Retrieval,
) -> Result<Prepared<ChatRequest>> {
    crate::tokenizer::load().await;
    let Some(found) = passages::search(cx, &retrieval, &prepared.request.messages).await? else {
        return Ok(prepared);
    };
    let room = context::prompt_room(
        &cx.gateway.config.context,
        &cx.services.conversations.token_scales,
        &exchange.resolved,
        prepared.request.sampling.max_tokens,
    )
    .saturating_sub(prepared.prompt_tokens().await);
    // The count above shared the request with the blocking pool at most until it finished.
    let mut req = Arc::unwrap_or_clone(prepared.request);
    let used = passages::insert(&mut req.messages, &found.passages, room);
    found.report(used, retrieval.report.take());
    exchange.headers.push((RETRIEVED, HeaderValue::from(used)));
    Ok(Prepared::new(req))
}

/// Prepares an embeddings request: the caller's PII policy applies to its texts.
pub fn embeddings(
    exchange: &mut Exchange<'_>,
    mut req: EmbeddingsRequest,
) -> Result<Prepared<EmbeddingsRequest>> {
    pii::protect_embeddings(exchange, &mut req)?;
    Ok(Prepared::new(req))
}
