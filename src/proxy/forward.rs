//! The upstream request: canonical path, trusted identity headers, hop-by-hop headers removed.

use std::net::IpAddr;

use http::header::{HeaderName, CONNECTION};
use pingora_core::{Error, ErrorType, Result};
use pingora_http::RequestHeader;

use crate::config::IdentityHeaders;
use crate::pipeline::Forward;

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

const FORWARDED_FOR: &str = "x-forwarded-for";

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
    client_ip: Option<IpAddr>,
) -> Result<()> {
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
        if identity
            .iter()
            .any(|id| loosely_equal(name.as_str(), id.as_str()))
        {
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
    if let Some(ip) = client_ip {
        let ip = ip.to_string();
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
