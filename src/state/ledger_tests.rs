use super::*;
use crate::state::VolumeRecord;
use crate::volume::AccessKind;

type Rec = VolumeRecord<()>;

fn rec(name: &str, cap: u64) -> Rec {
    VolumeRecord::new(
        format!("t/n/{name}"),
        name.into(),
        AccessKind::Mount,
        cap,
        (),
    )
}

fn open(dir: &std::path::Path) -> Ledger<Rec> {
    let (j, live) = Journal::open(dir).unwrap();
    Ledger::open_counted(j, "t", "t", &live).unwrap()
}

#[test]
fn saved_records_survive_reopen_and_keep_totals() {
    let dir = tempfile::tempdir().unwrap();
    let l = open(dir.path());
    l.save(rec("a", 10)).unwrap();
    let mut b = rec("b", 5);
    b.controller_published.insert("node1".into(), false);
    l.save(b).unwrap();
    l.remove(&rec("a", 10)).unwrap();
    drop(l);
    let l = open(dir.path());
    assert_eq!(l.records().len(), 1);
    assert_eq!(l.reserved_bytes(), 5);
    assert_eq!(l.published_count("node1"), 1);
    assert_eq!(l.by_id("t/n/b").unwrap().name, "b");
    assert!(l.by_id("t/n/a").is_none());
}

#[test]
fn pages_resume_after_the_last_name() {
    let dir = tempfile::tempdir().unwrap();
    let l = open(dir.path());
    let names: Vec<String> = (0..5).map(|i| format!("v{i}")).collect();
    l.save_all(names.iter().map(|n| rec(n, 1)).collect())
        .unwrap();
    let (first, next) = l.page(None, 2, |_| true, |r| r.name.clone());
    assert_eq!(first, ["v0", "v1"]);
    let (second, next) = l.page(next.as_deref(), 2, |_| true, |r| r.name.clone());
    assert_eq!(second, ["v2", "v3"]);
    let (third, next) = l.page(next.as_deref(), 2, |_| true, |r| r.name.clone());
    assert_eq!(third, ["v4"]);
    assert!(next.is_none());
}

#[test]
fn two_backends_share_one_journal_without_seeing_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let (j, live) = Journal::open(dir.path()).unwrap();
    let a: Ledger<Rec> = Ledger::open_counted(j.clone(), "a", "a", &live).unwrap();
    let b: Ledger<Rec> = Ledger::open_counted(j, "b", "b", &live).unwrap();
    a.save(rec("x", 1)).unwrap();
    b.save(rec("y", 1)).unwrap();
    drop((a, b));
    let (j, live) = Journal::open(dir.path()).unwrap();
    let a: Ledger<Rec> = Ledger::open_counted(j, "a", "a", &live).unwrap();
    assert_eq!(a.records().len(), 1);
    assert!(a.get("x").is_some());
}
