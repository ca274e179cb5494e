//! The phase runner: the `Phase` trait that each phase implements, the context they share, the
//! selection rules (table present, `--only`, roles), markers and the status of the last run.

pub mod context;
pub mod exit_code;
pub mod ip_owner;
pub mod phase;
pub mod run;
pub mod sink;
pub mod state;
pub mod status;

pub use context::{Ctx, Node};
pub use phase::{Phase, PhaseError, Precheck};
pub use run::{plan, run, stop_reason, PlanEntry, PlanReport, RunOptions, RunReport};
pub use state::StateDir;
pub use status::{Outcome, PhaseRecord, RunRecord};
