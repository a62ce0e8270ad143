//! Recall by meaning: with `[context] embedding_model` set, every message of a conversation
//! gets a sentence vector once it is stored, and a turn's new message is embedded to find the
//! earlier items closest in meaning — the ones that answer "what is my kid called?" when the
//! history says "my daughter Aurora", which share no word with it. [`super::recall`] fuses
//! these with its word matches.
//!
//! The vectors are made off the request path, after the turn is stored, by the caller's
//! embedding calls (accounted to the caller like the turn); an item whose embedding failed is
//! found by its words only. The new message's vector is the one embedding on the request
//! path, made while the words are searched. A search reads the vectors of at most
//! [`MAX_SCANNED`] items before the window, newest first, so its cost has a bound whatever
//! the length of the history; older turns are found by their words.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::canonical::Role;
use crate::error::Result;
use crate::pipeline::RequestContext;
use crate::retrieval::index::{dots, quantise};
use crate::store::{ItemRecord, Store};

/// Most items (before the window) whose vectors one search compares: 384-dimension vectors
/// make this 1.5 MB of reads and a millisecond of dot products.
const MAX_SCANNED: i64 = 4096;

/// Longest text of an item embedded, in bytes: sentence embedders read a few hundred word
/// pieces at most, and the start of a message says what it is about.
const MAX_TEXT_BYTES: usize = 4000;

/// A new message's vector, as the stored ones are kept.
struct Query {
    vector: Vec<i8>,
    scale: f32,
}

/// The text an item is embedded by: a user or assistant message's text, cut at
/// [`MAX_TEXT_BYTES`]. `None` for what has no text worth finding (tool calls, summaries).
fn text_of(item: &ItemRecord) -> Option<String> {
    if !super::items::is_history(item) || !matches!(item.message.role, Role::User | Role::Assistant)
    {
        return None;
    }
    let mut text = item.message.joined_text();
    if text.trim().is_empty() {
        return None;
    }
    if text.len() > MAX_TEXT_BYTES {
        let mut cut = MAX_TEXT_BYTES;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    Some(text)
}

/// Embeds the stored `items` of `conversation` with `model` and keeps their vectors, in the
/// background, as the caller of `cx`. Failures are logged: those items are found by their
/// words only.
pub fn index(cx: &Arc<RequestContext>, model: &str, conversation: &str, items: &[ItemRecord]) {
    if !items.iter().any(|item| text_of(item).is_some()) {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let (cx, model, conversation) = (cx.clone(), model.to_owned(), conversation.to_owned());
    let items = items.to_vec();
    runtime.spawn(async move {
        let calls = Calls {
            cx: &cx,
            model: &model,
        };
        if let Err(e) = keep(&calls, &cx.services.store, &conversation, &items).await {
            tracing::warn!(%conversation, %model, error = %e.message, "conversation items could not be embedded for recall; they are found by their words");
        }
    });
}

/// Embeds the stored `items` of `conversation` that have text, and keeps their vectors.
pub async fn keep(
    embedder: &dyn Embed,
    store: &Store,
    conversation: &str,
    items: &[ItemRecord],
) -> Result<()> {
    let (seqs, texts): (Vec<i64>, Vec<String>) = items
        .iter()
        .filter_map(|item| text_of(item).map(|text| (item.seq, text)))
        .unzip();
    if texts.is_empty() {
        return Ok(());
    }
    let vectors = embedder.embed(texts).await?;
    let quantised: Vec<(i64, Vec<i8>, f32)> = seqs
        .into_iter()
        .zip(&vectors)
        .map(|(seq, v)| {
            let (vector, scale) = quantise(v);
            (seq, vector, scale)
        })
        .collect();
    store.put_item_vectors(conversation, &quantised).await
}

/// Turns texts into sentence vectors for recall: in the gateway, the caller's calls to
/// `[context] embedding_model` ([`Calls`]); in a benchmark, a model run directly.
pub trait Embed: Sync {
    fn embed(&self, texts: Vec<String>) -> BoxFuture<'_, Result<Vec<Vec<f32>>>>;
}

/// Embedding calls to `model` through the pipeline, as the caller of `cx`.
pub struct Calls<'a> {
    pub cx: &'a RequestContext,
    pub model: &'a str,
}

impl Embed for Calls<'_> {
    fn embed(&self, texts: Vec<String>) -> BoxFuture<'_, Result<Vec<Vec<f32>>>> {
        Box::pin(crate::retrieval::embed(
            self.cx, self.model, texts, "recall",
        ))
    }
}

/// The vector of a new message's `text`, or `None` (logged) when none can be made: the turn
/// then recalls by words only.
async fn query(embedder: &dyn Embed, text: &str) -> Option<Query> {
    if text.trim().is_empty() {
        return None;
    }
    match embedder.embed(vec![text.to_owned()]).await {
        Ok(vectors) => vectors.first().map(|v| {
            let (vector, scale) = quantise(v);
            Query { vector, scale }
        }),
        Err(e) => {
            tracing::warn!(error = %e.message, "a new message could not be embedded for recall; recalling by words only");
            None
        }
    }
}

/// The positions before `before` whose items are closest in meaning to `text`, closest first,
/// at most `count`: `text` is embedded, then compared with the stored vectors of the same
/// length. Nothing when `text` cannot be embedded.
pub async fn nearest(
    embedder: &dyn Embed,
    store: &Store,
    conversation: &str,
    text: &str,
    before: i64,
    count: usize,
) -> Result<Vec<i64>> {
    match query(embedder, text).await {
        Some(query) => nearest_to(store, conversation, &query, before, count).await,
        None => Ok(Vec::new()),
    }
}

/// The positions before `before` whose vectors are closest to `query`, closest first, at most
/// `count`. Only items with a vector of the query's length count.
async fn nearest_to(
    store: &Store,
    conversation: &str,
    query: &Query,
    before: i64,
    count: usize,
) -> Result<Vec<i64>> {
    let stored = store
        .item_vectors(conversation, before - MAX_SCANNED, before)
        .await?;
    let dimensions = query.vector.len();
    let (mut seqs, mut scales, mut flat) = (Vec::new(), Vec::new(), Vec::new());
    for (seq, vector, scale) in stored {
        if vector.len() == dimensions {
            seqs.push(seq);
            scales.push(scale);
            flat.extend_from_slice(&vector);
        }
    }
    let mut products = Vec::with_capacity(seqs.len());
    dots(&query.vector, &flat, &mut products);
    let mut scored: Vec<(f32, i64)> = products
        .iter()
        .zip(&scales)
        .zip(&seqs)
        .map(|((&product, &scale), &seq)| (product as f32 * scale * query.scale, seq))
        .collect();
    // Ties go to the newer item, as recall's word ranking does.
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)));
    Ok(scored.into_iter().take(count).map(|(_, seq)| seq).collect())
}
