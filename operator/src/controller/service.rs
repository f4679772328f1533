//! The running controller: the committed state behind a short-held mutex, every change saved
//! to the store (compare-and-swap on the version) before it is visible, watchers woken on each
//! new version, the session-expiry tick, and the fast path for a broker whose process died
//! (its metadata watch closed and not reopened; see `Controller::watch`). Commits are
//! serialised by their own lock, held
//! across the store write (on Kubernetes a PATCH); heartbeats and reads never take it, so they
//! do not queue behind the API server. Time is the controller's own monotonic clock in ms.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::metadata::ClusterMetadata;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::watch;
use tracing::{info, warn};

use super::decisions::{self, ControllerError};
use super::rebalance;
use super::state::ControllerState;
use super::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Refused(#[from] ControllerError),
    #[error("cannot persist controller state: {0}")]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub session_timeout_ms: i64,
    /// Partitions a rebalance moves at once (each copies its data to the new replicas).
    pub rebalance_max_moves: usize,
    /// The crash fast path's grace (`Controller::watch`): how long a broker has to open a new
    /// metadata watch after one closed from its side. A live broker opens the next within
    /// milliseconds of an answer, and at once after a failed poll; 300 ms is ample. None: off.
    pub crash_fence_grace: Option<Duration>,
}

/// Default of `Settings::rebalance_max_moves`: copies share the brokers' disks and network
/// with clients, so few at a time.
pub const DEFAULT_REBALANCE_MAX_MOVES: usize = 2;

pub struct Controller<S: Store> {
    /// The committed state, plus heartbeat times (kept in memory only). Never held across an
    /// await.
    state: Mutex<ControllerState>,
    /// Serialises commits; held across the store write.
    commit: tokio::sync::Mutex<()>,
    store: S,
    started: Instant,
    versions: watch::Sender<u64>,
    /// Each broker's open metadata watches (its long polls), for the fast path.
    watches: Mutex<HashMap<i32, Watches>>,
    pub settings: Settings,
}

/// One broker's metadata watches.
#[derive(Debug, Default)]
struct Watches {
    epoch: i64,
    open: usize,
    /// Bumped whenever a watch opens: a lost watch fences only if none opened after it.
    opened: u64,
}

/// An open metadata watch of a broker incarnation. Dropped without `answered` (the broker's
/// side closed the connection before the answer), it starts the fast path.
pub struct WatchGuard<S: Store + Send + Sync + 'static> {
    controller: Arc<Controller<S>>,
    broker: i32,
    epoch: i64,
    /// False for a watch that names no registered incarnation: its end means nothing.
    tracked: bool,
    answered: bool,
}

impl<S: Store + Send + Sync + 'static> WatchGuard<S> {
    pub fn answered(mut self) {
        self.answered = true;
    }
}

impl<S: Store + Send + Sync + 'static> Drop for WatchGuard<S> {
    fn drop(&mut self) {
        if !self.tracked {
            return;
        }
        let c = &self.controller;
        let opened = {
            let mut watches = c.watches.lock().unwrap_or_else(|p| p.into_inner());
            let Some(w) = watches.get_mut(&self.broker) else {
                return;
            };
            if w.epoch != self.epoch {
                return;
            }
            w.open = w.open.saturating_sub(1);
            if self.answered || w.open > 0 {
                return;
            }
            w.opened
        };
        let (c, broker, epoch) = (Arc::clone(c), self.broker, self.epoch);
        let Some(grace) = c.settings.crash_fence_grace else {
            return;
        };
        // Dropped outside a runtime, there is no fast path; the session timeout still holds.
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            tokio::time::sleep(grace).await;
            c.fence_if_gone(broker, epoch, opened).await;
        });
    }
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
            commit: tokio::sync::Mutex::new(()),
            store,
            started: Instant::now(),
            versions: watch::Sender::new(version),
            watches: Mutex::new(HashMap::new()),
            settings,
        })
    }

    pub fn now_ms(&self) -> i64 {
        self.started.elapsed().as_millis() as i64
    }

    fn live(&self) -> MutexGuard<'_, ControllerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `f` to a copy of the state and commits it if it changed the version.
    pub async fn update<T>(
        &self,
        f: impl FnOnce(&mut ControllerState, i64) -> Result<T, ControllerError>,
    ) -> Result<T, ServiceError> {
        let _commit = self.commit.lock().await;
        let now = self.now_ms();
        let current = self.live().clone();
        let mut next = current.clone();
        let out = f(&mut next, now)?;
        if next.metadata.version != current.metadata.version {
            if let Err(e) = self.store.save(&next, current.metadata.version).await {
                // The store may now hold something else than we do: another controller's
                // commit, or our own write whose answer was lost. Start the next call from
                // what is stored, never from a state that can no longer be saved.
                match self.store.load().await {
                    Ok(Some(mut stored)) if stored != current => {
                        for t in stored.last_heartbeat_ms.values_mut() {
                            *t = now; // a fresh session on our clock, as after a restart
                        }
                        warn!(held = current.metadata.version, stored = stored.metadata.version, error = %e, "controller state changed underneath; reloaded it");
                        let v = stored.metadata.version;
                        *self.live() = stored;
                        self.versions.send_replace(v);
                    }
                    _ => {}
                }
                return Err(e.into());
            }
            let v = next.metadata.version;
            self.install(next);
            self.versions.send_replace(v);
        } else {
            // Heartbeat times change without a version bump; keep them in memory only.
            self.install(next);
        }
        Ok(out)
    }

    /// Makes `next` the live state, keeping heartbeats that arrived while it was decided and
    /// saved (heartbeat times only grow, so the later of the two is the truth).
    fn install(&self, mut next: ControllerState) {
        let mut live = self.live();
        for (broker, t) in &live.last_heartbeat_ms {
            let kept = next.last_heartbeat_ms.entry(*broker).or_insert(*t);
            *kept = (*kept).max(*t);
        }
        *live = next;
    }

    /// A broker's heartbeat: checked against the live state and recorded in memory at once,
    /// without waiting for a commit in flight (a heartbeat never changes the version).
    pub fn heartbeat(&self, broker: i32, epoch: i64) -> Result<(), ControllerError> {
        let now = self.now_ms();
        decisions::heartbeat(&mut self.live(), broker, epoch, now)
    }

    pub async fn snapshot(&self) -> ControllerState {
        self.live().clone()
    }

    /// The committed metadata version, updated after every save.
    pub fn versions(&self) -> watch::Receiver<u64> {
        self.versions.subscribe()
    }

    /// Registers a metadata watch of `broker` at `epoch` (a long poll that names its broker).
    ///
    /// The fast path for a crash: a process that dies has its sockets closed by its kernel, so
    /// its watch ends without an answer; if the broker opens no other watch within
    /// the grace (`Settings::crash_fence_grace`), it is fenced at once instead of after the
    /// session timeout. Off unless a grace is set. A broker that
    /// is slow, stopped (SIGSTOP) or cut off from the network keeps its connection open (or
    /// silent: no FIN crosses a cut), so only the session timeout can fence it: the fast path
    /// never fences a broker that is alive and serving. Fencing elects new leaders from the
    /// ISR only, as session expiry does, so an early fence can cost a leader move, never an
    /// acknowledged write.
    pub fn watch(self: &Arc<Self>, broker: i32, epoch: i64) -> WatchGuard<S>
    where
        S: Send + Sync + 'static,
    {
        // Only a registered incarnation's watch is tracked: a query naming anything else (a
        // client's curl, a stale epoch) adds nothing to the map.
        let registered = self
            .live()
            .metadata
            .brokers
            .get(&broker)
            .is_some_and(|b| b.epoch == epoch);
        let mut watches = self.watches.lock().unwrap_or_else(|p| p.into_inner());
        if !registered {
            return WatchGuard {
                controller: Arc::clone(self),
                broker,
                epoch,
                tracked: false,
                answered: true,
            };
        }
        let w = watches.entry(broker).or_default();
        if w.epoch != epoch {
            *w = Watches {
                epoch,
                ..Watches::default()
            };
        }
        w.open += 1;
        w.opened += 1;
        WatchGuard {
            controller: Arc::clone(self),
            broker,
            epoch,
            tracked: true,
            answered: false,
        }
    }

    /// The fast path's decision, a grace after a watch of `broker` was lost: fenced if
    /// the same incarnation has opened no watch since (`opened` is unchanged).
    async fn fence_if_gone(&self, broker: i32, epoch: i64, opened: u64) {
        let gone = || {
            let watches = self.watches.lock().unwrap_or_else(|p| p.into_inner());
            watches
                .get(&broker)
                .is_some_and(|w| w.epoch == epoch && w.open == 0 && w.opened == opened)
        };
        if !gone() {
            return;
        }
        // Asked again under the commit lock: a watch opened while a commit was in flight
        // (on Kubernetes, behind a PATCH) must still call the fence off.
        match self
            .update(|s, _| {
                if gone() {
                    decisions::fence_gone(s, broker, epoch)
                } else {
                    Ok(false)
                }
            })
            .await
        {
            Ok(true) => warn!(
                broker,
                epoch,
                "broker closed its metadata watch and opened no other within the grace: fenced without waiting for its session"
            ),
            Ok(false) => {}
            Err(e) => warn!(broker, error = %e, "fencing a broker that went away failed"),
        }
    }

    /// The metadata once its version is above `after`, or the current one after `timeout`.
    pub async fn metadata_after(&self, after: u64, timeout: Duration) -> ClusterMetadata {
        let mut rx = self.versions.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|v| *v > after)).await;
        self.snapshot().await.metadata
    }

    /// One rebalance step over `members` (`rebalance::advance`), committed if it changed
    /// anything.
    pub async fn rebalance(
        &self,
        members: &[i32],
        may_move: bool,
        auto_start: bool,
    ) -> Result<rebalance::Outcome, ServiceError> {
        let max = self.settings.rebalance_max_moves;
        if max == 0 {
            return Ok(rebalance::Outcome::Nothing); // rebalancing is turned off
        }
        self.update(|s, _| Ok(rebalance::advance(s, members, may_move, auto_start, max)))
            .await
    }

    /// Without Kubernetes the broker set is the live brokers: a rebalance under way moves on
    /// (and, with `auto_start`, a new live broker begins one); run periodically.
    pub async fn rebalance_live_brokers(&self, auto_start: bool) {
        if !auto_start && self.live().rebalance.is_none() {
            return;
        }
        let members = self.live_brokers();
        match self.rebalance(&members, true, auto_start).await {
            Ok(rebalance::Outcome::Nothing | rebalance::Outcome::Balanced { .. }) => {}
            Ok(outcome) => info!(?outcome, "rebalance"),
            Err(e) => warn!(error = %e, "rebalance step failed"),
        }
    }

    /// Registered brokers that are alive now.
    pub fn live_brokers(&self) -> Vec<i32> {
        let s = self.live();
        s.metadata
            .brokers
            .keys()
            .copied()
            .filter(|b| s.metadata.is_alive(*b))
            .collect()
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
            rebalance_max_moves: DEFAULT_REBALANCE_MAX_MOVES,
            crash_fence_grace: None,
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
                    replication_host: None,
                    rack: None,
                    listeners: Vec::new(),
                    unclean_shutdown: false,
                    min_insync_replicas: None,
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

    /// A store whose saves wait until released, like a PATCH to a slow API server.
    struct SlowStore {
        inner: FileStore,
        release: tokio::sync::Semaphore,
    }

    impl Store for SlowStore {
        async fn load(&self) -> Result<Option<ControllerState>, StoreError> {
            self.inner.load().await
        }
        async fn save(&self, state: &ControllerState, expected: u64) -> Result<(), StoreError> {
            let _permit = self.release.acquire().await;
            self.inner.save(state, expected).await
        }
    }

    /// Heartbeats and reads go on while a commit waits on the store; the heartbeat recorded
    /// meanwhile survives the commit.
    #[tokio::test]
    async fn heartbeats_and_reads_do_not_wait_for_a_commit_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let store = SlowStore {
            inner: FileStore::new(dir.path().join("controller.json")),
            release: tokio::sync::Semaphore::new(1),
        };
        let c = std::sync::Arc::new(
            Controller::open(store, "c".into(), settings())
                .await
                .unwrap(),
        );
        c.update(topic("first")).await.unwrap();
        let epoch = c.snapshot().await.metadata.brokers[&0].epoch;
        // The next save blocks until a permit is added.
        let permit = c.store.release.acquire().await.unwrap();
        permit.forget();
        let commit = tokio::spawn({
            let c = std::sync::Arc::clone(&c);
            async move { c.update(|s, _| decisions::delete_topic(s, "first")).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!commit.is_finished(), "the save is held");
        let read = tokio::time::timeout(Duration::from_secs(1), c.snapshot())
            .await
            .expect("a read does not wait for the commit");
        assert!(
            read.metadata.topics.contains_key("first"),
            "not yet committed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        c.heartbeat(0, epoch).unwrap();
        let beat = c.snapshot().await.last_heartbeat_ms[&0];
        c.store.release.add_permits(1);
        commit.await.unwrap().unwrap();
        let after = c.snapshot().await;
        assert!(after.metadata.topics.is_empty());
        assert_eq!(
            after.last_heartbeat_ms[&0], beat,
            "the heartbeat survived the commit"
        );
        assert!(
            c.heartbeat(0, epoch - 1).is_err(),
            "a stale epoch is still refused"
        );
    }
}
