//! Summaries, incrementally: turns that left a conversation's window are folded, a chunk at a
//! time, into a running summary by `[context] summarizer_model`, called through the normal
//! pipeline (routing, limits, the ledger under the caller's key) after the turn that pushed
//! them out has been answered and stored — never on a request's path. The summary is stored
//! as an item covering everything up to its `covers` position, and stands in for those turns
//! in every later prompt.

use std::sync::Arc;

use super::items::{self, SUMMARY};
use crate::canonical::{ChatRequest, Message, Part, Role, Sampling};
use crate::clock::now_ms;
use crate::error::Result;
use crate::pipeline::{self, ChatOutput, Directives, RequestContext};

/// Items that must have left the window before a summariser call is worth it: one call per
/// chunk of overflowing turns, not one per request.
const CHUNK_ITEMS: i64 = 8;

/// Most transcript tokens one summariser call reads; older overflow beyond it is dropped
/// unread (it only happens when a long history is imported at once).
const MAX_TRANSCRIPT_TOKENS: u64 = 24_000;

/// Longest summary asked for.
const SUMMARY_TOKENS: u32 = 800;

const INSTRUCTIONS: &str = "You keep the running summary of a conversation between a user and an AI assistant. \
Rewrite the summary so that it also covers the new part of the transcript. Keep every fact, name, number, \
decision, preference and open question the user or assistant may need later; drop small talk. \
Write plain prose or short bullet points, in the conversation's language, and nothing else.";

/// Folds the items between the summary (`covers`) and the window (`window_start`) into a new
/// summary when enough of them have piled up, unless this conversation is being folded
/// already.
pub async fn maybe_fold(
    cx: Arc<RequestContext>,
    conversation: String,
    covers: i64,
    window_start: i64,
) {
    if window_start - (covers + 1) < CHUNK_ITEMS {
        return;
    }
    let conversations = cx.services.conversations.clone();
    {
        let mut folding = conversations
            .summarizing
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if !folding.insert(conversation.clone()) {
            return;
        }
    }
    if let Err(e) = fold(&cx, &conversation, window_start - 1).await {
        tracing::warn!(conversation = %conversation, error = %e, "summarising a conversation failed; its old turns stay out of the prompt until the next try");
    }
    conversations
        .summarizing
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&conversation);
}

/// Writes the summary covering everything up to `through`.
async fn fold(cx: &Arc<RequestContext>, conversation: &str, through: i64) -> Result<()> {
    let Some(model) = cx.gateway.config.context.summarizer_model.clone() else {
        return Ok(());
    };
    let store = &cx.services.store;
    let previous = store.latest_summary(conversation).await?;
    let from = previous.as_ref().and_then(|s| s.covers).unwrap_or(-1) + 1;
    if from > through {
        return Ok(());
    }
    let overflow = store.items_between(conversation, from, through).await?;
    // The newest overflow that fits the transcript budget.
    let mut tokens = 0;
    let keep_from = overflow
        .iter()
        .rposition(|item| {
            tokens += item.tokens;
            tokens > MAX_TRANSCRIPT_TOKENS
        })
        .map_or(0, |at| at + 1);
    let mut transcript = String::new();
    for item in overflow[keep_from..]
        .iter()
        .filter(|i| items::is_history(i))
    {
        transcript.push_str(&line(&item.message));
    }
    if transcript.is_empty() {
        return Ok(());
    }
    let previous_text = previous
        .as_ref()
        .map(|s| s.message.joined_text())
        .unwrap_or_default();
    let prompt = format!(
        "Summary so far:\n{}\n\nNew part of the transcript:\n{transcript}",
        if previous_text.is_empty() {
            "(none yet)"
        } else {
            &previous_text
        }
    );
    let request = ChatRequest {
        model: model.clone(),
        messages: vec![
            Message::text(Role::System, INSTRUCTIONS),
            Message::text(Role::User, prompt),
        ],
        sampling: Sampling {
            max_tokens: Some(SUMMARY_TOKENS),
            ..Sampling::default()
        },
        ..ChatRequest::default()
    };
    let summary_cx = cx.derived("summary");
    let routed = pipeline::chat(&summary_cx, request, Directives::default()).await;
    let text = match routed.result? {
        ChatOutput::Complete(answer) => answer
            .choices
            .into_iter()
            .next()
            .map(|c| c.message.joined_text())
            .unwrap_or_default(),
        // Not asked for; a summary is always a whole answer.
        ChatOutput::Stream(_) => String::new(),
    };
    if text.trim().is_empty() {
        return Ok(());
    }
    let message = Message::text(
        Role::System,
        format!(
            "Summary of the conversation before the turns below:\n{}",
            text.trim()
        ),
    );
    let mut item = items::new_item(SUMMARY, message);
    item.covers = Some(through);
    store
        .append_items(conversation, &cx.tenant(), &[item], now_ms())
        .await?;
    Ok(())
}

/// One transcript line for an item: who said what, calls and results included.
fn line(message: &Message) -> String {
    let who = match message.role {
        Role::User => "User",
        Role::Assistant => "Assistant",
        Role::Tool => "Tool result",
        Role::System | Role::Developer => "Instructions",
    };
    let mut text = items::search_text(message);
    if message
        .content
        .iter()
        .any(|p| matches!(p, Part::ToolCall { .. }))
    {
        text = format!("(calls a tool) {text}");
    }
    format!("{who}: {text}\n")
}
