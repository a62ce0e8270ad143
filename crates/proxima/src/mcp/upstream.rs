//! The gateway as an MCP client of each `[mcp.servers.NAME]`, over streamable HTTP (`url`) or
//! a local command's stdin and stdout (`command`, [`stdio`]): it initializes a session of its
//! own, lists the server's tools (kept for `[mcp] tools_ttl`; a reload builds a new gateway,
//! so the lists are asked again), and forwards tool calls.
//!
//! Every HTTP request carries the server's configured `headers` and nothing from the caller:
//! the gateway key that reached `/mcp` never goes upstream. A server that cannot be reached drops
//! out of the tool list (logged, asked again after [`RETRY_FAILED`]) rather than failing it;
//! the reason is kept for the admin UI's MCP page ([`Upstreams::status`]).

mod stdio;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use serde_json::{json, Value};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::protocol::{self, Message, RpcError, SESSION_HEADER, VERSION_HEADER};
use crate::config::{McpConfig, McpServerConfig};
use crate::error::{Error, ErrorKind, Result};
use crate::http_client::{source_chain, HttpClient};
use crate::sse::SseDecoder;

/// Separates a server's name from its tool's in the names `/mcp` shows: `github__search`.
pub const SEPARATOR: &str = "__";

/// A server whose tools could not be listed is asked again after this long.
const RETRY_FAILED: Duration = Duration::from_secs(10);
/// Pages of `tools/list` read at most from one server.
const MAX_PAGES: usize = 20;
/// Bytes of one answer read at most.
const MAX_ANSWER_BYTES: usize = 16 << 20;

/// Every configured upstream server, by name.
pub struct Upstreams {
    servers: BTreeMap<String, Arc<Server>>,
    ttl: Duration,
}

/// Why a request to an upstream server got no result.
#[derive(Debug)]
pub enum Failure {
    /// The server answered with a JSON-RPC error: passed on as it is.
    Refused(RpcError),
    /// Unreachable, a broken answer, or too slow (`upstream_error` / `upstream_timeout`).
    Failed(Error),
}

struct Server {
    name: String,
    timeout: Duration,
    next_id: AtomicU64,
    transport: Transport,
    /// Its tools as last listed, and until when that list holds.
    tools: Mutex<Option<(Instant, Listing)>>,
}

/// One server's tools as last listed, and why the listing failed if it did (its tools are
/// then none).
#[derive(Clone)]
struct Listing {
    tools: Arc<Vec<Value>>,
    error: Option<Arc<str>>,
}

/// How a server answered when its tools were last listed, as the admin UI shows it.
pub struct ServerStatus {
    pub name: String,
    pub tools: usize,
    /// Why it could not be listed: it is then left out of `/mcp`.
    pub error: Option<Arc<str>>,
}

impl Upstreams {
    /// The servers of `config`, checked by `proxima check` before: a bad header here is a bug.
    pub fn new(config: &McpConfig, http: &Arc<HttpClient>) -> Result<Upstreams> {
        let servers = config
            .servers
            .iter()
            .map(|(name, server)| Ok((name.clone(), Arc::new(Server::new(name, server, http)?))))
            .collect::<Result<_>>()?;
        Ok(Upstreams {
            servers,
            ttl: config.tools_ttl.0,
        })
    }

    /// Every upstream tool, renamed `NAME__TOOL`, from the servers that answer.
    pub async fn tools(&self) -> Vec<Value> {
        let listings = futures_util::future::join_all(
            self.servers.values().map(|server| server.listing(self.ttl)),
        )
        .await;
        listings
            .iter()
            .zip(self.servers.keys())
            .flat_map(|(listing, name)| {
                listing.tools.iter().map(move |tool| {
                    let mut tool = tool.clone();
                    let own = tool["name"].as_str().unwrap_or_default().to_owned();
                    tool["name"] = format!("{name}{SEPARATOR}{own}").into();
                    tool
                })
            })
            .collect()
    }

    /// Every server's state: listed again first where the list kept is too old (so a server
    /// down is tried again, and a local command started).
    pub async fn status(&self) -> Vec<ServerStatus> {
        let listings = futures_util::future::join_all(
            self.servers.values().map(|server| server.listing(self.ttl)),
        )
        .await;
        listings
            .into_iter()
            .zip(self.servers.keys())
            .map(|(listing, name)| ServerStatus {
                name: name.clone(),
                tools: listing.tools.len(),
                error: listing.error,
            })
            .collect()
    }

    /// The server and its own tool name behind `NAME__TOOL`, when such a server is configured.
    pub fn route<'a>(&self, tool: &'a str) -> Option<(&str, &'a str)> {
        let (server, own) = tool.split_once(SEPARATOR)?;
        let (name, _) = self.servers.get_key_value(server)?;
        (!own.is_empty()).then_some((name.as_str(), own))
    }

    /// Calls tool `tool` of server `server` with `arguments`; its result as it gave it.
    pub async fn call(
        &self,
        server: &str,
        tool: &str,
        arguments: Value,
    ) -> std::result::Result<Value, Failure> {
        let Some(server) = self.servers.get(server) else {
            return Err(Failure::Failed(Error::internal(format!(
                "no MCP server `{server}`"
            ))));
        };
        let mut params = json!({"name": tool});
        if !arguments.is_null() {
            params["arguments"] = arguments;
        }
        server.request("tools/call", params).await
    }
}

impl Server {
    fn new(name: &str, config: &McpServerConfig, http: &Arc<HttpClient>) -> Result<Server> {
        let transport = match (&config.url, &config.command) {
            (Some(url), _) => Transport::Http(Http::new(name, url, config, http)?),
            (None, Some(command)) => Transport::Stdio(stdio::Command::new(name, command, config)),
            // Checked by `proxima check`.
            (None, None) => {
                return Err(Error::internal(format!(
                    "mcp.servers.{name} has neither a url nor a command"
                )))
            }
        };
        Ok(Server {
            name: name.to_owned(),
            timeout: config.timeout.0,
            next_id: AtomicU64::new(1),
            transport,
            tools: Mutex::new(None),
        })
    }

    /// Its tools: the list kept, or a new one once that is `ttl` old. One caller asks at a
    /// time; the others wait for its answer.
    async fn listing(&self, ttl: Duration) -> Listing {
        let mut kept = self.tools.lock().await;
        if let Some((until, listing)) = kept.as_ref() {
            if Instant::now() < *until {
                return listing.clone();
            }
        }
        let (tools, error, keep) = match self.list_tools().await {
            Ok(tools) => {
                tracing::debug!(server = %self.name, tools = tools.len(), "MCP server's tools listed");
                (tools, None, ttl)
            }
            Err(e) => {
                let message = match e {
                    Failure::Refused(e) => format!("it answered error {}: {}", e.code, e.message),
                    Failure::Failed(e) => e.message,
                };
                tracing::warn!(server = %self.name, error = %message, "cannot list the tools of an MCP server: they are left out of /mcp for now");
                (Vec::new(), Some(Arc::from(message)), RETRY_FAILED.min(ttl))
            }
        };
        let listing = Listing {
            tools: Arc::new(tools),
            error,
        };
        *kept = Some((Instant::now() + keep, listing.clone()));
        listing
    }

    async fn list_tools(&self) -> std::result::Result<Vec<Value>, Failure> {
        let mut tools = Vec::new();
        let mut cursor: Option<Value> = None;
        for _ in 0..MAX_PAGES {
            let params = match cursor.take() {
                Some(cursor) => json!({"cursor": cursor}),
                None => json!({}),
            };
            let mut page = self.request("tools/list", params).await?;
            if let Some(Value::Array(listed)) = page.get_mut("tools").map(Value::take) {
                tools.extend(listed.into_iter().filter(|t| t["name"].is_string()));
            }
            match page.get("nextCursor") {
                Some(next @ Value::String(_)) => cursor = Some(next.clone()),
                _ => return Ok(tools),
            }
        }
        Ok(tools)
    }

    /// Sends request `method` (the connection opened and initialized first if need be), within
    /// the server's timeout; its result.
    async fn request(&self, method: &str, params: Value) -> std::result::Result<Value, Failure> {
        let sent = match &self.transport {
            Transport::Http(http) => {
                tokio::time::timeout(self.timeout, http.request(&self.next_id, method, params))
                    .await
            }
            Transport::Stdio(command) => {
                tokio::time::timeout(self.timeout, command.request(&self.next_id, method, params))
                    .await
            }
        };
        sent.unwrap_or(Err(Sent::TimedOut(self.timeout)))
            .map_err(|e| e.into_failure(&self.name))
    }
}

/// How the gateway reaches a server.
enum Transport {
    Http(Http),
    Stdio(stdio::Command),
}

/// A server over streamable HTTP.
struct Http {
    url: Uri,
    /// The configured headers, marked sensitive so they never show in logs.
    headers: HeaderMap,
    http: Arc<HttpClient>,
    /// The session with it, once initialized.
    session: Mutex<Option<Arc<Session>>>,
}

#[derive(Debug)]
struct Session {
    id: Option<HeaderValue>,
    version: HeaderValue,
}

/// What the gateway says of itself in `initialize`.
fn initialize_params() -> Value {
    json!({
        "protocolVersion": protocol::VERSIONS[0],
        "capabilities": {},
        "clientInfo": {"name": "proxima", "version": env!("CARGO_PKG_VERSION")},
    })
}

/// The revision a server agreed to in its `initialize` result, if spoken here.
fn agreed_version(result: &Value) -> std::result::Result<&'static str, Sent> {
    result["protocolVersion"]
        .as_str()
        .and_then(protocol::known_version)
        .ok_or_else(|| {
            Sent::Broken(format!(
                "it speaks protocol version {}, which this gateway does not",
                result["protocolVersion"]
            ))
        })
}

impl Http {
    fn new(
        server: &str,
        url: &str,
        config: &McpServerConfig,
        http: &Arc<HttpClient>,
    ) -> Result<Http> {
        let bad = |what: &str| Error::internal(format!("mcp.servers.{server}: bad {what}"));
        let mut headers = HeaderMap::new();
        for (header, value) in &config.headers {
            let name = HeaderName::from_bytes(header.as_bytes()).map_err(|_| bad("header"))?;
            let mut value = HeaderValue::from_str(value.expose()).map_err(|_| bad("header"))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        headers.insert(
            header::USER_AGENT,
            HeaderValue::from_static(crate::http_client::USER_AGENT_VALUE),
        );
        Ok(Http {
            url: url.parse().map_err(|_| bad("url"))?,
            headers,
            http: http.clone(),
            session: Mutex::new(None),
        })
    }

    /// Sends request `method` in the session (opened first if need be). A session the server
    /// forgot (404) is opened again once.
    async fn request(
        &self,
        ids: &AtomicU64,
        method: &str,
        params: Value,
    ) -> std::result::Result<Value, Sent> {
        let session = self.session(ids).await?;
        match self.send(ids, method, params.clone(), &session).await {
            Err(Sent::SessionGone) => {
                self.forget(&session).await;
                let session = self.session(ids).await?;
                self.send(ids, method, params, &session).await
            }
            other => other,
        }
    }

    /// The current session, initialized first when there is none.
    async fn session(&self, ids: &AtomicU64) -> std::result::Result<Arc<Session>, Sent> {
        let mut current = self.session.lock().await;
        if let Some(session) = current.as_ref() {
            return Ok(session.clone());
        }
        let session = Arc::new(self.initialize(ids).await?);
        *current = Some(session.clone());
        Ok(session)
    }

    async fn forget(&self, gone: &Arc<Session>) {
        let mut current = self.session.lock().await;
        if current.as_ref().is_some_and(|s| Arc::ptr_eq(s, gone)) {
            *current = None;
        }
    }

    async fn initialize(&self, ids: &AtomicU64) -> std::result::Result<Session, Sent> {
        let id = ids.fetch_add(1, Ordering::Relaxed);
        let body = protocol::request(id, "initialize", initialize_params());
        let (answer, session_id) = self.exchange(&body, None, Some(id)).await?;
        let version = agreed_version(&answer.map_err(Sent::Refused)?)?;
        let session = Session {
            id: session_id,
            version: HeaderValue::from_static(version),
        };
        let initialized = protocol::notification("notifications/initialized");
        self.exchange(&initialized, Some(&session), None)
            .await
            .map(drop)?;
        Ok(session)
    }

    /// Sends one request in `session`; its outcome.
    async fn send(
        &self,
        ids: &AtomicU64,
        method: &str,
        params: Value,
        session: &Session,
    ) -> std::result::Result<Value, Sent> {
        let id = ids.fetch_add(1, Ordering::Relaxed);
        let body = protocol::request(id, method, params);
        let (answer, _) = self.exchange(&body, Some(session), Some(id)).await?;
        answer.map_err(Sent::Refused)
    }

    /// POSTs one message; for a request (`id`), reads its answer from the JSON or event-stream
    /// body, with the session id the server gave.
    async fn exchange(
        &self,
        message: &Value,
        session: Option<&Session>,
        id: Option<u64>,
    ) -> std::result::Result<(std::result::Result<Value, RpcError>, Option<HeaderValue>), Sent>
    {
        let mut headers = self.headers.clone();
        if let Some(session) = session {
            if let Some(id) = &session.id {
                headers.insert(SESSION_HEADER, id.clone());
            }
            headers.insert(VERSION_HEADER, session.version.clone());
        }
        let body = serde_json::to_vec(message).unwrap_or_default();
        let response = self
            .http
            .post(self.url.clone(), headers, body)
            .await
            .map_err(|e| Sent::Unreachable(source_chain(&e)))?;
        let status = response.status;
        let session_id = response.headers.get(SESSION_HEADER).cloned();
        if status == StatusCode::NOT_FOUND && session.is_some_and(|s| s.id.is_some()) {
            return Err(Sent::SessionGone);
        }
        let event_stream = response
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !status.is_success() {
            let body = read_capped(response.bytes_stream(), 512, Cap::Cut)
                .await
                .unwrap_or_default();
            return Err(Sent::Status(
                status,
                String::from_utf8_lossy(&body).into_owned(),
            ));
        }
        let Some(id) = id else {
            // A notification: 202 and no body is all there is to it.
            return Ok((Ok(Value::Null), session_id));
        };
        let answer = if event_stream {
            answer_from_events(response.bytes_stream(), id).await?
        } else {
            let body = read_capped(response.bytes_stream(), MAX_ANSWER_BYTES, Cap::Refuse).await?;
            let value: Value = serde_json::from_slice(&body)
                .map_err(|e| Sent::Broken(format!("its answer is not JSON: {e}")))?;
            answer_in(value, id)
                .ok_or_else(|| Sent::Broken("its answer holds no reply to the request".into()))?
        };
        Ok((answer, session_id))
    }
}

/// How one exchange with a server went wrong.
enum Sent {
    Refused(RpcError),
    /// It answered 404 to the session: it ended it.
    SessionGone,
    Unreachable(String),
    Status(StatusCode, String),
    Broken(String),
    TimedOut(Duration),
}

impl Sent {
    fn into_failure(self, server: &str) -> Failure {
        let failed = |kind, what: String| {
            Failure::Failed(Error::new(
                kind,
                format!("the MCP server `{server}` {what}"),
            ))
        };
        match self {
            Sent::Refused(e) => Failure::Refused(e),
            Sent::SessionGone => failed(ErrorKind::Upstream, "ended its session".into()),
            Sent::Unreachable(e) => failed(ErrorKind::Upstream, format!("cannot be reached: {e}")),
            Sent::Status(status, body) => failed(
                ErrorKind::Upstream,
                format!("answered HTTP {status}: {}", body.trim()),
            ),
            Sent::Broken(e) => failed(ErrorKind::Upstream, format!("answered badly: {e}")),
            Sent::TimedOut(after) => failed(
                ErrorKind::UpstreamTimeout,
                format!("did not answer within {after:?}"),
            ),
        }
    }
}

/// The answer to request `id` in a JSON body: the message itself, or one of a batch.
fn answer_in(value: Value, id: u64) -> Option<std::result::Result<Value, RpcError>> {
    let messages = match value {
        Value::Array(messages) => messages,
        one => vec![one],
    };
    messages
        .into_iter()
        .find_map(|message| match protocol::parse(message) {
            Ok(Message::Response { id: got, outcome }) if got == json!(id) => Some(outcome),
            _ => None,
        })
}

/// Reads events until the answer to request `id` (notifications and requests of the server
/// on the way are passed over: the gateway does not relay them).
async fn answer_from_events<S, E>(
    mut body: S,
    id: u64,
) -> std::result::Result<std::result::Result<Value, RpcError>, Sent>
where
    S: futures_util::Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::error::Error,
{
    let mut decoder = SseDecoder::default();
    let mut read = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| Sent::Unreachable(source_chain(&e)))?;
        read += chunk.len();
        if read > MAX_ANSWER_BYTES {
            return Err(Sent::Broken(format!(
                "the answer is over {MAX_ANSWER_BYTES} bytes"
            )));
        }
        decoder.push(chunk);
        while let Some(event) = decoder.next_event() {
            let Ok(value) = serde_json::from_slice::<Value>(&event.data) else {
                continue;
            };
            if let Some(answer) = answer_in(value, id) {
                return Ok(answer);
            }
        }
    }
    Err(Sent::Broken(
        "its event stream ended without a reply to the request".into(),
    ))
}

/// What to do with a body longer than wanted.
enum Cap {
    /// Keep its beginning (an error's text, for a message).
    Cut,
    /// Refuse it (an answer cut short is no answer).
    Refuse,
}

/// The whole body, up to `limit` bytes.
async fn read_capped<S, E>(mut body: S, limit: usize, cap: Cap) -> std::result::Result<Bytes, Sent>
where
    S: futures_util::Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::error::Error,
{
    let mut buf = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| Sent::Unreachable(source_chain(&e)))?;
        let room = limit - buf.len();
        if chunk.len() > room {
            return match cap {
                Cap::Cut => {
                    buf.extend_from_slice(&chunk[..room]);
                    Ok(buf.freeze())
                }
                Cap::Refuse => Err(Sent::Broken(format!("the answer is over {limit} bytes"))),
            };
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_reply_is_found_among_other_messages() {
        let batch = json!([
            {"jsonrpc": "2.0", "method": "notifications/progress", "params": {}},
            {"jsonrpc": "2.0", "id": 3, "result": {"tools": []}},
        ]);
        assert_eq!(answer_in(batch, 3), Some(Ok(json!({"tools": []}))));
        let other = json!({"jsonrpc": "2.0", "id": 4, "result": {}});
        assert_eq!(answer_in(other, 3), None);
    }

    #[tokio::test]
    async fn the_reply_is_read_from_an_event_stream_cut_anywhere() {
        let text = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\"}\n\n\
                    event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":9,\"result\":{\"ok\":true}}\n\n";
        let chunks: Vec<std::result::Result<Bytes, std::io::Error>> = text
            .as_bytes()
            .chunks(7)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let answer = answer_from_events(futures_util::stream::iter(chunks), 9).await;
        assert_eq!(answer.ok(), Some(Ok(json!({"ok": true}))));
    }
}
