//! Personal data in prompts (SPEC `[pii]`): found in every text a request sends upstream, and
//! then, by the caller's policy ([`RequestContext::pii`]: `[pii]`, its team's, its key's):
//!
//! - `mask`: each value becomes a placeholder (`<EMAIL_1>`, the same one for the same value
//!   throughout the request), and the [`Unmask`] stage puts the values back into the answer,
//!   whole or streamed, text and tool-call arguments, on every surface;
//! - `redact`: each value becomes its kind's marker (`[EMAIL]`), for good;
//! - `block`: the request is refused with `400 pii_blocked` naming the kinds found, before
//!   anything is sent.
//!
//! It runs once per call, in the prepare phase, on the prompt as it is really sent: stored
//! conversation context and retrieved passages included. What is looked at: the text of every
//! message part (instructions, user and assistant turns, tool results, tool-call arguments,
//! unsigned reasoning) and `user`; not images, files, tool definitions or unmodelled fields.
//! Embeddings inputs get the same treatment (masked inputs have nothing to restore), and so
//! does a prompt whose tokens an upstream counts (`/v1/messages/count_tokens`).
//!
//! The ledger never holds a raw value: with any policy but `off`, the end-user id and the
//! metadata tags of its rows are redacted ([`for_ledger`]). Upstream errors can only quote
//! what was sent, placeholders at most, and are passed on as they are.

pub mod detect;
pub mod mask;
pub mod unmask;

use std::sync::Arc;

use http::{HeaderName, HeaderValue};

use crate::canonical::{ChatRequest, EmbeddingInput, EmbeddingsRequest, Part};
use crate::config::PiiMode;
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::{Exchange, RequestContext};
use detect::Entities;
use mask::{Action, Masker};
pub use unmask::Unmask;

/// The kinds of personal data masked or redacted in a request, e.g. `email,card`.
pub const PII_HEADER: HeaderName = HeaderName::from_static("x-proxima-pii");

/// What the caller's policy asks for, or `None` when it looks for nothing. The policy is
/// `[pii]`, then the caller's team's own, then its key's own.
fn policy(cx: &RequestContext) -> Option<(PiiMode, Entities)> {
    let team = cx.team();
    let overrides = team.as_deref().and_then(|t| t.pii.as_ref());
    let (mode, entities) =
        (cx.gateway.config.pii).with_overrides(overrides.into_iter().chain(cx.caller.pii.as_ref()));
    let wanted = Entities::of(entities);
    (mode != PiiMode::Off && !wanted.is_empty()).then_some((mode, wanted))
}

fn action(mode: PiiMode) -> Action {
    match mode {
        PiiMode::Mask => Action::Mask,
        PiiMode::Redact => Action::Redact,
        PiiMode::Off | PiiMode::Block => Action::Detect,
    }
}

/// Applies the caller's policy to a chat request about to be sent: masks or redacts it in
/// place (a masked one gets the stage that restores its answer), or refuses it. True when it
/// changed the request.
pub fn protect_chat(exchange: &mut Exchange<'_>, req: &mut ChatRequest) -> Result<bool> {
    match mask_chat(exchange.cx, req) {
        Some((mode, masker)) => {
            let changed = !masker.found.is_empty();
            conclude(exchange, mode, masker)?;
            Ok(changed)
        }
        None => Ok(false),
    }
}

/// Applies the caller's policy to a request whose tokens an upstream counts: the prompt it
/// sees is masked like the call's would be (the count barely changes), or it is refused.
pub fn protect_count(cx: &RequestContext, req: &mut ChatRequest) -> Result<()> {
    match mask_chat(cx, req) {
        Some((PiiMode::Block, masker)) if !masker.found.is_empty() => Err(blocked(&masker)),
        _ => Ok(()),
    }
}

/// The chat request's texts through a masker of the caller's policy, if it has one.
fn mask_chat(cx: &RequestContext, req: &mut ChatRequest) -> Option<(PiiMode, Masker)> {
    let (mode, wanted) = policy(cx)?;
    let mut masker = Masker::new(wanted, action(mode));
    for message in &mut req.messages {
        for part in &mut message.content {
            part_texts(part, &mut masker);
        }
    }
    if let Some(user) = &mut req.user {
        masker.text(user);
    }
    Some((mode, masker))
}

/// Applies the caller's policy to an embeddings request: its texts are masked or redacted (a
/// vector has nothing to restore), or it is refused. Token-id inputs are not text and pass.
pub fn protect_embeddings(exchange: &mut Exchange<'_>, req: &mut EmbeddingsRequest) -> Result<()> {
    let Some((mode, wanted)) = policy(exchange.cx) else {
        return Ok(());
    };
    let mut masker = Masker::new(wanted, action(mode));
    match &mut req.input {
        EmbeddingInput::Text(text) => masker.text(text),
        EmbeddingInput::Texts(texts) => texts.iter_mut().for_each(|t| masker.text(t)),
        EmbeddingInput::Tokens(_) | EmbeddingInput::TokenLists(_) => {}
    }
    // Nothing to restore in a vector.
    let mode = if mode == PiiMode::Mask {
        PiiMode::Redact
    } else {
        mode
    };
    conclude(exchange, mode, masker)
}

/// The texts of one message part, through the masker.
fn part_texts(part: &mut Part, masker: &mut Masker) {
    match part {
        Part::Text { text, .. } | Part::Refusal { text } => masker.text(text),
        // Signed reasoning must stay as the provider wrote it; it holds placeholders at most.
        Part::Reasoning {
            text,
            signature: None,
            redacted: None,
        } => masker.text(text),
        Part::ToolCall { arguments, .. } => masker.json(arguments),
        Part::ToolResult { content, .. } => {
            content.iter_mut().for_each(|p| part_texts(p, masker));
        }
        Part::Reasoning { .. } | Part::Image { .. } | Part::Opaque { .. } => {}
    }
}

/// Refuses a blocked request, or notes what was found (`x-proxima-pii`) and, for a masked
/// one, adds the stage that restores the answer.
fn conclude(exchange: &mut Exchange<'_>, mode: PiiMode, masker: Masker) -> Result<()> {
    let found = masker.found;
    if found.is_empty() {
        return Ok(());
    }
    if mode == PiiMode::Block {
        return Err(blocked(&masker));
    }
    let kinds: Vec<&str> = found.iter().map(|e| e.name()).collect();
    if let Ok(value) = HeaderValue::from_str(&kinds.join(",")) {
        exchange.headers.push((PII_HEADER, value));
    }
    if let Some(restore) = masker.into_restore() {
        exchange.stages.push(Unmask::new(restore));
    }
    Ok(())
}

/// `400 pii_blocked`, naming the kinds found (never the values).
fn blocked(masker: &Masker) -> Error {
    let kinds: Vec<&str> = masker.found.iter().map(|e| e.name()).collect();
    Error::new(
        ErrorKind::PiiBlocked,
        format!(
            "the request contains personal data ({}) and the PII policy for this key blocks \
             it; nothing was sent to the model",
            kinds.join(", ")
        ),
    )
}

/// The end-user id and metadata tags of a call's ledger row: redacted, unless the caller's
/// policy is `off`, so the ledger never holds a raw value (an email sent as `user` is
/// recorded as `[EMAIL]`).
pub fn for_ledger(cx: &RequestContext, user: Option<&str>) -> (Option<Arc<str>>, Option<Arc<str>>) {
    let Some((_, wanted)) = policy(cx) else {
        return (user.map(Arc::from), cx.metadata.clone());
    };
    let mut masker = Masker::new(wanted, Action::Redact);
    let user = user.map(|user| {
        let mut user = user.to_owned();
        masker.text(&mut user);
        Arc::from(user)
    });
    let metadata = cx.metadata.as_deref().map(|tags| {
        let mut tags = tags.to_owned();
        masker.json(&mut tags);
        Arc::from(tags)
    });
    (user, metadata)
}
