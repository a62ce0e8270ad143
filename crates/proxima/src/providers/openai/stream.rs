//! Decoding an OpenAI chat completion stream into canonical chunks.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;
use serde_json::Value;

use crate::canonical::ChatChunk;
use crate::error::{Error, Result};
use crate::http_client::HttpError;
use crate::providers::events::{self, Decoded, EventDecoder};
use crate::providers::upstream_error as error;
use crate::providers::ChunkStream;
use crate::sse::SseEvent;
use crate::wire::openai::{ChatCompletionChunk, ChunkOutline};

/// OpenAI's stream: chunks until `data: [DONE]`.
struct OpenAiEvents {
    provider: Arc<str>,
    /// A finish reason was seen: a stream ending without `[DONE]` after it is still complete
    /// (some compatible servers omit `[DONE]`).
    finished: bool,
    /// Chunks keep their event data for a client of the same API ([`ChatChunk::raw`]).
    verbatim: bool,
}

/// Chunks until `data: [DONE]`; see [`events::decode`] for how streams end. `verbatim`: each
/// chunk keeps its event data and only what the gateway reads is parsed (see
/// [`crate::providers::Provider::chat_stream`]).
pub fn decode<S>(provider: Arc<str>, bytes: S, verbatim: bool) -> ChunkStream
where
    S: Stream<Item = std::result::Result<Bytes, HttpError>> + Send + Unpin + 'static,
{
    let decoder = OpenAiEvents {
        provider: provider.clone(),
        finished: false,
        verbatim,
    };
    events::decode(provider, bytes, decoder)
}

impl EventDecoder for OpenAiEvents {
    fn on_event(&mut self, event: &SseEvent) -> Result<Decoded> {
        if event.data == "[DONE]" {
            return Ok(Decoded::End(None));
        }
        if event.data.trim().is_empty() {
            return Ok(Decoded::Skip);
        }
        let chunk = match self.verbatim {
            true => outline_chunk(&self.provider, &event.data)?,
            false => parse_chunk(&self.provider, &event.data)?,
        };
        self.finished |= chunk.choices.iter().any(|c| c.finish_reason.is_some());
        Ok(Decoded::Chunk(chunk))
    }

    fn on_close(&mut self) -> Result<Option<ChatChunk>> {
        if self.finished {
            Ok(None)
        } else {
            Err(events::incomplete(&self.provider))
        }
    }
}

/// A chunk that keeps its event data. One that carries usage with its choices is read whole
/// instead: a client that did not ask for usage gets the chunk without it, written anew.
fn outline_chunk(provider: &str, data: &str) -> Result<ChatChunk> {
    match serde_json::from_str::<ChunkOutline>(data) {
        Ok(chunk) if chunk.choices.is_empty() && chunk.error.is_some() => {
            Err(failed_mid_stream(provider, data))
        }
        Ok(chunk) if chunk.usage.is_none() || chunk.choices.is_empty() => {
            Ok(chunk.into_canonical(Bytes::copy_from_slice(data.as_bytes())))
        }
        // Whole, or with the reading's error.
        _ => parse_chunk(provider, data),
    }
}

fn failed_mid_stream(provider: &str, data: &str) -> Error {
    Error::upstream(format!(
        "provider `{provider}` failed mid-stream: {}",
        error::error_message(data.as_bytes())
    ))
}

fn parse_chunk(provider: &str, data: &str) -> Result<ChatChunk> {
    let failed = || failed_mid_stream(provider, data);
    match serde_json::from_str::<ChatCompletionChunk>(data) {
        // An error object in the stream is how OpenAI reports failures after the headers. Every
        // chunk field has a default, so such an event also parses as an (empty) chunk.
        Ok(chunk) if chunk.choices.is_empty() && chunk.extra.contains_key("error") => Err(failed()),
        Ok(chunk) => Ok(chunk.into_canonical()),
        Err(e) => {
            if let Ok(value) = serde_json::from_str::<Value>(data) {
                if value.get("error").is_some() {
                    return Err(failed());
                }
            }
            Err(Error::upstream(format!(
                "provider `{provider}` sent a stream event that is not a chat completion chunk: {e}"
            )))
        }
    }
}
