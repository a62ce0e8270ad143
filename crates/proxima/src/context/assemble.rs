//! Assembling a prompt from a conversation's stored pieces within a token budget.
//!
//! Pure: it only chooses and orders messages. What goes in, in order of priority: the fixed part
//! (instructions, the running summary, the request's new messages), then a window of the newest
//! stored items, then stretches of older history that recall found. The result must be a history
//! every backend accepts: Anthropic and Gemini refuse one that starts with an assistant turn or
//! that splits a tool call from its result, so the window is cut only between exchanges' blocks
//! and made to begin with a user message.

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
    /// The request's new (non-instruction) messages: always sent, last.
    pub new: &'a [Message],
    /// Tokens of `new`, all together.
    pub new_tokens: u64,
    /// Tokens the whole prompt may use.
    pub budget: u64,
    /// Most tokens recalled stretches may take.
    pub recall_budget: u64,
}

/// The prompt, and what it is made of.
#[derive(Debug)]
pub struct Assembled {
    /// system, summary, recalled stretches (in original order), the window of recent items, new messages.
    pub messages: Vec<Message>,
    /// Sum of the tokens of what was included.
    pub tokens: u64,
    /// seq of the oldest recent item included; None when no recent item fits.
    pub window_start: Option<i64>,
    /// Number of recalled items included.
    pub recalled_items: usize,
}

/// Builds the prompt: the fixed part always, then as much of the recent history as fits (keeping
/// room for recall), then the recalled stretches that fit in what is left.
pub fn assemble(inputs: &Inputs<'_>) -> Assembled {
    let summary_tokens = inputs.summary.map_or(0, |(_, tokens)| tokens);
    let fixed = inputs
        .system_tokens
        .saturating_add(summary_tokens)
        .saturating_add(inputs.new_tokens);
    // An overlong fixed part gets nothing else, not even free (zero-token) items: the caller
    // decides what to do with such a prompt, and should see exactly what it is made of.
    let room = inputs.budget.checked_sub(fixed);

    let window = match room {
        Some(room) => {
            let reserve = recall_reserve(inputs).min(room);
            choose_window(inputs.recent, room - reserve)
        }
        None => Window::empty(inputs.recent.len()),
    };
    let window_start = window.start_seq(inputs.recent);

    let recall_room = room
        .unwrap_or(0)
        .saturating_sub(window.tokens)
        .min(inputs.recall_budget);
    let recalled = choose_recalled(inputs.recalled, window_start, recall_room);

    let mut messages = Vec::new();
    messages.extend(inputs.system.iter().cloned());
    messages.extend(inputs.summary.map(|(message, _)| message.clone()));
    let recalled_items = recalled.iter().map(|stretch| stretch.len()).sum();
    for stretch in &recalled {
        messages.extend(stretch.iter().map(|item| item.message.clone()));
    }
    messages.extend(window.items(inputs.recent).map(|item| item.message.clone()));
    messages.extend(inputs.new.iter().cloned());

    Assembled {
        messages,
        tokens: fixed
            .saturating_add(window.tokens)
            .saturating_add(recalled.iter().map(|stretch| tokens_of(stretch)).sum()),
        window_start,
        recalled_items,
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
    fn empty(len: usize) -> Window {
        Window {
            first: len,
            pinned: None,
            tokens: 0,
        }
    }

    fn items<'r>(&self, recent: &'r [Item]) -> impl Iterator<Item = &'r Item> {
        let pinned = self.pinned.and_then(|at| recent.get(at));
        pinned
            .into_iter()
            .chain(recent.get(self.first..).unwrap_or(&[]))
    }

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
        let in_window = window_start.is_some_and(|start| last.seq >= start);
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

fn tokens_of(items: &[Item]) -> u64 {
    items
        .iter()
        .fold(0u64, |sum, item| sum.saturating_add(item.tokens))
}

/// A message that carries tool results, whatever its role: OpenAI sends them with role Tool,
/// Anthropic inside a User message. Such a message continues an exchange, never opens one. Any
/// result part counts, not only a message of nothing but results: Anthropic lets a user add text
/// after the results, and that message still must not be split from the calls before it.
fn is_tool_result(message: &Message) -> bool {
    message
        .content
        .iter()
        .any(|part| matches!(part, Part::ToolResult { .. }))
}

/// A user turn: a User message that is not just tool results.
fn opens_exchange(message: &Message) -> bool {
    message.role == Role::User && !is_tool_result(message)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
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
            new,
            new_tokens: 0,
            budget,
            recall_budget: 0,
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
        // A free (zero-token) item would fit any budget, yet is left out: nothing but the fixed part.
        let recent = items(1, vec![(user("old"), 0)]);
        let mut inputs = inputs(&recent, &new, 10);
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
            ],
        );
        let stretch = |from: i64, to: i64| history[from as usize - 1..to as usize].to_vec();
        let recalled = [
            stretch(3, 4), // taken first
            stretch(5, 7), // reaches into the window
            stretch(1, 4), // overlaps the one taken
            stretch(5, 6), // does not fit
            stretch(1, 2), // taken
        ];
        let system = [Message::text(Role::System, "be kind")];
        let summary = Message::text(Role::System, "so far");
        let new = [user("now")];
        let mut inputs = inputs(&history[6..], &new, 100);
        inputs.system = &system;
        inputs.system_tokens = 1;
        inputs.summary = Some((&summary, 1));
        inputs.new_tokens = 1;
        inputs.recalled = &recalled;
        inputs.recall_budget = 6;

        let out = assemble(&inputs);

        assert_eq!(
            labels(&out),
            ["be kind", "so far", "u1", "a2", "u3", "a4", "u7", "a8", "now"]
        );
        assert_eq!(out.recalled_items, 4);
        assert_eq!(out.tokens, 9);
        assert_eq!(out.window_start, Some(7));
    }

    // ---- rules 5 and 6 ----

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
}
