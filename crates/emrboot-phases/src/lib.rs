//! The phases of emrboot, one module each. Their order is `PhaseName::ORDER`; this crate only
//! says which phases are built.

// The async state machines of the phases nest the SDK's futures deeply; release builds need
// more than the default 128 levels to lay them out.
#![recursion_limit = "256"]

pub mod efs_mount;
pub mod install;
pub mod ip_takeover;
pub mod per_boot;
pub mod shutdown_hook;
pub mod tag;

use emrboot_runner::Phase;

/// Every phase that is built. A phase of the schema missing here fails loudly as
/// "not implemented" when selected: the runner never pretends it succeeded.
pub fn all() -> Vec<Box<dyn Phase>> {
    vec![
        Box::new(install::Install),
        Box::new(tag::Tag),
        Box::new(efs_mount::EfsMount::default()),
        Box::new(ip_takeover::IpTakeover::default()),
        Box::new(shutdown_hook::ShutdownHook),
    ]
}
