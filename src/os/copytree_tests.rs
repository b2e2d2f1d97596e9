use super::*;
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

fn cpath(path: &Path) -> CString {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = cpath(path);
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: buffer valid for its length.
    let len = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), 256) };
    (len >= 0).then(|| buf[..len as usize].to_vec())
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) -> bool {
    let p = cpath(path);
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

/// What the test runs at the seam: the directory being read and the entry's name.
type Hook = Box<dyn FnMut(BorrowedFd, &CStr)>;

thread_local! {
    /// Runs in the walk between holding an entry (O_PATH) and opening it for its data: where a
    /// copy that opened by name again would meet whatever was swapped in.
    static BEFORE_OPEN: std::cell::RefCell<Option<Hook>> =
        const { std::cell::RefCell::new(None) };
}

/// The seam: what the test set for this thread, run at the moment a pod could swap an entry.
pub(super) fn before_open(dir: BorrowedFd, name: &CStr) {
    BEFORE_OPEN.with(|h| {
        if let Some(hook) = h.borrow_mut().as_mut() {
            hook(dir, name)
        }
    });
}

/// inotify IN_OPEN events on `path`, read without blocking.
struct OpenWatch(OwnedFd);

impl OpenWatch {
    fn new(path: &Path) -> Self {
        // SAFETY: plain syscalls; the path is NUL-terminated.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        assert!(fd >= 0);
        let p = cpath(path);
        assert!(unsafe { libc::inotify_add_watch(fd, p.as_ptr(), libc::IN_OPEN) } >= 0);
        OpenWatch(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn opened(&self) -> bool {
        let mut buf = [0u8; 4096];
        // SAFETY: the buffer is valid for its length.
        let n = unsafe { libc::read(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        n > 0
    }
}

#[test]
fn a_file_swapped_for_a_fifo_before_its_open_is_never_opened() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir(&src).unwrap();
    fs::create_dir(&dst).unwrap();
    fs::write(src.join("f"), b"data").unwrap();
    fs::write(src.join("g"), b"kept").unwrap();
    let fifo = src.join("f");
    let (tx, rx) = std::sync::mpsc::channel();
    let watch: std::sync::Arc<std::sync::Mutex<Option<OpenWatch>>> = Default::default();
    let w = watch.clone();
    let into = dst.clone();
    std::thread::spawn(move || {
        BEFORE_OPEN.with(|h| {
            *h.borrow_mut() = Some(Box::new(move |_, name: &CStr| {
                if name.to_bytes() == b"f" && w.lock().unwrap().is_none() {
                    fs::remove_file(&fifo).unwrap();
                    let p = cpath(&fifo);
                    // SAFETY: a valid path.
                    assert_eq!(unsafe { libc::mkfifo(p.as_ptr(), 0o644) }, 0);
                    *w.lock().unwrap() = Some(OpenWatch::new(&fifo));
                }
            }))
        });
        let _ = tx.send(copy_tree(&src, &into, Mode::Copy).map_err(|e| e.to_string()));
    });
    let done = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the copy hangs on a fifo swapped in for a file");
    done.unwrap();
    let watch = watch.lock().unwrap();
    assert!(
        !watch.as_ref().expect("the swap happened").opened(),
        "the copy opened the fifo"
    );
    assert_eq!(fs::read(dst.join("g")).unwrap(), b"kept");
}

#[test]
fn entries_removed_or_renamed_after_their_listing_are_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir_all(src.join("dir/inner")).unwrap();
    fs::create_dir(&dst).unwrap();
    fs::write(src.join("dir/inner/f"), b"x").unwrap();
    fs::write(src.join("file"), b"y").unwrap();
    fs::write(src.join("kept"), b"z").unwrap();
    let (s2, into) = (src.clone(), dst.clone());
    let from = src.clone();
    let done = std::thread::spawn(move || {
        BEFORE_OPEN.with(|h| {
            *h.borrow_mut() = Some(Box::new(move |_, name: &CStr| match name.to_bytes() {
                // Held, then removed with all it holds: copied empty.
                b"dir" => fs::remove_dir_all(s2.join("dir")).unwrap(),
                // Held, then renamed away: the held file is still copied.
                b"file" => fs::rename(s2.join("file"), s2.join("..").join("moved")).unwrap(),
                _ => {}
            }))
        });
        copy_tree(&from, &into, Mode::Copy)
    })
    .join()
    .unwrap();
    done.unwrap();
    assert!(dst.join("dir").is_dir());
    assert_eq!(fs::read(dst.join("file")).unwrap(), b"y");
    assert_eq!(fs::read(dst.join("kept")).unwrap(), b"z");
}
