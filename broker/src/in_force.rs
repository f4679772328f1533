//! A list every connection reads and an admin request replaces (SCRAM credentials, ACLs):
//! readers take the current `Arc` without waiting on a change, and standalone changes (read,
//! apply, write the file, put in force) take turns.

use std::sync::{Arc, Mutex, MutexGuard, RwLock};

pub struct InForce<T> {
    list: RwLock<Arc<Vec<T>>>,
    changes: Mutex<()>,
}

impl<T> Default for InForce<T> {
    fn default() -> Self {
        Self {
            list: RwLock::new(Arc::new(Vec::new())),
            changes: Mutex::new(()),
        }
    }
}

impl<T> InForce<T> {
    pub fn current(&self) -> Arc<Vec<T>> {
        Arc::clone(&self.list.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn set(&self, list: Vec<T>) {
        *self.list.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(list);
    }

    /// Held while a standalone change is read, applied, written and put in force.
    pub fn changing(&self) -> MutexGuard<'_, ()> {
        self.changes.lock().unwrap_or_else(|p| p.into_inner())
    }
}
