//! Decoding an OpenAI chat completion stream into canonical chunks.

use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use futures_util::Stream;
use serde_json::Value;

use memchr::memmem;

use crate::canonical::{Api, ChatChunk, ChunkChoice};
use crate::error::{Error, Result};
use crate::http_client::HttpError;
use crate::providers::events::{self, Decoded, EventDecoder};
use crate::providers::upstream_error as error;
use crate::providers::{ChunkStream, Verbatim};
use crate::sse::{self, SseEvent};
use crate::wire::openai::{ChatCompletionChunk, ChunkOutline};

/// OpenAI's stream: chunks until `data: [DONE]`.
struct OpenAiEvents {
    provider: Arc<str>,
    /// A finish reason was seen: a stream ending without `[DONE]` after it is still complete
    /// (some compatible servers omit `[DONE]`).
    finished: bool,
    /// Chunks keep their event data for a client of the same API ([`ChatChunk::raw`]).
    verbatim: Verbatim,
    /// A chunk was read (its model is what telemetry reports); later plain ones need not be.
    read_one: bool,
}

/// Chunks until `data: [DONE]`; see [`events::decode`] for how streams end. `verbatim`: each
/// chunk keeps its event data, and with [`Verbatim::Outline`] only what the gateway reads is
/// parsed (see [`crate::providers::Provider::chat_stream`]).
pub fn decode<S>(provider: Arc<str>, bytes: S, verbatim: Verbatim) -> ChunkStream
where
    S: Stream<Item = std::result::Result<Bytes, HttpError>> + Send + Unpin + 'static,
{
    let decoder = OpenAiEvents {
        provider: provider.clone(),
        finished: false,
        verbatim,
        read_one: false,
    };
    events::decode(provider, bytes, decoder)
}

impl EventDecoder for OpenAiEvents {
    fn on_event(&mut self, event: &SseEvent) -> Result<Decoded> {
        if event.data == "[DONE]" {
            return Ok(Decoded::End(None));
        }
        if event.data.trim_ascii().is_empty() {
            return Ok(Decoded::Skip);
        }
        let chunk = match self.verbatim {
            Verbatim::Outline if self.read_one && says_nothing_kept(&event.data) => {
                unread_chunk(&event.data)
            }
            Verbatim::Outline => outline_chunk(&self.provider, &event.data)?,
            Verbatim::Whole => whole_chunk(&self.provider, &event.data)?,
            Verbatim::No => parse_chunk(&self.provider, &event.data)?,
        };
        self.read_one = true;
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

/// Whether a chunk carries nothing the gateway reads when it passes on as it came: no usage, no
/// error, and a null `finish_reason` for each choice — most chunks of a stream, which then go
/// out unread. A JSON string cannot hold an unescaped quote, so the quoted names are found only
/// where they are keys; a name found elsewhere (a tool's schema, say) only costs a read.
fn says_nothing_kept(data: &[u8]) -> bool {
    // Searchers built once: building one took more than the searches it serves, on each chunk.
    static USAGE: LazyLock<memmem::Finder<'static>> =
        LazyLock::new(|| memmem::Finder::new(b"\"usage\""));
    static ERROR: LazyLock<memmem::Finder<'static>> =
        LazyLock::new(|| memmem::Finder::new(b"\"error\""));
    static FINISH_REASON: LazyLock<memmem::Finder<'static>> =
        LazyLock::new(|| memmem::Finder::new(b"\"finish_reason\""));
    // OpenAI writes `"usage":null` on every chunk once usage is asked for, as the gateway does.
    null_wherever(data, &USAGE).is_some()
        && null_wherever(data, &ERROR).is_some()
        && null_wherever(data, &FINISH_REASON).is_some_and(|choices| choices > 0)
}

/// How many times the quoted key `finder` looks for appears with a null value, if it never has
/// another.
fn null_wherever(data: &[u8], finder: &memmem::Finder<'_>) -> Option<usize> {
    let mut count = 0;
    let mut from = 0;
    // `find` in a loop, not `find_iter`, which copies the searcher for each chunk.
    while let Some(at) = finder.find(&data[from..]) {
        from += at + finder.needle().len();
        let value = data[from..]
            .trim_ascii_start()
            .strip_prefix(b":")
            .map(<[u8]>::trim_ascii_start);
        if !value.is_some_and(|v| v.starts_with(b"null")) {
            return None;
        }
        count += 1;
    }
    Some(count)
}

/// A chunk passed on unread: its event data, and one choice with nothing in it (so that it
/// counts as a chunk with choices, which it is).
fn unread_chunk(data: &Bytes) -> ChatChunk {
    ChatChunk {
        choices: vec![ChunkChoice::default()],
        extra_api: Some(Api::OpenAiChat),
        raw: Some(data.clone()),
        ..ChatChunk::default()
    }
}

/// A chunk that keeps its event data. One that carries usage with its choices is read whole
/// instead: a client that did not ask for usage gets the chunk without it, written anew.
fn outline_chunk(provider: &str, data: &Bytes) -> Result<ChatChunk> {
    match serde_json::from_str::<ChunkOutline>(&sse::text(data)) {
        Ok(chunk) if chunk.choices.is_empty() && chunk.error.is_some() => {
            Err(failed_mid_stream(provider, data))
        }
        Ok(chunk) if chunk.usage.is_none() || chunk.choices.is_empty() => {
            Ok(chunk.into_canonical(data.clone()))
        }
        // Whole, or with the reading's error.
        _ => parse_chunk(provider, data),
    }
}

/// A chunk read whole that keeps its event data, except one that carries usage with its
/// choices, as in [`outline_chunk`].
fn whole_chunk(provider: &str, data: &Bytes) -> Result<ChatChunk> {
    let mut chunk = parse_chunk(provider, data)?;
    if chunk.usage.is_none() || chunk.choices.is_empty() {
        chunk.raw = Some(data.clone());
    }
    Ok(chunk)
}

fn failed_mid_stream(provider: &str, data: &[u8]) -> Error {
    Error::upstream(format!(
        "provider `{provider}` failed mid-stream: {}",
        error::error_message(data)
    ))
}

fn parse_chunk(provider: &str, data: &[u8]) -> Result<ChatChunk> {
    let failed = || failed_mid_stream(provider, data);
    match serde_json::from_str::<ChatCompletionChunk>(&sse::text(data)) {
        // An error object in the stream is how OpenAI reports failures after the headers. Every
        // chunk field has a default, so such an event also parses as an (empty) chunk.
        Ok(chunk) if chunk.choices.is_empty() && chunk.extra.contains_key("error") => Err(failed()),
        Ok(chunk) => Ok(chunk.into_canonical()),
        Err(e) => {
            if let Ok(value) = serde_json::from_slice::<Value>(data) {
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

#[cfg(test)]
mod tests {
    fn says_nothing_kept(data: &str) -> bool {
        super::says_nothing_kept(data.as_bytes())
    }

    #[test]
    fn only_chunks_without_usage_errors_or_finish_reasons_go_unread() {
        let plain =
            r#"{"id":"c","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}"#;
        assert!(says_nothing_kept(plain));
        // Spacing as other servers write it, and text that quotes the names.
        assert!(says_nothing_kept(
            r#"{"choices": [{"delta": {"content": "the \"usage\" and \"error\" keys"}, "finish_reason" : null}]}"#
        ));
        assert!(says_nothing_kept(
            r#"{"choices":[{"index":0,"finish_reason":null},{"index":1,"finish_reason":null}]}"#
        ));
        assert!(says_nothing_kept(
            r#"{"choices":[{"delta":{"content":"x"},"finish_reason":null}],"usage":null}"#
        ));
        for read in [
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
            r#"{"choices":[{"index":0,"finish_reason":null},{"index":1,"finish_reason":"length"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":1}}"#,
            r#"{"choices":[{"finish_reason":null}],"usage":{"total_tokens":3}}"#,
            r#"{"error":{"message":"overloaded"}}"#,
            // No finish_reason at all: not the shape of a plain chunk, so it is read.
            r#"{"choices":[{"index":0,"delta":{"content":"hi"}}]}"#,
        ] {
            assert!(!says_nothing_kept(read), "{read}");
        }
    }
}
