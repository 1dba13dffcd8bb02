//! The load test's baseline: bare pingora, a pass-through `ProxyHttp` with no checks.
//!
//! It is what Portcullis is built on, with the same pingora version, build profile and
//! thread count, so the ratio of the two isolates what authentication, authorization,
//! request ids, metrics and the decision log cost. Upstream connections are pooled by pingora
//! exactly as they are for the gateway. With `--tls-cert`/`--tls-key` it terminates TLS (ALPN
//! h2 and http/1.1) as the gateway's `[server.tls]` does; with `--h2c` it takes h2c.

use std::net::SocketAddr;

use async_trait::async_trait;
use clap::Parser;
use pingora_core::apps::HttpServerOptions;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::Result;
use pingora_proxy::{ProxyHttp, Session};

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long)]
    listen: SocketAddr,
    /// Where every request goes.
    #[arg(long)]
    upstream: SocketAddr,
    /// pingora worker threads (the gateway's `[server] threads`).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Terminate TLS (ALPN h2 and http/1.1) with this PEM certificate...
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<String>,
    /// ...and this key.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<String>,
    /// Accept HTTP/2 with prior knowledge on plaintext.
    #[arg(long)]
    h2c: bool,
}

struct PassThrough {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for PassThrough {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn main() {
    let args = Args::parse();
    let conf = ServerConf {
        threads: args.threads,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let mut service = pingora_proxy::http_proxy_service(
        &server.configuration,
        PassThrough {
            upstream: args.upstream,
        },
    );
    match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let mut tls = TlsSettings::intermediate(cert, key).expect("TLS settings");
            tls.enable_h2();
            service.add_tls_with_settings(&args.listen.to_string(), None, tls);
        }
        _ => service.add_tcp(&args.listen.to_string()),
    }
    if args.h2c {
        if let Some(proxy) = service.app_logic_mut() {
            let mut options = HttpServerOptions::default();
            options.h2c = true;
            proxy.server_options = Some(options);
        }
    }
    server.add_service(service);
    server.run_forever();
}
