//! `/mcp`: the gateway as a Model Context Protocol server, over streamable HTTP, for callers
//! with a gateway key (authenticated like `/v1`, 401 otherwise).
//!
//! It serves the gateway's own tools over the caller's own data ([`tools`]) and re-exposes the
//! tools of every `[mcp.servers.NAME]` as `NAME__TOOL` ([`upstream`], where the gateway is the
//! MCP client of a streamable HTTP server or of a local command, with the server's configured
//! credentials and never the caller's key). The
//! caller's `mcp_tools` globs ([`access`]) filter both listing and calling. Every tool call
//! gets a ledger row (so it shows in `/admin/logs`): model `mcp:TOOL`, provider the server
//! (`proxima` for the own tools), upstream model the server's own tool name, and the status,
//! error code and latency of the call; queued like every ledger row, written off the path.
//!
//! The transport, as the specification's "streamable HTTP" has it:
//! - `POST /mcp` takes one JSON-RPC message (or a batch, which 2025-03-26 allows). Requests
//!   are answered as `application/json`, or as one `text/event-stream` event when the client
//!   accepts only that; notifications and responses alone get 202 and no body. Methods:
//!   `initialize`, `ping`, `tools/list`, `tools/call`; any other is -32601.
//! - `initialize` negotiates the revision ([`protocol::VERSIONS`]) and opens a session: its id
//!   comes back as `Mcp-Session-Id`, which every later request must carry (400 without, 404
//!   for one ended or another caller's, see [`session`]).
//! - `GET /mcp` is 405: the gateway starts no messages of its own, so it offers no stream.
//! - `DELETE /mcp` ends the session.
//! - Every answer is JSON-RPC, a refusal by authentication (401) too
//!   ([`errors_in_json_rpc`]), so MCP clients show what to fix.
//!
//! Written by hand rather than with the `rmcp` SDK: the four methods and the transport are a
//! few hundred lines over what the crate has anyway (its HTTP client, SSE decoder, body
//! reading, authentication and error type), while `rmcp`'s server and client transports bring
//! their own HTTP stack, `schemars` and a macro layer to a 2-core build for no more behaviour.

pub mod access;
pub mod protocol;
pub mod session;
pub mod tools;
pub mod upstream;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, Request};
use axum::middleware::Next;
use axum::response::Response;
use bytes::BytesMut;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::time::Instant;

use self::access::Access;
use self::protocol::{
    Message, RpcError, INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND,
    PARSE_ERROR, SESSION_HEADER, VERSION_HEADER,
};
pub use self::session::Sessions;
use self::upstream::Failure;
pub use self::upstream::Upstreams;
use crate::error::{ErrorCode, ErrorKind};
use crate::pipeline::RequestContext;
use crate::store::LedgerRow;

/// What the ledger names the server of the gateway's own tools.
const OWN_SERVER: &str = "proxima";

/// `POST /mcp`: one JSON-RPC message or a batch.
pub async fn post(
    Extension(cx): Extension<Arc<RequestContext>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // MCP traffic is metered per tool call (below), not per HTTP request: a refused message
    // is answered in JSON-RPC and needs no ledger row of the server's making.
    cx.metered.store(true, Ordering::Relaxed);
    serve(&cx, &headers, body)
        .await
        .unwrap_or_else(Refusal::into_response)
}

/// Reads the messages, finds their session, answers each request; an `Err` is the HTTP
/// refusal of the whole body.
async fn serve(
    cx: &Arc<RequestContext>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Refusal> {
    check_version_header(headers)?;
    let Incoming {
        batch,
        messages,
        mut answers,
    } = read_messages(body, cx.gateway.config.server.max_body_bytes).await?;
    let (version, opened) = session(cx, headers, &messages)?;
    for message in messages {
        // Notifications (`notifications/initialized`, `notifications/cancelled`) and answers
        // to requests the gateway never sends need nothing done.
        if let Message::Request { id, method, params } = message {
            let outcome = dispatch(cx, version, &method, params).await;
            answers.push(protocol::answer(id, outcome));
        }
    }
    let body = match (batch, answers.pop()) {
        (_, None) => {
            let mut response = Response::new(Body::empty());
            *response.status_mut() = StatusCode::ACCEPTED;
            return Ok(response);
        }
        (false, Some(one)) => one,
        (true, Some(last)) => {
            answers.push(last);
            Value::Array(answers)
        }
    };
    let mut response = if accepts_only_events(headers) {
        let mut event = BytesMut::new();
        crate::sse::write_event(&mut event, Some("message"), body.to_string().as_bytes());
        crate::surface::sse_response(
            futures_util::stream::iter([event.freeze()]),
            cx.gateway.config.server.stream_keepalive.0,
        )
    } else {
        crate::surface::json_response(&body)
    };
    if let Some(id) = opened.and_then(|id| HeaderValue::from_str(&id).ok()) {
        response.headers_mut().insert(SESSION_HEADER, id);
    }
    Ok(response)
}

/// A revision named in `MCP-Protocol-Version` must be one spoken here.
fn check_version_header(headers: &HeaderMap) -> Result<(), Refusal> {
    let Some(asked) = headers.get(VERSION_HEADER) else {
        return Ok(());
    };
    match asked.to_str().ok().and_then(protocol::known_version) {
        Some(_) => Ok(()),
        None => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            RpcError::new(
                INVALID_REQUEST,
                format!(
                    "MCP-Protocol-Version {asked:?} is not spoken here; these are: {}",
                    protocol::VERSIONS.join(", ")
                ),
            ),
        )),
    }
}

/// The messages of a body.
struct Incoming {
    batch: bool,
    messages: Vec<Message>,
    /// The answers to the batch's members that are no messages.
    answers: Vec<Value>,
}

async fn read_messages(body: Body, limit: usize) -> Result<Incoming, Refusal> {
    let value: Value = crate::surface::read_json(body, limit)
        .await
        .map_err(|e| match e.kind {
            ErrorKind::RequestTooLarge => Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                RpcError::new(INVALID_REQUEST, e.message),
            ),
            _ => Refusal::new(
                StatusCode::BAD_REQUEST,
                RpcError::new(PARSE_ERROR, e.message),
            ),
        })?;
    let (batch, values) = match value {
        Value::Array(values) if values.is_empty() => {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                RpcError::new(INVALID_REQUEST, "the batch is empty"),
            ))
        }
        Value::Array(values) => (true, values),
        one => (false, vec![one]),
    };
    let mut messages = Vec::with_capacity(values.len());
    let mut answers = Vec::new();
    for value in values {
        match protocol::parse(value) {
            Ok(message) => messages.push(message),
            // One message that is none: the body as a whole is refused.
            Err((id, error)) if !batch => {
                return Err(Refusal {
                    status: StatusCode::BAD_REQUEST,
                    body: protocol::answer(id, Err(error)),
                })
            }
            Err((id, error)) => answers.push(protocol::answer(id, Err(error))),
        }
    }
    Ok(Incoming {
        batch,
        messages,
        answers,
    })
}

/// The revision `messages` are spoken in, and the id of the session they open: `initialize`
/// opens one, anything else continues the one in `Mcp-Session-Id`.
fn session(
    cx: &RequestContext,
    headers: &HeaderMap,
    messages: &[Message],
) -> Result<(&'static str, Option<String>), Refusal> {
    let sessions = &cx.services.mcp_sessions;
    let initializes = messages
        .iter()
        .any(|m| matches!(m, Message::Request { method, .. } if method == "initialize"));
    if initializes {
        let [Message::Request { params, .. }] = messages else {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                RpcError::new(
                    INVALID_REQUEST,
                    "`initialize` must be sent alone, not in a batch",
                ),
            ));
        };
        let version = protocol::negotiate(params["protocolVersion"].as_str());
        return Ok((version, Some(sessions.open(cx.caller.id.clone(), version))));
    }
    let Some(id) = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) else {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            RpcError::new(
                INVALID_REQUEST,
                "no Mcp-Session-Id header: send `initialize` first, then its session id with every request",
            ),
        ));
    };
    match sessions.resume(id, &cx.caller.id) {
        Some(version) => Ok((version, None)),
        None => Err(Refusal::new(
            StatusCode::NOT_FOUND,
            RpcError::new(
                INVALID_REQUEST,
                format!("no MCP session `{id}`: it ended, or was never opened with this key; send `initialize` again"),
            ),
        )),
    }
}

/// Puts an error made before `/mcp`'s handlers (authentication's 401) in JSON-RPC's shape, as
/// every answer of `/mcp` is, so MCP clients show its message; the SPEC error code goes in
/// `data.code`, and the status and headers stay.
pub async fn errors_in_json_rpc(req: Request, next: Next) -> Response {
    /// An error body is a short message: more is not one of ours.
    const MAX_ERROR_BODY: usize = 64 * 1024;
    let response = next.run(req).await;
    let Some(code) = response.extensions().get::<ErrorCode>().map(|c| c.0) else {
        return response;
    };
    let (mut parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, MAX_ERROR_BODY)
        .await
        .unwrap_or_default();
    let message = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|b| b["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| code.to_owned());
    let mut error = RpcError::new(INVALID_REQUEST, message);
    error.data = Some(json!({"code": code}));
    let body = protocol::answer(Value::Null, Err(error)).to_string();
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

/// `GET /mcp`: 405, as the specification has it for a server that starts no messages itself.
pub async fn get() -> Response {
    let mut response = Refusal::new(
        StatusCode::METHOD_NOT_ALLOWED,
        RpcError::new(
            INVALID_REQUEST,
            "this MCP server sends no messages of its own: there is no stream to open; POST requests instead",
        ),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST, DELETE"));
    response
}

/// `DELETE /mcp`: ends the session named by `Mcp-Session-Id`.
pub async fn delete(Extension(cx): Extension<Arc<RequestContext>>, headers: HeaderMap) -> Response {
    let Some(id) = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) else {
        return Refusal::new(
            StatusCode::BAD_REQUEST,
            RpcError::new(
                INVALID_REQUEST,
                "no Mcp-Session-Id header: which session should end?",
            ),
        )
        .into_response();
    };
    if cx.services.mcp_sessions.close(id, &cx.caller.id) {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        response
    } else {
        Refusal::new(
            StatusCode::NOT_FOUND,
            RpcError::new(INVALID_REQUEST, format!("no MCP session `{id}`")),
        )
        .into_response()
    }
}

/// Whether the client takes only an event stream (`Accept: text/event-stream`), not JSON.
fn accepts_only_events(headers: &HeaderMap) -> bool {
    let takes = |kind: &str| {
        crate::wire::header_list(headers, header::ACCEPT)
            .any(|part| part.split(';').next().unwrap_or_default().trim() == kind)
    };
    takes("text/event-stream") && !takes("application/json") && !takes("*/*")
}

/// An HTTP error with a JSON-RPC error body.
struct Refusal {
    status: StatusCode,
    body: Value,
}

impl Refusal {
    /// With no id: the message could not be taken.
    fn new(status: StatusCode, error: RpcError) -> Refusal {
        Refusal {
            status,
            body: protocol::answer(Value::Null, Err(error)),
        }
    }

    fn into_response(self) -> Response {
        let mut response = crate::surface::json_response(&self.body);
        *response.status_mut() = self.status;
        response
    }
}

/// Answers one request, in protocol revision `version`.
async fn dispatch(
    cx: &Arc<RequestContext>,
    version: &'static str,
    method: &str,
    params: Value,
) -> Result<Value, RpcError> {
    match method {
        "initialize" => Ok(json!({
            "protocolVersion": version,
            "capabilities": {"tools": {"listChanged": false}},
            "serverInfo": {"name": "proxima", "title": "Proxima MCP gateway", "version": env!("CARGO_PKG_VERSION")},
            "instructions": "Tools of this gateway: search your vector stores, read your stored conversations; tools named SERVER__TOOL are served by the MCP server SERVER.",
        })),
        "ping" => Ok(json!({})),
        "tools/list" => Ok(json!({"tools": list_tools(cx).await})),
        "tools/call" => call_tool(cx, version, params).await,
        _ => Err(RpcError::new(
            METHOD_NOT_FOUND,
            format!("no method `{method}` here: this server answers initialize, ping, tools/list and tools/call"),
        )),
    }
}

/// The tools the caller may use: the gateway's own, then each upstream server's.
async fn list_tools(cx: &RequestContext) -> Vec<Value> {
    let access = Access::of(cx);
    let upstream = cx.gateway.mcp.tools().await;
    tools::definitions()
        .into_iter()
        .chain(upstream)
        .filter(|tool| access.permits(tool["name"].as_str().unwrap_or_default()))
        .collect()
}

#[derive(Deserialize)]
struct CallParams {
    name: String,
    #[serde(default)]
    arguments: Value,
}

/// How one tool call went, for the ledger.
struct CallRecord<'a> {
    tool: &'a str,
    /// The server that ran it and its name there, when a tool of that name was reachable.
    server: Option<(&'a str, &'a str)>,
    at: i64,
    started: Instant,
    status: u16,
    code: Option<&'static str>,
}

async fn call_tool(
    cx: &Arc<RequestContext>,
    version: &'static str,
    params: Value,
) -> Result<Value, RpcError> {
    let CallParams { name, arguments } = serde_json::from_value(params).map_err(|e| {
        RpcError::new(
            INVALID_PARAMS,
            format!("tools/call takes {{\"name\": TOOL, \"arguments\": {{...}}}}: {e}"),
        )
    })?;
    let mut record = CallRecord {
        tool: &name,
        server: None,
        at: crate::clock::now_ms(),
        started: Instant::now(),
        status: 200,
        code: None,
    };
    let mcp = &cx.gateway.mcp;
    let route = mcp.route(&name);
    let outcome = if !Access::of(cx).permits(&name) {
        // Hidden tools are answered as unknown ones: their names are not for this caller.
        Err(unknown_tool(&name, &mut record))
    } else if tools::is_own(&name) {
        record.server = Some((OWN_SERVER, &name));
        match tools::call(cx, &name, arguments).await {
            tools::Outcome::Done(value) => Ok(own_result(value, version)),
            tools::Outcome::Failed(e) => {
                record.status = e.kind.status().as_u16();
                record.code = Some(e.kind.code());
                Ok(tool_error(&e.message))
            }
            tools::Outcome::BadArguments(e) => {
                record.status = 400;
                record.code = Some(ErrorKind::InvalidRequest.code());
                Err(e)
            }
        }
    } else if let Some((server, tool)) = route {
        record.server = Some((server, tool));
        match mcp.call(server, tool, arguments).await {
            Ok(result) => {
                if result["isError"] == true {
                    record.code = Some("tool_error");
                }
                Ok(result)
            }
            Err(Failure::Refused(e)) => {
                // The server refused the call itself (an unknown tool, bad arguments ...).
                let kind = match e.code {
                    INVALID_PARAMS | METHOD_NOT_FOUND | INVALID_REQUEST => {
                        ErrorKind::InvalidRequest
                    }
                    _ => ErrorKind::Upstream,
                };
                record.status = kind.status().as_u16();
                record.code = Some(kind.code());
                Err(e)
            }
            Err(Failure::Failed(e)) => {
                tracing::warn!(server, tool, error = %e.message, "an MCP tool call failed upstream");
                record.status = e.kind.status().as_u16();
                record.code = Some(e.kind.code());
                Err(RpcError::new(INTERNAL_ERROR, e.message))
            }
        }
    } else {
        Err(unknown_tool(&name, &mut record))
    };
    write_ledger(cx, &record);
    outcome
}

fn unknown_tool(name: &str, record: &mut CallRecord) -> RpcError {
    record.status = 404;
    record.code = Some(ErrorKind::NotFound.code());
    RpcError::new(
        INVALID_PARAMS,
        format!("Unknown tool: {name} (tools/list names the tools this key may call)"),
    )
}

/// An own tool's result: its JSON as text (what every client shows a model), and as structured
/// content for clients of revisions that have it.
fn own_result(value: Value, version: &str) -> Value {
    let mut result = json!({
        "content": [{"type": "text", "text": value.to_string()}],
        "isError": false,
    });
    // Revisions are dates: later ones sort after.
    if version >= "2025-06-18" {
        result["structuredContent"] = value;
    }
    result
}

/// A tool that ran and failed: the reason, for the model to read.
fn tool_error(message: &str) -> Value {
    json!({"content": [{"type": "text", "text": message}], "isError": true})
}

/// Queues the ledger row of one tool call.
fn write_ledger(cx: &RequestContext, call: &CallRecord) {
    /// Longest tool name kept: an unknown one is the caller's text.
    const MAX_NAME: usize = 200;
    let tool: String = call.tool.chars().take(MAX_NAME).collect();
    let latency = call.started.elapsed();
    tracing::debug!(
        target: "proxima::usage",
        request_id = &*cx.id,
        key = &*cx.caller.id,
        team = cx.caller.team.as_deref(),
        tool = %tool,
        server = call.server.map(|(s, _)| s),
        status = call.status,
        "MCP tool call finished"
    );
    let (_, metadata) = crate::pii::for_ledger(cx, None);
    let upstream = call.server.is_some_and(|(s, _)| s != OWN_SERVER);
    cx.services.ledger.push(LedgerRow {
        id: crate::store::ledger_id(call.at),
        request_id: cx.id.clone(),
        at: call.at,
        key_id: Some(cx.caller.id.clone()),
        key_name: Some(cx.caller.name.clone()),
        team: cx.caller.team.clone(),
        user: None,
        model: Arc::from(format!("mcp:{tool}")),
        provider: call.server.map(|(s, _)| Arc::from(s)),
        upstream_model: call.server.map(|(_, t)| Arc::from(t)),
        input_tokens: 0,
        output_tokens: 0,
        cached_tokens: 0,
        cost_nanos: 0,
        latency_ms: i64::try_from(latency.as_millis()).unwrap_or(i64::MAX),
        ttft_ms: None,
        status: i64::from(call.status),
        error_code: call.code.map(Arc::from),
        cache: None,
        saved_nanos: 0,
        attempts: i64::from(upstream),
        stream: false,
        metadata,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_event_stream_only_client_gets_events() {
        let with = |accept: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::ACCEPT,
                HeaderValue::from_str(accept).unwrap_or(HeaderValue::from_static("")),
            );
            accepts_only_events(&headers)
        };
        assert!(with("text/event-stream"));
        assert!(!with("application/json, text/event-stream"));
        assert!(!with("application/json"));
        assert!(!with("*/*"));
        assert!(!accepts_only_events(&HeaderMap::new()));
    }
}
