use std::error::Error;

use super::*;

#[test]
fn a_store_failure_keeps_its_cause() {
    let err = UpdateError::from(SourceError::Timeout(Duration::from_secs(2)));
    assert_eq!(
        err.to_string(),
        "the configuration store (Redis) is unavailable: redis did not answer within 2s"
    );
    let source = err.source().expect("the source error is kept");
    assert!(matches!(
        source.downcast_ref::<SourceError>(),
        Some(SourceError::Timeout(_))
    ));
}
