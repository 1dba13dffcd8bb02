//! Upstream pools: health checks eject a dead address, connect failures are retried on another
//! address only for idempotent methods, DNS names are resolved at run time (and `check` never
//! resolves them), and TLS to the upstream verifies its certificate against a CA file.

use crate::common::eventually;
use crate::common::{run_portcullis, TestEnv};
use crate::edge::closed_port;
use crate::edge::support::{curl, TestCa};

/// The repository's routes with the `tasks` upstream replaced by `upstream` (a TOML table body).
fn with_tasks_upstream(dir: &std::path::Path, upstream: &str) {
    let routes = dir.join("routes.toml");
    let text = std::fs::read_to_string(&routes).unwrap();
    let start = text.find("[upstreams.tasks]").unwrap();
    let end = start + text[start..].find("[[routes]]").unwrap();
    let text = format!(
        "{}[upstreams.tasks]\n{upstream}\n\n{}",
        &text[..start],
        &text[end..]
    );
    std::fs::write(&routes, text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_address_is_ejected_by_health_checks_and_the_live_one_serves_all() {
    let dead = closed_port();
    let env = TestEnv::start_with(move |dir, live| {
        with_tasks_upstream(
            dir,
            &format!(
                "addresses = [\"{dead}\", \"{live}\"]\nretries = 0\neject_after_failures = 0\n\
                 health_check = {{ path = \"/health\", interval_seconds = 1, unhealthy_threshold = 1 }}"
            ),
        );
    })
    .await;
    let pool = env.state.snapshot().pools.get("tasks").unwrap().clone();
    eventually("the dead address is marked unhealthy", async || {
        pool.members()
            .iter()
            .any(|(addr, ready)| *addr == dead && !ready)
    })
    .await;
    let before = env.upstream.count();
    for _ in 0..10 {
        assert_eq!(env.get_as("bob", "/lists/acme-roadmap").await.status, 200);
    }
    assert_eq!(env.upstream.count() - before, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_failure_is_retried_for_get_but_never_for_post() {
    let dead = closed_port();
    let env = TestEnv::start_with(move |dir, live| {
        with_tasks_upstream(
            dir,
            &format!("addresses = [\"{dead}\", \"{live}\"]\nretries = 1\neject_after_failures = 0"),
        );
    })
    .await;
    // Round robin alternates: every GET that meets the dead address is sent again to the live
    // one, so all succeed.
    for _ in 0..6 {
        assert_eq!(env.get_as("bob", "/lists/acme-roadmap").await.status, 200);
    }
    assert_eq!(env.upstream.count(), 6);
    // A POST that meets the dead address gets 502 and is not sent anywhere else.
    let mut refused = 0;
    for _ in 0..6 {
        let response = env
            .send_as("alice", "POST", "/lists/acme-roadmap/tasks")
            .await;
        match response.status {
            200 => {}
            502 => {
                refused += 1;
                assert_eq!(response.json()["error"], "unreachable");
            }
            other => panic!("unexpected {other}: {}", response.body),
        }
    }
    assert!(refused >= 2, "round robin must have met the dead address");
    assert_eq!(env.upstream.count(), 6 + 6 - refused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_eject_an_address_passively() {
    let dead = closed_port();
    let env = TestEnv::start_with(move |dir, live| {
        with_tasks_upstream(
            dir,
            &format!(
                "addresses = [\"{dead}\", \"{live}\"]\nretries = 0\neject_after_failures = 1\n\
                 ejection_seconds = 600"
            ),
        );
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(env.get_as("bob", "/lists/acme-roadmap").await.status);
    }
    // The first meeting with the dead address fails; after that it is out of rotation.
    assert_eq!(
        statuses.iter().filter(|s| **s == 502).count(),
        1,
        "{statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_names_are_resolved_at_run_time_and_never_by_check() {
    let env = TestEnv::start_with(move |dir, live| {
        with_tasks_upstream(dir, &format!("address = \"localhost:{}\"", live.port()));
    })
    .await;
    eventually("localhost is resolved", async || {
        env.get_as("bob", "/lists/acme-roadmap").await.status == 200
    })
    .await;

    // A name that only resolves inside a cluster: `check` accepts it, requests get 503.
    let cluster_only = TestEnv::start_with(|dir, _| {
        with_tasks_upstream(
            dir,
            "address = \"tasks.default.svc.cluster.invalid:8080\"\nresolve_interval_seconds = 1",
        );
    })
    .await;
    let (ok, out, err) = run_portcullis(
        "check",
        &cluster_only.dir.path().join("portcullis.toml"),
        &[],
    );
    assert!(ok, "{out}{err}");
    let response = cluster_only.get_as("bob", "/lists/acme-roadmap").await;
    assert_eq!(response.status, 503, "{}", response.body);
    assert_eq!(response.json()["error"], "no_healthy_address");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_the_upstream_verifies_its_certificate() {
    let ca = TestCa::new();
    let certs = tempfile::tempdir().unwrap();
    ca.write_leaf(certs.path(), "upstream", "upstream", &["backend.internal"]);
    let ca_file = ca.write_ca(certs.path());
    // The upstream is a second gateway's TLS listener: real TLS, answering /health itself
    // from its own echo upstream.
    let backend = TestEnv::start_with(|dir, _| {
        crate::edge::support::append_config(
            dir,
            &format!(
                "\n[server.tls]\nlisten = \"127.0.0.1:0\"\ncertificates = [{{ cert = {:?}, key = {:?} }}]\n",
                certs.path().join("upstream.crt"),
                certs.path().join("upstream.key")
            ),
        );
    })
    .await;
    let backend_tls = backend.gateway_tls.unwrap();
    let check =
        "health_check = { path = \"/health\", interval_seconds = 1, unhealthy_threshold = 1 }";
    let trusted = TestEnv::start_with(|dir, _| {
        with_tasks_upstream(
            dir,
            &format!(
                "address = \"{backend_tls}\"\ntls = {{ sni = \"backend.internal\", ca_file = {ca_file:?} }}\n{check}"
            ),
        );
        // The same backend without the CA: its health checks must fail.
        crate::common::append_routes(
            dir,
            &format!(
                "\n[upstreams.untrusted]\naddress = \"{backend_tls}\"\ntls = {{ sni = \"backend.internal\" }}\n{check}\n"
            ),
        );
    })
    .await;
    // Health checks are made the way requests are: with the CA, the check passes; without it,
    // it fails (checks of both pools run on the same schedule).
    let snapshot = trusted.state.snapshot();
    let untrusted_pool = snapshot.pools.get("untrusted").unwrap().clone();
    eventually("the check without the CA fails", async || {
        untrusted_pool.members().iter().all(|(_, ready)| !ready)
    })
    .await;
    let trusted_pool = snapshot.pools.get("tasks").unwrap();
    assert!(trusted_pool.members().iter().all(|(_, ready)| *ready));
    // The backend is a TLS front end itself: the Host must be the name its SNI carries. Its
    // health checks reach the backend too; the client's requests are told apart by a header.
    let host = "Host: backend.internal";
    let marked = || {
        backend
            .upstream
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| !r.header_values("x-test-client").is_empty())
            .count()
    };
    let response = curl(&[
        "-H",
        host,
        "-H",
        "x-test-client: 1",
        &format!("http://{}/health", trusted.gateway),
    ]);
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(marked(), 1);

    // The system roots do not know the test CA: the upstream's certificate is refused.
    let untrusted = TestEnv::start_with(|dir, _| {
        with_tasks_upstream(
            dir,
            &format!("address = \"{backend_tls}\"\ntls = {{ sni = \"backend.internal\" }}"),
        );
    })
    .await;
    let refused = curl(&[
        "-H",
        host,
        "-H",
        "x-test-client: 1",
        &format!("http://{}/health", untrusted.gateway),
    ]);
    refused.assert_refusal(502);
    assert_eq!(marked(), 1);
}
