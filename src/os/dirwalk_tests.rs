use super::*;
use std::fs;
use std::path::Path;

fn open(path: &Path) -> OwnedFd {
    fs::File::open(path).unwrap().into()
}

/// Walks the whole tree below `root` and returns the relative paths of everything found.
fn walk_all(root: &Path) -> Vec<String> {
    let mut cur = Cursor::new(open(root)).unwrap();
    let mut out = Vec::new();
    loop {
        let Some(name) = cur.next_entry().unwrap() else {
            if cur.depth() == 0 {
                break;
            }
            cur.pop().unwrap();
            continue;
        };
        out.push(cur.describe(Some(&name)));
        if let Ok(fd) = open_dir_at(cur.fd().unwrap(), &name) {
            cur.push(&name, fd).unwrap();
        }
    }
    out.sort();
    out
}

#[test]
fn a_walk_deeper_than_its_open_budget_resumes_every_level_where_it_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let mut dir = tmp.path().to_path_buf();
    let mut expected = Vec::new();
    let mut rel = String::new();
    for level in 0..3 * MAX_OPEN {
        for f in ["a", "z"] {
            fs::write(dir.join(f), b"").unwrap();
            expected.push(format!("{rel}{f}"));
        }
        dir.push(format!("d{level}"));
        fs::create_dir(&dir).unwrap();
        rel.push_str(&format!("d{level}"));
        expected.push(rel.clone());
        rel.push('/');
    }
    expected.sort();
    assert_eq!(walk_all(tmp.path()), expected);
}

#[test]
fn a_closed_level_replaced_by_another_directory_is_gone_and_a_moved_one_is_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let mut deep = tmp.path().join("top");
    for i in 0..MAX_OPEN + 2 {
        deep.push(format!("d{i}"));
    }
    fs::create_dir_all(&deep).unwrap();
    let mut cur = Cursor::new(open(tmp.path())).unwrap();
    while let Some(name) = cur.next_entry().unwrap() {
        let fd = open_dir_at(cur.fd().unwrap(), &name).unwrap();
        cur.push(&name, fd).unwrap();
    }
    assert_eq!(cur.depth(), MAX_OPEN + 3);
    // `top`, `d0` and `d1` have no descriptor open by now. `d1` moves out of `d0`, whose own
    // place is taken by a new, empty `d0`; `top/d0/d1`'s chain below moved along with it.
    fs::rename(tmp.path().join("top/d0/d1"), tmp.path().join("x")).unwrap();
    fs::rename(tmp.path().join("top/d0"), tmp.path().join("y")).unwrap();
    fs::create_dir(tmp.path().join("top/d0")).unwrap();
    while cur.depth() > 3 {
        assert!(
            cur.pop().unwrap(),
            "the moved chain is followed through '..'"
        );
    }
    assert_eq!(cur.name().to_bytes(), b"d1");
    assert!(
        !cur.pop().unwrap(),
        "d0 is neither d1's parent nor at its name any more"
    );
    assert!(cur.fd().is_none());
    assert_eq!(cur.next_entry().unwrap(), None);
    assert!(cur.pop().unwrap(), "top is found again by name");
    assert_eq!(cur.name().to_bytes(), b"top");
    assert!(cur.fd().is_some());
}
