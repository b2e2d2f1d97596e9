//! Durable volume records: one small JSON file per volume, each written atomically, so the cost
//! of an operation does not grow with the number of volumes and a crash never tears a record.

use crate::os::fsutil::{remove_file_durable, write_atomic};
use serde::{de::DeserializeOwned, Serialize};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Opens (creating) the record directory and drops temp files a crash left behind.
    pub fn open(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().ends_with(".tmp") {
                fs::remove_file(entry.path())?;
            }
        }
        Ok(Store {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    /// Every record in the store; a record that does not decode is an error naming its file.
    pub fn load_all<T: DeserializeOwned>(&self) -> io::Result<Vec<T>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let bytes = fs::read(&path)?;
            let record = serde_json::from_slice(&bytes).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("state record {}: {e}", path.display()),
                )
            })?;
            out.push(record);
        }
        Ok(out)
    }

    pub fn put<T: Serialize>(&self, key: &str, record: &T) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(record).map_err(io::Error::other)?;
        write_atomic(&self.path(key), &bytes)
    }

    pub fn remove(&self, key: &str) -> io::Result<()> {
        remove_file_durable(&self.path(key))
    }

    /// Checks that a record could be written now (used by Probe).
    pub fn check_writable(&self) -> io::Result<()> {
        let probe = self.dir.join(".probe");
        write_atomic(&probe, b"ok")?;
        fs::remove_file(probe)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_load_remove_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.put("a", &vec![1, 2]).unwrap();
        store.put("b", &vec![3]).unwrap();
        store.put("a", &vec![4]).unwrap();
        let mut all: Vec<Vec<i32>> = store.load_all().unwrap();
        all.sort();
        assert_eq!(all, vec![vec![3], vec![4]]);
        store.remove("a").unwrap();
        store.remove("a").unwrap();
        assert_eq!(store.load_all::<Vec<i32>>().unwrap(), vec![vec![3]]);
    }

    #[test]
    fn open_drops_leftover_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(".x.json.tmp"), b"torn").unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(store.load_all::<Vec<i32>>().unwrap().is_empty());
        assert!(!dir.path().join(".x.json.tmp").exists());
    }
}
