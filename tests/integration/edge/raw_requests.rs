//! Every refusal is the gateway's: hostile requests sent as raw bytes over a socket, each of
//! which pingora's parser or validation used to answer itself (a bare 400 or 405, no body, no
//! request id, and no decision-log line, or a logged `allow`). Each must get the JSON body
//! with a request id, the documented status, nothing forwarded, and one decision-log line whose
//! decision and status match what the client got.

use serde_json::Value;

use crate::common::{decision_lines, eventually, raw_exchange, TestEnv};

const HOST: &str = "Host: tasks.example.com\r\n";

/// What is sent, and what must come back: (what, raw request, status, error code,
/// decision-log `method`).
type Case = (
    &'static str,
    Vec<u8>,
    u16,
    &'static str,
    Option<&'static str>,
);

fn cases(token: &str) -> Vec<Case> {
    let get = |target: &str, extra: &str| {
        format!("GET {target} HTTP/1.1\r\n{HOST}{extra}Connection: close\r\n\r\n").into_bytes()
    };
    // One `Connection` header: pingora reads only the first for `close`.
    let nominating = |target: &str, extra: &str, names: &str| {
        format!("GET {target} HTTP/1.1\r\n{HOST}{extra}Connection: close, {names}\r\n\r\n")
            .into_bytes()
    };
    let many_fields = |count: usize| {
        let fields: String = (0..count).map(|i| format!("X-Field-{i}: v\r\n")).collect();
        get("/health", &fields)
    };
    let authorization = format!("Authorization: Bearer {token}\r\n");
    let mut raw_target = b"GET /lists/acme-roadmap/tasks/caf".to_vec();
    raw_target.extend_from_slice(b"\xc3\xa9 HTTP/1.1\r\n");
    raw_target.extend_from_slice(HOST.as_bytes());
    raw_target.extend_from_slice(b"Connection: close\r\n\r\n");
    let mut invalid_utf8 = b"GET /health\xff\xfe HTTP/1.1\r\n".to_vec();
    invalid_utf8.extend_from_slice(HOST.as_bytes());
    invalid_utf8.extend_from_slice(b"\r\n");
    vec![
        // Targets: 414 at every length past the limit, below and above what `http::Uri` holds.
        ("target of 9 KiB", get(&format!("/lists/{}", "a".repeat(9 * 1024)), ""), 414, "uri_too_long", Some("GET")),
        ("target of 64 KiB", get(&format!("/lists/{}", "a".repeat(64 * 1024)), ""), 414, "uri_too_long", None),
        ("target of 200 KiB", get(&format!("/lists/{}", "a".repeat(200 * 1024)), ""), 414, "uri_too_long", None),
        // Header fields: 431 at every count past the limit, below and above pingora's 256.
        ("101 header fields", many_fields(101), 431, "headers_too_large", Some("GET")),
        ("300 header fields", many_fields(300), 431, "headers_too_large", None),
        ("raw UTF-8 bytes in the target", raw_target, 400, "bad_request", Some("GET")),
        ("invalid UTF-8 bytes in the target", invalid_utf8, 400, "bad_request", None),
        ("absolute-form target", get("http://tasks.example.com/health", ""), 400, "bad_request", Some("GET")),
        ("absolute-form target naming another host", get("http://admin.internal/health", ""), 400, "bad_request", None),
        ("two Host headers", get("/health", "Host: admin.internal\r\n"), 400, "bad_request", None),
        (
            "userinfo in Host",
            b"GET /health HTTP/1.1\r\nHost: admin@tasks.example.com\r\nConnection: close\r\n\r\n".to_vec(),
            400,
            "bad_request",
            None,
        ),
        (
            "a method that is no token",
            format!("G(T /health HTTP/1.1\r\n{HOST}Connection: close\r\n\r\n").into_bytes(),
            400,
            "bad_request",
            None,
        ),
        (
            "a control byte in the method",
            format!("GE\x01T /health HTTP/1.1\r\n{HOST}Connection: close\r\n\r\n").into_bytes(),
            400,
            "bad_request",
            None,
        ),
        (
            "CONNECT",
            b"CONNECT tasks.example.com:443 HTTP/1.1\r\nHost: tasks.example.com:443\r\n\r\n".to_vec(),
            501,
            "not_implemented",
            Some("CONNECT"),
        ),
        (
            "a signed Content-Length",
            format!("POST /lists/acme-roadmap/tasks HTTP/1.1\r\n{HOST}{authorization}Content-Length: +4\r\n\r\nabcd").into_bytes(),
            400,
            "bad_request",
            None,
        ),
        // Connection nominating what the proxy always forwards: decided in the pipeline,
        // before authentication, on an anonymous and on a protected route.
        ("Connection nominating X-Forwarded-For", nominating("/health", "", "X-Forwarded-For"), 400, "bad_request", Some("GET")),
        ("Connection nominating Host", nominating("/health", "", "Host"), 400, "bad_request", Some("GET")),
        (
            "Connection nominating X-Forwarded-Proto on a protected route",
            nominating("/lists/acme-roadmap", &authorization, "x-forwarded-proto"),
            400,
            "bad_request",
            Some("GET"),
        ),
        ("Connection nominating a pseudo-header", nominating("/health", "", ":authority"), 400, "bad_request", Some("GET")),
        ("Connection with a quoted name", nominating("/health", "", "\"X-Forwarded-For\""), 400, "bad_request", Some("GET")),
        ("Connection nominating ten names (with close)", nominating("/health", "", "a,b,c,d,e,f,g,h,i"), 400, "bad_request", Some("GET")),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_refusals_are_the_gateways_and_logged_as_what_the_client_got() {
    let env = TestEnv::start().await;
    let token = env.token("alice");
    for (what, request, status, error, method) in cases(&token) {
        let forwarded = env.upstream.count();
        let response = raw_exchange(env.gateway, &request).await;
        assert_eq!(response.status, status, "{what}: {response:?}");
        let body = response.json();
        assert_eq!(body["error"], error, "{what}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {body}"
        );
        let request_id = body["request_id"].as_str().unwrap_or_default().to_string();
        assert!(!request_id.is_empty(), "{what}: {body}");
        assert_eq!(
            response.header("x-request-id"),
            Some(request_id.as_str()),
            "{what}"
        );
        assert_eq!(
            response.header("content-type"),
            Some("application/json"),
            "{what}"
        );
        assert_eq!(env.upstream.count(), forwarded, "{what} was forwarded");
        let mut line = Value::Null;
        eventually(&format!("the decision line of {what}"), async || {
            line = decision_lines(&env.decision_log)
                .into_iter()
                .find(|l| l["request_id"] == request_id.as_str())
                .unwrap_or(Value::Null);
            !line.is_null()
        })
        .await;
        assert_eq!(line["status"], status, "{what}: {line}");
        assert_eq!(line["decision"], "bad_request", "{what}: {line}");
        assert_eq!(
            line["method"],
            method.map_or(Value::Null, Value::from),
            "{what}: {line}"
        );
        assert!(line["reason"].is_string(), "{what}: {line}");
    }
    // None of them left a line that says anything was allowed.
    let allowed = decision_lines(&env.decision_log)
        .into_iter()
        .filter(|l| l["decision"] == "allow")
        .count();
    assert_eq!(allowed, 0);
    let metrics = crate::common::raw_exchange(
        env.admin,
        b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
    )
    .await
    .body;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("portcullis_requests_total{")
                && l.contains("decision=\"bad_request\"")
                && l.contains("status_class=\"5xx\"")),
        "the refusals are counted: {metrics}"
    );
}

/// A `Connection` header that nominates ordinary headers is honoured: they are removed, the
/// request is decided and forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nominated_ordinary_headers_are_removed_and_the_request_forwarded() {
    let env = TestEnv::start().await;
    let request = format!(
        "GET /lists/acme-roadmap HTTP/1.1\r\n{HOST}Authorization: Bearer {}\r\n\
         X-Debug: 1\r\nX-Trace: 2\r\nConnection: close, X-Debug\r\nConnection: x-trace\r\n\r\n",
        env.token("bob")
    );
    let response = raw_exchange(env.gateway, request.as_bytes()).await;
    assert_eq!(response.status, 200, "{response:?}");
    let seen = env.upstream.last();
    assert!(seen.header_values("x-debug").is_empty(), "{seen:?}");
    assert!(seen.header_values("x-trace").is_empty(), "{seen:?}");
    assert_eq!(seen.header_values("x-portcullis-principal"), ["bob"]);
}
