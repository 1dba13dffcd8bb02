//! Request smuggling cases: ambiguous framing that hides a request in a body. Shared by
//! `tests/integration/smuggling.rs` (the gateway's own front end) and `tests/integration/edge/forward_auth.rs` (through
//! nginx).

/// The smuggled request: another tenant's list, no token.
pub const SMUGGLED: &str = "GET /lists/globex-ops HTTP/1.1\r\nHost: tasks.example.com\r\n\r\n";

/// (request, status of the one response the gateway gives) for a request whose head up to the
/// framing headers is `head`, each hiding `SMUGGLED`.
pub fn framing_cases(head: &str) -> Vec<(String, u16)> {
    let smuggled = SMUGGLED;
    let chunk = format!("0\r\n\r\n{smuggled}");
    vec![
        // CL.TE and TE.CL: both headers. Framed as chunked (RFC 9112 §6.3), the body ends at
        // the last chunk, and the connection is closed: the hidden GET is never read.
        (
            format!(
                "{head}Content-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}",
                chunk.len()
            ),
            200,
        ),
        (
            format!("{head}Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n{chunk}"),
            200,
        ),
        // Obfuscated Transfer-Encoding.
        (
            format!("{head}Transfer-Encoding: xchunked\r\n\r\n{chunk}"),
            400,
        ),
        (
            format!("{head}Transfer-Encoding : chunked\r\n\r\n{chunk}"),
            400,
        ),
        (
            format!("{head}Transfer-Encoding: chunked, identity\r\n\r\n{chunk}"),
            400,
        ),
        (
            format!("{head}Transfer-Encoding:\tchunked\r\nTransfer-Encoding: x\r\n\r\n{chunk}"),
            400,
        ),
        // Invalid and conflicting Content-Length.
        (
            format!("{head}Content-Length: 4\r\nContent-Length: 60\r\n\r\nabcd{smuggled}"),
            400,
        ),
        (
            format!("{head}Content-Length: +4\r\n\r\nabcd{smuggled}"),
            400,
        ),
        (
            format!("{head}Content-Length: 4, 60\r\n\r\nabcd{smuggled}"),
            400,
        ),
    ]
}
