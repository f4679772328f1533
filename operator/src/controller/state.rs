//! The controller's state: the published metadata plus what only the controller needs
//! (heartbeat times, broker incarnations, the producer id counter, a rebalance under way).

use std::collections::BTreeMap;

use broker::metadata::ClusterMetadata;
use serde::{Deserialize, Serialize};

pub use super::rebalance::Rebalance;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerState {
    pub metadata: ClusterMetadata,
    /// Last heartbeat per broker, in controller clock ms. Not persisted meaning: after a
    /// controller restart every broker gets a fresh session.
    #[serde(default)]
    pub last_heartbeat_ms: BTreeMap<i32, i64>,
    /// Process incarnation per broker; a new one means the broker restarted.
    #[serde(default)]
    pub incarnations: BTreeMap<i32, String>,
    /// Broker epochs only grow, across all brokers.
    #[serde(default)]
    pub next_broker_epoch: i64,
    /// Start of the next producer id block.
    #[serde(default)]
    pub next_producer_id: i64,
    /// The brokers replicas were last balanced over; a scale-up is a broker outside it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub balanced_brokers: Vec<i32>,
    /// The leader epoch every partition created from now on starts at: one past the highest
    /// leader epoch of any deleted topic. A topic deleted and recreated under the same name
    /// must not reuse an epoch, because a replica fetch names its topic by name and (with no
    /// topic id, Fetch v12) the leader tells incarnations apart only by the leader epoch: a
    /// follower still fetching the old incarnation at an offset the new one has reached would
    /// otherwise count as holding records it never had.
    #[serde(default)]
    pub first_leader_epoch: i32,
    /// The default min.insync.replicas each broker reported when it registered (for topics
    /// without an override; see `decisions::min_insync`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub broker_min_insync: BTreeMap<i32, i32>,
    /// The rebalance under way, if any (persisted so a restarted controller resumes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebalance: Option<Rebalance>,
}

impl ControllerState {
    pub fn new(cluster_id: String) -> Self {
        Self {
            metadata: ClusterMetadata {
                cluster_id,
                ..ClusterMetadata::default()
            },
            ..Self::default()
        }
    }
}
