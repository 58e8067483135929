use super::*;

use control_plane::config::{CompiledConfig, parse_yaml};

#[test]
fn one_key_per_limit_in_a_tier_of_that_limit() {
    let config = parse_yaml(&config())
        .and_then(CompiledConfig::compile)
        .expect("the memory phase's config is valid");
    for limit in LIMITS {
        let (id, tier) = config
            .lookup_api_key(secret(limit).as_bytes())
            .unwrap_or_else(|| panic!("no key for {limit}"));
        assert_eq!(id, key_id(limit));
        let tier = config.tier(tier);
        assert_eq!(tier.name, key_id(limit));
        assert_eq!(
            tier.windows.iter().map(|w| w.limit).collect::<Vec<_>>(),
            [limit]
        );
    }
    let c = CounterMemory {
        limit: 1_000,
        bytes: Some(64_000),
        ..CounterMemory::default()
    };
    assert_eq!(c.bytes_per_request(), Some(64.0));
}
