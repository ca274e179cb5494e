//! The phase runner: the `Phase` trait that each phase implements, the context they share, the
//! selection rules (table present, `--only`, roles), markers and the status of the last run.

pub mod actions;
pub mod context;
pub mod doors;
pub mod exit_code;
pub mod ip_owner;
pub mod markers;
pub mod phase;
pub mod run;
pub mod sink;
pub mod state;
pub mod status;

pub use actions::Actions;
pub use context::{Ctx, Node};
pub use doors::Doors;
pub use phase::{Phase, PhaseError, Precheck};
pub use run::{plan, run, stop_reason, PlanEntry, PlanReport, RunOptions, RunReport};
pub use state::StateDir;
pub use status::{Outcome, PhaseRecord, RunRecord};
