//! Where a run record goes besides the state dir: `[report]` publishes it for `emrboot cluster`.
//! The runner calls the sink at the same points it saves the status (start, each phase's start
//! and end, the end), so a node that dies mid-bootstrap is visible with the phase it died in.

use crate::status::RunRecord;
use std::future::Future;
use std::pin::Pin;

pub type Publishing<'a> = Pin<Box<dyn Future<Output = Option<String>> + Send + 'a>>;

pub trait RecordSink: Send + Sync {
    /// Publishes REC. Best effort and bounded by the sink itself: it never fails the run, and
    /// answers the error (to show in `status`) when it could not publish.
    fn publish<'a>(&'a self, rec: &'a RunRecord) -> Publishing<'a>;
}
