//! OffsetCommit: checks each partition (topic exists, metadata size), then the member and
//! generation against the group, writes the commits as one batch to the offsets log and
//! answers once it is committed.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    OffsetCommitRequest, OffsetCommitResponse, ResponseKind, TopicName,
};

use super::Reply;
use crate::group::coordinator::CommitEntry;
use crate::group::records::OffsetValue;
use crate::state::Broker;

/// A partition and the error found for it before the commit, if any.
type PartitionError = (i32, Option<ResponseError>);

/// Whether `topic` has partition `index` (from the cluster's metadata in a cluster).
pub fn partition_exists(broker: &Broker, topic: &str, index: i32) -> bool {
    if let Some(rt) = broker.cluster() {
        return rt.membership.metadata().partition(topic, index).is_some();
    }
    broker
        .topic(topic)
        .is_some_and(|t| usize::try_from(index).is_ok_and(|i| i < t.partitions.len()))
}

pub fn handle(broker: &Arc<Broker>, req: OffsetCommitRequest, version: i16) -> Reply {
    let now = crate::clock::now_ms();
    // Also what the offsets log's record format can hold.
    let max_metadata = broker
        .groups
        .config()
        .max_offset_metadata_bytes
        .min(crate::group::records::MAX_STRING_BYTES);
    // Per partition: the error found up front, if any.
    let mut layout: Vec<(TopicName, Vec<PartitionError>)> = Vec::new();
    let mut entries = Vec::new();
    for t in &req.topics {
        let topic = t.name.as_str();
        let mut parts = Vec::new();
        for p in &t.partitions {
            let metadata = p.committed_metadata.as_ref().map_or("", |m| m.as_str());
            let error = if !partition_exists(broker, topic, p.partition_index) {
                Some(ResponseError::UnknownTopicOrPartition)
            } else if metadata.len() > max_metadata {
                Some(ResponseError::OffsetMetadataTooLarge)
            } else {
                entries.push(CommitEntry {
                    topic: topic.to_string(),
                    partition: p.partition_index,
                    value: OffsetValue {
                        offset: p.committed_offset,
                        leader_epoch: if version >= 6 {
                            p.committed_leader_epoch
                        } else {
                            -1
                        },
                        metadata: metadata.to_string(),
                        commit_timestamp_ms: now,
                    },
                });
                None
            };
            parts.push((p.partition_index, error));
        }
        layout.push((t.name.clone(), parts));
    }
    let broker = Arc::clone(broker);
    Reply::Later(Box::pin(async move {
        let group_id = req.group_id.0.to_string();
        let outcome = broker
            .groups
            .commit(
                &broker,
                &group_id,
                req.member_id.as_str(),
                req.group_instance_id.as_ref().map(|s| s.as_str()),
                req.generation_id_or_member_epoch,
                entries,
            )
            .await;
        let mut r = OffsetCommitResponse::default();
        r.topics = layout
            .into_iter()
            .map(|(name, parts)| {
                let mut t = OffsetCommitResponseTopic::default();
                t.name = name;
                t.partitions = parts
                    .into_iter()
                    .map(|(index, error)| {
                        let mut p = OffsetCommitResponsePartition::default();
                        p.partition_index = index;
                        p.error_code = error.or(outcome.err()).map_or(0, |e| e.code());
                        p
                    })
                    .collect();
                t
            })
            .collect();
        ResponseKind::OffsetCommit(r)
    }))
}
