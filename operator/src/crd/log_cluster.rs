//! The `LogCluster` resource (`strand.dev/v1alpha1`, short name `lc`): a set of Strand brokers
//! run as one StatefulSet, its spec (size, image, storage, broker config, placement) and its
//! status (per-broker state, rollout progress, conditions).
//!
//! Named `LogCluster` rather than `KafkaCluster` or `StrandCluster`: it speaks the Kafka protocol
//! but is not Kafka (so the name must not collide with Strimzi's `Kafka` kinds in one cluster), and
//! `kubectl get logclusters` says what the thing is without knowing the product name.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::condition::Condition;

/// A Strand cluster: `replicas` brokers with broker id = pod ordinal, each with its own volume.
/// The operator owns every restart (the StatefulSet uses `updateStrategy: OnDelete`) and rolls one
/// broker at a time, only when no partition would fall below `min.insync.replicas`.
// Each `printcolumn(...)` repeats `type_ = ...`, which clippy mistakes for a duplicate attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "strand.dev",
    version = "v1alpha1",
    kind = "LogCluster",
    plural = "logclusters",
    shortname = "lc",
    category = "strand",
    namespaced,
    status = "LogClusterStatus",
    derive = "PartialEq",
    doc = "A Strand cluster: Kafka-compatible brokers run as one StatefulSet, rolled one broker at a time by the operator.",
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".spec.replicas",
        description = "Desired brokers"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyBrokers",
        description = "Brokers whose pod is ready and registered"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.rollout.phase",
        description = "Rollout phase"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.listeners) || self.listeners.all(l, !has(l.nodePortBase) || l.nodePortBase + self.replicas - 1 <= 32767)").message("a listener's nodePortBase + replicas - 1 must be at most 32767 (the NodePort range is 30000-32767)"))]
pub struct LogClusterSpec {
    /// Number of brokers. Broker ids are the pod ordinals 0..replicas-1. Scaling down
    /// decommissions the highest brokers (moves their replicas away) before pods are removed.
    #[schemars(range(min = 1))]
    pub replicas: i32,
    /// Broker container image, e.g. `strand/broker:0.1.0`. Changing it starts a rolling upgrade.
    #[schemars(length(min = 1))]
    pub image: String,
    /// Each broker's data volume (one PersistentVolumeClaim per broker).
    pub storage: StorageSpec,
    /// CPU and memory requests and limits of the broker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Broker settings, Kafka names and string values (e.g. `min.insync.replicas: "2"`,
    /// `log.retention.ms: "604800000"`). The operator sets node id, listeners, data directory and
    /// controller address itself. A change restarts the brokers one at a time.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub broker_config: BTreeMap<String, String>,
    /// Node label whose value is a broker's rack (e.g. `topology.kubernetes.io/zone`); replicas
    /// of a partition are spread over racks. Unset: no rack awareness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rack_label_key: Option<String>,
    /// Additions to the broker pods: labels, annotations and scheduling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodOverrides>,
    /// Pause switch: while true the operator restarts no broker (a rollout in progress stops
    /// after the current step) but keeps reporting status.
    #[serde(default)]
    pub paused: bool,
    /// Extra Kafka listeners (Kafka's named listeners): NodePort ones for clients outside the
    /// Kubernetes cluster, Internal ones for clients inside it that log in or use TLS. The
    /// plain in-cluster listener is `internal` (port 9092, the client Service); a client
    /// bootstrapping on a listener gets every broker's address on it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub listeners: Vec<ListenerSpec>,
    /// Kafka ACLs for every client: switches on Kafka's StandardAuthorizer, so a client may do
    /// only what a LogUser's ACLs (or `kafka-acls`) allow it. Clients that do not log in (the
    /// `internal` listener, or a listener without `authentication`) are `User:ANONYMOUS`.
    /// Changing it restarts the brokers one at a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<AuthorizationSpec>,
}

/// Which authorizer the brokers run.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationSpec {
    /// `simple`: Kafka's ACLs (StandardAuthorizer); a resource no ACL names is refused.
    #[serde(rename = "type")]
    pub type_: AuthorizationType,
    /// Principals allowed everything (Kafka's super.users): `User:admin`, or a bare user
    /// name (`admin`, `CN=ops,O=Example`), which means `User:<name>` as in Strimzi.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub super_users: Vec<String>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum AuthorizationType {
    Simple,
}

/// One extra listener: its brokers' addresses for clients outside the cluster.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.type != 'NodePort' || has(self.nodePortBase)").message("a NodePort listener needs nodePortBase (broker N gets NodePort nodePortBase+N)"))]
#[x_kube(validation = Rule::new("self.type != 'Internal' || (!has(self.nodePortBase) && !has(self.advertisedHost))").message("an Internal listener takes no nodePortBase or advertisedHost (brokers advertise their pod DNS names)"))]
pub struct ListenerSpec {
    /// Listener name: 1-15 of lowercase letters, digits and `-`, starting with a letter (it
    /// names the container port and the Services `<cluster>-<ordinal>-<name>`). Not
    /// `internal`, `kafka` or `http`.
    #[schemars(
        length(min = 1, max = 15),
        regex(pattern = r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
    )]
    #[x_kube(validation = Rule::new("!self.contains('--') && !(self in ['internal', 'kafka', 'http'])").message("listener names may not contain '--' or be internal, kafka or http"))]
    pub name: String,
    /// How clients reach the brokers: `NodePort` (one NodePort Service per broker, for clients
    /// outside the cluster) or `Internal` (pod DNS names, for clients inside it).
    #[serde(rename = "type")]
    pub type_: ListenerType,
    /// Container port the brokers listen on for this listener (not 9092 or 8080).
    #[schemars(range(min = 1024, max = 65535))]
    pub port: i32,
    /// NodePort of broker 0; broker N gets nodePortBase+N (explicit, so a broker can compute
    /// the port it advertises). Required for NodePort.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 30000, max = 32767))]
    pub node_port_base: Option<i32>,
    /// Host every broker advertises on this listener (e.g. a name that resolves to the
    /// nodes). Unset: the IP of the node each broker's pod runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub advertised_host: Option<String>,
    /// TLS on this listener: the brokers get certificates from the cluster's own CA (Secret
    /// `<cluster>-cluster-ca-cert` holds the CA certificate for clients' truststores) for
    /// their per-pod and Service DNS names, every node's address (NodePort) and
    /// `advertisedHost`. Kafka's SSL, or SASL_SSL with `authentication`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls: bool,
    /// How clients log in on this listener, e.g. `{type: scram-sha-512}`. Unset: no login,
    /// clients are `User:ANONYMOUS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<ListenerAuthentication>,
}

/// How clients log in on a listener.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ListenerAuthentication {
    /// `scram-sha-512`: SASL SCRAM-SHA-512 with a LogUser's password (Kafka's
    /// SASL_PLAINTEXT).
    #[serde(rename = "type")]
    pub type_: ListenerAuthenticationType,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenerAuthenticationType {
    #[serde(rename = "scram-sha-512")]
    ScramSha512,
}

/// How a listener is exposed.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenerType {
    /// A NodePort Service per broker selecting that broker's pod.
    NodePort,
    /// Inside the Kubernetes cluster only: each broker advertises its per-pod DNS name, and
    /// the client Service (`<cluster>`) bootstraps on the listener's port. For in-cluster
    /// clients that log in or use TLS (the `internal` listener does neither).
    Internal,
}

/// Each broker's data volume.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self == oldSelf").message("storage is immutable in v1alpha1: StatefulSet volume claim templates cannot change"))]
pub struct StorageSpec {
    /// Volume size, e.g. `10Gi`.
    pub size: Quantity,
    /// StorageClass of the volumes; unset uses the cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

/// What the operator adds to the broker pod template. Everything else in the pod is the
/// operator's.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    /// Extra pod labels (the operator's own labels win on a clash).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra pod annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Pod nodeSelector.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Pod tolerations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Pod affinity; without it the operator prefers spreading brokers over nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
}

/// What the operator last observed of the cluster.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LogClusterStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Brokers whose pod is ready and that are registered with the controller.
    #[serde(default)]
    pub ready_brokers: i32,
    /// One entry per broker.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["id".into()]))]
    pub brokers: Vec<BrokerState>,
    /// Rolling-upgrade progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
    /// Ready, Progressing and Degraded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The cluster controller's committed state (brokers, partitions, epochs, ISR), written only
    /// by the operator replica holding the leader Lease, compare-and-swap on resourceVersion.
    /// Read it with the ReplicatedTopics' status instead; its shape may change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "opaque_object")]
    pub controller_state: Option<serde_json::Value>,
    /// Where clients bootstrap, per listener: `internal` (the client Service, in-cluster) and
    /// each of `spec.listeners` (NodePort: the brokers' node addresses and NodePorts;
    /// Internal: the client Service on the listener's port).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub listeners: Vec<ListenerStatus>,
}

/// One listener's bootstrap addresses.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ListenerStatus {
    pub name: String,
    /// Comma-separated host:port list for a Kafka client's `bootstrap.servers` (empty while no
    /// broker pod has a node yet).
    pub bootstrap_servers: String,
}

/// An object the API server keeps as is (`x-kubernetes-preserve-unknown-fields`).
fn opaque_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// One broker as the operator sees it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BrokerState {
    /// Broker id (= pod ordinal).
    pub id: i32,
    /// The pod is ready.
    pub ready: bool,
    /// The broker is registered with the controller and heartbeating.
    pub registered: bool,
    /// Broker epoch from its latest registration; it grows on every restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<i64>,
    /// Rack the controller places replicas by: the `rackLabelKey` label of the broker's
    /// node, or the broker's own `--rack`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rack: Option<String>,
}

/// Where a rolling upgrade stands.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// Idle, Rolling, Blocked or Paused.
    pub phase: RolloutPhase,
    /// Pod template revision every broker ran before this rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_revision: Option<String>,
    /// Pod template revision the rollout moves brokers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_revision: Option<String>,
    /// Brokers already running `updateRevision`.
    #[serde(default)]
    pub updated_brokers: i32,
    /// The broker being drained or restarted now, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_broker: Option<i32>,
    /// Why the rollout cannot go on, e.g. "partition orders-3 would fall to 1 in-sync replica,
    /// below min.insync.replicas=2".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_reason: Option<String>,
}

/// Rolling-upgrade phase.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RolloutPhase {
    /// Every broker runs the current revision and leadership is restored.
    Idle,
    /// Brokers are being drained, restarted or waited for.
    Rolling,
    /// A restart would make a partition unavailable; see `blockedReason`.
    Blocked,
    /// `spec.paused` is true.
    Paused,
}
