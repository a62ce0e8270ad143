//! Assembling a prompt from a conversation's stored pieces within a token budget.
//!
//! Pure: it only chooses and orders messages. What goes in, in order of priority: the fixed part
//! (instructions, the running summary, the request's new messages), then the passages retrieved
//! for the new message (within their own share), then a window of the newest stored items, then
//! stretches of older history that recall found. The result must be a history
//! every backend accepts: Anthropic and Gemini refuse one that starts with an assistant turn or
//! that splits a tool call from its result, so the window is cut only between exchanges' blocks
//! and made to begin with a user message.

use super::passages::{self, Passage};
use crate::canonical::{Message, Part, Role};

/// One stored item of a conversation's history.
#[derive(Debug, Clone)]
pub struct Item {
    /// Position in the conversation: unique, ascending from oldest to newest.
    pub seq: i64,
    pub message: Message,
    /// The message's tokens, as counted when it was stored (never recounted here).
    pub tokens: u64,
}

/// What a prompt is assembled from.
pub struct Inputs<'a> {
    /// Instruction messages (system/developer) to send first.
    pub system: &'a [Message],
    /// Tokens of `system`, all together.
    pub system_tokens: u64,
    /// The running summary of older turns, as one message, with its tokens.
    pub summary: Option<(&'a Message, u64)>,
    /// Earlier stretches of history that recall found, best match first. Each is a run of
    /// consecutive items (ascending seq) that begins with a user message and holds whole tool pairs.
    pub recalled: &'a [Vec<Item>],
    /// The newest stored items, ascending seq, ending with the newest; may hold more than fits.
    pub recent: &'a [Item],
    /// Passages retrieved for the new message, best first, each with its tokens.
    pub passages: &'a [Passage],
    /// The request's new (non-instruction) messages: always sent, last.
    pub new: &'a [Message],
    /// Tokens of `new`, all together.
    pub new_tokens: u64,
    /// Tokens the whole prompt may use.
    pub budget: u64,
    /// Most tokens recalled stretches may take.
    pub recall_budget: u64,
    /// Most tokens the passages may take, their instruction line included.
    pub passage_budget: u64,
}

/// The prompt, and what it is made of.
#[derive(Debug)]
pub struct Assembled {
    /// system, summary, recalled stretches (in original order), the passages' message, the
    /// window of recent items, new messages.
    pub messages: Vec<Message>,
    /// Sum of the tokens of what was included.
    pub tokens: u64,
    /// seq of the oldest recent item included; None when no recent item fits.
    pub window_start: Option<i64>,
    /// Number of recalled items included.
    pub recalled_items: usize,
    /// Number of passages included (the best ones).
    pub passages: usize,
}

/// Builds the prompt: the fixed part always, then the best passages that fit their share, then
/// as much of the recent history as fits (keeping room for recall), then the recalled stretches
/// that fit in what is left.
pub fn assemble(inputs: &Inputs<'_>) -> Assembled {
    let summary_tokens = inputs.summary.map_or(0, |(_, tokens)| tokens);
    let fixed = inputs
        .system_tokens
        .saturating_add(summary_tokens)
        .saturating_add(inputs.new_tokens);
    // An overlong fixed part gets nothing else, not even free (zero-token) items: the caller
    // decides what to do with such a prompt, and should see exactly what it is made of.
    let (passages, window, recalled) = match inputs.budget.checked_sub(fixed) {
        Some(room) => {
            // The passages answer the new message: they come before older history, but only
            // up to their share, so that the conversation keeps the rest.
            let passages = passages::fit(inputs.passages, room.min(inputs.passage_budget));
            let room = room - passages.as_ref().map_or(0, |p| p.tokens);
            let reserve = recall_reserve(inputs).min(room);
            let window = choose_window(inputs.recent, room - reserve);
            let recall_room = room.saturating_sub(window.tokens).min(inputs.recall_budget);
            let window_start = window.start_seq(inputs.recent);
            let recalled = choose_recalled(inputs.recalled, window_start, recall_room);
            (passages, window, recalled)
        }
        None => (None, Window::empty(inputs.recent.len()), Vec::new()),
    };

    let mut messages = Vec::new();
    messages.extend(inputs.system.iter().cloned());
    messages.extend(inputs.summary.map(|(message, _)| message.clone()));
    let recalled_items = recalled.iter().map(|stretch| stretch.len()).sum();
    for stretch in &recalled {
        messages.extend(stretch.iter().map(|item| item.message.clone()));
    }
    let passage_tokens = passages.as_ref().map_or(0, |p| p.tokens);
    let passage_count = passages.as_ref().map_or(0, |p| p.count);
    messages.extend(passages.map(|p| p.message));
    messages.extend(window.items(inputs.recent).map(|item| item.message.clone()));
    messages.extend(inputs.new.iter().cloned());

    Assembled {
        messages,
        tokens: fixed
            .saturating_add(passage_tokens)
            .saturating_add(window.tokens)
            .saturating_add(recalled.iter().map(|stretch| tokens_of(stretch)).sum()),
        window_start: window.start_seq(inputs.recent),
        recalled_items,
        passages: passage_count,
    }
}

/// What the window leaves for recall: recall's budget, or less when recall found less. Nothing
/// when recall found nothing, so that then the window may use the whole budget.
fn recall_reserve(inputs: &Inputs<'_>) -> u64 {
    let found = inputs
        .recalled
        .iter()
        .fold(0u64, |sum, stretch| sum.saturating_add(tokens_of(stretch)));
    found.min(inputs.recall_budget)
}

/// The part of `recent` that goes into the prompt: every item from `first` on, and maybe, in
/// front of them, the user message that opened the exchange they begin in the middle of.
struct Window {
    /// Index in `recent` of the oldest item of the contiguous part (`recent.len()` when empty).
    first: usize,
    /// Index in `recent` of the pinned user message, when there is one.
    pinned: Option<usize>,
    /// Tokens of the contiguous part and the pinned message.
    tokens: u64,
}

impl Window {
    /// No item of a `recent` of `len` items.
    fn empty(len: usize) -> Window {
        Window {
            first: len,
            pinned: None,
            tokens: 0,
        }
    }

    /// The items, oldest first.
    fn items<'r>(&self, recent: &'r [Item]) -> impl Iterator<Item = &'r Item> {
        let pinned = self.pinned.and_then(|at| recent.get(at));
        pinned
            .into_iter()
            .chain(recent.get(self.first..).unwrap_or(&[]))
    }

    /// seq of the oldest item, the pinned one if any.
    fn start_seq(&self, recent: &[Item]) -> Option<i64> {
        self.items(recent).next().map(|item| item.seq)
    }
}

/// The newest whole blocks of `recent` that fit in `room`, made to begin with a user message.
fn choose_window(recent: &[Item], room: u64) -> Window {
    let mut window = Window::empty(recent.len());
    // Newest block first; stop at the first that does not fit: skipping it to take an older one
    // would leave a hole in the middle of the conversation.
    while window.first > 0 {
        let start = block_start_before(recent, window.first);
        let with_block = window
            .tokens
            .saturating_add(tokens_of(&recent[start..window.first]));
        if with_block > room {
            break;
        }
        window.first = start;
        window.tokens = with_block;
    }
    begin_with_user(recent, &mut window, room);
    window
}

/// Makes the window's first non-instruction message a user message: an orphan tool result is
/// dropped; an assistant turn gets the user message that opened its exchange pinned in front of
/// it, or, while that does not fit, loses blocks from its front (each one dropped makes more
/// room for the pin, so the newest turns are kept whenever they and the pin fit).
fn begin_with_user(recent: &[Item], window: &mut Window, room: u64) {
    let lead = |first: usize| {
        recent[first..]
            .iter()
            .find(|item| !item.message.role.is_instruction())
    };
    while let Some(lead) = lead(window.first) {
        if opens_exchange(&lead.message) {
            return;
        }
        if !is_tool_result(&lead.message) {
            let opener = recent[..window.first]
                .iter()
                .rposition(|item| opens_exchange(&item.message));
            if let Some(opener) = opener {
                let with_opener = window.tokens.saturating_add(recent[opener].tokens);
                if with_opener <= room {
                    window.pinned = Some(opener);
                    window.tokens = with_opener;
                    return;
                }
            }
        }
        let end = block_end(recent, window.first);
        window.tokens = window
            .tokens
            .saturating_sub(tokens_of(&recent[window.first..end]));
        window.first = end;
    }
}

/// Start of the block that ends (exclusive) at `end`, which is > 0. A block is a message that is
/// not a tool result and the tool results that follow it; results at the very start of `recent`
/// (their call is older) make a block of their own.
fn block_start_before(recent: &[Item], end: usize) -> usize {
    recent[..end]
        .iter()
        .rposition(|item| !is_tool_result(&item.message))
        .unwrap_or(0)
}

/// End (exclusive) of the block that begins at `start`, which is < `recent.len()`.
fn block_end(recent: &[Item], start: usize) -> usize {
    let results = recent[start + 1..]
        .iter()
        .take_while(|item| is_tool_result(&item.message))
        .count();
    start + 1 + results
}

/// The recalled stretches that fit in `room`, best first, in ascending seq order. A stretch that
/// reaches into the window (or into one already taken) would repeat messages, and a part of one
/// could split a tool call from its result, so those are skipped whole.
fn choose_recalled(recalled: &[Vec<Item>], window_start: Option<i64>, room: u64) -> Vec<&[Item]> {
    let mut taken: Vec<&[Item]> = Vec::new();
    let mut used = 0u64;
    for stretch in recalled {
        let (Some(first), Some(last)) = (stretch.first(), stretch.last()) else {
            continue;
        };
        let in_window =
            window_start.is_some_and(|start| stretch.iter().any(|item| item.seq >= start));
        let overlaps_taken = taken.iter().any(|other| {
            let (other_first, other_last) = (other[0].seq, other[other.len() - 1].seq);
            first.seq <= other_last && other_first <= last.seq
        });
        let with_stretch = used.saturating_add(tokens_of(stretch));
        if in_window || overlaps_taken || with_stretch > room {
            continue;
        }
        used = with_stretch;
        taken.push(stretch);
    }
    taken.sort_by_key(|stretch| stretch[0].seq);
    taken
}

/// Sum of the items' stored token counts.
fn tokens_of(items: &[Item]) -> u64 {
    items
        .iter()
        .fold(0u64, |sum, item| sum.saturating_add(item.tokens))
}

/// A message that carries tool results, whatever its role: OpenAI sends them with role Tool,
/// Anthropic inside a User message. Such a message continues an exchange, never opens one. Any
/// result part counts, not only a message of nothing but results: Anthropic lets a user add text
/// after the results, and that message still must not be split from the calls before it.
pub fn is_tool_result(message: &Message) -> bool {
    message
        .content
        .iter()
        .any(|part| matches!(part, Part::ToolResult { .. }))
}

/// A user turn: a User message holding no tool result.
pub fn opens_exchange(message: &Message) -> bool {
    message.role == Role::User && !is_tool_result(message)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use serde_json::Map;

    use super::*;

    // ---- building histories ----

    fn message(role: Role, content: Vec<Part>) -> Message {
        Message {
            role,
            content,
            name: None,
            extra: Map::new(),
        }
    }

    fn user(text: &str) -> Message {
        Message::text(Role::User, text)
    }

    fn assistant(text: &str) -> Message {
        Message::text(Role::Assistant, text)
    }

    /// An assistant message calling one tool per id.
    fn calls(ids: &[&str]) -> Message {
        let parts = ids.iter().map(|id| Part::ToolCall {
            id: id.to_string(),
            name: "lookup".into(),
            arguments: "{}".into(),
        });
        message(Role::Assistant, parts.collect())
    }

    fn result_part(id: &str) -> Part {
        Part::ToolResult {
            call_id: id.to_string(),
            content: vec![Part::text(format!("result of {id}"))],
            is_error: false,
            cache: None,
        }
    }

    /// One message with the results of the calls `ids` (role Tool for OpenAI, User for Anthropic).
    fn results(role: Role, ids: &[&str]) -> Message {
        message(role, ids.iter().map(|id| result_part(id)).collect())
    }

    /// Items with seq `first`, `first + 1` ...
    fn items(first: i64, messages: Vec<(Message, u64)>) -> Vec<Item> {
        let seqs = first..;
        seqs.zip(messages)
            .map(|(seq, (message, tokens))| Item {
                seq,
                message,
                tokens,
            })
            .collect()
    }

    /// Nothing but `recent`, `new` (counted as free) and the budget.
    fn inputs<'a>(recent: &'a [Item], new: &'a [Message], budget: u64) -> Inputs<'a> {
        Inputs {
            system: &[],
            system_tokens: 0,
            summary: None,
            recalled: &[],
            recent,
            passages: &[],
            new,
            new_tokens: 0,
            budget,
            recall_budget: 0,
            passage_budget: 0,
        }
    }

    /// The messages as short labels: their text, or their calls and results.
    fn labels(out: &Assembled) -> Vec<String> {
        let label = |message: &Message| {
            let parts = message.content.iter().map(|part| match part {
                Part::Text { text, .. } => text.clone(),
                Part::ToolCall { id, .. } => format!("call {id}"),
                Part::ToolResult { call_id, .. } => format!("result {call_id}"),
                other => format!("{other:?}"),
            });
            parts.collect::<Vec<_>>().join(" + ")
        };
        out.messages.iter().map(label).collect()
    }

    // ---- rule 1: the fixed part ----

    #[test]
    fn fixed_part_is_always_sent_and_alone_when_over_budget() {
        let system = [Message::text(Role::System, "be kind")];
        let summary = Message::text(Role::System, "so far");
        let new = [user("now")];
        // Free (zero-token) items would fit any budget, yet are left out: nothing but the fixed part.
        let recent = items(2, vec![(user("old"), 0)]);
        let recalled = [items(1, vec![(user("older"), 0)])];
        let mut inputs = inputs(&recent, &new, 10);
        inputs.recalled = &recalled;
        inputs.recall_budget = 10;
        inputs.system = &system;
        inputs.system_tokens = 5;
        inputs.summary = Some((&summary, 4));
        inputs.new_tokens = 3;

        let out = assemble(&inputs);

        assert_eq!(labels(&out), ["be kind", "so far", "now"]);
        assert_eq!(out.tokens, 12);
        assert_eq!(out.window_start, None);
        assert_eq!(out.recalled_items, 0);
    }

    // ---- rule 2: the window ----

    #[test]
    fn window_takes_the_newest_blocks_and_stops_at_the_first_that_does_not_fit() {
        let recent = items(
            1,
            vec![
                (user("u1"), 1),
                (assistant("a2"), 1),
                (user("u3"), 1),
                (assistant("a4"), 5),
                (user("u5"), 1),
                (assistant("a6"), 1),
            ],
        );
        let new = [user("now")];
        let mut inputs = inputs(&recent, &new, 5);
        inputs.new_tokens = 1;

        let out = assemble(&inputs);

        // u1..u3 would fit in what a4 leaves, but the window has no holes.
        assert_eq!(labels(&out), ["u5", "a6", "now"]);
        assert_eq!(out.tokens, 3);
        assert_eq!(out.window_start, Some(5));
    }

    #[test]
    fn a_call_and_its_results_are_taken_whole_or_not_at_all() {
        let recent = items(
            1,
            vec![
                (user("u1"), 1),
                (calls(&["a", "b"]), 2),
                (results(Role::Tool, &["a"]), 1),
                (results(Role::Tool, &["b"]), 10),
                (assistant("done"), 1),
            ],
        );
        let new = [user("now")];

        // Room for the call and one result, not both results: the whole exchange stays out.
        let out = assemble(&inputs(&recent, &new, 4));
        assert_eq!(labels(&out), ["u1", "done", "now"]);
        assert_eq!(out.tokens, 2);

        let out = assemble(&inputs(&recent, &new, 15));
        assert_eq!(
            labels(&out),
            [
                "u1",
                "call a + call b",
                "result a",
                "result b",
                "done",
                "now"
            ]
        );
        assert_eq!(out.tokens, 15);
        assert_eq!(out.window_start, Some(1));
    }

    #[test]
    fn results_in_a_user_message_belong_to_the_call_before_them() {
        // Anthropic's way: the results come back in a User message, which must not be taken for a
        // user turn (the window would start with results whose call it left out), also when the
        // user wrote text after the results.
        for results_message in [
            results(Role::User, &["a"]),
            message(Role::User, vec![result_part("a"), Part::text("and also")]),
        ] {
            let recent = items(
                1,
                vec![
                    (user("u1"), 1),
                    (calls(&["a"]), 1),
                    (results_message, 1),
                    (assistant("a4"), 1),
                ],
            );
            let new = [user("now")];

            let out = assemble(&inputs(&recent, &new, 3));

            assert_eq!(labels(&out), ["u1", "a4", "now"]);
            assert_eq!(out.window_start, Some(1));
        }
    }

    // ---- rule 3: how the window begins ----

    #[test]
    fn results_whose_call_is_older_than_recent_are_dropped() {
        let recent = items(
            1,
            vec![
                (results(Role::Tool, &["x"]), 1),
                (results(Role::Tool, &["y"]), 1),
                (user("u3"), 1),
                (assistant("a4"), 1),
            ],
        );
        let new = [user("now")];

        let out = assemble(&inputs(&recent, &new, 100));

        assert_eq!(labels(&out), ["u3", "a4", "now"]);
        assert_eq!(out.tokens, 2);
        assert_eq!(out.window_start, Some(3));
    }

    #[test]
    fn an_assistant_turn_without_its_user_message_in_recent_is_dropped() {
        let recent = items(
            1,
            vec![
                (results(Role::User, &["x"]), 1),
                (assistant("a2"), 1),
                (user("u3"), 1),
                (assistant("a4"), 1),
            ],
        );
        let new = [user("now")];

        let out = assemble(&inputs(&recent, &new, 100));

        assert_eq!(labels(&out), ["u3", "a4", "now"]);
        assert_eq!(out.window_start, Some(3));
    }

    #[test]
    fn the_user_message_that_opened_the_exchange_is_pinned_in_front() {
        let recent = items(
            1,
            vec![(user("u1"), 1), (assistant("a2"), 5), (assistant("a3"), 1)],
        );
        let new = [user("now")];

        let out = assemble(&inputs(&recent, &new, 2));

        assert_eq!(labels(&out), ["u1", "a3", "now"]);
        assert_eq!(out.tokens, 2);
        assert_eq!(out.window_start, Some(1));
    }

    #[test]
    fn blocks_are_dropped_from_the_front_until_the_pinned_user_message_fits() {
        let recent = items(
            1,
            vec![
                (user("u1"), 3),
                (calls(&["c"]), 1),
                (results(Role::Tool, &["c"]), 1),
                (assistant("a4"), 1),
            ],
        );
        let new = [user("now")];

        // The window [call, result, a4] (3) leaves no room for u1 (3); without the call it does.
        let out = assemble(&inputs(&recent, &new, 5));

        assert_eq!(labels(&out), ["u1", "a4", "now"]);
        assert_eq!(out.tokens, 4);
        assert_eq!(out.window_start, Some(1));
    }

    #[test]
    fn blocks_are_dropped_from_the_front_until_the_window_begins_with_a_user_message() {
        let recent = items(
            1,
            vec![
                (user("u1"), 10),
                (assistant("a2"), 1),
                (user("u3"), 1),
                (assistant("a4"), 1),
            ],
        );
        let new = [user("now")];

        let out = assemble(&inputs(&recent, &new, 3));

        assert_eq!(labels(&out), ["u3", "a4", "now"]);
        assert_eq!(out.tokens, 2);
        assert_eq!(out.window_start, Some(3));
    }

    // ---- rule 4: recall ----

    #[test]
    fn room_is_kept_for_recall_only_when_recall_found_something() {
        let recent = items(
            10,
            vec![
                (user("u10"), 1),
                (assistant("a11"), 1),
                (user("u12"), 1),
                (assistant("a13"), 1),
            ],
        );
        let recalled = [items(1, vec![(user("u1"), 1), (assistant("a2"), 1)])];
        let new = [user("now")];

        let mut without = inputs(&recent, &new, 4);
        without.recall_budget = 2;
        let out = assemble(&without);
        assert_eq!(labels(&out), ["u10", "a11", "u12", "a13", "now"]);
        assert_eq!(out.recalled_items, 0);

        let mut with = inputs(&recent, &new, 4);
        with.recall_budget = 2;
        with.recalled = &recalled;
        let out = assemble(&with);
        assert_eq!(labels(&out), ["u1", "a2", "u12", "a13", "now"]);
        assert_eq!(out.recalled_items, 2);
        assert_eq!(out.tokens, 4);
        assert_eq!(out.window_start, Some(12));
    }

    #[test]
    fn recall_takes_the_best_stretches_that_fit_and_do_not_overlap_in_seq_order() {
        let history = items(
            1,
            vec![
                (user("u1"), 1),
                (assistant("a2"), 1),
                (user("u3"), 1),
                (assistant("a4"), 1),
                (user("u5"), 1),
                (assistant("a6"), 10),
                (user("u7"), 1),
                (assistant("a8"), 1),
                (user("u9"), 1),
                (assistant("a10"), 1),
            ],
        );
        let stretch = |from: i64, to: i64| history[from as usize - 1..to as usize].to_vec();
        // Each skipped one would fit in what is left when its turn comes.
        let recalled = [
            stretch(3, 4),  // taken first
            stretch(7, 10), // reaches into the window
            stretch(1, 4),  // overlaps the one taken
            stretch(5, 6),  // does not fit
            stretch(1, 2),  // taken
        ];
        let system = [Message::text(Role::System, "be kind")];
        let summary = Message::text(Role::System, "so far");
        let new = [user("now")];
        let mut inputs = inputs(&history[8..], &new, 100);
        inputs.system = &system;
        inputs.system_tokens = 1;
        inputs.summary = Some((&summary, 1));
        inputs.new_tokens = 1;
        inputs.recalled = &recalled;
        inputs.recall_budget = 6;

        let out = assemble(&inputs);

        assert_eq!(
            labels(&out),
            ["be kind", "so far", "u1", "a2", "u3", "a4", "u9", "a10", "now"]
        );
        assert_eq!(out.recalled_items, 4);
        assert_eq!(out.tokens, 9);
        assert_eq!(out.window_start, Some(9));
    }

    // ---- rule 5: retrieved passages ----

    /// Passages whose texts are their labels, each `tokens` tokens.
    fn passages_of(labels: &[&str], tokens: u64) -> Vec<Passage> {
        labels
            .iter()
            .map(|label| Passage {
                text: format!("\n\n{label}"),
                tokens,
            })
            .collect()
    }

    #[test]
    fn passages_go_after_recalled_turns_and_before_the_window_within_their_share() {
        let history = items(
            1,
            vec![
                (user("u1"), 1),
                (assistant("a2"), 1),
                (user("u3"), 1),
                (assistant("a4"), 1),
            ],
        );
        let recalled = [history[..2].to_vec()];
        let found = passages_of(&["[1] best", "[2] good", "[3] fair"], 2);
        let system = [Message::text(Role::System, "be kind")];
        let new = [user("now")];
        let header = passages::instruction_tokens();
        let mut inputs = inputs(&history[2..], &new, 100 + header);
        inputs.system = &system;
        inputs.recalled = &recalled;
        inputs.recall_budget = 10;
        inputs.passages = &found;
        // Room for the instruction line and two passages: the worst is dropped.
        inputs.passage_budget = header + 5;

        let out = assemble(&inputs);

        let texts: Vec<String> = out.messages.iter().map(Message::joined_text).collect();
        assert_eq!(out.passages, 2);
        assert_eq!(texts.len(), 7, "{texts:?}");
        assert_eq!(&texts[..3], ["be kind", "u1", "a2"]);
        assert!(
            texts[3].ends_with("\n\n[1] best\n\n[2] good"),
            "{}",
            texts[3]
        );
        assert_eq!(out.messages[3].role, Role::System);
        assert_eq!(&texts[4..], ["u3", "a4", "now"]);
        assert_eq!(out.tokens, header + 4 + 4);
        assert_eq!(out.window_start, Some(3));

        // The passages come before history: with room for them and one token more, the
        // window (which needs two) gives way.
        inputs.recalled = &[];
        inputs.budget = header + 4 + 2;
        let out = assemble(&inputs);
        assert_eq!((out.passages, out.window_start), (2, Some(3)));
        inputs.budget = header + 4 + 1;
        let out = assemble(&inputs);
        assert_eq!((out.passages, out.window_start), (2, None));
        assert_eq!(out.messages.len(), 3);

        // Not even the best passage fits its share: no passages' message at all.
        inputs.passage_budget = header + 1;
        let out = assemble(&inputs);
        assert_eq!(out.passages, 0);
        assert!(out
            .messages
            .iter()
            .all(|m| !m.joined_text().contains("[1] best")));
    }

    // ---- rules 6 and 7 ----

    #[test]
    fn tokens_are_the_stored_counts_not_recounted() {
        let long = "many words ".repeat(1000);
        let recent = items(1, vec![(user(&long), 1), (assistant(&long), 2)]);
        let new = [user("now")];
        let mut inputs = inputs(&recent, &new, 10);
        inputs.new_tokens = 7;

        let out = assemble(&inputs);

        assert_eq!(out.messages.len(), 3);
        assert_eq!(out.tokens, 10);
    }

    #[test]
    fn instructions_in_recent_stay_where_they_are() {
        let recent = items(
            1,
            vec![
                (user("u1"), 1),
                (Message::text(Role::Developer, "be brief"), 1),
                (user("u3"), 1),
                (assistant("a4"), 1),
            ],
        );
        let new = [user("now")];

        let out = assemble(&inputs(&recent, &new, 100));
        assert_eq!(labels(&out), ["u1", "be brief", "u3", "a4", "now"]);

        // An instruction may begin the window: the first non-instruction message is a user turn.
        let out = assemble(&inputs(&recent, &new, 3));
        assert_eq!(labels(&out), ["be brief", "u3", "a4", "now"]);
        assert_eq!(out.window_start, Some(2));
    }

    // ---- properties, over random histories ----

    /// A random case: the inputs' owned parts, and the whole history they were cut from.
    struct Case {
        history: Vec<Item>,
        system: Vec<Message>,
        system_tokens: u64,
        summary: Option<(Message, u64)>,
        recalled: Vec<Vec<Item>>,
        recent_from: usize,
        passages: Vec<Passage>,
        new: Vec<Message>,
        new_tokens: u64,
        budget: u64,
        recall_budget: u64,
        passage_budget: u64,
    }

    impl Case {
        fn inputs(&self) -> Inputs<'_> {
            Inputs {
                system: &self.system,
                system_tokens: self.system_tokens,
                summary: self
                    .summary
                    .as_ref()
                    .map(|(message, tokens)| (message, *tokens)),
                recalled: &self.recalled,
                recent: &self.history[self.recent_from..],
                passages: &self.passages,
                new: &self.new,
                new_tokens: self.new_tokens,
                budget: self.budget,
                recall_budget: self.recall_budget,
                passage_budget: self.passage_budget,
            }
        }

        fn fixed(&self) -> u64 {
            self.system_tokens + self.summary.as_ref().map_or(0, |(_, t)| *t) + self.new_tokens
        }
    }

    /// Mostly small sizes, sometimes free, sometimes large.
    fn random_tokens(rng: &mut fastrand::Rng) -> u64 {
        match rng.u8(0..10) {
            0 => 0,
            1 => rng.u64(20..60),
            _ => rng.u64(1..10),
        }
    }

    /// A history being made: items with random tokens, seqs from 1.
    struct Builder {
        rng: fastrand::Rng,
        history: Vec<Item>,
        /// Indices of the user turns (where recalled stretches may begin).
        users: Vec<usize>,
        calls: usize,
    }

    impl Builder {
        fn push(&mut self, message: Message) {
            let tokens = random_tokens(&mut self.rng);
            let seq = self.history.len() as i64 + 1;
            self.history.push(Item {
                seq,
                message,
                tokens,
            });
        }

        /// 1–3 fresh call ids.
        fn call_ids(&mut self) -> Vec<String> {
            (0..self.rng.usize(1..=3))
                .map(|_| {
                    self.calls += 1;
                    format!("call{}", self.calls)
                })
                .collect()
        }

        /// A user message and 0–3 assistant steps, each a text answer or 1–3 calls followed by
        /// their results (one Tool message each, one User message of all, or one User message
        /// each); sometimes a developer message first. Every message is distinct (turn numbers
        /// and call ids in the texts), so the output can be mapped back to items.
        fn turn(&mut self) {
            let turn = self.users.len();
            if self.rng.u8(0..8) == 0 {
                self.push(Message::text(Role::Developer, format!("be brief {turn}")));
            }
            self.users.push(self.history.len());
            self.push(user(&format!("question {turn}")));
            for step in 0..self.rng.usize(0..4) {
                if self.rng.bool() {
                    self.push(assistant(&format!("answer {turn}.{step}")));
                    continue;
                }
                let ids = self.call_ids();
                let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
                let mut call = calls(&ids);
                if self.rng.bool() {
                    let text = format!("let me look {turn}.{step}");
                    call.content.insert(0, Part::text(text));
                }
                self.push(call);
                match self.rng.u8(0..3) {
                    0 => ids
                        .iter()
                        .for_each(|id| self.push(results(Role::Tool, &[id]))),
                    1 => self.push(results(Role::User, &ids)),
                    _ => ids
                        .iter()
                        .for_each(|id| self.push(results(Role::User, &[id]))),
                }
            }
        }
    }

    fn random_case(seed: u64) -> Case {
        let mut b = Builder {
            rng: fastrand::Rng::with_seed(seed),
            history: Vec::new(),
            users: Vec::new(),
            calls: 0,
        };
        for _ in 0..b.rng.usize(0..9) {
            b.turn();
        }
        let Builder {
            mut rng,
            history,
            users,
            ..
        } = b;

        // Recalled stretches: 1–2 whole turns, from any turn but the last (so some lie in the
        // window, some before it, some overlap each other).
        let mut recalled = Vec::new();
        if users.len() > 1 {
            for _ in 0..rng.usize(0..4) {
                let from = rng.usize(0..users.len() - 1);
                let to = users.get(from + rng.usize(1..=2)).copied();
                recalled.push(history[users[from]..to.unwrap_or(history.len())].to_vec());
            }
        }
        // Recent: any suffix, so it may begin mid-exchange, even on results; half the time at a
        // user turn, else most windows would be emptied for want of a user message to begin with.
        let recent_from = match users.len() {
            0 => rng.usize(0..=history.len()),
            n if rng.bool() => users[rng.usize(0..n)],
            _ => rng.usize(0..=history.len()),
        };

        let system: Vec<Message> = (0..rng.usize(0..=2))
            .map(|i| Message::text(Role::System, format!("instruction {i}")))
            .collect();
        let system_tokens = system.len() as u64 * rng.u64(0..10);
        let summary = rng.bool().then(|| {
            let role = if rng.bool() { Role::System } else { Role::User };
            (Message::text(role, "summary"), rng.u64(0..20))
        });
        let new: Vec<Message> = (0..rng.usize(1..=2))
            .map(|i| user(&format!("new {i}")))
            .collect();
        let new_tokens = rng.u64(0..20);

        // Mostly room for some of the history, sometimes not even for the fixed part.
        let fixed = system_tokens + summary.as_ref().map_or(0, |(_, t)| *t) + new_tokens;
        let budget = if rng.u8(0..5) == 0 {
            rng.u64(0..=fixed)
        } else {
            fixed + rng.u64(0..=tokens_of(&history) + 10)
        };
        let recall_budget = rng.u64(0..=budget / 2 + 1);
        // Passages (sometimes none), best first, and a share that holds none, some or all.
        let passages: Vec<Passage> = (0..rng.usize(0..=4))
            .map(|i| Passage {
                text: format!("\n\n[{}] passage", i + 1),
                tokens: random_tokens(&mut rng),
            })
            .collect();
        let header = passages::instruction_tokens();
        let passage_budget = match rng.u8(0..3) {
            0 => rng.u64(0..=header),
            _ => header + rng.u64(0..=passages.iter().map(|p| p.tokens).sum::<u64>() + 5),
        };
        let budget = if passages.is_empty() || rng.bool() {
            budget
        } else {
            budget + rng.u64(0..=passage_budget)
        };
        Case {
            history,
            system,
            system_tokens,
            summary,
            recalled,
            recent_from,
            passages,
            new,
            new_tokens,
            budget,
            recall_budget,
            passage_budget,
        }
    }

    /// A message as a key: messages are all distinct, and have no equality of their own.
    fn key(message: &Message) -> String {
        serde_json::to_string(message).unwrap()
    }

    /// What happened in a case, to make sure the random cases reach every path.
    #[derive(Default)]
    struct Seen {
        over_budget: usize,
        pinned: usize,
        recalled: usize,
        no_window: usize,
        whole_recent: usize,
        passages: usize,
        passages_dropped: usize,
    }

    /// Checks every property of `out`, the assembly of `case`.
    fn check(case: &Case, out: &Assembled, seen: &mut Seen) {
        let inputs = case.inputs();
        let recent = inputs.recent;
        let fixed = case.fixed();
        let by_key: HashMap<String, &Item> = case
            .history
            .iter()
            .map(|item| (key(&item.message), item))
            .collect();

        // The layout: system, summary, history, new (b: all new messages, last).
        let head = case.system.len() + usize::from(case.summary.is_some());
        let tail = out.messages.len() - case.new.len();
        let expected_head = case
            .system
            .iter()
            .chain(case.summary.iter().map(|(m, _)| m));
        let actual_head = &out.messages[..head];
        assert!(expected_head.map(key).eq(actual_head.iter().map(key)));
        assert!(case
            .new
            .iter()
            .map(key)
            .eq(out.messages[tail..].iter().map(key)));
        // (h) the passages: the best ones that fit their share (and the room the fixed part
        // leaves), as one message between the recalled stretches and the window.
        let middle = &out.messages[head..tail];
        let passage_at = middle
            .iter()
            .position(|message| !by_key.contains_key(&key(message)));
        let room = case.budget.saturating_sub(fixed).min(case.passage_budget);
        let expected = (fixed <= case.budget)
            .then(|| passages::fit(&case.passages, room))
            .flatten();
        let passage_tokens = expected.as_ref().map_or(0, |p| p.tokens);
        match (&expected, passage_at) {
            (None, None) => assert_eq!(out.passages, 0),
            (Some(fitted), Some(at)) => {
                assert_eq!(key(&middle[at]), key(&fitted.message));
                assert_eq!(out.passages, fitted.count);
                assert_eq!(
                    at, out.recalled_items,
                    "after the recalled items, before the window"
                );
                assert!(fitted.tokens <= case.passage_budget);
                if let Some(next) = case.passages.get(fitted.count) {
                    assert!(
                        fitted.tokens + next.tokens > room,
                        "a passage that fits was dropped"
                    );
                    seen.passages_dropped += 1;
                }
                seen.passages += 1;
            }
            (expected, at) => panic!("passages expected {expected:?}, found at {at:?}"),
        }
        let included: Vec<&Item> = middle
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != passage_at)
            .map(|(_, message)| by_key[&key(message)])
            .collect();

        // (a) within budget whenever the fixed part is; (g) tokens are what was included.
        let history_tokens: u64 = included.iter().map(|item| item.tokens).sum();
        assert_eq!(out.tokens, fixed + passage_tokens + history_tokens);
        if fixed <= case.budget {
            assert!(out.tokens <= case.budget);
        } else {
            seen.over_budget += 1;
            assert!(included.is_empty());
        }

        // (e) history in ascending seq order.
        assert!(included.windows(2).all(|pair| pair[0].seq < pair[1].seq));

        // (f) recalled items are whole stretches of what recall found, within recall's budget.
        let (recalled, window) = included.split_at(out.recalled_items);
        let mut rest = recalled;
        while !rest.is_empty() {
            let is_prefix = |stretch: &&Vec<Item>| {
                let seqs = stretch.iter().map(|item| item.seq);
                !stretch.is_empty()
                    && stretch.len() <= rest.len()
                    && seqs.eq(rest.iter().map(|item| item.seq).take(stretch.len()))
            };
            let stretch = case.recalled.iter().find(is_prefix).unwrap();
            rest = &rest[stretch.len()..];
        }
        assert!(recalled.iter().map(|item| item.tokens).sum::<u64>() <= case.recall_budget);
        seen.recalled += usize::from(!recalled.is_empty());

        // The window: a suffix of recent, maybe after a pinned user message.
        assert_eq!(out.window_start, window.first().map(|item| item.seq));
        let suffix = &recent[recent.len() - window.len()..];
        if let (Some(first), Some(suffix_first)) = (window.first(), suffix.first()) {
            if first.seq != suffix_first.seq {
                seen.pinned += 1;
                assert!(opens_exchange(&first.message));
                assert!(recent.iter().any(|item| item.seq == first.seq));
            }
        }
        let window_seqs = window.iter().skip(1).map(|item| item.seq);
        assert!(window_seqs.eq(suffix.iter().skip(1).map(|item| item.seq)));
        seen.no_window += usize::from(window.is_empty());
        seen.whole_recent += usize::from(!recent.is_empty() && window.len() == recent.len());

        // (c) every call has its result after it, every result its call before it.
        let mut open_calls = HashSet::new();
        for part in out.messages.iter().flat_map(|message| &message.content) {
            match part {
                Part::ToolCall { id, .. } => assert!(open_calls.insert(id.clone())),
                Part::ToolResult { call_id, .. } => assert!(open_calls.remove(call_id)),
                _ => {}
            }
        }
        assert!(
            open_calls.is_empty(),
            "calls without results: {open_calls:?}"
        );

        // (d) the first non-instruction message before the new ones opens an exchange.
        let first_turn = out.messages[..tail]
            .iter()
            .find(|message| !message.role.is_instruction());
        assert!(first_turn.is_none_or(opens_exchange));

        // (b) the newest stored item is in whenever its block (and the user message to pin in
        // front of it, when it begins with an assistant turn) fits in what the window may use.
        let (Some(newest), Some(room)) = (
            recent.last(),
            case.budget.checked_sub(fixed + passage_tokens),
        ) else {
            return;
        };
        let Some(block_start) = recent.iter().rposition(|i| !is_tool_result(&i.message)) else {
            return;
        };
        let reserve = if case.recalled.is_empty() {
            0
        } else {
            case.recall_budget
                .min(case.recalled.iter().map(|s| tokens_of(s)).sum())
        };
        let mut needed = tokens_of(&recent[block_start..]);
        let lead = recent[block_start..]
            .iter()
            .find(|item| !item.message.role.is_instruction());
        if lead.is_some_and(|lead| !opens_exchange(&lead.message)) {
            let opener = recent[..block_start]
                .iter()
                .rposition(|item| opens_exchange(&item.message));
            let Some(opener) = opener else { return };
            needed += recent[opener].tokens;
        }
        if needed <= room - reserve.min(room) {
            assert!(included.iter().any(|item| item.seq == newest.seq));
        }
    }

    #[test]
    fn random_histories_always_make_a_valid_prompt_within_budget() {
        let mut seen = Seen::default();
        for seed in 0..5000 {
            let case = random_case(seed);
            let out = assemble(&case.inputs());
            let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                check(&case, &out, &mut seen)
            }));
            if let Err(panic) = checked {
                eprintln!("seed {seed}: {:#?}", labels(&out));
                std::panic::resume_unwind(panic);
            }
        }
        // The random cases must reach every path, or the properties prove little.
        assert!(seen.over_budget > 0);
        assert!(seen.pinned > 0);
        assert!(seen.recalled > 0);
        assert!(seen.no_window > 0);
        assert!(seen.whole_recent > 0);
        assert!(seen.passages > 0);
        assert!(seen.passages_dropped > 0);
    }
}
