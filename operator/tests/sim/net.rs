//! Virtual time and the simulated network: events ordered by (time, sequence number), and
//! messages that arrive after a random delay, or not at all (dropped, or cut by a partition
//! at sending or at arrival). Independent delays reorder messages on the same path.

use std::collections::{BTreeMap, BTreeSet};

use broker::cluster::controller_client::AlterPartition;
use broker::group::state::{JoinResponse, SyncResponse};
use broker::metadata::PartitionMeta;
use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use rand::Rng;
use rand::rngs::SmallRng;

use super::log::Batch;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Node {
    Controller,
    Producer,
    Broker(i32),
    /// A consumer group member (`sim::members`).
    Member(u8),
}

/// A group request from a member to the broker it takes for the coordinator.
#[derive(Debug, Clone)]
pub enum GroupReq {
    Join {
        member_id: String,
    },
    Sync {
        member_id: String,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
    },
    Heartbeat {
        member_id: String,
        generation: i32,
    },
    Leave {
        member_id: String,
    },
    /// (partition, position) of the member's assigned partitions.
    Commit {
        member_id: String,
        generation: i32,
        offsets: Vec<(i32, i64)>,
    },
    OffsetFetch {
        partitions: Vec<i32>,
    },
}

#[derive(Debug, Clone)]
pub enum GroupAns {
    Join(JoinResponse),
    Sync(SyncResponse),
    /// Heartbeat, LeaveGroup, OffsetCommit: the error, if any.
    Done(Option<ResponseError>),
    /// OffsetFetch: (partition, committed offset).
    Offsets(Vec<(i32, Option<i64>)>),
}

/// A leader's answer to a follower's fetch.
#[derive(Debug, Clone)]
pub enum Answer {
    Records(Vec<Batch>),
    Diverging {
        epoch: i32,
        end_offset: i64,
    },
    OutOfRange,
    /// Not the leader, or another leader epoch (FENCED/UNKNOWN_LEADER_EPOCH, NOT_LEADER).
    Refused,
}

/// The controller's answer to an AlterPartition.
#[derive(Debug, Clone)]
pub enum IsrAnswer {
    Committed(PartitionMeta),
    /// The partition (or the broker's registration) moved on: a newer partition epoch,
    /// another leader, a newer broker epoch. An earlier try of this very proposal may be what
    /// moved it, so whether it was committed is unknown until the metadata arrives.
    Superseded,
    /// Refused as invalid at the current partition epoch: nothing was committed.
    Invalid,
}

#[derive(Debug, Clone)]
pub enum Msg {
    Register {
        broker: i32,
        incarnation: u32,
        /// Started after a power loss (see `Behaviour::report_unclean_shutdown`).
        unclean: bool,
    },
    Registered {
        incarnation: u32,
        epoch: i64,
    },
    Heartbeat {
        broker: i32,
        incarnation: u32,
        epoch: i64,
    },
    /// The controller refused a heartbeat (fenced, or a stale broker epoch): register again.
    HeartbeatRefused {
        incarnation: u32,
    },
    AlterPartition {
        incarnation: u32,
        request: AlterPartition,
    },
    AlterPartitionAnswer {
        incarnation: u32,
        leader_epoch: i32,
        answer: IsrAnswer,
    },
    /// The controller's answer to a broker process's metadata long poll: the version and the
    /// one partition the simulation runs. A poll belongs to one process (incarnation), so a
    /// restarted broker never gets an answer meant for its previous life.
    Metadata {
        incarnation: u32,
        version: u64,
        partition: PartitionMeta,
    },
    /// A follower's fetch. `fetch` numbers it: a follower gives up an unanswered fetch by
    /// reconnecting (as `replication::fetcher` does), so an answer to any other is dropped.
    Fetch {
        from: i32,
        incarnation: u32,
        fetch: u64,
        leader_epoch: i32,
        fetch_offset: i64,
        last_fetched_epoch: i32,
    },
    FetchAnswer {
        incarnation: u32,
        fetch: u64,
        fetched_epoch: i32,
        fetch_offset: i64,
        answer: Answer,
        high_watermark: i64,
    },
    Produce {
        request: u64,
        values: Vec<u64>,
    },
    /// The base offset of an acknowledged write, or None (refused, not leader, epoch ended).
    ProduceAnswer {
        request: u64,
        base: Option<i64>,
    },
    /// `request` numbers the member's requests; `incarnation` is the member process's.
    Group {
        member: u8,
        incarnation: u32,
        request: u64,
        body: GroupReq,
    },
    /// Err: the coordinator refused before the group saw it (NOT_COORDINATOR,
    /// COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE).
    GroupAnswer {
        incarnation: u32,
        request: u64,
        answer: Result<GroupAns, ResponseError>,
    },
}

#[derive(Debug, Clone)]
pub enum Event {
    Deliver {
        from: Node,
        to: Node,
        msg: Msg,
    },
    /// A periodic timer of a node (ticks, heartbeats, fetches, the producer's sends).
    Timer {
        node: Node,
        incarnation: u32,
        kind: Timer,
    },
    Fault(Fault),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    Heartbeat,
    IsrTick,
    Fetch,
    /// An AlterPartition unanswered this long failed (the HTTP call timed out).
    AlterPartitionTimeout {
        generation: u64,
    },
    /// The group commit's fsync finished up to this offset (fsync.policy=before-ack).
    Flushed {
        offset: i64,
    },
    /// The kernel wrote the page cache back (everything appended so far is on disk).
    Writeback,
    Register,
    ControllerTick,
    Produce,
    /// The group coordinator's timer task (`Coordinator::run`): leadership, group ticks.
    GroupTick,
    /// Loading the offsets partition for this leader epoch finished reading.
    GroupLoaded {
        epoch: i32,
    },
    /// The coordinator's write waited offsets.commit.timeout.ms.
    GroupWaitTimeout {
        wait: u64,
    },
    MemberTick,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// kill -9 (page cache survives) or a power loss (the unflushed tail may be lost).
    Crash {
        broker: i32,
        power_loss: bool,
    },
    /// Controlled shutdown first, then stop (nothing is lost).
    Shutdown {
        broker: i32,
    },
    Restart {
        broker: i32,
    },
    /// Cut every path between `node` and the nodes in the mask (bits 0-2: brokers 0-2; bit 3:
    /// producer; bit 4: controller; bits 5-7: members 0-2).
    Isolate {
        node: Node,
        mask: u8,
    },
    Heal,
    ElectPreferred,
    /// A consumer's process dies (a new one starts later as a new member).
    MemberCrash {
        member: u8,
    },
}

/// Events by (virtual ms, sequence number): equal times run in the order they were made.
#[derive(Default)]
pub struct Queue {
    events: BTreeMap<(u64, u64), Event>,
    next_seq: u64,
}

impl Queue {
    pub fn push(&mut self, at: u64, event: Event) {
        self.events.insert((at, self.next_seq), event);
        self.next_seq += 1;
    }
    pub fn pop(&mut self) -> Option<(u64, Event)> {
        self.events.pop_first().map(|((t, _), e)| (t, e))
    }
}

/// Delays, losses and partitions of one schedule.
pub struct Network {
    pub max_delay_ms: u64,
    pub drop_per_mille: u32,
    cuts: BTreeSet<(Node, Node)>,
}

impl Network {
    pub fn new(max_delay_ms: u64, drop_per_mille: u32) -> Self {
        Self {
            max_delay_ms,
            drop_per_mille,
            cuts: BTreeSet::new(),
        }
    }

    pub fn cut(&mut self, a: Node, b: Node) {
        self.cuts.insert((a, b));
        self.cuts.insert((b, a));
    }
    pub fn heal(&mut self) {
        self.cuts.clear();
    }
    pub fn is_cut(&self, a: Node, b: Node) -> bool {
        self.cuts.contains(&(a, b))
    }

    /// When a message sent now arrives, if it does.
    pub fn arrival(&self, rng: &mut SmallRng, now: u64, from: Node, to: Node) -> Option<u64> {
        if self.is_cut(from, to) || rng.random_range(0..1000) < self.drop_per_mille {
            return None;
        }
        Some(now + rng.random_range(1..=self.max_delay_ms))
    }
}
