//! Any string as a bearer token: the strict parser never panics, and a token it accepts has
//! exactly three parts whose signing input is the first two, and numeric time claims where it
//! has them (their presence is the claim rules' job, after the parser).
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
    for claim in ["exp", "nbf", "iat"] {
        assert!(parsed.claims.get(claim).is_none_or(|value| value.is_number()));
    }
    let _ = parsed.issuer();
});
