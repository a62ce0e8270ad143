//! The Anthropic-compatible surface: `POST /v1/messages` and `/v1/messages/count_tokens`,
//! served by any provider, with Anthropic's event sequence and error shape.

mod stream;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Extension;
use axum::response::Response;
use bytes::BytesMut;
use futures_util::{stream as futures_stream, StreamExt};
use http::HeaderMap;
use serde_json::json;

use super::{chat_response, json_response, read_json, routed_response};
use crate::canonical::{Api, ChatRequest};
use crate::error::Result;
use crate::pipeline::{self, RequestContext};
use crate::providers::ChunkStream;
use crate::wire::anthropic::{MessagesRequest, MessagesResponse};

pub use stream::MessageEvents;

const API: Api = Api::Anthropic;

async fn read_request(cx: &RequestContext, headers: &HeaderMap, body: Body) -> Result<ChatRequest> {
    let beta = headers
        .get("anthropic-beta")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    read_json::<MessagesRequest>(body, cx.gateway.config.server.max_body_bytes)
        .await?
        .into_canonical(beta)
}

pub async fn messages(
    Extension(cx): Extension<Arc<RequestContext>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let req = match read_request(&cx, &headers, body).await {
        Ok(req) => req,
        Err(e) => return e.into_response(API),
    };
    let routed = pipeline::chat(&cx, req).await;
    chat_response(
        routed,
        API,
        cx.gateway.config.server.stream_keepalive.0,
        |answer| json_response(&MessagesResponse::from_canonical(answer)),
        events,
    )
}

/// Canonical chunks as Anthropic's named events, ending with `message_stop`, or with an
/// `error` event when the upstream fails mid-stream.
fn events(chunks: ChunkStream) -> impl futures_util::Stream<Item = bytes::Bytes> + Send {
    futures_stream::unfold(
        Some((chunks, MessageEvents::default())),
        |state| async move {
            let (mut chunks, mut encoder) = state?;
            let mut out = BytesMut::new();
            match chunks.next().await {
                Some(Ok(chunk)) => {
                    encoder.on_chunk(&chunk, &mut out);
                    Some((out.freeze(), Some((chunks, encoder))))
                }
                Some(Err(e)) => {
                    encoder.fail(&e, &mut out);
                    Some((out.freeze(), None))
                }
                None => {
                    encoder.finish(&mut out);
                    Some((out.freeze(), None))
                }
            }
        },
    )
    .filter(|bytes| futures_util::future::ready(!bytes.is_empty()))
}

pub async fn count_tokens(
    Extension(cx): Extension<Arc<RequestContext>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let req = match read_request(&cx, &headers, body).await {
        Ok(req) => req,
        Err(e) => return e.into_response(API),
    };
    let routed = pipeline::count_tokens(&cx, req).await;
    routed_response(routed, API, |tokens| {
        json_response(&json!({ "input_tokens": tokens }))
    })
}
