//! Fetch: whole batches from each requested partition up to the high watermark, bounded by the
//! request's and each partition's max bytes (the first batch is always whole, KIP-74) and by
//! the broker's room for unwritten responses, with long polling until min bytes arrive or max
//! wait passes. A parked fetch judges what it could read from log positions, and reads once,
//! when it answers (Kafka's DelayedFetch). Fetch v7+ may use a fetch session (KIP-227,
//! `fetch_session`): an incremental fetch reads every partition of its session and answers
//! only those whose answer changed.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ResponseKind, TopicName};
use kafka_protocol::protocol::StrBytes;
use tokio::time::Instant;

use super::fetch_session::{
    Answer, Context, INVALID_SESSION_ID, Key, Session, SessionError, Told, Wanted,
};
use super::{Client, Reply, lookup};
use crate::metadata::ClusterMetadata;
use crate::partition::{FetchError, FetchOutcome, FetchPosition, Fetcher, Partition};
use crate::replication::read_replica::{self, ReplicaSelector};
use crate::state::Broker;

/// Most record bytes in one response (Kafka's fetch.max.bytes default); a first batch larger
/// than this is still returned whole (KIP-74).
const FETCH_MAX_BYTES: usize = 55 * 1024 * 1024;

/// Longest wait honoured, whatever the client asks.
const MAX_WAIT_CAP_MS: i32 = 30_000;

/// First Fetch version with session fields.
const SESSION_VERSION: i16 = 7;

pub fn handle(broker: &Arc<Broker>, req: FetchRequest, version: i16, client: &Client) -> Reply {
    if let Some(refused) = refused_replica_fetch(broker, &req, client) {
        return Reply::now(ResponseKind::Fetch(refused));
    }
    let fetcher = fetcher(&req, version);
    let plan = match plan(broker, &req, version, fetcher) {
        Ok(plan) => plan,
        Err(e) => {
            tracing::debug!(error = %e, client = %client.host, "fetch session refused");
            let mut r = FetchResponse::default();
            r.error_code = match e {
                SessionError::InvalidEpoch { .. } => ResponseError::InvalidFetchSessionEpoch,
                SessionError::NotFound(_) | SessionError::TooLarge(_) => {
                    ResponseError::FetchSessionIdNotFound
                }
            }
            .code();
            return Reply::now(ResponseKind::Fetch(r));
        }
    };
    // Owned, like the partitions' names: a parked fetch must not pin the request's frame.
    let client_rack = (fetcher.is_consumer() && !req.rack_id.is_empty())
        .then(|| Arc::<str>::from(req.rack_id.as_str()));
    let fetch = Fetch {
        plan,
        fetcher,
        max_bytes: req.max_bytes,
        client_rack,
    };
    let first = fetch.read(broker, true);
    let max_wait = req.max_wait_ms.clamp(0, MAX_WAIT_CAP_MS);
    if first.bytes >= req.min_bytes.max(0) as usize || first.answer_now || max_wait == 0 {
        return Reply::now(ResponseKind::Fetch(fetch.answer(broker, first)));
    }
    let min_bytes = req.min_bytes.max(0) as u64;
    // The parked fetch holds its partitions (owned names) or its session, never the request:
    // decoded strings are slices of the request's frame, which would otherwise stay alive.
    drop(req);
    let broker = Arc::clone(broker);
    // Followers wake when a log grows (their fetch carries new data and moves the high
    // watermark); consumers when a high watermark moves.
    let mut changes = if !fetcher.is_consumer() {
        broker.signals.log_end.subscribe()
    } else {
        broker.signals.high_watermark.subscribe()
    };
    let deadline = Instant::now() + Duration::from_millis(max_wait as u64);
    Reply::Later(Box::pin(async move {
        loop {
            changes.borrow_and_update();
            // Positions only: nothing is read until the fetch answers.
            if fetch
                .readable(&broker, min_bytes)
                .is_none_or(|bytes| bytes >= min_bytes)
                || tokio::time::timeout_at(deadline, changes.changed())
                    .await
                    .is_err()
            {
                let read = fetch.read(&broker, false);
                return ResponseKind::Fetch(fetch.answer(&broker, read));
            }
        }
    }))
}

/// One partition to read, as asked for.
struct Target {
    key: Key,
    wanted: Wanted,
    /// A follower's fetch at this offset may count as its progress (see `plan`).
    proves: bool,
}

/// What a fetch reads.
enum Plan {
    /// The request's partitions; `open` a session with them when answering.
    Listed { targets: Vec<Target>, open: bool },
    /// Every partition of the session; `listed` those this request named.
    Session {
        session: Arc<Mutex<Session>>,
        listed: HashSet<Key>,
    },
}

struct Fetch {
    plan: Plan,
    fetcher: Fetcher,
    max_bytes: i32,
    /// The consumer's `client.rack` (Fetch v11+), for the replica selector.
    client_rack: Option<Arc<str>>,
}

/// One pass over the fetch's partitions: each partition's answer, the record bytes read, and
/// whether any partition must be answered at once (an error, or a consumer sent to another
/// replica), which ends a long poll.
struct Read {
    parts: Vec<(Key, PartitionData)>,
    bytes: usize,
    answer_now: bool,
}

/// Reads the request's session fields (v7+) and finds what the fetch reads. In an incremental
/// fetch a follower's omitted partitions are read at their cached offsets, the ones it last
/// named; such an offset counts as the follower's progress only if the follower named it under
/// a leader epoch, since then a read at any other epoch is fenced: the follower said it holds
/// that offset to this very leadership, and its log cannot have shrunk since without it naming
/// the partition again (a truncation changes its fetch offset; a restart opens a new session).
/// (The replication state also counts no fetch that was not sent for the current epoch; this
/// keeps the rule where sessions are, should that change.)
fn plan(
    broker: &Broker,
    req: &FetchRequest,
    version: i16,
    fetcher: Fetcher,
) -> Result<Plan, SessionError> {
    let mut listed = Vec::new();
    for topic in &req.topics {
        let name: Arc<str> = Arc::from(topic.topic.as_str());
        for fp in &topic.partitions {
            let key = Key {
                topic: Arc::clone(&name),
                partition: fp.partition,
            };
            let wanted = Wanted {
                fetch_offset: fp.fetch_offset,
                last_fetched_epoch: fp.last_fetched_epoch,
                current_leader_epoch: fp.current_leader_epoch,
                log_start_offset: fp.log_start_offset,
                partition_max_bytes: fp.partition_max_bytes,
            };
            listed.push((key, wanted));
        }
    }
    let as_listed = |listed: Vec<(Key, Wanted)>, open| Plan::Listed {
        targets: listed
            .into_iter()
            .map(|(key, wanted)| Target {
                key,
                wanted,
                proves: true,
            })
            .collect(),
        open,
    };
    if version < SESSION_VERSION {
        return Ok(as_listed(listed, false));
    }
    let forgotten = req.forgotten_topics_data.iter().flat_map(|t| {
        let name: Arc<str> = Arc::from(t.topic.as_str());
        t.partitions.iter().map(move |p| Key {
            topic: Arc::clone(&name),
            partition: *p,
        })
    });
    let now = crate::clock::now_ms();
    let mut cache = broker
        .fetch_sessions
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let context = cache.begin(
        req.session_id,
        req.session_epoch,
        fetcher,
        now,
        listed.iter().cloned(),
        forgotten,
    );
    broker.metrics.fetch_sessions.set(cache.len() as i64);
    broker
        .metrics
        .fetch_session_partitions
        .set(cache.partitions() as i64);
    drop(cache);
    Ok(match context? {
        Context::Sessionless => as_listed(listed, false),
        Context::Full => as_listed(listed, true),
        Context::Incremental(session) => {
            broker.metrics.incremental_fetches.inc();
            Plan::Session {
                session,
                listed: listed.into_iter().map(|(k, _)| k).collect(),
            }
        }
    })
}

impl Fetch {
    /// The partitions to read now, in order.
    fn targets(&self) -> Vec<Target> {
        match &self.plan {
            Plan::Listed { targets, .. } => targets
                .iter()
                .map(|t| Target {
                    key: t.key.clone(),
                    wanted: t.wanted,
                    proves: t.proves,
                })
                .collect(),
            Plan::Session { session, listed } => {
                let s = session.lock().unwrap_or_else(|p| p.into_inner());
                s.partitions()
                    .map(|(key, wanted)| Target {
                        key: key.clone(),
                        wanted: *wanted,
                        proves: wanted.current_leader_epoch >= 0 || listed.contains(key),
                    })
                    .collect()
            }
        }
    }

    /// What the fetch could read now, from positions alone, bounded as a read would be (and
    /// counted no further than `min_bytes`); `None` when some partition must be answered now
    /// (an error, a leadership change, divergence).
    fn readable(&self, broker: &Broker, min_bytes: u64) -> Option<u64> {
        let mut total = 0u64;
        let mut add = |topic: &str, partition: i32, wanted: &Wanted| -> Option<bool> {
            let found = broker.topic(topic);
            let partition = lookup(found.as_deref(), partition).ok()?;
            let bytes = partition.readable_bytes(&position(wanted, 0), self.fetcher)?;
            total += bytes.min(wanted.partition_max_bytes.max(0) as u64);
            Some(total >= min_bytes)
        };
        match &self.plan {
            Plan::Listed { targets, .. } => {
                for t in targets {
                    if add(&t.key.topic, t.key.partition, &t.wanted)? {
                        return Some(total);
                    }
                }
            }
            Plan::Session { session, .. } => {
                // Copied out: the scan takes log locks, and a pipelined fetch on this session
                // must not wait for it while holding the whole session cache.
                let wanted: Vec<(Key, Wanted)> = session
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .partitions()
                    .map(|(k, w)| (k.clone(), *w))
                    .collect();
                for (key, wanted) in &wanted {
                    if add(&key.topic, key.partition, wanted)? {
                        return Some(total);
                    }
                }
            }
        }
        Some(total.min(self.max_bytes.max(0) as u64))
    }

    /// One pass over the fetch's partitions. `first_read` is the fetch's first pass, the one
    /// whose offsets count as a follower's progress.
    fn read(&self, broker: &Broker, first_read: bool) -> Read {
        read_all(
            broker,
            &self.targets(),
            self.fetcher,
            self.max_bytes,
            first_read,
            self.client_rack.as_deref(),
        )
    }

    /// The response to send, from a read; records what the fetcher is told in its session
    /// (opening one for a full fetch), and leaves out of an incremental response the
    /// partitions whose answer did not change.
    fn answer(&self, broker: &Broker, read: Read) -> FetchResponse {
        let mut r = FetchResponse::default();
        let answer_of = |p: &PartitionData| Answer {
            told: Told {
                high_watermark: p.high_watermark,
                last_stable_offset: p.last_stable_offset,
                log_start_offset: p.log_start_offset,
                leader_epoch: p.current_leader.leader_epoch,
            },
            records: p.records.as_ref().is_some_and(|r| !r.is_empty()),
            // A consumer sent to another replica is told so in every answer, as an error is.
            error: p.error_code != 0 || p.preferred_read_replica.0 >= 0,
            diverging: p.diverging_epoch.epoch >= 0,
        };
        let parts = match &self.plan {
            Plan::Listed { targets, open } => {
                r.session_id = INVALID_SESSION_ID;
                if *open {
                    let mut cache = broker
                        .fetch_sessions
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    let evicted = cache.evictions();
                    let session = targets
                        .iter()
                        .zip(&read.parts)
                        .map(|(t, (_, p))| (t.key.clone(), t.wanted, answer_of(p)));
                    let mut random = rand::random::<i32>;
                    r.session_id =
                        cache.open(self.fetcher, crate::clock::now_ms(), session, &mut random);
                    let m = &broker.metrics;
                    m.fetch_session_evictions
                        .inc_by(cache.evictions() - evicted);
                    m.fetch_sessions.set(cache.len() as i64);
                    m.fetch_session_partitions.set(cache.partitions() as i64);
                }
                read.parts
            }
            Plan::Session { session, .. } => {
                let mut s = session.lock().unwrap_or_else(|p| p.into_inner());
                r.session_id = s.id();
                read.parts
                    .into_iter()
                    .filter(|(key, p)| s.answered(key, &answer_of(p)))
                    .collect()
            }
        };
        // Consecutive partitions of a topic share its entry (a topic may appear twice when
        // its partitions are not consecutive in the session's order, as in Kafka).
        for (key, p) in parts {
            match r.responses.last_mut() {
                Some(t) if t.topic.as_str() == &*key.topic => t.partitions.push(p),
                _ => {
                    let mut t = FetchableTopicResponse::default();
                    t.topic = TopicName(StrBytes::from_string(key.topic.to_string()));
                    t.partitions.push(p);
                    r.responses.push(t);
                }
            }
        }
        r
    }
}

fn position(wanted: &Wanted, max_bytes: usize) -> FetchPosition {
    FetchPosition {
        fetch_offset: wanted.fetch_offset,
        last_fetched_epoch: wanted.last_fetched_epoch,
        current_leader_epoch: wanted.current_leader_epoch,
        max_bytes,
        log_start_offset: wanted.log_start_offset,
    }
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
    let replica = replica_id(req)?;
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

/// A follower's fetch names its broker id (v15+ in the replica state). A consumer's Fetch v11+
/// may be served by a follower (KIP-392: that version brought `rack_id` and
/// `preferred_read_replica`, and Kafka lets followers serve consumers from it on).
fn fetcher(req: &FetchRequest, version: i16) -> Fetcher {
    match replica_id(req) {
        Some(id) => Fetcher::Replica(id),
        None if version >= FOLLOWER_READS_VERSION => Fetcher::AnyReplicaConsumer,
        None => Fetcher::Consumer,
    }
}

fn replica_id(req: &FetchRequest) -> Option<i32> {
    [req.replica_id.0, req.replica_state.replica_id.0]
        .into_iter()
        .find(|id| *id >= 0)
}

/// First Fetch version a follower serves consumers at (KIP-392).
const FOLLOWER_READS_VERSION: i16 = 11;

/// The follower a consumer in `rack` should read `partition` from (KIP-392), if this broker
/// leads it and the replica selector picks another replica.
fn preferred_read_replica(
    broker: &Broker,
    meta: &ClusterMetadata,
    partition: &Partition,
    rack: &str,
    fetch_offset: i64,
) -> Option<i32> {
    let selector = broker.config.replica_selector;
    if selector == ReplicaSelector::Leader {
        return None;
    }
    let candidates = partition.read_candidates(
        |id| meta.brokers.get(&id).and_then(|b| b.rack.clone()),
        |id| meta.is_alive(id),
    )?;
    let own_rack = meta
        .brokers
        .get(&broker.config.node_id)
        .and_then(|b| b.rack.as_deref());
    read_replica::select(selector, rack, own_rack, fetch_offset, &candidates)
}

/// Reads `targets` in order, within `max_bytes` and the broker's room for responses.
fn read_all(
    broker: &Broker,
    targets: &[Target],
    fetcher: Fetcher,
    max_bytes: i32,
    first_read: bool,
    client_rack: Option<&str>,
) -> Read {
    // Kafka's fetch.max.bytes default caps what one response may carry, whatever is asked, and
    // for consumers so does the room left for responses not yet written (the first batch
    // still goes whole). Followers are exempt: clients that never read must not be able to
    // starve replication, and the brokers are few.
    let mut remaining = (max_bytes.max(1) as usize).min(FETCH_MAX_BYTES);
    if fetcher.is_consumer() {
        remaining = remaining.min(broker.memory.response_room());
    }
    // The cluster's view of racks and live brokers, for a consumer that names its rack.
    let meta = client_rack
        .and_then(|_| broker.cluster())
        .map(|rt| rt.membership.metadata());
    let mut total = 0usize;
    let mut answer_now = false;
    let now = crate::clock::now_ms();
    let mut parts = Vec::with_capacity(targets.len());
    let mut found: Option<(&str, Option<Arc<crate::state::Topic>>)> = None;
    for target in targets {
        let topic = match &found {
            Some((name, t)) if *name == &*target.key.topic => t.clone(),
            _ => {
                let t = broker.topic(&target.key.topic);
                found = Some((&target.key.topic, t.clone()));
                t
            }
        };
        let fp = &target.wanted;
        let mut p = PartitionData::default();
        p.partition_index = target.key.partition;
        let partition = match lookup(topic.as_deref(), target.key.partition) {
            Ok(partition) => partition,
            Err(code) => {
                p.error_code = code.code();
                answer_now = true;
                parts.push((target.key.clone(), p));
                continue;
            }
        };
        let limit = (fp.partition_max_bytes.max(0) as usize).min(remaining);
        // Only the first partition with data may exceed the limits (to make progress).
        let limit = if total == 0 { limit.max(1) } else { limit };
        let redirect = match (client_rack, &meta) {
            (Some(rack), Some(meta)) => {
                preferred_read_replica(broker, meta, partition, rack, fp.fetch_offset)
            }
            _ => None,
        };
        // A consumer sent elsewhere gets the partition's offsets and no records (Kafka's
        // answer): a read of no bytes still checks its epoch and offset.
        let limit = if redirect.is_some() { 0 } else { limit };
        let pos = position(fp, limit);
        let read = partition.read_for_fetch(pos, fetcher, first_read && target.proves, now);
        broker.metrics.fetch_partition_reads.inc();
        broker.propose_isr(partition, read.proposal);
        match read.result {
            Ok(fetched) => {
                if let Some(replica) = redirect {
                    p.preferred_read_replica = replica.into();
                    answer_now = true;
                }
                p.high_watermark = fetched.high_watermark;
                p.last_stable_offset = fetched.high_watermark;
                p.log_start_offset = fetched.log_start_offset;
                p.current_leader.leader_id = partition.leader_id().into();
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
                answer_now = true;
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
        parts.push((target.key.clone(), p));
    }
    Read {
        parts,
        bytes: total,
        answer_now,
    }
}
