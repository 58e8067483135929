use super::*;

#[test]
fn quantiles_follow_the_distribution() {
    let h = LatencyHistogram::exponential(0.001, 2.0, 10);
    assert_eq!(h.quantile(0.95), 0.0);
    for _ in 0..90 {
        h.observe(Duration::from_micros(500)); // bucket (0, 1 ms]
    }
    for _ in 0..10 {
        h.observe(Duration::from_millis(30)); // bucket (16, 32 ms]
    }
    assert_eq!(h.count(), 100);
    let p50 = h.quantile(0.5);
    assert!(p50 > 0.0 && p50 <= 0.001, "{p50}");
    let p95 = h.quantile(0.95);
    assert!(p95 > 0.016 && p95 <= 0.032, "{p95}");
    let mean = h.mean();
    assert!((mean - 0.00345).abs() < 1e-6, "{mean}");
}

#[test]
fn values_beyond_the_last_bound_land_in_the_overflow_bucket() {
    let h = LatencyHistogram::exponential(0.001, 2.0, 3);
    h.observe(Duration::from_secs(10));
    assert_eq!(h.quantile(0.99), 0.004);
    let mut text = String::new();
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register("x_seconds", "test", h);
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("x_seconds_bucket{le=\"+Inf\"} 1"), "{text}");
    assert!(text.contains("x_seconds_bucket{le=\"0.004\"} 0"), "{text}");
    assert!(text.contains("x_seconds_count 1"), "{text}");
}
