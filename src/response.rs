//! The one place where refusals become HTTP responses.
//!
//! Bodies are small JSON objects with a stable `error` code, a human `message` and the request
//! id. They never echo the token, policy text or evaluation errors (those go to the decision
//! log). 401s carry an RFC 6750 challenge.

use crate::authn::AuthnError;
use crate::canonical::{HeadError, TargetError};
use crate::pipeline::{Denial, UpstreamFailure};

/// A response the gateway writes itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenyResponse {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// Quotes a value for an auth-param (RFC 9110 quoted-string).
/// An RFC 6750 `error_description` value: a quoted string whose characters are all in
/// %x20-21 / %x23-5B / %x5D-7E (§3), so a `"` becomes `'`, a `\` becomes `/`, anything
/// else outside the set `?` — never a backslash escape, which the RFC does not allow there.
fn description(value: &str) -> String {
    let text: String = value
        .chars()
        .map(|c| match c {
            '"' => '\'',
            '\\' => '/',
            ' '..='~' => c,
            _ => '?',
        })
        .collect();
    format!("\"{text}\"")
}

fn quoted(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// The JSON refusal for `denial`.
pub fn deny_response(denial: &Denial, request_id: &str, realm: &str) -> DenyResponse {
    /// The body, serialized straight from its fields (no intermediate `Value` map).
    #[derive(serde::Serialize)]
    struct Body<'a> {
        error: &'a str,
        message: &'a str,
        request_id: &'a str,
    }
    let (status, error, message, mut headers) = classify(denial, realm);
    if status == 204 {
        // A preflight's answer is its headers.
        return DenyResponse {
            status,
            headers,
            body: Vec::new(),
        };
    }
    let body = Body {
        error,
        message: &message,
        request_id,
    };
    headers.push(("content-type", "application/json".to_string()));
    headers.push(("cache-control", "no-store".to_string()));
    DenyResponse {
        status,
        headers,
        // Serializing three strings cannot fail.
        body: serde_json::to_vec(&body).unwrap_or_default(),
    }
}

/// The HTTP status a refusal is answered with (before any gRPC reshaping).
pub fn refusal_status(denial: &Denial) -> u16 {
    classify(denial, "").0
}

/// Whether a request is gRPC (`application/grpc`, `application/grpc+proto`, ...), whose
/// client reads the outcome from `grpc-status`, not from the HTTP status.
pub fn is_grpc(content_type: Option<&[u8]>) -> bool {
    content_type.is_some_and(|value| {
        let value = value.strip_prefix(b"application/grpc").unwrap_or(b"-");
        value.is_empty() || value[0] == b'+' || value[0] == b';'
    })
}

/// The refusal for a gRPC request: a trailers-only response (HTTP 200, no body) whose
/// `grpc-status` follows gRPC's HTTP-to-gRPC status mapping (doc/http-grpc-status-mapping.md
/// in the gRPC repository), as Envoy's ext_authz and jwt_authn answer. The request id travels
/// in `grpc-message` and its own header.
pub fn grpc_deny_response(denial: &Denial, request_id: &str, realm: &str) -> DenyResponse {
    let (status, _, message, mut headers) = classify(denial, realm);
    let code = match status {
        400 => GRPC_INTERNAL,
        401 => GRPC_UNAUTHENTICATED,
        403 => GRPC_PERMISSION_DENIED,
        404 => GRPC_UNIMPLEMENTED,
        429 | 502..=504 => GRPC_UNAVAILABLE,
        _ => GRPC_UNKNOWN,
    };
    let message = format!("{message} (request id {request_id})");
    headers.push(("content-type", "application/grpc".to_string()));
    headers.push(("grpc-status", code.to_string()));
    headers.push(("grpc-message", percent_encode_grpc(&message)));
    DenyResponse {
        status: 200,
        headers,
        body: Vec::new(),
    }
}

const GRPC_UNKNOWN: u8 = 2;
const GRPC_PERMISSION_DENIED: u8 = 7;
const GRPC_UNIMPLEMENTED: u8 = 12;
const GRPC_INTERNAL: u8 = 13;
const GRPC_UNAVAILABLE: u8 = 14;
const GRPC_UNAUTHENTICATED: u8 = 16;

/// `grpc-message` is percent-encoded: every byte outside printable ASCII, and `%` itself
/// (gRPC over HTTP/2, "Responses").
fn percent_encode_grpc(message: &str) -> String {
    use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
    const GRPC_MESSAGE: &AsciiSet = &CONTROLS.add(b'%');
    utf8_percent_encode(message, GRPC_MESSAGE).to_string()
}

type Classified = (u16, &'static str, String, Vec<(&'static str, String)>);

/// Status, error code, message and extra headers of a refusal, whatever its shape.
fn classify(denial: &Denial, realm: &str) -> Classified {
    let mut headers = Vec::new();
    let (status, error, message) = match denial {
        Denial::BadTarget(TargetError::TooLong) => {
            (414, "uri_too_long", TargetError::TooLong.to_string())
        }
        Denial::BadTarget(e) => (400, "bad_request", e.to_string()),
        Denial::BadHost(_) => (400, "bad_request", denial.to_string()),
        Denial::HeadersTooLarge => (431, "headers_too_large", denial.to_string()),
        Denial::MalformedHead(HeadError::Connect) => (501, "not_implemented", denial.to_string()),
        Denial::MalformedHead(_) => (400, "bad_request", denial.to_string()),
        Denial::NotFound => (
            404,
            "not_found",
            "no route matches this request".to_string(),
        ),
        Denial::MethodNotAllowed(allowed) => {
            headers.push(("allow", allowed.join(", ")));
            (
                405,
                "method_not_allowed",
                "this path is routed, but not for this method".to_string(),
            )
        }
        Denial::Unauthenticated(AuthnError::DuplicateAuthorization) => {
            headers.push((
                "www-authenticate",
                format!(
                    "Bearer realm={}, error=\"invalid_request\", error_description={}",
                    quoted(realm),
                    description(&AuthnError::DuplicateAuthorization.to_string())
                ),
            ));
            (
                400,
                "invalid_request",
                AuthnError::DuplicateAuthorization.to_string(),
            )
        }
        Denial::Unauthenticated(AuthnError::MissingToken) => {
            headers.push((
                "www-authenticate",
                format!("Bearer realm={}", quoted(realm)),
            ));
            (
                401,
                "unauthorized",
                "a bearer token is required".to_string(),
            )
        }
        Denial::Unauthenticated(e) => {
            headers.push((
                "www-authenticate",
                format!(
                    "Bearer realm={}, error=\"invalid_token\", error_description={}",
                    quoted(realm),
                    description(&e.to_string())
                ),
            ));
            (401, "invalid_token", e.to_string())
        }
        Denial::Forbidden => (
            403,
            "forbidden",
            "the policy does not permit this request".to_string(),
        ),
        Denial::InsufficientScope(scopes) => {
            // RFC 6750 §3.1: the client may ask the issuer for a token with these scopes.
            let message = denial.to_string();
            headers.push((
                "www-authenticate",
                format!(
                    "Bearer realm={}, error=\"insufficient_scope\", error_description={}, scope={}",
                    quoted(realm),
                    description(&message),
                    description(&scopes.join(" "))
                ),
            ));
            (403, "insufficient_scope", message)
        }
        Denial::Misdirected { .. } => (421, "misdirected_request", denial.to_string()),
        Denial::RedirectToHttps { location } => {
            headers.push(("location", location.clone()));
            (308, "https_required", denial.to_string())
        }
        Denial::BodyTooLarge { .. } => (413, "body_too_large", denial.to_string()),
        Denial::Preflight(answer) => {
            headers.extend(answer.iter().cloned());
            (204, "preflight", String::new())
        }
        Denial::PreflightRefused(_) => (403, "cors_preflight_refused", denial.to_string()),
        Denial::UntrustedPeer(_) => (403, "untrusted_peer", denial.to_string()),
        Denial::Undescribed(_) => (400, "bad_request", denial.to_string()),
        Denial::Upstream(failure) => {
            let status = match failure {
                UpstreamFailure::NoHealthyAddress => 503,
                UpstreamFailure::Timeout => 504,
                UpstreamFailure::Unreachable | UpstreamFailure::BadResponse => 502,
            };
            (status, failure.as_str(), failure.to_string())
        }
    };
    (status, error, message, headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(r: &'a DenyResponse, name: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn missing_token_challenge_has_no_error() {
        let r = deny_response(
            &Denial::Unauthenticated(AuthnError::MissingToken),
            "rid",
            "api",
        );
        assert_eq!(r.status, 401);
        assert_eq!(header(&r, "www-authenticate"), Some("Bearer realm=\"api\""));
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["request_id"], "rid");
        assert_eq!(body["error"], "unauthorized");
    }

    #[test]
    fn invalid_token_challenge() {
        let r = deny_response(&Denial::Unauthenticated(AuthnError::Expired), "rid", "api");
        assert_eq!(r.status, 401);
        assert_eq!(
            header(&r, "www-authenticate"),
            Some("Bearer realm=\"api\", error=\"invalid_token\", error_description=\"the token has expired\"")
        );
    }

    #[test]
    fn error_descriptions_hold_only_the_characters_rfc_6750_allows() {
        let described = description("kid \"k1\" is unknown \\ é\u{7}");
        assert_eq!(described, "\"kid 'k1' is unknown / ??\"");
        let inner = &described[1..described.len() - 1];
        assert!(inner
            .bytes()
            .all(|b| matches!(b, 0x20..=0x21 | 0x23..=0x5b | 0x5d..=0x7e)));
    }

    #[test]
    fn statuses() {
        assert_eq!(deny_response(&Denial::Forbidden, "r", "x").status, 403);
        assert_eq!(deny_response(&Denial::NotFound, "r", "x").status, 404);
        let r = deny_response(
            &Denial::MethodNotAllowed(vec!["GET".into(), "HEAD".into()]),
            "r",
            "x",
        );
        assert_eq!((r.status, header(&r, "allow")), (405, Some("GET, HEAD")));
        assert_eq!(
            deny_response(&Denial::BadTarget(TargetError::DotSegment), "r", "x").status,
            400
        );
        assert_eq!(
            deny_response(&Denial::BadTarget(TargetError::TooLong), "r", "x").status,
            414
        );
        assert_eq!(
            deny_response(
                &Denial::Unauthenticated(AuthnError::DuplicateAuthorization),
                "r",
                "x"
            )
            .status,
            400
        );
    }

    #[test]
    fn grpc_refusals_carry_grpc_status() {
        assert!(is_grpc(Some(b"application/grpc")));
        assert!(is_grpc(Some(b"application/grpc+proto")));
        assert!(!is_grpc(Some(b"application/grpcx")));
        assert!(!is_grpc(Some(b"application/json")));
        let r = grpc_deny_response(
            &Denial::Unauthenticated(AuthnError::MissingToken),
            "rid",
            "api",
        );
        assert_eq!((r.status, header(&r, "grpc-status")), (200, Some("16")));
        assert_eq!(
            header(&r, "grpc-message"),
            Some("a bearer token is required (request id rid)")
        );
        let r = grpc_deny_response(&Denial::Forbidden, "rid", "api");
        assert_eq!(header(&r, "grpc-status"), Some("7"));
        let r = grpc_deny_response(&Denial::Upstream(UpstreamFailure::Timeout), "r", "x");
        assert_eq!(header(&r, "grpc-status"), Some("14"));
        assert_eq!(percent_encode_grpc("100% é"), "100%25 %C3%A9");
    }

    #[test]
    fn edge_statuses() {
        let misdirected = Denial::Misdirected {
            host: "a".into(),
            sni: "b".into(),
        };
        assert_eq!(deny_response(&misdirected, "r", "x").status, 421);
        let redirect = deny_response(
            &Denial::RedirectToHttps {
                location: "https://a/".into(),
            },
            "r",
            "x",
        );
        assert_eq!(
            (redirect.status, header(&redirect, "location")),
            (308, Some("https://a/"))
        );
        assert_eq!(
            deny_response(&Denial::BodyTooLarge { limit: 1 }, "r", "x").status,
            413
        );
        for (failure, status) in [
            (UpstreamFailure::NoHealthyAddress, 503),
            (UpstreamFailure::Unreachable, 502),
            (UpstreamFailure::Timeout, 504),
        ] {
            let r = deny_response(&Denial::Upstream(failure), "rid", "x");
            let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(
                (r.status, body["request_id"].as_str()),
                (status, Some("rid"))
            );
        }
    }

    #[test]
    fn realm_is_quoted() {
        assert_eq!(quoted(r#"a"b\c"#), r#""a\"b\\c""#);
    }
}
