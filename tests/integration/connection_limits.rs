//! Connection limits over real sockets: a request head must arrive whole within
//! `request_head_timeout_seconds`, and a kept-alive connection closes after
//! `idle_timeout_seconds` without a request.
//!
//! The waits below are generous upper bounds on when the gateway must have acted, so a slow
//! machine cannot make them fail; what they assert is that the connection closes at all while
//! the client is still trickling (or idle), and that nothing reaches the upstream.

use std::time::Duration;

use crate::common::TestEnv;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: portcullis.test\r\n\r\n";

async fn gateway_with_limits(head_seconds: u64, idle_seconds: u64) -> TestEnv {
    TestEnv::start_with(move |dir, _| {
        let config = dir.join("portcullis.toml");
        let text = std::fs::read_to_string(&config).unwrap();
        let limits = format!(
            "\n[limits]\nrequest_head_timeout_seconds = {head_seconds}\n\
             idle_timeout_seconds = {idle_seconds}\n"
        );
        std::fs::write(
            &config,
            text.replace("\n[tokens]", &format!("{limits}\n[tokens]")),
        )
        .unwrap();
    })
    .await
}

/// Reads one response (headers and a Content-Length body) from a kept-alive connection.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed mid-response: {bytes:?}");
        bytes.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&bytes);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            if body.len() >= length {
                return head.to_string();
            }
        }
    }
}

/// True once the server has closed `stream` (EOF or reset), waiting at most `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(within, stream.read(&mut byte)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowly_trickled_request_head_is_cut_off() {
    let env = gateway_with_limits(1, 60).await;

    // Control: a head sent in pieces but completed in time is served.
    let mut prompt = TcpStream::connect(env.gateway).await.unwrap();
    for piece in HEALTH.chunks(8) {
        prompt.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(read_response(&mut prompt).await.starts_with("HTTP/1.1 200"));
    let served = env.upstream.count();

    // One header line every 200 ms: each read is quick, the head never ends. The client would
    // go on for 20 s; the gateway must hang up long before.
    let mut slow = TcpStream::connect(env.gateway).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: portcullis.test\r\n")
        .await
        .unwrap();
    let mut cut_off = false;
    for i in 0..100 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if slow
            .write_all(format!("X-Slow-{i}: x\r\n").as_bytes())
            .await
            .is_err()
        {
            cut_off = true;
            break;
        }
        if closed_within(&mut slow, Duration::from_millis(1)).await {
            cut_off = true;
            break;
        }
    }
    assert!(cut_off, "a trickled head was allowed to go on for 20 s");
    assert_eq!(
        env.upstream.count(),
        served,
        "the partial request was forwarded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connection_is_reused_then_closed_when_idle() {
    let env = gateway_with_limits(10, 1).await;
    let mut stream = TcpStream::connect(env.gateway).await.unwrap();
    stream.write_all(HEALTH).await.unwrap();
    assert!(read_response(&mut stream).await.starts_with("HTTP/1.1 200"));
    // Reused within the idle timeout.
    tokio::time::sleep(Duration::from_millis(100)).await;
    stream.write_all(HEALTH).await.unwrap();
    assert!(read_response(&mut stream).await.starts_with("HTTP/1.1 200"));
    assert_eq!(env.upstream.count(), 2);
    // Then left idle: the gateway closes it (well before the head timeout of 10 s).
    assert!(
        closed_within(&mut stream, Duration::from_secs(8)).await,
        "an idle kept-alive connection stayed open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_head_deadline_of_a_reused_connection_starts_at_its_first_byte() {
    // Idle longer than the head deadline: waiting idle is not slow-sending.
    let env = gateway_with_limits(1, 30).await;
    let mut stream = TcpStream::connect(env.gateway).await.unwrap();
    stream.write_all(HEALTH).await.unwrap();
    assert!(read_response(&mut stream).await.starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stream.write_all(HEALTH).await.unwrap();
    assert!(read_response(&mut stream).await.starts_with("HTTP/1.1 200"));

    // A second request that starts but never finishes is cut off.
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: portcullis.test\r\n")
        .await
        .unwrap();
    assert!(
        closed_within(&mut stream, Duration::from_secs(8)).await,
        "an unfinished head on a reused connection stayed open"
    );
    assert_eq!(env.upstream.count(), 2);
}
