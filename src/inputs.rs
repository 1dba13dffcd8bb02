//! The fingerprint of the hot-reloadable inputs: a reload that would read the same bytes makes
//! no new snapshot, and a broken file is not retried until it changes.

use std::path::{Path, PathBuf};

use aws_lc_rs::digest::{Context, SHA256};

/// SHA-256 over the hot-reloadable inputs: the routes file and every visible file in the
/// policies directory (symlinks followed), by name; a missing file hashes as absent.
pub fn fingerprint(routes_file: &Path, policies_dir: &Path) -> Vec<u8> {
    let mut files = vec![routes_file.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(policies_dir) {
        let mut names: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        names.sort();
        files.extend(names);
    }
    let mut hash = Context::new(&SHA256);
    for file in files {
        hash.update(file.as_os_str().as_encoded_bytes());
        match std::fs::read(&file) {
            Ok(bytes) => {
                hash.update(&(bytes.len() as u64).to_le_bytes());
                hash.update(&bytes);
            }
            Err(_) => hash.update(b"\0absent"),
        }
    }
    hash.finish().as_ref().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_follows_content_not_events() {
        let dir = tempfile::tempdir().unwrap();
        let routes = dir.path().join("routes.toml");
        let policies = dir.path().join("policies");
        std::fs::create_dir(&policies).unwrap();
        std::fs::write(&routes, "a").unwrap();
        std::fs::write(policies.join("p.cedar"), "permit").unwrap();
        let first = fingerprint(&routes, &policies);
        std::fs::write(policies.join(".hidden"), "x").unwrap();
        assert_eq!(fingerprint(&routes, &policies), first);
        std::fs::write(policies.join("p.cedar"), "forbid").unwrap();
        let second = fingerprint(&routes, &policies);
        assert_ne!(second, first);
        std::fs::remove_file(&routes).unwrap();
        assert_ne!(fingerprint(&routes, &policies), second);
    }
}
