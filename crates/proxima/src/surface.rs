//! Surfaces: the HTTP APIs clients call. Each reads its wire format into the canonical model,
//! hands it to the [`pipeline`](crate::pipeline), and writes the answer back in its own format.
//! What all surfaces share — reading bodies, response headers, SSE responses — is here.

pub mod admin;
pub mod anthropic;
pub mod conversations;
pub mod events;
pub mod files;
pub mod openai;
pub mod prompts;
pub mod responses;
pub mod vector_stores;

use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use http::{header, HeaderName, HeaderValue};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;

use crate::canonical::{Api, ChatRequest, ChatResponse};
use crate::context::passages::{store_list, Retrieval};
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::ChatOutput;
use crate::providers::ChunkStream;
use crate::router::Routed;
use crate::sse;

/// The conversation a chat call continues.
const CONVERSATION: HeaderName = HeaderName::from_static("x-proxima-conversation");
/// The vector stores a chat call retrieves passages from.
const VECTOR_STORES: HeaderName = HeaderName::from_static("x-proxima-vector-stores");
/// The provider that answered, the model it ran, and how many attempts routing made.
const PROVIDER: HeaderName = HeaderName::from_static("x-proxima-provider");
const MODEL: HeaderName = HeaderName::from_static("x-proxima-model");
const ATTEMPTS: HeaderName = HeaderName::from_static("x-proxima-attempts");
/// Tells nginx in front of the gateway not to buffer a stream.
const ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

/// The conversation a chat call continues: header `x-proxima-conversation`, else the body's
/// `conversation` field (taken out of the request, so that it never goes upstream).
pub fn conversation(headers: &http::HeaderMap, req: &mut ChatRequest) -> Result<Option<String>> {
    let field = req.passthrough.fields.remove("conversation");
    if let Some(value) = headers.get(CONVERSATION) {
        let id = value.to_str().map_err(|_| {
            Error::invalid_request("`x-proxima-conversation` must be a conversation id in ASCII")
        })?;
        return Ok(Some(id.trim().to_owned()));
    }
    match field {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(id)) => Ok(Some(id)),
        // The Responses API's shape, accepted here too.
        Some(serde_json::Value::Object(object)) => match object.get("id") {
            Some(serde_json::Value::String(id)) => Ok(Some(id.clone())),
            _ => Err(Error::invalid_request(
                "`conversation` must be a conversation id or {\"id\": ID}",
            )
            .with_param("conversation")),
        },
        Some(_) => Err(Error::invalid_request(
            "`conversation` must be a conversation id or {\"id\": ID}",
        )
        .with_param("conversation")),
    }
}

/// What a chat call retrieves passages from: the vector stores of header
/// `x-proxima-vector-stores` (comma-separated ids).
pub fn retrieval_stores(headers: &http::HeaderMap) -> Result<Retrieval> {
    let Some(value) = headers.get(VECTOR_STORES) else {
        return Ok(Retrieval::default());
    };
    let list = value.to_str().map_err(|_| {
        Error::invalid_request(
            "`x-proxima-vector-stores` must be vector store ids in ASCII, separated by commas",
        )
    })?;
    let stores = store_list(list);
    if stores.is_empty() {
        return Err(Error::invalid_request(
            "`x-proxima-vector-stores` names no vector store: send ids separated by commas, e.g. `vs_a,vs_b`",
        ));
    }
    Ok(Retrieval::from_stores(stores))
}

/// A JSON answer, or the error in the OpenAI shape: the resource routes (conversations, stored
/// responses) answer this way.
pub fn json_or_error(result: Result<serde_json::Value>) -> Response {
    match result {
        Ok(value) => json_response(&value),
        Err(e) => e.into_response(Api::OpenAiChat),
    }
}

/// Metadata as OpenAI limits it: at most 16 pairs of short strings.
pub fn check_metadata(metadata: &serde_json::Map<String, serde_json::Value>) -> Result<()> {
    let ok = metadata.len() <= 16
        && metadata
            .iter()
            .all(|(k, v)| k.len() <= 64 && v.as_str().is_some_and(|v| v.len() <= 512));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_request(
            "`metadata` takes at most 16 pairs, keys of up to 64 characters, string values of up to 512",
        )
        .with_param("metadata"))
    }
}

/// How a client pages a list, as the OpenAI API takes it: `limit` (1 to 100, default 20),
/// `order` (`desc`, the default, or `asc`), `after` (the last id of the previous page). Other
/// parameters (`include`) are ignored: items are always whole.
pub struct Paging {
    pub limit: usize,
    pub descending: bool,
    pub after: Option<String>,
}

impl Paging {
    pub fn from_query(raw: Option<String>) -> Result<Paging> {
        Paging::with_limits(raw, 20, 100)
    }

    /// The same with `limit` from 1 to `max`, `default` when absent: lists whose OpenAI
    /// counterpart pages otherwise (`/v1/files`: up to 10,000, all by default).
    pub fn with_limits(raw: Option<String>, default: usize, max: usize) -> Result<Paging> {
        #[derive(serde::Deserialize)]
        struct Wire {
            #[serde(default)]
            limit: Option<String>,
            #[serde(default)]
            order: Option<String>,
            #[serde(default)]
            after: Option<String>,
        }
        let wire: Wire = query(raw.as_deref())?;
        let limit = match wire.limit.as_deref() {
            None => default,
            Some(limit) => limit
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| {
                    Error::invalid_request(format!(
                        "`limit` must be a whole number from 1 to {max}, not `{limit}`"
                    ))
                    .with_param("limit")
                })?,
        };
        let descending = match wire.order.as_deref() {
            None | Some("desc") => true,
            Some("asc") => false,
            Some(other) => {
                return Err(Error::invalid_request(format!(
                    "`order` must be `asc` or `desc`, not `{other}`"
                ))
                .with_param("order"))
            }
        };
        Ok(Paging {
            limit,
            descending,
            after: wire.after,
        })
    }
}

/// Parses a query string, saying what is wrong with it.
pub fn query<T: DeserializeOwned>(raw: Option<&str>) -> Result<T> {
    serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|e| Error::invalid_request(format!("bad query string: {e}")))
}

/// A request's headers and body, taken apart without a copy (axum's `HeaderMap` extractor
/// copies every header: about 700 instructions on a chat call).
pub fn headers_and_body(request: axum::extract::Request) -> (http::HeaderMap, Body) {
    let (parts, body) = request.into_parts();
    (parts.headers, body)
}

/// Reads the whole body, refusing more than `limit` bytes, and parses it as JSON. Every failure
/// is a 400 or 413 saying what to fix — never a plain-text framework rejection.
pub async fn read_json<T: DeserializeOwned>(body: Body, limit: usize) -> Result<T> {
    parse_json(&read_body(body, limit).await?)
}

/// Reads the whole body, refusing more than `limit` bytes. A body that came in one piece, as
/// most do, is kept as it came, without a copy.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes> {
    let too_large = || {
        Error::new(
            ErrorKind::RequestTooLarge,
            format!("the request body is larger than the {limit} bytes this gateway accepts"),
        )
    };
    let mut body = body;
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| Error::invalid_request(format!("could not read the request body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let read = first.as_ref().map_or(0, Bytes::len) + buf.len();
        if read + data.len() > limit {
            return Err(too_large());
        }
        match first.take() {
            None if buf.is_empty() => first = Some(data),
            earlier => {
                if let Some(earlier) = earlier {
                    buf.extend_from_slice(&earlier);
                }
                buf.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| buf.freeze()))
}

/// Parses JSON, naming the field at fault on a type error.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    // Valid requests, the common case, skip the path tracking, which allocates for every key;
    // only a body that fails is parsed again, with it, to say where.
    if let Ok(value) = crate::wire::from_json(bytes) {
        return Ok(value);
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::invalid_request(
            "the request body is empty: send a JSON object",
        ));
    }
    Err(explain_json_error::<T>(bytes))
}

/// The error for a body that failed to parse, naming the field at fault.
fn explain_json_error<T: DeserializeOwned>(bytes: &[u8]) -> Error {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let e = match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Ok(_) => match de.end() {
            Ok(()) => return Error::invalid_request("the request body is not valid JSON"),
            Err(e) => {
                return Error::invalid_request(format!("the request body is not valid JSON: {e}"))
            }
        },
        Err(e) => e,
    };
    let path = e.path().to_string();
    let inner = e.into_inner();
    let message = match inner.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            format!("the request body is not valid JSON: {inner}")
        }
        _ if path == "." => format!("invalid request: {inner}"),
        _ => format!("invalid value for `{path}`: {inner}"),
    };
    let error = Error::invalid_request(message);
    if path == "." {
        error
    } else {
        error.with_param(path)
    }
}

/// A JSON response from a serializable value.
pub fn json_response<T: serde::Serialize>(value: &T) -> Response {
    let mut body = Vec::with_capacity(crate::wire::JSON_CAPACITY);
    match serde_json::to_writer(&mut body, value) {
        Ok(()) => json_body(body.into()),
        Err(e) => Error::internal(format!("cannot encode the response: {e}"))
            .into_response(crate::canonical::Api::OpenAiChat),
    }
}

/// A 200 answer of JSON already encoded.
pub fn json_body(body: Bytes) -> Response {
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A streaming SSE response. Keep-alive comments fill silences longer than `keepalive`.
pub fn sse_response<S>(events: S, keepalive: Duration) -> Response
where
    S: Stream<Item = Bytes> + Send + 'static,
{
    let body = Body::from_stream(sse::KeepAlive::new(events, keepalive));
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tell nginx-style proxies in front not to buffer the stream.
    headers.insert(ACCEL_BUFFERING, HeaderValue::from_static("no"));
    response
}

/// The HTTP answer to a routed request: `render` writes a success, an error is rendered in
/// `api`'s shape, and the route headers go on both.
pub fn routed_response<T>(
    routed: Routed<T>,
    api: Api,
    render: impl FnOnce(T) -> Response,
) -> Response {
    let Routed {
        result,
        provider,
        upstream_model,
        attempts,
        price,
        limit_headers,
    } = routed;
    let mut response = match result {
        Ok(value) => render(value),
        Err(e) => e.into_response(api),
    };
    let headers = response.headers_mut();
    // Room for every header the answer will carry, made once: grown one insert at a time,
    // the map rehashed twice on an answer under rate limits. Beyond these: the limits', the
    // route's three, and then `x-request-id`, `traceparent` and `content-length`.
    headers.reserve(limit_headers.len() + 6);
    for (name, value) in limit_headers {
        headers.insert(name, value);
    }
    let route = Routed {
        result: Ok(()),
        provider,
        upstream_model,
        attempts,
        price,
        limit_headers: Vec::new(),
    };
    route_headers(&mut response, &route);
    response
}

/// The HTTP answer to a routed chat request, for any surface: `complete` renders a whole
/// answer, `stream` turns the chunks into SSE events.
pub fn chat_response<S>(
    routed: Routed<ChatOutput>,
    api: Api,
    keepalive: Duration,
    complete: impl FnOnce(&ChatResponse) -> Response,
    stream: impl FnOnce(ChunkStream) -> S,
) -> Response
where
    S: Stream<Item = Bytes> + Send + 'static,
{
    routed_response(routed, api, |output| match output {
        ChatOutput::Complete(answer) => complete(&answer),
        ChatOutput::Stream(chunks) => sse_response(stream(chunks), keepalive),
    })
}

/// Sets `x-proxima-provider`, `x-proxima-model` and `x-proxima-attempts`.
fn route_headers<T>(response: &mut Response, routed: &Routed<T>) {
    let headers = response.headers_mut();
    if let Some(provider) = routed
        .provider
        .as_deref()
        .and_then(|p| HeaderValue::from_str(p).ok())
    {
        headers.insert(PROVIDER, provider);
    }
    if let Some(model) = routed
        .upstream_model
        .as_deref()
        .and_then(|m| HeaderValue::from_str(m).ok())
    {
        headers.insert(MODEL, model);
    }
    headers.insert(ATTEMPTS, HeaderValue::from(routed.attempts));
}
