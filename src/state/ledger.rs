//! One backend's volume records: an in-memory index over the shared journal. Every change is
//! committed before the index shows it, so what a reader sees is always durable.

use super::group_commit::Ticket;
use super::journal::{Journal, Update};
use super::record::Record;
use crate::error::{Error, Result};
use std::borrow::Borrow;
use std::collections::{BTreeSet, HashMap};
use std::io;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

/// One indexed record, ordered and looked up by its name. Boxed, so the B-tree's nodes hold
/// pointers rather than whole records (a node is mostly empty slots), and keyed by the record's
/// own name rather than a copy of it: with 10,000 volumes this halves the index's memory.
struct Entry<R>(Box<R>);

impl<R: Record> PartialEq for Entry<R> {
    fn eq(&self, other: &Self) -> bool {
        self.0.name() == other.0.name()
    }
}
impl<R: Record> Eq for Entry<R> {}
impl<R: Record> PartialOrd for Entry<R> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<R: Record> Ord for Entry<R> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.name().cmp(other.0.name())
    }
}
impl<R: Record> Borrow<str> for Entry<R> {
    fn borrow(&self) -> &str {
        self.0.name()
    }
}

/// Whether `id` ends in `/<name>`: then the id leads to its record through the name alone.
fn id_spells_name(id: &str, name: &str) -> bool {
    id.rsplit_once('/').is_some_and(|(_, last)| last == name)
}

struct Index<R> {
    volumes: BTreeSet<Entry<R>>,
    /// id -> name, only for ids that do not end in their volume's name (long names get
    /// shortened ids that cannot be parsed back); every other id is found by its last part.
    odd_ids: HashMap<String, String>,
    reserved_bytes: u64,
    /// node id -> volumes ControllerPublished to it
    published_per_node: HashMap<String, usize>,
}

impl<R: Record> Index<R> {
    fn insert(&mut self, rec: R) {
        self.remove(rec.name());
        self.reserved_bytes += rec.capacity_bytes();
        for node in rec.published_nodes() {
            *self.published_per_node.entry(node.to_string()).or_default() += 1;
        }
        if !id_spells_name(rec.id(), rec.name()) {
            self.odd_ids
                .insert(rec.id().to_string(), rec.name().to_string());
        }
        self.volumes.insert(Entry(Box::new(rec)));
    }

    fn remove(&mut self, name: &str) -> Option<R> {
        let rec = *self.volumes.take(name)?.0;
        if !id_spells_name(rec.id(), rec.name()) {
            self.odd_ids.remove(rec.id());
        }
        for node in rec.published_nodes() {
            if let Some(n) = self.published_per_node.get_mut(node) {
                *n -= 1;
            }
        }
        self.reserved_bytes -= rec.capacity_bytes();
        Some(rec)
    }

    fn get(&self, name: &str) -> Option<&R> {
        self.volumes.get(name).map(|e| &*e.0)
    }

    fn by_id(&self, id: &str) -> Option<&R> {
        let direct = id
            .rsplit_once('/')
            .and_then(|(_, last)| self.get(last))
            .filter(|r| r.id() == id);
        direct.or_else(|| self.get(self.odd_ids.get(id)?))
    }
}

/// A record change queued in the journal: acknowledged, and shown by the index, only once its
/// batch is durable. Wait for `ticket` (on a thread or as a task), then settle `pending`.
#[must_use = "a queued change counts only once it is settled"]
pub struct Queued<R> {
    pub ticket: Ticket,
    pub pending: Pending<R>,
}

/// The index change a queued record change makes once durable.
#[must_use = "a queued change counts only once it is settled"]
pub struct Pending<R> {
    id: String,
    change: Change<R>,
}

enum Change<R> {
    Put(Box<R>),
    Remove(String),
}

impl<R: Record> Queued<R> {
    /// Waits for the batch on this thread, then settles.
    pub fn wait(self, ledger: &Ledger<R>) -> Result<()> {
        let outcome = ledger.journal.wait(self.ticket);
        self.pending.settle(ledger, outcome)
    }
}

impl<R: Record> Pending<R> {
    /// Applies the change to the index when its batch is durable (`outcome` Ok); otherwise
    /// the error, naming the volume.
    pub fn settle(self, ledger: &Ledger<R>, outcome: io::Result<()>) -> Result<()> {
        outcome.map_err(Error::state(&self.id))?;
        let mut index = ledger.lock();
        match self.change {
            Change::Put(rec) => index.insert(*rec),
            Change::Remove(name) => {
                index.remove(&name);
            }
        }
        Ok(())
    }
}

pub struct Ledger<R> {
    journal: Arc<Journal>,
    /// Key prefix of this backend's records in the journal: `<backend>/`.
    prefix: String,
    /// Shared with the metrics, which count its volumes at each scrape.
    index: Arc<Mutex<Index<R>>>,
}

impl<R: Send> crate::metrics::VolumeCount for Mutex<Index<R>> {
    fn volumes(&self) -> usize {
        self.lock().unwrap_or_else(|p| p.into_inner()).volumes.len()
    }
}

impl<R: Record> Ledger<R> {
    fn lock(&self) -> MutexGuard<'_, Index<R>> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The ledger of the records under `<key>/` in the journal, counted in the metrics as
    /// volumes of `backend` (several ledgers may count for one backend: hostpath pools).
    pub fn open_counted(
        journal: Arc<Journal>,
        key: &str,
        backend: &str,
        live: &HashMap<String, Vec<u8>>,
    ) -> io::Result<Self>
    where
        R: Send + 'static,
    {
        let prefix = format!("{key}/");
        let mut index = Index {
            volumes: BTreeSet::new(),
            odd_ids: HashMap::new(),
            reserved_bytes: 0,
            published_per_node: HashMap::new(),
        };
        for (key, value) in live.iter().filter(|(k, _)| k.starts_with(&prefix)) {
            index.insert(super::record::decode(key, value)?);
        }
        let index = Arc::new(Mutex::new(index));
        crate::metrics::count_volumes(backend, Arc::downgrade(&index) as _);
        Ok(Ledger {
            journal,
            prefix,
            index,
        })
    }

    fn key(&self, rec: &R) -> String {
        format!("{}{}", self.prefix, rec.name())
    }

    fn put(&self, rec: &R) -> io::Result<Update> {
        let key = self.key(rec);
        let value = serde_json::to_vec(rec).map_err(io::Error::other)?;
        Ok(Update::Put { key, value })
    }

    pub fn journal(&self) -> &Arc<Journal> {
        &self.journal
    }

    /// Commits `rec` and makes it the indexed version.
    pub fn save(&self, rec: R) -> Result<()> {
        self.queue_save(rec)?.wait(self)
    }

    /// Queues `rec` for the journal's next batch; it becomes the indexed version once that batch
    /// is durable (`Queued::settle`).
    pub fn queue_save(&self, rec: R) -> Result<Queued<R>> {
        let update = self.put(&rec).map_err(Error::state(rec.id()))?;
        self.queue(
            vec![update],
            rec.id().to_string(),
            Change::Put(Box::new(rec)),
        )
    }

    /// Commits several records at once (one sync): used when adopting older state.
    pub fn save_all(&self, recs: Vec<R>) -> io::Result<()> {
        let updates = recs
            .iter()
            .map(|r| self.put(r))
            .collect::<io::Result<_>>()?;
        self.journal.commit(updates)?;
        let mut index = self.lock();
        recs.into_iter().for_each(|r| index.insert(r));
        Ok(())
    }

    /// Commits the removal of a volume's record and drops it from the index.
    pub fn remove(&self, rec: &R) -> Result<()> {
        self.queue_remove(rec)?.wait(self)
    }

    /// Commits the removal of a volume's record together with `also` (one batch).
    pub fn remove_with(&self, rec: &R, also: Vec<Update>) -> Result<()> {
        self.queue_remove_with(rec, also)?.wait(self)
    }

    /// Queues the removal of a volume's record; it leaves the index once the batch is durable.
    pub fn queue_remove(&self, rec: &R) -> Result<Queued<R>> {
        self.queue_remove_with(rec, Vec::new())
    }

    fn queue_remove_with(&self, rec: &R, also: Vec<Update>) -> Result<Queued<R>> {
        let mut updates = vec![Update::Delete { key: self.key(rec) }];
        updates.extend(also);
        self.queue(
            updates,
            rec.id().to_string(),
            Change::Remove(rec.name().to_string()),
        )
    }

    fn queue(&self, updates: Vec<Update>, id: String, change: Change<R>) -> Result<Queued<R>> {
        let ticket = self.journal.submit(updates).map_err(Error::state(&id))?;
        let pending = Pending { id, change };
        Ok(Queued { ticket, pending })
    }

    /// Probe's check: the journal can take commits (its state dir is writable, no sync failed).
    pub fn check_writable(&self) -> Result<()> {
        let dir = self.journal.dir().display();
        let why = |e: io::Error| Error::Internal(format!("state dir {dir} is not writable: {e}"));
        self.journal.check_writable().map_err(why)
    }

    pub fn get(&self, name: &str) -> Option<R> {
        self.lock().get(name).cloned()
    }

    pub fn by_id(&self, id: &str) -> Option<R> {
        self.lock().by_id(id).cloned()
    }

    pub fn id_owner(&self, id: &str) -> Option<String> {
        self.lock().by_id(id).map(|r| r.name().to_string())
    }

    /// AlreadyExists when `id` belongs to a record other than `name` (ids are derived from names,
    /// so two names can meet on one id); `what` names the kind, "volume" or "snapshot".
    pub fn refuse_id_of_another(&self, id: &str, name: &str, what: &str) -> Result<()> {
        match self.id_owner(id).filter(|o| o != name) {
            Some(other) => Err(Error::exists(
                id,
                format!("this id already belongs to {what} {other:?}; choose another name"),
            )),
            None => Ok(()),
        }
    }

    pub fn records(&self) -> Vec<R> {
        self.lock().volumes.iter().map(|e| (*e.0).clone()).collect()
    }

    /// Calls `f` on every record, in name order, under the index's lock (so `f` must not
    /// call back into this ledger).
    pub fn for_each(&self, mut f: impl FnMut(&R)) {
        self.lock().volumes.iter().for_each(|e| f(&e.0));
    }

    pub fn is_empty(&self) -> bool {
        self.lock().volumes.is_empty()
    }

    /// Capacity promised to every recorded volume.
    pub fn reserved_bytes(&self) -> u64 {
        self.lock().reserved_bytes
    }

    pub fn published_count(&self, node: &str) -> usize {
        *self.lock().published_per_node.get(node).unwrap_or(&0)
    }

    /// One page of records in name order after `after`, mapped by `f`; `max` 0 means all. Also
    /// returns the name to resume after when more may follow.
    pub fn page<T>(
        &self,
        after: Option<&str>,
        max: usize,
        keep: impl Fn(&R) -> bool,
        f: impl Fn(&R) -> T,
    ) -> (Vec<T>, Option<String>) {
        let index = self.lock();
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut out = Vec::new();
        let mut last: Option<&str> = None;
        for rec in index
            .volumes
            .range::<str, _>((start, Bound::Unbounded))
            .map(|e| &*e.0)
            .filter(|r| keep(r))
        {
            if max != 0 && out.len() == max {
                return (out, last.map(str::to_string));
            }
            out.push(f(rec));
            last = Some(rec.name());
        }
        (out, None)
    }
}

#[cfg(test)]
#[path = "ledger_tests.rs"]
mod tests;
