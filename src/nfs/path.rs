//! Paths relative to the share root, checked before anything goes on the wire: '/'-separated,
//! no empty, '.', '..' or NUL components, each at most 255 bytes. The empty path is the share root.
//! NFS LOOKUP resolves one component at a time in the directory the client names, so a clean
//! path can never leave the share.

use super::error::NfsError;
use super::types::NAME_MAX;

/// Splits and checks `path`.
pub fn components(path: &str) -> Result<Vec<&str>, NfsError> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let bad = |reason: &str| NfsError::InvalidPath {
        path: path.to_string(),
        reason: reason.to_string(),
    };
    path.split('/')
        .map(|c| match c {
            "" => Err(bad(
                "empty component (leading, trailing or doubled '/'); paths are relative to the share root",
            )),
            "." | ".." => Err(bad("'.' and '..' components are not allowed")),
            c if c.contains('\0') => Err(bad("NUL byte in a component")),
            c if c.len() > NAME_MAX => Err(bad("component longer than 255 bytes")),
            c => Ok(c),
        })
        .collect()
}

/// Checks `path` and splits off its last component: (parent components, name).
pub fn split_last(path: &str) -> Result<(Vec<&str>, &str), NfsError> {
    let mut comps = components(path)?;
    let name = comps.pop().ok_or_else(|| NfsError::InvalidPath {
        path: path.to_string(),
        reason: "the share root itself cannot be created, removed or renamed".to_string(),
    })?;
    Ok((comps, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_paths_split() {
        assert_eq!(components("").unwrap(), Vec::<&str>::new());
        assert_eq!(components("a/b c/ü").unwrap(), vec!["a", "b c", "ü"]);
        assert_eq!(split_last("a/b").unwrap(), (vec!["a"], "b"));
        assert_eq!(split_last("x").unwrap(), (vec![], "x"));
    }

    #[test]
    fn hostile_paths_rejected() {
        let long = "x".repeat(256);
        for p in [
            "/a", "a/", "a//b", ".", "..", "a/../b", "../..", "a/./b", "a\0b", &long,
        ] {
            assert!(
                matches!(components(p), Err(NfsError::InvalidPath { .. })),
                "{p:?} accepted"
            );
        }
        assert!(split_last("").is_err());
    }
}
