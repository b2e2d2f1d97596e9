//! Loop devices over real image files (root only).

use super::*;

fn root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
fn a_detach_answers_ok_only_once_the_device_is_free() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    File::create(&img).unwrap().set_len(16 << 20).unwrap();
    let dev = attach(&img, false).unwrap();
    // Another process probing the device (udev, blkid, a discovery scan) holds it open: the
    // kernel defers the detach to its last close.
    let prober = File::open(&dev).unwrap();
    let answered = detach(&dev);
    let attached = find_by_backing_file(&img).unwrap();
    assert!(
        answered.is_err() || attached.is_empty(),
        "detach answered {answered:?} while {attached:?} stays attached"
    );
    drop(prober);
    detach(&dev).unwrap();
    assert_eq!(find_by_backing_file(&img).unwrap(), vec![]);
}
