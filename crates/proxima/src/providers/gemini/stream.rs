//! Decoding a Gemini `streamGenerateContent?alt=sse` stream into canonical chunks.
//!
//! Each event is a whole `GenerateContentResponse` holding only the new parts. Text arrives in
//! pieces; a function call arrives whole, so it becomes one tool-call delta with its id, name
//! and all its arguments. There is no `[DONE]`: the stream is complete when every candidate has
//! a finish reason and the connection then ends. Usage comes on every event as a running total,
//! so only the last one counts; it is sent as a chunk of its own at the end, as OpenAI does.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;

use super::error;
use crate::canonical::{Api, ChatChunk, ChunkChoice, Part, Role, ToolCallDelta, Usage};
use crate::error::{Error, Result};
use crate::http_client::HttpError;
use crate::providers::events::{self, Decoded, EventDecoder};
use crate::providers::ChunkStream;
use crate::sse::{self, SseEvent};
use crate::wire::gemini::{
    finish_reason_from_wire, part_to_canonical, CallIds, GenerateContentResponse,
};

struct GeminiEvents {
    provider: Arc<str>,
    /// From the first event's `responseId`, or made up; the same on every chunk.
    id: Option<String>,
    model: String,
    created: u64,
    calls: CallIds,
    /// By candidate index.
    candidates: Vec<CandidateState>,
    usage: Option<Usage>,
}

#[derive(Debug, Default, Clone, Copy)]
struct CandidateState {
    started: bool,
    /// Calls made so far: the index of the next one, and whether STOP means tool calls.
    tool_calls: u32,
    finished: bool,
}

/// Chunks until the upstream ends the stream after the last finish reason; see
/// [`events::decode`] for how streams end.
pub fn decode<S>(provider: Arc<str>, model: String, created: u64, bytes: S) -> ChunkStream
where
    S: Stream<Item = std::result::Result<Bytes, HttpError>> + Send + Unpin + 'static,
{
    let decoder = GeminiEvents {
        provider: provider.clone(),
        id: None,
        model,
        created,
        calls: CallIds::default(),
        candidates: Vec::new(),
        usage: None,
    };
    events::decode(provider, bytes, decoder)
}

impl EventDecoder for GeminiEvents {
    fn on_event(&mut self, event: &SseEvent) -> Result<Decoded> {
        if event.data.trim_ascii().is_empty() {
            return Ok(Decoded::Skip);
        }
        Ok(match self.on_data(&event.data)? {
            Some(chunk) => Decoded::Chunk(chunk),
            None => Decoded::Skip,
        })
    }

    /// There is no end marker: the stream is complete if every candidate finished; then the
    /// last usage goes out as a chunk of its own.
    fn on_close(&mut self) -> Result<Option<ChatChunk>> {
        if self.finished() {
            Ok(self.usage_chunk())
        } else {
            Err(events::incomplete(&self.provider))
        }
    }
}

impl GeminiEvents {
    /// The chunk for one event, or `None` when it carries nothing for the client (usage only).
    fn on_data(&mut self, data: &[u8]) -> Result<Option<ChatChunk>> {
        let response = parse_event(&self.provider, data)?;
        if let Some(reason) = response.prompt_blocked() {
            return Err(error::prompt_blocked(&self.provider, &reason));
        }
        if let Some(usage) = &response.usage_metadata {
            self.usage = Some(usage.to_canonical());
        }
        if self.id.is_none() {
            self.id = Some(
                response
                    .response_id
                    .clone()
                    .unwrap_or_else(super::response_id),
            );
            if let Some(model) = &response.model_version {
                self.model.clone_from(model);
            }
        }
        let mut choices = Vec::with_capacity(response.candidates.len());
        for (position, candidate) in response.candidates.into_iter().enumerate() {
            let index = candidate.index.unwrap_or(position as u32);
            let state = slot(&mut self.candidates, index);
            let mut choice = ChunkChoice {
                index,
                role: (!state.started).then_some(Role::Assistant),
                extra: candidate.extra,
                ..ChunkChoice::default()
            };
            state.started = true;
            for part in candidate.content.into_iter().flat_map(|c| c.parts) {
                for part in part_to_canonical(part, &mut self.calls) {
                    match part {
                        Part::Text { text, .. } => {
                            choice.text.get_or_insert_with(String::new).push_str(&text)
                        }
                        Part::Reasoning {
                            text, signature, ..
                        } => {
                            if !text.is_empty() {
                                choice
                                    .reasoning
                                    .get_or_insert_with(String::new)
                                    .push_str(&text);
                            }
                            if signature.is_some() {
                                choice.reasoning_signature = signature;
                            }
                        }
                        Part::ToolCall {
                            id,
                            name,
                            arguments,
                        } => {
                            choice.tool_calls.push(ToolCallDelta {
                                index: state.tool_calls,
                                id: Some(id),
                                name: Some(name),
                                arguments,
                            });
                            state.tool_calls += 1;
                        }
                        // Images and code execution have no place in a chunk.
                        _ => {}
                    }
                }
            }
            if let Some(reason) = candidate.finish_reason {
                choice.finish_reason = Some(finish_reason_from_wire(&reason, state.tool_calls > 0));
                state.finished = true;
            }
            choices.push(choice);
        }
        if choices.is_empty() {
            return Ok(None);
        }
        Ok(Some(ChatChunk {
            id: self.id.clone().unwrap_or_default(),
            model: self.model.clone(),
            created: self.created,
            choices,
            usage: None,
            extra: response.extra,
            extra_api: Some(Api::Gemini),
            raw: None,
        }))
    }

    /// Every candidate that began has finished.
    fn finished(&self) -> bool {
        let started = self.candidates.iter().filter(|c| c.started);
        self.candidates.iter().any(|c| c.started) && started.clone().all(|c| c.finished)
    }

    /// The final usage chunk, if the upstream reported usage.
    fn usage_chunk(&mut self) -> Option<ChatChunk> {
        Some(ChatChunk {
            id: self.id.clone().unwrap_or_default(),
            model: self.model.clone(),
            created: self.created,
            usage: Some(self.usage.take()?),
            extra_api: Some(Api::Gemini),
            ..ChatChunk::default()
        })
    }
}

fn slot(candidates: &mut Vec<CandidateState>, index: u32) -> &mut CandidateState {
    let index = index as usize;
    if candidates.len() <= index {
        candidates.resize(index + 1, CandidateState::default());
    }
    &mut candidates[index]
}

fn parse_event(provider: &str, data: &[u8]) -> Result<GenerateContentResponse> {
    let response: GenerateContentResponse =
        serde_json::from_str(&sse::text(data)).map_err(|e| {
            Error::upstream(format!(
            "provider `{provider}` sent a stream event that is not a GenerateContentResponse: {e}"
        ))
        })?;
    // An error object in the stream is how Gemini reports failures after the headers; every
    // response field is optional, so it parses as an empty response with an unknown field.
    if response.extra.contains_key("error") {
        return Err(Error::upstream(format!(
            "provider `{provider}` failed mid-stream: {}",
            error::error_message(data)
        )));
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::FinishReason;
    use crate::error::ErrorKind;
    use futures_util::{stream, StreamExt};

    /// Decodes `body`, delivered in pieces of `piece` bytes, into the stream's items.
    async fn decode_body(body: &str, piece: usize) -> Vec<Result<ChatChunk>> {
        let pieces: Vec<std::result::Result<Bytes, HttpError>> = body
            .as_bytes()
            .chunks(piece)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        decode("g".into(), "gemini-test".into(), 7, stream::iter(pieces))
            .collect()
            .await
    }

    fn events(events: &[&str]) -> String {
        events
            .iter()
            .map(|e| format!("data: {e}\r\n\r\n"))
            .collect()
    }

    fn ok(items: Vec<Result<ChatChunk>>) -> Vec<ChatChunk> {
        items
            .into_iter()
            .map(|item| match item {
                Ok(chunk) => chunk,
                Err(e) => panic!("unexpected error item: {e}"),
            })
            .collect()
    }

    #[tokio::test]
    async fn text_deltas_reasoning_and_usage() {
        let body = events(&[
            r#"{"candidates": [{"content": {"role": "model", "parts": [{"text": "pondering", "thought": true}]}}], "usageMetadata": {"promptTokenCount": 4}, "responseId": "resp-1", "modelVersion": "gemini-2.5-flash-001"}"#,
            r#"{"candidates": [{"content": {"role": "model", "parts": [{"text": "Hello"}]}}], "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 1}}"#,
            r#"{"candidates": [{"content": {"role": "model", "parts": [{"text": " wörld", "thoughtSignature": "c2ln"}]}, "finishReason": "STOP"}], "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 2, "thoughtsTokenCount": 3, "cachedContentTokenCount": 1, "totalTokenCount": 9}}"#,
        ]);
        // Any split of the bytes, inside lines and inside the UTF-8 of "ö", decodes the same.
        for piece in [1, 3, 7, body.len()] {
            let chunks = ok(decode_body(&body, piece).await);
            assert_eq!(chunks.len(), 4, "piece {piece}");
            for chunk in &chunks {
                assert_eq!(chunk.id, "resp-1");
                assert_eq!(chunk.model, "gemini-2.5-flash-001");
                assert_eq!(chunk.created, 7);
            }
            let first = &chunks[0].choices[0];
            assert_eq!(first.role, Some(Role::Assistant));
            assert_eq!(first.reasoning.as_deref(), Some("pondering"));
            assert_eq!(first.text, None);
            assert_eq!(chunks[1].choices[0].role, None);
            assert_eq!(chunks[1].choices[0].text.as_deref(), Some("Hello"));
            let last = &chunks[2].choices[0];
            assert_eq!(last.text.as_deref(), Some(" wörld"));
            assert_eq!(last.reasoning_signature.as_deref(), Some("c2ln"));
            assert_eq!(last.finish_reason, Some(FinishReason::Stop));
            assert!(chunks[..3].iter().all(|c| c.usage.is_none()));
            assert!(chunks[3].choices.is_empty());
            assert_eq!(
                chunks[3].usage,
                Some(Usage {
                    input_tokens: 4,
                    output_tokens: 5,
                    cached_input_tokens: Some(1),
                    cache_creation_input_tokens: None,
                    reasoning_tokens: Some(3),
                })
            );
        }
    }

    #[tokio::test]
    async fn two_function_calls_become_whole_deltas_with_ids() {
        let body = events(&[
            r#"{"candidates": [{"content": {"role": "model", "parts": [{"text": "Checking."}]}}]}"#,
            r#"{"candidates": [{"content": {"role": "model", "parts": [
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2ln"},
                {"functionCall": {"name": "get_time", "args": {}}}]}}]}"#
                .replace('\n', " ")
                .as_str(),
            r#"{"candidates": [{"content": {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}}]}, "finishReason": "STOP"}], "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 9}}"#,
        ]);
        let chunks = ok(decode_body(&body, 5).await);
        let calls: Vec<&ToolCallDelta> = chunks
            .iter()
            .flat_map(|c| c.choices.iter().flat_map(|choice| &choice.tool_calls))
            .collect();
        let summary: Vec<(u32, &str, &str)> = calls
            .iter()
            .map(|c| {
                (
                    c.index,
                    c.name.as_deref().unwrap_or_default(),
                    c.arguments.as_str(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (0, "get_weather", r#"{"city":"Paris"}"#),
                (1, "get_time", "{}"),
                (2, "get_weather", r#"{"city":"Rome"}"#),
            ]
        );
        // Numbered in order across the stream, after a stem drawn for this answer.
        let ids: Vec<&str> = calls.iter().filter_map(|c| c.id.as_deref()).collect();
        let stem = ids[0].strip_suffix("_0").unwrap_or_default();
        assert!(stem.starts_with("call_"), "{ids:?}");
        assert_eq!(
            ids,
            [
                format!("{stem}_0"),
                format!("{stem}_1"),
                format!("{stem}_2")
            ]
        );
        assert_eq!(
            chunks[1].choices[0].reasoning_signature.as_deref(),
            Some("c2ln")
        );
        assert_eq!(
            chunks[2].choices[0].finish_reason,
            Some(FinishReason::ToolCalls)
        );
        assert_eq!(
            chunks.last().and_then(|c| c.usage).map(|u| u.output_tokens),
            Some(9)
        );
    }

    #[tokio::test]
    async fn a_stream_cut_before_the_finish_reason_ends_with_an_error() {
        let body = events(&[
            r#"{"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}}]}"#,
        ]);
        // Cleanly closed, and cut in the middle of the next event.
        for body in [body.clone(), format!("{body}data: {{\"candi")] {
            let items = decode_body(&body, 4).await;
            assert_eq!(items.len(), 2);
            assert!(items[0].is_ok());
            let Err(e) = &items[1] else {
                panic!("the last item should be an error")
            };
            assert_eq!(e.kind, ErrorKind::Upstream);
            assert!(
                e.message.contains("before the answer was complete"),
                "{}",
                e.message
            );
        }
    }

    #[tokio::test]
    async fn errors_in_the_stream() {
        let body = events(&[
            r#"{"candidates": [{"content": {"parts": [{"text": "a"}]}}]}"#,
            r#"{"error": {"code": 500, "message": "Internal error encountered.", "status": "INTERNAL"}}"#,
            r#"{"candidates": [{"content": {"parts": [{"text": "never"}]}, "finishReason": "STOP"}]}"#,
        ]);
        let items = decode_body(&body, 64).await;
        assert_eq!(items.len(), 2);
        let Err(e) = &items[1] else {
            panic!("expected an error")
        };
        assert!(
            e.message.contains("Internal error encountered. [INTERNAL]"),
            "{}",
            e.message
        );

        let blocked = events(&[
            r#"{"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 3}}"#,
        ]);
        let items = decode_body(&blocked, 64).await;
        assert_eq!(items.len(), 1);
        let Err(e) = &items[0] else {
            panic!("expected an error")
        };
        assert_eq!(e.kind, ErrorKind::UpstreamRejected(400));
        assert!(
            e.message.contains("blocked the prompt (SAFETY)"),
            "{}",
            e.message
        );
    }

    #[tokio::test]
    async fn several_candidates_finish_independently() {
        let body = events(&[
            r#"{"candidates": [{"index": 0, "content": {"parts": [{"text": "a"}]}}, {"index": 1, "content": {"parts": [{"text": "b"}]}}]}"#,
            r#"{"candidates": [{"index": 1, "content": {"parts": [{"text": "!"}]}, "finishReason": "MAX_TOKENS"}]}"#,
            r#"{"candidates": [{"index": 0, "content": {"parts": [{"text": "?"}]}, "finishReason": "SAFETY"}]}"#,
        ]);
        let chunks = ok(decode_body(&body, 64).await);
        assert_eq!(chunks.len(), 3, "no usage reported, so no usage chunk");
        assert_eq!(chunks[0].choices.len(), 2);
        assert!(chunks[0]
            .choices
            .iter()
            .all(|c| c.role == Some(Role::Assistant)));
        assert_eq!(chunks[1].choices[0].index, 1);
        assert_eq!(
            chunks[1].choices[0].finish_reason,
            Some(FinishReason::Length)
        );
        assert_eq!(
            chunks[2].choices[0].finish_reason,
            Some(FinishReason::ContentFilter)
        );
    }
}
