//! Hotplug from the kernel's uevent netlink socket (NETLINK_KOBJECT_UEVENT, group 1). This
//! works with or without udevd (udevd's own re-broadcast is group 2, which we do not need),
//! but only in the host's network namespace: a node plugin pod needs `hostNetwork: true`.
//! The socket (`os::netlink`) is read by one dedicated std thread, so nothing blocks the async
//! runtime.

use crate::os::netlink::UeventSocket;
use nix::errno::Errno;
use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a recv waits before the thread checks whether it should stop.
const POLL: Duration = Duration::from_millis(200);

/// One kernel uevent for a block device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uevent {
    /// The kernel name: the last component of DEVPATH (/devices/virtual/block/loop0).
    pub kernel_name: String,
    /// For a partition (DEVTYPE), its disk's kernel name: the component before.
    pub parent: Option<String>,
}

pub enum Event {
    Block(Uevent),
    /// The socket overflowed (ENOBUFS): events were lost, rescan everything.
    Lost,
}

/// Parses one kernel message ("ACTION@DEVPATH\0KEY=VALUE\0..."); None unless it is a block
/// device event.
pub fn parse(buf: &[u8]) -> Option<Uevent> {
    let text = String::from_utf8_lossy(buf);
    let mut parts = text.split('\0');
    parts.next()?.split_once('@')?;
    let kv: HashMap<&str, &str> = parts.filter_map(|kv| kv.split_once('=')).collect();
    if kv.get("SUBSYSTEM") != Some(&"block") {
        return None;
    }
    let mut names = kv.get("DEVPATH")?.rsplit('/');
    kv.get("ACTION")?;
    let partition = kv.get("DEVTYPE") == Some(&"partition");
    Some(Uevent {
        kernel_name: names.next()?.to_string(),
        parent: names.next().filter(|_| partition).map(str::to_string),
    })
}

/// A running monitor thread; stopped and joined on drop.
pub struct Monitor {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Monitor {
    /// Opens the socket (so no event after this returns is missed) and starts the thread
    /// that calls `on_event` for each block uevent. `on_event` returning false stops it.
    pub fn start(mut on_event: impl FnMut(Event) -> bool + Send + 'static) -> io::Result<Monitor> {
        let sock = UeventSocket::open(POLL)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("uevent-monitor".into())
            .spawn(move || {
                // Moved in whole: the socket closes with the thread.
                let sock = sock;
                let mut buf = vec![0u8; 16 * 1024];
                let mut keep_going = true;
                while keep_going && !flag.load(Ordering::Relaxed) {
                    keep_going = match sock.recv(&mut buf) {
                        Ok(n) => parse(&buf[..n]).is_none_or(|ev| on_event(Event::Block(ev))),
                        Err(Errno::EAGAIN | Errno::EINTR) => true,
                        Err(Errno::ENOBUFS) => on_event(Event::Lost),
                        Err(e) => {
                            tracing::error!("uevent monitor: recv failed: {e}");
                            false
                        }
                    };
                }
            })?;
        Ok(Monitor {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            // The thread itself may drop the last owner (from inside on_event): never join
            // oneself; the flag ends the loop.
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_block_events_only() {
        let msg = b"change@/devices/virtual/block/loop4\0ACTION=change\0DEVPATH=/devices/virtual/block/loop4\0SUBSYSTEM=block\0DEVNAME=loop4\0DEVTYPE=disk\0SEQNUM=4242\0";
        let ev = parse(msg).unwrap();
        assert_eq!(ev.kernel_name, "loop4");
        assert_eq!(ev.parent, None);
        let part = b"add@/devices/virtual/block/loop4/loop4p1\0ACTION=add\0DEVPATH=/devices/virtual/block/loop4/loop4p1\0SUBSYSTEM=block\0DEVTYPE=partition\0";
        let ev = parse(part).unwrap();
        assert_eq!(
            (ev.kernel_name.as_str(), ev.parent.as_deref()),
            ("loop4p1", Some("loop4"))
        );
        let net = b"add@/devices/virtual/net/veth0\0ACTION=add\0DEVPATH=/devices/virtual/net/veth0\0SUBSYSTEM=net\0";
        assert_eq!(parse(net), None);
        assert_eq!(parse(b"libudev\0garbage"), None);
    }
}
