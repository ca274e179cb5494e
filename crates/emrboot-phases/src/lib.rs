//! The phases of emrboot, one module each. Their order is `PhaseName::ORDER`; this crate only
//! says which type implements each (`phase`, which the runner is handed).

// The async state machines of the phases nest the SDK's futures deeply; release builds need
// more than the default 128 levels to lay them out.
#![recursion_limit = "256"]

pub mod efs_mount;
pub mod install;
pub mod ip_takeover;
pub mod per_boot;
pub mod shutdown_hook;
pub mod tag;
#[cfg(test)]
mod testkit;

use emrboot_config::PhaseName;
use emrboot_runner::Phase;

/// The phase for NAME: a `match`, so a new `PhaseName` is a compile error until it is wired here.
pub fn phase(name: PhaseName) -> Box<dyn Phase> {
    match name {
        PhaseName::Install => Box::new(install::Install),
        PhaseName::Tag => Box::new(tag::Tag),
        PhaseName::EfsMount => Box::new(efs_mount::EfsMount::default()),
        PhaseName::IpTakeover => Box::new(ip_takeover::IpTakeover::default()),
        PhaseName::ShutdownHook => Box::new(shutdown_hook::ShutdownHook),
    }
}
