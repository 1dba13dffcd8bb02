//! Secrets kept outside portcullis.toml: named there as a file or an environment variable, read
//! when they are used (so a rotated Kubernetes Secret is picked up), never written to a log.

use std::path::PathBuf;

#[derive(Debug, Clone)]
pub enum Secret {
    File(PathBuf),
    Env(String),
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SecretError(String);

impl Secret {
    /// The value, trimmed; an error naming where it was looked for (never the value).
    pub fn read(&self) -> Result<String, SecretError> {
        let value = match self {
            Secret::File(path) => std::fs::read_to_string(path).map_err(|e| {
                SecretError(format!(
                    "cannot read the secret file {}: {e}",
                    path.display()
                ))
            })?,
            Secret::Env(name) => std::env::var(name)
                .map_err(|_| SecretError(format!("the environment variable {name} is not set")))?,
        };
        let value = value.trim();
        if value.is_empty() {
            return Err(SecretError(format!("{} is empty", self.describe())));
        }
        Ok(value.to_string())
    }

    pub fn describe(&self) -> String {
        match self {
            Secret::File(path) => format!("the secret file {}", path.display()),
            Secret::Env(name) => format!("the environment variable {name}"),
        }
    }
}
