//! Reading and writing extended attributes by hand (tests that plant or damage markers).

use std::path::Path;

pub fn set_xattr(path: &Path, name: &str, value: &str) {
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: valid C strings and buffer.
    let rc = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "setxattr {name} on {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

pub fn get_xattr(path: &Path, name: &str) -> Option<String> {
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = [0u8; 256];
    // SAFETY: valid C strings; the buffer is valid for its length.
    let len =
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| String::from_utf8_lossy(&buf[..len as usize]).into_owned())
}

/// Removes xattr `name` from `path` (absent is fine).
pub fn remove_xattr(path: &Path, name: &str) {
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: two valid NUL-terminated strings.
    let rc = unsafe { libc::lremovexattr(p.as_ptr(), n.as_ptr()) };
    let err = std::io::Error::last_os_error();
    assert!(
        rc == 0 || err.raw_os_error() == Some(libc::ENODATA),
        "remove {name} from {}: {err}",
        path.display()
    );
}
