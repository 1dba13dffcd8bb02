//! gRPC through the gateway: an h2c upstream (`protocol = "h2c"`), trailers passed through
//! intact, and refusals shaped as gRPC clients read them (HTTP 200, `grpc-status`).

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};

use crate::common::TestEnv;

const GRPC_ROUTES: &str = r#"
[upstreams.grpc]
address = "{grpc}"
protocol = "h2c"

[[routes]]
id = "grpc-health"
methods = ["POST"]
path = "/grpc.health.v1.Health/Check"
upstream = "grpc"
action = "Health"
resource = { type = "Application", id = "tasks" }
auth = "anonymous"

[[routes]]
id = "grpc-list"
methods = ["POST"]
path = "/tasks.v1.Tasks/{list_id}"
upstream = "grpc"
action = "ReadList"
resource = { type = "List", id = "{list_id}" }
"#;

/// An HTTP/2-only (h2c) upstream answering every call with one message, then trailers
/// `grpc-status: 0` and `x-seen-principal` (the identity header it received).
async fn start_grpc_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|request: http::Request<_>| async move {
                    let principal = request
                        .headers()
                        .get("x-portcullis-principal")
                        .cloned()
                        .unwrap_or(http::HeaderValue::from_static("none"));
                    let _ = BodyExt::collect(request.into_body()).await;
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                    trailers.insert("x-seen-principal", principal);
                    let frames = vec![
                        Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"\0\0\0\0\x02hi"))),
                        Ok(Frame::trailers(trailers)),
                    ];
                    let body = StreamBody::new(futures::stream::iter(frames));
                    let response = http::Response::builder()
                        .header("content-type", "application/grpc")
                        .body(body)
                        .unwrap();
                    Ok::<_, Infallible>(response)
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    address
}

/// One gRPC-shaped call over h2c to the gateway: status, headers, body and trailers.
async fn call(
    gateway: SocketAddr,
    path: &str,
    token: Option<&str>,
) -> (u16, http::HeaderMap, Bytes, Option<http::HeaderMap>) {
    let tcp = TcpStream::connect(gateway).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut request = http::Request::builder()
        .method("POST")
        .uri(format!("http://tasks.example.com{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    (status, headers, collected.to_bytes(), trailers)
}

async fn grpc_env() -> TestEnv {
    let grpc = start_grpc_upstream().await;
    TestEnv::start_with(move |dir, _| {
        crate::edge::support::add_to_server_section(dir, "h2c = true");
        crate::common::append_routes(dir, &GRPC_ROUTES.replace("{grpc}", &grpc.to_string()));
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_pass_through_an_h2c_upstream_with_their_trailers() {
    let env = grpc_env().await;
    let (status, _, body, trailers) = call(env.gateway, "/grpc.health.v1.Health/Check", None).await;
    assert_eq!(status, 200);
    assert_eq!(&body[..], b"\0\0\0\0\x02hi");
    let trailers = trailers.expect("trailers are passed through");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["x-seen-principal"], "none");

    let bob = env.token("bob");
    let (status, _, _, trailers) =
        call(env.gateway, "/tasks.v1.Tasks/acme-roadmap", Some(&bob)).await;
    assert_eq!(status, 200);
    let trailers = trailers.unwrap();
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["x-seen-principal"], "bob");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_refusals_carry_grpc_status_as_envoy_sends_them() {
    let env = grpc_env().await;
    let (status, headers, body, _) = call(env.gateway, "/tasks.v1.Tasks/acme-roadmap", None).await;
    assert_eq!(status, 200, "gRPC refusals are HTTP 200");
    assert_eq!(headers["grpc-status"], "16", "UNAUTHENTICATED");
    assert_eq!(headers["content-type"], "application/grpc");
    assert!(headers["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer realm="));
    let request_id = headers["x-request-id"].to_str().unwrap();
    assert!(headers["grpc-message"]
        .to_str()
        .unwrap()
        .contains(request_id));
    assert!(body.is_empty());

    let carol = env.token("carol");
    let (status, headers, _, _) =
        call(env.gateway, "/tasks.v1.Tasks/acme-roadmap", Some(&carol)).await;
    assert_eq!(status, 200);
    assert_eq!(headers["grpc-status"], "7", "PERMISSION_DENIED");
    assert_eq!(env.upstream.count(), 0);
}
