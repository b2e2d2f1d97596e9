//! The share registry as a file, for a controller outside Kubernetes (standalone `serve`,
//! csi-sanity): a JSON list of `[server, share]` pairs, rewritten atomically and synced.
//! Default `<state-dir>/nfs-shares.json` (`--nfs-registry-file` puts it elsewhere); the format
//! is the one earlier versions kept there, so their shares are read as registered.

use super::shares::{by_key, Share, ShareRegistry};
use crate::error::{Error, Result};
use crate::os::fsutil::write_atomic;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub struct FileRegistry {
    file: PathBuf,
    /// Serialises this process's read-modify-write of the file.
    write: Mutex<()>,
}

impl FileRegistry {
    pub fn new(file: PathBuf) -> Self {
        FileRegistry {
            file,
            write: Mutex::new(()),
        }
    }

    fn failed(&self, e: impl std::fmt::Display) -> Error {
        Error::Internal(format!("NFS share registry {}: {e}", self.file.display()))
    }
}

impl ShareRegistry for FileRegistry {
    fn describe(&self) -> String {
        format!("file {}", self.file.display())
    }

    fn load(&self) -> Result<Vec<Share>> {
        let pairs: Vec<(String, String)> = match std::fs::read(&self.file) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| self.failed(e))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(self.failed(e)),
        };
        Ok(pairs.iter().map(|(s, p)| Share::new(s, p)).collect())
    }

    fn add(&self, share: &Share) -> Result<()> {
        let _held = self.write.lock().expect("registry file lock poisoned");
        let mut shares = self.load()?;
        if shares.contains(share) {
            return Ok(());
        }
        shares.push(share.clone());
        if let Err(e) = by_key(shares.iter().cloned(), &self.describe()) {
            return Err(Error::precondition(share.to_string(), e));
        }
        let pairs: Vec<(&str, &str)> = shares
            .iter()
            .map(|s| (s.server.as_str(), s.share.as_str()))
            .collect();
        let bytes = serde_json::to_vec_pretty(&pairs).expect("pairs serialise");
        let dir = self.file.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)
            .and_then(|_| write_atomic(&self.file, &bytes))
            .map_err(|e| self.failed(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_format_earlier_versions_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("nfs-shares.json");
        std::fs::write(&f, r#"[["a", "/x"], ["b", "/y"]]"#).unwrap();
        let r = FileRegistry::new(f.clone());
        assert_eq!(
            r.load().unwrap(),
            vec![Share::new("a", "/x"), Share::new("b", "/y")]
        );
        r.add(&Share::new("c", "/z")).unwrap();
        r.add(&Share::new("a", "/x")).unwrap();
        let raw: Vec<(String, String)> =
            serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
        assert_eq!(raw.len(), 3);
        std::fs::write(&f, "{").unwrap();
        assert!(r
            .load()
            .unwrap_err()
            .to_string()
            .contains("nfs-shares.json"));
    }
}
