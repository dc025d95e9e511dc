//! What a connection is doing, for its deadlines: whether a request is being handled, when the
//! request head the server is waiting for began to arrive, and since when the client has not
//! taken any of a response.
//!
//! hyper's own `header_read_timeout` starts when a connection becomes ready for a request
//! (accepted, or its last response sent) and is the idle timeout here. This adds the shorter
//! one, counted from the head's first byte: a client that has started a request must finish
//! its head within `header_read_timeout_secs`, however long it idled before. And a client that
//! stops reading a response (a full socket buffer: hyper's idle timer never starts) is cut off
//! after the idle timeout without progress.
//!
//! The stream wrapper ([`Paced`]), the service wrapper ([`PacedService`]) and the connection
//! task share one [`Pace`]; hyper polls all three from the connection's task, so the atomics
//! are never contended (they are atomics only because the task must be `Send`).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::response::Response;
use axum::Router;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// `head_started_ms` when no head is being waited on with bytes in hand.
const NO_HEAD: u64 = u64::MAX;

/// One connection's progress.
#[derive(Debug)]
pub(crate) struct Pace {
    accepted: Instant,
    /// Milliseconds after `accepted` when the first byte of the awaited request head arrived
    /// (the connection's acceptance for its first request), or [`NO_HEAD`].
    head_started_ms: AtomicU64,
    /// A request's head was read and its handler has not answered yet: bytes read now are
    /// its body, not a new head.
    in_request: AtomicBool,
    /// Milliseconds after `accepted` when a write first found the socket full and none has
    /// gone through since, or [`NO_HEAD`].
    write_stalled_ms: AtomicU64,
}

impl Pace {
    /// A connection accepted now: its first head is awaited from now on.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Pace {
            accepted: Instant::now(),
            head_started_ms: AtomicU64::new(0),
            in_request: AtomicBool::new(false),
            write_stalled_ms: AtomicU64::new(NO_HEAD),
        })
    }

    /// When the connection must be closed unless something changes: the head being received
    /// must be complete `head` after its first byte, a stalled write must move within `stall`.
    pub(crate) fn deadline(&self, head: Duration, stall: Duration) -> Option<Instant> {
        let at = |ms: u64, limit: Duration| match ms {
            NO_HEAD => None,
            ms => Some(self.accepted + Duration::from_millis(ms) + limit),
        };
        let head = at(self.head_started_ms.load(Relaxed), head);
        let write = at(self.write_stalled_ms.load(Relaxed), stall);
        match (head, write) {
            (Some(h), Some(w)) => Some(h.min(w)),
            (h, w) => h.or(w),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.accepted.elapsed().as_millis()).unwrap_or(NO_HEAD - 1)
    }

    fn bytes_read(&self) {
        if !self.in_request.load(Relaxed) && self.head_started_ms.load(Relaxed) == NO_HEAD {
            self.head_started_ms.store(self.now_ms(), Relaxed);
        }
    }

    fn write_polled<T>(&self, polled: &Poll<io::Result<T>>) {
        let stalled = self.write_stalled_ms.load(Relaxed);
        match polled {
            Poll::Pending if stalled == NO_HEAD => {
                self.write_stalled_ms.store(self.now_ms(), Relaxed)
            }
            Poll::Ready(_) if stalled != NO_HEAD => self.write_stalled_ms.store(NO_HEAD, Relaxed),
            _ => {}
        }
    }

    fn request_started(&self) {
        self.in_request.store(true, Relaxed);
        self.head_started_ms.store(NO_HEAD, Relaxed);
    }

    fn request_answered(&self) {
        self.in_request.store(false, Relaxed);
    }
}

/// A connection's stream, noting when bytes arrive.
#[derive(Debug)]
pub(crate) struct Paced<S> {
    stream: S,
    pace: Arc<Pace>,
}

impl<S> Paced<S> {
    pub(crate) fn new(stream: S, pace: Arc<Pace>) -> Self {
        Paced { stream, pace }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Paced<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.pace.bytes_read();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Paced<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.pace.write_polled(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.pace.write_polled(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The application as one connection's hyper service: each request gets the peer's address
/// (`ConnectInfo<SocketAddr>`, as `into_make_service_with_connect_info` gave it) and marks the
/// connection busy until it is answered.
#[derive(Debug, Clone)]
pub(crate) struct PacedService {
    router: Router,
    peer: SocketAddr,
    pace: Arc<Pace>,
}

impl PacedService {
    pub(crate) fn new(router: Router, peer: SocketAddr, pace: Arc<Pace>) -> Self {
        PacedService { router, peer, pace }
    }
}

impl<B> hyper::service::Service<Request<B>> for PacedService
where
    B: hyper::body::Body<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, mut req: Request<B>) -> Answer {
        self.pace.request_started();
        req.extensions_mut().insert(ConnectInfo(self.peer));
        // The router is always ready (axum's `Router::poll_ready`); a clone is an `Arc`'s.
        let inner = tower::Service::call(&mut self.router.clone(), req);
        Answer {
            inner,
            pace: Arc::clone(&self.pace),
        }
    }
}

/// The router's answer to one request; marks the connection free for its next head.
pub(crate) struct Answer {
    inner: axum::routing::future::RouteFuture<Infallible>,
    pace: Arc<Pace>,
}

impl Future for Answer {
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let answered = ready!(Pin::new(&mut self.inner).poll(cx));
        self.pace.request_answered();
        Poll::Ready(answered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const HEAD: Duration = Duration::from_secs(10);
    const STALL: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn a_head_is_timed_from_its_first_byte_and_not_while_a_request_is_handled() {
        let pace = Pace::new();
        // A new connection: its first head is awaited from its acceptance.
        assert_eq!(pace.deadline(HEAD, STALL), Some(pace.accepted + HEAD));
        pace.request_started();
        assert_eq!(pace.deadline(HEAD, STALL), None);
        // The body: not a head.
        pace.bytes_read();
        assert_eq!(pace.deadline(HEAD, STALL), None);
        pace.request_answered();
        assert_eq!(pace.deadline(HEAD, STALL), None, "idle: hyper's timer");
        tokio::time::sleep(Duration::from_millis(20)).await;
        pace.bytes_read();
        let d = pace.deadline(HEAD, STALL).unwrap();
        assert!(
            d >= pace.accepted + Duration::from_millis(20) + HEAD,
            "{d:?}"
        );
        // More bytes of the same head do not move it.
        tokio::time::sleep(Duration::from_millis(20)).await;
        pace.bytes_read();
        assert_eq!(pace.deadline(HEAD, STALL), Some(d));
    }

    #[tokio::test]
    async fn a_response_the_client_does_not_take_is_timed_until_it_moves() {
        let pace = Pace::new();
        pace.request_started();
        let (ours, mut theirs) = tokio::io::duplex(64);
        let mut paced = Paced::new(ours, Arc::clone(&pace));
        // 64 bytes fit; the rest waits for the client.
        paced.write_all(&[b'x'; 64]).await.unwrap();
        assert_eq!(pace.deadline(HEAD, STALL), None);
        let blocked =
            tokio::time::timeout(Duration::from_millis(50), paced.write_all(b"more")).await;
        assert!(blocked.is_err(), "the write waits");
        let stalled = pace
            .deadline(HEAD, STALL)
            .expect("a stalled write is timed");
        assert!(stalled <= Instant::now() + STALL);
        let mut buf = [0u8; 64];
        theirs.read_exact(&mut buf).await.unwrap();
        paced.write_all(b"more").await.unwrap();
        assert_eq!(pace.deadline(HEAD, STALL), None, "progress clears it");
    }
}
