//! The group coordinator's I/O side. Each partition of `__consumer_offsets` this broker leads
//! is a shard: its groups (the pure state machines of `state`) and committed offsets, rebuilt
//! from the partition's log when leadership arrives and dropped when it leaves. A group
//! lives in partition `partition_for(group)`, so its coordinator is that partition's leader.
//!
//! Durability order: a state change that must survive a coordinator failure (a commit, a
//! group's assignment) is appended to the partition under the shard lock, so the log holds
//! changes in the order they were made; the answer waits until the high watermark passes the
//! record (as acks=all does) and only then is a commit visible to OffsetFetch. A leader that
//! loses its epoch while waiting answers NOT_COORDINATOR and the client retries elsewhere.
//!
//! Bounding the log: the shard keeps the newest value of every live key (its image). Once the
//! log has grown past twice the image (and a floor), the coordinator rolls the log, writes the
//! image again as a snapshot, and, when that is committed, deletes the segments below it.
//! Followers delete the same segments when they see the leader's log start offset.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use tokio::sync::{oneshot, watch};
use tracing::{debug, error, info, warn};

use super::consumer::{self, ConsumerGroup, Heartbeat, HeartbeatReply, Refusal};
use super::partition_for;
use super::records::{self, FormatError, OffsetValue, RecordKey};
use super::retention;
use super::state::{
    Group, JoinRequest, JoinResponse, Limits, Output, State, SyncRequest, SyncResponse, Ticket,
};
use crate::partition::{AppendRefused, Partition};
use crate::protocol::batch::{BatchHeader, Batches};
use crate::state::{Broker, TopicError};

pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// How often timers (sessions, rebalance deadlines) and leadership changes are checked.
const TICK: Duration = Duration::from_millis(50);

/// Largest batch a snapshot writes at once.
const SNAPSHOT_BATCH_BYTES: usize = 512 << 10;

#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// Partitions of `__consumer_offsets` when this broker creates it (Kafka's
    /// offsets.topic.num.partitions).
    pub offsets_partitions: i32,
    /// Its replication factor in a cluster: it is not created until this many brokers are
    /// alive (Kafka's offsets.topic.replication.factor).
    pub offsets_replication_factor: i16,
    pub limits: Limits,
    /// How long a commit or group write may wait for replication (offsets.commit.timeout.ms).
    pub commit_timeout: Duration,
    /// Largest committed offset metadata string (offset.metadata.max.bytes).
    pub max_offset_metadata_bytes: usize,
    /// The log is snapshotted once it has grown by this much and by twice the live state.
    pub snapshot_min_bytes: u64,
    /// Committed offsets expire this long after their group emptied, or after their commit
    /// for offsets committed without membership (offsets.retention.minutes).
    pub offsets_retention: Duration,
    /// How often expired offsets are looked for (offsets.retention.check.interval.ms).
    pub offsets_retention_check_interval: Duration,
    /// The consumer group protocol's group.consumer.* settings.
    pub consumer: consumer::Settings,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            offsets_partitions: 50,
            offsets_replication_factor: 3,
            limits: Limits::default(),
            commit_timeout: Duration::from_secs(5),
            max_offset_metadata_bytes: 4096,
            snapshot_min_bytes: 16 << 20,
            offsets_retention: Duration::from_secs(7 * 24 * 3600),
            offsets_retention_check_interval: Duration::from_secs(600),
            consumer: consumer::Settings::default(),
        }
    }
}

/// The answer to a parked JoinGroup or SyncGroup.
#[derive(Debug)]
pub enum GroupReply {
    Join(JoinResponse),
    Sync(SyncResponse),
}

/// A committed offset and the log offset of the record that holds it (newer records win even
/// if their commits complete out of order).
#[derive(Debug, Clone)]
struct Committed {
    value: OffsetValue,
    log_offset: i64,
}

struct GroupEntry {
    group: Group,
    /// The group's members under the consumer group protocol (KIP-848), if it has been one.
    /// Kept in memory only: after a coordinator change its members rejoin (see `consumer`).
    consumer: Option<ConsumerGroup>,
    offsets: BTreeMap<(String, i32), Committed>,
    /// Tells this entry from an earlier one of the same id (deleted, then created again):
    /// a write's outcome only ever applies to the entry that made it.
    incarnation: u64,
}

/// An offset key in the log: its bytes, (topic, partition) and newest value.
type LoggedOffset = (Vec<u8>, (String, i32), OffsetValue);

static INCARNATIONS: AtomicU64 = AtomicU64::new(0);

impl GroupEntry {
    /// Has members under the consumer group protocol.
    fn is_consumer_group(&self) -> bool {
        self.consumer.as_ref().is_some_and(|c| !c.is_empty())
    }

    fn new(group: Group) -> Self {
        Self {
            group,
            consumer: None,
            offsets: BTreeMap::new(),
            incarnation: INCARNATIONS.fetch_add(1, Ordering::Relaxed),
        }
    }
}

#[derive(Default)]
struct ShardState {
    loaded: bool,
    gone: bool,
    groups: HashMap<String, GroupEntry>,
    waiters: HashMap<Ticket, oneshot::Sender<GroupReply>>,
    /// Newest value of every live key, as of the log end: what a snapshot writes.
    image: BTreeMap<Vec<u8>, Vec<u8>>,
    image_bytes: u64,
    bytes_since_snapshot: u64,
    snapshotting: bool,
    /// Log offset of each group's latest deletion: a commit appended before it and applied
    /// after it (it was waiting for replication) must not bring the group back.
    deleted_at: HashMap<String, i64>,
    /// Log offsets of the OffsetCommits of each group that are appended but not yet settled
    /// (committed and applied, or failed). Offset expiry leaves such groups alone, and a
    /// deletion is remembered in `deleted_at` while a commit appended before it is in flight.
    in_flight: HashMap<String, BTreeSet<i64>>,
    /// Consumer groups (KIP-848) made again here after this broker took over a log that
    /// had groups hand out partitions only from this time (`hold_assignments_until`).
    consumer_hold_until: i64,
}

impl ShardState {
    fn remember(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        let added = value.as_ref().map_or(0, |v| (key.len() + v.len()) as u64);
        let removed = match value {
            Some(v) => self.image.insert(key.clone(), v),
            None => self.image.remove(&key),
        }
        .map_or(0, |v| (key.len() + v.len()) as u64);
        self.image_bytes = (self.image_bytes + added).saturating_sub(removed);
    }

    fn answer(&mut self, out: Output) {
        match out {
            Output::Join(t, r) => {
                if let Some(tx) = self.waiters.remove(&t) {
                    let _ = tx.send(GroupReply::Join(r));
                }
            }
            Output::Sync(t, r) => {
                if let Some(tx) = self.waiters.remove(&t) {
                    let _ = tx.send(GroupReply::Sync(r));
                }
            }
            Output::Store { then, .. } => {
                for o in then {
                    self.answer(o);
                }
            }
        }
    }

    /// Answers every ticket in `outs` with `error` instead.
    fn fail(&mut self, outs: Vec<Output>, error: ResponseError) {
        for o in outs {
            match o {
                Output::Join(t, r) => self.answer(Output::Join(
                    t,
                    JoinResponse {
                        error: Some(error),
                        generation: -1,
                        member_id: r.member_id,
                        ..JoinResponse::default()
                    },
                )),
                Output::Sync(t, _) => self.answer(Output::Sync(t, SyncResponse::error(error))),
                Output::Store { then, .. } => self.fail(then, error),
            }
        }
    }

    fn commit_settled(&mut self, group_id: &str, base: i64) {
        if let Some(bases) = self.in_flight.get_mut(group_id) {
            bases.remove(&base);
            if bases.is_empty() {
                self.in_flight.remove(group_id);
            }
        }
    }

    /// A group that holds nothing (a failed first join, say) is forgotten.
    fn drop_if_vacant(&mut self, group_id: &str) {
        let vacant = self.groups.get(group_id).is_some_and(|e| {
            e.offsets.is_empty()
                && !e.is_consumer_group()
                && e.group.is_empty()
                && e.group.generation() == 0
                && e.group.state() == State::Empty
        });
        if vacant {
            self.groups.remove(group_id);
        }
    }
}

/// The topics a consumer group's members subscribe to, from their ConsumerProtocol
/// subscriptions; None when one cannot be read (treated as subscribed to everything).
fn subscribed_topics(group: &Group) -> Option<std::collections::HashSet<String>> {
    use bytes::Buf;
    use kafka_protocol::messages::ConsumerProtocolSubscription;
    use kafka_protocol::protocol::Decodable;
    let mut topics = std::collections::HashSet::new();
    for m in group.metadata().members {
        let mut b = m.subscription.clone();
        if b.remaining() < 2 {
            return None;
        }
        let version = b.get_i16();
        let sub = ConsumerProtocolSubscription::decode(&mut b, version).ok()?;
        topics.extend(sub.topics.iter().map(|t| t.to_string()));
    }
    Some(topics)
}

struct Shard {
    index: i32,
    partition: Arc<Partition>,
    epoch: i32,
    state: Mutex<ShardState>,
}

impl Shard {
    fn lock(&self) -> MutexGuard<'_, ShardState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn still_leader(&self) -> bool {
        self.partition.is_leader() && self.partition.leader_epoch() == self.epoch
    }
}

/// An appended write: committed once the high watermark passes `end`.
struct Pending {
    partition: Arc<Partition>,
    base: i64,
    end: i64,
    epoch: i32,
    timeout: Duration,
}

impl Pending {
    async fn committed(&self) -> Result<(), ResponseError> {
        match tokio::time::timeout(
            self.timeout,
            self.partition.wait_high_watermark(self.end, self.epoch),
        )
        .await
        {
            Ok(true) => Ok(()),
            // The leadership ended: the write may be truncated (Kafka maps NOT_LEADER here).
            Ok(false) => Err(ResponseError::NotCoordinator),
            // Kafka maps REQUEST_TIMED_OUT and NOT_ENOUGH_REPLICAS to this retriable error.
            Err(_) => Err(ResponseError::CoordinatorNotAvailable),
        }
    }
}

/// One offset to commit, already checked by the handler (topic exists, metadata size).
#[derive(Debug, Clone)]
pub struct CommitEntry {
    pub topic: String,
    pub partition: i32,
    pub value: OffsetValue,
}

/// One group as ListGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub id: String,
    pub protocol_type: String,
    pub state: &'static str,
    /// "classic" or "consumer" (the protocol its members use).
    pub kind: &'static str,
}

/// What DescribeGroups shows of one group.
pub type Description = (State, String, String, Vec<super::state::MemberSummary>);

pub struct Coordinator {
    config: GroupConfig,
    shards: Mutex<HashMap<i32, Arc<Shard>>>,
    next_ticket: AtomicU64,
    creating_topic: AtomicBool,
    /// When the last "too few brokers for the offsets topic" warning was logged.
    rf_warned_ms: AtomicI64,
}

fn now_ms() -> i64 {
    crate::clock::now_ms()
}

/// A record the offsets log cannot hold (a string past the format's int16 length that got
/// past the checks at the API): refused, never truncated.
fn unwritable(e: FormatError) -> ResponseError {
    warn!(error = %e, "refusing a group record the offsets log cannot hold");
    ResponseError::InvalidRequest
}

/// A string the offsets log cannot hold.
fn too_long(s: &str) -> bool {
    s.len() > records::MAX_STRING_BYTES
}

impl Coordinator {
    pub fn new(config: GroupConfig) -> Self {
        Self {
            config,
            shards: Mutex::new(HashMap::new()),
            next_ticket: AtomicU64::new(1),
            creating_topic: AtomicBool::new(false),
            rf_warned_ms: AtomicI64::new(i64::MIN / 2),
        }
    }

    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    fn shards(&self) -> MutexGuard<'_, HashMap<i32, Arc<Shard>>> {
        self.shards.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The topic configs of `__consumer_offsets`: never deleted by time or size (snapshots
    /// bound it instead).
    pub fn offsets_topic_configs() -> BTreeMap<String, String> {
        [
            ("retention.ms", "-1"),
            ("retention.bytes", "-1"),
            ("segment.bytes", "104857600"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    // ---- FindCoordinator ----

    /// The coordinator of `key` as (node id, host, port) on `listener`; creates
    /// `__consumer_offsets` on first use, as Kafka does, answering COORDINATOR_NOT_AVAILABLE
    /// until it exists (and, as Kafka, when the coordinator has no such listener).
    pub fn find(
        &self,
        broker: &Arc<Broker>,
        key: &str,
        listener: &str,
    ) -> Result<(i32, String, i32), ResponseError> {
        let Some(rt) = broker.cluster() else {
            if broker.topic(OFFSETS_TOPIC).is_none() {
                match broker.create_topic(
                    OFFSETS_TOPIC,
                    self.config.offsets_partitions,
                    1,
                    Self::offsets_topic_configs(),
                    false,
                ) {
                    Ok(_) | Err(TopicError::AlreadyExists(_)) => {}
                    Err(e) => {
                        warn!(error = %e, "cannot create {OFFSETS_TOPIC}");
                        return Err(ResponseError::CoordinatorNotAvailable);
                    }
                }
            }
            let (host, port) = broker
                .config
                .advertised(listener)
                .ok_or(ResponseError::CoordinatorNotAvailable)?;
            return Ok((broker.config.node_id, host, port));
        };
        let meta = rt.membership.metadata();
        let Some(topic) = meta.topics.get(OFFSETS_TOPIC) else {
            self.create_in_cluster(broker, &meta);
            return Err(ResponseError::CoordinatorNotAvailable);
        };
        let p = topic
            .partitions
            .get(partition_for(key, topic.partitions.len()))
            .ok_or(ResponseError::CoordinatorNotAvailable)?;
        let leader = meta
            .brokers
            .get(&p.leader)
            .filter(|_| p.has_leader() && meta.is_alive(p.leader))
            .ok_or(ResponseError::CoordinatorNotAvailable)?;
        let (host, port) = leader
            .endpoint(listener)
            .ok_or(ResponseError::CoordinatorNotAvailable)?;
        Ok((leader.id, host.to_string(), i32::from(port)))
    }

    fn create_in_cluster(&self, broker: &Arc<Broker>, meta: &crate::metadata::ClusterMetadata) {
        let Some(rt) = broker.cluster().cloned() else {
            return;
        };
        let live = meta
            .brokers
            .values()
            .filter(|b| b.status == crate::metadata::BrokerStatus::Alive)
            .count();
        let rf = self.config.offsets_replication_factor.max(1) as usize;
        if live < rf {
            // As Kafka: never create it with fewer replicas than configured (the replication
            // factor could not grow later); COORDINATOR_NOT_AVAILABLE until enough are up.
            let now = now_ms();
            let last = self.rf_warned_ms.load(Ordering::Relaxed);
            if now - last >= 10_000
                && self
                    .rf_warned_ms
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                warn!(
                    live,
                    replication_factor = rf,
                    "not creating {OFFSETS_TOPIC} until enough brokers are alive for --offsets-topic-replication-factor (normal while a cluster starts)"
                );
            }
            return;
        }
        if self.creating_topic.swap(true, Ordering::AcqRel) {
            return;
        }
        let partitions = self.config.offsets_partitions.max(1) as usize;
        let broker = Arc::clone(broker);
        tokio::spawn(async move {
            match rt
                .membership
                .client()
                .create_topic(
                    OFFSETS_TOPIC,
                    partitions,
                    rf,
                    &Self::offsets_topic_configs(),
                )
                .await
            {
                Ok(_) => info!(
                    partitions,
                    replication_factor = rf,
                    "created {OFFSETS_TOPIC}"
                ),
                Err(e) => debug!(error = %e, "creating {OFFSETS_TOPIC}"),
            }
            broker.groups.creating_topic.store(false, Ordering::Release);
        });
    }

    // ---- shards: leadership, loading, unloading ----

    /// The loaded shard that coordinates `group_id`, or why not: NOT_COORDINATOR when another
    /// broker leads its partition, COORDINATOR_LOAD_IN_PROGRESS while its log is read.
    fn shard(&self, broker: &Arc<Broker>, group_id: &str) -> Result<Arc<Shard>, ResponseError> {
        let topic = broker
            .topic(OFFSETS_TOPIC)
            .ok_or(ResponseError::NotCoordinator)?;
        let index = partition_for(group_id, topic.partitions.len());
        let partition = topic
            .partitions
            .get(index)
            .cloned()
            .flatten()
            .filter(|p| p.is_leader())
            .ok_or(ResponseError::NotCoordinator)?;
        let current = self.shards().get(&(index as i32)).cloned();
        match current {
            Some(s) if Arc::ptr_eq(&s.partition, &partition) && s.still_leader() => {
                let st = s.lock();
                if st.gone {
                    Err(ResponseError::NotCoordinator)
                } else if !st.loaded {
                    Err(ResponseError::CoordinatorLoadInProgress)
                } else {
                    drop(st);
                    Ok(s)
                }
            }
            _ => {
                self.start_load(broker, index as i32, partition);
                Err(ResponseError::CoordinatorLoadInProgress)
            }
        }
    }

    /// Runs `f` on the loaded shard of `group_id` with its lock held.
    fn with_shard<T>(
        &self,
        broker: &Arc<Broker>,
        group_id: &str,
        f: impl FnOnce(&Arc<Shard>, &mut ShardState) -> Result<T, ResponseError>,
    ) -> Result<T, ResponseError> {
        // Longer ids fit no record key (truncated, two would share one).
        if group_id.is_empty() || too_long(group_id) {
            return Err(ResponseError::InvalidGroupId);
        }
        let shard = self.shard(broker, group_id)?;
        let mut st = shard.lock();
        if st.gone || !shard.still_leader() {
            return Err(ResponseError::NotCoordinator);
        }
        f(&shard, &mut st)
    }

    /// Makes the shards match this broker's leadership of `__consumer_offsets` partitions:
    /// loads newly led partitions and drops those led no more.
    fn sync_leadership(&self, broker: &Arc<Broker>) {
        let led: HashMap<i32, Arc<Partition>> = broker
            .topic(OFFSETS_TOPIC)
            .map(|t| {
                t.partitions
                    .iter()
                    .enumerate()
                    .filter_map(|(i, p)| p.clone().map(|p| (i as i32, p)))
                    .filter(|(_, p)| p.is_leader())
                    .collect()
            })
            .unwrap_or_default();
        let stale: Vec<Arc<Shard>> = self
            .shards()
            .values()
            .filter(|s| {
                !s.still_leader()
                    || led
                        .get(&s.index)
                        .is_none_or(|p| !Arc::ptr_eq(p, &s.partition))
            })
            .cloned()
            .collect();
        for s in stale {
            self.unload(&s);
        }
        for (index, partition) in led {
            let known = self.shards().get(&index).is_some_and(|s| {
                Arc::ptr_eq(&s.partition, &partition) && s.epoch == partition.leader_epoch()
            });
            if !known {
                self.start_load(broker, index, partition);
            }
        }
    }

    fn unload(&self, shard: &Arc<Shard>) {
        {
            let mut shards = self.shards();
            if shards
                .get(&shard.index)
                .is_some_and(|s| Arc::ptr_eq(s, shard))
            {
                shards.remove(&shard.index);
            }
        }
        let mut st = shard.lock();
        if !st.gone {
            info!(
                partition = shard.index,
                groups = st.groups.len(),
                "no longer coordinator of this offsets partition; dropping its groups"
            );
        }
        st.gone = true;
        st.groups.clear();
        st.image.clear();
        // Parked JoinGroup/SyncGroup requests see their channel close: NOT_COORDINATOR.
        st.waiters.clear();
    }

    fn start_load(&self, broker: &Arc<Broker>, index: i32, partition: Arc<Partition>) {
        let epoch = partition.leader_epoch();
        let shard = Arc::new(Shard {
            index,
            partition,
            epoch,
            state: Mutex::new(ShardState::default()),
        });
        let previous = {
            let mut shards = self.shards();
            if let Some(s) = shards.get(&index)
                && Arc::ptr_eq(&s.partition, &shard.partition)
                && s.epoch == epoch
            {
                return; // already loading or loaded
            }
            shards.insert(index, Arc::clone(&shard))
        };
        if let Some(p) = previous {
            self.unload(&p);
        }
        let broker = Arc::clone(broker);
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let limits = broker.groups.config.limits;
            let loaded = load(&shard.partition, limits);
            let mut st = shard.lock();
            if st.gone || !shard.still_leader() {
                return;
            }
            match loaded {
                Ok(l) => {
                    let ms = started.elapsed().as_millis() as u64;
                    if l.records > 0 {
                        info!(
                            partition = index,
                            epoch,
                            groups = l.groups.len(),
                            records = l.records,
                            ms,
                            "loaded offsets partition; coordinating its groups"
                        );
                    } else {
                        debug!(
                            partition = index,
                            epoch, "coordinating an empty offsets partition"
                        );
                    }
                    st.groups = l.groups;
                    st.image = l.image;
                    st.image_bytes = l.image_bytes;
                    st.bytes_since_snapshot = l.log_bytes;
                    // Members of a previous coordinator's groups learn they are fenced at
                    // their next heartbeat: wait two intervals before assigning again.
                    let interval = i64::from(broker.groups.config.consumer.heartbeat_interval_ms);
                    st.consumer_hold_until = if l.records > 0 {
                        now_ms().saturating_add(2 * interval)
                    } else {
                        i64::MIN
                    };
                    st.loaded = true;
                }
                Err(e) => {
                    // Not loaded: its groups get COORDINATOR_LOAD_IN_PROGRESS until a later
                    // try (after LOAD_RETRY, so a lasting fault does not spin) succeeds.
                    error!(partition = index, error = %e, "cannot load offsets partition; retrying");
                    drop(st);
                    tokio::spawn(async move {
                        tokio::time::sleep(LOAD_RETRY).await;
                        broker.groups.unload(&shard);
                    });
                }
            }
        });
    }

    // ---- the timer task ----

    /// Runs timers and follows leadership until `stop`.
    pub async fn run(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_expiry = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            let c = &broker.groups;
            c.sync_leadership(&broker);
            let shards: Vec<Arc<Shard>> = c.shards().values().cloned().collect();
            let now = now_ms();
            let expire = last_expiry.elapsed() >= c.config.offsets_retention_check_interval;
            if expire {
                last_expiry = tokio::time::Instant::now();
            }
            for shard in shards {
                let mut st = shard.lock();
                if !st.loaded || st.gone {
                    continue;
                }
                let ids: Vec<String> = st.groups.keys().cloned().collect();
                for id in ids {
                    if let Some(c) = st.groups.get_mut(&id).and_then(|e| e.consumer.as_mut()) {
                        for member in c.tick(now) {
                            info!(group = %id, member = %member, "removed consumer group member: session or rebalance timeout expired");
                        }
                    }
                    let outs = match st.groups.get_mut(&id) {
                        Some(e) => e.group.tick(now),
                        None => continue,
                    };
                    if !outs.is_empty() {
                        c.run_outputs(&broker, &shard, &mut st, &id, outs);
                    }
                }
                if expire {
                    c.expire_offsets(&broker, &shard, &mut st, now);
                }
                c.maybe_snapshot(&broker, &shard, &mut st);
            }
        }
    }

    // ---- writing ----

    /// Appends `records` as one batch through the partition's leader path. Called with the
    /// shard lock held, so the log order is the order of state changes.
    fn append(
        &self,
        broker: &Broker,
        shard: &Shard,
        st: &mut ShardState,
        records: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<Pending, ResponseError> {
        let part = &shard.partition;
        let now = now_ms();
        let batch = records::build_batch(&records, now);
        let header = BatchHeader::parse(&batch).map_err(|_| ResponseError::UnknownServerError)?;
        // Every coordinator write waits for the ISR (acks=all), and only under the leadership
        // this shard's state was loaded in.
        let appended = part
            .append_as_leader(&batch, &header, Some(shard.epoch), true, now)
            .map_err(|e| match e {
                AppendRefused::NotEnoughReplicas { .. } => ResponseError::CoordinatorNotAvailable,
                AppendRefused::NotLeader | AppendRefused::StorageFailed => {
                    ResponseError::NotCoordinator
                }
                AppendRefused::Append(e) => {
                    warn!(partition = shard.index, error = %e, "cannot append to the offsets log");
                    ResponseError::NotCoordinator
                }
            })?;
        let info = appended.info;
        broker.propose_isr(part, appended.proposal);
        st.bytes_since_snapshot += batch.len() as u64;
        for (k, v) in records {
            st.remember(k, v);
        }
        Ok(Pending {
            partition: Arc::clone(part),
            base: info.base_offset,
            end: info.last_offset + 1,
            epoch: shard.epoch,
            timeout: self.config.commit_timeout,
        })
    }

    /// Delivers the state machine's outputs: answers now, or after a Store is committed.
    fn run_outputs(
        &self,
        broker: &Arc<Broker>,
        shard: &Arc<Shard>,
        st: &mut ShardState,
        group_id: &str,
        outs: Vec<Output>,
    ) {
        let mut queue = std::collections::VecDeque::from(outs);
        while let Some(out) = queue.pop_front() {
            let Output::Store { metadata, then } = out else {
                st.answer(out);
                continue;
            };
            let generation = metadata.generation;
            let record = records::encode_key(&RecordKey::Group {
                group: group_id.to_string(),
            })
            .and_then(|key| Ok((key, Some(records::encode_group_value(&metadata)?))))
            .map_err(unwritable);
            let incarnation = st.groups.get(group_id).map(|e| e.incarnation);
            match record.and_then(|r| self.append(broker, shard, st, vec![r])) {
                Ok(pending) => {
                    let (broker, shard, group_id) =
                        (Arc::clone(broker), Arc::clone(shard), group_id.to_string());
                    tokio::spawn(async move {
                        let result = pending.committed().await;
                        let mut st = shard.lock();
                        // The outcome is this entry's, not a later one's of the same id.
                        let same = |e: &&mut GroupEntry| Some(e.incarnation) == incarnation;
                        let committed = result.is_ok();
                        match result {
                            Ok(()) => then.into_iter().for_each(|o| st.answer(o)),
                            Err(e) => {
                                debug!(group = %group_id, error = ?e, "group metadata write not committed");
                                st.fail(then, e);
                            }
                        }
                        if st.gone {
                            return;
                        }
                        let outs = st
                            .groups
                            .get_mut(&group_id)
                            .filter(same)
                            .map(|g| {
                                if committed {
                                    g.group.stored(generation, now_ms())
                                } else {
                                    g.group.store_failed(generation, now_ms())
                                }
                            })
                            .unwrap_or_default();
                        broker
                            .groups
                            .run_outputs(&broker, &shard, &mut st, &group_id, outs);
                    });
                }
                Err(e) => {
                    st.fail(then, e);
                    if let Some(g) = st.groups.get_mut(group_id) {
                        queue.extend(g.group.store_failed(generation, now_ms()));
                    }
                }
            }
        }
    }

    fn ticket(&self) -> Ticket {
        self.next_ticket.fetch_add(1, Ordering::Relaxed)
    }

    // ---- the group APIs ----

    /// JoinGroup: the answer comes when the rebalance completes.
    pub fn join(
        &self,
        broker: &Arc<Broker>,
        group_id: &str,
        req: JoinRequest,
    ) -> Result<oneshot::Receiver<GroupReply>, ResponseError> {
        let (tx, rx) = oneshot::channel();
        let ticket = self.ticket();
        let limits = self.config.limits;
        self.with_shard(broker, group_id, |shard, st| {
            // Everything the group's metadata record will hold must fit it: an id no member
            // can have is unknown, anything else is refused.
            if too_long(&req.member_id) {
                return Err(ResponseError::UnknownMemberId);
            }
            if req.instance_id.as_deref().is_some_and(too_long)
                || (req.member_id.is_empty() && too_long(&req.fresh_member_id))
                || too_long(&req.client_id)
                || too_long(&req.client_host)
                || too_long(&req.protocol_type)
                || req.protocols.iter().any(|(name, _)| too_long(name))
            {
                return Err(ResponseError::InvalidRequest);
            }
            if st
                .groups
                .get(group_id)
                .is_some_and(GroupEntry::is_consumer_group)
            {
                return Err(ResponseError::InconsistentGroupProtocol);
            }
            let now = now_ms();
            st.waiters.insert(ticket, tx);
            let entry = st
                .groups
                .entry(group_id.to_string())
                .or_insert_with(|| GroupEntry::new(Group::new(group_id, now, limits)));
            let outs = entry.group.join(req, ticket, now);
            self.run_outputs(broker, shard, st, group_id, outs);
            st.drop_if_vacant(group_id);
            Ok(())
        })?;
        Ok(rx)
    }

    /// SyncGroup: followers wait for the leader's assignment.
    pub fn sync(
        &self,
        broker: &Arc<Broker>,
        group_id: &str,
        req: SyncRequest,
    ) -> Result<oneshot::Receiver<GroupReply>, ResponseError> {
        let (tx, rx) = oneshot::channel();
        let ticket = self.ticket();
        self.with_shard(broker, group_id, |shard, st| {
            let Some(entry) = st.groups.get_mut(group_id) else {
                return Err(ResponseError::UnknownMemberId);
            };
            let outs = entry.group.sync(req, ticket, now_ms());
            st.waiters.insert(ticket, tx);
            self.run_outputs(broker, shard, st, group_id, outs);
            Ok(())
        })?;
        Ok(rx)
    }

    pub fn heartbeat(
        &self,
        broker: &Arc<Broker>,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), ResponseError> {
        self.with_shard(broker, group_id, |_, st| {
            match st.groups.get_mut(group_id) {
                Some(e) => e
                    .group
                    .heartbeat(member_id, instance_id, generation, now_ms()),
                None => Err(ResponseError::UnknownMemberId),
            }
        })
    }

    /// LeaveGroup for each (member id, instance id); one result per member.
    pub fn leave(
        &self,
        broker: &Arc<Broker>,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Result<Vec<Result<(), ResponseError>>, ResponseError> {
        self.with_shard(broker, group_id, |shard, st| {
            let Some(entry) = st.groups.get_mut(group_id) else {
                return Ok(vec![Err(ResponseError::UnknownMemberId); members.len()]);
            };
            let now = now_ms();
            let mut outs = Vec::new();
            let results = members
                .iter()
                .map(|(m, i)| entry.group.leave(m, i.as_deref(), now, &mut outs))
                .collect();
            self.run_outputs(broker, shard, st, group_id, outs);
            Ok(results)
        })
    }

    /// OffsetCommit: validated against the group, written, and answered once committed.
    pub async fn commit(
        &self,
        broker: &Arc<Broker>,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        entries: Vec<CommitEntry>,
    ) -> Result<(), ResponseError> {
        let limits = self.config.limits;
        let (pending, shard) = self.with_shard(broker, group_id, |shard, st| {
            let now = now_ms();
            let entry = match st.groups.get_mut(group_id) {
                Some(e) => e,
                // A group that does not exist takes commits only from clients that manage
                // partitions themselves (generation -1), as in Kafka.
                None if generation < 0 => st
                    .groups
                    .entry(group_id.to_string())
                    .or_insert_with(|| GroupEntry::new(Group::new(group_id, now, limits))),
                None => return Err(ResponseError::IllegalGeneration),
            };
            match &entry.consumer {
                Some(c) if !c.is_empty() => c
                    .validate_commit(member_id, generation)
                    .map_err(|r| r.error)?,
                _ => entry
                    .group
                    .validate_commit(member_id, instance_id, generation, now)?,
            }
            if entries.is_empty() {
                return Ok((None, Arc::clone(shard)));
            }
            let recs = entries
                .iter()
                .map(|e| {
                    let key = RecordKey::Offset {
                        group: group_id.to_string(),
                        topic: e.topic.clone(),
                        partition: e.partition,
                    };
                    Ok((
                        records::encode_key(&key)?,
                        Some(records::encode_offset_value(&e.value)?),
                    ))
                })
                .collect::<Result<Vec<_>, FormatError>>()
                .map_err(unwritable);
            let result = recs.and_then(|recs| self.append(broker, shard, st, recs));
            if let Ok(p) = &result {
                st.in_flight
                    .entry(group_id.to_string())
                    .or_default()
                    .insert(p.base);
            }
            st.drop_if_vacant(group_id);
            Ok((Some(result?), Arc::clone(shard)))
        })?;
        let Some(pending) = pending else {
            return Ok(());
        };
        // Wait and apply on a task of its own: a client that disconnects must not leave the
        // offsets in memory behind the log.
        let (tx, rx) = oneshot::channel();
        let group_id = group_id.to_string();
        let limits = self.config.limits;
        tokio::spawn(async move {
            let result = pending.committed().await;
            let mut st = shard.lock();
            st.commit_settled(&group_id, pending.base);
            if result.is_ok() {
                let deleted_since = st
                    .deleted_at
                    .get(&group_id)
                    .is_some_and(|at| *at > pending.base);
                if !st.gone && !deleted_since {
                    let entry = st.groups.entry(group_id.clone()).or_insert_with(|| {
                        GroupEntry::new(Group::new(&group_id, now_ms(), limits))
                    });
                    for (i, e) in entries.into_iter().enumerate() {
                        let log_offset = pending.base + i as i64;
                        let slot = entry.offsets.entry((e.topic, e.partition));
                        match slot {
                            std::collections::btree_map::Entry::Occupied(mut o) => {
                                if o.get().log_offset < log_offset {
                                    o.insert(Committed {
                                        value: e.value,
                                        log_offset,
                                    });
                                }
                            }
                            std::collections::btree_map::Entry::Vacant(v) => {
                                v.insert(Committed {
                                    value: e.value,
                                    log_offset,
                                });
                            }
                        }
                    }
                }
            }
            drop(st);
            let _ = tx.send(result);
        });
        rx.await.unwrap_or(Err(ResponseError::NotCoordinator))
    }

    /// OffsetFetch: `wanted` None means every committed offset of the group. Partitions
    /// without a commit come back as None. `member` is the (member id, epoch) of v9+.
    #[allow(clippy::type_complexity)]
    pub fn fetch_offsets(
        &self,
        broker: &Arc<Broker>,
        group_id: &str,
        wanted: Option<Vec<(String, Vec<i32>)>>,
        member: Option<(&str, i32)>,
    ) -> Result<Vec<(String, Vec<(i32, Option<OffsetValue>)>)>, ResponseError> {
        self.with_shard(broker, group_id, |_, st| {
            // v9+ from a consumer group member: its epoch must be current (STALE_MEMBER_EPOCH).
            if let Some(c) = st.groups.get(group_id).and_then(|e| e.consumer.as_ref())
                && !c.is_empty()
            {
                c.validate_fetch(member.map(|m| m.0), member.map_or(-1, |m| m.1))
                    .map_err(|r| r.error)?;
            }
            let offsets = st.groups.get(group_id).map(|e| &e.offsets);
            let out = match wanted {
                Some(topics) => topics
                    .into_iter()
                    .map(|(t, parts)| {
                        let found = parts
                            .into_iter()
                            .map(|p| {
                                let v = offsets
                                    .and_then(|o| o.get(&(t.clone(), p)))
                                    .map(|c| c.value.clone());
                                (p, v)
                            })
                            .collect();
                        (t, found)
                    })
                    .collect(),
                None => {
                    let mut by_topic: BTreeMap<String, Vec<(i32, Option<OffsetValue>)>> =
                        BTreeMap::new();
                    for ((t, p), c) in offsets.into_iter().flatten() {
                        by_topic
                            .entry(t.clone())
                            .or_default()
                            .push((*p, Some(c.value.clone())));
                    }
                    by_topic.into_iter().collect()
                }
            };
            Ok(out)
        })
    }

    /// ConsumerGroupHeartbeat (KIP-848), against the topics as they are now.
    pub fn consumer_heartbeat(
        &self,
        broker: &Arc<Broker>,
        group_id: &str,
        hb: Heartbeat,
        topics: &dyn consumer::Topics,
    ) -> Result<HeartbeatReply, Refusal> {
        let plain = |error| Refusal {
            error,
            message: String::new(),
        };
        let settings = self.config.consumer;
        let limits = self.config.limits;
        if [&hb.member_id, &hb.client_id, &hb.client_host]
            .into_iter()
            .chain(hb.instance_id.as_ref())
            .chain(hb.rack_id.as_ref())
            .chain(hb.subscribed_topic_regex.as_ref())
            .any(|s| too_long(s))
        {
            return Err(plain(ResponseError::InvalidRequest));
        }
        let result = self.with_shard(broker, group_id, |_, st| {
            let now = now_ms();
            let joining = hb.member_epoch == consumer::JOIN_EPOCH;
            let entry = match st.groups.get_mut(group_id) {
                Some(e) => e,
                None if joining => st
                    .groups
                    .entry(group_id.to_string())
                    .or_insert_with(|| GroupEntry::new(Group::new(group_id, now, limits))),
                // Unknown here (never made, or made under the previous coordinator, which
                // kept its members in memory): the member rejoins.
                None => {
                    return Ok(Err(Refusal {
                        error: ResponseError::UnknownMemberId,
                        message: format!("Member {} is not a member of the group.", hb.member_id),
                    }));
                }
            };
            // Kafka converts a classic group whose members all use the consumer protocol's
            // embedded format; here a group changes protocol only while it is empty.
            if !entry.group.is_empty() {
                return Ok(Err(Refusal {
                    error: ResponseError::GroupIdNotFound,
                    message: format!("Cannot upgrade classic group {group_id} to consumer group because it has members; this broker changes a group's protocol only while it is empty."),
                }));
            }
            let had_offsets = !entry.offsets.is_empty();
            let hold = st.consumer_hold_until;
            let entry = st.groups.get_mut(group_id).expect("found or made above");
            let group = entry.consumer.get_or_insert_with(|| {
                let mut g = ConsumerGroup::new(settings);
                if had_offsets {
                    g.hold_assignments_until(hold);
                }
                g
            });
            let reply = group.heartbeat(hb, topics, now);
            if reply.is_err() {
                // A refused heartbeat leaves no consumer group behind where there was none.
                if entry.consumer.as_ref().is_some_and(|c| c.is_empty() && c.epoch() == 0) {
                    entry.consumer = None;
                }
                st.drop_if_vacant(group_id);
            }
            Ok(reply)
        });
        result.map_err(plain)?
    }

    /// ConsumerGroupDescribe: the group as it is now; Err(GROUP_ID_NOT_FOUND) with Kafka's
    /// message for a group that is not a consumer group.
    pub fn describe_consumer(
        &self,
        broker: &Arc<Broker>,
        group_id: &str,
    ) -> Result<ConsumerGroup, Refusal> {
        let found = self.with_shard(broker, group_id, |_, st| {
            Ok(st.groups.get(group_id).map(|e| {
                (
                    e.consumer.clone().filter(|_| e.group.is_empty()),
                    e.group.is_empty() && e.group.protocol_type().is_none(),
                )
            }))
        });
        match found {
            Err(error) => Err(Refusal {
                error,
                message: String::new(),
            }),
            Ok(Some((Some(c), _))) => Ok(c),
            Ok(None) => Err(Refusal {
                error: ResponseError::GroupIdNotFound,
                message: format!("Group {group_id} not found."),
            }),
            Ok(Some((None, _))) => Err(Refusal {
                error: ResponseError::GroupIdNotFound,
                message: format!("Group {group_id} is not a consumer group."),
            }),
        }
    }

    /// DescribeGroups: None for a group this coordinator does not know; GROUP_ID_NOT_FOUND
    /// for a consumer group protocol group (Kafka: "is not a classic group").
    pub fn describe(
        &self,
        broker: &Arc<Broker>,
        group_id: &str,
    ) -> Result<Option<Description>, ResponseError> {
        self.with_shard(broker, group_id, |_, st| match st.groups.get(group_id) {
            Some(e) if e.is_consumer_group() => Err(ResponseError::GroupIdNotFound),
            e => Ok(e.map(|e| e.group.describe())),
        })
    }

    /// ListGroups: every group coordinated here, and whether some partition is still
    /// loading.
    pub fn list(&self) -> (Vec<Listed>, bool) {
        let shards: Vec<Arc<Shard>> = self.shards().values().cloned().collect();
        let mut loading = false;
        let mut out = Vec::new();
        for s in shards {
            let st = s.lock();
            if st.gone {
                continue;
            }
            if !st.loaded {
                loading = true;
                continue;
            }
            for (id, e) in &st.groups {
                out.push(match &e.consumer {
                    Some(c)
                        if e.group.is_empty()
                            && (!c.is_empty() || e.group.protocol_type().is_none()) =>
                    {
                        Listed {
                            id: id.clone(),
                            protocol_type: "consumer".into(),
                            state: c.state().name(),
                            kind: "consumer",
                        }
                    }
                    _ => Listed {
                        id: id.clone(),
                        protocol_type: e.group.protocol_type().unwrap_or_default().to_string(),
                        state: e.group.state().name(),
                        kind: "classic",
                    },
                });
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        (out, loading)
    }

    /// DeleteGroups for one group: only an empty group; its metadata and offsets get
    /// tombstones.
    pub async fn delete(&self, broker: &Arc<Broker>, group_id: &str) -> Result<(), ResponseError> {
        let pending = self.with_shard(broker, group_id, |shard, st| {
            let Some(entry) = st.groups.get_mut(group_id) else {
                return Err(ResponseError::GroupIdNotFound);
            };
            if entry.is_consumer_group() {
                return Err(ResponseError::NonEmptyGroup);
            }
            let mut check = entry.group.clone();
            check.delete(now_ms())?;
            let mut recs = vec![(
                records::encode_key(&RecordKey::Group {
                    group: group_id.to_string(),
                })
                .map_err(unwritable)?,
                None,
            )];
            // Tombstone every offset key of the group the log holds, including commits still
            // waiting for replication (already in the image, not yet in `entry.offsets`).
            let mut keys: BTreeSet<Vec<u8>> = BTreeSet::new();
            for (t, p) in entry.offsets.keys() {
                keys.insert(
                    records::encode_key(&RecordKey::Offset {
                        group: group_id.to_string(),
                        topic: t.clone(),
                        partition: *p,
                    })
                    .map_err(unwritable)?,
                );
            }
            keys.extend(st.image.keys().filter(|k| {
                matches!(records::decode_key(k), Ok(RecordKey::Offset { group, .. }) if group == group_id)
            }).cloned());
            recs.extend(keys.into_iter().map(|k| (k, None)));
            let pending = self.append(broker, shard, st, recs)?;
            st.groups.remove(group_id);
            st.deleted_at.insert(group_id.to_string(), pending.base);
            Ok(pending)
        })?;
        pending.committed().await
    }

    /// OffsetDelete (KIP-496, `kafka-consumer-groups --delete-offsets`): tombstones for the
    /// group's committed offsets of `partitions`, answered once they are committed; one answer
    /// per partition (None: deleted, or there was nothing to delete). A group with members
    /// keeps the offsets of the topics they subscribe to (GROUP_SUBSCRIBED_TO_TOPIC): they are
    /// in use. While a commit of the group is still being replicated the request is answered
    /// COORDINATOR_LOAD_IN_PROGRESS (retriable): that commit, settling after the tombstone,
    /// would otherwise put the offset back in memory while the log has it deleted.
    pub async fn delete_offsets(
        &self,
        broker: &Arc<Broker>,
        group_id: &str,
        partitions: &[(String, i32)],
    ) -> Result<Vec<Option<ResponseError>>, ResponseError> {
        let (pending, answers) = self.with_shard(broker, group_id, |shard, st| {
            if st.in_flight.contains_key(group_id) {
                return Err(ResponseError::CoordinatorLoadInProgress);
            }
            let Some(entry) = st.groups.get(group_id) else {
                return Err(ResponseError::GroupIdNotFound);
            };
            let group = &entry.group;
            if !group.is_empty() && group.protocol_type() != Some("consumer") {
                return Err(ResponseError::NonEmptyGroup);
            }
            // None: subscriptions that cannot be read count as every topic.
            let consumer = entry.consumer.as_ref().filter(|c| !c.is_empty());
            let subscribed = match consumer {
                Some(_) => None,
                None => (!group.is_empty()).then(|| subscribed_topics(group)),
            };
            let mut answers = Vec::with_capacity(partitions.len());
            let mut recs = Vec::new();
            let mut gone = Vec::new();
            for (topic, partition) in partitions {
                let in_use = consumer.is_some_and(|c| c.in_use(topic))
                    || subscribed
                        .as_ref()
                        .is_some_and(|s| s.as_ref().is_none_or(|s| s.contains(topic)));
                if in_use {
                    answers.push(Some(ResponseError::GroupSubscribedToTopic));
                    continue;
                }
                let key = records::encode_key(&RecordKey::Offset {
                    group: group_id.to_string(),
                    topic: topic.clone(),
                    partition: *partition,
                })
                .map_err(unwritable)?;
                let slot = (topic.clone(), *partition);
                if entry.offsets.contains_key(&slot) || st.image.contains_key(&key) {
                    recs.push((key, None));
                    gone.push(slot);
                }
                answers.push(None);
            }
            if recs.is_empty() {
                return Ok((None, answers));
            }
            let pending = self.append(broker, shard, st, recs)?;
            if let Some(entry) = st.groups.get_mut(group_id) {
                for slot in &gone {
                    entry.offsets.remove(slot);
                }
            }
            Ok((Some(pending), answers))
        })?;
        if let Some(p) = pending {
            p.committed().await?;
        }
        Ok(answers)
    }

    // ---- bounding the log ----

    /// Tombstones the offsets that expired (see [`retention`]), and removes groups left Empty
    /// with no offsets (Kafka turns them Dead). The log is the truth here: what expires is
    /// judged on the newest record of each key, and a group with an OffsetCommit in flight
    /// is left for the next check, so a tombstone never lands after a live commit.
    fn expire_offsets(
        &self,
        broker: &Arc<Broker>,
        shard: &Arc<Shard>,
        st: &mut ShardState,
        now: i64,
    ) {
        // A deletion needs remembering only while a commit appended before it is in flight.
        let ShardState {
            deleted_at,
            in_flight,
            ..
        } = &mut *st;
        deleted_at.retain(|g, at| {
            in_flight
                .get(g)
                .and_then(|bases| bases.first())
                .is_some_and(|oldest| oldest < at)
        });
        let retention_ms =
            i64::try_from(self.config.offsets_retention.as_millis()).unwrap_or(i64::MAX);
        // Every offset key in the log, by group, with its newest value (None: unreadable,
        // which expires as if committed at time 0).
        let mut in_log: HashMap<String, Vec<LoggedOffset>> = HashMap::new();
        for (k, v) in &st.image {
            if let Ok(RecordKey::Offset {
                group,
                topic,
                partition,
            }) = records::decode_key(k)
            {
                let value = records::decode_offset_value(v).unwrap_or(OffsetValue {
                    offset: -1,
                    leader_epoch: -1,
                    metadata: String::new(),
                    commit_timestamp_ms: 0,
                });
                in_log
                    .entry(group)
                    .or_default()
                    .push((k.clone(), (topic, partition), value));
            }
        }
        let mut recs = Vec::new();
        let mut expired: Vec<(String, (String, i32))> = Vec::new();
        let mut dead: Vec<String> = Vec::new();
        for (id, entry) in &st.groups {
            if st.in_flight.contains_key(id) || entry.is_consumer_group() {
                continue;
            }
            let mut kept = 0;
            for (key, tp, value) in in_log.remove(id).unwrap_or_default() {
                if retention::offset_expired(&entry.group, &value, now, retention_ms) {
                    recs.push((key, None));
                    expired.push((id.clone(), tp));
                } else {
                    kept += 1;
                }
            }
            if kept == 0 && entry.group.clone().delete(now).is_ok() {
                let key = RecordKey::Group { group: id.clone() };
                if let Ok(k) = records::encode_key(&key) {
                    recs.push((k, None));
                    dead.push(id.clone());
                }
            }
        }
        if recs.is_empty() {
            return;
        }
        match self.append(broker, shard, st, recs) {
            Ok(_) => {
                for (id, tp) in &expired {
                    if let Some(e) = st.groups.get_mut(id) {
                        e.offsets.remove(tp);
                    }
                }
                for id in &dead {
                    st.groups.remove(id);
                }
                info!(
                    partition = shard.index,
                    offsets = expired.len(),
                    groups = dead.len(),
                    "expired committed offsets and removed empty groups"
                );
            }
            Err(e) => debug!(partition = shard.index, error = ?e, "cannot write offset expiry yet"),
        }
    }

    /// Writes the live state again once the log has outgrown it, then deletes what lies
    /// below the snapshot.
    fn maybe_snapshot(&self, broker: &Arc<Broker>, shard: &Arc<Shard>, st: &mut ShardState) {
        let threshold = self.config.snapshot_min_bytes.max(2 * st.image_bytes);
        if st.snapshotting || st.bytes_since_snapshot <= threshold {
            return;
        }
        // The snapshot starts a segment, so every segment below it can go once it commits.
        let start = {
            let mut log = shard.partition.log();
            if let Err(e) = log.roll() {
                warn!(partition = shard.index, error = %e, "cannot roll the offsets log for a snapshot");
                return;
            }
            log.log_end_offset()
        };
        let entries: Vec<(Vec<u8>, Option<Vec<u8>>)> = st
            .image
            .iter()
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect();
        let mut last = None;
        let mut batch = Vec::new();
        let mut size = 0;
        for (k, v) in entries {
            size += k.len() + v.as_ref().map_or(0, Vec::len) + 16;
            batch.push((k, v));
            if size >= SNAPSHOT_BATCH_BYTES {
                match self.append(broker, shard, st, std::mem::take(&mut batch)) {
                    Ok(p) => last = Some(p),
                    Err(e) => {
                        warn!(partition = shard.index, error = ?e, "snapshot write failed");
                        return;
                    }
                }
                size = 0;
            }
        }
        if !batch.is_empty() {
            match self.append(broker, shard, st, batch) {
                Ok(p) => last = Some(p),
                Err(e) => {
                    warn!(partition = shard.index, error = ?e, "snapshot write failed");
                    return;
                }
            }
        }
        st.bytes_since_snapshot = 0;
        let Some(last) = last else {
            return;
        };
        st.snapshotting = true;
        let shard = Arc::clone(shard);
        tokio::spawn(async move {
            let committed = last.committed().await.is_ok();
            if committed {
                let hw = shard.partition.high_watermark();
                let deleted = shard.partition.log().delete_segments_below(start.min(hw));
                match deleted {
                    Ok(n) => info!(
                        partition = shard.index,
                        start,
                        segments = n,
                        "offsets log snapshot committed; older segments deleted"
                    ),
                    Err(e) => {
                        warn!(partition = shard.index, error = %e, "cannot delete segments below the snapshot")
                    }
                }
            }
            shard.lock().snapshotting = false;
        });
    }
}

/// What loading a partition's log produced.
struct Loaded {
    groups: HashMap<String, GroupEntry>,
    image: BTreeMap<Vec<u8>, Vec<u8>>,
    image_bytes: u64,
    log_bytes: u64,
    records: u64,
}

/// Why a partition could not be loaded.
#[derive(Debug, thiserror::Error)]
enum LoadError {
    #[error(transparent)]
    Read(#[from] crate::storage::log::ReadError),
    /// The replay stopped short of the log end, or a batch could not be walked: the state
    /// would be incomplete, and a snapshot of it (which deletes the segments below) would
    /// lose offsets for good.
    #[error("the replay stopped at offset {at} of {end}: {reason}")]
    Incomplete { at: i64, end: i64, reason: String },
}

/// How long a failed load waits before it is tried again (answering
/// COORDINATOR_LOAD_IN_PROGRESS meanwhile).
const LOAD_RETRY: Duration = Duration::from_secs(1);

/// Reads the partition's whole log (to its end: as leader it is all going to be committed)
/// and replays it into groups and offsets. Single records that do not decode are skipped
/// with a warning (their bytes stay in the image), but a batch that cannot be walked, or a
/// replay that stops short of the log end, fails the load: an incomplete state must never
/// be served or snapshotted.
fn load(partition: &Partition, limits: Limits) -> Result<Loaded, LoadError> {
    let now = now_ms();
    let (start, end) = {
        let log = partition.log();
        (log.log_start_offset(), log.log_end_offset())
    };
    let mut st = ShardState::default();
    let mut metadata: HashMap<String, Option<super::state::GroupMetadata>> = HashMap::new();
    let mut offsets: HashMap<String, BTreeMap<(String, i32), Committed>> = HashMap::new();
    let (mut log_bytes, mut count) = (0u64, 0u64);
    let mut offset = start;
    while offset < end {
        let data = partition.log().read(offset, 1 << 20, end)?;
        let mut progressed = false;
        for (h, range) in Batches::new(&data) {
            let batch = &data[range];
            log_bytes += batch.len() as u64;
            let walked = records::for_each_record(batch, &h, |at, key, value| {
                count += 1;
                let Some(key) = key else { return };
                let rk = match records::decode_key(key) {
                    Ok(k) => k,
                    Err(e) => {
                        debug!(offset = at, error = %e, "skipping an offsets record with an unknown key");
                        return;
                    }
                };
                st.remember(key.to_vec(), value.map(<[u8]>::to_vec));
                match rk {
                    RecordKey::Offset {
                        group,
                        topic,
                        partition,
                    } => {
                        let o = offsets.entry(group).or_default();
                        match value.map(records::decode_offset_value) {
                            Some(Ok(v)) => {
                                o.insert(
                                    (topic, partition),
                                    Committed {
                                        value: v,
                                        log_offset: at,
                                    },
                                );
                            }
                            Some(Err(e)) => {
                                warn!(offset = at, error = %e, "skipping a bad offset commit record")
                            }
                            None => {
                                o.remove(&(topic, partition));
                            }
                        }
                    }
                    RecordKey::Group { group } => match value.map(records::decode_group_value) {
                        Some(Ok(md)) => {
                            metadata.insert(group, Some(md));
                        }
                        Some(Err(e)) => {
                            warn!(offset = at, error = %e, "skipping a bad group metadata record")
                        }
                        None => {
                            metadata.insert(group, None);
                        }
                    },
                }
            });
            if let Err(e) = walked {
                return Err(LoadError::Incomplete {
                    at: h.base_offset,
                    end,
                    reason: format!("malformed batch: {e}"),
                });
            }
            offset = h.next_offset();
            progressed = true;
        }
        if !progressed {
            return Err(LoadError::Incomplete {
                at: offset,
                end,
                reason: "no batch could be read here".into(),
            });
        }
    }
    let mut groups = HashMap::new();
    for (id, md) in metadata {
        if let Some(md) = md {
            groups.insert(
                id.clone(),
                GroupEntry::new(Group::from_metadata(&id, &md, now, limits)),
            );
        }
    }
    for (id, o) in offsets {
        if o.is_empty() {
            continue;
        }
        groups
            .entry(id.clone())
            .or_insert_with(|| GroupEntry::new(Group::new(&id, now, limits)))
            .offsets = o;
    }
    Ok(Loaded {
        groups,
        image: st.image,
        image_bytes: st.image_bytes,
        log_bytes,
        records: count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::{Leadership, PartitionId, Signals};
    use crate::replication::state::{Assignment, Settings};
    use crate::storage::log::{Log, OpenHints};
    use crate::topic_config::TopicConfig;

    fn partition_with(dir: &std::path::Path, batches: &[Vec<u8>]) -> Arc<Partition> {
        let (mut log, _) = Log::open(dir, TopicConfig::default(), OpenHints::default()).unwrap();
        for b in batches {
            let h = BatchHeader::parse(b).unwrap();
            log.append_as_leader(b, &h, 0, 0).unwrap();
        }
        Partition::new(
            PartitionId {
                topic: OFFSETS_TOPIC.into(),
                index: 0,
                topic_id: uuid::Uuid::nil(),
            },
            0,
            log,
            Leadership {
                assignment: Assignment {
                    leader: 0,
                    leader_epoch: 0,
                    partition_epoch: 0,
                    replicas: vec![0],
                    isr: vec![0],
                },
                settings: Settings::default(),
                high_watermark: None,
            },
            Arc::new(Signals::default()),
            0,
        )
    }

    fn commit(group: &str, offset: i64) -> (Vec<u8>, Option<Vec<u8>>) {
        let key = RecordKey::Offset {
            group: group.into(),
            topic: "t".into(),
            partition: 0,
        };
        let value = OffsetValue {
            offset,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms: 0,
        };
        (
            records::encode_key(&key).unwrap(),
            Some(records::encode_offset_value(&value).unwrap()),
        )
    }

    fn committed(l: &Loaded, group: &str) -> Option<i64> {
        l.groups
            .get(group)?
            .offsets
            .get(&("t".to_string(), 0))
            .map(|c| c.value.offset)
    }

    /// A batch that cannot be walked fails the load instead of being skipped: a shard loaded
    /// without it would serve (and later snapshot, deleting the segments below) an
    /// incomplete state.
    #[tokio::test]
    async fn a_load_that_cannot_replay_the_whole_log_fails() {
        let dir = tempfile::tempdir().unwrap();
        let first = records::build_batch(&[commit("g", 5)], 0);
        let last = records::build_batch(&[commit("g", 7)], 0);
        // A batch whose CRC is right but which claims more records than it holds.
        let mut bad = records::build_batch(&[commit("h", 1), commit("h", 2)], 0);
        bad[57..61].copy_from_slice(&3i32.to_be_bytes());
        let crc = crc32c::crc32c(&bad[21..]);
        bad[17..21].copy_from_slice(&crc.to_be_bytes());

        let whole = partition_with(&dir.path().join("good"), &[first.clone(), last.clone()]);
        let loaded = load(&whole, Limits::default()).unwrap();
        assert_eq!(committed(&loaded, "g"), Some(7));

        let broken = partition_with(&dir.path().join("bad"), &[first, bad, last]);
        match load(&broken, Limits::default()) {
            Err(LoadError::Incomplete { at, end, .. }) => assert_eq!((at, end), (1, 4)),
            Err(e) => panic!("unexpected error {e}"),
            Ok(l) => panic!("loaded an incomplete log: g at {:?}", committed(&l, "g")),
        }
    }
}
