//! The response cache, between prepare and limit: a call whose prompt, as it will really be
//! sent, was answered before is answered again with no upstream call; any other call gets a
//! stage that stores its answer once it is complete. Only for models with caching on (`[cache]`,
//! and not `cache = false` on the model); their answers carry `x-proxima-cache`: `hit`,
//! `semantic-hit`, `miss` or `bypass`.
//!
//! - **Exact**: the key is a digest of the normalised canonical request — the scope, the public
//!   model, every message, tools and `tool_choice`, `response_format`, sampling and every other
//!   parameter that changes the answer, and unmodelled fields and headers — but not `user`,
//!   `metadata`, the stream flag, the surface the call came in on, nor prompt-caching hints
//!   ([`key`] writes them to be hashed).
//! - **Semantic** (`[cache] semantic`): the embedding of the last user message, compared only
//!   with those of entries in the same partition: a digest of everything else, earlier turns
//!   included. A question asked after another history, or with other instructions, tools or
//!   parameters, is in another partition and never gets this one's answer.
//! - **Scope**: the tenant (`team`), the key, or no one (`global`) is part of every digest, so
//!   no caller is served another tenant's answer unless the operator chose `global`.
//! - `cache-control: no-cache` skips the lookup (`bypass`), `no-store` the storing. Only whole,
//!   successful answers are stored: not errors, refusals, content-filtered or cut streams.
//!
//! A hit goes through the call's finishing stages like any answer (a conversation turn is
//! stored, metering writes its row with cost 0 and what the stored answer cost as saved), as
//! JSON or replayed as a stream of chunks, which every surface writes in its own format.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream;
use http::header::CACHE_CONTROL;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;
use serde_json::{Map, Value};

use super::finish::{Gathered, Outcome, Place, Reads, Route, Stage};
use super::{ChatOutput, Exchange, RequestContext};
use crate::cache::{Digest, Entry, Near, Terms};
use crate::canonical::{
    self, ChatChunk, ChatRequest, ChatResponse, FinishReason, HostedTool, ImageSource, Message,
    Part, Reasoning, ResponseFormat, Role, Sampling, ToolChoice, Usage,
};
use crate::clock::now_ms;
use crate::config::{CacheConfig, CacheScope};
use crate::pricing::{self, Price};
use crate::router::Routed;
use key::Hasher;

mod key;

/// The cache's verdict on a call.
pub const CACHE_HEADER: HeaderName = HeaderName::from_static("x-proxima-cache");

/// Unmodelled request fields that do not change the answer: who asked, tags, storage and
/// billing options.
const NEUTRAL_FIELDS: [&str; 7] = [
    "metadata",
    "store",
    "user",
    "service_tier",
    "prompt_cache_key",
    "safety_identifier",
    "stream_options",
];

/// What the client asked of the cache: `cache-control: no-cache` and `no-store`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Control {
    /// Do not answer from the cache.
    pub no_cache: bool,
    /// Do not store this answer.
    pub no_store: bool,
}

impl Control {
    pub fn from_headers(headers: &HeaderMap) -> Control {
        let mut control = Control::default();
        for directive in crate::wire::header_list(headers, CACHE_CONTROL) {
            if directive.eq_ignore_ascii_case("no-cache") {
                control.no_cache = true;
            } else if directive.eq_ignore_ascii_case("no-store") {
                control.no_store = true;
            }
        }
        control
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Hit,
    SemanticHit,
    Miss,
    Bypass,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Verdict::Hit => "hit",
            Verdict::SemanticHit => "semantic-hit",
            Verdict::Miss => "miss",
            Verdict::Bypass => "bypass",
        }
    }
}

/// A stored answer found for a call, decoded for it.
pub struct Hit {
    entry: Entry,
}

/// Looks the call up: a hit is returned (the call is answered with it), and on a miss or a
/// bypass the call gets a stage that stores its answer. Does nothing for a model without
/// caching.
pub async fn lookup(
    exchange: &mut Exchange<'_>,
    cx: &Arc<RequestContext>,
    request: &ChatRequest,
    control: Control,
) -> Option<Hit> {
    let config = cx.gateway.config.cache.as_ref()?;
    let model = cx.gateway.config.models.get(&*exchange.resolved.model.name);
    if model.is_some_and(|m| !m.cache) {
        return None;
    }
    let scope = match config.scope {
        CacheScope::Team => cx.tenant(),
        CacheScope::Key => format!("key:{}", cx.caller.id),
        CacheScope::Global => "global".to_owned(),
    };
    let digests = Digests::of(request, &scope, config.semantic.is_some());
    let terms = terms(config);
    let cache = &cx.services.cache;
    let mut near = None;
    let verdict = if control.no_cache {
        Verdict::Bypass
    } else if let Some(entry) = cache
        .get(&digests.exact, terms.exact_ttl)
        .await
        .filter(|entry| storable(&entry.answer))
    {
        return Some(hit(exchange, entry, Verdict::Hit));
    } else {
        if let (Some(semantic), Some((partition, question))) = (&config.semantic, &digests.near) {
            // Boxed, as every wait here: unboxed, an embedding call's future would take room in
            // every call's future, semantic cache or not.
            let embedding = Box::pin(crate::retrieval::embed(
                cx,
                &semantic.embedding_model,
                vec![question.clone()],
                "cache",
            ));
            match embedding.await {
                Ok(mut vectors) if vectors.len() == 1 => {
                    let query = Near::new(*partition, vectors.remove(0));
                    let found =
                        Box::pin(cache.nearest(&query, semantic.threshold, terms.semantic_ttl))
                            .await;
                    if let Some((entry, _)) = found.filter(|(entry, _)| storable(&entry.answer)) {
                        return Some(hit(exchange, entry, Verdict::SemanticHit));
                    }
                    near = Some(query);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(
                    model = %semantic.embedding_model,
                    error = %e.message,
                    "could not embed a message for the semantic cache; looking up exact repeats only"
                ),
            }
        }
        Verdict::Miss
    };
    note(exchange, verdict);
    if !control.no_store {
        let pending = match (near, &config.semantic, digests.near) {
            (Some(near), _, _) => Pending::Embedded(near),
            (None, Some(semantic), Some((partition, question))) => Pending::ToEmbed {
                partition,
                question,
                model: semantic.embedding_model.clone(),
            },
            _ => Pending::None,
        };
        exchange.stages.push(Fill {
            cx: cx.clone(),
            streamed: request.stream,
            key: digests.exact,
            near: pending,
            terms,
            gathered: Gathered::default(),
            written: None,
            origin: Origin::default(),
        });
    }
    None
}

/// The call is answered with `hit`: whole, or replayed as a stream when the client streams.
/// Its ledger row records what the stored answer cost as saved.
pub fn answer(exchange: &mut Exchange<'_>, hit: Hit, stream: bool) -> Routed<ChatOutput> {
    let entry = hit.entry;
    if let Some(record) = exchange.meter.record() {
        record.saved = Some(entry.cost);
    }
    let answer = entry.answer;
    let output = if stream {
        let chunks: Vec<crate::error::Result<ChatChunk>> =
            canonical::replay(&answer).into_iter().map(Ok).collect();
        ChatOutput::Stream(Box::pin(stream::iter(chunks)))
    } else {
        ChatOutput::Complete(answer)
    };
    Routed {
        result: Ok(output),
        provider: entry.provider,
        upstream_model: entry.upstream_model,
        attempts: 0,
        price: None,
        limit_headers: Vec::new(),
    }
}

fn hit(exchange: &mut Exchange<'_>, entry: Entry, verdict: Verdict) -> Hit {
    note(exchange, verdict);
    Hit { entry }
}

/// Tells the client and the ledger the verdict.
fn note(exchange: &mut Exchange<'_>, verdict: Verdict) {
    exchange
        .headers
        .push((CACHE_HEADER, HeaderValue::from_static(verdict.as_str())));
    if let Some(record) = exchange.meter.record() {
        record.cache = Some(verdict.as_str());
    }
}

fn terms(config: &CacheConfig) -> Terms {
    let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    Terms {
        exact_ttl: ms(config.exact.ttl.0),
        semantic_ttl: config.semantic.as_ref().map_or(0, |s| ms(s.ttl.0)),
        max_bytes: config.max_bytes,
    }
}

/// The embedding a stored answer is found by in its partition.
enum Pending {
    None,
    /// Made for the lookup.
    Embedded(Near),
    /// Not looked up (`no-cache`): made once the answer is stored, off the request's path.
    ToEmbed {
        partition: Digest,
        question: String,
        model: String,
    },
}

/// The stage that stores a whole, successful answer, off the request's path.
struct Fill {
    cx: Arc<RequestContext>,
    /// A stream's answer is gathered from its chunks' content; a whole one passed on as the
    /// upstream wrote it is kept as written.
    streamed: bool,
    key: Digest,
    near: Pending,
    terms: Terms,
    /// A streamed answer, or a whole one the client gets written anew.
    gathered: Gathered,
    /// A whole answer passed on as the upstream wrote it, if it finished: its body and usage,
    /// all that storing it needs (what a hit needs of the rest is read from the body then).
    written: Option<(Bytes, Option<Usage>)>,
    origin: Origin,
}

/// Who answered a call, and at what price.
#[derive(Default)]
struct Origin {
    provider: Option<Arc<str>>,
    upstream_model: Option<String>,
    price: Option<Price>,
}

impl Stage for Fill {
    /// The answer as the upstream gave it: masked when the prompt was, so that every caller
    /// whose masked prompt is the same gets it restored with its own values.
    fn place(&self) -> Place {
        Place::Upstream
    }

    /// A whole answer passed on as written is kept as written ([`Entry::encode`]): only its
    /// outline is read here, and what a hit needs of the rest is checked when one is served.
    fn reads(&self) -> Reads {
        if self.streamed {
            Reads::Whole
        } else {
            Reads::Outline
        }
    }

    fn routed(&mut self, route: &Route<'_>) {
        self.origin = Origin {
            provider: route.provider.cloned(),
            upstream_model: route.upstream_model.map(str::to_owned),
            price: route.price,
        };
    }

    fn chunk(&mut self, chunk: &mut ChatChunk) {
        self.gathered.chunk(chunk);
    }

    fn complete(&mut self, answer: &mut ChatResponse) {
        match &answer.raw {
            // Read in outline: its content is checked at a hit.
            Some(body) => {
                self.written = finished(answer).then(|| (body.clone(), answer.usage));
            }
            None => self.gathered.complete(answer),
        }
    }

    fn end(&mut self, outcome: Outcome<'_>) {
        if !matches!(outcome, Outcome::Complete) {
            return;
        }
        let answer = match self.written.take() {
            Some((body, usage)) => Some(ChatResponse {
                usage,
                raw: Some(body),
                ..ChatResponse::default()
            }),
            None => self.gathered.take().filter(storable),
        };
        let Some(answer) = answer else {
            return;
        };
        let Origin {
            provider,
            upstream_model,
            price,
        } = std::mem::take(&mut self.origin);
        let cost = match (price, &answer.usage) {
            (Some(price), Some(usage)) => pricing::nanos(price.cost(usage)),
            _ => 0,
        };
        let entry = Entry {
            answer,
            provider,
            upstream_model,
            cost,
            stored_at: now_ms(),
        };
        let (key, terms) = (self.key, self.terms);
        match std::mem::replace(&mut self.near, Pending::None) {
            Pending::None => self.cx.services.cache.put(key, entry, None, terms),
            Pending::Embedded(near) => self.cx.services.cache.put(key, entry, Some(near), terms),
            Pending::ToEmbed {
                partition,
                question,
                model,
            } => {
                let cx = self.cx.clone();
                tokio::spawn(async move {
                    let near = crate::retrieval::embed(&cx, &model, vec![question], "cache")
                        .await
                        .ok()
                        .and_then(|mut v| {
                            (v.len() == 1).then(|| Near::new(partition, v.remove(0)))
                        });
                    cx.services.cache.put(key, entry, near, terms);
                });
            }
        }
    }
}

/// Whether an answer may be served again: it [`finished`], and no choice is empty or refused.
fn storable(answer: &ChatResponse) -> bool {
    finished(answer)
        && answer.choices.iter().all(|choice| {
            !choice.message.content.is_empty()
                && !choice
                    .message
                    .content
                    .iter()
                    .any(|p| matches!(p, Part::Refusal { .. }))
        })
}

/// Whether every choice of an answer finished on its own (a stream cut short has no finish
/// reason) and none was filtered: what an answer's outline tells.
fn finished(answer: &ChatResponse) -> bool {
    !answer.choices.is_empty()
        && answer.choices.iter().all(|choice| {
            matches!(
                &choice.finish_reason,
                Some(
                    FinishReason::Stop
                        | FinishReason::StopSequence(_)
                        | FinishReason::Length
                        | FinishReason::ToolCalls
                )
            )
        })
}

/// A request's digests: its exact key, and when its last message is a user's text, the
/// partition of everything before it with that text.
struct Digests {
    exact: Digest,
    near: Option<(Digest, String)>,
}

impl Digests {
    /// `near` only when `semantic`: the partition costs a digest of its own.
    fn of(req: &ChatRequest, scope: &str, semantic: bool) -> Digests {
        let mut hash = Hasher::default();
        hash.value(&Shape::of(req, scope));
        let question = req.messages.last().filter(|m| {
            semantic
                && m.role == Role::User
                && !m.content.is_empty()
                && m.content.iter().all(|p| matches!(p, Part::Text { .. }))
        });
        let earlier = match question {
            Some(_) => &req.messages[..req.messages.len() - 1],
            None => &req.messages[..],
        };
        for message in earlier {
            hash.value(&MessageView::of(message));
        }
        let near = question.map(|question| {
            // What both digests share is taken in once, before they part.
            hash.settle();
            let mut partition = hash.clone();
            partition.update(b"near");
            (partition.finish(), question.joined_text())
        });
        if let Some(question) = question {
            hash.value(&MessageView::of(question));
        }
        Digests {
            exact: hash.finish(),
            near,
        }
    }
}

/// Everything of a request but its messages that changes the answer, and the scope. What is
/// absent is left out of what is hashed (each field is named, so nothing else can take its place):
/// fewer bytes to hash, on every call to a model with caching on.
#[derive(Serialize)]
struct Shape<'a> {
    scope: &'a str,
    model: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<ToolView<'a>>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    hosted_tools: &'a [HostedTool],
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: &'a Option<ToolChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: &'a Option<ResponseFormat>,
    sampling: SamplingView<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    n: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning: &'a Option<Reasoning>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    fields: Vec<(&'a str, &'a Value)>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    headers: &'a [(String, String)],
}

impl<'a> Shape<'a> {
    fn of(req: &'a ChatRequest, scope: &'a str) -> Shape<'a> {
        Shape {
            scope,
            model: &req.model,
            tools: req
                .tools
                .iter()
                .map(|t| ToolView {
                    name: &t.name,
                    description: &t.description,
                    parameters: &t.parameters,
                    strict: t.strict,
                })
                .collect(),
            hosted_tools: &req.hosted_tools,
            tool_choice: &req.tool_choice,
            parallel_tool_calls: req.parallel_tool_calls,
            response_format: &req.response_format,
            sampling: SamplingView::of(&req.sampling),
            n: req.n,
            reasoning: &req.reasoning,
            fields: req
                .passthrough
                .fields
                .iter()
                .filter(|(name, _)| !NEUTRAL_FIELDS.contains(&name.as_str()))
                .map(|(name, value)| (name.as_str(), value))
                .collect(),
            headers: &req.passthrough.headers,
        }
    }
}

/// A tool without its prompt-caching hint.
#[derive(Serialize)]
struct ToolView<'a> {
    name: &'a str,
    description: &'a Option<String>,
    parameters: &'a Option<Value>,
    strict: Option<bool>,
}

/// The sampling parameters a request sets; those it leaves unset are left out, as in [`Shape`].
#[derive(Serialize)]
struct SamplingView<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f64>,
}

impl<'a> SamplingView<'a> {
    fn of(sampling: &'a Sampling) -> SamplingView<'a> {
        // Every field named: a parameter added to `Sampling` must be added here too, or two
        // requests that differ only in it would share their answer.
        let Sampling {
            temperature,
            top_p,
            top_k,
            max_tokens,
            stop,
            seed,
            presence_penalty,
            frequency_penalty,
        } = sampling;
        SamplingView {
            temperature: *temperature,
            top_p: *top_p,
            top_k: *top_k,
            max_tokens: *max_tokens,
            stop,
            seed: *seed,
            presence_penalty: *presence_penalty,
            frequency_penalty: *frequency_penalty,
        }
    }
}

/// A message without prompt-caching hints (and without its absent fields).
#[derive(Serialize)]
struct MessageView<'a> {
    role: Role,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: &'a Option<String>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    extra: &'a Map<String, Value>,
    content: Vec<PartView<'a>>,
}

impl<'a> MessageView<'a> {
    fn of(message: &'a Message) -> MessageView<'a> {
        MessageView {
            role: message.role,
            name: &message.name,
            extra: &message.extra,
            content: message.content.iter().map(PartView::of).collect(),
        }
    }
}

/// A part without its prompt-caching hint. Untagged: the hint-free shapes are told apart by
/// their fields, and every other part keeps its own `type` tag.
#[derive(Serialize)]
#[serde(untagged)]
enum PartView<'a> {
    Text {
        text: &'a str,
    },
    Image {
        source: &'a ImageSource,
        detail: &'a Option<String>,
    },
    ToolResult {
        call_id: &'a str,
        content: Vec<PartView<'a>>,
        is_error: bool,
    },
    AsIs(&'a Part),
}

impl<'a> PartView<'a> {
    fn of(part: &'a Part) -> PartView<'a> {
        match part {
            Part::Text { text, .. } => PartView::Text { text },
            Part::Image { source, detail, .. } => PartView::Image { source, detail },
            Part::ToolResult {
                call_id,
                content,
                is_error,
                ..
            } => PartView::ToolResult {
                call_id,
                content: content.iter().map(PartView::of).collect(),
                is_error: *is_error,
            },
            other => PartView::AsIs(other),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::canonical::{CacheHint, Tool};

    fn request(messages: &[(Role, &str)]) -> ChatRequest {
        ChatRequest {
            model: "m".into(),
            messages: messages
                .iter()
                .map(|(role, text)| Message::text(*role, *text))
                .collect(),
            ..ChatRequest::default()
        }
    }

    fn exact(req: &ChatRequest) -> Digest {
        Digests::of(req, "team:a", true).exact
    }

    #[test]
    fn what_changes_the_answer_changes_the_key_and_nothing_else_does() {
        let base = request(&[(Role::System, "be brief"), (Role::User, "hello")]);
        let key = exact(&base);
        // Not part of the key: the stream flag, usage reporting, the end user, metadata, the
        // surface, prompt-caching hints.
        let mut same = base.clone();
        same.stream = true;
        same.include_usage = true;
        same.user = Some("u-42".into());
        same.passthrough.api = Some(canonical::Api::Anthropic);
        same.passthrough
            .fields
            .insert("metadata".into(), serde_json::json!({"a": "b"}));
        same.messages[1].content = vec![Part::Text {
            text: "hello".into(),
            cache: Some(CacheHint::default()),
        }];
        assert_eq!(exact(&same), key);
        type Change = Box<dyn Fn(&mut ChatRequest)>;
        let changes: Vec<Change> = vec![
            Box::new(|r| r.model = "other".into()),
            Box::new(|r| r.messages[0] = Message::text(Role::System, "be long")),
            Box::new(|r| r.messages[1] = Message::text(Role::User, "hello!")),
            Box::new(|r| r.sampling.temperature = Some(0.5)),
            Box::new(|r| r.sampling.max_tokens = Some(9)),
            Box::new(|r| r.n = Some(2)),
            Box::new(|r| r.tool_choice = Some(ToolChoice::Required)),
            Box::new(|r| r.response_format = Some(ResponseFormat::JsonObject)),
            Box::new(|r| {
                r.tools.push(Tool {
                    name: "f".into(),
                    description: None,
                    parameters: None,
                    strict: None,
                    cache: None,
                })
            }),
            Box::new(|r| {
                r.passthrough
                    .fields
                    .insert("logprobs".into(), serde_json::json!(true));
            }),
        ];
        for (i, change) in changes.iter().enumerate() {
            let mut other = base.clone();
            change(&mut other);
            assert_ne!(exact(&other), key, "change {i} kept the key");
        }
        assert_ne!(Digests::of(&base, "team:b", true).exact, key);
    }

    #[test]
    fn the_partition_is_everything_but_the_last_user_message() {
        let a = Digests::of(
            &request(&[
                (Role::User, "hi"),
                (Role::Assistant, "yo"),
                (Role::User, "what is up"),
            ]),
            "g",
            true,
        );
        let b = Digests::of(
            &request(&[
                (Role::User, "hi"),
                (Role::Assistant, "yo"),
                (Role::User, "what's up"),
            ]),
            "g",
            true,
        );
        let other_history = Digests::of(
            &request(&[
                (Role::User, "hey"),
                (Role::Assistant, "yo"),
                (Role::User, "what is up"),
            ]),
            "g",
            true,
        );
        let (pa, qa) = a.near.unwrap();
        let (pb, qb) = b.near.unwrap();
        assert_eq!(pa, pb);
        assert_eq!((qa.as_str(), qb.as_str()), ("what is up", "what's up"));
        assert_ne!(a.exact, b.exact);
        assert_ne!(other_history.near.unwrap().0, pa);
        assert_ne!(pa, a.exact);
        // A tool result last is no question: exact lookups only.
        let mut tool = request(&[(Role::User, "hi")]);
        tool.messages.push(Message {
            role: Role::Tool,
            content: vec![Part::ToolResult {
                call_id: "c".into(),
                content: vec![Part::text("42")],
                is_error: false,
                cache: None,
            }],
            name: None,
            extra: Map::new(),
        });
        assert!(Digests::of(&tool, "g", true).near.is_none());
    }

    #[test]
    fn cache_control_is_read_from_every_directive() {
        let mut headers = HeaderMap::new();
        assert_eq!(Control::from_headers(&headers), Control::default());
        headers.append(
            CACHE_CONTROL,
            HeaderValue::from_static("max-age=0, No-Cache"),
        );
        headers.append(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        assert_eq!(
            Control::from_headers(&headers),
            Control {
                no_cache: true,
                no_store: true
            }
        );
    }

    #[test]
    fn only_whole_unrefused_answers_are_stored() {
        let answer = |finish: Option<FinishReason>, content: Vec<Part>| ChatResponse {
            id: "c".into(),
            model: "m".into(),
            created: 0,
            choices: vec![canonical::Choice {
                index: 0,
                message: Message {
                    role: Role::Assistant,
                    content,
                    name: None,
                    extra: Map::new(),
                },
                finish_reason: finish,
                extra: Map::new(),
            }],
            usage: None,
            extra: Map::new(),
            extra_api: None,
            raw: None,
        };
        assert!(storable(&answer(
            Some(FinishReason::Stop),
            vec![Part::text("ok")]
        )));
        assert!(!storable(&answer(None, vec![Part::text("cut")])));
        assert!(!storable(&answer(
            Some(FinishReason::ContentFilter),
            vec![Part::text("x")]
        )));
        assert!(!storable(&answer(
            Some(FinishReason::Stop),
            vec![Part::Refusal { text: "no".into() }]
        )));
    }
}
