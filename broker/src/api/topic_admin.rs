//! Where a change to a topic goes: standalone, this broker's own topics; in a cluster, the
//! controller, whose metadata every broker follows. Shared by CreatePartitions, AlterConfigs
//! and IncrementalAlterConfigs, which validate here first (so `validate_only` answers exactly
//! what a real change would) and change nothing when refused.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;

use crate::cluster::controller_client::ControllerCallError;
use crate::cluster::runtime::ClusterRuntime;
use crate::metadata::ClusterMetadata;
use crate::state::{Broker, MAX_PARTITIONS, TopicError};

/// A Kafka error code and the message that goes with it.
pub type Refusal = (ResponseError, String);

/// How long a change waits to show in this broker's own metadata before it is answered, so a
/// client that asks this broker next sees it (Kafka's controller answers once committed, and
/// brokers catch up soon after; tools describe right after they alter).
pub const SHOWN_WITHIN: Duration = Duration::from_secs(3);

/// Waits up to [`SHOWN_WITHIN`] for a change the controller committed to be in force on this
/// broker (`shown`), so the client's next request here meets it; logs and answers anyway
/// when it is not (a later change may have replaced it). `what` names the change.
pub async fn until_shown(what: &str, shown: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + SHOWN_WITHIN;
    while !shown() {
        if tokio::time::Instant::now() >= deadline {
            tracing::info!(
                "{what} committed by the controller is not in force on this broker within {SHOWN_WITHIN:?}; answered anyway"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub enum Admin {
    Local(Arc<Broker>),
    Cluster(Arc<Broker>, Arc<ClusterRuntime>),
}

/// A topic as the cluster knows it now.
pub struct TopicView {
    pub partitions: i32,
    /// Config overrides (Kafka's "dynamic topic configs").
    pub overrides: BTreeMap<String, String>,
    /// The resource that declares it (`TopicMeta::managed_by`), if any.
    pub managed_by: Option<String>,
}

pub fn refusal_for(e: &TopicError) -> Refusal {
    (super::create_topics::error_for(e), e.to_string())
}

/// The Kafka error for a controller's refusal (`kind` is its stable error kind).
pub fn controller_refusal(e: &ControllerCallError) -> Refusal {
    let code = match e {
        ControllerCallError::Refused { kind, .. } => match kind.as_str() {
            "topic_exists" => ResponseError::TopicAlreadyExists,
            "invalid_topic_name" | "topic_collision" => ResponseError::InvalidTopicException,
            "invalid_replication_factor" => ResponseError::InvalidReplicationFactor,
            "unknown_topic_or_partition" => ResponseError::UnknownTopicOrPartition,
            "partition_decrease" | "invalid_partitions" => ResponseError::InvalidPartitions,
            "invalid_config" => ResponseError::InvalidConfig,
            "invalid_reassignment" | "cannot_cancel" | "invalid_replica_assignment" => {
                ResponseError::InvalidReplicaAssignment
            }
            "reassignment_in_progress" => ResponseError::ReassignmentInProgress,
            "no_reassignment_in_progress" => ResponseError::NoReassignmentInProgress,
            "unknown_broker" => ResponseError::BrokerNotAvailable,
            "policy_violation" => ResponseError::PolicyViolation,
            "resource_not_found" => ResponseError::ResourceNotFound,
            "unsupported_sasl_mechanism" => ResponseError::UnsupportedSaslMechanism,
            "duplicate_resource" => ResponseError::DuplicateResource,
            "unacceptable_credential" => ResponseError::UnacceptableCredential,
            _ => ResponseError::InvalidRequest,
        },
        // Retriable: the client tries again (the controller may be failing over).
        _ => ResponseError::RequestTimedOut,
    };
    let message = match e {
        ControllerCallError::Refused { message, .. } => message.clone(),
        other => other.to_string(),
    };
    (code, message)
}

impl Admin {
    pub fn of(broker: &Arc<Broker>) -> Self {
        match broker.cluster() {
            Some(rt) => Self::Cluster(Arc::clone(broker), Arc::clone(rt)),
            None => Self::Local(Arc::clone(broker)),
        }
    }

    pub fn broker(&self) -> &Arc<Broker> {
        match self {
            Self::Local(b) | Self::Cluster(b, _) => b,
        }
    }

    /// The topic as the cluster knows it now. In a cluster, this broker's metadata may lag
    /// the controller's (a topic created a moment ago through another broker), so a topic it
    /// does not know yet is looked up at the controller before it is called unknown.
    pub async fn topic(&self, name: &str) -> Result<TopicView, Refusal> {
        self.topic_from(name, false).await
    }

    /// As [`Self::topic`]; with `at_controller`, read from the controller itself (after a
    /// config change was refused as computed from a stale copy).
    pub async fn topic_from(&self, name: &str, at_controller: bool) -> Result<TopicView, Refusal> {
        let unknown = || {
            (
                ResponseError::UnknownTopicOrPartition,
                format!("unknown topic '{name}'"),
            )
        };
        let view = |t: &crate::metadata::TopicMeta| TopicView {
            partitions: t.partitions.len() as i32,
            overrides: t.configs.clone(),
            managed_by: t.managed_by.clone(),
        };
        match self {
            Self::Local(b) => b
                .topic(name)
                .map(|t| TopicView {
                    partitions: t.record.partitions,
                    overrides: t.record.configs.clone(),
                    managed_by: None,
                })
                .ok_or_else(unknown),
            Self::Cluster(_, rt) => {
                if !at_controller && let Some(t) = rt.membership.metadata().topics.get(name) {
                    return Ok(view(t));
                }
                let latest = rt
                    .membership
                    .client()
                    .metadata(None, Duration::ZERO, None)
                    .await
                    .map_err(|e| controller_refusal(&e))?;
                latest.topics.get(name).map(view).ok_or_else(unknown)
            }
        }
    }

    /// Grows `name` to `total` partitions (Kafka cannot shrink a topic), on the replicas of
    /// `assignment` (one list per new partition) when the client chose them.
    pub async fn add_partitions(
        &self,
        name: &str,
        total: i32,
        assignment: Option<Vec<Vec<i32>>>,
        validate_only: bool,
    ) -> Result<(), Refusal> {
        if let Some(r) = internal_topic_refusal(name, "grown") {
            return Err(r);
        }
        match self {
            Self::Local(b) => {
                let node = b.config.node_id;
                if let Some(a) = &assignment {
                    if a.iter().any(|r| r.as_slice() != [node]) {
                        return Err(standalone_assignment(node));
                    }
                    let have = self.topic(name).await?.partitions;
                    if have + a.len() as i32 != total {
                        return Err((
                            ResponseError::InvalidReplicaAssignment,
                            format!(
                                "growing from {have} to {total} partitions needs {} replica lists, not {}",
                                total - have,
                                a.len()
                            ),
                        ));
                    }
                }
                b.add_partitions(name, total, validate_only)
                    .map_err(|e| refusal_for(&e))
            }
            Self::Cluster(_, rt) => {
                let topic = self.topic(name).await?;
                let have = topic.partitions;
                if total <= have {
                    return Err(refusal_for(&TopicError::PartitionCount {
                        have,
                        asked: total,
                    }));
                }
                if total > MAX_PARTITIONS {
                    return Err(refusal_for(&TopicError::InvalidPartitions(total)));
                }
                if validate_only {
                    // What the controller would refuse, validate_only refuses too.
                    return managed(name, &topic);
                }
                let client = rt.membership.client();
                match &assignment {
                    Some(a) => {
                        client
                            .add_partitions_assigned(name, total as usize, a)
                            .await
                    }
                    None => client.add_partitions(name, total as usize).await,
                }
                .map_err(|e| controller_refusal(&e))?;
                shown(rt, |m| {
                    m.topics
                        .get(name)
                        .is_some_and(|t| t.partitions.len() as i32 >= total)
                })
                .await;
                Ok(())
            }
        }
    }

    /// Replaces `name`'s config overrides with `overrides`, checked against the broker's
    /// topic config rules first.
    pub async fn set_configs(
        &self,
        name: &str,
        overrides: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<(), Refusal> {
        match self
            .set_configs_if(name, None, overrides, validate_only)
            .await?
        {
            true => Ok(()),
            false => Err(config_conflict(name)),
        }
    }

    /// As [`Self::set_configs`], only while the overrides are still `expected` (when given):
    /// Ok(false) when they changed meanwhile, and nothing was changed.
    pub async fn set_configs_if(
        &self,
        name: &str,
        expected: Option<&BTreeMap<String, String>>,
        overrides: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<bool, Refusal> {
        match self {
            Self::Local(b) => match b.set_topic_configs(name, overrides, expected, validate_only) {
                Ok(()) => Ok(true),
                Err(TopicError::ConfigsChanged(_)) => Ok(false),
                Err(e) => Err(refusal_for(&e)),
            },
            Self::Cluster(b, rt) => {
                let topic = self.topic(name).await?;
                b.config
                    .topic_defaults
                    .with_overrides(&overrides)
                    .map_err(|e| refusal_for(&TopicError::InvalidConfig(e)))?;
                if validate_only {
                    return managed(name, &topic).map(|()| true);
                }
                match rt
                    .membership
                    .client()
                    .set_topic_configs_if(name, expected, &overrides)
                    .await
                {
                    Err(ControllerCallError::Refused { kind, .. }) if kind == "config_conflict" => {
                        return Ok(false);
                    }
                    other => other.map_err(|e| controller_refusal(&e))?,
                };
                shown(rt, |m| {
                    m.topics.get(name).is_none_or(|t| t.configs == overrides)
                })
                .await;
                Ok(true)
            }
        }
    }
}

/// A topic whose configs kept changing under a read-modify-write (retriable).
pub fn config_conflict(name: &str) -> Refusal {
    (
        ResponseError::RequestTimedOut,
        format!(
            "the configs of topic '{name}' kept changing while this change was applied; try again"
        ),
    )
}

/// The internal offsets topic can neither grow nor go: a group's coordinator is the
/// partition its id hashes to, so more partitions would strand every committed offset in the
/// old ones, and deleting it deletes them all (Kafka refuses both as well).
pub fn internal_topic_refusal(name: &str, change: &str) -> Option<Refusal> {
    (name == crate::group::OFFSETS_TOPIC).then(|| {
        (
            ResponseError::InvalidRequest,
            format!(
                "the internal topic {name} cannot be {change}: it holds every group's committed \
                 offsets, placed by hash over its partitions"
            ),
        )
    })
}

/// A standalone broker is the only replica of everything.
pub fn standalone_assignment(node: i32) -> Refusal {
    (
        ResponseError::InvalidReplicaAssignment,
        format!("this single broker (id {node}) can only host replica sets [{node}]"),
    )
}

/// The controller's refusal of a change through Kafka's API to a declared topic.
fn managed(name: &str, topic: &TopicView) -> Result<(), Refusal> {
    match &topic.managed_by {
        Some(owner) => Err((
            ResponseError::PolicyViolation,
            format!("topic '{name}' is managed by {owner}; change it there"),
        )),
        None => Ok(()),
    }
}

/// Waits (a little) until this broker's metadata satisfies `done`.
pub async fn shown(rt: &ClusterRuntime, done: impl Fn(&ClusterMetadata) -> bool) {
    let mut watch = rt.membership.subscribe();
    let _ = tokio::time::timeout(SHOWN_WITHIN, watch.wait_for(|m| done(m))).await;
}
