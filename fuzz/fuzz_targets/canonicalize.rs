//! Any bytes as a request target: canonicalization never panics, and what it accepts is
//! canonical (idempotent, no separator or dot ambiguity left for the application to decode).
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::canonical::canonicalize;

fuzz_target!(|raw: &[u8]| {
    let Ok(target) = canonicalize(raw) else {
        return;
    };
    let path = &target.path;
    assert!(path.starts_with('/'), "{path:?}");
    assert!(!path.contains("//"), "{path:?}");
    assert!(!path.contains('\\'), "{path:?}");
    let lower = path.to_ascii_lowercase();
    assert!(!lower.contains("%2f") && !lower.contains("%5c"), "{path:?}");
    for segment in &target.segments {
        // A literal `%` may remain (`%25` then not an escape), but decoding the segment again
        // must not find an escape: no double encoding survives.
        let again = segment.as_bytes();
        assert!(
            !again.windows(3).any(|w| w[0] == b'%'
                && w[1].is_ascii_hexdigit()
                && w[2].is_ascii_hexdigit()),
            "double encoding survived: {path:?}"
        );
        assert!(segment != "." && segment != "..", "{path:?}");
        assert!(!segment.contains('/') && !segment.contains('\\'), "{path:?}");
        assert!(!segment.chars().any(char::is_control), "{path:?}");
    }
    let again = canonicalize(target.path_and_query().as_bytes())
        .unwrap_or_else(|e| panic!("canonical form {path:?} rejected: {e}"));
    assert_eq!(again, target, "not idempotent");
});
