//! The broker's side of a cluster at run time: membership, follower fetchers, ISR proposals
//! sent to the controller, the periodic ISR check, and producer ids from controller blocks.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{debug, warn};

use super::controller_client::{AlterPartition, ControllerCallError};
use super::membership::Membership;
use crate::metadata::PartitionMeta;
use crate::partition::{IsrProposal, Partition};
use crate::replication::fetcher::FetcherManager;
use crate::replication::state::{Assignment, Settings as ReplicationSettings};

/// How long a leader waits before asking again for an ISR change the controller did not answer.
const ALTER_PARTITION_RETRY: Duration = Duration::from_millis(500);

const PRODUCER_ID_BLOCK: i64 = 1000;

pub struct ClusterRuntime {
    pub membership: Arc<Membership>,
    pub fetchers: Arc<FetcherManager>,
    pub replica_lag_time_max_ms: i64,
    producer_ids: tokio::sync::Mutex<(i64, i64)>,
}

pub fn assignment(p: &PartitionMeta) -> Assignment {
    Assignment {
        leader: p.leader,
        leader_epoch: p.leader_epoch,
        partition_epoch: p.partition_epoch,
        replicas: p.replicas.clone(),
        isr: p.isr.clone(),
    }
}

impl ClusterRuntime {
    pub fn new(
        membership: Arc<Membership>,
        fetchers: Arc<FetcherManager>,
        replica_lag_time_max_ms: i64,
    ) -> Arc<Self> {
        Arc::new(Self {
            membership,
            fetchers,
            replica_lag_time_max_ms,
            producer_ids: tokio::sync::Mutex::new((0, 0)),
        })
    }

    pub fn settings(&self, min_insync_replicas: i32) -> ReplicationSettings {
        ReplicationSettings {
            replica_lag_time_max_ms: self.replica_lag_time_max_ms,
            min_insync_replicas: min_insync_replicas.max(1) as usize,
        }
    }

    /// Sends an ISR proposal to the controller and applies its answer; a committed change can
    /// lead straight to the next proposal.
    pub fn propose_isr(self: &Arc<Self>, partition: Arc<Partition>, proposal: IsrProposal) {
        let rt = Arc::clone(self);
        tokio::spawn(async move {
            let mut next = Some(proposal);
            while let Some(p) = next.take() {
                let req = AlterPartition {
                    broker: rt.membership.broker_id,
                    broker_epoch: rt.membership.epoch(),
                    topic: partition.topic.clone(),
                    partition: partition.index,
                    leader_epoch: p.leader_epoch,
                    partition_epoch: p.partition_epoch,
                    isr: p.isr.clone(),
                };
                match rt.membership.client().alter_partition(&req).await {
                    Ok(meta) => {
                        debug!(topic = %partition.topic, partition = partition.index, isr = ?meta.isr, "ISR change committed");
                        next = partition
                            .assignment_committed(assignment(&meta), crate::clock::now_ms());
                    }
                    // Kafka's handleAlterPartitionError: only a refusal that proves nothing was
                    // applied resets the proposal. Otherwise the controller may have committed
                    // it (an answer lost to a timeout) or holds a newer state (a stale
                    // partition or leader epoch); forgetting the proposal would have the high
                    // watermark move over the old, smaller ISR while the committed one names
                    // a replica that lacks those writes. It stays pending (counted in the
                    // high watermark) until the metadata brings the controller's state, and
                    // an answer that never came is asked again.
                    Err(ControllerCallError::Refused { kind, message, .. })
                        if kind == "invalid_isr" =>
                    {
                        warn!(topic = %partition.topic, partition = partition.index, isr = ?p.isr, error = %message, "ISR change refused");
                        partition.proposal_rejected();
                    }
                    Err(e @ ControllerCallError::Refused { .. }) => {
                        debug!(topic = %partition.topic, partition = partition.index, isr = ?p.isr, error = %e, "ISR change refused; waiting for the controller's metadata");
                    }
                    Err(e) => {
                        warn!(topic = %partition.topic, partition = partition.index, isr = ?p.isr, error = %e, "ISR change not answered; asking again");
                        tokio::time::sleep(ALTER_PARTITION_RETRY).await;
                        if partition.is_pending(&p) {
                            next = Some(p);
                        }
                    }
                }
            }
        });
    }

    /// A cluster-unique producer id, from blocks the controller hands out.
    pub async fn next_producer_id(&self) -> Result<i64, ControllerCallError> {
        let mut ids = self.producer_ids.lock().await;
        if ids.0 >= ids.1 {
            let block = self
                .membership
                .client()
                .producer_ids(PRODUCER_ID_BLOCK)
                .await?;
            *ids = block;
        }
        let id = ids.0;
        ids.0 += 1;
        Ok(id)
    }

    /// Runs the leaders' ISR check every second until `stop`.
    pub async fn tick_loop(
        self: Arc<Self>,
        partitions: impl Fn() -> Vec<Arc<Partition>> + Send + 'static,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.changed() => return,
            }
            let now = crate::clock::now_ms();
            for p in partitions() {
                if let Some(proposal) = p.tick(now) {
                    self.propose_isr(p, proposal);
                }
            }
        }
    }
}
