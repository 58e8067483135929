use super::*;

#[test]
fn once_names_are_key_safe() {
    let ok = Adjustment {
        change: Change::Charge { units: 3 },
        once: "0123abcdefc".into(),
    };
    assert!(ok.is_valid());
    for bad in ["", "A", "a:b", "{x}", &"a".repeat(41)] {
        let adj = Adjustment {
            change: Change::Charge { units: 1 },
            once: bad.to_string(),
        };
        assert!(!adj.is_valid(), "{bad:?}");
    }
}

#[test]
fn remembered_for_the_longest_window_within_its_bounds() {
    assert_eq!(remember_us([5_000_000, 60_000_000]), 60_000_000);
    assert_eq!(remember_us([10]), 1_000_000);
    assert_eq!(remember_us([]), 1_000_000);
    assert_eq!(remember_us([86_400_000_000]), MAX_REMEMBER_US);
}
