//! External authorization mode over real sockets: nginx `auth_request` and Caddy
//! `forward_auth` (Debian's binaries, started here with their own configuration on loopback
//! ports) in front of the echo upstream, asking the gateway's decision listener; Traefik's
//! ForwardAuth and Envoy's HTTP ext_authz as raw requests shaped as their documentation says
//! they send them; and the adversarial path corpus through the decision listener.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::common::path_corpus::CORPUS;
use crate::common::smuggling_cases::{framing_cases, SMUGGLED};
use crate::common::spoofed_headers::{framework_internal, IDENTITY, METHOD_OVERRIDES};
use crate::common::{
    decision_lines, eventually, raw_exchange, raw_exchange_from, Received, Response, TestEnv,
};
use crate::edge::closed_port;
use crate::edge::support::append_config;

/// A gateway whose decision listener answers peers on 127.0.0.1.
async fn authz_env() -> TestEnv {
    TestEnv::start_with(|dir, _| {
        append_config(
            dir,
            "\n[authz_server]\nlisten = \"127.0.0.1:0\"\ntrusted_peers = [\"127.0.0.1/32\"]\n",
        )
    })
    .await
}

/// A front-end proxy process, killed when dropped.
struct FrontProxy {
    child: Child,
    address: SocketAddr,
}

impl Drop for FrontProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl FrontProxy {
    /// Runs `program args`, then waits until `address` accepts connections.
    async fn start(
        program: &str,
        args: &[&str],
        env: &[(&str, &Path)],
        address: SocketAddr,
    ) -> Self {
        let child = Command::new(program)
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, *v)))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e} (scripts/test installs it)"));
        let proxy = FrontProxy { child, address };
        eventually(&format!("{program} listening on {address}"), async || {
            tokio::net::TcpStream::connect(address).await.is_ok()
        })
        .await;
        proxy
    }

    async fn get(&self, target: &str, headers: &[(&str, &str)]) -> Response {
        let mut request =
            format!("GET {target} HTTP/1.1\r\nHost: tasks.example.com\r\nConnection: close\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        raw_exchange(self.address, request.as_bytes()).await
    }
}

/// Whether `program` is installed; the test command installs both, so this only spares a
/// developer's partial setup a confusing failure.
fn installed(program: &str) -> bool {
    let found = Command::new(program)
        .arg(if program == "nginx" { "-v" } else { "version" })
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        eprintln!("SKIPPED: {program} is not installed (scripts/test installs Debian's package)");
    }
    found
}

/// nginx with the README's `auth_request` block, in front of the echo upstream.
async fn start_nginx(env: &TestEnv) -> FrontProxy {
    let dir = env.dir.path().join("nginx");
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    let address = closed_port();
    let authz = env.authz.unwrap();
    let config = format!(
        r#"daemon off;
master_process off;
error_log {dir}/error.log;
pid {dir}/nginx.pid;
events {{}}
http {{
  access_log off;
  client_body_temp_path {dir}/tmp/body;
  proxy_temp_path {dir}/tmp/proxy;
  fastcgi_temp_path {dir}/tmp/fastcgi;
  uwsgi_temp_path {dir}/tmp/uwsgi;
  scgi_temp_path {dir}/tmp/scgi;
  server {{
    listen {address};
    location / {{
      auth_request /_portcullis;
      auth_request_set $portcullis_principal $upstream_http_x_portcullis_principal;
      auth_request_set $portcullis_roles $upstream_http_x_portcullis_roles;
      auth_request_set $portcullis_tenant $upstream_http_x_portcullis_tenant;
      auth_request_set $portcullis_request_id $upstream_http_x_request_id;
      proxy_set_header X-Portcullis-Principal $portcullis_principal;
      proxy_set_header X-Portcullis-Roles $portcullis_roles;
      proxy_set_header X-Portcullis-Tenant $portcullis_tenant;
      proxy_set_header X-Request-Id $portcullis_request_id;
      proxy_pass http://{upstream};
    }}
    location = /_portcullis {{
      internal;
      proxy_pass http://{authz}/nginx;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header Host $host;
      proxy_set_header X-Original-Method $request_method;
      proxy_set_header X-Original-URI $request_uri;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }}
  }}
}}
"#,
        dir = dir.display(),
        upstream = env.upstream.address,
    );
    let file = dir.join("nginx.conf");
    std::fs::write(&file, config).unwrap();
    let prefix = format!("{}/", dir.display());
    FrontProxy::start(
        "nginx",
        &["-p", &prefix, "-c", file.to_str().unwrap()],
        &[],
        address,
    )
    .await
}

/// Caddy with the README's `forward_auth` block, in front of the echo upstream.
async fn start_caddy(env: &TestEnv) -> FrontProxy {
    let dir = env.dir.path().join("caddy");
    std::fs::create_dir_all(&dir).unwrap();
    let address = closed_port();
    let config = format!(
        r#"{{
	admin off
	auto_https off
}}
http://:{port} {{
	bind 127.0.0.1
	forward_auth {authz} {{
		uri /caddy
		copy_headers X-Portcullis-Principal X-Portcullis-Roles X-Portcullis-Tenant X-Request-Id
	}}
	reverse_proxy {upstream}
}}
"#,
        port = address.port(),
        authz = env.authz.unwrap(),
        upstream = env.upstream.address,
    );
    let file = dir.join("Caddyfile");
    std::fs::write(&file, config).unwrap();
    FrontProxy::start(
        "caddy",
        &[
            "run",
            "--adapter",
            "caddyfile",
            "--config",
            file.to_str().unwrap(),
        ],
        &[
            ("HOME", &dir),
            ("XDG_DATA_HOME", &dir),
            ("XDG_CONFIG_HOME", &dir),
        ],
        address,
    )
    .await
}

/// The decision log's lines of `front` so far.
fn decisions_of(env: &TestEnv, front: &str) -> Vec<Value> {
    decision_lines(&env.decision_log)
        .into_iter()
        .filter(|line| line["front"] == front)
        .collect()
}

/// The decision log's lines of `front`, once there are `count` (the writer works in batches).
async fn decisions(env: &TestEnv, front: &str, count: usize) -> Vec<Value> {
    eventually(&format!("{count} decision lines of {front}"), async || {
        decisions_of(env, front).len() >= count
    })
    .await;
    decisions_of(env, front)
}

/// What every front end must do: allow with identity headers upstream, 401 with the challenge,
/// 403, identity headers never taken from the client, and a decision line for each.
async fn front_end_contract(env: &TestEnv, proxy: &FrontProxy, front: &str) {
    let alice = format!("Bearer {}", env.token("alice"));
    let allowed = proxy
        .get("/lists/acme-roadmap/tasks/t1", &[("Authorization", &alice)])
        .await;
    assert_eq!(allowed.status, 200, "{front}: {allowed:?}");
    let seen = env.upstream.last();
    assert_eq!(
        seen.header_values("x-portcullis-principal"),
        ["alice"],
        "{front}"
    );
    assert_eq!(
        seen.header_values("x-portcullis-roles"),
        ["manager"],
        "{front}"
    );
    assert_eq!(
        seen.header_values("x-portcullis-tenant"),
        ["org_acme"],
        "{front}"
    );
    let request_id = seen.header_values("x-request-id");
    assert_eq!(request_id.len(), 1, "{front}: {seen:?}");
    let line = decisions(env, front, 1)
        .await
        .pop()
        .expect("a decision line");
    assert_eq!(line["decision"], "allow", "{line}");
    assert_eq!(line["principal"], "User::\"alice\"", "{line}");
    assert_eq!(line["request_id"], request_id[0], "{line}");

    // The client's identity headers, method overrides and framework-internal headers, in
    // every spelling: refused, or (where the proxy itself drops the spelling) never seen by
    // the upstream.
    for (name, value) in spoofs() {
        let (name, value) = (name.as_str(), value);
        let before = env.upstream.count();
        let response = proxy
            .get(
                "/lists/acme-roadmap/tasks/t1",
                &[(name, value), ("Authorization", &alice)],
            )
            .await;
        if response.status == 200 {
            let seen = env.upstream.last();
            assert!(
                !seen.header_values(name).contains(&value),
                "{front} forwarded the client's {name}: {seen:?}"
            );
            assert_eq!(
                seen.header_values("x-portcullis-principal"),
                ["alice"],
                "{front}"
            );
        } else {
            assert!(response.status >= 400, "{front} {name}: {response:?}");
            assert_eq!(env.upstream.count(), before, "{front} forwarded {name}");
        }
    }

    let before = env.upstream.count();
    let anonymous = proxy.get("/lists/acme-roadmap/tasks/t1", &[]).await;
    assert_eq!(anonymous.status, 401, "{front}: {anonymous:?}");
    let challenge = anonymous.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer realm=\"tasks\""),
        "{front}: {anonymous:?}"
    );
    let carol = format!("Bearer {}", env.token("carol"));
    let forbidden = proxy
        .get("/lists/acme-roadmap/tasks/t1", &[("Authorization", &carol)])
        .await;
    assert_eq!(forbidden.status, 403, "{front}: {forbidden:?}");
    let lines = decisions(env, front, spoofs().len() + 3).await;
    let last: Vec<&Value> = lines.iter().rev().take(2).collect();
    assert_eq!(last[0]["decision"], "deny", "{front}");
    assert_eq!(last[1]["decision"], "unauthenticated", "{front}");
    // A path whose dot segments would lead a naive matcher elsewhere: refused, not forwarded.
    let confused = proxy
        .get(
            "/lists/acme-roadmap/tasks/%2e%2e/%2e%2e/globex-ops",
            &[("Authorization", &alice)],
        )
        .await;
    assert!(confused.status >= 400, "{front}: {confused:?}");
    assert_eq!(
        env.upstream.count(),
        before,
        "{front}: a refused request was forwarded"
    );
}

/// Headers a client sends that the gateway never lets through, each in its spellings.
fn spoofs() -> Vec<(String, &'static str)> {
    IDENTITY
        .iter()
        .chain(METHOD_OVERRIDES)
        .map(|(name, value)| (name.to_string(), *value))
        .chain(framework_internal())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_asks_the_gateway() {
    if !installed("nginx") {
        return;
    }
    let env = authz_env().await;
    let nginx = start_nginx(&env).await;
    front_end_contract(&env, &nginx, "nginx").await;
    // nginx passes only 401 and 403 on: no route is answered 403 to it, the status kept aside.
    let nowhere = nginx.get("/nowhere", &[]).await;
    assert_eq!(nowhere.status, 403, "{nowhere:?}");
    let line = decisions(&env, "nginx", spoofs().len() + 5)
        .await
        .pop()
        .unwrap();
    assert_eq!(line["decision"], "no_route", "{line}");
    assert_eq!(line["status"], 403, "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_forward_auth_asks_the_gateway() {
    if !installed("caddy") {
        return;
    }
    let env = authz_env().await;
    let caddy = start_caddy(&env).await;
    front_end_contract(&env, &caddy, "caddy").await;
    // Caddy passes the refusal on whole: status, JSON body and request id.
    let nowhere = caddy.get("/nowhere", &[]).await;
    assert_eq!(nowhere.status, 404, "{nowhere:?}");
    assert_eq!(nowhere.json()["error"], "not_found");
    assert!(nowhere.json()["request_id"].is_string());
}

/// A decision request as Traefik's ForwardAuth sends it (doc: "Forward-Request Headers":
/// X-Forwarded-Method, -Proto, -Host, -Uri, -For, plus the original headers).
fn traefik_request(uri: &str, extra: &str) -> String {
    format!(
        "GET /traefik HTTP/1.1\r\nHost: portcullis:9191\r\nConnection: close\r\n\
         X-Forwarded-Method: GET\r\nX-Forwarded-Proto: https\r\n\
         X-Forwarded-Host: tasks.example.com\r\nX-Forwarded-Uri: {uri}\r\n\
         X-Forwarded-For: 203.0.113.9\r\n{extra}\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik_and_envoy_http_requests_get_the_same_decisions() {
    let env = authz_env().await;
    let authz = env.authz.unwrap();
    let token = env.token("alice");
    let bearer = format!("Authorization: Bearer {token}\r\n");
    let allowed = raw_exchange(
        authz,
        traefik_request("/lists/acme-roadmap/tasks/t1", &bearer).as_bytes(),
    )
    .await;
    assert_eq!(allowed.status, 200, "{allowed:?}");
    assert_eq!(allowed.header("x-portcullis-principal"), Some("alice"));
    assert_eq!(allowed.header("x-portcullis-tenant"), Some("org_acme"));
    let refused = raw_exchange(
        authz,
        traefik_request("/lists/globex-ops", &bearer).as_bytes(),
    )
    .await;
    assert_eq!(refused.status, 403, "{refused:?}");
    assert_eq!(refused.json()["error"], "forbidden");
    let line = decisions(&env, "traefik", 2).await.pop().unwrap();
    assert_eq!(line["decision"], "deny");
    assert_eq!(line["path"], "/lists/globex-ops");

    // Envoy's HTTP mode: the original method and path after the service's path_prefix, the
    // original Host, and the allow-listed headers (Authorization by default).
    let envoy = format!(
        "GET /envoy/lists/acme-roadmap/tasks/t1 HTTP/1.1\r\nHost: tasks.example.com\r\n\
         Connection: close\r\n{bearer}\r\n"
    );
    let allowed = raw_exchange(authz, envoy.as_bytes()).await;
    assert_eq!(allowed.status, 200, "{allowed:?}");
    assert_eq!(allowed.header("x-portcullis-roles"), Some("manager"));
    let envoy = "DELETE /envoy/lists/acme-roadmap/tasks/t1 HTTP/1.1\r\nHost: tasks.example.com\r\n\
                 Connection: close\r\nContent-Length: 0\r\n\r\n";
    let refused = raw_exchange(authz, envoy.as_bytes()).await;
    assert_eq!(refused.status, 401, "{refused:?}");
    assert!(refused.header("www-authenticate").is_some());
    assert_eq!(decisions(&env, "envoy-http", 2).await.len(), 2);

    // ingress-nginx's auth-url: the original URL whole; a client's X-Original-URI means nothing.
    let ingress = format!(
        "GET /ingress-nginx HTTP/1.1\r\nHost: portcullis.portcullis.svc\r\nConnection: close\r\n\
         X-Original-Method: GET\r\n\
         X-Original-URL: https://tasks.example.com/lists/globex-ops\r\n\
         X-Original-URI: /lists/acme-roadmap/tasks/t1\r\n{bearer}\r\n"
    );
    let refused = raw_exchange(authz, ingress.as_bytes()).await;
    assert_eq!(refused.status, 403, "{refused:?}");
    let line = decisions(&env, "ingress-nginx", 1).await.pop().unwrap();
    assert_eq!(line["path"], "/lists/globex-ops", "{line}");

    // A description missing a header is the proxy's mistake: 400, and logged.
    let incomplete = "GET /traefik HTTP/1.1\r\nHost: portcullis\r\nConnection: close\r\n\
                      X-Forwarded-Method: GET\r\nX-Forwarded-Uri: /lists/acme-roadmap\r\n\r\n";
    let incomplete = raw_exchange(authz, incomplete.as_bytes()).await;
    assert_eq!(incomplete.status, 400, "{incomplete:?}");
    assert!(incomplete.json()["message"]
        .as_str()
        .unwrap()
        .contains("x-forwarded-host"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_outside_trusted_peers_gets_no_decision() {
    let env = authz_env().await;
    let token = env.token("alice");
    let bearer = format!("Authorization: Bearer {token}\r\n");
    let request = traefik_request("/lists/acme-roadmap/tasks/t1", &bearer);
    let other: IpAddr = "127.0.0.2".parse().unwrap();
    let refused = raw_exchange_from(other, env.authz.unwrap(), request.as_bytes()).await;
    assert_eq!(refused.status, 403, "{refused:?}");
    assert_eq!(refused.json()["error"], "untrusted_peer");
    assert!(refused.header("x-portcullis-principal").is_none());
    eventually("the refusal is logged", async || {
        decisions_of(&env, "traefik")
            .last()
            .is_some_and(|line| line["decision"] == "untrusted_peer")
    })
    .await;
}

/// The canonical request model holds through this mode: every corpus target described by a
/// proxy gets the status the proxy front end gives it (a fragment aside, see below).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_path_corpus_holds_through_the_decision_listener() {
    let env = authz_env().await;
    let token = env.token("dave");
    let bearer = format!("Authorization: Bearer {token}\r\n");
    let mut failures = Vec::new();
    let mut tried = 0;
    for (target, status, _) in CORPUS {
        // Targets a header field cannot carry (control bytes) reach no proxy's description.
        if *target == "/lists/LONG" || http::HeaderValue::from_str(target).is_err() {
            continue;
        }
        tried += 1;
        // pingora drops a fragment before the proxy front end sees the target; a proxy asking
        // would forward it as is, so a described target with one is refused.
        let status = if target.contains('#') { &400 } else { status };
        let response = raw_exchange(
            env.authz.unwrap(),
            traefik_request(target, &bearer).as_bytes(),
        )
        .await;
        if response.status != *status {
            failures.push(format!(
                "{target:?}: got {}, expected {status}",
                response.status
            ));
        }
    }
    assert!(tried >= 35, "only {tried} corpus targets tried");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A `CheckRequest` as Envoy builds it for an HTTP request to tasks.example.com from
/// 203.0.113.9.
fn check_request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> envoy_types::ext_authz::v3::pb::CheckRequest {
    use envoy_types::ext_authz::v3::pb::Address;
    use envoy_types::pb::envoy::config::core::v3::{Address as EnvoyAddress, SocketAddress};
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
        HttpRequest, Peer, Request,
    };
    use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
    let mut all: Vec<(String, String)> = vec![
        (":authority".into(), "tasks.example.com".into()),
        (":method".into(), method.into()),
        (":path".into(), path.into()),
    ];
    all.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    envoy_types::ext_authz::v3::pb::CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                address: Some(EnvoyAddress {
                    address: Some(Address::SocketAddress(SocketAddress {
                        address: "203.0.113.9".into(),
                        ..SocketAddress::default()
                    })),
                }),
                ..Peer::default()
            }),
            request: Some(Request {
                http: Some(HttpRequest {
                    method: method.into(),
                    path: path.into(),
                    host: "tasks.example.com".into(),
                    scheme: "https".into(),
                    protocol: "HTTP/1.1".into(),
                    headers: all.into_iter().collect(),
                    ..HttpRequest::default()
                }),
                ..Request::default()
            }),
            ..AttributeContext::default()
        }),
    }
}

/// Envoy's gRPC ext_authz (`envoy.service.auth.v3.Authorization/Check`) driven by a tonic
/// client built from the same protos, over h2c on the decision listener's port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_grpc_check_gets_the_same_decisions() {
    use envoy_types::ext_authz::v3::pb::HttpResponse;
    use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;

    let env = authz_env().await;
    let mut client = AuthorizationClient::connect(format!("http://{}", env.authz.unwrap()))
        .await
        .unwrap();
    let alice = format!("Bearer {}", env.token("alice"));
    let allowed = client
        .check(check_request(
            "GET",
            "/lists/acme-roadmap/tasks/t1",
            &[
                ("authorization", &alice),
                ("x-portcullis-principal", "dave"),
                ("x_portcullis_roles", "admin"),
                ("x-http-method-override", "DELETE"),
                ("x-middleware-subrequest", "middleware"),
            ],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(allowed.status.clone().unwrap().code, 0, "{allowed:?}");
    let Some(HttpResponse::OkResponse(ok)) = allowed.http_response else {
        panic!("not an OK response");
    };
    let set: Vec<(String, String)> = ok
        .headers
        .iter()
        .map(|h| h.header.clone().unwrap())
        .map(|h| (h.key, h.value))
        .collect();
    for (name, value) in [
        ("x-portcullis-principal", "alice"),
        ("x-portcullis-roles", "manager"),
        ("x-portcullis-tenant", "org_acme"),
    ] {
        assert!(set.contains(&(name.into(), value.into())), "{set:?}");
    }
    // The client's other spelling and the method override are removed; the exact name is
    // overwritten.
    let mut removed = ok.headers_to_remove.clone();
    removed.sort();
    assert_eq!(
        removed,
        [
            "x-http-method-override",
            "x-middleware-subrequest",
            "x_portcullis_roles"
        ]
    );

    // Dot segments that a naive matcher would resolve into another tenant's list.
    let cases = [
        (
            "/lists/acme-roadmap/tasks/%2e%2e/%2e%2e/globex-ops",
            Some(alice.as_str()),
            400,
            7,
        ),
        ("/lists/acme-roadmap/tasks/t1", None, 401, 16),
        ("/lists/globex-ops", Some(alice.as_str()), 403, 7),
    ];
    for (path, token, status, code) in cases {
        let headers: Vec<(&str, &str)> = token.map(|t| ("authorization", t)).into_iter().collect();
        let refused = client
            .check(check_request("GET", path, &headers))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(refused.status.unwrap().code, code, "{path}");
        let Some(HttpResponse::DeniedResponse(denied)) = refused.http_response else {
            panic!("{path}: not a denied response");
        };
        assert_eq!(denied.status.unwrap().code, status, "{path}");
        let body: Value = serde_json::from_str(&denied.body).unwrap();
        let request_id = body["request_id"].as_str().unwrap().to_string();
        let names: Vec<String> = denied
            .headers
            .iter()
            .map(|h| h.header.clone().unwrap().key)
            .collect();
        assert!(names.contains(&"x-request-id".to_string()), "{names:?}");
        assert_eq!(
            names.contains(&"www-authenticate".to_string()),
            status == 401
        );
        let lines = decisions(&env, "envoy-grpc", 1).await;
        assert!(
            lines.iter().any(|l| l["request_id"] == request_id.as_str()),
            "{path}: no decision line"
        );
    }
    let lines = decisions(&env, "envoy-grpc", 4).await;
    let labels: Vec<&str> = lines
        .iter()
        .map(|l| l["decision"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["allow", "bad_request", "unauthenticated", "deny"]);
}

/// Writes `bytes` to `address` and reads what comes back until the peer closes or goes quiet.
async fn exchange_until_quiet(address: SocketAddr, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let read =
            tokio::time::timeout(std::time::Duration::from_secs(1), stream.read(&mut buf)).await;
        match read {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The smuggling classes of `tests/integration/smuggling.rs` through nginx: whatever nginx makes of the
/// framing, every request it forwards was decided first, and the request hidden in the body
/// (another tenant's list, no token) never reaches the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_requests_through_nginx_are_never_forwarded_undecided() {
    if !installed("nginx") {
        return;
    }
    let env = authz_env().await;
    let nginx = start_nginx(&env).await;
    let token = env.token("alice");
    let head = format!(
        "POST /lists/acme-roadmap/tasks HTTP/1.1\r\nHost: tasks.example.com\r\n\
         Authorization: Bearer {token}\r\n"
    );
    // A pipelined request after an empty body, beside the framing cases.
    let mut cases: Vec<String> = framing_cases(&head).into_iter().map(|(c, _)| c).collect();
    cases.push(format!("{head}Content-Length: 0\r\n\r\n{SMUGGLED}"));
    for case in &cases {
        let before = env.upstream.count();
        exchange_until_quiet(nginx.address, case.as_bytes()).await;
        let forwarded: Vec<Received> = env.upstream.requests.lock().unwrap()[before..].to_vec();
        for request in &forwarded {
            assert!(
                !request.target.contains("globex-ops"),
                "{case:?}: {forwarded:?}"
            );
            // Its decision: the line whose request id nginx passed on.
            let id = request.header_values("x-request-id").join(",");
            eventually("an allow for a forwarded request", async || {
                decisions_of(&env, "nginx")
                    .iter()
                    .any(|line| line["request_id"] == id.as_str() && line["decision"] == "allow")
            })
            .await;
        }
    }
}

/// The path corpus through nginx: whatever nginx makes of a target (it turns an absolute-form
/// target into origin form, for one), every request it forwards had an `allow` for exactly the
/// path the upstream receives, canonicalized; a target the gateway refuses is never forwarded
/// as it was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_path_corpus_holds_through_nginx() {
    if !installed("nginx") {
        return;
    }
    let env = authz_env().await;
    let nginx = start_nginx(&env).await;
    let bearer = format!("Bearer {}", env.token("dave"));
    let mut failures = Vec::new();
    for (target, status, _) in CORPUS {
        if *target == "/lists/LONG" {
            continue;
        }
        let before = env.upstream.count();
        nginx.get(target, &[("Authorization", &bearer)]).await;
        if env.upstream.count() == before {
            continue;
        }
        let received = env.upstream.last();
        if *status != 200 && received.target == *target {
            failures.push(format!("{target:?}: forwarded as sent, expected {status}"));
        }
        // The decision nginx forwarded on: the one whose request id reached the upstream.
        let id = received.header_values("x-request-id").join(",");
        let mut decision = Value::Null;
        eventually("the forwarded request's decision line", async || {
            decision = decisions_of(&env, "nginx")
                .into_iter()
                .find(|line| line["request_id"] == id.as_str())
                .unwrap_or(Value::Null);
            !decision.is_null()
        })
        .await;
        let canonical = portcullis::canonical::canonicalize(received.target.as_bytes())
            .map(|c| c.path)
            .unwrap_or_default();
        if decision["decision"] != "allow" || decision["path"] != canonical.as_str() {
            failures.push(format!(
                "{target:?}: upstream got {:?} ({canonical:?}) after {decision}",
                received.target
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
