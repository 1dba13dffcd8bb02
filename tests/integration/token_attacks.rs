//! The JWT attack classes of RFC 8725 ("JSON Web Token Best Current Practices"), each played
//! against the real gateway on real sockets, with a real issuer serving its JWKS over HTTP:
//!
//! 1. `alg` `none` in any spelling, unknown algorithm names, and HMAC tokens keyed with the
//!    issuer's public key material (key confusion);
//! 2. an algorithm that does not fit the key its `kid` selects;
//! 3. key-location headers (`jku`, `x5u`, `jwk`, `x5c`) pointing at an attacker's keys;
//! 4. `crit` header extensions;
//! 5. duplicate JSON member names (correctly signed);
//! 6. non-compact and non-canonical encodings, down to non-zero unused base64url bits;
//! 7. time claims of the wrong JSON type (correctly signed);
//! 8. oversized tokens;
//! 9. ECDSA signatures with `r` or `s` zero ("psychic signatures", CVE-2022-21449);
//! 10. two `Authorization` headers (400, not 401).
//!
//! Every attack must be answered 401 with an `invalid_token` challenge and a JSON body carrying
//! the request id, and must never reach the upstream: one case of each class is sent over the
//! socket and checked for all of that, the class's other variants are refused in-process by the
//! same gateway's bearer extraction and authenticator. The forging helpers are
//! `tests/common/jose.rs`. Every test also sends a control: the
//! same construction done correctly, which must get 200, so that a broken harness cannot make
//! the attacks pass.

use std::sync::Arc;

use crate::common::jose::*;
use crate::common::{b64, now, raw_exchange, TestEnv};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use portcullis::demo::{serve_issuer, DevIssuer, SigningAlg};
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// A route alice (a manager of org_acme) may GET.
const TARGET: &str = "/lists/acme-roadmap";

type Cases = Vec<(String, String)>;

// ---------------------------------------------------------------------------------------------
// Assertions
// ---------------------------------------------------------------------------------------------

/// The control: `token` is accepted and forwarded.
async fn assert_accepted(env: &TestEnv, name: &str, token: &str) {
    let before = env.upstream.count();
    let response = env.get_with_token(token, TARGET).await;
    assert_eq!(
        response.status, 200,
        "control {name:?} must be accepted: {}",
        response.body
    );
    assert_eq!(env.upstream.count(), before + 1, "control {name:?}");
}

/// `token` gets 401 `invalid_token` with a JSON body and never reaches the upstream.
async fn assert_rejected(env: &TestEnv, name: &str, token: &str) {
    let before = env.upstream.count();
    let response = env.get_with_token(token, TARGET).await;
    assert_eq!(
        response.status, 401,
        "{name}: expected 401, got {} {}",
        response.status, response.body
    );
    let challenge = response.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer ") && challenge.contains("error=\"invalid_token\""),
        "{name}: challenge {challenge:?}"
    );
    let body = response.json();
    assert_eq!(body["error"], "invalid_token", "{name}: {body}");
    assert!(
        body["request_id"].as_str().is_some_and(|id| !id.is_empty()),
        "{name}: no request_id in {body}"
    );
    if token.len() > 16 {
        assert!(!response.body.contains(token), "{name}: token echoed");
    }
    assert_eq!(env.upstream.count(), before, "{name}: reached the upstream");
}

/// The first case of an attack class over the socket (status, challenge, body, nothing
/// forwarded); the others in-process, through the bearer extraction and the authenticator of
/// the same running gateway, which are what refuse them.
async fn assert_all_rejected(env: &TestEnv, cases: &Cases) {
    let Some(((name, token), others)) = cases.split_first() else {
        panic!("an attack class without cases");
    };
    assert_rejected(env, name, token).await;
    for (name, token) in others {
        let header = format!("Bearer {token}");
        let verdict = match portcullis::authn::bearer_token(&[header.as_bytes()]) {
            Ok(token) => env
                .state
                .authenticator
                .authenticate(token)
                .await
                .map(|_| ()),
            Err(e) => Err(e),
        };
        assert!(verdict.is_err(), "{name}: accepted in-process");
    }
}

// ---------------------------------------------------------------------------------------------
// Token construction
// ---------------------------------------------------------------------------------------------

/// A valid RS256 token of alice whose three parts all have lengths leaving spare bits (so
/// that padding and spare-bit cases change every part), and whose signature contains `-` or
/// `_` (so that the standard alphabet differs). The header carries an extra `x` member and
/// the payload a `pad` claim, both ignored by the gateway, to steer the lengths.
fn shaped_token(env: &TestEnv) -> String {
    let kid = env.issuer.kid(SigningAlg::Rs256);
    for extra in 0..16 {
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": kid, "x": "x".repeat(extra % 4)})
            .to_string();
        let mut claims = env.claims("alice");
        claims["pad"] = json!("p".repeat(extra));
        let token = env
            .issuer
            .mint_raw(SigningAlg::Rs256, &header, &claims.to_string())
            .unwrap();
        let [h, p, s] = parts(&token);
        if h.len() % 4 >= 2 && p.len() % 4 >= 2 && (s.contains('-') || s.contains('_')) {
            return token;
        }
    }
    panic!("no suitably shaped token");
}

/// A valid RS256 token of alice exactly `total` bytes long, steered by the length of an
/// ignored `x` header member and a `pad` claim.
fn token_of_length(env: &TestEnv, total: usize) -> String {
    // Unpadded base64 length of n bytes.
    let encoded = |n: usize| (4 * n).div_ceil(3);
    // An RS256 signature of a 2048-bit key: 256 bytes.
    let signature = encoded(256);
    let kid = env.issuer.kid(SigningAlg::Rs256);
    for extra in 0..4 {
        let header =
            json!({"alg": "RS256", "typ": "JWT", "kid": kid, "x": "x".repeat(extra)}).to_string();
        let mut claims = env.claims("alice");
        claims["pad"] = json!("");
        let base = claims.to_string().len();
        for pad in 0..total {
            let len = encoded(header.len()) + 1 + encoded(base + pad) + 1 + signature;
            if len > total {
                break;
            }
            if len == total {
                claims["pad"] = json!("p".repeat(pad));
                let token = env
                    .issuer
                    .mint_raw(SigningAlg::Rs256, &header, &claims.to_string())
                    .unwrap();
                assert_eq!(token.len(), total);
                return token;
            }
        }
    }
    panic!("no token of {total} bytes");
}

// ---------------------------------------------------------------------------------------------
// 1. alg none, unknown algorithms, HMAC key confusion
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alg_none_unknown_algorithms_and_hmac_key_confusion_get_401() {
    let env = TestEnv::start().await;
    let issuer = &env.issuer;
    let rsa_kid = issuer.kid(SigningAlg::Rs256);
    let ec_kid = issuer.kid(SigningAlg::Es256);
    let payload = env.claims("alice").to_string();
    let mut cases = Cases::new();

    // Control: the same raw construction with the right algorithm.
    let control = issuer
        .mint_raw(
            SigningAlg::Rs256,
            &header(json!("RS256"), rsa_kid),
            &payload,
        )
        .unwrap();
    assert_accepted(&env, "RS256 via mint_raw", &control).await;

    for alg in ["none", "None", "NONE", "nOnE"] {
        let h = header(json!(alg), rsa_kid);
        let unsigned = format!("{}.{}", b64(h.as_bytes()), b64(payload.as_bytes()));
        cases.push((
            format!("alg {alg:?}, empty signature"),
            format!("{unsigned}."),
        ));
        // A real RSA signature over this exact input: a verifier that took the algorithm from
        // the key instead of refusing "none" would accept it.
        cases.push((
            format!("alg {alg:?}, RS256 signature over the input"),
            issuer.mint_raw(SigningAlg::Rs256, &h, &payload).unwrap(),
        ));
    }
    // alg none without kid and typ.
    let bare = b64(br#"{"alg":"none"}"#);
    cases.push((
        "bare alg none, empty signature".into(),
        format!("{bare}.{}.", b64(payload.as_bytes())),
    ));

    // Unknown, disallowed or mistyped algorithm names, otherwise correctly RS256-signed.
    for alg in [
        json!("RS1"),
        json!("rs256"),
        json!("Rs256"),
        json!("RS256 "),
        json!(" RS256"),
        json!("RS 256"),
        json!("HS1024"),
        json!("ES256K"),
        json!("EdDSA"),
        json!("RSA-OAEP"),
        json!("dir"),
        json!(""),
        json!(null),
        json!(256),
        json!(["RS256"]),
        json!({"name": "RS256"}),
    ] {
        let h = header(alg.clone(), rsa_kid);
        cases.push((
            format!("alg {alg}"),
            issuer.mint_raw(SigningAlg::Rs256, &h, &payload).unwrap(),
        ));
    }
    let no_alg = json!({"typ": "JWT", "kid": rsa_kid}).to_string();
    cases.push((
        "no alg".into(),
        issuer
            .mint_raw(SigningAlg::Rs256, &no_alg, &payload)
            .unwrap(),
    ));

    // Key confusion: HMAC keyed with the issuer's *public* key material, in every form an
    // attacker could guess a lenient verifier would use as the "secret".
    let rsa = issuer.jwk("RSA").unwrap();
    let (pkcs1, spki, pem) = rsa_public_key_encodings(&rsa);
    // The encodings really are the issuer's key: they verify the control token.
    let [ch, cp, cs] = parts(&control);
    let input = format!("{ch}.{cp}");
    for (what, key) in [
        (
            "PKCS#1 DER",
            jsonwebtoken::DecodingKey::from_rsa_der(&pkcs1),
        ),
        (
            "SPKI PEM",
            jsonwebtoken::DecodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
        ),
    ] {
        assert!(
            jsonwebtoken::crypto::verify(
                &cs,
                input.as_bytes(),
                &key,
                jsonwebtoken::Algorithm::RS256
            )
            .unwrap(),
            "{what} encoding of the issuer key is wrong"
        );
    }
    let secrets: Vec<(&str, Vec<u8>)> = vec![
        ("RSA JWK JSON text", rsa.to_string().into_bytes()),
        ("JWKS JSON text", issuer.jwks().to_string().into_bytes()),
        ("raw modulus bytes", decode(rsa["n"].as_str().unwrap())),
        (
            "base64url modulus text",
            rsa["n"].as_str().unwrap().as_bytes().to_vec(),
        ),
        ("PKCS#1 DER", pkcs1),
        ("SPKI DER", spki),
        ("SPKI PEM", pem.clone().into_bytes()),
        (
            "SPKI PEM without newline",
            pem.trim_end().as_bytes().to_vec(),
        ),
    ];
    for (alg, algorithm) in [
        ("HS256", aws_lc_rs::hmac::HMAC_SHA256),
        ("HS384", aws_lc_rs::hmac::HMAC_SHA384),
        ("HS512", aws_lc_rs::hmac::HMAC_SHA512),
    ] {
        for (what, secret) in &secrets {
            cases.push((
                format!("{alg} keyed with the {what}"),
                hmac_token(algorithm, &header(json!(alg), rsa_kid), &payload, secret),
            ));
        }
        // Without kid, so that a verifier would have to pick "the" key itself.
        let no_kid = json!({"alg": alg, "typ": "JWT"}).to_string();
        cases.push((
            format!("{alg} without kid keyed with the SPKI PEM"),
            hmac_token(algorithm, &no_kid, &payload, pem.as_bytes()),
        ));
    }
    // The EC key's public point (SEC1 uncompressed) with the EC kid.
    let ec = issuer.jwk("EC").unwrap();
    let point = [
        &[0x04u8][..],
        &decode(ec["x"].as_str().unwrap()),
        &decode(ec["y"].as_str().unwrap()),
    ]
    .concat();
    cases.push((
        "HS256 keyed with the EC point".into(),
        hmac_token(
            aws_lc_rs::hmac::HMAC_SHA256,
            &header(json!("HS256"), ec_kid),
            &payload,
            &point,
        ),
    ));
    cases.push((
        "HS256 keyed with the EC JWK JSON text".into(),
        hmac_token(
            aws_lc_rs::hmac::HMAC_SHA256,
            &header(json!("HS256"), ec_kid),
            &payload,
            ec.to_string().as_bytes(),
        ),
    ));

    assert_all_rejected(&env, &cases).await;
    assert_accepted(&env, "RS256 via mint_raw, after the attacks", &control).await;
    assert_eq!(env.upstream.count(), 2);
}

// ---------------------------------------------------------------------------------------------
// 2. Algorithm / key mismatch
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn algorithm_key_mismatches_get_401() {
    let env = TestEnv::start().await;
    let issuer = &env.issuer;
    let rsa_kid = issuer.kid(SigningAlg::Rs256);
    let ec_kid = issuer.kid(SigningAlg::Es256);
    let claims = env.claims("alice");
    let payload = claims.to_string();

    // Controls: each key with its own algorithm and kid.
    for (name, key, alg, kid) in [
        (
            "RS256 with the RSA kid",
            SigningAlg::Rs256,
            "RS256",
            rsa_kid,
        ),
        ("ES256 with the EC kid", SigningAlg::Es256, "ES256", ec_kid),
    ] {
        let token = issuer
            .mint_raw(key, &header(json!(alg), kid), &payload)
            .unwrap();
        assert_accepted(&env, name, &token).await;
    }

    let mut cases = Cases::new();
    for (name, key, alg, kid) in [
        // An RSA signature presented for the EC key, and an EC one claiming RS256.
        (
            "RS256 header, EC kid, RSA signature",
            SigningAlg::Rs256,
            "RS256",
            ec_kid,
        ),
        (
            "RS256 header, EC kid, EC signature",
            SigningAlg::Es256,
            "RS256",
            ec_kid,
        ),
        (
            "ES256 header, RSA kid, EC signature",
            SigningAlg::Es256,
            "ES256",
            rsa_kid,
        ),
        // The RSA JWK pins "alg": "RS256": no other RSA algorithm may use it. (The dev issuer
        // only produces PKCS#1 v1.5 signatures, so the PS256 case is refused by the allow-list
        // and the pin before its signature would fail anyway.)
        (
            "PS256 header, RS256-pinned RSA kid",
            SigningAlg::Rs256,
            "PS256",
            rsa_kid,
        ),
        (
            "RS384 header, RS256-pinned RSA kid",
            SigningAlg::Rs256,
            "RS384",
            rsa_kid,
        ),
        (
            "RS512 header, RS256-pinned RSA kid",
            SigningAlg::Rs256,
            "RS512",
            rsa_kid,
        ),
        (
            "ES384 header, P-256 EC kid",
            SigningAlg::Es256,
            "ES384",
            ec_kid,
        ),
        ("EdDSA header, EC kid", SigningAlg::Es256, "EdDSA", ec_kid),
    ] {
        cases.push((
            name.to_string(),
            issuer
                .mint_raw(key, &header(json!(alg), kid), &payload)
                .unwrap(),
        ));
    }
    // No kid: with two published keys the choice would be ambiguous.
    for (key, alg) in [(SigningAlg::Rs256, "RS256"), (SigningAlg::Es256, "ES256")] {
        let no_kid = json!({"alg": alg, "typ": "JWT"}).to_string();
        cases.push((
            format!("{alg} without kid, two keys published"),
            issuer.mint_raw(key, &no_kid, &payload).unwrap(),
        ));
    }
    // The kid of one key, the correct signature of the other.
    let swapped = json!({"alg": "RS256", "typ": "JWT", "kid": ec_kid}).to_string();
    cases.push((
        "RS256 RSA-signed token relabelled with the EC kid".into(),
        issuer
            .mint_raw(SigningAlg::Rs256, &swapped, &payload)
            .unwrap(),
    ));

    assert_all_rejected(&env, &cases).await;
    assert_eq!(env.upstream.count(), 2);
}

// ---------------------------------------------------------------------------------------------
// 3. Key-location headers
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_location_headers_are_ignored() {
    let env = TestEnv::start().await;
    let victim = &env.issuer;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let attacker_address = listener.local_addr().unwrap();
    let attacker_url = format!("http://{attacker_address}/");
    let attacker = Arc::new(DevIssuer::generate(attacker_url.clone()).unwrap());
    let attacker_task = tokio::spawn(serve_issuer(attacker.clone(), listener));

    let claims = env.claims("alice");
    let jku = attacker.jwks_uri();
    let x5u = format!("{attacker_url}cert.pem");
    // Not a real certificate: the gateway must not even look.
    let x5c = json!([STANDARD.encode(b"not a certificate, never parsed")]);
    let attacker_rsa = attacker.jwk("RSA").unwrap();
    let attacker_ec = attacker.jwk("EC").unwrap();
    let a_rsa_kid = attacker.kid(SigningAlg::Rs256);
    let a_ec_kid = attacker.kid(SigningAlg::Es256);
    let v_rsa_kid = victim.kid(SigningAlg::Rs256);

    // Control: a token the victim signed is still accepted when it carries all four headers
    // pointing at the attacker; they are simply ignored.
    let control_header = json!({
        "alg": "RS256", "typ": "JWT", "kid": v_rsa_kid,
        "jku": jku, "x5u": x5u, "jwk": attacker_rsa, "x5c": x5c,
    });
    let control = victim
        .mint_with_header(SigningAlg::Rs256, &control_header, &claims)
        .unwrap();
    assert_accepted(&env, "victim-signed with attacker key locations", &control).await;

    let mut cases = Cases::new();
    let mut attack = |name: &str, key: SigningAlg, header: Value, claims: &Value| {
        cases.push((
            name.to_string(),
            attacker.mint_with_header(key, &header, claims).unwrap(),
        ));
    };
    attack(
        "attacker RSA key, jku + x5u + jwk + x5c, attacker kid",
        SigningAlg::Rs256,
        json!({"alg": "RS256", "typ": "JWT", "kid": a_rsa_kid,
               "jku": jku, "x5u": x5u, "jwk": attacker_rsa, "x5c": x5c}),
        &claims,
    );
    attack(
        "attacker RSA key, jku only",
        SigningAlg::Rs256,
        json!({"alg": "RS256", "typ": "JWT", "kid": a_rsa_kid, "jku": jku}),
        &claims,
    );
    attack(
        "attacker RSA key, x5u only",
        SigningAlg::Rs256,
        json!({"alg": "RS256", "typ": "JWT", "kid": a_rsa_kid, "x5u": x5u}),
        &claims,
    );
    attack(
        "attacker RSA key, embedded jwk only",
        SigningAlg::Rs256,
        json!({"alg": "RS256", "typ": "JWT", "kid": a_rsa_kid, "jwk": attacker_rsa}),
        &claims,
    );
    attack(
        "attacker RSA key, x5c only",
        SigningAlg::Rs256,
        json!({"alg": "RS256", "typ": "JWT", "kid": a_rsa_kid, "x5c": x5c}),
        &claims,
    );
    attack(
        "attacker RSA key, embedded jwk, no kid",
        SigningAlg::Rs256,
        json!({"alg": "RS256", "typ": "JWT", "jwk": attacker_rsa}),
        &claims,
    );
    attack(
        "attacker EC key, jku + jwk, attacker kid",
        SigningAlg::Es256,
        json!({"alg": "ES256", "typ": "JWT", "kid": a_ec_kid, "jku": jku, "jwk": attacker_ec}),
        &claims,
    );
    // The victim's own kid, so that the key lookup succeeds; only the embedded key would
    // verify the signature.
    attack(
        "victim kid, attacker signature, embedded attacker jwk",
        SigningAlg::Rs256,
        json!({"alg": "RS256", "typ": "JWT", "kid": v_rsa_kid, "jwk": attacker_rsa}),
        &claims,
    );
    attack(
        "victim kid, attacker signature, jku",
        SigningAlg::Rs256,
        json!({"alg": "RS256", "typ": "JWT", "kid": v_rsa_kid, "jku": jku}),
        &claims,
    );
    // The attacker is a complete, reachable issuer, just not a trusted one.
    let mut own_iss = claims.clone();
    own_iss["iss"] = json!(attacker_url);
    attack(
        "attacker as issuer, jku to its own JWKS",
        SigningAlg::Rs256,
        json!({"alg": "RS256", "typ": "JWT", "kid": a_rsa_kid, "jku": jku}),
        &own_iss,
    );

    assert_all_rejected(&env, &cases).await;
    assert_eq!(
        attacker.jwks_fetches(),
        0,
        "the gateway fetched the attacker's JWKS"
    );
    // The counter is live: fetching the attacker's JWKS ourselves does count.
    let fetched = raw_exchange(
        attacker_address,
        b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: attacker\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(fetched.status, 200);
    assert_eq!(attacker.jwks_fetches(), 1);
    assert_eq!(env.upstream.count(), 1);
    attacker_task.abort();
}

// ---------------------------------------------------------------------------------------------
// 4. crit
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critical_header_extensions_get_401() {
    let env = TestEnv::start().await;
    let kid = env.issuer.kid(SigningAlg::Rs256);
    let claims = env.claims("alice");
    let base = json!({"alg": "RS256", "typ": "JWT", "kid": kid});
    let with = |extra: Value| {
        let mut header = base.clone();
        for (name, value) in extra.as_object().unwrap() {
            header[name] = value.clone();
        }
        env.issuer
            .mint_with_header(SigningAlg::Rs256, &header, &claims)
            .unwrap()
    };

    // Control: the same header without crit, and with an unknown non-critical member.
    assert_accepted(&env, "no crit", &with(json!({}))).await;
    assert_accepted(
        &env,
        "unknown non-critical member",
        &with(json!({"urn:x": 1})),
    )
    .await;

    let cases: Cases = [
        ("crit [urn:x]", json!({"crit": ["urn:x"], "urn:x": true})),
        (
            "crit [urn:x] without the member",
            json!({"crit": ["urn:x"]}),
        ),
        (
            "crit [exp] with exp header",
            json!({"crit": ["exp"], "exp": now() + 3600}),
        ),
        ("crit []", json!({"crit": []})),
        (
            "crit [b64] (RFC 7797)",
            json!({"crit": ["b64"], "b64": false}),
        ),
        ("crit [kid]", json!({"crit": ["kid"]})),
        ("crit as a string", json!({"crit": "urn:x", "urn:x": true})),
        ("crit null", json!({"crit": null})),
    ]
    .into_iter()
    .map(|(name, extra)| (name.to_string(), with(extra)))
    .collect();
    assert_all_rejected(&env, &cases).await;
    assert_eq!(env.upstream.count(), 2);
}

// ---------------------------------------------------------------------------------------------
// 5. Duplicate member names
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_member_names_get_401() {
    let env = TestEnv::start().await;
    let kid = env.issuer.kid(SigningAlg::Rs256);
    let claims = env.claims("alice");
    let roles = "https://portcullis.dev/roles";
    let sign = |header: &str, payload: &str| {
        env.issuer
            .mint_raw(SigningAlg::Rs256, header, payload)
            .unwrap()
    };
    let good_header = format!(r#"{{"alg":"RS256","typ":"JWT","kid":"{kid}"}}"#);
    let no_sub = members(&without(&claims, "sub"));
    let no_roles = members(&without(&claims, roles));
    let no_exp = members(&without(&claims, "exp"));
    let no_iss = members(&without(&claims, "iss"));
    let all = members(&claims);

    // Controls: the same hand-written texts without the duplicates.
    assert_accepted(
        &env,
        "hand-written header",
        &sign(&good_header, &claims.to_string()),
    )
    .await;
    assert_accepted(
        &env,
        "sub spliced last",
        &sign(&good_header, &format!(r#"{{{no_sub},"sub":"alice"}}"#)),
    )
    .await;
    assert_accepted(
        &env,
        "nested object and array claims",
        &sign(
            &good_header,
            &format!(r#"{{{all},"ctx":{{"a":1,"b":2}},"list":[{{"x":1,"y":2}}]}}"#),
        ),
    )
    .await;

    let cases: Cases = vec![
        (
            "header: alg twice (HS256 then RS256)",
            sign(
                &format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{kid}","alg":"RS256"}}"#),
                &claims.to_string(),
            ),
        ),
        (
            "header: alg twice, same value",
            sign(
                &format!(r#"{{"alg":"RS256","typ":"JWT","kid":"{kid}","alg":"RS256"}}"#),
                &claims.to_string(),
            ),
        ),
        (
            "header: kid twice (unknown, then valid)",
            sign(
                &format!(r#"{{"alg":"RS256","typ":"JWT","kid":"other","kid":"{kid}"}}"#),
                &claims.to_string(),
            ),
        ),
        (
            "header: crit, then alg twice",
            sign(
                &format!(r#"{{"alg":"none","crit":["x"],"kid":"{kid}","alg":"RS256"}}"#),
                &claims.to_string(),
            ),
        ),
        (
            "payload: sub twice (bob, then alice)",
            sign(
                &good_header,
                &format!(r#"{{"sub":"bob",{no_sub},"sub":"alice"}}"#),
            ),
        ),
        (
            "payload: sub twice, same value",
            sign(
                &good_header,
                &format!(r#"{{"sub":"alice",{no_sub},"sub":"alice"}}"#),
            ),
        ),
        (
            "payload: sub twice, one spelled with an escape",
            sign(
                &good_header,
                &format!(r#"{{"s\u0075b":"dave",{no_sub},"sub":"alice"}}"#),
            ),
        ),
        (
            "payload: roles twice (viewer, then admin)",
            sign(
                &good_header,
                &format!(r#"{{"{roles}":["viewer"],{no_roles},"{roles}":["admin"]}}"#),
            ),
        ),
        (
            "payload: exp twice (expired, then valid)",
            sign(
                &good_header,
                &format!(
                    r#"{{"exp":{},{no_exp},"exp":{}}}"#,
                    now() - 3600,
                    now() + 3600
                ),
            ),
        ),
        (
            "payload: iss twice",
            sign(
                &good_header,
                &format!(
                    r#"{{"iss":"https://evil.example.com/",{no_iss},"iss":"{}"}}"#,
                    env.issuer_url()
                ),
            ),
        ),
        (
            "payload: nested duplicate in an object",
            sign(&good_header, &format!(r#"{{{all},"ctx":{{"a":1,"a":2}}}}"#)),
        ),
        (
            "payload: nested duplicate in an array",
            sign(
                &good_header,
                &format!(r#"{{{all},"list":[{{"x":1,"x":2}}]}}"#),
            ),
        ),
        (
            "payload: deeply nested duplicate",
            sign(
                &good_header,
                &format!(r#"{{{all},"a":{{"b":[1,{{"c":{{"d":1,"d":1}}}}]}}}}"#),
            ),
        ),
    ]
    .into_iter()
    .map(|(name, token)| (name.to_string(), token))
    .collect();
    assert_all_rejected(&env, &cases).await;
    assert_eq!(env.upstream.count(), 3);
}

// ---------------------------------------------------------------------------------------------
// 6. Non-compact and non-canonical encodings
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_compact_and_non_canonical_encodings_get_401() {
    let env = TestEnv::start().await;
    let token = shaped_token(&env);
    // Control: the token every case below is derived from.
    assert_accepted(&env, "the shaped token", &token).await;

    let [h, p, s] = parts(&token);
    let (h, p, s) = (h.as_str(), p.as_str(), s.as_str());
    let mut cases = Cases::new();
    let mut case = |name: &str, token: String| cases.push((name.to_string(), token));

    // JWS JSON serializations of the very same signature.
    case(
        "flattened JWS JSON serialization",
        json!({"protected": h, "payload": p, "signature": s}).to_string(),
    );
    case(
        "flattened JWS JSON with unprotected header",
        json!({"protected": h, "header": {"kid": "x"}, "payload": p, "signature": s}).to_string(),
    );
    case(
        "general JWS JSON serialization",
        json!({"payload": p, "signatures": [{"protected": h, "signature": s}]}).to_string(),
    );
    // Wrong number of segments.
    case("two segments", join(&[h, p]));
    case("four segments", join(&[h, p, s, s]));
    case("four segments, trailing dot", format!("{token}."));
    case("leading dot", format!(".{token}"));
    case("five segments", join(&[h, p, s, s, s]));
    let jwe_header = b64(br#"{"alg":"dir","enc":"A256GCM"}"#);
    case(
        "five segments, JWE-shaped",
        join(&[&jwe_header, "", &b64(&[0; 12]), p, &b64(&[0; 16])]),
    );
    case(
        "five segments, JWE with JWS parts",
        join(&[h, "", p, s, "AAAA"]),
    );
    // Empty segments.
    case("empty header", join(&["", p, s]));
    case("empty payload", join(&[h, "", s]));
    case("empty signature", join(&[h, p, ""]));
    case("all empty", "..".to_string());
    // Padding.
    case("padded header", join(&[&padded(h), p, s]));
    case("padded payload", join(&[h, &padded(p), s]));
    case("padded signature", join(&[h, p, &padded(s)]));
    case(
        "all parts padded",
        join(&[&padded(h), &padded(p), &padded(s)]),
    );
    case("one = too many on the signature", format!("{token}="));
    // The standard base64 alphabet.
    let standard = |part: &str| part.replace('-', "+").replace('_', "/");
    case("standard alphabet signature", join(&[h, p, &standard(s)]));
    case(
        "standard alphabet, padded signature",
        join(&[h, p, &padded(&standard(s))]),
    );
    case("standard alphabet everywhere", standard(&token));
    // Whitespace inside the token (leading and trailing spaces are legitimately trimmed).
    let (s1, s2) = s.split_at(s.len() / 2);
    case("space inside the signature", format!("{h}.{p}.{s1} {s2}"));
    case("tab inside the signature", format!("{h}.{p}.{s1}\t{s2}"));
    case("space after a dot", format!("{h}. {p}.{s}"));
    case("space before a dot", format!("{h} .{p}.{s}"));
    let (p1, p2) = p.split_at(p.len() / 2);
    case("space inside the payload", format!("{h}.{p1} {p2}.{s}"));
    // Non-zero unused bits: the same bytes to a lenient decoder.
    assert_eq!(s.len(), 342, "RS256 signature of a 2048-bit key");
    case(
        "spare bits set in the signature",
        join(&[h, p, &raise_spare_bits(s)]),
    );
    // (Here the signature covers the text as sent, so it fails too; defence in depth.)
    case(
        "spare bits set in the payload",
        join(&[h, &raise_spare_bits(p), s]),
    );
    case(
        "spare bits set in the header",
        join(&[&raise_spare_bits(h), p, s]),
    );
    // Characters outside any base64 alphabet.
    case("percent-encoded dot", format!("{h}%2E{p}.{s}"));
    case("non-ASCII character", format!("{h}.{p}.{s1}é{s2}"));

    assert_all_rejected(&env, &cases).await;
    assert_accepted(&env, "the shaped token, after the attacks", &token).await;
    assert_eq!(env.upstream.count(), 2);
}

// ---------------------------------------------------------------------------------------------
// 7. Time claims of the wrong type
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_claims_of_the_wrong_type_get_401() {
    let env = TestEnv::start().await;
    let base = env.claims("alice");
    let mint = |claims: &Value| env.issuer.mint(SigningAlg::Rs256, claims).unwrap();
    let set = |name: &str, value: Value| {
        let mut claims = base.clone();
        claims[name] = value;
        mint(&claims)
    };
    let t = now();

    // Control: numeric exp, nbf and iat.
    let mut control = base.clone();
    control["nbf"] = json!(t - 60);
    assert_accepted(&env, "numeric exp, nbf and iat", &mint(&control)).await;

    let cases: Cases = vec![
        // CVE-2026-25537: a string exp far in the future that a lenient validator skips.
        (
            "exp as a far-future string",
            set("exp", json!("99999999999")),
        ),
        (
            "exp as a string of a valid time",
            set("exp", json!((t + 3600).to_string())),
        ),
        (
            "exp as a date string",
            set("exp", json!("2999-01-01T00:00:00Z")),
        ),
        ("exp null", set("exp", json!(null))),
        ("exp true", set("exp", json!(true))),
        ("exp in an array", set("exp", json!([t + 3600]))),
        (
            "exp as an object",
            set("exp", json!({"$numberLong": t + 3600})),
        ),
        ("exp missing", mint(&without(&base, "exp"))),
        ("nbf as a string", set("nbf", json!((t - 60).to_string()))),
        ("nbf null", set("nbf", json!(null))),
        ("nbf in an array", set("nbf", json!([t - 60]))),
        ("iat as a string", set("iat", json!(t.to_string()))),
        ("iat null", set("iat", json!(null))),
        ("iat false", set("iat", json!(false))),
    ]
    .into_iter()
    .map(|(name, token)| (name.to_string(), token))
    .collect();
    assert_all_rejected(&env, &cases).await;
    assert_eq!(env.upstream.count(), 1);
}

// ---------------------------------------------------------------------------------------------
// 8. Oversized tokens
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_tokens_get_401() {
    let env = TestEnv::start().await;
    // Control: exactly at the limit (8192 bytes, the configured max_bytes), otherwise valid.
    let at_limit = token_of_length(&env, 8192);
    assert_accepted(&env, "8192-byte token", &at_limit).await;
    let just_under = token_of_length(&env, 8190);
    assert_accepted(&env, "8190-byte token", &just_under).await;

    let cases: Cases = [8193, 8196, 12_000, 32_768]
        .into_iter()
        .map(|len| {
            (
                format!("correctly signed {len}-byte token"),
                token_of_length(&env, len),
            )
        })
        .collect();
    assert_all_rejected(&env, &cases).await;
    assert_eq!(env.upstream.count(), 2);
}

// ---------------------------------------------------------------------------------------------
// 9. ECDSA with r or s zero
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psychic_ecdsa_signatures_get_401() {
    let env = TestEnv::start().await;
    let valid = env
        .issuer
        .mint(SigningAlg::Es256, &env.claims("alice"))
        .unwrap();
    // Control: the genuine ES256 token.
    assert_accepted(&env, "genuine ES256 token", &valid).await;

    let [h, p, s] = parts(&valid);
    let signature = decode(&s);
    assert_eq!(signature.len(), 64);
    let (r, s_value) = signature.split_at(32);
    let zero = [0u8; 32];
    let with_signature = |bytes: &[u8]| format!("{h}.{p}.{}", b64(bytes));
    // The genuine signature DER-encoded (JOSE requires the fixed r || s form).
    let der_signature = der(0x30, &[der_uint(r), der_uint(s_value)].concat());

    let cases: Cases = vec![
        ("r = s = 0", with_signature(&[0; 64])),
        (
            "r = 0, genuine s",
            with_signature(&[&zero[..], s_value].concat()),
        ),
        ("genuine r, s = 0", with_signature(&[r, &zero[..]].concat())),
        (
            "r = s = n",
            with_signature(&[P256_ORDER, P256_ORDER].concat()),
        ),
        (
            "r = n, genuine s",
            with_signature(&[&P256_ORDER[..], s_value].concat()),
        ),
        (
            "genuine r, s = n",
            with_signature(&[r, &P256_ORDER[..]].concat()),
        ),
        ("all ones", with_signature(&[0xff; 64])),
        (
            "genuine signature, DER-encoded",
            with_signature(&der_signature),
        ),
        (
            "genuine signature truncated",
            with_signature(&signature[..63]),
        ),
        (
            "genuine signature with a byte appended",
            with_signature(&[&signature[..], &[0]].concat()),
        ),
        ("empty signature bytes", format!("{h}.{p}.")),
        ("one zero byte", with_signature(&[0])),
    ]
    .into_iter()
    .map(|(name, token)| (name.to_string(), token))
    .collect();
    assert_all_rejected(&env, &cases).await;
    assert_eq!(env.upstream.count(), 1);
}

// ---------------------------------------------------------------------------------------------
// 10. Two Authorization headers
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_authorization_headers_get_400() {
    let env = TestEnv::start().await;
    let alice = format!("Bearer {}", env.token("alice"));
    let dave = format!("Bearer {}", env.token("dave"));
    let garbage = "Bearer not-a-jwt";

    // Control: one header.
    let single = env.send("GET", TARGET, &[("Authorization", &alice)]).await;
    assert_eq!(single.status, 200, "{}", single.body);
    assert_eq!(env.upstream.count(), 1);

    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "two valid tokens of different users",
            vec![("Authorization", &alice), ("Authorization", &dave)],
        ),
        (
            "the same valid token twice",
            vec![("Authorization", &alice), ("Authorization", &alice)],
        ),
        (
            "valid, then garbage",
            vec![("Authorization", &alice), ("Authorization", garbage)],
        ),
        (
            "garbage, then valid",
            vec![("Authorization", garbage), ("Authorization", &alice)],
        ),
        (
            "valid bearer and Basic",
            vec![
                ("Authorization", &alice),
                ("Authorization", "Basic YWxpY2U6cHc="),
            ],
        ),
        (
            "names differing in case",
            vec![("authorization", &alice), ("AUTHORIZATION", &dave)],
        ),
        (
            "separated by another header",
            vec![
                ("Authorization", &alice),
                ("X-Other", "1"),
                ("Authorization", &alice),
            ],
        ),
    ];
    for (name, headers) in cases {
        let response = env.send("GET", TARGET, &headers).await;
        assert_eq!(
            response.status, 400,
            "{name}: expected 400, got {} {}",
            response.status, response.body
        );
        let body = response.json();
        assert_eq!(body["error"], "invalid_request", "{name}: {body}");
        assert!(
            body["request_id"].as_str().is_some_and(|id| !id.is_empty()),
            "{name}: {body}"
        );
        assert!(
            !response.body.contains(alice.trim_start_matches("Bearer ")),
            "{name}: token echoed"
        );
        assert_eq!(env.upstream.count(), 1, "{name}: reached the upstream");
    }

    // Two tokens folded into one header value are one malformed token: 401.
    let folded = format!("{}, {dave}", alice.trim_start_matches("Bearer "));
    assert_rejected(&env, "two tokens in one header value", &folded).await;
    assert_eq!(env.upstream.count(), 1);
}
