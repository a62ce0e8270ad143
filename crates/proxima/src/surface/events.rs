//! The one loop that turns a call's chunk stream into SSE bytes for every surface. Each
//! surface brings an [`EventWriter`] that knows its API's events; the loop decides when bytes
//! go out.
//!
//! Events already on their way are sent together. An upstream body through the pooled https
//! client reaches us one chunk at a time (hyper's body channel holds one; a plain-http body
//! drives its own connection and has a whole burst ready, see `http_client::http1`), and the
//! server writes (one syscall) as soon as the next event is not ready, so a burst of chunks —
//! an upstream that answers fast, or a backlog after a stall — would otherwise cost one write
//! per event. In a burst, after each event the
//! loop yields to let the upstream connection hand over the next chunk, and stops collecting
//! when none came: an event is delayed by two turns of the scheduler at most. Events that come
//! apart, as a model writes tokens, go out one by one without the yields, which would find
//! nothing and cost two more polls of the connection for every event.
//!
//! The first batch does not wait: it takes the events already read and goes out with the
//! response head, in one write. Waiting for company there delayed every stream's first event
//! by two turns of the scheduler (40–50 µs on a slow VM), to gather a burst whose second half
//! the next batch gathers anyway.

use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{stream, Stream, StreamExt};
use tokio::time::Instant;

use crate::canonical::ChatChunk;
use crate::error::Error;
use crate::providers::ChunkStream;

/// At most this many bytes of events go out in one write.
const BATCH_BYTES: usize = 16 * 1024;

/// An event that comes within this time of the previous batch's first is part of a burst, and
/// the loop waits for more to send with it. Tokens of a model come milliseconds apart.
const BURST_GAP: Duration = Duration::from_millis(1);

/// Writes one API's stream events.
pub trait EventWriter: Send + 'static {
    /// Writes the events of one chunk (maybe none). Returns false when the stream is over for
    /// this API (it wrote its last event), true while more may follow.
    fn chunk(&mut self, chunk: ChatChunk, out: &mut BytesMut) -> bool;
    /// Writes the events that end a stream the upstream cut.
    fn fail(&mut self, error: &Error, out: &mut BytesMut);
    /// Writes the events that end a complete stream.
    fn finish(&mut self, out: &mut BytesMut);
}

/// The chunks as SSE bytes in `writer`'s format, batched as the module doc says.
pub fn sse_events<W: EventWriter>(chunks: ChunkStream, writer: W) -> impl Stream<Item = Bytes> {
    stream::unfold(Some((chunks, writer, None)), |state| async move {
        let (mut chunks, mut writer, previous): (_, _, Option<Instant>) = state?;
        let mut out = BytesMut::new();
        // Wait for the first event; chunks that write nothing are passed over.
        let mut open = true;
        while open && out.is_empty() {
            open = write(&mut writer, chunks.next().await, &mut out);
        }
        let first = Instant::now();
        // The first batch takes what is ready (see the module doc).
        let burst = previous.is_some_and(|at| first - at < BURST_GAP);
        // Out of a burst, the batch ends at the first event not ready (unless the next one is,
        // which starts collecting as in a burst).
        let mut yielded = !burst;
        while open && out.len() < BATCH_BYTES {
            let ready = std::future::poll_fn(|cx| match chunks.as_mut().poll_next(cx) {
                Poll::Ready(item) => Poll::Ready(Some(item)),
                Poll::Pending => Poll::Ready(None),
            })
            .await;
            match ready {
                Some(item) => {
                    yielded = false;
                    open = write(&mut writer, item, &mut out);
                }
                None if !yielded => {
                    // One turn is not enough: tokio runs a yielded task again before the
                    // connection task it woke has handed over the next chunk. Two are.
                    for _ in 0..2 {
                        tokio::task::yield_now().await;
                    }
                    yielded = true;
                }
                None => break,
            }
        }
        if out.is_empty() {
            return None;
        }
        Some((out.freeze(), open.then_some((chunks, writer, Some(first)))))
    })
}

/// Writes one stream item; false once the stream is over.
fn write<W: EventWriter>(
    writer: &mut W,
    item: Option<Result<ChatChunk, Error>>,
    out: &mut BytesMut,
) -> bool {
    match item {
        Some(Ok(chunk)) => writer.chunk(chunk, out),
        Some(Err(e)) => {
            writer.fail(&e, out);
            false
        }
        None => {
            writer.finish(out);
            false
        }
    }
}
