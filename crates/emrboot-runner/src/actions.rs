//! The actions a phase's converge path decides, in order. The same code runs for `plan`
//! (dry run: it only records) and for `run` (it does each action, then records it here, which
//! logs it as taken), so a run's record is its plan, and every phase's action lines read alike:
//! `outcome=changed` with the phase's name in `fields.phase` (design.md: one line per action).

use emrboot_config::PhaseName;

pub struct Actions {
    phase: PhaseName,
    dry_run: bool,
    list: Vec<String>,
}

impl Actions {
    pub fn new(phase: PhaseName, dry_run: bool) -> Self {
        Actions {
            phase,
            dry_run,
            list: Vec::new(),
        }
    }

    /// True for `plan`: decide, record, change nothing.
    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    /// Records an action the phase just took (or, in a dry run, would take).
    pub fn did(&mut self, action: impl Into<String>) {
        let action = action.into();
        if !self.dry_run {
            tracing::info!(phase = self.phase.as_str(), outcome = "changed", "{action}");
        }
        self.list.push(action);
    }

    /// Records each of `actions`, in order (a shared step's list, such as the boot unit's).
    pub fn did_all(&mut self, actions: impl IntoIterator<Item = String>) {
        for a in actions {
            self.did(a);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn into_vec(self) -> Vec<String> {
        self.list
    }
}
