//! `[bundle]` of portcullis.toml → `BundleSettings`: where the signed bundle comes from, the
//! keys that may sign it, and where it is kept.

use std::path::Path;
use std::time::Duration;

use super::raw::RawBundle;
use super::{ConfigProblem, SourceFile};
use crate::bundle::signature::TrustedKey;
use crate::bundle::{BundleSettings, RegistryCredentials};

pub fn compile_bundle(
    raw: &RawBundle,
    file: &SourceFile,
    base: &Path,
) -> Result<BundleSettings, Vec<ConfigProblem>> {
    let mut problems = Vec::new();
    let reference = raw.reference.get_ref();
    if reference.parse::<oci_client::Reference>().is_err() {
        problems.push(file.problem(
            Some(raw.reference.span()),
            format!(
                "bundle.reference {reference:?} is not an image reference like \
                 \"registry.example.com/team/policies:prod\""
            ),
        ));
    }
    let mut trusted = Vec::new();
    for key in raw.public_keys.get_ref() {
        let path = base.join(key.get_ref());
        match std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|text| TrustedKey::from_pem(&text).map_err(|e| e.to_string()))
        {
            Ok(key) => trusted.push(key),
            Err(e) => problems.push(file.problem(
                Some(key.span()),
                format!("bundle.public_keys: {}: {e}", path.display()),
            )),
        }
    }
    if raw.public_keys.get_ref().is_empty() {
        problems.push(file.problem(
            Some(raw.public_keys.span()),
            "bundle.public_keys is empty: list the Ed25519 public keys (PEM) that may sign bundles; \
             unsigned bundles are never used",
        ));
    }
    let credentials = match (&raw.docker_config, &raw.username_env, &raw.password_env) {
        (None, None, None) => RegistryCredentials::Anonymous,
        (Some(path), None, None) => RegistryCredentials::DockerConfig(base.join(path)),
        (None, Some(username), Some(password)) => RegistryCredentials::Env {
            username: username.clone(),
            password: password.clone(),
        },
        _ => {
            problems.push(file.problem(
                None,
                "bundle: give docker_config, or username_env with password_env, or neither",
            ));
            RegistryCredentials::Anonymous
        }
    };
    if problems.is_empty() {
        Ok(BundleSettings {
            reference: reference.clone(),
            poll: Duration::from_secs(raw.poll_seconds.max(1)),
            trusted,
            cache_dir: base.join(raw.cache_dir.get_ref()),
            plain_http: raw.plain_http,
            credentials,
        })
    } else {
        Err(problems)
    }
}
