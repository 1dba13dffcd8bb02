//! Deadlines on what a client must send, enforced in its connection's stream.
//!
//! pingora bounds each *read* of a request head (by the keep-alive timeout) but not the head as
//! a whole, so a client trickling one byte at a time could hold a connection for ever; and its
//! HTTP/2 handshake waits for a TLS client's preface without a timeout. This wrapper fails reads
//! once a deadline passes:
//! - HTTP/1 (`Watch::Heads`): every request head must be complete within the head deadline
//!   from its first byte (a new TLS connection's first head: from the handshake, since nothing
//!   says when its first byte arrived). The proxy tells the connection's [`HeadClock`] when a
//!   head has been read (`request_filter`) and when its request is done (`logging`); the next
//!   bytes read after that start the next head's clock. Waiting between requests is bounded by
//!   the idle timeout instead, from the first read that waits; when it passes, the stream ends
//!   as if the client had closed it, and pingora closes the connection without a response.
//! - HTTP/2 over TLS (`Watch::Preface`): the 24-byte preface within the deadline.
//! - HTTP/2 (`Watch::Streams`), once the preface is in: the connection ends when no stream has
//!   been in flight for the idle timeout. `GatewayApp` counts the connection's streams as they
//!   begin and end ([`H2Streams`]). pingora's own h2 idle timeout re-arms a timer and wakes the
//!   connection's task whenever its last stream ends, which cost about 5 % of an h2 request;
//!   here the one timer is looked at only when it fires.
//!
//! Done in the stream, not around each request, because that costs no timer, no peek and no
//! extra future per request. pingora's own keep-alive timeout arms a timer for every read of
//! every head; here one timer per connection is armed once and left to run: when it fires
//! before the deadline now in force (which moved on with later requests), it is set again.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::{SslDigest, TlsRef};
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n` (RFC 9113 §3.4).
pub(super) const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Where an HTTP/1 connection is in its request cycle, shared by its stream and the proxy.
#[derive(Debug, Default)]
pub(super) struct HeadClock(AtomicU8);

/// No head in progress: the next bytes read begin one.
const AWAITING_HEAD: u8 = 0;
/// A head has begun and is not yet read whole: its deadline runs.
const IN_HEAD: u8 = 1;
/// The head was read; the request (body, response, a tunnel) is under way.
const HEAD_RECEIVED: u8 = 2;

impl HeadClock {
    /// The current request's head has been read whole: its deadline no longer applies.
    pub(super) fn head_received(&self) {
        self.0.store(HEAD_RECEIVED, Ordering::Release);
    }

    /// The current request is done: the next bytes begin the next head.
    pub(super) fn request_done(&self) {
        self.0.store(AWAITING_HEAD, Ordering::Release);
    }
}

/// The streams of one HTTP/2 connection, shared by its stream wrapper and the tasks that serve
/// them: how many are in flight, and since when none has been.
#[derive(Debug)]
pub(super) struct H2Streams {
    in_flight: AtomicUsize,
    /// When the last stream ended (or the connection began), in ms after `origin`.
    idle_from_ms: AtomicU64,
    origin: Instant,
}

impl H2Streams {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(H2Streams {
            in_flight: AtomicUsize::new(0),
            idle_from_ms: AtomicU64::new(0),
            origin: Instant::now(),
        })
    }

    /// A stream begins; it counts as in flight until the guard drops.
    pub(super) fn begin(self: &Arc<Self>) -> StreamInFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        StreamInFlight(self.clone())
    }

    /// Since when no stream has been in flight, if none is.
    fn idle_since(&self) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let ms = self.idle_from_ms.load(Ordering::Acquire);
        Some(self.origin + Duration::from_millis(ms))
    }
}

/// One HTTP/2 stream in flight on its connection.
pub(super) struct StreamInFlight(Arc<H2Streams>);

impl Drop for StreamInFlight {
    fn drop(&mut self) {
        let streams = &self.0;
        let ms = u64::try_from(streams.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        streams.idle_from_ms.fetch_max(ms, Ordering::AcqRel);
        streams.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Debug)]
enum Watch {
    /// HTTP/1: each request head within the deadline from its first byte.
    Heads(Arc<HeadClock>),
    /// HTTP/2 over TLS: the preface within the deadline from the handshake; `read` bytes so far.
    Preface {
        read: usize,
        streams: Arc<H2Streams>,
    },
    /// HTTP/2 with its preface in: idle once no stream has been in flight for the idle timeout.
    Streams(Arc<H2Streams>),
}

#[derive(Debug)]
pub(super) struct ClientDeadlines {
    inner: Stream,
    limits: Limits,
    watch: Watch,
    /// When the head (or preface) in progress began.
    started: Instant,
    /// When a read between requests first waited.
    idle_since: Option<Instant>,
    /// Armed the first time a read waits on a deadline, and kept; it may run ahead of the
    /// deadline in force, never behind it.
    timer: Option<Pin<Box<Sleep>>>,
}

/// How a read that reached its deadline ends.
enum Expiry {
    /// The connection sat idle between requests: the stream ends.
    Idle,
    /// A head or preface did not arrive in time: the read fails.
    Late,
}

impl ClientDeadlines {
    /// An HTTP/1 connection: its first head counts from now.
    pub(super) fn heads(inner: Stream, clock: Arc<HeadClock>, limits: Limits) -> Self {
        clock.0.store(IN_HEAD, Ordering::Release);
        Self::new(inner, Watch::Heads(clock), limits)
    }

    /// A TLS connection that chose HTTP/2: its preface counts from now, then its streams.
    pub(super) fn preface(inner: Stream, streams: Arc<H2Streams>, limits: Limits) -> Self {
        Self::new(inner, Watch::Preface { read: 0, streams }, limits)
    }

    /// An HTTP/2 connection whose preface is in (h2c: `Edge` waited for it): its streams.
    pub(super) fn streams(inner: Stream, streams: Arc<H2Streams>, limits: Limits) -> Self {
        Self::new(inner, Watch::Streams(streams), limits)
    }

    fn new(inner: Stream, watch: Watch, limits: Limits) -> Self {
        ClientDeadlines {
            inner,
            limits,
            watch,
            started: Instant::now(),
            idle_since: None,
            timer: None,
        }
    }

    /// `read` bytes arrived: they may begin a head, or complete the preface.
    fn arrived(&mut self, read: usize) {
        match &mut self.watch {
            Watch::Heads(clock) => {
                if read > 0 && clock.0.load(Ordering::Acquire) == AWAITING_HEAD {
                    clock.0.store(IN_HEAD, Ordering::Release);
                    self.started = Instant::now();
                    self.idle_since = None;
                }
            }
            Watch::Preface {
                read: so_far,
                streams,
            } => {
                *so_far += read;
                if *so_far >= H2_PREFACE.len() {
                    self.watch = Watch::Streams(streams.clone());
                    // Set for the preface's deadline: the idle timeout arms its own.
                    self.timer = None;
                }
            }
            Watch::Streams(_) => {}
        }
    }

    /// The deadline a waiting read is under, if any: of the head or preface still incomplete,
    /// or of the idle time between requests (which starts now if it has not yet). An HTTP/2
    /// connection's idle time is looked at only when its timer fires (`poll_streams_idle`).
    fn deadline(&mut self) -> Option<(Instant, Expiry)> {
        match &self.watch {
            Watch::Heads(clock) => match clock.0.load(Ordering::Acquire) {
                IN_HEAD => Some((self.started + self.limits.head, Expiry::Late)),
                AWAITING_HEAD => {
                    let since = *self.idle_since.get_or_insert_with(Instant::now);
                    Some((since + self.limits.idle, Expiry::Idle))
                }
                _ => None,
            },
            Watch::Preface { .. } => Some((self.started + self.limits.head, Expiry::Late)),
            Watch::Streams(_) => None,
        }
    }
}

/// Ready once no stream of an HTTP/2 connection has been in flight for `idle`. The timer is
/// armed once and set again only when it fires: a stream beginning or ending costs no timer
/// operation and no wake-up.
fn poll_streams_idle(
    streams: &H2Streams,
    idle: Duration,
    timer: &mut Option<Pin<Box<Sleep>>>,
    cx: &mut Context<'_>,
) -> Poll<()> {
    let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
    loop {
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        let now = Instant::now();
        let next = match streams.idle_since() {
            Some(since) if since + idle <= now => return Poll::Ready(()),
            Some(since) => since + idle,
            // A stream is in flight: look again an idle time from now.
            None => now + idle,
        };
        timer.as_mut().reset(next);
    }
}

impl AsyncRead for ClientDeadlines {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let this = &mut *self;
        match &polled {
            Poll::Ready(Ok(())) => {
                this.arrived(buf.filled().len() - before);
                return polled;
            }
            Poll::Ready(Err(_)) => return polled,
            Poll::Pending => {}
        }
        if let Watch::Streams(streams) = &this.watch {
            // Idle long enough: nothing read, which pingora takes as the client's close.
            return poll_streams_idle(streams, this.limits.idle, &mut this.timer, cx).map(Ok);
        }
        // The read waits: on a deadline too, if one applies.
        let Some((deadline, expiry)) = this.deadline() else {
            return polled;
        };
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() > deadline {
            timer.as_mut().reset(deadline);
        }
        loop {
            match timer.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                // Armed for an earlier deadline that has since moved on.
                Poll::Ready(()) if Instant::now() < deadline => timer.as_mut().reset(deadline),
                Poll::Ready(()) => {
                    return match expiry {
                        // Nothing read: pingora takes it as the client's close.
                        Expiry::Idle => Poll::Ready(Ok(())),
                        Expiry::Late => Poll::Ready(Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "the request head (or HTTP/2 preface) did not arrive within its \
                             deadline",
                        ))),
                    };
                }
            }
        }
    }
}

impl AsyncWrite for ClientDeadlines {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for ClientDeadlines {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await;
    }
}

impl UniqueID for ClientDeadlines {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for ClientDeadlines {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for ClientDeadlines {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for ClientDeadlines {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl GetSocketDigest for ClientDeadlines {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest);
    }
}

#[async_trait]
impl Peek for ClientDeadlines {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

/// The deadlines of a connection.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// A head (or preface) within this from its first byte.
    pub head: Duration,
    /// The next head's first byte within this after a request; an HTTP/2 connection's next
    /// stream within this after its last one ended.
    pub idle: Duration,
}

/// Wraps a new connection's stream: an HTTP/1 connection gets the head and idle deadlines
/// (`clock`); an HTTP/2 one (`streams`) the idle timeout over its streams, after the preface
/// deadline when over TLS (an h2c connection's preface `Edge` already waited for).
pub(super) fn with_deadlines(
    stream: Stream,
    streams: Option<Arc<H2Streams>>,
    clock: &Arc<HeadClock>,
    limits: Limits,
) -> Stream {
    match (streams, stream.get_ssl_digest().is_some()) {
        (Some(streams), true) => Box::new(ClientDeadlines::preface(stream, streams, limits)),
        (Some(streams), false) => Box::new(ClientDeadlines::streams(stream, streams, limits)),
        (None, _) => Box::new(ClientDeadlines::heads(stream, clock.clone(), limits)),
    }
}

/// Whether a TLS stream chose HTTP/2 by ALPN.
pub(super) fn chose_h2(stream: &Stream) -> bool {
    stream.selected_alpn_proto() == Some(ALPN::H2)
}
