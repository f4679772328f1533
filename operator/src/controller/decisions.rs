//! Controller decisions, as pure functions over [`ControllerState`] with the time passed in.
//! Each successful change bumps the metadata version (brokers long-poll for it) and the epochs
//! of every partition it touches. Rules follow Kafka's KRaft controller:
//!
//! - Leaders are elected from the ISR only (no unclean election); the ISR never becomes empty
//!   (its last member stays so it can lead again when it returns).
//! - A lost or restarted broker is fenced: out of every ISR, its leaderships moved.
//! - AlterPartition from the leader is committed only against the current leader epoch and
//!   partition epoch, so a deposed leader's proposals are refused.
//! - Reassignment (KIP-455): replicas = target + removing; when every added replica is in the
//!   ISR, the leader moves into the target set and the removed replicas are dropped.

use std::collections::BTreeMap;

pub use broker::cluster::controller_client::{AlterPartition, Registration};
use broker::metadata::{BrokerMeta, BrokerStatus, NO_LEADER, PartitionMeta, TopicMeta};

use super::placement::{self, Candidate, Load, PlacementError};
use super::state::ControllerState;

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

/// Removes `broker` from the ISR unless it is the last member.
fn shrink_isr(p: &mut PartitionMeta, broker: i32) -> bool {
    if p.isr.contains(&broker) && p.isr.len() > 1 {
        p.isr.retain(|r| *r != broker);
        p.partition_epoch += 1;
        true
    } else {
        false
    }
}

/// Fences `broker`: out of every ISR (but never emptying one), its leaderships moved.
fn fence(state: &mut ControllerState, broker: i32) {
    let brokers = state.metadata.brokers.clone();
    for t in state.metadata.topics.values_mut() {
        for p in &mut t.partitions {
            if p.leader == broker {
                elect(p, &brokers, Some(broker), true);
            }
            shrink_isr(p, broker);
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
    fence(state, reg.id);
    state.next_broker_epoch += 1;
    let epoch = state.next_broker_epoch;
    state.metadata.brokers.insert(
        reg.id,
        BrokerMeta {
            id: reg.id,
            epoch,
            host: reg.host,
            port: reg.port,
            rack: reg.rack.or(known_rack),
            listeners: reg.listeners,
            status: BrokerStatus::Alive,
            drained: false,
        },
    );
    state.incarnations.insert(reg.id, reg.incarnation);
    state.last_heartbeat_ms.insert(reg.id, now_ms);
    // Partitions left without a leader whose last ISR member is this broker can lead again.
    let brokers = state.metadata.brokers.clone();
    for t in state.metadata.topics.values_mut() {
        for p in &mut t.partitions {
            if !p.has_leader() {
                elect(p, &brokers, None, true);
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
    p.isr = req.isr.clone();
    p.partition_epoch += 1;
    complete_reassignment_if_ready(p, &brokers);
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
    let target_isr: Vec<i32> = p
        .isr
        .iter()
        .copied()
        .filter(|r| target.contains(r))
        .collect();
    if target_isr.is_empty() {
        return false;
    }
    if !target.contains(&p.leader) {
        let mut moved = p.clone();
        moved.replicas = target.clone();
        moved.isr = target_isr.clone();
        elect(&mut moved, brokers, None, true);
        if !moved.has_leader() {
            return false; // no live target replica can lead yet
        }
        p.leader = moved.leader;
        p.leader_epoch = moved.leader_epoch;
    }
    p.replicas = target;
    p.isr = target_isr;
    p.adding.clear();
    p.removing.clear();
    p.partition_epoch += 1;
    true
}

/// A new partition on `replicas` (placement returns at least one): the first leads, all are
/// in sync, epochs start at 0.
fn new_partition(index: usize, replicas: Vec<i32>) -> PartitionMeta {
    PartitionMeta {
        partition: index as i32,
        leader: replicas.first().copied().unwrap_or(NO_LEADER),
        isr: replicas.clone(),
        replicas,
        leader_epoch: 0,
        partition_epoch: 0,
        adding: Vec::new(),
        removing: Vec::new(),
    }
}

/// Creates a topic with placed replicas; every replica starts in the ISR.
pub fn create_topic(
    state: &mut ControllerState,
    name: &str,
    partitions: usize,
    rf: usize,
    configs: BTreeMap<String, String>,
    id: uuid::Uuid,
) -> Result<TopicMeta, ControllerError> {
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
    let candidates = candidates(state);
    let mut load = load(state);
    let sets = placement::assign(&candidates, partitions, rf, &mut load)?;
    let topic = TopicMeta {
        name: name.to_string(),
        id,
        configs,
        partitions: sets
            .into_iter()
            .enumerate()
            .map(|(i, replicas)| new_partition(i, replicas))
            .collect(),
    };
    state
        .metadata
        .topics
        .insert(name.to_string(), topic.clone());
    bump(state);
    Ok(topic)
}

/// Grows `name` to `partitions` partitions, placing the new ones like a new topic's (existing
/// load counted). Kafka cannot remove partitions, so fewer is refused; the same count is a no-op.
pub fn add_partitions(
    state: &mut ControllerState,
    name: &str,
    partitions: usize,
) -> Result<bool, ControllerError> {
    let existing = state
        .metadata
        .topics
        .get(name)
        .ok_or_else(|| ControllerError::UnknownTopic(name.to_string()))?;
    let have = existing.partitions.len();
    if partitions < have {
        return Err(ControllerError::PartitionDecrease {
            topic: name.to_string(),
            have,
            asked: partitions,
        });
    }
    if partitions == have {
        return Ok(false);
    }
    let rf = existing
        .partitions
        .first()
        .map_or(1, |p| p.target_replicas().len().max(1));
    let candidates = candidates(state);
    let mut load = load(state);
    let sets = placement::assign(&candidates, partitions - have, rf, &mut load)?;
    let topic = state
        .metadata
        .topics
        .get_mut(name)
        .ok_or_else(|| ControllerError::UnknownTopic(name.to_string()))?;
    for (i, replicas) in sets.into_iter().enumerate() {
        topic.partitions.push(new_partition(have + i, replicas));
    }
    bump(state);
    Ok(true)
}

/// Replaces a topic's config overrides. Returns whether anything changed.
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
    if topic.configs == configs {
        return Ok(false);
    }
    topic.configs = configs;
    bump(state);
    Ok(true)
}

pub fn delete_topic(state: &mut ControllerState, name: &str) -> Result<(), ControllerError> {
    state
        .metadata
        .topics
        .remove(name)
        .ok_or_else(|| ControllerError::UnknownTopic(name.to_string()))?;
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
                elect(p, &brokers, Some(broker), false);
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
            load.add(&[new]);
            target.push(new);
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
            rack: None,
            listeners: Vec::new(),
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
                        rack: None,
                        listeners: Vec::new(),
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
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        #[test]
        fn invariants_hold_under_random_operations(ops in proptest::collection::vec(op(), 1..60)) {
            let mut s = ControllerState::new("c".into());
            for id in 0..4 {
                register(&mut s, Registration { id, incarnation: "0".into(), host: "h".into(), port: 1, rack: None, listeners: Vec::new() }, 0);
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
