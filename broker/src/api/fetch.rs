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
    let (first, bytes, has_error, progress) = read_all(broker, &req, version);
    if let Some(replica) = follower_id(&req) {
        record_follower_progress(broker, replica, progress);
    }
    let max_wait = req.max_wait_ms.clamp(0, MAX_WAIT_CAP_MS);
    if bytes >= req.min_bytes.max(0) as usize || has_error || max_wait == 0 {
        return Reply::now(ResponseKind::Fetch(first));
    }
    let broker = Arc::clone(broker);
    // Followers wake when a log grows (their fetch carries new data and moves the high
    // watermark); consumers when a high watermark moves.
    let mut changes = if follower_id(&req).is_some() {
        broker.signals.log_end.subscribe()
    } else {
        broker.signals.high_watermark.subscribe()
    };
    let deadline = Instant::now() + Duration::from_millis(max_wait as u64);
    Reply::Later(Box::pin(async move {
        loop {
            changes.borrow_and_update();
            let (resp, bytes, has_error, _) = read_all(&broker, &req, version);
            if bytes >= req.min_bytes.max(0) as usize || has_error || Instant::now() >= deadline {
                return ResponseKind::Fetch(resp);
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                let (resp, _, _, _) = read_all(&broker, &req, version);
                return ResponseKind::Fetch(resp);
            }
        }
    }))
}

/// The broker id of a follower's fetch (v15+ carries it in the replica state).
fn follower_id(req: &FetchRequest) -> Option<i32> {
    [req.replica_id.0, req.replica_state.replica_id.0]
        .into_iter()
        .find(|id| *id >= 0)
}

/// A follower's valid fetch offset, and the leader's log end when the fetch read it.
struct Progress {
    topic: String,
    partition: i32,
    fetch_offset: i64,
    log_end_offset: i64,
}

/// A follower's fetch offsets tell the leader what it has (Kafka's follower fetch state).
/// Only offsets the read found valid count: inside the log, and (v12+) not on a diverging
/// epoch, so a follower that must truncate never counts toward the high watermark.
fn record_follower_progress(broker: &Broker, replica: i32, progress: Vec<Progress>) {
    let now = crate::clock::now_ms();
    for p in progress {
        if let Some(partition) = broker.partition(&p.topic, p.partition)
            && let Ok(proposal) =
                partition.follower_fetched(replica, p.fetch_offset, p.log_end_offset, now)
        {
            broker.propose_isr(&partition, proposal);
        }
    }
}

/// One pass over the requested partitions: the response, the record bytes in it, whether
/// any partition has an error (which ends a long poll at once), and a follower's progress.
fn read_all(
    broker: &Broker,
    req: &FetchRequest,
    _version: i16,
) -> (FetchResponse, usize, bool, Vec<Progress>) {
    let mut r = FetchResponse::default();
    // Kafka's fetch.max.bytes default caps what one response may carry, whatever is asked.
    let mut remaining = (req.max_bytes.max(1) as usize).min(FETCH_MAX_BYTES);
    let mut total = 0usize;
    let mut has_error = false;
    let mut progress = Vec::new();
    let is_follower = follower_id(req).is_some();
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
            if is_follower {
                let leo = log.log_end_offset();
                if (log.log_start_offset()..=leo).contains(&fp.fetch_offset) {
                    progress.push(Progress {
                        topic: topic.topic.to_string(),
                        partition: fp.partition,
                        fetch_offset: fp.fetch_offset,
                        log_end_offset: leo,
                    });
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
    (r, total, has_error, progress)
}
