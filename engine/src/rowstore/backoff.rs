//! Waiting between tries while a server fails over (below the seam: the PostgreSQL
//! engine's opens use it, and so do the store's reads, commits and lock takes).

use crate::error::Error;
use crate::observe;

/// Waits between tries while a server fails over: 50 ms, doubling up to 1 s, until
/// `Options::failover_timeout` has passed since the first failure (not since the call
/// began: a call whose first try waited out a dead host's TCP timeout still gets the
/// whole window to find the new primary).
pub(crate) struct Backoff {
    window: Option<std::time::Duration>,
    deadline: Option<std::time::Instant>,
    delay: std::time::Duration,
    /// When the first wait began (for the failover metrics, recorded on drop).
    waiting_since: Option<std::time::Instant>,
    /// The deadline passed while the failure was still one that may pass.
    gave_up: bool,
}

impl Backoff {
    /// Tries for `window` from the first failure (`None`: no second try).
    pub(crate) fn within(window: Option<std::time::Duration>) -> Self {
        Self {
            window,
            deadline: None,
            delay: std::time::Duration::from_millis(50),
            waiting_since: None,
            gave_up: false,
        }
    }

    /// After the failure `e`: sleeps and says true when another try is worth it.
    pub(crate) fn again(&mut self, e: &Error) -> bool {
        let Some(window) = self.window else {
            return false;
        };
        let now = std::time::Instant::now();
        if !e.is_transient_server() {
            return false;
        }
        let deadline = *self.deadline.get_or_insert(now + window);
        if now >= deadline {
            self.gave_up = true;
            return false;
        }
        if self.waiting_since.is_none() {
            self.waiting_since = Some(now);
            tracing::info!(target: "sealkv::failover", "the server is unreachable or read-only; trying again");
        }
        std::thread::sleep(self.delay.min(deadline - now));
        self.delay = (self.delay * 2).min(std::time::Duration::from_secs(1));
        true
    }
}

impl Drop for Backoff {
    fn drop(&mut self) {
        if let Some(since) = self.waiting_since {
            let outcome = if self.gave_up { "gave_up" } else { "recovered" };
            observe::seconds(observe::FAILOVER_WAIT, since.elapsed());
            observe::count_by(observe::FAILOVER_WAITS, "outcome", outcome, 1);
            tracing::info!(
                target: "sealkv::failover",
                outcome,
                millis = since.elapsed().as_millis() as u64,
                "waited for the server"
            );
        }
    }
}
