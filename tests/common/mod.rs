//! Integration test harness: the real gateway on an ephemeral loopback port, a real echo
//! upstream, and a real development token issuer serving discovery and JWKS over HTTP.
//! Requests are written as raw HTTP/1.1 bytes so that tests control the exact request target.

#![allow(dead_code)]

pub mod idp;
pub mod jose;
pub mod path_corpus;
pub mod smuggling_cases;
pub mod spoofed_headers;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use http::StatusCode;
use portcullis::admin::serve_admin;
use portcullis::config::DecisionSink;
use portcullis::demo::{demo_claims, serve_issuer, DevIssuer, SigningAlg, DEMO_USERS};
use portcullis::ext_authz::serve_authz;
use portcullis::http_server::{json_response, serve as serve_http};
use portcullis::server::{load_gateway, serve, serve_tls, start_decision_log};
use portcullis::snapshot::Gateway;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub const AUDIENCE: &str = "https://tasks.example.com";

/// What the echo upstream received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
}

impl Received {
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// An upstream that records every request (on arrival) and answers 200 with a JSON echo; a
/// request carrying `x-echo-delay-ms: N` is answered N milliseconds later.
pub struct EchoUpstream {
    pub address: SocketAddr,
    pub requests: Arc<Mutex<Vec<Received>>>,
    task: JoinHandle<()>,
}

impl EchoUpstream {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        let task = tokio::spawn(serve_http(
            listener,
            move |req: http::Request<hyper::body::Incoming>| {
                let received = Received {
                    method: req.method().to_string(),
                    target: req.uri().to_string(),
                    headers: req
                        .headers()
                        .iter()
                        .map(|(n, v)| {
                            (
                                n.to_string(),
                                String::from_utf8_lossy(v.as_bytes()).into_owned(),
                            )
                        })
                        .collect(),
                };
                log.lock().unwrap().push(received.clone());
                // Opt-in slowness: `x-echo-delay-ms: N` makes the answer wait N milliseconds.
                let delay = received
                    .header_values("x-echo-delay-ms")
                    .first()
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(std::time::Duration::from_millis);
                // Opt-in CORS of the application's own: `x-echo-allow-origin: V` is answered
                // with `access-control-allow-origin: V`.
                let allow_origin = received
                    .header_values("x-echo-allow-origin")
                    .first()
                    .and_then(|v| http::HeaderValue::from_str(v).ok());
                async move {
                    if let Some(delay) = delay {
                        tokio::time::sleep(delay).await;
                    }
                    let mut response = json_response(
                        StatusCode::OK,
                        &json!({"method": received.method, "target": received.target}),
                    );
                    if let Some(origin) = allow_origin {
                        response
                            .headers_mut()
                            .insert(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
                    }
                    response
                }
            },
        ));
        EchoUpstream {
            address,
            requests,
            task,
        }
    }

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    pub fn last(&self) -> Received {
        self.requests
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("upstream saw no request")
    }
}

impl Drop for EchoUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A raw HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
}

/// Gateway, upstream and issuer, wired together with the repository's routes and policies.
pub struct TestEnv {
    pub gateway: SocketAddr,
    /// The TLS listener, when the configuration has `[server.tls]`.
    pub gateway_tls: Option<SocketAddr>,
    /// The admin listener (`/metrics`, `/healthz`, `/readyz`).
    pub admin: SocketAddr,
    /// The external authorization listener, when the configuration has `[authz_server]`.
    pub authz: Option<SocketAddr>,
    /// The decision log file.
    pub decision_log: PathBuf,
    /// The running gateway's state (cache statistics, key stores).
    pub state: Arc<Gateway>,
    pub upstream: EchoUpstream,
    pub issuer: Arc<DevIssuer>,
    pub dir: tempfile::TempDir,
    tasks: Vec<JoinHandle<()>>,
}

pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// A dev issuer serving its discovery document and JWKS on an ephemeral loopback port: the
/// issuer, its URL (`http://127.0.0.1:PORT/`) and the serving task.
pub async fn start_dev_issuer() -> (Arc<DevIssuer>, String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let issuer = Arc::new(DevIssuer::generate(url.clone()).unwrap());
    let task = tokio::spawn(serve_issuer(issuer.clone(), listener));
    (issuer, url, task)
}

/// Copies the named files of the repository's `policies/` into `<dir>/policies` (where a test
/// may change them) and points `<dir>/portcullis.toml` at that copy. Returns the copy's path.
pub fn use_own_policies(dir: &Path, files: &[&str]) -> PathBuf {
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    for name in files {
        std::fs::copy(repo_path("policies").join(name), policies.join(name)).unwrap();
    }
    let config = dir.join("portcullis.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("policies ="))
        .unwrap()
        .to_string();
    std::fs::write(&config, text.replace(&line, "policies = \"policies\"")).unwrap();
    policies
}

/// The repository's portcullis.toml with the issuer and upstream moved to test ports.
pub fn write_config(dir: &Path, issuer_url: &str, upstream: SocketAddr) {
    let gateway = std::fs::read_to_string(repo_path("portcullis.toml"))
        .unwrap()
        .replace("http://127.0.0.1:8081/", issuer_url)
        .replace(
            "policies = \"policies\"",
            &format!("policies = {:?}", repo_path("policies")),
        );
    std::fs::write(dir.join("portcullis.toml"), gateway).unwrap();
    let routes = std::fs::read_to_string(repo_path("routes.toml"))
        .unwrap()
        .replace("127.0.0.1:8082", &upstream.to_string());
    std::fs::write(dir.join("routes.toml"), routes).unwrap();
}

impl TestEnv {
    pub async fn start() -> Self {
        Self::start_with(|_, _| {}).await
    }

    /// Like `start`, with the repository's routes and policies replaced by `routes` (where
    /// `{upstream}` stands for the echo upstream's address) and `policies` (file name, text).
    pub async fn start_with_files(routes: &str, policies: &[(&str, &str)]) -> Self {
        let routes = routes.to_string();
        let policies: Vec<(String, String)> = policies
            .iter()
            .map(|(name, text)| (name.to_string(), text.to_string()))
            .collect();
        Self::start_with(move |dir, upstream| {
            std::fs::write(
                dir.join("routes.toml"),
                routes.replace("{upstream}", &upstream.to_string()),
            )
            .unwrap();
            let policy_dir = dir.join("policies");
            std::fs::create_dir(&policy_dir).unwrap();
            for (name, text) in &policies {
                std::fs::write(policy_dir.join(name), text).unwrap();
            }
            let config = std::fs::read_to_string(dir.join("portcullis.toml")).unwrap();
            let config = config.replace(
                &format!("policies = {:?}", repo_path("policies")),
                "policies = \"policies\"",
            );
            std::fs::write(dir.join("portcullis.toml"), config).unwrap();
        })
        .await
    }

    /// `start` with `edit` run on the written configuration directory before loading.
    pub async fn start_with(edit: impl FnOnce(&Path, SocketAddr)) -> Self {
        let upstream = EchoUpstream::start().await;
        let (issuer, issuer_url, issuer_task) = start_dev_issuer().await;

        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), &issuer_url, upstream.address);
        edit(dir.path(), upstream.address);
        let started = start_gateway_with_admin(&dir.path().join("portcullis.toml")).await;
        assert!(
            started.state.authenticator.has_all_keys(),
            "keys were not fetched"
        );
        let mut tasks = started.tasks;
        tasks.push(issuer_task);
        TestEnv {
            gateway: started.address,
            gateway_tls: started.tls_address,
            admin: started.admin,
            authz: started.authz,
            decision_log: started.decision_log,
            state: started.state,
            upstream,
            issuer,
            dir,
            tasks,
        }
    }

    pub fn issuer_url(&self) -> &str {
        self.issuer.issuer_url()
    }

    /// Claims of a demo user (see `DEMO_USERS`), valid for an hour.
    pub fn claims(&self, subject: &str) -> Value {
        let (_, roles, tenant) = DEMO_USERS.iter().find(|(s, _, _)| *s == subject).unwrap();
        demo_claims(self.issuer_url(), AUDIENCE, subject, roles, tenant)
    }

    pub fn token(&self, subject: &str) -> String {
        self.issuer
            .mint(SigningAlg::Rs256, &self.claims(subject))
            .unwrap()
    }

    /// Sends one request with the exact `target`, and `Connection: close`.
    pub async fn send(&self, method: &str, target: &str, headers: &[(&str, &str)]) -> Response {
        let mut request = format!(
            "{method} {target} HTTP/1.1\r\nHost: tasks.example.com\r\nConnection: close\r\n"
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        raw_exchange(self.gateway, request.as_bytes()).await
    }

    pub async fn get_as(&self, subject: &str, target: &str) -> Response {
        self.get_with_token(&self.token(subject), target).await
    }

    /// GET with `token` as the bearer token, whatever it holds.
    pub async fn get_with_token(&self, token: &str, target: &str) -> Response {
        let authorization = format!("Bearer {token}");
        self.send("GET", target, &[("Authorization", &authorization)])
            .await
    }

    pub async fn send_as(&self, subject: &str, method: &str, target: &str) -> Response {
        let token = format!("Bearer {}", self.token(subject));
        self.send(
            method,
            target,
            &[("Authorization", &token), ("Content-Length", "0")],
        )
        .await
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A gateway serving on ephemeral loopback ports.
pub struct Started {
    pub address: SocketAddr,
    pub tls_address: Option<SocketAddr>,
    pub admin: SocketAddr,
    pub authz: Option<SocketAddr>,
    pub state: Arc<Gateway>,
    /// The decision log: always a file beside `config` in tests (`decisions.log`).
    pub decision_log: PathBuf,
    pub tasks: Vec<JoinHandle<()>>,
}

/// Loads `config`, fetches the issuers' keys once (whether or not that succeeds), starts the
/// background key refresh and serves the proxy and the admin listener on ephemeral loopback
/// ports. Decisions go to `decisions.log` beside `config`.
pub async fn start_gateway_with_admin(config: &Path) -> Started {
    let mut gateway = load_gateway(config).unwrap_or_else(|e| panic!("{e}"));
    let decision_log = config.parent().unwrap().join("decisions.log");
    if !matches!(gateway.settings.decision_sink, DecisionSink::Http(_)) {
        gateway.settings.decision_sink = DecisionSink::File(decision_log.clone());
    }
    let state = Arc::new(gateway);
    state.fetch_keys().await;
    state.spawn_key_refresh();
    state.spawn_directory_sync().unwrap();
    state.spawn_bundle_poll();
    let log = start_decision_log(&state).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let admin_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = admin_listener.local_addr().unwrap();
    let mut tasks = vec![
        tokio::spawn(serve(listener, state.clone(), log.clone())),
        tokio::spawn(serve_admin(admin_listener, state.clone())),
    ];
    let mut authz = None;
    if state.settings.authz_server.is_some() {
        let authz_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        authz = Some(authz_listener.local_addr().unwrap());
        tasks.push(tokio::spawn(serve_authz(
            authz_listener,
            state.clone(),
            log.clone(),
        )));
    }
    let mut tls_address = None;
    if state.settings.tls.is_some() {
        let tls_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        tls_address = Some(tls_listener.local_addr().unwrap());
        tasks.push(tokio::spawn(serve_tls(tls_listener, state.clone(), log)));
    }
    Started {
        address,
        tls_address,
        admin,
        authz,
        state,
        decision_log,
        tasks,
    }
}

pub fn run_portcullis(subcommand: &str, config: &Path, args: &[&str]) -> (bool, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([subcommand, "--config"])
        .arg(config)
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Writes raw bytes, reads the response until the server closes the connection.
pub async fn raw_exchange(address: SocketAddr, request: &[u8]) -> Response {
    try_exchange(address, request).await.unwrap()
}

/// `raw_exchange` for a server that may not be listening (any I/O error is returned).
pub async fn try_exchange(address: SocketAddr, request: &[u8]) -> std::io::Result<Response> {
    exchange_on(TcpStream::connect(address).await?, request).await
}

/// `raw_exchange` from the local address `source` (any 127.0.0.0/8 address works on Linux).
pub async fn raw_exchange_from(
    source: std::net::IpAddr,
    address: SocketAddr,
    request: &[u8],
) -> Response {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    exchange_on(socket.connect(address).await.unwrap(), request)
        .await
        .unwrap()
}

async fn exchange_on(mut stream: TcpStream, request: &[u8]) -> std::io::Result<Response> {
    stream.write_all(request).await?;
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).await?;
    if bytes.is_empty() {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(parse_response(&bytes))
}

fn parse_response(bytes: &[u8]) -> Response {
    let text = String::from_utf8_lossy(bytes);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Polls `check` every 50 ms for at most 15 s; panics naming `what` if it never holds.
pub async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..300 {
        if check().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{what} did not happen within 15 s");
}

/// The decision log lines written to `path` so far, as JSON.
pub fn decision_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Appends `text` (upstreams and routes) to `<dir>/routes.toml`.
pub fn append_routes(dir: &Path, text: &str) {
    let routes = dir.join("routes.toml");
    let mut current = std::fs::read_to_string(&routes).unwrap();
    current.push_str(text);
    std::fs::write(&routes, current).unwrap();
}
