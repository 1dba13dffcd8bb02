//! The adversarial path corpus: request targets written byte for byte on a raw TCP socket to the
//! real gateway, each with the status it must get and exactly what the upstream must receive
//! (or that it receives nothing). The caller is dave, an admin of org_acme, so that every
//! refusal here is the target's doing, not the policies'.

use crate::common::path_corpus::CORPUS;
use crate::common::{raw_exchange, TestEnv};

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
    // CONNECT is not proxied: 501, the gateway's answer to what pingora refuses itself.
    ("CONNECT tasks.example.com:443 HTTP/1.1", 501),
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
        if response.status == 405 && response.header("allow").is_none() {
            failures.push(format!("{line:?}: 405 without Allow"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
