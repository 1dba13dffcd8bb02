//! Connection handling: the request-head deadline and the keep-alive idle timeout.
//!
//! pingora bounds each *read* of a request head (60 s) but not the head as a whole, so a client
//! trickling one byte at a time could hold a connection for ever. This app drives pingora's
//! HTTP/1 proxy one request at a time and gives each head a total deadline: from the accept of
//! a new connection, or from the first byte of the next request on a kept-alive one. A kept-alive
//! connection waits for that first byte at most the idle timeout. A client that misses either is
//! disconnected without a response, as nginx does on `client_header_timeout`.
//!
//! The proxy marks the head as received (`mark_head_received`) in its first hook; the mark is a
//! task-local, because pingora runs the hooks inside the future this app awaits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::apps::{HttpServerApp, ServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use pingora_proxy::HttpProxy;

use super::Proxy;

tokio::task_local! {
    static HEAD_RECEIVED: Arc<AtomicBool>;
}

/// Records that the current request's head has been read, which lifts its deadline.
pub(super) fn mark_head_received() {
    // Outside `GatewayApp` (no deadline in force) there is nothing to mark.
    let _ = HEAD_RECEIVED.try_with(|received| received.store(true, Ordering::Release));
}

/// Timeouts applied to every downstream connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub request_head: Duration,
    pub idle: Duration,
}

/// The server application: pingora's HTTP/1 proxy under the connection limits.
pub struct GatewayApp {
    proxy: Arc<HttpProxy<Proxy>>,
    limits: ConnectionLimits,
}

impl GatewayApp {
    pub fn new(proxy: HttpProxy<Proxy>, limits: ConnectionLimits) -> Self {
        GatewayApp {
            proxy: Arc::new(proxy),
            limits,
        }
    }

    /// Waits for the first byte of the next request on a kept-alive connection. `false` when
    /// the client closed, went idle too long, or the server is shutting down.
    async fn next_request_arrives(&self, stream: &mut Stream, shutdown: &ShutdownWatch) -> bool {
        let mut first_byte = [0u8; 1];
        let mut shutdown = shutdown.clone();
        tokio::select! {
            peeked = tokio::time::timeout(self.limits.idle, stream.try_peek(&mut first_byte)) => {
                matches!(peeked, Ok(Ok(true)))
            }
            _ = shutdown.changed() => false,
        }
    }

    /// Serves one request; `None` when the connection must close.
    async fn serve_one(
        &self,
        stream: Stream,
        idle_seconds: u64,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let mut session = ServerSession::new_http1(stream);
        session.set_keepalive((!*shutdown.borrow()).then_some(idle_seconds));
        let received = Arc::new(AtomicBool::new(false));
        let request = HEAD_RECEIVED.scope(
            received.clone(),
            self.proxy.process_new_http(session, shutdown),
        );
        tokio::pin!(request);
        let reused = tokio::select! {
            reused = &mut request => reused,
            () = tokio::time::sleep(self.limits.request_head) => {
                if !received.load(Ordering::Acquire) {
                    log::debug!("request head not received within {:?}; closing", self.limits.request_head);
                    return None;
                }
                request.await
            }
        };
        reused.map(|r| r.consume().0)
    }
}

#[async_trait]
impl ServerApp for GatewayApp {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // pingora keeps a whole-second keep-alive; at least one second, as the config demands.
        let idle_seconds = self.limits.idle.as_secs().max(1);
        let mut next = self.serve_one(stream, idle_seconds, shutdown).await;
        while let Some(mut stream) = next {
            if !self.next_request_arrives(&mut stream, shutdown).await {
                return None;
            }
            next = self.serve_one(stream, idle_seconds, shutdown).await;
        }
        None
    }

    async fn cleanup(&self) {
        self.proxy.http_cleanup().await;
    }
}
