//! The upstream request: canonical path, trusted identity headers, hop-by-hop headers removed,
//! forwarding headers believed only from trusted proxies, method overrides never passed on.

use std::net::IpAddr;

use http::header::{HeaderName, CONNECTION};
use pingora_core::{Error, ErrorType, Result};
use pingora_http::RequestHeader;

use crate::config::IdentityHeaders;
use crate::pipeline::Forward;
use crate::trust::{self, Cidr};

/// Hop-by-hop headers (RFC 9110 §7.6.1) that are never forwarded. Transfer-Encoding is left to
/// pingora, which frames the upstream body itself.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
];

pub const FORWARDED_FOR: &str = "x-forwarded-for";

/// Headers that describe the client or the original request as some proxy saw it. From a peer
/// that is not a trusted proxy they are forged by definition, and are removed.
const FORWARDING: &[&str] = &[
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-server",
    "x-real-ip",
    "x-client-ip",
    "x-original-url",
    "x-rewrite-url",
    "x-original-uri",
];

/// Headers some frameworks honour to change the method after the gateway authorized it.
const METHOD_OVERRIDES: &[&str] = &[
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Header names compared the way some frameworks do (case, `_` and `.` as `-`), so that a
/// client cannot smuggle `X_Portcullis_Principal` past the gateway to such an application.
fn loosely_equal(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes().zip(b.bytes()).all(|(x, y)| {
            let norm = |c: u8| match c {
                b'_' | b'.' => b'-',
                c => c.to_ascii_lowercase(),
            };
            norm(x) == norm(y)
        })
}

pub fn prepare_upstream_request(
    request: &mut RequestHeader,
    forward: &Forward,
    names: &IdentityHeaders,
    request_id: &str,
    peer_ip: Option<IpAddr>,
    trusted_proxies: &[Cidr],
) -> Result<()> {
    let peer_trusted = peer_ip.is_some_and(|peer| trust::is_trusted(peer, trusted_proxies));
    let uri = forward
        .path_and_query
        .parse::<http::Uri>()
        .map_err(|e| Error::because(ErrorType::InternalError, "canonical path is not a URI", e))?;
    request.set_uri(uri);

    let mut remove: Vec<HeaderName> = HOP_BY_HOP
        .iter()
        .map(|n| HeaderName::from_static(n))
        .collect();
    for value in request.headers.get_all(CONNECTION) {
        let Ok(value) = value.to_str() else { continue };
        for token in value.split(',') {
            if let Ok(name) = HeaderName::from_bytes(token.trim().as_bytes()) {
                remove.push(name);
            }
        }
    }
    let identity = [
        &names.principal,
        &names.roles,
        &names.tenant,
        &names.request_id,
    ];
    for name in request.headers.keys() {
        let name_str = name.as_str();
        let spoofable = identity
            .iter()
            .any(|id| loosely_equal(name_str, id.as_str()))
            || METHOD_OVERRIDES.iter().any(|h| loosely_equal(name_str, h))
            || (!peer_trusted && FORWARDING.iter().any(|h| loosely_equal(name_str, h)));
        if spoofable {
            remove.push(name.clone());
        }
    }
    for name in remove {
        request.remove_header(&name);
    }

    if let Some(identity) = forward.token.as_ref().map(|t| &t.identity) {
        request.insert_header(names.principal.clone(), &identity.principal_id)?;
        if !identity.roles.is_empty() {
            request.insert_header(names.roles.clone(), identity.roles.join(","))?;
        }
        if let Some(tenant) = &identity.tenant {
            request.insert_header(names.tenant.clone(), tenant)?;
        }
    }
    request.insert_header(names.request_id.clone(), request_id)?;
    if let Some(ip) = peer_ip {
        let ip = ip.to_string();
        // From a trusted proxy the chain is kept and the peer appended; otherwise the client's
        // own header was removed above and the chain starts at the peer.
        let mut hops: Vec<&str> = request
            .headers
            .get_all(FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        hops.push(&ip);
        let forwarded_for = hops.join(", ");
        request.insert_header(FORWARDED_FOR, forwarded_for)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loose_header_equality() {
        assert!(loosely_equal(
            "x-portcullis-principal",
            "X_Portcullis.Principal"
        ));
        assert!(!loosely_equal(
            "x-portcullis-principal",
            "x-portcullis-principals"
        ));
    }
}
