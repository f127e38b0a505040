//! The reload loop: the live snapshot, and the three triggers that replace it (the file
//! changing on disk, SIGHUP, `POST /reload`).
//!
//! A new file is validated whole and compiled into a [`Snapshot`] before one atomic swap. On
//! any error the running snapshot stays and the error is kept for the admin API. Requests
//! hold an `Arc` to the snapshot they started on, so a swap never disturbs them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::config::{self, Diagnostic, Severity};
use crate::health::Registry;
use crate::lock::lock;
use crate::metrics::Metrics;
use crate::promotion::Promotions;
use crate::shadow::Shadow;
use crate::snapshot::Snapshot;

/// Time to let a burst of file events settle before reading the file.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// The last reload that failed.
#[derive(Debug, Clone)]
pub struct LastError {
    /// Every problem, one per line, as `FILE:LINE:COL: message`.
    pub message: String,
    /// When it happened.
    pub at: SystemTime,
}

/// The live config and how to replace it.
pub struct Live {
    current: ArcSwap<Snapshot>,
    last_error: Mutex<Option<LastError>>,
    /// Version of the last file content attempted, so the watcher does not retry a bad
    /// file that has not changed.
    last_attempt: Mutex<String>,
    path: PathBuf,
    /// The path as the user wrote it, for messages.
    display: String,
    metrics: Arc<Metrics>,
    shadow: Arc<Shadow>,
    health: Registry,
    promotions: Arc<Promotions>,
    /// Reloads run one at a time.
    reloading: Mutex<()>,
}

impl Live {
    /// Loads the initial config; fails with every problem if it is invalid.
    pub fn load(
        path: &Path,
        metrics: Arc<Metrics>,
    ) -> Result<(Live, Vec<Diagnostic>), Vec<Diagnostic>> {
        let checked = config::load(path)?;
        let version = checked.config.version.clone();
        let shadow = Arc::new(Shadow::new(&checked.config.shadow, metrics.clone()));
        let health = Registry::default();
        let promotions = Arc::new(Promotions::new(metrics.clone()));
        let snapshot = Snapshot::build(checked.config, path.to_path_buf(), &health, &promotions);
        let live = Live {
            current: ArcSwap::from_pointee(snapshot),
            last_error: Mutex::new(None),
            last_attempt: Mutex::new(version),
            path: path.to_path_buf(),
            display: path.display().to_string(),
            metrics,
            shadow,
            health,
            promotions,
            reloading: Mutex::new(()),
        };
        Ok((live, checked.warnings))
    }

    /// The snapshot new requests use.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The last failed reload, until a reload succeeds.
    pub fn last_error(&self) -> Option<LastError> {
        lock(&self.last_error).clone()
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Promotion plans' live state.
    pub fn promotions(&self) -> &Arc<Promotions> {
        &self.promotions
    }

    /// The shadow engine and its results.
    pub fn shadow(&self) -> &Arc<Shadow> {
        &self.shadow
    }

    /// Reloads from the file now. Returns the new version, or every problem found (the
    /// running config stays). Blocking: call from `spawn_blocking` in async code.
    pub fn reload(&self, trigger: &str) -> Result<String, Vec<String>> {
        let _one_at_a_time = lock(&self.reloading);
        let started = std::time::Instant::now();
        let result = config::load(&self.path).and_then(|checked| {
            // The listener's protocol is fixed when it is bound, like its address.
            let was_tls = self.snapshot().config.tls.is_some();
            if was_tls != checked.config.tls.is_some() {
                let change = if was_tls { "removed" } else { "added" };
                return Err(vec![Diagnostic::error_nowhere(format!(
                    "`tls` cannot be {change} by a reload (the listener's protocol is fixed at start); restart to apply"
                ))]);
            }
            Ok(checked)
        });
        let result = match result {
            Ok(checked) => {
                *lock(&self.last_attempt) = checked.config.version.clone();
                for w in &checked.warnings {
                    tracing::warn!(trigger, "{}", w.display(&self.display));
                }
                let old = self.snapshot();
                if old.config.listen != checked.config.listen
                    || old.config.admin != checked.config.admin
                {
                    tracing::warn!(trigger, "listen or admin address changed; listeners are never re-bound on reload, restart to apply");
                }
                let version = checked.config.version.clone();
                let routes = checked.config.routes.len();
                self.shadow
                    .set_max_in_flight(checked.config.shadow.max_in_flight);
                let snapshot = Snapshot::build(
                    checked.config,
                    self.path.clone(),
                    &self.health,
                    &self.promotions,
                );
                self.current.store(Arc::new(snapshot));
                *lock(&self.last_error) = None;
                tracing::info!(
                    trigger,
                    version = &version[..12],
                    routes,
                    elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
                    "config reloaded"
                );
                Ok(version)
            }
            Err(diags) => {
                if let Ok(bytes) = std::fs::read(&self.path) {
                    *lock(&self.last_attempt) = config::version_of(&bytes);
                }
                let errors: Vec<String> = diags
                    .iter()
                    .filter(|d| d.severity == Severity::Error)
                    .map(|d| d.display(&self.display).to_string())
                    .collect();
                for e in &errors {
                    tracing::error!(trigger, "config rejected, keeping the running one: {e}");
                }
                *lock(&self.last_error) = Some(LastError {
                    message: errors.join("\n"),
                    at: SystemTime::now(),
                });
                Err(errors)
            }
        };
        self.metrics.reload(result.is_ok());
        result
    }

    /// Whether the file on disk differs from what was last attempted.
    fn changed_on_disk(&self) -> bool {
        match std::fs::read(&self.path) {
            Ok(bytes) => config::version_of(&bytes) != *lock(&self.last_attempt),
            // A file briefly missing (mid-rename) is not a change; a later event will come.
            Err(_) => false,
        }
    }
}

/// Reloads in a blocking task, so parsing a large file does not stall request handling.
pub async fn reload_async(live: &Arc<Live>, trigger: &'static str) -> Result<String, Vec<String>> {
    let live = live.clone();
    tokio::task::spawn_blocking(move || live.reload(trigger))
        .await
        .unwrap_or_else(|e| Err(vec![format!("reload task failed: {e}")]))
}

/// Reloads when the config file's content changes on disk.
pub fn watch_file(live: Arc<Live>) -> notify::Result<FileWatcher> {
    let path = live.path.clone();
    watch_path(&path, move || {
        let live = live.clone();
        async move {
            let l = live.clone();
            let changed = tokio::task::spawn_blocking(move || l.changed_on_disk())
                .await
                .unwrap_or(false);
            if changed {
                let _ = reload_async(&live, "file").await;
            }
        }
    })
}

/// Keeps a directory watch alive; dropping it stops the watch.
pub struct FileWatcher {
    _watcher: notify::RecommendedWatcher,
}

/// Calls `on_event` after any change in the directory holding `path` (debounced), from a
/// tokio task. The directory is watched, not the file's inode, so a file written in place,
/// replaced by rename, or swapped through a symlink as a Kubernetes ConfigMap volume does are
/// all seen. Callers compare the content themselves: events also fire for other files.
pub fn watch_path<F, Fut>(path: &Path, on_event: F) -> notify::Result<FileWatcher>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            // A full channel already means "look again"; dropping the extra signal is fine.
            let _ = tx.try_send(());
        }
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Let a burst (truncate + write, or the steps of a symlink swap) settle.
            tokio::time::sleep(DEBOUNCE).await;
            while rx.try_recv().is_ok() {}
            on_event().await;
        }
    });
    Ok(FileWatcher { _watcher: watcher })
}

/// Watches a `routes.yaml` for programs other than the proxy (the monolith's adapters):
/// calls `on_config` with each new valid version of the file, and logs (and skips) invalid
/// ones. Only content changes count.
pub fn watch_config<F>(path: &Path, on_config: F) -> notify::Result<FileWatcher>
where
    F: Fn(config::Config) + Send + Sync + 'static,
{
    let path_buf = path.to_path_buf();
    let last = Arc::new(Mutex::new(
        std::fs::read(path)
            .map(|b| config::version_of(&b))
            .unwrap_or_default(),
    ));
    let on_config = Arc::new(on_config);
    watch_path(path, move || {
        let (path, last, on_config) = (path_buf.clone(), last.clone(), on_config.clone());
        async move {
            let _ = tokio::task::spawn_blocking(move || {
                let Ok(bytes) = std::fs::read(&path) else {
                    return;
                };
                let version = config::version_of(&bytes);
                if *lock(&last) == version {
                    return;
                }
                *lock(&last) = version;
                match config::load(&path) {
                    Ok(checked) => on_config(checked.config),
                    Err(diags) => {
                        let file = path.display().to_string();
                        for d in diags.iter().filter(|d| d.severity == Severity::Error) {
                            tracing::error!(
                                "config rejected, keeping the running one: {}",
                                d.display(&file)
                            );
                        }
                    }
                }
            })
            .await;
        }
    })
}

/// Reloads on every SIGHUP.
pub fn watch_sighup(live: Arc<Live>) -> std::io::Result<()> {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let _ = reload_async(&live, "sighup").await;
        }
    });
    Ok(())
}
