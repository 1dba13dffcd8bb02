//! Connection handling: pingora's own serving (HTTP/1.1, HTTP/2 by ALPN on TLS, h2c with prior
//! knowledge when enabled) under the request-head deadline and the idle timeout.
//!
//! `Edge` waits at most the head deadline for a new plaintext connection's first byte (its
//! first 24 with h2c on, which pingora then reads looking for the HTTP/2 preface), then puts
//! the stream under its client deadlines (`client_deadlines.rs`): each HTTP/1 head complete
//! within the deadline from its first byte, a TLS client's HTTP/2 preface within the deadline.
//! A client that misses either is disconnected without a response, as nginx does on
//! `client_header_timeout`. Between requests on a kept-alive connection the idle timeout bounds
//! the wait for the next head, also in the stream.
//!
//! The proxy tells the connection's clock when a head has been read (`mark_head_received`, in
//! its first hook) and when the request is done (`mark_request_done`, in `logging`). The clock
//! is a task-local, because pingora runs an HTTP/1 connection's hooks inside the future `Edge`
//! awaits. An HTTP/2 stream runs in a task of its own, with its head already read; h2 framing
//! bounds header size. `GatewayApp` counts each stream in flight on its connection, which it
//! finds by the socket digest pingora shares between them, and the connection's stream closes
//! it once none has been in flight for the idle timeout.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream, ServerApp};
use pingora_core::protocols::http::v2::server::H2Options;
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::{SocketDigest, Stream};
use pingora_core::server::ShutdownWatch;
use pingora_proxy::HttpProxy;

use super::client_deadlines::{chose_h2, with_deadlines, H2Streams, HeadClock, Limits, H2_PREFACE};
use super::Proxy;

tokio::task_local! {
    static HEAD_CLOCK: Arc<HeadClock>;
}

/// Records that the current request's head has been read, which lifts its deadline.
pub(super) fn mark_head_received() {
    // Outside an HTTP/1 connection (HTTP/2 streams) there is nothing to mark.
    let _ = HEAD_CLOCK.try_with(|clock| clock.head_received());
}

/// Records that the current request is done: the next bytes begin the next head.
pub(super) fn mark_request_done() {
    let _ = HEAD_CLOCK.try_with(|clock| clock.request_done());
}

/// Timeouts and protocol options applied to every downstream connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub request_head: Duration,
    pub idle: Duration,
    /// Accept HTTP/2 with prior knowledge on plaintext connections.
    pub h2c: bool,
    /// Largest header block of one HTTP/2 request (SETTINGS_MAX_HEADER_LIST_SIZE).
    pub max_header_bytes: usize,
}

/// Concurrent streams one downstream HTTP/2 connection may open.
const MAX_CONCURRENT_STREAMS: u32 = 100;

/// The HTTP application: pingora's proxy, HTTP/1 connections kept alive without pingora's
/// keep-alive timeout and h2 connections without pingora's idle timeout (the stream bounds the
/// wait between requests, and an h2 connection's idle time: `client_deadlines.rs`).
pub struct GatewayApp {
    proxy: Arc<HttpProxy<Proxy>>,
    limits: ConnectionLimits,
    options: HttpServerOptions,
    /// The streams of each open HTTP/2 connection, by the address of its socket digest, which
    /// pingora shares between the connection's stream and every session on it. `Edge` adds a
    /// connection's entry (holding the digest, so that the address is not reused meanwhile) and
    /// removes it when the connection ends.
    h2_connections: RwLock<HashMap<usize, H2Connection>>,
}

/// An open HTTP/2 connection's socket digest (held) and streams.
type H2Connection = (Arc<SocketDigest>, Arc<H2Streams>);

impl GatewayApp {
    pub fn new(proxy: HttpProxy<Proxy>, limits: ConnectionLimits) -> Self {
        let mut options = HttpServerOptions::default();
        options.h2c = limits.h2c;
        GatewayApp {
            proxy: Arc::new(proxy),
            limits,
            options,
            h2_connections: RwLock::default(),
        }
    }

    /// The streams of the HTTP/2 connection `session` is on, if `Edge` registered it.
    fn h2_streams(&self, session: &ServerSession) -> Option<Arc<H2Streams>> {
        let digest = session.digest()?.socket_digest.as_ref()?;
        let connections = self
            .h2_connections
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let (_, streams) = connections.get(&digest_key(digest))?;
        Some(streams.clone())
    }

    fn register_h2(&self, digest: Arc<SocketDigest>, streams: Arc<H2Streams>) {
        self.h2_connections
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(digest_key(&digest), (digest, streams));
    }

    fn unregister_h2(&self, digest: &Arc<SocketDigest>) {
        self.h2_connections
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&digest_key(digest));
    }
}

/// A connection's key in `h2_connections`: its socket digest's address.
fn digest_key(digest: &Arc<SocketDigest>) -> usize {
    Arc::as_ptr(digest) as usize
}

#[async_trait]
impl HttpServerApp for GatewayApp {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        if !session.is_http2() {
            // Kept alive without pingora's timeout (0), which would arm a timer for every read
            // of every head: the connection's stream bounds the wait for the next head.
            session.set_keepalive((!*shutdown.borrow()).then_some(0));
            return self.proxy.process_new_http(session, shutdown).await;
        }
        // An h2 stream: in flight on its connection until served (or dropped).
        let _in_flight = self.h2_streams(&session).map(|streams| streams.begin());
        self.proxy.process_new_http(session, shutdown).await
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        Some(&self.options)
    }

    fn h2_options(&self) -> Option<H2Options> {
        let mut options = H2Options::default();
        options
            .max_header_list_size(u32::try_from(self.limits.max_header_bytes).unwrap_or(u32::MAX));
        options.max_concurrent_streams(MAX_CONCURRENT_STREAMS);
        Some(options)
    }

    async fn http_cleanup(&self) {
        self.proxy.http_cleanup().await;
    }
}

/// The server application: a new plaintext connection's first byte within the head deadline,
/// then pingora's serving of `GatewayApp` (HTTP/1, h2, h2c) under the client deadlines.
pub struct Edge {
    app: Arc<GatewayApp>,
}

impl Edge {
    pub fn new(app: GatewayApp) -> Self {
        Edge { app: Arc::new(app) }
    }
}

#[async_trait]
impl ServerApp for Edge {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let deadline = self.app.limits.request_head;
        let http2 = if stream.get_ssl_digest().is_none() {
            // With h2c on, pingora next peeks for the 24-byte HTTP/2 preface without a
            // timeout: those bytes must arrive within the deadline too.
            let mut first_bytes = [0u8; H2_PREFACE.len()];
            let wanted = if self.app.limits.h2c {
                H2_PREFACE.len()
            } else {
                1
            };
            let peeked =
                tokio::time::timeout(deadline, stream.try_peek(&mut first_bytes[..wanted])).await;
            if !matches!(peeked, Ok(Ok(true))) {
                return None;
            }
            first_bytes == *H2_PREFACE
        } else {
            chose_h2(&stream)
        };
        let clock = Arc::new(HeadClock::default());
        let limits = Limits {
            head: deadline,
            idle: self.app.limits.idle,
        };
        let h2 = if http2 {
            // pingora's listeners give every accepted stream a socket digest. Without one the
            // streams could not be counted, and an idle timeout could close the connection
            // under a request in flight: such a connection is not served.
            let Some(digest) = stream.get_socket_digest() else {
                log::warn!("an HTTP/2 connection without a socket digest: closed");
                return None;
            };
            let streams = H2Streams::new();
            self.app.register_h2(digest.clone(), streams.clone());
            Some((digest, streams))
        } else {
            None
        };
        let stream = with_deadlines(stream, h2.as_ref().map(|(_, s)| s.clone()), &clock, limits);
        let reused = HEAD_CLOCK
            .scope(clock, self.app.process_new(stream, shutdown))
            .await;
        if let Some((digest, _)) = &h2 {
            self.app.unregister_h2(digest);
        }
        reused
    }

    async fn cleanup(&self) {
        self.app.http_cleanup().await;
    }
}
