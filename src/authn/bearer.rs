//! Bearer token extraction from the `Authorization` header (RFC 6750 §2.1).

use super::AuthnError;

/// Returns the token from the `Authorization` header values of a request. A missing header or
/// a scheme other than `Bearer` means "no token"; two headers are refused outright, since the
/// gateway and the application could pick different ones.
pub fn bearer_token<'a>(values: &[&'a [u8]]) -> Result<&'a str, AuthnError> {
    let value = match values {
        [] => return Err(AuthnError::MissingToken),
        [one] => *one,
        _ => return Err(AuthnError::DuplicateAuthorization),
    };
    let value = std::str::from_utf8(value).map_err(|_| AuthnError::Malformed)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthnError::MissingToken)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthnError::MissingToken);
    }
    let token = token.trim_matches(' ');
    if token.is_empty() {
        return Err(AuthnError::Malformed);
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_bearer_tokens() {
        assert_eq!(bearer_token(&[b"Bearer abc.def.ghi"]), Ok("abc.def.ghi"));
        assert_eq!(bearer_token(&[b"bearer  abc"]), Ok("abc"));
        assert_eq!(bearer_token(&[]), Err(AuthnError::MissingToken));
        assert_eq!(
            bearer_token(&[b"Basic dXNlcjpwdw=="]),
            Err(AuthnError::MissingToken)
        );
        assert_eq!(bearer_token(&[b"Bearer"]), Err(AuthnError::MissingToken));
        assert_eq!(bearer_token(&[b"Bearer   "]), Err(AuthnError::Malformed));
        assert_eq!(
            bearer_token(&[b"Bearer a", b"Bearer b"]),
            Err(AuthnError::DuplicateAuthorization)
        );
    }
}
