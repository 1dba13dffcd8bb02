//! The edge data plane over real sockets with real clients: TLS termination with SNI and
//! certificate rotation, HTTP/2 (ALPN and h2c), every refusal class over both protocols, gRPC
//! through an h2c upstream, WebSocket tunnels, upstream pools with health checks, timeouts and
//! retries; external authorization behind nginx and Caddy. curl is the client wherever the
//! feature meets it; the gateway and upstreams are the real ones on ephemeral loopback ports.

mod cors;
mod directory_sync;
mod forward_auth;
mod grpc;
mod idp_apis;
mod pools;
mod protocols;
mod raw_requests;
pub mod support;
mod tls;
mod websocket;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::common::TestEnv;
use support::{add_to_server_section, append_config, TestCa};

/// Routes added to the repository's for the edge tests: anonymous `Health` routes to upstreams
/// that are dead, hung or unhealthy, and a body limit on task creation.
const EDGE_ROUTES: &str = r#"
[upstreams.dead]
address = "{dead}"
retries = 0

[upstreams.slow]
address = "{upstream}"
timeouts = { read_milliseconds = 300 }

[upstreams.unhealthy]
address = "{dead}"
health_check = { path = "/health", interval_seconds = 1, unhealthy_threshold = 1 }

[[routes]]
id = "dead"
methods = ["GET"]
path = "/edge/dead"
upstream = "dead"
action = "Health"
resource = { type = "Application", id = "tasks" }
auth = "anonymous"

[[routes]]
id = "slow"
methods = ["GET"]
path = "/edge/slow"
upstream = "slow"
action = "Health"
resource = { type = "Application", id = "tasks" }
auth = "anonymous"

[[routes]]
id = "unhealthy"
methods = ["GET"]
path = "/edge/unhealthy"
upstream = "unhealthy"
action = "Health"
resource = { type = "Application", id = "tasks" }
auth = "anonymous"

[[routes]]
id = "small-upload"
methods = ["POST"]
path = "/edge/upload"
upstream = "tasks"
action = "Health"
resource = { type = "Application", id = "tasks" }
auth = "anonymous"
max_body_bytes = 16
"#;

/// A TestEnv with TLS (certificates for `default.test`, `api.example.com` and
/// `*.apps.example.com`, signed by a test CA), h2c on the plaintext listener, and the edge
/// routes. Returns the env and the CA file.
pub async fn edge_env() -> (TestEnv, PathBuf) {
    edge_env_with("").await
}

/// `edge_env` with `tls_extra` added to `[server.tls]`.
pub async fn edge_env_with(tls_extra: &str) -> (TestEnv, PathBuf) {
    let ca = TestCa::new();
    let dead = closed_port();
    let tls_extra = tls_extra.to_string();
    let mut ca_file = PathBuf::new();
    let ca_path = &mut ca_file;
    let env = TestEnv::start_with(move |dir, upstream| {
        write_certificates(&ca, &dir.join("certs"));
        *ca_path = ca.write_ca(dir);
        add_to_server_section(dir, "h2c = true");
        append_config(
            dir,
            &format!(
                r#"
[server.tls]
listen = "127.0.0.1:0"
{tls_extra}
certificates = [
  {{ cert = "certs/default.crt", key = "certs/default.key" }},
  {{ cert = "certs/api.crt", key = "certs/api.key" }},
  {{ cert = "certs/wild.crt", key = "certs/wild.key" }},
]
"#
            ),
        );
        crate::common::append_routes(
            dir,
            &EDGE_ROUTES
                .replace("{dead}", &dead.to_string())
                .replace("{upstream}", &upstream.to_string()),
        );
    })
    .await;
    (env, ca_file)
}

pub fn write_certificates(ca: &TestCa, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    ca.write_leaf(dir, "default", "default", &["default.test"]);
    ca.write_leaf(dir, "api", "api", &["api.example.com"]);
    ca.write_leaf(dir, "wild", "wild", &["*.apps.example.com"]);
}

/// A loopback port nothing listens on.
pub fn closed_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}
