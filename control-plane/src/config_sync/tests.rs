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

use crate::config::test_support::SAMPLE;
use crate::store::MemoryStore;

/// The shipped sample, whose secrets are the demo ones.
const SHIPPED: &str = include_str!("../../../rate_limit_config.yaml");

/// A configuration file in the system's temporary directory, removed when dropped (the
/// crate has no temp-file dependency; a unique name is enough here).
mod temp_file {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU64, Ordering};

    static NEXT: AtomicU64 = AtomicU64::new(0);

    pub struct File(pub PathBuf);

    impl File {
        pub fn new(text: &str) -> File {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir()
                .join(format!("config-sync-test-{}-{n}.yaml", std::process::id()));
            std::fs::write(&path, text).expect("write config");
            File(path)
        }
    }

    impl Drop for File {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

async fn manager(text: &str, demo: DemoPolicy) -> Result<Arc<ConfigManager>, ConfigError> {
    let file = temp_file::File::new(text);
    let metrics = Arc::new(Metrics::new(Arc::new(MemoryStore::new())));
    ConfigManager::start_with(&file.0, None, metrics, demo).await
}

fn sample() -> RateLimitConfig {
    config::parse_yaml(SAMPLE).expect("sample")
}

#[tokio::test]
async fn without_redis_a_precondition_is_checked_against_this_replica() {
    let m = manager(SAMPLE, DemoPolicy::Warn).await.expect("start");
    assert_eq!(m.meta().version, 1);
    let mut cfg = sample();
    cfg.tiers[0].requests_per_window = Some(420);
    let meta = m
        .update(
            cfg.clone(),
            ConfigSource::Api,
            &Precondition::VersionIn(vec![1]),
        )
        .await
        .expect("matches");
    assert_eq!((meta.version, meta.source), (2, ConfigSource::Api));
    assert_eq!(m.current().source().tiers[0].requests_per_window, Some(420));
    let stale = m
        .update(
            cfg.clone(),
            ConfigSource::Api,
            &Precondition::VersionIn(vec![1, 3]),
        )
        .await;
    assert!(
        matches!(stale, Err(UpdateError::Conflict { current: 2 })),
        "{stale:?}"
    );
    let never = m
        .update(
            cfg.clone(),
            ConfigSource::Api,
            &Precondition::VersionIn(vec![]),
        )
        .await;
    assert!(matches!(never, Err(UpdateError::Conflict { current: 2 })));
    let any = m.update(cfg, ConfigSource::Api, &Precondition::None).await;
    assert_eq!(any.expect("unconditional").version, 3);
    // Without Redis the newest document is this replica's.
    let newest = m.newest_document().await.expect("local");
    assert_eq!(newest.tiers[0].requests_per_window, Some(420));
}

#[tokio::test]
async fn strict_mode_refuses_demo_secrets_at_start_and_in_changes() {
    let refused = manager(SHIPPED, DemoPolicy::Refuse).await;
    let err = refused.err().expect("refused");
    assert_eq!(err.path(), "api_keys[0].key_sha256");

    let m = manager(SAMPLE, DemoPolicy::Refuse)
        .await
        .expect("no demo secret");
    let shipped = config::parse_yaml(SHIPPED).expect("shipped");
    let change = m
        .update(shipped.clone(), ConfigSource::Api, &Precondition::None)
        .await;
    match change {
        Err(UpdateError::Invalid(err)) => assert_eq!(err.path(), "api_keys[0].key_sha256"),
        other => panic!("{other:?}"),
    }
    assert_eq!(m.meta().version, 1, "nothing changed");

    // Without strict mode the same document is applied (and named in a warning).
    let m = manager(SAMPLE, DemoPolicy::Warn).await.expect("start");
    let applied = m
        .update(shipped, ConfigSource::Api, &Precondition::None)
        .await;
    assert_eq!(applied.expect("applied").version, 2);
}

#[tokio::test]
async fn a_broken_file_without_redis_is_fatal() {
    let err = manager("tiers: [oops", DemoPolicy::Warn).await.err();
    assert!(err.is_some());
}

#[test]
fn a_conflict_names_the_current_version() {
    let err = UpdateError::Conflict { current: 9 };
    assert_eq!(
        err.to_string(),
        "the configuration is at version 9, not the version If-Match names"
    );
}
