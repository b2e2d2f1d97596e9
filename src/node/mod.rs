//! The generic node side: *how* a volume appears at the paths the CO names (backends decide
//! *what*). `target`: a staging or target path, proven to lie under a publish root, created and
//! mounted through file descriptors so a symlink swapped in cannot redirect a mount.

pub mod target;

pub use target::Target;
