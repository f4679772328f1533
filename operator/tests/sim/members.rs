//! Simulated consumers of one group: each joins (the KIP-394 way: MEMBER_ID_REQUIRED, then
//! again with its id), syncs (the leader assigns with a range assignor), fetches its
//! partitions' committed offsets, then heartbeats and commits positions that only grow from
//! there; now and then it leaves, or its process crashes and a new one starts. Requests go
//! to the broker the controller's metadata names as leader of the offsets partition (now and
//! then another, as with stale metadata), one at a time; one unanswered in time is given up.

use std::collections::BTreeMap;

use broker::group::state::JoinedMember;
use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use rand::Rng;
use rand::rngs::SmallRng;

use super::coordinator::REBALANCE_TIMEOUT_MS;
use super::net::{GroupAns, GroupReq, Msg, Node};

/// Partitions of the consumed topic.
pub const PARTITIONS: i32 = 4;
pub const TICK_MS: u64 = 40;
const REQUEST_TIMEOUT_MS: i64 = 400;
/// A JoinGroup waits up to the rebalance timeout, so its client waits longer.
const JOIN_TIMEOUT_MS: i64 = REBALANCE_TIMEOUT_MS as i64 + 400;
const HEARTBEAT_EVERY_MS: i64 = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Join,
    Sync,
    FetchOffsets,
    Stable,
    /// Left (or crashed): back at this time as a new member.
    Away(i64),
}

/// What the group invariants see of the members.
#[derive(Debug, Clone)]
pub enum MemberNote {
    /// A SyncGroup answered with this assignment.
    Assigned {
        member_id: String,
        generation: i32,
        partitions: Vec<i32>,
    },
    /// An OffsetCommit was answered without error.
    CommitAcked {
        member: u8,
        incarnation: u32,
        request: u64,
        member_id: String,
        generation: i32,
        offsets: Vec<(i32, i64)>,
    },
}

struct InFlight {
    request: u64,
    deadline: i64,
    body: GroupReq,
}

pub struct Member {
    pub index: u8,
    pub incarnation: u32,
    member_id: String,
    generation: i32,
    phase: Phase,
    leader_members: Vec<JoinedMember>,
    assignment: Vec<i32>,
    positions: BTreeMap<i32, i64>,
    last_heartbeat: i64,
    next_request: u64,
    in_flight: Option<InFlight>,
}

/// Kafka's RangeAssignor for one topic: members by id, consecutive ranges.
fn range_assign(members: &[JoinedMember]) -> Vec<(String, Bytes)> {
    let mut ids: Vec<&str> = members.iter().map(|m| m.member_id.as_str()).collect();
    ids.sort_unstable();
    let n = ids.len() as i32;
    let (per, extra) = (PARTITIONS / n, PARTITIONS % n);
    let mut next = 0;
    ids.iter()
        .enumerate()
        .map(|(i, id)| {
            let count = per + i32::from((i as i32) < extra);
            let parts: Vec<u8> = (next..next + count).map(|p| p as u8).collect();
            next += count;
            (id.to_string(), Bytes::from(parts))
        })
        .collect()
}

impl Member {
    pub fn new(index: u8, start_at: i64) -> Self {
        Self {
            index,
            incarnation: 1,
            member_id: String::new(),
            generation: -1,
            phase: Phase::Away(start_at),
            leader_members: Vec::new(),
            assignment: Vec::new(),
            positions: BTreeMap::new(),
            last_heartbeat: 0,
            next_request: 1,
            in_flight: None,
        }
    }

    /// A new process (after a leave or a crash): a new dynamic member.
    fn restart(&mut self, back_at: i64) {
        self.incarnation += 1;
        self.member_id.clear();
        self.generation = -1;
        self.assignment.clear();
        self.positions.clear();
        self.in_flight = None;
        self.phase = Phase::Away(back_at);
    }

    pub fn crash(&mut self, now: i64, rng: &mut SmallRng) {
        self.restart(now + rng.random_range(50..600));
    }

    /// Rejoin the group keeping the member id (a rebalance, a lost generation).
    fn rejoin(&mut self) {
        self.phase = Phase::Join;
        self.assignment.clear();
    }

    /// Starts over as an unknown member.
    fn reset(&mut self) {
        self.member_id.clear();
        self.generation = -1;
        self.rejoin();
    }

    /// The member's tick: the next request, if none is in flight. `coordinator` is the
    /// broker it sends to.
    pub fn tick(&mut self, now: i64, coordinator: i32, rng: &mut SmallRng) -> Option<(Node, Msg)> {
        if let Phase::Away(at) = self.phase {
            if now < at {
                return None;
            }
            self.phase = Phase::Join;
        }
        if let Some(f) = &self.in_flight {
            if now < f.deadline {
                return None;
            }
            // Given up: the coordinator may have moved.
            let sync_lost = matches!(f.body, GroupReq::Sync { .. });
            self.in_flight = None;
            if sync_lost {
                self.rejoin();
            }
        }
        let body = match self.phase {
            Phase::Away(_) => return None,
            Phase::Join => GroupReq::Join {
                member_id: self.member_id.clone(),
            },
            Phase::Sync => GroupReq::Sync {
                member_id: self.member_id.clone(),
                generation: self.generation,
                assignments: if self.leader_members.is_empty() {
                    Vec::new()
                } else {
                    range_assign(&self.leader_members)
                },
            },
            Phase::FetchOffsets => GroupReq::OffsetFetch {
                partitions: self.assignment.clone(),
            },
            Phase::Stable if rng.random_range(0..150) == 0 => {
                let member_id = self.member_id.clone();
                self.restart(now + rng.random_range(50..400));
                // Fire and forget, as a closing consumer does.
                let msg = self.request_msg(GroupReq::Leave { member_id });
                return Some((Node::Broker(coordinator), msg));
            }
            Phase::Stable if now - self.last_heartbeat >= HEARTBEAT_EVERY_MS => {
                self.last_heartbeat = now;
                GroupReq::Heartbeat {
                    member_id: self.member_id.clone(),
                    generation: self.generation,
                }
            }
            Phase::Stable if !self.assignment.is_empty() && rng.random_bool(0.5) => {
                for p in &self.assignment {
                    *self.positions.entry(*p).or_default() += rng.random_range(1..=5);
                }
                GroupReq::Commit {
                    member_id: self.member_id.clone(),
                    generation: self.generation,
                    offsets: self.positions.iter().map(|(p, o)| (*p, *o)).collect(),
                }
            }
            Phase::Stable => return None,
        };
        let timeout = match body {
            GroupReq::Join { .. } => JOIN_TIMEOUT_MS,
            _ => REQUEST_TIMEOUT_MS,
        };
        let msg = self.request_msg(body.clone());
        let Msg::Group { request, .. } = msg else {
            unreachable!()
        };
        self.in_flight = Some(InFlight {
            request,
            deadline: now + timeout,
            body,
        });
        Some((Node::Broker(coordinator), msg))
    }

    fn request_msg(&mut self, body: GroupReq) -> Msg {
        let request = self.next_request;
        self.next_request += 1;
        Msg::Group {
            member: self.index,
            incarnation: self.incarnation,
            request,
            body,
        }
    }

    pub fn on_answer(
        &mut self,
        incarnation: u32,
        request: u64,
        answer: Result<GroupAns, ResponseError>,
        now: i64,
        notes: &mut Vec<MemberNote>,
    ) {
        if incarnation != self.incarnation
            || self.in_flight.as_ref().map(|f| f.request) != Some(request)
        {
            return;
        }
        let Some(f) = self.in_flight.take() else {
            return;
        };
        use ResponseError as E;
        let answer = match answer {
            Ok(a) => a,
            // A SyncGroup for a group this coordinator does not know.
            Err(E::UnknownMemberId) => return self.reset(),
            // Find the coordinator again and retry; a SyncGroup's rebalance is lost with it.
            Err(_) => {
                if matches!(f.body, GroupReq::Sync { .. }) {
                    self.rejoin();
                }
                return;
            }
        };
        match (f.body, answer) {
            (GroupReq::Join { .. }, GroupAns::Join(r)) => match r.error {
                None => {
                    self.member_id = r.member_id.clone();
                    self.generation = r.generation;
                    self.leader_members = if r.leader == r.member_id {
                        r.members
                    } else {
                        Vec::new()
                    };
                    self.phase = Phase::Sync;
                }
                Some(E::MemberIdRequired) => self.member_id = r.member_id,
                Some(E::UnknownMemberId | E::FencedInstanceId) => self.reset(),
                Some(_) => {}
            },
            (GroupReq::Sync { generation, .. }, GroupAns::Sync(r)) => match r.error {
                None => {
                    let partitions: Vec<i32> = r.assignment.iter().map(|p| i32::from(*p)).collect();
                    notes.push(MemberNote::Assigned {
                        member_id: self.member_id.clone(),
                        generation,
                        partitions: partitions.clone(),
                    });
                    self.assignment = partitions;
                    self.phase = Phase::FetchOffsets;
                    self.last_heartbeat = now;
                }
                Some(E::UnknownMemberId | E::FencedInstanceId) => self.reset(),
                Some(_) => self.rejoin(),
            },
            (GroupReq::OffsetFetch { .. }, GroupAns::Offsets(found)) => {
                self.positions = found
                    .into_iter()
                    .map(|(p, o)| (p, o.unwrap_or(0)))
                    .collect();
                self.phase = Phase::Stable;
            }
            (
                GroupReq::Commit {
                    member_id,
                    generation,
                    offsets,
                },
                GroupAns::Done(e),
            ) => match e {
                None => notes.push(MemberNote::CommitAcked {
                    member: self.index,
                    incarnation,
                    request,
                    member_id,
                    generation,
                    offsets,
                }),
                Some(E::UnknownMemberId | E::FencedInstanceId) => self.reset(),
                Some(E::IllegalGeneration | E::RebalanceInProgress) => self.rejoin(),
                Some(_) => {}
            },
            (GroupReq::Heartbeat { .. }, GroupAns::Done(e)) => match e {
                None => {}
                Some(E::UnknownMemberId | E::FencedInstanceId) => self.reset(),
                Some(E::IllegalGeneration | E::RebalanceInProgress) => self.rejoin(),
                Some(_) => {}
            },
            _ => {}
        }
    }
}
