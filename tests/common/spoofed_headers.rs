//! Headers a client sends to claim what only the gateway or a trusted proxy may say, in the
//! spellings some framework reads them in: shared by `tests/header_trust.rs` (HTTP/1.1) and
//! `tests/edge/protocols.rs` (HTTP/2, where names are lower case).

/// Headers a client may send that claim something about the client or the request.
pub const FORWARDING: &[(&str, &str)] = &[
    ("X-Forwarded-For", "10.0.0.1"),
    ("Forwarded", "for=10.0.0.1;proto=https;host=admin.internal"),
    ("X-Forwarded-Host", "admin.internal"),
    ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-Port", "443"),
    ("X-Forwarded-Prefix", "/admin"),
    ("X-Real-IP", "10.0.0.1"),
    ("X-Client-IP", "10.0.0.1"),
    ("X-Original-URL", "/admin/delete-everything"),
    ("X-Rewrite-URL", "/admin/delete-everything"),
    ("X_Forwarded_Host", "admin.internal"),
    ("x.real.ip", "10.0.0.1"),
];

/// Headers that would change the method after authorization.
pub const METHOD_OVERRIDES: &[(&str, &str)] = &[
    ("X-HTTP-Method-Override", "DELETE"),
    ("X-HTTP-Method", "DELETE"),
    ("X-Method-Override", "DELETE"),
    ("X_HTTP_Method_Override", "DELETE"),
];

/// The configured identity headers, spoofed in the spellings frameworks fold together.
pub const IDENTITY: &[(&str, &str)] = &[
    ("X-Portcullis-Principal", "dave"),
    ("x_portcullis_roles", "admin"),
    ("X.Portcullis.Tenant", "org_globex"),
    ("X-Request-Id", "client-chosen"),
];
