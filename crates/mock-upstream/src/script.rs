//! Scripted replies: a builder telling the mock how to answer one request.

use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::{gemini, openai};

/// A complete answer before the per-reply options (delay, headers, cut) are applied.
#[derive(Clone, Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) payload: Payload,
}

#[derive(Clone, Debug)]
pub(crate) enum Payload {
    Full(Bytes),
    /// Server-sent events, each already framed as `data: ...\n\n`.
    Events(Vec<Bytes>),
}

pub(crate) const JSON: &str = "application/json";
pub(crate) const EVENT_STREAM: &str = "text/event-stream; charset=utf-8";

impl Answer {
    pub(crate) fn full(status: StatusCode, content_type: &str, body: Bytes) -> Answer {
        Answer::new(status, content_type, Payload::Full(body))
    }

    pub(crate) fn events(events: Vec<Bytes>) -> Answer {
        Answer::new(StatusCode::OK, EVENT_STREAM, Payload::Events(events))
    }

    fn new(status: StatusCode, content_type: &str, payload: Payload) -> Answer {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, header_value(content_type));
        Answer {
            status,
            headers,
            payload,
        }
    }
}

/// Frames one server-sent event carrying `payload` as its data.
pub(crate) fn sse_frame(payload: &[u8]) -> Bytes {
    let mut frame = Vec::with_capacity(payload.len() + 8);
    frame.extend_from_slice(b"data: ");
    frame.extend_from_slice(payload);
    frame.extend_from_slice(b"\n\n");
    Bytes::from(frame)
}

#[derive(Clone, Debug)]
pub(crate) enum Action {
    Answer(Answer),
    Default,
    DropConnection,
    Hang,
}

/// How to answer one request. Build with a constructor, then refine with the chained options.
///
/// Constructors panic on an invalid status code or header, since those are mistakes in the
/// test script rather than conditions to handle.
#[derive(Clone, Debug)]
pub struct Reply {
    pub(crate) action: Action,
    pub(crate) headers: HeaderMap,
    pub(crate) delay: Duration,
    pub(crate) chunk_delay: Duration,
    pub(crate) cut_after: Option<usize>,
}

impl Reply {
    fn new(action: Action) -> Reply {
        Reply {
            action,
            headers: HeaderMap::new(),
            delay: Duration::ZERO,
            chunk_delay: Duration::ZERO,
            cut_after: None,
        }
    }

    fn answer(answer: Answer) -> Reply {
        Reply::new(Action::Answer(answer))
    }

    /// `status` with a JSON body.
    pub fn json(status: u16, body: serde_json::Value) -> Reply {
        Reply::answer(Answer::full(
            status_code(status),
            JSON,
            Bytes::from(body.to_string()),
        ))
    }

    /// `status` with any body and content type, e.g. HTML error pages or truncated JSON.
    pub fn raw(status: u16, content_type: &str, body: impl Into<Bytes>) -> Reply {
        Reply::answer(Answer::full(status_code(status), content_type, body.into()))
    }

    /// An error in OpenAI's shape, typed from the status (`server_error` for 5xx,
    /// `requests`/`rate_limit_exceeded` for 429, `invalid_request_error` otherwise).
    pub fn error(status: u16, message: &str) -> Reply {
        Reply::answer(openai::error(status_code(status), message))
    }

    /// An error in Gemini's shape, `{"error": {"code", "message", "status"}}`, with the status
    /// name Google uses for the code (`RESOURCE_EXHAUSTED` for 429, `UNAVAILABLE` for 503 ...).
    pub fn gemini_error(status: u16, message: &str) -> Reply {
        Reply::answer(gemini::error(status_code(status), message))
    }

    /// A 200 event stream; each string is one event's data, sent as `data: {payload}\n\n`.
    /// Include `"[DONE]"` yourself if the stream should end the OpenAI way.
    pub fn sse(events: Vec<String>) -> Reply {
        let events = events.iter().map(|e| sse_frame(e.as_bytes())).collect();
        Reply::answer(Answer::events(events))
    }

    /// The default answer of the API the request is for (OpenAI or Gemini), so it can be
    /// combined with the options below.
    pub fn default_behaviour() -> Reply {
        Reply::new(Action::Default)
    }

    /// Closes the connection without sending any response.
    pub fn drop_connection() -> Reply {
        Reply::new(Action::DropConnection)
    }

    /// Never answers; the request stays open until the client gives up or the mock stops.
    pub fn hang() -> Reply {
        Reply::new(Action::Hang)
    }

    /// Adds a response header (replacing a default one of the same name, e.g. content-type).
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        let name = match HeaderName::try_from(name) {
            Ok(name) => name,
            Err(_) => panic!("Reply::header: invalid header name {name:?}"),
        };
        self.headers.append(name, header_value(value));
        self
    }

    /// Waits this long before sending the response head.
    pub fn delay(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }

    /// Waits this long between events of a stream (scripted or default).
    pub fn chunk_delay(mut self, d: Duration) -> Reply {
        self.chunk_delay = d;
        self
    }

    /// For a stream (scripted or default): after `n_events` events (or all of them if fewer)
    /// the connection is aborted without ending the chunked body, so the client sees a broken
    /// stream rather than a clean end. Ignored for non-streaming bodies.
    pub fn cut_after(mut self, n_events: usize) -> Reply {
        self.cut_after = Some(n_events);
        self
    }
}

fn status_code(status: u16) -> StatusCode {
    match StatusCode::from_u16(status) {
        Ok(code) => code,
        Err(_) => panic!("Reply: invalid HTTP status {status}"),
    }
}

fn header_value(value: &str) -> HeaderValue {
    match HeaderValue::try_from(value) {
        Ok(value) => value,
        Err(_) => panic!("Reply: invalid header value {value:?}"),
    }
}
