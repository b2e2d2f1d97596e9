//! A directory's ownership markers: which volume it is, which state store made it, and which
//! create of that volume (the incarnation). They live in the `trusted.` xattr namespace: only
//! CAP_SYS_ADMIN can set them, so a pod that owns the directory's content cannot forge or strip
//! the driver's claim on it. The driver removes a directory only on their proof.

use rustix::fs::XattrFlags;
use std::io;
use std::path::Path;

/// Which volume id owns a directory.
const MARKER: &str = "trusted.ferrovol.volume";

/// The state store (journal) that made a directory: recovery removes a directory its own store
/// made but never recorded (a create that was never acknowledged), and no other.
const STORE_MARKER: &str = "trusted.ferrovol.store";

/// Which create of a volume id made a directory (a random token also kept in its record): the
/// same name can be deleted and created again, and after a power cut recovery must tell the
/// trash of the deleted volume from the directory of the one created after it.
const INCARNATION_MARKER: &str = "trusted.ferrovol.incarnation";

/// The markers in one xattr, written by one call: a create costs one xattr write, not
/// several, and a crash cannot leave a directory marked by half. Format:
/// `v1\0<volume id>\0<store id>\0<incarnation>\0<journal sequence>` (all but the id may be
/// empty; directories marked before the sequence existed end after the incarnation, and
/// readers that do not know it ignore it). Directories marked in the older form carry the
/// three separate xattrs above instead; every reader falls back to them, and a setter changes
/// whichever form the directory has.
const MARKERS: &str = "trusted.ferrovol.markers";
const MARKERS_VERSION: &str = "v1";

/// A directory's ownership markers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Markers {
    pub volume: String,
    pub store: Option<String>,
    pub incarnation: Option<String>,
    /// The state journal's next sequence number when the directory was marked: the batch that
    /// commits its create carries this one or a later one. A directory marked later than the
    /// journal reaches proves the journal behind.
    pub seq: Option<u64>,
}

impl Markers {
    fn encode(&self) -> String {
        [
            MARKERS_VERSION,
            &self.volume,
            self.store.as_deref().unwrap_or(""),
            self.incarnation.as_deref().unwrap_or(""),
            &self.seq.map(|s| s.to_string()).unwrap_or_default(),
        ]
        .join("\0")
    }

    fn decode(raw: &str) -> io::Result<Self> {
        let field = |f: Option<&str>| f.filter(|v| !v.is_empty()).map(str::to_string);
        let mut parts = raw.split('\0');
        match (parts.next(), parts.next()) {
            (Some(MARKERS_VERSION), Some(volume)) if !volume.is_empty() => Ok(Markers {
                volume: volume.to_string(),
                store: field(parts.next()),
                incarnation: field(parts.next()),
                seq: field(parts.next()).and_then(|s| s.parse().ok()),
            }),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unreadable {MARKERS} xattr {raw:?}"),
            )),
        }
    }
}

/// Marks a directory as volume `volume_id`'s, made by store `store_id` in create `incarnation`
/// when the journal's next sequence number was `seq`: one xattr write, replacing any markers it
/// had.
pub fn set_markers(
    path: &Path,
    volume_id: &str,
    store_id: &str,
    incarnation: Option<&str>,
    seq: u64,
) -> io::Result<()> {
    let markers = Markers {
        volume: volume_id.to_string(),
        store: Some(store_id.to_string()),
        incarnation: incarnation.map(str::to_string),
        seq: Some(seq),
    };
    set_xattr(path, MARKERS, &markers.encode())
}

/// The one-xattr markers of `path`, if it has them.
fn combined_markers(path: &Path) -> io::Result<Option<Markers>> {
    get_xattr(path, MARKERS)?
        .map(|raw| Markers::decode(&raw))
        .transpose()
}

/// All of a directory's markers in one read (its old form: one read per xattr), or None when it
/// carries no volume marker.
pub fn read_markers(path: &Path) -> io::Result<Option<Markers>> {
    if let Some(m) = combined_markers(path)? {
        return Ok(Some(m));
    }
    let Some(volume) = get_xattr(path, MARKER)? else {
        return Ok(None);
    };
    Ok(Some(Markers {
        volume,
        store: get_xattr(path, STORE_MARKER)?,
        incarnation: get_xattr(path, INCARNATION_MARKER)?,
        seq: None,
    }))
}

/// One marker: from the one-xattr form when the directory has it, else from its own xattr.
fn read_marker(
    path: &Path,
    legacy: &str,
    pick: impl FnOnce(Markers) -> Option<String>,
) -> io::Result<Option<String>> {
    match combined_markers(path)? {
        Some(m) => Ok(pick(m)),
        None => get_xattr(path, legacy),
    }
}

/// Changes one marker in whichever form the directory carries (a directory with none gets the
/// separate xattr, as `set_markers` is the way to mark a new one).
fn write_marker(
    path: &Path,
    legacy: &str,
    value: &str,
    change: impl FnOnce(&mut Markers),
) -> io::Result<()> {
    match combined_markers(path)? {
        Some(mut m) => {
            change(&mut m);
            set_xattr(path, MARKERS, &m.encode())
        }
        None => set_xattr(path, legacy, value),
    }
}

/// The incarnation recorded on `path`, or None (made before incarnations existed).
pub fn incarnation_marker(path: &Path) -> io::Result<Option<String>> {
    read_marker(path, INCARNATION_MARKER, |m| m.incarnation)
}

/// Records on the directory itself which volume id owns it.
pub fn set_owner_marker(path: &Path, volume_id: &str) -> io::Result<()> {
    write_marker(path, MARKER, volume_id, |m| {
        m.volume = volume_id.to_string()
    })
}

/// Records on the directory which state store made it.
pub fn set_store_marker(path: &Path, store_id: &str) -> io::Result<()> {
    write_marker(path, STORE_MARKER, store_id, |m| {
        m.store = Some(store_id.to_string())
    })
}

/// The identity a hostpath base carries: the id of the state store that adopted it.
const BASE_MARKER: &str = "trusted.ferrovol.base";

/// The state store id recorded on the base directory `path`, or None.
pub fn base_marker(path: &Path) -> io::Result<Option<String>> {
    get_xattr(path, BASE_MARKER)
}

/// Records on the base directory `path` that state store `store_id` adopted it, durably.
pub fn set_base_marker(path: &Path, store_id: &str) -> io::Result<()> {
    set_xattr(path, BASE_MARKER, store_id)?;
    super::fsutil::fsync_dir(path)
}

/// Takes every ownership marker off a directory (an adoption rolled back gives the directory
/// back as it was found: unmarked).
pub fn clear_markers(path: &Path) -> io::Result<()> {
    for name in [MARKERS, MARKER, STORE_MARKER, INCARNATION_MARKER] {
        remove_xattr(path, name)?;
    }
    Ok(())
}

fn remove_xattr(path: &Path, name: &str) -> io::Result<()> {
    match rustix::fs::lremovexattr(path, name) {
        Err(rustix::io::Errno::NODATA) => Ok(()),
        other => Ok(other?),
    }
}

fn set_xattr(path: &Path, name: &str, value: &str) -> io::Result<()> {
    let flags = XattrFlags::empty();
    Ok(rustix::fs::lsetxattr(path, name, value.as_bytes(), flags)?)
}

/// The volume id recorded on `path`, or None when it carries no marker.
pub fn owner_marker(path: &Path) -> io::Result<Option<String>> {
    read_marker(path, MARKER, |m| Some(m.volume))
}

fn get_xattr(path: &Path, name: &str) -> io::Result<Option<String>> {
    let mut buf = [0u8; 512];
    match rustix::fs::lgetxattr(path, name, &mut buf) {
        Ok(n) => Ok(Some(String::from_utf8_lossy(&buf[..n]).into_owned())),
        Err(rustix::io::Errno::NODATA) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
#[path = "markers_tests.rs"]
mod tests;
