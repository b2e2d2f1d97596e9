use super::*;
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = cstr(path.as_os_str()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: buffer valid for its length.
    let len = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), 256) };
    (len >= 0).then(|| buf[..len as usize].to_vec())
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) -> bool {
    let p = cstr(path.as_os_str()).unwrap();
    let n = CString::new(name).unwrap();
    // SAFETY: valid strings and buffer.
    unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        ) == 0
    }
}

#[test]
fn copy_keeps_links_holes_modes_and_xattrs_and_never_follows_symlinks() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::create_dir(&dst).unwrap();
    fs::write(src.join("sub/a"), b"hello").unwrap();
    fs::set_permissions(src.join("sub/a"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::hard_link(src.join("sub/a"), src.join("a-link")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", src.join("outside")).unwrap();
    let mut sparse = File::create(src.join("sparse")).unwrap();
    sparse.seek(SeekFrom::Start(64 << 20)).unwrap();
    sparse.write_all(b"end").unwrap();
    drop(sparse);
    let have_user_xattr = set_xattr(&src.join("sub/a"), "user.color", b"blue");
    assert!(set_xattr(&src, "trusted.ferrovol.volume", b"v") || unsafe { libc::geteuid() } != 0);

    let stats = copy_tree(&src, &dst, Mode::Copy).unwrap();
    assert_eq!(fs::read(dst.join("sub/a")).unwrap(), b"hello");
    assert_eq!(
        fs::metadata(dst.join("sub/a")).unwrap().mode() & 0o777,
        0o640
    );
    let (a, l) = (
        fs::metadata(dst.join("sub/a")).unwrap(),
        fs::metadata(dst.join("a-link")).unwrap(),
    );
    assert_eq!(a.ino(), l.ino(), "hard link preserved");
    assert_eq!(stats.hard_links, 1);
    assert_eq!(
        fs::read_link(dst.join("outside")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert!(fs::symlink_metadata(dst.join("outside"))
        .unwrap()
        .file_type()
        .is_symlink());
    let sp = fs::metadata(dst.join("sparse")).unwrap();
    assert_eq!(sp.len(), (64 << 20) + 3);
    assert!(
        sp.blocks() * 512 < 1 << 20,
        "hole kept: {} blocks",
        sp.blocks()
    );
    if have_user_xattr {
        assert_eq!(
            xattr(&dst.join("sub/a"), "user.color").as_deref(),
            Some(&b"blue"[..])
        );
    }
    assert_eq!(
        xattr(&dst, "trusted.ferrovol.volume"),
        None,
        "markers are not copied"
    );
}

#[test]
fn reflink_mode_falls_back_to_copy_where_unsupported() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("s"), tmp.path().join("d"));
    fs::create_dir(&src).unwrap();
    fs::create_dir(&dst).unwrap();
    fs::write(src.join("f"), vec![1u8; 10_000]).unwrap();
    let stats = copy_tree(&src, &dst, Mode::Reflink).unwrap();
    assert_eq!(fs::read(dst.join("f")).unwrap(), vec![1u8; 10_000]);
    assert_eq!(stats.files, 1);
    assert_eq!(stats.reflinked == 1, reflink_supported(tmp.path()).unwrap());
}
