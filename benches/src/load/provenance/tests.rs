use super::*;

#[test]
fn changes_are_the_porcelain_lines() {
    assert!(changes("").is_empty());
    assert!(changes("\n").is_empty());
    assert_eq!(
        changes(" M filter/src/engine.rs\n?? notes.txt\n"),
        [" M filter/src/engine.rs", "?? notes.txt"]
    );
}

#[test]
fn this_repository_is_described() {
    let repo = rl_tests::repo_root();
    let p = Provenance::collect(
        &repo,
        Path::new("/nonexistent/envoy"),
        Path::new("/nonexistent/redis-server"),
        Path::new("/nonexistent/wrk"),
    );
    // The tests run in a git checkout: its HEAD is a full hash.
    assert_eq!(p.commit.len(), 40, "{p:?}");
    assert!(p.commit.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(p.dirty, !p.changes.is_empty());
    assert_eq!(p.envoy, "unknown");
    assert!(
        p.started_at.ends_with('Z') && p.started_at.len() == 20,
        "{}",
        p.started_at
    );
    assert!(p.cpus >= 1);
}
