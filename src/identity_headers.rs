//! The trusted identity headers of a permitted request, defined once for both front ends: the
//! proxy sends them upstream, the external authorization listener returns them to the proxy
//! that asked, which sends them upstream in turn. Beside them, the client headers neither front
//! end lets through in any spelling: other spellings of the identity headers, method
//! overrides, the framework-internal headers of [`FRAMEWORK_INTERNAL`] and the deployment's own
//! (`[headers] strip`).

use http::{HeaderMap, HeaderValue};

use crate::authn::VerifiedToken;
use crate::config::IdentityHeaders;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdentityHeaderError {
    #[error("an identity value cannot be a header field value")]
    Unrepresentable,
    #[error("a request id is not a header field value")]
    RequestId,
}

/// Sets the principal, roles and tenant of `token` (none on an anonymous route; roles and
/// tenant only when the token has them) and the request id, replacing any value already there.
pub fn insert_identity_headers(
    headers: &mut HeaderMap,
    names: &IdentityHeaders,
    token: Option<&VerifiedToken>,
    request_id: &str,
) -> Result<(), IdentityHeaderError> {
    let value =
        |value: &Option<HeaderValue>| value.clone().ok_or(IdentityHeaderError::Unrepresentable);
    if let Some(token) = token {
        let (identity, values) = (&token.identity, &token.forwarded);
        headers.insert(names.principal.clone(), value(&values.principal_id)?);
        if !identity.roles.is_empty() {
            headers.insert(names.roles.clone(), value(&values.roles)?);
        }
        if identity.tenant.is_some() {
            headers.insert(names.tenant.clone(), value(&values.tenant)?);
        }
    }
    let request_id =
        HeaderValue::from_str(request_id).map_err(|_| IdentityHeaderError::RequestId)?;
    headers.insert(names.request_id.clone(), request_id);
    Ok(())
}

/// A request id accepted from a trusted proxy: 1 to 128 visible characters of the kinds request
/// ids are made of (letters, digits, `-`, `_`, `.`, `:`).
pub fn is_valid_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Header names compared the way some frameworks do (case, `_` and `.` as `-`), so that a
/// client cannot smuggle `X_Portcullis_Principal` past the gateway to such an application.
pub fn loosely_equal(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes().zip(b.bytes()).all(|(x, y)| {
            let norm = |c: u8| match c {
                b'_' | b'.' => b'-',
                c => c.to_ascii_lowercase(),
            };
            norm(x) == norm(y)
        })
}

/// Headers some frameworks honour to change the method after the gateway authorized it.
const METHOD_OVERRIDES: &[&str] = &[
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Whether `name` is a method override (`X-HTTP-Method-Override`, ...) in any spelling.
pub fn is_method_override(name: &str) -> bool {
    METHOD_OVERRIDES.iter().any(|h| loosely_equal(name, h))
}

/// A request header a web framework trusts because only its own infrastructure is meant to
/// set it, and whose trust was exploited.
pub struct FrameworkHeader {
    pub name: &'static str,
    pub framework: &'static str,
    pub cve: &'static str,
}

/// Framework-internal headers removed from every client request, whatever the peer: a client
/// sending one can skip the application's own middleware or poison a cache in front of it.
pub const FRAMEWORK_INTERNAL: &[FrameworkHeader] = &[
    FrameworkHeader {
        name: "x-middleware-subrequest",
        framework: "Next.js (middleware skipped: authorization bypass)",
        cve: "CVE-2025-29927",
    },
    FrameworkHeader {
        name: "x-middleware-prefetch",
        framework: "Next.js (empty prefetch response cached)",
        cve: "CVE-2023-46298",
    },
    FrameworkHeader {
        name: "x-now-route-matches",
        framework: "Next.js pages router (cache poisoning)",
        cve: "CVE-2024-46982",
    },
    FrameworkHeader {
        name: "x-react-router-spa-mode",
        framework: "React Router 7 (SPA mode forced: cache poisoning)",
        cve: "CVE-2025-43864",
    },
    FrameworkHeader {
        name: "x-react-router-prerender-data",
        framework: "React Router 7 (loader data spoofed)",
        cve: "CVE-2025-43865",
    },
    FrameworkHeader {
        name: "x-astro-path",
        framework: "Astro on Vercel (internal path rewritten)",
        cve: "CVE-2026-33768",
    },
];

/// Whether `name` is a framework-internal header or one of `configured`, in any spelling
/// frameworks fold together.
pub fn is_stripped(name: &str, configured: &[http::HeaderName]) -> bool {
    FRAMEWORK_INTERNAL
        .iter()
        .any(|header| loosely_equal(name, header.name))
        || configured
            .iter()
            .any(|header| loosely_equal(name, header.as_str()))
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
    fn framework_internal_and_configured_headers_are_stripped_in_any_spelling() {
        let configured = [http::HeaderName::from_static("x-internal-user")];
        for name in [
            "x-middleware-subrequest",
            "X_Middleware_Subrequest",
            "x.react.router.spa.mode",
            "X-Internal-User",
            "x_internal_user",
        ] {
            assert!(is_stripped(name, &configured), "{name}");
        }
        for name in ["x-middleware", "x-internal-users", "authorization"] {
            assert!(!is_stripped(name, &configured), "{name}");
        }
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
