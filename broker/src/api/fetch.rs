//! Fetch: whole batches from each requested partition up to the high watermark, bounded by the
//! request's and each partition's max bytes (the first batch is always whole, KIP-74) and by
//! the broker's room for unwritten responses, with long polling until min bytes arrive or max
//! wait passes. A parked fetch judges what it could read from log positions, and reads once,
//! when it answers (Kafka's DelayedFetch). Fetch sessions (KIP-227) are not kept: the
//! response's session id 0 tells clients to send full fetches.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ResponseKind, TopicName};
use kafka_protocol::protocol::StrBytes;
use tokio::time::Instant;

use super::{Client, Reply, lookup};
use crate::partition::{FetchError, FetchOutcome, FetchPosition, Fetcher};
use crate::state::Broker;

/// Most record bytes in one response (Kafka's fetch.max.bytes default); a first batch larger
/// than this is still returned whole (KIP-74).
const FETCH_MAX_BYTES: usize = 55 * 1024 * 1024;

/// Longest wait honoured, whatever the client asks.
const MAX_WAIT_CAP_MS: i32 = 30_000;

pub fn handle(broker: &Arc<Broker>, req: FetchRequest, version: i16, client: &Client) -> Reply {
    if let Some(refused) = refused_replica_fetch(broker, &req, client) {
        return Reply::now(ResponseKind::Fetch(refused));
    }
    if req.session_id != 0 {
        // Incremental fetch sessions are not kept; the client falls back to a full fetch.
        let mut r = FetchResponse::default();
        r.error_code = ResponseError::FetchSessionIdNotFound.code();
        return Reply::now(ResponseKind::Fetch(r));
    }
    let (first, bytes, has_error) = read_all(broker, &req, version, true);
    let max_wait = req.max_wait_ms.clamp(0, MAX_WAIT_CAP_MS);
    if bytes >= req.min_bytes.max(0) as usize || has_error || max_wait == 0 {
        return Reply::now(ResponseKind::Fetch(first));
    }
    let broker = Arc::clone(broker);
    let req = detached(req);
    // Followers wake when a log grows (their fetch carries new data and moves the high
    // watermark); consumers when a high watermark moves.
    let mut changes = if fetcher(&req) != Fetcher::Consumer {
        broker.signals.log_end.subscribe()
    } else {
        broker.signals.high_watermark.subscribe()
    };
    let deadline = Instant::now() + Duration::from_millis(max_wait as u64);
    let min_bytes = req.min_bytes.max(0) as u64;
    Reply::Later(Box::pin(async move {
        loop {
            changes.borrow_and_update();
            // Positions only: nothing is read until the fetch answers.
            if readable(&broker, &req, min_bytes).is_none_or(|bytes| bytes >= min_bytes)
                || tokio::time::timeout_at(deadline, changes.changed())
                    .await
                    .is_err()
            {
                let (resp, _, _) = read_all(&broker, &req, version, false);
                return ResponseKind::Fetch(resp);
            }
        }
    }))
}

/// The request with nothing left that points into its frame (decoded strings and unknown
/// tagged fields are slices of it): a parked fetch would otherwise keep the whole frame alive.
fn detached(mut req: FetchRequest) -> FetchRequest {
    let own = |s: &StrBytes| StrBytes::from_string(s.to_string());
    req.unknown_tagged_fields.clear();
    req.cluster_id = req.cluster_id.as_ref().map(own);
    req.rack_id = own(&req.rack_id);
    req.replica_state.unknown_tagged_fields.clear();
    req.forgotten_topics_data.clear();
    for t in &mut req.topics {
        t.topic = TopicName(own(&t.topic));
        t.unknown_tagged_fields.clear();
        for p in &mut t.partitions {
            p.unknown_tagged_fields.clear();
        }
    }
    req
}

/// What the fetch could read now, from positions alone, bounded as a read would be (and
/// counted no further than `min_bytes`); `None` when some partition must be answered now (an
/// error, a leadership change, divergence).
fn readable(broker: &Broker, req: &FetchRequest, min_bytes: u64) -> Option<u64> {
    let fetcher = fetcher(req);
    let mut total = 0u64;
    for topic in &req.topics {
        let found = broker.topic(topic.topic.as_str());
        for fp in &topic.partitions {
            let partition = lookup(found.as_deref(), fp.partition).ok()?;
            let pos = FetchPosition {
                fetch_offset: fp.fetch_offset,
                last_fetched_epoch: fp.last_fetched_epoch,
                current_leader_epoch: fp.current_leader_epoch,
                max_bytes: 0,
                log_start_offset: fp.log_start_offset,
            };
            let bytes = partition.readable_bytes(&pos, fetcher)?;
            total += bytes.min(fp.partition_max_bytes.max(0) as u64);
            if total >= min_bytes {
                return Some(total);
            }
        }
    }
    Some(total.min(req.max_bytes.max(0) as u64))
}

static REFUSED_REPLICA_WARNINGS: crate::log_limit::Limit =
    crate::log_limit::Limit::new(10, Duration::from_secs(10));

/// With a cluster secret, only an authenticated broker may fetch as a replica: a replica's
/// fetch offsets move the high watermark, so a client claiming a follower's id could get
/// writes acknowledged that no follower holds. Kafka asks for ClusterAction here and answers
/// every partition TOPIC_AUTHORIZATION_FAILED; so does this. Without a secret, anyone may
/// (the standalone default; see the README's security section).
fn refused_replica_fetch(
    broker: &Broker,
    req: &FetchRequest,
    client: &Client,
) -> Option<FetchResponse> {
    let Fetcher::Replica(replica) = fetcher(req) else {
        return None;
    };
    if broker.config.cluster_secret.is_none()
        || client.principal.as_deref() == Some(crate::auth::BROKER_USER)
    {
        return None;
    }
    if let Some(held_back) = REFUSED_REPLICA_WARNINGS.allow() {
        tracing::warn!(replica, client = %client.host, principal = ?client.principal, held_back, "refused a replica fetch from a connection not authenticated as a broker");
    }
    let mut r = FetchResponse::default();
    for topic in &req.topics {
        let mut t = FetchableTopicResponse::default();
        t.topic = topic.topic.clone();
        t.topic_id = topic.topic_id;
        for fp in &topic.partitions {
            let mut p = PartitionData::default();
            p.partition_index = fp.partition;
            p.error_code = ResponseError::TopicAuthorizationFailed.code();
            p.high_watermark = -1;
            p.last_stable_offset = -1;
            p.log_start_offset = -1;
            t.partitions.push(p);
        }
        r.responses.push(t);
    }
    Some(r)
}

/// A follower's fetch names its broker id (v15+ in the replica state).
fn fetcher(req: &FetchRequest) -> Fetcher {
    match [req.replica_id.0, req.replica_state.replica_id.0]
        .into_iter()
        .find(|id| *id >= 0)
    {
        Some(id) => Fetcher::Replica(id),
        None => Fetcher::Consumer,
    }
}

/// One pass over the requested partitions: the response, the record bytes in it, and whether
/// any partition has an error (which ends a long poll at once). `first_read` is the fetch's
/// first pass, the one whose offsets count as a follower's progress.
fn read_all(
    broker: &Broker,
    req: &FetchRequest,
    _version: i16,
    first_read: bool,
) -> (FetchResponse, usize, bool) {
    let mut r = FetchResponse::default();
    let fetcher = fetcher(req);
    // Kafka's fetch.max.bytes default caps what one response may carry, whatever is asked, and
    // for consumers so does the room left for responses not yet written (the first batch
    // still goes whole). Followers are exempt: clients that never read must not be able to
    // starve replication, and the brokers are few.
    let mut remaining = (req.max_bytes.max(1) as usize).min(FETCH_MAX_BYTES);
    if fetcher == Fetcher::Consumer {
        remaining = remaining.min(broker.memory.response_room());
    }
    let mut total = 0usize;
    let mut has_error = false;
    let now = crate::clock::now_ms();
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
            let limit = (fp.partition_max_bytes.max(0) as usize).min(remaining);
            // Only the first partition with data may exceed the limits (to make progress).
            let limit = if total == 0 { limit.max(1) } else { limit };
            let pos = FetchPosition {
                fetch_offset: fp.fetch_offset,
                last_fetched_epoch: fp.last_fetched_epoch,
                current_leader_epoch: fp.current_leader_epoch,
                max_bytes: limit,
                log_start_offset: fp.log_start_offset,
            };
            let read = partition.read_for_fetch(pos, fetcher, first_read, now);
            broker.metrics.fetch_partition_reads.inc();
            broker.propose_isr(partition, read.proposal);
            match read.result {
                Ok(fetched) => {
                    p.high_watermark = fetched.high_watermark;
                    p.last_stable_offset = fetched.high_watermark;
                    p.log_start_offset = fetched.log_start_offset;
                    p.current_leader.leader_id = broker.config.node_id.into();
                    p.current_leader.leader_epoch = fetched.leader_epoch;
                    match fetched.outcome {
                        FetchOutcome::Diverging { epoch, end_offset } => {
                            p.diverging_epoch.epoch = epoch;
                            p.diverging_epoch.end_offset = end_offset;
                        }
                        FetchOutcome::Records(bytes) => {
                            // Later partitions get only what fits.
                            let bytes = if total > 0 && bytes.len() > limit {
                                Vec::new()
                            } else {
                                bytes
                            };
                            total += bytes.len();
                            remaining = remaining.saturating_sub(bytes.len());
                            broker.metrics.bytes_out.inc_by(bytes.len() as u64);
                            if limit > 0 {
                                p.records = Some(Bytes::from(bytes));
                            }
                        }
                    }
                }
                Err(e) => {
                    has_error = true;
                    p.error_code = match e {
                        FetchError::FencedLeaderEpoch(_) => ResponseError::FencedLeaderEpoch,
                        FetchError::UnknownLeaderEpoch(_) => ResponseError::UnknownLeaderEpoch,
                        FetchError::NotLeader {
                            leader,
                            leader_epoch,
                        } => {
                            p.current_leader.leader_id = leader.into();
                            p.current_leader.leader_epoch = leader_epoch;
                            ResponseError::NotLeaderOrFollower
                        }
                        FetchError::OffsetOutOfRange { start, .. } => {
                            // A follower behind the log start restarts its log there: it needs
                            // the leader's log start and high watermark with this error.
                            p.log_start_offset = start;
                            p.high_watermark = partition.high_watermark();
                            p.last_stable_offset = p.high_watermark;
                            ResponseError::OffsetOutOfRange
                        }
                        FetchError::Storage(ref reason) => {
                            tracing::warn!(topic = %partition.topic, partition = partition.index, error = %reason, "read failed");
                            ResponseError::KafkaStorageError
                        }
                    }
                    .code();
                }
            }
            t.partitions.push(p);
        }
        r.responses.push(t);
    }
    (r, total, has_error)
}
