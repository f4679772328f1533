//! One seeded schedule: three brokers, the controller (the real decisions over a
//! `ControllerState`), an acks=all producer, a fault plan, and the event loop that runs them
//! in virtual time and checks the invariants after every event.

use std::collections::BTreeMap;

use broker::cluster::controller_client::Registration;
use broker::replication::state::Settings;
use broker::topic_config::FsyncPolicy;
use operator::controller::ControllerState;
use operator::controller::decisions;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::broker::{Behaviour, Note, Out, SimBroker, TOPIC};
use super::coordinator::{self, Ctx, RecordTable, SimCoordinator};
use super::group_oracle::GroupOracle;
use super::members::{self, Member};
use super::net::{Event, Fault, IsrAnswer, Msg, Network, Node, Queue, Timer};
use super::oracle::{MIN_INSYNC_REPLICAS, Oracle};

const BROKERS: i32 = 3;
const SESSION_TIMEOUT_MS: i64 = 1_000;
const CONTROLLER_TICK_MS: u64 = 100;
/// Faults happen before this; then the network heals and every broker restarts.
const FAULTS_UNTIL_MS: u64 = 3_000;
/// The quiet period after healing, before the final check.
const END_MS: u64 = 5_000;
/// Virtual time a follower may lag before the leader shrinks it out of the ISR.
const REPLICA_LAG_MAX_MS: i64 = 600;

/// How a schedule ended.
pub struct Outcome {
    pub result: Result<(), String>,
    pub events: u64,
    pub acked: usize,
    pub page_cache_losses: usize,
    /// Acks sent by a broker the controller had fenced (allowed; invariant 7).
    pub fenced_acks: u64,
    pub groups: bool,
    /// OffsetCommits acknowledged to members, and group loads by coordinators.
    pub commits_acked: u64,
    pub group_loads: u64,
    pub trace: Vec<String>,
}

/// The consumer group: its members, the coordinator of each broker, their invariants.
struct Groups {
    rng: SmallRng,
    members: Vec<Member>,
    coordinators: Vec<SimCoordinator>,
    records: RecordTable,
    oracle: GroupOracle,
}

struct Producer {
    next_value: u64,
    next_request: u64,
    in_flight: BTreeMap<u64, Vec<u64>>,
}

pub struct World {
    rng: SmallRng,
    now: u64,
    queue: Queue,
    net: Network,
    controller: ControllerState,
    pushed_version: u64,
    brokers: Vec<SimBroker>,
    producer: Producer,
    oracle: Oracle,
    fenced_acks: u64,
    groups: Option<Groups>,
    tracing: bool,
    trace: Vec<String>,
}

impl World {
    pub fn new(seed: u64, behaviour: Behaviour, tracing: bool) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let fsync = if rng.random_bool(0.5) {
            FsyncPolicy::None
        } else {
            FsyncPolicy::BeforeAck
        };
        let settings = Settings {
            replica_lag_time_max_ms: REPLICA_LAG_MAX_MS,
            min_insync_replicas: MIN_INSYNC_REPLICAS,
        };
        let net = Network::new(rng.random_range(2..=40), rng.random_range(0..=80));
        // The group draws from its own generator, so schedules without one stay as they were.
        let groups = behaviour
            .groups
            .filter(|(_, one_in)| seed.is_multiple_of(*one_in))
            .map(|(glue, _)| {
                let mut rng = SmallRng::seed_from_u64(seed ^ 0x6772_6f75_7073);
                let count = rng.random_range(2..=4u8);
                Groups {
                    members: (0..count)
                        .map(|i| Member::new(i, rng.random_range(300..800)))
                        .collect(),
                    coordinators: (0..BROKERS).map(|_| SimCoordinator::new(glue)).collect(),
                    records: RecordTable::default(),
                    oracle: GroupOracle::default(),
                    rng,
                }
            });
        let mut w = Self {
            rng,
            now: 0,
            queue: Queue::default(),
            net,
            controller: ControllerState::new("sim".into()),
            pushed_version: 0,
            brokers: (0..BROKERS)
                .map(|id| SimBroker::new(id, fsync, settings, behaviour))
                .collect(),
            producer: Producer {
                next_value: 1,
                next_request: 1,
                in_flight: BTreeMap::new(),
            },
            oracle: Oracle::new(fsync == FsyncPolicy::BeforeAck),
            fenced_acks: 0,
            groups,
            tracing,
            trace: Vec::new(),
        };
        w.log(format!(
            "seed {seed}: fsync.policy={fsync:?}, delay 1..={} ms, drop {}/1000, group members {}",
            w.net.max_delay_ms,
            w.net.drop_per_mille,
            w.groups.as_ref().map_or(0, |g| g.members.len())
        ));
        for id in 0..BROKERS {
            let mut out = Out::default();
            w.start_broker(id, &mut out);
            // A start notes nothing, so the oracle has nothing to refuse.
            let _ = w.emit(Node::Broker(id), out);
        }
        w.plan_members();
        w.queue.push(
            CONTROLLER_TICK_MS,
            Event::Timer {
                node: Node::Controller,
                incarnation: 0,
                kind: Timer::ControllerTick,
            },
        );
        w.queue.push(
            300,
            Event::Timer {
                node: Node::Producer,
                incarnation: 0,
                kind: Timer::Produce,
            },
        );
        w.plan_faults();
        w
    }

    /// Member ticks, and the members' crashes (before the faults end).
    fn plan_members(&mut self) {
        let Some(g) = &mut self.groups else { return };
        let mut events = Vec::new();
        for m in &g.members {
            let node = Node::Member(m.index);
            let kind = Timer::MemberTick;
            events.push((
                members::TICK_MS,
                Event::Timer {
                    node,
                    incarnation: 0,
                    kind,
                },
            ));
        }
        for _ in 0..g.rng.random_range(0..=3) {
            let at = g.rng.random_range(400..FAULTS_UNTIL_MS);
            let member = g.rng.random_range(0..g.members.len() as u8);
            events.push((at, Event::Fault(Fault::MemberCrash { member })));
        }
        for (at, e) in events {
            self.queue.push(at, e);
        }
    }

    fn start_broker(&mut self, id: i32, out: &mut Out) {
        self.brokers[id as usize].start(out);
        if self.groups.is_some() {
            out.timers.push((coordinator::TICK_MS, Timer::GroupTick));
        }
    }

    fn log(&mut self, line: String) {
        if self.tracing {
            self.trace.push(line);
        }
    }

    /// A random fault plan: crashes (kill -9 or power loss) and restarts, controlled
    /// shutdowns, partitions around one node, preferred-leader elections.
    fn plan_faults(&mut self) {
        let faults = self.rng.random_range(0..=8);
        for _ in 0..faults {
            let at = self.rng.random_range(400..FAULTS_UNTIL_MS);
            let broker = self.rng.random_range(0..BROKERS);
            let back = at + self.rng.random_range(50..800);
            match self.rng.random_range(0..10) {
                0..=2 => {
                    let power_loss = self.rng.random_bool(0.5);
                    self.queue
                        .push(at, Event::Fault(Fault::Crash { broker, power_loss }));
                    self.queue
                        .push(back, Event::Fault(Fault::Restart { broker }));
                }
                3 => {
                    self.queue
                        .push(at, Event::Fault(Fault::Shutdown { broker }));
                    self.queue
                        .push(back, Event::Fault(Fault::Restart { broker }));
                }
                4..=7 => {
                    let node = match self.rng.random_range(0..5) {
                        0 => Node::Controller,
                        1 => Node::Producer,
                        _ => Node::Broker(broker),
                    };
                    let mask = self.rng.random_range(1..=u8::MAX);
                    self.queue
                        .push(at, Event::Fault(Fault::Isolate { node, mask }));
                    self.queue.push(back, Event::Fault(Fault::Heal));
                }
                _ => self.queue.push(at, Event::Fault(Fault::ElectPreferred)),
            }
        }
        self.queue.push(FAULTS_UNTIL_MS, Event::Fault(Fault::Heal));
        for broker in 0..BROKERS {
            self.queue
                .push(FAULTS_UNTIL_MS, Event::Fault(Fault::Restart { broker }));
        }
    }

    pub fn run(mut self) -> Outcome {
        let mut events = 0;
        let mut result = Ok(());
        while let Some((at, event)) = self.queue.pop() {
            if at > END_MS {
                break;
            }
            self.now = at;
            events += 1;
            if self.tracing {
                self.log(format!("{at:>5} {event:?}"));
            }
            let version = self.controller.metadata.version;
            let stepped = self.step(event);
            if self.tracing && self.controller.metadata.version != version {
                let pm = self.controller.metadata.partition(TOPIC, 0).cloned();
                let line = pm.map_or_else(String::new, |p| {
                    format!(
                        "      controller v{}: leader {} epoch {} isr {:?} (partition epoch {})",
                        self.controller.metadata.version,
                        p.leader,
                        p.leader_epoch,
                        p.isr,
                        p.partition_epoch
                    )
                });
                self.log(line);
            }
            if let Err(e) = stepped.and_then(|()| self.check()) {
                result = Err(format!("at {at} ms: {e}"));
                break;
            }
        }
        if result.is_ok() {
            result = self.final_check();
        }
        Outcome {
            result,
            events,
            acked: self.oracle.acked_count(),
            page_cache_losses: self.oracle.page_cache_losses.len(),
            fenced_acks: self.fenced_acks,
            groups: self.groups.is_some(),
            commits_acked: self.groups.as_ref().map_or(0, |g| g.oracle.commits_acked),
            group_loads: self.groups.as_ref().map_or(0, |g| g.oracle.loads),
            trace: self.trace,
        }
    }

    fn check(&mut self) -> Result<(), String> {
        let pm = self.controller.metadata.partition(TOPIC, 0);
        self.oracle.check(pm, &self.brokers)
    }

    /// After healing and a quiet period: a leader leads its epoch and holds every
    /// acknowledged write, and the in-sync followers hold the same log below its high
    /// watermark (`check` looks at both).
    fn final_check(&mut self) -> Result<(), String> {
        let Some(pm) = self.controller.metadata.partition(TOPIC, 0) else {
            return Err("the topic was never created".into());
        };
        let settled = self
            .brokers
            .get(pm.leader as usize)
            .and_then(SimBroker::leading)
            .is_some_and(|(e, _)| e == pm.leader_epoch);
        if !settled {
            return Err(format!(
                "after healing no broker leads: the controller names {} in epoch {}",
                pm.leader, pm.leader_epoch
            ));
        }
        let (leader, epoch) = (pm.leader, pm.leader_epoch);
        self.check().map_err(|e| format!("after healing: {e}"))?;
        // G1 on what the settled coordinator serves.
        if let Some(g) = &mut self.groups {
            let Some(served) = g.coordinators[leader as usize].served(epoch) else {
                return Err(format!(
                    "after healing broker {leader} leads epoch {epoch} but has not loaded the group"
                ));
            };
            g.oracle
                .check_served(leader, epoch, &served, &self.oracle)
                .map_err(|e| format!("after healing: {e}"))?;
        }
        Ok(())
    }

    fn step(&mut self, event: Event) -> Result<(), String> {
        match event {
            Event::Deliver { from, to, msg } => {
                if self.net.is_cut(from, to) {
                    return Ok(());
                }
                self.deliver(from, to, msg)
            }
            Event::Timer {
                node,
                incarnation,
                kind,
            } => self.timer(node, incarnation, kind),
            Event::Fault(f) => self.fault(f),
        }
    }

    fn deliver(&mut self, from: Node, to: Node, msg: Msg) -> Result<(), String> {
        match to {
            Node::Controller => self.controller_receives(from, msg),
            Node::Producer => self.producer_receives(msg),
            Node::Broker(id) => self.broker_receives(id, msg),
            Node::Member(i) => self.member_receives(i, msg),
        }
    }

    fn broker_receives(&mut self, id: i32, msg: Msg) -> Result<(), String> {
        let now = self.now as i64;
        let b = &mut self.brokers[id as usize];
        if !b.up {
            return Ok(());
        }
        let mine = b.incarnation;
        let mut out = Out::default();
        match msg {
            Msg::Registered { incarnation, epoch } if incarnation == mine => {
                b.on_registered(epoch, now, &mut out)
            }
            Msg::HeartbeatRefused { incarnation } if incarnation == mine => {
                b.on_heartbeat_refused(&mut out)
            }
            Msg::AlterPartitionAnswer {
                incarnation,
                leader_epoch,
                answer,
            } if incarnation == mine => {
                b.on_alter_partition_answer(leader_epoch, answer, now, &mut out)
            }
            Msg::Metadata {
                incarnation,
                version,
                partition,
            } if incarnation == mine => b.on_metadata(version, partition, now, &mut out),
            Msg::Fetch {
                from,
                incarnation,
                fetch,
                leader_epoch,
                fetch_offset,
                last_fetched_epoch,
            } => b.on_fetch(
                from,
                incarnation,
                fetch,
                leader_epoch,
                fetch_offset,
                last_fetched_epoch,
                now,
                &mut out,
            ),
            Msg::FetchAnswer {
                incarnation,
                fetch,
                fetched_epoch,
                fetch_offset,
                answer,
                high_watermark,
            } if incarnation == mine => {
                b.on_fetch_answer(fetch, fetched_epoch, fetch_offset, answer, high_watermark)?
            }
            Msg::Produce { request, values } => b.on_produce(request, values, &mut out),
            Msg::Group {
                member,
                incarnation,
                request,
                body,
            } => {
                return self.with_coordinator(id, out, |c, cx| {
                    c.on_request(cx, member, incarnation, request, body)
                });
            }
            _ => {}
        }
        self.broker_out(id, out)
    }

    /// Runs `f` on broker `id`'s group coordinator, then delivers what came of it.
    fn with_coordinator(
        &mut self,
        id: i32,
        mut out: Out,
        f: impl FnOnce(&mut SimCoordinator, &mut Ctx),
    ) -> Result<(), String> {
        let mut notes = Vec::new();
        if let Some(g) = &mut self.groups {
            let mut cx = Ctx {
                broker: &mut self.brokers[id as usize],
                records: &mut g.records,
                now: self.now as i64,
                out: &mut out,
                notes: &mut notes,
            };
            f(&mut g.coordinators[id as usize], &mut cx);
        }
        self.group_notes(notes)?;
        self.broker_out(id, out)
    }

    fn group_notes(&mut self, notes: Vec<coordinator::GroupNote>) -> Result<(), String> {
        let Some(g) = &mut self.groups else {
            return Ok(());
        };
        for n in notes {
            if self.tracing {
                self.trace.push(format!("      {n:?}"));
            }
            g.oracle.coordinator(n, &self.oracle)?;
        }
        Ok(())
    }

    /// Hands the coordinator's writes that finished waiting back to it, then emits.
    fn broker_out(&mut self, id: i32, mut out: Out) -> Result<(), String> {
        while !out.waits.is_empty() {
            let waits = std::mem::take(&mut out.waits);
            let mut notes = Vec::new();
            if let Some(g) = &mut self.groups {
                let mut cx = Ctx {
                    broker: &mut self.brokers[id as usize],
                    records: &mut g.records,
                    now: self.now as i64,
                    out: &mut out,
                    notes: &mut notes,
                };
                for (wait, committed) in waits {
                    g.coordinators[id as usize].on_wait(&mut cx, wait, committed);
                }
            }
            self.group_notes(notes)?;
        }
        self.emit(Node::Broker(id), out)
    }

    fn member_receives(&mut self, i: u8, msg: Msg) -> Result<(), String> {
        let Msg::GroupAnswer {
            incarnation,
            request,
            answer,
        } = msg
        else {
            return Ok(());
        };
        let Some(g) = &mut self.groups else {
            return Ok(());
        };
        let mut notes = Vec::new();
        g.members[i as usize].on_answer(incarnation, request, answer, self.now as i64, &mut notes);
        for n in notes {
            if self.tracing {
                self.trace.push(format!("      {n:?}"));
            }
            if let Some((base, values)) = g.oracle.member(n)? {
                // The commit's records count as acknowledged writes for invariants 4-6.
                self.oracle.acked(base, &values)?;
            }
        }
        Ok(())
    }

    fn member_tick(&mut self, i: u8) {
        let now = self.now;
        let leader = self
            .controller
            .metadata
            .partition(TOPIC, 0)
            .map_or(-1, |p| p.leader);
        let Some(g) = &mut self.groups else { return };
        let to = if leader >= 0 && g.rng.random_bool(0.9) {
            leader
        } else {
            g.rng.random_range(0..BROKERS)
        };
        let sent = g.members[i as usize].tick(now as i64, to, &mut g.rng);
        let node = Node::Member(i);
        let kind = Timer::MemberTick;
        self.queue.push(
            now + members::TICK_MS,
            Event::Timer {
                node,
                incarnation: 0,
                kind,
            },
        );
        if let Some((to, msg)) = sent {
            self.send(node, to, msg);
        }
    }

    fn controller_receives(&mut self, from: Node, msg: Msg) -> Result<(), String> {
        let now = self.now as i64;
        let Node::Broker(id) = from else {
            return Ok(());
        };
        let answer = match msg {
            Msg::Register {
                broker,
                incarnation,
                unclean,
            } => {
                let reg = Registration {
                    id: broker,
                    incarnation: incarnation.to_string(),
                    host: format!("broker-{broker}"),
                    port: 9092,
                    replication_host: None,
                    rack: None,
                    listeners: Vec::new(),
                    unclean_shutdown: unclean,
                    min_insync_replicas: Some(MIN_INSYNC_REPLICAS as i32),
                };
                let epoch = decisions::register(&mut self.controller, reg, now);
                Some(Msg::Registered { incarnation, epoch })
            }
            Msg::Heartbeat {
                broker,
                incarnation,
                epoch,
            } => decisions::heartbeat(&mut self.controller, broker, epoch, now)
                .err()
                .map(|_| Msg::HeartbeatRefused { incarnation }),
            Msg::AlterPartition {
                incarnation,
                request,
            } => {
                use operator::controller::ControllerError as E;
                let answer = match decisions::alter_partition(&mut self.controller, &request) {
                    Ok(pm) => IsrAnswer::Committed(pm),
                    Err(
                        E::StalePartitionEpoch { .. }
                        | E::NotLeader { .. }
                        | E::StaleBrokerEpoch { .. }
                        | E::Fenced(_),
                    ) => IsrAnswer::Superseded,
                    Err(_) => IsrAnswer::Invalid,
                };
                Some(Msg::AlterPartitionAnswer {
                    incarnation,
                    leader_epoch: request.leader_epoch,
                    answer,
                })
            }
            _ => None,
        };
        if let Some(msg) = answer {
            self.send(Node::Controller, Node::Broker(id), msg);
        }
        self.push_metadata(false);
        Ok(())
    }

    /// Pushes the metadata to every broker when it changed (or always: brokers long-poll, so
    /// a lost push is made good by the next poll).
    fn push_metadata(&mut self, always: bool) {
        let version = self.controller.metadata.version;
        if version == self.pushed_version && !always {
            return;
        }
        self.pushed_version = version;
        let Some(pm) = self.controller.metadata.partition(TOPIC, 0).cloned() else {
            return;
        };
        for id in 0..BROKERS {
            let Some(incarnation) = self
                .controller
                .incarnations
                .get(&id)
                .and_then(|i| i.parse().ok())
            else {
                continue;
            };
            let msg = Msg::Metadata {
                incarnation,
                version,
                partition: pm.clone(),
            };
            self.send(Node::Controller, Node::Broker(id), msg);
        }
    }

    fn producer_receives(&mut self, msg: Msg) -> Result<(), String> {
        let Msg::ProduceAnswer { request, base } = msg else {
            return Ok(());
        };
        let Some(values) = self.producer.in_flight.remove(&request) else {
            return Ok(());
        };
        match base {
            Some(base) => self.oracle.acked(base, &values),
            None => Ok(()),
        }
    }

    fn timer(&mut self, node: Node, incarnation: u32, kind: Timer) -> Result<(), String> {
        let now = self.now as i64;
        match node {
            Node::Controller => {
                if self.controller.metadata.topics.is_empty() {
                    self.create_topic();
                }
                decisions::expire_sessions(&mut self.controller, now, SESSION_TIMEOUT_MS);
                // Every third tick stands for a long poll's answer.
                let always = self.now.is_multiple_of(3 * CONTROLLER_TICK_MS);
                self.push_metadata(always);
                self.queue.push(
                    self.now + CONTROLLER_TICK_MS,
                    Event::Timer {
                        node,
                        incarnation,
                        kind,
                    },
                );
                Ok(())
            }
            Node::Producer => {
                self.produce();
                Ok(())
            }
            Node::Member(i) => {
                self.member_tick(i);
                Ok(())
            }
            Node::Broker(id) => {
                let b = &mut self.brokers[id as usize];
                if !b.up || b.incarnation != incarnation {
                    return Ok(());
                }
                let mut out = Out::default();
                match kind {
                    Timer::Heartbeat => b.on_heartbeat_timer(&mut out),
                    Timer::IsrTick => b.on_isr_tick(now, &mut out),
                    Timer::Fetch => b.on_fetch_timer(now, &mut out),
                    Timer::AlterPartitionTimeout { generation } => {
                        b.on_alter_partition_timeout(generation, &mut out)
                    }
                    Timer::Flushed { offset } => b.on_flushed(offset, &mut out),
                    Timer::Writeback => b.on_writeback(&mut out),
                    Timer::Register => b.on_register_timer(&mut out),
                    Timer::GroupTick => {
                        return self.with_coordinator(id, out, |c, cx| c.on_tick(cx));
                    }
                    Timer::GroupLoaded { epoch } => {
                        return self.with_coordinator(id, out, |c, cx| c.on_loaded(cx, epoch));
                    }
                    Timer::GroupWaitTimeout { wait } => {
                        return self.with_coordinator(id, out, |c, cx| c.on_wait_timeout(cx, wait));
                    }
                    Timer::ControllerTick | Timer::Produce | Timer::MemberTick => {}
                }
                self.broker_out(id, out)
            }
        }
    }

    fn create_topic(&mut self) {
        let alive = self
            .controller
            .metadata
            .brokers
            .values()
            .filter(|b| b.status == broker::metadata::BrokerStatus::Alive)
            .count();
        if alive < BROKERS as usize {
            return;
        }
        let configs = BTreeMap::from([(
            "min.insync.replicas".to_string(),
            MIN_INSYNC_REPLICAS.to_string(),
        )]);
        let id = uuid::Uuid::from_u128(1);
        if let Err(e) = decisions::create_topic(&mut self.controller, TOPIC, 1, 3, configs, id) {
            self.log(format!("cannot create the topic: {e}"));
        }
    }

    /// The producer sends one acks=all batch to the broker it takes for the leader (now and
    /// then a random one, as a client with stale metadata would).
    fn produce(&mut self) {
        if self.now < FAULTS_UNTIL_MS + 1_000 {
            let next = self.now + self.rng.random_range(10..=50);
            let timer = Event::Timer {
                node: Node::Producer,
                incarnation: 0,
                kind: Timer::Produce,
            };
            self.queue.push(next, timer);
        }
        let leader = self
            .controller
            .metadata
            .partition(TOPIC, 0)
            .map_or(-1, |p| p.leader);
        let to = if leader >= 0 && self.rng.random_bool(0.9) {
            leader
        } else {
            self.rng.random_range(0..BROKERS)
        };
        let count = self.rng.random_range(1..=3);
        let values: Vec<u64> = (0..count).map(|i| self.producer.next_value + i).collect();
        self.producer.next_value += count;
        let request = self.producer.next_request;
        self.producer.next_request += 1;
        self.producer.in_flight.insert(request, values.clone());
        self.send(
            Node::Producer,
            Node::Broker(to),
            Msg::Produce { request, values },
        );
    }

    fn fault(&mut self, fault: Fault) -> Result<(), String> {
        match fault {
            Fault::Crash { broker, power_loss } => {
                let b = &mut self.brokers[broker as usize];
                if b.up {
                    let lost = b.crash(power_loss, &mut self.rng);
                    if power_loss {
                        self.log(format!(
                            "      broker {broker} lost {lost:?} with its page cache"
                        ));
                    }
                    if power_loss {
                        self.oracle.power_loss(broker, lost);
                    }
                    self.coordinator_crash(broker);
                }
            }
            Fault::Shutdown { broker } => {
                let b = &mut self.brokers[broker as usize];
                if let (true, Some(epoch)) = (b.up, b.broker_epoch) {
                    // The broker waits for its controlled shutdown to be committed.
                    let _ = decisions::controlled_shutdown(&mut self.controller, broker, epoch);
                    b.crash(false, &mut self.rng);
                    self.coordinator_crash(broker);
                    self.push_metadata(false);
                }
            }
            Fault::Restart { broker } => {
                if !self.brokers[broker as usize].up {
                    let mut out = Out::default();
                    self.start_broker(broker, &mut out);
                    self.emit(Node::Broker(broker), out)?;
                }
            }
            Fault::Isolate { node, mask } => {
                let others = (0..BROKERS)
                    .map(Node::Broker)
                    .chain([Node::Producer, Node::Controller])
                    .chain((0..3).map(Node::Member));
                for (bit, other) in others.enumerate() {
                    if other != node && mask & (1 << bit) != 0 {
                        self.net.cut(node, other);
                    }
                }
            }
            Fault::Heal => self.net.heal(),
            Fault::ElectPreferred => {
                decisions::elect_preferred(&mut self.controller, None);
                self.push_metadata(false);
            }
            Fault::MemberCrash { member } => {
                if let Some(g) = &mut self.groups {
                    g.members[member as usize].crash(self.now as i64, &mut g.rng);
                }
            }
        }
        Ok(())
    }

    fn coordinator_crash(&mut self, broker: i32) {
        if let Some(g) = &mut self.groups {
            g.coordinators[broker as usize].crash();
        }
    }

    /// The controller fenced this broker's incarnation (session expired, or replaced).
    fn fenced(&self, id: i32) -> bool {
        let registered = self.brokers[id as usize].broker_epoch;
        self.controller.metadata.brokers.get(&id).is_none_or(|b| {
            b.status == broker::metadata::BrokerStatus::Fenced || Some(b.epoch) != registered
        })
    }

    fn send(&mut self, from: Node, to: Node, msg: Msg) {
        if let Some(at) = self.net.arrival(&mut self.rng, self.now, from, to) {
            self.queue.push(at, Event::Deliver { from, to, msg });
        }
    }

    /// Sends a node's messages, arms its timers, and lets the oracle see its notes.
    fn emit(&mut self, node: Node, out: Out) -> Result<(), String> {
        let incarnation = match node {
            Node::Broker(id) => self.brokers[id as usize].incarnation,
            _ => 0,
        };
        for note in &out.notes {
            if self.tracing {
                self.log(format!("      {note:?}"));
            }
            if let Note::Acked { broker, .. } = note
                && self.fenced(*broker)
            {
                self.fenced_acks += 1;
            }
            self.oracle.note(note, &self.brokers)?;
        }
        for (to, msg) in out.msgs {
            self.send(node, to, msg);
        }
        for (delay, kind) in out.timers {
            self.queue.push(
                self.now + delay,
                Event::Timer {
                    node,
                    incarnation,
                    kind,
                },
            );
        }
        Ok(())
    }
}
