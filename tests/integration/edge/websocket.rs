//! WebSocket: an upgrade is authorized like any request before it happens, tunneled after a
//! permit on a route that allows it, refused (and its connection closed, so no byte after it
//! reaches an upstream) without a permit, and stripped on a route without `upgrade`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;

use crate::common::TestEnv;

const WS_ROUTES: &str = r#"
[upstreams.events]
address = "{events}"

[[routes]]
id = "list-events"
methods = ["GET"]
path = "/lists/{list_id}/events"
upstream = "events"
action = "ReadList"
resource = { type = "List", id = "{list_id}" }
upgrade = ["websocket"]

[[routes]]
id = "list-feed"
methods = ["GET"]
path = "/lists/{list_id}/feed"
upstream = "tasks"
action = "ReadList"
resource = { type = "List", id = "{list_id}" }
"#;

/// A WebSocket echo server that records the principal header of every handshake.
async fn start_echo_server() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let principals = Arc::new(Mutex::new(Vec::new()));
    let seen = principals.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                // The callback's error type is tungstenite's, whatever its size.
                #[allow(clippy::result_large_err)]
                let record = |request: &Request, response: Response| {
                    let principal = request
                        .headers()
                        .get("x-portcullis-principal")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("none")
                        .to_string();
                    seen.lock().unwrap().push(principal);
                    Ok(response)
                };
                let Ok(mut socket) = tokio_tungstenite::accept_hdr_async(tcp, record).await else {
                    return;
                };
                while let Some(Ok(message)) = socket.next().await {
                    if message.is_text() && socket.send(message).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (address, principals)
}

async fn ws_env() -> (TestEnv, Arc<Mutex<Vec<String>>>) {
    let (events, principals) = start_echo_server().await;
    let env = TestEnv::start_with(move |dir, _| {
        crate::common::append_routes(dir, &WS_ROUTES.replace("{events}", &events.to_string()));
    })
    .await;
    (env, principals)
}

fn ws_request(
    env: &TestEnv,
    path: &str,
    token: Option<&str>,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut request = format!("ws://{}{path}", env.gateway)
        .into_client_request()
        .unwrap();
    if let Some(token) = token {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permitted_upgrade_is_tunneled_with_the_identity_headers() {
    let (env, principals) = ws_env().await;
    let bob = env.token("bob");
    let (mut socket, response) = tokio_tungstenite::connect_async(ws_request(
        &env,
        "/lists/acme-roadmap/events",
        Some(&bob),
    ))
    .await
    .unwrap();
    assert_eq!(response.status(), 101);
    for text in ["one", "two", &"x".repeat(1000), &"y".repeat(1000)] {
        socket.send(Message::text(text)).await.unwrap();
        let echoed = socket.next().await.unwrap().unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), text);
    }
    assert_eq!(*principals.lock().unwrap(), ["bob"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upgrade_never_reaches_the_upstream() {
    let (env, principals) = ws_env().await;
    let carol = env.token("carol");
    for (token, status) in [(None, 401), (Some(carol.as_str()), 403)] {
        let error =
            tokio_tungstenite::connect_async(ws_request(&env, "/lists/acme-roadmap/events", token))
                .await
                .unwrap_err();
        match error {
            tokio_tungstenite::tungstenite::Error::Http(response) => {
                assert_eq!(response.status(), status);
                assert!(response.headers().contains_key("x-request-id"));
                assert_eq!(response.headers()["content-type"], "application/json");
            }
            other => panic!("expected an HTTP refusal, got {other}"),
        }
    }
    // Bytes sent after a refused upgrade head are never read as a request: the connection is
    // closed after the refusal, so the authorized request smuggled behind it goes nowhere.
    let bob = env.token("bob");
    let smuggled = format!(
        "GET /lists/acme-roadmap/events HTTP/1.1\r\nHost: tasks.example.com\r\n\
         Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n\
         GET /lists/acme-roadmap HTTP/1.1\r\nHost: tasks.example.com\r\n\
         Authorization: Bearer {bob}\r\n\r\n"
    );
    let mut stream = tokio::net::TcpStream::connect(env.gateway).await.unwrap();
    stream.write_all(smuggled.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.unwrap();
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 401"), "{reply}");
    assert_eq!(reply.matches("HTTP/1.1").count(), 1, "{reply}");
    assert!(principals.lock().unwrap().is_empty());
    assert_eq!(env.upstream.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_route_flag_the_upgrade_is_stripped() {
    let (env, _) = ws_env().await;
    let bob = env.token("bob");
    let authorization = format!("Bearer {bob}");
    let response = env
        .send(
            "GET",
            "/lists/acme-roadmap/feed",
            &[
                ("Authorization", &authorization),
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Version", "13"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ],
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let seen = env.upstream.last();
    assert!(seen.header_values("upgrade").is_empty());
    assert!(seen.header_values("connection").is_empty());
}
