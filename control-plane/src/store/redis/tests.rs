use super::*;

#[test]
fn parses_a_two_counter_reply() {
    let reply = Value::Array(vec![
        Value::Int(1),
        Value::Int(1_000),
        Value::Int(3),
        Value::Int(61_000),
        Value::Int(1),
        Value::Int(2_000),
    ]);
    let out = parse_reply(reply, 2).unwrap();
    assert!(out.admitted);
    assert_eq!(out.now_us, 1_000);
    assert_eq!(
        out.counters,
        vec![
            CounterState {
                count: 3,
                free_at_us: 61_000
            },
            CounterState {
                count: 1,
                free_at_us: 2_000
            }
        ]
    );
}

#[test]
fn rejects_malformed_replies() {
    assert!(parse_reply(Value::Nil, 1).is_err());
    assert!(parse_reply(Value::Array(vec![Value::Int(1)]), 1).is_err());
    let negative = Value::Array(vec![
        Value::Int(1),
        Value::Int(-1),
        Value::Int(0),
        Value::Int(0),
    ]);
    assert!(parse_reply(negative, 1).is_err());
}
