//! The filter's deny cache: a denial the control plane marked cacheable (`deny_for_ms`) is
//! remembered, so the same request is answered 429 by the filter itself for a short while,
//! without a decision call.
//!
//! The cache lives in proxy-wasm shared data, so every Envoy worker sees every entry. Envoy
//! never deletes a shared-data key, so the set of keys is fixed: [`BUCKETS`] bucket keys
//! ([`bucket_key`]) and one key for the salt ([`SALT_KEY`]). A keyed hash of the request's
//! evidence ([`Fingerprint`], SipHash-2-4 under a key derived from the salt and the plugin's
//! configuration, [`FingerprintKey`]) selects a bucket, which holds at most one entry: a newer denial
//! overwrites whatever was there. Entries are written with compare-and-swap and a mismatch
//! just skips the write (the cache is an optimisation, never a source of truth). No raw key
//! or token is stored: only the fingerprint and the control plane's answer.
//!
//! An entry is valid until min(`deny_for_ms`, [`MAX_DENY_MS`]) after the moment the filter
//! dispatched the call that got the denial, on the host's monotonic clock: never the control
//! plane's or the store's clock. The cap bounds how long a configuration change the filter
//! cannot see may be ignored.
//!
//! This module is plain Rust (encoding, expiry, the answer's adjustment, the tally of local
//! denials); the glue only moves the bytes to and from shared data ([`CacheHost`]).

use std::collections::BTreeMap;

use std::hash::Hasher;

use rl_wire::{DecisionResponse, LocalDenials, Verdict};
use sha2::{Digest, Sha256};
use siphasher::sip128::{Hasher128, SipHasher24};

/// Bucket keys in shared data (a fixed set: Envoy never deletes a key).
pub const BUCKETS: usize = 1024;

/// Longest time an entry is used, whatever `deny_for_ms` says.
pub const MAX_DENY_MS: u64 = 1000;

/// Shared-data key of the salt every worker's fingerprints use.
pub const SALT_KEY: &str = "rate_limit_filter.deny_cache.salt";

/// Prefix of the bucket keys (`<prefix><index>`).
pub const BUCKET_KEY_PREFIX: &str = "rate_limit_filter.deny_cache.";

/// Bytes of the salt.
pub const SALT_BYTES: usize = 32;

/// Bytes of a fingerprint kept in an entry (128 bits: a collision between two live requests
/// is out of reach).
pub const FINGERPRINT_BYTES: usize = 16;

/// Most distinct (tier, endpoint, policy) kept between two reports; denials of further ones
/// are not reported (the filter's own stat still counts them).
pub const MAX_TALLY_ENTRIES: usize = 256;

/// Format of an entry: version, fingerprint, expiry, dispatch time, the answer's JSON.
/// Version 2: the fingerprint is SipHash-2-4 (version 1's was SHA-256), so an entry of a
/// filter still running the older code is a miss, never a false match.
const VERSION: u8 = 2;
const HEADER_BYTES: usize = 1 + FINGERPRINT_BYTES + 8 + 8;

/// The key of bucket `index` (`index < BUCKETS`).
pub fn bucket_key(index: usize) -> String {
    format!("{BUCKET_KEY_PREFIX}{}", index % BUCKETS)
}

/// What the cache needs from the host: shared data and the monotonic clock.
pub trait CacheHost {
    /// Host monotonic time in nanoseconds (the same clock for every worker); `None`: no
    /// clock, no cache.
    fn now_ns(&mut self) -> Option<u64>;
    /// The value of a shared-data key and its CAS token; `None` when absent or unreadable.
    fn get(&mut self, key: &str) -> Option<(Vec<u8>, Option<u32>)>;
    /// Writes a key, only if its CAS token is still `cas` (`None`: unconditionally). False on
    /// a mismatch or any other refusal.
    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> bool;
    /// Fills `buf` with random bytes; false when the host has none.
    fn random(&mut self, buf: &mut [u8]) -> bool;
}

/// The salt of the fingerprints, shared by the workers through [`SALT_KEY`]: the stored one,
/// or a new random one stored for the others. Two workers may create one at the same time;
/// the last write wins and [`Salt::refresh`] makes the other adopt it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Salt([u8; SALT_BYTES]);

impl Salt {
    /// The stored salt, or a new one; `None` when there is none and no randomness to make one.
    pub fn load_or_create(host: &mut dyn CacheHost) -> Option<Salt> {
        if let Some(salt) = Salt::stored(host) {
            return Some(salt);
        }
        let mut fresh = [0u8; SALT_BYTES];
        if !host.random(&mut fresh) {
            return None;
        }
        host.set(SALT_KEY, &fresh, None);
        // Another worker may have written its own meanwhile: use what is stored.
        Some(Salt::stored(host).unwrap_or(Salt(fresh)))
    }

    /// The stored salt, if there is one and it is not this one.
    pub fn refresh(self, host: &mut dyn CacheHost) -> Salt {
        Salt::stored(host).unwrap_or(self)
    }

    fn stored(host: &mut dyn CacheHost) -> Option<Salt> {
        let (bytes, _) = host.get(SALT_KEY)?;
        <[u8; SALT_BYTES]>::try_from(bytes.as_slice())
            .ok()
            .map(Salt)
    }

    #[cfg(test)]
    pub fn fixed(byte: u8) -> Salt {
        Salt([byte; SALT_BYTES])
    }
}

/// The secret key of the fingerprints: the salt (random, shared by the workers) and the
/// plugin's scope (its configuration: two plugins of one VM must not share denials), hashed
/// once with SHA-256 when either changes, not per request.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FingerprintKey([u8; 16]);

impl std::fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FingerprintKey(..)")
    }
}

impl FingerprintKey {
    pub fn new(salt: &Salt, scope: &[u8; 32]) -> FingerprintKey {
        let digest = Sha256::new()
            .chain_update(salt.0)
            .chain_update(scope)
            .finalize();
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        FingerprintKey(key)
    }
}

/// A keyed hash of a request's evidence: 128-bit SipHash-2-4 of the decision call's body
/// (client IP as resolved, API key, Authorization, method and path, exactly as sent) under
/// the [`FingerprintKey`]. SipHash is a pseudorandom function of its key: without the salt,
/// which never leaves shared data, nobody can make two requests collide or aim at a bucket.
/// It runs on every request that asks the control plane, where SHA-256 over the salt, the
/// scope and the body cost several times more in the Wasm VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint([u8; FINGERPRINT_BYTES]);

impl Fingerprint {
    pub fn of(key: &FingerprintKey, evidence: &[u8]) -> Fingerprint {
        let mut hasher = SipHasher24::new_with_key(&key.0);
        hasher.write(evidence);
        Fingerprint(hasher.finish128().as_bytes())
    }

    /// The bucket this request's entry goes to (from the fingerprint's own bits: the entry
    /// keeps all 128 of them, so two requests sharing a bucket are still told apart).
    pub fn bucket(&self) -> usize {
        usize::from(u16::from_le_bytes([self.0[0], self.0[1]])) % BUCKETS
    }
}

/// The scope of a plugin's entries: a digest of its configuration.
pub fn scope(plugin_configuration: &[u8]) -> [u8; 32] {
    Sha256::digest(plugin_configuration).into()
}

/// The entry for a denial, if the answer allows caching it: a deny naming its counter, with
/// a `deny_for_ms` above 0. `dispatched_ns`: when the call that got it was dispatched.
pub fn encode(
    fingerprint: &Fingerprint,
    answer: &DecisionResponse,
    dispatched_ns: u64,
) -> Option<Vec<u8>> {
    if answer.verdict != Verdict::Deny || answer.counter.is_none() {
        return None;
    }
    let valid_ms = answer.deny_for_ms?.min(MAX_DENY_MS);
    if valid_ms == 0 {
        return None;
    }
    let expires_ns = dispatched_ns.saturating_add(valid_ms * 1_000_000);
    let json = serde_json::to_vec(answer).ok()?;
    let mut bytes = Vec::with_capacity(HEADER_BYTES + json.len());
    bytes.push(VERSION);
    bytes.extend_from_slice(&fingerprint.0);
    bytes.extend_from_slice(&expires_ns.to_le_bytes());
    bytes.extend_from_slice(&dispatched_ns.to_le_bytes());
    bytes.extend_from_slice(&json);
    Some(bytes)
}

/// Whether `bytes` hold an entry of this version for this fingerprint (valid or not): a
/// cheap test before the clock is read.
pub fn is_entry_of(bytes: &[u8], fingerprint: &Fingerprint) -> bool {
    bytes
        .get(..=FINGERPRINT_BYTES)
        .is_some_and(|head| head[0] == VERSION && head[1..=FINGERPRINT_BYTES] == fingerprint.0)
}

/// A live entry for this request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// The control plane's answer, adjusted for the time elapsed since its call was dispatched
    /// ([`adjust`]).
    pub answer: DecisionResponse,
    /// Time since the call that got the answer was dispatched.
    pub elapsed_ms: u64,
}

/// The entry in `bytes` if it is this request's and still valid at `now_ns`. Anything else
/// (another request's entry, an expired one, bytes of another version or corrupt) is a miss.
pub fn lookup(bytes: &[u8], fingerprint: &Fingerprint, now_ns: u64) -> Option<Hit> {
    let header = bytes.get(..HEADER_BYTES)?;
    if !is_entry_of(header, fingerprint) {
        return None;
    }
    let word = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(header.get(at..at + 8)?.try_into().ok()?))
    };
    let expires_ns = word(1 + FINGERPRINT_BYTES)?;
    let dispatched_ns = word(1 + FINGERPRINT_BYTES + 8)?;
    // An entry claiming more than the cap is not one this filter wrote.
    if now_ns >= expires_ns
        || now_ns < dispatched_ns
        || expires_ns - dispatched_ns > MAX_DENY_MS * 1_000_000
    {
        return None;
    }
    let answer: DecisionResponse = serde_json::from_slice(&bytes[HEADER_BYTES..]).ok()?;
    if answer.verdict != Verdict::Deny || answer.counter.is_none() {
        return None;
    }
    let elapsed_ms = (now_ns - dispatched_ns) / 1_000_000;
    Some(Hit {
        answer: adjust(answer, elapsed_ms),
        elapsed_ms,
    })
}

/// The answer `elapsed_ms` later: `Retry-After` and the `RateLimit` field's `t` count down
/// (rounded up, never below 1 s: waiting a little too long is safe, too short is not). The
/// absolute reset times stay as they are.
pub fn adjust(mut answer: DecisionResponse, elapsed_ms: u64) -> DecisionResponse {
    if let Some(counter) = answer.counter.as_mut() {
        counter.retry_after = counter.retry_after.map(|s| seconds_left(s, elapsed_ms));
        counter.reset_after = counter.reset_after.map(|s| seconds_left(s, elapsed_ms));
    }
    answer
}

fn seconds_left(seconds: u64, elapsed_ms: u64) -> u64 {
    seconds
        .saturating_mul(1000)
        .saturating_sub(elapsed_ms)
        .div_ceil(1000)
        .max(1)
}

type TallyKey = (Option<String>, String, Option<String>);

/// Requests the filter denied itself since the last report, per (tier, endpoint, policy) of
/// the cached answer, for the next batch call's `local_denials`.
#[derive(Debug, Default)]
pub struct Tally {
    counts: BTreeMap<TallyKey, u64>,
}

impl Tally {
    /// Counts one local denial given with `answer`. False when it could not be kept (the
    /// tally is at [`MAX_TALLY_ENTRIES`] and this is a new key).
    pub fn add(&mut self, answer: &DecisionResponse) -> bool {
        let counter = answer.counter.as_ref();
        let key = (
            answer.tier.clone(),
            counter.map(|c| c.endpoint.clone()).unwrap_or_default(),
            counter.and_then(|c| c.policy.clone()),
        );
        if let Some(count) = self.counts.get_mut(&key) {
            *count = count.saturating_add(1);
            return true;
        }
        if self.counts.len() >= MAX_TALLY_ENTRIES {
            return false;
        }
        self.counts.insert(key, 1);
        true
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// Takes entries whose JSON fits `max_bytes` (the rest stay for a later report).
    pub fn take(&mut self, max_bytes: usize) -> Vec<LocalDenials> {
        let mut taken = Vec::new();
        let mut size = 2usize;
        while let Some(((tier, endpoint, policy), count)) = self.counts.pop_first() {
            let entry = LocalDenials {
                tier,
                endpoint,
                policy,
                count,
            };
            let len = serde_json::to_vec(&entry).map_or(usize::MAX, |j| j.len() + 1);
            if size.saturating_add(len) > max_bytes {
                self.put_back(vec![entry]);
                break;
            }
            size += len;
            taken.push(entry);
        }
        taken
    }

    /// Puts back denials that could not be reported (their call was not dispatched).
    pub fn put_back(&mut self, denials: Vec<LocalDenials>) {
        for d in denials {
            let key = (d.tier, d.endpoint, d.policy);
            let full = self.counts.len() >= MAX_TALLY_ENTRIES;
            match self.counts.get_mut(&key) {
                Some(count) => *count = count.saturating_add(d.count),
                None if !full => {
                    self.counts.insert(key, d.count);
                }
                None => {}
            }
        }
    }
}

/// `body` (a batch call's `{"requests":[...]}`) with `denials` added as `local_denials`,
/// if that fits `max_bytes`; otherwise `None` and the body stays as it is.
pub fn with_local_denials(
    body: &[u8],
    denials: &[LocalDenials],
    max_bytes: usize,
) -> Option<Vec<u8>> {
    let inner = body.strip_suffix(b"}")?;
    let json = serde_json::to_vec(denials).ok()?;
    const FIELD: &[u8] = b",\"local_denials\":";
    if inner.len() + FIELD.len() + json.len() + 1 > max_bytes {
        return None;
    }
    let mut out = Vec::with_capacity(inner.len() + FIELD.len() + json.len() + 1);
    out.extend_from_slice(inner);
    out.extend_from_slice(FIELD);
    out.extend_from_slice(&json);
    out.push(b'}');
    Some(out)
}

#[cfg(test)]
mod tests;
