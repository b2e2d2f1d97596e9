//! State written by ferrovol 0.1: one JSON file per volume under `<state>/<backend>/`. A driver
//! started on such a directory adopts those records into the journal, then removes the files.

use serde::de::DeserializeOwned;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The old per-backend record directory, if it holds any record.
pub fn dir_with_records(state_dir: &Path, backend: &str) -> Option<PathBuf> {
    let dir = state_dir.join(backend);
    let has = fs::read_dir(&dir)
        .ok()?
        .flatten()
        .any(|e| is_record(&e.path()));
    has.then_some(dir)
}

fn is_record(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()) == Some("json")
}

/// Every record in an old directory; one that does not decode is an error naming its file.
pub fn load<T: DeserializeOwned>(dir: &Path) -> io::Result<Vec<T>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if !is_record(&path) {
            continue;
        }
        out.push(super::record::decode(path.display(), &fs::read(&path)?)?);
    }
    Ok(out)
}

/// Removes the old directory once its records are committed to the journal.
pub fn retire(dir: &Path) -> io::Result<()> {
    fs::remove_dir_all(dir)?;
    crate::os::fsutil::fsync_dir(dir.parent().unwrap_or(Path::new("/")))
}
