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
//! bounds header size, and the idle timeout closes an h2 connection that carries no complete
//! request.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream, ServerApp};
use pingora_core::protocols::http::v2::server::H2Options;
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use pingora_proxy::HttpProxy;

use super::client_deadlines::{chose_h2, with_deadlines, HeadClock, Limits, H2_PREFACE};
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
/// keep-alive timeout (the stream bounds the wait between requests), h2 with its idle timeout.
pub struct GatewayApp {
    proxy: Arc<HttpProxy<Proxy>>,
    limits: ConnectionLimits,
    options: HttpServerOptions,
}

impl GatewayApp {
    pub fn new(proxy: HttpProxy<Proxy>, limits: ConnectionLimits) -> Self {
        let mut options = HttpServerOptions::default();
        options.h2c = limits.h2c;
        options.h2_idle_timeout = Some(limits.idle);
        GatewayApp {
            proxy: Arc::new(proxy),
            limits,
            options,
        }
    }
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
        }
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
        let stream = with_deadlines(stream, http2, &clock, limits);
        HEAD_CLOCK
            .scope(clock, self.app.process_new(stream, shutdown))
            .await
    }

    async fn cleanup(&self) {
        self.app.http_cleanup().await;
    }
}
