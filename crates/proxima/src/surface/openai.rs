//! The OpenAI-compatible surface: `/v1/chat/completions`, `/v1/embeddings`, `/v1/models`.
//! Prompt runs answer through [`complete`] too.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, Request};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use serde_json::json;

use super::events::{sse_events, EventWriter};
use super::{
    chat_response, conversation, headers_and_body, json_body, json_response, parse_json, read_body,
    read_json, retrieval_stores, routed_response,
};
use crate::canonical::{Api, ChatChunk, ChatRequest};
use crate::error::Error;
use crate::pipeline::{self, RequestContext};
use crate::sse;
use crate::wire::openai::{
    ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, EmbeddingsRequestWire,
    EmbeddingsResponseWire,
};

const API: Api = Api::OpenAiChat;

pub async fn chat_completions(
    Extension(cx): Extension<Arc<RequestContext>>,
    request: Request,
) -> Response {
    let (headers, body) = headers_and_body(request);
    let limit = cx.gateway.config.server.max_body_bytes;
    // Matched as it is made, with no binding of its own: one would keep the parsed request's
    // room (512 bytes) in this future, which axum boxes, for as long as the call runs.
    let (req, body) = match read_body(body, limit)
        .await
        .and_then(|body| Ok((parse_json::<ChatCompletionRequest>(&body)?, body)))
    {
        Ok(read) => read,
        Err(e) => return e.into_response(API),
    };
    complete(&cx, &headers, req, Vec::new(), Some(body)).await
}

/// Serves a chat completions request once read: its conversation and retrieval headers, the
/// pipeline, and the answer in OpenAI's shape, whole or streamed. `body` is what the request
/// was read from, if a client sent it. A prompt run ([`super::prompts`]) comes here with the
/// request its template made, and ledger `tags` naming the prompt.
pub async fn complete(
    cx: &Arc<RequestContext>,
    headers: &HeaderMap,
    req: ChatCompletionRequest,
    tags: crate::usage::Tags,
    body: Option<Bytes>,
) -> Response {
    let (req, directives) = match into_pipeline(headers, req, tags, body) {
        Ok(read) => read,
        Err(e) => return e.into_response(API),
    };
    let include_usage = req.include_usage;
    let routed = pipeline::chat(cx, req, directives).await;
    chat_response(
        routed,
        API,
        cx.gateway.config.server.stream_keepalive.0,
        |answer| match &answer.raw {
            Some(body) => json_body(body.clone()),
            None => json_response(&ChatCompletion::from_canonical(answer)),
        },
        |chunks| sse_events(chunks, ChunkEvents { include_usage }),
    )
}

/// The canonical request and the pipeline's directives of a chat completions request. A plain
/// function, so that nothing of it stays in [`complete`]'s future while the pipeline runs.
fn into_pipeline(
    headers: &HeaderMap,
    req: ChatCompletionRequest,
    tags: crate::usage::Tags,
    body: Option<Bytes>,
) -> Result<(ChatRequest, pipeline::Directives), Error> {
    // A `conversation` field is the gateway's, never the upstream's: a body with one is not
    // forwarded.
    let body = body.filter(|_| !req.extra.contains_key("conversation"));
    let mut req = req.into_canonical()?;
    let conversation = conversation(headers, &mut req)?;
    let directives = pipeline::Directives {
        conversation,
        retrieval: retrieval_stores(headers)?,
        cache: pipeline::cache::Control::from_headers(headers),
        tags,
        verbatim: true,
        body,
        ..pipeline::Directives::default()
    };
    Ok((req, directives))
}

/// Chunks as OpenAI SSE events: `data: {chunk}` for each, `data: [DONE]` at a clean end, and
/// `data: {"error": ...}` (without `[DONE]`) when the upstream fails mid-stream.
struct ChunkEvents {
    /// Whether the client asked for the usage chunk (`stream_options.include_usage`).
    include_usage: bool,
}

impl EventWriter for ChunkEvents {
    fn chunk(&mut self, mut chunk: ChatChunk, out: &mut BytesMut) -> bool {
        if !self.include_usage {
            chunk.usage = None;
            if chunk.choices.is_empty() {
                return true;
            }
        }
        // As the upstream sent it (which never holds usage beside choices: see `ChatChunk::raw`).
        if let Some(data) = &chunk.raw {
            sse::write_event(out, None, data);
            return true;
        }
        let mut data = Vec::with_capacity(512);
        if serde_json::to_writer(&mut data, &ChatCompletionChunk::from_canonical(&chunk)).is_err() {
            data.clear();
        }
        sse::write_event(out, None, &data);
        true
    }

    fn fail(&mut self, error: &Error, out: &mut BytesMut) {
        sse::write_event(out, None, error.body(API).to_string().as_bytes());
    }

    fn finish(&mut self, out: &mut BytesMut) {
        out.extend_from_slice(b"data: [DONE]\n\n");
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
