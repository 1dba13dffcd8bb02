//! The bundle: every file the snapshot reads (`routes.toml`, and under `policies/` the schema,
//! the `*.cedar` files, `entities.json` and the test suites), by relative name, with a version
//! that only grows. One JSON document: no archive format to parse, and names checked so that
//! unpacking cannot write outside its directory.

use std::collections::BTreeMap;
use std::path::{Component, Path};

use serde::{Deserialize, Serialize};

use super::BundleError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// Set at build (default: the build's Unix time); a gateway refuses an older one.
    pub version: u64,
    /// Relative name → content.
    pub files: BTreeMap<String, String>,
}

pub const ROUTES: &str = "routes.toml";
pub const POLICIES: &str = "policies";

impl Bundle {
    /// Reads `routes_file` and the policy files of `policies_dir` (and its `tests/`).
    pub fn pack(
        routes_file: &Path,
        policies_dir: &Path,
        version: u64,
    ) -> Result<Self, BundleError> {
        let mut files = BTreeMap::new();
        files.insert(ROUTES.to_string(), read(routes_file)?);
        for (dir, prefix) in [
            (policies_dir.to_path_buf(), POLICIES.to_string()),
            (policies_dir.join("tests"), format!("{POLICIES}/tests")),
        ] {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut names: Vec<_> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .filter(|p| {
                    p.extension().is_some_and(|x| {
                        ["cedar", "cedarschema", "json", "toml"]
                            .iter()
                            .any(|e| x == *e)
                    })
                })
                .collect();
            names.sort();
            for path in names {
                let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
                    BundleError::Format(format!("{}: not a UTF-8 name", path.display()))
                })?;
                files.insert(format!("{prefix}/{name}"), read(&path)?);
            }
        }
        Ok(Bundle { version, files })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        // Strings and a number: serialization cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BundleError> {
        let bundle: Bundle = serde_json::from_slice(bytes).map_err(|e| {
            BundleError::Format(format!("the bundle is not a Portcullis bundle: {e}"))
        })?;
        for name in bundle.files.keys() {
            check_name(name)?;
        }
        if !bundle.files.contains_key(ROUTES) {
            return Err(BundleError::Format("the bundle has no routes.toml".into()));
        }
        Ok(bundle)
    }

    /// Writes the files under `dir` (created): `dir/routes.toml`, `dir/policies/...`.
    pub fn unpack(&self, dir: &Path) -> Result<(), BundleError> {
        for (name, content) in &self.files {
            check_name(name)?;
            let path = dir.join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
            }
            std::fs::write(&path, content).map_err(|e| io(&path, e))?;
        }
        std::fs::create_dir_all(dir.join(POLICIES)).map_err(|e| io(dir, e))?;
        Ok(())
    }
}

/// `routes.toml`, `policies/<file>` or `policies/tests/<file>`, nothing else.
fn check_name(name: &str) -> Result<(), BundleError> {
    let path = Path::new(name);
    let plain = path.components().all(|c| matches!(c, Component::Normal(_)));
    let depth = path.components().count();
    let allowed = name == ROUTES
        || (name.starts_with("policies/tests/") && depth == 3)
        || (name.starts_with("policies/") && depth == 2);
    if plain && allowed && !name.contains('\\') {
        Ok(())
    } else {
        Err(BundleError::Format(format!(
            "the bundle names a file {name:?}: only routes.toml, policies/<file> and policies/tests/<file> are allowed"
        )))
    }
}

fn read(path: &Path) -> Result<String, BundleError> {
    std::fs::read_to_string(path).map_err(|e| io(path, e))
}

fn io(path: &Path, error: std::io::Error) -> BundleError {
    BundleError::Io {
        path: path.display().to_string(),
        reason: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_packs_unpacks_and_refuses_names_outside_its_directory() {
        let source = tempfile::tempdir().unwrap();
        let policies = source.path().join("policies");
        std::fs::create_dir_all(policies.join("tests")).unwrap();
        std::fs::write(source.path().join("routes.toml"), "r").unwrap();
        std::fs::write(policies.join("a.cedar"), "p").unwrap();
        std::fs::write(policies.join("notes.md"), "skipped").unwrap();
        std::fs::write(policies.join("tests/suite.toml"), "t").unwrap();
        let bundle = Bundle::pack(&source.path().join("routes.toml"), &policies, 7).unwrap();
        assert_eq!(
            bundle.files.keys().collect::<Vec<_>>(),
            [
                "policies/a.cedar",
                "policies/tests/suite.toml",
                "routes.toml"
            ]
        );
        let read = Bundle::from_bytes(&bundle.to_bytes()).unwrap();
        assert_eq!(read, bundle);
        let out = tempfile::tempdir().unwrap();
        read.unpack(out.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(out.path().join("policies/tests/suite.toml")).unwrap(),
            "t"
        );

        for name in [
            "../x",
            "policies/../../x",
            "/etc/passwd",
            "policies/a/b/c",
            "other.toml",
            "policies\\\\x",
        ] {
            let mut evil = bundle.clone();
            evil.files.insert(name.to_string(), "x".into());
            assert!(Bundle::from_bytes(&evil.to_bytes()).is_err(), "{name}");
        }
    }
}
