//! A request to stop, from SIGTERM or SIGINT: systemd stopping the boot unit at shutdown, an
//! operator's Ctrl-C. The run ends at its next safe point (a phase boundary, or the end of the
//! child process that is running, which is sent the signal) instead of dying mid-write.

use nix::sys::signal::Signal;
use std::sync::atomic::{AtomicI32, Ordering};
use tokio::sync::Notify;

/// One stop request; the process has one (`STOP`), tests make their own.
pub struct Stop {
    signal: AtomicI32,
    notify: Notify,
}

pub static STOP: Stop = Stop::new();

impl Stop {
    pub const fn new() -> Self {
        Stop {
            signal: AtomicI32::new(0),
            notify: Notify::const_new(),
        }
    }

    /// Records the request (the first signal wins) and wakes every waiter.
    pub fn request(&self, signal: Signal) {
        let _ = self
            .signal
            .compare_exchange(0, signal as i32, Ordering::SeqCst, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// The signal that asked the run to stop, if one did.
    pub fn requested(&self) -> Option<Signal> {
        match self.signal.load(Ordering::SeqCst) {
            0 => None,
            n => Signal::try_from(n).ok(),
        }
    }

    /// Resolves once a stop is requested (at once if it already was).
    pub async fn wait(&self) -> Signal {
        loop {
            let notified = self.notify.notified();
            if let Some(s) = self.requested() {
                return s;
            }
            notified.await;
        }
    }
}

impl Default for Stop {
    fn default() -> Self {
        Self::new()
    }
}

/// The process's stop request, if any.
pub fn requested() -> Option<Signal> {
    STOP.requested()
}

/// Resolves once the process is asked to stop.
pub async fn wait() -> Signal {
    STOP.wait().await
}

/// Turns SIGTERM and SIGINT into stop requests for the rest of the process's life. A second
/// signal ends the process at once: whoever sends it has stopped waiting, and every write is
/// atomic, so this is no worse than SIGKILL.
pub fn install_handlers() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    for kind in [SignalKind::terminate(), SignalKind::interrupt()] {
        let mut stream = signal(kind)?;
        tokio::spawn(async move {
            let mut seen = false;
            while stream.recv().await.is_some() {
                if seen {
                    tracing::error!("second signal {}: exiting now", kind.as_raw_value());
                    std::process::exit(1);
                }
                seen = true;
                let Ok(sig) = Signal::try_from(kind.as_raw_value()) else {
                    continue;
                };
                tracing::warn!("received {}: stopping at the next safe point", sig.as_str());
                STOP.request(sig);
            }
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_wakes_a_waiter_and_the_first_signal_stays() {
        static S: Stop = Stop::new();
        let waiter = tokio::spawn(S.wait());
        tokio::task::yield_now().await;
        assert_eq!(S.requested(), None);
        S.request(Signal::SIGTERM);
        assert_eq!(waiter.await.unwrap(), Signal::SIGTERM);
        S.request(Signal::SIGINT);
        assert_eq!(S.wait().await, Signal::SIGTERM);
    }
}
