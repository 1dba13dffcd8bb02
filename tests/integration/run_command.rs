//! `portcullis run` as users start it: the real binary hosting the proxy in a pingora Server,
//! fetching keys over HTTP at start, and draining on SIGTERM.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::{try_exchange, write_config, EchoUpstream, AUDIENCE};
use portcullis::demo::{demo_claims, SigningAlg};

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port that was free a moment ago (pingora cannot report the port it bound for port 0).
fn free_port() -> SocketAddr {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The status of a GET, or None when nothing answers.
async fn get(address: SocketAddr, target: &str, token: Option<&str>) -> Option<u16> {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!("GET {target} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
    try_exchange(address, request.as_bytes())
        .await
        .ok()
        .map(|r| r.status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_and_stops_on_sigterm() {
    let upstream = EchoUpstream::start().await;
    let (issuer, issuer_url, _issuer_task) = crate::common::start_dev_issuer().await;

    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &issuer_url, upstream.address);
    let listen = free_port();
    let config = dir.path().join("portcullis.toml");
    // Its own ports and files: tests run in parallel, and next to a demo.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("127.0.0.1:8080", &listen.to_string())
        .replace("127.0.0.1:9901", &free_port().to_string())
        .replace(
            "realm = \"tasks\"",
            &format!(
                "realm = \"tasks\"\npid_file = {:?}\nupgrade_socket = {:?}",
                dir.path().join("portcullis.pid"),
                dir.path().join("upgrade.sock")
            ),
        );
    std::fs::write(&config, text).unwrap();

    // --listen and --admin-listen win over the file's addresses; the log is JSON lines
    // (PORTCULLIS_LOG_FORMAT, as --log-format).
    let (configured, listen, admin) = (listen, free_port(), free_port());
    let log = dir.path().join("gateway.log");
    let gateway = Running(
        Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["run", "--config"])
            .arg(&config)
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--admin-listen")
            .arg(admin.to_string())
            .env("RUST_LOG", "info")
            .env("PORTCULLIS_LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let mut status = None;
    for _ in 0..100 {
        status = get(listen, "/health", None).await;
        if status.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, Some(200), "the gateway did not come up");
    assert_eq!(get(configured, "/health", None).await, None);
    let mut ready = None;
    for _ in 0..100 {
        ready = get(admin, "/healthz", None).await;
        if ready.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        ready,
        Some(200),
        "the admin listener is not on --admin-listen"
    );

    let token = issuer
        .mint(
            SigningAlg::Es256,
            &demo_claims(&issuer_url, AUDIENCE, "alice", &["manager"], "org_acme"),
        )
        .unwrap();
    assert_eq!(
        get(listen, "/lists/acme-roadmap/tasks/t1", Some(&token)).await,
        Some(200)
    );
    assert_eq!(
        get(listen, "/lists/acme-roadmap/tasks/t1", None).await,
        Some(401)
    );
    assert_eq!(upstream.count(), 2);
    assert_eq!(
        upstream.last().header_values("x-portcullis-principal"),
        ["alice"]
    );

    // SIGTERM: the listener closes (graceful shutdown then waits out pingora's grace period).
    let pid = gateway.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let mut closed = false;
    for _ in 0..50 {
        if get(listen, "/health", None).await.is_none() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(closed, "the listener stayed open after SIGTERM");

    // Every line of the gateway's own log is a JSON object with a level and a message, the
    // gateway's and pingora's (`log` records) alike.
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    assert!(
        lines.iter().all(|l| l["level"].is_string()
            && l["message"].is_string()
            && l["timestamp"].is_string()),
        "{text}"
    );
    assert!(
        lines.iter().any(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.contains("key set loaded"))),
        "{text}"
    );
}
