//! The upstream request: canonical path, trusted identity headers, hop-by-hop headers removed,
//! forwarding headers believed only from trusted proxies, method overrides never passed on.

use std::fmt::Write as _;
use std::net::IpAddr;

use http::header::{HeaderName, HeaderValue, CONNECTION, HOST, UPGRADE};
use pingora_core::{Error, ErrorType, Result};
use pingora_http::RequestHeader;

use crate::config::IdentityHeaders;
use crate::identity_headers::{
    insert_identity_headers, is_method_override, is_stripped, loosely_equal, IdentityHeaderError,
};
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

/// Whether a client's header `name` is removed before forwarding: hop-by-hop; one of the
/// gateway's `identity` headers, a method override, a framework-internal header or one of
/// `strip` (in any spelling); or a forwarding header from a peer that is not a trusted proxy.
pub fn never_forwarded(
    name: &str,
    identity: &[&str],
    strip: &[HeaderName],
    peer_trusted: bool,
) -> bool {
    HOP_BY_HOP.contains(&name)
        || identity.iter().any(|id| loosely_equal(name, id))
        || is_method_override(name)
        || is_stripped(name, strip)
        || (!peer_trusted && FORWARDING.iter().any(|h| loosely_equal(name, h)))
}

const FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const FORWARDED_FOR_NAME: HeaderName = HeaderName::from_static(FORWARDED_FOR);

/// What the upstream request says about the downstream connection.
pub struct Downstream<'a> {
    pub names: &'a IdentityHeaders,
    pub request_id: &'a str,
    pub peer_ip: Option<IpAddr>,
    pub trusted_proxies: &'a [Cidr],
    /// `https` or `http`: how the client reached the gateway.
    pub scheme: &'static str,
}

/// Rewrites the upstream request pingora made from the client's.
///
/// The rewrite works on the request's `http` parts, which come back without pingora's
/// header-case map: every change is then one `HeaderMap` operation on a name parsed once (at
/// startup), where pingora's `insert_header` parses the name again and keeps a second map in
/// step. An HTTP/1 upstream therefore sees the names of the headers it gets in lower case
/// (standard ones title-cased), as Envoy and HAProxy send them too; names are
/// case-insensitive (RFC 9110 §5.1).
pub fn prepare_upstream_request(
    request: &mut RequestHeader,
    forward: &Forward,
    downstream: &Downstream<'_>,
) -> Result<()> {
    let send_end_stream = request.send_end_stream();
    let placeholder = RequestHeader::from(http::Request::new(()).into_parts().0);
    let mut parts = http::request::Parts::from(std::mem::replace(request, placeholder));
    let rewritten = rewrite_parts(&mut parts, forward, downstream);
    *request = RequestHeader::from(parts);
    if let Some(end) = send_end_stream {
        request.set_send_end_stream(end);
    }
    rewritten
}

fn rewrite_parts(
    request: &mut http::request::Parts,
    forward: &Forward,
    downstream: &Downstream<'_>,
) -> Result<()> {
    let Downstream {
        names,
        request_id,
        peer_ip,
        trusted_proxies,
        scheme,
    } = *downstream;
    let peer_trusted = peer_ip.is_some_and(|peer| trust::is_trusted(peer, trusted_proxies));
    let headers = &mut request.headers;
    // The host the client asked for (`Host`, or HTTP/2's `:authority`), before the URI is
    // replaced by the canonical path.
    let original_host = match headers.get(HOST) {
        Some(host) => Some(host.clone()),
        None => request
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
    };
    request.uri = forward
        .path_and_query
        .parse::<http::Uri>()
        .map_err(|e| Error::because(ErrorType::InternalError, "canonical path is not a URI", e))?;
    if let Some(host) = original_host
        .as_ref()
        .filter(|_| !headers.contains_key(HOST))
    {
        // An HTTP/2 request names its host only in the URI just replaced; an upstream (h2's
        // `:authority`, h1's `Host`) still needs it.
        headers.insert(HOST, host.clone());
    }

    // A permitted upgrade keeps `Upgrade` and a `Connection: upgrade` naming it; every other
    // hop-by-hop header, and whatever `Connection` nominates, is removed. One pass over the
    // request's names; most requests have nothing to remove and allocate nothing here.
    let upgrade = forward
        .upgrade
        .then(|| headers.get(UPGRADE).cloned())
        .flatten();
    let identity = [
        &names.principal,
        &names.roles,
        &names.tenant,
        &names.request_id,
    ];
    let identity = identity.map(HeaderName::as_str);
    let mut remove: Vec<HeaderName> = headers
        .keys()
        .filter(|name| never_forwarded(name.as_str(), &identity, &names.strip, peer_trusted))
        .cloned()
        .collect();
    for value in headers.get_all(CONNECTION) {
        let Ok(value) = value.to_str() else { continue };
        for token in value.split(',') {
            if let Ok(name) = HeaderName::from_bytes(token.trim().as_bytes()) {
                remove.push(name);
            }
        }
    }
    for name in remove {
        headers.remove(&name);
    }
    // What is left of `X-Forwarded-For` is a trusted proxy's chain.
    let forwarded_for = peer_ip.map(|ip| {
        let mut chain = String::new();
        for hop in headers
            .get_all(FORWARDED_FOR_NAME)
            .iter()
            .filter_map(|v| v.to_str().ok())
        {
            chain.push_str(hop);
            chain.push_str(", ");
        }
        let _ = write!(chain, "{ip}");
        chain
    });
    if let Some(upgrade) = upgrade {
        headers.insert(UPGRADE, upgrade);
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
    // From a trusted proxy its own account of the original request stands; otherwise the
    // client's headers were removed above and the gateway says what it saw.
    if !headers.contains_key(FORWARDED_PROTO) {
        headers.insert(FORWARDED_PROTO, HeaderValue::from_static(scheme));
    }
    if let Some(host) = original_host.filter(|_| !headers.contains_key(FORWARDED_HOST)) {
        headers.insert(FORWARDED_HOST, host);
    }

    insert_identity_headers(headers, names, forward.token.as_deref(), request_id).map_err(|e| {
        let kind = match e {
            IdentityHeaderError::Unrepresentable => ErrorType::InvalidHTTPHeader,
            IdentityHeaderError::RequestId => ErrorType::InternalError,
        };
        Error::explain(kind, e.to_string())
    })?;
    if let Some(chain) = forwarded_for {
        // From a trusted proxy the chain is kept and the peer appended; otherwise the client's
        // own header was removed above and the chain starts at the peer.
        let chain = HeaderValue::try_from(chain).map_err(|e| {
            Error::because(
                ErrorType::InvalidHTTPHeader,
                "X-Forwarded-For is not a header value",
                e,
            )
        })?;
        headers.insert(FORWARDED_FOR_NAME, chain);
    }
    Ok(())
}
