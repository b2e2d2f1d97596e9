//! Process capabilities. The image gives the binary CAP_NET_BIND_SERVICE as a permitted-only
//! file capability: a container whose bounding set lacks it (drop: ALL) still executes the
//! binary (an effective file capability it cannot grant makes exec fail with EPERM), and the
//! one container that adds it (the NFS controller, which binds reserved source ports) gets it
//! in its permitted set, from which the process raises it here.

use rustix::thread::{capabilities, set_capabilities, CapabilitySet};
use std::io;

/// Makes CAP_NET_BIND_SERVICE effective when the process holds it in its permitted set.
/// Returns whether it is effective now.
pub fn raise_net_bind_service() -> io::Result<bool> {
    let mut caps = capabilities(None)?;
    let bind = CapabilitySet::NET_BIND_SERVICE;
    if caps.effective.contains(bind) {
        return Ok(true);
    }
    if !caps.permitted.contains(bind) {
        return Ok(false);
    }
    caps.effective |= bind;
    set_capabilities(None, caps)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_permitted_capability_is_raised_on_the_calling_thread() {
        // Capabilities are per thread: this one's changes stay with it.
        std::thread::spawn(|| {
            let mut caps = capabilities(None).unwrap();
            if !caps.permitted.contains(CapabilitySet::NET_BIND_SERVICE) {
                eprintln!("skipped: CAP_NET_BIND_SERVICE is not permitted here");
                return;
            }
            caps.effective.remove(CapabilitySet::NET_BIND_SERVICE);
            set_capabilities(None, caps).unwrap();
            assert!(raise_net_bind_service().unwrap());
            let now = capabilities(None).unwrap();
            assert!(now.effective.contains(CapabilitySet::NET_BIND_SERVICE));
        })
        .join()
        .unwrap();
    }
}
