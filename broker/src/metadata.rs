//! The cluster metadata image the controller publishes and brokers act on: brokers, topics,
//! and per partition its replicas, leader, leader epoch, partition epoch and ISR. These types
//! are also the wire format of the controller's internal HTTP API (JSON), which is why they
//! live here: the operator depends on the broker's model, never the other way round.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::listener::{DEFAULT_LISTENER, Endpoint};

/// "No leader" (all ISR members are down).
pub const NO_LEADER: i32 = -1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BrokerStatus {
    /// Registered and heartbeating.
    Alive,
    /// Missed its session or was replaced by a newer incarnation: out of every ISR.
    Fenced,
    /// In controlled shutdown: leadership moved away, no new leadership.
    ShuttingDown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerMeta {
    pub id: i32,
    /// Bumped on every registration; requests carrying an older epoch are refused.
    pub epoch: i64,
    /// The default listener (`crate::listener::DEFAULT_LISTENER`): clients' and replication's.
    pub host: String,
    pub port: u16,
    /// Where followers dial this broker instead of `host` (`--inter-broker-host`: on
    /// Kubernetes the pod's IP, which needs no DNS record, so a follower is not held up by a
    /// lookup made before the broker's name was published and cached as missing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_host: Option<String>,
    /// Its extra listeners (`--listener`); absent from older controllers' state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<Endpoint>,
    #[serde(default)]
    pub rack: Option<String>,
    pub status: BrokerStatus,
    /// Leadership is kept off this broker (drained) until a preferred-leader election.
    #[serde(default)]
    pub drained: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMeta {
    pub partition: i32,
    /// Assignment order; the first replica is the preferred leader.
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub leader: i32,
    pub leader_epoch: i32,
    /// Bumped on every change to this partition; AlterPartition must name the current one.
    pub partition_epoch: i32,
    /// Replicas being added by a reassignment (KIP-455).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adding: Vec<i32>,
    /// Replicas being removed by a reassignment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removing: Vec<i32>,
    /// Eligible leader replicas (Kafka's KIP-966): replicas out of the ISR that still hold
    /// every committed record, because they left it while the ISR was smaller than
    /// min.insync.replicas (the high watermark stands still then). One may lead when no ISR
    /// member can.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub elr: Vec<i32>,
}

impl BrokerMeta {
    /// This broker's address on `listener`; None when it has no such listener.
    /// The address followers fetch from.
    pub fn replication_address(&self) -> String {
        match self.replication_host.as_deref() {
            // A pod IP may be IPv6.
            Some(ip) if ip.contains(':') && !ip.starts_with('[') => format!("[{ip}]:{}", self.port),
            Some(host) => format!("{host}:{}", self.port),
            None => format!("{}:{}", self.host, self.port),
        }
    }

    pub fn endpoint(&self, listener: &str) -> Option<(&str, u16)> {
        if listener == DEFAULT_LISTENER {
            return Some((&self.host, self.port));
        }
        self.listeners
            .iter()
            .find(|e| e.name == listener)
            .map(|e| (e.host.as_str(), e.port))
    }
}

impl PartitionMeta {
    pub fn has_leader(&self) -> bool {
        self.leader != NO_LEADER
    }
    /// The replica set a reassignment moves to.
    pub fn target_replicas(&self) -> Vec<i32> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !self.removing.contains(r))
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub name: String,
    pub id: uuid::Uuid,
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
    pub partitions: Vec<PartitionMeta>,
    /// The resource that declares this topic (e.g. `ReplicatedTopic shop/orders`), if any:
    /// its partitions, configs and existence are changed there, not through Kafka's API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_by: Option<String>,
}

/// Everything a broker needs to know about the cluster, at one version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMetadata {
    pub cluster_id: String,
    /// Bumped on every change; brokers long-poll for a newer one.
    pub version: u64,
    pub brokers: BTreeMap<i32, BrokerMeta>,
    pub topics: BTreeMap<String, TopicMeta>,
    /// Client quotas (Kafka's AlterClientQuotas), in entity order; every broker enforces them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_quotas: Vec<crate::quota::ClientQuota>,
    /// Client users' SCRAM credentials (Kafka's AlterUserScramCredentials), in (user,
    /// mechanism) order: salts and derived keys, never passwords.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scram_credentials: Vec<crate::auth::users::UserCredential>,
    /// ACLs (Kafka's CreateAcls), in order; every broker with an authorizer enforces them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acls: Vec<crate::auth::acl::Acl>,
}

impl ClusterMetadata {
    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionMeta> {
        self.topics
            .get(topic)?
            .partitions
            .get(usize::try_from(partition).ok()?)
    }
    pub fn partition_mut(&mut self, topic: &str, partition: i32) -> Option<&mut PartitionMeta> {
        self.topics
            .get_mut(topic)?
            .partitions
            .get_mut(usize::try_from(partition).ok()?)
    }
    /// Every (topic, partition) in name order.
    pub fn partitions(&self) -> impl Iterator<Item = (&str, &PartitionMeta)> {
        self.topics
            .values()
            .flat_map(|t| t.partitions.iter().map(move |p| (t.name.as_str(), p)))
    }
    pub fn is_alive(&self, broker: i32) -> bool {
        self.brokers
            .get(&broker)
            .is_some_and(|b| b.status == BrokerStatus::Alive)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Followers dial the inter-broker host when a broker gave one (a pod IP, v4 or v6), its
    /// advertised host otherwise; old JSON without it parses and is written back the same.
    #[test]
    fn followers_dial_the_inter_broker_host_when_there_is_one() {
        let old = r#"{"id":1,"epoch":3,"host":"demo-1.demo-brokers.ns.svc","port":9092,"status":"alive"}"#;
        let mut b: BrokerMeta = serde_json::from_str(old).unwrap();
        assert_eq!(b.replication_address(), "demo-1.demo-brokers.ns.svc:9092");
        assert!(
            !serde_json::to_string(&b)
                .unwrap()
                .contains("replication_host")
        );
        b.replication_host = Some("10.244.1.7".into());
        assert_eq!(b.replication_address(), "10.244.1.7:9092");
        b.replication_host = Some("fd00::7".into());
        assert_eq!(b.replication_address(), "[fd00::7]:9092");
        // Clients keep the advertised name.
        assert_eq!(
            b.endpoint(DEFAULT_LISTENER),
            Some(("demo-1.demo-brokers.ns.svc", 9092))
        );
    }

    /// A broker or controller of before named listeners: the old JSON still parses (no extra
    /// listeners), and a broker without extra listeners writes the old shape.
    #[test]
    fn listeners_are_backward_compatible_on_the_wire() {
        let old = r#"{"id":1,"epoch":3,"host":"h","port":9092,"status":"alive"}"#;
        let b: BrokerMeta = serde_json::from_str(old).unwrap();
        assert!(b.listeners.is_empty());
        assert_eq!(b.endpoint(DEFAULT_LISTENER), Some(("h", 9092)));
        assert_eq!(b.endpoint("external"), None);
        assert!(!serde_json::to_string(&b).unwrap().contains("listeners"));

        let reg: crate::cluster::controller_client::Registration = serde_json::from_str(
            r#"{"id":1,"incarnation":"x","host":"h","port":9092,"rack":null}"#,
        )
        .unwrap();
        assert!(reg.listeners.is_empty());

        let new = BrokerMeta {
            listeners: vec![Endpoint {
                name: "external".into(),
                host: "10.0.0.1".into(),
                port: 30101,
            }],
            ..b
        };
        let back: BrokerMeta = serde_json::from_str(&serde_json::to_string(&new).unwrap()).unwrap();
        assert_eq!(back.endpoint("external"), Some(("10.0.0.1", 30101)));
        assert_eq!(back.endpoint(DEFAULT_LISTENER), Some(("h", 9092)));
    }
}
