use super::*;

#[test]
fn one_message_per_interval_with_suppressed_count() {
    let mut t = LogThrottle::new(10);
    assert_eq!(t.allow(100), Some(0));
    assert_eq!(t.allow(100), None);
    assert_eq!(t.allow(105), None);
    assert_eq!(t.allow(109), None);
    assert_eq!(t.allow(110), Some(3));
    assert_eq!(t.allow(111), None);
    assert_eq!(t.allow(500), Some(1));
}

#[test]
fn clock_going_backwards_reopens() {
    let mut t = LogThrottle::new(10);
    assert_eq!(t.allow(100), Some(0));
    assert_eq!(t.allow(50), Some(0));
    assert_eq!(t.allow(55), None);
}
