//! Headers a client sends to claim what only the gateway or a trusted proxy may say, in the
//! spellings some framework reads them in: shared by `tests/integration/header_trust.rs` (HTTP/1.1) and
//! `tests/integration/edge/protocols.rs` (HTTP/2, where names are lower case).

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

/// Every framework-internal header the gateway strips (its own list), in the spellings the
/// identity headers are spoofed in above: Title-Case, `_` in lower case, `.` in Title-Case.
pub fn framework_internal() -> Vec<(String, &'static str)> {
    let title = |name: &str, separator: &str| {
        name.split('-')
            .map(|word| {
                let mut chars = word.chars();
                chars.next().map_or_else(String::new, |first| {
                    first.to_ascii_uppercase().to_string() + chars.as_str()
                })
            })
            .collect::<Vec<_>>()
            .join(separator)
    };
    portcullis::identity_headers::FRAMEWORK_INTERNAL
        .iter()
        .flat_map(|header| {
            [
                title(header.name, "-"),
                header.name.replace('-', "_"),
                title(header.name, "."),
            ]
        })
        .map(|name| (name, "1"))
        .collect()
}
