//! Development OIDC token issuer: the one module that mints tokens, for `portcullis test` and
//! `explain` (which sign their cases' claims with keys of their own), `portcullis demo` and the
//! integration tests and load test.
//!
//! The gateway must be exercised against a real JWKS endpoint and real signatures, without
//! depending on an external identity provider. [`DevIssuer`] holds freshly generated RSA-2048
//! and P-256 keys, signs arbitrary claims with them, and [`serve_issuer`] publishes the
//! discovery document and JWKS over HTTP. Never use it for anything but development.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{
    EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// A signing key could not be made, or a token not signed.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// aws-lc-rs could not generate a signing key (or its key id).
    #[error("failed to generate the {0} signing key")]
    KeyGeneration(&'static str),
    /// aws-lc-rs refused to sign a token.
    #[error("failed to sign a token with {0}")]
    Signing(&'static str),
}
use crate::http_server::{error_response, json_response, serve, ResponseBody};

/// Path (below the issuer URL's own path) of the OIDC discovery document.
const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
/// Path (below the issuer URL's own path) of the JWKS document.
const JWKS_PATH: &str = "/.well-known/jwks.json";

/// JWS algorithm used to sign a token; selects which of the issuer's keys signs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningAlg {
    /// RSASSA-PKCS1-v1_5 with SHA-256, RSA-2048 key.
    Rs256,
    /// ECDSA P-256 with SHA-256, fixed-size `r || s` signature.
    Es256,
}

impl SigningAlg {
    /// The JOSE `alg` name.
    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlg::Rs256 => "RS256",
            SigningAlg::Es256 => "ES256",
        }
    }
}

/// A throw-away OIDC issuer: issuer URL, one RSA-2048 and one P-256 signing key.
pub struct DevIssuer {
    issuer_url: String,
    /// Path part of `issuer_url` without trailing slash ("" for a bare origin); the
    /// well-known documents are served below it.
    path_prefix: String,
    rsa: RsaKeyPair,
    rsa_kid: String,
    ec: EcdsaKeyPair,
    ec_kid: String,
    /// Public JWKS, computed once at generation.
    jwks: Value,
    rng: SystemRandom,
    jwks_fetches: AtomicU64,
}

impl std::fmt::Debug for DevIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Private keys deliberately left out.
        f.debug_struct("DevIssuer")
            .field("issuer_url", &self.issuer_url)
            .field("rsa_kid", &self.rsa_kid)
            .field("ec_kid", &self.ec_kid)
            .field("jwks_fetches", &self.jwks_fetches())
            .finish_non_exhaustive()
    }
}

impl DevIssuer {
    /// Generates fresh RSA-2048 and P-256 key pairs with random key ids.
    pub fn generate(issuer_url: impl Into<String>) -> Result<Self, MintError> {
        let issuer_url = issuer_url.into();
        let rng = SystemRandom::new();

        let rsa = RsaKeyPair::generate(KeySize::Rsa2048)
            .map_err(|_| MintError::KeyGeneration("RS256"))?;
        let ec = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .map_err(|_| MintError::KeyGeneration("ES256"))?;
        let rsa_kid = random_kid(&rng, "rs256").ok_or(MintError::KeyGeneration("RS256"))?;
        let ec_kid = random_kid(&rng, "es256").ok_or(MintError::KeyGeneration("ES256"))?;

        let rsa_public = rsa.public_key();
        let ec_point = ec.public_key().as_ref();
        // Uncompressed SEC1 point: 0x04 || x (32 bytes) || y (32 bytes).
        let (x, y) = match ec_point {
            [0x04, coords @ ..] if coords.len() == 64 => coords.split_at(32),
            _ => return Err(MintError::KeyGeneration("ES256")),
        };
        let jwks = json!({
            "keys": [
                {
                    "kty": "RSA",
                    "kid": rsa_kid,
                    "use": "sig",
                    "alg": "RS256",
                    "n": b64(rsa_public.modulus().big_endian_without_leading_zero()),
                    "e": b64(rsa_public.exponent().big_endian_without_leading_zero()),
                },
                {
                    "kty": "EC",
                    "kid": ec_kid,
                    "use": "sig",
                    "alg": "ES256",
                    "crv": "P-256",
                    "x": b64(x),
                    "y": b64(y),
                },
            ]
        });

        let path_prefix = issuer_path(&issuer_url);
        Ok(Self {
            issuer_url,
            path_prefix,
            rsa,
            rsa_kid,
            ec,
            ec_kid,
            jwks,
            rng,
            jwks_fetches: AtomicU64::new(0),
        })
    }

    /// The issuer URL exactly as given (the value of the `iss` claim and of `issuer` in the
    /// discovery document).
    pub fn issuer_url(&self) -> &str {
        &self.issuer_url
    }

    /// `{issuer_url without trailing slash}/.well-known/jwks.json`.
    pub fn jwks_uri(&self) -> String {
        format!("{}{JWKS_PATH}", self.issuer_url.trim_end_matches('/'))
    }

    /// The key id of the key used for `alg`.
    pub fn kid(&self, alg: SigningAlg) -> &str {
        match alg {
            SigningAlg::Rs256 => &self.rsa_kid,
            SigningAlg::Es256 => &self.ec_kid,
        }
    }

    /// The public JWKS: one RSA and one EC key, coordinates base64url without padding.
    pub fn jwks(&self) -> Value {
        self.jwks.clone()
    }

    /// The public JWK whose `kty` is `kty` (`"RSA"` or `"EC"`).
    pub fn jwk(&self, kty: &str) -> Option<Value> {
        self.jwks["keys"]
            .as_array()?
            .iter()
            .find(|key| key["kty"] == kty)
            .cloned()
    }

    /// The RSA public key as a PEM `PUBLIC KEY` (SubjectPublicKeyInfo), for verifiers that
    /// take a key file rather than a JWKS (HAProxy's `jwt_verify` in the load test's peer).
    pub fn rsa_public_key_pem(&self) -> Result<String, MintError> {
        let der: PublicKeyX509Der<'static> = self
            .rsa
            .public_key()
            .as_der()
            .map_err(|_| MintError::KeyGeneration("RS256"))?;
        let encoded = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
        let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
        for line in encoded.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END PUBLIC KEY-----\n");
        Ok(pem)
    }

    /// The OIDC discovery document: `{"issuer", "jwks_uri"}`.
    pub fn discovery(&self) -> Value {
        json!({ "issuer": self.issuer_url, "jwks_uri": self.jwks_uri() })
    }

    /// Signs `claims` as a compact JWS with header `{"alg", "typ": "JWT", "kid"}` using the
    /// key for `alg`.
    ///
    /// Fails only if aws-lc-rs reports a signing error, which does not happen with the keys
    /// generated here short of an allocation failure; it is still surfaced rather than
    /// panicking, since it is an FFI error path that cannot be proven unreachable.
    pub fn mint(&self, alg: SigningAlg, claims: &Value) -> Result<String, MintError> {
        let header = json!({ "alg": alg.as_str(), "typ": "JWT", "kid": self.kid(alg) });
        self.mint_with_header(alg, &header, claims)
    }

    /// Signs `claims` with the key selected by `key`, using `header` verbatim as the JOSE
    /// header (tests use it for unknown kids, mismatched `alg`, extra header fields).
    pub fn mint_with_header(
        &self,
        key: SigningAlg,
        header: &Value,
        claims: &Value,
    ) -> Result<String, MintError> {
        self.mint_raw(key, &header.to_string(), &claims.to_string())
    }

    /// Signs header and payload given as exact JSON text (tests use it for duplicate member
    /// names and other forms a `Value` cannot hold).
    pub fn mint_raw(
        &self,
        key: SigningAlg,
        header: &str,
        payload: &str,
    ) -> Result<String, MintError> {
        let signing_input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
        let signature = self.sign(key, signing_input.as_bytes())?;
        Ok(format!("{signing_input}.{}", b64(&signature)))
    }

    /// Number of JWKS documents served so far by [`serve_issuer`].
    pub fn jwks_fetches(&self) -> u64 {
        self.jwks_fetches.load(Ordering::SeqCst)
    }

    fn sign(&self, key: SigningAlg, message: &[u8]) -> Result<Vec<u8>, MintError> {
        match key {
            SigningAlg::Rs256 => {
                let mut signature = vec![0u8; self.rsa.public_modulus_len()];
                self.rsa
                    .sign(&RSA_PKCS1_SHA256, &self.rng, message, &mut signature)
                    .map_err(|_| MintError::Signing("RS256"))?;
                Ok(signature)
            }
            SigningAlg::Es256 => self
                .ec
                .sign(&self.rng, message)
                .map(|signature| signature.as_ref().to_vec())
                .map_err(|_| MintError::Signing("ES256")),
        }
    }

    /// Answers one request to the issuer server.
    fn respond(&self, method: &Method, path: &str) -> Response<ResponseBody> {
        let Some(rest) = path.strip_prefix(self.path_prefix.as_str()) else {
            return error_response(StatusCode::NOT_FOUND, "not found");
        };
        match (method, rest) {
            (&Method::GET, DISCOVERY_PATH) => json_response(StatusCode::OK, &self.discovery()),
            (&Method::GET, JWKS_PATH) => {
                self.jwks_fetches.fetch_add(1, Ordering::SeqCst);
                json_response(StatusCode::OK, &self.jwks)
            }
            _ => error_response(StatusCode::NOT_FOUND, "not found"),
        }
    }
}

/// Serves `GET {issuer path}/.well-known/openid-configuration` and
/// `GET {issuer path}/.well-known/jwks.json` (JSON, 200; anything else 404) over HTTP/1.1 on
/// `listener` until the task is dropped or aborted. Every JWKS response served increments
/// [`DevIssuer::jwks_fetches`].
///
/// The issuer path is the path of the issuer URL (empty for `http://host:port`), so the
/// advertised `jwks_uri` and the standard discovery location always resolve.
pub async fn serve_issuer(issuer: Arc<DevIssuer>, listener: TcpListener) {
    serve(listener, move |req: Request<hyper::body::Incoming>| {
        let response = issuer.respond(req.method(), req.uri().path());
        async move { response }
    })
    .await;
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `"{prefix}-{16 random hex digits}"`, or `None` if the system RNG fails.
fn random_kid(rng: &SystemRandom, prefix: &str) -> Option<String> {
    let mut bytes = [0u8; 8];
    rng.fill(&mut bytes).ok()?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Some(format!("{prefix}-{hex}"))
}

/// Path component of `issuer_url` without trailing slash; "" if there is none or the URL
/// does not parse (then the documents are served at the root).
fn issuer_path(issuer_url: &str) -> String {
    issuer_url
        .parse::<http::Uri>()
        .ok()
        .filter(|uri| uri.authority().is_some())
        .map(|uri| uri.path().trim_end_matches('/').to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{
        RsaPublicKeyComponents, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED,
        RSA_PKCS1_2048_8192_SHA256,
    };

    fn field(jwk: &Value, name: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(jwk[name].as_str().unwrap()).unwrap()
    }

    /// Splits a compact JWS into (signing input, decoded header, decoded claims, signature).
    fn split(token: &str) -> (String, Value, Value, Vec<u8>) {
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3, "{token}");
        let decode = |s: &str| -> Value {
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(s).unwrap()).unwrap()
        };
        (
            format!("{}.{}", parts[0], parts[1]),
            decode(parts[0]),
            decode(parts[1]),
            URL_SAFE_NO_PAD.decode(parts[2]).unwrap(),
        )
    }

    #[test]
    fn rs256_token_verifies_with_jwks_key() {
        let issuer = DevIssuer::generate("http://127.0.0.1:9/").unwrap();
        let claims = json!({"sub": "alice", "iss": issuer.issuer_url()});
        let token = issuer.mint(SigningAlg::Rs256, &claims).unwrap();
        let (input, header, decoded, signature) = split(&token);
        assert_eq!(
            header,
            json!({"alg": "RS256", "typ": "JWT", "kid": issuer.kid(SigningAlg::Rs256)})
        );
        assert_eq!(decoded, claims);

        let key = issuer.jwk("RSA").unwrap();
        assert_eq!(key["kid"], issuer.kid(SigningAlg::Rs256));
        assert_eq!(key["alg"], "RS256");
        let public = RsaPublicKeyComponents {
            n: field(&key, "n"),
            e: field(&key, "e"),
        };
        assert_eq!(public.n.len(), 256);
        public
            .verify(&RSA_PKCS1_2048_8192_SHA256, input.as_bytes(), &signature)
            .unwrap();
        assert!(public
            .verify(&RSA_PKCS1_2048_8192_SHA256, b"tampered", &signature)
            .is_err());
    }

    #[test]
    fn es256_token_verifies_with_jwks_key() {
        let issuer = DevIssuer::generate("http://127.0.0.1:9").unwrap();
        let claims = json!({"sub": "bob", "tenant": "org_acme"});
        let token = issuer.mint(SigningAlg::Es256, &claims).unwrap();
        let (input, header, decoded, signature) = split(&token);
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["kid"], issuer.kid(SigningAlg::Es256));
        assert_eq!(decoded, claims);
        assert_eq!(signature.len(), 64);

        let key = issuer.jwk("EC").unwrap();
        assert_eq!(key["crv"], "P-256");
        let mut point = vec![0x04];
        point.extend(field(&key, "x"));
        point.extend(field(&key, "y"));
        let public = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point);
        public.verify(input.as_bytes(), &signature).unwrap();
        assert!(public.verify(b"tampered", &signature).is_err());
    }

    #[test]
    fn mint_with_header_uses_header_verbatim() {
        let issuer = DevIssuer::generate("http://issuer.test").unwrap();
        let header = json!({"alg": "RS256", "kid": "unknown-kid", "x-extra": true});
        let token = issuer
            .mint_with_header(SigningAlg::Es256, &header, &json!({"sub": "x"}))
            .unwrap();
        let (_, decoded_header, _, signature) = split(&token);
        assert_eq!(decoded_header, header);
        // Signed by the EC key despite the header's "alg".
        assert_eq!(signature.len(), 64);
    }

    #[test]
    fn kids_urls_and_discovery() {
        let issuer = DevIssuer::generate("http://issuer.test/realms/demo/").unwrap();
        assert_ne!(issuer.kid(SigningAlg::Rs256), issuer.kid(SigningAlg::Es256));
        assert_eq!(
            issuer.jwks_uri(),
            "http://issuer.test/realms/demo/.well-known/jwks.json"
        );
        assert_eq!(
            issuer.discovery(),
            json!({
                "issuer": "http://issuer.test/realms/demo/",
                "jwks_uri": "http://issuer.test/realms/demo/.well-known/jwks.json",
            })
        );
        let other = DevIssuer::generate("http://issuer.test").unwrap();
        assert_ne!(issuer.kid(SigningAlg::Rs256), other.kid(SigningAlg::Rs256));
    }

    #[test]
    fn respond_routes_and_counts_jwks_fetches() {
        let issuer = DevIssuer::generate("http://issuer.test/realms/demo").unwrap();
        let status = |m: Method, p: &str| issuer.respond(&m, p).status();
        assert_eq!(
            status(Method::GET, "/realms/demo/.well-known/openid-configuration"),
            StatusCode::OK
        );
        assert_eq!(issuer.jwks_fetches(), 0);
        assert_eq!(
            status(Method::GET, "/realms/demo/.well-known/jwks.json"),
            StatusCode::OK
        );
        assert_eq!(issuer.jwks_fetches(), 1);
        assert_eq!(
            status(Method::POST, "/realms/demo/.well-known/jwks.json"),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status(Method::GET, "/.well-known/jwks.json"),
            StatusCode::NOT_FOUND
        );
        assert_eq!(issuer.jwks_fetches(), 1);
    }

    #[test]
    fn dev_issuer_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<DevIssuer>();
    }

    #[tokio::test]
    async fn serves_jwks_over_http() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let issuer = Arc::new(DevIssuer::generate(format!("http://{addr}")).unwrap());
        let server = tokio::spawn(serve_issuer(Arc::clone(&issuer), listener));

        let client = reqwest::Client::new();
        let discovery: Value = serde_json::from_str(
            &client
                .get(format!("http://{addr}/.well-known/openid-configuration"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        )
        .unwrap();
        assert_eq!(discovery, issuer.discovery());

        let response = client.get(issuer.jwks_uri()).send().await.unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "application/json");
        let jwks: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
        assert_eq!(jwks, issuer.jwks());
        assert_eq!(issuer.jwks_fetches(), 1);

        let missing = client
            .get(format!("http://{addr}/nope"))
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), reqwest::StatusCode::NOT_FOUND);

        // Aborting the server also closes the pooled keep-alive connection.
        server.abort();
        let _ = server.await;
        assert!(client.get(issuer.jwks_uri()).send().await.is_err());
        assert_eq!(issuer.jwks_fetches(), 1);
    }
}
