//! Serving the HTTP API with connection hygiene: a cap on concurrent connections, a deadline
//! for a request's headers, an idle timeout, and a bounded graceful shutdown.
//!
//! axum's own `serve` gives hyper no timer, so a client that sends a header line now and then
//! (slowloris) holds its connection forever and a few thousand such clients exhaust the
//! process's file descriptors. Here hyper gets a timer and the limits in [`ConnLimits`].

use std::{
    future::Future,
    io,
    pin::{Pin, pin},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Body,
    extract::{ConnectInfo, Request},
};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto::Builder, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::Semaphore,
};
use tower::ServiceExt;

use crate::mtls::Peer;

/// Limits on the HTTP API's connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Connections served at once; one more is closed as soon as it is accepted.
    pub max_connections: usize,
    /// How long a client has to send a request's headers (HTTP/1), from the connection's start
    /// or the end of the previous response.
    pub header_read_timeout: Duration,
    /// How long a connection may carry no byte either way before it is closed. Longer than
    /// the longest long poll.
    pub idle_timeout: Duration,
    /// How long requests in flight may take to finish once the server is stopping.
    pub shutdown_grace: Duration,
}

impl Default for ConnLimits {
    /// 4,096 connections, 10 s for headers, 5 minutes idle, 25 s to drain at shutdown.
    fn default() -> Self {
        Self {
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(25),
        }
    }
}

/// Serves `router` on `listener` (plain TCP or [`crate::TlsListener`]) within `limits` until
/// `shutdown` completes, then drains in-flight requests for at most
/// [`ConnLimits::shutdown_grace`].
pub async fn serve<L>(
    mut listener: L,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: ConnLimits,
) -> io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: Into<Peer>,
{
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut refused = 0u64;
    let mut last_warning: Option<Instant> = None;
    let mut shutdown = pin!(shutdown);
    loop {
        let (io, addr) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            drop(io);
            refused += 1;
            if last_warning.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                tracing::warn!(
                    refused,
                    limit = limits.max_connections,
                    "connection limit reached; closing new connections"
                );
                refused = 0;
                last_warning = Some(Instant::now());
            }
            continue;
        };
        let peer: Peer = addr.into();
        let service = router.clone().map_request(move |req: Request<Incoming>| {
            let mut req = req.map(Body::new);
            req.extensions_mut().insert(ConnectInfo(peer.clone()));
            req
        });
        let activity = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let io = Watched {
            io,
            activity: Arc::clone(&activity),
            started,
        };
        let conn = builder
            .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
            .into_owned();
        let conn = graceful.watch(conn);
        let idle_timeout = limits.idle_timeout;
        tokio::spawn(async move {
            let idle = async {
                loop {
                    let last = Duration::from_millis(activity.load(Ordering::Relaxed));
                    let quiet = started.elapsed().saturating_sub(last);
                    if quiet >= idle_timeout {
                        return;
                    }
                    tokio::time::sleep(idle_timeout - quiet).await;
                }
            };
            tokio::select! {
                result = conn => if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                },
                () = idle => tracing::debug!("closing an idle connection"),
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace = ?limits.shutdown_grace,
            "requests still in flight at the end of the shutdown grace; closing them"
        );
    }
    Ok(())
}

/// A connection's I/O, noting when a byte last moved either way (milliseconds since
/// `started`).
struct Watched<T> {
    io: T,
    activity: Arc<AtomicU64>,
    started: Instant,
}

impl<T> Watched<T> {
    fn touch(&self) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.activity.store(now, Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
