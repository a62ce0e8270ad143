//! JSON-RPC 2.0 as the Model Context Protocol uses it: reading one message, writing answers
//! and errors, and the protocol revisions spoken. Shared by the server side ([`super`]) and the
//! client side ([`super::upstream`]).

use http::HeaderName;
use serde_json::{json, Map, Value};

/// The session a request belongs to, issued by the server in its `initialize` answer.
pub const SESSION_HEADER: HeaderName = HeaderName::from_static("mcp-session-id");
/// The revision a request is spoken in, after `initialize`.
pub const VERSION_HEADER: HeaderName = HeaderName::from_static("mcp-protocol-version");

/// The body is not JSON.
pub const PARSE_ERROR: i64 = -32700;
/// JSON, but not a JSON-RPC message.
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
/// Bad parameters, and (as the MCP specification does it) an unknown tool.
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;

/// Protocol revisions spoken, newest first. They differ in what this gateway does not use
/// (batching, elicitation, structured output is optional), so one implementation serves all.
pub const VERSIONS: [&str; 4] = ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

/// What a request without `MCP-Protocol-Version` is taken to speak, as the specification says.
pub const ASSUMED_VERSION: &str = "2025-03-26";

/// The revision answered to a client asking for `asked`: the same when spoken here, else the
/// newest (the client then decides whether it can go on).
pub fn negotiate(asked: Option<&str>) -> &'static str {
    asked
        .and_then(|asked| VERSIONS.iter().find(|v| **v == asked))
        .copied()
        .unwrap_or(VERSIONS[0])
}

/// A revision spoken here, by its name.
pub fn known_version(name: &str) -> Option<&'static str> {
    VERSIONS.iter().find(|v| **v == name).copied()
}

/// One JSON-RPC message.
#[derive(Debug, PartialEq)]
pub enum Message {
    Request {
        id: Value,
        method: String,
        params: Value,
    },
    Notification {
        method: String,
        params: Value,
    },
    /// An answer from the peer (`result` or `error`, with an id).
    Response {
        id: Value,
        outcome: Result<Value, RpcError>,
    },
}

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }

    fn to_value(&self) -> Value {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(data) = &self.data {
            error["data"] = data.clone();
        }
        error
    }
}

/// Reads one message. A value that is not one is refused with the id it carried (or `null`),
/// for the error answer.
pub fn parse(value: Value) -> Result<Message, (Value, RpcError)> {
    let Value::Object(mut object) = value else {
        return Err((
            Value::Null,
            RpcError::new(INVALID_REQUEST, "a JSON-RPC message must be a JSON object"),
        ));
    };
    let id = object.remove("id");
    let refuse = |id: Option<Value>, message: &str| {
        Err((
            id.unwrap_or(Value::Null),
            RpcError::new(INVALID_REQUEST, message),
        ))
    };
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return refuse(id, "`jsonrpc` must be \"2.0\"");
    }
    if let Some(id) = &id {
        // MCP allows strings and numbers as ids, never null.
        if !(id.is_string() || id.is_number()) {
            return refuse(None, "`id` must be a string or a number");
        }
    }
    let params = object.remove("params").unwrap_or(Value::Null);
    if !(params.is_null() || params.is_object() || params.is_array()) {
        return refuse(id, "`params` must be an object");
    }
    match object.remove("method") {
        Some(Value::String(method)) => Ok(match id {
            Some(id) => Message::Request { id, method, params },
            None => Message::Notification { method, params },
        }),
        Some(_) => refuse(id, "`method` must be a string"),
        None => {
            let Some(id) = id else {
                return refuse(
                    None,
                    "a message needs a `method`, or an `id` with a `result` or `error`",
                );
            };
            if let Some(result) = object.remove("result") {
                return Ok(Message::Response {
                    id,
                    outcome: Ok(result),
                });
            }
            match object.remove("error") {
                Some(Value::Object(error)) => Ok(Message::Response {
                    id,
                    outcome: Err(error_from(&error)),
                }),
                _ => refuse(
                    Some(id),
                    "a message needs a `method`, or an `id` with a `result` or `error`",
                ),
            }
        }
    }
}

fn error_from(error: &Map<String, Value>) -> RpcError {
    RpcError {
        code: error
            .get("code")
            .and_then(Value::as_i64)
            .unwrap_or(INTERNAL_ERROR),
        message: error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("no message")
            .to_owned(),
        data: error.get("data").cloned(),
    }
}

/// The answer to request `id`.
pub fn answer(id: Value, outcome: Result<Value, RpcError>) -> Value {
    match outcome {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(error) => json!({"jsonrpc": "2.0", "id": id, "error": error.to_value()}),
    }
}

/// A request to send.
pub fn request(id: u64, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

/// A notification to send.
pub fn notification(method: &str) -> Value {
    json!({"jsonrpc": "2.0", "method": method})
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_told_apart() {
        let request = parse(json!({"jsonrpc": "2.0", "id": 7, "method": "ping"})).unwrap();
        assert_eq!(
            request,
            Message::Request {
                id: json!(7),
                method: "ping".into(),
                params: Value::Null
            }
        );
        let note = parse(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        assert!(matches!(note, Ok(Message::Notification { .. })));
        let reply =
            parse(json!({"jsonrpc": "2.0", "id": "a", "error": {"code": -1, "message": "no"}}));
        assert!(matches!(
            reply,
            Ok(Message::Response {
                outcome: Err(RpcError { code: -1, .. }),
                ..
            })
        ));
    }

    #[test]
    fn what_is_not_a_message_is_refused_with_its_id() {
        for (value, id) in [
            (json!([1]), Value::Null),
            (json!({"id": 3, "method": "ping"}), json!(3)),
            (
                json!({"jsonrpc": "1.0", "id": "x", "method": "ping"}),
                json!("x"),
            ),
            (
                json!({"jsonrpc": "2.0", "id": null, "method": "ping"}),
                Value::Null,
            ),
            (json!({"jsonrpc": "2.0", "id": 1, "method": 5}), json!(1)),
            (
                json!({"jsonrpc": "2.0", "id": 1, "method": "x", "params": 3}),
                json!(1),
            ),
            (json!({"jsonrpc": "2.0", "id": 1}), json!(1)),
        ] {
            let (got, error) = parse(value.clone()).unwrap_err();
            assert_eq!(got, id, "{value}");
            assert_eq!(error.code, INVALID_REQUEST, "{value}");
        }
    }

    #[test]
    fn versions_are_negotiated() {
        assert_eq!(negotiate(Some("2025-03-26")), "2025-03-26");
        assert_eq!(negotiate(Some("2025-06-18")), "2025-06-18");
        assert_eq!(negotiate(Some("1999-01-01")), VERSIONS[0]);
        assert_eq!(negotiate(None), VERSIONS[0]);
    }
}
