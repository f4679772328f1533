//! The running controller: state behind a mutex, every change saved to the store (compare-and-
//! swap on the version) before it is visible, watchers woken on each new version, and the
//! session-expiry tick. Time is the controller's own monotonic clock in ms.

use std::time::{Duration, Instant};

use broker::metadata::ClusterMetadata;
use tokio::sync::{Mutex, watch};
use tracing::{info, warn};

use super::decisions::{self, ControllerError};
use super::state::ControllerState;
use super::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Refused(#[from] ControllerError),
    #[error("cannot persist controller state: {0}")]
    Store(#[from] StoreError),
}

pub struct Settings {
    pub session_timeout_ms: i64,
}

pub struct Controller<S: Store> {
    state: Mutex<ControllerState>,
    store: S,
    started: Instant,
    versions: watch::Sender<u64>,
    pub settings: Settings,
}

impl<S: Store> Controller<S> {
    /// Loads the stored state, or starts a new cluster with `cluster_id`.
    pub async fn open(
        store: S,
        cluster_id: String,
        settings: Settings,
    ) -> Result<Self, StoreError> {
        let mut state = match store.load().await? {
            Some(s) => s,
            None => {
                let s = ControllerState::new(cluster_id);
                store.save(&s, 0).await?;
                s
            }
        };
        // Heartbeat times were on the previous process's clock: give every broker a fresh
        // session instead of fencing them all at once.
        for t in state.last_heartbeat_ms.values_mut() {
            *t = 0;
        }
        info!(cluster_id = %state.metadata.cluster_id, version = state.metadata.version, "controller state loaded");
        let version = state.metadata.version;
        Ok(Self {
            state: Mutex::new(state),
            store,
            started: Instant::now(),
            versions: watch::Sender::new(version),
            settings,
        })
    }

    pub fn now_ms(&self) -> i64 {
        self.started.elapsed().as_millis() as i64
    }

    /// Applies `f` to a copy of the state and commits it if it changed the version.
    pub async fn update<T>(
        &self,
        f: impl FnOnce(&mut ControllerState, i64) -> Result<T, ControllerError>,
    ) -> Result<T, ServiceError> {
        let now = self.now_ms();
        let mut guard = self.state.lock().await;
        let mut next = guard.clone();
        let out = f(&mut next, now)?;
        if next.metadata.version != guard.metadata.version {
            self.store.save(&next, guard.metadata.version).await?;
            let v = next.metadata.version;
            *guard = next;
            drop(guard);
            self.versions.send_replace(v);
        } else {
            // Heartbeat times change without a version bump; keep them in memory only.
            *guard = next;
        }
        Ok(out)
    }

    pub async fn snapshot(&self) -> ControllerState {
        self.state.lock().await.clone()
    }

    /// The committed metadata version, updated after every save.
    pub fn versions(&self) -> watch::Receiver<u64> {
        self.versions.subscribe()
    }

    /// The metadata once its version is above `after`, or the current one after `timeout`.
    pub async fn metadata_after(&self, after: u64, timeout: Duration) -> ClusterMetadata {
        let mut rx = self.versions.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|v| *v > after)).await;
        self.snapshot().await.metadata
    }

    /// Fences brokers whose sessions expired; run periodically.
    pub async fn tick(&self) {
        let timeout = self.settings.session_timeout_ms;
        match self
            .update(|s, now| Ok(decisions::expire_sessions(s, now, timeout)))
            .await
        {
            Ok(fenced) if !fenced.is_empty() => {
                warn!(brokers = ?fenced, "broker sessions expired; fenced")
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "session expiry failed"),
        }
    }
}
