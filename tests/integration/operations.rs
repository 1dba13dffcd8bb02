//! Operating the gateway, over real sockets: `/metrics` after real requests, decision-log
//! lines, and hot reload (under load, with invalid files, and by a ConfigMap-style symlink
//! swap). `/readyz` is covered in `identity_providers.rs` (an issuer down at cold start), and
//! the process lifecycle (SIGTERM, SIGHUP, graceful upgrade) in `lifecycle.rs`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::common::{eventually, raw_exchange, repo_path, use_own_policies, TestEnv};
use portcullis::reload;
use serde_json::Value;

/// Appended to a policy set, it turns every ReadList (200 for bob before) into a 403.
const FREEZE: &str =
    "\n@id(\"freeze-lists\")\nforbid (principal, action == Action::\"ReadList\", resource);\n";

const POLICY_FILES: &[&str] = &["schema.cedarschema", "tasks.cedar", "entities.json"];

/// A TestEnv whose policies are a copy in its own directory (so tests can change them).
async fn env_with_own_policies() -> TestEnv {
    TestEnv::start_with(|dir, _| {
        use_own_policies(dir, POLICY_FILES);
    })
    .await
}

/// Copies the repository's policies into `to` (a ConfigMap revision directory).
fn copy_policies(to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for name in POLICY_FILES {
        std::fs::copy(repo_path("policies").join(name), to.join(name)).unwrap();
    }
}

async fn admin_get(env: &TestEnv, path: &str) -> crate::common::Response {
    let request = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    raw_exchange(env.admin, request.as_bytes()).await
}

/// The value of the sample `name{labels...}` in a Prometheus text page (0 when absent).
fn sample(page: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    page.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .filter(|(series, _)| {
            let (series_name, series_labels) = series.split_once('{').unwrap_or((series, ""));
            series_name == name
                && labels
                    .iter()
                    .all(|(k, v)| series_labels.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, value)| value.parse::<f64>().unwrap())
        .sum()
}

async fn metrics(env: &TestEnv) -> String {
    let response = admin_get(env, "/metrics").await;
    assert_eq!(response.status, 200);
    assert!(response
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/plain")));
    response.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_real_requests_by_route_and_outcome() {
    let env = TestEnv::start().await;
    assert_eq!(admin_get(&env, "/healthz").await.status, 200);
    assert_eq!(admin_get(&env, "/readyz").await.status, 200);
    assert_eq!(admin_get(&env, "/nope").await.status, 404);

    // One token per caller, so the token cache sees repeats.
    let (bob, carol) = (env.token("bob"), env.token("carol"));
    for _ in 0..3 {
        let response = env.get_with_token(&bob, "/lists/acme-roadmap").await;
        assert_eq!(response.status, 200);
    }
    for _ in 0..2 {
        let response = env.get_with_token(&carol, "/lists/acme-roadmap").await;
        assert_eq!(response.status, 403);
    }
    let no_token = env.send("GET", "/lists/acme-roadmap", &[]).await;
    assert_eq!(no_token.status, 401);
    assert_eq!(env.get_with_token(&bob, "/nowhere").await.status, 404);

    let page = metrics(&env).await;
    let requests = |route, decision, class| {
        sample(
            &page,
            "portcullis_requests_total",
            &[
                ("route", route),
                ("decision", decision),
                ("status_class", class),
            ],
        )
    };
    assert_eq!(requests("read-list", "allow", "2xx"), 3.0, "{page}");
    assert_eq!(requests("read-list", "deny", "4xx"), 2.0, "{page}");
    assert_eq!(requests("read-list", "unauthenticated", "4xx"), 1.0);
    assert_eq!(requests("", "no_route", "4xx"), 1.0);
    // Histograms: every request timed; authorization timed for the 5 that reached it.
    assert_eq!(
        sample(
            &page,
            "portcullis_request_duration_seconds_count",
            &[("route", "read-list")]
        ),
        6.0
    );
    assert_eq!(
        sample(
            &page,
            "portcullis_authorization_duration_seconds_count",
            &[]
        ),
        5.0
    );
    // Tokens: 2 subjects, 5 authenticated requests → 2 misses, 3 hits.
    assert_eq!(
        sample(
            &page,
            "portcullis_token_cache_lookups_total",
            &[("result", "miss")]
        ),
        2.0
    );
    assert_eq!(
        sample(
            &page,
            "portcullis_token_cache_lookups_total",
            &[("result", "hit")]
        ),
        3.0
    );
    let issuer = env.issuer_url().to_string();
    assert!(
        sample(
            &page,
            "portcullis_jwks_fetches_total",
            &[("issuer", &issuer), ("result", "success")]
        ) >= 1.0
    );
    assert_eq!(sample(&page, "portcullis_issuers_without_keys", &[]), 0.0);
    assert_eq!(sample(&page, "portcullis_snapshot_version", &[]), 1.0);
    // The process collector: this process's resident memory and open descriptors.
    assert!(sample(&page, "process_resident_memory_bytes", &[]) > 1e6);
    assert!(sample(&page, "process_open_fds", &[]) >= 3.0);
    assert!(
        sample(
            &page,
            "portcullis_reload_last_success_timestamp_seconds",
            &[]
        ) > 0.0
    );
    // Labels are bounded: no principal, token or path ever appears in the page.
    assert!(!page.contains("bob") && !page.contains("acme-roadmap") && !page.contains("eyJ"));
    // The decision log writer catches up with the 7 records.
    eventually("7 decision records written", async || {
        let page = metrics(&env).await;
        sample(
            &page,
            "portcullis_decision_log_records_total",
            &[("outcome", "written")],
        ) == 7.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decision_log_lines_are_json_with_every_field_and_never_the_token() {
    let env = TestEnv::start().await;
    let token = env.token("bob");
    assert_eq!(
        env.get_with_token(&token, "/lists/acme-roadmap")
            .await
            .status,
        200
    );
    assert_eq!(env.get_as("carol", "/lists/acme-roadmap").await.status, 403);
    assert_eq!(
        env.get_with_token("not.a.token", "/lists/acme-roadmap")
            .await
            .status,
        401
    );
    let mut lines = Vec::new();
    eventually("3 decision lines", async || {
        lines = std::fs::read_to_string(&env.decision_log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        lines.len() == 3
    })
    .await;
    let records: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (line, record) in lines.iter().zip(&records) {
        assert!(
            !line.contains(&token) && !line.contains("not.a.token"),
            "{line}"
        );
        for field in [
            "time",
            "request_id",
            "route",
            "method",
            "path",
            "principal",
            "action",
            "resource",
            "decision",
            "mode",
            "policies",
            "errors",
            "status",
            "latency_us",
            "snapshot",
            "issuer",
        ] {
            assert!(record.get(field).is_some(), "{field} missing in {line}");
        }
        assert!(record["time"].as_str().unwrap().ends_with('Z'));
        assert_eq!(record["snapshot"], 1);
        assert_eq!(record["route"], "read-list");
        assert_eq!(record["path"], "/lists/acme-roadmap");
    }
    let allow = &records[0];
    assert_eq!(allow["decision"], "allow");
    assert_eq!(allow["status"], 200);
    assert_eq!(allow["mode"], "enforce");
    assert_eq!(allow["issuer"], env.issuer_url());
    assert_eq!(allow["action"], "Action::\"ReadList\"");
    assert_eq!(allow["resource"], "List::\"acme-roadmap\"");
    assert!(!allow["policies"].as_array().unwrap().is_empty());
    let deny = &records[1];
    assert_eq!(deny["decision"], "deny");
    assert_eq!(deny["status"], 403);
    assert!(deny["principal"].as_str().unwrap().contains("carol"));
    assert!(deny["policies"]
        .as_array()
        .unwrap()
        .contains(&Value::from("tenant-isolation")));
    let unauthenticated = &records[2];
    assert_eq!(unauthenticated["decision"], "unauthenticated");
    assert_eq!(unauthenticated["status"], 401);
    assert!(unauthenticated["principal"].is_null());
    assert!(unauthenticated["reason"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_under_load_loses_nothing_and_applies_the_new_policy() {
    let env = Arc::new(env_with_own_policies().await);
    let watcher = tokio::spawn(reload::watch(env.state.clone(), Duration::from_millis(100)));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let token = Arc::new(env.token("bob"));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (env, token, stop) = (env.clone(), token.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            // Each client's requests are sequential: once it sees the new policy it must never
            // see the old one again.
            let mut statuses = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let status = env
                    .get_with_token(&token, "/lists/acme-roadmap")
                    .await
                    .status;
                statuses.push(status);
                if status == 403 && statuses.len() > 400 {
                    break;
                }
            }
            statuses
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let policy = env.dir.path().join("policies/tasks.cedar");
    let text = std::fs::read_to_string(&policy).unwrap();
    std::fs::write(&policy, format!("{text}{FREEZE}")).unwrap();
    eventually("the new snapshot", async || {
        env.state.snapshot().version == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);

    let mut forwarded = 0;
    for client in clients {
        let statuses = client.await.unwrap();
        let first_403 = statuses.iter().position(|s| *s == 403).unwrap();
        assert!(first_403 > 0, "the old policy never served");
        assert!(
            statuses[..first_403].iter().all(|s| *s == 200),
            "{statuses:?}"
        );
        assert!(
            statuses[first_403..].iter().all(|s| *s == 403),
            "the old policy answered after the new one: {statuses:?}"
        );
        forwarded += first_403;
    }
    // Every 200 reached the upstream, at the canonical target, and nothing else did.
    let received = env.upstream.requests.lock().unwrap().clone();
    assert_eq!(received.len(), forwarded);
    assert!(received.iter().all(|r| r.target == "/lists/acme-roadmap"));
    let page = metrics(&env).await;
    assert_eq!(
        sample(&page, "portcullis_reloads_total", &[("result", "success")]),
        2.0,
        "the start and one reload"
    );
    assert_eq!(sample(&page, "portcullis_snapshot_version", &[]), 2.0);
    watcher.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_policy_or_route_file_keeps_the_last_good_snapshot() {
    let env = env_with_own_policies().await;
    let policy = env.dir.path().join("policies/tasks.cedar");
    let good_policy = std::fs::read_to_string(&policy).unwrap();
    let routes = env.dir.path().join("routes.toml");
    let good_routes = std::fs::read_to_string(&routes).unwrap();
    let broken: [(&Path, String, &str); 3] = [
        (
            &policy,
            format!("{good_policy}\npermit (principal, action,"),
            "tasks.cedar",
        ),
        (
            &policy,
            format!("{good_policy}\npermit (principal, action == Action::\"Fly\", resource);"),
            "tasks.cedar",
        ),
        (
            &routes,
            good_routes.replacen("action = \"ReadList\"", "action = \"ReadLists\"", 1),
            "routes.toml:",
        ),
    ];
    for (failures, (file, text, named)) in broken.iter().enumerate() {
        std::fs::write(file, text).unwrap();
        let error = env.state.reload().unwrap_err().to_string();
        assert!(error.contains(named), "{error}");
        assert_eq!(env.state.snapshot().version, 1);
        assert_eq!(env.get_as("bob", "/lists/acme-roadmap").await.status, 200);
        let page = metrics(&env).await;
        assert_eq!(
            sample(&page, "portcullis_reloads_total", &[("result", "failure")]),
            (failures + 1) as f64
        );
        assert_eq!(sample(&page, "portcullis_snapshot_version", &[]), 1.0);
        std::fs::write(&policy, &good_policy).unwrap();
        std::fs::write(&routes, &good_routes).unwrap();
    }
    // A good change after the failures is taken, with the next version.
    std::fs::write(&policy, format!("{good_policy}{FREEZE}")).unwrap();
    assert_eq!(env.state.reload().unwrap(), 2);
    assert_eq!(env.get_as("bob", "/lists/acme-roadmap").await.status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_symlink_swap_triggers_a_reload() {
    // The layout kubelet gives a ConfigMap volume: the files are symlinks through `..data`,
    // itself a symlink to a timestamped directory; an update writes a new directory and
    // renames a new `..data` over the old one.
    let env = TestEnv::start_with(|dir, _| {
        let mount = dir.join("policies");
        std::fs::create_dir(&mount).unwrap();
        copy_policies(&mount.join("..2026_11_22_10_00_00.1"));
        std::os::unix::fs::symlink("..2026_11_22_10_00_00.1", mount.join("..data")).unwrap();
        for name in POLICY_FILES {
            std::os::unix::fs::symlink(format!("..data/{name}"), mount.join(name)).unwrap();
        }
        // Points the configuration at `policies/` (the links are already there).
        use_own_policies(dir, &[]);
    })
    .await;
    let watcher = tokio::spawn(reload::watch(env.state.clone(), Duration::from_millis(100)));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(env.get_as("bob", "/lists/acme-roadmap").await.status, 200);

    let mount = env.dir.path().join("policies");
    let update = mount.join("..2026_11_22_10_05_00.2");
    copy_policies(&update);
    let text = std::fs::read_to_string(update.join("tasks.cedar")).unwrap();
    std::fs::write(update.join("tasks.cedar"), format!("{text}{FREEZE}")).unwrap();
    std::os::unix::fs::symlink("..2026_11_22_10_05_00.2", mount.join("..data_tmp")).unwrap();
    std::fs::rename(mount.join("..data_tmp"), mount.join("..data")).unwrap();

    eventually("the reload after the swap", async || {
        env.state.snapshot().version == 2
    })
    .await;
    assert_eq!(env.get_as("bob", "/lists/acme-roadmap").await.status, 403);
    watcher.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_are_counted_and_logged() {
    // The routes point at a port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let env = TestEnv::start_with(move |dir, upstream| {
        let routes = dir.join("routes.toml");
        let text = std::fs::read_to_string(&routes).unwrap();
        std::fs::write(
            &routes,
            text.replace(&upstream.to_string(), &closed.to_string()),
        )
        .unwrap();
    })
    .await;
    let response = env.get_as("bob", "/lists/acme-roadmap").await;
    assert_eq!(response.status, 502);
    let page = metrics(&env).await;
    assert_eq!(
        sample(
            &page,
            "portcullis_upstream_errors_total",
            &[("route", "read-list")]
        ),
        1.0,
        "{page}"
    );
    assert_eq!(
        sample(
            &page,
            "portcullis_requests_total",
            &[("decision", "allow"), ("status_class", "5xx")]
        ),
        1.0
    );
    let mut line = String::new();
    eventually("the decision line", async || {
        line = std::fs::read_to_string(&env.decision_log).unwrap_or_default();
        !line.is_empty()
    })
    .await;
    let record: Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(record["decision"], "allow");
    assert_eq!(record["status"], 502);
    assert!(record["proxy_error"].is_string(), "{line}");
}
