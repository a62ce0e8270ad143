//! Recall: the earlier turns, outside the window, that best match the new message — found by
//! full-text search (BM25) over the conversation's own items, which are indexed as they are
//! stored — brought back whole, so that a fact from turn 3 of a long conversation reaches the
//! model when the user asks about it.

use std::collections::HashSet;

use super::assemble::Item;
use crate::canonical::{Part, Role};
use crate::error::Result;
use crate::store::{ItemRecord, Store};

/// Most words of the new message a search uses; the rarest matter most and long messages
/// would only slow the search.
const MAX_WORDS: usize = 24;

/// Items around a hit read to find the exchange it belongs to.
const SPAN: i64 = 8;

/// Words that match nearly every turn and so rank nothing.
const STOP_WORDS: &[&str] = &[
    "a", "about", "after", "again", "all", "am", "an", "and", "any", "are", "as", "at", "be",
    "been", "before", "but", "by", "can", "could", "did", "do", "does", "for", "from", "had",
    "has", "have", "he", "her", "here", "him", "his", "how", "i", "if", "in", "into", "is", "it",
    "its", "just", "me", "my", "no", "not", "now", "of", "on", "or", "our", "she", "so", "some",
    "than", "that", "the", "their", "them", "then", "there", "these", "they", "this", "to", "too",
    "us", "was", "we", "were", "what", "when", "where", "which", "who", "why", "will", "with",
    "would", "you", "your",
];

/// The words of `text` worth searching for: lower-case, alphanumeric, no stop words, each
/// once, the longest (usually the rarest) first.
pub fn query_words(text: &str) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() > 1)
        .map(str::to_lowercase)
        .filter(|w| !STOP_WORDS.contains(&w.as_str()))
        .filter(|w| seen.insert(w.clone()))
        .collect();
    words.sort_by_key(|w| std::cmp::Reverse(w.chars().count()));
    words.truncate(MAX_WORDS);
    words
}

/// The stretches of history before `before` that best match `text`, best first: each the
/// exchange around a hit, from the user message that opened it, with its calls and results
/// whole. At most `count` stretches.
pub async fn recall(
    store: &Store,
    conversation: &str,
    text: &str,
    before: i64,
    count: u32,
) -> Result<Vec<Vec<Item>>> {
    let words = query_words(text);
    if words.is_empty() || count == 0 || before <= 0 {
        return Ok(Vec::new());
    }
    let hits = store
        .search_items(conversation, &words, before, count * 2)
        .await?;
    let mut stretches: Vec<Vec<Item>> = Vec::new();
    for hit in hits {
        if stretches.len() >= count as usize {
            break;
        }
        if stretches.iter().any(|s| {
            s.first().is_some_and(|f| f.seq <= hit) && s.last().is_some_and(|l| l.seq >= hit)
        }) {
            continue;
        }
        let around = store
            .items_between(
                conversation,
                (hit - SPAN).max(0),
                (hit + SPAN).min(before - 1),
            )
            .await?;
        if let Some(stretch) = exchange_around(&around, hit) {
            stretches.push(stretch);
        }
    }
    Ok(stretches)
}

/// The exchange `hit` belongs to, within `items` (consecutive, in order): from the user
/// message that opened it to the item before the next user message. `None` when the opening
/// user message is not among `items` or the stretch would split a call from its result.
fn exchange_around(items: &[ItemRecord], hit: i64) -> Option<Vec<Item>> {
    let at = items.iter().position(|i| i.seq == hit)?;
    let opens = |i: &ItemRecord| i.kind == "message" && i.message.role == Role::User;
    let start = items[..=at].iter().rposition(opens)?;
    let end = items[at + 1..]
        .iter()
        .position(opens)
        .map_or(items.len(), |n| at + 1 + n);
    let stretch: Vec<Item> = items[start..end]
        .iter()
        .filter(|i| super::items::is_history(i))
        .map(|i| Item {
            seq: i.seq,
            message: i.message.clone(),
            tokens: i.tokens,
        })
        .collect();
    // A stretch cut off by the span may hold a call whose result lies beyond it.
    let mut calls = HashSet::new();
    let mut results = HashSet::new();
    for item in &stretch {
        for part in &item.message.content {
            match part {
                Part::ToolCall { id, .. } => {
                    calls.insert(id.as_str());
                }
                Part::ToolResult { call_id, .. } => {
                    results.insert(call_id.as_str());
                }
                _ => {}
            }
        }
    }
    (calls == results).then(|| super::items::join_items(stretch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_words_keep_the_telling_ones() {
        let words = query_words("What was the launch code for Project Falcon? the CODE!");
        assert_eq!(words, ["project", "launch", "falcon", "code"]);
        assert!(query_words("is it? a").is_empty());
    }
}
