//! Requests pingora does not serve: a head it cannot read (it does not parse, or fails pingora's
//! validation) and CONNECT. pingora refuses them before `new_ctx` and any filter; the patched
//! `refuse_unserved` hook (vendor/pingora-proxy/PATCHED.md) hands them to the proxy, which
//! answers them like every other refusal. This file names the refusal: the same `Denial`, and
//! so the same status, as the gateway's own stages give the same fault where they see it first
//! (a target too long is 414 at every length, too many header fields 431 at every count).
//!
//! pingora reports these faults as `InvalidHTTPHeader` errors that differ only in their
//! explanation and cause, so they are told apart by those. A fault not recognized here is
//! still refused, as a malformed request (400); `tests/integration/edge/raw_requests.rs` sends each case as
//! raw bytes, so a pingora release that rewords one shows up there as a changed status.

use pingora_core::Error;
use pingora_proxy::Unserved;

use crate::canonical::{is_token_byte, HeadError, HostError, TargetError, MAX_TARGET_LEN};
use crate::pipeline::Denial;

/// The refusal of a request pingora does not serve.
pub(super) fn denial(unserved: Unserved<'_>) -> Denial {
    match unserved {
        Unserved::Connect => Denial::MalformedHead(HeadError::Connect),
        Unserved::Unreadable(error) => {
            log::debug!("unreadable request head: {error}");
            unreadable(error)
        }
    }
}

fn unreadable(error: &Error) -> Denial {
    let context = error.context.as_ref().map_or("", |c| c.as_str());
    let parse_error = error
        .cause
        .as_deref()
        .and_then(|c| c.downcast_ref::<httparse::Error>());
    if parse_error == Some(&httparse::Error::TooManyHeaders)
        || context.starts_with("Request header larger than")
    {
        return Denial::HeadersTooLarge;
    }
    if let Some(target) = context.strip_prefix("invalid uri ") {
        // A target `http::Uri` cannot hold: longer than it allows (64 KiB, far past the
        // gateway's own limit), or with a byte it does not take.
        return Denial::BadTarget(if target.len() > MAX_TARGET_LEN {
            TargetError::TooLong
        } else {
            TargetError::InvalidCharacter
        });
    }
    if context == "invalid method" {
        return Denial::MalformedHead(HeadError::InvalidMethod);
    }
    if let (Some(httparse::Error::Token), Some(head)) = (parse_error, context.strip_prefix("buf: "))
    {
        // httparse refused a byte; pingora's explanation holds the head, escaped.
        return unparsable_request_line(head);
    }
    if context == "multiple Host header fields" {
        return Denial::BadHost(HostError::Duplicate);
    }
    if context.starts_with("userinfo in Host") || context == "invalid Host header" {
        return Denial::BadHost(HostError::Invalid);
    }
    // Absolute-form and authority-form targets whose authority pingora could not reconcile
    // with Host: the gateway takes origin form only.
    if context.contains("request target")
        || context.contains("request-target")
        || context.contains("URI authority")
    {
        return Denial::BadTarget(TargetError::NotOriginForm);
    }
    if context.contains("Content-Length") || context.contains("Transfer-Encoding") {
        return Denial::MalformedHead(HeadError::Framing);
    }
    Denial::MalformedHead(HeadError::Malformed)
}

/// Which part of a head httparse refused, from pingora's escaped copy of it (`\xNN` for a
/// byte outside printable ASCII): a method that is no token, or a target with a raw byte that
/// must be percent-encoded; anything else is a malformed head.
fn unparsable_request_line(escaped_head: &str) -> Denial {
    let line = escaped_head.split("\\r\\n").next().unwrap_or(escaped_head);
    let mut parts = line.splitn(3, ' ');
    let method = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("");
    if !method.bytes().all(is_token_byte) {
        return Denial::MalformedHead(HeadError::InvalidMethod);
    }
    if target.starts_with('/') && target.contains("\\x") {
        return Denial::BadTarget(TargetError::InvalidCharacter);
    }
    Denial::MalformedHead(HeadError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_core::ErrorType::InvalidHTTPHeader;

    fn explained(context: &str) -> Denial {
        denial(Unserved::Unreadable(&Error::explain(
            InvalidHTTPHeader,
            context.to_string(),
        )))
    }

    #[test]
    fn pingora_faults_get_the_gateway_refusal_for_the_same_fault() {
        let too_many = Error::because(
            InvalidHTTPHeader,
            "buf: ...",
            httparse::Error::TooManyHeaders,
        );
        assert_eq!(
            denial(Unserved::Unreadable(&too_many)),
            Denial::HeadersTooLarge
        );
        let token = Error::because(InvalidHTTPHeader, "buf: ...", httparse::Error::Token);
        assert_eq!(
            denial(Unserved::Unreadable(&token)),
            Denial::MalformedHead(HeadError::Malformed)
        );
        let long = format!("invalid uri /{}", "a".repeat(70_000));
        assert_eq!(explained(&long), Denial::BadTarget(TargetError::TooLong));
        assert_eq!(
            explained("invalid uri /a\u{7f}"),
            Denial::BadTarget(TargetError::InvalidCharacter)
        );
        for (head, refusal) in [
            (
                r"GET /health\xff\xfe HTTP/1.1\r\nHost: a\r\n\r\n",
                Denial::BadTarget(TargetError::InvalidCharacter),
            ),
            (
                r"G(T /health HTTP/1.1\r\nHost: a\r\n\r\n",
                Denial::MalformedHead(HeadError::InvalidMethod),
            ),
            (
                r"GE\x01T /health HTTP/1.1\r\n\r\n",
                Denial::MalformedHead(HeadError::InvalidMethod),
            ),
            (
                r"GET /health HTTP/1.1\r\nBad Name: a\r\n\r\n",
                Denial::MalformedHead(HeadError::Malformed),
            ),
        ] {
            let error = Error::because(
                InvalidHTTPHeader,
                format!("buf: {head}"),
                httparse::Error::Token,
            );
            assert_eq!(denial(Unserved::Unreadable(&error)), refusal, "{head}");
        }
        assert_eq!(
            explained("Request header larger than 1048575"),
            Denial::HeadersTooLarge
        );
        assert_eq!(
            explained("invalid method"),
            Denial::MalformedHead(HeadError::InvalidMethod)
        );
        assert_eq!(
            explained("multiple Host header fields"),
            Denial::BadHost(HostError::Duplicate)
        );
        assert_eq!(
            explained("userinfo in Host header"),
            Denial::BadHost(HostError::Invalid)
        );
        for context in [
            "Host header differs from request-target authority",
            "Host header differs from URI authority",
            "ambiguous HTTP absolute-form request target",
            "userinfo in request target",
        ] {
            assert_eq!(
                explained(context),
                Denial::BadTarget(TargetError::NotOriginForm),
                "{context}"
            );
        }
        for context in [
            "invalid Content-Length header value: +4",
            "non-chunked final Transfer-Encoding",
        ] {
            assert_eq!(
                explained(context),
                Denial::MalformedHead(HeadError::Framing),
                "{context}"
            );
        }
        assert_eq!(
            explained("something pingora adds later"),
            Denial::MalformedHead(HeadError::Malformed)
        );
        assert_eq!(
            denial(Unserved::Connect),
            Denial::MalformedHead(HeadError::Connect)
        );
    }
}
