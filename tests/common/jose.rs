//! Forging JOSE tokens for the attack tests (`tests/integration/token_attacks.rs`): headers,
//! base64url parts with their spare bits raised or padding added, HMAC tokens keyed with public
//! key material in every encoding an implementation might use, DER for those encodings, and
//! claims with members removed or written twice.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use serde_json::{json, Value};

use super::b64;

/// The base64url alphabet, in value order.
pub const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Order of the P-256 group.
pub const P256_ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// `{"alg", "typ": "JWT", "kid"}` as JSON text; `alg` may be any JSON value.
pub fn header(alg: Value, kid: &str) -> String {
    json!({ "alg": alg, "typ": "JWT", "kid": kid }).to_string()
}

pub fn decode(part: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .unwrap()
}

pub fn parts(token: &str) -> [String; 3] {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "{token}");
    [parts[0].into(), parts[1].into(), parts[2].into()]
}

pub fn join(parts: &[&str]) -> String {
    parts.join(".")
}

/// `header.payload` as JSON text, encoded, followed by a MAC over it keyed with `secret`.
pub fn hmac_token(
    algorithm: aws_lc_rs::hmac::Algorithm,
    header: &str,
    payload: &str,
    secret: &[u8],
) -> String {
    let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    let key = aws_lc_rs::hmac::Key::new(algorithm, secret);
    let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", b64(tag.as_ref()))
}

/// A DER element.
pub fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    if content.len() < 0x80 {
        out.push(content.len() as u8);
    } else {
        let len: Vec<u8> = content
            .len()
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | len.len() as u8);
        out.extend(len);
    }
    out.extend_from_slice(content);
    out
}

/// A DER INTEGER holding the unsigned big-endian `bytes`.
pub fn der_uint(bytes: &[u8]) -> Vec<u8> {
    let significant: Vec<u8> = bytes.iter().copied().skip_while(|b| *b == 0).collect();
    let mut content = Vec::new();
    if significant.first().is_none_or(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend(significant);
    der(0x02, &content)
}

/// The PKCS#1 `RSAPublicKey` DER, the X.509 `SubjectPublicKeyInfo` DER and its PEM text, of an
/// RSA JWK.
pub fn rsa_public_key_encodings(jwk: &Value) -> (Vec<u8>, Vec<u8>, String) {
    let n = decode(jwk["n"].as_str().unwrap());
    let e = decode(jwk["e"].as_str().unwrap());
    let pkcs1 = der(0x30, &[der_uint(&n), der_uint(&e)].concat());
    // rsaEncryption (1.2.840.113549.1.1.1), NULL parameters.
    let algorithm = der(
        0x30,
        &[
            der(
                0x06,
                &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01],
            ),
            der(0x05, &[]),
        ]
        .concat(),
    );
    let bit_string = der(0x03, &[&[0u8][..], &pkcs1].concat());
    let spki = der(0x30, &[algorithm, bit_string].concat());
    let body = STANDARD.encode(&spki);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        lines.join("\n")
    );
    (pkcs1, spki, pem)
}

/// Replaces the last character of a base64url part so that its unused low bits are non-zero:
/// the same bytes to a lenient decoder, a different string to a strict one.
pub fn raise_spare_bits(part: &str) -> String {
    assert!(
        matches!(part.len() % 4, 2 | 3),
        "a part of {} chars has no spare bits",
        part.len()
    );
    let last = *part.as_bytes().last().unwrap();
    let value = ALPHABET.iter().position(|c| *c == last).unwrap();
    let raised = ALPHABET[value | 1];
    assert_ne!(raised, last, "canonical last char must have spare bits 0");
    let altered = format!("{}{}", &part[..part.len() - 1], raised as char);
    let lenient = GeneralPurpose::new(
        &alphabet::URL_SAFE,
        GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::RequireNone),
    );
    assert_eq!(
        lenient.decode(&altered).unwrap(),
        decode(part),
        "the altered part must decode to the same bytes leniently"
    );
    assert_ne!(altered, part);
    altered
}

/// Adds the `=` padding a padded base64 encoding would have.
pub fn padded(part: &str) -> String {
    format!("{part}{}", "=".repeat((4 - part.len() % 4) % 4))
}

/// The JSON text of `claims` without its braces, for splicing members around it.
pub fn members(claims: &Value) -> String {
    let text = claims.to_string();
    text[1..text.len() - 1].to_string()
}

/// `claims` without `name`.
pub fn without(claims: &Value, name: &str) -> Value {
    let mut claims = claims.clone();
    claims.as_object_mut().unwrap().remove(name);
    claims
}
