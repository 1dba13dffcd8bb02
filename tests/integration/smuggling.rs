//! Request smuggling over a raw socket: ambiguous framing is refused or framed one way only, and
//! a request hidden in a body never reaches the upstream as a request of its own.

use std::time::Duration;

use crate::common::smuggling_cases::framing_cases;
use crate::common::TestEnv;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Writes `bytes` and reads whatever the gateway answers until it closes or goes quiet.
async fn exchange(env: &TestEnv, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(env.gateway).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_requests_never_reach_the_upstream() {
    let env = TestEnv::start().await;
    let token = env.token("alice");
    let head = format!(
        "POST /lists/acme-roadmap/tasks HTTP/1.1\r\nHost: tasks.example.com\r\n\
         Authorization: Bearer {token}\r\n"
    );
    let cases = framing_cases(&head);
    for (case, status) in &cases {
        let before = env.upstream.count();
        let answer = exchange(&env, case.as_bytes()).await;
        let responses: Vec<&str> = answer
            .lines()
            .filter(|l| l.starts_with("HTTP/1.1 "))
            .collect();
        assert_eq!(
            responses.len(),
            1,
            "one response only for {case:?}: {answer}"
        );
        assert!(
            responses[0].starts_with(&format!("HTTP/1.1 {status} ")),
            "{case:?}: {answer}"
        );
        let forwarded: Vec<String> = env.upstream.requests.lock().unwrap()[before..]
            .iter()
            .map(|r| format!("{} {}", r.method, r.target))
            .collect();
        let expected: Vec<String> = if *status == 200 {
            vec!["POST /lists/acme-roadmap/tasks".to_string()]
        } else {
            Vec::new()
        };
        assert_eq!(forwarded, expected, "{case:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_after_a_refused_upgrade_never_reach_the_upstream() {
    // The gateway does not forward `Upgrade` (it is hop-by-hop, and WebSocket is not proxied),
    // so the upstream answers 200, not 101, and pingora never switches the connection to a
    // tunnel. The bytes the client sent after the upgrade request are a pipelined request, which
    // pingora does not serve: the first response is delivered, the connection closes, and the
    // hidden request is dropped (the client may retry it on a new connection, where it is
    // authorized like any other).
    let env = TestEnv::start().await;
    let upgrade = "GET /health HTTP/1.1\r\nHost: tasks.example.com\r\nConnection: Upgrade\r\n\
                   Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let hidden = "GET /lists/globex-ops HTTP/1.1\r\nHost: tasks.example.com\r\n\r\n";
    let answer = exchange(&env, format!("{upgrade}{hidden}").as_bytes()).await;
    let statuses: Vec<&str> = answer
        .lines()
        .filter(|l| l.starts_with("HTTP/1.1 "))
        .collect();
    assert_eq!(statuses, ["HTTP/1.1 200 OK"], "{answer}");
    let forwarded = env.upstream.requests.lock().unwrap().clone();
    assert_eq!(forwarded.len(), 1);
    assert_eq!(forwarded[0].target, "/health");
    assert!(forwarded[0].header_values("upgrade").is_empty());
}
