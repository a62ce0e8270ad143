//! The finishing stage that puts masked values back into the answer, whole or streamed.
//!
//! It sits at [`Place::Restore`]: after the cache fill (which stores the answer with its
//! placeholders, so a hit is restored with each caller's own values) and before what sees or
//! keeps the answer as the client gets it (output guardrails, a stored conversation turn or
//! response). Text, refusals and tool-call arguments are restored — arguments JSON-escaped;
//! reasoning is not, since a provider checks its signature against the text it wrote.
//!
//! Streamed, each text (per choice, and per tool call) keeps back only its end that could
//! still become a placeholder, and lets it go as soon as it cannot, when the text gives way
//! to other content, when its choice finishes, or when the stream ends.

use super::mask::Restore;
use crate::canonical::{ChatChunk, ChatResponse, ChunkChoice, Part, ToolCallDelta};
use crate::pipeline::finish::{choice_in, Outcome, Place, Stage};

/// Which text of an answer a held piece belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Text,
    Refusal,
    /// A tool call's arguments, by the call's index.
    Call(u32),
}

pub struct Unmask {
    restore: Restore,
    /// Ends held back, by choice and field.
    held: Vec<(u32, Field, String)>,
}

impl Unmask {
    pub fn new(restore: Restore) -> Unmask {
        Unmask {
            restore,
            held: Vec::new(),
        }
    }

    fn held(&mut self, choice: u32, field: Field) -> &mut String {
        let at = match self
            .held
            .iter()
            .position(|(c, f, _)| *c == choice && *f == field)
        {
            Some(at) => at,
            None => {
                self.held.push((choice, field, String::new()));
                self.held.len() - 1
            }
        };
        &mut self.held[at].2
    }

    /// Everything held for `choice` in `field`, restored.
    fn release(&mut self, choice: u32, field: Field) -> Option<String> {
        let at = self
            .held
            .iter()
            .position(|(c, f, h)| *c == choice && *f == field && !h.is_empty())?;
        let (_, field, mut held) = self.held.swap_remove(at);
        Some(
            self.restore
                .release(&mut held, matches!(field, Field::Call(_))),
        )
    }

    /// A streamed piece of `field`, restored as far as it can be.
    fn piece(&mut self, choice: u32, field: Field, piece: &str) -> Option<String> {
        let json = matches!(field, Field::Call(_));
        let mut held = std::mem::take(self.held(choice, field));
        let out = self.restore.stream(&mut held, piece, json);
        *self.held(choice, field) = held;
        (!out.is_empty()).then_some(out)
    }

    fn delta(&mut self, delta: &mut ChunkChoice) {
        let choice = delta.index;
        if let Some(text) = delta.text.take() {
            delta.text = self.piece(choice, Field::Text, &text);
        } else if delta.finish_reason.is_some()
            || !delta.tool_calls.is_empty()
            || delta.reasoning.is_some()
        {
            // The text gave way to other content: what it held can be nothing more.
            delta.text = self.release(choice, Field::Text);
        }
        if let Some(refusal) = delta.refusal.take() {
            delta.refusal = self.piece(choice, Field::Refusal, &refusal);
        }
        if !delta.tool_calls.is_empty() {
            let mut calls = Vec::with_capacity(delta.tool_calls.len());
            for mut call in std::mem::take(&mut delta.tool_calls) {
                // A call's arguments end where another call's begin.
                self.release_calls(choice, Some(call.index), &mut calls);
                let arguments = std::mem::take(&mut call.arguments);
                call.arguments = self
                    .piece(choice, Field::Call(call.index), &arguments)
                    .unwrap_or_default();
                calls.push(call);
            }
            delta.tool_calls = calls;
        }
        if delta.finish_reason.is_some() {
            self.finish_choice(delta);
        }
    }

    /// Appends the ends held for tool calls of `choice` other than `except` to `calls`.
    fn release_calls(&mut self, choice: u32, except: Option<u32>, calls: &mut Vec<ToolCallDelta>) {
        let ready: Vec<u32> = self
            .held
            .iter()
            .filter_map(|(c, f, h)| match f {
                Field::Call(index) if *c == choice && Some(*index) != except && !h.is_empty() => {
                    Some(*index)
                }
                _ => None,
            })
            .collect();
        for index in ready {
            if let Some(arguments) = self.release(choice, Field::Call(index)) {
                calls.push(ToolCallDelta {
                    index,
                    arguments,
                    ..ToolCallDelta::default()
                });
            }
        }
    }

    /// Puts everything held for the delta's choice into it.
    fn finish_choice(&mut self, delta: &mut ChunkChoice) {
        let choice = delta.index;
        if let Some(rest) = self.release(choice, Field::Text) {
            delta.text.get_or_insert_with(String::new).push_str(&rest);
        }
        if let Some(rest) = self.release(choice, Field::Refusal) {
            delta
                .refusal
                .get_or_insert_with(String::new)
                .push_str(&rest);
        }
        let mut calls = std::mem::take(&mut delta.tool_calls);
        self.release_calls(choice, None, &mut calls);
        delta.tool_calls = calls;
    }
}

impl Stage for Unmask {
    fn place(&self) -> Place {
        Place::Restore
    }

    fn chunk(&mut self, chunk: &mut ChatChunk) {
        for delta in &mut chunk.choices {
            self.delta(delta);
        }
    }

    fn complete(&mut self, answer: &mut ChatResponse) {
        for choice in &mut answer.choices {
            for part in &mut choice.message.content {
                let (text, json) = match part {
                    Part::Text { text, .. } | Part::Refusal { text } => (text, false),
                    Part::ToolCall { arguments, .. } => (arguments, true),
                    _ => continue,
                };
                if let std::borrow::Cow::Owned(restored) = self.restore.text(text, json) {
                    *text = restored;
                }
            }
        }
    }

    /// The stream ended with text still held (no finish reason came): it goes out last.
    fn flush(&mut self, last: &mut ChatChunk) {
        let mut choices: Vec<u32> = self
            .held
            .iter()
            .filter(|(_, _, h)| !h.is_empty())
            .map(|(c, _, _)| *c)
            .collect();
        choices.sort_unstable();
        choices.dedup();
        for index in choices {
            self.finish_choice(choice_in(last, index));
        }
    }

    fn end(&mut self, _outcome: Outcome<'_>) {}
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::canonical::{Collector, FinishReason};
    use crate::config::PiiEntity;
    use crate::pii::detect::Entities;
    use crate::pii::mask::{Action, Masker};

    fn unmask() -> Unmask {
        let mut m = Masker::new(Entities::of(&PiiEntity::ALL), Action::Mask);
        let mut prompt = "I am ann@example.com, card 4111111111111111".to_owned();
        m.text(&mut prompt);
        Unmask::new(m.into_restore().unwrap())
    }

    fn chunk(delta: ChunkChoice) -> ChatChunk {
        ChatChunk {
            id: "c".into(),
            choices: vec![delta],
            ..ChatChunk::default()
        }
    }

    /// Streams `text` and a call's `arguments` in pieces of `size` characters through the
    /// stage; the folded answer as the client would see it.
    fn streamed(size: usize, text: &str, arguments: &str, finish: bool) -> ChatResponse {
        let mut stage = unmask();
        let mut collector = Collector::default();
        let pieces = |s: &str| -> Vec<String> {
            s.chars()
                .collect::<Vec<_>>()
                .chunks(size)
                .map(|c| c.iter().collect())
                .collect()
        };
        let mut out = Vec::new();
        for piece in pieces(text) {
            out.push(chunk(ChunkChoice {
                text: Some(piece),
                ..ChunkChoice::default()
            }));
        }
        for (n, piece) in pieces(arguments).into_iter().enumerate() {
            out.push(chunk(ChunkChoice {
                tool_calls: vec![ToolCallDelta {
                    index: 0,
                    id: (n == 0).then(|| "call_1".into()),
                    name: (n == 0).then(|| "send".into()),
                    arguments: piece,
                }],
                ..ChunkChoice::default()
            }));
        }
        if finish {
            out.push(chunk(ChunkChoice {
                finish_reason: Some(FinishReason::ToolCalls),
                ..ChunkChoice::default()
            }));
        }
        for mut c in out {
            stage.chunk(&mut c);
            collector.push(&c);
        }
        let mut last = ChatChunk::default();
        stage.flush(&mut last);
        if !last.choices.is_empty() {
            collector.push(&last);
        }
        collector.finish()
    }

    #[test]
    fn placeholders_cut_across_chunks_are_restored() {
        for size in 1..=6 {
            for finish in [true, false] {
                let answer = streamed(
                    size,
                    "Mail <EMAIL_1>, charge <CARD_1>; <EMAIL_7> stays",
                    r#"{"to":"<EMAIL_1>","n":"<CARD_1>"}"#,
                    finish,
                );
                let content = &answer.choices[0].message.content;
                assert_eq!(
                    answer.choices[0].message.joined_text(),
                    "Mail ann@example.com, charge 4111111111111111; <EMAIL_7> stays",
                    "pieces of {size}"
                );
                let Part::ToolCall { arguments, .. } = content.last().unwrap() else {
                    panic!("no call: {content:?}");
                };
                assert_eq!(
                    arguments, r#"{"to":"ann@example.com","n":"4111111111111111"}"#,
                    "pieces of {size}"
                );
            }
        }
    }

    #[test]
    fn a_whole_answer_is_restored() {
        let mut stage = unmask();
        let mut answer = streamed(100, "", "", true);
        answer.choices[0].message.content = vec![
            Part::text("to <EMAIL_1>"),
            Part::ToolCall {
                id: "c".into(),
                name: "f".into(),
                arguments: r#"{"a":"<CARD_1>"}"#.into(),
            },
        ];
        stage.complete(&mut answer);
        assert_eq!(
            answer.choices[0].message.joined_text(),
            "to ann@example.com"
        );
        assert!(matches!(
            &answer.choices[0].message.content[1],
            Part::ToolCall { arguments, .. } if arguments == r#"{"a":"4111111111111111"}"#
        ));
    }
}
