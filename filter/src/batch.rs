//! Coalescing of decision calls per VM (one per Envoy worker).
//!
//! At low load every request makes its own decision call, so coalescing adds no latency.
//! Once [`MAX_SINGLE_IN_FLIGHT`] calls are in flight from a VM, later requests queue, and the
//! queue goes out as one batch call ([`rl_wire::BATCH_DECISION_PATH`]) as soon as the VM can
//! send it. Each HTTP callout costs Envoy far more CPU than the few hundred bytes of JSON a
//! decision carries, so under load one callout for many requests is the saving.
//!
//! This module is the bookkeeping only (queue, batch body, splitting the answer); the
//! [`crate::engine`] decides when batches go out, and the glue makes the host calls.

use std::collections::VecDeque;

use rl_wire::{BatchDecisionResponse, MAX_BATCH_DECISIONS, MAX_DECISION_REQUEST_BYTES};

use crate::config::HeaderSets;
use crate::response::{self, CallResult, ControlPlaneError, Decision};

/// Single decision calls a VM keeps in flight before requests start to queue. Two: a second
/// concurrent request at low load still goes out at once instead of waiting for the root's
/// tick; beyond that, under load, one more single call per round trip would buy another
/// callout's CPU for one request while the queue leaves in one batch anyway. No single call
/// leaves while a batch is in flight either (see [`Coalescer::route`]).
pub const MAX_SINGLE_IN_FLIGHT: usize = 2;

/// Requests per batch call (the control plane refuses more).
pub const MAX_BATCH_SIZE: usize = MAX_BATCH_DECISIONS;

/// Upper bound on a batch call's body: every single body is at most
/// [`MAX_DECISION_REQUEST_BYTES`], and a batch closes before this is reached.
pub const MAX_BATCH_BODY_BYTES: usize = rl_wire::MAX_BATCH_REQUEST_BYTES;

/// Largest batch answer the glue reads: a normal answer is ~120 bytes per decision; the
/// single-call bound per member leaves room for the worst case.
pub const MAX_BATCH_RESPONSE_BYTES: usize =
    MAX_BATCH_SIZE * crate::response::MAX_DECISION_RESPONSE_BYTES;

const BATCH_PREFIX: &[u8] = br#"{"requests":["#;
const BATCH_SUFFIX: &[u8] = b"]}";

/// Where a new request's decision call goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Dispatch a call of its own now (counted as in flight).
    Single,
    /// Join the queue.
    Queue,
}

/// A batch ready to be dispatched: its members in body order.
#[derive(Debug)]
pub struct Batch<M> {
    pub members: Vec<M>,
    pub body: Vec<u8>,
}

/// Per-VM queue of requests waiting for a decision call. `M` is whatever the engine needs to
/// resume a member (its context id).
#[derive(Debug)]
pub struct Coalescer<M> {
    singles_in_flight: usize,
    batches_in_flight: usize,
    queue: VecDeque<(M, Vec<u8>)>,
}

impl<M> Default for Coalescer<M> {
    fn default() -> Self {
        Self {
            singles_in_flight: 0,
            batches_in_flight: 0,
            queue: VecDeque::new(),
        }
    }
}

impl<M> Coalescer<M> {
    /// Routes a new request. `Single` counts the call as in flight: report its end with
    /// [`single_done`](Self::single_done) (also when the dispatch failed).
    ///
    /// While a batch is in flight a new request queues even with a single slot free: that
    /// batch's answer sends the queue at once, so the request waits at most one round trip
    /// more, and under load (a batch always in flight) every request goes in a batch. Each
    /// single call costs a whole callout in Envoy, a call to the control plane and a script
    /// call in Redis for one request; before this rule two of them went out after every
    /// batch, two thirds of the callouts for a few percent of the requests.
    pub fn route(&mut self) -> Route {
        if self.queue.is_empty()
            && self.batches_in_flight == 0
            && self.singles_in_flight < MAX_SINGLE_IN_FLIGHT
        {
            self.singles_in_flight += 1;
            Route::Single
        } else {
            Route::Queue
        }
    }

    pub fn push(&mut self, member: M, body: Vec<u8>) {
        self.queue.push_back((member, body));
    }

    pub fn single_done(&mut self) {
        self.singles_in_flight = self.singles_in_flight.saturating_sub(1);
    }

    pub fn batch_done(&mut self) {
        self.batches_in_flight = self.batches_in_flight.saturating_sub(1);
    }

    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    pub fn batches_in_flight(&self) -> usize {
        self.batches_in_flight
    }

    /// Whether queued requests wait for nobody: no batch is in flight whose completion would
    /// send them, so the engine must arrange to send them (a tick on the root context).
    pub fn needs_kick(&self) -> bool {
        !self.queue.is_empty() && self.batches_in_flight == 0
    }

    /// Takes the next batch from the queue, skipping members `live` rejects (their stream
    /// ended while queued). Counts it as in flight; report its end with
    /// [`batch_done`](Self::batch_done).
    pub fn take_batch(&mut self, live: impl Fn(&M) -> bool) -> Option<Batch<M>> {
        let mut members = Vec::new();
        let mut body = BATCH_PREFIX.to_vec();
        while let Some((member, single)) = self.queue.front() {
            if !live(member) {
                self.queue.pop_front();
                continue;
            }
            let separator = usize::from(!members.is_empty());
            let grown = body.len() + separator + single.len() + BATCH_SUFFIX.len();
            if members.len() == MAX_BATCH_SIZE
                || (!members.is_empty() && grown > MAX_BATCH_BODY_BYTES)
            {
                break;
            }
            if separator == 1 {
                body.push(b',');
            }
            body.extend_from_slice(single);
            if let Some((member, _)) = self.queue.pop_front() {
                members.push(member);
            }
        }
        if members.is_empty() {
            return None;
        }
        body.extend_from_slice(BATCH_SUFFIX);
        self.batches_in_flight += 1;
        Some(Batch { members, body })
    }
}

/// One decision per member, in order. Any failure of the call as a whole (dispatch, reset,
/// status, body, shape, count) fails every member with the same `fail_open` policy as a
/// single call; a member's unusable answer (a deny without counter) fails that member only.
pub fn decide(
    result: CallResult<'_>,
    members: usize,
    fail_open: bool,
    sets: HeaderSets,
) -> Vec<Decision> {
    match interpret(result, members) {
        Ok(answer) => answer
            .responses
            .iter()
            .map(|resp| response::decide_response(resp, fail_open, sets))
            .collect(),
        Err(error) => (0..members)
            .map(|_| response::failure(error.clone(), fail_open))
            .collect(),
    }
}

/// The control plane's answer to a batch call of `members` requests, or why there is none.
pub fn interpret(
    result: CallResult<'_>,
    members: usize,
) -> Result<BatchDecisionResponse, ControlPlaneError> {
    let bytes = response::call_body(result)?;
    let answer: BatchDecisionResponse =
        serde_json::from_slice(bytes).map_err(|e| ControlPlaneError::Malformed(e.to_string()))?;
    if answer.responses.len() != members {
        return Err(ControlPlaneError::Malformed(format!(
            "batch answer has {} decisions for {members} requests",
            answer.responses.len()
        )));
    }
    Ok(answer)
}

const _: () = assert!(MAX_DECISION_REQUEST_BYTES + 64 < MAX_BATCH_BODY_BYTES);

#[cfg(test)]
mod tests;
