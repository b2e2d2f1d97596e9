//! Hotplug from the kernel's uevent netlink socket (NETLINK_KOBJECT_UEVENT, group 1). This
//! works with or without udevd (udevd's own re-broadcast is group 2, which we do not need),
//! but only in the host's network namespace: a node plugin pod needs `hostNetwork: true`.
//! The socket is read by one dedicated std thread, so nothing blocks the async runtime.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

const NETLINK_KOBJECT_UEVENT: libc::c_int = 15;
/// How long a recv waits before the thread checks whether it should stop.
const POLL: Duration = Duration::from_millis(200);

/// One kernel uevent for a block device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uevent {
    /// add, remove, change, ...
    pub action: String,
    /// /devices/virtual/block/loop0
    pub devpath: String,
    /// The kernel name: the last component of DEVPATH.
    pub kernel_name: String,
    /// disk or partition
    pub devtype: Option<String>,
}

pub enum Event {
    Block(Uevent),
    /// The socket overflowed (ENOBUFS): events were lost, rescan everything.
    Lost,
}

/// Parses one kernel message ("ACTION@DEVPATH\0KEY=VALUE\0..."); None unless it is a block
/// device event.
pub fn parse(buf: &[u8]) -> Option<Uevent> {
    let mut parts = buf.split(|&b| b == 0).map(String::from_utf8_lossy);
    let header = parts.next()?;
    header.split_once('@')?;
    let (mut action, mut devpath, mut subsystem, mut devtype) = (None, None, None, None);
    for kv in parts {
        if let Some((k, v)) = kv.split_once('=') {
            match k {
                "ACTION" => action = Some(v.to_string()),
                "DEVPATH" => devpath = Some(v.to_string()),
                "SUBSYSTEM" => subsystem = Some(v.to_string()),
                "DEVTYPE" => devtype = Some(v.to_string()),
                _ => {}
            }
        }
    }
    if subsystem.as_deref() != Some("block") {
        return None;
    }
    let devpath = devpath?;
    let kernel_name = devpath.rsplit('/').next()?.to_string();
    Some(Uevent {
        action: action?,
        devpath,
        kernel_name,
        devtype,
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
        let sock = open_socket()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("uevent-monitor".into())
            .spawn(move || {
                // Move the whole descriptor in (not just its number): it closes with the thread.
                let sock = sock;
                let mut buf = vec![0u8; 16 * 1024];
                while !flag.load(Ordering::Relaxed) {
                    // SAFETY: recv into a buffer we own, of the length we pass.
                    let n = unsafe { libc::recv(sock.0, buf.as_mut_ptr().cast(), buf.len(), 0) };
                    let keep_going = if n < 0 {
                        match io::Error::last_os_error().raw_os_error() {
                            Some(libc::EAGAIN | libc::EINTR) => true,
                            Some(libc::ENOBUFS) => on_event(Event::Lost),
                            _ => {
                                tracing::error!(
                                    "uevent monitor: recv failed: {}",
                                    io::Error::last_os_error()
                                );
                                false
                            }
                        }
                    } else {
                        match parse(&buf[..n as usize]) {
                            Some(ev) => on_event(Event::Block(ev)),
                            None => true,
                        }
                    };
                    if !keep_going {
                        break;
                    }
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

struct Fd(libc::c_int);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: we own the descriptor.
        unsafe { libc::close(self.0) };
    }
}

fn open_socket() -> io::Result<Fd> {
    let err = |what: &str| {
        let e = io::Error::last_os_error();
        io::Error::new(e.kind(), format!("uevent netlink socket: {what}: {e}"))
    };
    // SAFETY: plain socket(2).
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            NETLINK_KOBJECT_UEVENT,
        )
    };
    if fd < 0 {
        return Err(err("socket"));
    }
    let sock = Fd(fd);
    // SAFETY: zeroed sockaddr_nl is valid; we set family and group 1 (kernel events).
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr.nl_groups = 1;
    // SAFETY: addr lives across the call; its size is passed.
    let rc = unsafe {
        libc::bind(
            fd,
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(err("bind"));
    }
    // A burst (a disk shelf powering on) must not overflow the socket: ask for 4 MiB
    // (FORCE works as root; the plain option is capped by rmem_max otherwise).
    let size: libc::c_int = 4 << 20;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: an int option of the size we pass.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            break;
        }
    }
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: POLL.as_micros() as libc::suseconds_t,
    };
    // SAFETY: a timeval option of the size we pass.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(err("SO_RCVTIMEO"));
    }
    Ok(sock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_block_events_only() {
        let msg = b"change@/devices/virtual/block/loop4\0ACTION=change\0DEVPATH=/devices/virtual/block/loop4\0SUBSYSTEM=block\0DEVNAME=loop4\0DEVTYPE=disk\0SEQNUM=4242\0";
        let ev = parse(msg).unwrap();
        assert_eq!(ev.action, "change");
        assert_eq!(ev.kernel_name, "loop4");
        assert_eq!(ev.devtype.as_deref(), Some("disk"));
        let net = b"add@/devices/virtual/net/veth0\0ACTION=add\0DEVPATH=/devices/virtual/net/veth0\0SUBSYSTEM=net\0";
        assert_eq!(parse(net), None);
        assert_eq!(parse(b"libudev\0garbage"), None);
    }
}
