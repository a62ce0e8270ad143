//! The request pipeline behind every surface. A call goes through named phases, each a module
//! of its own with one job and one way to fail:
//!
//! 1. [`admit`]: the public model exists (404) and the caller may use it (403); the call's
//!    [`Meter`] opens, so from here on it has its one ledger row however it ends.
//! 2. [`prepare`]: makes the prompt that will really be sent, and measures it: a conversation
//!    turn's stored context is assembled in ([`crate::context`]), and passages retrieved from
//!    vector stores ([`crate::context::passages`]); then the guardrails screen it
//!    ([`crate::guardrails`]) and the caller's PII policy masks, redacts or refuses
//!    ([`crate::pii`]) — before limits, so that admission charges what is sent. (A prompt
//!    template, [`crate::prompts`], is rendered by its surface: the pipeline sees the chat
//!    request it made, and its name and version as ledger tags.)
//! 3. [`cache`]: for a model with caching on, the prompt as sent is looked up; a hit takes one
//!    request from the rate limits (no tokens, no budget) and goes straight to finish, a miss
//!    gets a stage that stores its answer.
//! 4. [`limit`]: takes the call's share of the rate limits and budgets of its key, team and
//!    model (429 `rate_limit_exceeded` / `budget_exceeded`); the meter holds it until it settles
//!    with the real usage.
//! 5. [`route`]: the [`router`](crate::router) tries targets (strategy order, retries,
//!    fallbacks), each attempt a provider call; a stream fails over until its first chunk.
//!    Routing runs in the call's trace ([`crate::telemetry`]): each attempt gets its span and
//!    metrics, and its `traceparent` goes upstream. A call from a surface that can send its
//!    API's answers as they came ([`Directives::verbatim`]), none of whose stages changes the
//!    answer, lets an upstream of that API hand over its body and stream events as they came:
//!    unread but for usage, ids and finish reasons, or read whole for a stage that keeps the
//!    answer ([`finish::Reads`]). Likewise a request that [`prepare`] left as it came goes to
//!    such an upstream as its client wrote it, but for the model ([`Directives::body`]).
//! 6. [`finish`]: the answer — whole, or chunk by chunk as a stream — passes through the
//!    call's [`finish::Stage`]s in the order of their [`finish::Place`]: the cache fill sees
//!    the upstream's answer, PII unmasking turns it into the client's, then output guardrails
//!    (which may refuse it or cut the stream) and what keeps it (a conversation turn, a
//!    response); metering last, which also counts the call's metrics and ends its span. Each
//!    stage sees the call end however it ends.
//!
//! The phases share one [`Exchange`]: the request's context, the resolved model, the meter, the
//! headers phases add to the answer, and the finishing stages. Surfaces translate wire formats
//! in and out; this module decides what happens.

pub mod admit;
pub mod cache;
pub mod finish;
pub mod limit;
pub mod prepare;
pub mod route;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use tokio::time::Instant;

use crate::canonical::{ChatRequest, ChatResponse, EmbeddingsRequest, EmbeddingsResponse};
use crate::error::{Error, ErrorKind, Result};
use crate::gateway::Gateway;
use crate::policy::Caller;
use crate::providers::{ChunkStream, SameApi, Verbatim};
use crate::router::{Resolved, Routed};
use crate::services::Services;
use crate::store::TeamRecord;
use crate::telemetry::{Operation, TraceContext};
use crate::usage::Meter;

/// Who is calling and with what: made by the server's authentication for every `/v1` request.
pub struct RequestContext {
    pub id: Arc<str>,
    pub caller: Arc<Caller>,
    /// The gateway this request started on; it keeps it to the end, across reloads.
    pub gateway: Arc<Gateway>,
    pub services: Arc<Services>,
    pub started: Instant,
    /// When the request arrived, epoch ms.
    pub at: i64,
    /// Tags from `x-proxima-metadata`, as JSON text.
    pub metadata: Option<Arc<str>>,
    /// Set once a meter records this request; a request refused before that (a bad body) is
    /// recorded by the server instead, so every request has its one ledger row.
    pub metered: AtomicBool,
    /// The request's span in its trace (the caller's, joined from `traceparent`, or a new one).
    pub trace: TraceContext,
}

impl RequestContext {
    /// A call the gateway makes on this caller's behalf (a summary, an embedding for search or
    /// ingestion): same caller, limits and tags, its own id `ID-{purpose}` and ledger row.
    pub fn derived(&self, purpose: &str) -> Arc<RequestContext> {
        Arc::new(RequestContext {
            id: Arc::from(format!("{}-{purpose}", self.id)),
            caller: self.caller.clone(),
            gateway: self.gateway.clone(),
            services: self.services.clone(),
            started: Instant::now(),
            at: crate::clock::now_ms(),
            metadata: self.metadata.clone(),
            metered: AtomicBool::new(false),
            trace: self.trace.child(),
        })
    }

    /// Runs the routing of this request's call in its trace, so that each upstream attempt
    /// gets its span, its metrics and the `traceparent` it sends.
    async fn traced<F: std::future::Future>(&self, operation: Operation, routing: F) -> F::Output {
        self.services
            .telemetry
            .route(&self.trace, operation, routing)
            .await
    }

    /// The caller's team, if it has one.
    pub fn team(&self) -> Option<Arc<TeamRecord>> {
        self.caller
            .team
            .as_deref()
            .and_then(|t| self.services.directory.team(t))
    }

    /// The tenant that owns what this request stores (conversations, responses): the caller's
    /// team, or the key itself when it has none.
    pub fn tenant(&self) -> String {
        match &self.caller.team {
            Some(team) => format!("team:{team}"),
            None => format!("key:{}", self.caller.id),
        }
    }

    /// The regions whose providers may serve this caller: its key's and its team's, both when
    /// both are set; `None` means any region.
    pub fn regions(&self) -> Option<Vec<String>> {
        let team = self.team();
        let team = team.as_deref().and_then(|t| t.regions.as_ref());
        match (self.caller.regions.as_ref(), team) {
            (None, None) => None,
            (Some(only), None) | (None, Some(only)) => Some(only.clone()),
            (Some(key), Some(team)) => {
                Some(key.iter().filter(|r| team.contains(r)).cloned().collect())
            }
        }
    }

    /// The public model `model`, if it exists and the caller may use it (404, 403): its model
    /// permissions, and its regions, in which the model must have a target.
    pub fn resolve(&self, model: &str) -> Result<Resolved> {
        let router = &self.gateway.router;
        let mut resolved = router.resolve(model).ok_or_else(|| {
            Error::new(
                ErrorKind::ModelNotFound,
                format!("the model `{model}` does not exist; GET /v1/models lists the models you can use"),
            )
            .with_param("model")
        })?;
        let team = self.team();
        self.caller
            .authorize_model(model, &resolved.model.name, team.as_deref())?;
        // `regions()` as a bit set, made without allocating: every call asks.
        let key = self.caller.regions.as_deref().map(|r| router.region_set(r));
        let team = team.as_deref().and_then(|t| t.regions.as_deref());
        let regions = match (key, team.map(|r| router.region_set(r))) {
            (Some(key), Some(team)) => Some(key.intersection(team)),
            (key, team) => key.or(team),
        };
        if let Some(regions) = regions {
            if !router.serves_in(&resolved, regions) {
                return Err(self.outside_regions(model));
            }
        }
        resolved.regions = regions;
        Ok(resolved)
    }

    /// The refusal of a model none of whose targets is in the caller's regions.
    fn outside_regions(&self, model: &str) -> Error {
        let regions = self.regions().unwrap_or_default();
        let regions = if regions.is_empty() {
            "none: its key's regions and its team's have none in common".to_string()
        } else {
            regions.join(", ")
        };
        Error::new(
            ErrorKind::ModelNotAllowed,
            format!(
                "the model `{model}` has no target in the regions this caller may be served from ({regions}): residency rules keep its calls there"
            ),
        )
        .with_param("model")
    }
}

/// One call on its way through the phases.
pub struct Exchange<'a> {
    pub cx: &'a RequestContext,
    pub resolved: Resolved,
    /// Closes the call's ledger row and settles what [`limit`] took.
    pub meter: Meter,
    /// Headers the phases add to the answer, success or error (`x-ratelimit-*`, ...).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// What the answer passes through on its way out, in order.
    pub stages: finish::Stages,
}

impl Exchange<'_> {
    /// Ends the call before routing: the meter closes with the error, which the client gets
    /// with the headers gathered so far.
    fn refuse<T>(self, mut error: Error) -> Routed<T> {
        self.stages.end(Err(&error));
        self.meter.close(Err(&error));
        error.headers.extend(self.headers);
        route::not_routed(error)
    }
}

/// What the client asked of the gateway itself for one chat call, beside the model call.
#[derive(Default)]
pub struct Directives {
    /// Continue this stored conversation: its context is assembled into the prompt and the
    /// new turn stored after the answer (`x-proxima-conversation`).
    pub conversation: Option<String>,
    /// Passages to retrieve into the prompt for the new message (`x-proxima-vector-stores`,
    /// the Responses API's `file_search`); a conversation adds its own stores.
    pub retrieval: crate::context::passages::Retrieval,
    /// Stages a surface adds to the answer's way out (e.g. storing a Responses-API
    /// response), before the pipeline's own.
    pub stages: Vec<Box<dyn finish::Stage>>,
    /// `cache-control: no-cache` / `no-store`.
    pub cache: cache::Control,
    /// The gateway's own tags for the call's ledger row (`proxima.*`, beside the caller's
    /// `x-proxima-metadata`): the prompt template a run rendered.
    pub tags: crate::usage::Tags,
    /// The surface speaks OpenAI's chat completions and can send an answer in that format as
    /// its upstream sent it ([`ChatResponse::raw`]): the call asks for one when no stage on the
    /// way out changes the answer, which saves writing it again (and reading it, when no
    /// stage keeps it).
    pub verbatim: bool,
    /// The body the surface read the request from, in OpenAI's chat completions format. An
    /// upstream of that API gets it with only the model changed, instead of a body written
    /// anew, as long as nothing changes the request on the way ([`prepare::chat`]).
    pub body: Option<bytes::Bytes>,
}

/// A chat answer from the pipeline.
pub enum ChatOutput {
    Complete(ChatResponse),
    /// Chunks after the first one arrived (so the attempt could still fail over before it).
    Stream(ChunkStream),
}

/// Serves a chat call: a complete answer, or a stream whose first chunk has arrived.
///
/// The phases' futures together take kilobytes; boxed here, the surfaces' handler futures
/// (which axum and tower move several times a request) stay small, and so do the moves. Not
/// an `async fn`: one would hold the request and directives again around the box.
pub fn chat(
    cx: &Arc<RequestContext>,
    req: ChatRequest,
    directives: Directives,
) -> Pin<Box<impl Future<Output = Routed<ChatOutput>> + Send + '_>> {
    Box::pin(serve_chat(cx, req, directives))
}

/// Not an `async fn`: one keeps its arguments twice, as arguments and again as the body's
/// locals (720 bytes of a future that is copied into its box on every call).
#[allow(clippy::manual_async_fn)]
fn serve_chat(
    cx: &Arc<RequestContext>,
    req: ChatRequest,
    directives: Directives,
) -> impl Future<Output = Routed<ChatOutput>> + Send + '_ {
    async move {
        let mut exchange = match admit::admit(
            cx,
            &req.model,
            req.user.as_deref(),
            req.stream,
            Operation::Chat,
            directives.tags,
        ) {
            Ok(exchange) => exchange,
            Err(e) => return route::not_routed(e),
        };
        for stage in directives.stages {
            exchange.stages.push_boxed(stage);
        }
        let prepared = match prepare::chat(
            &mut exchange,
            cx,
            req,
            directives.conversation,
            directives.retrieval,
            directives.body,
        )
        .await
        {
            Ok(prepared) => prepared,
            Err(e) => return exchange.refuse(e),
        };
        if let Some(hit) =
            cache::lookup(&mut exchange, cx, &prepared.request, directives.cache).await
        {
            if let Err(e) = limit::charge_cached(&mut exchange).await {
                return exchange.refuse(e);
            }
            let routed = cache::answer(&mut exchange, hit, prepared.request.stream);
            return finish::chat(exchange, routed);
        }
        if let Err(e) = limit::charge(&mut exchange, &prepared).await {
            return exchange.refuse(e);
        }
        let verbatim = match exchange.stages.reads() {
            _ if !directives.verbatim => Verbatim::No,
            finish::Reads::Outline => Verbatim::Outline,
            finish::Reads::Whole => Verbatim::Whole,
            finish::Reads::Changes => Verbatim::No,
        };
        let same_api = SameApi {
            verbatim,
            body: prepared.body.as_ref(),
        };
        // Boxed: the router's future is large, and the tracing wrappers move it.
        let routing = Box::pin(route::chat(
            &cx.gateway.router,
            &exchange.resolved,
            &prepared.request,
            same_api,
        ));
        let routed = cx.traced(Operation::Chat, routing).await;
        finish::chat(exchange, routed)
    }
}

/// Serves an embeddings call (boxed, as [`chat`] is: the cache and recall call it from inside
/// chat calls).
pub async fn embed(cx: &RequestContext, req: EmbeddingsRequest) -> Routed<EmbeddingsResponse> {
    Box::pin(serve_embed(cx, req)).await
}

async fn serve_embed(cx: &RequestContext, req: EmbeddingsRequest) -> Routed<EmbeddingsResponse> {
    let mut exchange = match admit::admit(
        cx,
        &req.model,
        req.user.as_deref(),
        false,
        Operation::Embeddings,
        Vec::new(),
    ) {
        Ok(exchange) => exchange,
        Err(e) => return route::not_routed(e),
    };
    let prepared = match prepare::embeddings(&mut exchange, req) {
        Ok(prepared) => prepared,
        Err(e) => return exchange.refuse(e),
    };
    if let Err(e) = limit::charge(&mut exchange, &prepared).await {
        return exchange.refuse(e);
    }
    let routing = Box::pin(route::embed(
        &cx.gateway.router,
        &exchange.resolved,
        &prepared.request,
    ));
    let routed = cx.traced(Operation::Embeddings, routing).await;
    finish::embeddings(exchange, routed)
}

/// Counts a request's input tokens with the provider that would serve it. A question about a
/// call, not a call: it is not metered, limited or written to the ledger.
pub async fn count_tokens(cx: &RequestContext, mut req: ChatRequest) -> Routed<u64> {
    // The upstream that counts sees the prompt as a call would send it.
    if let Err(e) = crate::pii::protect_count(cx, &mut req) {
        return route::not_routed(e);
    }
    crate::tokenizer::load().await;
    match cx.resolve(&req.model) {
        Ok(resolved) => route::count_tokens(&cx.gateway.router, &resolved, &req).await,
        Err(e) => route::not_routed(e),
    }
}
