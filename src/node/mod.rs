//! The generic node side, shared by the backends: *how* a volume appears at the paths the CO
//! names. Backends decide *what* to show (a directory, a loop device, a formatted disk); the
//! pieces here make it appear safely:
//!
//! - `target`: a staging or target path, proven to lie under a publish root, created and
//!   mounted through file descriptors so a symlink swapped in cannot redirect a mount.

pub mod target;

pub use target::Target;
