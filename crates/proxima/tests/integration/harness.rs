//! The test harness: a real gateway on a real socket in front of scriptable mock upstreams,
//! a client that reads answers and SSE streams the way a user's SDK would, and helpers to run
//! the real `proxima` binary.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

use bytes::Bytes;
use futures_util::StreamExt;
use mock_upstream::MockUpstream;
use serde_json::{json, Value};
use tokio::sync::oneshot;

/// The API key every mock provider is configured with; tests look for it upstream and in logs.
pub const PROVIDER_KEY: &str = "sk-upstream-provider-secret-7f3a9c";

/// Gateway config text, built section by section. `[server] listen` is set by the harness.
#[derive(Default)]
pub struct Conf {
    server: Vec<String>,
    sections: Vec<String>,
}

impl Conf {
    pub fn new() -> Conf {
        Conf::default()
    }

    /// One `key = value` line of the `[server]` table.
    pub fn server(mut self, line: &str) -> Conf {
        self.server.push(line.to_owned());
        self
    }

    /// An `openai` provider named `name` pointing at `mock`, with [`PROVIDER_KEY`].
    pub fn openai(self, name: &str, mock: &MockUpstream) -> Conf {
        self.openai_with(name, mock, "")
    }

    /// Like [`Conf::openai`], with more lines for the provider table (e.g. `timeout = "1s"`).
    pub fn openai_with(self, name: &str, mock: &MockUpstream, extra: &str) -> Conf {
        self.section(&format!(
            "[providers.{name}]\nkind = \"openai\"\nbase_url = \"{}/v1\"\napi_key = \"{PROVIDER_KEY}\"\n{extra}\n",
            mock.url()
        ))
    }

    /// A public model with a single target.
    pub fn model(self, public: &str, provider: &str, upstream: &str) -> Conf {
        self.section(&format!(
            "[models.{public}]\ntargets = [{{ provider = \"{provider}\", model = \"{upstream}\" }}]\n"
        ))
    }

    /// A public model with a single target and more lines for the model table.
    pub fn model_with(self, public: &str, provider: &str, upstream: &str, extra: &str) -> Conf {
        self.section(&format!(
            "[models.{public}]\ntargets = [{{ provider = \"{provider}\", model = \"{upstream}\" }}]\n{extra}\n"
        ))
    }

    /// Raw TOML appended as is.
    pub fn section(mut self, text: &str) -> Conf {
        self.sections.push(text.to_owned());
        self
    }

    pub fn text(&self) -> String {
        let mut text = String::from("[server]\nlisten = \"127.0.0.1:0\"\n");
        for line in &self.server {
            text.push_str(line);
            text.push('\n');
        }
        for section in &self.sections {
            text.push('\n');
            text.push_str(section);
        }
        text
    }
}

/// The usual setup: provider `up` at `mock`, public model `chat` served as `gpt-upstream`.
pub fn one_model(mock: &MockUpstream) -> Conf {
    Conf::new()
        .openai("up", mock)
        .model("chat", "up", "gpt-upstream")
}

/// Provider `up` of `kind` (`openai`, `anthropic` or `gemini`) at `mock`, and model `chat` on
/// a model name of that provider's, without retries, with `model_extra` lines.
pub fn chat_on(kind: &str, mock: &MockUpstream, model_extra: &str) -> Conf {
    let (base, upstream) = match kind {
        "anthropic" => ("v1", "claude-sonnet-4-5"),
        "gemini" => ("v1beta", "gemini-2.5-flash"),
        _ => ("v1", "gpt-4o-mini"),
    };
    Conf::new()
        .section(&format!(
            "[providers.up]\nkind = \"{kind}\"\nbase_url = \"{}/{base}\"\napi_key = \"{PROVIDER_KEY}\"\n",
            mock.url()
        ))
        .model_with("chat", "up", upstream, &format!("retries = 0\n{model_extra}"))
}

/// [`one_model`] with more lines for the model table (e.g. `retries = 0`).
pub fn one_model_with(mock: &MockUpstream, extra: &str) -> Conf {
    Conf::new()
        .openai("up", mock)
        .model_with("chat", "up", "gpt-upstream", extra)
}

/// A plain HTTP client. The gateway's reqwest is built without a bundled TLS provider, so the
/// same provider the gateway uses is installed first.
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

/// A gateway running in this process on an ephemeral port.
pub struct Gateway {
    pub base: String,
    /// The database URL the gateway runs on (a temp SQLite file unless the config set one).
    pub database: String,
    client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Gateway {
    pub async fn start(conf: Conf) -> Gateway {
        Gateway::start_text(&conf.text()).await
    }

    /// Starts from config text, which must parse (`${VAR}` resolves to nothing).
    pub async fn start_text(text: &str) -> Gateway {
        let config = proxima::config::Config::parse(text, "test.toml", &|_| None)
            .unwrap_or_else(|problems| panic!("test config rejected:\n{problems}\n---\n{text}"));
        Gateway::start_config(config, None).await
    }

    /// Starts from a config file, which `POST /admin/config/reload` reads again.
    pub async fn start_file(path: &std::path::Path) -> Gateway {
        let config = proxima::config::Config::load(path)
            .unwrap_or_else(|problems| panic!("test config rejected:\n{problems}"));
        Gateway::start_config(config, Some(path.to_owned())).await
    }

    async fn start_config(mut config: proxima::config::Config, path: Option<PathBuf>) -> Gateway {
        config.server.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        if config.storage.database.expose() == "sqlite://proxima.db" {
            // Each gateway gets a database of its own, out of the source tree.
            config.storage.database = proxima::config::Secret::new(sqlite_url("proxima.db"));
        }
        let database = config.storage.database.expose().to_owned();
        let server = proxima::server::Server::bind(config, path)
            .await
            .unwrap_or_else(|e| panic!("bind failed: {e}"));
        let addr = server.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        Gateway {
            base: format!("http://{addr}"),
            database,
            client: http_client(),
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// POSTs a JSON value to `path`.
    pub async fn post_json(&self, path: &str, body: &Value) -> Answer {
        self.send(
            self.client
                .post(self.url(path))
                .header("content-type", "application/json")
                .body(body.to_string()),
        )
        .await
    }

    /// POSTs raw bytes to `path` as JSON.
    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> Answer {
        self.send(
            self.client
                .post(self.url(path))
                .header("content-type", "application/json")
                .body(body),
        )
        .await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(self.client.get(self.url(path))).await
    }

    /// Sends any request and reads the whole answer, within a timeout.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        Answer::read(request).await
    }

    /// A chat completion request, answered in full.
    pub async fn chat(&self, body: Value) -> Answer {
        self.post_json("/v1/chat/completions", &body).await
    }

    /// A chat completion that must succeed; returns the answer.
    pub async fn chat_ok(&self, body: Value) -> Answer {
        let answer = self.chat(body).await;
        assert_eq!(answer.status, 200, "chat failed: {}", answer.text());
        answer
    }

    /// Opens a streaming chat completion; the body is read event by event.
    pub async fn stream(&self, body: Value) -> Sse {
        self.stream_with(self.client.post(self.url("/v1/chat/completions")), body)
            .await
    }

    pub async fn stream_with(&self, request: reqwest::RequestBuilder, body: Value) -> Sse {
        let response = tokio::time::timeout(
            Duration::from_secs(10),
            request
                .header("content-type", "application/json")
                .body(body.to_string())
                .send(),
        )
        .await
        .expect("stream head timed out")
        .expect("stream request failed");
        Sse::new(response)
    }

    /// A request to `path` with `key` as `Authorization: Bearer`.
    pub fn request_as(
        &self,
        key: &str,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.client.request(method, self.url(path)).bearer_auth(key)
    }

    /// A POST of JSON `body` to `path` with `key`, to send (after more headers, maybe).
    pub fn post_as(&self, key: &str, path: &str, body: &Value) -> reqwest::RequestBuilder {
        self.request_as(key, reqwest::Method::POST, path)
            .header("content-type", "application/json")
            .body(body.to_string())
    }

    /// An admin API call made with `key` (the master key, usually), with an optional JSON body.
    pub async fn admin(
        &self,
        key: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Answer {
        let mut request = self.request_as(key, method, path);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        self.send(request).await
    }

    /// Makes a virtual key over the admin API with `master`; returns `(id, secret)`.
    pub async fn create_key(&self, master: &str, body: Value) -> (String, String) {
        let answer = self
            .admin(master, reqwest::Method::POST, "/admin/keys", Some(&body))
            .await;
        assert_eq!(answer.status, 201, "{}", answer.text());
        let created = answer.json();
        (
            created["id"].as_str().expect("id").to_owned(),
            created["key"].as_str().expect("key").to_owned(),
        )
    }

    /// A chat completion sent with `key` as `Authorization: Bearer`.
    pub async fn chat_as(&self, key: &str, body: Value) -> Answer {
        self.send(
            self.request_as(key, reqwest::Method::POST, "/v1/chat/completions")
                .header("content-type", "application/json")
                .body(body.to_string()),
        )
        .await
    }

    /// A connection of its own to the gateway's database, as another process would open it.
    pub async fn store(&self) -> proxima::store::Store {
        proxima::store::Store::connect(&self.database)
            .await
            .unwrap_or_else(|e| panic!("cannot open {}: {}", self.database, e.message))
    }

    /// Stops the server and waits for it to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let result = tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("server did not stop");
            result
                .expect("server task panicked")
                .expect("server failed");
        }
    }

    /// Asserts the gateway still answers a plain request (no crash, no wedged state).
    pub async fn assert_still_serves(&self, model: &str) {
        let answer = self.chat(chat_body(model, "still alive")).await;
        assert_eq!(answer.status, 200, "gateway broken: {}", answer.text());
        assert_eq!(answer.content(), "still alive");
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A complete HTTP answer.
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub async fn read(request: reqwest::RequestBuilder) -> Answer {
        tokio::time::timeout(Duration::from_secs(15), async {
            let response = request.send().await.expect("request failed");
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = response.bytes().await.expect("reading the body failed");
            Answer {
                status,
                headers,
                body,
            }
        })
        .await
        .expect("request timed out")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().expect("header"))
    }

    /// The first choice's message content.
    pub fn content(&self) -> String {
        self.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_else(|| panic!("no content in {}", self.text()))
            .to_owned()
    }

    /// Asserts an OpenAI-shaped JSON error with this status and code; returns the error object.
    pub fn assert_error(&self, status: u16, code: &str) -> Value {
        assert_eq!(self.status, status, "status; body: {}", self.text());
        let content_type = self.header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("application/json"),
            "content-type {content_type:?}; body: {}",
            self.text()
        );
        let body = self.json();
        let error = body
            .get("error")
            .unwrap_or_else(|| panic!("no `error` in {body}"));
        assert_eq!(error["code"], code, "{body}");
        let message = error["message"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "empty message: {body}");
        assert!(error["type"].is_string(), "no type: {body}");
        assert!(
            error.get("param").is_some(),
            "`param` must be present (maybe null): {body}"
        );
        error.clone()
    }
}

/// One thing read off an SSE stream, with when it arrived.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: EventKind,
    pub at: Instant,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// The `data:` payload.
    Data(String),
    /// A `:` comment line, without the colon.
    Comment(String),
}

impl Event {
    pub fn data(&self) -> Option<&str> {
        match &self.kind {
            EventKind::Data(d) => Some(d),
            EventKind::Comment(_) => None,
        }
    }
}

/// An SSE response, read incrementally.
pub struct Sse {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    body: futures_util::stream::BoxStream<'static, reqwest::Result<Bytes>>,
    buf: Vec<u8>,
    pending: std::collections::VecDeque<Event>,
    /// The body ended (cleanly or not).
    pub ended: bool,
    /// The body ended with a transport error.
    pub broken: bool,
}

impl Sse {
    fn new(response: reqwest::Response) -> Sse {
        Sse {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.bytes_stream().boxed(),
            buf: Vec::new(),
            pending: Default::default(),
            ended: false,
            broken: false,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().expect("header"))
    }

    /// The next event, or `None` at the end of the body.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if self.ended {
                return None;
            }
            match self.body.next().await {
                Some(Ok(bytes)) => {
                    self.buf.extend_from_slice(&bytes);
                    self.split(Instant::now());
                }
                Some(Err(_)) => {
                    self.ended = true;
                    self.broken = true;
                }
                None => self.ended = true,
            }
        }
    }

    fn split(&mut self, at: Instant) {
        while let Some(end) = find(&self.buf, b"\n\n") {
            let block: Vec<u8> = self.buf.drain(..end + 2).collect();
            let block = String::from_utf8(block).expect("SSE is UTF-8");
            for line in block.lines().filter(|l| !l.is_empty()) {
                let kind = if let Some(data) = line.strip_prefix("data:") {
                    EventKind::Data(data.strip_prefix(' ').unwrap_or(data).to_owned())
                } else if let Some(comment) = line.strip_prefix(':') {
                    EventKind::Comment(comment.trim().to_owned())
                } else {
                    panic!("unexpected SSE line {line:?}");
                };
                self.pending.push_back(Event { kind, at });
            }
        }
    }

    /// Everything until the body ends, which must happen within `limit`.
    pub async fn collect_within(&mut self, limit: Duration) -> Vec<Event> {
        tokio::time::timeout(limit, async {
            let mut events = Vec::new();
            while let Some(event) = self.next().await {
                events.push(event);
            }
            events
        })
        .await
        .unwrap_or_else(|_| panic!("the stream did not end within {limit:?}"))
    }

    /// All data payloads until the end (10 s at most).
    pub async fn data(&mut self) -> Vec<String> {
        self.collect_within(Duration::from_secs(10))
            .await
            .iter()
            .filter_map(|e| e.data().map(str::to_owned))
            .collect()
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The chunks of a stream that must end with `[DONE]`, parsed.
pub fn chunks_until_done(data: &[String]) -> Vec<Value> {
    assert_eq!(
        data.last().map(String::as_str),
        Some("[DONE]"),
        "stream must end with [DONE]: {data:?}"
    );
    assert_eq!(
        data.iter().filter(|d| *d == "[DONE]").count(),
        1,
        "exactly one [DONE]: {data:?}"
    );
    data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("chunk not JSON ({e}): {d}")))
        .collect()
}

/// The concatenated `delta.content` of choice `index`.
pub fn streamed_content(chunks: &[Value], index: u64) -> String {
    chunks
        .iter()
        .flat_map(|c| c["choices"].as_array().cloned().unwrap_or_default())
        .filter(|choice| choice["index"] == index)
        .filter_map(|choice| choice["delta"]["content"].as_str().map(str::to_owned))
        .collect()
}

/// Tool calls reassembled from deltas of choice 0: `(id, name, arguments)` by call index.
pub fn streamed_tool_calls(chunks: &[Value]) -> Vec<(String, String, String)> {
    let mut calls: Vec<(String, String, String)> = Vec::new();
    for chunk in chunks {
        for choice in chunk["choices"].as_array().into_iter().flatten() {
            for delta in choice["delta"]["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let index = delta["index"].as_u64().expect("tool call index") as usize;
                while calls.len() <= index {
                    calls.push(Default::default());
                }
                let call = &mut calls[index];
                if let Some(id) = delta["id"].as_str() {
                    call.0.push_str(id);
                }
                if let Some(name) = delta["function"]["name"].as_str() {
                    call.1.push_str(name);
                }
                if let Some(args) = delta["function"]["arguments"].as_str() {
                    call.2.push_str(args);
                }
            }
        }
    }
    calls
}

/// Tool calls of a complete answer's first choice: `(id, name, arguments)`.
pub fn tool_calls(answer: &Value) -> Vec<(String, String, String)> {
    answer["choices"][0]["message"]["tool_calls"]
        .as_array()
        .unwrap_or_else(|| panic!("no tool_calls in {answer}"))
        .iter()
        .map(|c| {
            assert_eq!(c["type"], "function", "{c}");
            (
                c["id"].as_str().expect("id").to_owned(),
                c["function"]["name"].as_str().expect("name").to_owned(),
                c["function"]["arguments"]
                    .as_str()
                    .expect("arguments")
                    .to_owned(),
            )
        })
        .collect()
}

/// One upstream stream chunk carrying `content`, as OpenAI sends it.
pub fn openai_chunk(content: &str) -> String {
    json!({
        "id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": "gpt-upstream",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]
    })
    .to_string()
}

/// The upstream chunk that ends an OpenAI stream's choice.
pub fn openai_finish_chunk() -> String {
    json!({
        "id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": "gpt-upstream",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    })
    .to_string()
}

pub fn user(text: &str) -> Value {
    json!({"role": "user", "content": text})
}

pub fn chat_body(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [user(text)]})
}

pub fn stream_body(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [user(text)], "stream": true})
}

pub fn weather_tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
        {"type": "function", "function": {"name": "get_time",
            "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}}}}
    ])
}

// ------------------------------------------------------------------ the database

/// Polls `probe` until it returns true, for at most `limit`; returns how long it took.
pub async fn eventually<F, Fut>(limit: Duration, mut probe: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if probe().await {
            return Some(start.elapsed());
        }
        if start.elapsed() >= limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until `store` holds at least `n` ledger rows (the writer batches them), then asserts
/// it holds exactly `n` and that no more arrive shortly after.
pub async fn assert_ledger_rows(store: &proxima::store::Store, n: i64, within: Duration) {
    let deadline = Instant::now() + within;
    let mut count;
    loop {
        count = store.count_usage().await.expect("count ledger rows");
        if count >= n || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(count, n, "ledger rows after {within:?}");
    // A duplicate written late would show up here.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        store.count_usage().await.expect("count"),
        n,
        "ledger rows later"
    );
}

/// The local PostgreSQL (trust auth); `PROXIMA_TEST_POSTGRES` overrides.
pub fn postgres_base() -> String {
    std::env::var("PROXIMA_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Makes a fresh schema in the local PostgreSQL and returns its name, so that tests running at
/// once never see each other's rows.
pub async fn postgres_schema() -> String {
    use sqlx::Connection;
    let schema = format!("proxima_it_{:016x}", fastrand::u64(..));
    let mut conn = sqlx::PgConnection::connect(&postgres_base())
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {} is needed: {e}", postgres_base()));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut conn)
        .await
        .expect("create schema");
    let _ = conn.close().await;
    schema
}

/// The URL of a new SQLite file `name` in a temp dir of its own.
pub fn sqlite_url(name: &str) -> String {
    let dir = temp_path("db");
    std::fs::create_dir_all(&dir).expect("db dir");
    format!("sqlite://{}", dir.join(name).display())
}

/// The URL of `schema` in the PostgreSQL at `base` (`postgres://user@host:port/db`).
pub fn postgres_url(base: &str, schema: &str) -> String {
    format!("{base}?options=-c%20search_path%3D{schema}")
}

// ------------------------------------------------------------------ the real binary

/// A path in the temp dir unique to this test process and call.
pub fn temp_path(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("proxima-it-{}-{n}-{name}", std::process::id()))
}

/// Writes `text` to a fresh temp file and returns its path.
pub fn temp_file(name: &str, text: &str) -> PathBuf {
    let path = temp_path(name);
    std::fs::write(&path, text).expect("write temp file");
    path
}

/// The `proxima` binary with a clean environment (only PATH kept), in a fresh working
/// directory (where the default `proxima.db` goes).
pub fn proxima() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_proxima"));
    let dir = temp_path("cwd");
    std::fs::create_dir_all(&dir).expect("cwd");
    command.current_dir(dir);
    command.env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    command
}

/// `proxima serve` running as a child process, its stderr captured.
pub struct Served {
    pub child: Child,
    pub addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Served {
    /// Starts `command` (a `serve`) and waits until it logs its listening address.
    pub fn start(mut command: Command) -> Served {
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn proxima");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
        let pipe = child.stderr.take().expect("stderr");
        let log = stderr.clone();
        let reader = std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = listening_addr(&line) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
                let mut log = log.lock().expect("log");
                log.push_str(&line);
                log.push('\n');
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(15)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "proxima did not report its address; stderr:\n{}",
                    stderr.lock().expect("log")
                );
            }
        };
        Served {
            child,
            addr,
            stderr,
            reader: Some(reader),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends SIGTERM to the child.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// [`Served::wait_exit`] on the blocking pool, for async tests.
    pub async fn exit_within(
        mut self,
        limit: Duration,
    ) -> (Option<std::process::ExitStatus>, Served) {
        tokio::task::spawn_blocking(move || (self.wait_exit(limit), self))
            .await
            .expect("wait for the exit")
    }

    /// Waits for the process to exit, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the process (SIGTERM, then kill) and returns everything it wrote to stderr.
    pub fn stop(mut self) -> String {
        if self.child.try_wait().expect("try_wait").is_none() {
            self.terminate();
            if self.wait_exit(Duration::from_secs(10)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        self.stderr.lock().expect("log").clone()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The address in the "listening on http://ADDR" log line, ANSI colours or not.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listening on http://")? + "listening on http://".len()..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}
