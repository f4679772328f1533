//! Cluster-mode answers for the APIs whose truth lives at the controller: Metadata (from the
//! followed metadata image), CreateTopics and DeleteTopics (forwarded to the controller), and
//! InitProducerId (ids from controller blocks). Standalone mode uses the sibling modules.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    InitProducerIdResponse, MetadataRequest, MetadataResponse, ResponseKind, TopicName,
};
use tracing::warn;

use super::{Reply, str_bytes};
use crate::cluster::controller_client::ControllerCallError;
use crate::cluster::runtime::ClusterRuntime;
use crate::metadata::{BrokerStatus, ClusterMetadata, TopicMeta};
use crate::state::Broker;
use crate::topic_name;

use super::metadata::{ALL_PARTITIONS, OPERATIONS_OMITTED};

fn error_for(e: &ControllerCallError) -> ResponseError {
    super::topic_admin::controller_refusal(e).0
}

fn live_brokers(meta: &ClusterMetadata) -> usize {
    meta.brokers
        .values()
        .filter(|b| b.status == BrokerStatus::Alive)
        .count()
}

/// How a topic is listed to a client on `listener`, in a response of `version`: Metadata's,
/// or, for DescribeTopicPartitions, Metadata's newest (LISTENER_NOT_FOUND, as Kafka answers).
pub struct View<'a> {
    pub listener: &'a str,
    pub version: i16,
}

/// A topic as the cluster image has it, with the partitions whose indexes are in `range`
/// (DescribeTopicPartitions pages through them).
pub fn topic_entry(
    meta: &ClusterMetadata,
    t: &TopicMeta,
    view: &View,
    range: Range<usize>,
) -> MetadataResponseTopic {
    let mut out = MetadataResponseTopic::default();
    out.name = Some(TopicName(str_bytes(t.name.clone())));
    out.topic_id = t.id;
    out.topic_authorized_operations = OPERATIONS_OMITTED;
    out.is_internal = t.name == crate::group::OFFSETS_TOPIC;
    out.partitions = t
        .partitions
        .iter()
        .skip(range.start)
        .take(range.len())
        .map(|p| {
            let mut e = MetadataResponsePartition::default();
            e.partition_index = p.partition;
            e.leader_id = p.leader.into();
            e.leader_epoch = p.leader_epoch;
            e.replica_nodes = p.replicas.iter().map(|r| (*r).into()).collect();
            e.isr_nodes = p.isr.iter().map(|r| (*r).into()).collect();
            e.offline_replicas = p
                .replicas
                .iter()
                .filter(|r| !meta.is_alive(**r))
                .map(|r| (*r).into())
                .collect();
            if !p.has_leader() {
                e.error_code = ResponseError::LeaderNotAvailable.code();
            } else if meta
                .brokers
                .get(&p.leader)
                .is_some_and(|b| b.endpoint(view.listener).is_none())
            {
                // Kafka: a leader the client cannot reach on its listener is no leader to it.
                e.leader_id = crate::metadata::NO_LEADER.into();
                e.error_code = if view.version >= 6 {
                    ResponseError::ListenerNotFound.code()
                } else {
                    ResponseError::LeaderNotAvailable.code()
                };
            }
            e
        })
        .collect();
    out
}

/// Metadata from the cluster image. Unknown topics are created at the controller when allowed;
/// until the image has them they answer LEADER_NOT_AVAILABLE, and clients retry (as Kafka's
/// auto-creation does).
pub fn metadata(
    broker: &Arc<Broker>,
    rt: &Arc<ClusterRuntime>,
    req: MetadataRequest,
    version: i16,
    listener: &str,
) -> MetadataResponse {
    let meta = rt.membership.metadata();
    let view = View { listener, version };
    let mut r = MetadataResponse::default();
    // Every broker's address on the request's listener; one without it is left out (Kafka).
    r.brokers = meta
        .brokers
        .values()
        .filter(|b| b.status != BrokerStatus::Fenced)
        .filter_map(|b| {
            let (host, port) = b.endpoint(listener)?;
            let mut m = MetadataResponseBroker::default();
            m.node_id = b.id.into();
            m.host = str_bytes(host);
            m.port = i32::from(port);
            m.rack = b.rack.clone().map(str_bytes);
            Some(m)
        })
        .collect();
    r.cluster_id = Some(str_bytes(meta.cluster_id.clone()));
    // Any broker forwards admin requests to the controller.
    r.controller_id = broker.config.node_id.into();
    r.cluster_authorized_operations = OPERATIONS_OMITTED;
    let all = match &req.topics {
        None => true,
        Some(t) => t.is_empty() && version == 0,
    };
    if all {
        r.topics = meta
            .topics
            .values()
            .map(|t| topic_entry(&meta, t, &view, ALL_PARTITIONS))
            .collect();
        return r;
    }
    let auto_create = req.allow_auto_topic_creation && broker.config.auto_create_topics;
    for wanted in req.topics.unwrap_or_default() {
        let name = wanted.name.as_ref().map(|n| n.as_str().to_string());
        let found = match &name {
            Some(n) => meta.topics.get(n),
            None => meta.topics.values().find(|t| t.id == wanted.topic_id),
        };
        if let Some(t) = found {
            r.topics.push(topic_entry(&meta, t, &view, ALL_PARTITIONS));
            continue;
        }
        let mut t = MetadataResponseTopic::default();
        t.name = name.clone().map(|n| TopicName(str_bytes(n)));
        t.topic_id = wanted.topic_id;
        t.topic_authorized_operations = OPERATIONS_OMITTED;
        t.error_code = match &name {
            Some(n)
                if topic_name::validate(n).is_err()
                    || (auto_create
                        && topic_name::find_collision(
                            n,
                            meta.topics.keys().map(String::as_str),
                        )
                        .is_some()) =>
            {
                ResponseError::InvalidTopicException.code()
            }
            Some(n) if auto_create => {
                let rf = (broker.config.default_replication_factor.max(1) as usize)
                    .min(live_brokers(&meta).max(1));
                let (rt, n, parts) = (
                    Arc::clone(rt),
                    n.clone(),
                    broker.config.default_partitions.max(1) as usize,
                );
                tokio::spawn(async move {
                    match rt
                        .membership
                        .client()
                        .create_topic(&n, parts, rf, &BTreeMap::new())
                        .await
                    {
                        Ok(_) | Err(ControllerCallError::Refused { .. }) => {}
                        Err(e) => warn!(topic = %n, error = %e, "auto-creation failed"),
                    }
                });
                ResponseError::LeaderNotAvailable.code()
            }
            Some(_) => ResponseError::UnknownTopicOrPartition.code(),
            None => ResponseError::UnknownTopicId.code(),
        };
        r.topics.push(t);
    }
    r
}

pub fn create_topics(
    broker: &Arc<Broker>,
    rt: &Arc<ClusterRuntime>,
    req: CreateTopicsRequest,
) -> Reply {
    let (broker, rt) = (Arc::clone(broker), Arc::clone(rt));
    Reply::Later(Box::pin(async move {
        let mut r = CreateTopicsResponse::default();
        let meta = rt.membership.metadata();
        let live = live_brokers(&meta);
        for topic in req.topics {
            let name = topic.name.as_str().to_string();
            let mut res = CreatableTopicResult::default();
            res.name = topic.name.clone();
            res.num_partitions = -1;
            res.replication_factor = -1;
            let configs: BTreeMap<String, String> = topic
                .configs
                .iter()
                .filter_map(|c| {
                    c.value
                        .as_ref()
                        .map(|v| (c.name.as_str().to_string(), v.as_str().to_string()))
                })
                .collect();
            let partitions = if topic.num_partitions == -1 {
                broker.config.default_partitions
            } else {
                topic.num_partitions
            };
            let rf = if topic.replication_factor == -1 {
                (broker.config.default_replication_factor.max(1) as usize).min(live.max(1)) as i16
            } else {
                topic.replication_factor
            };
            // A client's own replica choice: one list per partition, indexes 0..n.
            let assignment = match assignment_of(&topic) {
                Ok(a) => a,
                Err(refusal) => {
                    res.error_code = refusal.0.code();
                    res.error_message = Some(str_bytes(refusal.1));
                    r.topics.push(res);
                    continue;
                }
            };
            let (partitions, rf) = match &assignment {
                Some(a) => (a.len() as i32, a.first().map_or(0, Vec::len) as i16),
                None => (partitions, rf),
            };
            let local = topic_name::validate(&name)
                .map_err(|e| (ResponseError::InvalidTopicException, e.to_string()))
                .and_then(|()| {
                    // The controller decides; this answers validate_only as Kafka would.
                    match topic_name::find_collision(&name, meta.topics.keys().map(String::as_str)) {
                        Some(other) => Err((ResponseError::InvalidTopicException, format!("topic '{name}' collides with existing topic '{other}' ('.' and '_' are the same in metric names)"))),
                        None => Ok(()),
                    }
                })
                .and_then(|()| {
                    broker.config.topic_defaults.with_overrides(&configs).map_err(|e| (ResponseError::InvalidConfig, e.to_string()))
                })
                .and_then(|_| {
                    if assignment.is_some() {
                        // The controller checks the brokers and the lists' lengths.
                        return Ok(());
                    }
                    if !(1..=100_000).contains(&partitions) {
                        return Err((ResponseError::InvalidPartitions, format!("invalid number of partitions {partitions}")));
                    }
                    if rf < 1 || rf as usize > live {
                        return Err((ResponseError::InvalidReplicationFactor, format!("replication factor {rf} with {live} live brokers")));
                    }
                    Ok(())
                });
            let outcome = match local {
                Err(e) => Err(e),
                Ok(()) if req.validate_only => Ok(None),
                Ok(()) => {
                    let client = rt.membership.client();
                    let created = match &assignment {
                        Some(a) => client.create_topic_assigned(&name, a, &configs).await,
                        None => {
                            client
                                .create_topic(&name, partitions as usize, rf as usize, &configs)
                                .await
                        }
                    }
                    .map(Some)
                    .map_err(|e| (error_for(&e), e.to_string()));
                    // Answer once this broker knows it, so the client's next request here
                    // (Metadata, CreatePartitions) finds it.
                    if created.is_ok() {
                        super::topic_admin::shown(&rt, |m| m.topics.contains_key(&name)).await;
                    }
                    created
                }
            };
            match outcome {
                Ok(created) => {
                    res.num_partitions = partitions;
                    res.replication_factor = rf;
                    res.topic_id = created.map_or(uuid::Uuid::nil(), |t| t.id);
                }
                Err((code, message)) => {
                    res.error_code = code.code();
                    res.error_message = Some(str_bytes(message));
                }
            }
            r.topics.push(res);
        }
        ResponseKind::CreateTopics(r)
    }))
}

/// A CreateTopics entry's manual assignment as replica lists by partition, if it has one.
fn assignment_of(
    topic: &kafka_protocol::messages::create_topics_request::CreatableTopic,
) -> Result<Option<Vec<Vec<i32>>>, super::topic_admin::Refusal> {
    if topic.assignments.is_empty() {
        return Ok(None);
    }
    if topic.num_partitions != -1 || topic.replication_factor != -1 {
        return Err((
            ResponseError::InvalidRequest,
            "give either assignments or partitions/replication factor".into(),
        ));
    }
    let mut by_index: Vec<(i32, Vec<i32>)> = topic
        .assignments
        .iter()
        .map(|a| {
            (
                a.partition_index,
                a.broker_ids.iter().map(|b| b.0).collect(),
            )
        })
        .collect();
    by_index.sort_by_key(|(i, _)| *i);
    if by_index
        .iter()
        .enumerate()
        .any(|(i, (p, _))| *p != i as i32)
    {
        return Err((
            ResponseError::InvalidReplicaAssignment,
            "assignments must cover partitions 0..n, each once".into(),
        ));
    }
    Ok(Some(by_index.into_iter().map(|(_, r)| r).collect()))
}

pub fn delete_topics(rt: &Arc<ClusterRuntime>, req: DeleteTopicsRequest, version: i16) -> Reply {
    let rt = Arc::clone(rt);
    Reply::Later(Box::pin(async move {
        let meta = rt.membership.metadata();
        let targets = super::delete_topics::targets(&req, version);
        let mut r = DeleteTopicsResponse::default();
        for (name, id) in targets {
            let mut res = DeletableTopicResult::default();
            res.topic_id = id;
            let name = name.or_else(|| {
                meta.topics
                    .values()
                    .find(|t| t.id == id)
                    .map(|t| t.name.clone())
            });
            match name {
                None => res.error_code = ResponseError::UnknownTopicId.code(),
                Some(n) => {
                    res.name = Some(TopicName(str_bytes(n.clone())));
                    // v6 answers with the topic's id, also when the request named it.
                    if version >= 6
                        && let Some(t) = meta.topics.values().find(|t| t.name == n)
                    {
                        res.topic_id = t.id;
                    }
                    if let Some((code, message)) =
                        super::topic_admin::internal_topic_refusal(&n, "deleted")
                    {
                        res.error_code = code.code();
                        res.error_message = Some(str_bytes(message));
                    } else if let Err(e) = rt.membership.client().delete_topic(&n).await {
                        res.error_code = error_for(&e).code();
                        res.error_message = Some(str_bytes(e.to_string()));
                    }
                }
            }
            r.responses.push(res);
        }
        ResponseKind::DeleteTopics(r)
    }))
}

pub fn init_producer_id(rt: &Arc<ClusterRuntime>) -> Reply {
    let rt = Arc::clone(rt);
    Reply::Later(Box::pin(async move {
        let mut r = InitProducerIdResponse::default();
        match rt.next_producer_id().await {
            Ok(id) => {
                r.producer_id = id.into();
                r.producer_epoch = 0;
            }
            Err(e) => {
                warn!(error = %e, "cannot get producer ids from the controller");
                r.producer_id = (-1).into();
                r.producer_epoch = -1;
                r.error_code = ResponseError::CoordinatorNotAvailable.code();
            }
        }
        ResponseKind::InitProducerId(r)
    }))
}
