//! Starting the gateway: load everything, fetch keys, serve.
//!
//! `run` hosts the proxy in a pingora `Server` (signals, graceful shutdown and upgrade).
//! `serve` drives the same proxy application from an already-bound tokio listener, which is
//! how the demo and the integration tests run it on ephemeral ports (a pingora `Server` bound
//! to port 0 cannot report its port).

use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;

use pingora_core::apps::ServerApp;
use pingora_core::protocols::l4::stream::Stream;
use pingora_core::protocols::{GetSocketDigest, SocketDigest};
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::services::listening::Service;

use crate::config::{load_snapshot, ConfigError, Settings};
use crate::proxy::{ConnectionLimits, GatewayApp, Proxy};
use crate::snapshot::Gateway;

/// Loads and validates `portcullis.toml`, `routes.toml` and `policies/`.
pub fn load_gateway(config: &Path) -> Result<Gateway, ConfigError> {
    let settings = Settings::load(config)?;
    let authenticator = settings.authenticator()?;
    let snapshot = load_snapshot(&settings, 1)?;
    Ok(Gateway::new(settings, authenticator, snapshot))
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot start the server: {0}")]
    Server(String),
    #[error("cannot start the key refresh runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

/// Runs the gateway until a shutdown signal. Keys are fetched before the listener opens; an
/// issuer whose keys cannot be fetched yet is retried in the background (its tokens get 401
/// until then).
pub fn run(gateway: Gateway, upgrade: bool) -> Result<(), ServeError> {
    let gateway = Arc::new(gateway);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("portcullis-keys")
        .enable_all()
        .build()?;
    let missing = runtime.block_on(gateway.fetch_keys());
    for issuer in missing {
        log::warn!("keys of issuer {issuer} could not be fetched; retrying in the background");
    }
    {
        let _guard = runtime.enter();
        gateway.spawn_key_refresh();
    }
    // The runtime lives on its own threads for the life of the process.
    std::thread::Builder::new()
        .name("portcullis-keys".to_string())
        .spawn(move || runtime.block_on(std::future::pending::<()>()))?;

    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let conf = ServerConf {
        threads: gateway.settings.threads,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();
    let mut service = Service::new(
        "portcullis".to_string(),
        gateway_app(&server.configuration, gateway.clone()),
    );
    service.add_tcp(&gateway.settings.listen.to_string());
    server.add_service(service);
    log::info!("listening on {}", gateway.settings.listen);
    server.run_forever()
}

/// The proxy application under the configured connection limits.
fn gateway_app(conf: &Arc<ServerConf>, gateway: Arc<Gateway>) -> GatewayApp {
    let limits = ConnectionLimits {
        request_head: gateway.settings.request_head_timeout,
        idle: gateway.settings.idle_timeout,
    };
    GatewayApp::new(pingora_proxy::http_proxy(conf, Proxy::new(gateway)), limits)
}

/// Serves the proxy on `listener` in the current tokio runtime until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, gateway: Arc<Gateway>) {
    let app = Arc::new(gateway_app(&Arc::new(ServerConf::default()), gateway));
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
        tokio::spawn(async move {
            let digest = SocketDigest::from_raw_fd(tcp.as_raw_fd());
            // A fresh digest's peer address is unset; ignoring the impossible error is fine.
            let _ = digest.peer_addr.set(Some(peer.into()));
            let mut stream = Stream::from(tcp);
            stream.set_socket_digest(digest);
            let mut next = app.process_new(Box::new(stream), &shutdown).await;
            while let Some(stream) = next {
                next = app.process_new(stream, &shutdown).await;
            }
        });
    }
}
