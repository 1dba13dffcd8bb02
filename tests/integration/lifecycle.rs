//! Process lifecycle of `portcullis run` (the real binary in a pingora Server, real sockets, a
//! real dev issuer): SIGTERM drains in-flight requests and exits 0, SIGQUIT hands the listening
//! socket to a process started with `--upgrade`, SIGHUP reloads policies and reopens a file
//! decision log, and the probes keep answering while a reload validates 10,000 policies.
//!
//! Waits are generous upper bounds of polling loops, never timing assertions: the machine that
//! runs these may be slow and busy.

use std::future::Future;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{try_exchange, write_config, EchoUpstream, Response, AUDIENCE};
use portcullis::demo::{demo_claims, DevIssuer, SigningAlg};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

const TASK: &str = "/lists/acme-roadmap/tasks/t1";

/// A `portcullis run` child process; killed (if still running) when dropped. Its stdout and
/// stderr go to `log`, shown when an assertion about it fails.
struct Running {
    child: Child,
    log: PathBuf,
}

impl Running {
    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Sends `signal` (`TERM`, `QUIT`, `HUP`, ...) with kill(1).
    fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{signal} {} failed", self.pid());
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Polls until the process exits; None if it is still running after `within`.
    async fn exit_within(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago (pingora cannot report the port it bound for port 0).
fn free_port() -> SocketAddr {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Polls `condition` every 50 ms until it holds; false if it still does not after `within`.
async fn eventually<F: Future<Output = bool>>(within: Duration, condition: impl Fn() -> F) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One request with `Connection: close`; any I/O error (nothing listening, connection reset,
/// no answer) is returned.
async fn request(
    address: SocketAddr,
    target: &str,
    token: Option<&str>,
    extra_headers: &[(&str, &str)],
) -> std::io::Result<Response> {
    let mut text =
        format!("GET {target} HTTP/1.1\r\nHost: tasks.example.com\r\nConnection: close\r\n");
    if let Some(token) = token {
        text.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    for (name, value) in extra_headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    try_exchange(address, text.as_bytes()).await
}

/// The status of a GET, or None when nothing answers.
async fn status_of(address: SocketAddr, target: &str, token: Option<&str>) -> Option<u16> {
    request(address, target, token, &[])
        .await
        .ok()
        .map(|r| r.status)
}

/// The decision records in `path` (one JSON object a line); none when the file is missing.
fn decision_records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("decision log line is not JSON ({e}): {line:?}"))
        })
        .collect()
}

/// Records of GET `TASK` (route `read-task`) with HTTP status `status`.
fn task_records(records: &[Value], status: u64) -> Vec<&Value> {
    records
        .iter()
        .filter(|r| r["route"] == "read-task" && r["status"] == status)
        .collect()
}

/// Issuer, upstream and a configuration directory for the real binary: the repository's
/// portcullis.toml and routes.toml on free ports, a short grace period, the upgrade socket
/// inside the directory, decisions to `decisions.log` there, and no file watching.
struct Env {
    dir: tempfile::TempDir,
    config: PathBuf,
    listen: SocketAddr,
    admin: SocketAddr,
    upgrade_socket: PathBuf,
    decision_log: PathBuf,
    upstream: EchoUpstream,
    issuer: Arc<DevIssuer>,
    issuer_url: String,
    _issuer_task: JoinHandle<()>,
}

impl Env {
    async fn new() -> Self {
        let upstream = EchoUpstream::start().await;
        let (issuer, issuer_url, issuer_task) = crate::common::start_dev_issuer().await;

        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), &issuer_url, upstream.address);
        let config = dir.path().join("portcullis.toml");
        let listen = free_port();
        let admin = free_port();
        let upgrade_socket = dir.path().join("upgrade.sock");
        let decision_log = dir.path().join("decisions.log");
        let text = std::fs::read_to_string(&config).unwrap();
        for expected in [
            "listen = \"127.0.0.1:8080\"",
            "listen = \"127.0.0.1:9901\"",
            "realm = \"tasks\"",
            "sink = \"stdout\"",
        ] {
            assert!(text.contains(expected), "portcullis.toml lacks {expected}");
        }
        let text = text
            .replace("127.0.0.1:8080", &listen.to_string())
            .replace("127.0.0.1:9901", &admin.to_string())
            .replace(
                "realm = \"tasks\"",
                &format!(
                    "realm = \"tasks\"\n\
                     grace_period_seconds = 3\n\
                     graceful_shutdown_timeout_seconds = 2\n\
                     upgrade_socket = {:?}\n\
                     pid_file = {:?}",
                    upgrade_socket.to_str().unwrap(),
                    dir.path().join("portcullis.pid").to_str().unwrap(),
                ),
            )
            .replace(
                "sink = \"stdout\"",
                "sink = \"file\"\npath = \"decisions.log\"",
            );
        let text = format!("{text}\n[reload]\nwatch = false\n");
        std::fs::write(&config, text).unwrap();
        Env {
            dir,
            config,
            listen,
            admin,
            upgrade_socket,
            decision_log,
            upstream,
            issuer,
            issuer_url,
            _issuer_task: issuer_task,
        }
    }

    /// Replaces the repository's policies with a copy in the directory, to be edited.
    fn copy_policies(&self) -> PathBuf {
        crate::common::use_own_policies(
            self.dir.path(),
            &["schema.cedarschema", "entities.json", "tasks.cedar"],
        )
    }

    /// Starts `portcullis run` (with `--upgrade` when `upgrade`); output goes to `<name>.log`.
    fn spawn(&self, name: &str, upgrade: bool) -> Running {
        let log = self.dir.path().join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        command.args(["run", "--config"]).arg(&self.config);
        if upgrade {
            command.arg("--upgrade");
        }
        let child = command
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap();
        Running { child, log }
    }

    /// Waits until the proxy answers `/health` with 200.
    async fn wait_until_serving(&self, gateway: &mut Running) {
        let listen = self.listen;
        let up = eventually(Duration::from_secs(30), || async move {
            status_of(listen, "/health", None).await == Some(200)
        })
        .await;
        assert!(
            up,
            "the gateway did not come up (exit: {:?}):\n{}",
            gateway.exited(),
            gateway.output()
        );
    }

    fn token(&self, subject: &str) -> String {
        self.issuer
            .mint(
                SigningAlg::Es256,
                &demo_claims(
                    &self.issuer_url,
                    AUDIENCE,
                    subject,
                    &["manager"],
                    "org_acme",
                ),
            )
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_finish_then_exits_zero() {
    let env = Env::new().await;
    let mut gateway = env.spawn("gateway", false);
    env.wait_until_serving(&mut gateway).await;
    let token = env.token("alice");
    // The pid file names the process (pingora writes one only when daemonized).
    let pid_file = env.dir.path().join("portcullis.pid");
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        gateway.pid()
    );
    assert_eq!(status_of(env.admin, "/readyz", None).await, Some(200));

    // Three authorized requests that the upstream answers only after 1.5 s.
    let before = env.upstream.count();
    let slow: Vec<JoinHandle<std::io::Result<Response>>> = (0..3)
        .map(|_| {
            let (listen, token) = (env.listen, token.clone());
            tokio::spawn(async move {
                request(listen, TASK, Some(&token), &[("x-echo-delay-ms", "1500")]).await
            })
        })
        .collect();
    let upstream = &env.upstream;
    assert!(
        eventually(Duration::from_secs(20), || async move {
            upstream.count() >= before + 3
        })
        .await,
        "the slow requests did not reach the upstream:\n{}",
        gateway.output()
    );

    gateway.signal("TERM");

    // The listener closes: new connections are refused, while the three are still running.
    let listen = env.listen;
    let refused = eventually(Duration::from_secs(20), || async move {
        TcpStream::connect(listen).await.is_err()
    })
    .await;
    assert!(refused, "the listener stayed open after SIGTERM");
    // While draining, the admin listener still answers, and says not ready. Readiness follows
    // pingora's execution phase, which is announced just after the listener closes.
    let admin = env.admin;
    assert!(
        eventually(Duration::from_secs(10), || async move {
            status_of(admin, "/readyz", None).await == Some(503)
        })
        .await,
        "/readyz stayed ready after SIGTERM"
    );
    assert_eq!(status_of(env.admin, "/healthz", None).await, Some(200));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        status_of(env.listen, "/health", None).await,
        None,
        "a request after SIGTERM was served"
    );

    for (n, handle) in slow.into_iter().enumerate() {
        let response = handle
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("in-flight request {n} failed: {e}\n{}", gateway.output()));
        assert_eq!(response.status, 200, "in-flight request {n}: {response:?}");
        let body = response.json();
        assert_eq!(body["method"], "GET", "{body}");
        assert_eq!(body["target"], TASK, "{body}");
    }

    let status = gateway.exit_within(Duration::from_secs(30)).await;
    let status =
        status.unwrap_or_else(|| panic!("still running 30 s after SIGTERM:\n{}", gateway.output()));
    assert!(
        status.success(),
        "exit status {status} after SIGTERM:\n{}",
        gateway.output()
    );
    assert!(!pid_file.exists(), "the pid file outlived the process");

    // Flushed at exit: one record per slow request, each allowed and 200.
    let records = decision_records(&env.decision_log);
    let tasks: Vec<&Value> = records
        .iter()
        .filter(|r| r["route"] == "read-task")
        .collect();
    assert_eq!(tasks.len(), 3, "{records:#?}");
    for record in tasks {
        assert_eq!(record["status"], 200, "{record}");
        assert_eq!(record["decision"], "allow", "{record}");
        assert_eq!(record["principal"], "User::\"alice\"", "{record}");
    }
}

/// Counts of a client loop's requests.
#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    failed: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_upgrade_hands_the_listening_socket_to_a_new_process() {
    let env = Env::new().await;
    let mut old = env.spawn("old", false);
    env.wait_until_serving(&mut old).await;
    let token = env.token("alice");
    assert_eq!(status_of(env.listen, TASK, Some(&token)).await, Some(200));

    // The new process fetches its keys, then waits (in pingora's bootstrap, for about 6 s) on
    // the upgrade socket, which it creates.
    let mut new = env.spawn("new", true);
    let socket = env.upgrade_socket.clone();
    let waiting = eventually(Duration::from_secs(20), || {
        let socket = socket.clone();
        async move { socket.exists() }
    })
    .await;
    assert!(
        waiting,
        "the new process never opened the upgrade socket (exit: {:?}):\n{}",
        new.exited(),
        new.output()
    );

    // A client loop across the handover.
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (stop, listen, token) = (stop.clone(), env.listen, token.clone());
        tokio::spawn(async move {
            let mut tally = Tally::default();
            while !stop.load(Ordering::Acquire) {
                match request(listen, TASK, Some(&token), &[]).await {
                    Ok(r) if r.status == 200 => tally.ok += 1,
                    Ok(r) => tally.failed.push(format!("status {}", r.status)),
                    Err(e) => tally.failed.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            tally
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;

    old.signal("QUIT");

    // The old process sends its sockets, serves 5 s more (pingora's CLOSE_TIMEOUT) beside the
    // new one, stops accepting, waits its grace period and exits.
    let status = old.exit_within(Duration::from_secs(60)).await;
    let status = status.unwrap_or_else(|| {
        panic!(
            "the old process still runs 60 s after SIGQUIT:\n{}\n--- new:\n{}",
            old.output(),
            new.output()
        )
    });
    assert!(status.success(), "old process: {status}\n{}", old.output());
    assert!(
        new.exited().is_none(),
        "the new process exited: {:?}\n{}",
        new.exited(),
        new.output()
    );

    // The loop keeps running a moment against the new process alone.
    let served_before = env.upstream.count();
    let upstream = &env.upstream;
    assert!(
        eventually(Duration::from_secs(20), || async move {
            upstream.count() >= served_before + 5
        })
        .await,
        "nothing served after the old process exited:\n{}",
        new.output()
    );
    stop.store(true, Ordering::Release);
    let tally = client.await.unwrap();
    eprintln!(
        "handover: {} requests served, {} failed: {:?}",
        tally.ok,
        tally.failed.len(),
        tally.failed
    );

    // The new process serves on the same port, with the old one gone.
    assert_eq!(status_of(env.listen, TASK, Some(&token)).await, Some(200));
    assert_eq!(status_of(env.listen, TASK, None).await, Some(401));
    assert!(new.exited().is_none(), "{}", new.output());
    // Its admin listener binds once the old process has released the address.
    let admin = env.admin;
    assert!(
        eventually(Duration::from_secs(20), || async move {
            status_of(admin, "/healthz", None).await == Some(200)
        })
        .await,
        "the new process's admin listener never came up:\n{}",
        new.output()
    );
    // Both processes accept on the one listening socket for pingora's 5 s CLOSE_TIMEOUT, and
    // its kernel accept queue survives the old process closing its copy, so no request is
    // refused or dropped: over 13 runs (some with two copies of this file running at once)
    // about 640 requests crossed each handover and none failed.
    assert!(
        tally.failed.is_empty(),
        "requests failed during the handover ({} served): {:?}\n--- old:\n{}\n--- new:\n{}",
        tally.ok,
        tally.failed,
        old.output(),
        new.output()
    );
    assert!(tally.ok > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_policies_and_reopens_the_decision_log() {
    let env = Env::new().await;
    let policies = env.copy_policies();
    let mut gateway = env.spawn("gateway", false);
    env.wait_until_serving(&mut gateway).await;
    let token = env.token("alice");

    assert_eq!(status_of(env.listen, TASK, Some(&token)).await, Some(200));
    let log = env.decision_log.clone();
    assert!(
        eventually(Duration::from_secs(10), || {
            let log = log.clone();
            async move { !task_records(&decision_records(&log), 200).is_empty() }
        })
        .await,
        "the 200 record never reached {}",
        env.decision_log.display()
    );

    // Rotation (logrotate's rename), and a policy that forbids alice everything.
    let rotated = env.dir.path().join("decisions.log.1");
    std::fs::rename(&env.decision_log, &rotated).unwrap();
    std::fs::write(
        policies.join("lockdown.cedar"),
        "@id(\"lockdown\")\nforbid (principal == User::\"alice\", action, resource);\n",
    )
    .unwrap();
    // Nothing watches the files ([reload] watch = false): still the old policies.
    assert_eq!(status_of(env.listen, TASK, Some(&token)).await, Some(200));

    gateway.signal("HUP");
    let (listen, token_ref) = (env.listen, &token);
    assert!(
        eventually(Duration::from_secs(20), || async move {
            status_of(listen, TASK, Some(token_ref)).await == Some(403)
        })
        .await,
        "the policy change was not loaded after SIGHUP:\n{}",
        gateway.output()
    );
    assert!(gateway.exited().is_none(), "SIGHUP ended the process");

    // The 403 lands in the new file, the 200 stayed in the rotated one. (SIGHUP asks for the
    // reopen before it reloads, so no 403 can reach the old file; the writer would also notice
    // the rename by itself within a second, so this does not tell the two apart.)
    let log = env.decision_log.clone();
    assert!(
        eventually(Duration::from_secs(10), || {
            let log = log.clone();
            async move { !task_records(&decision_records(&log), 403).is_empty() }
        })
        .await,
        "no 403 record in the reopened {}:\n{:#?}\n{}",
        env.decision_log.display(),
        decision_records(&env.decision_log),
        gateway.output()
    );
    assert!(env.decision_log.exists());
    let denied = decision_records(&env.decision_log);
    let denied = task_records(&denied, 403);
    assert_eq!(denied[0]["decision"], "deny", "{}", denied[0]);
    assert_eq!(
        denied[0]["policies"],
        serde_json::json!(["lockdown"]),
        "{}",
        denied[0]
    );
    let old = decision_records(&rotated);
    assert!(!task_records(&old, 200).is_empty(), "{old:#?}");
    assert!(task_records(&old, 403).is_empty(), "{old:#?}");
}

/// 10,000 policies valid against the example schema, each for its own user.
fn many_policies() -> String {
    (0..10_000)
        .map(|i| {
            format!(
                "@id(\"bulk-{i}\")\npermit (principal == User::\"bulk-{i}\", action == Action::\"ReadList\", resource);\n"
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_answer_while_a_large_reload_is_validated() {
    let env = Env::new().await;
    let policies = env.copy_policies();
    let mut gateway = env.spawn("gateway", false);
    env.wait_until_serving(&mut gateway).await;
    let readyz = |admin: SocketAddr| async move {
        let response = try_exchange(
            admin,
            b"GET /readyz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
        )
        .await
        .ok()?;
        let body: Value = serde_json::from_str(&response.body).ok()?;
        Some((response.status, body["snapshot"].as_u64()?))
    };
    assert_eq!(readyz(env.admin).await, Some((200, 1)));

    std::fs::write(policies.join("bulk.cedar"), many_policies()).unwrap();
    gateway.signal("HUP");
    // Until the new snapshot is in, every probe still answers, from the old one.
    let mut answered_during_reload = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let answer = readyz(env.admin).await;
        match answer {
            Some((200, 1)) => answered_during_reload += 1,
            Some((200, 2)) => break,
            other => panic!("a probe went unanswered during the reload: {other:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "the reload never finished:\n{}",
            gateway.output()
        );
    }
    assert!(
        answered_during_reload >= 3,
        "only {answered_during_reload} probes were answered while 10,000 policies were validated"
    );
    // The log line follows the swap.
    let output = || gateway.output();
    assert!(
        eventually(Duration::from_secs(10), || async {
            output().contains("SIGHUP: routes and policies reloaded (snapshot 2)")
        })
        .await,
        "{}",
        gateway.output()
    );
}

const HEC_AUTHORIZATION: &str = "Splunk 0f0e2b1c-hec-token";

/// A log collector on loopback that takes NDJSON POSTs (as Vector's `http_server` source does):
/// every line it received, and a switch that takes it down (its port refuses connections)
/// and up again on the same port.
struct Collector {
    address: SocketAddr,
    lines: Arc<std::sync::Mutex<Vec<Value>>>,
    posts: Arc<std::sync::atomic::AtomicU64>,
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Collector {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let collector = Collector {
            address: listener.local_addr().unwrap(),
            lines: Arc::default(),
            posts: Arc::default(),
            task: std::sync::Mutex::new(None),
        };
        collector.serve(listener);
        collector
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let (lines, posts) = (self.lines.clone(), self.posts.clone());
        let task = tokio::spawn(portcullis::http_server::serve(
            listener,
            move |request: http::Request<hyper::body::Incoming>| {
                let (lines, posts) = (lines.clone(), posts.clone());
                async move {
                    use http_body_util::BodyExt;
                    let header = |name: &str| {
                        request
                            .headers()
                            .get(name)
                            .map(|v| v.to_str().unwrap().to_string())
                    };
                    // NDJSON, or Splunk HEC events (with the HEC token).
                    let hec = match (header("content-type"), header("authorization")) {
                        (Some(t), None) if t == "application/x-ndjson" => false,
                        (Some(t), Some(a)) if t == "application/json" && a == HEC_AUTHORIZATION => {
                            true
                        }
                        _ => {
                            return portcullis::http_server::error_response(
                                http::StatusCode::UNAUTHORIZED,
                                "not ndjson, or not HEC with the token",
                            )
                        }
                    };
                    let body = request.into_body().collect().await.unwrap().to_bytes();
                    posts.fetch_add(1, Ordering::SeqCst);
                    let mut received = lines.lock().unwrap();
                    for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                        let value: Value = serde_json::from_slice(line).unwrap();
                        if hec {
                            assert_eq!(value["sourcetype"], "portcullis:decision");
                            received.push(value["event"].clone());
                        } else {
                            received.push(value);
                        }
                    }
                    portcullis::http_server::json_response(
                        http::StatusCode::OK,
                        &serde_json::json!({}),
                    )
                }
            },
        ));
        *self.task.lock().unwrap() = Some(task);
    }

    fn go_down(&self) {
        if let Some(task) = self.task.lock().unwrap().take() {
            task.abort();
        }
    }

    async fn come_up(&self) {
        let listener = loop {
            match tokio::net::TcpListener::bind(self.address).await {
                Ok(listener) => break listener,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        self.serve(listener);
    }

    fn request_ids(&self) -> std::collections::HashSet<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| l["request_id"].as_str().map(str::to_string))
            .collect()
    }
}

impl Env {
    /// Decisions to `collector` through a spool in the directory, in batches of 100 ms.
    fn ship_to(&self, collector: &Collector, spool_max_bytes: u64) {
        let text = std::fs::read_to_string(&self.config).unwrap().replace(
            "sink = \"file\"\npath = \"decisions.log\"",
            &format!(
                "sink = \"http\"\nurl = \"http://{}/ingest\"\nspool_dir = \"spool\"\n\
                 spool_max_bytes = {spool_max_bytes}\nbatch_bytes = 8192\nbatch_milliseconds = 100",
                collector.address
            ),
        );
        std::fs::write(&self.config, text).unwrap();
    }
}

/// Refused requests (401: no token), whose bodies carry their request ids.
async fn refused_request_ids(address: SocketAddr, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..count {
        let response = request(address, TASK, None, &[]).await.unwrap();
        assert_eq!(response.status, 401);
        ids.push(response.json()["request_id"].as_str().unwrap().to_string());
    }
    ids
}

/// The value of the metric line that starts with `series`.
async fn metric(admin: SocketAddr, series: &str) -> Option<f64> {
    let response = try_exchange(
        admin,
        b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
    )
    .await
    .ok()?;
    response
        .body
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decision_logs_reach_the_collector_across_an_outage_and_a_restart() {
    let env = Env::new().await;
    let collector = Collector::start().await;
    env.ship_to(&collector, 64 * 1024 * 1024);
    let mut gateway = env.spawn("first", false);
    env.wait_until_serving(&mut gateway).await;

    let mut sent = refused_request_ids(env.listen, 100).await;
    let ids = sent.clone();
    assert!(
        eventually(Duration::from_secs(20), || {
            let received = collector.request_ids();
            let ids = ids.clone();
            async move { ids.iter().all(|id| received.contains(id)) }
        })
        .await,
        "the first 100 records did not all arrive:\n{}",
        gateway.output()
    );
    assert!(collector.posts.load(Ordering::SeqCst) >= 1);

    // The collector goes down: records wait in the spool, the POSTs fail and are retried.
    collector.go_down();
    sent.extend(refused_request_ids(env.listen, 100).await);
    let admin = env.admin;
    assert!(
        eventually(Duration::from_secs(20), || async move {
            metric(admin, "portcullis_decision_log_ship_failures_total")
                .await
                .is_some_and(|f| f >= 1.0)
                && metric(admin, "portcullis_decision_log_spool_bytes")
                    .await
                    .is_some_and(|b| b > 0.0)
        })
        .await,
        "no failed POST or no spooled bytes:\n{}",
        gateway.output()
    );

    // A restart while the collector is still down: the second process takes over the spool.
    gateway.signal("TERM");
    assert!(gateway.exit_within(Duration::from_secs(20)).await.is_some());
    let mut gateway = env.spawn("second", false);
    env.wait_until_serving(&mut gateway).await;
    sent.extend(refused_request_ids(env.listen, 50).await);

    // Back up: everything arrives, at least once, and nothing was dropped.
    collector.come_up().await;
    let all = sent.clone();
    assert!(
        eventually(Duration::from_secs(30), || {
            let received = collector.request_ids();
            let all = all.clone();
            async move { all.iter().all(|id| received.contains(id)) }
        })
        .await,
        "{} of {} records arrived:\n{}",
        sent.iter()
            .filter(|id| collector.request_ids().contains(*id))
            .count(),
        sent.len(),
        gateway.output()
    );
    assert_eq!(
        metric(
            env.admin,
            "portcullis_decision_log_records_total{outcome=\"dropped\"}"
        )
        .await,
        Some(0.0)
    );
    assert!(
        eventually(Duration::from_secs(10), || async move {
            metric(admin, "portcullis_decision_log_spool_bytes").await == Some(0.0)
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splunk_hec_events_carry_the_token() {
    let env = Env::new().await;
    let collector = Collector::start().await;
    env.ship_to(&collector, 1024 * 1024);
    std::fs::write(env.dir.path().join("hec-token"), "0f0e2b1c-hec-token\n").unwrap();
    let text = std::fs::read_to_string(&env.config).unwrap().replace(
        "spool_dir = \"spool\"",
        "spool_dir = \"spool\"\nformat = \"splunk_hec\"\ntoken_file = \"hec-token\"",
    );
    std::fs::write(&env.config, text).unwrap();
    let mut gateway = env.spawn("gateway", false);
    env.wait_until_serving(&mut gateway).await;
    let sent = refused_request_ids(env.listen, 20).await;
    assert!(
        eventually(Duration::from_secs(20), || {
            let received = collector.request_ids();
            let sent = sent.clone();
            async move { sent.iter().all(|id| received.contains(id)) }
        })
        .await,
        "the HEC events did not arrive:\n{}",
        gateway.output()
    );
    assert!(!gateway.output().contains("0f0e2b1c-hec-token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_drops_and_counts_and_delivers_everything_it_kept() {
    let env = Env::new().await;
    let collector = Collector::start().await;
    collector.go_down();
    // About 40 records fit.
    env.ship_to(&collector, 24 * 1024);
    let mut gateway = env.spawn("gateway", false);
    env.wait_until_serving(&mut gateway).await;
    let sent = refused_request_ids(env.listen, 200).await;
    let admin = env.admin;
    assert!(
        eventually(Duration::from_secs(20), || async move {
            metric(
                admin,
                "portcullis_decision_log_records_total{outcome=\"dropped\"}",
            )
            .await
            .is_some_and(|d| d > 0.0)
        })
        .await,
        "nothing was dropped:\n{}",
        gateway.output()
    );
    assert!(
        gateway.output().contains("the decision log spool is full"),
        "{}",
        gateway.output()
    );
    let written = metric(
        admin,
        "portcullis_decision_log_records_total{outcome=\"written\"}",
    )
    .await
    .unwrap();

    collector.come_up().await;
    assert!(
        eventually(Duration::from_secs(30), || async move {
            metric(
                admin,
                "portcullis_decision_log_records_total{outcome=\"shipped\"}",
            )
            .await
                == Some(written)
        })
        .await,
        "not every written record was shipped:\n{}",
        gateway.output()
    );
    // Every record is accounted for: the collector has each written one (the readiness
    // probes' `/health` among them), and each refused request was either delivered or dropped.
    let received = collector.request_ids();
    assert_eq!(received.len() as f64, written);
    let probes = collector
        .lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l["route"] == "health")
        .count();
    let delivered = sent.iter().filter(|id| received.contains(*id)).count();
    assert_eq!(delivered + probes, written as usize);
    let dropped = metric(
        admin,
        "portcullis_decision_log_records_total{outcome=\"dropped\"}",
    )
    .await
    .unwrap();
    assert_eq!(sent.len() - delivered, dropped as usize);
}

/// Debian's `docker-registry` (CNCF distribution) on a loopback port, storing in `dir`.
struct OciRegistry {
    address: SocketAddr,
    storage: PathBuf,
    config: PathBuf,
    child: Option<Child>,
}

impl OciRegistry {
    async fn start(dir: &Path) -> Self {
        let address = free_port();
        let storage = dir.join("registry-storage");
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {address}\n",
                storage.display()
            ),
        )
        .unwrap();
        let mut registry = OciRegistry {
            address,
            storage,
            config,
            child: None,
        };
        registry.come_up().await;
        registry
    }

    async fn come_up(&mut self) {
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry (Debian package docker-registry) must be installed");
        self.child = Some(child);
        let address = self.address;
        assert!(
            eventually(Duration::from_secs(20), || async move {
                try_exchange(
                    address,
                    b"GET /v2/ HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n",
                )
                .await
                .is_ok_and(|r| r.status == 200)
            })
            .await,
            "the registry did not start"
        );
    }

    fn go_down(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn reference(&self, tag: &str) -> String {
        format!("{}/portcullis/policies:{tag}", self.address)
    }

    /// Overwrites the blob `digest` in the registry's storage (what an attacker with access
    /// to the storage, or a broken mirror, would do).
    fn tamper(&self, digest: &str, with: &[u8]) {
        let hex = digest.strip_prefix("sha256:").unwrap();
        let path = self
            .storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data");
        assert!(path.exists(), "no blob at {}", path.display());
        std::fs::write(path, with).unwrap();
    }
}

impl Drop for OciRegistry {
    fn drop(&mut self) {
        self.go_down();
    }
}

/// `portcullis bundle ...`; (success, stdout, stderr).
fn bundle_command(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("bundle")
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

/// Builds a bundle of `version` from the environment's routes and policies, pushes it to
/// `reference`, signs it with `key` (when given); returns the digest.
fn publish(env: &Env, version: u64, reference: &str, key: Option<&Path>) -> String {
    let file = env.dir.path().join(format!("bundle-{version}.json"));
    let config = env.dir.path().join("build.toml");
    let (ok, _, stderr) = bundle_command(&[
        "build",
        "--config",
        config.to_str().unwrap(),
        "--output",
        file.to_str().unwrap(),
        "--version",
        &version.to_string(),
    ]);
    assert!(ok, "bundle build: {stderr}");
    let (ok, stdout, stderr) =
        bundle_command(&["push", file.to_str().unwrap(), reference, "--plain-http"]);
    assert!(ok, "bundle push: {stderr}");
    let digest = stdout.trim().to_string();
    if let Some(key) = key {
        let (ok, _, stderr) = bundle_command(&[
            "sign",
            reference,
            "--key",
            key.to_str().unwrap(),
            "--plain-http",
        ]);
        assert!(ok, "bundle sign: {stderr}");
    }
    digest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_bundles_from_an_oci_registry_reach_the_gateway_and_bad_ones_never_do() {
    let env = Env::new().await;
    let policies = env.copy_policies();
    std::fs::create_dir(policies.join("tests")).unwrap();
    std::fs::copy(
        crate::common::repo_path("policies/tests/tasks.toml"),
        policies.join("tests/tasks.toml"),
    )
    .unwrap();
    let mut registry = OciRegistry::start(env.dir.path()).await;
    let dir = env.dir.path();
    for name in ["release", "stranger"] {
        let (ok, _, stderr) = bundle_command(&["keygen", dir.join(name).to_str().unwrap()]);
        assert!(ok, "{stderr}");
    }
    // The build machine's configuration: the same files, no [bundle].
    std::fs::copy(&env.config, dir.join("build.toml")).unwrap();
    let reference = registry.reference("prod");
    let release = dir.join("release.key");
    let first = publish(&env, 1, &reference, Some(&release));

    // The gateway reads its routes and policies from the bundle only.
    let text = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(
        &env.config,
        format!(
            "{text}\n[bundle]\nreference = \"{reference}\"\npoll_seconds = 1\npublic_keys = [\"release.pub\"]\ncache_dir = \"bundles\"\nplain_http = true\n"
        ),
    )
    .unwrap();
    let mut gateway = env.spawn("first", false);
    env.wait_until_serving(&mut gateway).await;
    let token = env.token("zed");
    assert_eq!(status_of(env.listen, TASK, Some(&token)).await, Some(200));
    let admin = env.admin;
    let bundle_version = || async move {
        let response = try_exchange(
            admin,
            b"GET /readyz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
        response.json()["bundle"]["version"].as_u64()
    };
    assert_eq!(bundle_version().await, Some(1));

    // A change that fails the policy test suites is not built.
    std::fs::write(
        policies.join("lockdown.cedar"),
        "@id(\"lockdown\")\nforbid (principal == User::\"alice\", action, resource);\n",
    )
    .unwrap();
    let build = dir.join("build.toml");
    let (ok, stdout, _) = bundle_command(&[
        "build",
        "--config",
        build.to_str().unwrap(),
        "--output",
        dir.join("failing.json").to_str().unwrap(),
    ]);
    assert!(!ok && stdout.contains("FAIL"), "{stdout}");
    assert!(!dir.join("failing.json").exists());

    // Version 2 forbids zed everything: pushed and signed, it reaches the gateway.
    std::fs::write(
        policies.join("lockdown.cedar"),
        "@id(\"lockdown\")\nforbid (principal == User::\"zed\", action, resource);\n",
    )
    .unwrap();
    publish(&env, 2, &reference, Some(&release));
    let (listen, token_ref) = (env.listen, &token);
    assert!(
        eventually(Duration::from_secs(30), || async move {
            status_of(listen, TASK, Some(token_ref)).await == Some(403)
        })
        .await,
        "version 2 did not arrive:\n{}",
        gateway.output()
    );
    assert_eq!(bundle_version().await, Some(2));

    // Refused, each with its reason, while version 2 stays: unsigned, signed by an unknown
    // key, an older version, a tampered layer.
    std::fs::remove_file(policies.join("lockdown.cedar")).unwrap();
    let refusal = |reason: &'static str| async move {
        metric(
            admin,
            &format!("portcullis_bundle_refusals_total{{reason=\"{reason}\"}}"),
        )
        .await
        .is_some_and(|n| n >= 1.0)
    };
    publish(&env, 3, &reference, None);
    assert!(
        eventually(Duration::from_secs(30), || refusal("unsigned")).await,
        "{}",
        gateway.output()
    );
    publish(&env, 4, &reference, Some(&dir.join("stranger.key")));
    assert!(
        eventually(Duration::from_secs(30), || refusal("untrusted_key")).await,
        "{}",
        gateway.output()
    );
    let file = dir.join("bundle-1.json");
    let (ok, _, stderr) =
        bundle_command(&["push", file.to_str().unwrap(), &reference, "--plain-http"]);
    assert!(ok, "{stderr}");
    assert!(
        eventually(Duration::from_secs(30), || refusal("downgrade")).await,
        "{}",
        gateway.output()
    );
    // Version 5, signed, pushed first under another tag; its layer is rewritten in the
    // registry's storage; then `prod` is pointed at it.
    let staging = registry.reference("staging");
    let digest = publish(&env, 5, &staging, Some(&release));
    let manifest = std::fs::read_to_string(
        registry
            .storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&digest["sha256:".len().."sha256:".len() + 2])
            .join(&digest["sha256:".len()..])
            .join("data"),
    )
    .unwrap();
    let manifest: Value = serde_json::from_str(&manifest).unwrap();
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let mut evil = portcullis::bundle::format::Bundle::from_bytes(
        &std::fs::read(dir.join("bundle-5.json")).unwrap(),
    )
    .unwrap();
    evil.files.insert(
        "policies/open.cedar".into(),
        "permit (principal, action, resource);".into(),
    );
    registry.tamper(&layer, &evil.to_bytes());
    let (ok, _, stderr) = bundle_command(&[
        "push",
        dir.join("bundle-5.json").to_str().unwrap(),
        &reference,
        "--plain-http",
    ]);
    assert!(ok, "{stderr}");
    assert!(
        eventually(Duration::from_secs(30), || refusal("tampered")).await,
        "{}",
        gateway.output()
    );
    assert_eq!(status_of(env.listen, TASK, Some(&token)).await, Some(403));
    assert_eq!(bundle_version().await, Some(2));

    // The registry goes down: the gateway keeps version 2 and stays ready.
    registry.go_down();
    assert!(
        eventually(Duration::from_secs(30), || refusal("registry")).await,
        "{}",
        gateway.output()
    );
    assert_eq!(status_of(env.listen, TASK, Some(&token)).await, Some(403));

    // A restart while the registry is down serves the cached version 2.
    gateway.signal("TERM");
    assert!(gateway.exit_within(Duration::from_secs(20)).await.is_some());
    let mut gateway = env.spawn("second", false);
    env.wait_until_serving(&mut gateway).await;
    assert_eq!(status_of(env.listen, TASK, Some(&token)).await, Some(403));
    assert_eq!(bundle_version().await, Some(2));

    // Rolling back: a reference pinned to version 1's digest is taken although it is older.
    registry.come_up().await;
    gateway.signal("TERM");
    assert!(gateway.exit_within(Duration::from_secs(20)).await.is_some());
    let pinned = format!("{}/portcullis/policies@{first}", registry.address);
    let text = std::fs::read_to_string(&env.config).unwrap().replace(
        &format!("reference = \"{reference}\""),
        &format!("reference = \"{pinned}\""),
    );
    std::fs::write(&env.config, text).unwrap();
    let mut gateway = env.spawn("third", false);
    env.wait_until_serving(&mut gateway).await;
    assert!(
        eventually(Duration::from_secs(30), || async move {
            status_of(listen, TASK, Some(token_ref)).await == Some(200)
        })
        .await,
        "the pinned version 1 was not taken:\n{}",
        gateway.output()
    );
    assert_eq!(bundle_version().await, Some(1));
}
