//! emrboot's door to the node's operating system. Each module is one outside system, behind a
//! small interface, so phases never touch the OS directly and tests can point it at a scratch root.

pub mod archive;
pub mod atomic;
pub mod command;
pub mod fstab;
pub mod mount;
pub mod nat;
pub mod netlink;
pub mod pkg;
pub mod root;
pub mod stop;
pub mod systemd;
pub mod timezone;

pub use root::Root;
