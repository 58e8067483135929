use super::*;

use control_plane::config::{CompiledConfig, parse_yaml};

#[test]
fn one_key_per_limit_in_a_tier_of_that_limit() {
    let config = parse_yaml(&config())
        .and_then(CompiledConfig::compile)
        .expect("the memory phase's config is valid");
    for algorithm in ALGORITHMS {
        for limit in LIMITS {
            let (id, tier) = config
                .lookup_api_key(secret(algorithm, limit).as_bytes())
                .unwrap_or_else(|| panic!("no key for {algorithm:?} {limit}"));
            assert_eq!(id, key_id(algorithm, limit));
            let tier = config.tier(tier);
            assert_eq!(tier.name, key_id(algorithm, limit));
            assert_eq!(tier.windows.len(), 1);
            let window = &tier.windows[0];
            assert_eq!(window.limit, limit);
            // The key the phase reads is the key the control plane writes.
            assert_eq!(
                control_plane::store::keys::budget_key(
                    &format!("key:{id}"),
                    window.length.as_secs(),
                    window.algorithm
                ),
                counter_key(algorithm, limit)
            );
        }
    }
    let c = CounterMemory {
        limit: 1_000,
        bytes: Some(64_000),
        ..CounterMemory::default()
    };
    assert_eq!(c.bytes_per_request(), Some(64.0));
}
