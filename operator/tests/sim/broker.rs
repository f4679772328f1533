//! One simulated broker: the real leader-side core (`LeaderState`), the broker's follower
//! rules over a [`LogModel`], and the glue the real broker has around them (metadata
//! application as in `broker::state`, acks=all waiters as in `Partition::wait_high_watermark`,
//! ISR proposals as in `ClusterRuntime::propose_isr`), driven by messages and timers.

use broker::cluster::controller_client::AlterPartition;
use broker::metadata::{NO_LEADER, PartitionMeta};
use broker::replication::state::{Assignment, Effect, FollowerFetch, LeaderState, Settings};
use broker::topic_config::FsyncPolicy;
use rand::rngs::SmallRng;

use super::coordinator::Glue;
use super::log::LogModel;
use super::net::{Answer, IsrAnswer, Msg, Node, Timer};

pub const TOPIC: &str = "sim";
const FETCH_EVERY_MS: u64 = 25;
const FETCH_TIMEOUT_MS: i64 = 300;
const ALTER_PARTITION_TIMEOUT_MS: u64 = 300;
const HEARTBEAT_EVERY_MS: u64 = 200;
const ISR_TICK_EVERY_MS: u64 = 200;
const REGISTER_RETRY_MS: u64 = 300;
/// Most batches one fetch answer carries.
const FETCH_MAX_BATCHES: usize = 4;

/// Broker behaviours the simulation runs: as the code is, or as it was before a fix (see the
/// old-bug test in `tests/simulation.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Behaviour {
    /// Before the fix in `Membership::join`: a restarted broker applied the metadata it saved
    /// before the crash once registered. Now (`FIXED`) it waits for the controller's.
    pub apply_saved_metadata: bool,
    /// Whether schedules run a consumer group, with which coordinator glue
    /// (`sim::coordinator::Glue`), and in one schedule of how many (seeds divisible by it).
    pub groups: Option<(Glue, u64)>,
    /// A broker restarted after a power loss says so when it registers (Registration's
    /// `unclean_shutdown`), so the controller stops counting it as holding every committed
    /// record. Before that fix it did not: an ISR of one that lost its tail led again.
    pub report_unclean_shutdown: bool,
}

impl Behaviour {
    /// One schedule in two runs a consumer group (its events cost more).
    pub const FIXED: Self = Self {
        apply_saved_metadata: false,
        groups: Some((Glue::Real, 2)),
        report_unclean_shutdown: true,
    };
}

/// What a broker did that the invariants look at.
#[derive(Debug, Clone)]
pub enum Note {
    BecameLeader {
        broker: i32,
        epoch: i32,
        high_watermark: i64,
    },
    HighWatermark {
        broker: i32,
        epoch: i32,
        high_watermark: i64,
    },
    /// An acks=all write answered as written, at [base, end) in `epoch`.
    Acked {
        broker: i32,
        epoch: i32,
        base: i64,
        end: i64,
    },
}

/// What handling one input produced.
#[derive(Default)]
pub struct Out {
    pub msgs: Vec<(Node, Msg)>,
    /// (delay ms, timer) for this broker's current incarnation.
    pub timers: Vec<(u64, Timer)>,
    pub notes: Vec<Note>,
    /// The group coordinator's writes that finished waiting: (wait id, committed), as
    /// `Partition::wait_high_watermark` answers (false: the leadership ended).
    pub waits: Vec<(u64, bool)>,
}

/// Who waits for an acks=all write: the producer, or the group coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WaitFor {
    Produce(u64),
    Coordinator(u64),
}

/// Why the coordinator's append was refused (`AppendRefused`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendRefusal {
    NotLeader,
    NotEnoughReplicas,
}

enum Role {
    /// Just started: no metadata applied yet.
    Unknown,
    Leader(Box<LeaderState>),
    Follower {
        leader: i32,
        epoch: i32,
    },
}

/// An acks=all produce waiting for the high watermark to pass `end`.
struct Waiter {
    who: WaitFor,
    epoch: i32,
    base: i64,
    end: i64,
}

pub struct SimBroker {
    pub id: i32,
    pub up: bool,
    pub incarnation: u32,
    /// The broker epoch the controller gave this incarnation (None: not registered yet).
    pub broker_epoch: Option<i64>,
    pub log: LogModel,
    role: Role,
    /// A follower's high watermark (the leader's is in its `LeaderState`).
    follower_hw: i64,
    /// The high watermark checkpoint on disk (written at every writeback).
    hw_checkpoint: i64,
    /// The last metadata applied, kept on disk as the real broker does (its metadata task
    /// long-polls for a newer version than the saved one, so nothing older applies).
    meta_version: u64,
    cached_meta: Option<PartitionMeta>,
    fsync: FsyncPolicy,
    settings: Settings,
    behaviour: Behaviour,
    /// The fetch in flight (its number, when it was sent); unanswered for FETCH_TIMEOUT_MS
    /// it is given up.
    fetch_in_flight: Option<(u64, i64)>,
    /// The fetch timer runs only while this broker follows.
    fetch_timer_armed: bool,
    alter_in_flight: Option<u64>,
    /// The proposal in flight, asked again when unanswered.
    alter_request: Option<AlterPartition>,
    generation: u64,
    timers_started: bool,
    waiters: Vec<Waiter>,
    /// A power loss (the page cache went) not yet reported by a registration: the next start
    /// registers as an unclean shutdown.
    lost_power: bool,
    /// This incarnation started after a power loss.
    unclean: bool,
}

impl SimBroker {
    pub fn new(id: i32, fsync: FsyncPolicy, settings: Settings, behaviour: Behaviour) -> Self {
        Self {
            id,
            up: false,
            incarnation: 0,
            broker_epoch: None,
            log: LogModel::default(),
            role: Role::Unknown,
            follower_hw: 0,
            hw_checkpoint: 0,
            meta_version: 0,
            cached_meta: None,
            fsync,
            settings,
            behaviour,
            fetch_in_flight: None,
            fetch_timer_armed: false,
            alter_in_flight: None,
            alter_request: None,
            generation: 0,
            timers_started: false,
            waiters: Vec::new(),
            lost_power: false,
            unclean: false,
        }
    }

    /// (leader epoch, high watermark) while this broker leads.
    pub fn leading(&self) -> Option<(i32, i64)> {
        match &self.role {
            Role::Leader(s) => Some((s.assignment().leader_epoch, s.high_watermark())),
            _ => None,
        }
    }
    /// The epoch this broker follows in, if it follows.
    pub fn following(&self) -> Option<i32> {
        match self.role {
            Role::Follower { epoch, .. } => Some(epoch),
            _ => None,
        }
    }

    /// A (re)start: recover the log (the epoch cache drops entries past its end, as
    /// `Log::open` does), forget everything in memory, register with a new incarnation.
    pub fn start(&mut self, out: &mut Out) {
        self.up = true;
        self.incarnation += 1;
        // Kept until a registration carried it (`Broker::lost_records_reported`).
        self.unclean = self.lost_power;
        self.broker_epoch = None;
        let end = self.log.end();
        self.log.truncate_to(end);
        self.role = Role::Unknown;
        self.follower_hw = self.hw_checkpoint.min(end);
        self.fetch_in_flight = None;
        self.fetch_timer_armed = false;
        self.alter_in_flight = None;
        self.timers_started = false;
        self.waiters.clear();
        self.register(out);
    }

    /// Stops the process; with a power loss the unflushed tail may go. Returns lost values.
    pub fn crash(&mut self, power_loss: bool, rng: &mut SmallRng) -> Vec<u64> {
        self.up = false;
        self.role = Role::Unknown;
        self.waiters.clear();
        if power_loss {
            self.lost_power = true;
            self.log.lose_unflushed_tail(rng)
        } else {
            Vec::new()
        }
    }

    fn register(&mut self, out: &mut Out) {
        out.msgs.push((
            Node::Controller,
            Msg::Register {
                broker: self.id,
                incarnation: self.incarnation,
                unclean: self.unclean && self.behaviour.report_unclean_shutdown,
            },
        ));
        out.timers.push((REGISTER_RETRY_MS, Timer::Register));
    }

    pub fn on_register_timer(&mut self, out: &mut Out) {
        if self.broker_epoch.is_none() {
            self.register(out);
        }
    }

    /// Registered. The real broker (`Membership::join`) reads the controller's metadata once
    /// registered and acts on nothing older; with `apply_saved_metadata` on it applies the
    /// copy it saved on disk first, as it did before that fix (the old-bug test in
    /// `tests/simulation.rs`).
    pub fn on_registered(&mut self, epoch: i64, now: i64, out: &mut Out) {
        self.broker_epoch = Some(epoch);
        if self.unclean {
            self.lost_power = false;
        }
        if !self.timers_started {
            self.timers_started = true;
            out.timers.push((HEARTBEAT_EVERY_MS, Timer::Heartbeat));
            out.timers.push((ISR_TICK_EVERY_MS, Timer::IsrTick));
            out.timers.push((500, Timer::Writeback));
            if let Some(pm) = self
                .cached_meta
                .clone()
                .filter(|_| self.behaviour.apply_saved_metadata)
            {
                self.apply(pm, now, out);
            }
        }
    }

    pub fn on_heartbeat_timer(&mut self, out: &mut Out) {
        if let Some(epoch) = self.broker_epoch {
            out.msgs.push((
                Node::Controller,
                Msg::Heartbeat {
                    broker: self.id,
                    incarnation: self.incarnation,
                    epoch,
                },
            ));
        }
        out.timers.push((HEARTBEAT_EVERY_MS, Timer::Heartbeat));
    }

    /// Fenced: register again (a new broker epoch), as `Membership::heartbeat_loop` does.
    pub fn on_heartbeat_refused(&mut self, out: &mut Out) {
        if self.broker_epoch.is_some() {
            self.broker_epoch = None;
            self.register(out);
        }
    }

    pub fn on_metadata(&mut self, version: u64, pm: PartitionMeta, now: i64, out: &mut Out) {
        if self.broker_epoch.is_none() || version <= self.meta_version {
            return;
        }
        self.meta_version = version;
        self.cached_meta = Some(pm.clone());
        self.apply(pm, now, out);
    }

    /// `broker::state::Broker::apply_metadata_now` for one partition.
    fn apply(&mut self, pm: PartitionMeta, now: i64, out: &mut Out) {
        let a = assignment(&pm);
        if pm.leader == self.id {
            if let Role::Leader(s) = &mut self.role
                && s.assignment().leader_epoch == pm.leader_epoch
            {
                if let Some(effects) = s.on_assignment(a, now) {
                    self.apply_effects(effects, out);
                }
                return;
            }
            self.log.assign_leader_epoch(pm.leader_epoch);
            let hw = self.follower_hw;
            let s = LeaderState::new(self.id, self.settings, a, self.log.end(), hw, now);
            out.notes.push(Note::BecameLeader {
                broker: self.id,
                epoch: pm.leader_epoch,
                high_watermark: s.high_watermark(),
            });
            self.follower_hw = s.high_watermark();
            self.role = Role::Leader(Box::new(s));
            self.alter_in_flight = None;
            self.fail_waiters(out);
        } else {
            let changed = match self.role {
                Role::Follower { leader, epoch } => leader != pm.leader || epoch != pm.leader_epoch,
                _ => true,
            };
            if changed {
                if let Some((_, hw)) = self.leading() {
                    self.follower_hw = hw;
                }
                self.role = Role::Follower {
                    leader: pm.leader,
                    epoch: pm.leader_epoch,
                };
                self.fetch_in_flight = None;
                if !self.fetch_timer_armed {
                    self.fetch_timer_armed = true;
                    out.timers.push((FETCH_EVERY_MS, Timer::Fetch));
                }
                self.fail_waiters(out);
            }
        }
    }

    /// Leadership ended: every waiting acks=all write is answered as not written.
    fn fail_waiters(&mut self, out: &mut Out) {
        for w in self.waiters.drain(..) {
            match w.who {
                WaitFor::Produce(request) => out.msgs.push((
                    Node::Producer,
                    Msg::ProduceAnswer {
                        request,
                        base: None,
                    },
                )),
                WaitFor::Coordinator(id) => out.waits.push((id, false)),
            }
        }
    }

    pub fn on_produce(&mut self, request: u64, values: Vec<u64>, out: &mut Out) {
        let refuse = |out: &mut Out| {
            out.msgs.push((
                Node::Producer,
                Msg::ProduceAnswer {
                    request,
                    base: None,
                },
            ))
        };
        let Role::Leader(s) = &self.role else {
            return refuse(out);
        };
        if !s.enough_replicas() {
            return refuse(out);
        }
        let epoch = s.assignment().leader_epoch;
        self.append(WaitFor::Produce(request), epoch, values, out);
    }

    /// The group coordinator's write (`Partition::append_as_leader` with the shard's epoch and
    /// acks=all): [base, end) once appended; `wait` is answered in `Out::waits`.
    pub fn coordinator_append(
        &mut self,
        epoch: i32,
        values: Vec<u64>,
        wait: u64,
        out: &mut Out,
    ) -> Result<(i64, i64), AppendRefusal> {
        let Role::Leader(s) = &self.role else {
            return Err(AppendRefusal::NotLeader);
        };
        if s.assignment().leader_epoch != epoch {
            return Err(AppendRefusal::NotLeader);
        }
        if !s.enough_replicas() {
            return Err(AppendRefusal::NotEnoughReplicas);
        }
        Ok(self.append(WaitFor::Coordinator(wait), epoch, values, out))
    }

    /// The coordinator stopped waiting (its commit timeout).
    pub fn cancel_wait(&mut self, wait: u64) {
        self.waiters.retain(|w| w.who != WaitFor::Coordinator(wait));
    }

    fn append(&mut self, who: WaitFor, epoch: i32, values: Vec<u64>, out: &mut Out) -> (i64, i64) {
        let base = self.log.append_as_leader(epoch, values);
        let end = self.log.end();
        self.waiters.push(Waiter {
            who,
            epoch,
            base,
            end,
        });
        match self.fsync {
            FsyncPolicy::None => self.local_progress(end, out),
            FsyncPolicy::BeforeAck => out.timers.push((1, Timer::Flushed { offset: end })),
        }
        (base, end)
    }

    /// The group commit's fsync finished.
    pub fn on_flushed(&mut self, offset: i64, out: &mut Out) {
        self.log.flush_to(offset);
        self.local_progress(offset, out);
    }

    fn local_progress(&mut self, offset: i64, out: &mut Out) {
        if let Role::Leader(s) = &mut self.role {
            let effects = s.on_append(offset);
            self.apply_effects(effects, out);
        }
    }

    pub fn on_writeback(&mut self, out: &mut Out) {
        self.log.flush_to(self.log.end());
        self.hw_checkpoint = self.leading().map_or(self.follower_hw, |(_, hw)| hw);
        out.timers.push((500, Timer::Writeback));
    }

    fn apply_effects(&mut self, effects: Vec<Effect>, out: &mut Out) {
        for e in effects {
            match e {
                Effect::HighWatermark(hw) => self.high_watermark_moved(hw, out),
                Effect::ProposeIsr {
                    isr,
                    partition_epoch,
                } => {
                    let (Some(broker_epoch), Some((leader_epoch, _))) =
                        (self.broker_epoch, self.leading())
                    else {
                        continue;
                    };
                    let request = AlterPartition {
                        broker: self.id,
                        broker_epoch,
                        topic: TOPIC.into(),
                        partition: 0,
                        leader_epoch,
                        partition_epoch,
                        isr,
                    };
                    self.send_alter_partition(request, out);
                }
            }
        }
    }

    fn send_alter_partition(&mut self, request: AlterPartition, out: &mut Out) {
        self.generation += 1;
        self.alter_in_flight = Some(self.generation);
        self.alter_request = Some(request.clone());
        out.timers.push((
            ALTER_PARTITION_TIMEOUT_MS,
            Timer::AlterPartitionTimeout {
                generation: self.generation,
            },
        ));
        out.msgs.push((
            Node::Controller,
            Msg::AlterPartition {
                incarnation: self.incarnation,
                request,
            },
        ));
    }

    /// `Partition::wait_high_watermark`: a write is acknowledged only while its leadership
    /// lasts and once the high watermark passed it.
    fn high_watermark_moved(&mut self, hw: i64, out: &mut Out) {
        let Some((epoch, _)) = self.leading() else {
            return;
        };
        self.follower_hw = hw;
        out.notes.push(Note::HighWatermark {
            broker: self.id,
            epoch,
            high_watermark: hw,
        });
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiters)
            .into_iter()
            .partition(|w| w.epoch == epoch && w.end <= hw);
        self.waiters = waiting;
        for w in done {
            out.notes.push(Note::Acked {
                broker: self.id,
                epoch,
                base: w.base,
                end: w.end,
            });
            match w.who {
                WaitFor::Produce(request) => out.msgs.push((
                    Node::Producer,
                    Msg::ProduceAnswer {
                        request,
                        base: Some(w.base),
                    },
                )),
                WaitFor::Coordinator(id) => out.waits.push((id, true)),
            }
        }
    }

    pub fn on_alter_partition_answer(
        &mut self,
        leader_epoch: i32,
        answer: IsrAnswer,
        now: i64,
        out: &mut Out,
    ) {
        let Role::Leader(s) = &mut self.role else {
            return;
        };
        if s.assignment().leader_epoch != leader_epoch {
            return;
        }
        self.alter_in_flight = None;
        match answer {
            IsrAnswer::Committed(pm) => {
                if let Some(effects) = s.on_assignment(assignment(&pm), now) {
                    self.apply_effects(effects, out);
                }
            }
            // `ClusterRuntime::propose_isr`: only a refusal proving nothing was committed
            // forgets the proposal; after a stale-epoch refusal it stays pending (counted in
            // the high watermark) until the metadata brings the controller's state.
            IsrAnswer::Invalid => s.on_proposal_rejected(),
            IsrAnswer::Superseded => {}
        }
    }

    /// No answer: the HTTP call failed. `ClusterRuntime::propose_isr` asks again while the
    /// proposal is still pending from the same state; it is never forgotten unanswered (the
    /// controller may have committed it).
    pub fn on_alter_partition_timeout(&mut self, generation: u64, out: &mut Out) {
        if self.alter_in_flight != Some(generation) {
            return;
        }
        self.alter_in_flight = None;
        let Some(request) = self.alter_request.take() else {
            return;
        };
        let Role::Leader(s) = &self.role else {
            return;
        };
        let pending = s.pending_isr() == Some(request.isr.as_slice())
            && s.assignment().partition_epoch == request.partition_epoch
            && s.assignment().leader_epoch == request.leader_epoch;
        if pending {
            self.send_alter_partition(request, out);
        }
    }

    pub fn on_isr_tick(&mut self, now: i64, out: &mut Out) {
        if let Role::Leader(s) = &mut self.role {
            let effects = s.on_tick(now);
            self.apply_effects(effects, out);
        }
        out.timers.push((ISR_TICK_EVERY_MS, Timer::IsrTick));
    }

    /// The fetcher: one fetch in flight at a time, from the log end, naming the last epoch.
    pub fn on_fetch_timer(&mut self, now: i64, out: &mut Out) {
        let Role::Follower { leader, epoch } = self.role else {
            self.fetch_timer_armed = false;
            return;
        };
        out.timers.push((FETCH_EVERY_MS, Timer::Fetch));
        if self
            .fetch_in_flight
            .is_some_and(|(_, sent)| now - sent < FETCH_TIMEOUT_MS)
            || leader == NO_LEADER
        {
            return;
        }
        self.generation += 1;
        self.fetch_in_flight = Some((self.generation, now));
        out.msgs.push((
            Node::Broker(leader),
            Msg::Fetch {
                from: self.id,
                incarnation: self.incarnation,
                fetch: self.generation,
                leader_epoch: epoch,
                fetch_offset: self.log.end(),
                last_fetched_epoch: self.log.latest_epoch(),
            },
        ));
    }

    /// The leader's side of a follower fetch: `Partition::read_for_fetch` over the model.
    #[allow(clippy::too_many_arguments)]
    pub fn on_fetch(
        &mut self,
        from: i32,
        incarnation: u32,
        fetch: u64,
        leader_epoch: i32,
        fetch_offset: i64,
        last_fetched_epoch: i32,
        now: i64,
        out: &mut Out,
    ) {
        let mut reply = |answer: Answer, fetched_epoch: i32, high_watermark: i64| {
            out.msgs.push((
                Node::Broker(from),
                Msg::FetchAnswer {
                    incarnation,
                    fetch,
                    fetched_epoch,
                    fetch_offset,
                    answer,
                    high_watermark,
                },
            ))
        };
        let Role::Leader(s) = &mut self.role else {
            return reply(Answer::Refused, leader_epoch, -1);
        };
        if s.assignment().leader_epoch != leader_epoch {
            return reply(Answer::Refused, leader_epoch, -1);
        }
        let hw = s.high_watermark();
        let leo = self.log.end();
        let (answer, valid) = match self.log.diverging(last_fetched_epoch, fetch_offset) {
            Some((epoch, end_offset)) => (Answer::Diverging { epoch, end_offset }, false),
            None if fetch_offset < 0 || fetch_offset > leo => (Answer::OutOfRange, false),
            None => (
                Answer::Records(self.log.read(fetch_offset, FETCH_MAX_BATCHES)),
                true,
            ),
        };
        reply(answer, leader_epoch, hw);
        let fetch = FollowerFetch {
            replica: from,
            leader_epoch,
            fetch_offset,
            log_start_offset: 0,
            leader_log_end: leo,
            valid,
            now_ms: now,
        };
        if let Ok(effects) = s.on_fetch(fetch) {
            self.apply_effects(effects, out);
        }
    }

    /// `Partition::append_as_follower` over the model: an answer applies only if nothing
    /// changed since the fetch was sent.
    pub fn on_fetch_answer(
        &mut self,
        fetch: u64,
        fetched_epoch: i32,
        fetch_offset: i64,
        answer: Answer,
        high_watermark: i64,
    ) -> Result<(), String> {
        if self.fetch_in_flight.map(|(n, _)| n) != Some(fetch) {
            return Ok(()); // its connection was given up
        }
        self.fetch_in_flight = None;
        if self.following() != Some(fetched_epoch) || self.log.end() != fetch_offset {
            return Ok(());
        }
        match answer {
            Answer::Refused | Answer::OutOfRange => {}
            Answer::Diverging { epoch, end_offset } => {
                let to = self.log.truncation_offset(epoch, end_offset);
                self.log.truncate_to(to);
            }
            Answer::Records(batches) => {
                self.log.append_replicated(&batches)?;
                self.follower_hw = high_watermark.min(self.log.end());
                // `Partition::flush_as_follower`, before the next fetch reports the new end.
                if self.fsync == FsyncPolicy::BeforeAck {
                    self.log.flush_to(self.log.end());
                }
            }
        }
        Ok(())
    }
}

pub fn assignment(pm: &PartitionMeta) -> Assignment {
    Assignment {
        leader: pm.leader,
        leader_epoch: pm.leader_epoch,
        partition_epoch: pm.partition_epoch,
        replicas: pm.replicas.clone(),
        isr: pm.isr.clone(),
    }
}
