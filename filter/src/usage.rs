//! What the requests of one worker report after their responses
//! ([`rl_wire::USAGE_PATH`]): the units the upstream charged (the plugin's `charge_header`, in
//! the response headers or trailers, cut to the rule's `max_charge`) and the releases of
//! requests whose rule counts only some statuses (`count_statuses`) when their response had
//! another status or never came (a reset). Sent from the root context's tick, batched.
//!
//! A request's report leaves when its stream ends, so a charge in the trailers is seen. A
//! trailer's value replaces the headers' (an upstream that reports a running total ends with
//! the final one). An invalid value (not a non-negative integer) is counted and ignored. A
//! call that fails is sent again on later ticks, [`MAX_USAGE_ATTEMPTS`] times in all; what is
//! still undelivered is then dropped, counted and logged. The control plane applies each
//! charge and release once, so a report sent again after a lost answer counts once.

use std::collections::BTreeMap;

use rl_wire::{MAX_USAGE_PER_CALL, Usage, UsageItem, UsageRequest};

/// Sends of one report before it is dropped.
pub const MAX_USAGE_ATTEMPTS: u8 = 3;

/// Largest answer read from a usage call (two counts).
pub const MAX_USAGE_RESPONSE_BYTES: usize = 1024;

/// Longest charge value read: 20 digits hold every u64.
const MAX_CHARGE_DIGITS: usize = 20;

/// A charge value: ASCII digits, optional surrounding whitespace; `None` for anything else
/// (negative, fractional, several values, empty, too large).
pub fn parse_charge(raw: &[u8]) -> Option<u64> {
    let text = raw.trim_ascii();
    if text.is_empty() || text.len() > MAX_CHARGE_DIGITS || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// The status and the charge value (`charge_header`, matched case-insensitively; the first
/// line of that name) among a response's header `pairs`, read from the map the filter already
/// fetched: no host call of their own.
pub fn from_response<'a>(
    pairs: &[(&'a [u8], &'a [u8])],
    charge_header: &str,
) -> (Option<u16>, Option<&'a [u8]>) {
    let status = pairs
        .iter()
        .find(|(name, _)| *name == b":status")
        .and_then(|(_, value)| std::str::from_utf8(value).ok()?.parse().ok());
    let charge = pairs
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(charge_header.as_bytes()))
        .map(|(_, value)| *value);
    (status, charge)
}

/// What a charge header or trailer came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChargeRead {
    /// Kept for the request's report (cut to `max_charge`).
    Taken(u64),
    /// Not a non-negative integer: ignored (count it).
    Invalid,
    /// The request holds no handle that takes charges: ignored.
    Unused,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Open {
    usage: Usage,
    /// The response's status, once its headers were seen.
    status: Option<u16>,
    charge: u64,
}

impl Open {
    /// The report of a request whose stream ended; `None` when there is nothing to say.
    fn report(self) -> Option<UsageItem> {
        let release = !self.usage.count_statuses.is_empty()
            && self
                .status
                .is_none_or(|status| !self.usage.count_statuses.contains(&status));
        (release || self.charge > 0).then_some(UsageItem {
            handle: self.usage.handle,
            charge: self.charge,
            release,
        })
    }
}

/// A report waiting to go, with how many times it went already.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    item: UsageItem,
    attempts: u8,
}

/// The usage handles of one engine's requests, by serial, and the reports on their way.
#[derive(Debug, Default)]
pub struct UsageBook {
    open: BTreeMap<u64, Open>,
    pending: Vec<Pending>,
    in_flight: BTreeMap<u32, Vec<Pending>>,
}

impl UsageBook {
    /// Reports wait to be sent (the tick is needed).
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// How many requests hold a handle.
    pub fn open(&self) -> usize {
        self.open.len()
    }

    /// The request `serial` was admitted with `usage`.
    pub fn hold(&mut self, serial: u64, usage: &Usage) {
        self.open.insert(
            serial,
            Open {
                usage: usage.clone(),
                status: None,
                charge: 0,
            },
        );
    }

    /// `usage` belongs to no live request (its stream ended before the answer came): no
    /// response, so a unit reserved is released.
    pub fn orphan(&mut self, usage: &Usage) {
        let open = Open {
            usage: usage.clone(),
            status: None,
            charge: 0,
        };
        if let Some(item) = open.report() {
            self.pending.push(Pending { item, attempts: 0 });
        }
    }

    /// The response of request `serial` has status `status`.
    pub fn status(&mut self, serial: u64, status: u16) {
        if let Some(open) = self.open.get_mut(&serial) {
            open.status = Some(status);
        }
    }

    /// A charge value in the response of request `serial` (a later one replaces an earlier).
    pub fn charge(&mut self, serial: u64, raw: &[u8]) -> ChargeRead {
        let Some(units) = parse_charge(raw) else {
            return ChargeRead::Invalid;
        };
        let Some(open) = self.open.get_mut(&serial) else {
            return ChargeRead::Unused;
        };
        let Some(max) = open.usage.max_charge else {
            return ChargeRead::Unused;
        };
        open.charge = units.min(max);
        ChargeRead::Taken(open.charge)
    }

    /// The request `serial` ended; true when it left a report to send.
    pub fn end(&mut self, serial: u64) -> bool {
        let Some(item) = self.open.remove(&serial).and_then(Open::report) else {
            return false;
        };
        self.pending.push(Pending { item, attempts: 0 });
        true
    }

    /// The usage call to send now, if any: at most [`MAX_USAGE_PER_CALL`] reports (the rest
    /// go on a later tick). Returns its body and the reports it carries (hand them to
    /// [`sent`](Self::sent)).
    pub fn due(&mut self) -> Option<(Vec<u8>, Vec<Pending>)> {
        if self.pending.is_empty() {
            return None;
        }
        let take = self.pending.len().min(MAX_USAGE_PER_CALL);
        let reports: Vec<Pending> = self.pending.drain(..take).collect();
        let request = UsageRequest {
            items: reports.iter().map(|p| p.item.clone()).collect(),
        };
        match serde_json::to_vec(&request) {
            Ok(body) => Some((body, reports)),
            Err(_) => None,
        }
    }

    /// The usage call carrying `reports` was dispatched as `token`; `None`: the host refused
    /// it. Returns how many reports were dropped for good.
    pub fn sent(&mut self, token: Option<u32>, reports: Vec<Pending>) -> usize {
        match token {
            Some(token) => {
                self.in_flight.insert(token, reports);
                0
            }
            None => self.retry(reports),
        }
    }

    /// Whether `token` is a usage call of this book.
    pub fn is_call(&self, token: u32) -> bool {
        self.in_flight.contains_key(&token)
    }

    /// Usage call `token` ended: `delivered` when the control plane took it (200). Returns how
    /// many reports were dropped for good.
    pub fn answered(&mut self, token: u32, delivered: bool) -> usize {
        let Some(reports) = self.in_flight.remove(&token) else {
            return 0;
        };
        if delivered { 0 } else { self.retry(reports) }
    }

    fn retry(&mut self, reports: Vec<Pending>) -> usize {
        let mut dropped = 0;
        for report in reports {
            let attempts = report.attempts.saturating_add(1);
            if attempts < MAX_USAGE_ATTEMPTS {
                self.pending.push(Pending {
                    item: report.item,
                    attempts,
                });
            } else {
                dropped += 1;
            }
        }
        dropped
    }
}

#[cfg(test)]
mod tests;
