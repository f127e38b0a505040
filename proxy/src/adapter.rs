//! Client adapters: a typed handle through which a monolith's own code reaches a
//! capability, whose implementation (local module or remote client) can be swapped live.
//!
//! [`Adapter<T>`] is the handle: code calls [`Adapter::current`] once per unit of work (an
//! order, say) and uses that `Arc<T>` to the end, so work in flight finishes on the
//! implementation it started with while new work picks up the new one. [`Binding`] ties an
//! adapter to its entry in `routes.yaml`'s `adapters:` section and builds a new implementation
//! only when that entry (or the upstream it names) changes; [`watch`] keeps bindings in step
//! with the file as it is edited.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use strangler::adapter::{Binding, Selection};
//! # use strangler::config::AdapterMode;
//! trait Catalog: Send + Sync { fn name(&self, id: u32) -> String; }
//! struct Local;
//! impl Catalog for Local { fn name(&self, id: u32) -> String { format!("local {id}") } }
//! let config = strangler::config::load("routes.yaml".as_ref()).ok().map(|c| c.config);
//! let binding = Arc::new(Binding::<dyn Catalog>::new("catalog", config.as_ref(), |sel: &Selection| {
//!     match sel.mode {
//!         AdapterMode::Local => Arc::new(Local) as Arc<dyn Catalog>,
//!         AdapterMode::Remote => Arc::new(Local), // an HTTP client for sel.upstream in real code
//!     }
//! }));
//! let catalog = binding.adapter();
//! let _watch = strangler::adapter::watch("routes.yaml".as_ref(), vec![binding.clone()]);
//! catalog.current().name(7);
//! ```

use std::path::Path;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::config::{AdapterMode, Config, Upstream};
use crate::lock::lock;
use crate::reload::{watch_config, FileWatcher};

/// A live, swappable implementation of `T` (usually a `dyn Trait`). Cloning gives another
/// handle to the same slot.
pub struct Adapter<T: ?Sized + Send + Sync> {
    slot: Arc<ArcSwap<Arc<T>>>,
}

impl<T: ?Sized + Send + Sync> Clone for Adapter<T> {
    fn clone(&self) -> Self {
        Adapter {
            slot: self.slot.clone(),
        }
    }
}

impl<T: ?Sized + Send + Sync> Adapter<T> {
    /// A handle serving `initial`.
    pub fn new(initial: Arc<T>) -> Self {
        Adapter {
            slot: Arc::new(ArcSwap::from_pointee(initial)),
        }
    }

    /// The implementation new work should use. Hold the `Arc` for the whole unit of work.
    pub fn current(&self) -> Arc<T> {
        Arc::clone(&self.slot.load())
    }

    /// Installs `next` for new work and returns the one it replaces.
    pub fn swap(&self, next: Arc<T>) -> Arc<T> {
        let old = self.slot.swap(Arc::new(next));
        Arc::clone(&old)
    }
}

/// What `routes.yaml` asks of one adapter: its mode and, for `remote`, the upstream of the same
/// name (its URL and timeouts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// `local` or `remote`.
    pub mode: AdapterMode,
    /// The upstream a remote implementation calls; `None` for local.
    pub upstream: Option<Upstream>,
}

impl Selection {
    /// The local implementation (also what a missing `adapters:` entry means).
    pub fn local() -> Self {
        Selection {
            mode: AdapterMode::Local,
            upstream: None,
        }
    }

    /// The selection for adapter `name` in `config`. Validation guarantees that a `remote`
    /// adapter has an upstream of its name; should it not, the adapter stays local.
    pub fn from_config(config: &Config, name: &str) -> Self {
        match config.adapters.get(name) {
            Some(AdapterMode::Remote) => match config.upstream(name) {
                Some(up) => Selection {
                    mode: AdapterMode::Remote,
                    upstream: Some(up.clone()),
                },
                None => Selection::local(),
            },
            _ => Selection::local(),
        }
    }

    fn describe(&self) -> String {
        match &self.upstream {
            Some(up) => format!("remote ({})", up.url),
            None => "local".to_string(),
        }
    }
}

type Factory<T> = Box<dyn Fn(&Selection) -> Arc<T> + Send + Sync>;

/// An [`Adapter`] bound to its `adapters:` entry: builds implementations with `make` and swaps
/// in a new one only when the selection changes, so an unrelated edit of the file (a route's
/// mode) keeps the running implementation and its state (connection pool, circuit breaker).
pub struct Binding<T: ?Sized + Send + Sync> {
    name: String,
    adapter: Adapter<T>,
    make: Factory<T>,
    selected: Mutex<Selection>,
}

impl<T: ?Sized + Send + Sync> Binding<T> {
    /// Binds adapter `name`, starting with what `config` selects (local when `None`).
    pub fn new<F>(name: &str, config: Option<&Config>, make: F) -> Self
    where
        F: Fn(&Selection) -> Arc<T> + Send + Sync + 'static,
    {
        let selection = config.map_or_else(Selection::local, |c| Selection::from_config(c, name));
        let adapter = Adapter::new(make(&selection));
        Binding {
            name: name.to_string(),
            adapter,
            make: Box::new(make),
            selected: Mutex::new(selection),
        }
    }

    /// The handle code calls through.
    pub fn adapter(&self) -> Adapter<T> {
        self.adapter.clone()
    }

    /// What is live now.
    pub fn selection(&self) -> Selection {
        lock(&self.selected).clone()
    }

    /// Follows `config`: swaps in a new implementation when this adapter's selection changed.
    /// Returns whether it swapped.
    pub fn apply(&self, config: &Config) -> bool {
        let next = Selection::from_config(config, &self.name);
        let mut selected = lock(&self.selected);
        if *selected == next {
            return false;
        }
        self.adapter.swap((self.make)(&next));
        tracing::info!(
            adapter = %self.name,
            from = %selected.describe(),
            to = %next.describe(),
            "adapter swapped"
        );
        *selected = next;
        true
    }
}

/// Anything that follows a config: lets [`watch`] drive bindings of different types.
pub trait FollowConfig: Send + Sync {
    /// Applies a new valid config; returns whether anything changed.
    fn follow(&self, config: &Config) -> bool;
}

impl<T: ?Sized + Send + Sync> FollowConfig for Binding<T> {
    fn follow(&self, config: &Config) -> bool {
        self.apply(config)
    }
}

/// Watches `path` and applies each new valid version of it to every binding (an invalid one is
/// logged and skipped; the adapters keep what they have). Dropping the watcher stops it. Call
/// from inside a tokio runtime.
pub fn watch(path: &Path, bindings: Vec<Arc<dyn FollowConfig>>) -> notify::Result<FileWatcher> {
    watch_config(path, move |config| {
        for binding in &bindings {
            binding.follow(&config);
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::parse;

    trait Greet: Send + Sync {
        fn hello(&self) -> String;
    }
    struct Fixed(String);
    impl Greet for Fixed {
        fn hello(&self) -> String {
            self.0.clone()
        }
    }

    fn yaml(mode: &str, url: &str) -> Config {
        parse(&format!(
            "upstreams:\n  legacy: http://127.0.0.1:1\n  greet: {url}\nfallback: legacy\nadapters:\n  greet: {mode}\n"
        ))
        .unwrap()
        .config
    }

    fn binding() -> (Binding<dyn Greet>, Arc<Mutex<usize>>) {
        let built = Arc::new(Mutex::new(0));
        let counter = built.clone();
        let b = Binding::<dyn Greet>::new("greet", None, move |sel: &Selection| {
            *counter.lock().unwrap() += 1;
            Arc::new(Fixed(sel.describe())) as Arc<dyn Greet>
        });
        (b, built)
    }

    #[test]
    fn swap_replaces_for_new_work_and_keeps_old_for_holders() {
        let adapter: Adapter<dyn Greet> = Adapter::new(Arc::new(Fixed("a".into())));
        let held = adapter.current();
        let old = adapter.swap(Arc::new(Fixed("b".into())));
        assert_eq!(old.hello(), "a");
        assert_eq!(held.hello(), "a", "work in flight keeps its implementation");
        assert_eq!(adapter.current().hello(), "b");
        assert_eq!(
            adapter.clone().current().hello(),
            "b",
            "clones share the slot"
        );
    }

    #[test]
    fn binding_starts_local_without_config() {
        let (b, built) = binding();
        assert_eq!(b.selection(), Selection::local());
        assert_eq!(b.adapter().current().hello(), "local");
        assert_eq!(*built.lock().unwrap(), 1);
    }

    #[test]
    fn binding_swaps_only_when_its_selection_changes() {
        let (b, built) = binding();
        let handle = b.adapter();
        assert!(!b.apply(&yaml("local", "http://127.0.0.1:2")));
        assert!(b.apply(&yaml("remote", "http://127.0.0.1:2")));
        assert_eq!(handle.current().hello(), "remote (http://127.0.0.1:2)");
        assert!(
            !b.apply(&yaml("remote", "http://127.0.0.1:2")),
            "same selection"
        );
        assert!(
            b.apply(&yaml("remote", "http://127.0.0.1:3")),
            "upstream moved"
        );
        assert_eq!(handle.current().hello(), "remote (http://127.0.0.1:3)");
        assert!(b.apply(&yaml("local", "http://127.0.0.1:3")));
        assert_eq!(handle.current().hello(), "local");
        assert_eq!(*built.lock().unwrap(), 4);
    }

    #[test]
    fn missing_entry_means_local() {
        let config = parse("upstreams:\n  legacy: http://127.0.0.1:1\nfallback: legacy\n")
            .unwrap()
            .config;
        assert_eq!(Selection::from_config(&config, "greet"), Selection::local());
    }

    #[tokio::test]
    async fn watch_follows_file_edits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.yaml");
        let text = |mode: &str| {
            format!("upstreams:\n  legacy: http://127.0.0.1:1\n  greet: http://127.0.0.1:2\nfallback: legacy\nadapters:\n  greet: {mode}\n")
        };
        std::fs::write(&path, text("local")).unwrap();
        let (b, _) = binding();
        let b = Arc::new(b);
        let handle = b.adapter();
        let _watch = watch(&path, vec![b.clone()]).unwrap();
        std::fs::write(&path, text("remote")).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while handle.current().hello() == "local" {
            assert!(
                std::time::Instant::now() < deadline,
                "adapter never swapped"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(handle.current().hello(), "remote (http://127.0.0.1:2)");
        // An invalid file is skipped: the adapter keeps what it has.
        std::fs::write(&path, "adapters:\n  greet: sideways\n").unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert_eq!(handle.current().hello(), "remote (http://127.0.0.1:2)");
    }
}
