//! CreateTopics: validates names, partition counts, replication factor and configs, then
//! creates each topic (or only validates with validate_only).

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};

use super::str_bytes;
use crate::state::{Broker, TopicError};

/// Kafka's ConfigSource values.
pub const SOURCE_TOPIC: i8 = 1;
pub const SOURCE_DEFAULT: i8 = 5;

pub fn error_for(e: &TopicError) -> ResponseError {
    match e {
        TopicError::AlreadyExists(_) => ResponseError::TopicAlreadyExists,
        TopicError::InvalidName(_) | TopicError::Collision { .. } => {
            ResponseError::InvalidTopicException
        }
        TopicError::InvalidPartitions(_) | TopicError::PartitionCount { .. } => {
            ResponseError::InvalidPartitions
        }
        TopicError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
        TopicError::InvalidConfig(_) => ResponseError::InvalidConfig,
        TopicError::Unknown(_) => ResponseError::UnknownTopicOrPartition,
        TopicError::ConfigsChanged(_) => ResponseError::RequestTimedOut,
        TopicError::Storage(_) => ResponseError::KafkaStorageError,
    }
}

pub fn handle(
    broker: &Arc<Broker>,
    req: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let mut r = CreateTopicsResponse::default();
    let duplicated = super::repeated(req.topics.iter().map(|t| t.name.as_str()));
    for topic in req.topics {
        let name = topic.name.as_str().to_string();
        let mut result = CreatableTopicResult::default();
        result.name = topic.name.clone();
        result.num_partitions = -1;
        result.replication_factor = -1;
        let outcome = (|| {
            if duplicated.contains(&name) {
                return Err((
                    ResponseError::InvalidRequest,
                    format!("topic '{name}' appears more than once in the request"),
                ));
            }
            let mut partitions = topic.num_partitions;
            let mut replication = topic.replication_factor;
            if !topic.assignments.is_empty() {
                if partitions != -1 || replication != -1 {
                    return Err((
                        ResponseError::InvalidRequest,
                        "give either assignments or partitions/replication factor".into(),
                    ));
                }
                let node = broker.config.node_id;
                let mut indexes: Vec<i32> = topic
                    .assignments
                    .iter()
                    .map(|a| a.partition_index)
                    .collect();
                indexes.sort_unstable();
                let contiguous = indexes.iter().enumerate().all(|(i, p)| *p == i as i32);
                let all_here = topic
                    .assignments
                    .iter()
                    .all(|a| a.broker_ids.len() == 1 && a.broker_ids[0].0 == node);
                if !contiguous || !all_here {
                    return Err((
                        ResponseError::InvalidReplicaAssignment,
                        format!(
                            "this single broker (id {node}) can only host replica sets [{node}] for partitions 0..n"
                        ),
                    ));
                }
                partitions = indexes.len() as i32;
                replication = 1;
            }
            let mut configs = BTreeMap::new();
            for c in &topic.configs {
                if let Some(v) = &c.value {
                    configs.insert(c.name.as_str().to_string(), v.as_str().to_string());
                }
            }
            broker
                .create_topic(&name, partitions, replication, configs, req.validate_only)
                .map_err(|e| (error_for(&e), e.to_string()))
        })();
        match outcome {
            Ok(t) => {
                result.topic_id = if req.validate_only {
                    uuid::Uuid::nil()
                } else {
                    t.record.id
                };
                result.num_partitions = t.record.partitions;
                result.replication_factor = 1;
                if version >= 5 {
                    result.configs = Some(
                        t.config
                            .describe()
                            .into_iter()
                            .map(|(k, v)| {
                                let mut c = CreatableTopicConfigs::default();
                                c.name = str_bytes(k);
                                c.value = Some(str_bytes(v));
                                c.config_source = if t.record.configs.contains_key(k) {
                                    SOURCE_TOPIC
                                } else {
                                    SOURCE_DEFAULT
                                };
                                c
                            })
                            .collect(),
                    );
                }
            }
            Err((code, message)) => {
                result.error_code = code.code();
                result.error_message = Some(str_bytes(message));
            }
        }
        r.topics.push(result);
    }
    r
}
