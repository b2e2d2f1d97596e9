//! The hostpath backend's fixture: where its volumes live, how their ids read, what its state
//! journal holds, and what "nothing leaked" means for it.

use super::*;

impl Driver {
    pub fn volume_dir(&self, name: &str) -> PathBuf {
        self.base().join(name)
    }

    pub fn volume_id(&self, name: &str) -> String {
        format!("hostpath/{NODE}/{name}")
    }

    /// The names of the hostpath volume records in the state journal.
    pub fn state_records(&self) -> Vec<String> {
        let dir = self.state_dir().join("journal");
        if !dir.exists() {
            return Vec::new();
        }
        let live = ferrovol::state::journal::peek(&dir).expect("read the state journal");
        let mut out: Vec<String> = live
            .keys()
            .filter_map(|k| k.strip_prefix("hostpath/"))
            .map(str::to_string)
            .collect();
        out.sort();
        out
    }

    /// The committed record of volume `name`, as JSON, if there is one.
    pub fn state_record(&self, name: &str) -> Option<serde_json::Value> {
        let live = ferrovol::state::journal::peek(&self.state_dir().join("journal")).ok()?;
        let bytes = live.get(&format!("hostpath/{name}"))?;
        Some(serde_json::from_slice(bytes).expect("records are JSON"))
    }

    /// Names in the hostpath base directory.
    pub fn base_entries(&self) -> Vec<String> {
        dir_names(self.base())
    }

    /// Asserts nothing of any volume is left: no volume directory, no record, no mount or
    /// loop device under the scratch directory except those listed in `keep_mounts`.
    pub fn assert_nothing_leaked(&self, keep_mounts: &[&Path]) {
        assert_eq!(
            self.base_entries(),
            Vec::<String>::new(),
            "hostpath base is not empty"
        );
        assert_eq!(
            self.state_records(),
            Vec::<String>::new(),
            "volume records left behind"
        );
        let mounts: Vec<PathBuf> = mounts_under(self.root())
            .into_iter()
            .map(|m| m.mount_point)
            .filter(|p| !keep_mounts.contains(&p.as_path()))
            .collect();
        assert_eq!(
            mounts,
            Vec::<PathBuf>::new(),
            "mounts left under the scratch dir"
        );
        let loops: Vec<(String, String)> = loop_devices_under(self.base());
        assert_eq!(
            loops,
            Vec::<(String, String)>::new(),
            "loop devices left on volume images"
        );
    }
}
