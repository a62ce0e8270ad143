//! Replacing what [`detect`](super::detect) finds, and putting masked values back.
//!
//! A masked value becomes a placeholder `<KIND_N>` (`<EMAIL_1>`, `<CARD_2>`): upper-case
//! letters, a digit and angle brackets, which models copy verbatim and ordinary text does not
//! contain. Numbering follows the order of first appearance in the request, so the same value
//! is the same placeholder everywhere in it, and a conversation that grows turn by turn keeps
//! its earlier placeholders (a stable prefix for the provider's prompt cache, and for the
//! response cache one masked prompt for callers whose values differ). A redacted value becomes
//! its kind's marker (`[EMAIL]`) and nothing remembers it.

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::Value;

use super::detect::{self, Entities};
use crate::config::PiiEntity;

/// What a [`Masker`] does with the values it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Only notes which kinds occur (for `block`).
    Detect,
    /// Replaces each by its kind's marker, for good.
    Redact,
    /// Replaces each by a placeholder and remembers the value for [`Restore`].
    Mask,
}

/// Masks the texts of one request.
pub struct Masker {
    wanted: Entities,
    action: Action,
    /// The kinds found so far.
    pub found: Entities,
    /// Placeholder by kind and value.
    placeholders: HashMap<(PiiEntity, String), String>,
    /// Values given a placeholder so far, by kind.
    counts: [u32; 7],
}

impl Masker {
    pub fn new(wanted: Entities, action: Action) -> Masker {
        Masker {
            wanted,
            action,
            found: Entities::default(),
            placeholders: HashMap::new(),
            counts: [0; 7],
        }
    }

    /// Masks plain text in place.
    pub fn text(&mut self, text: &mut String) {
        let found = detect::find(text, self.wanted);
        if found.is_empty() {
            return;
        }
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        for finding in found {
            self.found = self.found.with(finding.entity);
            out.push_str(&text[last..finding.start]);
            let value = &text[finding.start..finding.end];
            match self.action {
                Action::Detect => out.push_str(value),
                Action::Redact => {
                    out.push('[');
                    out.push_str(&kind(finding.entity));
                    out.push(']');
                }
                Action::Mask => out.push_str(&self.placeholder(finding.entity, value)),
            }
            last = finding.end;
        }
        out.push_str(&text[last..]);
        *text = out;
    }

    /// Masks JSON text (tool-call arguments): the strings inside are masked one by one, so
    /// that a value is remembered unescaped and restored escaped. Text that is not JSON is
    /// masked as plain text.
    pub fn json(&mut self, text: &mut String) {
        if detect::find(text, self.wanted).is_empty() {
            return;
        }
        match serde_json::from_str::<Value>(text) {
            Ok(mut value) => {
                self.value(&mut value);
                if self.action != Action::Detect {
                    *text = value.to_string();
                }
            }
            Err(_) => self.text(text),
        }
    }

    fn value(&mut self, value: &mut Value) {
        match value {
            Value::String(s) => self.text(s),
            Value::Array(items) => items.iter_mut().for_each(|v| self.value(v)),
            Value::Object(fields) => fields.values_mut().for_each(|v| self.value(v)),
            _ => {}
        }
    }

    fn placeholder(&mut self, entity: PiiEntity, value: &str) -> String {
        let key = (entity, value.to_owned());
        if let Some(placeholder) = self.placeholders.get(&key) {
            return placeholder.clone();
        }
        let count = &mut self.counts[PiiEntity::ALL
            .iter()
            .position(|&e| e == entity)
            .unwrap_or(0)];
        *count += 1;
        let placeholder = format!("<{}_{count}>", kind(entity));
        self.placeholders.insert(key, placeholder.clone());
        placeholder
    }

    /// What puts the masked values back, when any were masked.
    pub fn into_restore(self) -> Option<Restore> {
        if self.placeholders.is_empty() {
            return None;
        }
        let longest = self
            .placeholders
            .values()
            .map(String::len)
            .max()
            .unwrap_or(0);
        let values = self
            .placeholders
            .into_iter()
            .map(|((_, value), placeholder)| (placeholder, value))
            .collect();
        Some(Restore { values, longest })
    }
}

/// A kind's name in placeholders and markers: `EMAIL`, `PHONE` ...
fn kind(entity: PiiEntity) -> String {
    entity.name().to_ascii_uppercase()
}

/// The values of one request's placeholders, to put back into its answer.
#[derive(Debug)]
pub struct Restore {
    /// Value by placeholder.
    values: HashMap<String, String>,
    /// The longest placeholder's length in bytes.
    longest: usize,
}

impl Restore {
    /// `text` with every placeholder of this request replaced by its value (JSON-escaped for
    /// `json` text, i.e. inside tool-call arguments). Anything else that looks like a
    /// placeholder is left as it is.
    pub fn text<'t>(&self, text: &'t str, json: bool) -> Cow<'t, str> {
        let b = text.as_bytes();
        let mut out = String::new();
        let mut last = 0;
        for open in memchr::memchr_iter(b'<', b) {
            if open < last {
                continue;
            }
            let window = &b[open..b.len().min(open + self.longest)];
            let Some(close) = memchr::memchr(b'>', window) else {
                continue;
            };
            let candidate = &text[open..=open + close];
            if let Some(value) = self.values.get(candidate) {
                out.push_str(&text[last..open]);
                if json {
                    let quoted = Value::String(value.clone()).to_string();
                    out.push_str(&quoted[1..quoted.len() - 1]);
                } else {
                    out.push_str(value);
                }
                last = open + close + 1;
            }
        }
        if last == 0 {
            return Cow::Borrowed(text);
        }
        out.push_str(&text[last..]);
        Cow::Owned(out)
    }

    /// The next piece of a streamed text whose earlier pieces left `held`: what can go out now,
    /// restored. The end that could still become a placeholder of this request (`<EM` of
    /// `<EMAIL_1>`) stays in `held` until the next piece says, and no more than that.
    pub fn stream(&self, held: &mut String, piece: &str, json: bool) -> String {
        if held.is_empty() && !piece.contains('<') {
            return piece.to_owned();
        }
        held.push_str(piece);
        let ready = held.len() - self.pending(held);
        let out = self.text(&held[..ready], json).into_owned();
        held.drain(..ready);
        out
    }

    /// Whatever `held` still holds, restored: the text ended.
    pub fn release(&self, held: &mut String, json: bool) -> String {
        let out = self.text(held, json).into_owned();
        held.clear();
        out
    }

    /// How many bytes at the end of `text` are the start of one of this request's placeholders.
    fn pending(&self, text: &str) -> usize {
        let b = text.as_bytes();
        let from = b.len().saturating_sub(self.longest.saturating_sub(1));
        let Some(open) = memchr::memrchr(b'<', &b[from..]).map(|k| from + k) else {
            return 0;
        };
        let tail = &text[open..];
        let possible = self
            .values
            .keys()
            .any(|p| p.len() > tail.len() && p.starts_with(tail));
        if possible {
            b.len() - open
        } else {
            0
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn masker(action: Action) -> Masker {
        Masker::new(Entities::of(&PiiEntity::ALL), action)
    }

    #[test]
    fn the_same_value_is_the_same_placeholder() {
        let mut m = masker(Action::Mask);
        let mut a = "write to ann@example.com or bob@example.org".to_owned();
        let mut b = "ann@example.com again, card 4111 1111 1111 1111".to_owned();
        m.text(&mut a);
        m.text(&mut b);
        assert_eq!(a, "write to <EMAIL_1> or <EMAIL_2>");
        assert_eq!(b, "<EMAIL_1> again, card <CARD_1>");
        let restore = m.into_restore().unwrap();
        assert_eq!(
            restore.text("to <EMAIL_2>, <CARD_1>, not <EMAIL_9>", false),
            "to bob@example.org, 4111 1111 1111 1111, not <EMAIL_9>"
        );
    }

    #[test]
    fn redaction_leaves_markers_and_nothing_to_restore() {
        let mut m = masker(Action::Redact);
        let mut text = "ssn 123-45-6789, ip 10.1.2.3".to_owned();
        m.text(&mut text);
        assert_eq!(text, "ssn [SSN], ip [IP]");
        assert!(m.found.has(PiiEntity::Ssn) && m.found.has(PiiEntity::Ip));
        assert!(m.into_restore().is_none());
    }

    #[test]
    fn json_strings_are_masked_unescaped_and_restored_escaped() {
        let mut m = masker(Action::Mask);
        let key = "-----BEGIN PRIVATE KEY-----\nMIIE\"x\n-----END PRIVATE KEY-----";
        let mut args = serde_json::json!({"to": "ann@example.com", "key": key}).to_string();
        m.json(&mut args);
        let parsed: Value = serde_json::from_str(&args).unwrap();
        assert_eq!(parsed["to"], "<EMAIL_1>");
        assert_eq!(parsed["key"], "<SECRET_1>");
        let restore = m.into_restore().unwrap();
        let back = restore.text(r#"{"k":"<SECRET_1>","t":"<EMAIL_1>"}"#, true);
        let back: Value = serde_json::from_str(&back).unwrap();
        assert_eq!(back["k"], key);
        assert_eq!(back["t"], "ann@example.com");
    }

    #[test]
    fn a_stream_holds_back_only_what_could_be_a_placeholder() {
        let mut m = masker(Action::Mask);
        let mut text = "mail ann@example.com".to_owned();
        m.text(&mut text);
        let restore = m.into_restore().unwrap();
        let answer = "Sure: <EMAIL_1> is it. a<b <E x <EMAIL_12>";
        for size in 1..=7 {
            let mut held = String::new();
            let mut out = String::new();
            let chars: Vec<char> = answer.chars().collect();
            for piece in chars.chunks(size) {
                let piece: String = piece.iter().collect();
                let ready = restore.stream(&mut held, &piece, false);
                out.push_str(&ready);
                // Never more held than a placeholder's start.
                assert!(held.len() < "<EMAIL_1>".len(), "{held:?}");
            }
            out.push_str(&restore.release(&mut held, false));
            assert_eq!(out, "Sure: ann@example.com is it. a<b <E x <EMAIL_12>");
        }
        // `<b` cannot start a placeholder: released at once.
        let mut held = String::new();
        assert_eq!(restore.stream(&mut held, "a<b", false), "a<b");
        assert_eq!(restore.stream(&mut held, "x <EM", false), "x ");
        assert_eq!(held, "<EM");
    }
}
