//! The kernel's uevent netlink socket (NETLINK_KOBJECT_UEVENT, multicast group 1: the kernel's
//! own events, with or without udevd), through nix.

use nix::errno::Errno;
use nix::sys::socket::{self, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag};
use nix::sys::socket::{SockProtocol, SockType};
use nix::sys::time::TimeVal;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

pub struct UeventSocket(OwnedFd);

impl UeventSocket {
    /// Opens and binds the socket, so no event after this returns is missed; a receive waits
    /// at most `poll`.
    pub fn open(poll: Duration) -> io::Result<UeventSocket> {
        let fail = |what: &'static str| {
            move |e: Errno| {
                let e = io::Error::from(e);
                io::Error::new(e.kind(), format!("uevent netlink socket: {what}: {e}"))
            }
        };
        let fd = socket::socket(
            AddressFamily::Netlink,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkKObjectUEvent,
        )
        .map_err(fail("socket"))?;
        socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 1)).map_err(fail("bind"))?;
        // A burst (a disk shelf powering on) must not overflow the socket: ask for 4 MiB
        // (FORCE works as root; the plain option is capped by rmem_max otherwise).
        let size = 4 << 20;
        if socket::setsockopt(&fd, sockopt::RcvBufForce, &size).is_err() {
            let _ = socket::setsockopt(&fd, sockopt::RcvBuf, &size);
        }
        let timeout = TimeVal::new(0, poll.as_micros() as _);
        socket::setsockopt(&fd, sockopt::ReceiveTimeout, &timeout).map_err(fail("SO_RCVTIMEO"))?;
        Ok(UeventSocket(fd))
    }

    /// One message into `buf`: its length, or EAGAIN after the poll interval, or ENOBUFS when
    /// the socket overflowed and events were lost.
    pub fn recv(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        socket::recv(self.0.as_raw_fd(), buf, MsgFlags::empty())
    }
}
