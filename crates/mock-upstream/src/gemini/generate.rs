//! `generateContent` and `streamGenerateContent`: echo, function calls and their results,
//! thoughts when asked for, rendered as one response, as SSE events, or as a JSON array.
//!
//! The reply is decided once into a [`Generation`]; the framings only cut it into responses, so
//! streamed and whole answers can never disagree on content.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::StatusCode;
use serde_json::{json, Value};

use super::validate;
use crate::echo::{
    count_words, echo_text, fragment_size, stop_position, text_pieces, to_string, truncation_point,
};
use crate::script::{sse_frame, Answer, JSON};

/// Gemini's upper bound on `candidateCount`.
const MAX_CANDIDATES: u64 = 8;

#[derive(Clone, Copy)]
pub(super) enum Framing {
    /// `generateContent`: one response.
    Json,
    /// `streamGenerateContent?alt=sse`: one response per event.
    Sse,
    /// `streamGenerateContent` without `alt=sse`: the same responses as one JSON array.
    JsonArray,
}

pub(super) fn answer(
    request: &Value,
    model: &str,
    framing: Framing,
    ids: &AtomicU64,
) -> Result<Answer, String> {
    validate::check(request)?;
    let contents = request
        .get("contents")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    let config = request.get("generationConfig");
    let text = last_user_text(contents);
    let include_thoughts = config
        .and_then(|c| c.pointer("/thinkingConfig/includeThoughts"))
        .and_then(Value::as_bool)
        == Some(true);
    let generation = Generation {
        response_id: format!("mock-gemini-{}", ids.fetch_add(1, Ordering::Relaxed) + 1),
        model: model.to_owned(),
        candidates: config
            .and_then(|c| c.get("candidateCount"))
            .and_then(Value::as_u64)
            .unwrap_or(1)
            .clamp(1, MAX_CANDIDATES) as usize,
        thought: include_thoughts.then(|| format!("Thinking about: {text}")),
        prompt_tokens: prompt_tokens(request, contents),
        reply: decide(request, contents, &text),
        fragments: fragment_size(&text),
    };
    let responses = match framing {
        Framing::Json => return Ok(json_answer(&generation.whole())),
        Framing::Sse => {
            let events = generation
                .pieces()
                .iter()
                .map(|r| sse_frame(to_string(r).as_bytes()))
                .collect();
            return Ok(Answer::events(events));
        }
        Framing::JsonArray => generation.pieces(),
    };
    Ok(json_answer(&Value::Array(responses)))
}

fn json_answer(value: &Value) -> Answer {
    Answer::full(StatusCode::OK, JSON, Bytes::from(value.to_string()))
}

/// Everything the reply says, independent of how it is framed.
struct Generation {
    response_id: String,
    model: String,
    candidates: usize,
    /// A thought summary, when `includeThoughts` was asked for.
    thought: Option<String>,
    prompt_tokens: u64,
    reply: Reply,
    /// Stream text in pieces of this many characters (`mock-fragments: N`).
    fragments: Option<usize>,
}

enum Reply {
    Text {
        content: String,
        finish_reason: &'static str,
    },
    Calls(Vec<Value>),
}

/// Function calls, a function-result acknowledgement or an echo, with stops and length applied.
fn decide(request: &Value, contents: &[Value], text: &str) -> Reply {
    let last_parts = contents.last().map_or(&[][..], parts);
    let results: Vec<String> = last_parts
        .iter()
        .filter_map(|p| p.pointer("/functionResponse/response"))
        .map(Value::to_string)
        .collect();
    if results.is_empty() {
        if let Some(calls) = function_calls(request, text) {
            return Reply::Calls(calls);
        }
    }
    let config = request.get("generationConfig");
    let mut content = if !results.is_empty() {
        format!("tool result: {}", results.join("; "))
    } else if config
        .and_then(|c| c.get("responseMimeType"))
        .and_then(Value::as_str)
        == Some("application/json")
    {
        json!({"echo": text}).to_string()
    } else {
        echo_text(text.to_owned(), request)
    };
    if let Some(cut) = stop_position(&content, config.and_then(|c| c.get("stopSequences"))) {
        content.truncate(cut);
    }
    let mut finish_reason = "STOP";
    let max = config
        .and_then(|c| c.get("maxOutputTokens"))
        .and_then(Value::as_u64);
    if let Some(end) = max.and_then(|max| truncation_point(&content, max)) {
        content.truncate(end);
        finish_reason = "MAX_TOKENS";
    }
    Reply::Text {
        content,
        finish_reason,
    }
}

/// The calls to make, or `None` without function declarations or with mode NONE. Mode ANY with
/// `allowedFunctionNames` calls the first allowed one; "parallel" in the text calls two.
fn function_calls(request: &Value, text: &str) -> Option<Vec<Value>> {
    let names: Vec<&str> = request
        .get("tools")
        .and_then(Value::as_array)?
        .iter()
        .filter_map(|tool| tool.get("functionDeclarations")?.as_array())
        .flatten()
        .filter_map(|declaration| declaration.get("name")?.as_str())
        .collect();
    let first = *names.first()?;
    let calling = request.pointer("/toolConfig/functionCallingConfig");
    if calling.and_then(|c| c.get("mode")).and_then(Value::as_str) == Some("NONE") {
        return None;
    }
    let allowed = calling
        .and_then(|c| c.get("allowedFunctionNames"))
        .and_then(Value::as_array)
        .and_then(|names| names.first())
        .and_then(Value::as_str);
    let chosen = if let Some(name) = allowed {
        vec![name]
    } else if names.len() >= 2
        && text
            .split(|c: char| !c.is_alphanumeric())
            .any(|word| word.eq_ignore_ascii_case("parallel"))
    {
        names[..2].to_vec()
    } else {
        vec![first]
    };
    let calls = chosen
        .into_iter()
        .map(|name| json!({"functionCall": {"name": name, "args": {"text": text, "tool": name}}}))
        .collect();
    Some(calls)
}

fn parts(content: &Value) -> &[Value] {
    content
        .get("parts")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// The text of the last user turn with text in it (function results are not what the user
/// said), noting attached media so tests can see they arrived.
fn last_user_text(contents: &[Value]) -> String {
    let turn = contents.iter().rev().find(|c| {
        c.get("role").and_then(Value::as_str).unwrap_or("user") == "user"
            && parts(c).iter().any(|p| p.get("text").is_some())
    });
    let Some(turn) = turn else {
        return String::new();
    };
    let (text, media) = text_and_media(parts(turn));
    match media {
        0 => text,
        n if text.is_empty() => format!("[{n} image(s)]"),
        n => format!("{text} [{n} image(s)]"),
    }
}

fn text_and_media(parts: &[Value]) -> (String, usize) {
    let texts: Vec<&str> = parts
        .iter()
        .filter_map(|p| p.get("text")?.as_str())
        .collect();
    let media = parts
        .iter()
        .filter(|p| p.get("inlineData").is_some() || p.get("fileData").is_some())
        .count();
    (texts.join(" "), media)
}

/// Words of every turn and of the system instruction, plus one per turn.
fn prompt_tokens(request: &Value, contents: &[Value]) -> u64 {
    let system = request
        .get("systemInstruction")
        .map_or(0, |s| count_words(&text_and_media(parts(s)).0) + 1);
    let turns: u64 = contents
        .iter()
        .map(|c| count_words(&text_and_media(parts(c)).0) + 1)
        .sum();
    system + turns
}

impl Generation {
    fn finish_reason(&self) -> &'static str {
        match &self.reply {
            Reply::Text { finish_reason, .. } => finish_reason,
            Reply::Calls(_) => "STOP",
        }
    }

    fn usage(&self) -> Value {
        let per_candidate = match &self.reply {
            Reply::Text { content, .. } => count_words(content),
            Reply::Calls(calls) => calls
                .iter()
                .map(|call| count_words(&call["functionCall"]["args"].to_string()))
                .sum::<u64>()
                .max(1),
        };
        let n = self.candidates as u64;
        let candidates = per_candidate * n;
        let thoughts = self.thought.as_deref().map_or(0, count_words) * n;
        let mut usage = json!({
            "promptTokenCount": self.prompt_tokens,
            "candidatesTokenCount": candidates,
            "totalTokenCount": self.prompt_tokens + candidates + thoughts,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": self.prompt_tokens}],
        });
        if thoughts > 0 {
            usage["thoughtsTokenCount"] = thoughts.into();
        }
        usage
    }

    /// One response with `parts` for every candidate; `finish` adds the finish reason and the
    /// final usage, otherwise usage is the running total the real API reports mid-stream.
    fn response(&self, parts: &[Value], finish: bool) -> Value {
        let candidates: Vec<Value> = (0..self.candidates)
            .map(|index| {
                let mut candidate = json!({
                    "content": {"parts": parts, "role": "model"},
                    "index": index,
                });
                if finish {
                    candidate["finishReason"] = self.finish_reason().into();
                }
                candidate
            })
            .collect();
        let usage = if finish {
            self.usage()
        } else {
            json!({"promptTokenCount": self.prompt_tokens, "totalTokenCount": self.prompt_tokens})
        };
        json!({
            "candidates": candidates,
            "usageMetadata": usage,
            "modelVersion": self.model,
            "responseId": self.response_id,
        })
    }

    fn thought_part(&self) -> Option<Value> {
        self.thought
            .as_ref()
            .map(|t| json!({"text": t, "thought": true}))
    }

    fn whole(&self) -> Value {
        let mut parts: Vec<Value> = self.thought_part().into_iter().collect();
        match &self.reply {
            Reply::Text { content, .. } => parts.push(json!({"text": content})),
            Reply::Calls(calls) => parts.extend(calls.iter().cloned()),
        }
        self.response(&parts, true)
    }

    /// The stream: the thought first, then one word per response (the last word with the
    /// finish reason and usage), or all function calls in one final response.
    fn pieces(&self) -> Vec<Value> {
        let mut out: Vec<Value> = self
            .thought_part()
            .map(|thought| self.response(&[thought], false))
            .into_iter()
            .collect();
        match &self.reply {
            Reply::Text { content, .. } => {
                let pieces = text_pieces(content, self.fragments);
                let last = pieces.len().saturating_sub(1);
                for (i, piece) in pieces.iter().enumerate() {
                    out.push(self.response(&[json!({"text": piece})], i == last));
                }
                if pieces.is_empty() {
                    out.push(self.response(&[json!({"text": ""})], true));
                }
            }
            Reply::Calls(calls) => out.push(self.response(calls, true)),
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    /// The answer text of a response's first candidate.
    fn first_text(response: &Value) -> String {
        parts(&response["candidates"][0]["content"])
            .iter()
            .filter(|p| p.get("thought").is_none())
            .filter_map(|p| p.get("text")?.as_str())
            .collect()
    }

    fn generation(request: Value) -> Generation {
        let contents = request["contents"].as_array().cloned().unwrap_or_default();
        let text = last_user_text(&contents);
        Generation {
            response_id: "r".into(),
            model: "m".into(),
            candidates: 1,
            thought: None,
            prompt_tokens: prompt_tokens(&request, &contents),
            reply: decide(&request, &contents, &text),
            fragments: fragment_size(&text),
        }
    }

    #[test]
    fn stream_pieces_concatenate_to_the_whole_answer() {
        let g = generation(
            json!({"contents": [{"role": "user", "parts": [{"text": "one two  three"}]}]}),
        );
        let pieces = g.pieces();
        assert_eq!(pieces.len(), 3);
        let streamed: String = pieces.iter().map(first_text).collect();
        assert_eq!(streamed, first_text(&g.whole()));
        assert!(pieces[..2]
            .iter()
            .all(|p| p["candidates"][0].get("finishReason").is_none()));
        assert_eq!(pieces[2]["candidates"][0]["finishReason"], "STOP");
        assert_eq!(pieces[2]["usageMetadata"]["candidatesTokenCount"], 3);
    }

    #[test]
    fn media_is_noted_and_results_acknowledged() {
        let contents = vec![json!({"role": "user", "parts": [
            {"text": "look"}, {"inlineData": {"mimeType": "image/png", "data": "AA"}}]})];
        assert_eq!(last_user_text(&contents), "look [1 image(s)]");
        let g = generation(json!({"contents": [
            {"role": "user", "parts": [{"text": "q"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"output": 1}}}]}
        ]}));
        assert_eq!(first_text(&g.whole()), "tool result: {\"output\":1}");
    }

    #[test]
    fn empty_reply_still_finishes() {
        let g = generation(
            json!({"contents": [{"role": "user", "parts": [{"text": "abc"}]}],
                                  "generationConfig": {"stopSequences": ["a"]}}),
        );
        let pieces = g.pieces();
        assert_eq!(pieces.len(), 1);
        assert_eq!(pieces[0]["candidates"][0]["finishReason"], "STOP");
        let map: Map<String, Value> = pieces[0]["candidates"][0]["content"]["parts"][0]
            .as_object()
            .cloned()
            .unwrap_or_default();
        assert_eq!(map.get("text"), Some(&json!("")));
    }
}
