//! Minimal hyper 1 plumbing for the servers that are not the proxy: the admin listener, the
//! external authorization listener, and the demo's dev issuer and tasks API.
//!
//! They need the same accept loop and JSON responses; keeping them here avoids duplicating the
//! hyper boilerplate. The proxy itself is pingora.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// Body type of every response these servers produce.
pub type ResponseBody = Full<Bytes>;

/// The address of the peer a request came from, in the request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::SocketAddr);

/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves HTTP/1.1 (keep-alive on) on `listener`, answering every request with `handler`; each
/// request carries its connection's [`Peer`] in its extensions.
///
/// Each connection runs in its own tokio task. Those tasks are owned by this future: when
/// it is dropped or its task aborted, every open connection is closed too, so a test that
/// "stops" a server really stops it, even for clients holding pooled keep-alive connections.
/// Never returns on its own.
pub async fn serve<F, Fut>(listener: TcpListener, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<ResponseBody>> + Send + 'static,
{
    serve_counting_accepts(listener, Arc::new(AtomicU64::new(0)), handler).await;
}

/// [`serve`], adding one to `accepted` for every connection accepted (the load test's upstream
/// measures connection reuse with it).
pub async fn serve_counting_accepts<F, Fut>(
    listener: TcpListener,
    accepted_connections: Arc<AtomicU64>,
    handler: F,
) where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<ResponseBody>> + Send + 'static,
{
    accept_loop(listener, accepted_connections, Protocols::Http1, handler).await;
}

/// [`serve`] for HTTP/1.1 and, on the same port, HTTP/2 with prior knowledge (h2c: gRPC), with
/// any response body.
pub async fn serve_h1_and_h2c<F, Fut, B>(listener: TcpListener, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    accept_loop(
        listener,
        Arc::new(AtomicU64::new(0)),
        Protocols::Http1AndH2c,
        handler,
    )
    .await;
}

#[derive(Clone, Copy)]
enum Protocols {
    Http1,
    Http1AndH2c,
}

async fn accept_loop<F, Fut, B>(
    listener: TcpListener,
    accepted_connections: Arc<AtomicU64>,
    protocols: Protocols,
    handler: F,
) where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let handler = Arc::new(handler);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    accepted_connections.fetch_add(1, Ordering::Relaxed);
                    let handler = Arc::clone(&handler);
                    connections.spawn(async move {
                        let service = service_fn(move |mut req: Request<Incoming>| {
                            req.extensions_mut().insert(Peer(peer));
                            let response = handler(req);
                            async move { Ok::<_, Infallible>(response.await) }
                        });
                        let io = TokioIo::new(stream);
                        let result = match protocols {
                            Protocols::Http1 => http1::Builder::new()
                                .timer(TokioTimer::new())
                                .keep_alive(true)
                                .serve_connection(io, service)
                                .await
                                .map_err(Into::into),
                            Protocols::Http1AndH2c => {
                                // The timer gives HTTP/1 its head deadline (hyper's 30 s) and
                                // h2 its keep-alive pings.
                                let mut builder = auto::Builder::new(TokioExecutor::new());
                                builder.http1().timer(TokioTimer::new());
                                builder.http2().timer(TokioTimer::new());
                                builder.serve_connection(io, service).await
                            }
                        };
                        if let Err(err) = result {
                            log::debug!("connection from {peer} ended: {err}");
                        }
                    });
                }
                Err(err) => {
                    log::warn!("failed to accept a connection: {err}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            // Reap finished connection tasks so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// A response with `status` and `body` serialised as JSON (`content-type: application/json`).
pub fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<ResponseBody> {
    // `Value`'s Display is its compact JSON serialisation and cannot fail.
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A JSON error response: `{"error": message}`.
pub fn error_response(status: StatusCode, message: &str) -> Response<ResponseBody> {
    json_response(status, &serde_json::json!({ "error": message }))
}

/// A response with `status` and no body (e.g. 204 No Content).
pub fn empty_response(status: StatusCode) -> Response<ResponseBody> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_response_sets_status_and_content_type() {
        let response = json_response(StatusCode::CREATED, &serde_json::json!({"a": 1}));
        assert_eq!(response.status(), StatusCode::CREATED);
        assert_eq!(
            response
                .headers()
                .get(CONTENT_TYPE)
                .map(HeaderValue::as_bytes),
            Some(&b"application/json"[..])
        );
    }
}
