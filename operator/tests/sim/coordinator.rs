//! The group coordinator of one simulated broker: the glue `broker::group::coordinator` puts
//! around the real group state machine (`broker::group::state::Group`), mirrored over the
//! simulated partition, which stands for the group's `__consumer_offsets` partition (its
//! records are the real `broker::group::records` encodings; the producer's values in the same
//! log are skipped on load like records of unknown keys). As in coordinator.rs:
//!
//! - the coordinator is the partition's leader; a shard is loaded per leader epoch, by
//!   replaying the whole log to its end (not the high watermark), and unloaded (parked
//!   requests answered NOT_COORDINATOR) when the leadership ends;
//! - a group write (`Output::Store`) and an OffsetCommit are appended with the shard's epoch
//!   and acks=all, and their answers wait for `wait_high_watermark`: committed, or
//!   NOT_COORDINATOR when the leadership ends, or COORDINATOR_NOT_AVAILABLE after
//!   offsets.commit.timeout.ms; a commit reaches the in-memory offsets only once committed.
//!
//! Not mirrored: offsets expiry, group deletion, OffsetDelete, snapshots (none happen in a
//! five-second schedule), static members.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use broker::group::records::{self, OffsetValue, RecordKey};
use broker::group::state::{
    Group, JoinRequest, JoinResponse, Limits, Output, State, SyncRequest, SyncResponse, Ticket,
};
use bytes::Bytes;
use kafka_protocol::error::ResponseError;

use super::broker::{AppendRefusal, Out, SimBroker};
use super::net::{GroupAns, GroupReq, Msg, Node, Timer};

pub const GROUP: &str = "g";
/// The topic the group consumes (only its partition numbers matter).
pub const CONSUMED_TOPIC: &str = "t";
pub const SESSION_TIMEOUT_MS: i32 = 800;
pub const REBALANCE_TIMEOUT_MS: i32 = 800;
/// offsets.commit.timeout.ms, scaled to the schedule (Kafka's default is 5 s).
const COMMIT_TIMEOUT_MS: u64 = 1_000;
/// `Coordinator::run`'s tick.
pub const TICK_MS: u64 = 50;
/// How long reading the log takes (the load runs on a blocking task).
const LOAD_MS: u64 = 3;

pub fn limits() -> Limits {
    Limits {
        min_session_timeout_ms: 100,
        max_session_timeout_ms: 10_000,
        initial_rebalance_delay_ms: 100,
        ..Limits::default()
    }
}

/// The glue as coordinator.rs has it, or broken on purpose (the mutation tests in
/// `tests/simulation.rs`): the state machine and the broker stay as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Glue {
    Real,
    /// Answer an OffsetCommit as soon as it is appended, not once it is committed.
    AnswerCommitOnAppend,
    /// A new coordinator starts with no groups instead of replaying the log.
    SkipLoad,
}

/// The key and value bytes behind each record value the coordinators appended (the log
/// model carries one unique u64 per record).
pub struct RecordTable {
    next: u64,
    records: HashMap<u64, (Vec<u8>, Option<Vec<u8>>)>,
}

impl Default for RecordTable {
    fn default() -> Self {
        // Far above the producer's values.
        Self {
            next: 1 << 40,
            records: HashMap::new(),
        }
    }
}

impl RecordTable {
    fn add(&mut self, key: &RecordKey, value: Option<Vec<u8>>) -> u64 {
        let v = self.next;
        self.next += 1;
        let key = records::encode_key(key).expect("sim keys fit the format");
        self.records.insert(v, (key, value));
        v
    }
    fn get(&self, v: u64) -> Option<&(Vec<u8>, Option<Vec<u8>>)> {
        self.records.get(&v)
    }
}

/// What the group invariants (`sim::group_oracle`) see of the coordinators.
#[derive(Debug, Clone)]
pub enum GroupNote {
    /// A shard finished loading: partition -> (offset, log offset of its record), and the
    /// log offset and generation of the group's metadata record, if any.
    Loaded {
        broker: i32,
        epoch: i32,
        offsets: BTreeMap<i32, (i64, i64)>,
        metadata: Option<(i64, i32)>,
    },
    /// An OffsetCommit was appended as these record values from `base`.
    CommitAppended {
        member: u8,
        incarnation: u32,
        request: u64,
        base: i64,
        values: Vec<u64>,
    },
    /// A group metadata write was committed (the coordinator acts on it).
    StoreCommitted {
        base: i64,
        value: u64,
        generation: i32,
    },
}

#[derive(Debug, Clone, Copy)]
struct Reply {
    member: u8,
    incarnation: u32,
    request: u64,
}

#[derive(Debug, Clone, Copy)]
struct Committed {
    offset: i64,
    log_offset: i64,
}

struct Entry {
    group: Group,
    offsets: BTreeMap<i32, Committed>,
    incarnation: u64,
}

struct Shard {
    /// Tells this shard from an earlier one (a pending write applies only to its own).
    id: u64,
    epoch: i32,
    loaded: bool,
    entry: Option<Entry>,
    waiters: BTreeMap<Ticket, Reply>,
    in_flight: BTreeSet<i64>,
}

enum Then {
    Store {
        generation: i32,
        then: Vec<Output>,
        incarnation: Option<u64>,
        value: u64,
    },
    Commit {
        entries: Vec<(i32, i64)>,
        reply: Option<Reply>,
    },
}

struct Pending {
    shard: u64,
    base: i64,
    then: Then,
}

/// Everything a coordinator call touches besides itself.
pub struct Ctx<'a> {
    pub broker: &'a mut SimBroker,
    pub records: &'a mut RecordTable,
    pub now: i64,
    pub out: &'a mut Out,
    pub notes: &'a mut Vec<GroupNote>,
}

pub struct SimCoordinator {
    glue: Glue,
    shard: Option<Shard>,
    pending: BTreeMap<u64, Pending>,
    next_id: u64,
}

fn refused(e: AppendRefusal) -> ResponseError {
    match e {
        AppendRefusal::NotEnoughReplicas => ResponseError::CoordinatorNotAvailable,
        AppendRefusal::NotLeader => ResponseError::NotCoordinator,
    }
}

fn send(cx: &mut Ctx, r: Reply, answer: Result<GroupAns, ResponseError>) {
    cx.out.msgs.push((
        Node::Member(r.member),
        Msg::GroupAnswer {
            incarnation: r.incarnation,
            request: r.request,
            answer,
        },
    ));
}

impl Shard {
    /// `ShardState::answer`.
    fn answer(&mut self, cx: &mut Ctx, out: Output) {
        match out {
            Output::Join(t, r) => {
                if let Some(w) = self.waiters.remove(&t) {
                    send(cx, w, Ok(GroupAns::Join(r)));
                }
            }
            Output::Sync(t, r) => {
                if let Some(w) = self.waiters.remove(&t) {
                    send(cx, w, Ok(GroupAns::Sync(r)));
                }
            }
            Output::Store { then, .. } => then.into_iter().for_each(|o| self.answer(cx, o)),
        }
    }

    /// `ShardState::fail`.
    fn fail(&mut self, cx: &mut Ctx, outs: Vec<Output>, error: ResponseError) {
        for o in outs {
            match o {
                Output::Join(t, r) => {
                    let resp = JoinResponse {
                        error: Some(error),
                        generation: -1,
                        member_id: r.member_id,
                        ..JoinResponse::default()
                    };
                    self.answer(cx, Output::Join(t, resp));
                }
                Output::Sync(t, _) => self.answer(cx, Output::Sync(t, SyncResponse::error(error))),
                Output::Store { then, .. } => self.fail(cx, then, error),
            }
        }
    }

    /// `ShardState::drop_if_vacant`.
    fn drop_if_vacant(&mut self) {
        let vacant = self.entry.as_ref().is_some_and(|e| {
            e.offsets.is_empty()
                && e.group.is_empty()
                && e.group.generation() == 0
                && e.group.state() == State::Empty
        });
        if vacant {
            self.entry = None;
        }
    }
}

impl SimCoordinator {
    pub fn new(glue: Glue) -> Self {
        Self {
            glue,
            shard: None,
            pending: BTreeMap::new(),
            next_id: 1,
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// The process died: everything in memory is gone, nobody is answered.
    pub fn crash(&mut self) {
        self.shard = None;
        self.pending.clear();
    }

    fn leading_epoch(b: &SimBroker) -> Option<i32> {
        b.leading().map(|(e, _)| e)
    }

    /// `Coordinator::run`: follow leadership, run the group's timers.
    pub fn on_tick(&mut self, cx: &mut Ctx) {
        cx.out.timers.push((TICK_MS, Timer::GroupTick));
        self.sync_leadership(cx);
        let Some(shard) = self.shard.as_mut().filter(|s| s.loaded) else {
            return;
        };
        let outs = match shard.entry.as_mut() {
            Some(e) => e.group.tick(cx.now),
            None => return,
        };
        if !outs.is_empty() {
            self.run_outputs(cx, outs);
        }
    }

    /// `Coordinator::sync_leadership`.
    fn sync_leadership(&mut self, cx: &mut Ctx) {
        let led = Self::leading_epoch(cx.broker);
        if self.shard.as_ref().is_some_and(|s| Some(s.epoch) != led) {
            self.unload(cx);
        }
        if let Some(epoch) = led {
            self.start_load(cx, epoch);
        }
    }

    /// `Coordinator::unload`: parked requests see their channel close (NOT_COORDINATOR).
    fn unload(&mut self, cx: &mut Ctx) {
        if let Some(s) = self.shard.take() {
            for (_, w) in s.waiters {
                send(cx, w, Err(ResponseError::NotCoordinator));
            }
        }
    }

    fn start_load(&mut self, cx: &mut Ctx, epoch: i32) {
        if self.shard.as_ref().is_some_and(|s| s.epoch == epoch) {
            return; // already loading or loaded
        }
        self.unload(cx);
        let id = self.id();
        self.shard = Some(Shard {
            id,
            epoch,
            loaded: false,
            entry: None,
            waiters: BTreeMap::new(),
            in_flight: BTreeSet::new(),
        });
        cx.out.timers.push((LOAD_MS, Timer::GroupLoaded { epoch }));
    }

    /// The load's read: the whole log to its end, replayed as coordinator.rs's `load` does.
    pub fn on_loaded(&mut self, cx: &mut Ctx, epoch: i32) {
        let still = Self::leading_epoch(cx.broker) == Some(epoch);
        let Some(shard) = self
            .shard
            .as_mut()
            .filter(|s| s.epoch == epoch && !s.loaded && still)
        else {
            return;
        };
        let mut metadata = None;
        let mut offsets: BTreeMap<i32, Committed> = BTreeMap::new();
        if self.glue != Glue::SkipLoad {
            for (at, _, v) in cx.broker.log.records_below(i64::MAX) {
                let Some((key, value)) = cx.records.get(v) else {
                    continue; // not a group record
                };
                match records::decode_key(key).expect("sim records decode") {
                    RecordKey::Offset { partition, .. } => match value {
                        Some(bytes) => {
                            let ov = records::decode_offset_value(bytes).expect("decodes");
                            let c = Committed {
                                offset: ov.offset,
                                log_offset: at,
                            };
                            offsets.insert(partition, c);
                        }
                        None => {
                            offsets.remove(&partition);
                        }
                    },
                    RecordKey::Group { .. } => {
                        let md = value
                            .as_ref()
                            .map(|b| records::decode_group_value(b).expect("decodes"));
                        metadata = Some((at, md));
                    }
                }
            }
        }
        let limits = limits();
        let mut entry = match &metadata {
            Some((_, Some(md))) => Some(Group::from_metadata(GROUP, md, cx.now, limits)),
            _ => None,
        };
        if !offsets.is_empty() && entry.is_none() {
            entry = Some(Group::new(GROUP, cx.now, limits));
        }
        cx.notes.push(GroupNote::Loaded {
            broker: cx.broker.id,
            epoch,
            offsets: offsets
                .iter()
                .map(|(p, c)| (*p, (c.offset, c.log_offset)))
                .collect(),
            metadata: match &metadata {
                Some((at, Some(md))) => Some((*at, md.generation)),
                _ => None,
            },
        });
        let incarnation = self.next_id + 1;
        self.next_id += 1;
        shard.entry = entry.map(|group| Entry {
            group,
            offsets,
            incarnation,
        });
        shard.loaded = true;
    }

    /// `Coordinator::shard` + `with_shard`: the loaded shard, or why not.
    fn loaded_shard(&mut self, cx: &mut Ctx) -> Result<(), ResponseError> {
        let Some(epoch) = Self::leading_epoch(cx.broker) else {
            return Err(ResponseError::NotCoordinator);
        };
        match &self.shard {
            Some(s) if s.epoch == epoch && s.loaded => Ok(()),
            Some(s) if s.epoch == epoch => Err(ResponseError::CoordinatorLoadInProgress),
            _ => {
                self.start_load(cx, epoch);
                Err(ResponseError::CoordinatorLoadInProgress)
            }
        }
    }

    fn ticket(&mut self) -> Ticket {
        self.id()
    }

    pub fn on_request(
        &mut self,
        cx: &mut Ctx,
        member: u8,
        incarnation: u32,
        request: u64,
        body: GroupReq,
    ) {
        let reply = Reply {
            member,
            incarnation,
            request,
        };
        if let Err(e) = self.loaded_shard(cx) {
            return send(cx, reply, Err(e));
        }
        let now = cx.now;
        let ticket = self.ticket();
        let fresh = format!(
            "m{member}-b{}.{}-{ticket}",
            cx.broker.id, cx.broker.incarnation
        );
        let shard = self.shard.as_mut().expect("loaded");
        let answer = match body {
            GroupReq::Join { member_id } => {
                shard.waiters.insert(ticket, reply);
                let entry = shard.entry.get_or_insert_with(|| Entry {
                    group: Group::new(GROUP, now, limits()),
                    offsets: BTreeMap::new(),
                    incarnation: ticket,
                });
                let req = JoinRequest {
                    member_id,
                    instance_id: None,
                    require_known_member_id: true,
                    fresh_member_id: fresh,
                    client_id: format!("c{member}"),
                    client_host: "sim".into(),
                    rebalance_timeout_ms: REBALANCE_TIMEOUT_MS,
                    session_timeout_ms: SESSION_TIMEOUT_MS,
                    protocol_type: "consumer".into(),
                    protocols: vec![("range".into(), Bytes::from_static(b"t"))],
                };
                let outs = entry.group.join(req, ticket, now);
                self.run_outputs(cx, outs);
                if let Some(s) = self.shard.as_mut() {
                    s.drop_if_vacant();
                }
                return;
            }
            GroupReq::Sync {
                member_id,
                generation,
                assignments,
            } => {
                let Some(entry) = shard.entry.as_mut() else {
                    return send(cx, reply, Err(ResponseError::UnknownMemberId));
                };
                let req = SyncRequest {
                    member_id,
                    instance_id: None,
                    generation,
                    protocol_type: Some("consumer".into()),
                    protocol_name: Some("range".into()),
                    assignments,
                };
                let outs = entry.group.sync(req, ticket, now);
                shard.waiters.insert(ticket, reply);
                self.run_outputs(cx, outs);
                return;
            }
            GroupReq::Heartbeat {
                member_id,
                generation,
            } => match shard.entry.as_mut() {
                Some(e) => e.group.heartbeat(&member_id, None, generation, now).err(),
                None => Some(ResponseError::UnknownMemberId),
            },
            GroupReq::Leave { member_id } => {
                let Some(entry) = shard.entry.as_mut() else {
                    return send(
                        cx,
                        reply,
                        Ok(GroupAns::Done(Some(ResponseError::UnknownMemberId))),
                    );
                };
                let mut outs = Vec::new();
                let result = entry.group.leave(&member_id, None, now, &mut outs);
                self.run_outputs(cx, outs);
                result.err()
            }
            GroupReq::Commit {
                member_id,
                generation,
                offsets,
            } => match self.commit(cx, reply, &member_id, generation, offsets) {
                Ok(()) => return,
                Err(e) => Some(e),
            },
            GroupReq::OffsetFetch { partitions } => {
                let found = partitions
                    .into_iter()
                    .map(|p| {
                        let o = shard.entry.as_ref().and_then(|e| e.offsets.get(&p));
                        (p, o.map(|c| c.offset))
                    })
                    .collect();
                return send(cx, reply, Ok(GroupAns::Offsets(found)));
            }
        };
        send(cx, reply, Ok(GroupAns::Done(answer)));
    }

    /// `Coordinator::commit`: validated, appended, answered (and applied) once committed.
    fn commit(
        &mut self,
        cx: &mut Ctx,
        reply: Reply,
        member_id: &str,
        generation: i32,
        offsets: Vec<(i32, i64)>,
    ) -> Result<(), ResponseError> {
        let now = cx.now;
        let incarnation = self.next_id + 1;
        let shard = self.shard.as_mut().expect("loaded");
        let entry = match shard.entry.as_mut() {
            Some(e) => e,
            None if generation < 0 => shard.entry.insert(Entry {
                group: Group::new(GROUP, now, limits()),
                offsets: BTreeMap::new(),
                incarnation,
            }),
            None => return Err(ResponseError::IllegalGeneration),
        };
        entry
            .group
            .validate_commit(member_id, None, generation, now)?;
        if offsets.is_empty() {
            send(cx, reply, Ok(GroupAns::Done(None)));
            return Ok(());
        }
        let values: Vec<u64> = offsets
            .iter()
            .map(|&(partition, offset)| {
                let key = RecordKey::Offset {
                    group: GROUP.into(),
                    topic: CONSUMED_TOPIC.into(),
                    partition,
                };
                let value = OffsetValue {
                    offset,
                    leader_epoch: -1,
                    metadata: String::new(),
                    commit_timestamp_ms: now,
                };
                let bytes = records::encode_offset_value(&value).expect("fits");
                cx.records.add(&key, Some(bytes))
            })
            .collect();
        let (epoch, shard_id) = (shard.epoch, shard.id);
        let wait = self.next_id + 2;
        self.next_id += 2;
        let appended = cx
            .broker
            .coordinator_append(epoch, values.clone(), wait, cx.out)
            .map_err(refused);
        let shard = self.shard.as_mut().expect("loaded");
        let appended = appended.inspect(|(base, _)| {
            shard.in_flight.insert(*base);
        });
        shard.drop_if_vacant();
        let (base, _) = appended?;
        cx.notes.push(GroupNote::CommitAppended {
            member: reply.member,
            incarnation: reply.incarnation,
            request: reply.request,
            base,
            values,
        });
        let reply = if self.glue == Glue::AnswerCommitOnAppend {
            send(cx, reply, Ok(GroupAns::Done(None)));
            None
        } else {
            Some(reply)
        };
        self.wait_for(
            cx,
            wait,
            Pending {
                shard: shard_id,
                base,
                then: Then::Commit {
                    entries: offsets,
                    reply,
                },
            },
        );
        Ok(())
    }

    fn wait_for(&mut self, cx: &mut Ctx, wait: u64, p: Pending) {
        self.pending.insert(wait, p);
        cx.out
            .timers
            .push((COMMIT_TIMEOUT_MS, Timer::GroupWaitTimeout { wait }));
    }

    /// `Coordinator::run_outputs`: answers now, or after a Store is committed.
    fn run_outputs(&mut self, cx: &mut Ctx, outs: Vec<Output>) {
        let mut queue = VecDeque::from(outs);
        while let Some(out) = queue.pop_front() {
            let Some(shard) = self.shard.as_mut() else {
                return;
            };
            let Output::Store { metadata, then } = out else {
                shard.answer(cx, out);
                continue;
            };
            let generation = metadata.generation;
            let bytes = records::encode_group_value(&metadata).expect("fits");
            let key = RecordKey::Group {
                group: GROUP.into(),
            };
            let value = cx.records.add(&key, Some(bytes));
            let incarnation = shard.entry.as_ref().map(|e| e.incarnation);
            let (epoch, shard_id) = (shard.epoch, shard.id);
            let wait = self.id();
            match cx
                .broker
                .coordinator_append(epoch, vec![value], wait, cx.out)
            {
                Ok((base, _)) => self.wait_for(
                    cx,
                    wait,
                    Pending {
                        shard: shard_id,
                        base,
                        then: Then::Store {
                            generation,
                            then,
                            incarnation,
                            value,
                        },
                    },
                ),
                Err(e) => {
                    let shard = self.shard.as_mut().expect("still here");
                    shard.fail(cx, then, refused(e));
                    if let Some(entry) = shard.entry.as_mut() {
                        queue.extend(entry.group.store_failed(generation, cx.now));
                    }
                }
            }
        }
    }

    /// The broker's answer to a write's wait.
    pub fn on_wait(&mut self, cx: &mut Ctx, wait: u64, committed: bool) {
        if let Some(p) = self.pending.remove(&wait) {
            let result = if committed {
                Ok(())
            } else {
                Err(ResponseError::NotCoordinator)
            };
            self.settle(cx, p, result);
        }
    }

    /// offsets.commit.timeout.ms passed: COORDINATOR_NOT_AVAILABLE (the write may still commit).
    pub fn on_wait_timeout(&mut self, cx: &mut Ctx, wait: u64) {
        if let Some(p) = self.pending.remove(&wait) {
            cx.broker.cancel_wait(wait);
            self.settle(cx, p, Err(ResponseError::CoordinatorNotAvailable));
        }
    }

    fn settle(&mut self, cx: &mut Ctx, p: Pending, result: Result<(), ResponseError>) {
        let shard = self.shard.as_mut().filter(|s| s.id == p.shard);
        match p.then {
            Then::Store {
                generation,
                then,
                incarnation,
                value,
            } => {
                if result.is_ok() {
                    cx.notes.push(GroupNote::StoreCommitted {
                        base: p.base,
                        value,
                        generation,
                    });
                }
                // An unloaded shard's waiters are gone: nobody to answer.
                let Some(shard) = shard else { return };
                match result {
                    Ok(()) => then.into_iter().for_each(|o| shard.answer(cx, o)),
                    Err(e) => shard.fail(cx, then, e),
                }
                let outs = shard
                    .entry
                    .as_mut()
                    .filter(|e| Some(e.incarnation) == incarnation)
                    .map(|e| {
                        if result.is_ok() {
                            e.group.stored(generation, cx.now)
                        } else {
                            e.group.store_failed(generation, cx.now)
                        }
                    })
                    .unwrap_or_default();
                self.run_outputs(cx, outs);
            }
            Then::Commit { entries, reply } => {
                if let Some(shard) = shard {
                    shard.in_flight.remove(&p.base);
                    if result.is_ok() {
                        let incarnation = self.next_id + 1;
                        self.next_id += 1;
                        let entry = shard.entry.get_or_insert_with(|| Entry {
                            group: Group::new(GROUP, cx.now, limits()),
                            offsets: BTreeMap::new(),
                            incarnation,
                        });
                        for (i, (partition, offset)) in entries.into_iter().enumerate() {
                            let log_offset = p.base + i as i64;
                            let slot = entry
                                .offsets
                                .entry(partition)
                                .or_insert(Committed { offset, log_offset });
                            if slot.log_offset < log_offset {
                                *slot = Committed { offset, log_offset };
                            }
                        }
                    }
                }
                if let Some(r) = reply {
                    send(cx, r, Ok(GroupAns::Done(result.err())));
                }
            }
        }
    }

    /// The offsets this broker serves now, if it coordinates in `epoch` with a loaded shard.
    pub fn served(&self, epoch: i32) -> Option<BTreeMap<i32, (i64, i64)>> {
        let s = self
            .shard
            .as_ref()
            .filter(|s| s.epoch == epoch && s.loaded)?;
        Some(
            s.entry
                .as_ref()
                .map(|e| {
                    e.offsets
                        .iter()
                        .map(|(p, c)| (*p, (c.offset, c.log_offset)))
                        .collect()
                })
                .unwrap_or_default(),
        )
    }
}
