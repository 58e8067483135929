use super::*;

#[test]
fn parses_a_two_counter_reply() {
    let reply = Value::Array(vec![
        Value::Int(1),
        Value::Int(1_000),
        Value::Int(3),
        Value::Int(61_000),
        Value::Int(0),
        Value::Int(1),
        Value::Int(2_000),
        Value::Int(1),
    ]);
    let out = parse_reply(reply, 2).unwrap();
    assert!(out.admitted);
    assert_eq!(out.now_us, 1_000);
    assert_eq!(
        out.counters,
        vec![
            CounterState {
                count: 3,
                free_at_us: 61_000,
                full: false,
            },
            CounterState {
                count: 1,
                free_at_us: 2_000,
                full: true,
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
        Value::Int(0),
    ]);
    assert!(parse_reply(negative, 1).is_err());
    // The reply of the script before shadow counters: two numbers per counter.
    let short = Value::Array(vec![
        Value::Int(1),
        Value::Int(1_000),
        Value::Int(1),
        Value::Int(2_000),
    ]);
    assert!(parse_reply(short, 1).is_err());
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

/// The script call sending `calls` as one batch, argument by argument.
fn batch_args(store: &RedisStore, calls: &[&ScriptCall]) -> Vec<String> {
    store
        .script_cmd(calls)
        .args_iter()
        .map(|arg| match arg {
            redis::Arg::Simple(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            other => format!("{other:?}"),
        })
        .collect()
}

/// The script call sending `call` alone, argument by argument.
fn args(store: &RedisStore, call: &ScriptCall) -> Vec<String> {
    batch_args(store, &[call])
}

#[tokio::test]
async fn a_call_names_the_identity_seen_record_first_and_carries_its_own_nonce() {
    let store = RedisStore::new("redis://127.0.0.1:1/", RedisStoreOptions::default())
        .expect("the store connects lazily");
    let counters = [
        CounterSpec {
            key: "rl:{ip:10.0.0.1}:b:60".into(),
            limit: 100,
            window_us: 60_000_000,
            shadow: false,
            algorithm: crate::store::Algorithm::Exact,
        },
        CounterSpec {
            key: "rl:{ip:10.0.0.1}:e:1:/x".into(),
            limit: 5,
            window_us: 1_000_000,
            shadow: true,
            algorithm: crate::store::Algorithm::Exact,
        },
    ];
    let call = store.record_call("ip:10.0.0.1", &counters);
    let a = args(&store, &call);
    assert_eq!(a[0], "EVALSHA");
    assert_eq!(a[2], "3", "the seen record and two counters");
    assert_eq!(
        &a[3..6],
        ["rl:{ip:10.0.0.1}:n", &counters[0].key, &counters[1].key]
    );
    assert_eq!(a[6], "r");
    assert_eq!(a[7], "", "production time: the script reads Redis TIME");
    // Default timeout 100 ms: a horizon of 1 s; the record is armed once per horizon, for
    // two of them and a millisecond.
    assert_eq!(&a[8..10], ["1000000", "2001"]);
    let nonce = &a[10];
    assert!(!nonce.is_empty());
    assert_eq!(
        &a[11..14],
        ["2", "0", "1"],
        "two counters, no log to convert, a cost of 1"
    );
    assert_eq!(
        &a[14..],
        [
            "100", "60000000", "0", "0", "0", "5", "1000000", "1", "0", "0"
        ],
        "limit, window, shadow, no slots, no log to convert"
    );

    // Sent again, a call is the same bytes; a new call is a new nonce.
    assert_eq!(args(&store, &call.clone()), a);
    let next = store.record_call("ip:10.0.0.1", &counters);
    assert_ne!(&args(&store, &next)[10], nonce);
    // A report records nothing and carries no nonce.
    let report = store.script_call("ip:10.0.0.1", &counters, "p", "", 1);
    let r = args(&store, &report);
    assert_eq!((r[6].as_str(), r[10].as_str()), ("p", ""));

    // A batch: the requests' keys one after the other, the common arguments, then the
    // requests' arguments one after the other.
    let other = [counters[0].clone()];
    let second = store.record_call("ip:10.0.0.2", &other);
    let b = batch_args(&store, &[&call, &second]);
    assert_eq!(b[2], "5");
    assert_eq!(&b[3..6], &a[3..6]);
    assert_eq!(&b[6..8], ["rl:{ip:10.0.0.2}:n", &counters[0].key]);
    assert_eq!(&b[8..12], &a[6..10]);
    assert_eq!(&b[12..26], &a[10..]);
    assert_ne!(b[26], *nonce);
    assert_eq!(&b[27..], ["1", "0", "1", "100", "60000000", "0", "0", "0"]);

    // A heavier request says its cost; nothing else changes.
    let heavy = args(&store, &store.weighted_call("ip:10.0.0.1", &counters, 5));
    assert_eq!(heavy[13], "5");
    assert_eq!(&heavy[14..], &a[14..]);
}

#[tokio::test]
async fn a_new_slotted_counter_names_the_exact_log_of_its_window() {
    use crate::store::Algorithm;
    let store = RedisStore::new("redis://127.0.0.1:1/", RedisStoreOptions::default())
        .expect("the store connects lazily");
    let id = "ip:10.0.0.1";
    let slotted = Algorithm::Slotted { slot_us: 1_000_000 };
    let spec = |key: String, algorithm| CounterSpec {
        key,
        limit: 7,
        window_us: 60_000_000,
        shadow: false,
        algorithm,
    };
    let counters = [
        spec(keys::budget_key(id, 60, slotted), slotted),
        spec(keys::budget_key(id, 1, Algorithm::Exact), Algorithm::Exact),
        spec(keys::rule_key(id, 60, slotted, "/x"), slotted),
        // Not a key of ours: nothing to convert from.
        spec("rl:{ip:10.0.0.1}:custom".into(), slotted),
    ];
    let a = args(&store, &store.record_call(id, &counters));
    assert_eq!(a[2], "7", "the seen record, four counters, two logs");
    assert_eq!(
        &a[3..10],
        [
            "rl:{ip:10.0.0.1}:n",
            "rl:{ip:10.0.0.1}:b:60s1000",
            "rl:{ip:10.0.0.1}:b:1",
            "rl:{ip:10.0.0.1}:e:60s1000:/x",
            "rl:{ip:10.0.0.1}:custom",
            "rl:{ip:10.0.0.1}:b:60",
            "rl:{ip:10.0.0.1}:e:60:/x",
        ]
    );
    assert_eq!(
        &a[15..18],
        ["4", "2", "1"],
        "four counters, two logs, a cost of 1"
    );
    let per_counter: Vec<&[String]> = a[18..].chunks(5).collect();
    assert_eq!(per_counter[0], ["7", "60000000", "0", "1000000", "6"]);
    assert_eq!(per_counter[1], ["7", "60000000", "0", "0", "0"]);
    assert_eq!(per_counter[2], ["7", "60000000", "0", "1000000", "7"]);
    assert_eq!(per_counter[3], ["7", "60000000", "0", "1000000", "0"]);

    // The log of the same window counted in the same call (not a configuration the
    // validation lets through) is not converted under it.
    let both = [
        spec(keys::budget_key(id, 60, slotted), slotted),
        spec(keys::budget_key(id, 60, Algorithm::Exact), Algorithm::Exact),
    ];
    let a = args(&store, &store.record_call(id, &both));
    assert_eq!(a[2], "3");
    assert_eq!(
        &a[14..],
        [
            "7", "60000000", "0", "1000000", "0", "7", "60000000", "0", "0", "0"
        ]
    );
}

#[test]
fn the_replay_horizon_outlasts_every_retry() {
    assert_eq!(
        replay_horizon(Duration::from_millis(100)),
        Duration::from_secs(1)
    );
    assert_eq!(
        replay_horizon(Duration::from_millis(250)),
        Duration::from_millis(2_500)
    );
    assert_eq!(replay_horizon(Duration::ZERO), Duration::from_secs(1));
}

fn call_of(seen: &str, counters: usize, mode: &'static str) -> ScriptCall {
    ScriptCall {
        keys: std::iter::once(seen.to_string())
            .chain((0..counters).map(|i| format!("{seen}:{i}")))
            .collect(),
        args: vec!["0".into(); 4 + 5 * counters],
        mode,
        now_us: None,
        counter_count: counters,
    }
}

#[test]
fn a_batch_is_cut_in_order_into_as_few_script_calls_as_fit() {
    // Each call: 1 + 2 keys and 4 + 10 arguments, 17 in all.
    let calls: Vec<ScriptCall> = (0..5).map(|_| call_of("rl:{a}:n", 2, "r")).collect();
    let all: Vec<usize> = (0..5).collect();
    assert_eq!(chunks(&all, &calls, 85), vec![all.clone()]);
    assert_eq!(chunks(&all, &calls, 51), vec![vec![0, 1, 2], vec![3, 4]]);
    // A call bigger than the bound alone goes alone.
    assert_eq!(
        chunks(&all, &calls, 10),
        vec![vec![0], vec![1], vec![2], vec![3], vec![4]]
    );
    // Members keep the order given, gaps and all.
    assert_eq!(chunks(&[4, 1, 3], &calls, 34), vec![vec![4, 1], vec![3]]);
}

#[test]
fn reports_and_records_never_share_a_script_call() {
    let calls = vec![
        call_of("rl:{a}:n", 1, "r"),
        call_of("rl:{a}:n", 1, "p"),
        call_of("rl:{a}:n", 1, "p"),
        call_of("rl:{a}:n", 1, "r"),
    ];
    assert_eq!(
        chunks(&[0, 1, 2, 3], &calls, 1_000),
        vec![vec![0], vec![1, 2], vec![3]]
    );
}

#[test]
fn calls_are_grouped_by_the_slot_of_their_hash_tag_in_order() {
    use redis::cluster_routing::Slot;
    // Tags chosen by their slots: "a" and "b" differ, "{a}" keys all share one.
    assert_ne!(Slot::for_key("rl:{a}:n"), Slot::for_key("rl:{b}:n"));
    let calls = vec![
        call_of("rl:{b}:n", 1, "r"),
        call_of("rl:{a}:n", 1, "r"),
        call_of("rl:{b}:n", 2, "r"),
        call_of("rl:{a}:n", 3, "r"),
        call_of("rl:{b}:n", 1, "r"),
    ];
    assert_eq!(slot_groups(&calls), vec![vec![0, 2, 4], vec![1, 3]]);
}

#[test]
fn a_full_batch_of_tier_and_rule_windows_fits_one_script_call() {
    // A tier and a rule of six windows each, every slotted one with its exact log as source.
    let windows = 12;
    let per_request = (1 + windows + windows) + (3 + 5 * windows);
    assert!(rl_wire::MAX_BATCH_DECISIONS * per_request <= MAX_SCRIPT_ARGS);
}
