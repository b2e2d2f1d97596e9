//! The OS seam: the kernel calls of mounts, loop devices, quotas, statfs, xattrs, durable file
//! writes, netlink and the allocator live under this module, and so does every `unsafe` block
//! (the crate root denies unsafe code everywhere else).

#![allow(unsafe_code)]

pub mod beneath;
pub mod blkid;
pub mod blockdev;
pub mod btrfs;
pub mod caps;
pub mod copytree;
pub mod dirlock;
pub mod dirwalk;
pub mod filecopy;
pub mod fsutil;
pub mod inuse;
pub mod loopdev;
pub mod malloc;
pub mod markers;
pub mod mkfs;
pub mod mount;
pub mod mountfd;
pub mod mountinfo;
pub mod netlink;
pub mod nfscalls;
pub mod nfsmount;
pub mod perm;
pub mod quota;
pub mod rmtree;
pub mod statfs;
pub mod sys;
