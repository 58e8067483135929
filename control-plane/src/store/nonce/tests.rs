use std::collections::HashSet;
use std::sync::Arc;

use super::*;

#[test]
fn nonces_of_one_source_never_repeat_even_across_threads() {
    let source = Arc::new(NonceSource::new());
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let source = source.clone();
            std::thread::spawn(move || (0..10_000).map(|_| source.next()).collect::<Vec<_>>())
        })
        .collect();
    let mut all = HashSet::new();
    for thread in threads {
        for nonce in thread.join().expect("thread") {
            assert!(all.insert(nonce.clone()), "{nonce} issued twice");
        }
    }
    assert_eq!(all.len(), 40_000);
}

#[test]
fn sources_differ_by_their_prefix() {
    let a = NonceSource::with_prefix(0xab);
    let b = NonceSource::with_prefix(0xcd);
    assert_eq!(a.next(), "00000000000000ab-0");
    assert_eq!(a.next(), "00000000000000ab-1");
    assert_eq!(b.next(), "00000000000000cd-0");
    // The longest nonce there can be.
    let last = NonceSource::with_prefix(u64::MAX);
    last.next.store(u64::MAX, Ordering::Relaxed);
    assert_eq!(last.next(), "ffffffffffffffff-ffffffffffffffff");
}

#[test]
fn two_stores_get_different_prefixes() {
    // Random 64-bit prefixes: equal with probability 2⁻⁶⁴.
    assert_ne!(NonceSource::new().prefix, NonceSource::new().prefix);
}
