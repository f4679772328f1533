//! Metadata: brokers, cluster id, and per-partition leader, leader epoch, replicas and ISR.
//! Unknown topics are auto-created when both the client and the broker allow it.

use std::ops::Range;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{MetadataRequest, MetadataResponse, TopicName};

use super::str_bytes;
use crate::state::{Broker, Topic};
use crate::topic_name;

/// Kafka's "authorized operations not requested" marker.
pub const OPERATIONS_OMITTED: i32 = i32::MIN;

/// Every partition of a topic (`topic_entry`'s range for Metadata, which does not page).
pub const ALL_PARTITIONS: Range<usize> = 0..usize::MAX;

/// Metadata as this broker alone knows it; its address is the one on `listener`, the
/// listener the request came in on.
pub fn handle(
    broker: &Arc<Broker>,
    req: MetadataRequest,
    version: i16,
    listener: &str,
) -> MetadataResponse {
    let node = broker.config.node_id;
    let mut r = MetadataResponse::default();
    r.brokers = broker
        .config
        .advertised(listener)
        .map(|(host, port)| {
            let mut b = MetadataResponseBroker::default();
            b.node_id = node.into();
            b.host = str_bytes(host);
            b.port = port;
            b
        })
        .into_iter()
        .collect();
    r.cluster_id = Some(str_bytes(broker.cluster_id()));
    r.controller_id = node.into();
    r.cluster_authorized_operations = OPERATIONS_OMITTED;

    // v0: an empty list means all topics; v1+: null means all topics.
    let all = match &req.topics {
        None => true,
        Some(t) => t.is_empty() && version == 0,
    };
    if all {
        r.topics = broker
            .topics()
            .iter()
            .map(|t| topic_entry(broker, t, ALL_PARTITIONS))
            .collect();
        return r;
    }
    // Decoded as true before v4 (the field is absent); the authorizer may clear it.
    let auto_create = req.allow_auto_topic_creation;
    for wanted in req.topics.unwrap_or_default() {
        let entry = match wanted.name.as_ref().map(|n| n.as_str().to_string()) {
            Some(name) => {
                let found = if auto_create {
                    broker.get_or_auto_create(&name)
                } else {
                    broker.topic(&name)
                };
                match found {
                    Some(t) => topic_entry(broker, &t, ALL_PARTITIONS),
                    None => {
                        let invalid = topic_name::validate(&name).is_err()
                            || (auto_create && broker.colliding_topic(&name).is_some());
                        let code = if invalid {
                            ResponseError::InvalidTopicException
                        } else {
                            ResponseError::UnknownTopicOrPartition
                        };
                        error_entry(Some(name), wanted.topic_id, code)
                    }
                }
            }
            None => match broker.topic_by_id(wanted.topic_id) {
                Some(t) => topic_entry(broker, &t, ALL_PARTITIONS),
                None => error_entry(None, wanted.topic_id, ResponseError::UnknownTopicId),
            },
        };
        r.topics.push(entry);
    }
    r
}

fn error_entry(name: Option<String>, id: uuid::Uuid, code: ResponseError) -> MetadataResponseTopic {
    let mut t = MetadataResponseTopic::default();
    t.error_code = code.code();
    t.name = name.map(|n| TopicName(str_bytes(n)));
    t.topic_id = id;
    t.topic_authorized_operations = OPERATIONS_OMITTED;
    t
}

/// A topic as this broker alone knows it, with the partitions whose indexes are in `range`
/// (DescribeTopicPartitions pages through them).
pub fn topic_entry(broker: &Broker, topic: &Topic, range: Range<usize>) -> MetadataResponseTopic {
    let node = broker.config.node_id;
    let mut t = MetadataResponseTopic::default();
    t.name = Some(TopicName(str_bytes(topic.record.name.clone())));
    t.topic_id = topic.record.id;
    t.topic_authorized_operations = OPERATIONS_OMITTED;
    t.is_internal = topic.record.name == crate::group::OFFSETS_TOPIC;
    t.partitions = topic
        .partitions
        .iter()
        .enumerate()
        .skip(range.start)
        .take(range.len())
        .map(|(i, p)| {
            let mut e = MetadataResponsePartition::default();
            e.partition_index = i as i32;
            e.leader_id = node.into();
            e.leader_epoch = p.as_ref().map_or(0, |p| p.leader_epoch());
            e.replica_nodes = vec![node.into()];
            e.isr_nodes = vec![node.into()];
            e
        })
        .collect();
    t
}
