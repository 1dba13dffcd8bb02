//! CORS with curl as the browser's stand-in: preflights answered by the gateway without a
//! token and never forwarded, CORS headers on every response to an allowed origin (refusals
//! included, the application's own replaced), none for any other origin.

use crate::common::{decision_lines, eventually, TestEnv};
use crate::edge::support::{append_config, curl};

const APP: &str = "https://app.example.com";

async fn cors_env() -> TestEnv {
    TestEnv::start_with(|dir, _| {
        append_config(
            dir,
            "\n[cors]\n\
             allow_origins = [\"https://app.example.com\", \"https://*.tenants.example.com\"]\n\
             allow_credentials = true\n\
             max_age_seconds = 300\n",
        );
    })
    .await
}

fn url(env: &TestEnv, path: &str) -> String {
    format!("http://{}{path}", env.gateway)
}

fn preflight(
    env: &TestEnv,
    origin: &str,
    method: &str,
    headers: &str,
) -> crate::edge::support::CurlResponse {
    curl(&[
        "-X",
        "OPTIONS",
        "-H",
        &format!("Origin: {origin}"),
        "-H",
        &format!("Access-Control-Request-Method: {method}"),
        "-H",
        &format!("Access-Control-Request-Headers: {headers}"),
        &url(env, "/lists/acme-roadmap/tasks/t2"),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflights_are_answered_by_the_gateway_without_a_token() {
    let env = cors_env().await;
    let answered = preflight(&env, APP, "PATCH", "authorization, content-type");
    assert_eq!(answered.status, 204, "{answered:?}");
    assert_eq!(answered.header("access-control-allow-origin"), Some(APP));
    assert_eq!(
        answered.header("access-control-allow-methods"),
        Some("PATCH")
    );
    assert_eq!(
        answered.header("access-control-allow-headers"),
        Some("authorization, content-type")
    );
    assert_eq!(
        answered.header("access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(answered.header("access-control-max-age"), Some("300"));
    assert_eq!(answered.header("vary"), Some("Origin"));
    assert!(answered.header("content-length").is_none(), "{answered:?}");
    assert!(answered.body.is_empty());
    let request_id = answered
        .header("x-request-id")
        .unwrap_or_default()
        .to_string();
    assert!(!request_id.is_empty());

    // A subdomain of the wildcard pattern is answered too.
    let tenant = preflight(
        &env,
        "https://acme.tenants.example.com",
        "GET",
        "authorization",
    );
    assert_eq!(tenant.status, 204, "{tenant:?}");

    // Refused: another origin, a header not allowed (403, our JSON body, no CORS headers);
    // a method no route serves on the path (405, with the CORS headers, as every refusal).
    let elsewhere = preflight(&env, "https://evil.example", "PATCH", "authorization");
    elsewhere.assert_refusal(403);
    assert_eq!(elsewhere.json()["error"], "cors_preflight_refused");
    assert!(elsewhere.header("access-control-allow-origin").is_none());
    let header = preflight(&env, APP, "PATCH", "x-debug");
    header.assert_refusal(403);
    assert!(header.json()["message"]
        .as_str()
        .unwrap_or_default()
        .contains("x-debug"));
    let unrouted = preflight(&env, APP, "PUT", "authorization");
    unrouted.assert_refusal(405);
    assert_eq!(unrouted.header("access-control-allow-origin"), Some(APP));

    // Nothing reached the application, and each preflight is one decision-log line.
    assert_eq!(env.upstream.count(), 0);
    eventually("the preflight's decision line", async || {
        decision_lines(&env.decision_log).iter().any(|l| {
            l["request_id"] == request_id.as_str()
                && l["decision"] == "preflight"
                && l["status"] == 204
        })
    })
    .await;
    let lines = decision_lines(&env.decision_log);
    assert!(lines
        .iter()
        .any(|l| l["decision"] == "preflight_refused" && l["status"] == 403));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_to_an_allowed_origin_carries_the_cors_headers() {
    let env = cors_env().await;
    let bob = format!("Authorization: Bearer {}", env.token("bob"));
    let origin = format!("Origin: {APP}");
    // Forwarded: the application's own CORS header is replaced by the gateway's.
    let allowed = curl(&[
        "-H",
        &bob,
        "-H",
        &origin,
        "-H",
        "x-echo-allow-origin: *",
        &url(&env, "/lists/acme-roadmap"),
    ]);
    assert_eq!(allowed.status, 200, "{allowed:?}");
    assert_eq!(allowed.header("access-control-allow-origin"), Some(APP));
    assert_eq!(
        allowed.header("access-control-expose-headers"),
        Some("x-request-id")
    );
    assert_eq!(
        allowed.header("access-control-allow-credentials"),
        Some("true")
    );
    let origins: Vec<_> = allowed
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("access-control-allow-origin"))
        .collect();
    assert_eq!(origins.len(), 1, "{allowed:?}");

    // Refusals: readable by the script, with the challenge and the JSON body.
    let unauthenticated = curl(&["-H", &origin, &url(&env, "/lists/acme-roadmap")]);
    unauthenticated.assert_refusal(401);
    assert_eq!(
        unauthenticated.header("access-control-allow-origin"),
        Some(APP)
    );
    assert!(unauthenticated.header("www-authenticate").is_some());
    let carol = format!("Authorization: Bearer {}", env.token("carol"));
    let forbidden = curl(&[
        "-H",
        &carol,
        "-H",
        &origin,
        &url(&env, "/lists/acme-roadmap"),
    ]);
    forbidden.assert_refusal(403);
    assert_eq!(forbidden.header("access-control-allow-origin"), Some(APP));

    // Another origin: the request is decided as always, but carries no CORS header (the
    // application's own is removed too), so a browser withholds the response from the script.
    let other = curl(&[
        "-H",
        &bob,
        "-H",
        "Origin: https://evil.example",
        "-H",
        "x-echo-allow-origin: https://evil.example",
        &url(&env, "/lists/acme-roadmap"),
    ]);
    assert_eq!(other.status, 200, "{other:?}");
    assert!(
        other.header("access-control-allow-origin").is_none(),
        "{other:?}"
    );
    assert_eq!(other.header("vary"), Some("Origin"), "{other:?}");
    // CORS grants nothing: a preflight answered does not let the request through.
    let anonymous_patch = curl(&[
        "-X",
        "PATCH",
        "-H",
        &origin,
        &url(&env, "/lists/acme-roadmap/tasks/t2"),
    ]);
    anonymous_patch.assert_refusal(401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_cors_a_preflight_is_routed_like_any_request() {
    let env = TestEnv::start().await;
    let refused = preflight(&env, APP, "PATCH", "authorization");
    refused.assert_refusal(405);
    assert!(refused.header("access-control-allow-origin").is_none());
}
