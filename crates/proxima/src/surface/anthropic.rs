//! The Anthropic-compatible surface: `POST /v1/messages` and `/v1/messages/count_tokens`,
//! served by any provider, with Anthropic's event sequence and error shape.

mod stream;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, Request};
use axum::response::Response;
use http::HeaderMap;
use serde_json::json;

use super::events::sse_events;
use super::{
    chat_response, conversation, headers_and_body, json_response, read_json, retrieval_stores,
    routed_response,
};
use crate::canonical::{Api, ChatRequest};
use crate::error::Result;
use crate::pipeline::{self, RequestContext};
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

pub async fn messages(Extension(cx): Extension<Arc<RequestContext>>, request: Request) -> Response {
    let (headers, body) = headers_and_body(request);
    let read = async {
        let mut req = read_request(&cx, &headers, body).await?;
        let conversation = conversation(&headers, &mut req)?;
        Ok::<_, crate::error::Error>((req, conversation, retrieval_stores(&headers)?))
    };
    let (req, conversation, retrieval) = match read.await {
        Ok(read) => read,
        Err(e) => return e.into_response(API),
    };
    let directives = pipeline::Directives {
        conversation,
        retrieval,
        cache: pipeline::cache::Control::from_headers(&headers),
        ..pipeline::Directives::default()
    };
    let routed = pipeline::chat(&cx, req, directives).await;
    chat_response(
        routed,
        API,
        cx.gateway.config.server.stream_keepalive.0,
        |answer| json_response(&MessagesResponse::from_canonical(answer)),
        |chunks| sse_events(chunks, MessageEvents::default()),
    )
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
