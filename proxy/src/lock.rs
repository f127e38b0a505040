//! Taking a mutex whose holder may have panicked.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, poisoned or not: every value the proxy keeps behind a mutex (statistics,
/// windows, states) stays usable after a panic elsewhere, and serving goes on.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
