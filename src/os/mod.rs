//! The OS seam: every call that touches the kernel (mounts, loop devices, quotas, statfs,
//! xattrs, durable file writes) lives under this module and nowhere else.

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
pub mod loopdev;
pub mod markers;
pub mod mkfs;
pub mod mount;
pub mod mountfd;
pub mod mountinfo;
pub mod nfscalls;
pub mod nfsmount;
pub mod perm;
pub mod quota;
pub mod rmtree;
pub mod statfs;
pub mod sys;
