//! What every connection reads and an admin request replaces (SCRAM credentials, ACLs):
//! readers take the current `Arc` without waiting on a change, and standalone changes (read,
//! apply, write the file, put in force) take turns.

use std::sync::{Arc, Mutex, MutexGuard, RwLock};

pub struct InForce<C> {
    current: RwLock<Arc<C>>,
    changes: Mutex<()>,
}

impl<C: Default> Default for InForce<C> {
    fn default() -> Self {
        Self {
            current: RwLock::new(Arc::new(C::default())),
            changes: Mutex::new(()),
        }
    }
}

impl<C> InForce<C> {
    pub fn current(&self) -> Arc<C> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn set(&self, value: C) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(value);
    }

    /// Held while a standalone change is read, applied, written and put in force.
    pub fn changing(&self) -> MutexGuard<'_, ()> {
        self.changes.lock().unwrap_or_else(|p| p.into_inner())
    }
}
