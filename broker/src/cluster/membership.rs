//! Cluster membership: register with the controller, heartbeat, register again when fenced
//! (a new broker epoch), and follow the metadata by long poll, keeping the last copy on disk so
//! a restarted broker knows the cluster before the controller answers.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use super::controller_client::{ControllerCallError, ControllerClient, Registration};
use crate::metadata::ClusterMetadata;
use crate::storage::checkpoint::write_atomic_private;

pub const METADATA_FILE: &str = "cluster-metadata.json";

#[derive(Debug, Clone)]
pub struct Settings {
    pub heartbeat_interval: Duration,
    pub metadata_wait: Duration,
    pub retry_backoff: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(2),
            metadata_wait: Duration::from_secs(10),
            retry_backoff: Duration::from_millis(500),
        }
    }
}

/// A running membership: the current broker epoch and the latest metadata.
pub struct Membership {
    pub broker_id: i32,
    epoch: AtomicI64,
    metadata: watch::Sender<Arc<ClusterMetadata>>,
    client: ControllerClient,
    registration: Registration,
    metadata_path: PathBuf,
    settings: Settings,
    /// Set when the broker begins its controlled shutdown: a fence from then on is final, not
    /// a reason to register again (a new epoch would make a stopping broker a leader again).
    stopping: AtomicBool,
}

impl Membership {
    /// Loads the last metadata copy from `data_dir` (if any) and registers with the controller,
    /// retrying until it answers or `stop` fires.
    pub async fn join(
        client: ControllerClient,
        registration: Registration,
        data_dir: PathBuf,
        settings: Settings,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Arc<Self>, ControllerCallError> {
        let metadata_path = data_dir.join(METADATA_FILE);
        let cached = std::fs::read(&metadata_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<ClusterMetadata>(&b).ok())
            .unwrap_or_default();
        let m = Arc::new(Self {
            broker_id: registration.id,
            epoch: AtomicI64::new(-1),
            metadata: watch::Sender::new(Arc::new(cached)),
            client,
            registration,
            metadata_path,
            settings,
            stopping: AtomicBool::new(false),
        });
        loop {
            match m.register().await {
                Ok(()) => break,
                Err(e @ ControllerCallError::Refused { .. }) => return Err(e),
                Err(e) => warn!(error = %e, "cannot register yet; retrying"),
            }
            tokio::select! {
                _ = tokio::time::sleep(m.settings.retry_backoff) => {}
                _ = stop.changed() => return Err(ControllerCallError::Unreachable("stopped".into())),
            }
        }
        // The saved copy is what this broker's previous life knew: it may name this broker
        // the leader of an epoch it led then, with a log that has since lost its unsynced
        // tail. Acting on it would start a new leadership in that old epoch, appending other
        // records at offsets its followers already hold in that epoch (found by the
        // simulation). The registration fenced that life (its leaderships moved, it left the
        // ISRs), so only metadata from after it is applied.
        loop {
            match m.client.metadata(None, Duration::ZERO, None).await {
                Ok(fresh) => {
                    m.publish(fresh);
                    return Ok(m);
                }
                Err(e) => warn!(error = %e, "cannot read the metadata after registering; retrying"),
            }
            tokio::select! {
                _ = tokio::time::sleep(m.settings.retry_backoff) => {}
                _ = stop.changed() => return Err(ControllerCallError::Unreachable("stopped".into())),
            }
        }
    }

    /// Saves `m` to disk, then publishes it.
    fn publish(&self, m: ClusterMetadata) {
        if let Err(e) = serde_json::to_vec(&m)
            .map_err(std::io::Error::other)
            .and_then(|b| write_atomic_private(&self.metadata_path, &b))
        {
            warn!(error = %e, "cannot save cluster metadata");
        }
        self.metadata.send_replace(Arc::new(m));
    }

    /// A membership that never reaches a controller (none is listening at its address): for
    /// tests that hand metadata to the broker directly.
    #[cfg(test)]
    pub(crate) fn offline(broker_id: i32, data_dir: &std::path::Path) -> Arc<Self> {
        Arc::new(Self {
            broker_id,
            epoch: AtomicI64::new(1),
            metadata: watch::Sender::new(Arc::new(ClusterMetadata::default())),
            client: ControllerClient::new("http://127.0.0.1:9"),
            registration: Registration {
                id: broker_id,
                incarnation: "test".into(),
                host: "127.0.0.1".into(),
                port: 9,
                replication_host: None,
                rack: None,
                listeners: Vec::new(),
                unclean_shutdown: false,
                min_insync_replicas: None,
            },
            metadata_path: data_dir.join(METADATA_FILE),
            settings: Settings::default(),
            stopping: AtomicBool::new(false),
        })
    }

    async fn register(&self) -> Result<(), ControllerCallError> {
        let r = self.client.register(&self.registration).await?;
        let cached_cluster = self.metadata.borrow().cluster_id.clone();
        if !cached_cluster.is_empty() && cached_cluster != r.cluster_id {
            return Err(ControllerCallError::Refused {
                status: 0,
                kind: "cluster_mismatch".into(),
                message: format!(
                    "this broker's data belongs to cluster {cached_cluster}, the controller runs {}",
                    r.cluster_id
                ),
            });
        }
        self.epoch.store(r.epoch, Ordering::Release);
        info!(broker = self.broker_id, epoch = r.epoch, cluster_id = %r.cluster_id, "registered with the controller");
        Ok(())
    }

    /// The broker is stopping: it no longer registers again when fenced.
    pub fn begin_shutdown(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    pub fn epoch(&self) -> i64 {
        self.epoch.load(Ordering::Acquire)
    }
    pub fn client(&self) -> &ControllerClient {
        &self.client
    }
    pub fn metadata(&self) -> Arc<ClusterMetadata> {
        self.metadata.borrow().clone()
    }
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterMetadata>> {
        self.metadata.subscribe()
    }

    /// Heartbeats until `stop`; a fenced or stale broker registers again (new epoch).
    pub async fn heartbeat_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.settings.heartbeat_interval) => {}
                _ = stop.changed() => return,
            }
            match self.client.heartbeat(self.broker_id, self.epoch()).await {
                Ok(()) => {}
                Err(ControllerCallError::Refused { kind, .. })
                    if kind == "fenced"
                        || kind == "stale_broker_epoch"
                        || kind == "unknown_broker" =>
                {
                    if self.stopping.load(Ordering::Acquire) {
                        continue;
                    }
                    warn!(broker = self.broker_id, reason = %kind, "fenced by the controller; registering again");
                    if let Err(e) = self.register().await {
                        warn!(error = %e, "re-registration failed");
                    }
                }
                Err(e) => warn!(error = %e, "heartbeat failed"),
            }
        }
    }

    /// Follows the metadata until `stop`, saving each new version to disk before publishing it.
    pub async fn metadata_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        // The first failure in a row is retried at once: a poll whose connection broke (a
        // reset, a timeout) must be replaced within the controller's grace for lost watches,
        // or this live broker would be taken for a dead one. Later ones back off.
        let mut failures = 0u32;
        loop {
            let known = self.metadata.borrow().version;
            let after = (known > 0).then_some(known);
            let fetched = tokio::select! {
                r = self.client.metadata(after, self.settings.metadata_wait, Some((self.broker_id, self.epoch()))) => r,
                _ = stop.changed() => return,
            };
            if fetched.is_ok() {
                failures = 0;
            }
            match fetched {
                Ok(m) if m.version != known || after.is_none() => self.publish(m),
                Ok(_) => {}
                Err(e) => {
                    warn!(error = %e, "metadata poll failed");
                    failures += 1;
                    if failures > 1 {
                        tokio::time::sleep(self.settings.retry_backoff).await;
                    }
                }
            }
        }
    }
}
