//! Reloading the configuration file when it changes.
//!
//! Editors and deploy tools replace files in different ways: writing in place, renaming a
//! new file onto the path, or (Kubernetes ConfigMaps) swapping a symlink to a new
//! directory. Watching the file itself misses the last two, so the watch is on its directory
//! and that directory's parent, and any event there triggers a re-read; the content digest
//! decides whether anything changed. The periodic poll catches whatever the watch misses.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::ConfigManager;

/// Events arrive in bursts (a rename is several); wait for the burst to end.
const DEBOUNCE: Duration = Duration::from_millis(150);

/// Starts watching in a background task; `None` when nothing could be watched (the
/// periodic check still runs).
pub fn watch_file(manager: Arc<ConfigManager>) -> Option<()> {
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let handler = move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            // A full channel means a reload is already pending.
            let _ = tx.try_send(());
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(watcher) => watcher,
        Err(err) => {
            tracing::warn!(error = %err, "cannot watch the configuration file; relying on the periodic check");
            return None;
        }
    };
    let file = manager.file().to_path_buf();
    let dir = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let mut watched = 0;
    for path in [Some(dir.as_path()), dir.parent()].into_iter().flatten() {
        let path = if path.as_os_str().is_empty() {
            Path::new(".")
        } else {
            path
        };
        match watcher.watch(path, RecursiveMode::NonRecursive) {
            Ok(()) => watched += 1,
            Err(err) => tracing::debug!(error = %err, path = %path.display(), "not watched"),
        }
    }
    if watched == 0 {
        tracing::warn!(path = %file.display(), "cannot watch the configuration file; relying on the periodic check");
        return None;
    }
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            tokio::time::sleep(DEBOUNCE).await;
            while rx.try_recv().is_ok() {}
            // When the directory is a symlink that was just swapped, the old watch still
            // points at the previous target: watch the path again to follow it.
            let _ = watcher.unwatch(&dir);
            if let Err(err) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
                tracing::debug!(error = %err, path = %dir.display(), "not watched");
            }
            manager.reload_file().await;
        }
    });
    Some(())
}
