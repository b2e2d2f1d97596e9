//! The NFS exports this controller knows (see the module doc of `nfs`): configured ones, and
//! those CreateVolume has named, remembered in a small JSON file so DeleteVolume and ListVolumes
//! find volumes after a restart. The file is a hint: it holds no volume state.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub struct Shares {
    file: PathBuf,
    known: Mutex<Vec<(String, String)>>,
}

/// Parses `server:/path` (the form of `--nfs-share` and of mount sources).
pub fn parse_share(s: &str) -> Result<(String, String), String> {
    match s.split_once(":/") {
        Some((server, path)) if !server.is_empty() && !server.contains(['/', ' ', '\0']) => {
            let share = format!("/{}", path.trim_end_matches('/'));
            Ok((server.to_string(), share))
        }
        _ => Err(format!("NFS share {s:?} is not of the form server:/path")),
    }
}

impl Shares {
    pub fn open(file: &Path, configured: &[(String, String)]) -> io::Result<Self> {
        let mut known: Vec<(String, String)> = configured.to_vec();
        match std::fs::read(file) {
            Ok(bytes) => {
                let saved: Vec<(String, String)> = serde_json::from_slice(&bytes).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{}: {e}", file.display()),
                    )
                })?;
                for s in saved {
                    if !known.contains(&s) {
                        known.push(s);
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", file.display()))),
        }
        Ok(Shares {
            file: file.to_path_buf(),
            known: Mutex::new(known),
        })
    }

    pub fn list(&self) -> Vec<(String, String)> {
        self.known.lock().expect("shares poisoned").clone()
    }

    /// Adds a share; the first time, rewrites the file (atomically, synced). A file that cannot be
    /// written is logged and the share kept in memory: provisioning must not fail on a hint.
    pub fn remember(&self, server: &str, share: &str) {
        let mut known = self.known.lock().expect("shares poisoned");
        let entry = (server.to_string(), share.to_string());
        if known.contains(&entry) {
            return;
        }
        known.push(entry);
        if let Err(e) = write_atomic(&self.file, &serde_json::to_vec_pretty(&*known).unwrap()) {
            tracing::warn!(file = %self.file.display(), error = %e,
                "could not remember NFS share {server}:{share}; after a restart pass it with --nfs-share");
        }
    }
}

fn write_atomic(file: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = file.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, file)?;
    if let Some(dir) = file.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_parse_and_persist() {
        assert_eq!(
            parse_share("10.0.0.5:/srv/nfs/").unwrap(),
            ("10.0.0.5".into(), "/srv/nfs".into())
        );
        assert!(parse_share("nocolon").is_err());
        assert!(parse_share(":/x").is_err());
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s.json");
        let s = Shares::open(&f, &[("a".into(), "/x".into())]).unwrap();
        s.remember("b", "/y");
        s.remember("b", "/y");
        let again = Shares::open(&f, &[]).unwrap();
        assert_eq!(
            again.list(),
            vec![("a".into(), "/x".into()), ("b".into(), "/y".into())]
        );
    }
}
