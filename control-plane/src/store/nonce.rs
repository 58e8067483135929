//! Request nonces: the name under which the script remembers a request it has counted.
//!
//! A nonce must be unique per request, or a new request would pass for a retry of another and
//! go uncounted, and the same in every retry of one request, which holds because a call is
//! built once and sent again as it is. Uniqueness by construction within a store (a counter
//! that never repeats), and across replicas by a random 64-bit prefix per store: two replicas
//! share a prefix with probability 2⁻⁶⁴, where random 64-bit nonces alone would collide by the
//! birthday bound among all requests in flight.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub(crate) struct NonceSource {
    prefix: u64,
    next: AtomicU64,
}

impl NonceSource {
    pub(crate) fn new() -> Self {
        Self::with_prefix(fastrand::u64(..))
    }

    pub(crate) fn with_prefix(prefix: u64) -> Self {
        Self {
            prefix,
            next: AtomicU64::new(0),
        }
    }

    /// `<prefix, 16 hex digits>-<counter, hex>`: 18–33 bytes, readable in `redis-cli`.
    pub(crate) fn next(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}-{n:x}", self.prefix)
    }
}

#[cfg(test)]
mod tests;
