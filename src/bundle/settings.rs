//! What `[bundle]` compiles to (`config::bundle` checks it).

use std::path::PathBuf;
use std::time::Duration;

use super::signature::TrustedKey;

#[derive(Debug, Clone)]
pub struct BundleSettings {
    pub reference: String,
    pub poll: Duration,
    pub trusted: Vec<TrustedKey>,
    pub cache_dir: PathBuf,
    pub plain_http: bool,
    pub credentials: RegistryCredentials,
}

#[derive(Debug, Clone)]
pub enum RegistryCredentials {
    Anonymous,
    DockerConfig(PathBuf),
    Env { username: String, password: String },
}
