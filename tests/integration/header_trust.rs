//! Header trust over real sockets: forwarding headers are believed only from trusted proxies,
//! method-override and framework-internal headers never reach the application (whoever the
//! peer), and the Cedar `client_ip` is the client a trusted proxy reports, never one a client
//! claims.

use crate::common::spoofed_headers::{framework_internal, FORWARDING, METHOD_OVERRIDES};
use crate::common::TestEnv;
use crate::edge::support::add_to_server_section;

fn sent(env: &TestEnv, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let token = format!("Bearer {}", env.token("bob"));
    let mut headers = vec![("Authorization".to_string(), token)];
    headers.extend(extra.iter().map(|(n, v)| (n.to_string(), v.to_string())));
    headers
}

async fn get(env: &TestEnv, headers: &[(String, String)]) -> u16 {
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    env.send("GET", "/lists/acme-roadmap", &headers)
        .await
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_and_override_headers_from_clients_are_dropped() {
    let env = TestEnv::start().await;
    for (name, value) in FORWARDING.iter().chain(METHOD_OVERRIDES) {
        assert_eq!(
            get(&env, &sent(&env, &[(name, value)])).await,
            200,
            "{name}"
        );
        let seen = env.upstream.last();
        assert_eq!(seen.method, "GET");
        let leaked: Vec<_> = seen
            .headers
            .iter()
            .filter(|(n, v)| v == value && !n.eq_ignore_ascii_case("x-forwarded-for"))
            .collect();
        assert!(leaked.is_empty(), "{name}: {leaked:?}");
        // The gateway sets its own X-Forwarded-For/-Proto/-Host; every other one is gone.
        let own = match name.to_ascii_lowercase().as_str() {
            "x-forwarded-for" => None,
            "x-forwarded-proto" => Some(vec!["http"]),
            "x-forwarded-host" => Some(vec!["tasks.example.com"]),
            _ => Some(vec![]),
        };
        if let Some(own) = own {
            assert_eq!(seen.header_values(name), own, "{name}");
        }
        // The chain starts at the real peer.
        assert_eq!(
            seen.header_values("x-forwarded-for"),
            ["127.0.0.1"],
            "{name}"
        );
    }
}

const CLIENT_IP_POLICY: &str = r#"
@id("read")
permit (principal, action in [Action::"ReadList", Action::"ReadTask"], resource);

@id("blocked-client")
forbid (principal, action, resource)
when { context has client_ip && context.client_ip == ip("203.0.113.9") };
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_reports_the_client() {
    let env = TestEnv::start_with(|dir, _| {
        add_to_server_section(dir, "trusted_proxies = [\"127.0.0.0/8\", \"10.0.0.0/8\"]");
        let policies =
            crate::common::use_own_policies(dir, &["schema.cedarschema", "entities.json"]);
        std::fs::write(policies.join("ip.cedar"), CLIENT_IP_POLICY).unwrap();
    })
    .await;
    // The peer (127.0.0.1) is trusted: its chain is kept and extended, its other forwarding
    // headers pass, and the client is the right-most untrusted hop.
    let headers = sent(
        &env,
        &[
            ("X-Forwarded-For", "198.51.100.1, 203.0.113.9, 10.0.0.5"),
            ("X-Forwarded-Proto", "https"),
            ("X-HTTP-Method-Override", "DELETE"),
        ],
    );
    assert_eq!(
        get(&env, &headers).await,
        403,
        "client 203.0.113.9 is blocked"
    );
    assert_eq!(env.upstream.count(), 0);
    let headers = sent(
        &env,
        &[
            ("X-Forwarded-For", "203.0.113.9, 198.51.100.1"),
            ("X-Forwarded-Proto", "https"),
            ("X-HTTP-Method-Override", "DELETE"),
        ],
    );
    assert_eq!(get(&env, &headers).await, 200, "client 198.51.100.1 is not");
    let seen = env.upstream.last();
    assert_eq!(
        seen.header_values("x-forwarded-for"),
        ["203.0.113.9, 198.51.100.1, 127.0.0.1"]
    );
    assert_eq!(seen.header_values("x-forwarded-proto"), ["https"]);
    assert!(seen.header_values("x-http-method-override").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_override_parameters_and_duplicate_hosts_are_refused_or_removed() {
    let env = TestEnv::start().await;
    let token = format!("Bearer {}", env.token("bob"));
    let response = env
        .send(
            "GET",
            "/lists/acme-roadmap?_method=DELETE&page=2&%5Fmethod=PUT",
            &[("Authorization", &token)],
        )
        .await;
    assert_eq!(response.status, 200);
    let seen = env.upstream.last();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.target, "/lists/acme-roadmap?page=2");

    // TestEnv::send already sends `Host: tasks.example.com`.
    let before = env.upstream.count();
    let response = env
        .send(
            "GET",
            "/lists/acme-roadmap",
            &[("Authorization", &token), ("Host", "admin.internal")],
        )
        .await;
    // pingora's HTTP/1 parser already refuses it (with its own, non-JSON 400).
    assert_eq!(response.status, 400, "{}", response.body);
    assert_eq!(env.upstream.count(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_or_too_many_header_fields_get_431() {
    // Limits below the echo upstream's own (hyper refuses more than 100 fields).
    let env = TestEnv::start_with(|dir, _| {
        let config = dir.join("portcullis.toml");
        let text = std::fs::read_to_string(&config).unwrap();
        let limits = "\n[limits]\nmax_header_bytes = 8192\nmax_header_count = 40\n";
        std::fs::write(
            &config,
            text.replace("\n[tokens]", &format!("{limits}\n[tokens]")),
        )
        .unwrap();
    })
    .await;
    let token = format!("Bearer {}", env.token("bob"));
    let names: Vec<String> = (0..60).map(|i| format!("X-Filler-{i}")).collect();
    // `send` adds Host and Connection: 2 + Authorization + n fillers.
    for (fillers, status) in [(37, 200), (38, 431), (59, 431)] {
        let mut headers = vec![("Authorization", token.as_str())];
        headers.extend(names.iter().take(fillers).map(|n| (n.as_str(), "x")));
        let before = env.upstream.count();
        let response = env.send("GET", "/lists/acme-roadmap", &headers).await;
        assert_eq!(
            response.status, status,
            "{fillers} fillers: {}",
            response.body
        );
        if status == 431 {
            assert_eq!(response.json()["error"], "headers_too_large");
            assert_eq!(env.upstream.count(), before);
        }
    }
    for (size, status) in [(6 * 1024, 200), (9 * 1024, 431)] {
        let value = "b".repeat(size);
        let response = env
            .send(
                "GET",
                "/lists/acme-roadmap",
                &[("Authorization", &token), ("X-Big", &value)],
            )
            .await;
        assert_eq!(response.status, status, "{size} bytes");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_are_validated_and_canonicalized_before_host_routes_match() {
    // /admin/{list_id} exists on admin.example.com only (and needs a token); /health is anonymous
    // on every host.
    let env = TestEnv::start_with(|dir, _| {
        let routes = dir.join("routes.toml");
        let text = std::fs::read_to_string(&routes).unwrap();
        let admin = "\n[[routes]]\nid = \"admin-health\"\nmethods = [\"GET\"]\npath = \"/admin/{list_id}\"\n\
                     host = \"Admin.Example.com.\"\nupstream = \"tasks\"\naction = \"ReadList\"\n\
                     resource = { type = \"List\", id = \"{list_id}\" }\n";
        std::fs::write(&routes, format!("{text}{admin}")).unwrap();
    })
    .await;
    // (target, Host header line as sent, HTTP version, expected status)
    let cases: &[(&str, &str, &str, u16)] = &[
        ("/health", "Host: tasks.example.com\r\n", "1.1", 200),
        ("/health", "Host: [::1]:8080\r\n", "1.1", 200),
        ("/health", "Host: 127.0.0.1\r\n", "1.1", 200),
        ("/health", "", "1.0", 200),
        ("/health", "", "1.1", 400),
        ("/admin/x", "Host: tasks.example.com\r\n", "1.1", 404),
        ("/admin/x", "Host: admin.example.com.evil\r\n", "1.1", 404),
        ("/admin/x", "Host: admin.example.com\r\n", "1.1", 401),
        ("/admin/x", "Host: ADMIN.example.COM.:8443\r\n", "1.1", 401),
        ("/admin/x", "Host: admin.example.com:80\r\n", "1.1", 401),
        // pingora's parser refuses this one itself (a 400 without our JSON body).
        (
            "/admin/x",
            "Host: admin.example.com@tasks.example.com\r\n",
            "1.1",
            0,
        ),
        ("/admin/x", "Host: admin%2eexample.com\r\n", "1.1", 400),
        ("/admin/x", "Host: admin.example.com:80:80\r\n", "1.1", 400),
        ("/admin/x", "Host: admin.example.com:http\r\n", "1.1", 400),
        ("/admin/x", "Host: admin..example.com\r\n", "1.1", 400),
        ("/admin/x", "Host: [::1\r\n", "1.1", 400),
        ("/admin/x", "Host: admin.example.com/health\r\n", "1.1", 400),
    ];
    let mut failures = Vec::new();
    for (target, host, version, status) in cases {
        let request = format!("GET {target} HTTP/{version}\r\n{host}Connection: close\r\n\r\n");
        let (status, ours) = match status {
            0 => (&400, false),
            status => (status, true),
        };
        let before = env.upstream.count();
        let response = crate::common::raw_exchange(env.gateway, request.as_bytes()).await;
        let reached = env.upstream.count() > before;
        if response.status != *status || reached != (*status == 200) {
            failures.push(format!(
                "{target} {host:?} HTTP/{version}: got {} (upstream reached: {reached}), \
                 expected {status}",
                response.status
            ));
        }
        let json: Option<serde_json::Value> = serde_json::from_str(&response.body).ok();
        if *status == 400
            && ours
            && json
                .as_ref()
                .and_then(|j| j["request_id"].as_str())
                .is_none()
        {
            failures.push(format!(
                "{host:?}: 400 without a JSON body: {}",
                response.body
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every framework-internal header of the gateway's list, in every spelling, and a header of
/// the deployment's own `[headers] strip`: removed on an authenticated and on an anonymous
/// route, from an untrusted client and from a trusted proxy alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framework_internal_and_configured_headers_never_reach_upstream() {
    let env = TestEnv::start_with(|dir, _| {
        let config = dir.join("portcullis.toml");
        let text = std::fs::read_to_string(&config)
            .unwrap()
            .replace("[headers]\n", "[headers]\nstrip = [\"X-Internal-User\"]\n");
        std::fs::write(&config, text).unwrap();
    })
    .await;
    let mut spoofed = framework_internal();
    spoofed.extend([
        ("X-Internal-User".to_string(), "1"),
        ("x_internal_user".to_string(), "1"),
    ]);
    // One request with all of them, then each alone (a header alone must not slip through
    // where it would in company, or the other way round).
    let all: Vec<(&str, &str)> = spoofed.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    let token = format!("Bearer {}", env.token("bob"));
    let mut requests: Vec<Vec<(&str, &str)>> = vec![all.clone()];
    requests.extend(all.iter().map(|header| vec![*header]));
    for headers in requests {
        for (target, authorization) in [
            ("/lists/acme-roadmap", Some(token.as_str())),
            ("/health", None),
        ] {
            let mut sent = headers.clone();
            sent.extend(authorization.map(|a| ("Authorization", a)));
            let response = env.send("GET", target, &sent).await;
            assert_eq!(
                response.status, 200,
                "{target} {headers:?}: {}",
                response.body
            );
            let seen = env.upstream.last();
            for (name, _) in &headers {
                assert!(
                    seen.header_values(name).is_empty(),
                    "{target}: {name} reached the upstream: {seen:?}"
                );
            }
        }
    }
    assert!(
        spoofed.iter().any(|(n, _)| n == "X-Middleware-Subrequest"),
        "the CVE-2025-29927 header is on the list"
    );
}

/// A trusted proxy's framework-internal header is removed too: only the framework's own
/// infrastructure sets one, and that is behind the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framework_internal_headers_from_a_trusted_proxy_are_removed_too() {
    let env = TestEnv::start_with(|dir, _| {
        add_to_server_section(dir, "trusted_proxies = [\"127.0.0.0/8\"]");
    })
    .await;
    let headers = sent(
        &env,
        &[("X-Middleware-Subrequest", "middleware:middleware")],
    );
    assert_eq!(get(&env, &headers).await, 200);
    let seen = env.upstream.last();
    assert!(
        seen.header_values("x-middleware-subrequest").is_empty(),
        "{seen:?}"
    );
    assert_eq!(seen.header_values("x-forwarded-for"), ["127.0.0.1"]);
}
