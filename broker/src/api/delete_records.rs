//! DeleteRecords (`kafka-delete-records`, AdminClient.deleteRecords): the partition leader
//! moves its log start offset up to the given offset (-1: the high watermark), never past the
//! high watermark, durably, then answers once every in-sync replica's log start has reached it
//! (Kafka's DelayedDeleteRecords; followers report theirs in their fetches), with that lowest
//! start as the low watermark, so a new leader or a restart keeps the deletion. Past the
//! request's timeout the answer is REQUEST_TIMED_OUT (the deletion stands on the leader and
//! reaches the followers at their next fetches). The internal offsets topic is refused, as in
//! Kafka.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse, ResponseKind};

use super::{Reply, lookup};
use crate::partition::{DeleteRecordsError, Partition};
use crate::state::Broker;

/// How often a waiting answer looks at the followers' reported log starts.
const POLL: Duration = Duration::from_millis(20);
/// The longest wait, whatever the request's timeout says.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// One partition's state after the leader's part: moved (wait for `offset`) or refused.
enum Moved {
    Waiting(Arc<Partition>, i64),
    Refused(ResponseError),
}

fn move_start(broker: &Broker, topic: &str, partition: i32, offset: i64) -> Moved {
    if topic == crate::group::OFFSETS_TOPIC {
        return Moved::Refused(ResponseError::InvalidTopicException);
    }
    let found = broker.topic(topic);
    let part = match lookup(found.as_deref(), partition) {
        Ok(p) => Arc::clone(p),
        Err(e) => return Moved::Refused(e),
    };
    match part.delete_records(offset) {
        Ok(start) => Moved::Waiting(part, start),
        Err(DeleteRecordsError::NotLeader) => Moved::Refused(ResponseError::NotLeaderOrFollower),
        Err(DeleteRecordsError::OutOfRange { .. }) => {
            Moved::Refused(ResponseError::OffsetOutOfRange)
        }
        Err(DeleteRecordsError::Storage(_)) => Moved::Refused(ResponseError::KafkaStorageError),
    }
}

pub fn handle(broker: &Arc<Broker>, req: DeleteRecordsRequest) -> Reply {
    // An fsync and segment deletions per partition, in request order.
    let moved: Vec<(kafka_protocol::messages::TopicName, Vec<(i32, Moved)>)> =
        crate::blocking::off_runtime(|| {
            req.topics
                .iter()
                .map(|t| {
                    let parts = t
                        .partitions
                        .iter()
                        .map(|p| {
                            let m =
                                move_start(broker, t.name.as_str(), p.partition_index, p.offset);
                            (p.partition_index, m)
                        })
                        .collect();
                    (t.name.clone(), parts)
                })
                .collect()
        });
    let wait = Duration::from_millis(req.timeout_ms.max(0) as u64).min(MAX_WAIT);
    Reply::Later(Box::pin(async move {
        let deadline = tokio::time::Instant::now() + wait;
        let mut r = DeleteRecordsResponse::default();
        for (name, parts) in moved {
            let mut out = DeleteRecordsTopicResult::default();
            out.name = name;
            for (index, m) in parts {
                let mut res = DeleteRecordsPartitionResult::default();
                res.partition_index = index;
                res.low_watermark = -1;
                match m {
                    Moved::Refused(e) => res.error_code = e.code(),
                    Moved::Waiting(part, offset) => loop {
                        match part.low_watermark() {
                            None => {
                                res.error_code = ResponseError::NotLeaderOrFollower.code();
                                break;
                            }
                            Some(low) if low >= offset => {
                                res.low_watermark = low;
                                break;
                            }
                            Some(low) if tokio::time::Instant::now() >= deadline => {
                                res.low_watermark = low;
                                res.error_code = ResponseError::RequestTimedOut.code();
                                break;
                            }
                            Some(_) => tokio::time::sleep(POLL).await,
                        }
                    },
                }
                out.partitions.push(res);
            }
            r.topics.push(out);
        }
        ResponseKind::DeleteRecords(r)
    }))
}
