//! Controller decisions, as pure functions over [`ControllerState`] with the time passed in.
//! Each successful change bumps the metadata version (brokers long-poll for it) and the epochs
//! of every partition it touches. Rules follow Kafka's KRaft controller:
//!
//! - Leaders are elected from the ISR (no unclean election); the ISR never becomes empty
//!   (its last member stays so it can lead again when it returns).
//! - Eligible leader replicas (KIP-966): a replica that leaves the ISR while it is smaller than
//!   min.insync.replicas still holds every committed record (the high watermark stands still
//!   then), so it may lead when no ISR member can. A broker that restarts after an unclean
//!   shutdown may have lost an acknowledged tail: it leaves every ELR, and a last ISR member
//!   gives its place to the ELR, so it never leads over a replica that kept the records.
//! - A lost or restarted broker is fenced: out of every ISR, its leaderships moved.
//! - AlterPartition from the leader is committed only against the current leader epoch and
//!   partition epoch, so a deposed leader's proposals are refused.
//! - Reassignment (KIP-455): replicas = target + removing; when every added replica is in the
//!   ISR, the leader moves into the target set and the removed replicas are dropped.

use std::collections::BTreeMap;

pub use broker::cluster::controller_client::{
    AlterPartition, ElectionOutcome, ElectionResult, Registration,
};
use broker::metadata::{BrokerMeta, BrokerStatus, NO_LEADER, PartitionMeta, TopicMeta};

use super::placement::{self, Candidate, Load, PlacementError};
use super::state::ControllerState;

/// Most partitions a topic may have: a request for more (a typo, a hostile client) would
/// otherwise have the controller place and publish them all, and every broker open them.
pub const MAX_PARTITIONS: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControllerError {
    #[error("unknown broker {0}")]
    UnknownBroker(i32),
    #[error("broker {broker} epoch {got} is stale (current {current})")]
    StaleBrokerEpoch { broker: i32, current: i64, got: i64 },
    #[error("broker {0} is fenced; it must register again")]
    Fenced(i32),
    #[error("unknown topic '{0}'")]
    UnknownTopic(String),
    #[error("unknown partition {0}-{1}")]
    UnknownPartition(String, i32),
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    /// Kafka's topic name rule (`broker::topic_name`).
    #[error(transparent)]
    InvalidTopicName(#[from] broker::topic_name::InvalidTopicName),
    /// Kafka's `.`/`_` collision rule: Kafka answers INVALID_TOPIC_EXCEPTION.
    #[error(
        "topic '{topic}' collides with existing topic '{existing}': '.' and '_' are the same in Kafka's metric names"
    )]
    TopicCollision { topic: String, existing: String },
    #[error(transparent)]
    Placement(#[from] PlacementError),
    #[error(
        "broker {broker} is not the leader of {topic}-{partition} at leader epoch {leader_epoch}"
    )]
    NotLeader {
        broker: i32,
        topic: String,
        partition: i32,
        leader_epoch: i32,
    },
    #[error("partition epoch {got} of {topic}-{partition} is stale (current {current})")]
    StalePartitionEpoch {
        topic: String,
        partition: i32,
        current: i32,
        got: i32,
    },
    #[error("invalid ISR {isr:?} for {topic}-{partition}: {reason}")]
    InvalidIsr {
        topic: String,
        partition: i32,
        isr: Vec<i32>,
        reason: String,
    },
    #[error("invalid reassignment of {topic}-{partition}: {reason}")]
    InvalidReassignment {
        topic: String,
        partition: i32,
        reason: String,
    },
    #[error("topic '{topic}' has {have} partitions; Kafka cannot shrink it to {asked}")]
    PartitionDecrease {
        topic: String,
        have: usize,
        asked: usize,
    },
    #[error("a reassignment of {0}-{1} is already in progress")]
    ReassignmentInProgress(String, i32),
    #[error("cannot move {topic}-{partition} off broker {broker}: {reason}")]
    CannotMove {
        topic: String,
        partition: i32,
        broker: i32,
        reason: String,
    },
    #[error("topic '{topic}' cannot have {asked} partitions; at most {max} are allowed")]
    TooManyPartitions {
        topic: String,
        asked: usize,
        max: usize,
    },
    /// A manual replica assignment (CreateTopics, CreatePartitions) that cannot be used.
    #[error("invalid replica assignment for '{topic}': {reason}")]
    InvalidAssignment { topic: String, reason: String },
    /// A config change computed from overrides that another change has replaced since.
    #[error("the configs of topic '{0}' changed meanwhile; read them again")]
    ConfigConflict(String),
    /// A change through Kafka's API to a topic a resource declares (Kafka's answer for a
    /// change its policy refuses is POLICY_VIOLATION).
    #[error("topic '{topic}' is managed by {owner}; change it there")]
    ManagedTopic { topic: String, owner: String },
    /// A topic config no broker could apply (`broker::topic_config`'s validation).
    #[error(transparent)]
    InvalidConfig(#[from] broker::topic_config::ConfigError),
    /// A client-quota alteration Kafka's rules refuse (`broker::quota::config`).
    #[error(transparent)]
    InvalidClientQuota(#[from] broker::quota::config::Invalid),
    /// A SCRAM credential alteration Kafka's rules refuse (`broker::auth::users`).
    #[error(transparent)]
    InvalidScramCredential(#[from] broker::auth::users::Refused),
    #[error("no reassignment of {0}-{1} is in progress")]
    NoReassignmentInProgress(String, i32),
    #[error("cannot cancel the reassignment of {topic}-{partition}: {reason}")]
    CannotCancel {
        topic: String,
        partition: i32,
        reason: String,
    },
}

/// Every committed change bumps the version (brokers long-poll for it; the store saves on it).
pub(super) fn bump(state: &mut ControllerState) {
    state.metadata.version += 1;
}

/// Elects a leader for `p` from its ISR, skipping `exclude`, preferring replica order and
/// brokers that are alive and not drained. Bumps epochs if the leader changes.
fn elect(
    p: &mut PartitionMeta,
    brokers: &BTreeMap<i32, BrokerMeta>,
    exclude: Option<i32>,
    allow_drained: bool,
) -> bool {
    let eligible = |id: i32, drained_ok: bool| {
        Some(id) != exclude
            && p.isr.contains(&id)
            && brokers
                .get(&id)
                .is_some_and(|b| b.status == BrokerStatus::Alive && (drained_ok || !b.drained))
    };
    let order = if p.adding.is_empty() && p.removing.is_empty() {
        p.replicas.clone()
    } else {
        p.target_replicas()
    };
    let pick = order
        .iter()
        .copied()
        .find(|id| eligible(*id, false))
        .or_else(|| {
            if allow_drained {
                order.iter().copied().find(|id| eligible(*id, true))
            } else {
                None
            }
        })
        .or_else(|| {
            p.replicas
                .iter()
                .copied()
                .find(|id| eligible(*id, allow_drained))
        });
    let new_leader = pick.unwrap_or(NO_LEADER);
    if new_leader == p.leader {
        return false;
    }
    p.leader = new_leader;
    p.leader_epoch += 1;
    p.partition_epoch += 1;
    true
}

/// [`elect`], and when that leaves `p` without a leader, an eligible leader replica that is
/// alive (in replica order) takes over (KIP-966): it becomes the ISR, and the old ISR members
/// (none of them can lead now; they hold every committed record too) become eligible.
fn elect_or_eligible(
    p: &mut PartitionMeta,
    brokers: &BTreeMap<i32, BrokerMeta>,
    exclude: Option<i32>,
    allow_drained: bool,
) -> bool {
    let changed = elect(p, brokers, exclude, allow_drained);
    if p.has_leader() {
        return changed;
    }
    let alive = |id: i32| {
        brokers
            .get(&id)
            .is_some_and(|b| b.status == BrokerStatus::Alive && (allow_drained || !b.drained))
    };
    let Some(pick) = p
        .target_replicas()
        .into_iter()
        .chain(p.replicas.iter().copied())
        .find(|id| Some(*id) != exclude && p.elr.contains(id) && alive(*id))
    else {
        return changed;
    };
    let old_isr = std::mem::replace(&mut p.isr, vec![pick]);
    p.elr.retain(|r| *r != pick);
    p.elr.extend(old_isr);
    p.leader = pick;
    p.leader_epoch += 1;
    p.partition_epoch += 1;
    true
}

/// The min.insync.replicas leaders apply to a topic: its override, else the default the
/// brokers reported (the smallest, should they differ: assuming a larger one than a leader
/// applies would count replicas as eligible that miss records it committed).
fn min_insync(state: &ControllerState, configs: &BTreeMap<String, String>) -> usize {
    let default = state.broker_min_insync.values().copied().min().unwrap_or(1);
    let min = if configs.contains_key("min.insync.replicas") {
        // Read as the brokers read it (validated when set; a value they refuse is 1 here,
        // which only keeps replicas out of the ELR).
        broker::topic_config::TopicConfig::default()
            .with_overrides(configs)
            .map_or(1, |c| c.min_insync_replicas)
    } else {
        default
    };
    min.max(1) as usize
}

/// Tidies every partition's ELR (after the brokers' default min.insync.replicas changed).
fn tidy_every_elr(state: &mut ControllerState) {
    let mins: BTreeMap<String, usize> = state
        .metadata
        .topics
        .iter()
        .map(|(name, t)| (name.clone(), min_insync(state, &t.configs)))
        .collect();
    for (name, t) in state.metadata.topics.iter_mut() {
        let min = mins.get(name).copied().unwrap_or(1);
        for p in &mut t.partitions {
            if tidy_elr(p, min) {
                p.partition_epoch += 1;
            }
        }
    }
}

/// Keeps the eligible leader replicas consistent: replicas only, none in the ISR, and none at
/// all once the ISR has min.insync.replicas members (the high watermark moves again without
/// them). Returns whether it changed anything.
fn tidy_elr(p: &mut PartitionMeta, min_insync: usize) -> bool {
    let before = p.elr.len();
    if p.isr.len() >= min_insync {
        p.elr.clear();
    } else {
        let (isr, replicas) = (&p.isr, &p.replicas);
        p.elr.retain(|r| replicas.contains(r) && !isr.contains(r));
        let mut seen = Vec::with_capacity(p.elr.len());
        p.elr.retain(|r| {
            let new = !seen.contains(r);
            seen.push(*r);
            new
        });
    }
    p.elr.len() != before
}

/// Removes `broker` from the ISR unless it is the last member. Removed from an ISR that is
/// then smaller than min.insync.replicas, it becomes an eligible leader replica.
fn leave_isr(p: &mut PartitionMeta, broker: i32, min_insync: usize) -> bool {
    if p.isr.contains(&broker) && p.isr.len() > 1 {
        p.isr.retain(|r| *r != broker);
        if p.isr.len() < min_insync {
            p.elr.push(broker);
        }
        tidy_elr(p, min_insync);
        p.partition_epoch += 1;
        true
    } else {
        false
    }
}

/// Fences `broker`: out of every ISR (but never emptying one), its leaderships moved.
fn fence(state: &mut ControllerState, broker: i32) {
    let brokers = state.metadata.brokers.clone();
    let mins: BTreeMap<String, usize> = state
        .metadata
        .topics
        .iter()
        .map(|(name, t)| (name.clone(), min_insync(state, &t.configs)))
        .collect();
    for (name, t) in state.metadata.topics.iter_mut() {
        let min = mins.get(name).copied().unwrap_or(1);
        for p in &mut t.partitions {
            if p.leader == broker {
                elect_or_eligible(p, &brokers, Some(broker), true);
            }
            leave_isr(p, broker, min);
        }
    }
}

/// A broker restarted after an unclean shutdown: its logs may have lost acknowledged records
/// (an unsynced tail, a torn segment), so it is no longer eligible anywhere, and where it is
/// the last ISR member while eligible replicas exist, they take the ISR over (one of them
/// leads once alive). Where no other replica is known to hold the records, it stays: there
/// is nothing better to elect.
fn distrust(state: &mut ControllerState, broker: i32) {
    for t in state.metadata.topics.values_mut() {
        for p in &mut t.partitions {
            let before = (p.isr.clone(), p.elr.len());
            p.elr.retain(|r| *r != broker);
            if p.isr == [broker] && !p.elr.is_empty() {
                p.isr = std::mem::take(&mut p.elr);
            }
            if (p.isr.clone(), p.elr.len()) != before {
                p.partition_epoch += 1;
            }
        }
    }
}

/// The operator learned brokers' racks (the rack label of the node each broker's pod runs
/// on). Registered brokers take them, for placement and in Metadata; returns whether any
/// changed.
pub fn set_racks(state: &mut ControllerState, racks: &BTreeMap<i32, String>) -> bool {
    let mut changed = false;
    for (id, rack) in racks {
        if let Some(b) = state.metadata.brokers.get_mut(id)
            && b.rack.as_deref() != Some(rack.as_str())
        {
            b.rack = Some(rack.clone());
            changed = true;
        }
    }
    if changed {
        bump(state);
    }
    changed
}

/// A broker registers. A new incarnation of a known broker means it restarted: its old
/// incarnation is fenced first (its log may be behind what the ISR promised).
pub fn register(state: &mut ControllerState, reg: Registration, now_ms: i64) -> i64 {
    let known = state.incarnations.get(&reg.id).cloned();
    if known.as_deref() == Some(reg.incarnation.as_str())
        && let Some(b) = state.metadata.brokers.get(&reg.id)
        && b.status == BrokerStatus::Alive
    {
        // A retried registration of the same process.
        state.last_heartbeat_ms.insert(reg.id, now_ms);
        return b.epoch;
    }
    // A broker that names no rack keeps the one the operator found for it (its node's).
    let known_rack = state
        .metadata
        .brokers
        .get(&reg.id)
        .and_then(|b| b.rack.clone());
    if let Some(b) = state.metadata.brokers.get_mut(&reg.id) {
        b.status = BrokerStatus::Fenced;
    }
    // A broker that does not say (an older one) is taken to apply 1, which keeps the ELR
    // empty: assuming more than a leader applies would make replicas eligible that miss
    // records it committed.
    let min = reg.min_insync_replicas.unwrap_or(1).max(1);
    if state.broker_min_insync.insert(reg.id, min) != Some(min) {
        tidy_every_elr(state);
    }
    fence(state, reg.id);
    // Only a new process can have lost its tail: the same one registering again (fenced
    // after a pause, say) kept its logs.
    if reg.unclean_shutdown && known.as_deref() != Some(reg.incarnation.as_str()) {
        distrust(state, reg.id);
    }
    state.next_broker_epoch += 1;
    let epoch = state.next_broker_epoch;
    state.metadata.brokers.insert(
        reg.id,
        BrokerMeta {
            id: reg.id,
            epoch,
            host: reg.host,
            port: reg.port,
            replication_host: reg.replication_host,
            rack: reg.rack.or(known_rack),
            listeners: reg.listeners,
            status: BrokerStatus::Alive,
            drained: false,
        },
    );
    state.incarnations.insert(reg.id, reg.incarnation);
    state.last_heartbeat_ms.insert(reg.id, now_ms);
    // Partitions left without a leader whose last ISR member or an eligible replica is this
    // broker can be led again.
    let brokers = state.metadata.brokers.clone();
    for t in state.metadata.topics.values_mut() {
        for p in &mut t.partitions {
            if !p.has_leader() {
                elect_or_eligible(p, &brokers, None, true);
            }
        }
    }
    bump(state);
    epoch
}

/// A heartbeat keeps the broker's session alive.
pub fn heartbeat(
    state: &mut ControllerState,
    broker: i32,
    epoch: i64,
    now_ms: i64,
) -> Result<(), ControllerError> {
    check_broker(state, broker, epoch)?;
    state.last_heartbeat_ms.insert(broker, now_ms);
    Ok(())
}

/// Fences brokers whose session expired. Returns the ids fenced now.
pub fn expire_sessions(
    state: &mut ControllerState,
    now_ms: i64,
    session_timeout_ms: i64,
) -> Vec<i32> {
    let expired: Vec<i32> = state
        .metadata
        .brokers
        .values()
        .filter(|b| b.status != BrokerStatus::Fenced)
        .filter(|b| {
            now_ms
                - state
                    .last_heartbeat_ms
                    .get(&b.id)
                    .copied()
                    .unwrap_or(i64::MIN / 2)
                > session_timeout_ms
        })
        .map(|b| b.id)
        .collect();
    for id in &expired {
        if let Some(b) = state.metadata.brokers.get_mut(id) {
            b.status = BrokerStatus::Fenced;
        }
        fence(state, *id);
    }
    if !expired.is_empty() {
        bump(state);
    }
    expired
}

/// Fences `broker` if its registered incarnation is still `epoch` and it is not fenced yet:
/// the fast path for a broker whose process went away (see `Controller::watch`). Leaders move
/// within the ISR, as on session expiry. Returns whether it fenced.
pub fn fence_gone(
    state: &mut ControllerState,
    broker: i32,
    epoch: i64,
) -> Result<bool, ControllerError> {
    let Some(b) = state.metadata.brokers.get_mut(&broker) else {
        return Ok(false);
    };
    if b.epoch != epoch || b.status == BrokerStatus::Fenced {
        return Ok(false);
    }
    b.status = BrokerStatus::Fenced;
    fence(state, broker);
    bump(state);
    Ok(true)
}

/// The request comes from the current, unfenced incarnation of `broker`.
fn check_broker(state: &ControllerState, broker: i32, epoch: i64) -> Result<(), ControllerError> {
    let b = state
        .metadata
        .brokers
        .get(&broker)
        .ok_or(ControllerError::UnknownBroker(broker))?;
    if b.epoch != epoch {
        return Err(ControllerError::StaleBrokerEpoch {
            broker,
            current: b.epoch,
            got: epoch,
        });
    }
    if b.status == BrokerStatus::Fenced {
        return Err(ControllerError::Fenced(broker));
    }
    Ok(())
}

/// Commits an ISR change proposed by the partition's leader. Returns the new partition state.
pub fn alter_partition(
    state: &mut ControllerState,
    req: &AlterPartition,
) -> Result<PartitionMeta, ControllerError> {
    check_broker(state, req.broker, req.broker_epoch)?;
    let brokers = state.metadata.brokers.clone();
    let (topic, partition) = (req.topic.clone(), req.partition);
    let min = state
        .metadata
        .topics
        .get(&topic)
        .map_or(1, |t| min_insync(state, &t.configs));
    let p = state
        .metadata
        .partition_mut(&topic, partition)
        .ok_or_else(|| ControllerError::UnknownPartition(topic.clone(), partition))?;
    if p.leader != req.broker || p.leader_epoch != req.leader_epoch {
        return Err(ControllerError::NotLeader {
            broker: req.broker,
            topic,
            partition,
            leader_epoch: req.leader_epoch,
        });
    }
    if p.partition_epoch != req.partition_epoch {
        return Err(ControllerError::StalePartitionEpoch {
            topic,
            partition,
            current: p.partition_epoch,
            got: req.partition_epoch,
        });
    }
    let invalid = |reason: &str| ControllerError::InvalidIsr {
        topic: topic.clone(),
        partition,
        isr: req.isr.clone(),
        reason: reason.into(),
    };
    if !req.isr.contains(&req.broker) {
        return Err(invalid("the leader must stay in the ISR"));
    }
    let mut sorted = req.isr.clone();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != req.isr.len() {
        return Err(invalid("duplicate replicas"));
    }
    if let Some(r) = req.isr.iter().find(|r| !p.replicas.contains(r)) {
        return Err(invalid(&format!("{r} is not a replica")));
    }
    // Only live brokers may join; members already in may stay (the leader shrinks them).
    if let Some(r) = req.isr.iter().find(|r| {
        !p.isr.contains(r)
            && !brokers
                .get(r)
                .is_some_and(|b| b.status == BrokerStatus::Alive)
    }) {
        return Err(invalid(&format!("{r} is not alive")));
    }
    // Followers the leader shrinks out of an ISR then below min.insync.replicas hold every
    // committed record (the high watermark counted them until now and stands still after).
    if req.isr.len() < min {
        let removed: Vec<i32> = p
            .isr
            .iter()
            .copied()
            .filter(|r| !req.isr.contains(r))
            .collect();
        p.elr.extend(removed);
    }
    p.isr = req.isr.clone();
    tidy_elr(p, min);
    p.partition_epoch += 1;
    complete_reassignment_if_ready(p, &brokers);
    tidy_elr(p, min);
    let result = p.clone();
    bump(state);
    Ok(result)
}

/// Finishes a reassignment once every added replica is in the ISR: the leader moves into the
/// target set if needed and the removed replicas are dropped.
fn complete_reassignment_if_ready(
    p: &mut PartitionMeta,
    brokers: &BTreeMap<i32, BrokerMeta>,
) -> bool {
    if p.adding.is_empty() && p.removing.is_empty() {
        return false;
    }
    if !p.adding.iter().all(|r| p.isr.contains(r)) {
        return false;
    }
    let target = p.target_replicas();
    // Not yet when no live target replica can lead.
    settle_on(p, target, brokers).is_ok()
}

/// Why a reassignment cannot end on a replica set (see [`settle_on`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unsettled {
    /// No member of the set is in the ISR.
    NoneInSync,
    /// The leader is outside the set and no in-sync member of it can lead.
    NoneCanLead,
}

/// Ends a reassignment on `replicas` (the target when it completes, the original replicas
/// when it is cancelled): the ISR keeps only its members in `replicas`, a leader outside them
/// is replaced by one elected from that ISR (a new leader epoch), adding and removing clear,
/// and the partition epoch is bumped. Changes nothing when it cannot.
fn settle_on(
    p: &mut PartitionMeta,
    replicas: Vec<i32>,
    brokers: &BTreeMap<i32, BrokerMeta>,
) -> Result<(), Unsettled> {
    let isr: Vec<i32> = p
        .isr
        .iter()
        .copied()
        .filter(|r| replicas.contains(r))
        .collect();
    if isr.is_empty() {
        return Err(Unsettled::NoneInSync);
    }
    if !replicas.contains(&p.leader) {
        let mut moved = p.clone();
        moved.replicas = replicas.clone();
        moved.isr = isr.clone();
        moved.adding.clear();
        moved.removing.clear();
        elect(&mut moved, brokers, None, true);
        if !moved.has_leader() {
            return Err(Unsettled::NoneCanLead);
        }
        p.leader = moved.leader;
        p.leader_epoch = moved.leader_epoch;
    }
    p.elr.retain(|r| replicas.contains(r));
    p.replicas = replicas;
    p.isr = isr;
    p.adding.clear();
    p.removing.clear();
    p.partition_epoch += 1;
    Ok(())
}

/// A new partition on `replicas` (placement returns at least one): the first leads, all are
/// in sync, the leader epoch starts past every deleted topic's (`first_leader_epoch`).
fn new_partition(index: usize, replicas: Vec<i32>, leader_epoch: i32) -> PartitionMeta {
    PartitionMeta {
        partition: index as i32,
        leader: replicas.first().copied().unwrap_or(NO_LEADER),
        isr: replicas.clone(),
        replicas,
        leader_epoch,
        partition_epoch: 0,
        adding: Vec::new(),
        removing: Vec::new(),
        elr: Vec::new(),
    }
}

/// Refuses a topic config override map no broker could apply (unknown keys, bad values).
fn validate_configs(configs: &BTreeMap<String, String>) -> Result<(), ControllerError> {
    broker::topic_config::TopicConfig::default().with_overrides(configs)?;
    Ok(())
}

/// Refuses more than [`MAX_PARTITIONS`] partitions for one topic.
fn check_partition_count(topic: &str, partitions: usize) -> Result<(), ControllerError> {
    if partitions > MAX_PARTITIONS {
        return Err(ControllerError::TooManyPartitions {
            topic: topic.to_string(),
            asked: partitions,
            max: MAX_PARTITIONS,
        });
    }
    Ok(())
}

/// What every new topic must satisfy, however its replicas are chosen.
fn check_new_topic(
    state: &ControllerState,
    name: &str,
    partitions: usize,
    configs: &BTreeMap<String, String>,
) -> Result<(), ControllerError> {
    // Every topic enters the metadata here (the HTTP API, brokers' CreateTopics and
    // auto-creation, the ReplicatedTopic reconciler), so no broker is ever sent a name it
    // cannot hold (a path, a NUL, another topic's directory).
    broker::topic_name::validate(name)?;
    if state.metadata.topics.contains_key(name) {
        return Err(ControllerError::TopicExists(name.to_string()));
    }
    if let Some(existing) =
        broker::topic_name::find_collision(name, state.metadata.topics.keys().map(String::as_str))
    {
        return Err(ControllerError::TopicCollision {
            topic: name.to_string(),
            existing: existing.to_string(),
        });
    }
    check_partition_count(name, partitions)?;
    // Every broker applies these (`TopicConfig::with_overrides` over its own defaults): one it
    // cannot parse must never reach the metadata.
    validate_configs(configs)?;
    Ok(())
}

/// Creates a topic with placed replicas; every replica starts in the ISR. Its configs must be
/// ones every broker can apply, and it may have at most [`MAX_PARTITIONS`] partitions.
pub fn create_topic(
    state: &mut ControllerState,
    name: &str,
    partitions: usize,
    rf: usize,
    configs: BTreeMap<String, String>,
    id: uuid::Uuid,
) -> Result<TopicMeta, ControllerError> {
    check_new_topic(state, name, partitions, &configs)?;
    let candidates = candidates(state);
    let mut load = load(state);
    let sets = placement::assign(&candidates, partitions, rf, &mut load)?;
    Ok(insert_topic(state, name, id, configs, sets))
}

/// Creates a topic whose replicas the caller chose (Kafka's CreateTopics with an assignment):
/// one replica list per partition, all of one length, each broker registered and alive.
pub fn create_topic_assigned(
    state: &mut ControllerState,
    name: &str,
    assignment: Vec<Vec<i32>>,
    configs: BTreeMap<String, String>,
    id: uuid::Uuid,
) -> Result<TopicMeta, ControllerError> {
    // The same checks as a placed topic's, with what the assignment implies.
    check_new_topic(state, name, assignment.len(), &configs)?;
    let rf = assignment.first().map_or(0, Vec::len);
    check_assignment(state, name, &assignment, rf)?;
    Ok(insert_topic(state, name, id, configs, assignment))
}

/// Every list non-empty, of length `rf`, without duplicates, on registered, live brokers.
fn check_assignment(
    state: &ControllerState,
    topic: &str,
    assignment: &[Vec<i32>],
    rf: usize,
) -> Result<(), ControllerError> {
    let invalid = |reason: String| ControllerError::InvalidAssignment {
        topic: topic.to_string(),
        reason,
    };
    if assignment.is_empty() {
        return Err(invalid("no partitions assigned".into()));
    }
    for (i, replicas) in assignment.iter().enumerate() {
        if replicas.is_empty() || replicas.len() != rf {
            return Err(invalid(format!(
                "partition {i} has {} replicas; every partition needs {rf} (at least 1)",
                replicas.len()
            )));
        }
        let mut sorted = replicas.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != replicas.len() {
            return Err(invalid(format!(
                "partition {i} lists a broker twice: {replicas:?}"
            )));
        }
        if let Some(b) = replicas.iter().find(|b| !state.metadata.is_alive(**b)) {
            return Err(invalid(format!(
                "broker {b} (partition {i}) is not registered and alive"
            )));
        }
    }
    Ok(())
}

fn insert_topic(
    state: &mut ControllerState,
    name: &str,
    id: uuid::Uuid,
    configs: BTreeMap<String, String>,
    sets: Vec<Vec<i32>>,
) -> TopicMeta {
    let topic = TopicMeta {
        name: name.to_string(),
        id,
        configs,
        partitions: sets
            .into_iter()
            .enumerate()
            .map(|(i, replicas)| new_partition(i, replicas, state.first_leader_epoch))
            .collect(),
        managed_by: None,
    };
    state
        .metadata
        .topics
        .insert(name.to_string(), topic.clone());
    bump(state);
    topic
}

/// Grows `name` to `partitions` partitions, placing the new ones like a new topic's (existing
/// load counted). Kafka cannot remove partitions, so fewer is refused; the same count is a no-op;
/// more than [`MAX_PARTITIONS`] is refused.
pub fn add_partitions(
    state: &mut ControllerState,
    name: &str,
    partitions: usize,
) -> Result<bool, ControllerError> {
    let (have, rf) = growth(state, name, partitions)?;
    if partitions == have {
        return Ok(false);
    }
    check_partition_count(name, partitions)?;
    let candidates = candidates(state);
    let mut load = load(state);
    let sets = placement::assign(&candidates, partitions - have, rf, &mut load)?;
    append_partitions(state, name, have, sets)
}

/// Grows `name` by the partitions of `assignment` (Kafka's CreatePartitions with an
/// assignment: one replica list per new partition, of the topic's replication factor).
pub fn add_partitions_assigned(
    state: &mut ControllerState,
    name: &str,
    total: usize,
    assignment: Vec<Vec<i32>>,
) -> Result<bool, ControllerError> {
    let (have, rf) = growth(state, name, total)?;
    if have + assignment.len() != total {
        return Err(ControllerError::InvalidAssignment {
            topic: name.to_string(),
            reason: format!(
                "growing from {have} to {total} partitions needs {} replica lists, not {}",
                total - have,
                assignment.len()
            ),
        });
    }
    check_partition_count(name, total)?;
    check_assignment(state, name, &assignment, rf)?;
    append_partitions(state, name, have, assignment)
}

/// A topic about to grow to `total` partitions: how many it has and its replication factor.
/// Fewer than now is refused (Kafka cannot remove partitions).
fn growth(
    state: &ControllerState,
    name: &str,
    total: usize,
) -> Result<(usize, usize), ControllerError> {
    let existing = state
        .metadata
        .topics
        .get(name)
        .ok_or_else(|| ControllerError::UnknownTopic(name.to_string()))?;
    let have = existing.partitions.len();
    if total < have {
        return Err(ControllerError::PartitionDecrease {
            topic: name.to_string(),
            have,
            asked: total,
        });
    }
    let rf = existing
        .partitions
        .first()
        .map_or(1, |p| p.target_replicas().len().max(1));
    Ok((have, rf))
}

/// Adds partitions `have..` on `sets`, one replica list each.
fn append_partitions(
    state: &mut ControllerState,
    name: &str,
    have: usize,
    sets: Vec<Vec<i32>>,
) -> Result<bool, ControllerError> {
    let first_epoch = state.first_leader_epoch;
    let topic = state
        .metadata
        .topics
        .get_mut(name)
        .ok_or_else(|| ControllerError::UnknownTopic(name.to_string()))?;
    for (i, replicas) in sets.into_iter().enumerate() {
        topic
            .partitions
            .push(new_partition(have + i, replicas, first_epoch));
    }
    bump(state);
    Ok(true)
}

/// Replaces a topic's config overrides (its complete override map). Overrides no broker could
/// apply are refused and nothing changes. Returns whether anything changed.
pub fn set_topic_configs(
    state: &mut ControllerState,
    name: &str,
    configs: BTreeMap<String, String>,
) -> Result<bool, ControllerError> {
    let topic = state
        .metadata
        .topics
        .get_mut(name)
        .ok_or_else(|| ControllerError::UnknownTopic(name.to_string()))?;
    validate_configs(&configs)?;
    if topic.configs == configs {
        return Ok(false);
    }
    topic.configs = configs;
    let min = min_insync(state, &state.metadata.topics[name].configs);
    if let Some(t) = state.metadata.topics.get_mut(name) {
        for p in &mut t.partitions {
            if tidy_elr(p, min) {
                p.partition_epoch += 1;
            }
        }
    }
    bump(state);
    Ok(true)
}

/// Applies client-quota alterations (Kafka's AlterClientQuotas), all or none: a refused one
/// leaves every quota as it was. Returns whether anything changed.
pub fn alter_client_quotas(
    state: &mut ControllerState,
    alterations: &[broker::quota::config::Alteration],
) -> Result<bool, ControllerError> {
    let mut quotas = state.metadata.client_quotas.clone();
    let mut changed = false;
    for a in alterations {
        changed |= broker::quota::config::apply(&mut quotas, a)?;
    }
    if changed {
        state.metadata.client_quotas = quotas;
        bump(state);
    }
    Ok(changed)
}

/// Applies client users' SCRAM credential alterations (Kafka's AlterUserScramCredentials,
/// checked by the broker that took the request), all or none.
pub fn alter_scram_credentials(
    state: &mut ControllerState,
    alterations: &[broker::auth::users::Alteration],
) -> Result<bool, ControllerError> {
    let mut creds = state.metadata.scram_credentials.clone();
    let mut changed = false;
    for a in alterations {
        changed |= broker::auth::users::apply(&mut creds, a)?;
    }
    if changed {
        state.metadata.scram_credentials = creds;
        bump(state);
    }
    Ok(changed)
}

/// Adds and removes ACLs (Kafka's CreateAcls and DeleteAcls, checked by the broker that took
/// the request); removing one that is already gone is not an error.
pub fn alter_acls(
    state: &mut ControllerState,
    add: &[broker::auth::acl::Acl],
    remove: &[broker::auth::acl::Acl],
) -> Result<bool, ControllerError> {
    let changed = broker::auth::acl::alter(&mut state.metadata.acls, add, remove);
    if changed {
        bump(state);
    }
    Ok(changed)
}

/// Compare-and-set for config changes computed from a copy (IncrementalAlterConfigs merges
/// into the overrides a broker saw): refused when the overrides are no longer `expected`.
pub fn check_topic_configs(
    state: &ControllerState,
    name: &str,
    expected: &BTreeMap<String, String>,
) -> Result<(), ControllerError> {
    let topic = state
        .metadata
        .topics
        .get(name)
        .ok_or_else(|| ControllerError::UnknownTopic(name.to_string()))?;
    if &topic.configs != expected {
        return Err(ControllerError::ConfigConflict(name.to_string()));
    }
    Ok(())
}

/// Records which resource declares `name` (None: nobody, changed freely through Kafka's API).
/// Returns whether anything changed.
pub fn set_topic_owner(
    state: &mut ControllerState,
    name: &str,
    owner: Option<String>,
) -> Result<bool, ControllerError> {
    let topic = state
        .metadata
        .topics
        .get_mut(name)
        .ok_or_else(|| ControllerError::UnknownTopic(name.to_string()))?;
    if topic.managed_by == owner {
        return Ok(false);
    }
    topic.managed_by = owner;
    bump(state);
    Ok(true)
}

/// For changes that come through Kafka's API (CreatePartitions, AlterConfigs, DeleteTopics):
/// a topic a resource declares is changed there. Otherwise its reconciler would undo the
/// change a minute later, or recreate a deleted topic empty.
pub fn check_unmanaged(state: &ControllerState, name: &str) -> Result<(), ControllerError> {
    match state
        .metadata
        .topics
        .get(name)
        .and_then(|t| t.managed_by.clone())
    {
        Some(owner) => Err(ControllerError::ManagedTopic {
            topic: name.to_string(),
            owner,
        }),
        None => Ok(()),
    }
}

/// Deletes a topic. Partitions created later (a topic of the same name included) start past
/// its leader epochs, so no replica fetch naming an epoch of this topic counts for them.
pub fn delete_topic(state: &mut ControllerState, name: &str) -> Result<(), ControllerError> {
    let deleted = state
        .metadata
        .topics
        .remove(name)
        .ok_or_else(|| ControllerError::UnknownTopic(name.to_string()))?;
    let past = deleted
        .partitions
        .iter()
        .map(|p| p.leader_epoch.saturating_add(1))
        .max()
        .unwrap_or(0);
    state.first_leader_epoch = state.first_leader_epoch.max(past);
    bump(state);
    Ok(())
}

/// Live, undrained brokers that can take new replicas.
fn candidates(state: &ControllerState) -> Vec<Candidate> {
    state
        .metadata
        .brokers
        .values()
        .filter(|b| b.status == BrokerStatus::Alive)
        .map(|b| Candidate {
            id: b.id,
            rack: b.rack.clone(),
        })
        .collect()
}

fn load(state: &ControllerState) -> Load {
    let mut load = Load::default();
    for (_, p) in state.metadata.partitions() {
        load.add(&p.replicas);
    }
    load
}

/// Controlled shutdown: no new leadership for the broker, its leaderships moved to other ISR
/// members, and it leaves the ISRs (never emptying one). Returns the partitions it still leads
/// (no other ISR member could take over).
pub fn controlled_shutdown(
    state: &mut ControllerState,
    broker: i32,
    epoch: i64,
) -> Result<Vec<(String, i32)>, ControllerError> {
    check_broker(state, broker, epoch)?;
    if let Some(b) = state.metadata.brokers.get_mut(&broker) {
        b.status = BrokerStatus::ShuttingDown;
    }
    fence(state, broker);
    bump(state);
    Ok(led_by(state, broker))
}

fn led_by(state: &ControllerState, broker: i32) -> Vec<(String, i32)> {
    state
        .metadata
        .partitions()
        .filter(|(_, p)| p.leader == broker)
        .map(|(t, p)| (t.to_string(), p.partition))
        .collect()
}

/// Drain: move every leadership off the broker (it stays in the ISRs) and keep it off until a
/// preferred-leader election. Returns partitions it still leads (no other ISR member).
pub fn drain(
    state: &mut ControllerState,
    broker: i32,
) -> Result<Vec<(String, i32)>, ControllerError> {
    let b = state
        .metadata
        .brokers
        .get_mut(&broker)
        .ok_or(ControllerError::UnknownBroker(broker))?;
    b.drained = true;
    let brokers = state.metadata.brokers.clone();
    for t in state.metadata.topics.values_mut() {
        for p in &mut t.partitions {
            if p.leader == broker {
                // With no other replica to take over it keeps leading (a drain must not take
                // a partition offline).
                let mut moved = p.clone();
                elect(&mut moved, &brokers, Some(broker), false);
                if moved.has_leader() {
                    *p = moved;
                }
            }
        }
    }
    bump(state);
    Ok(led_by(state, broker))
}

/// Preferred-leader election: undrains every broker and moves leadership to the first replica
/// wherever it is alive and in the ISR. Returns how many partitions changed leader.
pub fn preferred_leader_election(state: &mut ControllerState) -> usize {
    for b in state.metadata.brokers.values_mut() {
        b.drained = false;
    }
    let brokers = state.metadata.brokers.clone();
    let mut moved = 0;
    for t in state.metadata.topics.values_mut() {
        for p in &mut t.partitions {
            let preferred = p.target_replicas().first().copied().unwrap_or(NO_LEADER);
            let ok = p.isr.contains(&preferred)
                && brokers
                    .get(&preferred)
                    .is_some_and(|b| b.status == BrokerStatus::Alive);
            if ok && p.leader != preferred {
                p.leader = preferred;
                p.leader_epoch += 1;
                p.partition_epoch += 1;
                moved += 1;
            }
        }
    }
    bump(state);
    moved
}

/// Unclean election for `partitions` (every partition when None), Kafka's ElectLeaders with
/// the UNCLEAN type: an admin's explicit choice, as in Kafka (KIP-460), for a partition that
/// no replica known to hold every committed record can lead (its ISR and ELR members are gone
/// for good, say, or a damaged last ISR member was set aside). A partition with a leader is
/// left alone; one an ISR or ELR member can lead gets it (a clean election); otherwise the
/// first live replica leads, alone in the ISR, and whatever it lacks is lost. Bumps the
/// version only if a leader changed.
pub fn elect_unclean(
    state: &mut ControllerState,
    partitions: Option<&[(String, i32)]>,
) -> Vec<ElectionResult> {
    let named: Vec<(String, i32)> = match partitions {
        Some(named) => named.to_vec(),
        None => state
            .metadata
            .partitions()
            .map(|(t, p)| (t.to_string(), p.partition))
            .collect(),
    };
    let brokers = state.metadata.brokers.clone();
    let alive = |id: &i32| {
        brokers
            .get(id)
            .is_some_and(|b| b.status == BrokerStatus::Alive)
    };
    let mut changed = false;
    let mut results = Vec::with_capacity(named.len());
    for (topic, partition) in named {
        let result = |outcome, message: Option<String>| ElectionResult {
            topic: topic.clone(),
            partition,
            outcome,
            message,
        };
        let Some(p) = state.metadata.partition_mut(&topic, partition) else {
            results.push(result(ElectionOutcome::UnknownTopicOrPartition, None));
            continue;
        };
        if p.has_leader() && alive(&p.leader) {
            results.push(result(ElectionOutcome::ElectionNotNeeded, None));
            continue;
        }
        changed |= elect_or_eligible(p, &brokers, None, true);
        if p.has_leader() {
            results.push(result(ElectionOutcome::Elected, None));
            continue;
        }
        // Replicas a reassignment is adding come last: they may hold nothing yet.
        let order: Vec<i32> = p
            .replicas
            .iter()
            .copied()
            .filter(|r| !p.adding.contains(r))
            .chain(p.adding.iter().copied())
            .collect();
        let Some(pick) = order.into_iter().find(|r| alive(r)) else {
            results.push(result(
                ElectionOutcome::PreferredLeaderNotAvailable,
                Some("no replica of the partition is alive".into()),
            ));
            continue;
        };
        p.leader = pick;
        p.isr = vec![pick];
        p.elr.clear();
        p.leader_epoch += 1;
        p.partition_epoch += 1;
        changed = true;
        results.push(result(
            ElectionOutcome::Elected,
            Some(format!(
                "{UNCLEAN_ELECTED}: broker {pick} leads; records it lacks are lost"
            )),
        ));
    }
    if changed {
        bump(state);
    }
    results
}

/// How an [`elect_unclean`] result that elected outside the ISR and ELR begins its message.
pub const UNCLEAN_ELECTED: &str = "elected outside the ISR and ELR";

/// Preferred-leader election for `partitions` (every partition when None, in name order; the
/// caller filters): Kafka's ElectLeaders with the PREFERRED type. Where the preferred replica
/// (the first of the target replicas) does not lead, it takes over if it is alive, in the ISR
/// and not drained. Unlike [`preferred_leader_election`], drained brokers stay drained (an
/// admin's drain is undone only by the admin route). Bumps the version only if a leader moved.
pub fn elect_preferred(
    state: &mut ControllerState,
    partitions: Option<&[(String, i32)]>,
) -> Vec<ElectionResult> {
    let named: Vec<(String, i32)> = match partitions {
        Some(named) => named.to_vec(),
        None => state
            .metadata
            .partitions()
            .map(|(t, p)| (t.to_string(), p.partition))
            .collect(),
    };
    let brokers = &state.metadata.brokers;
    let mut changed = false;
    let mut results = Vec::with_capacity(named.len());
    for (topic, partition) in named {
        let (outcome, message) = match state
            .metadata
            .topics
            .get_mut(&topic)
            .and_then(|t| t.partitions.get_mut(usize::try_from(partition).ok()?))
        {
            None => (
                ElectionOutcome::UnknownTopicOrPartition,
                Some(format!("unknown partition {topic}-{partition}")),
            ),
            Some(p) => match p.target_replicas().first().copied() {
                None => (
                    ElectionOutcome::PreferredLeaderNotAvailable,
                    Some("the partition has no replicas".to_string()),
                ),
                Some(preferred) if preferred == p.leader => (
                    ElectionOutcome::ElectionNotNeeded,
                    Some(format!("preferred replica {preferred} already leads")),
                ),
                Some(preferred) => {
                    let why = match brokers.get(&preferred) {
                        None => Some(format!("preferred replica {preferred} is not registered")),
                        Some(b) if b.status != BrokerStatus::Alive => Some(format!(
                            "preferred replica {preferred} is not alive ({:?})",
                            b.status
                        )),
                        Some(_) if !p.isr.contains(&preferred) => Some(format!(
                            "preferred replica {preferred} is not in the ISR {:?}",
                            p.isr
                        )),
                        Some(b) if b.drained => Some(format!(
                            "preferred replica {preferred} is on drained broker {}",
                            b.id
                        )),
                        Some(_) => None,
                    };
                    match why {
                        Some(why) => (ElectionOutcome::PreferredLeaderNotAvailable, Some(why)),
                        None => {
                            p.leader = preferred;
                            p.leader_epoch += 1;
                            p.partition_epoch += 1;
                            changed = true;
                            (ElectionOutcome::Elected, None)
                        }
                    }
                }
            },
        };
        results.push(ElectionResult {
            topic,
            partition,
            outcome,
            message,
        });
    }
    if changed {
        bump(state);
    }
    results
}

/// Starts moving a partition to `target` replicas (KIP-455).
pub fn reassign(
    state: &mut ControllerState,
    topic: &str,
    partition: i32,
    target: Vec<i32>,
) -> Result<PartitionMeta, ControllerError> {
    let brokers = state.metadata.brokers.clone();
    let p = state
        .metadata
        .partition_mut(topic, partition)
        .ok_or_else(|| ControllerError::UnknownPartition(topic.to_string(), partition))?;
    let invalid = |reason: String| ControllerError::InvalidReassignment {
        topic: topic.to_string(),
        partition,
        reason,
    };
    if !p.adding.is_empty() || !p.removing.is_empty() {
        return Err(ControllerError::ReassignmentInProgress(
            topic.to_string(),
            partition,
        ));
    }
    if target.is_empty() {
        return Err(invalid("the target replica set is empty".into()));
    }
    let mut sorted = target.clone();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != target.len() {
        return Err(invalid("duplicate brokers in the target".into()));
    }
    if let Some(b) = target.iter().find(|b| {
        !brokers
            .get(b)
            .is_some_and(|m| m.status == BrokerStatus::Alive)
    }) {
        return Err(invalid(format!("broker {b} is not registered and alive")));
    }
    if target == p.replicas {
        return Ok(p.clone());
    }
    let adding: Vec<i32> = target
        .iter()
        .copied()
        .filter(|r| !p.replicas.contains(r))
        .collect();
    let removing: Vec<i32> = p
        .replicas
        .iter()
        .copied()
        .filter(|r| !target.contains(r))
        .collect();
    let mut replicas = target.clone();
    replicas.extend(&removing);
    p.replicas = replicas;
    p.adding = adding;
    p.removing = removing;
    p.partition_epoch += 1;
    // Pure reorderings or shrinks complete at once.
    complete_reassignment_if_ready(p, &brokers);
    let result = p.clone();
    bump(state);
    Ok(result)
}

/// Cancels a reassignment in progress (KIP-455): the partition goes back to its original
/// replicas (the current ones minus those being added, in their current order). The ISR keeps
/// only original replicas; a leader that is being added hands over to one elected from them
/// (a new leader epoch). Refused, changing nothing, when no original replica is in sync or
/// none that is can lead: cancelling would leave the partition without an in-sync leader.
pub fn cancel_reassignment(
    state: &mut ControllerState,
    topic: &str,
    partition: i32,
) -> Result<PartitionMeta, ControllerError> {
    let brokers = &state.metadata.brokers;
    let p = state
        .metadata
        .topics
        .get_mut(topic)
        .and_then(|t| t.partitions.get_mut(usize::try_from(partition).ok()?))
        .ok_or_else(|| ControllerError::UnknownPartition(topic.to_string(), partition))?;
    if p.adding.is_empty() && p.removing.is_empty() {
        return Err(ControllerError::NoReassignmentInProgress(
            topic.to_string(),
            partition,
        ));
    }
    let original: Vec<i32> = p
        .replicas
        .iter()
        .copied()
        .filter(|r| !p.adding.contains(r))
        .collect();
    let refuse = |reason: &str| ControllerError::CannotCancel {
        topic: topic.to_string(),
        partition,
        reason: reason.to_string(),
    };
    match settle_on(p, original, brokers) {
        Ok(()) => {}
        Err(Unsettled::NoneInSync) => {
            return Err(refuse(
                "no replica of the original set is in sync; cancelling would leave the \
                 partition without an in-sync replica",
            ));
        }
        Err(Unsettled::NoneCanLead) => {
            return Err(refuse(
                "no in-sync replica of the original set is alive to lead; cancelling would \
                 leave the partition without a leader",
            ));
        }
    }
    let result = p.clone();
    bump(state);
    Ok(result)
}

/// Moves every replica off `broker`: each partition holding it is reassigned to its other
/// replicas plus a replacement chosen by placement. Returns the reassignments started.
pub fn decommission(
    state: &mut ControllerState,
    broker: i32,
) -> Result<Vec<(String, i32, Vec<i32>)>, ControllerError> {
    decommission_all(state, &[broker])
}

/// Moves every replica off all of `leaving` at once (a scale-down), never onto one of them.
/// Partitions already being reassigned are left alone; call again once they finish.
pub fn decommission_all(
    state: &mut ControllerState,
    leaving: &[i32],
) -> Result<Vec<(String, i32, Vec<i32>)>, ControllerError> {
    if let Some(b) = leaving
        .iter()
        .find(|b| !state.metadata.brokers.contains_key(b))
    {
        return Err(ControllerError::UnknownBroker(*b));
    }
    let cands: Vec<Candidate> = candidates(state)
        .into_iter()
        .filter(|c| !leaving.contains(&c.id))
        .collect();
    let mut load = load(state);
    // Preferred leaders that stay: each partition whose first replica is not leaving.
    let mut leaders: BTreeMap<i32, usize> = BTreeMap::new();
    for (_, p) in state.metadata.partitions() {
        if let Some(l) = p.target_replicas().first().filter(|l| !leaving.contains(l)) {
            *leaders.entry(*l).or_default() += 1;
        }
    }
    let holding: Vec<(String, i32, Vec<i32>)> = state
        .metadata
        .partitions()
        .filter(|(_, p)| p.replicas.iter().any(|r| leaving.contains(r)))
        .filter(|(_, p)| p.adding.is_empty() && p.removing.is_empty())
        .map(|(t, p)| (t.to_string(), p.partition, p.target_replicas()))
        .collect();
    let mut started = Vec::new();
    for (topic, partition, replicas) in holding {
        let mut target: Vec<i32> = Vec::with_capacity(replicas.len());
        for (slot, r) in replicas.iter().enumerate() {
            if !leaving.contains(r) {
                target.push(*r);
                continue;
            }
            // The replacement takes the leaving broker's slot, so preferred leaders stay spread.
            let kept: Vec<i32> = target
                .iter()
                .chain(replicas[slot + 1..].iter().filter(|x| !leaving.contains(x)))
                .copied()
                .collect();
            let Some(new) = placement::replacement(&cands, &kept, &load) else {
                return Err(ControllerError::CannotMove {
                    topic,
                    partition,
                    broker: *r,
                    reason: "no other live broker can take the replica".into(),
                });
            };
            load.add_replica(new);
            target.push(new);
        }
        // The leaving broker was the preferred leader: the member of the new set that is
        // preferred leader of the fewest partitions takes its slot (the replacement on a tie).
        // Filling slot 0 with whichever broker the set lacked crowded leaders onto a few
        // brokers when a scale-down left no choice of replicas (5 to 3 brokers at RF 3 led
        // 4, 0 and 2 of 6 partitions), and a preferred election then kept them there.
        if replicas.first().is_some_and(|l| leaving.contains(l)) {
            let count = |id: &i32| leaders.get(id).copied().unwrap_or(0);
            if let Some(i) = (0..target.len()).min_by_key(|&i| (count(&target[i]), i)) {
                let leader = target.remove(i);
                target.insert(0, leader);
            }
            *leaders.entry(target[0]).or_default() += 1;
        }
        reassign(state, &topic, partition, target.clone())?;
        started.push((topic, partition, target));
    }
    Ok(started)
}

/// Hands out a block of `count` producer ids.
pub fn allocate_producer_ids(state: &mut ControllerState, count: i64) -> (i64, i64) {
    let start = state.next_producer_id;
    state.next_producer_id += count.max(1);
    bump(state);
    (start, state.next_producer_id)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn reg(id: i32, inc: &str) -> Registration {
        Registration {
            id,
            incarnation: inc.into(),
            host: "127.0.0.1".into(),
            port: 9000 + id as u16,
            replication_host: None,
            rack: None,
            listeners: Vec::new(),
            unclean_shutdown: false,
            min_insync_replicas: None,
        }
    }

    /// Three live brokers and one topic with 3 partitions, RF 3.
    fn cluster() -> ControllerState {
        let mut s = ControllerState::new("c".into());
        for id in 0..3 {
            register(&mut s, reg(id, "a"), 0);
        }
        create_topic(&mut s, "t", 3, 3, BTreeMap::new(), uuid::Uuid::nil()).unwrap();
        s
    }

    fn p(s: &ControllerState, i: i32) -> PartitionMeta {
        s.metadata.partition("t", i).unwrap().clone()
    }

    /// Kafka's CreateTopics and CreatePartitions with the client's own replica lists: used as
    /// given when every list has the topic's length, no duplicates and live brokers; refused
    /// otherwise, with nothing changed.
    #[test]
    fn client_assignments_are_used_as_given_or_refused() {
        let mut s = cluster();
        let id = uuid::Uuid::new_v4();
        let t = create_topic_assigned(
            &mut s,
            "a",
            vec![vec![2, 0], vec![1, 2]],
            BTreeMap::new(),
            id,
        )
        .unwrap();
        let got: Vec<(Vec<i32>, i32)> = t
            .partitions
            .iter()
            .map(|p| (p.replicas.clone(), p.leader))
            .collect();
        assert_eq!(got, vec![(vec![2, 0], 2), (vec![1, 2], 1)]);
        let v = s.metadata.version;
        for bad in [
            vec![vec![0, 1], vec![2]], // lengths differ
            vec![vec![0, 0]],          // a broker twice
            vec![vec![0, 9]],          // not registered
            vec![],                    // nothing
        ] {
            let e = create_topic_assigned(&mut s, "b", bad.clone(), BTreeMap::new(), id);
            assert!(
                matches!(e, Err(ControllerError::InvalidAssignment { .. })),
                "{bad:?}: {e:?}"
            );
        }
        assert!(matches!(
            create_topic_assigned(&mut s, "a", vec![vec![0, 1]], BTreeMap::new(), id),
            Err(ControllerError::TopicExists(_))
        ));
        assert_eq!(s.metadata.version, v, "refusals change nothing");

        assert_eq!(
            add_partitions_assigned(&mut s, "a", 3, vec![vec![0, 1]]),
            Ok(true)
        );
        assert_eq!(s.metadata.partition("a", 2).unwrap().replicas, vec![0, 1]);
        let v = s.metadata.version;
        for (total, bad) in [
            (4, vec![vec![0]]),    // the topic has 2 replicas per partition
            (5, vec![vec![0, 1]]), // 2 new partitions, 1 list
            (4, vec![vec![0, 7]]), // not registered
        ] {
            let e = add_partitions_assigned(&mut s, "a", total, bad.clone());
            assert!(
                matches!(e, Err(ControllerError::InvalidAssignment { .. })),
                "{bad:?}: {e:?}"
            );
        }
        assert!(matches!(
            add_partitions_assigned(&mut s, "a", 2, vec![]),
            Err(ControllerError::PartitionDecrease { .. })
        ));
        assert_eq!(s.metadata.version, v, "refusals change nothing");
    }

    /// Issue part 2: every name the controller takes is a legal Kafka name, and a name that
    /// collides with an existing topic (`.` vs `_`) is refused; nothing is committed.
    #[test]
    fn topic_names_follow_kafkas_rule() {
        let mut s = cluster();
        let version = s.metadata.version;
        let long = "x".repeat(250);
        for bad in broker::topic_name::REFUSED_EXAMPLES
            .into_iter()
            .chain([long.as_str()])
        {
            match create_topic(&mut s, bad, 1, 1, BTreeMap::new(), uuid::Uuid::new_v4()) {
                Err(ControllerError::InvalidTopicName(e)) => {
                    assert_eq!(e.name, bad);
                    assert!(e.to_string().contains("invalid topic name"), "{e}");
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        create_topic(&mut s, "a.b", 1, 1, BTreeMap::new(), uuid::Uuid::new_v4()).unwrap();
        let version_ab = s.metadata.version;
        assert_eq!(
            create_topic(&mut s, "a_b", 1, 1, BTreeMap::new(), uuid::Uuid::new_v4()),
            Err(ControllerError::TopicCollision {
                topic: "a_b".into(),
                existing: "a.b".into()
            })
        );
        assert!(matches!(
            create_topic(&mut s, "a.b", 1, 1, BTreeMap::new(), uuid::Uuid::new_v4()),
            Err(ControllerError::TopicExists(_))
        ));
        assert_eq!(s.metadata.version, version_ab);
        assert_eq!(version_ab, version + 1);
        let names: Vec<&str> = s.metadata.topics.keys().map(String::as_str).collect();
        assert_eq!(names, ["a.b", "t"]);
    }

    #[test]
    fn racks_from_the_operator_spread_replicas_and_survive_a_restart() {
        let mut s = ControllerState::new("c".into());
        for id in 0..4 {
            register(&mut s, reg(id, "a"), 0);
        }
        let racks: BTreeMap<i32, String> = [(0, "a"), (1, "a"), (2, "b"), (3, "b"), (9, "c")]
            .into_iter()
            .map(|(id, r)| (id, r.to_string()))
            .collect();
        assert!(set_racks(&mut s, &racks));
        let v = s.metadata.version;
        assert!(!set_racks(&mut s, &racks), "unchanged racks are no commit");
        assert_eq!(s.metadata.version, v);
        assert!(
            !s.metadata.brokers.contains_key(&9),
            "unknown brokers are not made up"
        );
        create_topic(&mut s, "t", 8, 2, BTreeMap::new(), uuid::Uuid::nil()).unwrap();
        for p in &s.metadata.topics["t"].partitions {
            let on: BTreeSet<&str> = p.replicas.iter().map(|r| racks[r].as_str()).collect();
            assert_eq!(on.len(), 2, "partition {} on {:?}", p.partition, p.replicas);
        }
        // A restart that names no rack keeps the node's; one that names its own wins.
        register(&mut s, reg(2, "b"), 1);
        assert_eq!(s.metadata.brokers[&2].rack.as_deref(), Some("b"));
        register(
            &mut s,
            Registration {
                rack: Some("z".into()),
                ..reg(3, "b")
            },
            1,
        );
        assert_eq!(s.metadata.brokers[&3].rack.as_deref(), Some("z"));
    }

    #[test]
    fn added_partitions_are_placed_and_never_removed() {
        let mut s = cluster();
        let v = s.metadata.version;
        assert!(!add_partitions(&mut s, "t", 3).unwrap());
        assert_eq!(s.metadata.version, v, "same count is a no-op");
        assert!(add_partitions(&mut s, "t", 6).unwrap());
        assert_eq!(s.metadata.version, v + 1);
        let t = &s.metadata.topics["t"];
        assert_eq!(t.partitions.len(), 6);
        for (i, p) in t.partitions.iter().enumerate() {
            assert_eq!(p.partition, i as i32);
            assert_eq!(p.replicas.len(), 3);
            assert_eq!(p.isr, p.replicas);
            assert_eq!(p.leader, p.replicas[0]);
        }
        assert_eq!(
            add_partitions(&mut s, "t", 2),
            Err(ControllerError::PartitionDecrease {
                topic: "t".into(),
                have: 6,
                asked: 2
            })
        );
        assert_eq!(
            add_partitions(&mut s, "nope", 2),
            Err(ControllerError::UnknownTopic("nope".into()))
        );
    }

    #[test]
    fn topic_configs_are_replaced_and_versioned() {
        let mut s = cluster();
        let v = s.metadata.version;
        let c = BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]);
        assert!(set_topic_configs(&mut s, "t", c.clone()).unwrap());
        assert!(!set_topic_configs(&mut s, "t", c.clone()).unwrap());
        assert_eq!(s.metadata.version, v + 1);
        assert_eq!(s.metadata.topics["t"].configs, c);
    }

    #[test]
    fn a_config_change_from_a_stale_copy_is_refused() {
        let mut s = cluster();
        let empty = BTreeMap::new();
        assert_eq!(check_topic_configs(&s, "t", &empty), Ok(()));
        let one = BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]);
        set_topic_configs(&mut s, "t", one.clone()).unwrap();
        assert_eq!(
            check_topic_configs(&s, "t", &empty),
            Err(ControllerError::ConfigConflict("t".into()))
        );
        assert_eq!(check_topic_configs(&s, "t", &one), Ok(()));
        assert_eq!(
            check_topic_configs(&s, "nope", &one),
            Err(ControllerError::UnknownTopic("nope".into()))
        );
    }

    #[test]
    fn a_declared_topic_refuses_changes_through_kafkas_api_until_released() {
        let mut s = cluster();
        assert_eq!(check_unmanaged(&s, "t"), Ok(()));
        let owner = Some("ReplicatedTopic shop/orders".to_string());
        let v = s.metadata.version;
        assert_eq!(set_topic_owner(&mut s, "t", owner.clone()), Ok(true));
        assert!(s.metadata.version > v, "brokers must learn the owner");
        let v = s.metadata.version;
        assert_eq!(set_topic_owner(&mut s, "t", owner), Ok(false));
        assert_eq!(s.metadata.version, v, "no change, no new version");
        let e = check_unmanaged(&s, "t").unwrap_err();
        assert!(e.to_string().contains("ReplicatedTopic shop/orders"), "{e}");
        assert_eq!(set_topic_owner(&mut s, "t", None), Ok(true));
        assert_eq!(check_unmanaged(&s, "t"), Ok(()));
        assert_eq!(
            set_topic_owner(&mut s, "nope", None),
            Err(ControllerError::UnknownTopic("nope".into()))
        );
    }

    #[test]
    fn invalid_topic_configs_are_refused_and_nothing_changes() {
        let mut s = cluster();
        let v = s.metadata.version;
        let unknown = BTreeMap::from([("nope".to_string(), "1".to_string())]);
        let bad_value = BTreeMap::from([("retention.ms".to_string(), "soon".to_string())]);
        assert_eq!(
            set_topic_configs(&mut s, "t", unknown.clone()),
            Err(ControllerError::InvalidConfig(
                broker::topic_config::ConfigError::Unknown("nope".into())
            ))
        );
        let e = set_topic_configs(&mut s, "t", bad_value.clone()).unwrap_err();
        assert!(
            matches!(
                &e,
                ControllerError::InvalidConfig(broker::topic_config::ConfigError::Invalid { key, .. })
                    if key == "retention.ms"
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("retention.ms"), "{e}");
        assert_eq!(
            set_topic_configs(&mut s, "nope", unknown.clone()),
            Err(ControllerError::UnknownTopic("nope".into())),
            "an unknown topic is unknown whatever its configs"
        );
        assert!(s.metadata.topics["t"].configs.is_empty());
        for bad in [unknown, bad_value] {
            assert!(matches!(
                create_topic(&mut s, "u", 1, 1, bad, uuid::Uuid::nil()),
                Err(ControllerError::InvalidConfig(_))
            ));
        }
        assert!(!s.metadata.topics.contains_key("u"));
        assert_eq!(s.metadata.version, v);
        let good = BTreeMap::from([("min.insync.replicas".to_string(), "2".to_string())]);
        create_topic(&mut s, "u", 1, 1, good.clone(), uuid::Uuid::nil()).unwrap();
        assert_eq!(s.metadata.topics["u"].configs, good);
    }

    #[test]
    fn a_topic_has_at_most_max_partitions() {
        let mut s = ControllerState::new("c".into());
        register(&mut s, reg(0, "a"), 0);
        create_topic(&mut s, "t", 1, 1, BTreeMap::new(), uuid::Uuid::nil()).unwrap();
        let v = s.metadata.version;
        assert_eq!(
            add_partitions(&mut s, "t", MAX_PARTITIONS + 1),
            Err(ControllerError::TooManyPartitions {
                topic: "t".into(),
                asked: MAX_PARTITIONS + 1,
                max: MAX_PARTITIONS
            })
        );
        assert!(matches!(
            add_partitions(&mut s, "t", usize::MAX),
            Err(ControllerError::TooManyPartitions { .. })
        ));
        assert!(matches!(
            create_topic(
                &mut s,
                "u",
                MAX_PARTITIONS + 1,
                1,
                BTreeMap::new(),
                uuid::Uuid::nil()
            ),
            Err(ControllerError::TooManyPartitions { .. })
        ));
        assert_eq!(s.metadata.version, v);
        assert_eq!(s.metadata.topics["t"].partitions.len(), 1);
        assert!(add_partitions(&mut s, "t", MAX_PARTITIONS).unwrap());
        assert_eq!(s.metadata.topics["t"].partitions.len(), MAX_PARTITIONS);
    }

    /// The leader of t-`partition` commits `isr` at the current epochs.
    fn set_isr(s: &mut ControllerState, partition: i32, isr: Vec<i32>) -> PartitionMeta {
        let now = p(s, partition);
        let req = AlterPartition {
            broker: now.leader,
            broker_epoch: s.metadata.brokers[&now.leader].epoch,
            topic: "t".into(),
            partition,
            leader_epoch: now.leader_epoch,
            partition_epoch: now.partition_epoch,
            isr,
        };
        alter_partition(s, &req).unwrap()
    }

    fn named(parts: &[(&str, i32)]) -> Vec<(String, i32)> {
        parts.iter().map(|(t, p)| (t.to_string(), *p)).collect()
    }

    #[test]
    fn elect_preferred_moves_leadership_back_only_where_needed() {
        let mut s = cluster();
        let v = s.metadata.version;
        let results = elect_preferred(&mut s, Some(&named(&[("t", 0)])));
        assert_eq!(results.len(), 1);
        assert_eq!((results[0].topic.as_str(), results[0].partition), ("t", 0));
        assert_eq!(results[0].outcome, ElectionOutcome::ElectionNotNeeded);
        assert_eq!(s.metadata.version, v, "nothing moved: no commit");
        // Partition 0's preferred replica loses leadership (it is fenced and comes back, out
        // of the ISR), then catches up.
        let before = p(&s, 0);
        let preferred = before.replicas[0];
        assert_eq!(before.leader, preferred);
        let epoch = s.metadata.brokers[&preferred].epoch;
        controlled_shutdown(&mut s, preferred, epoch).unwrap();
        register(&mut s, reg(preferred, "b"), 1);
        let moved = p(&s, 0);
        assert_ne!(moved.leader, preferred);
        let v = s.metadata.version;
        let results = elect_preferred(&mut s, Some(&named(&[("t", 0)])));
        assert_eq!(
            results[0].outcome,
            ElectionOutcome::PreferredLeaderNotAvailable
        );
        assert!(
            results[0]
                .message
                .as_deref()
                .is_some_and(|m| m.contains("not in the ISR")),
            "{results:?}"
        );
        assert_eq!(p(&s, 0), moved);
        assert_eq!(s.metadata.version, v);
        let mut isr = moved.isr.clone();
        isr.push(preferred);
        set_isr(&mut s, 0, isr);
        let caught_up = p(&s, 0);
        let v = s.metadata.version;
        let results = elect_preferred(&mut s, Some(&named(&[("t", 0)])));
        assert_eq!(results[0].outcome, ElectionOutcome::Elected);
        assert_eq!(results[0].message, None);
        let elected = p(&s, 0);
        assert_eq!(elected.leader, preferred);
        assert_eq!(elected.leader_epoch, caught_up.leader_epoch + 1);
        assert_eq!(elected.partition_epoch, caught_up.partition_epoch + 1);
        assert_eq!(elected.isr, caught_up.isr);
        assert_eq!(s.metadata.version, v + 1);
    }

    #[test]
    fn elect_preferred_names_unknown_partitions() {
        let mut s = cluster();
        let v = s.metadata.version;
        let asked = named(&[("nope", 0), ("t", 3), ("t", -1), ("t", 2)]);
        let results = elect_preferred(&mut s, Some(&asked));
        let outcomes: Vec<(String, i32, ElectionOutcome)> = results
            .into_iter()
            .map(|r| (r.topic, r.partition, r.outcome))
            .collect();
        use ElectionOutcome::*;
        assert_eq!(
            outcomes,
            vec![
                ("nope".into(), 0, UnknownTopicOrPartition),
                ("t".into(), 3, UnknownTopicOrPartition),
                ("t".into(), -1, UnknownTopicOrPartition),
                ("t".into(), 2, ElectionNotNeeded),
            ]
        );
        assert_eq!(s.metadata.version, v);
    }

    /// None covers every partition; a drained broker's partitions are refused (not elected),
    /// and, unlike `preferred_leader_election`, the broker stays drained.
    #[test]
    fn elect_preferred_over_everything_leaves_drained_brokers_drained() {
        let mut s = cluster();
        create_topic(&mut s, "u", 2, 2, BTreeMap::new(), uuid::Uuid::nil()).unwrap();
        let drained = p(&s, 1).replicas[0];
        let other = (0..3).find(|b| *b != drained).unwrap();
        drain(&mut s, drained).unwrap();
        drain(&mut s, other).unwrap();
        // Undo the second drain by hand, as an operator's tooling might: its partitions can
        // take their preferred leader back, the first drained broker's cannot.
        s.metadata.brokers.get_mut(&other).unwrap().drained = false;
        let before = s.clone();
        let results = elect_preferred(&mut s, None);
        let all: Vec<(String, i32)> = before
            .metadata
            .partitions()
            .map(|(t, p)| (t.to_string(), p.partition))
            .collect();
        assert_eq!(all.len(), 5);
        assert_eq!(
            results
                .iter()
                .map(|r| (r.topic.clone(), r.partition))
                .collect::<Vec<_>>(),
            all,
            "every partition, in name order"
        );
        for r in &results {
            let old = before.metadata.partition(&r.topic, r.partition).unwrap();
            let new = s.metadata.partition(&r.topic, r.partition).unwrap();
            let preferred = old.replicas[0];
            let expected = if old.leader == preferred {
                ElectionOutcome::ElectionNotNeeded
            } else if preferred == drained {
                ElectionOutcome::PreferredLeaderNotAvailable
            } else {
                ElectionOutcome::Elected
            };
            assert_eq!(r.outcome, expected, "{r:?} {old:?}");
            match r.outcome {
                ElectionOutcome::Elected => {
                    assert_eq!(new.leader, preferred);
                    assert_eq!(new.leader_epoch, old.leader_epoch + 1);
                }
                ElectionOutcome::PreferredLeaderNotAvailable => {
                    assert!(
                        r.message.as_deref().is_some_and(|m| m.contains("drained")),
                        "{r:?}"
                    );
                    assert_eq!(new, old);
                }
                _ => assert_eq!(new, old),
            }
        }
        assert!(
            results
                .iter()
                .any(|r| r.outcome == ElectionOutcome::Elected),
            "{results:?}"
        );
        assert!(
            results
                .iter()
                .any(|r| r.outcome == ElectionOutcome::PreferredLeaderNotAvailable),
            "{results:?}"
        );
        assert!(s.metadata.brokers[&drained].drained, "still drained");
        assert!(!s.metadata.brokers[&other].drained);
        assert_eq!(s.metadata.version, before.metadata.version + 1);
    }

    #[test]
    fn cancel_without_a_reassignment_is_refused() {
        let mut s = cluster();
        let v = s.metadata.version;
        assert_eq!(
            cancel_reassignment(&mut s, "t", 0),
            Err(ControllerError::NoReassignmentInProgress("t".into(), 0))
        );
        assert_eq!(
            cancel_reassignment(&mut s, "t", 9),
            Err(ControllerError::UnknownPartition("t".into(), 9))
        );
        assert_eq!(s.metadata.version, v);
    }

    /// An expansion onto a broker that has not caught up: cancelling goes back to the original
    /// replicas and ISR, the leader stays (same leader epoch).
    #[test]
    fn cancel_an_expansion_goes_back_to_the_original_replicas() {
        let mut s = cluster();
        register(&mut s, reg(3, "a"), 0);
        let original = p(&s, 0);
        let mut target = original.replicas.clone();
        target.push(3);
        let started = reassign(&mut s, "t", 0, target.clone()).unwrap();
        assert_eq!(started.adding, vec![3]);
        assert_eq!(started.replicas, target);
        assert!(!started.isr.contains(&3));
        let v = s.metadata.version;
        let cancelled = cancel_reassignment(&mut s, "t", 0).unwrap();
        assert_eq!(cancelled.replicas, original.replicas);
        assert_eq!(cancelled.isr, original.isr);
        assert!(cancelled.adding.is_empty() && cancelled.removing.is_empty());
        assert_eq!(cancelled.leader, original.leader);
        assert_eq!(cancelled.leader_epoch, original.leader_epoch);
        assert_eq!(cancelled.partition_epoch, started.partition_epoch + 1);
        assert_eq!(p(&s, 0), cancelled);
        assert_eq!(s.metadata.version, v + 1);
        assert!(matches!(
            cancel_reassignment(&mut s, "t", 0),
            Err(ControllerError::NoReassignmentInProgress(..))
        ));
    }

    /// Five brokers, "t" with one partition on three of them; a move onto the two others is
    /// under way with one of them caught up and leading. Returns the original replicas, the
    /// two being added (the caught-up leader first) and the partition.
    fn move_led_by_an_added_replica() -> (ControllerState, Vec<i32>, [i32; 2], PartitionMeta) {
        let mut s = ControllerState::new("c".into());
        for id in 0..5 {
            register(&mut s, reg(id, "a"), 0);
        }
        create_topic(&mut s, "t", 1, 3, BTreeMap::new(), uuid::Uuid::nil()).unwrap();
        let original = p(&s, 0).replicas;
        let spare: Vec<i32> = (0..5).filter(|b| !original.contains(b)).collect();
        let (s1, s2) = (spare[0], spare[1]);
        let started = reassign(&mut s, "t", 0, vec![s1, s2, original[0]]).unwrap();
        assert_eq!(started.adding, vec![s1, s2]);
        // The leader reports s1 caught up (s2 not yet): the move is still under way.
        let mut isr = started.isr.clone();
        isr.push(s1);
        let now = set_isr(&mut s, 0, isr);
        assert_eq!(now.adding, vec![s1, s2]);
        // s1 is the target's preferred leader.
        let r = elect_preferred(&mut s, Some(&named(&[("t", 0)])));
        assert_eq!(r[0].outcome, ElectionOutcome::Elected, "{r:?}");
        let led = p(&s, 0);
        assert_eq!(led.leader, s1);
        (s, original, [s1, s2], led)
    }

    #[test]
    fn cancel_hands_leadership_from_an_added_replica_back_to_an_original_one() {
        let (mut s, original, [s1, _], led) = move_led_by_an_added_replica();
        let cancelled = cancel_reassignment(&mut s, "t", 0).unwrap();
        assert_eq!(cancelled.replicas, original);
        assert!(!cancelled.isr.contains(&s1));
        assert_eq!(cancelled.isr, original);
        assert!(original.contains(&cancelled.leader));
        assert!(led.isr.contains(&cancelled.leader), "elected from the ISR");
        assert_eq!(cancelled.leader, original[0], "in replica order");
        assert_eq!(cancelled.leader_epoch, led.leader_epoch + 1);
        assert!(cancelled.partition_epoch > led.partition_epoch);
        assert!(cancelled.adding.is_empty() && cancelled.removing.is_empty());
    }

    #[test]
    fn cancel_is_refused_when_no_original_replica_is_in_sync() {
        let (mut s, original, [s1, _], led) = move_led_by_an_added_replica();
        // The new leader shrinks the ISR to itself: no original replica is in sync.
        assert_eq!(led.leader, s1);
        let shrunk = set_isr(&mut s, 0, vec![s1]);
        assert!(shrunk.isr.iter().all(|r| !original.contains(r)));
        let before = s.clone();
        let e = cancel_reassignment(&mut s, "t", 0).unwrap_err();
        assert!(
            matches!(&e, ControllerError::CannotCancel { topic, partition: 0, reason }
                if topic == "t" && reason.contains("in sync")),
            "{e:?}"
        );
        assert_eq!(s, before, "nothing changed");
    }

    /// The only in-sync original replica is gone (the partition has no leader): cancelling
    /// is refused until it is back and leads again.
    #[test]
    fn cancel_is_refused_when_no_original_replica_can_lead() {
        let mut s = ControllerState::new("c".into());
        for id in 0..5 {
            register(&mut s, reg(id, "a"), 0);
        }
        create_topic(&mut s, "t", 1, 3, BTreeMap::new(), uuid::Uuid::nil()).unwrap();
        let original = p(&s, 0).replicas;
        let r0 = original[0];
        let spare: Vec<i32> = (0..5).filter(|b| !original.contains(b)).collect();
        let started = reassign(&mut s, "t", 0, vec![spare[0], spare[1], r0]).unwrap();
        assert_eq!(started.leader, r0);
        // r0 shrinks the ISR to itself, then its process dies.
        set_isr(&mut s, 0, vec![r0]);
        let epoch = s.metadata.brokers[&r0].epoch;
        assert_eq!(fence_gone(&mut s, r0, epoch), Ok(true));
        let leaderless = p(&s, 0);
        assert!(!leaderless.has_leader() && leaderless.isr == vec![r0]);
        let before = s.clone();
        let e = cancel_reassignment(&mut s, "t", 0).unwrap_err();
        assert!(
            matches!(&e, ControllerError::CannotCancel { reason, .. } if reason.contains("lead")),
            "{e:?}"
        );
        assert_eq!(s, before, "nothing changed");
        // r0 returns and leads again; now the move can be cancelled.
        register(&mut s, reg(r0, "b"), 1);
        assert_eq!(p(&s, 0).leader, r0);
        let cancelled = cancel_reassignment(&mut s, "t", 0).unwrap();
        assert_eq!(cancelled.replicas, original);
        assert_eq!(cancelled.isr, vec![r0]);
        assert_eq!(cancelled.leader, r0);
    }

    #[test]
    fn scale_down_never_moves_replicas_onto_another_leaving_broker() {
        let mut s = ControllerState::new("c".into());
        for id in 0..5 {
            register(&mut s, reg(id, "a"), 0);
        }
        create_topic(&mut s, "t", 10, 3, BTreeMap::new(), uuid::Uuid::nil()).unwrap();
        let started = decommission_all(&mut s, &[3, 4]).unwrap();
        assert!(!started.is_empty());
        for (_, p) in s.metadata.partitions() {
            let target = p.target_replicas();
            assert_eq!(target.len(), 3, "{p:?}");
            assert!(target.iter().all(|r| *r < 3), "{p:?}");
        }
        // Partitions mid-reassignment are left alone: a second call starts nothing.
        assert!(decommission_all(&mut s, &[3, 4]).unwrap().is_empty());
        assert_eq!(
            decommission_all(&mut s, &[9]),
            Err(ControllerError::UnknownBroker(9))
        );
    }

    /// A replica fetch names its topic by name, so a leader tells a deleted topic from its
    /// successor of the same name only by the leader epoch (see `first_leader_epoch`).
    #[test]
    fn a_recreated_topic_never_reuses_a_leader_epoch() {
        let mut s = cluster();
        // Elections moved partition 1 on to epoch 6 (the rest stay at 0).
        s.metadata.partition_mut("t", 1).unwrap().leader_epoch = 6;
        create_topic(&mut s, "low", 1, 3, BTreeMap::new(), uuid::Uuid::nil()).unwrap();
        delete_topic(&mut s, "t").unwrap();
        assert_eq!(s.first_leader_epoch, 7);
        // Deleting a topic whose epochs are lower never lowers the start.
        delete_topic(&mut s, "low").unwrap();
        assert_eq!(s.first_leader_epoch, 7);
        create_topic(&mut s, "t", 2, 3, BTreeMap::new(), uuid::Uuid::max()).unwrap();
        assert!(add_partitions(&mut s, "t", 4).unwrap());
        create_topic_assigned(
            &mut s,
            "other",
            vec![vec![0, 1, 2]],
            BTreeMap::new(),
            uuid::Uuid::nil(),
        )
        .unwrap();
        for (topic, p) in s.metadata.partitions() {
            assert_eq!(p.leader_epoch, 7, "{topic}-{}", p.partition);
        }
        // A controller restarted from a state saved before this rule starts at 0, as before.
        let mut saved = serde_json::to_value(&s).unwrap();
        saved.as_object_mut().unwrap().remove("first_leader_epoch");
        let loaded: ControllerState = serde_json::from_value(saved).unwrap();
        assert_eq!(loaded.first_leader_epoch, 0);
        // And the rule survives a save and load.
        let reloaded: ControllerState =
            serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
        assert_eq!(reloaded.first_leader_epoch, 7);
    }

    #[test]
    fn created_topics_spread_leaders() {
        let s = cluster();
        let leaders: Vec<i32> = (0..3).map(|i| p(&s, i).leader).collect();
        let mut sorted = leaders.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![0, 1, 2]);
        assert!((0..3).all(|i| p(&s, i).isr.len() == 3));
    }

    #[test]
    fn lost_broker_loses_leadership_to_an_isr_member_and_leaves_isrs() {
        let mut s = cluster();
        let led = p(&s, 0).leader;
        let before = p(&s, 0);
        for id in 0..3 {
            if id != led {
                let e = s.metadata.brokers[&id].epoch;
                heartbeat(&mut s, id, e, 5000).unwrap();
            }
        }
        assert_eq!(expire_sessions(&mut s, 9500, 9000), vec![led]);
        let after = p(&s, 0);
        assert_ne!(after.leader, led);
        assert!(before.isr.contains(&after.leader));
        assert!(!after.isr.contains(&led));
        assert_eq!(after.leader_epoch, before.leader_epoch + 1);
        assert!(after.partition_epoch > before.partition_epoch);
        // Its heartbeats are refused until it registers again.
        let epoch = s.metadata.brokers[&led].epoch;
        assert_eq!(
            heartbeat(&mut s, led, epoch, 9600),
            Err(ControllerError::Fenced(led))
        );
    }

    /// The crash fast path fences like session expiry, but only the incarnation whose watch
    /// was lost, and only once.
    #[test]
    fn a_gone_broker_is_fenced_like_an_expired_one_but_only_its_own_incarnation() {
        let mut s = cluster();
        let led = p(&s, 0).leader;
        let before = p(&s, 0);
        let epoch = s.metadata.brokers[&led].epoch;
        let version = s.metadata.version;
        // Another incarnation's lost watch fences nothing.
        assert_eq!(fence_gone(&mut s, led, epoch + 1), Ok(false));
        assert_eq!(fence_gone(&mut s, 99, 1), Ok(false));
        assert_eq!(s.metadata.version, version);
        assert_eq!(fence_gone(&mut s, led, epoch), Ok(true));
        let after = p(&s, 0);
        assert_ne!(after.leader, led);
        assert!(before.isr.contains(&after.leader));
        assert!(!after.isr.contains(&led));
        assert_eq!(after.leader_epoch, before.leader_epoch + 1);
        assert_eq!(s.metadata.brokers[&led].status, BrokerStatus::Fenced);
        let version = s.metadata.version;
        assert_eq!(fence_gone(&mut s, led, epoch), Ok(false), "fenced once");
        assert_eq!(s.metadata.version, version);
    }

    /// Topic "e" (one partition, RF 3, min.insync.replicas=2) on brokers 0-2, broker 0
    /// leading; returns the state and the leader.
    fn eligible_cluster() -> ControllerState {
        let mut s = ControllerState::new("c".into());
        for id in 0..3 {
            register(&mut s, reg(id, "a"), 0);
        }
        let configs = BTreeMap::from([("min.insync.replicas".to_string(), "2".to_string())]);
        create_topic(&mut s, "e", 1, 3, configs, uuid::Uuid::nil()).unwrap();
        s
    }

    fn e(s: &ControllerState) -> PartitionMeta {
        s.metadata.partition("e", 0).unwrap().clone()
    }

    fn unclean(id: i32, inc: &str) -> Registration {
        Registration {
            unclean_shutdown: true,
            ..reg(id, inc)
        }
    }

    /// Brokers a, b, c of partition e-0 with a leading: c and then b are lost, so b leaves an
    /// ISR below min.insync.replicas (eligible) and c one that was not (not eligible); then
    /// a, the last ISR member, is lost too.
    fn lose_all_but_the_eligible(s: &mut ControllerState) -> [i32; 3] {
        let part = e(s);
        let a = part.leader;
        let others: Vec<i32> = part.replicas.iter().copied().filter(|r| *r != a).collect();
        let (b, c) = (others[0], others[1]);
        assert_eq!(fence_gone(s, c, s.metadata.brokers[&c].epoch), Ok(true));
        assert_eq!(
            e(s).elr,
            Vec::<i32>::new(),
            "ISR {:?} still has 2",
            e(s).isr
        );
        assert_eq!(fence_gone(s, b, s.metadata.brokers[&b].epoch), Ok(true));
        assert_eq!((e(s).isr, e(s).elr), (vec![a], vec![b]));
        assert_eq!(fence_gone(s, a, s.metadata.brokers[&a].epoch), Ok(true));
        let now = e(s);
        assert_eq!(
            (now.leader, now.isr, now.elr),
            (NO_LEADER, vec![a], vec![b])
        );
        [a, b, c]
    }

    /// KIP-966: a replica that left an ISR smaller than min.insync.replicas holds every
    /// committed record, so it may lead when no ISR member can; one that left a large enough
    /// ISR may not (the high watermark moved on without it).
    #[test]
    fn an_eligible_replica_leads_when_no_isr_member_can() {
        let mut s = eligible_cluster();
        let [a, b, c] = lose_all_but_the_eligible(&mut s);
        register(&mut s, reg(c, "b"), 10);
        assert_eq!(e(&s).leader, NO_LEADER, "c left an ISR of 2: not eligible");
        register(&mut s, reg(b, "b"), 20);
        let now = e(&s);
        assert_eq!(now.leader, b);
        assert_eq!(now.isr, vec![b]);
        assert_eq!(
            now.elr,
            vec![a],
            "the old ISR member still holds every record"
        );
        // a restarts cleanly: eligible still, back in the ISR once it catches up.
        register(&mut s, reg(a, "b"), 30);
        assert_eq!(e(&s).elr, vec![a]);
    }

    /// A broker that restarts after an unclean shutdown may have lost acknowledged records:
    /// as the last ISR member it gives way to the eligible replicas (the partition waits for
    /// one), and it is eligible nowhere.
    #[test]
    fn an_unclean_last_isr_member_gives_way_to_the_eligible_replicas() {
        let mut s = eligible_cluster();
        let [a, b, _] = lose_all_but_the_eligible(&mut s);
        register(&mut s, unclean(a, "b"), 10);
        let now = e(&s);
        assert_eq!(
            (now.leader, now.isr.clone(), now.elr),
            (NO_LEADER, vec![b], vec![])
        );
        register(&mut s, reg(b, "b"), 20);
        assert_eq!((e(&s).leader, e(&s).isr), (b, vec![b]));

        // The same restart after a clean shutdown leads again, as before.
        let mut s = eligible_cluster();
        let [a, b, _] = lose_all_but_the_eligible(&mut s);
        register(&mut s, reg(a, "b"), 10);
        let now = e(&s);
        assert_eq!((now.leader, now.isr, now.elr), (a, vec![a], vec![b]));

        // An unclean eligible replica is dropped; with nobody else, the last member leads.
        let mut s = eligible_cluster();
        let [a, b, _] = lose_all_but_the_eligible(&mut s);
        register(&mut s, unclean(b, "b"), 10);
        assert_eq!((e(&s).leader, e(&s).elr), (NO_LEADER, vec![]));
        register(&mut s, unclean(a, "b"), 20);
        assert_eq!(e(&s).leader, a, "nothing better to elect");
    }

    /// Kafka's UNCLEAN ElectLeaders, the way out when the replicas known to hold every record
    /// are gone for good: a led partition is left alone, an ISR or ELR member is elected
    /// cleanly when one is alive, and only then any live replica, alone in the ISR.
    #[test]
    fn an_unclean_election_is_the_admins_way_out_of_a_leaderless_partition() {
        let mut s = eligible_cluster();
        let [a, b, c] = lose_all_but_the_eligible(&mut s);
        let all = [("e".to_string(), 0), ("e".to_string(), 9)];
        // Nobody alive: nothing to elect.
        let r = elect_unclean(&mut s, Some(&all));
        assert_eq!(r[0].outcome, ElectionOutcome::PreferredLeaderNotAvailable);
        assert_eq!(r[1].outcome, ElectionOutcome::UnknownTopicOrPartition);
        // The damaged last ISR member returns and gives way to b, which never comes back;
        // c, out of sync, is alive.
        register(&mut s, unclean(a, "b"), 10);
        register(&mut s, reg(c, "b"), 10);
        assert_eq!((e(&s).leader, e(&s).isr), (NO_LEADER, vec![b]));
        let version = s.metadata.version;
        let r = elect_unclean(&mut s, Some(&all[..1]));
        assert_eq!(r[0].outcome, ElectionOutcome::Elected);
        assert!(
            r[0].message
                .as_deref()
                .is_some_and(|m| m.starts_with(UNCLEAN_ELECTED)),
            "{r:?}"
        );
        let now = e(&s);
        assert!(now.leader == a || now.leader == c, "{now:?}");
        assert_eq!(now.isr, vec![now.leader]);
        assert!(now.elr.is_empty());
        assert!(s.metadata.version > version);
        // Led now: not needed, nothing changes.
        let version = s.metadata.version;
        let r = elect_unclean(&mut s, None);
        assert_eq!(r[0].outcome, ElectionOutcome::ElectionNotNeeded);
        assert_eq!(s.metadata.version, version);

        // With an eligible replica alive it is a clean election: b leads, not a.
        let mut s = eligible_cluster();
        let [a, b, _] = lose_all_but_the_eligible(&mut s);
        register(&mut s, unclean(a, "b"), 10);
        s.metadata.brokers.get_mut(&b).unwrap().status = BrokerStatus::Alive;
        let r = elect_unclean(&mut s, None);
        assert_eq!(r[0].outcome, ElectionOutcome::Elected);
        assert_eq!(r[0].message, None, "a clean election");
        assert_eq!((e(&s).leader, e(&s).isr), (b, vec![b]));
    }

    /// Only a new process can have lost its tail: the same incarnation registering again
    /// (fenced after a pause) stays eligible.
    #[test]
    fn the_same_process_registering_again_is_not_distrusted() {
        let mut s = eligible_cluster();
        let [a, b, _] = lose_all_but_the_eligible(&mut s);
        register(&mut s, unclean(b, "a"), 10);
        let now = e(&s);
        assert_eq!((now.leader, now.isr), (b, vec![b]));
        assert_eq!(now.elr, vec![a]);
    }

    /// The leader's own ISR changes keep the ELR: shrunk below min.insync.replicas, the
    /// removed followers become eligible; grown back to it, nobody is.
    #[test]
    fn isr_changes_by_the_leader_keep_the_eligible_replicas() {
        let mut s = eligible_cluster();
        let part = e(&s);
        let a = part.leader;
        let alter = |s: &mut ControllerState, isr: Vec<i32>| {
            let part = e(s);
            let req = AlterPartition {
                broker: a,
                broker_epoch: s.metadata.brokers[&a].epoch,
                topic: "e".into(),
                partition: 0,
                leader_epoch: part.leader_epoch,
                partition_epoch: part.partition_epoch,
                isr,
            };
            alter_partition(s, &req).unwrap()
        };
        let others: Vec<i32> = part.replicas.iter().copied().filter(|r| *r != a).collect();
        let shrunk = alter(&mut s, vec![a]);
        let mut elr = shrunk.elr.clone();
        elr.sort_unstable();
        let mut want = others.clone();
        want.sort_unstable();
        assert_eq!(elr, want);
        let grown = alter(&mut s, vec![a, others[0]]);
        assert!(
            grown.elr.is_empty(),
            "an ISR of min.insync.replicas: {grown:?}"
        );
        // One out of three with min.insync.replicas 2 is not eligible.
        let mut s = eligible_cluster();
        let shrunk = {
            let part = e(&s);
            let req = AlterPartition {
                broker: a,
                broker_epoch: s.metadata.brokers[&a].epoch,
                topic: "e".into(),
                partition: 0,
                leader_epoch: part.leader_epoch,
                partition_epoch: part.partition_epoch,
                isr: vec![a, others[0]],
            };
            alter_partition(&mut s, &req).unwrap()
        };
        assert!(shrunk.elr.is_empty());
        // Lowering min.insync.replicas to the ISR's size clears the ELR.
        let mut s = eligible_cluster();
        alter(&mut s, vec![a]);
        assert!(!e(&s).elr.is_empty());
        let configs = BTreeMap::from([("min.insync.replicas".to_string(), "1".to_string())]);
        set_topic_configs(&mut s, "e", configs).unwrap();
        assert!(e(&s).elr.is_empty());
    }

    /// Without an override a topic takes the smallest default the brokers reported (a larger
    /// one than a leader applies would make replicas eligible that miss records).
    #[test]
    fn min_insync_replicas_comes_from_the_override_or_the_brokers() {
        let mut s = ControllerState::new("c".into());
        assert_eq!(min_insync(&s, &BTreeMap::new()), 1);
        for (id, min) in [(0, 3), (1, 2), (2, 3)] {
            let r = Registration {
                min_insync_replicas: Some(min),
                ..reg(id, "a")
            };
            register(&mut s, r, 0);
        }
        assert_eq!(min_insync(&s, &BTreeMap::new()), 2);
        let over = BTreeMap::from([("min.insync.replicas".to_string(), "3".to_string())]);
        assert_eq!(min_insync(&s, &over), 3);
        // Read as the brokers read it.
        let spaced = BTreeMap::from([("min.insync.replicas".to_string(), " 1".to_string())]);
        assert_eq!(min_insync(&s, &spaced), 1);
        // A broker that does not say counts as 1.
        register(&mut s, reg(3, "a"), 0);
        assert_eq!(min_insync(&s, &BTreeMap::new()), 1);
    }

    /// The brokers' default lowered (a broker registering with a smaller one): an ELR built
    /// under the old default goes, since leaders now commit with fewer replicas.
    #[test]
    fn a_lowered_default_min_insync_replicas_clears_the_elr() {
        let mut s = ControllerState::new("c".into());
        let with_min = |id: i32, inc: &str, min: i32| Registration {
            min_insync_replicas: Some(min),
            ..reg(id, inc)
        };
        for id in 0..3 {
            register(&mut s, with_min(id, "a", 2), 0);
        }
        create_topic(&mut s, "d", 1, 3, BTreeMap::new(), uuid::Uuid::nil()).unwrap();
        let leader = s.metadata.partition("d", 0).unwrap().leader;
        for other in (0..3).filter(|b| *b != leader) {
            let epoch = s.metadata.brokers[&other].epoch;
            fence_gone(&mut s, other, epoch).unwrap();
        }
        let part = s.metadata.partition("d", 0).unwrap().clone();
        assert_eq!((part.isr.len(), part.elr.len()), (1, 1), "{part:?}");
        register(&mut s, with_min(leader, "a2", 1), 10);
        let part = s.metadata.partition("d", 0).unwrap().clone();
        assert!(part.elr.is_empty(), "{part:?}");
    }

    /// A drain moves leadership only where another ISR member can take it: a partition whose
    /// only in-sync replica is the drained broker stays led.
    #[test]
    fn a_drain_never_leaves_a_partition_without_a_leader() {
        let mut s = cluster();
        let part = p(&s, 0);
        let req = AlterPartition {
            broker: part.leader,
            broker_epoch: s.metadata.brokers[&part.leader].epoch,
            topic: "t".into(),
            partition: 0,
            leader_epoch: part.leader_epoch,
            partition_epoch: part.partition_epoch,
            isr: vec![part.leader],
        };
        alter_partition(&mut s, &req).unwrap();
        let still = drain(&mut s, part.leader).unwrap();
        assert_eq!(still, vec![("t".to_string(), 0)]);
        assert_eq!(p(&s, 0).leader, part.leader);
        assert_eq!(p(&s, 0).leader_epoch, part.leader_epoch);
    }

    #[test]
    fn no_unclean_election_and_the_last_isr_member_returns_as_leader() {
        let mut s = cluster();
        // Shrink partition 0's ISR to its leader only.
        let part = p(&s, 0);
        let req = AlterPartition {
            broker: part.leader,
            broker_epoch: s.metadata.brokers[&part.leader].epoch,
            topic: "t".into(),
            partition: 0,
            leader_epoch: part.leader_epoch,
            partition_epoch: part.partition_epoch,
            isr: vec![part.leader],
        };
        alter_partition(&mut s, &req).unwrap();
        let leader = part.leader;
        // Everyone else heartbeats; the leader dies.
        for id in 0..3 {
            if id != leader {
                let e = s.metadata.brokers[&id].epoch;
                heartbeat(&mut s, id, e, 20_000).unwrap();
            }
        }
        expire_sessions(&mut s, 20_001, 9000);
        let now = p(&s, 0);
        assert_eq!(
            now.leader, NO_LEADER,
            "out-of-sync replicas must not be elected"
        );
        assert_eq!(now.isr, vec![leader], "the ISR never becomes empty");
        register(&mut s, reg(leader, "b"), 21_000);
        assert_eq!(
            p(&s, 0).leader,
            leader,
            "the last ISR member leads again when it returns"
        );
    }

    #[test]
    fn alter_partition_is_fenced_by_epochs() {
        let mut s = cluster();
        let part = p(&s, 1);
        let epoch = s.metadata.brokers[&part.leader].epoch;
        let follower = part
            .replicas
            .iter()
            .copied()
            .find(|r| *r != part.leader)
            .unwrap();
        let base = AlterPartition {
            broker: part.leader,
            broker_epoch: epoch,
            topic: "t".into(),
            partition: 1,
            leader_epoch: part.leader_epoch,
            partition_epoch: part.partition_epoch,
            isr: part
                .isr
                .iter()
                .copied()
                .filter(|r| *r != follower)
                .collect(),
        };
        let stale_partition = AlterPartition {
            partition_epoch: part.partition_epoch - 1,
            ..base.clone()
        };
        assert!(matches!(
            alter_partition(&mut s, &stale_partition),
            Err(ControllerError::StalePartitionEpoch { .. })
        ));
        let deposed = AlterPartition {
            leader_epoch: part.leader_epoch - 1,
            ..base.clone()
        };
        assert!(matches!(
            alter_partition(&mut s, &deposed),
            Err(ControllerError::NotLeader { .. })
        ));
        let old_process = AlterPartition {
            broker_epoch: epoch - 100,
            ..base.clone()
        };
        assert!(matches!(
            alter_partition(&mut s, &old_process),
            Err(ControllerError::StaleBrokerEpoch { .. })
        ));
        let no_leader = AlterPartition {
            isr: vec![follower],
            ..base.clone()
        };
        assert!(matches!(
            alter_partition(&mut s, &no_leader),
            Err(ControllerError::InvalidIsr { .. })
        ));
        let committed = alter_partition(&mut s, &base).unwrap();
        assert_eq!(committed.partition_epoch, part.partition_epoch + 1);
        assert!(!committed.isr.contains(&follower));
        // Replaying the same proposal is now stale.
        assert!(alter_partition(&mut s, &base).is_err());
    }

    #[test]
    fn drain_then_preferred_leader_election_restores_the_spread() {
        let mut s = cluster();
        let before: Vec<i32> = (0..3).map(|i| p(&s, i).leader).collect();
        assert!(drain(&mut s, 1).unwrap().is_empty());
        assert!((0..3).all(|i| p(&s, i).leader != 1));
        assert!(
            (0..3).all(|i| p(&s, i).isr.contains(&1)),
            "drain keeps the ISR"
        );
        assert_eq!(preferred_leader_election(&mut s), 1);
        assert_eq!((0..3).map(|i| p(&s, i).leader).collect::<Vec<_>>(), before);
    }

    #[test]
    fn controlled_shutdown_moves_leadership_and_leaves_isrs() {
        let mut s = cluster();
        let epoch = s.metadata.brokers[&2].epoch;
        assert!(controlled_shutdown(&mut s, 2, epoch).unwrap().is_empty());
        for i in 0..3 {
            assert_ne!(p(&s, i).leader, 2);
            assert!(!p(&s, i).isr.contains(&2));
        }
        // Restart: a new incarnation registers; the preferred leader election brings it back
        // once it is in the ISR again.
        register(&mut s, reg(2, "b"), 100);
        assert_eq!(s.metadata.brokers[&2].status, BrokerStatus::Alive);
    }

    #[test]
    fn reassignment_grows_catches_up_moves_leader_and_shrinks() {
        let mut s = cluster();
        register(&mut s, reg(3, "a"), 0);
        let part = p(&s, 0);
        assert_eq!(part.replicas.len(), 3);
        let target = vec![3, 1, 2];
        let started = reassign(&mut s, "t", 0, target.clone()).unwrap();
        assert_eq!(started.adding, vec![3]);
        assert_eq!(
            started.removing,
            part.replicas
                .iter()
                .copied()
                .filter(|r| !target.contains(r))
                .collect::<Vec<_>>()
        );
        assert!(started.replicas.len() == 4 && started.replicas.starts_with(&target));
        assert!(matches!(
            reassign(&mut s, "t", 0, vec![1, 2, 3]),
            Err(ControllerError::ReassignmentInProgress(..))
        ));
        // The leader reports 3 caught up: the reassignment completes.
        let now = p(&s, 0);
        let mut isr = now.isr.clone();
        isr.push(3);
        let req = AlterPartition {
            broker: now.leader,
            broker_epoch: s.metadata.brokers[&now.leader].epoch,
            topic: "t".into(),
            partition: 0,
            leader_epoch: now.leader_epoch,
            partition_epoch: now.partition_epoch,
            isr,
        };
        let done = alter_partition(&mut s, &req).unwrap();
        assert_eq!(done.replicas, target);
        assert!(done.adding.is_empty() && done.removing.is_empty());
        assert!(target.contains(&done.leader));
        assert!(done.isr.iter().all(|r| target.contains(r)));
    }

    #[test]
    fn decommission_moves_every_replica_or_refuses() {
        let mut s = cluster();
        assert!(
            matches!(
                decommission(&mut s, 0),
                Err(ControllerError::CannotMove { .. })
            ),
            "no spare broker"
        );
        register(&mut s, reg(3, "a"), 0);
        let started = decommission(&mut s, 0).unwrap();
        assert_eq!(started.len(), 3);
        for (_, _, target) in &started {
            assert!(!target.contains(&0) && target.contains(&3));
        }
    }

    /// Scaling 5 brokers down to 3 at RF 3 leaves no choice of replicas, only of order: the
    /// preferred leaders that the leaving brokers held are spread over those that stay.
    #[test]
    fn a_scale_down_spreads_the_preferred_leaders_it_moves() {
        let mut s = ControllerState::new("c".into());
        for id in 0..5 {
            register(&mut s, reg(id, "a"), 0);
        }
        create_topic(&mut s, "t", 10, 3, BTreeMap::new(), uuid::Uuid::nil()).unwrap();
        let started = decommission_all(&mut s, &[3, 4]).unwrap();
        assert!(!started.is_empty());
        let mut leaders: BTreeMap<i32, usize> = BTreeMap::new();
        for (_, p) in s.metadata.partitions() {
            let target = p.target_replicas();
            assert!(!target.contains(&3) && !target.contains(&4), "{target:?}");
            *leaders.entry(target[0]).or_default() += 1;
        }
        let (min, max) = (
            leaders.values().min().copied().unwrap_or(0),
            leaders.values().max().copied().unwrap_or(0),
        );
        assert_eq!(leaders.len(), 3, "{leaders:?}");
        assert!(max - min <= 1, "preferred leaders {leaders:?}");
    }

    #[test]
    fn restart_with_a_new_incarnation_is_fenced_first() {
        let mut s = cluster();
        let led = p(&s, 0).leader;
        let old_epoch = s.metadata.brokers[&led].epoch;
        let same = register(&mut s, reg(led, "a"), 10);
        assert_eq!(same, old_epoch, "a retried registration keeps its epoch");
        let new_epoch = register(&mut s, reg(led, "b"), 20);
        assert!(new_epoch > old_epoch);
        assert_ne!(
            p(&s, 0).leader,
            led,
            "a restarted broker does not keep leadership"
        );
        assert!(!p(&s, 0).isr.contains(&led), "nor its ISR membership");
    }
}

#[cfg(test)]
mod properties {
    //! Random operation sequences against the controller's invariants.
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Register(i32, u8),
        Expire(i32),
        Shrink(i32, i32),
        Expand(i32, i32),
        Shutdown(i32),
        Drain(i32),
        Preferred,
        Reassign(i32, Vec<i32>),
        Decommission(i32),
        ElectPreferred(Option<i32>),
        CancelReassignment(i32),
    }

    fn op() -> impl Strategy<Value = Op> {
        let b = 0..5i32;
        prop_oneof![
            (b.clone(), any::<u8>()).prop_map(|(id, inc)| Op::Register(id, inc % 3)),
            b.clone().prop_map(Op::Expire),
            (0..4i32, b.clone()).prop_map(|(p, r)| Op::Shrink(p, r)),
            (0..4i32, b.clone()).prop_map(|(p, r)| Op::Expand(p, r)),
            b.clone().prop_map(Op::Shutdown),
            b.clone().prop_map(Op::Drain),
            Just(Op::Preferred),
            (
                0..4i32,
                proptest::sample::subsequence(vec![0, 1, 2, 3, 4], 1..4)
            )
                .prop_map(|(p, t)| Op::Reassign(p, t)),
            b.prop_map(Op::Decommission),
            proptest::option::of(0..5i32).prop_map(Op::ElectPreferred),
            (0..4i32).prop_map(Op::CancelReassignment),
        ]
    }

    fn check(before: &ControllerState, after: &ControllerState, op: &Op) {
        for (t, p) in after.metadata.partitions() {
            assert!(!p.isr.is_empty(), "{t}-{}: empty ISR", p.partition);
            assert!(
                p.isr.iter().all(|r| p.replicas.contains(r)),
                "{t}-{}: ISR outside replicas {p:?}",
                p.partition
            );
            assert!(
                p.adding
                    .iter()
                    .chain(&p.removing)
                    .all(|r| p.replicas.contains(r)),
                "{p:?}"
            );
            if p.has_leader() {
                assert!(
                    p.isr.contains(&p.leader),
                    "{t}-{}: leader not in ISR {p:?}",
                    p.partition
                );
                assert!(
                    after.metadata.is_alive(p.leader),
                    "{t}-{}: leader {} not alive",
                    p.partition,
                    p.leader
                );
            }
            if let Some(old) = before.metadata.partition(t, p.partition) {
                assert!(p.leader_epoch >= old.leader_epoch, "leader epoch went back");
                assert!(
                    p.partition_epoch >= old.partition_epoch,
                    "partition epoch went back"
                );
                if p.leader != old.leader {
                    assert!(
                        p.leader_epoch > old.leader_epoch,
                        "leader changed without an epoch bump"
                    );
                    if p.has_leader() {
                        // No unclean election: the new leader was in the ISR just before, or
                        // (an AlterPartition that completes a reassignment) joined it in this
                        // very commit.
                        let joined_now = matches!(op, Op::Expand(..)) && p.isr.contains(&p.leader);
                        assert!(
                            old.isr.contains(&p.leader) || joined_now,
                            "unclean election: {old:?} -> {p:?}"
                        );
                    }
                }
                if p != old {
                    assert!(
                        p.partition_epoch > old.partition_epoch,
                        "change without a partition epoch bump: {old:?} -> {p:?}"
                    );
                }
            }
        }
    }

    fn apply(s: &mut ControllerState, op: &Op, now: i64) {
        let alive_epoch =
            |s: &ControllerState, id: i32| s.metadata.brokers.get(&id).map(|b| b.epoch);
        match op {
            Op::Register(id, inc) => {
                register(
                    s,
                    Registration {
                        id: *id,
                        incarnation: inc.to_string(),
                        host: "h".into(),
                        port: 1,
                        replication_host: None,
                        rack: None,
                        listeners: Vec::new(),
                        unclean_shutdown: false,
                        min_insync_replicas: None,
                    },
                    now,
                );
            }
            Op::Expire(id) => {
                // Everyone but `id` heartbeats, then sessions expire.
                let ids: Vec<i32> = s.metadata.brokers.keys().copied().collect();
                for b in ids {
                    if b != *id {
                        let e = alive_epoch(s, b).unwrap();
                        let _ = heartbeat(s, b, e, now);
                    }
                }
                expire_sessions(s, now + 10_000, 9_999);
            }
            Op::Shrink(part, r) | Op::Expand(part, r) => {
                let Some(p) = s.metadata.partition("t", *part).cloned() else {
                    return;
                };
                if !p.has_leader() {
                    return;
                }
                let mut isr = p.isr.clone();
                if matches!(op, Op::Shrink(..)) {
                    isr.retain(|x| x != r);
                } else if !isr.contains(r) {
                    isr.push(*r);
                }
                let Some(e) = alive_epoch(s, p.leader) else {
                    return;
                };
                let _ = alter_partition(
                    s,
                    &AlterPartition {
                        broker: p.leader,
                        broker_epoch: e,
                        topic: "t".into(),
                        partition: *part,
                        leader_epoch: p.leader_epoch,
                        partition_epoch: p.partition_epoch,
                        isr,
                    },
                );
            }
            Op::Shutdown(id) => {
                if let Some(e) = alive_epoch(s, *id) {
                    let _ = controlled_shutdown(s, *id, e);
                }
            }
            Op::Drain(id) => {
                let _ = drain(s, *id);
            }
            Op::Preferred => {
                preferred_leader_election(s);
            }
            Op::Reassign(part, target) => {
                let _ = reassign(s, "t", *part, target.clone());
            }
            Op::Decommission(id) => {
                let _ = decommission(s, *id);
            }
            Op::ElectPreferred(part) => {
                let drained: Vec<bool> = s.metadata.brokers.values().map(|b| b.drained).collect();
                let named = part.map(|p| vec![("t".to_string(), p)]);
                let results = elect_preferred(s, named.as_deref());
                assert_eq!(
                    drained,
                    s.metadata
                        .brokers
                        .values()
                        .map(|b| b.drained)
                        .collect::<Vec<_>>(),
                    "elect_preferred undrained a broker"
                );
                for r in results {
                    if r.outcome == ElectionOutcome::Elected {
                        let p = s.metadata.partition(&r.topic, r.partition).unwrap();
                        assert_eq!(Some(&p.leader), p.target_replicas().first());
                    }
                }
            }
            Op::CancelReassignment(part) => {
                let before = s.metadata.partition("t", *part).cloned();
                if let Ok(p) = cancel_reassignment(s, "t", *part) {
                    let before = before.unwrap();
                    let original: Vec<i32> = before
                        .replicas
                        .iter()
                        .copied()
                        .filter(|r| !before.adding.contains(r))
                        .collect();
                    assert_eq!(p.replicas, original);
                    assert!(p.adding.is_empty() && p.removing.is_empty());
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        #[test]
        fn invariants_hold_under_random_operations(ops in proptest::collection::vec(op(), 1..60)) {
            let mut s = ControllerState::new("c".into());
            for id in 0..4 {
                register(&mut s, Registration { id, incarnation: "0".into(), host: "h".into(), port: 1, replication_host: None, rack: None, listeners: Vec::new(), unclean_shutdown: false, min_insync_replicas: None }, 0);
            }
            create_topic(&mut s, "t", 4, 3, BTreeMap::new(), uuid::Uuid::nil()).unwrap();
            for (i, op) in ops.iter().enumerate() {
                let before = s.clone();
                apply(&mut s, op, (i as i64 + 1) * 100_000);
                check(&before, &s, op);
                prop_assert!(s.metadata.version >= before.metadata.version);
            }
        }
    }
}
