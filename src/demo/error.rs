//! Errors of the demo helpers (development token issuer, sample tasks API).
//!
//! Kept separate from the gateway's own error types: nothing here is reachable from
//! the production request path, and the demo/test harness only needs to report setup
//! failures.

/// Failure while setting up or using the demo servers.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The development issuer could not make its keys or sign a token.
    #[error(transparent)]
    Mint(#[from] crate::dev_issuer::MintError),
    /// Socket-level failure (binding or accepting).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The demo's own configuration did not load.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The demo configuration does not fit the demo (for example an issuer that is not local).
    #[error("{0}")]
    Setup(String),
}
