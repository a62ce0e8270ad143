//! The request pipeline behind every surface: policy (model permissions, rate limits,
//! budgets), then routing to provider attempts, then the usage record. Surfaces translate wire
//! formats; this module decides what happens.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::{stream, Stream, StreamExt};
use tokio::time::Instant;

use crate::canonical::{
    ChatChunk, ChatRequest, ChatResponse, EmbeddingInput, EmbeddingsRequest, EmbeddingsResponse,
};
use crate::providers::ChunkStream;
use crate::error::{Error, ErrorKind, Result};
use crate::gateway::Gateway;
use crate::policy::limits::{Budget, RateLimit, Scope};
use crate::policy::Caller;
use crate::pricing;
use crate::router::{RequestShape, Resolved, Routed};
use crate::services::Services;
use crate::store::TeamRecord;
use crate::usage::{Meter, UsageRecord};

/// Output tokens assumed for choosing the cheapest target, and for the tokens-per-minute
/// estimate, when the client set no limit.
const DEFAULT_OUTPUT_ESTIMATE: u32 = 512;
/// Output tokens a budget reserves when the client set no limit: a reservation must be an
/// upper bound for most answers, or concurrent requests overshoot the budget.
const DEFAULT_OUTPUT_RESERVE: u32 = 4096;

/// What every stage knows about the request in hand.
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
}

pub enum ChatOutput {
    Complete(ChatResponse),
    /// Chunks after the first one arrived (so the attempt could still fail over before it).
    Stream(ChunkStream),
}

/// How much a request may take from rate limits and budgets, computed only when some limit
/// applies (counting prompt tokens costs a tokenizer pass).
struct Demand<'a> {
    prompt_tokens: &'a (dyn Fn() -> u64 + Sync),
    max_output: Option<u32>,
}

impl RequestContext {
    fn team(&self) -> Option<Arc<TeamRecord>> {
        self.caller
            .team
            .as_deref()
            .and_then(|t| self.services.directory.team(t))
    }

    /// The public model `model`, if it exists and the caller may use it (404, 403).
    pub fn resolve(&self, model: &str) -> Result<Resolved> {
        let resolved = self.gateway.router.resolve(model).ok_or_else(|| {
            Error::new(
                ErrorKind::ModelNotFound,
                format!("the model `{model}` does not exist; GET /v1/models lists the models you can use"),
            )
            .with_param("model")
        })?;
        self.caller
            .authorize_model(model, &resolved.model.name, self.team().as_deref())?;
        Ok(resolved)
    }

    /// A meter for this request, which writes its ledger row when it closes.
    pub fn meter(&self, model: &str, user: Option<&str>, stream: bool) -> Meter {
        self.metered.store(true, Ordering::Relaxed);
        Meter::new(
            UsageRecord {
                request_id: self.id.clone(),
                at: self.at,
                caller: self.caller.clone(),
                user: user.map(Arc::from),
                public_model: Arc::from(model),
                provider: None,
                upstream_model: None,
                price: None,
                attempts: 0,
                usage: None,
                stream,
                started: self.started,
                first_token: None,
                metadata: self.metadata.clone(),
                cache: None,
            },
            self.services.ledger.clone(),
        )
    }

    /// Resolves the model and takes the request's share of every rate limit and budget that
    /// applies (caller, team, model). The meter holds what was taken, to settle at the end;
    /// the returned headers are the `x-ratelimit-*` of the answer.
    async fn admit(
        &self,
        model: &str,
        meter: &mut Meter,
        demand: Demand<'_>,
    ) -> Result<(Resolved, Vec<(http::HeaderName, http::HeaderValue)>)> {
        let resolved = self.resolve(model)?;
        let team = self.team();
        let caller = &self.caller;
        let mut limits = Vec::new();
        let mut budgets = Vec::new();
        let mut consider =
            |scope: Scope,
             rpm: Option<u64>,
             tpm: Option<u64>,
             budget: Option<crate::config::BudgetConfig>| {
                if let Some(budget) = budget {
                    budgets.push(Budget {
                        scope: scope.clone(),
                        limit: pricing::nanos(budget.usd),
                        period: budget.period,
                    });
                }
                if rpm.is_some() || tpm.is_some() {
                    limits.push(RateLimit { scope, rpm, tpm });
                }
            };
        consider(
            Scope::Key(caller.id.clone()),
            caller.rpm,
            caller.tpm,
            caller.budget,
        );
        if let (Some(team), Some(name)) = (&team, &caller.team) {
            consider(Scope::Team(name.clone()), team.rpm, team.tpm, team.budget);
        }
        let model = &resolved.model;
        if model.rpm.is_some() || model.tpm.is_some() {
            consider(Scope::Model(model.name.clone()), model.rpm, model.tpm, None);
        }
        if limits.is_empty() && budgets.is_empty() {
            return Ok((resolved, Vec::new()));
        }
        let prompt = (demand.prompt_tokens)();
        let limiter = &self.services.limiter;
        let tokens = if limits.iter().any(|l| l.tpm.is_some()) {
            prompt + u64::from(demand.max_output.unwrap_or(DEFAULT_OUTPUT_ESTIMATE))
        } else {
            0
        };
        let max_cost = if budgets.is_empty() {
            0
        } else {
            let shape = RequestShape {
                input_tokens: prompt,
                output_tokens: u64::from(demand.max_output.unwrap_or(DEFAULT_OUTPUT_RESERVE)),
            };
            self.gateway.router.max_cost(&resolved, &shape)
        };
        // Both at once: with Redis, one round trip of waiting instead of two.
        let (grant, reservation) = tokio::join!(limiter.acquire(&limits, tokens), async {
            if budgets.is_empty() {
                Ok(None)
            } else {
                limiter.reserve(&budgets, max_cost).await.map(Some)
            }
        });
        // A refusal gives back what the other check took: a dropped reservation is released,
        // a grant settled at zero returns its tokens.
        let grant = grant?;
        let headers = grant.headers().to_vec();
        let reservation = match reservation {
            Ok(reservation) => reservation,
            Err(mut e) => {
                grant.settle(0);
                e.headers.extend(headers);
                return Err(e);
            }
        };
        meter.hold(grant, reservation);
        Ok((resolved, headers))
    }
}

fn not_routed<T>(error: Error) -> Routed<T> {
    Routed {
        result: Err(error),
        provider: None,
        upstream_model: None,
        attempts: 0,
        price: None,
        limit_headers: Vec::new(),
    }
}

/// Notes how the request was routed on its meter.
fn note_route<T>(meter: &mut Meter, routed: &Routed<T>) {
    if let Some(record) = meter.record() {
        record.provider = routed.provider.clone();
        record.upstream_model = routed.upstream_model.clone();
        record.attempts = routed.attempts;
        record.price = routed.price;
    }
}

/// Serves a chat request: a complete answer, or a stream whose first chunk has arrived.
pub async fn chat(cx: &RequestContext, req: ChatRequest) -> Routed<ChatOutput> {
    let mut meter = cx.meter(&req.model, req.user.as_deref(), req.stream);
    let prompt_tokens = || crate::tokenizer::prompt_tokens(&req);
    let demand = Demand {
        prompt_tokens: &prompt_tokens,
        max_output: req.sampling.max_tokens,
    };
    let (resolved, limit_headers) = match cx.admit(&req.model, &mut meter, demand).await {
        Ok(admitted) => admitted,
        Err(e) => {
            meter.close(Err(&e));
            return not_routed(e);
        }
    };
    let req = &req;
    let shape = RequestShape {
        input_tokens: crate::canonical::estimate_input_tokens(req),
        output_tokens: u64::from(req.sampling.max_tokens.unwrap_or(DEFAULT_OUTPUT_ESTIMATE)),
    };
    let mut routed = cx
        .gateway
        .router
        .execute(&resolved, &shape, |provider, model| async move {
            if req.stream {
                let mut upstream = provider.chat_stream(req, &model).await?;
                // Peek inside the attempt: a stream that fails before its first chunk can
                // still fail over, since nothing has gone to the client yet.
                match upstream.next().await {
                    Some(Ok(first)) => Ok(ChatOutput::Stream(Box::pin(
                        stream::iter([Ok(first)]).chain(upstream),
                    ))),
                    Some(Err(e)) => Err(e),
                    None => Err(Error::upstream(format!(
                        "provider `{}` ended the stream without an answer",
                        provider.name
                    ))),
                }
            } else {
                provider.chat(req, &model).await.map(ChatOutput::Complete)
            }
        })
        .await;
    routed.limit_headers = limit_headers;
    note_route(&mut meter, &routed);
    routed.result = match routed.result {
        // The meter goes with the stream and closes when it ends.
        Ok(ChatOutput::Stream(upstream)) => {
            if let Some(record) = meter.record() {
                record.first_token = Some(Instant::now());
            }
            Ok(ChatOutput::Stream(Box::pin(Metered {
                inner: upstream,
                meter: Some(meter),
            })))
        }
        Ok(ChatOutput::Complete(response)) => {
            if let Some(record) = meter.record() {
                record.usage = response.usage;
            }
            meter.close(Ok(()));
            Ok(ChatOutput::Complete(response))
        }
        Err(e) => {
            meter.close(Err(&e));
            Err(e)
        }
    };
    routed
}

pub async fn embed(cx: &RequestContext, req: EmbeddingsRequest) -> Routed<EmbeddingsResponse> {
    let mut meter = cx.meter(&req.model, req.user.as_deref(), false);
    let prompt_tokens = || match &req.input {
        EmbeddingInput::Text(text) => crate::tokenizer::count(text),
        EmbeddingInput::Texts(texts) => texts.iter().map(|t| crate::tokenizer::count(t)).sum(),
        EmbeddingInput::Tokens(tokens) => tokens.len() as u64,
        EmbeddingInput::TokenLists(lists) => lists.iter().map(|l| l.len() as u64).sum(),
    };
    let demand = Demand {
        prompt_tokens: &prompt_tokens,
        max_output: Some(0),
    };
    let (resolved, limit_headers) = match cx.admit(&req.model, &mut meter, demand).await {
        Ok(admitted) => admitted,
        Err(e) => {
            meter.close(Err(&e));
            return not_routed(e);
        }
    };
    let req = &req;
    let shape = RequestShape {
        input_tokens: 0,
        output_tokens: 0,
    };
    let mut routed = cx
        .gateway
        .router
        .execute(&resolved, &shape, |provider, model| async move {
            provider.embed(req, &model).await
        })
        .await;
    routed.limit_headers = limit_headers;
    note_route(&mut meter, &routed);
    match &routed.result {
        Ok(response) => {
            if let Some(record) = meter.record() {
                record.usage = Some(response.usage);
            }
            meter.close(Ok(()));
        }
        Err(e) => meter.close(Err(e)),
    }
    routed
}

/// Counts a request's input tokens with the provider that would serve it.
pub async fn count_tokens(cx: &RequestContext, req: ChatRequest) -> Routed<u64> {
    let resolved = match cx.resolve(&req.model) {
        Ok(resolved) => resolved,
        Err(e) => return not_routed(e),
    };
    let req = &req;
    let shape = RequestShape {
        input_tokens: 0,
        output_tokens: 0,
    };
    cx.gateway
        .router
        .execute(&resolved, &shape, |provider, model| async move {
            provider.count_tokens(req, &model).await
        })
        .await
}

/// Passes a stream through, noting usage, and closes the meter when the stream ends, fails,
/// or is dropped because the client went away.
struct Metered {
    inner: ChunkStream,
    meter: Option<Meter>,
}

impl Stream for Metered {
    type Item = Result<ChatChunk>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = std::task::ready!(self.inner.as_mut().poll_next(cx));
        match &item {
            Some(Ok(chunk)) => {
                if let Some(usage) = chunk.usage {
                    if let Some(record) = self.meter.as_mut().and_then(Meter::record) {
                        record.usage = Some(usage);
                    }
                }
            }
            Some(Err(e)) => {
                if let Some(meter) = self.meter.take() {
                    meter.close(Err(e));
                }
            }
            None => {
                if let Some(meter) = self.meter.take() {
                    meter.close(Ok(()));
                }
            }
        }
        Poll::Ready(item)
    }
}
