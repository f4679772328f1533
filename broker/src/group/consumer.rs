//! One group of the consumer group protocol (KIP-848), pure: no I/O, no clock (time comes in
//! as `now`, ms), no randomness (new member ids come in with the request).
//!
//! The group has an epoch, bumped whenever what the assignment depends on changes (a member
//! joins or leaves, a subscription or a subscribed topic's partition count changes); the
//! server-side assignor (`assignor`) then computes a target assignment for that epoch. Each
//! member converges on its target one heartbeat at a time, as Kafka's CurrentAssignmentBuilder
//! does, so no partition is ever owned by two members at once:
//! - partitions it must give up are taken away first (its epoch stays, state
//!   UnrevokedPartitions), and it may not advance until it says it no longer owns them;
//! - partitions it gains are handed over only once no other member owns them (state
//!   UnreleasedPartitions until then), and it takes the target's epoch;
//! - with neither, it is Stable at the target's epoch.
//!
//! A member that misses heartbeats for the session timeout, or does not give up partitions
//! within its rebalance timeout, is removed, and its partitions go to the others.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use kafka_protocol::error::ResponseError;
use uuid::Uuid;

use super::assignor::{self, Assignment};

/// How often a group looks its subscribed topics up again (new topics, new partitions, regex
/// matches) when no subscription changed.
const RESOLVE_INTERVAL_MS: i64 = 1_000;
/// Most topic names one member may subscribe to.
pub const MAX_SUBSCRIBED_TOPICS: usize = 10_000;

/// Member epochs with a meaning of their own in a heartbeat.
pub const JOIN_EPOCH: i32 = 0;
pub const LEAVE_EPOCH: i32 = -1;
pub const STATIC_LEAVE_EPOCH: i32 = -2;

/// Kafka's group.consumer.* settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub session_timeout_ms: i64,
    pub heartbeat_interval_ms: i32,
    pub max_size: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 5_000,
            max_size: 1_000,
        }
    }
}

/// A group's state as ConsumerGroupDescribe and ListGroups name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    Assigning,
    Reconciling,
    Stable,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::Assigning => "Assigning",
            GroupState::Reconciling => "Reconciling",
            GroupState::Stable => "Stable",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    Stable,
    /// Waiting for the member to give up `revoking`.
    UnrevokedPartitions,
    /// Some of its target is still owned by other members.
    UnreleasedPartitions,
}

/// A ConsumerGroupHeartbeat, decoded. `None` fields are "unchanged since the last one".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Heartbeat {
    pub member_id: String,
    /// The id to give a member joining without one (v0 clients let the broker choose).
    pub fresh_member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub subscribed_topic_names: Option<Vec<String>>,
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    /// The partitions the member owns now, by topic id.
    pub owned: Option<Assignment>,
    pub client_id: String,
    pub client_host: String,
    /// The request's version (v1 clients choose their own member id).
    pub version: i16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatReply {
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// The member's assignment, when it changed or the request was a full one.
    pub assignment: Option<Assignment>,
}

/// A refusal: Kafka's error and the message it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub error: ResponseError,
    pub message: String,
}

fn refuse(error: ResponseError, message: impl Into<String>) -> Refusal {
    Refusal {
        error,
        message: message.into(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub epoch: i32,
    pub previous_epoch: i32,
    pub state: MemberState,
    /// What it owns and may use.
    pub assigned: Assignment,
    /// What it owns but must give up.
    pub revoking: Assignment,
    pub subscribed_topic_names: BTreeSet<String>,
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    pub rebalance_timeout_ms: i32,
    session_deadline: i64,
    revoke_deadline: Option<i64>,
    /// Left with epoch -2 (a static member restarting): kept, with its partitions, until its
    /// session expires or its instance id joins again.
    left_static: bool,
}

/// What a topic the group subscribes to is: its id and partition count.
pub type TopicInfo = (Uuid, i32);

/// The topics as they are now.
pub trait Topics {
    fn info(&self, name: &str) -> Option<TopicInfo>;
    /// Every topic a regex subscription may match (internal topics left out).
    fn names(&self) -> Vec<String>;
}

impl Topics for BTreeMap<String, TopicInfo> {
    fn info(&self, name: &str) -> Option<TopicInfo> {
        self.get(name).copied()
    }
    fn names(&self) -> Vec<String> {
        self.keys().cloned().collect()
    }
}

/// Largest compiled regex subscription: a client's pattern must not take a coordinator's
/// memory (matching itself is linear in the topic name).
const REGEX_SIZE_LIMIT: usize = 64 << 10;

/// A subscription regex as Kafka applies it (RE2 syntax, the whole name must match). The
/// pattern must be valid on its own, so `a)|(b` cannot escape the anchors.
pub fn compile_regex(pattern: &str) -> Result<regex::Regex, Refusal> {
    let build = |p: &str| {
        regex::RegexBuilder::new(p)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
    };
    build(pattern)
        .and_then(|_| build(&format!("^(?:{pattern})$")))
        .map_err(|e| {
            refuse(
                ResponseError::InvalidRegularExpression,
                format!("SubscribedTopicRegex `{pattern}` is not a valid regular expression: {e}"),
            )
        })
}

#[derive(Debug, Clone)]
pub struct ConsumerGroup {
    epoch: i32,
    assignment_epoch: i32,
    members: BTreeMap<String, Member>,
    target: BTreeMap<String, Assignment>,
    /// The subscribed topics as of the last epoch bump: a change (a topic made, deleted or
    /// grown) bumps the epoch again.
    topics: BTreeMap<String, TopicInfo>,
    /// Which member owns each partition (assigned or being revoked).
    owners: HashMap<(Uuid, i32), String>,
    /// The members' subscription regexes, compiled.
    regexes: HashMap<String, regex::Regex>,
    /// When `topics` was last looked up.
    resolved_at: i64,
    /// No member gains a partition before this time (see `hold_assignments_until`).
    hold_until: i64,
    settings: Settings,
}

fn all(a: &Assignment) -> impl Iterator<Item = (Uuid, i32)> + '_ {
    a.iter()
        .flat_map(|(t, ps)| ps.iter().map(move |p| (*t, *p)))
}

fn is_subset(small: &Assignment, big: &Assignment) -> bool {
    all(small).all(|(t, p)| big.get(&t).is_some_and(|s| s.contains(&p)))
}

fn intersects(a: &Assignment, b: &Assignment) -> bool {
    all(a).any(|(t, p)| b.get(&t).is_some_and(|s| s.contains(&p)))
}

fn insert(a: &mut Assignment, t: Uuid, p: i32) {
    a.entry(t).or_default().insert(p);
}

impl ConsumerGroup {
    pub fn new(settings: Settings) -> Self {
        Self {
            epoch: 0,
            assignment_epoch: 0,
            members: BTreeMap::new(),
            target: BTreeMap::new(),
            topics: BTreeMap::new(),
            owners: HashMap::new(),
            regexes: HashMap::new(),
            resolved_at: i64::MIN,
            hold_until: i64::MIN,
            settings,
        }
    }

    /// Hands out no partition before `until`: a group made again after its coordinator
    /// moved (membership is not persisted) waits until the members of its previous
    /// incarnation have heard, at their next heartbeat, that they are fenced, so two clients
    /// do not consume one partition.
    pub fn hold_assignments_until(&mut self, until: i64) {
        self.hold_until = until;
    }

    /// Whether a member subscribes to `topic` (by name or by a regex that matches it).
    pub fn in_use(&self, topic: &str) -> bool {
        self.members.values().any(|m| self.subscribes(m, topic))
    }

    pub fn epoch(&self) -> i32 {
        self.epoch
    }
    pub fn assignment_epoch(&self) -> i32 {
        self.assignment_epoch
    }
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }
    pub fn target_of(&self, member: &str) -> Option<&Assignment> {
        self.target.get(member)
    }

    /// The assignor in use: the one the members ask for most (ties to the first listed),
    /// else the default.
    pub fn assignor(&self) -> &'static str {
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some(a) = &m.server_assignor {
                *votes.entry(a.as_str()).or_default() += 1;
            }
        }
        assignor::ASSIGNORS
            .iter()
            .copied()
            .max_by_key(|a| {
                let rank = assignor::ASSIGNORS.len()
                    - assignor::ASSIGNORS.iter().position(|x| x == a).unwrap_or(0);
                (votes.get(a).copied().unwrap_or(0), rank)
            })
            .unwrap_or(assignor::UNIFORM)
    }

    pub fn state(&self) -> GroupState {
        if self.members.is_empty() {
            GroupState::Empty
        } else if self.epoch > self.assignment_epoch {
            GroupState::Assigning
        } else if self
            .members
            .values()
            .any(|m| m.epoch != self.assignment_epoch || m.state != MemberState::Stable)
        {
            GroupState::Reconciling
        } else {
            GroupState::Stable
        }
    }

    /// Checks a heartbeat's fields as Kafka does before it touches the group.
    pub fn validate(hb: &Heartbeat) -> Result<(), Refusal> {
        let invalid = |m: &str| Err(refuse(ResponseError::InvalidRequest, m));
        if hb.instance_id.as_deref() == Some("") {
            return invalid("InstanceId can't be empty.");
        }
        if hb.rack_id.as_deref() == Some("") {
            return invalid("RackId can't be empty.");
        }
        if hb.member_id.is_empty() && (hb.version >= 1 || hb.member_epoch != JOIN_EPOCH) {
            return invalid("MemberId can't be empty.");
        }
        match hb.member_epoch {
            JOIN_EPOCH => {
                if hb.rebalance_timeout_ms == -1 {
                    return invalid("RebalanceTimeoutMs must be provided in first request.");
                }
                if hb.owned.as_ref().is_none_or(|o| !o.is_empty()) {
                    return invalid("TopicPartitions must be empty when (re-)joining.");
                }
                if hb.subscribed_topic_names.is_none() && hb.subscribed_topic_regex.is_none() {
                    return invalid(
                        "Either SubscribedTopicNames or SubscribedTopicRegex must be non-null when (re-)joining.",
                    );
                }
            }
            STATIC_LEAVE_EPOCH if hb.instance_id.is_none() => {
                return invalid("InstanceId can't be null.");
            }
            e if e < STATIC_LEAVE_EPOCH => return invalid("MemberEpoch is invalid."),
            _ => {}
        }
        if hb
            .subscribed_topic_names
            .as_ref()
            .is_some_and(|n| n.len() > MAX_SUBSCRIBED_TOPICS)
        {
            return invalid("SubscribedTopicNames lists more than 10000 topics.");
        }
        if let Some(a) = &hb.server_assignor
            && !assignor::ASSIGNORS.contains(&a.as_str())
        {
            return Err(refuse(
                ResponseError::UnsupportedAssignor,
                format!(
                    "ServerAssignor {a} is not supported. Supported assignors: {}.",
                    assignor::ASSIGNORS.join(", ")
                ),
            ));
        }
        Ok(())
    }

    /// Handles one heartbeat against the topics as they are now.
    pub fn heartbeat(
        &mut self,
        hb: Heartbeat,
        topics: &dyn Topics,
        now: i64,
    ) -> Result<HeartbeatReply, Refusal> {
        Self::validate(&hb)?;
        // A new regex is compiled before anything changes (an empty one removes it), and
        // kept only once the member is admitted.
        let new_regex = match hb.subscribed_topic_regex.as_deref() {
            Some(p) if !p.is_empty() && !self.regexes.contains_key(p) => {
                Some((p.to_string(), compile_regex(p)?))
            }
            _ => None,
        };
        if hb.member_epoch == LEAVE_EPOCH || hb.member_epoch == STATIC_LEAVE_EPOCH {
            return self.leave(&hb, now);
        }
        let full = hb.member_epoch == JOIN_EPOCH
            || (hb.rebalance_timeout_ms != -1
                && (hb.subscribed_topic_names.is_some() || hb.subscribed_topic_regex.is_some())
                && hb.owned.is_some());
        let (member_id, mut bump) = if hb.member_epoch == JOIN_EPOCH {
            self.admit(&hb, now)?
        } else {
            self.check_epoch(&hb)?;
            (hb.member_id.clone(), false)
        };
        if let Some((pattern, compiled)) = new_regex {
            self.regexes.insert(pattern, compiled);
        }
        let before = self.members[&member_id].clone();
        {
            let m = self.members.get_mut(&member_id).expect("admitted above");
            m.session_deadline = now.saturating_add(self.settings.session_timeout_ms);
            m.client_id = hb.client_id.clone();
            m.client_host = hb.client_host.clone();
            if hb.rack_id.is_some() {
                m.rack_id = hb.rack_id.clone();
            }
            if hb.rebalance_timeout_ms > 0 {
                m.rebalance_timeout_ms = hb.rebalance_timeout_ms;
            }
            if let Some(names) = &hb.subscribed_topic_names {
                let names: BTreeSet<String> = names.iter().cloned().collect();
                if names != m.subscribed_topic_names {
                    m.subscribed_topic_names = names;
                    bump = true;
                }
            }
            if let Some(pattern) = &hb.subscribed_topic_regex {
                let pattern = Some(pattern.clone()).filter(|p| !p.is_empty());
                if pattern != m.subscribed_topic_regex {
                    m.subscribed_topic_regex = pattern;
                    bump = true;
                }
            }
            if hb.server_assignor.is_some() && hb.server_assignor != m.server_assignor {
                m.server_assignor = hb.server_assignor.clone();
                bump = true;
            }
        }
        // The subscribed topics are looked up again when a subscription changed, else at
        // most once a RESOLVE_INTERVAL_MS: the cost of a group's many heartbeats does not
        // grow with its subscriptions and regexes.
        if bump || now.saturating_sub(self.resolved_at) >= RESOLVE_INTERVAL_MS {
            self.forget_unused_regexes();
            self.resolved_at = now;
            let resolved = self.subscribed_topics(topics);
            if resolved != self.topics {
                self.topics = resolved;
                bump = true;
            }
        }
        if bump {
            self.epoch += 1;
        }
        if self.epoch > self.assignment_epoch {
            self.compute_target();
        }
        self.reconcile(&member_id, hb.owned.as_ref(), now);
        let after = &self.members[&member_id];
        let changed = after.assigned != before.assigned || hb.member_epoch == JOIN_EPOCH;
        Ok(HeartbeatReply {
            member_id,
            member_epoch: after.epoch,
            heartbeat_interval_ms: self.settings.heartbeat_interval_ms,
            assignment: (full || changed).then(|| after.assigned.clone()),
        })
    }

    /// A member joining (epoch 0): a new member, a static member coming back under its
    /// instance id, or a member rejoining with its id. Returns its id and whether the group
    /// changed (a new member).
    fn admit(&mut self, hb: &Heartbeat, now: i64) -> Result<(String, bool), Refusal> {
        let id = if hb.member_id.is_empty() {
            hb.fresh_member_id.clone()
        } else {
            hb.member_id.clone()
        };
        if let Some(instance) = &hb.instance_id {
            let holder = self
                .members
                .values()
                .find(|m| m.instance_id.as_deref() == Some(instance))
                .map(|m| (m.id.clone(), m.left_static));
            match holder {
                // It left for a restart and comes back under its own id: it keeps its place.
                Some((old, true)) if old == id => {
                    if let Some(m) = self.members.get_mut(&id) {
                        m.left_static = false;
                    }
                    return Ok((id, false));
                }
                Some((old, false)) if old == id => {}
                Some((_, true)) if self.members.contains_key(&id) => {
                    return Err(refuse(
                        ResponseError::InvalidRequest,
                        format!("Member id {id} is in use by another member of the group."),
                    ));
                }
                // Its earlier incarnation left for a restart: the new one takes its place,
                // partitions and epoch included, without a rebalance.
                Some((old, true)) => {
                    let mut m = self.members.remove(&old).expect("found above");
                    m.id = id.clone();
                    m.left_static = false;
                    for tp in all(&m.assigned).chain(all(&m.revoking)) {
                        self.owners.insert(tp, id.clone());
                    }
                    if let Some(t) = self.target.remove(&old) {
                        self.target.insert(id.clone(), t);
                    }
                    self.members.insert(id.clone(), m);
                    return Ok((id, false));
                }
                Some((_, false)) => {
                    return Err(refuse(
                        ResponseError::UnreleasedInstanceId,
                        format!(
                            "Static member with unknown member id and instance id {instance} cannot join the group because the instance id is owned by another member."
                        ),
                    ));
                }
                None => {}
            }
        }
        if let Some(m) = self.members.get_mut(&id) {
            // The same member joining again (it lost its state): it starts over, and what it
            // owned is released.
            let released: Vec<_> = all(&m.assigned).chain(all(&m.revoking)).collect();
            m.assigned.clear();
            m.revoking.clear();
            m.state = MemberState::Stable;
            m.epoch = 0;
            m.previous_epoch = 0;
            m.revoke_deadline = None;
            for tp in released {
                self.owners.remove(&tp);
            }
            return Ok((id, false));
        }
        if self.members.len() >= self.settings.max_size {
            return Err(refuse(
                ResponseError::GroupMaxSizeReached,
                format!(
                    "The consumer group has reached its maximum capacity of {} members.",
                    self.settings.max_size
                ),
            ));
        }
        self.members.insert(
            id.clone(),
            Member {
                id: id.clone(),
                instance_id: hb.instance_id.clone(),
                rack_id: None,
                client_id: String::new(),
                client_host: String::new(),
                epoch: 0,
                previous_epoch: -1,
                state: MemberState::Stable,
                assigned: Assignment::new(),
                revoking: Assignment::new(),
                subscribed_topic_names: BTreeSet::new(),
                subscribed_topic_regex: None,
                server_assignor: None,
                rebalance_timeout_ms: hb.rebalance_timeout_ms,
                session_deadline: now.saturating_add(self.settings.session_timeout_ms),
                revoke_deadline: None,
                left_static: false,
            },
        );
        Ok((id, true))
    }

    /// Kafka's rule: a heartbeat may carry the member's epoch, or its previous one when the
    /// answer that moved it on was lost and it owns nothing it was not given since.
    fn check_epoch(&self, hb: &Heartbeat) -> Result<(), Refusal> {
        let Some(m) = self.members.get(&hb.member_id).filter(|m| !m.left_static) else {
            return Err(refuse(
                ResponseError::UnknownMemberId,
                format!("Member {} is not a member of the group.", hb.member_id),
            ));
        };
        let fenced = || {
            Err(refuse(
                ResponseError::FencedMemberEpoch,
                format!(
                    "The consumer group member has a smaller member epoch ({}) than the one known by the group coordinator ({}). The member must abandon all its partitions and rejoin.",
                    hb.member_epoch, m.epoch
                ),
            ))
        };
        if hb.member_epoch > m.epoch {
            return Err(refuse(
                ResponseError::FencedMemberEpoch,
                format!(
                    "The consumer group member has a greater member epoch ({}) than the one known by the group coordinator ({}). The member must abandon all its partitions and rejoin.",
                    hb.member_epoch, m.epoch
                ),
            ));
        }
        if hb.member_epoch < m.epoch
            && (hb.member_epoch != m.previous_epoch
                || hb
                    .owned
                    .as_ref()
                    .is_some_and(|o| !is_subset(o, &m.assigned)))
        {
            return fenced();
        }
        Ok(())
    }

    fn leave(&mut self, hb: &Heartbeat, now: i64) -> Result<HeartbeatReply, Refusal> {
        let id = if hb.member_epoch == STATIC_LEAVE_EPOCH {
            let instance = hb.instance_id.as_deref().unwrap_or_default();
            match self
                .members
                .values()
                .find(|m| m.instance_id.as_deref() == Some(instance))
            {
                Some(m) if m.id == hb.member_id => m.id.clone(),
                Some(_) => {
                    return Err(refuse(
                        ResponseError::FencedInstanceId,
                        format!(
                            "Static member {} with instance id {instance} is not the member of the instance id.",
                            hb.member_id
                        ),
                    ));
                }
                None => {
                    return Err(refuse(
                        ResponseError::UnknownMemberId,
                        format!("Instance id {instance} is unknown."),
                    ));
                }
            }
        } else {
            hb.member_id.clone()
        };
        if !self.members.contains_key(&id) {
            return Err(refuse(
                ResponseError::UnknownMemberId,
                format!("Member {id} is not a member of the group."),
            ));
        }
        if hb.member_epoch == STATIC_LEAVE_EPOCH {
            // Kept until its session ends, so its restart finds its partitions.
            if let Some(m) = self.members.get_mut(&id) {
                m.left_static = true;
                m.session_deadline = now.saturating_add(self.settings.session_timeout_ms);
            }
        } else {
            self.remove(&id);
        }
        Ok(HeartbeatReply {
            member_id: id,
            member_epoch: hb.member_epoch,
            heartbeat_interval_ms: 0,
            assignment: None,
        })
    }

    /// Removes a member: its partitions are released and the group rebalances.
    fn remove(&mut self, id: &str) {
        if let Some(m) = self.members.remove(id) {
            for tp in all(&m.assigned).chain(all(&m.revoking)) {
                if self.owners.get(&tp).is_some_and(|o| o == id) {
                    self.owners.remove(&tp);
                }
            }
            self.target.remove(id);
            self.epoch += 1;
        }
    }

    /// Removes members whose session ended or who kept partitions past their rebalance
    /// timeout; returns their ids.
    pub fn tick(&mut self, now: i64) -> Vec<String> {
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| now >= m.session_deadline || m.revoke_deadline.is_some_and(|d| now >= d))
            .map(|m| m.id.clone())
            .collect();
        for id in &gone {
            self.remove(id);
        }
        self.forget_unused_regexes();
        if !gone.is_empty() && !self.members.is_empty() {
            // The others learn of the new target at their next heartbeat.
            self.compute_target();
        }
        gone
    }

    /// Every topic some member subscribes to, by name or by regex, as it is now.
    fn subscribed_topics(&self, topics: &dyn Topics) -> BTreeMap<String, TopicInfo> {
        let mut names: BTreeSet<String> = self
            .members
            .values()
            .flat_map(|m| m.subscribed_topic_names.iter().cloned())
            .collect();
        if !self.regexes.is_empty() {
            names.extend(
                topics
                    .names()
                    .into_iter()
                    .filter(|n| self.regexes.values().any(|r| r.is_match(n))),
            );
        }
        names
            .into_iter()
            .filter_map(|n| topics.info(&n).map(|i| (n, i)))
            .collect()
    }

    fn forget_unused_regexes(&mut self) {
        let used: BTreeSet<&str> = self
            .members
            .values()
            .filter_map(|m| m.subscribed_topic_regex.as_deref())
            .collect();
        self.regexes.retain(|p, _| used.contains(p.as_str()));
    }

    /// Whether `m` subscribes to topic `name`.
    fn subscribes(&self, m: &Member, name: &str) -> bool {
        m.subscribed_topic_names.contains(name)
            || m.subscribed_topic_regex
                .as_ref()
                .and_then(|p| self.regexes.get(p))
                .is_some_and(|r| r.is_match(name))
    }

    fn compute_target(&mut self) {
        let specs: BTreeMap<String, assignor::Spec> = self
            .members
            .values()
            .map(|m| {
                let spec = assignor::Spec {
                    subscribed: self
                        .topics
                        .iter()
                        .filter(|(n, _)| self.subscribes(m, n))
                        .map(|(_, i)| i.0)
                        .collect(),
                    current: self.target.get(&m.id).cloned().unwrap_or_default(),
                };
                (m.id.clone(), spec)
            })
            .collect();
        let partitions: BTreeMap<Uuid, i32> = self.topics.values().copied().collect();
        self.target = assignor::assign(self.assignor(), &specs, &partitions);
        self.assignment_epoch = self.epoch;
    }

    /// Moves `id` one step towards its target (Kafka's CurrentAssignmentBuilder).
    fn reconcile(&mut self, id: &str, owned: Option<&Assignment>, now: i64) {
        let Some(m) = self.members.get(id) else {
            return;
        };
        let target_epoch = self.assignment_epoch;
        match m.state {
            MemberState::Stable if m.epoch == target_epoch => return,
            // Only once the member says it let go of the revoked partitions (no report
            // counts as still owning them).
            MemberState::UnrevokedPartitions
                if owned.is_none_or(|o| intersects(o, &m.revoking)) =>
            {
                return;
            }
            _ => {}
        }
        let target = self.target.get(id).cloned().unwrap_or_default();
        let current = m.assigned.clone();
        let mut keep = Assignment::new();
        let mut revoke = Assignment::new();
        let mut gain = Assignment::new();
        let mut unreleased = false;
        for (t, p) in all(&current) {
            if target.get(&t).is_some_and(|s| s.contains(&p)) {
                insert(&mut keep, t, p);
            } else {
                insert(&mut revoke, t, p);
            }
        }
        for (t, p) in all(&target) {
            if current.get(&t).is_some_and(|s| s.contains(&p)) {
                continue;
            }
            if now < self.hold_until || self.owners.get(&(t, p)).is_some_and(|o| o != id) {
                unreleased = true;
            } else {
                insert(&mut gain, t, p);
            }
        }
        let owns_revoked = owned.is_none_or(|o| intersects(o, &revoke));
        let m = self.members.get_mut(id).expect("checked above");
        // Ownership as it was before this step: all of it is released below and re-taken.
        let before: Vec<(Uuid, i32)> = all(&m.assigned).chain(all(&m.revoking)).collect();
        if !revoke.is_empty() && owns_revoked {
            // Its epoch stays until it has let go (Kafka 4.2+). Each new revocation gets a
            // whole rebalance timeout, as Kafka reschedules it.
            if m.state != MemberState::UnrevokedPartitions || m.revoking != revoke {
                let timeout = i64::from(m.rebalance_timeout_ms.max(0));
                m.revoke_deadline = Some(now.saturating_add(timeout));
            }
            m.state = MemberState::UnrevokedPartitions;
            m.assigned = keep;
            m.revoking = revoke;
        } else {
            for (t, p) in all(&gain) {
                insert(&mut keep, t, p);
            }
            m.state = if unreleased {
                MemberState::UnreleasedPartitions
            } else {
                MemberState::Stable
            };
            m.assigned = keep;
            m.revoking.clear();
            m.revoke_deadline = None;
            if m.epoch != target_epoch {
                m.previous_epoch = m.epoch;
                m.epoch = target_epoch;
            }
        }
        let now_owned: Vec<(Uuid, i32)> = all(&m.assigned).chain(all(&m.revoking)).collect();
        for tp in before {
            if self.owners.get(&tp).is_some_and(|o| o == id) {
                self.owners.remove(&tp);
            }
        }
        for tp in now_owned {
            self.owners.insert(tp, id.to_string());
        }
    }

    /// OffsetCommit from a member (Kafka's ConsumerGroup.validateOffsetCommit): the member
    /// must exist and carry its current epoch. Commits without a member (epoch < 0) are
    /// taken only while the group is empty.
    pub fn validate_commit(&self, member_id: &str, member_epoch: i32) -> Result<(), Refusal> {
        if member_epoch < 0 && self.members.is_empty() {
            return Ok(());
        }
        let Some(m) = self.members.get(member_id) else {
            return Err(refuse(
                ResponseError::UnknownMemberId,
                format!("Member {member_id} is not a member of the group."),
            ));
        };
        if member_epoch != m.epoch {
            return Err(refuse(
                ResponseError::StaleMemberEpoch,
                format!(
                    "The member epoch {member_epoch} is stale; the current one is {}.",
                    m.epoch
                ),
            ));
        }
        Ok(())
    }

    /// OffsetFetch with a member id and epoch (v9+): the same rule, without the empty-group
    /// exception for a fetch that names no member.
    pub fn validate_fetch(
        &self,
        member_id: Option<&str>,
        member_epoch: i32,
    ) -> Result<(), Refusal> {
        match member_id {
            None => Ok(()),
            Some(_) if member_epoch < 0 => Ok(()),
            Some(id) => self.validate_commit(id, member_epoch),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(n: u8) -> Uuid {
        Uuid::from_bytes([n; 16])
    }

    /// Topics "a" (6 partitions) and "b" (2).
    fn topics() -> BTreeMap<String, TopicInfo> {
        BTreeMap::from([
            ("a".to_string(), (topic(1), 6)),
            ("b".to_string(), (topic(2), 2)),
        ])
    }

    fn join(id: &str, subs: &[&str]) -> Heartbeat {
        Heartbeat {
            member_id: id.into(),
            member_epoch: 0,
            rebalance_timeout_ms: 30_000,
            subscribed_topic_names: Some(subs.iter().map(|s| s.to_string()).collect()),
            owned: Some(Assignment::new()),
            version: 1,
            ..Heartbeat::default()
        }
    }

    fn beat(id: &str, epoch: i32, owned: &Assignment) -> Heartbeat {
        Heartbeat {
            member_id: id.into(),
            member_epoch: epoch,
            rebalance_timeout_ms: -1,
            owned: Some(owned.clone()),
            version: 1,
            ..Heartbeat::default()
        }
    }

    fn count(a: &Assignment) -> usize {
        a.values().map(BTreeSet::len).sum()
    }

    /// A client that does what it is told: owns exactly what the last answer gave it.
    struct Client {
        id: String,
        epoch: i32,
        owned: Assignment,
    }

    impl Client {
        fn join(g: &mut ConsumerGroup, id: &str, now: i64) -> Client {
            let r = g.heartbeat(join(id, &["a"]), &topics(), now).unwrap();
            Client {
                id: r.member_id,
                epoch: r.member_epoch,
                owned: r.assignment.unwrap(),
            }
        }
        fn beat(&mut self, g: &mut ConsumerGroup, now: i64) {
            let r = g
                .heartbeat(beat(&self.id, self.epoch, &self.owned), &topics(), now)
                .unwrap();
            self.epoch = r.member_epoch;
            if let Some(a) = r.assignment {
                self.owned = a;
            }
        }
    }

    fn no_overlap(clients: &[Client]) {
        let mut seen = BTreeSet::new();
        for c in clients {
            for tp in all(&c.owned) {
                assert!(seen.insert(tp), "{tp:?} owned twice");
            }
        }
    }

    #[test]
    fn a_new_member_gets_partitions_only_after_the_old_owner_gives_them_up() {
        let mut g = ConsumerGroup::new(Settings::default());
        let mut a = Client::join(&mut g, "m-a", 0);
        assert_eq!(count(&a.owned), 6);
        assert_eq!(g.state(), GroupState::Stable);
        let mut b = Client::join(&mut g, "m-b", 1);
        // b's target is still a's: it gets nothing yet and waits.
        assert_eq!(count(&b.owned), 0);
        assert_eq!(g.state(), GroupState::Reconciling);
        // a is told to give up three partitions, keeping its epoch.
        a.beat(&mut g, 2);
        assert_eq!(count(&a.owned), 3);
        assert_eq!(a.epoch, 1);
        assert_eq!(g.members["m-a"].state, MemberState::UnrevokedPartitions);
        b.beat(&mut g, 3);
        assert_eq!(count(&b.owned), 0, "still owned by a until it acknowledges");
        // a acknowledges by heartbeating without them: it moves to the new epoch.
        a.beat(&mut g, 4);
        assert_eq!(a.epoch, 2);
        b.beat(&mut g, 5);
        assert_eq!(count(&b.owned), 3);
        no_overlap(&[a, b]);
        assert_eq!(g.state(), GroupState::Stable);
    }

    #[test]
    fn epochs_are_checked_as_kafka_does() {
        let mut g = ConsumerGroup::new(Settings::default());
        let a = Client::join(&mut g, "m-a", 0);
        let err = g.heartbeat(beat("m-a", a.epoch + 1, &a.owned), &topics(), 1);
        assert_eq!(err.unwrap_err().error, ResponseError::FencedMemberEpoch);
        let err = g.heartbeat(beat("nobody", 1, &Assignment::new()), &topics(), 1);
        assert_eq!(err.unwrap_err().error, ResponseError::UnknownMemberId);
        // A second member moves the group on; a's previous epoch is still accepted while it
        // owns nothing beyond what it was given.
        let _b = Client::join(&mut g, "m-b", 2);
        assert!(
            g.heartbeat(beat("m-a", a.epoch, &a.owned), &topics(), 3)
                .is_ok()
        );
        assert_eq!(
            g.validate_commit("m-a", 99).unwrap_err().error,
            ResponseError::StaleMemberEpoch
        );
        assert_eq!(
            g.validate_commit("x", 1).unwrap_err().error,
            ResponseError::UnknownMemberId
        );
        assert!(g.validate_commit("", -1).is_err(), "the group has members");
    }

    #[test]
    fn bad_heartbeats_are_refused_with_kafkas_messages() {
        let mut hb = join("m", &["a"]);
        hb.rebalance_timeout_ms = -1;
        assert_eq!(
            ConsumerGroup::validate(&hb).unwrap_err().message,
            "RebalanceTimeoutMs must be provided in first request."
        );
        let mut hb = join("m", &["a"]);
        hb.server_assignor = Some("sticky".into());
        assert_eq!(
            ConsumerGroup::validate(&hb).unwrap_err().error,
            ResponseError::UnsupportedAssignor
        );
        let mut hb = join("", &["a"]);
        assert!(
            ConsumerGroup::validate(&hb).is_err(),
            "v1 needs a member id"
        );
        hb.version = 0;
        assert!(
            ConsumerGroup::validate(&hb).is_ok(),
            "v0 lets the broker choose"
        );
        let mut hb = join("m", &["a"]);
        hb.subscribed_topic_names = None;
        assert!(ConsumerGroup::validate(&hb).is_err());
    }

    #[test]
    fn a_silent_member_is_removed_and_its_partitions_go_to_the_others() {
        let mut g = ConsumerGroup::new(Settings::default());
        let mut a = Client::join(&mut g, "m-a", 0);
        let mut b = Client::join(&mut g, "m-b", 0);
        for t in 1..4 {
            a.beat(&mut g, t);
            b.beat(&mut g, t);
        }
        assert_eq!((count(&a.owned), count(&b.owned)), (3, 3));
        // b stops; a keeps beating.
        assert_eq!(g.tick(44_000), Vec::<String>::new());
        a.beat(&mut g, 44_000);
        assert_eq!(g.tick(45_003), vec!["m-b".to_string()]);
        a.beat(&mut g, 45_004);
        assert_eq!(count(&a.owned), 6);
    }

    #[test]
    fn a_member_that_keeps_revoked_partitions_past_its_rebalance_timeout_is_removed() {
        let mut g = ConsumerGroup::new(Settings::default());
        let mut a = Client::join(&mut g, "m-a", 0);
        let mut b = Client::join(&mut g, "m-b", 0);
        // a is asked to revoke but keeps reporting the partitions as owned.
        let stubborn = a.owned.clone();
        a.beat(&mut g, 1);
        for t in [10_000, 20_000] {
            g.heartbeat(beat("m-a", a.epoch, &stubborn), &topics(), t)
                .unwrap();
            b.beat(&mut g, t);
            assert_eq!(count(&b.owned), 0);
        }
        assert_eq!(g.tick(30_001), vec!["m-a".to_string()]);
        b.beat(&mut g, 30_002);
        assert_eq!(count(&b.owned), 6);
    }

    #[test]
    fn a_static_member_restarting_gets_its_partitions_back_without_a_rebalance() {
        let mut g = ConsumerGroup::new(Settings::default());
        let mut hb = join("m-1", &["a"]);
        hb.instance_id = Some("i".into());
        let first = g.heartbeat(hb.clone(), &topics(), 0).unwrap();
        let epoch = g.epoch();
        let mut leave = beat("m-1", STATIC_LEAVE_EPOCH, &Assignment::new());
        leave.instance_id = Some("i".into());
        g.heartbeat(leave, &topics(), 1).unwrap();
        // Someone else with the instance id while the first is active is refused; after the
        // static leave the new incarnation takes over.
        hb.member_id = "m-2".into();
        let r = g.heartbeat(hb, &topics(), 2).unwrap();
        assert_eq!(r.assignment, first.assignment);
        assert_eq!(g.epoch(), epoch);
        assert!(!g.members.contains_key("m-1"));
    }

    #[test]
    fn regex_subscriptions_match_whole_names_and_follow_new_topics() {
        let mut g = ConsumerGroup::new(Settings::default());
        let mut hb = join("m-r", &[]);
        hb.subscribed_topic_names = None;
        hb.subscribed_topic_regex = Some("b|c.*".into());
        let r = g.heartbeat(hb, &topics(), 0).unwrap();
        // "b" matches; "a" does not, nor would "ab" (the whole name must match).
        assert_eq!(
            r.assignment.unwrap().keys().collect::<Vec<_>>(),
            [&topic(2)]
        );
        let mut more = topics();
        more.insert("cats".into(), (topic(3), 1));
        more.insert("ab".into(), (topic(4), 1));
        let owned = g.members["m-r"].assigned.clone();
        let r = g
            .heartbeat(beat("m-r", r.member_epoch, &owned), &more, 1_000)
            .unwrap();
        let got: Vec<_> = r.assignment.unwrap().into_keys().collect();
        assert_eq!(got, [topic(2), topic(3)]);
        let mut bad = join("m-x", &[]);
        bad.subscribed_topic_regex = Some("(".into());
        assert_eq!(
            g.heartbeat(bad, &topics(), 2).unwrap_err().error,
            ResponseError::InvalidRegularExpression
        );
        assert!(!g.members.contains_key("m-x"), "a refused join adds nobody");
    }

    #[test]
    fn a_static_member_that_left_and_rejoins_under_its_own_id_keeps_going() {
        let mut g = ConsumerGroup::new(Settings::default());
        let mut hb = join("m-1", &["a"]);
        hb.instance_id = Some("i".into());
        let r = g.heartbeat(hb.clone(), &topics(), 0).unwrap();
        let mut leave = beat("m-1", STATIC_LEAVE_EPOCH, &Assignment::new());
        leave.instance_id = Some("i".into());
        g.heartbeat(leave, &topics(), 1).unwrap();
        let again = g.heartbeat(hb, &topics(), 2).unwrap();
        assert_eq!(again.assignment, r.assignment);
        let owned = again.assignment.unwrap();
        let mut next = beat("m-1", again.member_epoch, &owned);
        next.instance_id = Some("i".into());
        assert!(
            g.heartbeat(next, &topics(), 3).is_ok(),
            "not fenced after rejoining"
        );
    }

    #[test]
    fn a_static_replacement_may_not_take_another_members_id() {
        let mut g = ConsumerGroup::new(Settings::default());
        let _b = Client::join(&mut g, "m-b", 0);
        let mut hb = join("m-1", &["a"]);
        hb.instance_id = Some("i".into());
        g.heartbeat(hb.clone(), &topics(), 1).unwrap();
        let mut leave = beat("m-1", STATIC_LEAVE_EPOCH, &Assignment::new());
        leave.instance_id = Some("i".into());
        g.heartbeat(leave, &topics(), 2).unwrap();
        hb.member_id = "m-b".into();
        let err = g.heartbeat(hb, &topics(), 3).unwrap_err();
        assert_eq!(err.error, ResponseError::InvalidRequest);
        assert!(g.members.contains_key("m-1") && g.members.contains_key("m-b"));
    }

    #[test]
    fn each_new_revocation_gets_a_whole_rebalance_timeout() {
        let mut g = ConsumerGroup::new(Settings::default());
        let mut a = Client::join(&mut g, "m-a", 0);
        let _b = Client::join(&mut g, "m-b", 0);
        a.beat(&mut g, 1); // asked to revoke 3 partitions, deadline 30_001
        let kept = g.members["m-a"].assigned.clone();
        // It lets go at 29_000 and is asked to give up more when a third member joins.
        g.heartbeat(beat("m-a", a.epoch, &kept), &topics(), 29_000)
            .unwrap();
        let _c = Client::join(&mut g, "m-c", 29_100);
        let r = g
            .heartbeat(
                beat("m-a", g.members["m-a"].epoch, &kept),
                &topics(),
                29_200,
            )
            .unwrap();
        assert_eq!(
            g.members["m-a"].state,
            MemberState::UnrevokedPartitions,
            "{r:?}"
        );
        assert!(g.tick(31_000).is_empty(), "removed on the old deadline");
        // (m-b and m-c sent no heartbeat since joining: their sessions ended too.)
        assert!(g.tick(59_200).contains(&"m-a".to_string()));
    }

    #[test]
    fn a_regex_cannot_escape_its_anchors() {
        for bad in ["a)|(b", "nope)|(?:"] {
            let err = compile_regex(bad).unwrap_err();
            assert_eq!(err.error, ResponseError::InvalidRegularExpression, "{bad}");
        }
        assert!(compile_regex("a|b").unwrap().is_match("b"));
        assert!(!compile_regex("a|b").unwrap().is_match("ab"));
    }

    #[test]
    fn a_held_group_hands_out_partitions_only_after_the_hold() {
        let mut g = ConsumerGroup::new(Settings::default());
        g.hold_assignments_until(10_000);
        let mut a = Client::join(&mut g, "m-a", 0);
        assert_eq!(count(&a.owned), 0);
        assert_eq!(g.members["m-a"].state, MemberState::UnreleasedPartitions);
        a.beat(&mut g, 5_000);
        assert_eq!(count(&a.owned), 0);
        a.beat(&mut g, 10_000);
        assert_eq!(count(&a.owned), 6);
        assert_eq!(g.state(), GroupState::Stable);
    }

    #[test]
    fn a_grown_topic_bumps_the_epoch_and_is_assigned() {
        let mut g = ConsumerGroup::new(Settings::default());
        let mut a = Client::join(&mut g, "m-a", 0);
        let grown = BTreeMap::from([("a".to_string(), (topic(1), 8))]);
        let r = g
            .heartbeat(beat("m-a", a.epoch, &a.owned), &grown, 1_000)
            .unwrap();
        a.epoch = r.member_epoch;
        assert_eq!(count(&r.assignment.unwrap()), 8);
        assert_eq!(a.epoch, 2);
    }

    proptest::proptest! {
        /// Members that do as they are told never own a partition at the same time, whatever
        /// the order of joins, leaves and heartbeats; once they all keep beating the group
        /// becomes Stable with every partition owned.
        #[test]
        fn no_partition_is_ever_owned_twice(ops in proptest::collection::vec((0u8..3, 0usize..4), 1..60)) {
            let mut g = ConsumerGroup::new(Settings::default());
            let mut clients: Vec<Option<Client>> = (0..4).map(|_| None).collect();
            for (t, (op, i)) in ops.into_iter().enumerate() {
                let now = t as i64;
                match (op, clients[i].is_some()) {
                    (0, false) => clients[i] = Some(Client::join(&mut g, &format!("m{i}"), now)),
                    (1, true) => {
                        let c = clients[i].take().unwrap();
                        g.heartbeat(beat(&c.id, LEAVE_EPOCH, &c.owned), &topics(), now).unwrap();
                    }
                    (_, true) => clients[i].as_mut().unwrap().beat(&mut g, now),
                    _ => {}
                }
                let live: Vec<&Client> = clients.iter().flatten().collect();
                let mut seen = BTreeSet::new();
                for c in &live {
                    for tp in all(&c.owned) {
                        proptest::prop_assert!(seen.insert(tp), "{:?} owned twice", tp);
                    }
                }
            }
            for round in 0..6 {
                for c in clients.iter_mut().flatten() {
                    c.beat(&mut g, 1_000 + round);
                }
            }
            let live: Vec<&Client> = clients.iter().flatten().collect();
            if !live.is_empty() {
                proptest::prop_assert_eq!(g.state(), GroupState::Stable);
                proptest::prop_assert_eq!(live.iter().map(|c| count(&c.owned)).sum::<usize>(), 6);
            }
        }
    }
}
