//! HTTP/2 downstream: ALPN `h2` on TLS and h2c prior knowledge on plaintext, with every
//! refusal class answered by the gateway (JSON body, request id) exactly as over HTTP/1.1, the
//! identity-header and forwarding rules applied to h2 requests, and idle h2 connections closed.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::eventually;
use crate::edge::edge_env;
use crate::edge::support::{curl, resolve};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_class_is_answered_alike_over_http1_and_http2() {
    let (env, ca) = edge_env().await;
    let snapshot = env.state.snapshot();
    let unhealthy = snapshot.pools.get("unhealthy").unwrap().clone();
    eventually(
        "the health check marks the dead address unhealthy",
        async || unhealthy.members().iter().all(|(_, ready)| !ready),
    )
    .await;
    let tls = env.gateway_tls.unwrap();
    let ca = ca.to_str().unwrap();
    let route = resolve("api.example.com", tls);
    let url = |path: &str| format!("https://api.example.com:{}{path}", tls.port());
    let carol = format!("Authorization: Bearer {}", env.token("carol"));
    let alice = format!("Authorization: Bearer {}", env.token("alice"));
    let many_headers: Vec<String> = (0..101).map(|i| format!("x-filler-{i}: {i}")).collect();
    let big_body = "x".repeat(100);
    let cases: Vec<(u16, Vec<String>)> = vec![
        (400, vec!["--path-as-is".into(), url("/lists/a/../b")]),
        (401, vec![url("/lists/acme-roadmap")]),
        (
            403,
            vec!["-H".into(), carol.clone(), url("/lists/acme-roadmap")],
        ),
        (404, vec!["-H".into(), alice.clone(), url("/admin")]),
        (
            405,
            vec!["-X".into(), "PUT".into(), url("/lists/acme-roadmap")],
        ),
        (413, vec!["--data".into(), big_body, url("/edge/upload")]),
        (
            431,
            many_headers
                .iter()
                .flat_map(|h| ["-H".to_string(), h.clone()])
                .chain([url("/health")])
                .collect(),
        ),
        (502, vec![url("/edge/dead")]),
        (503, vec![url("/edge/unhealthy")]),
        (
            504,
            vec![
                "-H".into(),
                "x-echo-delay-ms: 5000".into(),
                url("/edge/slow"),
            ],
        ),
    ];
    for (http, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        for (status, args) in &cases {
            let mut all = vec![http, "--cacert", ca, "--resolve", &route];
            all.extend(args.iter().map(String::as_str));
            let response = curl(&all);
            assert_eq!(
                response.http_version, version,
                "{status} over {http}: {response:?}"
            );
            response.assert_refusal(*status);
        }
    }
    // Of all those, only the two slow requests reached an upstream.
    assert_eq!(env.upstream.count(), 2);
    let timeouts = || {
        crate::common::decision_lines(&env.decision_log)
            .into_iter()
            .filter(|line| line["upstream_failure"] == "timeout")
            .collect::<Vec<_>>()
    };
    eventually("both timeouts are logged", async || timeouts().len() == 2).await;
    assert!(timeouts().iter().all(|line| line["status"] == 504));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_on_the_plaintext_listener() {
    let (env, _) = edge_env().await;
    let ok = curl(&[
        "--http2-prior-knowledge",
        &format!("http://{}/health", env.gateway),
    ]);
    assert_eq!((ok.status, ok.http_version.as_str()), (200, "2"), "{ok:?}");
    let refused = curl(&[
        "--http2-prior-knowledge",
        &format!("http://{}/lists/acme-roadmap", env.gateway),
    ]);
    refused.assert_refusal(401);
    assert!(refused
        .header("www-authenticate")
        .is_some_and(|v| v.starts_with("Bearer realm=")));
    // HTTP/1.1 still works on the same listener.
    let old = curl(&[&format!("http://{}/health", env.gateway)]);
    assert_eq!((old.status, old.http_version.as_str()), (200, "1.1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_and_forwarding_headers_from_h2_clients_are_replaced() {
    let (env, ca) = edge_env().await;
    let tls = env.gateway_tls.unwrap();
    let bob = format!("Authorization: Bearer {}", env.token("bob"));
    let response = curl(&[
        "--http2",
        "--cacert",
        ca.to_str().unwrap(),
        "--resolve",
        &resolve("api.example.com", tls),
        "-H",
        &bob,
        "-H",
        "x-portcullis-principal: admin",
        "-H",
        "x_portcullis_roles: admin",
        "-H",
        "x-forwarded-for: 10.0.0.1",
        "-H",
        "x-forwarded-host: admin.internal",
        "-H",
        "x-forwarded-proto: http",
        "-H",
        "x-http-method-override: DELETE",
        "-H",
        "x-request-id: forged",
        "-H",
        "x-middleware-subrequest: middleware",
        "-H",
        "x_react_router_spa_mode: yes",
        &format!("https://api.example.com:{}/lists/acme-roadmap", tls.port()),
    ]);
    assert_eq!(response.status, 200, "{response:?}");
    let seen = env.upstream.last();
    assert_eq!(seen.header_values("x-portcullis-principal"), ["bob"]);
    assert!(seen.header_values("x_portcullis_roles").is_empty());
    assert_eq!(seen.header_values("x-portcullis-roles"), ["viewer"]);
    assert_eq!(seen.header_values("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(seen.header_values("x-forwarded-proto"), ["https"]);
    assert_eq!(
        seen.header_values("x-forwarded-host"),
        [format!("api.example.com:{}", tls.port())]
    );
    assert!(seen.header_values("x-http-method-override").is_empty());
    assert!(seen.header_values("x-middleware-subrequest").is_empty());
    assert!(seen.header_values("x_react_router_spa_mode").is_empty());
    assert_ne!(seen.header_values("x-request-id"), ["forged"]);
    assert_eq!(
        seen.header_values("host"),
        [format!("api.example.com:{}", tls.port())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxys_request_id_and_forwarding_headers_are_kept() {
    let env = crate::common::TestEnv::start_with(|dir, _| {
        crate::edge::support::add_to_server_section(dir, "trusted_proxies = [\"127.0.0.1/32\"]");
    })
    .await;
    let response = curl(&[
        "-H",
        "x-request-id: 5f1c2a9e-77b1-4c2e",
        "-H",
        "x-forwarded-proto: https",
        "-H",
        "x-forwarded-host: api.example.com",
        &format!("http://{}/health", env.gateway),
    ]);
    assert_eq!(response.status, 200);
    assert_eq!(response.header("x-request-id"), None);
    let seen = env.upstream.last();
    assert_eq!(seen.header_values("x-request-id"), ["5f1c2a9e-77b1-4c2e"]);
    assert_eq!(seen.header_values("x-forwarded-proto"), ["https"]);
    assert_eq!(seen.header_values("x-forwarded-host"), ["api.example.com"]);
    let refused = curl(&[
        "-H",
        "x-request-id: 5f1c2a9e-77b1-4c2e",
        &format!("http://{}/lists/acme-roadmap", env.gateway),
    ]);
    refused.assert_refusal(401);
    assert_eq!(refused.json()["request_id"], "5f1c2a9e-77b1-4c2e");
}

/// A gateway taking h2c, with an idle timeout of 1 s.
async fn h2c_gateway_idle_after_one_second() -> crate::common::TestEnv {
    crate::common::TestEnv::start_with(|dir, _| {
        crate::edge::support::add_to_server_section(dir, "h2c = true");
        crate::edge::support::set_limits(dir, "idle_timeout_seconds = 1");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_h2_connection_is_closed() {
    let env = h2c_gateway_idle_after_one_second().await;
    let mut stream = tokio::net::TcpStream::connect(env.gateway).await.unwrap();
    // The client preface and an empty SETTINGS frame, then nothing.
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let mut buffer = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "an idle h2 connection stays open");
    assert_eq!(env.upstream.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_connection_idles_out_only_once_no_stream_is_in_flight() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let env = h2c_gateway_idle_after_one_second().await;
    let tcp = tokio::net::TcpStream::connect(env.gateway).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    // The upstream answers after 2.5 s: past the idle timeout, within the read timeout (15 s),
    // and nothing crosses the connection meanwhile. Idle means no stream in flight.
    let request = http::Request::get("http://tasks.example.com/health")
        .header("x-echo-delay-ms", "2500")
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let _ = response.into_body().collect().await.unwrap();
    assert_eq!(env.upstream.count(), 1);
    // Then, with nothing in flight, the gateway closes it.
    let closed = tokio::time::timeout(Duration::from_secs(15), connection).await;
    assert!(
        closed.is_ok(),
        "an h2 connection idle after its stream stays open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_connection_over_tls_stays_open_while_a_stream_is_in_flight() {
    // Over TLS the connection's streams are found through the TLS stream: the same count.
    let ca = crate::edge::support::TestCa::new();
    let mut ca_file = std::path::PathBuf::new();
    let ca_path = &mut ca_file;
    let env = crate::common::TestEnv::start_with(move |dir, _| {
        crate::edge::write_certificates(&ca, &dir.join("certs"));
        *ca_path = ca.write_ca(dir);
        crate::edge::support::set_limits(dir, "idle_timeout_seconds = 1");
        crate::edge::support::append_config(
            dir,
            "\n[server.tls]\nlisten = \"127.0.0.1:0\"\n\
             certificates = [{ cert = \"certs/api.crt\", key = \"certs/api.key\" }]\n",
        );
    })
    .await;
    let tls = env.gateway_tls.unwrap();
    let route = resolve("api.example.com", tls);
    let url = format!("https://api.example.com:{}/health", tls.port());
    let ca = ca_file.to_str().unwrap().to_string();
    let response = tokio::task::spawn_blocking(move || {
        curl(&[
            "--http2",
            "--cacert",
            &ca,
            "--resolve",
            &route,
            "-H",
            "x-echo-delay-ms: 2500",
            &url,
        ])
    })
    .await
    .unwrap();
    assert_eq!(
        (response.status, response.http_version.as_str()),
        (200, "2"),
        "{response:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_body_over_the_limit_is_cut_off_with_413() {
    let (env, _) = edge_env().await;
    // Chunked: no Content-Length to refuse up front; the limit (16 bytes) is met mid-stream.
    let request = b"POST /edge/upload HTTP/1.1\r\nHost: tasks.example.com\r\n\
        Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
        a\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n";
    let response = crate::common::raw_exchange(env.gateway, request).await;
    assert_eq!(response.status, 413, "{}", response.body);
    let body = response.json();
    assert_eq!(body["error"], "body_too_large");
    assert_eq!(response.header("x-request-id"), body["request_id"].as_str());
    // Within the limit, the same stream is forwarded.
    let small = b"POST /edge/upload HTTP/1.1\r\nHost: tasks.example.com\r\n\
        Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
        a\r\n0123456789\r\n0\r\n\r\n";
    assert_eq!(
        crate::common::raw_exchange(env.gateway, small).await.status,
        200
    );
}

/// Sends `GET path` as HTTP/2 with prior knowledge; the status.
async fn h2_get(gateway: std::net::SocketAddr, path: &str, token: &str) -> u16 {
    h2_get_with(gateway, path, token, &[]).await
}

/// `h2_get` with extra header fields (their names lower-cased, as HTTP/2 requires).
async fn h2_get_with(
    gateway: std::net::SocketAddr,
    path: &str,
    token: &str,
    headers: &[(&str, &str)],
) -> u16 {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let tcp = tokio::net::TcpStream::connect(gateway).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut request = http::Request::get(format!("http://tasks.example.com{path}"))
        .header("authorization", format!("Bearer {token}"));
    for (name, value) in headers {
        request = request.header(name.to_ascii_lowercase(), *value);
    }
    let request = request.body(Empty::<bytes::Bytes>::new()).unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_path_corpus_holds_over_http2() {
    use crate::common::path_corpus::CORPUS;
    let (env, _) = edge_env().await;
    let token = env.token("dave");
    let long = format!("/lists/{}", "a".repeat(9000));
    let mut failures = Vec::new();
    let mut sent = 0;
    for (target, status, forwarded) in CORPUS {
        let target = if *target == "/lists/LONG" {
            long.as_str()
        } else {
            target
        };
        // `:path` is origin-form only, and a URI (what an HTTP/2 client can send): the
        // non-origin forms and fragments of the corpus have no HTTP/2 spelling.
        if !target.starts_with('/')
            || target.contains('#')
            || format!("http://tasks.example.com{target}")
                .parse::<http::Uri>()
                .is_err()
        {
            continue;
        }
        sent += 1;
        let before = env.upstream.count();
        let got = h2_get(env.gateway, target, &token).await;
        let reached = env.upstream.count() > before;
        let seen = reached.then(|| env.upstream.last().target);
        let expected_seen = forwarded.map(str::to_string);
        if got != *status || seen != expected_seen {
            failures.push(format!(
                "{target:?}: got {got} and upstream {seen:?}, expected {status} and {expected_seen:?}"
            ));
        }
    }
    assert!(sent >= 40, "only {sent} targets have an HTTP/2 spelling");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_header_trust_cases_hold_over_http2() {
    use crate::common::spoofed_headers::{FORWARDING, IDENTITY, METHOD_OVERRIDES};
    let (env, _) = edge_env().await;
    let token = env.token("bob");
    for (name, value) in FORWARDING.iter().chain(METHOD_OVERRIDES).chain(IDENTITY) {
        let status =
            h2_get_with(env.gateway, "/lists/acme-roadmap", &token, &[(name, value)]).await;
        assert_eq!(status, 200, "{name}");
        let seen = env.upstream.last();
        assert_eq!(seen.method, "GET", "{name}");
        let leaked: Vec<_> = seen.headers.iter().filter(|(_, v)| v == value).collect();
        assert!(leaked.is_empty(), "{name}: {leaked:?}");
        assert_eq!(
            seen.header_values("x-forwarded-for"),
            ["127.0.0.1"],
            "{name}"
        );
        assert_eq!(
            seen.header_values("x-portcullis-principal"),
            ["bob"],
            "{name}"
        );
    }
}
