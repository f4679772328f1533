//! ListOffsets: earliest (-2), latest (-1: the high watermark), max timestamp (-3, v7) and
//! offset-by-timestamp (the first record whose timestamp reaches the target).

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::{check_leader_epoch, lookup};
use crate::state::Broker;

pub const LATEST: i64 = -1;
pub const EARLIEST: i64 = -2;
pub const MAX_TIMESTAMP: i64 = -3;

pub fn handle(broker: &Arc<Broker>, req: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let mut r = ListOffsetsResponse::default();
    for topic in req.topics {
        let found = broker.topic(topic.name.as_str());
        let mut t = ListOffsetsTopicResponse::default();
        t.name = topic.name.clone();
        for lp in topic.partitions {
            let mut p = ListOffsetsPartitionResponse::default();
            p.partition_index = lp.partition_index;
            p.timestamp = -1;
            p.offset = -1;
            p.leader_epoch = -1;
            let partition = match lookup(found.as_deref(), lp.partition_index) {
                Ok(partition) => partition,
                Err(code) => {
                    p.error_code = code.code();
                    t.partitions.push(p);
                    continue;
                }
            };
            if let Err(e) = check_leader_epoch(partition, lp.current_leader_epoch) {
                p.error_code = e.code();
                t.partitions.push(p);
                continue;
            }
            if !partition.is_leader() {
                p.error_code = ResponseError::NotLeaderOrFollower.code();
                t.partitions.push(p);
                continue;
            }
            // Kafka's rule for a new leader (KIP-207): the latest offset waits until the high
            // watermark reaches this leadership's start, so it never moves back across a
            // leader change. Older versions get LEADER_NOT_AVAILABLE, as from Kafka.
            if lp.timestamp == LATEST && partition.high_watermark_behind_epoch_start() {
                p.error_code = if version >= 5 {
                    ResponseError::OffsetNotAvailable
                } else {
                    ResponseError::LeaderNotAvailable
                }
                .code();
                t.partitions.push(p);
                continue;
            }
            let hw = partition.high_watermark();
            let log = partition.log();
            let result = match lp.timestamp {
                LATEST => Ok(Some((hw, -1, log.latest_epoch().unwrap_or(-1)))),
                EARLIEST => {
                    let start = log.log_start_offset();
                    Ok(Some((
                        start,
                        -1,
                        log.epochs().epoch_for_offset(start).unwrap_or(-1),
                    )))
                }
                MAX_TIMESTAMP if version >= 7 => log.offset_of_max_timestamp(),
                ts if ts >= 0 => log.offset_for_timestamp(ts),
                other => {
                    p.error_code = ResponseError::InvalidRequest.code();
                    tracing::debug!(timestamp = other, "unsupported ListOffsets timestamp");
                    Ok(None)
                }
            };
            drop(log);
            match result {
                // Offsets at or past the high watermark are not visible to clients yet.
                Ok(Some((offset, ts, epoch)))
                    if offset <= hw && (lp.timestamp < 0 || offset < hw) =>
                {
                    p.offset = offset;
                    p.timestamp = ts;
                    // The field is v4+: a value in an older version cannot be encoded, and
                    // the connection used to close (kafka-go, kafkajs and kcat could not consume).
                    if version >= 4 {
                        p.leader_epoch = epoch;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "ListOffsets read failed");
                    p.error_code = ResponseError::KafkaStorageError.code();
                }
            }
            t.partitions.push(p);
        }
        r.topics.push(t);
    }
    r
}
