//! TLS termination's certificates: PEM certificate/key pairs (as a Kubernetes `kubernetes.io/tls`
//! Secret mounts them), chosen by the client's SNI, reloaded when their files change.
//!
//! A certificate serves the DNS names of its subject alternative names, or the `hosts` the
//! configuration gives it; `*.example.com` serves exactly one label below `example.com`. An SNI
//! that no certificate names, and a client that sends none, get the default certificate. A
//! reload reads every file again and swaps the whole set at once; if any pair fails to load,
//! the running set stays. This module knows rustls, not pingora: `server.rs` puts the store
//! behind pingora's TLS listener.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use aws_lc_rs::digest::{Context, SHA256};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// One configured certificate/key pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Names this pair serves; empty: the certificate's own DNS names.
    pub hosts: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    #[error("{}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    #[error("{}: the certificate names no DNS host (no subjectAltName DNS entries); list the names it serves in `hosts`", path.display())]
    NoNames { path: PathBuf },
    #[error("{} and {}: the key does not belong to the certificate: {reason}", cert.display(), key.display())]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

/// Every pair that failed to load, by its index in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(|(_, e)| e.to_string()).collect::<Vec<_>>().join("; "))]
pub struct CertificateErrors(pub Vec<(usize, CertificateError)>);

#[derive(Debug)]
struct Served {
    key: Arc<CertifiedKey>,
    /// Lower-case names; a leading `*.` is a one-label wildcard.
    names: Vec<String>,
}

/// One consistent set of certificates; the first is the default.
#[derive(Debug)]
pub struct CertificateSet {
    served: Vec<Served>,
}

impl CertificateSet {
    /// Loads every pair; the first one is the default certificate. Every pair that fails is
    /// reported.
    pub fn load(files: &[CertificateFiles]) -> Result<Self, CertificateErrors> {
        let mut served = Vec::with_capacity(files.len());
        let mut errors = Vec::new();
        for (index, pair) in files.iter().enumerate() {
            match load_pair(pair) {
                Ok(loaded) => served.push(loaded),
                Err(e) => errors.push((index, e)),
            }
        }
        if errors.is_empty() {
            Ok(CertificateSet { served })
        } else {
            Err(CertificateErrors(errors))
        }
    }

    /// The certificate for a client hello naming `sni`: an exact name first, then a wildcard,
    /// then the default. `None` only for an empty set.
    pub fn select(&self, sni: Option<&str>) -> Option<&Arc<CertifiedKey>> {
        let by_name = sni.map(str::to_ascii_lowercase).and_then(|sni| {
            let exact = self.served.iter().find(|s| s.names.contains(&sni));
            exact.or_else(|| {
                let parent = sni.split_once('.').map(|(_, parent)| parent)?;
                let wildcard = format!("*.{parent}");
                self.served.iter().find(|s| s.names.contains(&wildcard))
            })
        });
        by_name.or(self.served.first()).map(|s| &s.key)
    }

    /// Every name served, for `portcullis check`.
    pub fn names(&self) -> Vec<&str> {
        self.served
            .iter()
            .flat_map(|s| s.names.iter().map(String::as_str))
            .collect()
    }
}

fn file_error(path: &Path, reason: impl std::fmt::Display) -> CertificateError {
    CertificateError::File {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn load_pair(files: &CertificateFiles) -> Result<Served, CertificateError> {
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| file_error(&files.cert, format!("not a PEM certificate chain: {e}")))?;
    let Some(leaf) = chain.first() else {
        return Err(file_error(&files.cert, "holds no PEM certificate"));
    };
    let names = if files.hosts.is_empty() {
        dns_names(leaf).map_err(|e| file_error(&files.cert, e))?
    } else {
        files.hosts.iter().map(|h| h.to_ascii_lowercase()).collect()
    };
    if names.is_empty() {
        return Err(CertificateError::NoNames {
            path: files.cert.clone(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| file_error(&files.key, format!("not a PEM private key: {e}")))?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let key =
        CertifiedKey::from_der(chain, key, &provider).map_err(|e| CertificateError::Mismatch {
            cert: files.cert.clone(),
            key: files.key.clone(),
            reason: e.to_string(),
        })?;
    Ok(Served {
        key: Arc::new(key),
        names,
    })
}

/// The DNS names among a certificate's subject alternative names, lower-cased.
fn dns_names(der: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| format!("cannot parse the certificate: {e}"))?;
    let names = cert
        .subject_alternative_name()
        .map_err(|e| format!("bad subjectAltName: {e}"))?
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(name) => Some(name.to_ascii_lowercase()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(names)
}

/// SHA-256 over every configured file's bytes (symlinks followed, so a Secret's `..data` swap
/// changes it).
fn fingerprint(files: &[CertificateFiles]) -> Vec<u8> {
    let mut hash = Context::new(&SHA256);
    for path in files.iter().flat_map(|f| [&f.cert, &f.key]) {
        match std::fs::read(path) {
            Ok(bytes) => {
                hash.update(&(bytes.len() as u64).to_le_bytes());
                hash.update(&bytes);
            }
            Err(_) => hash.update(b"\0absent"),
        }
    }
    hash.finish().as_ref().to_vec()
}

/// The serving certificates: what the TLS listener asks at every handshake.
#[derive(Debug)]
pub struct CertificateStore {
    files: Vec<CertificateFiles>,
    current: ArcSwap<CertificateSet>,
    /// Fingerprint of the files the last load (good or bad) read; serializes reloads.
    last_read: Mutex<Vec<u8>>,
}

impl CertificateStore {
    pub fn load(files: Vec<CertificateFiles>) -> Result<Self, CertificateErrors> {
        let read = fingerprint(&files);
        let set = CertificateSet::load(&files)?;
        Ok(CertificateStore {
            files,
            current: ArcSwap::from_pointee(set),
            last_read: Mutex::new(read),
        })
    }

    /// Reloads every pair if any file changed since the last load; `None` when nothing did.
    /// On error the running set stays.
    pub fn reload_if_changed(&self) -> Option<Result<(), CertificateErrors>> {
        let mut last_read = self
            .last_read
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let read = fingerprint(&self.files);
        if *last_read == read {
            return None;
        }
        *last_read = read;
        Some(CertificateSet::load(&self.files).map(|set| self.current.store(Arc::new(set))))
    }

    /// The configured files, for the watcher.
    pub fn files(&self) -> &[CertificateFiles] {
        &self.files
    }

    pub fn current(&self) -> Arc<CertificateSet> {
        self.current.load_full()
    }
}

impl ResolvesServerCert for CertificateStore {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current
            .load()
            .select(client_hello.server_name())
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str, sans: &[&str]) -> CertificateFiles {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.self_signed(&key).unwrap();
        let files = CertificateFiles {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
            hosts: Vec::new(),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }

    fn served_name(set: &CertificateSet, sni: Option<&str>) -> Vec<String> {
        let key = set.select(sni).unwrap();
        dns_names(&key.cert[0]).unwrap()
    }

    #[test]
    fn selection_by_exact_name_then_wildcard_then_default() {
        let dir = tempfile::tempdir().unwrap();
        let files = vec![
            write_pair(dir.path(), "default", &["default.test"]),
            write_pair(dir.path(), "api", &["api.example.com"]),
            write_pair(dir.path(), "wild", &["*.example.com"]),
        ];
        let set = CertificateSet::load(&files).unwrap();
        assert_eq!(
            served_name(&set, Some("API.example.com")),
            ["api.example.com"]
        );
        assert_eq!(
            served_name(&set, Some("www.example.com")),
            ["*.example.com"]
        );
        assert_eq!(served_name(&set, Some("a.b.example.com")), ["default.test"]);
        assert_eq!(served_name(&set, Some("other.test")), ["default.test"]);
        assert_eq!(served_name(&set, None), ["default.test"]);
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = write_pair(dir.path(), "a", &["a.test"]);
        let b = write_pair(dir.path(), "b", &["b.test"]);
        let crossed = CertificateFiles {
            cert: a.cert,
            key: b.key,
            hosts: Vec::new(),
        };
        let errors = CertificateSet::load(&[crossed]).unwrap_err();
        assert!(
            matches!(errors.0[..], [(0, CertificateError::Mismatch { .. })]),
            "{errors}"
        );
    }

    #[test]
    fn a_failed_reload_keeps_the_running_set() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_pair(dir.path(), "a", &["a.test"]);
        let store = CertificateStore::load(vec![files.clone()]).unwrap();
        assert!(store.reload_if_changed().is_none());
        std::fs::write(&files.cert, "not pem").unwrap();
        let failed = store.reload_if_changed();
        assert!(
            matches!(&failed, Some(Err(CertificateErrors(e))) if matches!(e[..], [(0, CertificateError::File { .. })])),
            "{failed:?}"
        );
        assert_eq!(store.current().names(), ["a.test"]);
        write_pair(dir.path(), "a", &["renewed.test"]);
        assert!(matches!(store.reload_if_changed(), Some(Ok(()))));
        assert_eq!(store.current().names(), ["renewed.test"]);
    }
}
