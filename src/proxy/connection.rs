//! Connection handling: pingora's own serving (HTTP/1.1, HTTP/2 by ALPN on TLS, h2c with prior
//! knowledge when enabled) under the request-head deadline and the idle timeout.
//!
//! pingora bounds each *read* of a request head (by the keep-alive timeout) but not the head as
//! a whole, so a client trickling one byte at a time could hold a connection for ever. Around
//! pingora's serving, not in a loop of our own:
//! - `Edge` waits at most the head deadline for a new plaintext connection's first byte (its
//!   first 24 with h2c on, which pingora then reads looking for the HTTP/2 preface), and for the
//!   preface of a TLS connection that chose `h2` (`preface_deadline.rs`);
//! - `GatewayApp` gives every HTTP/1 request head a total deadline from its first byte. Between
//!   requests on a kept-alive connection it waits for the next first byte at most the idle
//!   timeout (a peek); on TLS, which cannot be peeked, the next head's deadline is the idle
//!   timeout plus the head deadline. A client that misses either is disconnected without a
//!   response, as nginx does on `client_header_timeout`.
//!
//! The proxy marks the head as received (`mark_head_received`) in its first hook; the mark is a
//! task-local, because pingora runs the hooks inside the future this app awaits. An HTTP/2
//! stream reaches the app with its head already read; h2 framing bounds header size, and the
//! idle timeout closes an h2 connection that carries no complete request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream, ServerApp};
use pingora_core::protocols::http::v2::server::H2Options;
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use pingora_proxy::HttpProxy;

use super::preface_deadline::{bound_preface, H2_PREFACE_BYTES};
use super::Proxy;

tokio::task_local! {
    static HEAD_RECEIVED: Arc<AtomicBool>;
}

/// Records that the current request's head has been read, which lifts its deadline.
pub(super) fn mark_head_received() {
    // Outside an HTTP/1 deadline (HTTP/2 streams) there is nothing to mark.
    let _ = HEAD_RECEIVED.try_with(|received| received.store(true, Ordering::Release));
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

/// The HTTP application: pingora's proxy under the HTTP/1 head deadline.
pub struct GatewayApp {
    proxy: Arc<HttpProxy<Proxy>>,
    limits: ConnectionLimits,
    options: HttpServerOptions,
}

/// Left for the next session of a kept-alive connection whose first byte was peeked: its head
/// deadline starts now. (A zero-sized marker: boxing it allocates nothing.)
struct FirstByteArrived;

/// Left when the stream cannot be peeked (TLS): the head deadline includes the idle wait.
struct FirstByteUnknown;

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

    /// Waits for the first byte of the next request on a kept-alive connection, at most the
    /// idle timeout: whether it was seen (`false`: the stream cannot be peeked). `None` when
    /// the client closed, went idle too long, or the server is shutting down.
    async fn next_request_arrives(
        &self,
        stream: &mut Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<bool> {
        let mut first_byte = [0u8; 1];
        let mut shutdown = shutdown.clone();
        tokio::select! {
            peeked = tokio::time::timeout(self.limits.idle, stream.try_peek(&mut first_byte)) => {
                match peeked {
                    Ok(Ok(true)) => Some(true),
                    // Not peekable: pingora's keep-alive timeout bounds the wait instead.
                    Ok(Ok(false)) => Some(false),
                    Ok(Err(_)) | Err(_) => None,
                }
            }
            _ = shutdown.changed() => None,
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
        if session.is_http2() {
            return self.proxy.process_new_http(session, shutdown).await;
        }
        // On a kept-alive connection, the previous round says whether the first byte of this
        // head has already arrived (plaintext: peeked) or may still be on its way (TLS).
        let waited_for_first_byte = session
            .take_connection_user_context()
            .is_none_or(|context| !context.is::<FirstByteUnknown>());
        let deadline = if waited_for_first_byte {
            self.limits.request_head
        } else {
            self.limits.idle + self.limits.request_head
        };
        // pingora keeps a whole-second keep-alive; at least one second, as the config demands.
        let idle_seconds = self.limits.idle.as_secs().max(1);
        session.set_keepalive((!*shutdown.borrow()).then_some(idle_seconds));
        let received = Arc::new(AtomicBool::new(false));
        let request = HEAD_RECEIVED.scope(
            received.clone(),
            self.proxy.process_new_http(session, shutdown),
        );
        tokio::pin!(request);
        let reusable = tokio::select! {
            reusable = &mut request => reusable,
            () = tokio::time::sleep(deadline) => {
                if !received.load(Ordering::Acquire) {
                    log::debug!("request head not received within {deadline:?}; closing");
                    return None;
                }
                request.await
            }
        };
        let (mut stream, settings) = reusable?.consume();
        let arrived = self.next_request_arrives(&mut stream, shutdown).await?;
        let settings = settings.map(|mut settings| {
            if arrived {
                settings.set_user_context(Box::new(FirstByteArrived));
            } else {
                settings.set_user_context(Box::new(FirstByteUnknown));
            }
            settings
        });
        Some(ReusedHttpStream::new(stream, settings))
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
/// then pingora's serving of `GatewayApp` (HTTP/1, h2, h2c).
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
        if stream.get_ssl_digest().is_none() {
            // With h2c on, pingora next peeks for the 24-byte HTTP/2 preface without a
            // timeout: those bytes must arrive within the deadline too.
            let mut first_bytes = [0u8; H2_PREFACE_BYTES];
            let wanted = if self.app.limits.h2c {
                H2_PREFACE_BYTES
            } else {
                1
            };
            let peeked =
                tokio::time::timeout(deadline, stream.try_peek(&mut first_bytes[..wanted])).await;
            if !matches!(peeked, Ok(Ok(true))) {
                return None;
            }
        }
        let stream = bound_preface(stream, deadline);
        self.app.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        self.app.http_cleanup().await;
    }
}
