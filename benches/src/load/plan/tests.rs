use super::*;

use control_plane::config::{CompiledConfig, MAX_CONFIG_BYTES, parse_yaml};

fn compile(yaml: &str) -> CompiledConfig {
    parse_yaml(yaml)
        .and_then(CompiledConfig::compile)
        .expect("generated config is valid")
}

#[test]
fn config_parses_fits_and_every_key_resolves_to_its_tier() {
    let keys = Keys::generate();
    let limits = Limits {
        bulk: 13,
        good: 235,
        window_s: 60,
    };
    let yaml = keys.control_plane_config(&limits, Counters::Exact, false);
    assert!(
        yaml.len() < MAX_CONFIG_BYTES,
        "{} bytes: over the control plane's limit on a config file",
        yaml.len()
    );
    let config = compile(&yaml);
    let sets = [
        (&keys.bulk, BULK_TIER, BULK_IDENTITIES),
        (&keys.warm, WARM_TIER, WARM_IDENTITIES),
        (&keys.good, GOOD_TIER, GOOD_POOL),
        (&keys.abuse, ABUSE_TIER, ABUSE_IDENTITIES),
    ];
    for (set, tier, n) in sets {
        assert_eq!(set.len(), n);
        for key in [&set[0], &set[n - 1]] {
            let (id, tier_id) = config
                .lookup_api_key(key.secret.as_bytes())
                .unwrap_or_else(|| panic!("{} not registered", key.id));
            assert_eq!(id, key.id);
            assert_eq!(config.tier(tier_id).name, tier);
        }
    }
    assert_eq!(keys.bulk[9_999].identity(), "key:k9999");
    assert!(config.lookup_api_key(b"lbk_unknown").is_none());
    // Every secret is distinct.
    let mut secrets: Vec<&str> = [&keys.bulk, &keys.warm, &keys.good, &keys.abuse]
        .into_iter()
        .flatten()
        .map(|k| k.secret.as_str())
        .collect();
    secrets.sort();
    secrets.dedup();
    assert_eq!(
        secrets.len(),
        BULK_IDENTITIES + WARM_IDENTITIES + GOOD_POOL + ABUSE_IDENTITIES
    );
}

#[test]
fn limits_land_in_the_config() {
    let keys = Keys::generate();
    let yaml = keys.control_plane_config(
        &Limits {
            bulk: 17,
            good: 300,
            window_s: 75,
        },
        Counters::Exact,
        false,
    );
    let config = parse_yaml(&yaml).expect("valid");
    let tier = |name: &str| {
        config
            .tiers
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("no tier {name}"))
    };
    assert_eq!(tier(BULK_TIER).requests_per_window, Some(17));
    // A rule at the budget could never bind, so the bulk tier's rule sits just below it.
    assert_eq!(
        tier(BULK_TIER).endpoints.get(PATH),
        Some(&control_plane::config::EndpointRule::Limit(16))
    );
    assert_eq!(tier(BULK_TIER).window_size_seconds, 75);
    assert_eq!(tier(GOOD_TIER).requests_per_window, Some(300));
    assert_eq!(tier(ABUSE_TIER).requests_per_window, Some(ABUSE_LIMIT));
    assert_eq!(tier(WARM_TIER).requests_per_window, Some(NEVER));
    let generous = Limits::generous(10);
    assert_eq!((generous.bulk, generous.good), (NEVER, NEVER));
    assert!(window_for(15) >= 60 && window_for(120) >= 165);
}

#[test]
fn sc003_sizing_puts_identities_in_the_middle_of_their_range() {
    // 8,400 req/s for 15 s over 10,000 identities: 12.6 each.
    let per_identity = 8_400.0 * 15.0 / BULK_IDENTITIES as f64;
    let limit = bulk_limit(per_identity);
    assert_eq!(limit, 20);
    let share = per_identity / limit as f64;
    assert!(
        (SC003_SHARE_RANGE.0..=SC003_SHARE_RANGE.1).contains(&share),
        "{share}"
    );
    assert_eq!(sample_quota(per_identity), 4);
    // Tiny runs still get a limit a request can stay under, and a sample of one.
    assert_eq!(bulk_limit(0.3), 2);
    assert_eq!(sample_quota(0.3), 1);
}

#[test]
fn samples_and_probes_are_spread_over_the_list() {
    let samples = sample_lines(BULK_IDENTITIES);
    assert_eq!(samples.len(), SAMPLES_PER_RUN);
    assert_eq!(samples[0], 1);
    assert_eq!(samples[1], 1 + BULK_IDENTITIES / SAMPLES_PER_RUN);
    let probes = probe_lines(BULK_IDENTITIES);
    assert_eq!(probes.len(), SAMPLES_PER_RUN);
    assert!(
        probes
            .iter()
            .all(|p| !samples.contains(p) && *p <= BULK_IDENTITIES)
    );
    assert_eq!(
        sample_lines(SMALL_IDENTITIES),
        [1, 11, 21, 31, 41, 51, 61, 71, 81, 91]
    );
    assert_eq!(probe_lines(SMALL_IDENTITIES)[0], 6);
    // Fewer identities than samples: every one is a sample, none is left to probe.
    assert_eq!(sample_lines(5), [1, 2, 3, 4, 5]);
    assert!(probe_lines(5).is_empty());
}

#[test]
fn the_good_pool_lasts_a_run_at_the_ceiling() {
    for (ceiling, duration) in [(25_000.0, 15), (40_000.0, 60), (100.0, 3)] {
        let limit = good_limit(ceiling, duration);
        let quota = good_quota(limit);
        assert!(quota as f64 <= GOOD_QUOTA_SHARE * limit as f64);
        let needed = ceiling * duration as f64 / GOOD_EVERY as f64 / quota as f64;
        assert!(
            needed <= (GOOD_POOL - 2 * GOOD_ACTIVE) as f64,
            "{ceiling} req/s for {duration} s needs {needed} good identities"
        );
    }
    assert_eq!(good_quota(235), 188);
}

#[test]
fn slotted_counters_are_set_on_every_tier() {
    use control_plane::store::Algorithm;
    let keys = Keys::generate();
    let limits = Limits {
        bulk: 13,
        good: 235,
        window_s: 75,
    };
    for (counters, slotted) in [(Counters::Exact, false), (Counters::Slotted, true)] {
        let config = compile(&keys.control_plane_config(&limits, counters, false));
        for tier in [BULK_TIER, WARM_TIER, GOOD_TIER, ABUSE_TIER] {
            let tier = config
                .tier_by_name(tier)
                .map(|id| config.tier(id))
                .unwrap_or_else(|| panic!("no tier {tier}"));
            let windows = tier
                .windows
                .iter()
                .chain(tier.rules.entries().flat_map(|(_, w)| w.windows.iter()));
            for window in windows {
                assert_eq!(
                    matches!(window.algorithm, Algorithm::Slotted { .. }),
                    slotted,
                    "{}: {window:?}",
                    tier.name
                );
            }
        }
    }
}

#[test]
fn a_charging_configuration_gives_the_rules_max_charge() {
    let keys = Keys::generate();
    let limits = Limits {
        bulk: 17,
        good: 300,
        window_s: 75,
    };
    let yaml = keys.control_plane_config(&limits, Counters::Exact, true);
    let config = parse_yaml(&yaml).expect("valid");
    let cfg = compile(&yaml);
    for tier in [BULK_TIER, WARM_TIER] {
        let (_, rule) = cfg
            .tier(cfg.tier_by_name(tier).expect("tier"))
            .rules
            .longest_match(PATH)
            .expect("a rule on the path");
        assert_eq!(
            rule.max_charge,
            Some(crate::configs::CHARGE_UNITS),
            "{tier}"
        );
    }
    assert_eq!(config.tiers.len(), 4);
    // Without charging, no rule takes charges.
    let plain = compile(&keys.control_plane_config(&limits, Counters::Exact, false));
    let bulk = plain.tier(plain.tier_by_name(BULK_TIER).expect("tier"));
    assert_eq!(
        bulk.rules.longest_match(PATH).expect("rule").1.max_charge,
        None
    );
}
