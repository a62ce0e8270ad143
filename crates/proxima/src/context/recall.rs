//! Recall: the earlier turns, outside the window, that best match the new message — found by
//! full-text search (BM25) over the conversation's own items, which are indexed as they are
//! stored, and, with an embedding model, by meaning ([`super::meaning`]), the two rankings
//! fused — brought back whole, so that a fact from turn 3 of a long conversation reaches the
//! model when the user asks about it.

use std::collections::HashSet;

use super::assemble::Item;
use super::meaning::{self, Embed};
use crate::canonical::Part;
use crate::error::Result;
use crate::store::{ItemRecord, Postings, Store};

/// Most words of the new message a search uses; the longest (usually the rarest) matter most,
/// and each costs one bounded index read.
const MAX_WORDS: usize = 16;

/// Most distinct words an item is indexed by.
pub const MAX_ITEM_TERMS: usize = 96;

/// BM25's term-frequency saturation.
const K1: f64 = 1.2;

/// Items around a hit read to find the exchange it belongs to.
const SPAN: i64 = 8;

/// Reciprocal rank fusion's constant: how little the first places of one ranking outweigh
/// the next ones (60, as commonly used, lets an item both rankings place well win).
const FUSION_K: f64 = 60.0;

/// The words of a new message a search uses: the longest first.
pub fn query_words(text: &str) -> Vec<String> {
    let mut words: Vec<String> = crate::words::terms(text, MAX_ITEM_TERMS)
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    words.sort_by_key(|w| std::cmp::Reverse(w.chars().count()));
    words.truncate(MAX_WORDS);
    words
}

/// Ranks the items before `before` by BM25 over the postings of the query's words (each with
/// the number of items that hold it). A word in more items than the store keeps postings for
/// ([`crate::store::POSTINGS_PER_TERM`]) comes without them and is left out: so a search costs
/// about the same on a conversation of 100,000 items as on one of 100. The best `depth`, best
/// first.
fn rank(postings: &[Postings], before: i64, depth: usize) -> Vec<i64> {
    let n = before.max(1) as f64;
    let mut scores: std::collections::HashMap<i64, f64> = std::collections::HashMap::new();
    for (df, list) in postings {
        if list.is_empty() {
            continue;
        }
        let df = *df as f64;
        let idf = ((n - df + 0.5) / (df + 0.5) + 1.0).ln();
        for &(seq, tf) in list.iter().filter(|&&(seq, _)| seq < before) {
            let tf = tf as f64;
            *scores.entry(seq).or_default() += idf * tf * (K1 + 1.0) / (tf + K1);
        }
    }
    let mut ranked: Vec<(i64, f64)> = scores.into_iter().collect();
    // Ties go to the newer item. Only the best few are wanted of the hundreds scored.
    let order = |a: &(i64, f64), b: &(i64, f64)| b.1.total_cmp(&a.1).then(b.0.cmp(&a.0));
    if ranked.len() > depth {
        ranked.select_nth_unstable_by(depth, order);
        ranked.truncate(depth);
    }
    ranked.sort_unstable_by(order);
    ranked.into_iter().map(|(seq, _)| seq).collect()
}

/// Fuses rankings (each best first) by reciprocal rank: an item's score is the sum over the
/// rankings of 1 / (k + its place). Best first, at most `depth`; ties go to the newer item.
fn fuse(rankings: &[&[i64]], depth: usize) -> Vec<i64> {
    let mut scores: std::collections::HashMap<i64, f64> = std::collections::HashMap::new();
    for ranking in rankings {
        for (place, &seq) in ranking.iter().take(depth).enumerate() {
            *scores.entry(seq).or_default() += 1.0 / (FUSION_K + place as f64 + 1.0);
        }
    }
    let mut fused: Vec<(i64, f64)> = scores.into_iter().collect();
    fused.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.0.cmp(&a.0)));
    fused.into_iter().take(depth).map(|(seq, _)| seq).collect()
}

/// What a recall searches with: the new message's text, the postings of its words
/// ([`query_words`]), read with the window (`Store::read_turn`), and what embeds it to search
/// by meaning too, if anything.
pub struct Search<'a> {
    pub text: &'a str,
    pub postings: &'a [Postings],
    pub embedder: Option<&'a dyn Embed>,
}

/// The stretches of history before `before` that best match the search (by the new message's
/// words, and by its meaning when there is an embedder), best first: each the exchange around a
/// hit, from the user message that opened it, with its calls and results whole. At most
/// `count` stretches.
pub async fn recall(
    store: &Store,
    conversation: &str,
    search: &Search<'_>,
    before: i64,
    count: u32,
) -> Result<Vec<Vec<Item>>> {
    if (search.postings.is_empty() && search.embedder.is_none()) || count == 0 || before <= 0 {
        return Ok(Vec::new());
    }
    let depth = count as usize * 2;
    let by_words = rank(search.postings, before, depth);
    let by_meaning = match search.embedder {
        Some(embedder) => {
            meaning::nearest(embedder, store, conversation, search.text, before, depth).await?
        }
        None => Vec::new(),
    };
    let hits = fuse(&[&by_words, &by_meaning], depth);
    // The exchanges of all the best hits in one read: within each hit's neighbourhood, only
    // the items of its exchange, which is all that `exchange_around` keeps of it.
    let spans = spans(&hits, before);
    if spans.is_empty() {
        return Ok(Vec::new());
    }
    let around = store.items_in_exchanges(conversation, &spans).await?;
    Ok(stretches(&spans, &around, count))
}

/// Each hit with the neighbourhood (first and last position) its exchange is looked for in.
fn spans(hits: &[i64], before: i64) -> Vec<(i64, i64, i64)> {
    hits.iter()
        .map(|&hit| (hit, (hit - SPAN).max(0), (hit + SPAN).min(before - 1)))
        .collect()
}

/// The exchanges of the hits (`spans`, best first) in the items read around them, at most
/// `count`, each once.
fn stretches(spans: &[(i64, i64, i64)], around: &[ItemRecord], count: u32) -> Vec<Vec<Item>> {
    let mut stretches: Vec<Vec<Item>> = Vec::new();
    for &(hit, from, to) in spans {
        if stretches.len() >= count as usize {
            break;
        }
        if stretches.iter().any(|s| {
            s.first().is_some_and(|f| f.seq <= hit) && s.last().is_some_and(|l| l.seq >= hit)
        }) {
            continue;
        }
        // `around` is in order: the neighbourhood's items are a slice of it.
        let first = around.partition_point(|i| i.seq < from);
        let end = around.partition_point(|i| i.seq <= to);
        if let Some(stretch) = exchange_around(&around[first..end], hit) {
            stretches.push(stretch);
        }
    }
    stretches
}

/// The exchange `hit` belongs to, within `items` (in order: a neighbourhood, or the exchanges
/// read from it): from the user message that opened it to the item before the next user
/// message. `None` when the opening user message is not among `items` or the stretch would
/// split a call from its result.
fn exchange_around(items: &[ItemRecord], hit: i64) -> Option<Vec<Item>> {
    let at = items.iter().position(|i| i.seq == hit)?;
    let opens = |i: &ItemRecord| super::assemble::opens_exchange(&i.message);
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
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::canonical::{Message, Role};
    use crate::store::testing::on_both;

    #[test]
    fn query_words_keep_the_telling_ones() {
        let words = query_words("What was the launch code for Project Falcon? the CODE!");
        assert_eq!(words, ["project", "launch", "falcon", "code"]);
        assert!(query_words("is it? a").is_empty());
    }

    #[test]
    fn rare_words_outrank_common_ones() {
        let rare = (1, vec![(3, 1)]);
        let common = (50, (10..60).map(|s| (s, 1)).collect());
        // Counted but too common to be read: no postings.
        let everywhere = (900, vec![]);
        let postings = [common, rare, everywhere];
        assert_eq!(rank(&postings, 1000, 100).len(), 51);
        // The best few: the rare word's item, then the common word's, newest first.
        assert_eq!(rank(&postings, 1000, 6), [3, 59, 58, 57, 56, 55]);
        // Only items before the window count.
        assert_eq!(rank(&postings, 12, 6), [3, 11, 10]);
    }

    #[test]
    fn fusion_puts_what_both_rankings_find_first() {
        let words = [10, 20, 30];
        let meaning = [40, 30, 50];
        assert_eq!(fuse(&[&words, &meaning], 4), [30, 40, 10, 20]);
        // One ranking alone keeps its order.
        assert_eq!(fuse(&[&words, &[]], 2), [10, 20]);
    }

    /// A random history of exchanges: user turns (sometimes two in a row), answers with
    /// reasoning and tool calls, their results (sometimes left unanswered), and summaries.
    fn history(rng: &mut fastrand::Rng, exchanges: usize) -> Vec<Message> {
        let tool_call = |n: usize| Part::ToolCall {
            id: format!("call_{n}"),
            name: "lookup".into(),
            arguments: "{}".into(),
        };
        let mut messages = Vec::new();
        let mut calls = 0;
        for _ in 0..exchanges {
            for _ in 0..=usize::from(rng.u8(..5) == 0) {
                messages.push(Message::text(
                    Role::User,
                    format!("question {}", rng.u8(..9)),
                ));
            }
            for _ in 0..rng.usize(..4) {
                let mut answer = Message::text(Role::Assistant, format!("step {}", rng.u8(..9)));
                let made = rng.usize(..3);
                answer.content.extend((calls..calls + made).map(tool_call));
                if rng.bool() {
                    answer.content.insert(
                        0,
                        Part::Reasoning {
                            text: "thinking".into(),
                            signature: None,
                            redacted: None,
                        },
                    );
                }
                messages.push(answer);
                // A client may never send a call's result.
                let answered = if rng.u8(..6) == 0 { 0 } else { made };
                let results = (calls..calls + answered).map(|n| Part::ToolResult {
                    call_id: format!("call_{n}"),
                    content: vec![Part::text(format!("result {}", rng.u8(..9)))],
                    is_error: false,
                    cache: None,
                });
                let results: Vec<Part> = results.collect();
                if !results.is_empty() {
                    messages.push(Message {
                        role: Role::Tool,
                        content: results,
                        name: None,
                        extra: serde_json::Map::new(),
                    });
                }
                calls += made;
            }
            if rng.u8(..10) == 0 {
                messages.push(Message::text(Role::System, "summary so far"));
            }
        }
        messages
    }

    fn seen(stretches: &[Vec<Item>]) -> Vec<Vec<(i64, String, u64)>> {
        stretches
            .iter()
            .map(|s| {
                s.iter()
                    .map(|i| (i.seq, serde_json::to_string(&i.message).unwrap(), i.tokens))
                    .collect()
            })
            .collect()
    }

    on_both!(
        reading_only_the_exchanges_recalls_what_reading_each_neighbourhood_whole_does,
        |store: Store| async move {
            let mut rng = fastrand::Rng::with_seed(5);
            let mut recalled = 0;
            for round in 0..6 {
                let id = format!("conv_{round}");
                store
                    .create_conversation(&id, "team:a", &serde_json::json!({}), 1)
                    .await
                    .unwrap();
                let mut items = crate::context::items::split(&history(&mut rng, 60));
                for item in &mut items {
                    if item.message.role == Role::System {
                        item.kind = crate::context::items::SUMMARY;
                    }
                }
                let stored = store
                    .append_items(&id, "team:a", &items, 2)
                    .await
                    .unwrap()
                    .unwrap();
                // Deleted items leave gaps.
                for item in stored.iter().filter(|_| rng.u8(..12) == 0) {
                    store.delete_item(&id, &item.id).await.unwrap();
                }
                let len = stored.len() as i64;
                for _ in 0..40 {
                    let before = rng.i64(1..=len);
                    // Up to 18 hits: on PostgreSQL, more than one padded length.
                    let count = rng.u32(1..10);
                    let hits: Vec<i64> = (0..count * 2).map(|_| rng.i64(0..before)).collect();
                    let spans = spans(&hits, before);
                    let ranges: Vec<(i64, i64)> =
                        spans.iter().map(|&(_, from, to)| (from, to)).collect();
                    let whole = store.items_in_ranges(&id, &ranges).await.unwrap();
                    let exchanges = store.items_in_exchanges(&id, &spans).await.unwrap();
                    assert!(exchanges.len() <= whole.len());
                    let found = seen(&stretches(&spans, &exchanges, count));
                    assert_eq!(
                        found,
                        seen(&stretches(&spans, &whole, count)),
                        "hits {hits:?} before {before}"
                    );
                    recalled += found.len();
                }
            }
            // Most hits find their exchange.
            assert!(recalled > 400, "{recalled}");
        }
    );
}
