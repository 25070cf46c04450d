//! Serving one plain-text HTTP/1 connection without holding buffers while it is idle.
//!
//! hyper keeps a connection's state for as long as the connection lives: an 8 KiB read
//! buffer, the write buffer, the dispatcher, and (with a header-read timeout) a timer that is
//! armed again for every request. Idle keep-alive clients are most of a busy gateway's
//! connections, and with 10,000 of them that state is most of its memory. nginx frees a
//! keep-alive connection's buffers between requests; this loop does the same:
//!
//! - A connection that stayed quiet for a whole tick (about a second: no bytes read, no request
//!   waiting for its response head, no request head arriving) is *parked*: hyper is asked to
//!   finish with it ([`http1::Connection::graceful_shutdown`], which closes an idle HTTP/1
//!   connection at once) and hands the socket back without closing it. The parked connection
//!   holds the socket only, and waits until it is readable.
//! - When bytes arrive, a new hyper connection takes the socket over, with any bytes the
//!   previous one had read but not used.
//! - The same tick cuts off request heads that take longer than the header-read timeout
//!   (within a tick of it), so no timer is armed per request; a parked connection is closed
//!   after the keep-alive timeout.
//!
//! Connections that open with the HTTP/2 preface are handed back to the caller (served by the
//! protocol-detecting builder, not parked).

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Body;
use bytes::{Buf, Bytes, BytesMut};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// How often a connection being served checks whether it went idle or is too slow sending a
/// request head.
pub(crate) const TICK: Duration = Duration::from_secs(1);

/// The first bytes of an HTTP/2 connection with prior knowledge.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long a client may stay silent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    /// From the first byte of a request head (or from accepting the connection) to its end.
    pub(crate) header_read: Duration,
    /// Between requests.
    pub(crate) keep_alive: Duration,
}

/// What a connection's reads and requests tell its driver.
///
/// Everything happens on the connection's task, one poll at a time (the reads, the request
/// futures, the ticks), so plain loads and stores suffice; the fields are atomics only because
/// the task must be `Send`.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    /// Ticks counted by the driver.
    ticks: AtomicU32,
    /// Reads that returned data.
    reads: AtomicU32,
    /// Requests whose response head is not ready yet.
    pending: AtomicU32,
    /// 1 + the tick at which the bytes of a request head started to arrive; 0: none is.
    head_since: AtomicU32,
}

impl Activity {
    fn on_read(&self) {
        self.reads.store(self.reads.load(Relaxed).wrapping_add(1), Relaxed);
        if self.pending.load(Relaxed) == 0 && self.head_since.load(Relaxed) == 0 {
            self.head_since.store(self.ticks.load(Relaxed) + 1, Relaxed);
        }
    }

    /// A request head was read: the request is now waiting for its response head.
    pub(crate) fn request_started(&self) {
        self.head_since.store(0, Relaxed);
        self.pending.store(self.pending.load(Relaxed) + 1, Relaxed);
    }

    /// A request's response head is ready (its body may still be streaming).
    pub(crate) fn response_ready(&self) {
        self.pending.store(self.pending.load(Relaxed).saturating_sub(1), Relaxed);
    }

    fn tick(&self) -> u32 {
        let t = self.ticks.load(Relaxed).wrapping_add(1);
        self.ticks.store(t, Relaxed);
        t
    }
}

/// The socket as hyper sees it: bytes left over by the previous hyper connection first, and
/// every read reported to the [`Activity`].
struct Io {
    stream: TcpStream,
    leftover: Bytes,
    activity: Arc<Activity>,
}

impl AsyncRead for Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.leftover.is_empty() {
            let n = this.leftover.len().min(buf.remaining());
            buf.put_slice(&this.leftover[..n]);
            this.leftover.advance(n);
            this.activity.on_read();
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.stream).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            this.activity.on_read();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// How [`serve`] ended.
pub(crate) enum Served {
    /// The connection is closed (or being closed): by the client, after an error, a timeout,
    /// or at shutdown.
    Closed,
    /// The connection opens with the HTTP/2 preface: serve it with an HTTP/2-capable builder.
    NotHttp1(TcpStream),
}

/// Serves `stream` as HTTP/1.1 with `builder` and a service made by `make_service` for each
/// stretch between parkings (the service reports to the [`Activity`] it is given), until the
/// client closes, a timeout, or `stop` turns true (then in-flight requests finish first).
pub(crate) async fn serve<S, F>(
    mut stream: TcpStream,
    builder: &http1::Builder,
    make_service: F,
    timeouts: Timeouts,
    mut stop: watch::Receiver<bool>,
) -> Served
where
    F: Fn(Arc<Activity>) -> S,
    S: hyper::service::Service<http::Request<Incoming>, Response = http::Response<Body>, Error = Infallible> + Unpin,
    S::Future: Unpin,
{
    let activity = Arc::new(Activity::default());
    let header_ticks = ticks(timeouts.header_read);
    let mut leftover = Bytes::new();
    let mut fresh = true;
    loop {
        if fresh {
            // Just accepted: wait for the first bytes under the header-read timeout and look
            // at them without taking them.
            let mut first = [0u8; 24];
            let peeked = tokio::select! {
                biased;
                _ = stop.changed() => return Served::Closed,
                r = stream.peek(&mut first) => r,
                () = tokio::time::sleep(timeouts.header_read) => return Served::Closed,
            };
            match peeked {
                Ok(n) if n > 0 && H2_PREFACE.starts_with(&first[..n]) => return Served::NotHttp1(stream),
                Ok(n) if n > 0 => {}
                _ => return Served::Closed,
            }
            fresh = false;
        } else if leftover.is_empty() {
            // Parked: nothing but the socket until the client sends (or closes).
            tokio::select! {
                biased;
                _ = stop.changed() => return Served::Closed,
                r = stream.readable() => if r.is_err() { return Served::Closed },
                () = tokio::time::sleep(timeouts.keep_alive) => return Served::Closed,
            }
        }
        let io = TokioIo::new(Io { stream, leftover, activity: activity.clone() });
        // Boxed: a parked connection's task then holds a pointer, not hyper's whole state.
        let mut conn = Box::new(builder.serve_connection(io, make_service(activity.clone())));
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + TICK, TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seen_reads = activity.reads.load(Relaxed);
        let mut parking = false;
        let mut stopping = false;
        let done = loop {
            tokio::select! {
                biased;
                r = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)) => break r,
                _ = ticker.tick() => {
                    let now = activity.tick();
                    if parking || stopping {
                        continue;
                    }
                    if stop.has_changed().unwrap_or(true) {
                        // Shutdown: in-flight requests finish, then the connection closes.
                        Pin::new(&mut *conn).graceful_shutdown();
                        stopping = true;
                        continue;
                    }
                    let head_since = activity.head_since.load(Relaxed);
                    if head_since != 0 && now.saturating_sub(head_since) >= header_ticks {
                        tracing::debug!("request head not received within {:?}: connection closed", timeouts.header_read);
                        return Served::Closed;
                    }
                    let reads = activity.reads.load(Relaxed);
                    if reads == seen_reads && head_since == 0 && activity.pending.load(Relaxed) == 0 {
                        // Idle for a whole tick: hyper closes its side of an idle connection at
                        // once (a response still streaming finishes first) and returns the socket.
                        Pin::new(&mut *conn).graceful_shutdown();
                        parking = true;
                    }
                    seen_reads = reads;
                }
            }
        };
        let parts = conn.into_parts();
        let io = parts.io.into_inner();
        stream = io.stream;
        if done.is_err() || !parking || stopping {
            // Closed by hyper (the client closed, `Connection: close`, a malformed request
            // already answered), or shutting down: close our side too.
            let _ = tokio::time::timeout(TICK, stream.shutdown()).await;
            return Served::Closed;
        }
        // Bytes hyper read but did not use (a pipelined request) go to the next connection.
        leftover = match (parts.read_buf.is_empty(), io.leftover.is_empty()) {
            (true, _) => io.leftover,
            (false, true) => parts.read_buf,
            (false, false) => {
                let mut b = BytesMut::with_capacity(parts.read_buf.len() + io.leftover.len());
                b.extend_from_slice(&parts.read_buf);
                b.extend_from_slice(&io.leftover);
                b.freeze()
            }
        };
    }
}

/// Whole ticks in `d` (at least one).
fn ticks(d: Duration) -> u32 {
    u32::try_from(d.as_millis().div_ceil(TICK.as_millis())).unwrap_or(u32::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_starts_only_between_requests() {
        let a = Activity::default();
        a.tick();
        a.on_read();
        assert_eq!(a.head_since.load(Relaxed), 2, "first bytes of a head at tick 1");
        a.tick();
        a.on_read();
        assert_eq!(a.head_since.load(Relaxed), 2, "more bytes of the same head keep its start");
        a.request_started();
        assert_eq!(a.head_since.load(Relaxed), 0);
        a.on_read();
        assert_eq!(a.head_since.load(Relaxed), 0, "body bytes of a pending request are no head");
        a.response_ready();
        a.on_read();
        assert_eq!(a.head_since.load(Relaxed), 3, "bytes after the response start the next head");
        assert_eq!(a.reads.load(Relaxed), 4);
    }

    #[test]
    fn timeouts_round_up_to_whole_ticks() {
        assert_eq!(ticks(Duration::from_millis(1)), 1);
        assert_eq!(ticks(Duration::from_secs(1)), 1);
        assert_eq!(ticks(Duration::from_millis(1500)), 2);
        assert_eq!(ticks(Duration::from_secs(10)), 10);
    }
}
