//! `[authz_server]` of portcullis.toml → `AuthzServerSettings`: the decision listener a proxy
//! beside the gateway asks (nginx `auth_request`, Traefik ForwardAuth, Caddy `forward_auth`,
//! Envoy's HTTP ext_authz).

use std::net::SocketAddr;

use http::HeaderName;

use super::raw::RawAuthzServer;
use super::{cidrs, header_name, ConfigProblem, SourceFile};
use crate::trust::Cidr;

/// The decision listener, validated.
#[derive(Debug, Clone)]
pub struct AuthzServerSettings {
    pub listen: SocketAddr,
    /// The proxies whose account of the original request is believed; every other peer is
    /// refused.
    pub trusted_peers: Vec<Cidr>,
    /// Where nginx's `auth_request` puts the original request (`proxy_set_header`).
    pub nginx: NginxHeaders,
}

/// The headers an nginx `auth_request` location sets to describe the original request.
#[derive(Debug, Clone)]
pub struct NginxHeaders {
    pub method: HeaderName,
    pub uri: HeaderName,
    pub host: HeaderName,
}

pub fn compile_authz_server(
    raw: &RawAuthzServer,
    file: &SourceFile,
) -> Result<AuthzServerSettings, Vec<ConfigProblem>> {
    let mut problems = Vec::new();
    let listen = raw.listen.get_ref().parse::<SocketAddr>().map_err(|_| {
        file.problem(
            Some(raw.listen.span()),
            format!(
                "authz_server.listen = {:?} is not an address like \"127.0.0.1:9191\"",
                raw.listen.get_ref()
            ),
        )
    });
    let trusted_peers = cidrs(
        file,
        raw.trusted_peers.get_ref(),
        "authz_server.trusted_peers",
        &mut problems,
    );
    if raw.trusted_peers.get_ref().is_empty() {
        problems.push(file.problem(
            Some(raw.trusted_peers.span()),
            "authz_server.trusted_peers is empty: list the addresses of the proxies that ask \
             (e.g. [\"10.0.0.0/8\"]); the listener refuses every other peer",
        ));
    }
    let mut header = |spanned: &toml::Spanned<String>| header_name(file, spanned, &mut problems);
    let nginx = (
        header(&raw.nginx_method_header),
        header(&raw.nginx_uri_header),
        header(&raw.nginx_host_header),
    );
    match (listen, nginx) {
        (Ok(listen), (Some(method), Some(uri), Some(host))) if problems.is_empty() => {
            Ok(AuthzServerSettings {
                listen,
                trusted_peers,
                nginx: NginxHeaders { method, uri, host },
            })
        }
        (listen, _) => {
            problems.extend(listen.err());
            Err(problems)
        }
    }
}
