//! The last good directory on disk, so that a restart while the IdP's API is down still
//! serves it. Written to a temporary file beside it and renamed, so a crash mid-write leaves
//! the previous file; readable by the gateway's user only (it holds user attributes).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Directory, SourceEntities};

const FORMAT: &str = "portcullis-directory/1";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheFile {
    format: String,
    version: String,
    sources: Vec<SourceEntities>,
}

#[derive(Debug, thiserror::Error)]
pub enum CacheFileError {
    #[error("cannot read the directory cache {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("cannot write the directory cache {path}: {reason}")]
    Write { path: PathBuf, reason: String },
}

/// The persisted directory, `None` when there is no file yet.
pub fn read_cache_file(path: &Path) -> Result<Option<Directory>, CacheFileError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_error(path, e.to_string())),
    };
    let file: CacheFile =
        serde_json::from_slice(&bytes).map_err(|e| read_error(path, e.to_string()))?;
    if file.format != FORMAT {
        return Err(read_error(
            path,
            format!("format {:?}, expected {FORMAT:?}", file.format),
        ));
    }
    Ok(Some(Directory::new(file.sources)))
}

pub fn write_cache_file(path: &Path, directory: &Directory) -> Result<(), CacheFileError> {
    let error = |reason: String| CacheFileError::Write {
        path: path.to_path_buf(),
        reason,
    };
    let file = CacheFile {
        format: FORMAT.to_string(),
        version: directory.version.to_string(),
        sources: directory.sources.clone(),
    };
    let bytes = serde_json::to_vec(&file).map_err(|e| error(e.to_string()))?;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let write = || -> std::io::Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut out = options.open(&temporary)?;
        out.write_all(&bytes)?;
        out.sync_all()?;
        std::fs::rename(&temporary, path)
    };
    write().map_err(|e| error(e.to_string()))
}

fn read_error(path: &Path, reason: String) -> CacheFileError {
    CacheFileError::Read {
        path: path.to_path_buf(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Map;

    use super::*;
    use crate::directory::{EntityRef, SyncedEntity};

    #[test]
    fn a_written_directory_reads_back_equal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("directory.json");
        assert_eq!(read_cache_file(&path).unwrap(), None);
        let directory = Directory::new(vec![SourceEntities {
            source: "okta".into(),
            synced_at: 1_700_000_000,
            entities: vec![SyncedEntity {
                uid: EntityRef {
                    entity_type: "User".into(),
                    id: "00u1".into(),
                },
                attrs: Map::from_iter([("email".to_string(), "a@x".into())]),
                parents: vec![EntityRef {
                    entity_type: "Group".into(),
                    id: "eng".into(),
                }],
            }],
        }]);
        write_cache_file(&path, &directory).unwrap();
        assert_eq!(read_cache_file(&path).unwrap(), Some(directory));
        std::fs::write(
            &path,
            b"{\"format\": \"other\", \"version\": \"\", \"sources\": []}",
        )
        .unwrap();
        assert!(read_cache_file(&path)
            .unwrap_err()
            .to_string()
            .contains("format"));
    }
}
