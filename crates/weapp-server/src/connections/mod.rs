//! Accepting and serving HTTP/1.1 connections so that no host can hold the server: every
//! connection must send a complete request head within `header_read_timeout_secs` of its first
//! byte (and of its acceptance), an idle keep-alive connection is closed after
//! `connection_idle_timeout_secs`, connections are capped for the process and per source
//! address ([`limits`]), and running out of file descriptors slows accepting down instead of
//! stopping it.
//!
//! The accept loop admits or refuses each connection and spawns one task per admitted one. On
//! shutdown it stops accepting, asks every connection to finish (hyper closes idle ones at
//! once and lets a request in progress complete), and returns when the last one has closed.

pub mod limits;
mod pace;

use std::future::{poll_fn, Future};
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

pub use self::limits::ConnectionLimits;
use self::limits::{Admission, Permit, Refusal};
use self::pace::{Pace, Paced, PacedService};
use crate::config::Config;
use crate::net::IpNet;

/// How long the accept loop pauses after an error that is not one connection's (no descriptor
/// left, no memory): the pending connections wait in the kernel's backlog meanwhile, and the
/// loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// At most one warning per this long for each kind of trouble (accept errors, refusals); the
/// next one says how many were not logged.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// What a refused connection is sent, when its socket takes it without waiting.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 94\r\n\r\n{\"error\":{\"code\":\"too_many_connections\",\"message\":\"too many connections; try again shortly\"}}\n";

/// The timeouts and caps of one server.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// A request head must be complete this long after its first byte (and after acceptance).
    pub header_read_timeout: Duration,
    /// A connection waiting for a request head is closed after this long.
    pub idle_timeout: Duration,
    /// The caps.
    pub limits: ConnectionLimits,
    /// Sources exempt from the per-source cap (the trusted proxies).
    pub exempt: Vec<IpNet>,
}

impl Settings {
    /// From the configuration, the trusted proxies and the process's open-file limit.
    pub(crate) fn new(config: &Config, trusted_proxies: &[IpNet]) -> Self {
        Settings {
            header_read_timeout: Duration::from_secs(config.header_read_timeout_secs),
            idle_timeout: Duration::from_secs(config.connection_idle_timeout_secs),
            limits: ConnectionLimits::from_config(config, descriptor_limit()),
            exempt: trusted_proxies.to_vec(),
        }
    }
}

/// The soft limit on open files of this process (`None`: unlimited, or not a Unix).
pub fn descriptor_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        rlimit::getrlimit(rlimit::Resource::NOFILE)
            .ok()
            .map(|(soft, _)| soft)
            .filter(|soft| *soft != rlimit::INFINITY)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Raises this process's soft limit on open files to its hard limit, where the system allows
/// it; `weapp serve` does so at start (a library embedding the server decides for itself).
/// Returns the limit before and after.
///
/// # Errors
/// The limit cannot be read or set.
pub fn raise_descriptor_limit() -> std::io::Result<(u64, u64)> {
    #[cfg(unix)]
    {
        let (before, _) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
        let after = rlimit::increase_nofile_limit(u64::MAX)?;
        Ok((before, after))
    }
    #[cfg(not(unix))]
    {
        Err(std::io::Error::other("no open-file limit on this system"))
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then lets the connections finish
/// their requests and returns once they are all closed.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let admission = Admission::new(settings.limits, settings.exempt.clone());
    let mut http = hyper::server::conn::http1::Builder::new();
    // hyper's timer runs from the moment a connection is ready for a request: the idle
    // timeout. The header timeout counted from a head's first byte is the connection task's.
    http.timer(TokioTimer::new())
        .header_read_timeout(settings.idle_timeout)
        // A request head is small here (no cookies): 64 KiB per connection at most, not
        // hyper's ~400 KiB, is what a slow head can make the server hold.
        .max_buf_size(MAX_HEAD_BUFFER);
    let http = Arc::new(http);
    let timeouts = (settings.header_read_timeout, settings.idle_timeout);
    // `true` once the server stops: every connection then finishes its request and closes.
    let (stop_tx, stop_rx) = watch::channel(false);
    // Each connection task holds a receiver: all dropped = all connections closed.
    let (closed_tx, closed_rx) = watch::channel(());
    let mut accept_errors = Throttled::new();
    let mut refusals = Throttled::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // EMFILE/ENFILE and the like: the connections wait in the backlog until
                // descriptors come back (closed idle or slow connections give them back).
                if let Some(unlogged) = accept_errors.due() {
                    tracing::warn!(error = %e, unlogged, "cannot accept connections; retrying shortly (see max_connections and the open-file limit)");
                }
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                }
            }
        };
        let permit = match admission.admit(peer.ip()) {
            Ok(p) => p,
            Err(refusal) => {
                refuse(&stream);
                if let Some(unlogged) = refusals.due() {
                    let limits = settings.limits;
                    match refusal {
                        Refusal::Full => tracing::warn!(
                            max_connections = limits.max,
                            unlogged,
                            "connection refused: the server holds its maximum of connections"
                        ),
                        Refusal::SourceFull => tracing::warn!(
                            source = %source_of(peer.ip()),
                            max_connections_per_ip = limits.per_ip.unwrap_or(0),
                            unlogged,
                            "connection refused: its source address holds its maximum of connections"
                        ),
                    }
                }
                continue;
            }
        };
        tokio::spawn(connection(
            stream,
            peer,
            app.clone(),
            Arc::clone(&http),
            timeouts,
            stop_rx.clone(),
            Open {
                _permit: permit,
                _closed: closed_rx.clone(),
            },
        ));
    }
    drop(listener);
    drop(closed_rx);
    let _ = stop_tx.send(true);
    tracing::debug!(
        open = closed_tx.receiver_count(),
        "not accepting; waiting for the open connections to finish"
    );
    // A client that never reads its response would hold the stop for an idle timeout or more:
    // past the grace (under systemd's default 30-s stop timeout), the rest are abandoned.
    if tokio::time::timeout(SHUTDOWN_GRACE, closed_tx.closed())
        .await
        .is_err()
    {
        tracing::warn!(
            open = closed_tx.receiver_count(),
            grace_secs = SHUTDOWN_GRACE.as_secs(),
            "connections still open after the shutdown grace; abandoning them"
        );
    }
}

/// How long a stopping server waits for its open connections to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// The most a connection buffers of a request head.
const MAX_HEAD_BUFFER: usize = 64 * 1024;

/// What a connection task holds while its connection is open.
struct Open {
    /// Its place under the caps.
    _permit: Permit,
    /// Tells the accept loop, when dropped, that one connection fewer is open.
    _closed: watch::Receiver<()>,
}

/// Serves one connection until it closes, its head is late (`timeouts.0` after its first
/// byte), it does not take its response (nothing written for `timeouts.1`), or the server has
/// stopped and its last request is answered.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    http: Arc<hyper::server::conn::http1::Builder>,
    (header_timeout, stall_timeout): (Duration, Duration),
    mut stop: watch::Receiver<bool>,
    open: Open,
) {
    let pace = Pace::new();
    let reset = Arc::new(AtomicBool::new(false));
    let io = TokioIo::new(Paced::new(
        ResetOnDrop {
            stream,
            reset: Arc::clone(&reset),
        },
        Arc::clone(&pace),
    ));
    let mut conn = pin!(http.serve_connection(io, PacedService::new(app, peer, Arc::clone(&pace))));
    let mut stopping = pin!(stop.wait_for(|stopped| *stopped));
    let mut stopped = false;
    let mut armed: Option<Instant> = None;
    let mut late = pin!(tokio::time::sleep(header_timeout));
    // One poll function rather than `select!`: the deadline is read again after every poll of
    // the connection, whose reads and writes are what set it.
    let outcome = poll_fn(|cx| {
        if !stopped && stopping.as_mut().poll(cx).is_ready() {
            stopped = true;
            conn.as_mut().graceful_shutdown();
        }
        if let Poll::Ready(served) = conn.as_mut().poll(cx) {
            return Poll::Ready(served.map_err(Some));
        }
        if let Some(deadline) = pace.deadline(header_timeout, stall_timeout) {
            if armed != Some(deadline) {
                late.as_mut().reset(deadline);
                armed = Some(deadline);
            }
            if late.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(None));
            }
        }
        Poll::Pending
    })
    .await;
    match outcome {
        Ok(()) => {}
        Err(None) => {
            // Reset rather than close: a close would leave what the peer does not read queued
            // in the kernel (FIN-WAIT-1) for minutes, outside every cap.
            reset.store(true, Ordering::Relaxed);
            tracing::debug!(peer = %peer, "connection closed: a request head or the reading of a response took too long")
        }
        Err(Some(e)) => tracing::debug!(peer = %peer, error = %e, "connection ended with an error"),
    }
    drop(open);
}

/// A connection's socket, reset (`SO_LINGER` 0) rather than closed when it is dropped after
/// `reset` was set.
struct ResetOnDrop {
    stream: TcpStream,
    reset: Arc<AtomicBool>,
}

impl Drop for ResetOnDrop {
    fn drop(&mut self) {
        if self.reset.load(Ordering::Relaxed) {
            let _ = socket2::SockRef::from(&self.stream).set_linger(Some(Duration::ZERO));
        }
    }
}

impl tokio::io::AsyncRead for ResetOnDrop {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for ResetOnDrop {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Tells a refused connection why, if its socket takes the answer at once, and closes it.
fn refuse(stream: &TcpStream) {
    let _ = stream.try_write(REFUSED);
}

/// A source as the caps count it: an IPv6 address by its /64.
fn source_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        ip => ip.to_canonical().to_string(),
    }
}

/// Errors of one connection that was gone before it was accepted: nothing to wait for.
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// Lets one warning through per [`LOG_EVERY`], counting those held back.
struct Throttled {
    last: Option<std::time::Instant>,
    held_back: u64,
}

impl Throttled {
    fn new() -> Self {
        Throttled {
            last: None,
            held_back: 0,
        }
    }

    /// `Some(how many were held back since the last one)` when a warning may be logged now.
    fn due(&mut self) -> Option<u64> {
        let now = std::time::Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            self.held_back += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held_back))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_a_well_formed_response() {
        let text = std::str::from_utf8(REFUSED).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "too_many_connections");
    }

    #[test]
    fn sources_are_named_as_they_are_counted() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(source_of(ip("192.0.2.7")), "192.0.2.7");
        assert_eq!(source_of(ip("::ffff:192.0.2.7")), "192.0.2.7");
        assert_eq!(source_of(ip("2001:db8:1:2:3::9")), "2001:db8:1:2::/64");
    }

    #[test]
    fn warnings_are_throttled_and_count_what_they_held_back() {
        let mut t = Throttled::new();
        assert_eq!(t.due(), Some(0));
        assert_eq!(t.due(), None);
        assert_eq!(t.due(), None);
        t.last = Some(std::time::Instant::now() - LOG_EVERY);
        assert_eq!(t.due(), Some(2));
    }
}
