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

#[test]
fn an_error_reply_is_refused_and_keeps_the_redis_error() {
    use redis::{ErrorKind, ServerErrorKind};
    let reply = redis::RedisError::from((
        ErrorKind::Server(ServerErrorKind::ResponseError),
        "script failed",
        "user_script:1: bad argument".to_string(),
    ));
    let err = classify(reply);
    let StoreError::Refused(source) = &err else {
        panic!("an error reply is not an outage: {err:?}");
    };
    assert_eq!(source.detail(), Some("user_script:1: bad argument"));
    let chained = std::error::Error::source(&err).expect("the Redis error is the source");
    assert!(chained.to_string().contains("bad argument"), "{chained}");
    assert!(err.to_string().contains("bad argument"), "{err}");
}

#[test]
fn a_lost_connection_is_a_backend_error_and_keeps_the_io_error() {
    let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused by peer");
    let err = classify(redis::RedisError::from(io));
    let StoreError::Backend(source) = &err else {
        panic!("a lost connection is an outage: {err:?}");
    };
    assert!(source.is_io_error());
    assert!(err.to_string().contains("refused by peer"), "{err}");
    // A batch fails every member with the same error, which stays shared, not copied.
    let copy = err.clone();
    let (StoreError::Backend(a), StoreError::Backend(b)) = (&err, &copy) else {
        unreachable!()
    };
    assert!(Arc::ptr_eq(a, b));
}
