//! Keeps control-plane error logging from flooding Envoy's log.
//!
//! When the control plane is down every request fails the same way; one line per interval
//! (with the number of lines swallowed since) says as much as thousands per second.

/// Allows one message per `interval_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogThrottle {
    interval_secs: u64,
    last: Option<u64>,
    suppressed: u64,
}

impl LogThrottle {
    pub const fn new(interval_secs: u64) -> LogThrottle {
        LogThrottle {
            interval_secs,
            last: None,
            suppressed: 0,
        }
    }

    /// At time `now_secs`, returns `Some(suppressed)` if a message may be logged (with how many
    /// were swallowed since the last one), `None` if it should be dropped.
    pub fn allow(&mut self, now_secs: u64) -> Option<u64> {
        let due = match self.last {
            None => true,
            // A clock going backwards must not silence logging until it catches up again.
            Some(last) => now_secs < last || now_secs - last >= self.interval_secs,
        };
        if due {
            self.last = Some(now_secs);
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests;
