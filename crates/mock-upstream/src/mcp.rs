//! A small MCP server at `/mcp` (streamable HTTP), for the gateway's MCP client: sessions
//! opened by `initialize`, tools `echo`, `add` and `fail` listed over two pages (so the
//! client must follow `nextCursor`), `tools/list` answered as JSON and `tools/call` as an event
//! stream with a progress notification before the result, as real servers do. The headers of
//! every request are recorded like any other request's, so tests can see what reached it.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde_json::{json, Value};

use crate::script::{sse_frame, Answer, JSON};

const SESSION_PREFIX: &str = "mock-mcp-session-";
const VERSIONS: [&str; 3] = ["2025-11-25", "2025-06-18", "2025-03-26"];

pub(crate) fn handles(path: &str) -> bool {
    path == "/mcp"
}

pub(crate) fn answer(method: &Method, headers: &HeaderMap, body: &[u8], ids: &AtomicU64) -> Answer {
    match *method {
        Method::POST => {}
        Method::DELETE => return Answer::full(StatusCode::OK, JSON, Bytes::new()),
        _ => {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                Value::Null,
                -32600,
                "POST only",
            )
        }
    }
    let Ok(message) = serde_json::from_slice::<Value>(body) else {
        return error(StatusCode::BAD_REQUEST, Value::Null, -32700, "not JSON");
    };
    let id = message.get("id").cloned();
    let method = message["method"].as_str().unwrap_or_default();
    let params = &message["params"];
    if method == "initialize" {
        let asked = params["protocolVersion"].as_str().unwrap_or_default();
        let version = VERSIONS
            .iter()
            .find(|v| **v == asked)
            .unwrap_or(&VERSIONS[1]);
        let result = json!({
            "protocolVersion": version,
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "mock-mcp", "version": "1.0.0"},
        });
        let mut answer = reply(id.unwrap_or(Value::Null), result);
        let session = format!("{SESSION_PREFIX}{}", ids.fetch_add(1, Ordering::Relaxed));
        if let Ok(value) = HeaderValue::from_str(&session) {
            answer.headers.insert("mcp-session-id", value);
        }
        return answer;
    }
    let session = headers.get("mcp-session-id").and_then(|v| v.to_str().ok());
    match session {
        None => return error(StatusCode::BAD_REQUEST, Value::Null, -32600, "no session"),
        Some(s) if !s.starts_with(SESSION_PREFIX) => {
            return error(
                StatusCode::NOT_FOUND,
                Value::Null,
                -32600,
                "unknown session",
            )
        }
        Some(_) => {}
    }
    let Some(id) = id else {
        // A notification.
        return Answer::full(StatusCode::ACCEPTED, JSON, Bytes::new());
    };
    match method {
        "tools/list" => reply(id, tools_page(params["cursor"].as_str())),
        "tools/call" => call(id, params),
        "ping" => reply(id, json!({})),
        _ => error(StatusCode::OK, id, -32601, "method not found"),
    }
}

/// `echo` on the first page, `add` and `fail` on the second.
fn tools_page(cursor: Option<&str>) -> Value {
    let object = |properties: Value, required: &[&str]| json!({"type": "object", "properties": properties, "required": required});
    match cursor {
        None => json!({
            "tools": [{
                "name": "echo",
                "description": "Returns its text.",
                "inputSchema": object(json!({"text": {"type": "string"}}), &["text"]),
            }],
            "nextCursor": "page-2",
        }),
        Some(_) => json!({
            "tools": [
                {
                    "name": "add",
                    "description": "Adds two numbers.",
                    "inputSchema": object(json!({"a": {"type": "number"}, "b": {"type": "number"}}), &["a", "b"]),
                },
                {
                    "name": "fail",
                    "description": "Always fails, as a tool.",
                    "inputSchema": object(json!({}), &[]),
                },
            ],
        }),
    }
}

/// A tool call, answered as an event stream: a progress notification, then the result.
fn call(id: Value, params: &Value) -> Answer {
    let args = &params["arguments"];
    let outcome = match params["name"].as_str().unwrap_or_default() {
        "echo" => Ok(json!({
            "content": [{"type": "text", "text": args["text"].as_str().unwrap_or_default()}],
        })),
        "add" => {
            let sum = args["a"].as_f64().unwrap_or(0.0) + args["b"].as_f64().unwrap_or(0.0);
            Ok(json!({
                "content": [{"type": "text", "text": sum.to_string()}],
                "structuredContent": {"sum": sum},
            }))
        }
        "fail" => Ok(json!({
            "content": [{"type": "text", "text": "the tool failed on purpose"}],
            "isError": true,
        })),
        other => Err(json!({"code": -32602, "message": format!("Unknown tool: {other}")})),
    };
    let message = match outcome {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(error) => json!({"jsonrpc": "2.0", "id": id, "error": error}),
    };
    let progress = json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 0, "progress": 1}});
    Answer::events(vec![
        sse_frame(progress.to_string().as_bytes()),
        sse_frame(message.to_string().as_bytes()),
    ])
}

fn reply(id: Value, result: Value) -> Answer {
    let body = json!({"jsonrpc": "2.0", "id": id, "result": result});
    Answer::full(StatusCode::OK, JSON, Bytes::from(body.to_string()))
}

fn error(status: StatusCode, id: Value, code: i64, message: &str) -> Answer {
    let body = json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}});
    Answer::full(status, JSON, Bytes::from(body.to_string()))
}
