//! Step 2 of the request path, for `/v1/*` and `/mcp`: the request's trace context (from the
//! caller's `traceparent`, echoed on the answer), the current [`Gateway`] (a request keeps the
//! one it started on across reloads), the caller behind the key (401 in the surface's error
//! shape), and the [`RequestContext`] handlers read. A call refused from here on before the
//! pipeline meters it (a bad body or header) still gets its ledger row.
//!
//! A tower layer, not an axum `from_fn` middleware: `from_fn` clones its inner route, boxes a
//! `Next` around the clone and boxes its own future for every request (about 2,600 of the
//! 127k instructions of a chat call with a virtual key). Here a caller known without waiting
//! (no key needed, a static key, a virtual key in memory: every request but a JWT's or a key
//! made on another replica since the last sync) goes straight to the route, and the future is
//! a plain struct. Only a caller that takes a wait goes the boxed way.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use axum::extract::Request;
use axum::response::Response;
use http::HeaderName;
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_service::Service;

use super::{api_for_path, RequestId};
use crate::error::{Error, ErrorCode};
use crate::gateway::Gateway;
use crate::pipeline::RequestContext;
use crate::policy::Caller;
use crate::state::AppState;
use crate::telemetry::trace::TRACEPARENT;
use crate::telemetry::{Operation, TraceContext};

/// The caller's tags for the ledger.
const METADATA: HeaderName = HeaderName::from_static("x-proxima-metadata");

/// Authenticates every request of the routes it is laid on ([`Authenticated`]).
#[derive(Clone)]
pub struct Authenticate(pub Arc<AppState>);

impl<S> tower_layer::Layer<S> for Authenticate {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Authenticated<S> {
        Authenticated {
            state: self.0.clone(),
            inner,
        }
    }
}

/// A route whose requests are authenticated first.
#[derive(Clone)]
pub struct Authenticated<S> {
    state: Arc<AppState>,
    inner: S,
}

impl<S> Service<Request> for Authenticated<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Authenticating<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let state = &self.state;
        let trace = state.services.telemetry.start_trace(req.headers());
        let gateway = state.gateway.load_full();
        let known = gateway
            .auth
            .authenticate_now(req.headers(), &state.services.directory);
        match known {
            Some(Ok(caller)) => match Call::begin(state, gateway, caller, trace, &mut req) {
                Ok(call) => Authenticating::Routed {
                    inner: self.inner.call(req),
                    call: Some(call),
                    trace,
                },
                Err(response) => Authenticating::answered(*response, trace),
            },
            Some(Err(e)) => {
                Authenticating::answered(e.into_response(api_for_path(req.uri().path())), trace)
            }
            None => {
                // The ready service goes with the request; a clone waits for the next one.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                let state = state.clone();
                let answer = async move {
                    let caller = gateway
                        .auth
                        .authenticate_later(req.headers(), &state.services.directory)
                        .await;
                    match caller {
                        Ok(caller) => {
                            call_as(&state, gateway, caller, trace, req, |req| async move {
                                let Ok(response) = inner.call(req).await;
                                response
                            })
                            .await
                        }
                        Err(e) => e.into_response(api_for_path(req.uri().path())),
                    }
                };
                Authenticating::Waiting {
                    answer: Box::pin(answer),
                    trace,
                }
            }
        }
    }
}

pin_project! {
    /// An authenticated request's answer, with the request span's `traceparent`.
    #[project = Step]
    pub enum Authenticating<F> {
        /// Known at once: the route serves it.
        Routed { #[pin] inner: F, call: Option<Call>, trace: TraceContext },
        /// The caller takes a wait (a JWT to verify, a key to look up in the database).
        Waiting { answer: Pin<Box<dyn Future<Output = Response> + Send>>, trace: TraceContext },
        /// Answered without the route: refused.
        Answered { response: Option<Response> },
    }
}

impl<F> Authenticating<F> {
    fn answered(response: Response, trace: TraceContext) -> Self {
        Authenticating::Answered {
            response: Some(with_traceparent(response, trace)),
        }
    }
}

impl<F> Future for Authenticating<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let response = match self.project() {
            Step::Routed { inner, call, trace } => {
                let Ok(mut response) = ready!(inner.poll(cx));
                if let Some(call) = call.take() {
                    response = call.finish(response);
                }
                with_traceparent(response, *trace)
            }
            Step::Waiting { answer, trace } => {
                with_traceparent(ready!(answer.as_mut().poll(cx)), *trace)
            }
            // Polled again once ready, against the contract: an empty answer, not a panic.
            Step::Answered { response } => response.take().unwrap_or_default(),
        };
        Poll::Ready(Ok(response))
    }
}

fn with_traceparent(mut response: Response, trace: TraceContext) -> Response {
    response
        .headers_mut()
        .insert(TRACEPARENT, trace.traceparent());
    response
}

/// Runs `handler` on `req` as `caller`, authenticated already: the `/v1` routes come through
/// here, and so does the admin UI's playground, as the signed-in admin. See [`Call`].
pub(crate) async fn call_as<F, Fut>(
    state: &AppState,
    gateway: Arc<Gateway>,
    caller: Arc<Caller>,
    trace: TraceContext,
    mut req: Request,
    handler: F,
) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    match Call::begin(state, gateway, caller, trace, &mut req) {
        Ok(call) => call.finish(handler(req).await),
        Err(response) => *response,
    }
}

/// One request of an authenticated caller, from its [`RequestContext`] to its answer.
pub struct Call {
    cx: Arc<RequestContext>,
    /// A POST: a call, which has its ledger row however it ends.
    is_call: bool,
    operation: Operation,
}

impl Call {
    /// Makes the request's context and puts it in `req`. A bad `x-proxima-metadata` is
    /// answered at once (`Err`, its ledger row written; boxed, as refusals are rare).
    fn begin(
        state: &AppState,
        gateway: Arc<Gateway>,
        caller: Arc<Caller>,
        trace: TraceContext,
        req: &mut Request,
    ) -> Result<Call, Box<Response>> {
        let (metadata, bad_metadata) = match request_metadata(req.headers()) {
            Ok(metadata) => (metadata, None),
            Err(e) => (None, Some(e)),
        };
        let id = req
            .extensions()
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_else(|| Arc::from("unknown"));
        let cx = Arc::new(RequestContext {
            id,
            caller,
            gateway,
            services: state.services.clone(),
            started: Instant::now(),
            at: crate::clock::now_ms(),
            metadata,
            metered: AtomicBool::new(false),
            trace,
        });
        let call = Call {
            cx,
            is_call: req.method() == http::Method::POST,
            operation: Operation::for_path(req.uri().path()),
        };
        match bad_metadata {
            Some(e) => Err(Box::new(
                call.finish(e.into_response(api_for_path(req.uri().path()))),
            )),
            None => {
                req.extensions_mut().insert(call.cx.clone());
                Ok(call)
            }
        }
    }

    /// The answer, once the ledger row of a call refused before the pipeline metered it (a
    /// bad body or header) is written, with what the client was told.
    fn finish(self, response: Response) -> Response {
        let status = response.status().as_u16();
        if self.is_call && status >= 400 && !self.cx.metered.load(Ordering::Relaxed) {
            let code = response.extensions().get::<ErrorCode>().map(|c| c.0);
            crate::pipeline::admit::record_refusal(&self.cx, self.operation, status, code);
        }
        response
    }
}

/// `x-proxima-metadata`: a JSON object of tags for the ledger, kept as compact text.
fn request_metadata(headers: &http::HeaderMap) -> Result<Option<Arc<str>>, Error> {
    let Some(value) = headers.get(METADATA) else {
        return Ok(None);
    };
    let bad = || {
        Error::invalid_request(
            "x-proxima-metadata must be a JSON object of tags, like {\"app\": \"search\"}",
        )
    };
    let text = value.to_str().map_err(|_| bad())?;
    match serde_json::from_str::<serde_json::Value>(text) {
        // `proxima.*` tags are the gateway's own notes (e.g. a guardrail's flag).
        Ok(serde_json::Value::Object(tags)) if tags.keys().any(|k| k.starts_with("proxima.")) => {
            Err(Error::invalid_request(
                "x-proxima-metadata may not set tags named `proxima.*`: the gateway sets those",
            ))
        }
        Ok(serde_json::Value::Object(tags)) => {
            Ok(Some(Arc::from(serde_json::Value::Object(tags).to_string())))
        }
        _ => Err(bad()),
    }
}
