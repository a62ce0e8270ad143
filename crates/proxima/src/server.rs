//! The HTTP server: where the request path is assembled, and graceful shutdown.
//!
//! # The path of a request
//!
//! A connection is served on one of the workers, one single-threaded runtime per core
//! ([`workers`]); the tasks, timers and upstream connections of its requests stay on that
//! thread (blocking work, such as counting a long prompt's tokens, goes to its blocking pool).
//!
//! 1. [`request_id`] (around the router, so every route): takes `x-request-id` from the client
//!    or makes one, echoes it on the response, and runs the request with it as its log tag
//!    ([`crate::telemetry::log`]), so every log line of the request (the router's failure logs
//!    included) names it.
//! 2. [`authenticate`] (`/v1/*` and `/mcp`, a tower layer on their routes): starts the
//!    request's trace context from the caller's `traceparent` ([`crate::telemetry`]; echoed on
//!    the answer), loads the current [`Gateway`] (a request keeps the one it started on across
//!    reloads), authenticates the key (401 in the surface's error shape), and inserts the
//!    [`RequestContext`](crate::pipeline::RequestContext) extension that handlers read. A call
//!    refused from here on before the pipeline meters it (a bad body or header) still gets its
//!    ledger row.
//! 3. Surface handler ([`surface::openai`], [`surface::anthropic`], [`surface::responses`]):
//!    reads the body (413 over `max_body_bytes`, 400 on bad JSON or field types) into the
//!    canonical request. A prompt run ([`surface::prompts`]) first renders its stored
//!    template into a chat completions request, then goes on as `/v1/chat/completions` does.
//! 4. [`pipeline`](crate::pipeline), in named phases over one exchange:
//!    admit (404 unknown model, 403 not allowed; the meter opens) → prepare (the prompt as it
//!    will be sent: a conversation turn gets its stored context assembled in by
//!    [`context`](crate::context), 404 for another tenant's conversation; passages retrieved
//!    from named vector stores by [`retrieval`](crate::retrieval)) → cache (a stored answer
//!    for the same request, or a close one, skips routing: [`cache`](crate::cache)) → limit
//!    (429 rate limits and budgets of key, team and model) → route (the
//!    [`router`](crate::router): strategy order, every target, retries, fallbacks; a stream
//!    fails over until its first chunk; a request prepare left as it came goes to an upstream
//!    of the client's API as the client wrote it, but for the model) → finish (the answer's stages; metering settles the
//!    limits and writes the one ledger row when the call ends, however it ends; a conversation
//!    turn or a stored response is kept by a stage once the answer is complete).
//! 5. Back in the surface: the canonical answer is written in the client's format (or, when
//!    the upstream speaks it and the call asked for it, passed on as the upstream wrote it), with
//!    `x-proxima-provider`, `x-proxima-model`, `x-proxima-attempts` and any `x-ratelimit-*`;
//!    a stream goes out through [`surface::events`], chunk by chunk, batched when chunks arrive
//!    together, with keep-alive comments in long silences and an error event if the upstream
//!    breaks.
//!
//! `GET /metrics` serves the Prometheus metrics, without a key like the health checks.
//!
//! `/v1/files` ([`surface::files`]) and `/v1/vector_stores` ([`surface::vector_stores`]) store
//! documents and search them; a file added to a store is ingested in the background
//! ([`crate::retrieval::ingest`]), its embedding calls made through the pipeline.
//!
//! `/mcp` ([`crate::mcp`]) serves the Model Context Protocol to callers with a gateway key
//! (authenticated as in step 2): the gateway's own tools over the caller's data, and the tools
//! of the configured upstream MCP servers, each call with its ledger row.
//!
//! `/v1/conversations` ([`surface::conversations`]) and the stored-response routes of
//! [`surface::responses`] read and write the conversation store directly, for the caller's
//! tenant only; so does `/v1/files` ([`surface::files`]) with uploaded files, whose bodies
//! are limited by `[files] max_bytes` instead of `max_body_bytes`. `/admin/*` takes the master key or an admin key ([`authenticate_admin`]), which
//! names the caller as the [`Actor`] of the [`audit`](crate::audit) log every admin change is
//! recorded in. `/ui` is the admin web UI ([`crate::ui`]): a signed-in admin's pages, whose
//! playground runs chat completions through [`call_as`] like `/v1`. A reload (SIGHUP, the config file changing, or `POST /admin/config/reload`)
//! builds a new gateway and swaps it in ([`AppState::reload`]). In the background: old
//! conversations expire ([`crate::context::expire_old`]) and old ledger rows are purged into
//! daily rollups ([`crate::usage::retention`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use http::{HeaderValue, StatusCode};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::audit::Actor;
use crate::canonical::Api;
use crate::config::Config;
use crate::error::{Error, ErrorKind};
use crate::gateway::Gateway;
use crate::http_client::HttpClient;
use crate::router::health::HealthRegistry;
use crate::services::Services;
use crate::state::AppState;
use crate::surface;
use crate::telemetry::Telemetry;

mod authenticate;
mod request_id;
mod workers;

pub(crate) use authenticate::call_as;
use authenticate::Authenticate;
pub use request_id::RequestId;

pub fn app(state: Arc<AppState>) -> axum::Router {
    let v1 = axum::Router::new()
        .route(
            "/v1/chat/completions",
            post(surface::openai::chat_completions),
        )
        .route("/v1/embeddings", post(surface::openai::embeddings))
        .route("/v1/models", get(surface::openai::models))
        .route("/v1/models/{*model}", get(surface::openai::model))
        .route("/v1/messages", post(surface::anthropic::messages))
        .route(
            "/v1/messages/count_tokens",
            post(surface::anthropic::count_tokens),
        )
        .route("/v1/responses", post(surface::responses::create))
        .route("/v1/conversations", post(surface::conversations::create))
        .route(
            "/v1/conversations/{id}",
            get(surface::conversations::get)
                .post(surface::conversations::update)
                .delete(surface::conversations::delete),
        )
        .route(
            "/v1/conversations/{id}/items",
            get(surface::conversations::list_items).post(surface::conversations::add_items),
        )
        .route(
            "/v1/conversations/{id}/items/{item}",
            get(surface::conversations::get_item).delete(surface::conversations::delete_item),
        )
        .route(
            "/v1/responses/{id}",
            get(surface::responses::get).delete(surface::responses::delete),
        )
        .route(
            "/v1/responses/{id}/input_items",
            get(surface::responses::input_items),
        )
        .route(
            "/v1/responses/{id}/cancel",
            post(surface::responses::cancel),
        )
        .route(
            "/v1/files",
            get(surface::files::list).post(surface::files::upload),
        )
        .route(
            "/v1/files/{id}",
            get(surface::files::get).delete(surface::files::delete),
        )
        .route("/v1/files/{id}/content", get(surface::files::content))
        .route(
            "/v1/vector_stores",
            get(surface::vector_stores::list_stores).post(surface::vector_stores::create),
        )
        .route(
            "/v1/vector_stores/{id}",
            get(surface::vector_stores::get)
                .post(surface::vector_stores::update)
                .delete(surface::vector_stores::delete),
        )
        .route(
            "/v1/vector_stores/{id}/files",
            get(surface::vector_stores::list_files).post(surface::vector_stores::add_file),
        )
        .route(
            "/v1/vector_stores/{id}/files/{file_id}",
            get(surface::vector_stores::get_file)
                .post(surface::vector_stores::update_file)
                .delete(surface::vector_stores::remove_file),
        )
        .route(
            "/v1/vector_stores/{id}/file_batches",
            post(surface::vector_stores::create_batch),
        )
        .route(
            "/v1/vector_stores/{id}/file_batches/{batch_id}",
            get(surface::vector_stores::get_batch),
        )
        .route(
            "/v1/vector_stores/{id}/file_batches/{batch_id}/cancel",
            post(surface::vector_stores::cancel_batch),
        )
        .route(
            "/v1/vector_stores/{id}/file_batches/{batch_id}/files",
            get(surface::vector_stores::list_batch_files),
        )
        .route(
            "/v1/vector_stores/{id}/search",
            post(surface::vector_stores::search),
        )
        .route("/v1/prompts/{name}/run", post(surface::prompts::run))
        .route_layer(Authenticate(state.clone()));
    let mcp = axum::Router::new()
        .route(
            "/mcp",
            post(crate::mcp::post)
                .get(crate::mcp::get)
                .delete(crate::mcp::delete),
        )
        .route_layer(Authenticate(state.clone()))
        .route_layer(middleware::from_fn(crate::mcp::errors_in_json_rpc));
    let admin = axum::Router::new()
        .route("/admin/models", get(surface::admin::models))
        .route(
            "/admin/keys",
            get(surface::admin::list_keys).post(surface::admin::create_key),
        )
        .route(
            "/admin/keys/{id}",
            get(surface::admin::get_key)
                .patch(surface::admin::update_key)
                .delete(surface::admin::revoke_key),
        )
        .route(
            "/admin/teams",
            get(surface::admin::list_teams).post(surface::admin::create_team),
        )
        .route(
            "/admin/teams/{name}",
            get(surface::admin::get_team)
                .patch(surface::admin::update_team)
                .delete(surface::admin::delete_team),
        )
        .route("/admin/usage", get(surface::admin::usage))
        .route("/admin/logs", get(surface::admin::logs))
        .route("/admin/config/reload", post(surface::admin::reload))
        .route("/admin/audit", get(surface::admin::audit))
        .route(
            "/admin/prompts",
            get(surface::prompts::list).post(surface::prompts::create),
        )
        .route(
            "/admin/prompts/{name}",
            get(surface::prompts::get).delete(surface::prompts::delete),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            authenticate_admin,
        ));
    axum::Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .merge(v1)
        .merge(mcp)
        .merge(admin)
        .merge(crate::ui::routes(state.clone()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// Which API's error shape a path answers in.
fn api_for_path(path: &str) -> Api {
    if path.starts_with("/v1/messages") {
        Api::Anthropic
    } else if path.starts_with("/v1/responses") {
        Api::Responses
    } else {
        Api::OpenAiChat
    }
}

/// The admin API takes the master key or an admin virtual key, and is off without a master key.
async fn authenticate_admin(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let gateway = state.gateway.load();
    if gateway.config.server.master_key.is_none() {
        return Error::new(
            ErrorKind::NotFound,
            "the admin API is off: set server.master_key to use it",
        )
        .into_response(Api::OpenAiChat);
    }
    match gateway
        .auth
        .authenticate(req.headers(), &state.services.directory)
        .await
    {
        Ok(caller) if caller.admin => {
            let request_id = req.extensions().get::<RequestId>().map(|r| r.0.clone());
            let actor = Actor::caller(&caller, request_id.as_deref().unwrap_or("unknown"));
            req.extensions_mut().insert(actor);
            req.extensions_mut().insert(state.clone());
            next.run(req).await
        }
        Ok(_) => Error::new(
            ErrorKind::ModelNotAllowed,
            "the admin API needs the master key or an admin key",
        )
        .into_response(Api::OpenAiChat),
        Err(e) => e.into_response(Api::OpenAiChat),
    }
}

async fn live() -> Response {
    surface::json_response(&json!({"status": "ok"}))
}

/// Ready while not shutting down. Still ready with the database or Redis away (usage records
/// wait, limits fall back to each replica's own), but the body says so.
async fn ready(State(state): State<Arc<AppState>>) -> Response {
    let mut body = state.services.health();
    if state.ready.load(Ordering::Relaxed) {
        body["status"] = "ready".into();
        surface::json_response(&body)
    } else {
        body["status"] = "shutting_down".into();
        let mut response = surface::json_response(&body);
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        response
    }
}

/// Prometheus metrics, unauthenticated like the health checks (model and provider names and
/// counts, nothing secret); 404 with `[telemetry] metrics = false`.
async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let ledger = state.services.ledger.status();
    match state
        .services
        .telemetry
        .render(&state.gateway().router, &ledger)
    {
        Some(text) => {
            let mut response = Response::new(axum::body::Body::from(text));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        None => Error::new(
            ErrorKind::NotFound,
            "metrics are off: set [telemetry] metrics = true to serve them",
        )
        .into_response(Api::OpenAiChat),
    }
}

/// 404 for unknown paths, in the shape of the API the path belongs to.
async fn not_found(uri: http::Uri) -> Response {
    Error::new(
        ErrorKind::NotFound,
        format!("no such endpoint: {}", uri.path()),
    )
    .into_response(api_for_path(uri.path()))
}

async fn method_not_allowed(req: Request) -> Response {
    let mut response = Error::invalid_request(format!(
        "{} is not supported on {}",
        req.method(),
        req.uri().path()
    ))
    .into_response(api_for_path(req.uri().path()));
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    response
}

/// A bound, not yet running server.
pub struct Server {
    listener: TcpListener,
    state: Arc<AppState>,
    grace: Duration,
    /// Threads serving connections, each with a runtime of its own (see [`workers`]).
    workers: usize,
}

impl Server {
    /// Builds the gateway from `config` and binds its listener. `config_path` is where the
    /// config came from, for reloads.
    pub async fn bind(config: Config, config_path: Option<PathBuf>) -> Result<Server, Error> {
        let http = Arc::new(HttpClient::new()?);
        let health = HealthRegistry::default();
        let listen = config.server.listen;
        let grace = config.server.shutdown_grace.0;
        let telemetry = Telemetry::start(&config.telemetry, http.clone())?;
        let services = Services::start(&config.storage, telemetry).await?;
        let gateway = Gateway::build(config, &http, &health, &services.telemetry)?;
        let listener = TcpListener::bind(listen).await.map_err(|e| {
            Error::new(
                ErrorKind::Internal,
                format!("cannot listen on {listen}: {e}"),
            )
        })?;
        Ok(Server {
            listener,
            state: Arc::new(AppState {
                gateway: ArcSwap::from_pointee(gateway),
                services,
                ready: AtomicBool::new(true),
                http,
                health,
                config_path,
                reloading: tokio::sync::Mutex::new(()),
            }),
            grace,
            workers: 1,
        })
    }

    /// Serves on `count` worker threads: the one `run` is called on and `count - 1` more.
    pub fn with_workers(mut self, count: usize) -> Server {
        self.workers = count.max(1);
        self
    }

    pub fn state(&self) -> Arc<AppState> {
        self.state.clone()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Serves until `shutdown` resolves, then stops accepting and lets requests and streams in
    /// flight finish for up to the grace period.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let state = self.state.clone();
        // A router served as it is rebuilds its routes with their state for every connection;
        // `into_make_service` does that once and gives each connection a shared copy.
        let routes = axum::ServiceExt::<Request>::into_make_service(request_id::WithRequestId(
            app(state.clone()),
        ));
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let local = self.local_addr();
        let mut workers = workers::Workers::start(self.workers, local, &routes, &stopping)?;
        let watcher = tokio::spawn(reload_triggers(state.clone()));
        let _expire = AbortOnDrop(tokio::spawn(crate::context::expire_old(state.clone())));
        let _retention = AbortOnDrop(tokio::spawn(crate::usage::retention::keep(state.clone())));
        let draining = Arc::new(Notify::new());
        let notify = draining.clone();
        let server = axum::serve(workers.balancer(self.listener), routes).with_graceful_shutdown(
            async move {
                shutdown.await;
                state.ready.store(false, Ordering::Relaxed);
                tracing::info!("shutting down: no new connections; waiting for requests in flight");
                stop.send_replace(true);
                notify.notify_one();
            },
        );
        let grace = self.grace;
        let _stop_watching = AbortOnDrop(watcher);
        let result = tokio::select! {
            result = async {
                let result = std::future::IntoFuture::into_future(server).await;
                workers.drained().await;
                result
            } => result,
            () = async move {
                draining.notified().await;
                tokio::time::sleep(grace).await;
            } => {
                tracing::warn!("grace period of {grace:?} over: closing the connections still open");
                Ok(())
            }
        };
        // Every request has closed its meter by now: write out the ledger.
        self.state.services.shutdown(LEDGER_FLUSH).await;
        workers.stop();
        result
    }
}

/// How long the usage records queued at shutdown may take to reach the database before they
/// go to the spill file.
const LEDGER_FLUSH: Duration = Duration::from_secs(5);

/// How often the config file is checked for changes.
const CONFIG_POLL: Duration = Duration::from_secs(1);

/// Reloads on SIGHUP and when the config file changes (polled: no extra dependency, and it
/// works on every file system).
async fn reload_triggers(state: Arc<AppState>) {
    let Some(path) = state.config_path.clone() else {
        return;
    };
    let modified = |path: &PathBuf| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let mut last = modified(&path);
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let signalled = async {
            match hangup.as_mut() {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let signalled = std::future::pending::<()>();
        let reason = tokio::select! {
            () = signalled => "SIGHUP",
            () = tokio::time::sleep(CONFIG_POLL) => {
                let now = modified(&path);
                if now == last {
                    continue;
                }
                last = now;
                "the config file changed"
            }
        };
        tracing::info!("reloading the config: {reason}");
        if let Err(e) = state.reload(&Actor::system(reason)).await {
            tracing::error!(problems = %e.message, "the new config is invalid: keeping the running one");
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
