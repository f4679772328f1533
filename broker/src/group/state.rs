//! One consumer group's membership state machine (Kafka's classic group protocol), pure: no
//! I/O, no clock, no randomness. Time comes in as `now` (ms); new member ids come in with the
//! request; requests that must wait (JoinGroup until the rebalance completes, SyncGroup until
//! the leader's assignment) are parked under a caller-chosen [`Ticket`] and answered later
//! through [`Output`]s, which the caller delivers. Writes to the offsets log are asked for with
//! [`Output::Store`]; the caller persists the snapshot and only then delivers its `then`
//! answers (or calls [`Group::store_failed`]).
//!
//! States and transitions follow Kafka's GroupMetadata/GroupCoordinator:
//! Empty -> PreparingRebalance (a member joins; the first rebalance of an empty group waits
//! `initial_rebalance_delay_ms`, extended while members keep arriving, KIP-134) ->
//! CompletingRebalance (every member rejoined or the rebalance timeout passed; members that
//! did not rejoin are dropped, a leader is chosen, the generation is bumped) -> Stable (the
//! leader's SyncGroup carried the assignment) -> PreparingRebalance (a member joins, leaves,
//! changes its subscription, or its session expires). Dead is the state of a deleted group.
//! Static members (group.instance.id, KIP-345) keep their place across restarts: a rejoin
//! with the same instance id takes over the old member id's assignment without a rebalance,
//! and the old member id is fenced (FENCED_INSTANCE_ID).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;

/// Identifies a parked request; the caller maps it to the connection waiting for an answer.
pub type Ticket = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl State {
    /// Kafka's names, as DescribeGroups and ListGroups report them.
    pub fn name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
            State::Dead => "Dead",
        }
    }
}

/// Broker-wide group settings (Kafka's group.* configs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    pub initial_rebalance_delay_ms: i64,
    /// Members (joined and pending) a group may hold.
    pub max_size: usize,
    /// Largest sum of protocol metadata one member may send, and largest assignment.
    pub max_member_metadata_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            max_size: 1_000,
            max_member_metadata_bytes: 1 << 20,
        }
    }
}

/// A JoinGroup, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRequest {
    /// Empty for a member joining for the first time.
    pub member_id: String,
    pub instance_id: Option<String>,
    /// JoinGroup v4+: a new dynamic member first gets MEMBER_ID_REQUIRED and its id (KIP-394).
    pub require_known_member_id: bool,
    /// The id this member gets if it is new (the caller makes it: client id + UUID).
    pub fresh_member_id: String,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub protocol_type: String,
    /// (name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// The leader's assignment (empty from followers).
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JoinedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JoinResponse {
    pub error: Option<ResponseError>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Every member with its metadata for the chosen protocol: sent to the leader only.
    pub members: Vec<JoinedMember>,
}

impl JoinResponse {
    fn error(error: ResponseError, member_id: &str) -> Self {
        Self {
            error: Some(error),
            generation: -1,
            member_id: member_id.to_string(),
            ..Self::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncResponse {
    pub error: Option<ResponseError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResponse {
    pub fn error(error: ResponseError) -> Self {
        Self {
            error: Some(error),
            ..Self::default()
        }
    }
}

/// What the group's metadata record holds (Kafka's GroupMetadataValue): enough to rebuild the
/// group on a new coordinator.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupMetadata {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    pub state_timestamp_ms: i64,
    pub members: Vec<MemberMetadata>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemberMetadata {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// Metadata for the chosen protocol only.
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// What the caller must do after an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Join(Ticket, JoinResponse),
    Sync(Ticket, SyncResponse),
    /// Persist the group's metadata; once it is committed, deliver `then` and call
    /// [`Group::stored`]. If it cannot be committed, answer `then`'s tickets with an error and
    /// call [`Group::store_failed`].
    Store {
        metadata: GroupMetadata,
        then: Vec<Output>,
    },
}

/// DescribeGroups' view of a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSummary {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Member {
    id: String,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    rebalance_timeout_ms: i32,
    session_timeout_ms: i32,
    protocol_type: String,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    join_waiter: Option<Ticket>,
    sync_waiter: Option<Ticket>,
    /// The session expires at this time unless a heartbeat (or any request) comes first.
    session_deadline: i64,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    /// A member parked in JoinGroup or SyncGroup is alive: its client is waiting on us.
    fn alive(&self, now: i64) -> bool {
        self.join_waiter.is_some() || self.sync_waiter.is_some() || now < self.session_deadline
    }

    fn touch(&mut self, now: i64) {
        self.session_deadline = now.saturating_add(i64::from(self.session_timeout_ms));
    }
}

/// The first rebalance of an empty group waits for more members (KIP-134).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InitialDelay {
    deadline: i64,
    remaining_ms: i64,
    member_added: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub id: String,
    state: State,
    generation: i32,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Ids handed out with MEMBER_ID_REQUIRED, with the time they expire unused.
    pending: BTreeMap<String, i64>,
    /// instance id -> member id.
    static_members: BTreeMap<String, String>,
    /// Members of this generation that have not sent SyncGroup yet.
    pending_sync: BTreeSet<String>,
    join_deadline: Option<i64>,
    initial_delay: Option<InitialDelay>,
    sync_deadline: Option<i64>,
    /// The leader's assignment for this generation is being written; the group turns Stable
    /// and members get their shares only once it is committed (Kafka does the same).
    storing: Option<i32>,
    state_since_ms: i64,
    limits: Limits,
}

impl Group {
    pub fn new(id: impl Into<String>, now: i64, limits: Limits) -> Self {
        Self {
            limits,
            id: id.into(),
            state: State::Empty,
            generation: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: BTreeMap::new(),
            pending: BTreeMap::new(),
            static_members: BTreeMap::new(),
            pending_sync: BTreeSet::new(),
            join_deadline: None,
            initial_delay: None,
            sync_deadline: None,
            storing: None,
            state_since_ms: now,
        }
    }

    /// Rebuilds a group from its last metadata record (a new coordinator loading the log).
    /// A group with members is Stable; their sessions start now.
    pub fn from_metadata(
        id: impl Into<String>,
        md: &GroupMetadata,
        now: i64,
        limits: Limits,
    ) -> Self {
        let mut g = Self::new(id, now, limits);
        g.generation = md.generation;
        g.protocol_type = (!md.protocol_type.is_empty()).then(|| md.protocol_type.clone());
        g.protocol_name = md.protocol_name.clone();
        g.leader = md.leader.clone();
        for m in &md.members {
            let protocols = md
                .protocol_name
                .iter()
                .map(|p| (p.clone(), m.subscription.clone()))
                .collect();
            let mut member = Member {
                id: m.member_id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                session_timeout_ms: m.session_timeout_ms,
                protocol_type: md.protocol_type.clone(),
                protocols,
                assignment: m.assignment.clone(),
                join_waiter: None,
                sync_waiter: None,
                session_deadline: 0,
            };
            member.touch(now);
            if let Some(i) = &m.instance_id {
                g.static_members.insert(i.clone(), m.member_id.clone());
            }
            g.members.insert(m.member_id.clone(), member);
        }
        if g.members.is_empty() {
            // Empty since the record says: offsets retention counts from then.
            if md.state_timestamp_ms > 0 {
                g.state_since_ms = md.state_timestamp_ms;
            }
        } else {
            g.state = State::Stable;
            if g.leader.as_ref().is_none_or(|l| !g.members.contains_key(l)) {
                g.leader = g.members.keys().next().cloned();
            }
        }
        g
    }

    pub fn state(&self) -> State {
        self.state
    }
    pub fn generation(&self) -> i32 {
        self.generation
    }
    pub fn protocol_type(&self) -> Option<&str> {
        self.protocol_type.as_deref()
    }
    /// When the group entered its current state.
    pub fn state_since_ms(&self) -> i64 {
        self.state_since_ms
    }
    pub fn protocol_name(&self) -> Option<&str> {
        self.protocol_name.as_deref()
    }
    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }
    pub fn member_count(&self) -> usize {
        self.members.len()
    }
    pub fn has_member(&self, id: &str) -> bool {
        self.members.contains_key(id)
    }
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.pending.is_empty()
    }

    /// The record that persists this group now.
    pub fn metadata(&self) -> GroupMetadata {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        GroupMetadata {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol_name: self.protocol_name.clone(),
            leader: self.leader.clone(),
            state_timestamp_ms: self.state_since_ms,
            members: self
                .members
                .values()
                .map(|m| MemberMetadata {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: m.metadata_for(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// DescribeGroups: metadata and assignments are shown only when Stable (as Kafka does).
    pub fn describe(&self) -> (State, String, String, Vec<MemberSummary>) {
        let stable = self.state == State::Stable;
        let protocol = if stable {
            self.protocol_name.clone().unwrap_or_default()
        } else {
            String::new()
        };
        let members = self
            .members
            .values()
            .map(|m| MemberSummary {
                member_id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: if stable {
                    m.metadata_for(&protocol)
                } else {
                    Bytes::new()
                },
                assignment: if stable {
                    m.assignment.clone()
                } else {
                    Bytes::new()
                },
            })
            .collect();
        (
            self.state,
            self.protocol_type.clone().unwrap_or_default(),
            protocol,
            members,
        )
    }

    fn transition(&mut self, to: State, now: i64) {
        self.state = to;
        self.state_since_ms = now;
    }

    fn rebalance_timeout_ms(&self) -> i64 {
        self.members
            .values()
            .map(|m| i64::from(m.rebalance_timeout_ms))
            .max()
            .unwrap_or(0)
    }

    /// Protocols every member supports.
    fn candidate_protocols(&self) -> BTreeSet<&str> {
        let mut it = self.members.values();
        let Some(first) = it.next() else {
            return BTreeSet::new();
        };
        let mut set: BTreeSet<&str> = first.protocols.iter().map(|(n, _)| n.as_str()).collect();
        for m in it {
            let theirs: BTreeSet<&str> = m.protocols.iter().map(|(n, _)| n.as_str()).collect();
            set = set.intersection(&theirs).copied().collect();
        }
        set
    }

    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        let candidates = self.candidate_protocols();
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols
                .iter()
                .any(|(n, _)| candidates.contains(n.as_str()))
    }

    /// Each member votes for its most preferred candidate; most votes wins, ties go to the
    /// protocol the leader (or first member) prefers.
    fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidate_protocols();
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some((n, _)) = m
                .protocols
                .iter()
                .find(|(n, _)| candidates.contains(n.as_str()))
            {
                *votes.entry(n.as_str()).or_default() += 1;
            }
        }
        let order = self
            .leader
            .as_ref()
            .and_then(|l| self.members.get(l))
            .or_else(|| self.members.values().next())?;
        let mut best: Option<(&str, usize)> = None;
        for (n, _) in &order.protocols {
            let v = votes.get(n.as_str()).copied().unwrap_or(0);
            if v > 0 && best.is_none_or(|(_, b)| v > b) {
                best = Some((n.as_str(), v));
            }
        }
        best.map(|(n, _)| n.to_string())
    }

    /// The instance id belongs to a different member id.
    fn fenced(&self, instance_id: Option<&str>, member_id: &str) -> bool {
        instance_id
            .and_then(|i| self.static_members.get(i))
            .is_some_and(|owner| owner != member_id)
    }

    pub fn join(&mut self, req: JoinRequest, ticket: Ticket, now: i64) -> Vec<Output> {
        let limits = self.limits;
        let mut out = Vec::new();
        let reply_err =
            |e: ResponseError, id: &str| vec![Output::Join(ticket, JoinResponse::error(e, id))];
        if req.session_timeout_ms < limits.min_session_timeout_ms
            || req.session_timeout_ms > limits.max_session_timeout_ms
        {
            return reply_err(ResponseError::InvalidSessionTimeout, &req.member_id);
        }
        let metadata_bytes: usize = req.protocols.iter().map(|(n, m)| n.len() + m.len()).sum();
        if metadata_bytes > limits.max_member_metadata_bytes {
            return reply_err(ResponseError::InvalidRequest, &req.member_id);
        }
        if self.state == State::Dead {
            return reply_err(ResponseError::CoordinatorNotAvailable, &req.member_id);
        }
        if !self.supports(&req.protocol_type, &req.protocols) {
            return reply_err(ResponseError::InconsistentGroupProtocol, &req.member_id);
        }
        if req.member_id.is_empty() {
            let known_static = req
                .instance_id
                .as_ref()
                .and_then(|i| self.static_members.get(i))
                .cloned();
            if known_static.is_none() && self.members.len() + self.pending.len() >= limits.max_size
            {
                return reply_err(ResponseError::GroupMaxSizeReached, "");
            }
            let new_id = req.fresh_member_id.clone();
            match known_static {
                Some(old) if self.state != State::Empty => {
                    self.static_rejoin(&old, &new_id, req, ticket, now, &mut out);
                }
                _ if req.instance_id.is_none() && req.require_known_member_id => {
                    let deadline = now.saturating_add(i64::from(req.session_timeout_ms));
                    self.pending.insert(new_id.clone(), deadline);
                    return reply_err(ResponseError::MemberIdRequired, &new_id);
                }
                _ => self.add_member(new_id, req, ticket, now, &mut out),
            }
            return out;
        }
        let member_id = req.member_id.clone();
        if self.pending.remove(&member_id).is_some() {
            self.add_member(member_id, req, ticket, now, &mut out);
            return out;
        }
        if self.fenced(req.instance_id.as_deref(), &member_id) {
            return reply_err(ResponseError::FencedInstanceId, &member_id);
        }
        let unknown_instance = req
            .instance_id
            .as_ref()
            .is_some_and(|i| !self.static_members.contains_key(i));
        if !self.members.contains_key(&member_id) || unknown_instance {
            return reply_err(ResponseError::UnknownMemberId, &member_id);
        }
        let matches = self
            .members
            .get(&member_id)
            .is_some_and(|m| m.protocols == req.protocols);
        match self.state {
            State::PreparingRebalance => {
                self.update_member(&member_id, req, ticket, now, &mut out);
                self.try_complete_join(now, &mut out);
            }
            State::CompletingRebalance if matches => {
                // A retry of a join whose answer was lost: answer with this generation.
                let resp = self.join_response(&member_id);
                if let Some(m) = self.members.get_mut(&member_id) {
                    m.touch(now);
                }
                out.push(Output::Join(ticket, resp));
            }
            State::Stable if matches && self.leader.as_deref() != Some(member_id.as_str()) => {
                let mut resp = self.join_response(&member_id);
                resp.members.clear();
                if let Some(m) = self.members.get_mut(&member_id) {
                    m.touch(now);
                }
                out.push(Output::Join(ticket, resp));
            }
            State::CompletingRebalance | State::Stable => {
                self.update_member(&member_id, req, ticket, now, &mut out);
                self.prepare_rebalance(now, &mut out);
            }
            State::Empty | State::Dead => {
                return reply_err(ResponseError::UnknownMemberId, &member_id);
            }
        }
        out
    }

    /// This generation's answer for `member_id` (with every member's metadata for the leader).
    fn join_response(&self, member_id: &str) -> JoinResponse {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        let is_leader = self.leader.as_deref() == Some(member_id);
        JoinResponse {
            error: None,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members: if is_leader {
                self.members
                    .values()
                    .map(|m| JoinedMember {
                        member_id: m.id.clone(),
                        instance_id: m.instance_id.clone(),
                        metadata: m.metadata_for(&protocol),
                    })
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    fn add_member(
        &mut self,
        id: String,
        req: JoinRequest,
        ticket: Ticket,
        now: i64,
        out: &mut Vec<Output>,
    ) {
        if self.members.is_empty() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        let mut m = Member {
            id: id.clone(),
            instance_id: req.instance_id.clone(),
            client_id: req.client_id,
            client_host: req.client_host,
            rebalance_timeout_ms: req.rebalance_timeout_ms,
            session_timeout_ms: req.session_timeout_ms,
            protocol_type: req.protocol_type,
            protocols: req.protocols,
            assignment: Bytes::new(),
            join_waiter: Some(ticket),
            sync_waiter: None,
            session_deadline: 0,
        };
        m.touch(now);
        if let Some(i) = &req.instance_id {
            self.static_members.insert(i.clone(), id.clone());
        }
        if self.leader.is_none() {
            self.leader = Some(id.clone());
        }
        self.members.insert(id, m);
        if let Some(d) = &mut self.initial_delay {
            d.member_added = true;
        }
        if self.state == State::PreparingRebalance {
            self.try_complete_join(now, out);
        } else {
            self.prepare_rebalance(now, out);
        }
    }

    fn update_member(
        &mut self,
        id: &str,
        req: JoinRequest,
        ticket: Ticket,
        now: i64,
        out: &mut Vec<Output>,
    ) {
        let Some(m) = self.members.get_mut(id) else {
            return;
        };
        m.protocols = req.protocols;
        m.rebalance_timeout_ms = req.rebalance_timeout_ms;
        m.session_timeout_ms = req.session_timeout_ms;
        m.client_id = req.client_id;
        m.client_host = req.client_host;
        m.touch(now);
        if let Some(old) = m.join_waiter.replace(ticket) {
            // The client sent JoinGroup again before the first was answered.
            out.push(Output::Join(
                old,
                JoinResponse::error(ResponseError::RebalanceInProgress, id),
            ));
        }
    }

    /// A static member restarted: the new member id takes the old one's place (KIP-345).
    fn static_rejoin(
        &mut self,
        old_id: &str,
        new_id: &str,
        req: JoinRequest,
        ticket: Ticket,
        now: i64,
        out: &mut Vec<Output>,
    ) {
        let previous_leader = self.leader.clone().unwrap_or_default();
        let Some(mut m) = self.members.remove(old_id) else {
            return;
        };
        if let Some(t) = m.join_waiter.take() {
            out.push(Output::Join(
                t,
                JoinResponse::error(ResponseError::FencedInstanceId, old_id),
            ));
        }
        if let Some(t) = m.sync_waiter.take() {
            out.push(Output::Sync(
                t,
                SyncResponse::error(ResponseError::FencedInstanceId),
            ));
        }
        m.id = new_id.to_string();
        m.protocols = req.protocols;
        m.rebalance_timeout_ms = req.rebalance_timeout_ms;
        m.session_timeout_ms = req.session_timeout_ms;
        m.client_id = req.client_id;
        m.client_host = req.client_host;
        m.touch(now);
        if let Some(i) = &m.instance_id {
            self.static_members.insert(i.clone(), new_id.to_string());
        }
        self.members.insert(new_id.to_string(), m);
        if self.leader.as_deref() == Some(old_id) {
            self.leader = Some(new_id.to_string());
        }
        if self.pending_sync.remove(old_id) {
            self.pending_sync.insert(new_id.to_string());
        }
        match self.state {
            State::Stable if self.select_protocol() == self.protocol_name => {
                // No rebalance: the member keeps its assignment. The answer names the previous
                // leader id so the restarted member does not think it must assign (Kafka).
                let resp = JoinResponse {
                    error: None,
                    generation: self.generation,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: self.protocol_name.clone(),
                    leader: previous_leader,
                    member_id: new_id.to_string(),
                    members: Vec::new(),
                };
                out.push(Output::Store {
                    metadata: self.metadata(),
                    then: vec![Output::Join(ticket, resp)],
                });
            }
            State::PreparingRebalance => {
                if let Some(m) = self.members.get_mut(new_id) {
                    m.join_waiter = Some(ticket);
                }
                self.try_complete_join(now, out);
            }
            _ => {
                if let Some(m) = self.members.get_mut(new_id) {
                    m.join_waiter = Some(ticket);
                }
                self.prepare_rebalance(now, out);
            }
        }
    }

    fn prepare_rebalance(&mut self, now: i64, out: &mut Vec<Output>) {
        if self.state == State::CompletingRebalance {
            for m in self.members.values_mut() {
                m.assignment = Bytes::new();
                if let Some(t) = m.sync_waiter.take() {
                    m.touch(now);
                    out.push(Output::Sync(
                        t,
                        SyncResponse::error(ResponseError::RebalanceInProgress),
                    ));
                }
            }
        }
        self.pending_sync.clear();
        self.sync_deadline = None;
        self.storing = None;
        let timeout = self.rebalance_timeout_ms();
        if self.state == State::Empty && self.limits.initial_rebalance_delay_ms > 0 {
            let delay = timeout.min(self.limits.initial_rebalance_delay_ms.max(0));
            self.initial_delay = Some(InitialDelay {
                deadline: now.saturating_add(delay),
                remaining_ms: (timeout - delay).max(0),
                member_added: false,
            });
            self.join_deadline = None;
        } else {
            self.initial_delay = None;
            self.join_deadline = Some(now.saturating_add(timeout));
        }
        self.transition(State::PreparingRebalance, now);
        self.try_complete_join(now, out);
    }

    fn try_complete_join(&mut self, now: i64, out: &mut Vec<Output>) {
        if self.state != State::PreparingRebalance || self.initial_delay.is_some() {
            return;
        }
        if self.pending.is_empty() && self.members.values().all(|m| m.join_waiter.is_some()) {
            self.complete_join(now, out);
        }
    }

    /// Ends the join phase: members that did not rejoin are dropped (static members stay: they
    /// may be restarting), a leader is chosen among those that did, the generation moves on.
    fn complete_join(&mut self, now: i64, out: &mut Vec<Output>) {
        self.initial_delay = None;
        self.join_deadline = None;
        self.storing = None;
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join_waiter.is_none() && m.instance_id.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in gone {
            self.forget_member(&id, out);
        }
        if !self.members.is_empty() && self.members.values().all(|m| m.join_waiter.is_none()) {
            // Only static members that have not rejoined: give them another rebalance timeout.
            self.join_deadline = Some(now.saturating_add(self.rebalance_timeout_ms()));
            return;
        }
        let leader_rejoined = self
            .leader
            .as_ref()
            .and_then(|l| self.members.get(l))
            .is_some_and(|m| m.join_waiter.is_some());
        if !leader_rejoined {
            self.leader = self
                .members
                .values()
                .find(|m| m.join_waiter.is_some())
                .map(|m| m.id.clone());
        }
        self.generation = self.generation.wrapping_add(1);
        if self.members.is_empty() {
            self.protocol_name = None;
            self.leader = None;
            self.transition(State::Empty, now);
            out.push(Output::Store {
                metadata: self.metadata(),
                then: Vec::new(),
            });
            return;
        }
        self.protocol_name = self.select_protocol();
        self.transition(State::CompletingRebalance, now);
        self.pending_sync = self.members.keys().cloned().collect();
        self.sync_deadline = Some(now.saturating_add(self.rebalance_timeout_ms()));
        let joined: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join_waiter.is_some())
            .map(|m| m.id.clone())
            .collect();
        for id in joined {
            let resp = self.join_response(&id);
            if let Some(m) = self.members.get_mut(&id)
                && let Some(t) = m.join_waiter.take()
            {
                m.touch(now);
                out.push(Output::Join(t, resp));
            }
        }
    }

    /// Removes a member, answering anything it has parked with UNKNOWN_MEMBER_ID.
    fn forget_member(&mut self, id: &str, out: &mut Vec<Output>) {
        let Some(m) = self.members.remove(id) else {
            return;
        };
        if let Some(t) = m.join_waiter {
            out.push(Output::Join(
                t,
                JoinResponse::error(ResponseError::UnknownMemberId, id),
            ));
        }
        if let Some(t) = m.sync_waiter {
            out.push(Output::Sync(
                t,
                SyncResponse::error(ResponseError::UnknownMemberId),
            ));
        }
        if let Some(i) = &m.instance_id
            && self.static_members.get(i).is_some_and(|owner| owner == id)
        {
            self.static_members.remove(i);
        }
        self.pending_sync.remove(id);
        if self.leader.as_deref() == Some(id) {
            self.leader = self.members.keys().next().cloned();
        }
    }

    /// A member left or its session expired.
    fn remove_member(&mut self, id: &str, now: i64, out: &mut Vec<Output>) {
        self.forget_member(id, out);
        match self.state {
            State::PreparingRebalance => self.try_complete_join(now, out),
            State::Stable | State::CompletingRebalance => self.prepare_rebalance(now, out),
            State::Empty | State::Dead => {}
        }
    }

    pub fn sync(&mut self, req: SyncRequest, ticket: Ticket, now: i64) -> Vec<Output> {
        let reply_err = |e: ResponseError| vec![Output::Sync(ticket, SyncResponse::error(e))];
        if self.state == State::Dead {
            return reply_err(ResponseError::CoordinatorNotAvailable);
        }
        if self.fenced(req.instance_id.as_deref(), &req.member_id) {
            return reply_err(ResponseError::FencedInstanceId);
        }
        if !self.members.contains_key(&req.member_id) {
            return reply_err(ResponseError::UnknownMemberId);
        }
        if req.generation != self.generation {
            return reply_err(ResponseError::IllegalGeneration);
        }
        if req.protocol_type.is_some() && req.protocol_type != self.protocol_type
            || req.protocol_name.is_some() && req.protocol_name != self.protocol_name
        {
            return reply_err(ResponseError::InconsistentGroupProtocol);
        }
        if req
            .assignments
            .iter()
            .any(|(_, a)| a.len() > self.limits.max_member_metadata_bytes)
        {
            return reply_err(ResponseError::InvalidRequest);
        }
        match self.state {
            State::Empty | State::Dead => reply_err(ResponseError::UnknownMemberId),
            State::PreparingRebalance => reply_err(ResponseError::RebalanceInProgress),
            State::Stable => {
                self.pending_sync.remove(&req.member_id);
                let Some(m) = self.members.get_mut(&req.member_id) else {
                    return reply_err(ResponseError::UnknownMemberId);
                };
                m.touch(now);
                let resp = SyncResponse {
                    error: None,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: self.protocol_name.clone(),
                    assignment: m.assignment.clone(),
                };
                vec![Output::Sync(ticket, resp)]
            }
            State::CompletingRebalance => {
                let mut out = Vec::new();
                self.pending_sync.remove(&req.member_id);
                if let Some(m) = self.members.get_mut(&req.member_id) {
                    m.touch(now);
                    if let Some(old) = m.sync_waiter.replace(ticket) {
                        out.push(Output::Sync(
                            old,
                            SyncResponse::error(ResponseError::RebalanceInProgress),
                        ));
                    }
                }
                // Followers wait for the leader; a leader's retry waits for the write under way.
                if self.leader.as_deref() != Some(req.member_id.as_str())
                    || self.storing == Some(self.generation)
                {
                    return out;
                }
                // The leader's assignment: members it left out get an empty one.
                let mut given: BTreeMap<String, Bytes> = req.assignments.into_iter().collect();
                for m in self.members.values_mut() {
                    m.assignment = given.remove(&m.id).unwrap_or_default();
                }
                self.storing = Some(self.generation);
                out.push(Output::Store {
                    metadata: self.metadata(),
                    then: Vec::new(),
                });
                out
            }
        }
    }

    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: i64,
    ) -> Result<(), ResponseError> {
        if self.state == State::Dead {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        if self.fenced(instance_id, member_id) {
            return Err(ResponseError::FencedInstanceId);
        }
        let Some(m) = self.members.get_mut(member_id) else {
            return Err(ResponseError::UnknownMemberId);
        };
        if generation != self.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        match self.state {
            State::Empty | State::Dead => Err(ResponseError::UnknownMemberId),
            State::CompletingRebalance | State::Stable => {
                m.touch(now);
                Ok(())
            }
            State::PreparingRebalance => {
                m.touch(now);
                Err(ResponseError::RebalanceInProgress)
            }
        }
    }

    /// LeaveGroup for one member (v3+ batches call this per member). A static member may leave
    /// by instance id alone (empty member id).
    pub fn leave(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        now: i64,
        out: &mut Vec<Output>,
    ) -> Result<(), ResponseError> {
        if self.state == State::Dead {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        let id = if member_id.is_empty() {
            match instance_id.and_then(|i| self.static_members.get(i)) {
                Some(id) => id.clone(),
                None => return Err(ResponseError::UnknownMemberId),
            }
        } else {
            if self.fenced(instance_id, member_id) {
                return Err(ResponseError::FencedInstanceId);
            }
            member_id.to_string()
        };
        if self.pending.remove(&id).is_some() {
            self.try_complete_join(now, out);
            return Ok(());
        }
        if !self.members.contains_key(&id) {
            return Err(ResponseError::UnknownMemberId);
        }
        self.remove_member(&id, now, out);
        Ok(())
    }

    /// May this member commit offsets now? A commit also counts as a heartbeat. Generation -1
    /// with no members is a commit from a client that manages partitions itself.
    pub fn validate_commit(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: i64,
    ) -> Result<(), ResponseError> {
        if self.state == State::Dead {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        if self.fenced(instance_id, member_id) {
            return Err(ResponseError::FencedInstanceId);
        }
        if generation < 0 && self.state == State::Empty {
            return Ok(());
        }
        if self.state == State::CompletingRebalance {
            return Err(ResponseError::RebalanceInProgress);
        }
        let Some(m) = self.members.get_mut(member_id) else {
            return Err(ResponseError::UnknownMemberId);
        };
        if generation != self.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        m.touch(now);
        Ok(())
    }

    /// Time passes: sessions and pending member ids expire, rebalance and sync deadlines fire.
    pub fn tick(&mut self, now: i64) -> Vec<Output> {
        let mut out = Vec::new();
        let before = self.pending.len();
        self.pending.retain(|_, deadline| *deadline > now);
        let pending_expired = self.pending.len() != before;
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| !m.alive(now))
            .map(|m| m.id.clone())
            .collect();
        for id in expired {
            self.remove_member(&id, now, &mut out);
        }
        if pending_expired {
            self.try_complete_join(now, &mut out);
        }
        if self.state == State::PreparingRebalance {
            if let Some(d) = self.initial_delay {
                if now >= d.deadline {
                    if d.member_added && d.remaining_ms > 0 {
                        let delay = self.limits.initial_rebalance_delay_ms.min(d.remaining_ms);
                        self.initial_delay = Some(InitialDelay {
                            deadline: now.saturating_add(delay),
                            remaining_ms: d.remaining_ms - delay,
                            member_added: false,
                        });
                    } else {
                        self.complete_join(now, &mut out);
                    }
                }
            } else if self.join_deadline.is_some_and(|d| now >= d) {
                self.complete_join(now, &mut out);
            }
        }
        if matches!(self.state, State::CompletingRebalance | State::Stable)
            && self.sync_deadline.is_some_and(|d| now >= d)
        {
            self.sync_deadline = None;
            let late = std::mem::take(&mut self.pending_sync);
            if !late.is_empty() {
                // Members that joined but never sent SyncGroup hold the group up: drop them.
                for id in &late {
                    self.forget_member(id, &mut out);
                }
                self.prepare_rebalance(now, &mut out);
            }
        }
        out
    }

    /// `generation`'s metadata is committed. If it carried the leader's assignment, the group
    /// is Stable now and every member waiting in SyncGroup gets its share.
    pub fn stored(&mut self, generation: i32, now: i64) -> Vec<Output> {
        if self.state != State::CompletingRebalance || self.storing != Some(generation) {
            return Vec::new();
        }
        self.storing = None;
        self.transition(State::Stable, now);
        let mut out = Vec::new();
        for m in self.members.values_mut() {
            if let Some(t) = m.sync_waiter.take() {
                m.touch(now);
                out.push(Output::Sync(
                    t,
                    SyncResponse {
                        error: None,
                        protocol_type: self.protocol_type.clone(),
                        protocol_name: self.protocol_name.clone(),
                        assignment: m.assignment.clone(),
                    },
                ));
            }
        }
        out
    }

    /// Persisting `generation`'s metadata failed: the assignment is not safe to use, so the
    /// group rebalances (Kafka resets the assignment and prepares a rebalance).
    pub fn store_failed(&mut self, generation: i32, now: i64) -> Vec<Output> {
        let mut out = Vec::new();
        if self.generation == generation
            && matches!(self.state, State::Stable | State::CompletingRebalance)
        {
            for m in self.members.values_mut() {
                m.assignment = Bytes::new();
            }
            self.prepare_rebalance(now, &mut out);
        }
        out
    }

    /// DeleteGroups: only a group without members may go.
    pub fn delete(&mut self, now: i64) -> Result<(), ResponseError> {
        match self.state {
            State::Dead => Err(ResponseError::GroupIdNotFound),
            State::Empty if self.pending.is_empty() => {
                self.transition(State::Dead, now);
                Ok(())
            }
            _ => Err(ResponseError::NonEmptyGroup),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    const SESSION: i32 = 10_000;
    const REBALANCE: i32 = 30_000;

    fn limits(delay: i64) -> Limits {
        Limits {
            initial_rebalance_delay_ms: delay,
            ..Limits::default()
        }
    }

    fn join_req(
        member: &str,
        fresh: &str,
        instance: Option<&str>,
        protocols: &[(&str, &str)],
    ) -> JoinRequest {
        JoinRequest {
            member_id: member.into(),
            instance_id: instance.map(Into::into),
            require_known_member_id: true,
            fresh_member_id: fresh.into(),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            rebalance_timeout_ms: REBALANCE,
            session_timeout_ms: SESSION,
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|(n, m)| (n.to_string(), Bytes::from(m.to_string())))
                .collect(),
        }
    }

    fn range() -> Vec<(&'static str, &'static str)> {
        vec![("range", "sub"), ("cooperative-sticky", "sub")]
    }

    /// Delivers outputs as a caller whose writes always commit: ticket -> answer.
    #[derive(Default)]
    struct Answers {
        join: BTreeMap<Ticket, JoinResponse>,
        sync: BTreeMap<Ticket, SyncResponse>,
        stores: Vec<GroupMetadata>,
    }

    impl Answers {
        fn take(&mut self, outs: Vec<Output>) {
            for o in outs {
                match o {
                    Output::Join(t, r) => assert!(
                        self.join.insert(t, r).is_none(),
                        "ticket {t} answered twice"
                    ),
                    Output::Sync(t, r) => assert!(
                        self.sync.insert(t, r).is_none(),
                        "ticket {t} answered twice"
                    ),
                    Output::Store { metadata, then } => {
                        self.stores.push(metadata);
                        self.take(then);
                    }
                }
            }
        }
    }

    /// Joins `n` dynamic members the v4+ way (MEMBER_ID_REQUIRED, then join with the id).
    /// Returns the group (CompletingRebalance) and the member ids.
    fn joined_group(n: usize) -> (Group, Vec<String>, Answers) {
        let mut g = Group::new("g", 0, limits(0));
        let mut a = Answers::default();
        let mut ids = Vec::new();
        for i in 0..n {
            a.take(g.join(
                join_req("", &format!("m{i}"), None, &range()),
                100 + i as u64,
                0,
            ));
            let r = &a.join[&(100 + i as u64)];
            assert_eq!(r.error, Some(ResponseError::MemberIdRequired));
            ids.push(r.member_id.clone());
        }
        for (i, id) in ids.iter().enumerate() {
            a.take(g.join(join_req(id, "unused", None, &range()), 200 + i as u64, 1));
        }
        assert_eq!(g.state(), State::CompletingRebalance);
        (g, ids, a)
    }

    /// SyncGroup from `id`; the leader hands in an assignment of "a-<member id>" to each.
    fn sync_req(g: &Group, ids: &[String], id: &str) -> SyncRequest {
        let is_leader = g.leader() == Some(id);
        SyncRequest {
            member_id: id.to_string(),
            instance_id: None,
            generation: g.generation(),
            protocol_type: Some("consumer".into()),
            protocol_name: Some("range".into()),
            assignments: ids
                .iter()
                .filter(|_| is_leader)
                .map(|m| (m.clone(), Bytes::from(format!("a-{m}"))))
                .collect(),
        }
    }

    /// [`joined_group`], then every member syncs and the leader's assignment is stored.
    fn stable_group(n: usize) -> (Group, Vec<String>, Answers) {
        let (mut g, ids, mut a) = joined_group(n);
        for (i, id) in ids.iter().enumerate() {
            a.take(g.sync(sync_req(&g, &ids, id), 300 + i as u64, 2));
        }
        assert_eq!(
            g.state(),
            State::CompletingRebalance,
            "stable before the write"
        );
        assert!(
            a.sync.is_empty(),
            "an assignment was handed out before the write"
        );
        let generation = g.generation();
        a.take(g.stored(generation, 3));
        assert_eq!(g.state(), State::Stable);
        (g, ids, a)
    }

    #[test]
    fn assignments_are_handed_out_only_once_stored() {
        let (mut g, ids, mut a) = joined_group(2);
        let leader = g.leader().unwrap().to_string();
        let follower = ids.iter().find(|i| **i != leader).unwrap().clone();
        a.take(g.sync(sync_req(&g, &ids, &follower), 1, 2));
        a.take(g.sync(sync_req(&g, &ids, &leader), 2, 2));
        assert_eq!(a.stores.last().unwrap().members.len(), 2);
        assert!(a.sync.is_empty());
        // While the write is under way: heartbeats are fine, commits wait, and a retried
        // leader SyncGroup writes nothing new (its first ticket is answered with an error).
        assert_eq!(g.heartbeat(&follower, None, 1, 3), Ok(()));
        assert_eq!(
            g.validate_commit(&leader, None, 1, 3),
            Err(ResponseError::RebalanceInProgress)
        );
        let stores = a.stores.len();
        a.take(g.sync(sync_req(&g, &ids, &leader), 3, 4));
        assert_eq!(a.stores.len(), stores);
        assert_eq!(a.sync[&2].error, Some(ResponseError::RebalanceInProgress));
        // A commit of an older generation changes nothing; this one's makes the group Stable.
        assert!(g.stored(0, 5).is_empty());
        assert_eq!(g.state(), State::CompletingRebalance);
        a.take(g.stored(1, 5));
        assert_eq!(g.state(), State::Stable);
        assert_eq!(a.sync[&1].assignment, Bytes::from(format!("a-{follower}")));
        assert_eq!(a.sync[&3].assignment, Bytes::from(format!("a-{leader}")));
        // A failed write instead: the waiting members are told to rejoin.
        let (mut g, ids, mut a) = joined_group(2);
        for (t, id) in ids.iter().enumerate() {
            a.take(g.sync(sync_req(&g, &ids, id), t as u64, 2));
        }
        a.take(g.store_failed(1, 3));
        assert_eq!(g.state(), State::PreparingRebalance);
        assert_eq!(a.sync.len(), 2);
        assert!(
            a.sync
                .values()
                .all(|r| r.error == Some(ResponseError::RebalanceInProgress))
        );
        assert!(
            g.stored(1, 4).is_empty(),
            "a late commit of a failed write is ignored"
        );
        assert_eq!(g.state(), State::PreparingRebalance);
    }

    #[test]
    fn three_members_join_and_sync() {
        let (g, ids, a) = stable_group(3);
        assert_eq!(g.generation(), 1);
        assert_eq!(g.protocol_name(), Some("range"));
        let leader = g.leader().unwrap();
        for i in 0..3u64 {
            let r = &a.join[&(200 + i)];
            assert_eq!(r.error, None);
            assert_eq!(r.generation, 1);
            // Only the leader learns the members' metadata.
            assert_eq!(r.members.len(), if r.member_id == leader { 3 } else { 0 });
            let s = &a.sync[&(300 + i)];
            assert_eq!(s.error, None);
            assert_eq!(s.assignment, Bytes::from(format!("a-{}", ids[i as usize])));
        }
        // The assignment was persisted before anyone got it.
        let md = a.stores.last().unwrap();
        assert_eq!(md.generation, 1);
        assert_eq!(md.members.len(), 3);
        assert!(md.members.iter().all(|m| !m.assignment.is_empty()));
    }

    #[test]
    fn a_leaving_member_triggers_a_rebalance_without_it() {
        let (mut g, ids, _) = stable_group(3);
        let mut out = Vec::new();
        assert_eq!(g.leave(&ids[2], None, 10, &mut out), Ok(()));
        assert_eq!(g.state(), State::PreparingRebalance);
        assert_eq!(
            g.heartbeat(&ids[0], None, 1, 11),
            Err(ResponseError::RebalanceInProgress)
        );
        let mut a = Answers::default();
        a.take(g.join(join_req(&ids[0], "x", None, &range()), 1, 12));
        assert!(a.join.is_empty(), "waits for the other member");
        a.take(g.join(join_req(&ids[1], "x", None, &range()), 2, 13));
        assert_eq!(g.state(), State::CompletingRebalance);
        assert_eq!(g.generation(), 2);
        assert_eq!(g.member_count(), 2);
        assert_eq!(a.join.len(), 2);
    }

    #[test]
    fn members_that_do_not_rejoin_are_dropped_at_the_rebalance_timeout() {
        let (mut g, ids, _) = stable_group(3);
        let mut a = Answers::default();
        a.take(g.join(join_req(&ids[0], "x", None, &range()), 1, 10));
        assert_eq!(g.state(), State::PreparingRebalance);
        // The others keep heartbeating but never rejoin.
        let mut now = 10;
        while now < 10 + i64::from(REBALANCE) - 1000 {
            now += 1000;
            let _ = g.heartbeat(&ids[1], None, 1, now);
            let _ = g.heartbeat(&ids[2], None, 1, now);
            a.take(g.tick(now));
        }
        assert_eq!(g.state(), State::PreparingRebalance);
        a.take(g.tick(10 + i64::from(REBALANCE)));
        assert_eq!(g.state(), State::CompletingRebalance);
        assert_eq!(g.member_count(), 1);
        assert_eq!(a.join[&1].members.len(), 1);
    }

    #[test]
    fn a_silent_member_expires_after_its_session_timeout() {
        let (mut g, ids, _) = stable_group(2);
        // Sessions run from the SyncGroup answers, sent when the assignment was stored (t=3).
        let t = 3 + i64::from(SESSION);
        let _ = g.heartbeat(&ids[0], None, 1, t - 1);
        assert!(g.tick(t - 1).is_empty());
        assert_eq!(g.state(), State::Stable);
        g.tick(t);
        assert_eq!(g.state(), State::PreparingRebalance);
        assert!(g.has_member(&ids[0]));
        assert!(!g.has_member(&ids[1]));
    }

    #[test]
    fn initial_rebalance_delay_waits_for_more_members() {
        let mut g = Group::new("g", 0, limits(3_000));
        let mut a = Answers::default();
        let mut one = join_req("", "m1", None, &range());
        one.require_known_member_id = false;
        a.take(g.join(one, 1, 0));
        assert_eq!(g.state(), State::PreparingRebalance);
        a.take(g.tick(2_000));
        let mut two = join_req("", "m2", None, &range());
        two.require_known_member_id = false;
        a.take(g.join(two, 2, 2_500));
        a.take(g.tick(3_000));
        // A member arrived during the delay: it is extended once more.
        assert_eq!(g.state(), State::PreparingRebalance);
        a.take(g.tick(6_000));
        assert_eq!(g.state(), State::CompletingRebalance);
        assert_eq!(a.join.len(), 2);
    }

    #[test]
    fn errors_for_bad_joins() {
        let (mut g, ids, _) = stable_group(1);
        let mut a = Answers::default();
        let mut short = join_req("", "n", None, &range());
        short.session_timeout_ms = 10;
        a.take(g.join(short, 1, 5));
        assert_eq!(a.join[&1].error, Some(ResponseError::InvalidSessionTimeout));
        a.take(g.join(join_req("", "n", None, &[("roundrobin", "x")]), 2, 5));
        assert_eq!(
            a.join[&2].error,
            Some(ResponseError::InconsistentGroupProtocol)
        );
        let mut other_type = join_req("", "n", None, &range());
        other_type.protocol_type = "connect".into();
        a.take(g.join(other_type, 3, 5));
        assert_eq!(
            a.join[&3].error,
            Some(ResponseError::InconsistentGroupProtocol)
        );
        a.take(g.join(join_req("ghost", "n", None, &range()), 4, 5));
        assert_eq!(a.join[&4].error, Some(ResponseError::UnknownMemberId));
        let big = "x".repeat(2 << 20);
        a.take(g.join(join_req("", "n", None, &[("range", big.as_str())]), 5, 5));
        assert_eq!(a.join[&5].error, Some(ResponseError::InvalidRequest));
        // None of this disturbed the group.
        assert_eq!(g.state(), State::Stable);
        assert_eq!(g.heartbeat(&ids[0], None, 1, 6), Ok(()));
    }

    #[test]
    fn group_max_size() {
        let mut g = Group::new(
            "g",
            0,
            Limits {
                max_size: 2,
                ..limits(0)
            },
        );
        let mut a = Answers::default();
        for i in 0..3u64 {
            a.take(g.join(join_req("", &format!("m{i}"), None, &range()), i, 0));
        }
        assert_eq!(a.join[&2].error, Some(ResponseError::GroupMaxSizeReached));
    }

    #[test]
    fn heartbeat_and_commit_checks() {
        let (mut g, ids, _) = stable_group(2);
        let m = ids[0].as_str();
        let cases: &[(&str, i32, Result<(), ResponseError>)] = &[
            (m, 1, Ok(())),
            (m, 0, Err(ResponseError::IllegalGeneration)),
            (m, 2, Err(ResponseError::IllegalGeneration)),
            ("ghost", 1, Err(ResponseError::UnknownMemberId)),
        ];
        for (member, generation, want) in cases {
            assert_eq!(
                g.heartbeat(member, None, *generation, 3),
                *want,
                "heartbeat {member} {generation}"
            );
            assert_eq!(
                g.validate_commit(member, None, *generation, 3),
                *want,
                "commit {member} {generation}"
            );
        }
        // A client managing partitions itself may commit only while the group is empty.
        assert_eq!(
            g.validate_commit("", None, -1, 3),
            Err(ResponseError::UnknownMemberId)
        );
        let mut empty = Group::new("e", 0, limits(0));
        assert_eq!(empty.validate_commit("", None, -1, 3), Ok(()));
        assert_eq!(
            empty.heartbeat("x", None, 0, 3),
            Err(ResponseError::UnknownMemberId)
        );
        // During CompletingRebalance commits are refused with REBALANCE_IN_PROGRESS.
        let mut a = Answers::default();
        a.take(g.join(join_req(&ids[0], "x", None, &[("range", "changed")]), 1, 4));
        a.take(g.join(join_req(&ids[1], "x", None, &range()), 2, 4));
        assert_eq!(g.state(), State::CompletingRebalance);
        assert_eq!(
            g.validate_commit(m, None, 2, 5),
            Err(ResponseError::RebalanceInProgress)
        );
        // Syncing with the wrong generation.
        let bad = SyncRequest {
            member_id: ids[1].clone(),
            instance_id: None,
            generation: 1,
            protocol_type: None,
            protocol_name: None,
            assignments: Vec::new(),
        };
        a.take(g.sync(bad, 3, 5));
        assert_eq!(a.sync[&3].error, Some(ResponseError::IllegalGeneration));
    }

    #[test]
    fn a_follower_rejoining_a_stable_group_unchanged_causes_no_rebalance() {
        let (mut g, ids, _) = stable_group(2);
        let follower = ids
            .iter()
            .find(|i| Some(i.as_str()) != g.leader())
            .unwrap()
            .clone();
        let mut a = Answers::default();
        a.take(g.join(join_req(&follower, "x", None, &range()), 1, 5));
        assert_eq!(g.state(), State::Stable);
        assert_eq!(a.join[&1].generation, 1);
    }

    #[test]
    fn a_restarted_static_member_gets_its_assignment_back_without_a_rebalance() {
        let mut g = Group::new("g", 0, limits(1_000));
        let mut a = Answers::default();
        a.take(g.join(join_req("", "s1-old", Some("s1"), &range()), 1, 0));
        a.take(g.join(join_req("", "s2-a", Some("s2"), &range()), 2, 0));
        // Static members skip MEMBER_ID_REQUIRED; the initial delay (extended once, as a
        // second member arrived) lets both in.
        a.take(g.tick(1_000));
        a.take(g.tick(2_000));
        assert_eq!(g.state(), State::CompletingRebalance);
        let leader = g.leader().unwrap().to_string();
        let assignments = vec![
            ("s1-old".to_string(), Bytes::from_static(b"p0,p1")),
            ("s2-a".to_string(), Bytes::from_static(b"p2")),
        ];
        for (t, id) in [(3, "s1-old"), (4, "s2-a")] {
            let req = SyncRequest {
                member_id: id.into(),
                instance_id: Some(if id == "s1-old" { "s1" } else { "s2" }.into()),
                generation: 1,
                protocol_type: None,
                protocol_name: None,
                assignments: if id == leader {
                    assignments.clone()
                } else {
                    Vec::new()
                },
            };
            a.take(g.sync(req, t, 1));
        }
        a.take(g.stored(1, 1));
        assert_eq!(g.state(), State::Stable);
        // s1 restarts (new member id) within its session timeout.
        a.take(g.join(join_req("", "s1-new", Some("s1"), &range()), 5, 5_000));
        assert_eq!(g.state(), State::Stable, "no rebalance");
        assert_eq!(g.generation(), 1);
        let r = &a.join[&5];
        assert_eq!(r.error, None);
        assert_eq!(r.member_id, "s1-new");
        assert_ne!(r.leader, "s1-new", "the restarted member must not assign");
        let sync = SyncRequest {
            member_id: "s1-new".into(),
            instance_id: Some("s1".into()),
            generation: 1,
            protocol_type: None,
            protocol_name: None,
            assignments: Vec::new(),
        };
        a.take(g.sync(sync, 6, 5_001));
        assert_eq!(a.sync[&6].assignment, Bytes::from_static(b"p0,p1"));
        // The old incarnation is fenced.
        assert_eq!(
            g.heartbeat("s1-old", Some("s1"), 1, 5_002),
            Err(ResponseError::FencedInstanceId)
        );
        assert_eq!(
            g.validate_commit("s1-old", Some("s1"), 1, 5_002),
            Err(ResponseError::FencedInstanceId)
        );
        // A static member is not dropped at a rebalance it misses; it leaves by instance id.
        let mut out = Vec::new();
        assert_eq!(g.leave("", Some("s2"), 5_003, &mut out), Ok(()));
        assert_eq!(g.member_count(), 1);
    }

    #[test]
    fn a_failed_store_forces_a_rebalance() {
        let (mut g, ids, _) = stable_group(2);
        let outs = g.store_failed(1, 10);
        assert!(outs.is_empty());
        assert_eq!(g.state(), State::PreparingRebalance);
        assert_eq!(
            g.heartbeat(&ids[0], None, 1, 11),
            Err(ResponseError::RebalanceInProgress)
        );
        // A failure of an older generation's write changes nothing.
        let (mut g, _, _) = stable_group(2);
        g.store_failed(0, 10);
        assert_eq!(g.state(), State::Stable);
    }

    #[test]
    fn delete_only_empty_groups() {
        let (mut g, ids, _) = stable_group(1);
        assert_eq!(g.delete(5), Err(ResponseError::NonEmptyGroup));
        let mut out = Vec::new();
        g.leave(&ids[0], None, 6, &mut out).unwrap();
        assert_eq!(g.state(), State::Empty);
        assert_eq!(g.delete(7), Ok(()));
        assert_eq!(g.delete(8), Err(ResponseError::GroupIdNotFound));
    }

    #[test]
    fn reloading_from_metadata_restores_a_stable_group() {
        let (g, ids, a) = stable_group(2);
        let md = a.stores.last().unwrap().clone();
        let mut r = Group::from_metadata("g", &md, 100, limits(0));
        assert_eq!(r.state(), State::Stable);
        assert_eq!(r.generation(), g.generation());
        assert_eq!(r.leader(), g.leader());
        for id in &ids {
            assert_eq!(r.heartbeat(id, None, 1, 101), Ok(()));
        }
        let sync = SyncRequest {
            member_id: ids[0].clone(),
            instance_id: None,
            generation: 1,
            protocol_type: None,
            protocol_name: None,
            assignments: Vec::new(),
        };
        let out = r.sync(sync, 9, 102);
        let Output::Sync(9, resp) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(resp.assignment, Bytes::from(format!("a-{}", ids[0])));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Join {
            member: usize,
            fresh: bool,
            alt_protocol: bool,
        },
        Sync {
            member: usize,
            stale: bool,
        },
        Heartbeat {
            member: usize,
        },
        Leave {
            member: usize,
        },
        Commit {
            member: usize,
        },
        Advance {
            ms: i64,
        },
        StoreCommits,
        StoreFails,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..4usize, any::<bool>(), any::<bool>()).prop_map(|(member, fresh, alt_protocol)| {
                Op::Join {
                    member,
                    fresh,
                    alt_protocol,
                }
            }),
            (0..4usize, any::<bool>()).prop_map(|(member, stale)| Op::Sync { member, stale }),
            (0..4usize).prop_map(|member| Op::Heartbeat { member }),
            (0..4usize).prop_map(|member| Op::Leave { member }),
            (0..4usize).prop_map(|member| Op::Commit { member }),
            (1..20_000i64).prop_map(|ms| Op::Advance { ms }),
            Just(Op::StoreCommits),
            Just(Op::StoreFails),
        ]
    }

    fn check_invariants(g: &Group) {
        match g.state {
            State::Empty => assert!(g.members.is_empty(), "empty group with members"),
            State::Dead => {}
            _ => {
                if !g.members.is_empty() {
                    let l = g
                        .leader
                        .as_ref()
                        .expect("a group with members has a leader");
                    assert!(g.members.contains_key(l), "leader {l} is not a member");
                }
            }
        }
        if g.state == State::Stable {
            assert!(
                g.members.values().all(|m| m.join_waiter.is_none()),
                "stable with a parked join"
            );
        }
        if g.storing.is_some() {
            assert_eq!(
                g.state,
                State::CompletingRebalance,
                "storing outside CompletingRebalance"
            );
        }
        for (instance, id) in &g.static_members {
            let m = g.members.get(id).expect("static member present");
            assert_eq!(m.instance_id.as_deref(), Some(instance.as_str()));
        }
        for m in g.members.values() {
            if let Some(i) = &m.instance_id {
                assert_eq!(g.static_members.get(i), Some(&m.id));
            }
        }
    }

    proptest! {
        /// Any sequence of requests from four clients (two static), with time passing and
        /// writes failing: no panic, no ticket answered twice, invariants hold, generations
        /// never go back, and once every client stops, every parked request is answered.
        #[test]
        fn random_schedules_keep_the_invariants(ops in proptest::collection::vec(op(), 1..120)) {
            let mut g = Group::new("g", 0, limits(1_000));
            let mut answered: BTreeMap<Ticket, ()> = BTreeMap::new();
            let mut parked = std::collections::BTreeSet::new();
            let mut ids: Vec<String> = vec![String::new(); 4];
            let mut now = 0i64;
            let mut ticket = 0u64;
            let mut generation = 0;
            // Generations of writes neither committed nor failed yet, oldest first.
            let mut writes = std::collections::VecDeque::new();
            let mut deliver = |outs: Vec<Output>, parked: &mut std::collections::BTreeSet<Ticket>, ids: &mut Vec<String>, joined: Option<(Ticket, usize)>, writes: &mut std::collections::VecDeque<i32>| {
                let mut stack = outs;
                while let Some(o) = stack.pop() {
                    match o {
                        Output::Join(t, r) => {
                            assert!(answered.insert(t, ()).is_none(), "ticket {t} answered twice");
                            parked.remove(&t);
                            if let Some((jt, m)) = joined && jt == t && (r.error.is_none() || r.error == Some(ResponseError::MemberIdRequired)) {
                                ids[m] = r.member_id.clone();
                            }
                        }
                        Output::Sync(t, _) => {
                            assert!(answered.insert(t, ()).is_none(), "ticket {t} answered twice");
                            parked.remove(&t);
                        }
                        Output::Store { metadata, then } => {
                            writes.push_back(metadata.generation);
                            stack.extend(then);
                        }
                    }
                }
            };
            for op in ops {
                ticket += 1;
                match op {
                    Op::Join { member, fresh, alt_protocol } => {
                        let instance = (member < 2).then(|| format!("i{member}"));
                        let id = if fresh { String::new() } else { ids[member].clone() };
                        let protocols: &[(&str, &str)] = if alt_protocol { &[("range", "other")] } else { &[("range", "sub")] };
                        let req = join_req(&id, &format!("m{member}-{ticket}"), instance.as_deref(), protocols);
                        parked.insert(ticket);
                        let outs = g.join(req, ticket, now);
                        deliver(outs, &mut parked, &mut ids, Some((ticket, member)), &mut writes);
                    }
                    Op::Sync { member, stale } => {
                        let req = SyncRequest {
                            member_id: ids[member].clone(),
                            instance_id: (member < 2).then(|| format!("i{member}")),
                            generation: if stale { g.generation() - 1 } else { g.generation() },
                            protocol_type: None,
                            protocol_name: None,
                            assignments: ids.iter().map(|i| (i.clone(), Bytes::from_static(b"a"))).collect(),
                        };
                        parked.insert(ticket);
                        let outs = g.sync(req, ticket, now);
                        deliver(outs, &mut parked, &mut ids, None, &mut writes);
                    }
                    Op::Heartbeat { member } => {
                        let _ = g.heartbeat(&ids[member], (member < 2).then(|| format!("i{member}")).as_deref(), g.generation(), now);
                    }
                    Op::Leave { member } => {
                        let mut outs = Vec::new();
                        let _ = g.leave(&ids[member], (member < 2).then(|| format!("i{member}")).as_deref(), now, &mut outs);
                        deliver(outs, &mut parked, &mut ids, None, &mut writes);
                    }
                    Op::Commit { member } => {
                        let _ = g.validate_commit(&ids[member], None, g.generation(), now);
                    }
                    Op::Advance { ms } => {
                        now += ms;
                        let outs = g.tick(now);
                        deliver(outs, &mut parked, &mut ids, None, &mut writes);
                    }
                    Op::StoreCommits => {
                        if let Some(generation) = writes.pop_front() {
                            let outs = g.stored(generation, now);
                            deliver(outs, &mut parked, &mut ids, None, &mut writes);
                        }
                    }
                    Op::StoreFails => {
                        if let Some(generation) = writes.pop_front() {
                            let outs = g.store_failed(generation, now);
                            deliver(outs, &mut parked, &mut ids, None, &mut writes);
                        }
                    }
                }
                check_invariants(&g);
                prop_assert!(g.generation() >= generation);
                generation = g.generation();
            }
            // Every write commits; then everyone goes quiet: sessions and rebalances time out,
            // every parked request is answered and the group ends up empty.
            while let Some(generation) = writes.pop_front() {
                let outs = g.stored(generation, now);
                deliver(outs, &mut parked, &mut ids, None, &mut writes);
                check_invariants(&g);
            }
            for _ in 0..20 {
                now += 40_000;
                let outs = g.tick(now);
                deliver(outs, &mut parked, &mut ids, None, &mut writes);
                check_invariants(&g);
            }
            prop_assert!(parked.is_empty(), "unanswered tickets {:?} in state {:?}", parked, g.state());
            prop_assert_eq!(g.state(), State::Empty);
        }
    }
}
