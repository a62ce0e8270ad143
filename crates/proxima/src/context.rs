//! Server-side conversation context: the gateway, not the client, remembers a conversation
//! and builds each prompt within the target model's window.
//!
//! A chat call naming a conversation (`x-proxima-conversation`, or `conversation` in the
//! body) sends only its new messages. [`open_turn`] — called by the prepare phase, before the
//! limits, so they charge what is sent — loads what the prompt needs, never the whole
//! history: the instructions, the newest summary, the newest items up to the token budget, and
//! the earlier turns [`recall`] finds for the new message (by its words and, with an embedding
//! model, by its [`meaning`]), with the [`passages`] retrieved for it from vector stores;
//! [`assemble`] fits them to the budget, which each target counts with its own tokenizer
//! (`calibration.rs` learns how from its answers).
//! The turn is stored by a finishing stage once the answer is complete (a failed or abandoned
//! call stores nothing, so a retry does not duplicate it), and turns that left the window are
//! folded into a running summary off the request path ([`summarize`]).
//!
//! Concurrent turns on one conversation are serialised on this replica: a turn waits for the
//! one before it to be stored, so it sees it. Replicas sharing a database append each turn
//! atomically, so turns never interleave or get lost there either.

pub mod assemble;
mod calibration;
pub mod items;
pub mod meaning;
pub mod passages;
mod recall;
mod summarize;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::OwnedMutexGuard;

use crate::canonical::{ChatRequest, ChatResponse, Message, Part, Role};
use crate::clock::now_ms;
use crate::config::{ContextConfig, ContextStrategy};
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::finish::{Keep, Stage};
use crate::pipeline::RequestContext;
use crate::router::Resolved;
use crate::store::{ItemRecord, Order, Store, TurnRead};
use assemble::{Inputs, Item};
pub use calibration::TokenScales;
use passages::{Passage, Retrieval};

/// Items read by the first round trip while filling the window from the newest backwards;
/// later ones read four times as many.
const PAGE: u32 = 64;

/// Share of the budget recalled turns may take.
const RECALL_SHARE: u64 = 4;

/// Share of the budget retrieved passages may take.
const PASSAGE_SHARE: u64 = 4;

/// Answer tokens assumed when a request sets no `max_tokens`, at most a quarter of the window.
const DEFAULT_ANSWER_TOKENS: u64 = 4096;

/// What outlives a reload: one lock per conversation with a turn in flight, the
/// conversations being summarised, and what the targets' answers taught about their token
/// counts.
#[derive(Default)]
pub struct Conversations {
    turns: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    summarizing: Mutex<HashSet<String>>,
    pub token_scales: Arc<TokenScales>,
}

impl Conversations {
    /// Waits for the turn in flight on `id`, if any, and holds the conversation until the
    /// guard drops.
    async fn lock(self: &Arc<Self>, id: &str) -> TurnGuard {
        let lock = {
            let mut turns = self.turns.lock().unwrap_or_else(|e| e.into_inner());
            turns.entry(id.to_owned()).or_default().clone()
        };
        TurnGuard {
            guard: Some(lock.lock_owned().await),
            conversations: self.clone(),
            id: id.to_owned(),
        }
    }

    /// Waits until the turn in flight on `id`, if any, is stored: a read right after an
    /// answer (streamed or not) sees that turn.
    pub async fn settled(self: &Arc<Self>, id: &str) {
        drop(self.lock(id).await);
    }
}

/// Holds a conversation for one turn; the last holder removes its lock from the map.
struct TurnGuard {
    guard: Option<OwnedMutexGuard<()>>,
    conversations: Arc<Conversations>,
    id: String,
}

impl Drop for TurnGuard {
    fn drop(&mut self) {
        let mut turns = self
            .conversations
            .turns
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        drop(self.guard.take());
        // Two references: the map's and this guard's mutex (now released). Nobody waits.
        if turns
            .get(&self.id)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            turns.remove(&self.id);
        }
    }
}

/// How often conversations past `[context] retention` are looked for.
const RETENTION_SWEEP: std::time::Duration = std::time::Duration::from_secs(600);

/// Deletes conversations (and stored responses) unused for longer than the current config's
/// `[context] retention`, and vector stores past their `expires_after`, now and every ten
/// minutes, until the server stops.
pub async fn expire_old(state: Arc<crate::state::AppState>) {
    let mut tick = tokio::time::interval(RETENTION_SWEEP);
    loop {
        tick.tick().await;
        match state.services().store.expire_vector_stores(now_ms()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(vector_stores = n, "deleted expired vector stores"),
            Err(e) => tracing::warn!(error = %e, "could not delete expired vector stores"),
        }
        let Some(retention) = state.gateway().config.context.retention else {
            continue;
        };
        let cutoff = now_ms() - i64::try_from(retention.0.as_millis()).unwrap_or(i64::MAX);
        match state.services().store.expire_conversations(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                conversations = n,
                "deleted conversations past their retention"
            ),
            Err(e) => tracing::warn!(error = %e, "could not delete old conversations"),
        }
    }
}

/// Checks a conversation id a client chose: ids travel in URLs and headers.
pub fn check_id(id: &str, param: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_request(format!(
            "`{param}` must be 1 to 128 letters, digits, `_`, `-`, `.` or `:`"
        ))
        .with_param(param.to_owned()))
    }
}

/// The answer to a conversation nobody (or somebody else) has: the same either way.
pub fn unknown_conversation(id: &str) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!("no conversation `{id}`: it does not exist, or belongs to another team or key"),
    )
}

/// A conversation turn, opened: the request's messages are now the assembled prompt.
pub struct Turn {
    /// The assembled prompt's tokens (`x-proxima-context-tokens`).
    pub tokens: u64,
    /// Passages retrieved into the prompt, when the turn names vector stores.
    pub retrieved: Option<usize>,
    stage: TurnStage,
    observe: calibration::Observe,
}

impl Turn {
    /// The turn's stages: one stores the turn once the answer is complete, the other tells
    /// the answering target's token scale what it counted.
    pub fn into_stages(self) -> (impl Stage, impl Stage) {
        let stage = self.stage;
        (
            Keep::new(move |answer: ChatResponse| stage.store(answer)),
            self.observe,
        )
    }
}

/// What storing a turn needs.
struct TurnStage {
    cx: Arc<RequestContext>,
    conversation: String,
    /// The instructions to keep, when this turn brought new ones.
    new_system: Option<Vec<Message>>,
    new: Vec<Message>,
    strategy: ContextStrategy,
    /// The first position of the assembled window and the last one the summary covers.
    window_start: Option<i64>,
    covers: i64,
    next_seq: i64,
    guard: TurnGuard,
}

impl TurnStage {
    /// Stores the turn off the request path; the conversation stays held until it is stored,
    /// so the next turn sees it.
    fn store(self, answer: ChatResponse) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let store = &self.cx.services.store;
            let tenant = self.cx.tenant();
            let mut messages = self.new;
            if let Some(choice) = answer.choices.into_iter().next() {
                messages.push(choice.message);
            }
            let items = items::split(&messages);
            let stored = async {
                if let Some(system) = &self.new_system {
                    store
                        .set_conversation_system(&self.conversation, system)
                        .await?;
                }
                store
                    .append_items(&self.conversation, &tenant, &items, now_ms())
                    .await
            };
            match stored.await {
                Ok(stored) => {
                    if let (Some(model), Some(stored)) =
                        (&self.cx.gateway.config.context.embedding_model, stored)
                    {
                        meaning::index(&self.cx, model, &self.conversation, &stored);
                    }
                }
                Err(e) => {
                    tracing::error!(conversation = %self.conversation, error = %e, "a conversation turn could not be stored");
                    return;
                }
            }
            drop(self.guard);
            if self.strategy == ContextStrategy::Summarize {
                let end = self.window_start.unwrap_or(self.next_seq);
                summarize::maybe_fold(self.cx, self.conversation, self.covers, end).await;
            }
        });
    }
}

/// Tokens a prompt may take on `resolved`, its tool definitions included, as the gateway
/// counts them: on each of the model's targets its `context_window` less the answer's room
/// (`max_tokens`, else [`DEFAULT_ANSWER_TOKENS`] up to a quarter of the window) and the safety
/// margin, divided by the target's token scale ([`calibration`]); the smallest of these.
pub fn prompt_room(
    config: &ContextConfig,
    scales: &TokenScales,
    resolved: &Resolved,
    max_tokens: Option<u32>,
) -> u64 {
    let room = |window: u64| {
        let answer = max_tokens.map_or_else(|| DEFAULT_ANSWER_TOKENS.min(window / 4), u64::from);
        window.saturating_sub(answer + config.safety_margin)
    };
    resolved
        .model
        .targets
        .iter()
        .map(|t| {
            let model = t.upstream_model(resolved.suffix.as_deref());
            let scale = scales.scale(t.provider.kind, &t.provider.name, &model);
            (room(t.context_window.unwrap_or(config.default_window)) as f64 / scale) as u64
        })
        .min()
        .unwrap_or_else(|| room(config.default_window))
}

/// Opens a turn on `conversation` (made when the caller has none of that id): assembles the
/// stored context, the passages `retrieval` and the conversation's own `vector_store_ids`
/// find for the new message, and the request's new messages into the request, within the
/// smallest window among the model's targets.
pub async fn open_turn(
    cx: &Arc<RequestContext>,
    conversation: &str,
    resolved: &Resolved,
    request: &mut ChatRequest,
    mut retrieval: Retrieval,
) -> Result<Turn> {
    check_id(conversation, "conversation")?;
    crate::tokenizer::load().await;
    let config = &cx.gateway.config.context;
    let store = &cx.services.store;
    let tenant = cx.tenant();
    let guard = cx.services.conversations.lock(conversation).await;
    let record = match store.get_conversation(conversation, &tenant).await? {
        Some(record) => record,
        None => store
            .create_conversation(
                conversation,
                &tenant,
                &Value::Object(Default::default()),
                now_ms(),
            )
            .await?
            .ok_or_else(|| unknown_conversation(conversation))?,
    };
    let strategy = match record
        .metadata
        .get("context_strategy")
        .and_then(Value::as_str)
    {
        Some("window") => ContextStrategy::Window,
        Some("summarize") if config.summarizer_model.is_some() => ContextStrategy::Summarize,
        _ => config.default_strategy,
    };

    // The request's instructions replace the kept ones; the rest is the new turn.
    let (mut system, new): (Vec<Message>, Vec<Message>) = std::mem::take(&mut request.messages)
        .into_iter()
        .partition(|m| m.role.is_instruction());
    let new_system = if system.is_empty() {
        system = record.system;
        None
    } else {
        Some(system.clone())
    };

    // Tool definitions go with every prompt and take their share of the window.
    let tool_tokens = if request.tools.is_empty() {
        0
    } else {
        crate::tokenizer::count(&serde_json::to_string(&request.tools).unwrap_or_default())
    };
    let scales = &cx.services.conversations.token_scales;
    let budget = prompt_room(config, scales, resolved, request.sampling.max_tokens)
        .saturating_sub(tool_tokens);

    // The conversation's own stores are searched on every turn, with the request's.
    if let Some(stores) = record
        .metadata
        .get("vector_store_ids")
        .and_then(Value::as_str)
    {
        retrieval.add_stores(passages::store_list(stores));
    }
    let found = passages::search(cx, &retrieval, &new).await?;

    let embedder = config
        .embedding_model
        .as_deref()
        .map(|model| meaning::Calls { cx, model });
    let built = build_prompt(
        store,
        conversation,
        &Budgeted {
            strategy,
            recall: config.recall,
            embedder: embedder.as_ref().map(|e| e as &dyn meaning::Embed),
            budget,
        },
        &system,
        &new,
        found.as_ref().map_or(&[], |f| f.passages.as_slice()),
    )
    .await?;
    let assembled = built.assembled;
    let retrieved = found.map(|found| {
        found.report(assembled.passages, retrieval.report.take());
        assembled.passages
    });
    request.messages = items::join(assembled.messages);
    Ok(Turn {
        tokens: assembled.tokens,
        retrieved,
        observe: calibration::Observe::new(scales.clone(), assembled.tokens + tool_tokens),
        stage: TurnStage {
            cx: cx.clone(),
            conversation: conversation.to_owned(),
            new_system,
            new,
            strategy,
            window_start: assembled.window_start,
            covers: built.covers,
            next_seq: built.next_seq,
            guard,
        },
    })
}

/// How a prompt is fitted: what happens to old turns, how many are recalled (and what embeds
/// the new message to recall them by meaning too), and the tokens it may use.
pub struct Budgeted<'a> {
    pub strategy: ContextStrategy,
    pub recall: u32,
    pub embedder: Option<&'a dyn meaning::Embed>,
    pub budget: u64,
}

/// A prompt built from a conversation, and where its window begins.
pub struct Built {
    pub assembled: assemble::Assembled,
    /// The last position the summary in use covers (-1: none).
    pub covers: i64,
    /// The position the next item will take.
    pub next_seq: i64,
}

/// Builds the prompt for new messages on a stored conversation: reads the newest summary, the
/// newest items up to the budget and recall's postings of the new message's words in one round
/// trip, the recalled turns in a second — reads whose cost follows the window, not the length
/// of the history — and assembles them with the `passages` retrieved for the new message.
pub async fn build_prompt(
    store: &Store,
    conversation: &str,
    how: &Budgeted<'_>,
    system: &[Message],
    new: &[Message],
    passages: &[Passage],
) -> Result<Built> {
    let system_tokens = system.iter().map(items::tokens).sum();
    let question = new
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(Message::joined_text)
        .unwrap_or_default();
    let words = if how.recall == 0 {
        Vec::new()
    } else {
        recall::query_words(&question)
    };
    let what = TurnRead {
        summary: how.strategy == ContextStrategy::Summarize,
        window: PAGE,
        terms: &words,
    };
    let first = store.read_turn(conversation, &what).await?;
    let summary = first.summary;
    let covers = summary.as_ref().and_then(|s| s.covers).unwrap_or(-1);
    let mut recent = load_recent(store, conversation, covers, how.budget, first.newest).await?;
    let next_seq = recent.last().map_or(0, |i| i.seq + 1);
    // An agent's new messages may begin with the results of the calls the newest stored turn
    // made: that turn is sent with them whatever the budget, so no result goes without its
    // call (it is stored already, so it is sent, not stored again).
    let calls_answered = new.first().is_some_and(assemble::is_tool_result)
        && recent.last().is_some_and(|i| {
            i.message.role == Role::Assistant
                && i.message
                    .content
                    .iter()
                    .any(|p| matches!(p, Part::ToolCall { .. }))
        });
    let mut prompt_new = Vec::with_capacity(new.len() + 1);
    let mut new_tokens = new.iter().map(items::tokens).sum();
    if calls_answered {
        if let Some(call) = recent.pop() {
            new_tokens += call.tokens;
            prompt_new.push(call.message);
        }
    }
    prompt_new.extend(new.iter().cloned());

    let recall_budget = how.budget / RECALL_SHARE;
    let recalled = match (how.recall, recent.first()) {
        (0, _) | (_, None) => Vec::new(),
        (count, Some(oldest)) => {
            let search = recall::Search {
                text: &question,
                postings: &first.postings,
                embedder: how.embedder,
            };
            recall::recall(store, conversation, &search, oldest.seq, count).await?
        }
    };

    let summary_message = summary.as_ref().map(|s| (&s.message, s.tokens));
    let assembled = assemble::assemble(&Inputs {
        system,
        system_tokens,
        summary: summary_message,
        recalled: &recalled,
        recent: &recent,
        passages,
        new: &prompt_new,
        new_tokens,
        budget: how.budget,
        recall_budget,
        passage_budget: how.budget / PASSAGE_SHARE,
    });
    Ok(Built {
        assembled,
        covers,
        next_seq,
    })
}

/// The newest history items after `covers`, oldest first: enough to fill `budget` (and one
/// page more at most), from `newest` (the first page, newest first) and further pages read
/// as needed, so the cost follows the window, not the history.
async fn load_recent(
    store: &Store,
    conversation: &str,
    covers: i64,
    budget: u64,
    newest: Vec<ItemRecord>,
) -> Result<Vec<Item>> {
    let mut recent: Vec<Item> = Vec::new();
    let mut tokens = 0;
    let mut before = None;
    let mut page_size = PAGE;
    let mut page = newest;
    'pages: loop {
        let full = page.len() == page_size as usize;
        page_size = PAGE * 4;
        for item in page {
            before = Some(item.seq);
            if item.seq <= covers {
                break 'pages;
            }
            if !items::is_history(&item) {
                continue;
            }
            // Past the budget, only as far back as the user message that opened the exchange
            // the window may begin in (the assembler may pin it): what lies further back is
            // recall's to bring, and must not be hidden from it.
            if tokens > budget && opens_exchange(recent.last()) {
                break 'pages;
            }
            tokens += item.tokens;
            recent.push(as_item(item));
        }
        if !full || tokens > budget && opens_exchange(recent.last()) {
            break;
        }
        page = store
            .list_items(conversation, before, Order::Desc, page_size)
            .await?;
    }
    recent.reverse();
    Ok(items::join_items(recent))
}

/// Whether the item (read newest first) is a user message, which opens an exchange.
fn opens_exchange(item: Option<&Item>) -> bool {
    item.is_some_and(|i| assemble::opens_exchange(&i.message))
}

fn as_item(record: ItemRecord) -> Item {
    Item {
        seq: record.seq,
        message: record.message,
        tokens: record.tokens,
    }
}
