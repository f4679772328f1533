//! The `ReplicatedTopic` resource (`strand.dev/v1alpha1`, short name `rt`): a topic on a
//! `LogCluster` in the same namespace, its spec (partitions, replication factor, topic config,
//! deletion policy) and its status (per-partition assignment, leader, epochs, ISR, conditions).
//!
//! Sync is one way, Kubernetes to the cluster. The API server itself refuses what can never be
//! applied (CEL rules below): fewer partitions, another cluster, another replication factor,
//! and topic names outside Kafka's rule (`broker::topic_name`: the schema's pattern and length,
//! and a rule on `metadata.name` when it is the topic name). The reconciler checks the name
//! again, and the `.`/`_` collision rule, which needs the cluster's other topics.

use std::collections::BTreeMap;

use broker::metadata::PartitionMeta;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::condition::Condition;

/// A Kafka topic managed from Kubernetes. The topic is named `spec.topicName`, or
/// `metadata.name` when that is unset.
// Each `printcolumn(...)` repeats `type_ = ...`, which clippy mistakes for a duplicate attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "strand.dev",
    version = "v1alpha1",
    kind = "ReplicatedTopic",
    plural = "replicatedtopics",
    shortname = "rt",
    category = "strand",
    namespaced,
    status = "ReplicatedTopicStatus",
    derive = "PartialEq",
    doc = "A topic on a LogCluster in the same namespace, managed one way from Kubernetes.",
    // Kubernetes names may be 253 characters long, Kafka topic names 249.
    validation = Rule::new(format!(
        "has(self.spec.topicName) || size(self.metadata.name) <= {}",
        broker::topic_name::MAX_LENGTH
    ))
    .message(kube::core::Message::Message(format!(
        "metadata.name is the Kafka topic name unless spec.topicName is set, and Kafka allows at most {} characters",
        broker::topic_name::MAX_LENGTH
    ))),
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".spec.cluster",
        description = "LogCluster holding the topic"
    ),
    printcolumn(name = "Partitions", type_ = "integer", json_path = ".spec.partitions"),
    printcolumn(
        name = "RF",
        type_ = "integer",
        json_path = ".spec.replicationFactor",
        description = "Replication factor"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.topicName) == has(oldSelf.topicName)").message("topicName cannot be added or removed after creation"))]
pub struct ReplicatedTopicSpec {
    /// Name of the LogCluster (same namespace) that holds the topic. Immutable.
    #[schemars(length(min = 1))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("cluster is immutable"))]
    pub cluster: String,
    /// Number of partitions (at most 100000). May grow, never shrink (Kafka cannot remove
    /// partitions).
    #[schemars(range(min = 1, max = 100000))]
    #[x_kube(validation = Rule::new("self >= oldSelf").message("partitions cannot be decreased"))]
    pub partitions: i32,
    /// Replicas per partition; at most the cluster's broker count. Immutable in v1alpha1
    /// (changing it needs replica reassignment, which the operator does not expose yet).
    #[schemars(range(min = 1))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("replicationFactor is immutable in v1alpha1"))]
    pub replication_factor: i32,
    /// Topic config with Kafka's names and string values, e.g. `min.insync.replicas: "2"`,
    /// `retention.ms: "86400000"`, `cleanup.policy: delete`. Unset keys take the broker defaults.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
    /// What deleting this resource does to the topic: Retain (default) keeps the topic and its
    /// data in the cluster; Delete deletes the topic.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Kafka topic name, when it differs from `metadata.name` (Kafka allows upper case and `_`,
    /// Kubernetes names do not): 1-249 characters of letters, digits, `.`, `_` and `-`, not `.`
    /// or `..`. Defaults to `metadata.name`. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = broker::topic_name::MAX_LENGTH),
        regex(pattern = broker::topic_name::PATTERN)
    )]
    #[x_kube(validation = Rule::new("self == oldSelf").message("topicName is immutable"))]
    pub topic_name: Option<String>,
}

impl ReplicatedTopic {
    /// The Kafka topic name: `spec.topicName`, else `metadata.name`.
    pub fn topic_name(&self) -> &str {
        self.spec
            .topic_name
            .as_deref()
            .or(self.metadata.name.as_deref())
            .unwrap_or_default()
    }
}

/// What deleting a ReplicatedTopic does to the topic.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeletionPolicy {
    /// Keep the topic and its data; only the Kubernetes resource goes.
    #[default]
    Retain,
    /// Delete the topic and its data.
    Delete,
}

/// What the operator last observed of the topic.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReplicatedTopicStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Topic id assigned by the controller (a UUID, as Kafka's Metadata v10+ reports it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_id: Option<String>,
    /// Per partition: assignment, leader, epochs, ISR and reassignment progress.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["partition".into()]))]
    pub partitions: Vec<PartitionStatus>,
    /// Ready, Progressing and Degraded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// One partition's state as the controller committed it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PartitionStatus {
    /// Partition index.
    pub partition: i32,
    /// Assigned broker ids; the first is the preferred leader.
    pub replicas: Vec<i32>,
    /// Leader broker id, -1 when no in-sync replica is alive.
    pub leader: i32,
    /// Bumped on every leader change; fences clients and followers of an old leader.
    pub leader_epoch: i32,
    /// Bumped on every change to the partition (leader, ISR, replicas).
    pub partition_epoch: i32,
    /// In-sync replicas: caught up with the leader; acks=all waits for them.
    pub isr: Vec<i32>,
    /// Replicas being added by a reassignment (KIP-455).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adding: Vec<i32>,
    /// Replicas being removed by a reassignment (KIP-455).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removing: Vec<i32>,
    /// Eligible leader replicas (KIP-966): out of the ISR since it fell below
    /// min.insync.replicas, yet holding every committed record; one leads if no ISR member can.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub elr: Vec<i32>,
}

impl From<&PartitionMeta> for PartitionStatus {
    fn from(p: &PartitionMeta) -> Self {
        Self {
            partition: p.partition,
            replicas: p.replicas.clone(),
            leader: p.leader,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            isr: p.isr.clone(),
            adding: p.adding.clone(),
            removing: p.removing.clone(),
            elr: p.elr.clone(),
        }
    }
}
