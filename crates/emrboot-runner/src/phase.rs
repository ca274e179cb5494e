//! What every phase implements. Phases converge: they look at the node's real state and do
//! only what is missing, so `apply` on a finished node changes nothing.

use crate::Ctx;
use async_trait::async_trait;
use emrboot_config::PhaseName;
use std::fmt;

/// The result of a phase's check before anything on the node changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precheck {
    Run,
    /// The phase does not apply to this node, and why (e.g. a non-primary HA master).
    Skip(String),
}

#[async_trait]
pub trait Phase: Send + Sync {
    fn name(&self) -> PhaseName;

    /// Cheap checks of the config against this node, run for every selected phase before any
    /// phase changes anything: an error of kind `Invalid` ends the run with exit 2, untouched.
    async fn check(&self, ctx: &Ctx) -> Result<Precheck, PhaseError>;

    /// The actions `apply` would take now; empty when the node already converged. Read-only:
    /// no change on the node, no mutating AWS call.
    async fn plan(&self, ctx: &Ctx) -> Result<Vec<String>, PhaseError>;

    /// Converges the node and returns the actions it took (empty: nothing was missing).
    async fn apply(&self, ctx: &Ctx) -> Result<Vec<String>, PhaseError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad config or environment, found before anything changed (exit 2).
    Invalid,
    /// The phase tried and failed (exit 1 when the phase is required).
    Failed,
}

#[derive(Debug)]
pub struct PhaseError {
    pub kind: ErrorKind,
    pub error: anyhow::Error,
}

impl PhaseError {
    pub fn invalid(error: impl Into<anyhow::Error>) -> Self {
        PhaseError {
            kind: ErrorKind::Invalid,
            error: error.into(),
        }
    }

    pub fn failed(error: impl Into<anyhow::Error>) -> Self {
        PhaseError {
            kind: ErrorKind::Failed,
            error: error.into(),
        }
    }
}

impl fmt::Display for PhaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `{:#}` prints anyhow's whole context chain on one line.
        write!(f, "{:#}", self.error)
    }
}

impl<E: Into<anyhow::Error>> From<E> for PhaseError {
    fn from(e: E) -> Self {
        PhaseError::failed(e)
    }
}
