//! Private directories: the driver's state is readable by root only.

use super::fsutil::at;
use std::fs::DirBuilder;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Creates `path` (and missing parents, with the usual mode) with mode 0700 for the directory
/// itself, whatever the umask. The driver owns this directory: an existing one that others may
/// read (a hostPath the kubelet created 0755) is made 0700.
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(at("creating ", parent))?;
    }
    match DirBuilder::new().mode(0o700).create(path) {
        // The umask can only remove bits from 0700, never add group or other access.
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if !std::fs::metadata(path)?.is_dir() {
                let why = format!("{} exists and is not a directory", path.display());
                return Err(io::Error::new(io::ErrorKind::AlreadyExists, why));
            }
            // Through a descriptor of the directory itself: a symlink swapped in cannot
            // redirect the chmod.
            let dir = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(path)
                .map_err(at("opening ", path))?;
            let mode = dir.metadata()?.mode() & 0o7777;
            if mode & 0o077 != 0 {
                dir.set_permissions(std::fs::Permissions::from_mode(0o700))
                    .map_err(at("chmod 700 ", path))?;
                tracing::info!(path = %path.display(), was = format!("{mode:o}"), "state directory made private to the driver");
            }
            Ok(())
        }
        Err(e) => Err(at("creating ", path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_0700_and_makes_existing_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b/state");
        create_private_dir(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o7777, 0o700);
        // Idempotent; an existing directory others may read (a hostPath the kubelet made 0755)
        // is made private, and its contents stay.
        std::fs::write(dir.join("journal"), b"records").unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        create_private_dir(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o7777, 0o700);
        assert_eq!(std::fs::read(dir.join("journal")).unwrap(), b"records");
        create_private_dir(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o7777, 0o700);
        let file = tmp.path().join("f");
        std::fs::write(&file, b"").unwrap();
        let err = create_private_dir(&file).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
    }
}
