//! Starting the gateway: load everything, fetch keys, serve.
//!
//! `run` hosts the proxy in a pingora `Server` (signals, graceful shutdown and upgrade).
//! `serve` drives the same proxy application from an already-bound tokio listener, which is
//! how the demo and the integration tests run it on ephemeral ports (a pingora `Server` bound
//! to port 0 cannot report its port).

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use pingora_core::apps::ServerApp;
use pingora_core::protocols::l4::stream::Stream;
use pingora_core::protocols::{GetSocketDigest, SocketDigest};
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::{ExecutionPhase, RunArgs, Server};
use pingora_core::services::listening::Service;

use tokio::signal::unix::{signal, SignalKind};

use pingora_core::listeners::tls::Acceptor;

use crate::admin::serve_admin;
use crate::bundle::puller::{self, ActiveBundle};
use crate::bundle::{registry, BundleError, BundleSettings};
use crate::config::{load_snapshot, ConfigError, ConfigProblem, Settings};
use crate::decision_log::{DecisionLog, OpenError};
use crate::directory::{read_cache_file, SyncError};
use crate::ext_authz::serve_authz;
use crate::proxy::{tls_settings, ConnectionLimits, Edge, GatewayApp, Proxy};
use crate::snapshot::Gateway;

/// Loads and validates `portcullis.toml`, `routes.toml` and `policies/`.
pub fn load_gateway(config: &Path) -> Result<Gateway, ConfigError> {
    let settings = Settings::load(config)?;
    let authenticator = settings.authenticator()?;
    let active_bundle = match &settings.bundle {
        Some(bundle) => Some(ensure_bundle(bundle).map_err(|e| {
            ConfigProblem::file(
                &settings.file,
                format!("[bundle] {}: no bundle to serve: {e}", bundle.reference),
            )
        })?),
        None => None,
    };
    let gateway = load_gateway_with(settings, authenticator)?;
    if let Some(active) = active_bundle {
        gateway.bundle_status.set_active(active, false);
    }
    Ok(gateway)
}

/// The bundle to start with: the active one in the cache directory (a restart with the
/// registry down serves it), or one pulled and verified now.
fn ensure_bundle(settings: &BundleSettings) -> Result<ActiveBundle, BundleError> {
    if let Some(active) = puller::read_active(&settings.cache_dir) {
        log::info!(
            "bundle {} (version {}) from the cache {}",
            active.digest,
            active.version,
            settings.cache_dir.display()
        );
        return Ok(active);
    }
    let registry = registry::for_settings(settings)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| BundleError::Registry(e.to_string()))?;
    let verified =
        runtime.block_on(registry.pull_verified(&settings.reference, &settings.trusted))?;
    let (active, previous) = puller::install(&settings.cache_dir, &verified)?;
    puller::record_active(&settings.cache_dir, &active, previous.as_deref())?;
    log::info!(
        "bundle {} (version {}, signed by {}) pulled from {}",
        active.digest,
        active.version,
        active.key_id,
        settings.reference
    );
    Ok(active)
}

fn load_gateway_with(
    settings: Settings,
    authenticator: crate::authn::Authenticator,
) -> Result<Gateway, ConfigError> {
    let cached = settings
        .directory
        .as_ref()
        .and_then(|d| d.cache_file.as_deref())
        .and_then(|path| match read_cache_file(path) {
            Ok(directory) => directory,
            Err(e) => {
                log::warn!("{e}; starting without it until the first directory sync");
                None
            }
        });
    if let Some(directory) = cached.map(Arc::new) {
        match load_snapshot(&settings, 1, None, Some(&directory)) {
            Ok(snapshot) => {
                log::info!(
                    "directory {} read from the cache file ({} entities)",
                    directory.version,
                    directory.entity_count()
                );
                return Ok(Gateway::new(settings, authenticator, snapshot, Some(directory)));
            }
            Err(e) => log::warn!(
                "the cached directory does not fit the configuration; starting without it until the first sync: {e}"
            ),
        }
    }
    let snapshot = load_snapshot(&settings, 1, None, None)?;
    Ok(Gateway::new(settings, authenticator, snapshot, None))
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot start the background runtime: {0}")]
    Runtime(#[from] std::io::Error),
    #[error(transparent)]
    DecisionLog(#[from] OpenError),
    #[error("cannot set up the TLS listener: {0}")]
    Tls(#[from] Box<pingora_core::Error>),
    #[error("cannot start the directory sync: {0}")]
    Directory(#[from] SyncError),
}

/// Opens the configured decision log sink and starts its writer.
pub fn start_decision_log(gateway: &Gateway) -> Result<Arc<DecisionLog>, OpenError> {
    DecisionLog::start(
        &gateway.settings.decision_sink,
        gateway.settings.decision_buffer,
        gateway.metrics.decision_log(),
    )
    .map(Arc::new)
}

/// Runs the gateway until a shutdown signal. Keys are fetched before the listener opens; an
/// issuer whose keys cannot be fetched yet is retried in the background (its tokens get 401,
/// and `/readyz` says 503, until then).
///
/// Signals: SIGTERM drains (pingora stops accepting, in-flight requests get the grace period,
/// then the process exits 0); SIGQUIT hands the listening socket to a process started with
/// `--upgrade`; SIGINT stops at once; SIGHUP reloads routes and policies and reopens a file
/// decision log.
pub fn run(gateway: Gateway, upgrade: bool) -> Result<(), ServeError> {
    let gateway = Arc::new(gateway);
    let decision_log = start_decision_log(&gateway)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("portcullis-background")
        .enable_all()
        .build()?;
    // The probes get a thread of their own: nothing else (a reload validating thousands of
    // policies, a slow key fetch) can delay their answers. Started before the first key fetch,
    // so /readyz answers 503 until the keys are in.
    let admin_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let admin_gateway = gateway.clone();
    std::thread::Builder::new()
        .name("portcullis-admin".to_string())
        .spawn(move || admin_runtime.block_on(admin_listener(admin_gateway)))?;
    {
        // Before the (possibly slow) first key fetch: a SIGHUP must not kill the process.
        let _guard = runtime.enter();
        tokio::spawn(reload_on_hangup(gateway.clone(), decision_log.clone())?);
    }
    let missing = runtime.block_on(gateway.fetch_keys());
    for issuer in missing {
        log::warn!("keys of issuer {issuer} could not be fetched; retrying in the background");
    }
    {
        let _guard = runtime.enter();
        gateway.spawn_key_refresh();
        gateway.spawn_directory_sync()?;
        gateway.spawn_bundle_poll();
        gateway.start_pools();
        if let Some(debounce) = gateway.settings.reload_debounce {
            let watched = gateway.clone();
            tokio::spawn(async move {
                if let Err(e) = crate::reload::watch(watched, debounce).await {
                    log::error!(
                        "cannot watch the configuration for changes: {e}; reload with SIGHUP"
                    );
                }
            });
        }
    }
    if let Some(authz) = &gateway.settings.authz_server {
        // Decisions cost CPU (signatures, Cedar): as many threads as the proxy has.
        let authz_runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(gateway.settings.threads)
            .thread_name("portcullis-authz")
            .enable_all()
            .build()?;
        let (authz_gateway, authz_log, address) =
            (gateway.clone(), decision_log.clone(), authz.listen);
        std::thread::Builder::new()
            .name("portcullis-authz".to_string())
            .spawn(move || {
                authz_runtime.block_on(authz_listener(authz_gateway, authz_log, address))
            })?;
    }
    let background = runtime.handle().clone();
    // The runtime lives on its own threads for the life of the process.
    std::thread::Builder::new()
        .name("portcullis-background".to_string())
        .spawn(move || runtime.block_on(std::future::pending::<()>()))?;

    let lifecycle = &gateway.settings.lifecycle;
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let conf = ServerConf {
        threads: gateway.settings.threads,
        grace_period_seconds: Some(lifecycle.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(lifecycle.graceful_shutdown_timeout.as_secs()),
        upgrade_sock: lifecycle.upgrade_socket.clone(),
        pid_file: lifecycle.pid_file.clone(),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    background.spawn(drain_when_stopping(
        gateway.clone(),
        server.watch_execution_phase(),
    ));
    server.bootstrap();
    let mut service = Service::new(
        "portcullis".to_string(),
        gateway_app(&server.configuration, gateway.clone(), decision_log.clone()),
    );
    service.add_tcp(&gateway.settings.listen.to_string());
    log::info!("listening on {}", gateway.settings.listen);
    if let Some(tls) = &gateway.settings.tls {
        service.add_tls_with_settings(&tls.listen.to_string(), None, tls_settings(tls)?);
        log::info!("listening for TLS on {}", tls.listen);
    }
    server.add_service(service);
    write_pid_file(&lifecycle.pid_file);
    server.run(RunArgs::default());
    remove_pid_file(&lifecycle.pid_file);
    if !decision_log.flush(Duration::from_secs(5)) {
        log::warn!("the decision log could not be flushed before exit");
    }
    log::info!("stopped");
    Ok(())
}

/// Serves the admin endpoints.
async fn admin_listener(gateway: Arc<Gateway>) {
    let listener = bind_retrying(gateway.settings.admin_listen, "admin listener").await;
    log::info!(
        "admin listener (/metrics, /healthz, /readyz) on {}",
        gateway.settings.admin_listen
    );
    serve_admin(listener, gateway).await;
}

/// Serves external authorization decisions (`[authz_server]`).
async fn authz_listener(
    gateway: Arc<Gateway>,
    decision_log: Arc<DecisionLog>,
    address: SocketAddr,
) {
    let listener = bind_retrying(address, "external authorization listener").await;
    log::info!("external authorization listener on {address}");
    serve_authz(listener, gateway, decision_log).await;
}

/// Binds `address`, which may still be held by the process this one is taking over from
/// (graceful upgrade): binding is retried every second until it is free.
async fn bind_retrying(address: SocketAddr, what: &str) -> tokio::net::TcpListener {
    let mut warned = false;
    loop {
        match tokio::net::TcpListener::bind(address).await {
            Ok(listener) => return listener,
            Err(e) => {
                if !warned {
                    log::warn!("{what} {address}: {e}; retrying every second");
                    warned = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// pingora writes its pid file only when it daemonizes; the gateway runs in the foreground
/// (as containers and systemd want) and writes it itself, for `kill -HUP $(cat ...)`.
fn write_pid_file(path: &str) {
    if let Err(e) = std::fs::write(path, format!("{}\n", std::process::id())) {
        log::warn!("cannot write the pid file {path}: {e}");
    }
}

/// Removes the pid file, unless a newer process (graceful upgrade) has replaced it.
fn remove_pid_file(path: &str) {
    let ours =
        std::fs::read_to_string(path).is_ok_and(|pid| pid.trim() == std::process::id().to_string());
    if ours {
        let _ = std::fs::remove_file(path);
    }
}

/// Readiness turns false as soon as pingora starts a graceful shutdown or upgrade, so a load
/// balancer stops sending new requests. Following pingora's phases rather than installing our
/// own SIGTERM/SIGQUIT handlers leaves those signals' default action in place until pingora
/// takes them over.
async fn drain_when_stopping(
    gateway: Arc<Gateway>,
    mut phases: tokio::sync::broadcast::Receiver<ExecutionPhase>,
) {
    loop {
        match phases.recv().await {
            Ok(
                ExecutionPhase::GracefulTerminate
                | ExecutionPhase::GracefulUpgradeTransferringFds
                | ExecutionPhase::ShutdownStarted,
            )
            | Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                gateway.start_draining();
                return;
            }
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
        }
    }
}

/// SIGHUP: reload routes and policies, and reopen a file decision log (after rotation). The
/// handler is installed before this returns, so a SIGHUP can no longer kill the process.
fn reload_on_hangup(
    gateway: Arc<Gateway>,
    decision_log: Arc<DecisionLog>,
) -> std::io::Result<impl std::future::Future<Output = ()>> {
    let mut hangups = signal(SignalKind::hangup())?;
    Ok(async move {
        while hangups.recv().await.is_some() {
            decision_log.reopen();
            crate::reload::reload_in_background(gateway.clone(), "SIGHUP", true).await;
        }
    })
}

/// The proxy application under the configured connection limits.
fn gateway_app(
    conf: &Arc<ServerConf>,
    gateway: Arc<Gateway>,
    decision_log: Arc<DecisionLog>,
) -> Edge {
    let settings = &gateway.settings;
    let limits = ConnectionLimits {
        request_head: settings.request_head_timeout,
        idle: settings.idle_timeout,
        h2c: settings.h2c,
        max_header_bytes: settings.max_header_bytes,
    };
    Edge::new(GatewayApp::new(
        pingora_proxy::http_proxy(conf, Proxy::new(gateway, decision_log)),
        limits,
    ))
}

/// Serves the proxy on `listener` (plaintext) in the current tokio runtime until the task is
/// dropped; also starts the upstream pools' discovery and health checks.
pub async fn serve(
    listener: tokio::net::TcpListener,
    gateway: Arc<Gateway>,
    decision_log: Arc<DecisionLog>,
) {
    serve_connections(listener, gateway, decision_log, None).await;
}

/// `serve` for the TLS listener of `[server.tls]`, with the same certificates, SNI and ALPN
/// settings as `run`. Returns at once when no TLS is configured.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    gateway: Arc<Gateway>,
    decision_log: Arc<DecisionLog>,
) {
    let Some(tls) = &gateway.settings.tls else {
        return;
    };
    let acceptor = match tls_settings(tls) {
        Ok(settings) => Arc::new(settings.build()),
        Err(e) => {
            log::error!("cannot set up the TLS listener: {e}");
            return;
        }
    };
    serve_connections(listener, gateway, decision_log, Some(acceptor)).await;
}

async fn serve_connections(
    listener: tokio::net::TcpListener,
    gateway: Arc<Gateway>,
    decision_log: Arc<DecisionLog>,
    tls: Option<Arc<Acceptor>>,
) {
    gateway.start_pools();
    let app = Arc::new(gateway_app(
        &Arc::new(ServerConf::default()),
        gateway,
        decision_log,
    ));
    let (_shutdown_sender, shutdown) = tokio::sync::watch::channel(false);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                log::warn!("accept failed: {e}");
                continue;
            }
        };
        let app = app.clone();
        let shutdown = shutdown.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let digest = SocketDigest::from_raw_fd(tcp.as_raw_fd());
            // A fresh digest's peer address is unset; ignoring the impossible error is fine.
            let _ = digest.peer_addr.set(Some(peer.into()));
            let mut stream = Stream::from(tcp);
            stream.set_socket_digest(digest);
            let stream: pingora_core::protocols::Stream = match tls {
                None => Box::new(stream),
                Some(acceptor) => match acceptor.tls_handshake(stream).await {
                    Ok(tls_stream) => Box::new(tls_stream),
                    Err(e) => {
                        log::debug!("TLS handshake failed: {e}");
                        return;
                    }
                },
            };
            let mut next = app.process_new(stream, &shutdown).await;
            while let Some(stream) = next {
                next = app.process_new(stream, &shutdown).await;
            }
        });
    }
}
