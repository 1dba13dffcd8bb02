//! The key set of one issuer: parsing a JWKS into verification keys, fetching it over HTTP(S)
//! (via OIDC discovery when no `jwks_uri` is configured), and keeping it fresh.
//!
//! The last good key set is kept whenever a fetch fails or returns garbage. A token with an
//! unknown `kid` triggers at most one refetch per cooldown, and only one fetch runs at a time;
//! tokens whose `kid` is known never wait for a fetch. The background refresh follows the
//! JWKS response's `Cache-Control: max-age`, bounded by the configured minimum and maximum.
//! Every change of the key set bumps a generation number, which invalidates cached tokens.
//! Nothing in a token (`jku`, `x5u`, `jwk`, `x5c`) can choose where keys come from.
//!
//! In three parts: `keys` (pure: a JWKS document → verification keys), `fetch` (HTTP:
//! discovery, the JWKS, `Cache-Control`, the size cap and the deadline) and `store` (the live
//! set: generations, single flight, the unknown-`kid` cooldown, the refresh schedule).

mod fetch;
mod keys;
mod store;

pub use fetch::{FetchPolicy, KeySource};
pub use keys::{JwksError, KeySet, VerificationKey};
pub use store::{FetchCounts, KeyStore};
