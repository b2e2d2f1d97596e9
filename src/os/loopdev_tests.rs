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

#[test]
fn a_detach_is_done_once_the_device_holds_another_file() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.img"), dir.path().join("b.img"));
    for img in [&a, &b] {
        File::create(img).unwrap().set_len(16 << 20).unwrap();
    }
    let dev = attach(&a, false).unwrap();
    let prober = File::open(&dev).unwrap();
    let waiting = dev.clone();
    let detaching = std::thread::spawn(move || detach(&waiting));
    std::thread::sleep(Duration::from_millis(300));
    // The prober closes: the kernel detaches `a`, and another volume's attach takes the freed
    // device at once for its own image.
    drop(prober);
    let rebound = (0..200).any(|_| {
        let ok = std::process::Command::new("losetup")
            .arg(&dev)
            .arg(&b)
            .status();
        ok.is_ok_and(|s| s.success()) || {
            std::thread::sleep(Duration::from_millis(1));
            false
        }
    });
    let answered = detaching.join().unwrap();
    let _ = detach(&dev);
    assert!(rebound, "losetup never bound {}", dev.display());
    assert!(
        answered.is_ok(),
        "detach of a's device answered {answered:?}"
    );
}
