//! Taking an untrusted bearer token apart, strictly (RFC 8725), and checking its registered
//! claims once the signature holds. Pure: no keys, no I/O.
//!
//! Parsers that are lenient where the JOSE specs leave room are how tokens get confused: this
//! module accepts exactly one encoding of a token. Compact serialization with three non-empty
//! parts; canonical unpadded base64url; JSON objects without duplicate member names at any
//! depth; an `alg` that is a known algorithm name (never `none`, in any case); no `crit`
//! extensions; `exp`, `nbf` and `iat` as JSON numbers. The size limit is applied before any
//! decoding.

use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Number, Value};

use super::AuthnError;

/// The JOSE header fields the gateway acts on. `jku`, `x5u`, `jwk` and `x5c` are deliberately
/// not read: keys only ever come from the issuer's configured JWKS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoseHeader {
    pub alg: Algorithm,
    pub kid: Option<String>,
    pub typ: Option<String>,
}

/// A token that is well formed; nothing about it is trusted yet.
#[derive(Debug, Clone)]
pub struct UnverifiedToken<'a> {
    pub header: JoseHeader,
    pub claims: Map<String, Value>,
    /// `header.payload` as sent: what the signature covers.
    pub signing_input: &'a str,
    /// The signature, decoded.
    pub signature: Vec<u8>,
}

impl UnverifiedToken<'_> {
    /// The `iss` claim, read only to choose which issuer's rules apply.
    pub fn issuer(&self) -> Result<&str, AuthnError> {
        match self.claims.get("iss") {
            Some(Value::String(iss)) => Ok(iss),
            Some(_) => Err(AuthnError::InvalidClaim("iss".to_string())),
            None => Err(AuthnError::MissingClaim("iss".to_string())),
        }
    }
}

/// Parses a compact JWS, rejecting every non-canonical or ambiguous form.
pub fn parse(token: &str, max_bytes: usize) -> Result<UnverifiedToken<'_>, AuthnError> {
    if token.len() > max_bytes {
        return Err(AuthnError::TooLarge(max_bytes));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthnError::Malformed);
    };
    let header_json = decode_part(header)?;
    let payload_json = decode_part(payload)?;
    let signature = decode_part(signature)?;
    let jose = jose_header(strict_object(&header_json).ok_or(AuthnError::InvalidHeader)?)?;
    let claims = strict_object(&payload_json).ok_or(AuthnError::InvalidPayload)?;
    for claim in ["exp", "nbf", "iat"] {
        if claims.get(claim).is_some_and(|v| !v.is_number()) {
            return Err(AuthnError::InvalidClaim(claim.to_string()));
        }
    }
    Ok(UnverifiedToken {
        header: jose,
        claims,
        signing_input: &token[..header.len() + 1 + payload.len()],
        signature,
    })
}

/// Decodes one part: non-empty, URL-safe alphabet, no padding, zero trailing bits.
fn decode_part(part: &str) -> Result<Vec<u8>, AuthnError> {
    if part.is_empty() {
        return Err(AuthnError::Malformed);
    }
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| AuthnError::Malformed)
}

fn jose_header(mut fields: Map<String, Value>) -> Result<JoseHeader, AuthnError> {
    if fields.contains_key("crit") {
        // No extension is understood, so any critical one must be refused (RFC 7515 §4.1.11).
        return Err(AuthnError::UnsupportedCritical);
    }
    let alg = match fields.remove("alg") {
        Some(Value::String(alg)) => {
            Algorithm::from_str(&alg).map_err(|_| AuthnError::AlgorithmNotAllowed)?
        }
        _ => return Err(AuthnError::InvalidHeader),
    };
    let mut text = |name: &str| match fields.remove(name) {
        None => Ok(None),
        Some(Value::String(value)) => Ok(Some(value)),
        Some(_) => Err(AuthnError::InvalidHeader),
    };
    Ok(JoseHeader {
        alg,
        kid: text("kid")?,
        typ: text("typ")?,
    })
}

/// Parses a JSON object, refusing duplicate member names at any depth.
fn strict_object(bytes: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice::<StrictValue>(bytes).ok()?.0 {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// A JSON value whose objects had no duplicate member names.
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("not a finite number"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            let StrictValue(value) = access.next_value()?;
            if map.insert(key, value).is_some() {
                return Err(de::Error::custom("duplicate member name"));
            }
        }
        Ok(Value::Object(map))
    }
}

/// The registered-claim rules of one issuer.
#[derive(Debug, Clone)]
pub struct ClaimRules {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub leeway_seconds: u64,
    /// Claims that must be present (besides `iss`, `aud` and `exp`, which always must).
    pub required: Vec<String>,
    /// Required `typ` header, compared as RFC 9068 §4 says (case-insensitive, with or without
    /// the `application/` prefix).
    pub token_type: Option<String>,
}

impl ClaimRules {
    /// Checks a token whose signature holds; `now` is seconds since the epoch. Returns the
    /// time (seconds since the epoch, leeway included) after which the token is expired.
    pub fn check(
        &self,
        header: &JoseHeader,
        claims: &Map<String, Value>,
        now: u64,
    ) -> Result<f64, AuthnError> {
        if let Some(expected) = &self.token_type {
            let typ = header.typ.as_deref().unwrap_or_default();
            if !media_type_name(typ).eq_ignore_ascii_case(media_type_name(expected)) {
                return Err(AuthnError::WrongTokenType);
            }
        }
        if claims.get("iss").and_then(Value::as_str) != Some(self.issuer.as_str()) {
            return Err(AuthnError::UnknownIssuer);
        }
        self.check_audience(claims.get("aud"))?;
        let leeway = self.leeway_seconds as f64;
        let now = now as f64;
        let exp = number(claims, "exp")?.ok_or(AuthnError::MissingClaim("exp".to_string()))?;
        if now > exp + leeway {
            return Err(AuthnError::Expired);
        }
        if number(claims, "nbf")?.is_some_and(|nbf| now + leeway < nbf) {
            return Err(AuthnError::NotYetValid);
        }
        let absent = |claim: &&String| claims.get(*claim).is_none_or(Value::is_null);
        if let Some(missing) = self.required.iter().find(absent) {
            return Err(AuthnError::MissingClaim(missing.clone()));
        }
        Ok(exp + leeway)
    }

    /// `aud` is a string or an array of strings; one of them must be accepted.
    fn check_audience(&self, aud: Option<&Value>) -> Result<(), AuthnError> {
        let accepted = |a: &str| self.audiences.iter().any(|ok| ok == a);
        let matched = match aud {
            None => return Err(AuthnError::MissingClaim("aud".to_string())),
            Some(Value::String(a)) => accepted(a),
            Some(Value::Array(items)) => {
                let mut matched = false;
                for item in items {
                    let a = item
                        .as_str()
                        .ok_or(AuthnError::InvalidClaim("aud".to_string()))?;
                    matched |= accepted(a);
                }
                matched
            }
            Some(_) => return Err(AuthnError::InvalidClaim("aud".to_string())),
        };
        if matched {
            Ok(())
        } else {
            Err(AuthnError::WrongAudience)
        }
    }
}

/// A `typ` without the optional `application/` prefix (RFC 7515 §4.1.9).
fn media_type_name(typ: &str) -> &str {
    match typ.get(..12) {
        Some(prefix) if prefix.eq_ignore_ascii_case("application/") => &typ[12..],
        _ => typ,
    }
}

fn number(claims: &Map<String, Value>, claim: &str) -> Result<Option<f64>, AuthnError> {
    match claims.get(claim) {
        None => Ok(None),
        Some(value) => value
            .as_f64()
            .map(Some)
            .ok_or(AuthnError::InvalidClaim(claim.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn token(header: &str, payload: &str) -> String {
        format!(
            "{}.{}.{}",
            b64(header.as_bytes()),
            b64(payload.as_bytes()),
            b64(b"sig")
        )
    }

    const HEADER: &str = r#"{"alg":"RS256","kid":"k1","typ":"at+jwt"}"#;
    const PAYLOAD: &str = r#"{"iss":"https://i/","sub":"a","exp":100}"#;

    #[test]
    fn well_formed_tokens_parse() {
        let text = token(HEADER, PAYLOAD);
        let parsed = parse(&text, 8192).unwrap();
        assert_eq!(
            parsed.header,
            JoseHeader {
                alg: Algorithm::RS256,
                kid: Some("k1".into()),
                typ: Some("at+jwt".into())
            }
        );
        assert_eq!(parsed.issuer(), Ok("https://i/"));
        assert_eq!(parsed.signature, b"sig");
        assert!(text.starts_with(parsed.signing_input));
        assert_eq!(parsed.signing_input.matches('.').count(), 1);
    }

    #[test]
    fn size_is_limited_before_decoding() {
        let text = token(HEADER, PAYLOAD);
        assert_eq!(parse(&text, text.len()).map(|_| ()), Ok(()));
        assert_eq!(
            parse(&text, text.len() - 1).map(|_| ()),
            Err(AuthnError::TooLarge(text.len() - 1))
        );
        assert_eq!(
            parse(&"x".repeat(9000), 8192).map(|_| ()),
            Err(AuthnError::TooLarge(8192))
        );
    }

    #[test]
    fn non_compact_and_non_canonical_encodings_are_rejected() {
        let (h, p, s) = (b64(HEADER.as_bytes()), b64(PAYLOAD.as_bytes()), b64(b"sig"));
        let padded = format!("{}=", b64(b"si"));
        // "sig" encodes to "c2ln"; "c2lm" has the same leading bits, "c2ln=" is padded.
        let candidates = [
            format!("{h}.{p}"),
            format!("{h}.{p}.{s}.{s}"),
            format!("{h}.{p}.{s}.{s}.{s}"),
            format!("{h}..{s}"),
            format!(".{p}.{s}"),
            format!("{h}.{p}."),
            format!("{h}.{p}.{padded}"),
            format!("{h}.{p}.c2ln="),
            format!("{h}.{p}.c2+n"),
            format!("{h}.{p}.c2/n"),
            format!("{h}.{p}.c2l"),
            format!("{h}.{p}.QR"),
            format!("{h} .{p}.{s}"),
            format!("{{\"alg\":\"RS256\"}}.{p}.{s}"),
        ];
        for candidate in candidates {
            assert!(parse(&candidate, 8192).is_err(), "{candidate}");
        }
        // "QQ" is the canonical encoding of "A"; "QR" only differs in its discarded bits.
        assert!(decode_part("QQ").is_ok());
    }

    #[test]
    fn alg_none_in_any_case_and_unknown_algorithms_are_rejected() {
        for alg in ["none", "None", "NONE", "nOnE", "RS1", "rs256", ""] {
            let header = format!(r#"{{"alg":"{alg}"}}"#);
            assert_eq!(
                parse(&token(&header, PAYLOAD), 8192).map(|_| ()),
                Err(AuthnError::AlgorithmNotAllowed),
                "{alg}"
            );
        }
        for header in [r#"{"kid":"k"}"#, r#"{"alg":null}"#, r#"{"alg":256}"#, "[]"] {
            assert_eq!(
                parse(&token(header, PAYLOAD), 8192).map(|_| ()),
                Err(AuthnError::InvalidHeader),
                "{header}"
            );
        }
    }

    #[test]
    fn crit_and_mistyped_header_fields_are_rejected() {
        for (header, error) in [
            (
                r#"{"alg":"RS256","crit":["exp"],"exp":1}"#,
                AuthnError::UnsupportedCritical,
            ),
            (
                r#"{"alg":"RS256","crit":[]}"#,
                AuthnError::UnsupportedCritical,
            ),
            (r#"{"alg":"RS256","kid":7}"#, AuthnError::InvalidHeader),
            (
                r#"{"alg":"RS256","typ":["JWT"]}"#,
                AuthnError::InvalidHeader,
            ),
        ] {
            assert_eq!(
                parse(&token(header, PAYLOAD), 8192).map(|_| ()),
                Err(error),
                "{header}"
            );
        }
    }

    #[test]
    fn key_location_headers_are_ignored() {
        let header = r#"{"alg":"ES256","jku":"https://evil/jwks","x5u":"https://evil/x",
            "jwk":{"kty":"EC"},"x5c":["MIIB"]}"#;
        let text = token(header, PAYLOAD);
        let parsed = parse(&text, 8192).unwrap();
        assert_eq!(parsed.header.alg, Algorithm::ES256);
        assert_eq!(parsed.header.kid, None);
    }

    #[test]
    fn duplicate_member_names_are_rejected_at_any_depth() {
        let dup_header = r#"{"alg":"RS256","alg":"ES256"}"#;
        assert_eq!(
            parse(&token(dup_header, PAYLOAD), 8192).map(|_| ()),
            Err(AuthnError::InvalidHeader)
        );
        for payload in [
            r#"{"iss":"https://i/","sub":"a","sub":"admin","exp":1}"#,
            r#"{"iss":"https://i/","exp":1,"ctx":{"role":"a","role":"b"}}"#,
            r#"{"iss":"https://i/","exp":1,"list":[{"x":1,"x":2}]}"#,
        ] {
            assert_eq!(
                parse(&token(HEADER, payload), 8192).map(|_| ()),
                Err(AuthnError::InvalidPayload),
                "{payload}"
            );
        }
        assert_eq!(
            parse(&token(HEADER, "[1]"), 8192).map(|_| ()),
            Err(AuthnError::InvalidPayload)
        );
    }

    #[test]
    fn time_claims_must_be_numbers() {
        for (payload, claim) in [
            (r#"{"iss":"https://i/","exp":"99999999999"}"#, "exp"),
            (r#"{"iss":"https://i/","exp":100,"nbf":"0"}"#, "nbf"),
            (r#"{"iss":"https://i/","exp":100,"iat":[1]}"#, "iat"),
            (r#"{"iss":"https://i/","exp":null}"#, "exp"),
        ] {
            assert_eq!(
                parse(&token(HEADER, payload), 8192).map(|_| ()),
                Err(AuthnError::InvalidClaim(claim.to_string())),
                "{payload}"
            );
        }
        let float = r#"{"iss":"https://i/","exp":100.5,"iat":1.5e1}"#;
        assert!(parse(&token(HEADER, float), 8192).is_ok());
    }

    fn rules() -> ClaimRules {
        ClaimRules {
            issuer: "https://i/".into(),
            audiences: vec!["api".into(), "other".into()],
            leeway_seconds: 10,
            required: vec!["sub".into()],
            token_type: None,
        }
    }

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    fn header(typ: Option<&str>) -> JoseHeader {
        JoseHeader {
            alg: Algorithm::RS256,
            kid: None,
            typ: typ.map(String::from),
        }
    }

    #[test]
    fn registered_claims_are_checked() {
        let ok = json!({"iss": "https://i/", "aud": "api", "exp": 1000, "sub": "a"});
        assert_eq!(
            rules().check(&header(None), &claims(ok.clone()), 1000),
            Ok(1010.0)
        );
        assert_eq!(
            rules().check(&header(None), &claims(ok.clone()), 1010),
            Ok(1010.0)
        );
        assert_eq!(
            rules().check(&header(None), &claims(ok), 1011),
            Err(AuthnError::Expired)
        );
        let cases = [
            (
                json!({"iss": "https://i", "aud": "api", "exp": 2000, "sub": "a"}),
                AuthnError::UnknownIssuer,
            ),
            (
                json!({"iss": "https://i/", "exp": 2000, "sub": "a"}),
                AuthnError::MissingClaim("aud".into()),
            ),
            (
                json!({"iss": "https://i/", "aud": "web", "exp": 2000, "sub": "a"}),
                AuthnError::WrongAudience,
            ),
            (
                json!({"iss": "https://i/", "aud": ["web", 3], "exp": 2000, "sub": "a"}),
                AuthnError::InvalidClaim("aud".into()),
            ),
            (
                json!({"iss": "https://i/", "aud": {"api": true}, "exp": 2000, "sub": "a"}),
                AuthnError::InvalidClaim("aud".into()),
            ),
            (
                json!({"iss": "https://i/", "aud": "api", "sub": "a"}),
                AuthnError::MissingClaim("exp".into()),
            ),
            (
                json!({"iss": "https://i/", "aud": "api", "exp": 2000, "nbf": 1011, "sub": "a"}),
                AuthnError::NotYetValid,
            ),
            (
                json!({"iss": "https://i/", "aud": "api", "exp": 2000}),
                AuthnError::MissingClaim("sub".into()),
            ),
        ];
        for (claims_json, error) in cases {
            assert_eq!(
                rules().check(&header(None), &claims(claims_json.clone()), 1000),
                Err(error),
                "{claims_json}"
            );
        }
        let any_of = json!({"iss": "https://i/", "aud": ["web", "other"], "exp": 2000, "nbf": 1010, "sub": "a"});
        assert!(rules().check(&header(None), &claims(any_of), 1000).is_ok());
    }

    #[test]
    fn token_type_follows_rfc_9068() {
        let rules = ClaimRules {
            token_type: Some("at+jwt".into()),
            ..rules()
        };
        let ok = claims(json!({"iss": "https://i/", "aud": "api", "exp": 2000, "sub": "a"}));
        for typ in [
            "at+jwt",
            "AT+JWT",
            "application/at+jwt",
            "Application/At+Jwt",
        ] {
            assert!(rules.check(&header(Some(typ)), &ok, 1000).is_ok(), "{typ}");
        }
        for typ in [None, Some("JWT"), Some("application/jwt"), Some("at+jwt2")] {
            assert_eq!(
                rules.check(&header(typ), &ok, 1000),
                Err(AuthnError::WrongTokenType),
                "{typ:?}"
            );
        }
    }
}
