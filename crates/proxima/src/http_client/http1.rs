//! Plain-http upstreams (self-hosted models: vLLM, Ollama, TGI) over HTTP/1.1 connections of
//! the gateway's own, which the request's task reads and writes itself.
//!
//! hyper's client runs each connection as a state machine that hands the answer over a channel
//! one chunk at a time, and reads a chunked body's framing a byte at a time (a split of its
//! buffer, a reference count and a state change per byte): about 1,600 instructions per event
//! of a stream, more than a quarter of what the gateway spent on one
//! (`bench/results/upstream-own-http1-2026-12-07.md`). Here the request is written
//! in one write, the answer's head parsed with `httparse`, and the body cut from the read
//! buffer one chunk at a time ([`Framing`]): a burst of events that arrived together is passed
//! on without another read.
//!
//! Between requests a connection rests in its worker's idle list, which a sweeper task clears
//! of connections that rested too long or that their upstream closed. A connection is checked
//! when taken (a close that arrived while it rested is read then), and one that fails the
//! request's first write gives the request back unsent, which then goes out on a fresh one.
//!
//! HTTPS upstreams stay with hyper's pooled client: they may speak HTTP/2, whose connections
//! many requests share.

use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::uri::Authority;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use hyper::body::{Body, Frame, SizeHint};
use hyper_util::client::legacy::connect::Connection as _;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::time::Instant;
use tower_service::Service;

use super::connector::{Conn, Connector};
use super::HttpError;
use crate::worker;

/// How long an unused connection is kept; the pooled client's figure.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Unused connections kept per destination and worker; more are closed.
const MAX_IDLE_PER_HOST: usize = 1024;

/// How much of a body its reader left unread is read when the body is dropped, to keep the
/// connection; with more left, it is closed instead.
const DRAIN_LIMIT: usize = 64 * 1024;

/// Room a connection's reads ask the socket to fill, at first and at most: a read that fills
/// all it was given doubles the room for the next, so that a large body (many embeddings)
/// takes tens of reads rather than hundreds.
const READ_ROOM: usize = 8 * 1024;
const MAX_READ_ROOM: usize = 256 * 1024;

/// The longest response head, and the longest line of a chunked body's framing.
const MAX_HEAD: usize = 64 * 1024;
const MAX_LINE: usize = 4 * 1024;

/// Headers a response head may have.
const MAX_HEADERS: usize = 128;

/// The unused connections, one list per worker: a connection's socket belongs to the runtime
/// of the worker that opened it.
pub struct Idle {
    workers: Vec<WorkerIdle>,
}

#[derive(Default)]
struct WorkerIdle {
    resting: Mutex<ByDestination>,
    /// Whether the worker's sweeper runs: started with the first connection put to rest.
    swept: AtomicBool,
}

/// A worker's resting connections, most recently used last.
type ByDestination = HashMap<Authority, Vec<Resting>, foldhash::fast::RandomState>;

struct Resting {
    conn: Http1Conn,
    since: Instant,
}

/// One HTTP/1.1 connection and what was read from it and not yet used.
pub struct Http1Conn {
    /// Boxed: a TLS state (to an `https://` proxy) makes it large, and the connection moves
    /// with every request and into the idle list.
    io: Box<TokioIo<Conn>>,
    read: BytesMut,
    /// To a proxy: requests carry the absolute URI.
    proxied: bool,
    /// What the next read asks for (see [`READ_ROOM`]).
    room: usize,
}

/// A response body read from the connection it came on, which goes back to the idle list once
/// the body has been read to its end.
pub struct DrivenBody {
    /// `None` once the body has ended or failed.
    conn: Option<Http1Conn>,
    framing: Framing,
    /// The connection may carry another exchange after this body.
    reusable: bool,
    destination: Authority,
    idle: Arc<Idle>,
}

impl Idle {
    pub fn new() -> Idle {
        let workers = worker::count_for_this_process().max(1);
        Idle {
            workers: (0..workers).map(|_| WorkerIdle::default()).collect(),
        }
    }

    fn mine(&self) -> usize {
        worker::current().index % self.workers.len()
    }

    fn resting(&self, worker: usize) -> std::sync::MutexGuard<'_, ByDestination> {
        self.workers[worker]
            .resting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently used connection to `destination` that is still open, if any. (The
    /// sweeper closes the others in time.)
    fn take(&self, destination: &Authority) -> Option<Http1Conn> {
        let mut idle = self.resting(self.mine());
        let resting = idle.get_mut(destination)?;
        while let Some(Resting { mut conn, since }) = resting.pop() {
            if since.elapsed() >= IDLE_TIMEOUT {
                // The rest rested longer still.
                resting.clear();
                break;
            }
            if conn.still_open() {
                return Some(conn);
            }
        }
        None
    }

    fn put(self: &Arc<Self>, destination: Authority, conn: Http1Conn) {
        let worker = self.mine();
        if !self.workers[worker].swept.swap(true, Ordering::Relaxed) {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(sweep(Arc::downgrade(self), worker));
            }
        }
        let mut idle = self.resting(worker);
        let resting = idle.entry(destination).or_default();
        if resting.len() < MAX_IDLE_PER_HOST {
            resting.push(Resting {
                conn,
                since: Instant::now(),
            });
        }
    }
}

/// Closes, every half idle timeout, the worker's connections that rested too long or that
/// their upstream closed (a server's keep-alive timeout), so that none stays open for a
/// destination no longer asked. Ends with the client.
async fn sweep(idle: Weak<Idle>, worker: usize) {
    loop {
        tokio::time::sleep(IDLE_TIMEOUT / 2).await;
        let Some(idle) = idle.upgrade() else {
            return;
        };
        idle.resting(worker).retain(|_, resting| {
            resting.retain_mut(|r| r.since.elapsed() < IDLE_TIMEOUT && r.conn.still_open());
            !resting.is_empty()
        });
    }
}

/// Sends a request (absolute URI, `http` scheme) on a resting connection to its destination,
/// or on a new one, and reads the response head. The body reads the rest.
pub async fn send(
    idle: &Arc<Idle>,
    connector: &Connector,
    method: Method,
    uri: Uri,
    mut headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, HeaderMap, DrivenBody), HttpError> {
    let Some(destination) = uri.authority().cloned() else {
        return Err(HttpError::Connect(format!("no host in `{uri}`").into()));
    };
    if !headers.contains_key(HOST) {
        // Without any `user:password@` the URI may carry.
        let host = destination.as_str().rsplit('@').next().unwrap_or_default();
        let host = HeaderValue::from_str(host).map_err(|e| HttpError::Connect(e.into()))?;
        headers.insert(HOST, host);
    }
    let head_only = method == Method::HEAD;
    loop {
        let (mut conn, resting) = match idle.take(&destination) {
            Some(conn) => (conn, true),
            // Boxed: opening holds the connector's future, and every request's future, up
            // through the provider and the router, would carry that room and copy it.
            None => (
                Box::pin(Http1Conn::open(connector, uri.clone())).await?,
                false,
            ),
        };
        let head = request_head(&method, &uri, conn.proxied, &headers, body.len());
        let head = match conn.write(&head, &body).await {
            Ok(()) => conn
                .read_head(head_only)
                .await
                .map_err(HttpError::Exchange)?,
            // Closed while it rested, before any of the request went out: safe to send again,
            // on a fresh one.
            Err(Written::Nothing(_)) if resting => continue,
            // An upstream may answer before it has read the whole request (a 413 for a body
            // too large) and close: its answer, when one came, says more than the write's
            // error. The connection ends with that answer.
            Err(Written::Nothing(e) | Written::Part(e)) => match conn.read_head(head_only).await {
                Ok(head) => Head {
                    reusable: false,
                    ..head
                },
                Err(_) => return Err(HttpError::Exchange(e)),
            },
        };
        let body = DrivenBody {
            conn: Some(conn),
            framing: head.framing,
            reusable: head.reusable,
            destination,
            idle: idle.clone(),
        };
        return Ok((head.status, head.headers, body));
    }
}

/// The request line and headers, with the body's length.
fn request_head(
    method: &Method,
    uri: &Uri,
    proxied: bool,
    headers: &HeaderMap,
    body_len: usize,
) -> Vec<u8> {
    let mut head = Vec::with_capacity(256 + 48 * headers.len());
    head.extend_from_slice(method.as_str().as_bytes());
    head.push(b' ');
    match (proxied, uri.path_and_query()) {
        // A proxy forwards by the absolute URI.
        (true, _) => head.extend_from_slice(uri.to_string().as_bytes()),
        (false, Some(path)) => head.extend_from_slice(path.as_str().as_bytes()),
        (false, None) => head.push(b'/'),
    }
    head.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    let has_body = body_len > 0 || matches!(*method, Method::POST | Method::PUT | Method::PATCH);
    if has_body && !headers.contains_key(CONTENT_LENGTH) {
        head.extend_from_slice(b"content-length: ");
        head.extend_from_slice(itoa::Buffer::new().format(body_len).as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// How far a failed request write got.
enum Written {
    Nothing(io::Error),
    Part(io::Error),
}

/// A response head, and how its body is framed.
struct Head {
    status: StatusCode,
    headers: HeaderMap,
    framing: Framing,
    reusable: bool,
}

impl Http1Conn {
    async fn open(connector: &Connector, uri: Uri) -> Result<Http1Conn, HttpError> {
        let io = connector
            .clone()
            .call(uri)
            .await
            .map_err(HttpError::Connect)?;
        Ok(Http1Conn {
            proxied: io.connected().is_proxied(),
            io: Box::new(TokioIo::new(io)),
            read: BytesMut::new(),
            room: READ_ROOM,
        })
    }

    /// Whether a resting connection can take a request: its upstream has not closed it (nor
    /// written anything unasked, after which nothing it says can be trusted). Never waits.
    fn still_open(&mut self) -> bool {
        let mut byte = [0u8; 1];
        let mut buf = tokio::io::ReadBuf::new(&mut byte);
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(&mut *self.io)
            .poll_read(&mut cx, &mut buf)
            .is_pending()
    }

    /// Writes the request head and body, in one write when the socket takes it.
    async fn write(&mut self, head: &[u8], body: &[u8]) -> Result<(), Written> {
        let (mut head, mut body) = (head, body);
        let mut written = false;
        let failed = |written: bool, e: io::Error| {
            if written {
                Written::Part(e)
            } else {
                Written::Nothing(e)
            }
        };
        while !head.is_empty() || !body.is_empty() {
            let slices = [IoSlice::new(head), IoSlice::new(body)];
            let n = poll_fn(|cx| Pin::new(&mut *self.io).poll_write_vectored(cx, &slices))
                .await
                .map_err(|e| failed(written, e))?;
            if n == 0 {
                return Err(failed(written, io::ErrorKind::WriteZero.into()));
            }
            written = true;
            let from_head = n.min(head.len());
            head = &head[from_head..];
            body = &body[n - from_head..];
        }
        poll_fn(|cx| Pin::new(&mut *self.io).poll_flush(cx))
            .await
            .map_err(Written::Part)
    }

    /// Reads whatever the socket has into the read buffer; `Ok(0)` once the upstream closed.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.read.capacity() - self.read.len() < self.room / 4 {
            self.read.reserve(self.room);
        }
        let spare = self.read.capacity() - self.read.len();
        let read = ready!(pin!(self.io.read_buf(&mut self.read)).poll(cx))?;
        if read == spare {
            self.room = (self.room * 2).min(MAX_READ_ROOM);
        }
        Poll::Ready(Ok(read))
    }

    /// Reads the response head (after any `1xx` heads before it).
    async fn read_head(&mut self, head_only: bool) -> io::Result<Head> {
        loop {
            if !self.read.is_empty() {
                if let Some((len, head)) = parse_head(&self.read, head_only)? {
                    self.read.advance(len);
                    match head {
                        Some(head) => return Ok(head),
                        // Informational (`100 Continue`): the answer follows.
                        None => continue,
                    }
                }
                if self.read.len() > MAX_HEAD {
                    return Err(invalid("a response head longer than 64 KiB"));
                }
            }
            if poll_fn(|cx| self.poll_fill(cx)).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the upstream closed the connection before answering",
                ));
            }
        }
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("not an HTTP/1.1 answer: {what}"),
    )
}

/// The head at the start of `buf` and its length, once it is all there; `Some((len, None))`
/// for an informational (`1xx`) head.
fn parse_head(buf: &[u8], head_only: bool) -> io::Result<Option<(usize, Option<Head>)>> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut slots);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(invalid(&e.to_string())),
    };
    let status = response
        .code
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or_else(|| invalid("no status"))?;
    if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
        return Ok(Some((len, None)));
    }
    let mut headers = HeaderMap::with_capacity(response.headers.len());
    for header in response.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes())
            .map_err(|_| invalid("a bad header name"))?;
        let value =
            HeaderValue::from_bytes(header.value).map_err(|_| invalid("a bad header value"))?;
        headers.append(name, value);
    }
    let mut reusable = response.version == Some(1)
        && !crate::wire::header_list(&headers, CONNECTION).any(|t| t.eq_ignore_ascii_case("close"));
    let framing = if head_only
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Framing::Length(0)
    } else if headers.contains_key(TRANSFER_ENCODING) {
        if last_coding_is_chunked(&headers) && !headers.contains_key(CONTENT_LENGTH) {
            Framing::Chunked(Chunked::Size)
        } else {
            // Another coding last, or a length beside the coding (RFC 9112, 6.3): the body
            // ends when the connection does.
            reusable = false;
            Framing::UntilClose
        }
    } else if let Some(length) = content_length(&headers)? {
        Framing::Length(length)
    } else {
        reusable = false;
        Framing::UntilClose
    };
    if status == StatusCode::SWITCHING_PROTOCOLS {
        reusable = false;
    }
    Ok(Some((
        len,
        Some(Head {
            status,
            headers,
            framing,
            reusable,
        }),
    )))
}

fn last_coding_is_chunked(headers: &HeaderMap) -> bool {
    headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .is_some_and(|coding| coding.trim().eq_ignore_ascii_case("chunked"))
}

/// `content-length`, which every copy must agree on.
fn content_length(headers: &HeaderMap) -> io::Result<Option<u64>> {
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for part in value.as_bytes().split(|&b| b == b',') {
            let part = part.trim_ascii();
            let parsed =
                (!part.is_empty() && part.len() <= 19 && part.iter().all(u8::is_ascii_digit))
                    .then(|| part.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
                    .ok_or_else(|| invalid("a bad content-length"))?;
            if length.is_some_and(|known| known != parsed) {
                return Err(invalid("content-lengths that disagree"));
            }
            length = Some(parsed);
        }
    }
    Ok(length)
}

/// Where a body ends, and how far it has been read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// So many bytes still to come.
    Length(u64),
    Chunked(Chunked),
    /// Whatever comes until the upstream closes.
    UntilClose,
    /// Read to its end.
    Done,
}

/// Where in a chunked body the reading is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunked {
    /// At a chunk's size line.
    Size,
    /// In a chunk's data, so many bytes still to come.
    Data(u64),
    /// At the line end after a chunk's data.
    DataEnd,
    /// At the trailer lines after the last chunk, up to an empty one.
    Trailers,
}

/// What the read buffer gave the body.
#[derive(Debug, PartialEq)]
enum Cut {
    Data(Bytes),
    /// The body's end.
    End,
    /// More must be read first.
    More,
}

impl Framing {
    /// The next piece of the body from `buf`, consuming it.
    fn cut(&mut self, buf: &mut BytesMut) -> io::Result<Cut> {
        loop {
            match *self {
                Framing::Done | Framing::Length(0) => {
                    *self = Framing::Done;
                    return Ok(Cut::End);
                }
                Framing::Length(left) => {
                    if buf.is_empty() {
                        return Ok(Cut::More);
                    }
                    let n = take_up_to(buf.len(), left);
                    *self = Framing::Length(left - n as u64);
                    return Ok(Cut::Data(buf.split_to(n).freeze()));
                }
                Framing::UntilClose => {
                    if buf.is_empty() {
                        return Ok(Cut::More);
                    }
                    return Ok(Cut::Data(buf.split().freeze()));
                }
                Framing::Chunked(Chunked::Data(left)) => {
                    if buf.is_empty() {
                        return Ok(Cut::More);
                    }
                    let n = take_up_to(buf.len(), left);
                    let rest = left - n as u64;
                    *self = Framing::Chunked(if rest == 0 {
                        Chunked::DataEnd
                    } else {
                        Chunked::Data(rest)
                    });
                    return Ok(Cut::Data(buf.split_to(n).freeze()));
                }
                Framing::Chunked(state) => {
                    let Some(end) = memchr::memchr(b'\n', buf) else {
                        if buf.len() > MAX_LINE {
                            return Err(invalid("a chunked body's line longer than 4 KiB"));
                        }
                        return Ok(Cut::More);
                    };
                    let line = buf[..end].strip_suffix(b"\r").unwrap_or(&buf[..end]);
                    let next = match state {
                        Chunked::Size => match chunk_size(line)? {
                            0 => Chunked::Trailers,
                            size => Chunked::Data(size),
                        },
                        Chunked::DataEnd if line.is_empty() => Chunked::Size,
                        Chunked::DataEnd => {
                            return Err(invalid("a chunk longer than its size says"));
                        }
                        // The empty line ends the body; a trailer field is skipped.
                        Chunked::Trailers if line.is_empty() => {
                            buf.advance(end + 1);
                            *self = Framing::Done;
                            return Ok(Cut::End);
                        }
                        // (`Data` is cut by the arm above, never here.)
                        Chunked::Trailers | Chunked::Data(_) => Chunked::Trailers,
                    };
                    buf.advance(end + 1);
                    *self = Framing::Chunked(next);
                }
            }
        }
    }
}

/// `have` bytes, or fewer when `left` is fewer.
fn take_up_to(have: usize, left: u64) -> usize {
    usize::try_from(left).map_or(have, |left| left.min(have))
}

/// A chunk's size: hex digits, then any extensions (`;name=value`), which are ignored.
fn chunk_size(line: &[u8]) -> io::Result<u64> {
    let digits = line
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    if digits.is_empty() || digits.len() > 15 {
        return Err(invalid("a bad chunk size"));
    }
    digits.iter().try_fold(0u64, |size, &d| {
        let digit = (d as char)
            .to_digit(16)
            .ok_or_else(|| invalid("a bad chunk size"))?;
        Ok(size * 16 + u64::from(digit))
    })
}

impl DrivenBody {
    /// The body has ended: the connection rests, if it can take another request.
    fn release(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        // Anything past the answer was never asked for: such a connection is not trusted.
        if self.reusable && conn.read.is_empty() {
            // A large body's room is not kept while the connection rests.
            conn.room = READ_ROOM;
            if conn.read.capacity() > READ_ROOM {
                conn.read = BytesMut::new();
            }
            self.idle.put(self.destination.clone(), conn);
        }
    }

    fn fail(&mut self, e: io::Error) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.conn = None;
        self.framing = Framing::Done;
        Poll::Ready(Some(Err(e)))
    }
}

impl Drop for DrivenBody {
    /// A reader may stop before the body's end: an SSE reader stops at the last event, before
    /// the chunked body's terminator. What is left and already arrived is read now, so that
    /// the connection rests instead of closing (a new connection per stream costs more than
    /// the rest of the request). Nothing here waits.
    fn drop(&mut self) {
        if self.conn.is_none() {
            return;
        }
        let mut cx = Context::from_waker(Waker::noop());
        let mut left = 0;
        while left <= DRAIN_LIMIT {
            match Pin::new(&mut *self).poll_frame(&mut cx) {
                Poll::Ready(Some(Ok(frame))) => left += frame.data_ref().map_or(0, Bytes::len),
                // The end: `poll_frame` let the connection rest.
                Poll::Ready(None) => return,
                Poll::Ready(Some(Err(_))) | Poll::Pending => return,
            }
        }
    }
}

impl Body for DrivenBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match this.framing.cut(&mut conn.read) {
                Ok(Cut::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(Cut::End) => {
                    this.release();
                    return Poll::Ready(None);
                }
                Ok(Cut::More) => {}
                Err(e) => return this.fail(e),
            }
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if this.framing == Framing::UntilClose => {
                    this.framing = Framing::Done;
                    this.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    return this.fail(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the upstream closed the connection before the end of its answer",
                    ))
                }
                Ok(_) => {}
                Err(e) => return this.fail(e),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Done | Framing::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(left) => SizeHint::with_exact(left),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    use futures_util::StreamExt;
    use http::HeaderMap;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use crate::http_client::{HttpClient, UpstreamResponse};

    /// How an upstream test server treats a connection after answering.
    #[derive(Clone, Copy)]
    enum After {
        KeepOpen,
        /// Closes it a moment later without saying so, as a server whose keep-alive timeout
        /// passed: the client has put the connection to rest by then.
        CloseSoon,
        /// Writes the rest of the answer a moment later, and keeps it open.
        ThenLater(&'static str),
    }

    /// An HTTP/1.1 server answering every request with `answer` (a whole response).
    struct Upstream {
        url: String,
        /// Connections accepted.
        accepted: Arc<AtomicUsize>,
        /// Connections the client closed.
        closed: Arc<AtomicUsize>,
    }

    async fn upstream(answer: &'static str, after: After) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let (accepts, closes) = (accepted.clone(), closed.clone());
        tokio::spawn(async move {
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                accepts.fetch_add(1, Ordering::SeqCst);
                let closes = closes.clone();
                tokio::spawn(async move {
                    if serve(socket, answer, after).await {
                        closes.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        Upstream {
            url,
            accepted,
            closed,
        }
    }

    /// Serves one connection; true when the client closed it.
    async fn serve(mut socket: TcpStream, answer: &'static str, after: After) -> bool {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            // A request head (the tests send bodiless GETs).
            while memchr::memmem::find(&seen, b"\r\n\r\n").is_none() {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => return true,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            let end = memchr::memmem::find(&seen, b"\r\n\r\n").unwrap() + 4;
            seen.drain(..end);
            if socket.write_all(answer.as_bytes()).await.is_err() {
                return true;
            }
            match after {
                After::KeepOpen => {}
                After::CloseSoon => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    return false;
                }
                After::ThenLater(rest) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    if socket.write_all(rest.as_bytes()).await.is_err() {
                        return true;
                    }
                }
            }
        }
    }

    const PLAIN: &str = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

    /// Three events in one burst, each its own chunk, then the end.
    const EVENTS: &str = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
        6\r\nfirst\n\r\n7\r\nsecond\n\r\n6\r\nthird\n\r\n0\r\n\r\n";

    /// A GET's answer, its body still to read.
    async fn open(client: &HttpClient, url: &str) -> UpstreamResponse {
        let response = client
            .get(url.parse().unwrap(), HeaderMap::new())
            .await
            .unwrap();
        assert_eq!(response.status, 200);
        response
    }

    async fn get(client: &HttpClient, url: &str) -> String {
        let body = open(client, url).await.bytes().await.unwrap();
        String::from_utf8(body.to_vec()).unwrap()
    }

    /// The connections an upstream answering `answer` accepted for `times` requests, each of
    /// which read `body`.
    async fn connections_for(
        answer: &'static str,
        after: After,
        times: usize,
        body: &str,
    ) -> usize {
        let Upstream { url, accepted, .. } = upstream(answer, after).await;
        let client = HttpClient::with_proxy(None).unwrap();
        for _ in 0..times {
            assert_eq!(get(&client, &url).await, body);
        }
        accepted.load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn a_connection_read_to_its_end_serves_the_next_request() {
        assert_eq!(connections_for(PLAIN, After::KeepOpen, 3, "ok").await, 1);
    }

    #[tokio::test]
    async fn a_connection_resting_past_the_idle_timeout_is_closed() {
        let Upstream { url, closed, .. } = upstream(PLAIN, After::KeepOpen).await;
        let client = HttpClient::with_proxy(None).unwrap();
        assert_eq!(get(&client, &url).await, "ok");
        tokio::time::pause();
        tokio::time::sleep(IDLE_TIMEOUT / 2).await;
        settle().await;
        assert_eq!(closed.load(Ordering::SeqCst), 0, "closed before its time");
        tokio::time::sleep(IDLE_TIMEOUT).await;
        settle().await;
        assert_eq!(
            closed.load(Ordering::SeqCst),
            1,
            "no request came for it, yet it stays"
        );
    }

    /// Lets the sockets' events arrive (the clock is paused, so no sleep of tokio's waits).
    async fn settle() {
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(5));
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_connection_closed_while_resting_is_replaced_without_an_error() {
        let Upstream { url, accepted, .. } = upstream(PLAIN, After::CloseSoon).await;
        let client = HttpClient::with_proxy(None).unwrap();
        assert_eq!(get(&client, &url).await, "ok");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(get(&client, &url).await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_stream_yields_every_chunk_of_a_burst_and_its_connection_rests_after() {
        let Upstream { url, accepted, .. } = upstream(EVENTS, After::KeepOpen).await;
        let client = HttpClient::with_proxy(None).unwrap();
        for _ in 0..2 {
            let response = open(&client, &url).await;
            let chunks: Vec<Bytes> = response
                .bytes_stream()
                .map(|chunk| chunk.unwrap())
                .collect()
                .await;
            assert_eq!(chunks, ["first\n", "second\n", "third\n"]);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    /// The first event now, the others a moment later.
    fn events_apart() -> (&'static str, After) {
        let (first, rest) = EVENTS.split_at(EVENTS.find("7\r\n").unwrap());
        (first, After::ThenLater(rest))
    }

    async fn read_events_that_come_apart() {
        let (first, rest) = events_apart();
        let Upstream { url, .. } = upstream(first, rest).await;
        let client = HttpClient::with_proxy(None).unwrap();
        let chunks = open(&client, &url).await.bytes_stream();
        let chunks: Vec<Bytes> = tokio::select! {
            // First: a timer's wake polls the reader too, and would let it finish late.
            biased;
            () = tokio::time::sleep(Duration::from_secs(2)) => {
                panic!("the events came 50 ms apart, but their reader was not woken")
            }
            chunks = chunks.map(|chunk| chunk.unwrap()).collect() => chunks,
        };
        assert_eq!(chunks, ["first\n", "second\n", "third\n"]);
    }

    #[tokio::test]
    async fn events_that_come_apart_each_wake_their_reader() {
        read_events_that_come_apart().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_that_come_apart_wake_their_reader_from_another_thread() {
        read_events_that_come_apart().await;
    }

    #[tokio::test]
    async fn a_body_dropped_with_only_its_end_unread_lets_its_connection_rest() {
        let Upstream { url, accepted, .. } = upstream(EVENTS, After::KeepOpen).await;
        let client = HttpClient::with_proxy(None).unwrap();
        for _ in 0..2 {
            let response = open(&client, &url).await;
            let mut chunks = response.bytes_stream();
            for _ in 0..3 {
                chunks.next().await.unwrap().unwrap();
            }
            // As an SSE reader stops at its last event, before the body's terminator.
            drop(chunks);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_body_left_unread_closes_its_connection() {
        // The other events come when the reader has gone.
        let (first, rest) = events_apart();
        let Upstream { url, accepted, .. } = upstream(first, rest).await;
        let client = HttpClient::with_proxy(None).unwrap();
        let response = open(&client, &url).await;
        let mut chunks = response.bytes_stream();
        assert_eq!(chunks.next().await.unwrap().unwrap(), "first\n");
        drop(chunks);
        // Its unread events must not be taken for the next answer.
        let response = open(&client, &url).await;
        let mut chunks = response.bytes_stream();
        assert_eq!(chunks.next().await.unwrap().unwrap(), "first\n");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    /// `body` cut by [`Framing`], fed to it in pieces of `step` bytes; what was left over.
    fn cut_all(framing: Framing, body: &[u8], step: usize) -> io::Result<(Vec<u8>, usize)> {
        let mut framing = framing;
        let mut buf = BytesMut::new();
        let mut data = Vec::new();
        let mut fed = 0;
        loop {
            match framing.cut(&mut buf)? {
                Cut::Data(piece) => {
                    assert!(!piece.is_empty(), "an empty piece");
                    data.extend_from_slice(&piece);
                }
                Cut::End => return Ok((data, buf.len() + body.len() - fed)),
                Cut::More if fed == body.len() => {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "cut short"))
                }
                Cut::More => {
                    let next = (fed + step).min(body.len());
                    buf.extend_from_slice(&body[fed..next]);
                    fed = next;
                }
            }
        }
    }

    #[test]
    fn a_chunked_body_reads_the_same_however_its_bytes_arrive() {
        let body =
            b"6\r\nfirst\n\r\n7;name=value\r\nsecond\n\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n\
            0\r\nx-trailer: 1\r\n\r\nNEXT";
        for step in [1, 2, 3, 7, 16, body.len()] {
            let (data, left) = cut_all(Framing::Chunked(Chunked::Size), body, step).unwrap();
            assert_eq!(
                String::from_utf8(data).unwrap(),
                "first\nsecond\nabcdefghijklmnopqrstuvwxyz",
                "in pieces of {step}"
            );
            // What follows the body is not the body's.
            assert_eq!(left, 4, "in pieces of {step}");
        }
        // Bare line feeds, as some servers write them.
        let (data, _) = cut_all(Framing::Chunked(Chunked::Size), b"2\nok\n0\n\n", 1).unwrap();
        assert_eq!(data, b"ok");
    }

    #[test]
    fn a_chunked_body_with_bad_framing_is_an_error() {
        for bad in [
            &b"zz\r\nok\r\n0\r\n\r\n"[..],
            b"\r\nok\r\n0\r\n\r\n",
            b"2\r\nokay\r\n0\r\n\r\n",
            b"1000000000000000\r\n",
        ] {
            let error = cut_all(Framing::Chunked(Chunked::Size), bad, 1).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{bad:?}");
        }
        // Cut short: more is needed, and never comes.
        let short = cut_all(Framing::Chunked(Chunked::Size), b"5\r\nab", 1).unwrap_err();
        assert_eq!(short.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn a_body_with_a_length_ends_there() {
        let (data, left) = cut_all(Framing::Length(5), b"helloNEXT", 2).unwrap();
        assert_eq!((data.as_slice(), left), (&b"hello"[..], 4));
        assert!(cut_all(Framing::Length(6), b"hello", 1).is_err());
        let (data, _) = cut_all(Framing::Length(0), b"", 1).unwrap();
        assert!(data.is_empty());
    }

    fn head(text: &str) -> Head {
        let (len, head) = parse_head(text.as_bytes(), false).unwrap().unwrap();
        assert_eq!(len, text.len());
        head.unwrap()
    }

    #[test]
    fn a_head_says_how_its_body_is_framed_and_whether_the_connection_goes_on() {
        let plain = head("HTTP/1.1 200 OK\r\ncontent-length: 12\r\nx-a: 1\r\nx-a: 2\r\n\r\n");
        assert_eq!(
            (plain.status, plain.framing, plain.reusable),
            (StatusCode::OK, Framing::Length(12), true)
        );
        assert_eq!(plain.headers.get_all("x-a").iter().count(), 2);
        let chunked = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(chunked.framing, Framing::Chunked(Chunked::Size));
        assert!(chunked.reusable);
        let closing =
            head("HTTP/1.1 500 Oops\r\nconnection: keep-alive, Close\r\ncontent-length: 0\r\n\r\n");
        assert_eq!((closing.status.as_u16(), closing.reusable), (500, false));
        let until_close = head("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(
            (until_close.framing, until_close.reusable),
            (Framing::UntilClose, false)
        );
        let old = head("HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\n");
        assert!(!old.reusable);
        let empty = head("HTTP/1.1 204 No Content\r\ncontent-length: 9\r\n\r\n");
        assert_eq!(empty.framing, Framing::Length(0));
        let both =
            head("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n");
        assert_eq!((both.framing, both.reusable), (Framing::UntilClose, false));
        // A HEAD request's answer has no body, whatever its length says.
        let text = "HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n";
        let (_, answer) = parse_head(text.as_bytes(), true).unwrap().unwrap();
        assert_eq!(answer.unwrap().framing, Framing::Length(0));
    }

    #[test]
    fn a_head_not_all_there_or_not_http_is_told_apart() {
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-le", false)
            .unwrap()
            .is_none());
        let (len, informational) = parse_head(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1", false)
            .unwrap()
            .unwrap();
        assert_eq!(len, 25);
        assert!(informational.is_none());
        for bad in [
            &b"SSH-2.0-OpenSSH\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: -2\r\n\r\n",
        ] {
            let error = parse_head(bad, false).err().expect("not a good head");
            assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{bad:?}");
        }
    }

    #[test]
    fn a_request_head_carries_its_target_headers_and_length() {
        let uri: Uri = "http://127.0.0.1:8000/v1/chat?x=1".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(HOST, HeaderValue::from_static("127.0.0.1:8000"));
        headers.insert("authorization", HeaderValue::from_static("Bearer k"));
        let head = request_head(&Method::POST, &uri, false, &headers, 42);
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "POST /v1/chat?x=1 HTTP/1.1\r\nhost: 127.0.0.1:8000\r\nauthorization: Bearer k\r\n\
             content-length: 42\r\n\r\n"
        );
        let proxied = request_head(&Method::GET, &uri, true, &HeaderMap::new(), 0);
        assert_eq!(
            String::from_utf8(proxied).unwrap(),
            "GET http://127.0.0.1:8000/v1/chat?x=1 HTTP/1.1\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn an_answer_without_a_length_ends_with_its_connection() {
        let answer = "HTTP/1.1 200 OK\r\n\r\nhello";
        assert_eq!(
            connections_for(answer, After::CloseSoon, 2, "hello").await,
            2
        );
    }

    #[tokio::test]
    async fn an_answer_cut_short_is_a_body_error() {
        let Upstream { url, .. } = upstream(
            "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello",
            After::CloseSoon,
        )
        .await;
        let client = HttpClient::with_proxy(None).unwrap();
        let error = open(&client, &url).await.bytes().await.unwrap_err();
        assert!(matches!(error, HttpError::Body(_)), "{error:?}");
        assert!(
            error.to_string().contains("before the end of its answer"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn an_informational_head_before_the_answer_is_passed_over() {
        let answer = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        assert_eq!(connections_for(answer, After::KeepOpen, 2, "ok").await, 1);
    }

    /// An upstream that reads each request's body by its length and answers with the number
    /// of bytes it got and the sum of their values.
    async fn counting_upstream() -> String {
        one_connection("/count", |mut socket| async move {
            let mut seen = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let Some(end) = memchr::memmem::find(&seen, b"\r\n\r\n") else {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                    continue;
                };
                let head = String::from_utf8_lossy(&seen[..end]).to_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length: "))
                    .unwrap()
                    .parse()
                    .unwrap();
                while seen.len() < end + 4 + length {
                    let n = socket.read(&mut buf).await.unwrap();
                    assert!(n > 0, "the body was cut short");
                    seen.extend_from_slice(&buf[..n]);
                }
                let body: Vec<u8> = seen.drain(..end + 4 + length).skip(end + 4).collect();
                let sum: u64 = body.iter().map(|&b| u64::from(b)).sum();
                let answer = format!("{} {sum}", body.len());
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{answer}",
                    answer.len()
                );
                socket.write_all(response.as_bytes()).await.unwrap();
            }
        })
        .await
    }

    /// An upstream at the URL returned (ending in `path`) that hands its first connection to
    /// `serve`.
    async fn one_connection<F, Fut>(path: &str, serve: F) -> String
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}{path}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            serve(socket).await;
        });
        url
    }

    #[tokio::test]
    async fn a_body_larger_than_a_socket_takes_in_one_write_arrives_whole() {
        let url = counting_upstream().await;
        let client = HttpClient::with_proxy(None).unwrap();
        for size in [0, 10, 8 * 1024 * 1024 + 7] {
            let body: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let sum: u64 = body.iter().map(|&b| u64::from(b)).sum();
            let response = client
                .post(url.parse().unwrap(), HeaderMap::new(), body)
                .await
                .unwrap();
            let answer = response.bytes().await.unwrap();
            assert_eq!(answer, format!("{size} {sum}").as_bytes());
        }
    }

    #[tokio::test]
    async fn an_answer_sent_before_the_body_was_read_is_the_result() {
        // The upstream refuses the request from its head alone, and closes with the body
        // unread (so its kernel resets the connection under the client's write).
        let url = one_connection("/upload", |mut socket| async move {
            let mut seen = Vec::new();
            let mut buf = vec![0u8; 16 * 1024];
            while memchr::memmem::find(&seen, b"\r\n\r\n").is_none() {
                let n = socket.read(&mut buf).await.unwrap();
                seen.extend_from_slice(&buf[..n]);
            }
            let answer = "HTTP/1.1 413 Payload Too Large\r\ncontent-length: 8\r\n\r\ntoo big!";
            socket.write_all(answer.as_bytes()).await.unwrap();
        })
        .await;
        let client = HttpClient::with_proxy(None).unwrap();
        let response = client
            .post(
                url.parse().unwrap(),
                HeaderMap::new(),
                vec![7u8; 32 * 1024 * 1024],
            )
            .await
            .unwrap();
        assert_eq!(response.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(response.bytes().await.unwrap(), "too big!".as_bytes());
    }

    #[tokio::test]
    async fn a_large_body_is_read_in_growing_pieces() {
        const SIZE: usize = 4 * 1024 * 1024;
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {SIZE}\r\n\r\n{}",
            "x".repeat(SIZE)
        );
        let Upstream { url, .. } = upstream(answer.leak(), After::KeepOpen).await;
        let client = HttpClient::with_proxy(None).unwrap();
        let pieces: Vec<Bytes> = open(&client, &url)
            .await
            .bytes_stream()
            .map(|piece| piece.unwrap())
            .collect()
            .await;
        assert_eq!(pieces.iter().map(Bytes::len).sum::<usize>(), SIZE);
        // Reads of the first room alone would take 512.
        assert!(pieces.len() < 256, "{} reads", pieces.len());
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        drop(listener);
        let client = HttpClient::with_proxy(None).unwrap();
        let error = client
            .get(url.parse().unwrap(), HeaderMap::new())
            .await
            .err()
            .expect("nobody listens");
        assert!(error.is_connect(), "{error:?}");
        let message = crate::http_client::source_chain(&error);
        assert!(message.contains("refused"), "{message}");
    }
}
