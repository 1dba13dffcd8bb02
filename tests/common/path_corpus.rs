//! The adversarial path corpus, shared by `tests/integration/path_corpus.rs` (HTTP/1.1 on a raw socket) and
//! `tests/integration/edge/protocols.rs` (the same targets as HTTP/2 `:path`s).

/// (target as sent, expected status, target the upstream receives when forwarded)
pub const CORPUS: &[(&str, u16, Option<&str>)] = &[
    // Plain and canonicalized spellings of allowed paths.
    ("/lists/acme-roadmap", 200, Some("/lists/acme-roadmap")),
    (
        "/lists/acme-roadmap/tasks/t1",
        200,
        Some("/lists/acme-roadmap/tasks/t1"),
    ),
    ("/lists/%61cme-roadmap", 200, Some("/lists/acme-roadmap")),
    ("/lists/acme%2droadmap", 200, Some("/lists/acme-roadmap")),
    (
        "/lists/acme%2Droadmap/tasks/%74%31",
        200,
        Some("/lists/acme-roadmap/tasks/t1"),
    ),
    (
        "/lists/acme-roadmap/tasks/t%31",
        200,
        Some("/lists/acme-roadmap/tasks/t1"),
    ),
    (
        "/lists/acme-roadmap?x=%2F..%2f&y",
        200,
        Some("/lists/acme-roadmap?x=%2F..%2f&y"),
    ),
    (
        "/lists/acme-roadmap?_method=DELETE",
        200,
        Some("/lists/acme-roadmap"),
    ),
    (
        "/lists/acme-roadmap/tasks/t%7e",
        200,
        Some("/lists/acme-roadmap/tasks/t~"),
    ),
    (
        "/lists/acme-roadmap/tasks/caf%c3%a9",
        200,
        Some("/lists/acme-roadmap/tasks/caf%C3%A9"),
    ),
    // Dot segments, raw and encoded.
    ("/lists/acme-roadmap/../globex-ops", 400, None),
    ("/lists/acme-roadmap/./tasks", 400, None),
    ("/lists/%2e%2e/globex-ops", 400, None),
    ("/lists/%2E%2E/globex-ops", 400, None),
    ("/lists/.%2e/globex-ops", 400, None),
    ("/lists/%2e./globex-ops", 400, None),
    ("/lists/acme-roadmap/tasks/..", 400, None),
    ("/lists/acme-roadmap/tasks/%2e", 400, None),
    // Encoded separators.
    ("/lists/acme-roadmap%2ftasks", 400, None),
    ("/lists/acme-roadmap%2Ftasks/t1", 400, None),
    ("/lists/acme-roadmap/tasks/..%2ft3", 400, None),
    ("/lists/acme-roadmap%5ctasks", 400, None),
    ("/lists/acme-roadmap%5Ctasks", 400, None),
    ("/lists/acme-roadmap\\tasks", 400, None),
    // Empty segments.
    ("/lists//acme-roadmap", 400, None),
    ("//lists/acme-roadmap", 400, None),
    ("/lists/acme-roadmap//tasks", 400, None),
    // Path parameters.
    ("/lists/acme-roadmap;x=1", 400, None),
    ("/lists/acme-roadmap;/tasks/t1", 400, None),
    ("/lists/acme-roadmap/tasks/t1;.css", 400, None),
    // Control characters and NUL, encoded.
    ("/lists/acme-roadmap%00", 400, None),
    ("/lists/acme-roadmap%0a", 400, None),
    ("/lists/acme-roadmap%0D%0AX-Injected:%201", 400, None),
    ("/lists/acme-roadmap%7f", 400, None),
    // Double encoding, invalid UTF-8, overlong encodings.
    ("/lists/acme%252droadmap", 400, None),
    ("/lists/%252e%252e/globex-ops", 400, None),
    // Double encoding with the inner escape's digits encoded too (found by fuzz/canonicalize).
    ("/lists/acme%25%32droadmap", 400, None),
    ("/lists/%25%32e%25%32e/globex-ops", 400, None),
    // An encoded C1 control, NEL (found by fuzz/canonicalize).
    ("/lists/acme%C2%85roadmap", 400, None),
    ("/lists/%c0%ae%c0%ae/globex-ops", 400, None),
    ("/lists/%c0%af", 400, None),
    ("/lists/%ff", 400, None),
    ("/lists/%e0%80%ae", 400, None),
    // Malformed escapes.
    ("/lists/acme-roadmap%", 400, None),
    ("/lists/acme-roadmap%2", 400, None),
    ("/lists/acme-roadmap%zz", 400, None),
    // Fragments: pingora's parser drops them before the gateway sees the target, so the
    // fragment is neither authorized nor forwarded. An encoded `#` is part of the segment.
    ("/lists/acme-roadmap#frag", 200, Some("/lists/acme-roadmap")),
    (
        "/lists/acme-roadmap#/../globex-ops",
        200,
        Some("/lists/acme-roadmap"),
    ),
    ("/lists/acme-roadmap%23frag", 403, None),
    // Non-origin forms.
    ("*", 400, None),
    ("http://tasks.example.com/lists/acme-roadmap", 400, None),
    ("tasks.example.com:80", 400, None),
    // Case is significant; trailing slashes are distinct paths; unknown paths are 404.
    ("/LISTS/acme-roadmap", 404, None),
    ("/lists/acme-roadmap/", 404, None),
    ("/lists/acme-roadmap/tasks/", 404, None),
    // Over-long targets.
    ("/lists/LONG", 414, None),
];
