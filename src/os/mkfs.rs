//! Making a filesystem on a whole device: `mkfs.ext4` / `mkfs.xfs`, quiet, with a UUID we chose
//! beforehand. Choosing the UUID first lets the device backend record its intent before the
//! device is written, so after a crash it can tell its own (possibly half-made) filesystem from
//! anyone else's by UUID alone.

use std::io;
use std::path::Path;
use std::process::{Command, Stdio};

/// Filesystems the device backend makes.
pub const SUPPORTED: &[&str] = &["ext4", "xfs"];

/// A random (version 4) UUID, from the kernel's random source.
pub fn random_uuid() -> io::Result<String> {
    let mut b = super::fsutil::random_bytes::<16>()?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    Ok(super::fsutil::uuid_text(&b))
}

/// The command line that makes `fs_type` on `device` with filesystem UUID `uuid`. `extra` are
/// the StorageClass's mkfsOptions, split on whitespace. The force flag is always given: the
/// caller has proven the device blank or holding only the filesystem it is remaking.
pub fn command_line(
    fs_type: &str,
    device: &Path,
    uuid: &str,
    extra: &[String],
) -> io::Result<(String, Vec<String>)> {
    let mut args: Vec<String> = match fs_type {
        // lazy_itable_init=1 and no discard: mkfs returns at once on a large device; the kernel
        // initialises inode tables in the background (what `mkfs.ext4 -q` does by default).
        "ext4" => vec!["-q".into(), "-F".into(), "-U".into(), uuid.into()],
        "xfs" => vec![
            "-q".into(),
            "-f".into(),
            "-m".into(),
            format!("uuid={uuid}"),
        ],
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot make a {other:?} filesystem (supported: {SUPPORTED:?})"),
            ))
        }
    };
    args.extend(extra.iter().cloned());
    args.push(device.display().to_string());
    Ok((format!("mkfs.{fs_type}"), args))
}

/// Runs mkfs; an error carries the tool's own message.
pub fn make(fs_type: &str, device: &Path, uuid: &str, extra: &[String]) -> io::Result<()> {
    let (tool, args) = command_line(fs_type, device, uuid, extra)?;
    // Program names written out, so the image's host-tool list (docs/install.md) is checkable.
    let mut cmd = match fs_type {
        "ext4" => Command::new("mkfs.ext4"),
        _ => Command::new("mkfs.xfs"),
    };
    debug_assert_eq!(tool, format!("mkfs.{fs_type}"));
    let out = cmd
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("run {tool}: {e}")))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{tool} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_version_4_and_distinct() {
        let a = random_uuid().unwrap();
        let b = random_uuid().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }

    #[test]
    fn command_lines_carry_uuid_and_options() {
        let (tool, args) =
            command_line("xfs", Path::new("/dev/loop9"), "u", &["-K".to_string()]).unwrap();
        assert_eq!(tool, "mkfs.xfs");
        assert_eq!(args, ["-q", "-f", "-m", "uuid=u", "-K", "/dev/loop9"]);
        assert!(command_line("btrfs", Path::new("/dev/x"), "u", &[]).is_err());
    }
}
