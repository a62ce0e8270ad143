//! The OpenAI-compatible surface: `/v1/chat/completions`, `/v1/embeddings`, `/v1/models`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Extension;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures_util::{stream, Stream, StreamExt};
use serde_json::json;

use super::{chat_response, json_response, read_json, routed_response};
use crate::canonical::{Api, ChunkStream};
use crate::pipeline::{self, RequestContext};
use crate::sse;
use crate::wire::openai::{
    ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, EmbeddingsRequestWire,
    EmbeddingsResponseWire,
};

const API: Api = Api::OpenAiChat;

pub async fn chat_completions(
    Extension(cx): Extension<Arc<RequestContext>>,
    body: Body,
) -> Response {
    let limit = cx.gateway.config.server.max_body_bytes;
    let req = match read_json::<ChatCompletionRequest>(body, limit)
        .await
        .and_then(ChatCompletionRequest::into_canonical)
    {
        Ok(req) => req,
        Err(e) => return e.into_response(API),
    };
    let include_usage = req.include_usage;
    let routed = pipeline::chat(&cx, req).await;
    chat_response(
        routed,
        API,
        cx.gateway.config.server.stream_keepalive.0,
        |answer| json_response(&ChatCompletion::from_canonical(answer)),
        |chunks| events(chunks, include_usage),
    )
}

/// At most this many bytes of events go out in one write.
const BATCH_BYTES: usize = 16 * 1024;

/// Chunks as OpenAI SSE events: `data: {chunk}` for each, `data: [DONE]` at a clean end, and
/// `data: {"error": ...}` (without `[DONE]`) when the upstream fails mid-stream.
///
/// Events that are already on their way are sent together. The upstream body reaches us one
/// chunk at a time (hyper's body channel holds one), and the server writes (one syscall) as soon
/// as the next event is not ready, so a burst of chunks — an upstream that answers fast, or a
/// backlog after a stall — would otherwise cost one write per event. After each event the task
/// yields to let the upstream connection hand over the next chunk, and stops collecting when
/// none came: an event is delayed by two turns of the scheduler at most.
fn events(chunks: ChunkStream, include_usage: bool) -> impl Stream<Item = Bytes> + Send {
    stream::unfold(Some(chunks), move |chunks| async move {
        let mut chunks = chunks?;
        let mut out = BytesMut::new();
        let mut open = loop {
            match write_event(&mut out, chunks.next().await, include_usage) {
                Written::Skipped => continue,
                Written::Open => break true,
                Written::Closed => break false,
            }
        };
        let mut yielded = false;
        while open && out.len() < BATCH_BYTES {
            let ready = std::future::poll_fn(|cx| match chunks.as_mut().poll_next(cx) {
                std::task::Poll::Ready(item) => std::task::Poll::Ready(Some(item)),
                std::task::Poll::Pending => std::task::Poll::Ready(None),
            })
            .await;
            match ready {
                Some(item) => {
                    yielded = false;
                    open = !matches!(write_event(&mut out, item, include_usage), Written::Closed);
                }
                None if !yielded => {
                    // One turn is not enough: tokio runs a yielded task again before the
                    // connection task it woke has handed over the next chunk. Two are.
                    for _ in 0..2 {
                        tokio::task::yield_now().await;
                    }
                    yielded = true;
                }
                None => break,
            }
        }
        Some((out.freeze(), open.then_some(chunks)))
    })
}

enum Written {
    /// An event was written and more may follow.
    Open,
    /// The last event was written (`[DONE]` or an error).
    Closed,
    /// Nothing to write for this chunk (a usage-only chunk the client did not ask for).
    Skipped,
}

fn write_event(
    out: &mut BytesMut,
    item: Option<crate::error::Result<crate::canonical::ChatChunk>>,
    include_usage: bool,
) -> Written {
    match item {
        Some(Ok(mut chunk)) => {
            if !include_usage {
                chunk.usage = None;
                if chunk.choices.is_empty() {
                    return Written::Skipped;
                }
            }
            let mut data = Vec::with_capacity(512);
            if serde_json::to_writer(&mut data, &ChatCompletionChunk::from_canonical(&chunk))
                .is_err()
            {
                data.clear();
            }
            sse::write_event(out, None, &data);
            Written::Open
        }
        Some(Err(e)) => {
            sse::write_event(out, None, e.body(API).to_string().as_bytes());
            Written::Closed
        }
        None => {
            out.extend_from_slice(b"data: [DONE]\n\n");
            Written::Closed
        }
    }
}

pub async fn embeddings(Extension(cx): Extension<Arc<RequestContext>>, body: Body) -> Response {
    let limit = cx.gateway.config.server.max_body_bytes;
    let req = match read_json::<EmbeddingsRequestWire>(body, limit).await {
        Ok(req) => req.into_canonical(),
        Err(e) => return e.into_response(API),
    };
    let routed = pipeline::embed(&cx, req).await;
    routed_response(routed, API, |answer| {
        json_response(&EmbeddingsResponseWire::from_canonical(&answer))
    })
}

/// `GET /v1/models`: the models this caller may use, by the same check a call makes (the key's
/// models and its team's).
pub async fn models(Extension(cx): Extension<Arc<RequestContext>>) -> Response {
    let data: Vec<_> = cx
        .gateway
        .router
        .public_names()
        .into_iter()
        .filter(|name| cx.resolve(name).is_ok())
        .map(model_object)
        .collect();
    json_response(&json!({"object": "list", "data": data}))
}

fn model_object(id: &str) -> serde_json::Value {
    json!({"id": id, "object": "model", "created": 0, "owned_by": "proxima"})
}

/// `GET /v1/models/{model}`: the model if it exists and this key may use it, else 404/403.
/// Names may contain slashes (`openai/gpt-4o`), so the route captures the rest of the path.
pub async fn model(
    Extension(cx): Extension<Arc<RequestContext>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    match cx.resolve(&id) {
        Ok(_) => json_response(&model_object(&id)),
        Err(e) => e.into_response(API),
    }
}
