//! Retrieved passages in a prompt. A chat call that names vector stores — header
//! `x-proxima-vector-stores`, a conversation's metadata `vector_store_ids`, or the Responses
//! API's `file_search` tool — gets the passages found for its new message, as one instruction
//! message that numbers each passage and names its file, and asks the model to cite them as
//! `[1]`, `[2]`. Passages are searched again every turn and never stored with a turn: they
//! belong to the question they were found for.
//!
//! [`search`] finds them; [`fit`] (pure) keeps the best that fit a token budget, dropping the
//! worst first. A conversation turn gets them placed by the assembler
//! ([`super::assemble`]); a call without one, after its own instructions ([`insert`]).

use tokio::sync::oneshot;

use super::items;
use crate::canonical::{Message, Role};
use crate::error::Result;
use crate::pipeline::RequestContext;
use crate::retrieval::{self, Filter, Hit, SearchRequest};

/// Passages retrieved for a chat call that does not say how many (the header, a
/// conversation's stores).
pub const DEFAULT_PASSAGES: usize = 5;

/// The line that opens the passages: what they are, and how to cite them (the Responses API
/// turns the citations into `file_citation` annotations).
const INSTRUCTIONS: &str = "The numbered passages below were retrieved from the user's documents for the latest message, each after the name of its file. Answer from them where they are relevant, and cite each passage you use by its number in brackets, like [1].";

/// What a chat call asks to retrieve: from which stores, how many passages, which files.
#[derive(Debug)]
pub struct Retrieval {
    /// The vector stores to search; none: no retrieval.
    pub stores: Vec<String>,
    /// Passages to retrieve at most (1 to [`retrieval::MAX_RESULTS`]).
    pub max_results: usize,
    pub filter: Option<Filter>,
    pub score_threshold: Option<f32>,
    /// What to search for; by default the text of the last user message.
    pub query: Option<String>,
    /// Gets what was put into the prompt, for an answer that shows it (`file_search_call`).
    pub report: Option<oneshot::Sender<Retrieved>>,
}

impl Default for Retrieval {
    fn default() -> Retrieval {
        Retrieval {
            stores: Vec::new(),
            max_results: DEFAULT_PASSAGES,
            filter: None,
            score_threshold: None,
            query: None,
            report: None,
        }
    }
}

impl Retrieval {
    /// Retrieval of the default number of passages from `stores`.
    pub fn from_stores(stores: Vec<String>) -> Retrieval {
        Retrieval {
            stores,
            ..Retrieval::default()
        }
    }

    /// Adds the stores not named yet.
    pub fn add_stores(&mut self, more: impl IntoIterator<Item = String>) {
        for store in more {
            if !self.stores.contains(&store) {
                self.stores.push(store);
            }
        }
    }
}

/// Vector store ids from a comma-separated list (a header, a metadata value), without blanks
/// and repeats.
pub fn store_list(text: &str) -> Vec<String> {
    let mut stores = Retrieval::default();
    stores.add_stores(
        text.split(',')
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .map(str::to_owned),
    );
    stores.stores
}

/// What a call put into its prompt: the query and the hits the passages came from, best first.
#[derive(Debug, Clone)]
pub struct Retrieved {
    pub query: String,
    pub hits: Vec<Hit>,
}

/// One passage as the prompt shows it, and its tokens there.
#[derive(Debug, Clone)]
pub struct Passage {
    /// `[N] file name:` and the text, after a blank line.
    pub text: String,
    pub tokens: u64,
}

impl Passage {
    /// Passage `number` (from 1) of `filename`.
    pub fn new(number: usize, filename: &str, text: &str) -> Passage {
        let text = format!("\n\n[{number}] {filename}:\n{}", text.trim());
        let tokens = crate::tokenizer::count(&text);
        Passage { text, tokens }
    }
}

/// The passages found for a call, before they are fitted into its prompt.
pub struct Found {
    query: String,
    hits: Vec<Hit>,
    pub passages: Vec<Passage>,
}

impl Found {
    /// Tells `report` (if any) what went into the prompt: the first `used` passages.
    pub fn report(mut self, used: usize, report: Option<oneshot::Sender<Retrieved>>) {
        if let Some(report) = report {
            self.hits.truncate(used);
            // Nobody listening is no matter: the answer then does not show it.
            let _ = report.send(Retrieved {
                query: self.query,
                hits: self.hits,
            });
        }
    }
}

/// What the passages for `messages` are searched by: the text parts of the last user message
/// that has some.
pub fn query_of(messages: &[Message]) -> Option<String> {
    messages
        .iter()
        .rev()
        .filter(|m| m.role == Role::User)
        .find_map(|message| {
            let text = message.joined_text();
            let text = text.trim();
            (!text.is_empty()).then(|| text.to_owned())
        })
}

/// Searches the stores `retrieval` names for its query, by default [`query_of`] `messages`. `None` when it names no store; no passages when there
/// is nothing to search for. A store the caller may not see is a 404.
pub async fn search(
    cx: &std::sync::Arc<RequestContext>,
    retrieval: &Retrieval,
    messages: &[Message],
) -> Result<Option<Found>> {
    if retrieval.stores.is_empty() {
        return Ok(None);
    }
    let query = retrieval.query.clone().or_else(|| query_of(messages));
    let Some(query) = query else {
        return Ok(Some(Found {
            query: String::new(),
            hits: Vec::new(),
            passages: Vec::new(),
        }));
    };
    let request = SearchRequest {
        query: query.clone(),
        max_num_results: retrieval.max_results.clamp(1, retrieval::MAX_RESULTS),
        filter: retrieval.filter.clone(),
        score_threshold: retrieval.score_threshold,
    };
    let hits = retrieval::search(cx, &retrieval.stores, &request).await?;
    let passages = hits
        .iter()
        .enumerate()
        .map(|(i, hit)| Passage::new(i + 1, &hit.filename, &hit.text))
        .collect();
    Ok(Some(Found {
        query,
        hits,
        passages,
    }))
}

/// Passages fitted into a prompt: the message that carries them and its tokens.
#[derive(Debug)]
pub struct Fitted {
    pub message: Message,
    pub tokens: u64,
    /// How many passages it holds: the first ones given.
    pub count: usize,
}

/// The tokens of the passages' message before any passage: its framing and instruction line.
pub fn instruction_tokens() -> u64 {
    items::tokens(&Message::text(Role::System, INSTRUCTIONS))
}

/// The best passages (a prefix of `passages`, which come best first) that fit in `room` tokens
/// with their instruction line, as one system message; `None` when not even the best fits.
/// A worse passage is never kept in place of a better one that does not fit.
pub fn fit(passages: &[Passage], room: u64) -> Option<Fitted> {
    let mut tokens = instruction_tokens();
    let mut count = 0;
    for passage in passages {
        let with = tokens.saturating_add(passage.tokens);
        if with > room {
            break;
        }
        tokens = with;
        count += 1;
    }
    if count == 0 {
        return None;
    }
    let mut text = String::from(INSTRUCTIONS);
    for passage in &passages[..count] {
        text.push_str(&passage.text);
    }
    Some(Fitted {
        message: Message::text(Role::System, text),
        tokens,
        count,
    })
}

/// Puts the passages that fit in `room` into a prompt without a conversation: after its own
/// leading instructions, or first. Returns how many went in.
pub fn insert(messages: &mut Vec<Message>, passages: &[Passage], room: u64) -> usize {
    let Some(fitted) = fit(passages, room) else {
        return 0;
    };
    let at = messages
        .iter()
        .take_while(|m| m.role.is_instruction())
        .count();
    messages.insert(at, fitted.message);
    fitted.count
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn passages() -> Vec<Passage> {
        vec![
            Passage::new(1, "handbook.pdf", "  Holidays: 30 days a year.\n"),
            Passage::new(2, "faq.md", "Parking is in the north lot."),
            Passage::new(3, "notes.txt", &"long text ".repeat(200)),
        ]
    }

    #[test]
    fn each_passage_is_numbered_and_named_after_an_instruction_line() {
        let fitted = fit(&passages()[..2], u64::MAX).unwrap();
        assert_eq!(fitted.count, 2);
        assert_eq!(fitted.message.role, Role::System);
        let text = fitted.message.joined_text();
        assert_eq!(
            text,
            format!(
                "{INSTRUCTIONS}\n\n[1] handbook.pdf:\nHolidays: 30 days a year.\n\n[2] faq.md:\nParking is in the north lot."
            )
        );
        assert!(text.contains("cite each passage"));
        // The tokens are the message's own count, give or take the joins.
        let counted = items::tokens(&fitted.message);
        assert!(
            fitted.tokens.abs_diff(counted) <= 2,
            "{} vs {counted}",
            fitted.tokens
        );
    }

    #[test]
    fn passages_that_do_not_fit_are_dropped_worst_first() {
        let all = passages();
        let header = instruction_tokens();
        let two = header + all[0].tokens + all[1].tokens;
        // All fit.
        assert_eq!(fit(&all, u64::MAX).unwrap().count, 3);
        // The third, long one does not: the first two stay.
        let fitted = fit(&all, two).unwrap();
        assert_eq!(fitted.count, 2);
        assert_eq!(fitted.tokens, two);
        // One token short of the second: only the best.
        assert_eq!(fit(&all, two - 1).unwrap().count, 1);
        // Not even the best: nothing, not an empty message.
        assert!(fit(&all, header + all[0].tokens - 1).is_none());
        assert!(fit(&[], u64::MAX).is_none());
        // A worse passage never replaces a better one: a big best passage that does not fit
        // keeps the small ones after it out too.
        let big_first = [all[2].clone(), all[0].clone()];
        assert!(fit(&big_first, header + all[0].tokens + 10).is_none());
    }

    #[test]
    fn without_a_conversation_they_follow_the_requests_instructions() {
        let mut messages = vec![
            Message::text(Role::System, "Be brief."),
            Message::text(Role::Developer, "No lists."),
            Message::text(Role::User, "How many holidays?"),
        ];
        assert_eq!(insert(&mut messages, &passages(), u64::MAX), 3);
        let roles: Vec<Role> = messages.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            [Role::System, Role::Developer, Role::System, Role::User]
        );
        assert!(messages[2].joined_text().starts_with(INSTRUCTIONS));

        let mut messages = vec![Message::text(Role::User, "How many holidays?")];
        assert_eq!(insert(&mut messages, &passages(), u64::MAX), 3);
        assert_eq!(messages[0].role, Role::System);
        assert_eq!(messages[1].role, Role::User);

        // No room: the prompt stays as it was.
        let mut messages = vec![Message::text(Role::User, "How many holidays?")];
        assert_eq!(insert(&mut messages, &passages(), 10), 0);
        assert_eq!(messages.len(), 1);
    }

    #[test]
    fn store_lists_are_trimmed_without_blanks_or_repeats() {
        assert_eq!(store_list(" vs_a, vs_b,,vs_a ,"), ["vs_a", "vs_b"]);
        assert!(store_list(" , ").is_empty());
        let mut retrieval = Retrieval::from_stores(vec!["vs_a".into()]);
        retrieval.add_stores(store_list("vs_b,vs_a"));
        assert_eq!(retrieval.stores, ["vs_a", "vs_b"]);
        assert_eq!(retrieval.max_results, DEFAULT_PASSAGES);
    }
}
