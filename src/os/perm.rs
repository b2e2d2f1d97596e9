//! Private directories: the driver's state is readable by root only.

use std::fs::DirBuilder;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::Path;

/// Creates `path` (and missing parents, with the usual mode) with mode 0700 for the directory
/// itself, whatever the umask. An existing directory is left as it is, with a warning when
/// others may read it: it may be a directory the operator shares on purpose, and silently
/// chmod-ing it could break something else.
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| io::Error::new(e.kind(), format!("creating {}: {e}", parent.display())))?;
    }
    match DirBuilder::new().mode(0o700).create(path) {
        // The umask can only remove bits from 0700, never add group or other access.
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let meta = std::fs::metadata(path)?;
            if !meta.is_dir() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a directory", path.display()),
                ));
            }
            if meta.mode() & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format!("{:o}", meta.mode() & 0o7777),
                    "state directory is accessible to other users; chmod 700 it"
                );
            }
            Ok(())
        }
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("creating {}: {e}", path.display()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn creates_0700_and_keeps_existing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b/state");
        create_private_dir(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o7777, 0o700);
        // Idempotent, and an existing directory keeps the mode the operator gave it.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).unwrap();
        create_private_dir(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o7777, 0o750);
        let file = tmp.path().join("f");
        std::fs::write(&file, b"").unwrap();
        let err = create_private_dir(&file).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
    }
}
