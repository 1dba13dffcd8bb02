//! Policy bundles for a fleet: `routes.toml` and `policies/` packed into one versioned
//! artifact, pushed to an OCI registry, signed, and pulled by every gateway.
//!
//! The parts: `format` (the bundle: pack, unpack, pure), `signature` (Ed25519 over the
//! manifest digest, pure), `registry` (push and pull with oci-client), `puller` (poll, verify
//! before reading, activate like a reload, keep the last good one).

pub mod format;
pub mod puller;
pub mod registry;
mod settings;
pub mod signature;

pub use settings::{BundleSettings, RegistryCredentials};

/// The media types of Portcullis' OCI artifacts (their own, as OPA's and Aserto's bundles).
pub const ARTIFACT_TYPE: &str = "application/vnd.portcullis.bundle.v1";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.portcullis.bundle.config.v1+json";
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.portcullis.bundle.layer.v1+json";
pub const SIGNATURE_MEDIA_TYPE: &str = "application/vnd.portcullis.bundle.signature.v1+json";

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{0}")]
    Format(String),
    #[error("registry: {0}")]
    Registry(String),
    #[error("signature: {0}")]
    Signature(String),
    #[error("{0}")]
    Downgrade(String),
    #[error("{path}: {reason}")]
    Io { path: String, reason: String },
}
