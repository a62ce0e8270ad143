//! `deny_output`: answers that match a pattern are refused. A whole answer is checked at once;
//! a stream is checked as it goes and cut before the matching text reaches the client.
//!
//! A stream holds back, per choice, the tail of its text that could still become the start of
//! a match: a pattern whose longest match is `M` bytes (regex-syntax knows it) can only match
//! text that ends in a new fragment if the match starts in the last `M - 1` bytes seen, so
//! everything before them goes out at once; each pattern checks a new fragment with only its own
//! `M - 1` bytes before it, so a check costs the fragment and a small window, never the whole
//! text again. The window is capped at [`MAX_HOLD`] bytes: in a stream, a pattern with no
//! longest match (`.*`, `\s+`) catches matches up to that long, and a longer match may go
//! unnoticed (a whole answer is checked whole). What is held goes out when the text is complete:
//! the choice moves to another kind of text (reasoning to text, one tool call to the next), it
//! finishes, or the stream ends.
//!
//! Text, reasoning, refusals and tool-call arguments are all checked, each on its own: they
//! reach the client (tool arguments become the client's tool calls) and may leak the same.

use std::sync::Arc;

use crate::canonical::{ChatChunk, ChatResponse, ChunkChoice, Part, ToolCallDelta};
use crate::error::{Error, ErrorKind};
use crate::pipeline::finish::{choice_in, Outcome, Stage};

/// The most a stream holds back per choice, in bytes: about 60 tokens of latency at worst.
pub const MAX_HOLD: usize = 256;

/// Context kept before the checked text, for `\b` and `^` at its start.
const CONTEXT: usize = 64;

/// The compiled `deny_output` patterns.
pub struct OutputRules {
    all: super::Patterns,
    /// The bytes before a new fragment a stream checks each pattern with: its longest match
    /// less one, at most `MAX_HOLD - 1`.
    windows: Vec<usize>,
    /// Bytes of a text's tail held back in a stream: the largest window.
    hold: usize,
}

impl OutputRules {
    pub fn new(patterns: &[String]) -> Result<OutputRules, String> {
        let all = super::Patterns::new(patterns)?;
        let mut windows = Vec::with_capacity(patterns.len());
        for pattern in patterns {
            let longest = regex_syntax::parse(pattern)
                .map_err(|e| e.to_string())?
                .properties()
                .maximum_len()
                .unwrap_or(usize::MAX);
            windows.push(longest.clamp(1, MAX_HOLD) - 1);
        }
        Ok(OutputRules {
            hold: windows.iter().copied().max().unwrap_or(0),
            all,
            windows,
        })
    }

    /// The pattern with the first match in `text`.
    fn check(&self, text: &str) -> Option<usize> {
        self.all.first(text)
    }

    /// The first pattern with a match in `text` that ends past `new` (where the new fragment
    /// starts): one that starts at most its window before it (what comes before counts for
    /// `\b` and `^`).
    fn find_new(&self, text: &str, new: usize) -> Option<usize> {
        (0..self.windows.len()).find(|&index| {
            let from = floor_boundary(text, new.saturating_sub(self.windows[index]));
            self.all.regex(index).find_at(text, from).is_some()
        })
    }

    fn refusal(&self, index: usize) -> Error {
        Error::new(
            ErrorKind::GuardrailBlocked,
            format!(
                "the answer was refused by guardrail `deny_output[{index}]`: it matches the pattern `{}`",
                self.all.source(index)
            ),
        )
    }
}

/// The stage that checks an answer on its way out.
pub struct OutputGuard {
    rules: Arc<OutputRules>,
    /// What each choice of a stream holds back.
    choices: Vec<Held>,
    refused: Option<Error>,
}

/// Which text of a choice is streaming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Reasoning,
    Text,
    Refusal,
    Tool(u32),
}

/// One choice's current text: what was seen of it (from a bit before the checked part) and how
/// much of that went out.
struct Held {
    index: u32,
    kind: Option<Kind>,
    seen: String,
    released: usize,
}

impl OutputGuard {
    pub fn new(rules: Arc<OutputRules>) -> OutputGuard {
        OutputGuard {
            rules,
            choices: Vec::new(),
            refused: None,
        }
    }

    fn held(&mut self, index: u32) -> &mut Held {
        let at = match self.choices.iter().position(|h| h.index == index) {
            Some(at) => at,
            None => {
                self.choices.push(Held {
                    index,
                    kind: None,
                    seen: String::new(),
                    released: 0,
                });
                self.choices.len() - 1
            }
        };
        &mut self.choices[at]
    }

    /// Checks one choice's fragments, holding back what could still become a match.
    fn pass(&mut self, choice: &mut ChunkChoice) -> Result<(), usize> {
        let rules = self.rules.clone();
        let held = self.held(choice.index);
        for kind in [Kind::Reasoning, Kind::Text, Kind::Refusal] {
            if text_field(choice, kind)
                .as_deref()
                .is_none_or(str::is_empty)
            {
                continue;
            }
            if let Some((previous, tail)) = held.switch(kind) {
                place(choice, previous, tail, 0);
            }
            let field = text_field(choice, kind);
            if let Some(fragment) = field.as_mut() {
                held.push(&rules, fragment)?;
                if fragment.is_empty() {
                    *field = None;
                }
            }
        }
        let mut at = 0;
        while at < choice.tool_calls.len() {
            let kind = Kind::Tool(choice.tool_calls[at].index);
            if choice.tool_calls[at].arguments.is_empty() {
                at += 1;
                continue;
            }
            if let Some((previous, tail)) = held.switch(kind) {
                if place(choice, previous, tail, at) {
                    at += 1;
                }
            }
            held.push(&rules, &mut choice.tool_calls[at].arguments)?;
            at += 1;
        }
        if choice.finish_reason.is_some() {
            if let Some((kind, tail)) = held.release() {
                let end = choice.tool_calls.len();
                place(choice, kind, tail, end);
            }
        }
        Ok(())
    }
}

impl Held {
    /// Moves the choice on to `kind`: the text it was on is complete, and what it held back is
    /// returned to go out.
    fn switch(&mut self, kind: Kind) -> Option<(Kind, String)> {
        if self.kind == Some(kind) {
            return None;
        }
        let released = self.release();
        self.kind = Some(kind);
        self.seen.clear();
        self.released = 0;
        released
    }

    /// What is held back, to go out now that the text is complete.
    fn release(&mut self) -> Option<(Kind, String)> {
        let tail = self.seen.get(self.released..).unwrap_or_default();
        let out = (!tail.is_empty()).then(|| tail.to_owned());
        self.released = self.seen.len();
        out.zip(self.kind).map(|(tail, kind)| (kind, tail))
    }

    /// Takes in a fragment; on return it holds what may go out now (held-back text before it
    /// included). `Err`: the index of the pattern that matched.
    fn push(&mut self, rules: &OutputRules, fragment: &mut String) -> Result<(), usize> {
        let before = self.seen.len();
        self.seen.push_str(fragment);
        if let Some(pattern) = rules.find_new(&self.seen, before) {
            return Err(pattern);
        }
        let safe = floor_boundary(&self.seen, self.seen.len().saturating_sub(rules.hold))
            .max(self.released);
        fragment.clear();
        fragment.push_str(&self.seen[self.released..safe]);
        self.released = safe;
        // Forget what no later check looks at, keeping some context for `\b`.
        let keep = rules.hold + CONTEXT;
        if self.released > 2 * keep {
            let cut = floor_boundary(&self.seen, self.released - keep);
            self.seen.drain(..cut);
            self.released -= cut;
        }
        Ok(())
    }
}

/// The largest char boundary of `text` at or before `at`.
fn floor_boundary(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// Puts text held back for `kind` into `choice`, after what it already has of that kind; a tool
/// call's goes into its delta before position `at`, or a new one inserted there (returns true
/// then).
fn place(choice: &mut ChunkChoice, kind: Kind, tail: String, at: usize) -> bool {
    let Kind::Tool(index) = kind else {
        text_field(choice, kind)
            .get_or_insert_with(String::new)
            .push_str(&tail);
        return false;
    };
    if let Some(call) = choice.tool_calls[..at]
        .iter_mut()
        .find(|c| c.index == index)
    {
        call.arguments.push_str(&tail);
        return false;
    }
    choice.tool_calls.insert(
        at,
        ToolCallDelta {
            index,
            id: None,
            name: None,
            arguments: tail,
        },
    );
    true
}

/// The field of a text kind (not a tool call's) in a chunk's choice.
fn text_field(choice: &mut ChunkChoice, kind: Kind) -> &mut Option<String> {
    match kind {
        Kind::Reasoning => &mut choice.reasoning,
        Kind::Refusal => &mut choice.refusal,
        Kind::Text | Kind::Tool(_) => &mut choice.text,
    }
}

impl Stage for OutputGuard {
    fn chunk(&mut self, chunk: &mut ChatChunk) {
        if self.refused.is_some() {
            return;
        }
        for choice in &mut chunk.choices {
            if let Err(pattern) = self.pass(choice) {
                self.refused = Some(self.rules.refusal(pattern));
                return;
            }
        }
    }

    fn complete(&mut self, answer: &mut ChatResponse) {
        let texts = answer.choices.iter().flat_map(|c| &c.message.content);
        let found = texts
            .filter_map(|part| match part {
                Part::Text { text, .. }
                | Part::Reasoning { text, .. }
                | Part::Refusal { text }
                | Part::ToolCall {
                    arguments: text, ..
                } => self.rules.check(text),
                _ => None,
            })
            .next();
        if let Some(pattern) = found {
            self.refused = Some(self.rules.refusal(pattern));
        }
    }

    fn refusal(&mut self) -> Option<Error> {
        self.refused.take()
    }

    fn flush(&mut self, last: &mut ChatChunk) {
        for held in &mut self.choices {
            if let Some((kind, tail)) = held.release() {
                let choice = choice_in(last, held.index);
                let at = choice.tool_calls.len();
                place(choice, kind, tail, at);
            }
        }
    }

    fn end(&mut self, _outcome: Outcome<'_>) {}
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn guard(patterns: &[&str]) -> OutputGuard {
        let patterns: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
        OutputGuard::new(Arc::new(OutputRules::new(&patterns).unwrap()))
    }

    fn text_chunk(text: &str) -> ChatChunk {
        ChatChunk {
            choices: vec![ChunkChoice {
                text: Some(text.into()),
                ..ChunkChoice::default()
            }],
            ..ChatChunk::default()
        }
    }

    /// Streams `fragments` through the guard: what went out, or the index of the refusing
    /// fragment.
    fn stream(guard: &mut OutputGuard, fragments: &[&str]) -> Result<String, (usize, String)> {
        let mut out = String::new();
        for (i, fragment) in fragments.iter().enumerate() {
            let mut chunk = text_chunk(fragment);
            guard.chunk(&mut chunk);
            if guard.refusal().is_some() {
                return Err((i, out));
            }
            out.push_str(chunk.choices[0].text.as_deref().unwrap_or(""));
        }
        let mut last = ChatChunk::default();
        guard.flush(&mut last);
        for choice in last.choices {
            out.push_str(choice.text.as_deref().unwrap_or(""));
        }
        Ok(out)
    }

    #[test]
    fn the_hold_is_the_longest_match_less_one_byte() {
        let rules = OutputRules::new(&["(?i)internal only".into(), "abc".into()]).unwrap();
        assert_eq!(rules.hold, "internal only".len() - 1);
        assert_eq!(rules.windows[1], 2);
        // Whitespace can be three bytes (U+3000): 8 + 3 * 3 + 4.
        let rules = OutputRules::new(&["(?i)internal\\s{1,3}only".into()]).unwrap();
        assert_eq!(rules.hold, 20);
        let rules = OutputRules::new(&["secret.*code".into()]).unwrap();
        assert_eq!(rules.hold, MAX_HOLD - 1);
    }

    #[test]
    fn a_match_split_across_fragments_is_cut_before_any_of_it_goes_out() {
        let mut g = guard(&["(?i)internal only"]);
        let (at, out) = stream(&mut g, &["This is ", "for INTER", "NAL ", "ONLY use"]).unwrap_err();
        assert_eq!(at, 3);
        assert!(!out.to_lowercase().contains("inter"), "{out}");
        assert!(out.starts_with("This is"));
    }

    #[test]
    fn text_that_cannot_match_goes_out_whole_and_in_order() {
        let mut g = guard(&["(?i)internal only"]);
        let fragments = [
            "Hello ",
            "wörld, ",
            "this is ",
            "fine: internal",
            " use, only ",
            "ok",
        ];
        let out = stream(&mut g, &fragments).unwrap();
        assert_eq!(out, fragments.concat());
    }

    #[test]
    fn a_held_tail_goes_out_with_the_finishing_chunk() {
        let mut g = guard(&["forbidden words"]);
        let mut first = text_chunk("short answer");
        g.chunk(&mut first);
        assert_eq!(
            first.choices[0].text, None,
            "all of it could still start a match"
        );
        let mut last = ChatChunk {
            choices: vec![ChunkChoice {
                finish_reason: Some(crate::canonical::FinishReason::Stop),
                ..ChunkChoice::default()
            }],
            ..ChatChunk::default()
        };
        g.chunk(&mut last);
        assert!(g.refusal().is_none());
        assert_eq!(last.choices[0].text.as_deref(), Some("short answer"));
    }

    #[test]
    fn tool_arguments_are_checked_and_released_call_by_call() {
        let mut g = guard(&["rm -rf"]);
        let call = |index: u32, arguments: &str| ChatChunk {
            choices: vec![ChunkChoice {
                tool_calls: vec![ToolCallDelta {
                    index,
                    id: None,
                    name: None,
                    arguments: arguments.into(),
                }],
                ..ChunkChoice::default()
            }],
            ..ChatChunk::default()
        };
        let mut a = call(0, "{\"cmd\": \"ls\"}");
        g.chunk(&mut a);
        let mut b = call(1, "{\"cmd\": \"pwd\"}");
        g.chunk(&mut b);
        assert!(g.refusal().is_none());
        // The first call's tail goes out before the second call starts.
        let calls = &b.choices[0].tool_calls;
        assert_eq!(calls[0].index, 0);
        let first: String = [&a.choices[0].tool_calls[0].arguments, &calls[0].arguments]
            .into_iter()
            .cloned()
            .collect();
        assert_eq!(first, "{\"cmd\": \"ls\"}");
        let mut c = call(1, "{\"cmd\": \"rm -");
        g.chunk(&mut c);
        let mut d = call(1, "rf /\"}");
        g.chunk(&mut d);
        assert!(g.refusal().is_some());
    }

    #[test]
    fn a_whole_answer_is_refused_on_any_of_its_texts() {
        let mut g = guard(&["(?i)internal only"]);
        let mut answer = crate::canonical::Collector::default();
        answer.push(&text_chunk("nothing to see"));
        let mut answer = answer.finish();
        g.complete(&mut answer);
        assert!(g.refusal().is_none());
        answer.choices[0].message.content.push(Part::ToolCall {
            id: "c".into(),
            name: "f".into(),
            arguments: "{\"x\": \"Internal Only\"}".into(),
        });
        g.complete(&mut answer);
        let e = g.refusal().unwrap();
        assert!(e.message.contains("deny_output[0]"), "{}", e.message);
    }
}
