//! Why a request was not authenticated. Each variant maps to a 401 (a 400 for duplicate
//! `Authorization` headers) in `response::deny_response`; the descriptions are safe to show
//! to clients.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthnError {
    #[error("no bearer token")]
    MissingToken,
    #[error("more than one Authorization header")]
    DuplicateAuthorization,
    #[error("the token is longer than {0} bytes")]
    TooLarge(usize),
    #[error("the token is not a compact JWS")]
    Malformed,
    #[error("the token header is invalid")]
    InvalidHeader,
    #[error("the token payload is not a JSON object with unique member names")]
    InvalidPayload,
    #[error("the token uses an algorithm that is not allowed")]
    AlgorithmNotAllowed,
    #[error("the token has a critical header extension that is not supported")]
    UnsupportedCritical,
    #[error("the token issuer is not trusted")]
    UnknownIssuer,
    #[error("no key of the issuer matches the token")]
    UnknownKey,
    #[error("the key set of the issuer is not available")]
    KeysUnavailable,
    #[error("the token signature is invalid")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token type (typ) is not accepted")]
    WrongTokenType,
    #[error("the token audience is not accepted")]
    WrongAudience,
    #[error("the token is missing the claim {0:?}")]
    MissingClaim(String),
    #[error("the token claim {0:?} has the wrong type")]
    InvalidClaim(String),
}
