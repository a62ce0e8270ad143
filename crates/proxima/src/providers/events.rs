//! One loop for every provider's event stream: the transport, truncation and end-of-stream
//! rules live here; each provider only says what one event means ([`EventDecoder`]).

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{stream, Stream, StreamExt};

use super::upstream_error;
use crate::canonical::ChatChunk;
use crate::error::{Error, Result};
use crate::http_client::HttpError;
use crate::providers::ChunkStream;
use crate::sse::{SseError, SseEvent, SseStream};

/// What one upstream event means for the client.
pub enum Decoded {
    Chunk(ChatChunk),
    /// Nothing to send (pings, bookkeeping events).
    Skip,
    /// The upstream's end marker, with a last chunk to send first, if any.
    End(Option<ChatChunk>),
}

/// A provider's reading of its own stream events.
pub trait EventDecoder: Send + 'static {
    fn on_event(&mut self, event: &SseEvent) -> Result<Decoded>;

    /// The connection closed without an end marker: a last chunk (or nothing) if the answer is
    /// complete by this API's rules, else an error — never a silent clean end.
    fn on_close(&mut self) -> Result<Option<ChatChunk>>;
}

/// The error for a stream that stopped before its answer was complete.
pub fn incomplete(provider: &str) -> Error {
    Error::upstream(format!(
        "provider `{provider}` ended the stream before the answer was complete"
    ))
}

struct State<S, D> {
    events: SseStream<S>,
    decoder: D,
    provider: Arc<str>,
    done: bool,
}

/// Chunks from an upstream event stream. An error is always the last item.
pub fn decode<S, D>(provider: Arc<str>, bytes: S, decoder: D) -> ChunkStream
where
    S: Stream<Item = std::result::Result<Bytes, HttpError>> + Send + Unpin + 'static,
    D: EventDecoder,
{
    let state = State {
        events: SseStream::new(bytes),
        decoder,
        provider,
        done: false,
    };
    Box::pin(stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        loop {
            let item = match s.events.next().await {
                Some(Ok(event)) => match s.decoder.on_event(&event) {
                    Ok(Decoded::Skip) => continue,
                    Ok(Decoded::Chunk(chunk)) => return Some((Ok(chunk), s)),
                    Ok(Decoded::End(last)) => {
                        s.done = true;
                        return last.map(|chunk| (Ok(chunk), s));
                    }
                    Err(e) => Err(e),
                },
                Some(Err(SseError::Transport(e))) => Err(upstream_error::transport(&s.provider, e)),
                Some(Err(SseError::Truncated)) | None => {
                    s.done = true;
                    return match s.decoder.on_close() {
                        Ok(last) => last.map(|chunk| (Ok(chunk), s)),
                        Err(e) => Some((Err(e), s)),
                    };
                }
            };
            s.done = true;
            return Some((item, s));
        }
    }))
}
