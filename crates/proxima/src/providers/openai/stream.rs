//! Decoding an OpenAI chat completion stream into canonical chunks.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{stream, Stream, StreamExt};
use serde_json::Value;

use crate::canonical::{ChatChunk, ChunkStream};
use crate::error::{Error, Result};
use crate::providers::upstream_error as error;
use crate::sse::{SseError, SseStream};
use crate::wire::openai::ChatCompletionChunk;

struct State<S> {
    events: SseStream<S>,
    provider: Arc<str>,
    /// A finish reason was seen: a stream ending without `[DONE]` after it is still complete
    /// (some compatible servers omit `[DONE]`).
    finished: bool,
    done: bool,
}

/// Chunks until `data: [DONE]`. A stream that breaks or ends early yields an error as its last
/// item, never a silent clean end.
pub fn decode<S>(provider: Arc<str>, bytes: S) -> ChunkStream
where
    S: Stream<Item = reqwest::Result<Bytes>> + Send + Unpin + 'static,
{
    let state = State {
        events: SseStream::new(bytes),
        provider,
        finished: false,
        done: false,
    };
    Box::pin(stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        loop {
            let item = match s.events.next().await {
                Some(Ok(event)) => {
                    if event.data == "[DONE]" {
                        return None;
                    }
                    if event.data.trim().is_empty() {
                        continue;
                    }
                    parse_chunk(&s.provider, &event.data)
                }
                Some(Err(SseError::Transport(e))) => Err(error::transport(&s.provider, e)),
                Some(Err(SseError::Truncated)) | None if !s.finished => {
                    Err(Error::upstream(format!(
                        "provider `{}` ended the stream before the answer was complete",
                        s.provider
                    )))
                }
                Some(Err(SseError::Truncated)) | None => return None,
            };
            match &item {
                Ok(chunk) => s.finished |= chunk.choices.iter().any(|c| c.finish_reason.is_some()),
                Err(_) => s.done = true,
            }
            return Some((item, s));
        }
    }))
}

fn parse_chunk(provider: &str, data: &str) -> Result<ChatChunk> {
    let failed = || {
        Error::upstream(format!(
            "provider `{provider}` failed mid-stream: {}",
            error::error_message(data.as_bytes())
        ))
    };
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
