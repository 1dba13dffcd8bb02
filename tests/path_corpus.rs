//! The adversarial path corpus: request targets written byte for byte on a raw TCP socket to the
//! real gateway, each with the status it must get and exactly what the upstream must receive
//! (or that it receives nothing). The caller is dave, an admin of org_acme, so that every
//! refusal here is the target's doing, not the policies'.

mod common;

use common::{raw_exchange, TestEnv};

/// (target as sent, expected status, target the upstream receives when forwarded)
const CORPUS: &[(&str, u16, Option<&str>)] = &[
    // Plain and canonicalized spellings of allowed paths.
    ("/lists/acme-roadmap", 200, Some("/lists/acme-roadmap")),
    (
        "/lists/acme-roadmap/tasks/t1",
        200,
        Some("/lists/acme-roadmap/tasks/t1"),
    ),
    ("/lists/%61cme-roadmap", 200, Some("/lists/acme-roadmap")),
    ("/lists/acme%2droadmap", 200, Some("/lists/acme-roadmap")),
    (
        "/lists/acme%2Droadmap/tasks/%74%31",
        200,
        Some("/lists/acme-roadmap/tasks/t1"),
    ),
    (
        "/lists/acme-roadmap/tasks/t%31",
        200,
        Some("/lists/acme-roadmap/tasks/t1"),
    ),
    (
        "/lists/acme-roadmap?x=%2F..%2f&y",
        200,
        Some("/lists/acme-roadmap?x=%2F..%2f&y"),
    ),
    (
        "/lists/acme-roadmap?_method=DELETE",
        200,
        Some("/lists/acme-roadmap"),
    ),
    (
        "/lists/acme-roadmap/tasks/t%7e",
        200,
        Some("/lists/acme-roadmap/tasks/t~"),
    ),
    (
        "/lists/acme-roadmap/tasks/caf%c3%a9",
        200,
        Some("/lists/acme-roadmap/tasks/caf%C3%A9"),
    ),
    // Dot segments, raw and encoded.
    ("/lists/acme-roadmap/../globex-ops", 400, None),
    ("/lists/acme-roadmap/./tasks", 400, None),
    ("/lists/%2e%2e/globex-ops", 400, None),
    ("/lists/%2E%2E/globex-ops", 400, None),
    ("/lists/.%2e/globex-ops", 400, None),
    ("/lists/%2e./globex-ops", 400, None),
    ("/lists/acme-roadmap/tasks/..", 400, None),
    ("/lists/acme-roadmap/tasks/%2e", 400, None),
    // Encoded separators.
    ("/lists/acme-roadmap%2ftasks", 400, None),
    ("/lists/acme-roadmap%2Ftasks/t1", 400, None),
    ("/lists/acme-roadmap/tasks/..%2ft3", 400, None),
    ("/lists/acme-roadmap%5ctasks", 400, None),
    ("/lists/acme-roadmap%5Ctasks", 400, None),
    ("/lists/acme-roadmap\\tasks", 400, None),
    // Empty segments.
    ("/lists//acme-roadmap", 400, None),
    ("//lists/acme-roadmap", 400, None),
    ("/lists/acme-roadmap//tasks", 400, None),
    // Path parameters.
    ("/lists/acme-roadmap;x=1", 400, None),
    ("/lists/acme-roadmap;/tasks/t1", 400, None),
    ("/lists/acme-roadmap/tasks/t1;.css", 400, None),
    // Control characters and NUL, encoded.
    ("/lists/acme-roadmap%00", 400, None),
    ("/lists/acme-roadmap%0a", 400, None),
    ("/lists/acme-roadmap%0D%0AX-Injected:%201", 400, None),
    ("/lists/acme-roadmap%7f", 400, None),
    // Double encoding, invalid UTF-8, overlong encodings.
    ("/lists/acme%252droadmap", 400, None),
    ("/lists/%252e%252e/globex-ops", 400, None),
    // Double encoding with the inner escape's digits encoded too (found by fuzz/canonicalize).
    ("/lists/acme%25%32droadmap", 400, None),
    ("/lists/%25%32e%25%32e/globex-ops", 400, None),
    // An encoded C1 control, NEL (found by fuzz/canonicalize).
    ("/lists/acme%C2%85roadmap", 400, None),
    ("/lists/%c0%ae%c0%ae/globex-ops", 400, None),
    ("/lists/%c0%af", 400, None),
    ("/lists/%ff", 400, None),
    ("/lists/%e0%80%ae", 400, None),
    // Malformed escapes.
    ("/lists/acme-roadmap%", 400, None),
    ("/lists/acme-roadmap%2", 400, None),
    ("/lists/acme-roadmap%zz", 400, None),
    // Fragments: pingora's parser drops them before the gateway sees the target, so the
    // fragment is neither authorized nor forwarded. An encoded `#` is part of the segment.
    ("/lists/acme-roadmap#frag", 200, Some("/lists/acme-roadmap")),
    (
        "/lists/acme-roadmap#/../globex-ops",
        200,
        Some("/lists/acme-roadmap"),
    ),
    ("/lists/acme-roadmap%23frag", 403, None),
    // Non-origin forms.
    ("*", 400, None),
    ("http://tasks.example.com/lists/acme-roadmap", 400, None),
    ("tasks.example.com:80", 400, None),
    // Case is significant; trailing slashes are distinct paths; unknown paths are 404.
    ("/LISTS/acme-roadmap", 404, None),
    ("/lists/acme-roadmap/", 404, None),
    ("/lists/acme-roadmap/tasks/", 404, None),
    // Over-long targets.
    ("/lists/LONG", 414, None),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_target_gets_its_status_and_the_upstream_exactly_its_canonical_form() {
    let env = TestEnv::start().await;
    let token = env.token("dave");
    let long = format!("/lists/{}", "a".repeat(9000));
    let mut failures = Vec::new();
    for (target, status, forwarded) in CORPUS {
        let target = if *target == "/lists/LONG" {
            long.as_str()
        } else {
            target
        };
        let request = format!(
            "GET {target} HTTP/1.1\r\nHost: tasks.example.com\r\nConnection: close\r\n\
             Authorization: Bearer {token}\r\n\r\n"
        );
        let before = env.upstream.count();
        let response = raw_exchange(env.gateway, request.as_bytes()).await;
        let reached = env.upstream.count() > before;
        let seen = reached.then(|| env.upstream.last().target);
        let expected_seen = forwarded.map(str::to_string);
        if response.status != *status || seen != expected_seen {
            failures.push(format!(
                "{target:?}: got {} and upstream {seen:?}, expected {status} and {expected_seen:?}",
                response.status
            ));
        }
    }
    assert!(CORPUS.len() >= 40);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// (request line as sent, expected status): methods are case-sensitive tokens, and one no route
/// lists is refused before authentication.
const METHODS: &[(&str, u16)] = &[
    ("GET /lists/acme-roadmap HTTP/1.1", 200),
    ("get /lists/acme-roadmap HTTP/1.1", 405),
    ("Get /lists/acme-roadmap HTTP/1.1", 405),
    ("PROPFIND /lists/acme-roadmap HTTP/1.1", 405),
    ("TRACE /lists/acme-roadmap HTTP/1.1", 405),
    ("DELETE /lists/acme-roadmap HTTP/1.1", 405),
    ("BREW /nowhere HTTP/1.1", 404),
    // pingora refuses CONNECT itself (405, no Allow: no method would do).
    ("CONNECT tasks.example.com:443 HTTP/1.1", 405),
    ("G(T /lists/acme-roadmap HTTP/1.1", 400),
    ("GET\t/lists/acme-roadmap HTTP/1.1", 400),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_or_miscased_methods_are_refused() {
    let env = TestEnv::start().await;
    let token = env.token("dave");
    let mut failures = Vec::new();
    for (line, status) in METHODS {
        let request = format!(
            "{line}\r\nHost: tasks.example.com\r\nConnection: close\r\n\
             Authorization: Bearer {token}\r\n\r\n"
        );
        let before = env.upstream.count();
        let response = raw_exchange(env.gateway, request.as_bytes()).await;
        let reached = env.upstream.count() > before;
        if response.status != *status || reached != (*status == 200) {
            failures.push(format!(
                "{line:?}: got {} (upstream reached: {reached}), expected {status}",
                response.status
            ));
        }
        if response.status == 405
            && !line.starts_with("CONNECT")
            && response.header("allow").is_none()
        {
            failures.push(format!("{line:?}: 405 without Allow"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
