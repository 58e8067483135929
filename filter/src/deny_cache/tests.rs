use std::collections::BTreeMap;

use rl_wire::{CounterReport, PolicyReport};

use super::*;

const MS: u64 = 1_000_000;

fn deny(deny_for_ms: Option<u64>) -> DecisionResponse {
    DecisionResponse {
        verdict: Verdict::Deny,
        tier: Some("free".into()),
        counter: Some(CounterReport {
            limit: 10,
            remaining: 0,
            reset: 1_700_000_042,
            retry_after: Some(3),
            window: 60,
            endpoint: "/api/v1/search".into(),
            reset_at: Some("2023-11-14T22:14:02Z".into()),
            policy: Some("free-60s".into()),
            reset_after: Some(3),
            units: false,
        }),
        policies: vec![PolicyReport {
            name: "free-60s".into(),
            limit: 10,
            window: 60,
        }],
        shadow_denied: false,
        deny_for_ms,
        lease: None,
        usage: None,
    }
}

fn body(key: &str, path: &str) -> Vec<u8> {
    format!(r#"{{"ip":"10.0.0.1","api_key":"{key}","method":"GET","path":"{path}"}}"#).into_bytes()
}

fn fp(evidence: &[u8]) -> Fingerprint {
    Fingerprint::of(
        &FingerprintKey::new(&Salt::fixed(7), &scope(b"{}")),
        evidence,
    )
}

#[test]
fn an_entry_round_trips_and_keeps_the_answer() {
    let f = fp(&body("k", "/a"));
    let answer = deny(Some(500));
    let bytes = encode(&f, &answer, 1_000 * MS).unwrap();
    let hit = lookup(&bytes, &f, 1_000 * MS).unwrap();
    assert_eq!(hit.elapsed_ms, 0);
    assert_eq!(hit.answer, answer);
    // No raw evidence in the entry.
    let needle = b"\"api_key\"";
    assert!(!bytes.windows(needle.len()).any(|w| w == needle));
}

#[test]
fn only_cacheable_denials_make_entries() {
    let f = fp(b"x");
    assert!(encode(&f, &deny(None), 0).is_none());
    assert!(encode(&f, &deny(Some(0)), 0).is_none());
    let mut allow = deny(Some(500));
    allow.verdict = Verdict::Allow;
    assert!(encode(&f, &allow, 0).is_none());
    let mut no_counter = deny(Some(500));
    no_counter.counter = None;
    assert!(encode(&f, &no_counter, 0).is_none());
}

#[test]
fn an_entry_expires_at_deny_for_ms_from_dispatch() {
    let f = fp(b"x");
    let bytes = encode(&f, &deny(Some(500)), 10_000 * MS).unwrap();
    assert!(lookup(&bytes, &f, 10_000 * MS + 499 * MS).is_some());
    assert!(lookup(&bytes, &f, 10_000 * MS + 500 * MS - 1).is_some());
    assert!(lookup(&bytes, &f, 10_000 * MS + 500 * MS).is_none());
    // Before the dispatch time (a clock that is not this host's): a miss.
    assert!(lookup(&bytes, &f, 10_000 * MS - 1).is_none());
}

#[test]
fn an_entry_is_capped_at_one_second() {
    let f = fp(b"x");
    let bytes = encode(&f, &deny(Some(60_000)), 10_000 * MS).unwrap();
    assert!(lookup(&bytes, &f, 10_000 * MS + MAX_DENY_MS * MS - 1).is_some());
    assert!(lookup(&bytes, &f, 10_000 * MS + MAX_DENY_MS * MS).is_none());
    let huge = encode(&f, &deny(Some(u64::MAX)), u64::MAX - 5).unwrap();
    assert!(lookup(&huge, &f, u64::MAX - 5).is_some());
}

#[test]
fn the_same_evidence_hits_and_any_other_misses() {
    let same = body("key-1", "/api/v1/search");
    let bytes = encode(&fp(&same), &deny(Some(500)), 0).unwrap();
    assert!(lookup(&bytes, &fp(&same.clone()), MS).is_some());
    for other in [
        body("key-2", "/api/v1/search"),
        body("key-1", "/api/v1/other"),
        body("key-1", "/api/v1/search/"),
    ] {
        assert!(lookup(&bytes, &fp(&other), MS).is_none());
    }
    // Another salt or another plugin configuration: another fingerprint.
    let other_salt = Fingerprint::of(&FingerprintKey::new(&Salt::fixed(8), &scope(b"{}")), &same);
    let other_scope = Fingerprint::of(
        &FingerprintKey::new(&Salt::fixed(7), &scope(b"{\"a\":1}")),
        &same,
    );
    assert!(lookup(&bytes, &other_salt, MS).is_none());
    assert!(lookup(&bytes, &other_scope, MS).is_none());
}

#[test]
fn fingerprints_are_keyed_and_spread_over_the_buckets() {
    let key = FingerprintKey::new(&Salt::fixed(7), &scope(b"{}"));
    assert_eq!(Fingerprint::of(&key, b"a"), Fingerprint::of(&key, b"a"));
    assert_ne!(Fingerprint::of(&key, b"a"), Fingerprint::of(&key, b"b"));
    // The same evidence under another key: an unrelated fingerprint and bucket.
    let other = FingerprintKey::new(&Salt::fixed(8), &scope(b"{}"));
    assert_ne!(Fingerprint::of(&key, b"a"), Fingerprint::of(&other, b"a"));
    // 4,096 rotating keys fill most of the 1,024 buckets (a uniform hash leaves ~2 % empty).
    let mut used = vec![false; BUCKETS];
    for i in 0..4 * BUCKETS {
        used[Fingerprint::of(&key, &body(&format!("k{i}"), "/")).bucket()] = true;
    }
    let empty = used.iter().filter(|u| !**u).count();
    assert!(empty < BUCKETS / 20, "{empty} buckets never chosen");
    assert!(
        format!("{key:?}").contains(".."),
        "the key is never printed"
    );
}

#[test]
fn corrupt_or_foreign_bytes_are_misses() {
    let f = fp(b"x");
    let good = encode(&f, &deny(Some(500)), 0).unwrap();
    for cut in 0..good.len() {
        assert!(lookup(&good[..cut], &f, MS).is_none(), "cut at {cut}");
    }
    // Another version (1: the SHA-256 fingerprints of older filters) is a miss.
    for other in [1, VERSION + 1] {
        let mut version = good.clone();
        version[0] = other;
        assert!(lookup(&version, &f, MS).is_none());
    }
    let mut json = good.clone();
    let last = json.len() - 1;
    json[last] = b'!';
    assert!(lookup(&json, &f, MS).is_none());
    // A validity beyond the cap is not an entry of this filter.
    let mut long = good.clone();
    long[1 + FINGERPRINT_BYTES..1 + FINGERPRINT_BYTES + 8]
        .copy_from_slice(&(MAX_DENY_MS * MS + 1).to_le_bytes());
    assert!(lookup(&long, &f, MS).is_none());
    // An allow stored by someone else is not a denial.
    let mut allow = deny(Some(500));
    allow.verdict = Verdict::Allow;
    let mut forged = good[..HEADER_BYTES].to_vec();
    forged.extend(serde_json::to_vec(&allow).unwrap());
    assert!(lookup(&forged, &f, MS).is_none());
    assert!(lookup(&[], &f, MS).is_none());
    assert!(lookup(&[0xff; 300], &f, MS).is_none());
}

#[test]
fn retry_after_counts_down_and_never_below_one_second() {
    assert_eq!(seconds_left(3, 0), 3);
    assert_eq!(seconds_left(3, 999), 3);
    assert_eq!(seconds_left(3, 1000), 2);
    assert_eq!(seconds_left(3, 2500), 1);
    assert_eq!(seconds_left(3, 60_000), 1);
    assert_eq!(seconds_left(1, 900), 1);
    assert_eq!(seconds_left(u64::MAX, 5), u64::MAX / 1000 + 1);
    let f = fp(b"x");
    let bytes = encode(&f, &deny(Some(1000)), 0).unwrap();
    let hit = lookup(&bytes, &f, 999 * MS).unwrap();
    assert_eq!(hit.elapsed_ms, 999);
    let counter = hit.answer.counter.unwrap();
    assert_eq!(counter.retry_after, Some(3));
    let adjusted = adjust(deny(Some(1000)), 2_200).counter.unwrap();
    assert_eq!(adjusted.retry_after, Some(1));
    assert_eq!(adjusted.reset_after, Some(1));
    assert_eq!(adjusted.reset, 1_700_000_042, "absolute times stay");
}

#[test]
fn buckets_and_keys_form_a_fixed_set() {
    let mut keys = std::collections::BTreeSet::new();
    for i in 0..20_000 {
        let f = fp(&body(&format!("rotating-{i}"), "/"));
        assert!(f.bucket() < BUCKETS);
        keys.insert(bucket_key(f.bucket()));
    }
    // Spread over (nearly) every bucket, never beyond.
    assert!(keys.len() > BUCKETS * 9 / 10, "{}", keys.len());
    assert!(keys.len() <= BUCKETS);
    assert_eq!(bucket_key(BUCKETS + 3), bucket_key(3));
}

#[derive(Default)]
struct FakeHost {
    data: BTreeMap<String, (Vec<u8>, u32)>,
    next_cas: u32,
    random: Option<u8>,
}

impl CacheHost for FakeHost {
    fn now_ns(&mut self) -> Option<u64> {
        Some(0)
    }
    fn get(&mut self, key: &str) -> Option<(Vec<u8>, Option<u32>)> {
        self.data.get(key).map(|(v, cas)| (v.clone(), Some(*cas)))
    }
    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        if let (Some(cas), Some((_, current))) = (cas, self.data.get(key))
            && cas != *current
        {
            return false;
        }
        self.next_cas += 1;
        self.data
            .insert(key.into(), (value.to_vec(), self.next_cas));
        true
    }
    fn random(&mut self, buf: &mut [u8]) -> bool {
        match self.random {
            Some(b) => {
                buf.fill(b);
                true
            }
            None => false,
        }
    }
}

#[test]
fn the_salt_is_created_once_and_shared() {
    let mut host = FakeHost {
        random: Some(1),
        ..FakeHost::default()
    };
    let first = Salt::load_or_create(&mut host).unwrap();
    assert_eq!(first, Salt::fixed(1));
    host.random = Some(2);
    assert_eq!(
        Salt::load_or_create(&mut host).unwrap(),
        first,
        "stored one wins"
    );
    // Another worker's later write: adopted on refresh.
    host.set(SALT_KEY, &[3; SALT_BYTES], None);
    assert_eq!(first.refresh(&mut host), Salt::fixed(3));
    // A corrupt stored salt is replaced.
    host.set(SALT_KEY, b"short", None);
    assert_eq!(Salt::load_or_create(&mut host).unwrap(), Salt::fixed(2));
    // No randomness and nothing stored: no cache.
    let mut bare = FakeHost::default();
    assert_eq!(Salt::load_or_create(&mut bare), None);
}

fn answer(tier: &str, endpoint: &str, policy: &str) -> DecisionResponse {
    let mut a = deny(Some(500));
    a.tier = Some(tier.into());
    let counter = a.counter.as_mut().unwrap();
    counter.endpoint = endpoint.into();
    counter.policy = Some(policy.into());
    a
}

#[test]
fn local_denials_aggregate_per_tier_endpoint_and_policy() {
    let mut tally = Tally::default();
    assert!(tally.is_empty());
    for _ in 0..3 {
        assert!(tally.add(&answer("free", "/a", "free-60s")));
    }
    assert!(tally.add(&answer("free", "/b", "free-60s")));
    assert!(tally.add(&answer("pro", "/a", "pro-60s")));
    let taken = tally.take(usize::MAX);
    assert!(tally.is_empty());
    let counts: Vec<(&str, &str, u64)> = taken
        .iter()
        .map(|d| (d.tier.as_deref().unwrap(), d.endpoint.as_str(), d.count))
        .collect();
    assert_eq!(
        counts,
        [("free", "/a", 3), ("free", "/b", 1), ("pro", "/a", 1)]
    );
    // Put back (the call was not dispatched): merged with what came meanwhile.
    tally.add(&answer("free", "/a", "free-60s"));
    tally.put_back(taken);
    let again = tally.take(usize::MAX);
    assert_eq!(again[0].count, 4);
    assert_eq!(again.len(), 3);
}

#[test]
fn the_tally_is_bounded_and_reports_what_fits() {
    let mut tally = Tally::default();
    for i in 0..MAX_TALLY_ENTRIES {
        assert!(tally.add(&answer("free", &format!("/{i}"), "p")));
    }
    assert!(
        !tally.add(&answer("free", "/new", "p")),
        "a new key beyond the bound"
    );
    assert!(
        tally.add(&answer("free", "/0", "p")),
        "a known key still counts"
    );
    let some = tally.take(300);
    assert!(!some.is_empty());
    assert!(serde_json::to_vec(&some).unwrap().len() <= 300);
    let rest = tally.take(usize::MAX);
    assert_eq!(some.len() + rest.len(), MAX_TALLY_ENTRIES);
    assert!(tally.take(1).is_empty());
}

#[test]
fn local_denials_join_a_batch_body_when_they_fit() {
    let body = br#"{"requests":[{"ip":"1.2.3.4","method":"GET","path":"/"}]}"#;
    let mut tally = Tally::default();
    tally.add(&answer("free", "/a", "free-60s"));
    let denials = tally.take(usize::MAX);
    let out = with_local_denials(body, &denials, 4096).unwrap();
    let parsed: rl_wire::BatchDecisionRequest = serde_json::from_slice(&out).unwrap();
    assert_eq!(parsed.requests.len(), 1);
    assert_eq!(parsed.local_denials, denials);
    assert!(with_local_denials(body, &denials, body.len() + 10).is_none());
    assert!(with_local_denials(b"", &denials, 4096).is_none());
}
