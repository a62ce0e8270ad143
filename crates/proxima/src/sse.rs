//! Server-sent events: a decoder for upstream byte streams and helpers to write events.
//!
//! The decoder owns the hard parts of reading a stream off the network: chunk boundaries fall
//! anywhere (inside a line, inside a UTF-8 character), lines end in `\n` or `\r\n`, one event's
//! data may span several `data:` lines, and `:` lines are comments.

use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::Stream;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

/// One decoded event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` name, if any (Anthropic names every event; OpenAI none).
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`, as they came: an event of one line is a slice of the
    /// bytes read, not a copy, and goes on as it is when passed on unread. What reads it reads
    /// it through [`text`].
    pub data: Bytes,
}

/// Incremental decoder: feed bytes with [`SseDecoder::push`], take events with
/// [`SseDecoder::next_event`].
#[derive(Debug, Default)]
pub struct SseDecoder {
    /// The piece being read: its lines are cut out of it without a copy.
    buf: Bytes,
    /// Where the first unread line begins in `buf`.
    start: usize,
    /// A line that did not end in the pieces pushed so far, growing until it does: bytes are
    /// copied only while a line spans pieces.
    carry: BytesMut,
    /// How far into the unread bytes (`carry`'s, or `buf`'s past `start`) has been searched for
    /// a line end without finding one.
    scanned: usize,
    event: PendingEvent,
}

/// The event being read: the lines so far.
#[derive(Debug, Default)]
struct PendingEvent {
    name: Option<String>,
    /// The first `data:` line, or all of them once `joined` holds them.
    data: Bytes,
    /// Lines joined, once an event has more than one.
    joined: BytesMut,
    has_data: bool,
}

impl SseDecoder {
    pub fn push(&mut self, bytes: Bytes) {
        // Bytes left unread (by a caller that did not take every event) wait with the carry.
        if self.start < self.buf.len() {
            self.carry.extend_from_slice(&self.buf[self.start..]);
            self.start = self.buf.len();
        }
        if self.carry.is_empty() {
            self.buf = bytes;
            self.start = 0;
        } else {
            self.carry.extend_from_slice(&bytes);
        }
    }

    /// The next complete event, or `None` until more bytes arrive.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        if let Some(event) = self.one_line_event() {
            return Some(event);
        }
        loop {
            if !self.carry.is_empty() {
                if memchr::memchr(b'\n', &self.carry[self.scanned..]).is_none() {
                    self.scanned = self.carry.len();
                    return None;
                }
                // The line has ended: what was carried is read as a piece of its own.
                self.buf = self.carry.split().freeze();
                self.start = 0;
            }
            let unread = &self.buf[self.start..];
            let Some(end) = memchr::memchr(b'\n', &unread[self.scanned..]) else {
                self.carry.extend_from_slice(unread);
                self.scanned = unread.len();
                self.start = self.buf.len();
                return None;
            };
            let end = self.start + self.scanned + end;
            let line = self.start..end - usize::from(unread[..end - self.start].ends_with(b"\r"));
            self.start = end + 1;
            self.scanned = 0;
            if let Some(event) = self.event.take_line(&self.buf, line) {
                return Some(event);
            }
        }
    }

    /// The event at the head of the unread bytes if it is written as most servers write every
    /// event, one `data: ` line and the blank line after it: cut out in one search instead of
    /// line by line. Anything else (`\r\n`, more lines, a name, a line that spans pieces) is
    /// left to the line reader.
    fn one_line_event(&mut self) -> Option<SseEvent> {
        if !self.carry.is_empty() || self.event.has_data || self.event.name.is_some() {
            return None;
        }
        const DATA: &[u8] = b"data: ";
        let line = self.buf.get(self.start..)?.strip_prefix(DATA)?;
        let end = memchr::memchr(b'\n', line)?;
        if line.get(end + 1) != Some(&b'\n') || line[..end].ends_with(b"\r") {
            return None;
        }
        let from = self.start + DATA.len();
        let data = self.buf.slice(from..from + end);
        self.start = from + end + 2;
        self.scanned = 0;
        Some(SseEvent { event: None, data })
    }

    /// Bytes of an unfinished event still held, ignoring blank space (for end-of-stream checks).
    pub fn has_partial(&self) -> bool {
        self.event.has_data
            || self.buf[self.start..]
                .iter()
                .chain(self.carry.iter())
                .any(|b| !b.is_ascii_whitespace())
    }
}

impl PendingEvent {
    /// Reads the line at `line` in `buf`; the event, if the line ends one. Only a `data:`
    /// line's value is cut out of `buf`.
    fn take_line(&mut self, buf: &Bytes, line: Range<usize>) -> Option<SseEvent> {
        let start = line.start;
        let line = &buf[line];
        if line.is_empty() {
            if !self.has_data && self.name.is_none() {
                return None;
            }
            self.has_data = false;
            let data = if self.joined.is_empty() {
                std::mem::take(&mut self.data)
            } else {
                self.data = Bytes::new();
                self.joined.split().freeze()
            };
            return Some(SseEvent {
                event: self.name.take(),
                data,
            });
        }
        if line[0] == b':' {
            return None;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(i) => {
                let skip = usize::from(line.get(i + 1) == Some(&b' '));
                (&line[..i], start + i + 1 + skip..start + line.len())
            }
            None => (line, 0..0),
        };
        match field {
            b"data" if self.has_data => {
                if self.joined.is_empty() {
                    self.joined.extend_from_slice(&self.data);
                }
                self.joined.extend_from_slice(b"\n");
                self.joined.extend_from_slice(&buf[value]);
            }
            b"data" => {
                self.data = buf.slice(value);
                self.has_data = true;
            }
            b"event" => self.name = Some(String::from_utf8_lossy(&buf[value]).into_owned()),
            _ => {} // `id` and `retry` matter only to reconnecting clients; a gateway never reconnects.
        }
        None
    }
}

/// An event's data as text, for reading: UTF-8, as it should be, or with a broken upstream's
/// invalid bytes replaced. Checking is several times cheaper than the lossy conversion.
pub fn text(data: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(data) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(data),
    }
}

/// Why an upstream event stream stopped before a clean end.
#[derive(Debug)]
pub enum SseError<E> {
    /// The transport failed (connection reset, timeout ...).
    Transport(E),
    /// The stream ended in the middle of an event.
    Truncated,
}

pin_project! {
    /// Decodes a byte stream into events. Ends cleanly only at the end of a complete event.
    pub struct SseStream<S> {
        #[pin]
        inner: S,
        decoder: SseDecoder,
        // The decoder found no event in what it holds: it is not asked again until more bytes
        // come. A stream is polled several times for each event it yields (once more to find
        // the next not there yet, again when woken), and each asking costs a search.
        drained: bool,
        done: bool,
    }
}

impl<S> SseStream<S> {
    pub fn new(inner: S) -> SseStream<S> {
        SseStream {
            inner,
            decoder: SseDecoder::default(),
            drained: false,
            done: false,
        }
    }
}

impl<S, B, E> Stream for SseStream<S>
where
    S: Stream<Item = Result<B, E>>,
    B: Into<Bytes>,
{
    type Item = Result<SseEvent, SseError<E>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        loop {
            if !*this.drained {
                if let Some(event) = this.decoder.next_event() {
                    return Poll::Ready(Some(Ok(event)));
                }
                *this.drained = true;
            }
            if *this.done {
                return Poll::Ready(None);
            }
            match ready!(this.inner.as_mut().poll_next(cx)) {
                Some(Ok(bytes)) => {
                    this.decoder.push(bytes.into());
                    *this.drained = false;
                }
                Some(Err(e)) => {
                    *this.done = true;
                    return Poll::Ready(Some(Err(SseError::Transport(e))));
                }
                None => {
                    *this.done = true;
                    if this.decoder.has_partial() {
                        return Poll::Ready(Some(Err(SseError::Truncated)));
                    }
                }
            }
        }
    }
}

/// Writes `event: NAME` (when given) and `data: JSON` as one event.
pub fn write_event(out: &mut BytesMut, event: Option<&str>, data: &[u8]) {
    out.reserve(data.len() + 16);
    if let Some(name) = event {
        out.put_slice(b"event: ");
        out.put_slice(name.as_bytes());
        out.put_slice(b"\n");
    }
    // One `data:` line per line of `data` (an upstream's event passed on as it came may have
    // several), so the client reads back the same text.
    if memchr::memchr(b'\n', data).is_some() {
        for line in data.split(|&b| b == b'\n') {
            out.put_slice(b"data: ");
            out.put_slice(line);
            out.put_slice(b"\n");
        }
        out.put_slice(b"\n");
    } else {
        out.put_slice(b"data: ");
        out.put_slice(data);
        out.put_slice(b"\n\n");
    }
}

/// An SSE comment: ignored by clients, but keeps idle connections open through proxies.
pub const KEEPALIVE: Bytes = Bytes::from_static(b": keep-alive\n\n");

pin_project! {
    /// A timer of silences: ready once `limit` has passed since something was last heard. A
    /// busy stream hears something every few milliseconds; hearing only reads the clock, and
    /// the timer is moved when it goes off early, once per `limit` at most, instead of being
    /// reset in the runtime's timer wheel for every event.
    pub struct SilenceTimer {
        #[pin]
        sleep: Sleep,
        limit: Duration,
        last_heard: Instant,
        // The waker the sleep last had, while it is set for the same deadline: it will wake
        // that task when it goes off, so polling it again for that task only costs time (a
        // stream polls its timers after each event).
        armed_for: Option<Waker>,
    }
}

impl SilenceTimer {
    /// A silence that starts now.
    pub fn new(limit: Duration) -> SilenceTimer {
        let now = Instant::now();
        SilenceTimer {
            sleep: tokio::time::sleep_until(now + limit),
            limit,
            last_heard: now,
            armed_for: None,
        }
    }

    /// Something was heard: the silence starts again.
    pub fn heard(self: Pin<&mut Self>) {
        *self.project().last_heard = Instant::now();
    }

    /// Ready once the silence has lasted `limit`; a new silence starts then.
    pub fn poll_silent(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        let armed = this.armed_for.as_ref();
        if armed.is_some_and(|waker| waker.will_wake(cx.waker())) && !this.sleep.is_elapsed() {
            return Poll::Pending;
        }
        loop {
            if this.sleep.as_mut().poll(cx).is_pending() {
                *this.armed_for = Some(cx.waker().clone());
                return Poll::Pending;
            }
            let now = Instant::now();
            let due = *this.last_heard + *this.limit;
            if due <= now {
                *this.last_heard = now;
                this.sleep.as_mut().reset(now + *this.limit);
                *this.armed_for = None;
                return Poll::Ready(());
            }
            this.sleep.as_mut().reset(due);
        }
    }
}

pin_project! {
    /// Passes events through, inserting [`KEEPALIVE`] whenever none came for `interval`.
    pub struct KeepAlive<S> {
        #[pin]
        inner: S,
        #[pin]
        silence: SilenceTimer,
    }
}

impl<S> KeepAlive<S> {
    pub fn new(inner: S, interval: Duration) -> KeepAlive<S> {
        KeepAlive {
            inner,
            silence: SilenceTimer::new(interval),
        }
    }
}

impl<S: Stream<Item = Bytes>> Stream for KeepAlive<S> {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        match this.inner.poll_next(cx) {
            Poll::Ready(Some(bytes)) => {
                this.silence.heard();
                Poll::Ready(Some(Ok(bytes)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                ready!(this.silence.poll_silent(cx));
                Poll::Ready(Some(Ok(KEEPALIVE)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{stream, StreamExt};

    fn decode_in_pieces(input: &[u8], piece: usize) -> Vec<SseEvent> {
        let mut decoder = SseDecoder::default();
        let mut events = Vec::new();
        for chunk in input.chunks(piece) {
            decoder.push(Bytes::copy_from_slice(chunk));
            while let Some(event) = decoder.next_event() {
                events.push(event);
            }
        }
        events
    }

    #[test]
    fn written_events_read_back_the_same_data() {
        for data in ["{\"a\":1}", "{\n  \"a\": 1\n}", "", "x\n"] {
            let mut out = BytesMut::new();
            write_event(&mut out, Some("delta"), data.as_bytes());
            let events = decode_in_pieces(&out, out.len());
            assert_eq!(
                events,
                vec![SseEvent {
                    event: Some("delta".into()),
                    data: Bytes::copy_from_slice(data.as_bytes()),
                }],
                "{data:?} as written: {:?}",
                String::from_utf8_lossy(&out)
            );
        }
    }

    #[test]
    fn events_survive_any_chunk_boundary() {
        // One-line events (read in one search when whole in a piece) between the other shapes.
        let input = "event: message_start\r\ndata: {\"a\":\"h\u{e9}llo \u{1f600}\"}\r\n\r\n\
            data: {\"b\":2}\n\ndata:tight\n\ndata: cr\r\n\ndata: \n\n\
            : comment\n\ndata: line1\ndata: line2\n\ndata: [DONE]\n\n";
        let one_line = |data: &'static str| SseEvent {
            event: None,
            data: data.into(),
        };
        let expected = vec![
            SseEvent {
                event: Some("message_start".into()),
                data: "{\"a\":\"h\u{e9}llo \u{1f600}\"}".into(),
            },
            one_line("{\"b\":2}"),
            one_line("tight"),
            one_line("cr"),
            one_line(""),
            SseEvent {
                event: None,
                data: "line1\nline2".into(),
            },
            SseEvent {
                event: None,
                data: "[DONE]".into(),
            },
        ];
        for piece in 1..input.len() {
            assert_eq!(
                decode_in_pieces(input.as_bytes(), piece),
                expected,
                "piece size {piece}"
            );
        }
    }

    #[test]
    fn events_pushed_before_any_is_read_come_out_in_order() {
        let input = b"data: {\"n\":1}\n\nevent: ping\n\ndata: a\ndata: b\n\ndata: tail";
        let mut decoder = SseDecoder::default();
        for piece in input.chunks(3) {
            decoder.push(Bytes::copy_from_slice(piece));
        }
        let mut events = Vec::new();
        while let Some(event) = decoder.next_event() {
            events.push(event);
        }
        assert_eq!(
            events,
            vec![
                SseEvent {
                    event: None,
                    data: Bytes::from_static(b"{\"n\":1}"),
                },
                SseEvent {
                    event: Some("ping".into()),
                    data: Bytes::new(),
                },
                SseEvent {
                    event: None,
                    data: Bytes::from_static(b"a\nb"),
                },
            ]
        );
        // The last event has not ended: it is held, and comes out once it does.
        assert!(decoder.has_partial());
        decoder.push(Bytes::from_static(b" end\n\n"));
        let last = decoder.next_event().map(|event| event.data);
        assert_eq!(last, Some(Bytes::from_static(b"tail end")));
        assert!(!decoder.has_partial());
    }

    #[test]
    fn data_that_is_not_utf8_is_kept_as_it_came_and_read_with_replacements() {
        let mut decoder = SseDecoder::default();
        decoder.push(Bytes::from_static(b"data: caf\xe9\n\n"));
        let data = decoder
            .next_event()
            .map(|event| event.data)
            .unwrap_or_default();
        assert_eq!(data, &b"caf\xe9"[..]);
        assert_eq!(text(&data), "caf\u{fffd}");
        assert_eq!(text(b"caf\xc3\xa9"), "caf\u{e9}");
    }

    /// Whether `timer` goes off within `within` (in paused time, which moves as timers fire).
    async fn goes_off(timer: &mut Pin<Box<SilenceTimer>>, within: Duration) -> bool {
        let silent = std::future::poll_fn(|cx| timer.as_mut().poll_silent(cx));
        tokio::time::timeout(within, silent).await.is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn a_silence_is_timed_from_the_last_thing_heard() {
        let limit = Duration::from_secs(10);
        let mut timer = Box::pin(SilenceTimer::new(limit));
        let start = Instant::now();
        // Heard every 4 s for 40 s: never silent for 10 s.
        for _ in 0..10 {
            assert!(!goes_off(&mut timer, Duration::from_secs(4)).await);
            timer.as_mut().heard();
        }
        // Then nothing: it goes off 10 s after the last thing heard, not before.
        assert!(!goes_off(&mut timer, Duration::from_millis(9_900)).await);
        assert!(goes_off(&mut timer, Duration::from_millis(200)).await);
        let off = Instant::now() - start;
        assert!(
            off >= Duration::from_secs(50) && off < Duration::from_millis(50_200),
            "{off:?}"
        );
        // And a new silence starts when it goes off.
        assert!(!goes_off(&mut timer, Duration::from_millis(9_900)).await);
        assert!(goes_off(&mut timer, Duration::from_millis(200)).await);
    }

    #[tokio::test]
    async fn stream_reports_truncation() {
        let chunks: Vec<Result<&'static [u8], ()>> = vec![Ok(b"data: one\n\n"), Ok(b"data: tw")];
        let events: Vec<_> = SseStream::new(stream::iter(chunks)).collect().await;
        assert!(matches!(&events[0], Ok(e) if e.data == "one"));
        assert!(matches!(events[1], Err(SseError::Truncated)));
        assert_eq!(events.len(), 2);
    }
}
