//! The load test's generator for Envoy's gRPC ext_authz path: `Check` calls as fast as they are
//! answered, each the `CheckRequest` Envoy builds for the load test's request
//! (`GET /lists/acme-roadmap/tasks/t1` with the `warm` token), over `--connections` h2c
//! connections with `--streams` calls in flight on each. Prints one line `LOADTEST {json}` in
//! the shape of `wrk/portcullis.lua`'s (requests, errors, latency percentiles in µs); an answer
//! other than OK counts as `non_2xx_3xx`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use envoy_types::ext_authz::v3::pb::{Address, CheckRequest};
use envoy_types::pb::envoy::config::core::v3::{Address as EnvoyAddress, SocketAddress};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use tonic::transport::{Channel, Endpoint};

#[derive(Parser)]
struct Args {
    /// The gateway's decision listener.
    #[arg(long)]
    target: SocketAddr,
    /// A file whose first line is the bearer token.
    #[arg(long)]
    token_file: PathBuf,
    #[arg(long, default_value_t = 4)]
    connections: usize,
    #[arg(long, default_value_t = 8)]
    streams: usize,
    /// Seconds.
    #[arg(long, default_value_t = 5)]
    duration: u64,
    /// The request path the CheckRequest describes.
    #[arg(long, default_value = "/lists/acme-roadmap/tasks/t1")]
    path: String,
}

fn check_request(token: &str, path: &str) -> CheckRequest {
    let headers: HashMap<String, String> = [
        (":authority", "tasks.example.com"),
        (":method", "GET"),
        (":path", path),
        ("authorization", &format!("Bearer {token}")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                address: Some(EnvoyAddress {
                    address: Some(Address::SocketAddress(SocketAddress {
                        address: "10.0.0.7".into(),
                        ..SocketAddress::default()
                    })),
                }),
                ..Peer::default()
            }),
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: path.into(),
                    host: "tasks.example.com".into(),
                    scheme: "http".into(),
                    protocol: "HTTP/1.1".into(),
                    headers,
                    ..HttpRequest::default()
                }),
                ..Request::default()
            }),
            ..AttributeContext::default()
        }),
    }
}

/// (latencies in µs of OK answers, other answers, errors) of one stream's calls until `end`.
async fn stream(
    mut client: AuthorizationClient<Channel>,
    request: CheckRequest,
    end: Instant,
) -> (Vec<u64>, u64, u64) {
    let (mut latencies, mut refused, mut errors) = (Vec::new(), 0, 0);
    while Instant::now() < end {
        let started = Instant::now();
        match client.check(request.clone()).await {
            Ok(answer)
                if answer
                    .get_ref()
                    .status
                    .as_ref()
                    .is_some_and(|s| s.code == 0) =>
            {
                latencies.push(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
            }
            Ok(_) => refused += 1,
            Err(_) => errors += 1,
        }
    }
    (latencies, refused, errors)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let token = std::fs::read_to_string(&args.token_file)?;
    let token = token.lines().next().unwrap_or_default().trim().to_string();
    let request = check_request(&token, &args.path);
    let mut channels = Vec::new();
    for _ in 0..args.connections {
        let endpoint = Endpoint::from_shared(format!("http://{}", args.target))?;
        channels.push(endpoint.connect().await?);
    }
    let started = Instant::now();
    let end = started + Duration::from_secs(args.duration);
    let mut tasks = Vec::new();
    for channel in &channels {
        for _ in 0..args.streams {
            let client = AuthorizationClient::new(channel.clone());
            tasks.push(tokio::spawn(stream(client, request.clone(), end)));
        }
    }
    let (mut latencies, mut refused, mut errors) = (Vec::new(), 0, 0);
    for task in tasks {
        let (l, r, e) = task.await?;
        latencies.extend(l);
        refused += r;
        errors += e;
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let report = serde_json::json!({
        "requests": latencies.len() as u64 + refused,
        "duration_us": elapsed.as_micros() as u64,
        "non_2xx_3xx": refused,
        "connect_errors": 0,
        "read_errors": errors,
        "write_errors": 0,
        "timeouts": 0,
        "p50_us": percentile(0.50),
        "p99_us": percentile(0.99),
        "p999_us": percentile(0.999),
    });
    println!("LOADTEST {report}");
    Ok(())
}
