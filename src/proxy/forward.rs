//! The upstream request: canonical path, trusted identity headers, hop-by-hop headers removed,
//! forwarding headers believed only from trusted proxies, method overrides never passed on.

use std::fmt::Write as _;
use std::net::IpAddr;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONNECTION};
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

/// Whether a client's header `name` is removed before forwarding: hop-by-hop, one of the
/// gateway's `identity` headers or a method override (in any spelling), or a forwarding header
/// from a peer that is not a trusted proxy.
pub fn never_forwarded(name: &str, identity: &[&str], peer_trusted: bool) -> bool {
    HOP_BY_HOP.contains(&name)
        || identity.iter().any(|id| loosely_equal(name, id))
        || METHOD_OVERRIDES.iter().any(|h| loosely_equal(name, h))
        || (!peer_trusted && FORWARDING.iter().any(|h| loosely_equal(name, h)))
}

/// A request id accepted from a trusted proxy: 1 to 128 visible characters of the kinds request
/// ids are made of (letters, digits, `-`, `_`, `.`, `:`).
pub fn is_valid_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// The names of the headers the gateway sets, as pingora takes them without copying: pingora
/// turns a `HeaderName` or `&str` into its wire bytes anew (an allocation) on every insert.
pub struct WireNames {
    principal: Bytes,
    roles: Bytes,
    tenant: Bytes,
    request_id: Bytes,
}

impl WireNames {
    pub fn new(names: &IdentityHeaders) -> Self {
        let wire = |name: &HeaderName| Bytes::copy_from_slice(name.as_str().as_bytes());
        WireNames {
            principal: wire(&names.principal),
            roles: wire(&names.roles),
            tenant: wire(&names.tenant),
            request_id: wire(&names.request_id),
        }
    }
}

const FORWARDED_PROTO: &str = "x-forwarded-proto";
const FORWARDED_HOST: &str = "x-forwarded-host";

/// What the upstream request says about the downstream connection.
pub struct Downstream<'a> {
    pub names: &'a IdentityHeaders,
    pub wire_names: &'a WireNames,
    pub request_id: &'a str,
    pub peer_ip: Option<IpAddr>,
    pub trusted_proxies: &'a [Cidr],
    /// `https` or `http`: how the client reached the gateway.
    pub scheme: &'static str,
}

const FORWARDED_PROTO_NAME: HeaderName = HeaderName::from_static(FORWARDED_PROTO);
const FORWARDED_HOST_NAME: HeaderName = HeaderName::from_static(FORWARDED_HOST);

/// A value of the forwarded identity, or the error of a value no header field can carry.
fn header_value(value: &Option<HeaderValue>) -> Result<HeaderValue> {
    value.clone().ok_or_else(|| {
        Error::explain(
            ErrorType::InvalidHTTPHeader,
            "an identity value cannot be a header field value",
        )
    })
}

pub fn prepare_upstream_request(
    request: &mut RequestHeader,
    forward: &Forward,
    downstream: &Downstream<'_>,
) -> Result<()> {
    let Downstream {
        names,
        wire_names,
        request_id,
        peer_ip,
        trusted_proxies,
        scheme,
    } = *downstream;
    let peer_trusted = peer_ip.is_some_and(|peer| trust::is_trusted(peer, trusted_proxies));
    // The host the client asked for (`Host`, or HTTP/2's `:authority`), before the URI is
    // replaced by the canonical path.
    let original_host = request
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| request.uri.authority().map(|a| a.to_string()));
    let uri = forward
        .path_and_query
        .parse::<http::Uri>()
        .map_err(|e| Error::because(ErrorType::InternalError, "canonical path is not a URI", e))?;
    request.set_uri(uri);
    if let Some(host) = original_host
        .as_ref()
        .filter(|_| request.headers.get(http::header::HOST).is_none())
    {
        // An HTTP/2 request names its host only in the URI just replaced; an upstream (h2's
        // `:authority`, h1's `Host`) still needs it.
        request.insert_header(http::header::HOST, host)?;
    }

    // A permitted upgrade keeps `Upgrade` and a `Connection: upgrade` naming it; every other
    // hop-by-hop header, and whatever `Connection` nominates, is removed. One pass over the
    // request's names; most requests have nothing to remove and allocate nothing here.
    let upgrade = forward
        .upgrade
        .then(|| request.headers.get(http::header::UPGRADE).cloned())
        .flatten();
    let identity = [
        &names.principal,
        &names.roles,
        &names.tenant,
        &names.request_id,
    ];
    let identity = identity.map(HeaderName::as_str);
    let mut remove: Vec<HeaderName> = request
        .headers
        .keys()
        .filter(|name| never_forwarded(name.as_str(), &identity, peer_trusted))
        .cloned()
        .collect();
    for value in request.headers.get_all(CONNECTION) {
        let Ok(value) = value.to_str() else { continue };
        for token in value.split(',') {
            if let Ok(name) = HeaderName::from_bytes(token.trim().as_bytes()) {
                remove.push(name);
            }
        }
    }
    for name in remove {
        request.remove_header(&name);
    }
    if let Some(upgrade) = upgrade {
        request.insert_header(http::header::UPGRADE, upgrade)?;
        request.insert_header(CONNECTION, "upgrade")?;
    }
    // From a trusted proxy its own account of the original request stands; otherwise the
    // client's headers were removed above and the gateway says what it saw.
    let forwarded_proto = Bytes::from_static(FORWARDED_PROTO.as_bytes());
    if !request.headers.contains_key(FORWARDED_PROTO_NAME) {
        request.insert_header(forwarded_proto, HeaderValue::from_static(scheme))?;
    }
    if let Some(host) = original_host.filter(|_| !request.headers.contains_key(FORWARDED_HOST_NAME))
    {
        request.insert_header(Bytes::from_static(FORWARDED_HOST.as_bytes()), host)?;
    }

    if let Some(token) = &forward.token {
        let (identity, values) = (&token.identity, &token.forwarded);
        request.insert_header(
            wire_names.principal.clone(),
            header_value(&values.principal_id)?,
        )?;
        if !identity.roles.is_empty() {
            request.insert_header(wire_names.roles.clone(), header_value(&values.roles)?)?;
        }
        if identity.tenant.is_some() {
            request.insert_header(wire_names.tenant.clone(), header_value(&values.tenant)?)?;
        }
    }
    request.insert_header(wire_names.request_id.clone(), request_id)?;
    if let Some(ip) = peer_ip {
        // From a trusted proxy the chain is kept and the peer appended; otherwise the client's
        // own header was removed above and the chain starts at the peer.
        let mut forwarded_for = String::new();
        for hop in request
            .headers
            .get_all(FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
        {
            forwarded_for.push_str(hop);
            forwarded_for.push_str(", ");
        }
        let _ = write!(forwarded_for, "{ip}");
        request.insert_header(Bytes::from_static(FORWARDED_FOR.as_bytes()), forwarded_for)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_from_trusted_proxies() {
        assert!(is_valid_request_id("5f1c2a9e-77b1-4c2e-9a51-0d0b7a1f2c3d"));
        assert!(!is_valid_request_id(""));
        assert!(!is_valid_request_id("a b"));
        assert!(!is_valid_request_id(&"x".repeat(129)));
    }

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
