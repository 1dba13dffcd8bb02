//! Properties of the canonical request model, over generated request targets built from the
//! pieces attackers use (encoded separators, dot segments in every encoding, `;`, `//`,
//! backslashes, mixed-case and double encodings, non-ASCII):
//!
//! - canonicalization is idempotent: the canonical path canonicalizes to itself;
//! - a canonical path never contains a `.`/`..` segment, `//`, `\`, `;`, an encoded `/` or `\`,
//!   or a double encoding;
//! - through the real pipeline, a request is forwarded only if its canonical path matches a route
//!   whose policies allow it, and what is forwarded is exactly that canonical path.

use std::net::IpAddr;

use portcullis::canonical::canonicalize;
use portcullis::offline::{OfflineCaller, OfflineGateway, OfflineRequest};
use portcullis::routes::Lookup;
use proptest::prelude::*;

/// Pieces of a path segment, plain and hostile.
fn piece() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "lists",
        "acme-roadmap",
        "globex-ops",
        "tasks",
        "t1",
        "t3",
        "health",
        "a",
        "%61",
        "%41",
        ".",
        "..",
        "%2e",
        "%2E%2e",
        ".%2e",
        "%2f",
        "%2F",
        "%5c",
        "%5C",
        "\\",
        ";",
        ";x=1",
        "%3b",
        "%252f",
        "%25",
        "%",
        "%zz",
        "~",
        "%7e",
        "%7E",
        "é",
        "%c3%a9",
        "%c0%af",
        "%00",
        "%0a",
        " ",
        "?",
        "#",
        "*",
        "@",
        ":",
        "+",
    ])
}

/// A request target: mostly shaped like the example's routes with hostile spellings of their
/// parameters, sometimes anything built from the pieces.
fn target() -> impl Strategy<Value = String> {
    prop_oneof![3 => routed_target(), 1 => free_target()]
}

/// `/lists/{list}[/tasks[/{task}]]` with each part in a plain, encoded or hostile spelling.
fn routed_target() -> impl Strategy<Value = String> {
    let list = prop::sample::select(vec![
        "acme-roadmap",
        "%61cme-roadmap",
        "acme%2Droadmap",
        "ACME-roadmap",
        "globex-ops",
        "acme-roadmap;x",
        "acme-roadmap%2f..",
        "..",
        "%2e%2e",
        "acme-roadmap%00",
    ]);
    let task = prop::sample::select(vec![
        "t1",
        "%74%31",
        "%741",
        "t3",
        "t9",
        "t1%2F..%2Ft3",
        "t1;",
        "t1%252f",
        ".",
        "t%31",
    ]);
    let tail = prop::sample::select(vec!["", "/tasks", "/tasks/", "//tasks"]);
    (list, tail, prop::option::of(task)).prop_map(|(list, tail, task)| {
        let mut target = format!("/lists/{list}{tail}");
        if let (Some(task), true) = (task, tail == "/tasks") {
            target.push('/');
            target.push_str(task);
        }
        target
    })
}

/// `/` + segments joined by `/` (sometimes doubled), maybe a query.
fn free_target() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop::collection::vec(piece(), 1..3), 0..6),
        any::<bool>(),
        prop::option::of(prop::sample::select(vec!["a=1", "x=%2F..", "", "q=a&q=b"])),
    )
        .prop_map(|(segments, doubled, query)| {
            let separator = if doubled { "//" } else { "/" };
            let path: Vec<String> = segments.iter().map(|pieces| pieces.concat()).collect();
            let mut target = format!("/{}", path.join(separator));
            if let Some(query) = query {
                target.push('?');
                target.push_str(query);
            }
            target
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn canonical_paths_are_fixed_points_without_ambiguous_pieces(target in target()) {
        if let Ok(canonical) = canonicalize(target.as_bytes()) {
            let again = canonicalize(canonical.path.as_bytes()).unwrap();
            prop_assert_eq!(&again.path, &canonical.path);
            prop_assert_eq!(&again.segments, &canonical.segments);
            let lower = canonical.path.to_ascii_lowercase();
            for bad in ["//", "\\", ";", "%2f", "%5c", "/./", "/../"] {
                prop_assert!(!lower.contains(bad), "{} in {}", bad, canonical.path);
            }
            // A literal `%` is encoded as %25, but never in front of two hex digits: that
            // would be a double encoding another decoder could take one step further.
            for (i, _) in lower.match_indices("%25") {
                let next = lower.as_bytes().get(i + 3..i + 5);
                prop_assert!(
                    !next.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)),
                    "double encoding in {}", canonical.path
                );
            }
            prop_assert!(!lower.ends_with("/.") && !lower.ends_with("/.."));
            for segment in &canonical.segments {
                prop_assert!(segment != "." && segment != "..");
                prop_assert!(!segment.contains('/') && !segment.contains('\\'));
            }
        }
    }
}

/// The example configuration with generated signing keys, evaluated without sockets.
fn gateway() -> OfflineGateway {
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("portcullis.toml");
    OfflineGateway::load(&config).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn only_canonical_paths_of_allowing_routes_are_forwarded(
        target in target(),
        method in prop::sample::select(vec!["GET", "POST", "PATCH", "DELETE"]),
    ) {
        thread_local! {
            static GATEWAY: OfflineGateway = gateway();
        }
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        GATEWAY.with(|gateway| {
            let claims = serde_json::json!({
                "sub": "dave",
                "https://portcullis.dev/roles": ["admin"],
                "org_id": "org_acme",
                "scope": "tasks:read tasks:write",
            });
            let request = OfflineRequest {
                method: method.to_string(),
                target: target.clone(),
                host: None,
                headers: Vec::new(),
                client_ip: IpAddr::from([127, 0, 0, 1]),
                caller: OfflineCaller::Claims(claims.as_object().unwrap().clone()),
            };
            let snapshot = gateway.gateway.snapshot();
            let outcome = runtime.block_on(gateway.evaluate(&snapshot, &request)).unwrap();
            if let Some(forward) = outcome.forward() {
                let canonical = canonicalize(target.as_bytes()).unwrap();
                // Forwarded exactly as authorized.
                prop_assert_eq!(&forward.path_and_query, &canonical.path_and_query());
                prop_assert_eq!(outcome.path(), Some(canonical.path.as_str()));
                // The canonical path matches the route that was authorized, and it allowed.
                let matched = match snapshot.routes.lookup(None, method, &canonical.segments) {
                    Lookup::Matched { route, .. } => Some(route.id.clone()),
                    _ => None,
                };
                prop_assert_eq!(matched, outcome.route().map(|r| r.id.clone()));
                prop_assert!(outcome.decided().is_some_and(|d| d.decision.allowed));
            } else {
                prop_assert!(outcome.decided().is_none_or(|d| !d.decision.allowed));
            }
            Ok(())
        })?;
    }
}

/// The positive side of the property above, on known spellings: these are forwarded, and
/// forwarded in canonical form.
#[tokio::test]
async fn encoded_spellings_of_allowed_paths_are_forwarded_canonically() {
    let gateway = gateway();
    let claims = serde_json::json!({
        "sub": "dave", "https://portcullis.dev/roles": ["admin"], "org_id": "org_acme",
    });
    for (target, forwarded) in [
        (
            "/lists/%61cme-roadmap/tasks/%74%31",
            "/lists/acme-roadmap/tasks/t1",
        ),
        ("/lists/acme%2droadmap/tasks", "/lists/acme-roadmap/tasks"),
        (
            "/lists/acme-roadmap/tasks/t%31?x=%2F..",
            "/lists/acme-roadmap/tasks/t1?x=%2F..",
        ),
    ] {
        let request = OfflineRequest {
            method: "GET".to_string(),
            target: target.to_string(),
            host: None,
            headers: Vec::new(),
            client_ip: IpAddr::from([127, 0, 0, 1]),
            caller: OfflineCaller::Claims(claims.as_object().unwrap().clone()),
        };
        let snapshot = gateway.gateway.snapshot();
        let outcome = gateway.evaluate(&snapshot, &request).await.unwrap();
        let forward = outcome.forward().expect(target);
        assert_eq!(forward.path_and_query, forwarded);
    }
}
