//! Thread per core: one single-threaded runtime per core, as nginx runs one process per core.
//!
//! A connection, the tasks its requests spawn, the upstream connections they use and their
//! timers all live on one thread, so a request never wakes another core and no scheduler
//! moves work between threads. Worker 0, the thread [`Server::run`](super::Server::run) runs
//! on, accepts every connection. It keeps a connection unless another worker has fewer open,
//! and then hands it to the one with the fewest, so a lone client is served without a hop.
//! Background tasks (the ledger writer, reloads, expiry) run on worker 0.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

use crate::worker::{self, Worker};

/// The router, made into a service once and shared by every worker.
pub(super) type Routes =
    axum::routing::IntoMakeService<super::request_id::WithRequestId<axum::Router>>;

/// A connection as handed from worker 0 to another.
type Handoff = (std::net::TcpStream, SocketAddr);

/// The workers besides worker 0, and what worker 0 knows of them.
pub(super) struct Workers {
    /// Connections open on worker 0.
    open: Arc<AtomicUsize>,
    others: Vec<Other>,
}

struct Other {
    handoff: mpsc::UnboundedSender<Handoff>,
    open: Arc<AtomicUsize>,
    /// Resolves when the worker has stopped serving: every connection of its own closed.
    drained: Option<oneshot::Receiver<()>>,
    /// Ends the worker's runtime when dropped. The runtime outlives serving because resources
    /// made on it (database connections, say) may serve the others until the ledger is
    /// written out.
    _exit: oneshot::Sender<()>,
}

impl Workers {
    /// Marks the calling thread as worker 0 of `count` and starts the others, each serving
    /// `routes` (for the listener at `local`) until `stop` turns true.
    pub(super) fn start(
        count: usize,
        local: SocketAddr,
        routes: &Routes,
        stop: &watch::Receiver<bool>,
    ) -> io::Result<Workers> {
        let count = count.max(1);
        worker::set_current(Worker { index: 0, count });
        let others = (1..count)
            .map(|index| Other::start(Worker { index, count }, local, routes.clone(), stop.clone()))
            .collect::<io::Result<_>>()?;
        Ok(Workers {
            open: Arc::new(AtomicUsize::new(0)),
            others,
        })
    }

    /// Worker 0's listener: accepts on `listener` and spreads the connections.
    pub(super) fn balancer(&self, listener: TcpListener) -> Balancer {
        Balancer {
            listener,
            open: self.open.clone(),
            others: self
                .others
                .iter()
                .map(|other| (other.handoff.clone(), other.open.clone()))
                .collect(),
        }
    }

    /// Resolves once every other worker has stopped serving.
    pub(super) async fn drained(&mut self) {
        for other in &mut self.others {
            if let Some(drained) = other.drained.as_mut() {
                let _ = drained.await;
                other.drained = None;
            }
        }
    }

    /// Ends the other workers' runtimes, cancelling what still runs there (connections kept
    /// open past the grace period). Their threads end on their own.
    pub(super) fn stop(self) {
        drop(self);
    }
}

impl Other {
    fn start(
        worker: Worker,
        local: SocketAddr,
        routes: Routes,
        mut stop: watch::Receiver<bool>,
    ) -> io::Result<Other> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (handoff, connections) = mpsc::unbounded_channel();
        let open = Arc::new(AtomicUsize::new(0));
        let (drained_tx, drained) = oneshot::channel();
        let (exit, exited) = oneshot::channel::<()>();
        let listener = Handed {
            connections,
            open: open.clone(),
            local,
        };
        std::thread::Builder::new()
            .name(format!("worker-{}", worker.index))
            .spawn(move || {
                worker::set_current(worker);
                runtime.block_on(async move {
                    let serving = async move {
                        let stopping = async move {
                            let _ = stop.wait_for(|stop| *stop).await;
                        };
                        let _ = axum::serve(listener, routes)
                            .with_graceful_shutdown(stopping)
                            .await;
                        let _ = drained_tx.send(());
                        std::future::pending::<()>().await;
                    };
                    tokio::select! {
                        () = serving => {}
                        _ = exited => {}
                    }
                });
                runtime.shutdown_background();
            })?;
        Ok(Other {
            handoff,
            open,
            drained: Some(drained),
            _exit: exit,
        })
    }
}

/// Worker 0's listener: accepts every connection, serving those it keeps and handing the
/// rest to the other workers.
pub(super) struct Balancer {
    listener: TcpListener,
    open: Arc<AtomicUsize>,
    others: Vec<(mpsc::UnboundedSender<Handoff>, Arc<AtomicUsize>)>,
}

impl axum::serve::Listener for Balancer {
    type Io = Counted;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Counted, SocketAddr) {
        loop {
            let (tcp, addr) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    pause_after(e).await;
                    continue;
                }
            };
            // Small writes (stream chunks) must go out at once, not wait for Nagle.
            let _ = tcp.set_nodelay(true);
            let here = self.open.load(Ordering::Relaxed);
            let quieter = self
                .others
                .iter()
                .map(|(handoff, open)| (handoff, open, open.load(Ordering::Relaxed)))
                .filter(|(_, _, open)| *open < here)
                .min_by_key(|(_, _, open)| *open);
            let Some((handoff, open, _)) = quieter else {
                return (Counted::new(tcp, &self.open), addr);
            };
            let tcp = match tcp.into_std() {
                Ok(tcp) => tcp,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot hand a connection to another worker");
                    continue;
                }
            };
            open.fetch_add(1, Ordering::Relaxed);
            if let Err(mpsc::error::SendError((tcp, addr))) = handoff.send((tcp, addr)) {
                // That worker is gone (it panicked): serve the connection here.
                open.fetch_sub(1, Ordering::Relaxed);
                if let Ok(tcp) = TcpStream::from_std(tcp) {
                    return (Counted::new(tcp, &self.open), addr);
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// Another worker's listener: the connections worker 0 hands it.
struct Handed {
    connections: mpsc::UnboundedReceiver<Handoff>,
    /// Counted by worker 0 when it hands a connection over.
    open: Arc<AtomicUsize>,
    /// Worker 0's listening address.
    local: SocketAddr,
}

impl axum::serve::Listener for Handed {
    type Io = Counted;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Counted, SocketAddr) {
        loop {
            let Some((tcp, addr)) = self.connections.recv().await else {
                // Worker 0 stopped accepting; the shutdown signal ends this worker's serving.
                return std::future::pending().await;
            };
            match TcpStream::from_std(tcp) {
                Ok(tcp) => {
                    return (
                        Counted {
                            tcp,
                            open: self.open.clone(),
                        },
                        addr,
                    )
                }
                Err(e) => {
                    self.open.fetch_sub(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "cannot take a connection from worker 0");
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// After a failed accept: a connection that went away before it was accepted is nothing to
/// wait for; anything else (out of file descriptors, say) waits a second before trying again.
async fn pause_after(e: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "cannot accept connections; trying again in a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// A connection that counts among its worker's open connections until it is dropped.
pub(super) struct Counted {
    tcp: TcpStream,
    open: Arc<AtomicUsize>,
}

impl Counted {
    fn new(tcp: TcpStream, open: &Arc<AtomicUsize>) -> Counted {
        open.fetch_add(1, Ordering::Relaxed);
        Counted {
            tcp,
            open: open.clone(),
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}
