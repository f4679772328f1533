//! Produce: validate each partition's record batch (one v2 batch, base offset 0, CRC-32C,
//! size, codec), append it verbatim with offsets assigned, de-duplicate idempotent retries,
//! and answer once the write is committed (acks=1/all) or not at all (acks=0).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, ResponseKind};
use kafka_protocol::protocol::StrBytes;
use tracing::{debug, warn};

use super::{Reply, lookup, str_bytes};
use crate::partition::{AppendRefused, LeaderAppend, Partition};
use crate::protocol::batch::{self, BatchError, BatchHeader, Compression};
use crate::protocol::records;
use crate::state::Broker;
use crate::storage::log::AppendError;
use crate::storage::producer_state::ProducerError;
use crate::topic_config::FsyncPolicy;

/// What an acknowledgement waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// Until the high watermark passes the write, while the leadership it was appended
    /// under lasts.
    HighWatermark { leader_epoch: i32 },
    /// Until the write is fsynced (before-ack, acks=1), while that leadership lasts.
    Flushed { leader_epoch: i32 },
}

/// A partition's outcome, before any wait for durability.
struct Outcome {
    index: i32,
    error: Option<(ResponseError, String)>,
    base_offset: i64,
    log_append_time: i64,
    log_start_offset: i64,
    /// Set when the ack must wait for an fsync up to this offset (exclusive).
    wait_for: Option<(Arc<Partition>, i64, Wait)>,
}

impl Outcome {
    fn failed(index: i32, error: ResponseError, message: impl Into<String>) -> Self {
        Self {
            index,
            error: Some((error, message.into())),
            base_offset: -1,
            log_append_time: -1,
            log_start_offset: -1,
            wait_for: None,
        }
    }
}

/// Checks a client batch; returns the Kafka error and a message for the client.
pub fn validate_client_batch(
    records: &[u8],
    max_message_bytes: usize,
    version: i16,
) -> Result<BatchHeader, (ResponseError, String)> {
    let header = BatchHeader::parse(records).map_err(|e| match e {
        // Kafka (ProduceRequest.validateRecords) answers INVALID_RECORD for no batch at all
        // and for old magic.
        BatchError::TooShort(0) => (
            ResponseError::InvalidRecord,
            "a produce request must have at least one record batch".to_string(),
        ),
        // Kafka (ProduceRequest.validateRecords) answers INVALID_RECORD for old magic.
        BatchError::BadMagic(m) => (
            ResponseError::InvalidRecord,
            format!("record batch magic {m} is not supported; use v2"),
        ),
        e => (ResponseError::CorruptMessage, e.to_string()),
    })?;
    if header.total_len() < records.len() {
        return Err((
            ResponseError::InvalidRecord,
            "a produce request must hold exactly one record batch per partition".into(),
        ));
    }
    if records.len() > max_message_bytes {
        return Err((
            ResponseError::MessageTooLarge,
            format!(
                "record batch of {} bytes exceeds max.message.bytes {max_message_bytes}",
                records.len()
            ),
        ));
    }
    let header = batch::validate(records).map_err(|e| match e {
        // Kafka's LogValidator: a count/delta mismatch is an invalid record; a bad CRC or
        // size is a corrupt message.
        BatchError::BadOffsetDelta { .. } => (ResponseError::InvalidRecord, e.to_string()),
        e => (ResponseError::CorruptMessage, e.to_string()),
    })?;
    if header.base_offset != 0 {
        return Err((
            ResponseError::InvalidRecord,
            format!("batch base offset must be 0, got {}", header.base_offset),
        ));
    }
    if header.records_count == 0 {
        return Err((
            ResponseError::InvalidRecord,
            "record batch has no records".into(),
        ));
    }
    match header.compression() {
        None => {
            return Err((
                ResponseError::CorruptMessage,
                format!(
                    "unknown compression codec in attributes {:#x}",
                    header.attributes
                ),
            ));
        }
        Some(Compression::Zstd) if version < 7 => {
            return Err((
                ResponseError::UnsupportedCompressionType,
                "zstd needs Produce v7 or later".into(),
            ));
        }
        _ => {}
    }
    let walk = || records::validate_client_records(records, &header, records::MAX_DECOMPRESSED);
    // A compressed batch can inflate to the cap (a "bomb" of a few KiB does): off the runtime,
    // and only a few at once, so their memory stays bounded.
    static INFLATING: crate::blocking::Gate = crate::blocking::Gate::new();
    let walked = if header.compression() == Some(Compression::None) {
        walk()
    } else {
        crate::blocking::off_runtime(|| INFLATING.run(walk))
    };
    if let Err(e) = walked {
        let code = match e {
            records::RecordError::Decompress(_) | records::RecordError::Codec => {
                ResponseError::CorruptMessage
            }
            _ => ResponseError::InvalidRecord,
        };
        return Err((code, e.to_string()));
    }
    if header.is_control() {
        return Err((
            ResponseError::InvalidRecord,
            "clients may not write control batches".into(),
        ));
    }
    if header.is_transactional() {
        return Err((
            ResponseError::InvalidRequest,
            "transactions are not supported by this broker".into(),
        ));
    }
    if header.has_producer_id() && (header.producer_epoch < 0 || header.base_sequence < 0) {
        return Err((
            ResponseError::InvalidRecord,
            "idempotent batch without producer epoch or sequence".into(),
        ));
    }
    Ok(header)
}

/// Appends of this size or more run off the runtime's workers (same thread, same order): one
/// may roll a segment, whose fsync of a whole segment of dirty pages (1 GiB by default) holds
/// the thread for hundreds of milliseconds, and writes this large can stall in the kernel's
/// dirty-page throttling. On the runtime that held up every other connection (bench/abuse.sh
/// greedy: a well-behaved client's ApiVersions p99 went to 500 ms).
pub const LARGE_APPEND: usize = 64 * 1024;

fn append_partition(
    broker: &Broker,
    partition: &Arc<Partition>,
    records: &Bytes,
    acks: i16,
    version: i16,
) -> Outcome {
    let index = partition.index;
    let now_ms = crate::clock::now_ms();
    // Validation (CRC, records, decompression) runs outside the partition lock.
    let config = partition.log().config().clone();
    let header = match validate_client_batch(records, config.max_message_bytes, version) {
        Ok(h) => h,
        Err((code, message)) => {
            debug!(topic = %partition.topic, partition = index, %message, "rejected produce");
            return Outcome::failed(index, code, message);
        }
    };
    let append = || partition.append_as_leader(records, &header, None, acks == -1, now_ms);
    let appended = if records.len() >= LARGE_APPEND {
        crate::blocking::off_runtime(append)
    } else {
        append()
    };
    match appended {
        Ok(LeaderAppend {
            info,
            leader_epoch,
            log_start_offset,
            fsync,
            proposal,
        }) => {
            if !info.duplicate {
                broker.metrics.bytes_in.inc_by(records.len() as u64);
            }
            broker.propose_isr(partition, proposal);
            let end = info.last_offset + 1;
            let wait_for = match acks {
                // acks=all: committed means below the high watermark (which, for a before-ack
                // leader, also means fsynced).
                -1 if partition.high_watermark() < end => Some((
                    Arc::clone(partition),
                    end,
                    Wait::HighWatermark { leader_epoch },
                )),
                1 if fsync == FsyncPolicy::BeforeAck => {
                    Some((Arc::clone(partition), end, Wait::Flushed { leader_epoch }))
                }
                _ => None,
            };
            Outcome {
                index,
                error: None,
                base_offset: info.base_offset,
                log_append_time: info.log_append_time,
                log_start_offset,
                wait_for,
            }
        }
        Err(AppendRefused::NotLeader) => Outcome::failed(
            index,
            ResponseError::NotLeaderOrFollower,
            "this broker does not lead the partition",
        ),
        Err(e @ AppendRefused::StorageFailed) => {
            Outcome::failed(index, ResponseError::KafkaStorageError, e.to_string())
        }
        Err(AppendRefused::NotEnoughReplicas { isr }) => Outcome::failed(
            index,
            ResponseError::NotEnoughReplicas,
            format!(
                "the in-sync replica set {isr:?} is smaller than min.insync.replicas={}",
                config.min_insync_replicas
            ),
        ),
        Err(AppendRefused::Append(AppendError::Producer(e))) => {
            let code = match e {
                ProducerError::InvalidEpoch { .. } => ResponseError::InvalidProducerEpoch,
                ProducerError::OutOfOrder { .. } => ResponseError::OutOfOrderSequenceNumber,
            };
            Outcome::failed(index, code, e.to_string())
        }
        Err(AppendRefused::Append(AppendError::Replication(e))) => {
            Outcome::failed(index, ResponseError::CorruptMessage, e)
        }
        Err(AppendRefused::Append(AppendError::Storage(e))) => {
            warn!(topic = %partition.topic, partition = index, error = %e, "append failed");
            Outcome::failed(
                index,
                ResponseError::KafkaStorageError,
                format!("storage error: {e}"),
            )
        }
    }
}

pub fn handle(broker: &Arc<Broker>, req: ProduceRequest, version: i16) -> Reply {
    let acks = req.acks;
    let mut results: Vec<(kafka_protocol::messages::TopicName, Vec<Outcome>)> = Vec::new();
    for topic in req.topic_data {
        let name = topic.name.as_str().to_string();
        let found = broker.topic(&name);
        let outcomes = topic
            .partition_data
            .into_iter()
            .map(|pd| {
                if !matches!(acks, -1..=1) {
                    return Outcome::failed(
                        pd.index,
                        ResponseError::InvalidRequiredAcks,
                        format!("acks must be -1, 0 or 1, got {acks}"),
                    );
                }
                if req.transactional_id.as_ref().is_some_and(|t| !t.is_empty()) {
                    return Outcome::failed(
                        pd.index,
                        ResponseError::InvalidRequest,
                        "transactions are not supported by this broker",
                    );
                }
                if name == crate::group::OFFSETS_TOPIC {
                    // Kafka: only the coordinator writes internal topics.
                    return Outcome::failed(
                        pd.index,
                        ResponseError::InvalidTopicException,
                        format!("cannot append to internal topic {name}"),
                    );
                }
                let partition = match lookup(found.as_deref(), pd.index) {
                    Ok(partition) => partition,
                    Err(code) => {
                        return Outcome::failed(
                            pd.index,
                            code,
                            format!("partition {name}-{} is not served here", pd.index),
                        );
                    }
                };
                let Some(records) = pd.records.as_ref() else {
                    return Outcome::failed(
                        pd.index,
                        ResponseError::InvalidRecord,
                        "a produce request must have at least one record batch",
                    );
                };
                append_partition(broker, partition, records, acks, version)
            })
            .collect();
        // An owned copy: the decoded name is a slice of the request frame, and a reply that
        // waits (acks=all) would keep the whole frame, records and all, alive with it.
        let owned = kafka_protocol::messages::TopicName(StrBytes::from_string(name));
        results.push((owned, outcomes));
    }
    if acks == 0 {
        // Kafka closes the connection when an acks=0 produce fails: the client has no other
        // way to learn of the error.
        let failed = results
            .iter()
            .flat_map(|(_, o)| o)
            .any(|o| o.error.is_some());
        return if failed { Reply::Close } else { Reply::Nothing };
    }
    let needs_wait = results
        .iter()
        .flat_map(|(_, o)| o)
        .any(|o| o.wait_for.is_some());
    if !needs_wait {
        return Reply::now(ResponseKind::Produce(respond(results)));
    }
    let timeout = Duration::from_millis(req.timeout_ms.max(0) as u64);
    Reply::Later(Box::pin(async move {
        for outcome in results.iter_mut().flat_map(|(_, o)| o.iter_mut()) {
            let Some((partition, offset, wait)) = outcome.wait_for.take() else {
                continue;
            };
            let waited = match wait {
                Wait::HighWatermark { leader_epoch } => {
                    tokio::time::timeout(
                        timeout,
                        partition.wait_high_watermark(offset, leader_epoch),
                    )
                    .await
                }
                Wait::Flushed { leader_epoch } => {
                    tokio::time::timeout(timeout, partition.wait_flushed(offset, leader_epoch))
                        .await
                }
            };
            outcome.error = match waited {
                Ok(true)
                    if matches!(wait, Wait::HighWatermark { .. })
                        && !partition.enough_replicas() =>
                {
                    Some((
                        ResponseError::NotEnoughReplicasAfterAppend,
                        "the in-sync replica set shrank below min.insync.replicas while waiting"
                            .into(),
                    ))
                }
                Ok(true) => None,
                Ok(false) if partition.storage_failed() => {
                    Some((ResponseError::KafkaStorageError, "fsync failed".into()))
                }
                // The leadership ended before the write was committed: the client retries on
                // the new leader (idempotence keeps it from being stored twice).
                Ok(false) => Some((
                    ResponseError::NotLeaderOrFollower,
                    "leadership moved before the write was replicated".into(),
                )),
                Err(_) => {
                    let status = partition.status(crate::clock::now_ms());
                    debug!(topic = %partition.topic, partition = partition.index, offset, ?status, "produce timed out waiting for replication or fsync");
                    Some((
                        ResponseError::RequestTimedOut,
                        "timed out waiting for replication or fsync".into(),
                    ))
                }
            };
        }
        ResponseKind::Produce(respond(results))
    }))
}

fn respond(results: Vec<(kafka_protocol::messages::TopicName, Vec<Outcome>)>) -> ProduceResponse {
    let mut r = ProduceResponse::default();
    for (name, outcomes) in results {
        let mut t = TopicProduceResponse::default();
        t.name = name;
        t.partition_responses = outcomes
            .into_iter()
            .map(|o| {
                let mut p = PartitionProduceResponse::default();
                p.index = o.index;
                p.base_offset = o.base_offset;
                p.log_append_time_ms = o.log_append_time;
                p.log_start_offset = o.log_start_offset;
                if let Some((code, message)) = o.error {
                    p.error_code = code.code();
                    p.error_message = Some(str_bytes(message));
                }
                p
            })
            .collect();
        r.responses.push(t);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::test_support::batch;

    #[test]
    fn client_batch_rules() {
        let good = batch(2, 5, (1, 0, 0), 10);
        assert!(validate_client_batch(&good, 1 << 20, 9).is_ok());
        let mut two = good.clone();
        two.extend(&good);
        assert_eq!(
            validate_client_batch(&two, 1 << 20, 9).unwrap_err().0,
            ResponseError::InvalidRecord
        );
        assert_eq!(
            validate_client_batch(&good, 10, 9).unwrap_err().0,
            ResponseError::MessageTooLarge
        );
        let mut crc = good.clone();
        *crc.last_mut().unwrap() ^= 1;
        assert_eq!(
            validate_client_batch(&crc, 1 << 20, 9).unwrap_err().0,
            ResponseError::CorruptMessage
        );
        let mut offset = good.clone();
        offset[..16].copy_from_slice(&batch::patched_prefix(&good, 5, -1));
        assert_eq!(
            validate_client_batch(&offset, 1 << 20, 9).unwrap_err().0,
            ResponseError::InvalidRecord
        );
        let mut magic = good.clone();
        magic[16] = 1;
        assert_eq!(
            validate_client_batch(&magic, 1 << 20, 9).unwrap_err().0,
            ResponseError::InvalidRecord
        );
        assert_eq!(
            validate_client_batch(&good[..30], 1 << 20, 9)
                .unwrap_err()
                .0,
            ResponseError::CorruptMessage
        );
    }
}
