//! Any string as a bearer token: the strict parser never panics, and a token it accepts has
//! exactly three parts whose signing input is the first two.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::authn::token::parse;

fuzz_target!(|token: &str| {
    let Ok(parsed) = parse(token, 8192) else {
        return;
    };
    assert_eq!(token.matches('.').count(), 2);
    assert_eq!(
        format!("{}.{}", parsed.signing_input, parsed.signature),
        token
    );
    assert!(parsed.claims.get("exp").is_some_and(|exp| exp.is_number()));
    let _ = parsed.issuer();
});
