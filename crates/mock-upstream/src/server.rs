//! The accept loop and per-request handling: record, pick a reply, send it.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;

use crate::script::{Action, Answer, Payload, Reply};
use crate::{anthropic, gemini, mcp, openai, Options, Received};

type Body = UnsyncBoxBody<Bytes, io::Error>;

/// State shared by the handle and every connection task.
#[derive(Debug)]
pub(crate) struct Shared {
    options: Options,
    queue: Mutex<VecDeque<Reply>>,
    received: Mutex<Vec<Received>>,
    count: AtomicUsize,
    /// Numbers response ids (`chatcmpl-mock-N`) so they are unique per server.
    ids: AtomicU64,
}

impl Shared {
    pub(crate) fn new(options: Options) -> Shared {
        Shared {
            options,
            queue: Mutex::default(),
            received: Mutex::default(),
            count: AtomicUsize::new(0),
            ids: AtomicU64::new(0),
        }
    }

    pub(crate) fn enqueue(&self, reply: Reply) {
        lock(&self.queue).push_back(reply);
    }

    pub(crate) fn received(&self) -> Vec<Received> {
        lock(&self.received).clone()
    }

    pub(crate) fn request_count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub(crate) fn clear(&self) {
        lock(&self.queue).clear();
        lock(&self.received).clear();
        self.count.store(0, Ordering::Relaxed);
    }

    fn record(&self, request: Received) {
        self.count.fetch_add(1, Ordering::Relaxed);
        if self.options.record {
            lock(&self.received).push(request);
        }
    }

    fn next_reply(&self) -> Option<Reply> {
        lock(&self.queue).pop_front()
    }
}

// A panicking test thread must not wedge the mock for the other tests sharing it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Binds with a deep backlog so benchmark bursts of thousands of connects are not refused.
pub(crate) fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Accepts until `stop` turns true or its sender (the last handle) is dropped.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    // The auto builder speaks HTTP/1.1 with keep-alive, and h2c when the client opens with the
    // HTTP/2 preface (prior knowledge).
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopped(&mut stop) => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Usually out of file descriptors under load: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // Streams are written event by event; Nagle would batch them and skew latencies.
        let _ = stream.set_nodelay(true);
        let builder = Arc::clone(&builder);
        let shared = Arc::clone(&shared);
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| handle(Arc::clone(&shared), request));
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                () = stopped(&mut stop) => {}
            }
        });
    }
}

/// Resolves once the handle asks to stop or is gone (the sender dropped).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send, so it must not outlive this function.
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// Answers one request. An `Err` makes hyper close the connection without a response
/// (on HTTP/2 it resets just that stream).
async fn handle(shared: Arc<Shared>, request: Request<Incoming>) -> io::Result<Response<Body>> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.map_err(io::Error::other)?.to_bytes();
    let method = parts.method.clone();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().map(str::to_owned);
    shared.record(Received {
        method: parts.method.to_string(),
        path: path.clone(),
        query: query.clone(),
        headers: parts.headers.clone(),
        body: body.clone(),
    });

    let reply = shared.next_reply().unwrap_or_else(Reply::default_behaviour);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let answer = match reply.action {
        Action::Answer(answer) => answer,
        Action::Default => {
            if !shared.options.latency.is_zero() {
                tokio::time::sleep(shared.options.latency).await;
            }
            if path.starts_with("/v1/messages") {
                anthropic::answer(&method, &path, &parts.headers, &body, &shared.ids)
            } else if method == http::Method::POST && path == "/v1/traces" {
                // An OTLP/HTTP collector taking every span batch: the gateway's trace export
                // in the benchmark. An empty ExportTraceServiceResponse is zero bytes.
                Answer::full(http::StatusCode::OK, "application/x-protobuf", Bytes::new())
            } else if mcp::handles(&path) {
                mcp::answer(&method, &parts.headers, &body, &shared.ids)
            } else if gemini::handles(&path) {
                gemini::answer(&method, &path, query.as_deref(), &body, &shared.ids)
            } else {
                openai::answer(&method, &path, &body, &shared.ids)
            }
        }
        Action::DropConnection => return Err(io::Error::other("scripted: drop connection")),
        Action::Hang => std::future::pending().await,
    };

    let Answer {
        status,
        mut headers,
        payload,
    } = answer;
    let body = match payload {
        Payload::Full(bytes) => Full::new(bytes)
            .map_err(|never| match never {})
            .boxed_unsync(),
        Payload::Events(events) => {
            let gap = if reply.chunk_delay.is_zero() {
                shared.options.event_gap
            } else {
                reply.chunk_delay
            };
            event_body(events, gap, reply.cut_after)
        }
    };
    headers.extend(reply.headers);
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}

/// Streams `events`, pausing `gap` between them; with `cut_after`, fails the body after that
/// many events so hyper aborts the connection mid-stream instead of ending it cleanly.
fn event_body(events: Vec<Bytes>, gap: Duration, cut_after: Option<usize>) -> Body {
    let cut_at = cut_after.map(|n| n.min(events.len()));
    let state = (events.into_iter(), 0usize, false);
    let frames = stream::unfold(state, move |(mut events, sent, cut)| async move {
        if cut {
            return None;
        }
        if cut_at == Some(sent) {
            // Hyper drops its write buffer when the body fails; returning Pending once makes it
            // flush the events already produced, so the client really receives them.
            tokio::task::yield_now().await;
            let err = io::Error::other("scripted: stream cut");
            return Some((Err(err), (events, sent, true)));
        }
        let event = events.next()?;
        if sent > 0 && !gap.is_zero() {
            tokio::time::sleep(gap).await;
        }
        Some((Ok(Frame::data(event)), (events, sent + 1, false)))
    });
    StreamBody::new(frames).boxed_unsync()
}
