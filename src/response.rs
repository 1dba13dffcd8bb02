//! The one place where refusals become HTTP responses.
//!
//! Bodies are small JSON objects with a stable `error` code, a human `message` and the request
//! id. They never echo the token, policy text or evaluation errors (those go to the decision
//! log). 401s carry an RFC 6750 challenge.

use crate::authn::AuthnError;
use crate::canonical::TargetError;
use crate::pipeline::Denial;

/// A response the gateway writes itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenyResponse {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// Quotes a value for an auth-param (RFC 9110 quoted-string).
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

pub fn deny_response(denial: &Denial, request_id: &str, realm: &str) -> DenyResponse {
    let mut headers = Vec::new();
    let (status, error, message) = match denial {
        Denial::BadTarget(TargetError::TooLong) => {
            (414, "uri_too_long", TargetError::TooLong.to_string())
        }
        Denial::BadTarget(e) => (400, "bad_request", e.to_string()),
        Denial::BadHost(_) => (400, "bad_request", denial.to_string()),
        Denial::HeadersTooLarge => (431, "headers_too_large", denial.to_string()),
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
                    quoted(&AuthnError::DuplicateAuthorization.to_string())
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
                    quoted(&e.to_string())
                ),
            ));
            (401, "invalid_token", e.to_string())
        }
        Denial::Forbidden => (
            403,
            "forbidden",
            "the policy does not permit this request".to_string(),
        ),
    };
    let body = serde_json::json!({
        "error": error,
        "message": message,
        "request_id": request_id,
    });
    headers.push(("content-type", "application/json".to_string()));
    headers.push(("cache-control", "no-store".to_string()));
    DenyResponse {
        status,
        headers,
        body: body.to_string().into_bytes(),
    }
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
    fn realm_is_quoted() {
        assert_eq!(quoted(r#"a"b\c"#), r#""a\"b\\c""#);
    }
}
