//! One loop for every provider's event stream: the transport, truncation and end-of-stream
//! rules live here; each provider only says what one event means ([`EventDecoder`]).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

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

/// The chunks of one upstream stream: its events, read by the provider's decoder. Written out
/// as a stream, not as `stream::unfold`, which moves its whole state into a new future and
/// back out for every chunk.
struct Decode<S, D> {
    events: SseStream<S>,
    decoder: D,
    provider: Arc<str>,
    done: bool,
}

/// Chunks from an upstream event stream. An error is always the last item.
pub fn decode<S, D>(provider: Arc<str>, bytes: S, decoder: D) -> ChunkStream
where
    S: Stream<Item = std::result::Result<Bytes, HttpError>> + Send + Unpin + 'static,
    D: EventDecoder + Unpin,
{
    Box::pin(Decode {
        events: SseStream::new(bytes),
        decoder,
        provider,
        done: false,
    })
}

impl<S, D> Stream for Decode<S, D>
where
    S: Stream<Item = std::result::Result<Bytes, HttpError>> + Unpin,
    D: EventDecoder + Unpin,
{
    type Item = Result<ChatChunk>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            let item = match ready!(this.events.poll_next_unpin(cx)) {
                Some(Ok(event)) => match this.decoder.on_event(&event) {
                    Ok(Decoded::Skip) => continue,
                    Ok(Decoded::Chunk(chunk)) => return Poll::Ready(Some(Ok(chunk))),
                    Ok(Decoded::End(last)) => {
                        this.done = true;
                        return Poll::Ready(last.map(Ok));
                    }
                    Err(e) => Err(e),
                },
                Some(Err(SseError::Transport(e))) => {
                    Err(upstream_error::transport(&this.provider, e))
                }
                Some(Err(SseError::Truncated)) | None => {
                    this.done = true;
                    return Poll::Ready(this.decoder.on_close().transpose());
                }
            };
            this.done = true;
            return Poll::Ready(Some(item));
        }
    }
}
