//! Adjustments of counters after a response: a charge (units the upstream reported, added at
//! the time of the call without a room check, so a counter may go over its limit) and a
//! release (the entry a request recorded at admission, given back because its response did
//! not count).
//!
//! Each adjustment is applied at most once: it carries a name (`once`, unique per admitted
//! request and kind) that the store remembers for the longest window of its counters, so a
//! call sent again after a lost reply changes nothing.

/// What to do to the counters of one admitted request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Add `units` to every counter, at the store's time: an exact log gets one entry of that
    /// weight, a slotted counter adds them to the current slot.
    Charge { units: u64 },
    /// Remove from every counter the entry of `weight` units recorded at `recorded_us` (the
    /// store's time of the admission): from an exact log that entry (one entry of that time
    /// and weight: any such entry counts the same), from a slotted counter that many units of
    /// the slot it fell in, if that slot is still counted. An entry that has left the window
    /// releases nothing.
    Release { recorded_us: u64, weight: u64 },
}

/// One adjustment and the name under which it is applied once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adjustment {
    pub change: Change,
    /// Unique per admitted request and kind of change: `[0-9a-z]`, at most 40 bytes.
    pub once: String,
}

impl Adjustment {
    /// Whether `once` may be part of a storage key and a log member.
    pub fn is_valid(&self) -> bool {
        !self.once.is_empty()
            && self.once.len() <= 40
            && self
                .once
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
    }
}

/// Longest time an adjustment is remembered (µs). A call comes again only while the filter
/// retries it: three attempts, each within the longest `timeout_ms` (60 s) and a tick
/// (0.5 s), so under three minutes; five bound the records one identity can leave in Redis
/// (one key per adjustment) whatever its windows.
pub const MAX_REMEMBER_US: u64 = 300_000_000;

/// How long the once-record of an adjustment of these windows is kept (µs): the longest
/// window (after which a release finds nothing anyway), at least one second and at most
/// [`MAX_REMEMBER_US`].
pub fn remember_us(windows_us: impl IntoIterator<Item = u64>) -> u64 {
    windows_us
        .into_iter()
        .max()
        .unwrap_or(0)
        .clamp(1_000_000, MAX_REMEMBER_US)
}

#[cfg(test)]
mod tests;
