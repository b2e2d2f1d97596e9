//! Process capabilities. The image gives the binary CAP_NET_BIND_SERVICE as a permitted-only
//! file capability: a container whose bounding set lacks it (drop: ALL) still executes the
//! binary (an effective file capability it cannot grant makes exec fail with EPERM), and the
//! one container that adds it (the NFS controller, which binds reserved source ports) gets it
//! in its permitted set, from which the process raises it here.

use std::io;

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
const CAP_NET_BIND_SERVICE: u32 = 10;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Makes CAP_NET_BIND_SERVICE effective when the process holds it in its permitted set.
/// Returns whether it is effective now.
pub fn raise_net_bind_service() -> io::Result<bool> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget fills two CapData (version 3) for the calling thread.
    if unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let bit = 1u32 << CAP_NET_BIND_SERVICE;
    if data[0].effective & bit != 0 {
        return Ok(true);
    }
    if data[0].permitted & bit == 0 {
        return Ok(false);
    }
    data[0].effective |= bit;
    // SAFETY: capset reads the header and two CapData, which live across the call.
    if unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(true)
}
