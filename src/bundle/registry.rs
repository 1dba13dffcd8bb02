//! Bundles in an OCI registry, with oci-client: a bundle is an image manifest of our own
//! media types (a config and one layer, the bundle); its signature is a second artifact at
//! the tag `sha256-<digest>.sig` (cosign's convention, so any registry keeps it next to the
//! bundle). Pulling checks, in this order: the manifest's digest (and the pinned one), the
//! signature against the trusted keys, then the layer's digest — nothing inside the bundle
//! is read before the signature verified.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::{OciDescriptor, OciImageManifest, OCI_IMAGE_MEDIA_TYPE};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use super::format::Bundle;
use super::signature::{verify, SignatureDocument, SigningKey, TrustedKey};
use super::{
    BundleError, ARTIFACT_TYPE, CONFIG_MEDIA_TYPE, LAYER_MEDIA_TYPE, SIGNATURE_MEDIA_TYPE,
};
use super::{BundleSettings, RegistryCredentials};

pub struct Registry {
    client: Client,
    auth: RegistryAuth,
}

/// A bundle that passed every check.
pub struct Verified {
    pub bundle: Bundle,
    pub digest: String,
    pub key_id: String,
}

impl Registry {
    /// `plain_http`: talk HTTP, not HTTPS (a registry on loopback or a cluster network).
    pub fn new(plain_http: bool, auth: RegistryAuth) -> Self {
        let config = ClientConfig {
            protocol: if plain_http {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            ..ClientConfig::default()
        };
        Registry {
            client: Client::new(config),
            auth,
        }
    }

    /// Pushes `bundle` to `reference`; returns the manifest digest.
    pub async fn push(&self, reference: &str, bundle: &Bundle) -> Result<String, BundleError> {
        let reference = parse(reference)?;
        let annotations = BTreeMap::from([(
            "dev.portcullis.bundle.version".to_string(),
            bundle.version.to_string(),
        )]);
        let layer = ImageLayer::new(bundle.to_bytes(), LAYER_MEDIA_TYPE.to_string(), None);
        let config = Config::new(
            format!("{{\"version\":{}}}", bundle.version).into_bytes(),
            CONFIG_MEDIA_TYPE.to_string(),
            None,
        );
        let mut manifest =
            OciImageManifest::build(std::slice::from_ref(&layer), &config, Some(annotations));
        manifest.artifact_type = Some(ARTIFACT_TYPE.to_string());
        self.client
            .push(&reference, &[layer], config, &self.auth, Some(manifest))
            .await
            .map_err(registry)?;
        self.manifest(&reference).await.map(|(_, digest)| digest)
    }

    /// Signs the bundle at `reference` and pushes the signature; returns the bundle's digest.
    pub async fn sign(&self, reference: &str, key: &SigningKey) -> Result<String, BundleError> {
        let reference = parse(reference)?;
        let (_, digest) = self.manifest(&reference).await?;
        let document = key.sign(&digest);
        let bytes =
            serde_json::to_vec(&document).map_err(|e| BundleError::Signature(e.to_string()))?;
        let layer = ImageLayer::new(bytes, SIGNATURE_MEDIA_TYPE.to_string(), None);
        let config = Config::new(b"{}".to_vec(), CONFIG_MEDIA_TYPE.to_string(), None);
        let mut manifest = OciImageManifest::build(std::slice::from_ref(&layer), &config, None);
        manifest.artifact_type = Some(SIGNATURE_MEDIA_TYPE.to_string());
        self.client
            .push(
                &signature_reference(&reference, &digest),
                &[layer],
                config,
                &self.auth,
                Some(manifest),
            )
            .await
            .map_err(registry)?;
        Ok(digest)
    }

    /// The manifest digest `reference` names now (one HEAD request).
    pub async fn current_digest(&self, reference: &str) -> Result<String, BundleError> {
        let reference = parse(reference)?;
        self.client
            .fetch_manifest_digest(&reference, &self.auth)
            .await
            .map_err(registry)
    }

    /// Pulls the bundle at `reference`, checking the digest, then the signature, then the
    /// layer; the bundle is parsed only after all three held.
    pub async fn pull_verified(
        &self,
        reference: &str,
        trusted: &[TrustedKey],
    ) -> Result<Verified, BundleError> {
        let reference = parse(reference)?;
        let (bytes, digest) = self.manifest(&reference).await?;
        if let Some(pinned) = reference.digest() {
            if pinned != digest {
                return Err(BundleError::Signature(format!(
                    "the registry served {digest} for the pinned {pinned}"
                )));
            }
        }
        let signature_ref = signature_reference(&reference, &digest);
        let (signature_manifest, _) = self.manifest(&signature_ref).await.map_err(|e| {
            BundleError::Signature(format!("the bundle {digest} is not signed ({e})"))
        })?;
        let signature_layer = single_layer(&signature_manifest, SIGNATURE_MEDIA_TYPE)?;
        let document: SignatureDocument =
            serde_json::from_slice(&self.blob(&signature_ref, &signature_layer).await?)
                .map_err(|e| BundleError::Signature(format!("the signature is malformed: {e}")))?;
        let key_id = verify(&document, &digest, trusted)?;
        let layer = single_layer(&bytes, LAYER_MEDIA_TYPE)?;
        let bundle = Bundle::from_bytes(&self.blob(&reference, &layer).await?)?;
        Ok(Verified {
            bundle,
            digest,
            key_id,
        })
    }

    /// The raw manifest and the SHA-256 digest of its bytes (computed here, not taken from
    /// the registry's header).
    async fn manifest(&self, reference: &Reference) -> Result<(Vec<u8>, String), BundleError> {
        let (bytes, _) = self
            .client
            .pull_manifest_raw(reference, &self.auth, &[OCI_IMAGE_MEDIA_TYPE])
            .await
            .map_err(registry)?;
        let digest = sha256(&bytes);
        Ok((bytes.to_vec(), digest))
    }

    /// A blob, refused unless its bytes hash to the descriptor's digest.
    async fn blob(
        &self,
        reference: &Reference,
        layer: &OciDescriptor,
    ) -> Result<Vec<u8>, BundleError> {
        let mut out = Vec::new();
        let pulled = self.client.pull_blob(reference, layer, &mut out).await;
        let actual = sha256(&out);
        if actual != layer.digest {
            return Err(BundleError::Signature(format!(
                "the layer's content does not match its digest {} (got {actual}): tampered",
                layer.digest
            )));
        }
        pulled.map_err(registry)?;
        Ok(out)
    }
}

/// The descriptor of the manifest's one layer, which must have `media_type`.
fn single_layer(manifest: &[u8], media_type: &str) -> Result<OciDescriptor, BundleError> {
    let manifest: OciImageManifest = serde_json::from_slice(manifest)
        .map_err(|e| BundleError::Format(format!("not an OCI image manifest: {e}")))?;
    match manifest.layers.as_slice() {
        [layer] if layer.media_type == media_type => Ok(layer.clone()),
        _ => Err(BundleError::Format(format!(
            "the artifact is not a Portcullis bundle: expected one {media_type} layer"
        ))),
    }
}

fn signature_reference(reference: &Reference, digest: &str) -> Reference {
    Reference::with_tag(
        reference.registry().to_string(),
        reference.repository().to_string(),
        format!("{}.sig", digest.replace(':', "-")),
    )
}

fn parse(reference: &str) -> Result<Reference, BundleError> {
    reference
        .parse()
        .map_err(|e| BundleError::Registry(format!("{reference:?} is not an image reference: {e}")))
}

fn registry(error: oci_client::errors::OciDistributionError) -> BundleError {
    BundleError::Registry(error.to_string())
}

pub fn sha256(bytes: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Credentials for `registry` from a Docker config file (`auths.<registry>.auth`, base64
/// `user:password`), as `docker login` writes it; anonymous when it has none.
pub fn docker_config_auth(path: &Path, registry: &str) -> Result<RegistryAuth, BundleError> {
    let text = std::fs::read_to_string(path).map_err(|e| BundleError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let config: serde_json::Value = serde_json::from_str(&text).map_err(|e| BundleError::Io {
        path: path.display().to_string(),
        reason: format!("not JSON: {e}"),
    })?;
    let Some(encoded) = config["auths"][registry]["auth"].as_str() else {
        return Ok(RegistryAuth::Anonymous);
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
        .and_then(|d| String::from_utf8(d).ok())
        .and_then(|d| {
            d.split_once(':')
                .map(|(u, p)| (u.to_string(), p.to_string()))
        });
    match decoded {
        Some((user, password)) => Ok(RegistryAuth::Basic(user, password)),
        None => Err(BundleError::Io {
            path: path.display().to_string(),
            reason: format!("auths.{registry}.auth is not base64 of user:password"),
        }),
    }
}

/// The registry client for `settings`, with its credentials.
pub fn for_settings(settings: &BundleSettings) -> Result<Registry, BundleError> {
    let auth = match &settings.credentials {
        RegistryCredentials::Anonymous => RegistryAuth::Anonymous,
        RegistryCredentials::DockerConfig(path) => {
            docker_config_auth(path, parse(&settings.reference)?.resolve_registry())?
        }
        RegistryCredentials::Env { username, password } => {
            let read = |name: &str| {
                std::env::var(name).map_err(|_| {
                    BundleError::Registry(format!("the environment variable {name} is not set"))
                })
            };
            RegistryAuth::Basic(read(username)?, read(password)?)
        }
    };
    Ok(Registry::new(settings.plain_http, auth))
}
