//! Request-target canonicalization.
//!
//! The path is decoded exactly once, here. The decoded segments are what routes match and what
//! Cedar sees, and their re-encoding is exactly what is forwarded upstream, so the gateway and the
//! application can never disagree about which resource was requested. Anything ambiguous — an
//! encoded separator, a dot segment, an empty segment, double encoding, invalid UTF-8 — is
//! rejected rather than guessed at. The query string is forwarded untouched and never matched.

/// Longest request target accepted; longer ones get 414.
pub const MAX_TARGET_LEN: usize = 8192;

/// A request target in canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalTarget {
    /// Decoded path segments. `/` is empty; a trailing slash is a final empty segment.
    pub segments: Vec<String>,
    /// The canonical encoding of `segments`, starting with `/`: what is forwarded.
    pub path: String,
    /// The raw query (without `?`), forwarded as received.
    pub query: Option<String>,
}

impl CanonicalTarget {
    /// Path and query as sent upstream.
    pub fn path_and_query(&self) -> String {
        match &self.query {
            Some(query) => format!("{}?{}", self.path, query),
            None => self.path.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("request target is longer than {MAX_TARGET_LEN} bytes")]
    TooLong,
    #[error("request target must be a path starting with '/'")]
    NotOriginForm,
    #[error("request target must not contain a fragment")]
    Fragment,
    #[error("request path contains a character that must be percent-encoded")]
    InvalidCharacter,
    #[error("request path contains a malformed percent-encoding")]
    MalformedPercentEncoding,
    #[error("request path contains an encoded '/' or '\\'")]
    EncodedSeparator,
    #[error("request path contains a control character")]
    ControlCharacter,
    #[error("request path is percent-encoded twice")]
    DoubleEncoding,
    #[error("request path is not valid UTF-8")]
    InvalidUtf8,
    #[error("request path contains a '.' or '..' segment")]
    DotSegment,
    #[error("request path contains an empty segment ('//')")]
    EmptySegment,
    #[error("request path contains a ';' path parameter")]
    PathParameter,
    #[error("request query contains a control character")]
    QueryControlCharacter,
}

/// Why a `Host` header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("an HTTP/1.1 request must have a Host header")]
    Missing,
    #[error("the request has more than one Host header")]
    Duplicate,
    #[error("the Host header is not a valid host name or IP address with an optional port")]
    Invalid,
}

/// Why a request head was refused before its target or Host were read: its syntax, its framing,
/// a `Connection` header that would remove what the gateway must forward, or CONNECT. Most are
/// found by pingora's parser and handed over by the proxy's `refuse_unserved` hook; the
/// `Connection` faults are found here, by [`check_connection_nominations`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("the request line or a header field is malformed")]
    Malformed,
    #[error("the method is not a valid HTTP token")]
    InvalidMethod,
    #[error("the message framing (Content-Length, Transfer-Encoding) is invalid or ambiguous")]
    Framing,
    #[error(
        "the Connection header nominates a header that is always forwarded (Host, \
         X-Forwarded-For, X-Forwarded-Host, X-Forwarded-Proto) or a pseudo-header"
    )]
    ProtectedNomination,
    #[error(
        "the Connection header is not a list of at most {MAX_CONNECTION_NOMINATIONS} header names"
    )]
    MalformedConnection,
    #[error("the CONNECT method is not proxied")]
    Connect,
}

/// Most header names one request's `Connection` headers may nominate, as pingora allows.
pub const MAX_CONNECTION_NOMINATIONS: usize = 9;

/// Headers the proxy adds or rewrites itself, which a client's `Connection` header therefore
/// may not nominate for removal (pingora refuses such a request when it builds the upstream
/// request, after the decision; the gateway refuses it here, before).
const PROTECTED_FROM_NOMINATION: &[&str] = &[
    "host",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
];

/// Checks the tokens of every `Connection` header value the way pingora does before it removes
/// the nominated headers: at most [`MAX_CONNECTION_NOMINATIONS`] names, each an RFC 9110 token,
/// none a pseudo-header or one of [`PROTECTED_FROM_NOMINATION`] (in any case). A request that
/// passes is one pingora forwards with the nominated headers removed.
pub fn check_connection_nominations<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
) -> Result<(), HeadError> {
    let mut count = 0;
    for token in values
        .into_iter()
        .flat_map(|value| value.split(|byte| *byte == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|token| !token.is_empty())
    {
        count += 1;
        if count > MAX_CONNECTION_NOMINATIONS {
            return Err(HeadError::MalformedConnection);
        }
        if token.starts_with(b":") {
            return Err(HeadError::ProtectedNomination);
        }
        if !token.iter().all(|&byte| is_token_byte(byte)) {
            return Err(HeadError::MalformedConnection);
        }
        if PROTECTED_FROM_NOMINATION
            .iter()
            .any(|name| name.as_bytes().eq_ignore_ascii_case(token))
        {
            return Err(HeadError::ProtectedNomination);
        }
    }
    Ok(())
}

/// `tchar` (RFC 9110 §5.6.2).
pub fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// Canonicalizes a `Host` value for matching: a DNS name (letters, digits, `-`, `_`, `.`; no
/// empty label), an IPv4 address or a bracketed IPv6 literal, with an optional port. The result
/// is lowercase, without the port and without a trailing dot, so `API.example.com.:443` and
/// `api.example.com` are the same host. Anything else (userinfo, `%`, spaces, a second colon) is
/// refused: the application must not be able to read a different host out of it.
pub fn canonicalize_host(raw: &str) -> Result<String, HostError> {
    let (name, port) = if let Some(literal) = raw.strip_prefix('[') {
        let (address, rest) = literal.split_once(']').ok_or(HostError::Invalid)?;
        if address.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(HostError::Invalid);
        }
        let port = match rest {
            "" => None,
            rest => Some(rest.strip_prefix(':').ok_or(HostError::Invalid)?),
        };
        (&raw[..address.len() + 2], port)
    } else {
        match raw.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (raw, None),
        }
    };
    if let Some(port) = port {
        let valid = (1..=5).contains(&port.len())
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u16>().is_ok();
        if !valid {
            return Err(HostError::Invalid);
        }
    }
    if name.starts_with('[') {
        return Ok(name.to_ascii_lowercase());
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    let label_ok = |label: &str| {
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(HostError::Invalid);
    }
    Ok(name.to_ascii_lowercase())
}

/// Canonicalizes a raw request target as received on the request line.
pub fn canonicalize(raw: &[u8]) -> Result<CanonicalTarget, TargetError> {
    if raw.len() > MAX_TARGET_LEN {
        return Err(TargetError::TooLong);
    }
    if raw.first() != Some(&b'/') {
        return Err(TargetError::NotOriginForm);
    }
    if raw.contains(&b'#') {
        return Err(TargetError::Fragment);
    }
    let (raw_path, raw_query) = match raw.iter().position(|b| *b == b'?') {
        Some(i) => (&raw[..i], Some(&raw[i + 1..])),
        None => (raw, None),
    };
    let query = match raw_query {
        Some(q)
            if q.iter()
                .any(|b| b.is_ascii_control() || *b == b' ' || *b >= 0x80) =>
        {
            return Err(TargetError::QueryControlCharacter)
        }
        // Only ASCII bytes remain, so this conversion cannot fail.
        Some(q) => without_method_override(&String::from_utf8_lossy(q)),
        None => None,
    };

    let raw_segments: Vec<&[u8]> = raw_path[1..].split(|b| *b == b'/').collect();
    let mut segments = Vec::with_capacity(raw_segments.len());
    let last = raw_segments.len() - 1;
    for (i, raw_segment) in raw_segments.iter().enumerate() {
        if raw_segment.is_empty() {
            // `/` alone, or a trailing slash, is allowed; an empty segment elsewhere is not.
            if i == last {
                if i > 0 {
                    segments.push(String::new());
                }
                continue;
            }
            return Err(TargetError::EmptySegment);
        }
        let segment = decode_segment(raw_segment)?;
        if segment == "." || segment == ".." {
            return Err(TargetError::DotSegment);
        }
        segments.push(segment);
    }

    let mut path = String::with_capacity(raw_path.len());
    if segments.is_empty() {
        path.push('/');
    }
    for segment in &segments {
        path.push('/');
        encode_segment(segment, &mut path);
    }
    Ok(CanonicalTarget {
        segments,
        path,
        query,
    })
}

/// The query without `_method` parameters (any case, percent-encoded or not): frameworks such as
/// Rails and Laravel take them as the real method, after the gateway authorized another one.
/// Everything else is kept byte for byte; a query left empty is dropped.
fn without_method_override(query: &str) -> Option<String> {
    let is_override = |pair: &str| {
        let key = pair.split('=').next().unwrap_or_default();
        let decoded = key
            .replace("%5F", "_")
            .replace("%5f", "_")
            .replace('+', " ");
        decoded.eq_ignore_ascii_case("_method")
    };
    if !query.split('&').any(is_override) {
        return Some(query.to_string());
    }
    let kept: Vec<&str> = query.split('&').filter(|p| !is_override(p)).collect();
    let kept = kept.join("&");
    (!kept.is_empty()).then_some(kept)
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Characters that may appear unencoded in a canonical segment: RFC 3986 `pchar` minus `;`.
fn is_plain_segment_byte(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'=' | b':' | b'@'
        )
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn decode_segment(raw: &[u8]) -> Result<String, TargetError> {
    let mut bytes = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b == b'%' {
            let (hi, lo) = match (raw.get(i + 1), raw.get(i + 2)) {
                (Some(h), Some(l)) => (hex_value(*h), hex_value(*l)),
                _ => (None, None),
            };
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(TargetError::MalformedPercentEncoding);
            };
            let decoded = hi << 4 | lo;
            match decoded {
                b'/' | b'\\' => return Err(TargetError::EncodedSeparator),
                0x00..=0x1f | 0x7f => return Err(TargetError::ControlCharacter),
                _ => bytes.push(decoded),
            }
            i += 3;
            continue;
        }
        if b == b';' {
            return Err(TargetError::PathParameter);
        }
        if b.is_ascii_control() {
            return Err(TargetError::ControlCharacter);
        }
        if !is_plain_segment_byte(b) {
            return Err(TargetError::InvalidCharacter);
        }
        bytes.push(b);
        i += 1;
    }
    // Every decoded `%` came from `%25`. Followed by two hex digits, however they were
    // spelled (`%252e`, `%254%31`, `%25%34%31`), it is an escape that a second decoding in the
    // application would turn into another character.
    let escape_survives = bytes
        .windows(3)
        .any(|w| w[0] == b'%' && hex_value(w[1]).is_some() && hex_value(w[2]).is_some());
    if escape_survives {
        return Err(TargetError::DoubleEncoding);
    }
    let segment = String::from_utf8(bytes).map_err(|_| TargetError::InvalidUtf8)?;
    // C1 controls (U+0080..U+009F, e.g. NEL, which some systems treat as a line break) are
    // control characters too.
    if segment.chars().any(char::is_control) {
        return Err(TargetError::ControlCharacter);
    }
    Ok(segment)
}

fn encode_segment(segment: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in segment.as_bytes() {
        if is_plain_segment_byte(b) {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 0xf) as usize] as char);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> CanonicalTarget {
        canonicalize(raw.as_bytes()).unwrap_or_else(|e| panic!("{raw}: {e}"))
    }

    fn err(raw: &str) -> TargetError {
        canonicalize(raw.as_bytes()).expect_err(raw)
    }

    #[test]
    fn plain_paths_are_unchanged() {
        let t = ok("/lists/l1/tasks/t9");
        assert_eq!(t.segments, ["lists", "l1", "tasks", "t9"]);
        assert_eq!(t.path, "/lists/l1/tasks/t9");
        assert_eq!(t.query, None);
    }

    #[test]
    fn root_and_trailing_slash() {
        let root = ok("/");
        assert!(root.segments.is_empty());
        assert_eq!(root.path, "/");
        let trailing = ok("/lists/");
        assert_eq!(trailing.segments, ["lists", ""]);
        assert_eq!(trailing.path, "/lists/");
    }

    #[test]
    fn percent_encoding_is_normalized() {
        let t = ok("/a%7Eb/%41/caf%c3%a9/sp%20ace");
        assert_eq!(t.segments, ["a~b", "A", "café", "sp ace"]);
        assert_eq!(t.path, "/a~b/A/caf%C3%A9/sp%20ace");
        assert_eq!(ok("/50%25").path, "/50%25");
    }

    #[test]
    fn query_is_kept_verbatim() {
        let t = ok("/a?x=%2F..%2f&y=1");
        assert_eq!(t.query.as_deref(), Some("x=%2F..%2f&y=1"));
        assert_eq!(t.path_and_query(), "/a?x=%2F..%2f&y=1");
    }

    #[test]
    fn ambiguous_targets_are_rejected() {
        assert_eq!(err("/a/%2f/b"), TargetError::EncodedSeparator);
        assert_eq!(err("/a/%5Cb"), TargetError::EncodedSeparator);
        assert_eq!(err("/a/%00"), TargetError::ControlCharacter);
        assert_eq!(err("/a/../b"), TargetError::DotSegment);
        assert_eq!(err("/a/./b"), TargetError::DotSegment);
        assert_eq!(err("/a/%2e%2E/b"), TargetError::DotSegment);
        assert_eq!(err("/a/.%2e"), TargetError::DotSegment);
        assert_eq!(err("/a//b"), TargetError::EmptySegment);
        assert_eq!(err("//a"), TargetError::EmptySegment);
        assert_eq!(err("/a;jsessionid=1/b"), TargetError::PathParameter);
        assert_eq!(err("/a%252e"), TargetError::DoubleEncoding);
        // Found by fuzz/canonicalize: the escape's digits spelled partly or wholly encoded.
        assert_eq!(err("/a%254%31"), TargetError::DoubleEncoding);
        assert_eq!(err("/a%25%34%31"), TargetError::DoubleEncoding);
        assert_eq!(err("/a%25%32e"), TargetError::DoubleEncoding);
        // Found by fuzz/canonicalize: an encoded C1 control (U+009A, U+0085 NEL).
        assert_eq!(err("/caf%C2%9A"), TargetError::ControlCharacter);
        assert_eq!(err("/a%C2%85b"), TargetError::ControlCharacter);
        assert_eq!(err("/a%2"), TargetError::MalformedPercentEncoding);
        assert_eq!(err("/a%zz"), TargetError::MalformedPercentEncoding);
        assert_eq!(err("/a%c0%ae"), TargetError::InvalidUtf8);
        assert_eq!(err("/a%ff"), TargetError::InvalidUtf8);
        assert_eq!(err("/a b"), TargetError::InvalidCharacter);
        assert_eq!(err("/a\\b"), TargetError::InvalidCharacter);
        assert_eq!(err("/a#frag"), TargetError::Fragment);
        assert_eq!(err("*"), TargetError::NotOriginForm);
        assert_eq!(err("http://evil/a"), TargetError::NotOriginForm);
        assert_eq!(err("/a?x=\x01"), TargetError::QueryControlCharacter);
    }

    #[test]
    fn method_override_parameters_are_removed_from_the_query() {
        let query = |raw: &str| canonicalize(raw.as_bytes()).unwrap().query;
        assert_eq!(query("/a?_method=DELETE"), None);
        assert_eq!(
            query("/a?x=1&_method=DELETE&y=%2F"),
            Some("x=1&y=%2F".into())
        );
        assert_eq!(query("/a?%5Fmethod=PUT&_METHOD=x&%5fMethod"), None);
        assert_eq!(
            query("/a?method=PUT&x_method=1"),
            Some("method=PUT&x_method=1".into())
        );
        assert_eq!(query("/a?"), Some(String::new()));
        let long = format!("/{}", "a".repeat(MAX_TARGET_LEN));
        assert_eq!(err(&long), TargetError::TooLong);
    }

    #[test]
    fn canonical_form_is_a_fixed_point() {
        for raw in ["/a%7eb/%41", "/caf%C3%A9/x", "/x:y@z/!$&'()*+,=", "/t/"] {
            let once = ok(raw);
            let twice = ok(&once.path);
            assert_eq!(once, twice, "{raw}");
        }
    }

    #[test]
    fn connection_nominations_are_checked_as_pingora_checks_them() {
        let check =
            |values: &[&str]| check_connection_nominations(values.iter().map(|v| v.as_bytes()));
        assert_eq!(check(&[]), Ok(()));
        assert_eq!(check(&["close"]), Ok(()));
        assert_eq!(check(&["keep-alive, X-Debug", "te"]), Ok(()));
        assert_eq!(check(&[" , close ,, "]), Ok(()));
        for protected in [
            "close, X-Forwarded-For",
            "HOST",
            "x-forwarded-host",
            "keep-alive,X-Forwarded-Proto",
            ":authority",
        ] {
            assert_eq!(
                check(&[protected]),
                Err(HeadError::ProtectedNomination),
                "{protected}"
            );
        }
        assert_eq!(
            check(&["close", "\"X-Forwarded-For\""]),
            Err(HeadError::MalformedConnection)
        );
        assert_eq!(check(&["a b"]), Err(HeadError::MalformedConnection));
        let nine = ["x"; MAX_CONNECTION_NOMINATIONS].join(",");
        assert_eq!(check(&[&nine]), Ok(()));
        assert_eq!(
            check(&[&nine, "close"]),
            Err(HeadError::MalformedConnection)
        );
    }

    #[test]
    fn hosts_are_canonicalized_or_refused() {
        for (raw, canonical) in [
            ("API.Example.COM.", "api.example.com"),
            ("api.example.com:443", "api.example.com"),
            ("api.example.com.:8080", "api.example.com"),
            ("10.0.0.1:80", "10.0.0.1"),
            ("[::1]", "[::1]"),
            ("[::1]:8080", "[::1]"),
            ("[FE80::1]", "[fe80::1]"),
            ("svc_name.ns", "svc_name.ns"),
        ] {
            assert_eq!(canonicalize_host(raw), Ok(canonical.to_string()), "{raw}");
        }
        for raw in [
            "",
            ".",
            ":80",
            "a..b",
            "a.b..",
            "user@api.example.com",
            "api.example.com:",
            "api.example.com:99999",
            "api.example.com:+80",
            "api.example.com:80:80",
            "api example.com",
            "api.example.com/x",
            "api%2eexample.com",
            "[::1",
            "[not-v6]",
            "[::1]x",
            "[::1]:",
            "exa\u{0}mple.com",
        ] {
            assert_eq!(canonicalize_host(raw), Err(HostError::Invalid), "{raw:?}");
        }
    }
}
