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
            if let Err(e) = self.store.save(&next, guard.metadata.version).await {
                // The store may now hold something else than we do: another controller's
                // commit, or our own write whose answer was lost. Start the next call from
                // what is stored, never from a state that can no longer be saved.
                match self.store.load().await {
                    Ok(Some(mut stored)) if stored != *guard => {
                        for t in stored.last_heartbeat_ms.values_mut() {
                            *t = now; // a fresh session on our clock, as after a restart
                        }
                        warn!(held = guard.metadata.version, stored = stored.metadata.version, error = %e, "controller state changed underneath; reloaded it");
                        let v = stored.metadata.version;
                        *guard = stored;
                        drop(guard);
                        self.versions.send_replace(v);
                    }
                    _ => {}
                }
                return Err(e.into());
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::store::FileStore;

    fn settings() -> Settings {
        Settings {
            session_timeout_ms: 9000,
        }
    }

    fn topic(
        name: &'static str,
    ) -> impl FnOnce(&mut ControllerState, i64) -> Result<(), ControllerError> {
        move |s, _| {
            decisions::register(
                s,
                decisions::Registration {
                    id: 0,
                    incarnation: "i".into(),
                    host: "h".into(),
                    port: 1,
                    rack: None,
                },
                0,
            );
            decisions::create_topic(s, name, 1, 1, Default::default(), uuid::Uuid::nil())
                .map(|_| ())
        }
    }

    #[tokio::test]
    async fn a_conflict_reloads_the_stored_state_so_the_next_call_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("controller.json");
        let a = Controller::open(FileStore::new(path.clone()), "c".into(), settings())
            .await
            .unwrap();
        let b = Controller::open(FileStore::new(path), "c".into(), settings())
            .await
            .unwrap();
        a.update(topic("from-a")).await.unwrap();
        // b still holds the old version: its commit is refused...
        let e = b.update(topic("from-b")).await.unwrap_err();
        assert!(
            matches!(e, ServiceError::Store(StoreError::Conflict { .. })),
            "{e}"
        );
        // ...and it now holds a's commit, so it can commit on top of it.
        assert!(b.snapshot().await.metadata.topics.contains_key("from-a"));
        b.update(|s, _| decisions::delete_topic(s, "from-a"))
            .await
            .unwrap();
        assert!(b.snapshot().await.metadata.topics.is_empty());
    }
}
