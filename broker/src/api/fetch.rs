//! Fetch: whole batches from each requested partition up to the high watermark, bounded by the
//! request's and each partition's max bytes (the first batch is always whole, KIP-74), with long
//! polling until min bytes arrive or max wait passes. Fetch sessions (KIP-227) are not kept:
//! the response's session id 0 tells clients to send full fetches.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ResponseKind};
use tokio::time::Instant;

use super::{Reply, check_leader_epoch, lookup};
use crate::state::Broker;
use crate::storage::log::ReadError;

/// Most record bytes in one response (Kafka's fetch.max.bytes default); a first batch larger
/// than this is still returned whole (KIP-74).
const FETCH_MAX_BYTES: usize = 55 * 1024 * 1024;

/// Longest wait honoured, whatever the client asks.
const MAX_WAIT_CAP_MS: i32 = 30_000;

pub fn handle(broker: &Arc<Broker>, req: FetchRequest, version: i16) -> Reply {
    if req.session_id != 0 {
        // Incremental fetch sessions are not kept; the client falls back to a full fetch.
        let mut r = FetchResponse::default();
        r.error_code = ResponseError::FetchSessionIdNotFound.code();
        return Reply::now(ResponseKind::Fetch(r));
    }
    if req.replica_id.0 >= 0 {
        record_follower_progress(broker, &req);
    }
    let (first, bytes, has_error) = read_all(broker, &req, version);
    let max_wait = req.max_wait_ms.clamp(0, MAX_WAIT_CAP_MS);
    if bytes >= req.min_bytes.max(0) as usize || has_error || max_wait == 0 {
        return Reply::now(ResponseKind::Fetch(first));
    }
    let broker = Arc::clone(broker);
    // Followers wake when a log grows (their fetch carries new data and moves the high
    // watermark); consumers when a high watermark moves.
    let mut changes = if req.replica_id.0 >= 0 {
        broker.signals.log_end.subscribe()
    } else {
        broker.signals.high_watermark.subscribe()
    };
    let deadline = Instant::now() + Duration::from_millis(max_wait as u64);
    Reply::Later(Box::pin(async move {
        loop {
            changes.borrow_and_update();
            let (resp, bytes, has_error) = read_all(&broker, &req, version);
            if bytes >= req.min_bytes.max(0) as usize || has_error || Instant::now() >= deadline {
                return ResponseKind::Fetch(resp);
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                let (resp, _, _) = read_all(&broker, &req, version);
                return ResponseKind::Fetch(resp);
            }
        }
    }))
}

/// A follower's fetch offsets tell the leader what it has (Kafka's follower fetch state).
fn record_follower_progress(broker: &Broker, req: &FetchRequest) {
    let now = crate::clock::now_ms();
    for topic in &req.topics {
        for fp in &topic.partitions {
            let Some(partition) = broker.partition(topic.topic.as_str(), fp.partition) else {
                continue;
            };
            // The log end now, which the read that follows sees at least: an append can be
            // in the log before the leader's own count of it (see `on_fetch`).
            let log_end = partition.log().log_end_offset();
            if let Ok(proposal) =
                partition.follower_fetched(req.replica_id.0, fp.fetch_offset, log_end, now)
            {
                broker.propose_isr(&partition, proposal);
            }
        }
    }
}

/// One pass over the requested partitions: the response, the record bytes in it, and whether
/// any partition has an error (which ends a long poll at once).
fn read_all(broker: &Broker, req: &FetchRequest, _version: i16) -> (FetchResponse, usize, bool) {
    let mut r = FetchResponse::default();
    // Kafka's fetch.max.bytes default caps what one response may carry, whatever is asked.
    let mut remaining = (req.max_bytes.max(1) as usize).min(FETCH_MAX_BYTES);
    let mut total = 0usize;
    let mut has_error = false;
    let is_follower = req.replica_id.0 >= 0 || req.replica_state.replica_id.0 >= 0;
    for topic in &req.topics {
        let found = broker.topic(topic.topic.as_str());
        let mut t = FetchableTopicResponse::default();
        t.topic = topic.topic.clone();
        t.topic_id = topic.topic_id;
        for fp in &topic.partitions {
            let mut p = PartitionData::default();
            p.partition_index = fp.partition;
            let partition = match lookup(found.as_deref(), fp.partition) {
                Ok(partition) => partition,
                Err(code) => {
                    p.error_code = code.code();
                    has_error = true;
                    t.partitions.push(p);
                    continue;
                }
            };
            if let Err(e) = check_leader_epoch(partition, fp.current_leader_epoch) {
                p.error_code = e.code();
                has_error = true;
                t.partitions.push(p);
                continue;
            }
            if !partition.is_leader() {
                p.error_code = ResponseError::NotLeaderOrFollower.code();
                p.current_leader.leader_id = partition.leader_id().into();
                p.current_leader.leader_epoch = partition.leader_epoch();
                has_error = true;
                t.partitions.push(p);
                continue;
            }
            let hw = partition.high_watermark();
            let log = partition.log();
            p.high_watermark = hw;
            p.last_stable_offset = hw;
            p.log_start_offset = log.log_start_offset();
            p.current_leader.leader_id = broker.config.node_id.into();
            p.current_leader.leader_epoch = partition.leader_epoch();
            // Fetch v12+: a fetcher whose last epoch ends earlier here must truncate first.
            if fp.last_fetched_epoch >= 0 {
                let leo = log.log_end_offset();
                // Kafka's rule: the fetcher's last epoch ends earlier here (or is unknown).
                let (epoch, end) = log
                    .epochs()
                    .end_offset_for(fp.last_fetched_epoch, leo)
                    .unwrap_or((-1, -1));
                if epoch < fp.last_fetched_epoch || end < fp.fetch_offset {
                    p.diverging_epoch.epoch = epoch;
                    p.diverging_epoch.end_offset = end;
                    t.partitions.push(p);
                    continue;
                }
            }
            let max_offset = if is_follower {
                log.log_end_offset()
            } else {
                hw
            };
            let limit = (fp.partition_max_bytes.max(0) as usize).min(remaining);
            // Only the first partition with data may exceed the limits (to make progress).
            let limit = if total == 0 { limit.max(1) } else { limit };
            if limit == 0 {
                t.partitions.push(p);
                continue;
            }
            let read = if total == 0 {
                log.read(fp.fetch_offset, limit, max_offset)
            } else {
                // Later partitions get only what fits.
                log.read(fp.fetch_offset, limit, max_offset)
                    .map(|b| if b.len() > limit { Vec::new() } else { b })
            };
            drop(log);
            match read {
                Ok(bytes) => {
                    total += bytes.len();
                    remaining = remaining.saturating_sub(bytes.len());
                    broker.metrics.bytes_out.inc_by(bytes.len() as u64);
                    p.records = Some(Bytes::from(bytes));
                }
                Err(ReadError::OutOfRange { .. }) => {
                    p.error_code = ResponseError::OffsetOutOfRange.code();
                    has_error = true;
                }
                Err(ReadError::Storage(e)) => {
                    tracing::warn!(topic = %partition.topic, partition = partition.index, error = %e, "read failed");
                    p.error_code = ResponseError::KafkaStorageError.code();
                    has_error = true;
                }
            }
            t.partitions.push(p);
        }
        r.responses.push(t);
    }
    (r, total, has_error)
}
