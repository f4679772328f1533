//! DeleteRecords (`kafka-delete-records`, AdminClient.deleteRecords): the partition leader
//! moves its log start offset up to the given offset (-1: the high watermark), never past the
//! high watermark. The move is durable before the answer, and followers take it from the
//! leader's fetch answers, so a new leader or a restart keeps it. The answer's low watermark is
//! the leader's new log start (Kafka waits for every replica's; followers catch up within a
//! fetch). The internal offsets topic is refused, as in Kafka.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use super::lookup;
use crate::partition::DeleteRecordsError;
use crate::state::Broker;

pub fn handle(broker: &Arc<Broker>, req: DeleteRecordsRequest) -> DeleteRecordsResponse {
    // An fsync and segment deletions per partition.
    crate::blocking::off_runtime(|| {
        let mut r = DeleteRecordsResponse::default();
        for t in req.topics {
            let topic = broker.topic(t.name.as_str());
            let mut out = DeleteRecordsTopicResult::default();
            for p in &t.partitions {
                let mut res = DeleteRecordsPartitionResult::default();
                res.partition_index = p.partition_index;
                res.low_watermark = -1;
                let outcome = if t.name.as_str() == crate::group::OFFSETS_TOPIC {
                    Err(ResponseError::InvalidTopicException)
                } else {
                    lookup(topic.as_deref(), p.partition_index).and_then(|part| {
                        part.delete_records(p.offset).map_err(|e| match e {
                            DeleteRecordsError::NotLeader => ResponseError::NotLeaderOrFollower,
                            DeleteRecordsError::OutOfRange { .. } => {
                                ResponseError::OffsetOutOfRange
                            }
                            DeleteRecordsError::Storage(_) => ResponseError::KafkaStorageError,
                        })
                    })
                };
                match outcome {
                    Ok(low) => res.low_watermark = low,
                    Err(e) => res.error_code = e.code(),
                }
                out.partitions.push(res);
            }
            out.name = t.name;
            r.topics.push(out);
        }
        r
    })
}
