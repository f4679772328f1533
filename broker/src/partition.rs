//! One partition hosted by this broker: its log behind a short-held mutex, its replica role
//! (leader, driven by the pure `replication::state::LeaderState`, or follower), the high
//! watermark, and group commit for the before-ack fsync policy.
//!
//! Standalone, the broker leads a one-replica set, so the high watermark follows its own log
//! end (fsync policy none) or its last fsync (before-ack). In a cluster the leader's high
//! watermark also waits for the ISR's followers; a follower takes the leader's.

use std::sync::atomic::{AtomicI32, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::sync::{Notify, watch};
use tracing::{error, warn};

use crate::protocol::batch::BatchHeader;
use crate::replication::state::{
    Assignment, Effect, FetchRejected, FollowerFetch, LeaderState, Settings,
};
use crate::storage::epoch_cache::EpochCache;
use crate::storage::log::{AppendError, AppendInfo, Log, ReadError};
use crate::topic_config::{FsyncPolicy, TopicConfig};

/// What this broker is for the partition.
#[derive(Debug)]
pub enum Role {
    Leader(Box<LeaderState>),
    Follower { leader: i32, leader_epoch: i32 },
}

/// An ISR change the leader wants the controller to commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrProposal {
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub isr: Vec<i32>,
}

/// Broker-wide counters that long-poll fetches wait on: consumers wake when a high watermark
/// moves, followers also when a leader's log grows (so an acks=all write reaches the followers
/// at once instead of after their fetch wait, as Kafka's fetch purgatory does on append).
#[derive(Debug, Default)]
pub struct Signals {
    pub high_watermark: watch::Sender<u64>,
    pub log_end: watch::Sender<u64>,
}

impl Signals {
    pub fn high_watermark_moved(&self) {
        self.high_watermark.send_modify(|v| *v += 1);
        self.log_end.send_modify(|v| *v += 1);
    }
    pub fn log_grew(&self) {
        self.log_end.send_modify(|v| *v += 1);
    }
}

/// Which partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionId {
    pub topic: String,
    pub index: i32,
    pub topic_id: uuid::Uuid,
}

/// The leadership a partition opens with.
#[derive(Debug, Clone)]
pub struct Leadership {
    pub assignment: Assignment,
    pub settings: Settings,
    /// The checkpointed high watermark, if any.
    pub high_watermark: Option<i64>,
}

/// What the admin endpoint reports for one partition.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    pub topic: String,
    pub partition: i32,
    pub role: &'static str,
    pub leader: i32,
    pub leader_epoch: i32,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    pub high_watermark: i64,
    /// Known to the leader only.
    pub isr: Vec<i32>,
    pub replicas: Vec<i32>,
    /// Leader only: per follower, how far behind the leader's log end it is and how long ago
    /// it was last caught up.
    pub followers: Vec<FollowerLag>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct FollowerLag {
    pub broker: i32,
    pub log_end_offset: i64,
    pub lag_records: i64,
    pub caught_up_ms_ago: i64,
}

/// One partition of a Fetch request, as the partition needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchPosition {
    pub fetch_offset: i64,
    /// Fetch v12+: the epoch of the fetcher's last batch (-1: not given).
    pub last_fetched_epoch: i32,
    /// The fetcher's view of the leader epoch (KIP-320; -1: not checked).
    pub current_leader_epoch: i32,
    /// Most record bytes to return (0: validate only). The first batch is returned whole even
    /// if it is larger (KIP-74).
    pub max_bytes: usize,
    /// A follower's own log start offset (Fetch v5+; -1: not given), which DeleteRecords'
    /// low watermark waits on.
    pub log_start_offset: i64,
}

/// Who fetches: a consumer reads up to the high watermark, a follower (a broker id) up to the
/// log end, and a follower's valid fetches are its progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetcher {
    /// A consumer of Fetch v10 or older: only the leader serves it.
    Consumer,
    /// A consumer of Fetch v11+ (KIP-392): a follower serves it too, up to the follower's own
    /// high watermark (records every ISR member held when the leader last said so).
    AnyReplicaConsumer,
    Replica(i32),
}

impl Fetcher {
    pub fn is_consumer(self) -> bool {
        !matches!(self, Fetcher::Replica(_))
    }
}

/// Why a fetch of this partition gets no records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("the fetcher's leader epoch is older than {0}")]
    FencedLeaderEpoch(i32),
    #[error("the fetcher's leader epoch is newer than {0}")]
    UnknownLeaderEpoch(i32),
    #[error("not the leader (leader {leader}, epoch {leader_epoch})")]
    NotLeader { leader: i32, leader_epoch: i32 },
    #[error("offset {offset} is out of range [{start}, {end}]")]
    OffsetOutOfRange { offset: i64, start: i64, end: i64 },
    #[error("storage error: {0}")]
    Storage(String),
}

/// What the leader read for one partition of a fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedPartition {
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub leader_epoch: i32,
    pub outcome: FetchOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchOutcome {
    /// Whole batches from the fetch offset (possibly none).
    Records(Vec<u8>),
    /// Fetch v12+: the fetcher's last epoch ends earlier here (or is unknown): it must
    /// truncate to `end_offset` of `epoch` before fetching more.
    Diverging { epoch: i32, end_offset: i64 },
}

/// A fetch's result for one partition, and the ISR change a follower's progress led to.
#[derive(Debug)]
pub struct FetchRead {
    pub result: Result<FetchedPartition, FetchError>,
    pub proposal: Option<IsrProposal>,
}

/// A batch the leader appended.
#[derive(Debug)]
pub struct LeaderAppend {
    pub info: AppendInfo,
    /// The leadership it was appended under: an ack must not outlive it.
    pub leader_epoch: i32,
    pub log_start_offset: i64,
    /// The fsync policy the append ran under (a live config change can switch it between a
    /// caller's look at the config and the append): before-ack means acks=1 waits for it.
    pub fsync: FsyncPolicy,
    /// An ISR change the append led to, for the controller.
    pub proposal: Option<IsrProposal>,
}

/// Why a leader append wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum AppendRefused {
    #[error("this broker does not lead the partition")]
    NotLeader,
    #[error("an fsync failed; the partition refuses writes until the broker restarts")]
    StorageFailed,
    #[error("the in-sync replica set {isr:?} is smaller than min.insync.replicas")]
    NotEnoughReplicas { isr: Vec<i32> },
    #[error(transparent)]
    Append(AppendError),
}

/// A leader's answer to one partition of this follower's fetch.
#[derive(Debug, Clone, Copy)]
pub struct LeaderAnswer<'a> {
    /// The leader epoch the fetch was sent for, and its offset (this log's end then).
    pub fetched_epoch: i32,
    pub fetch_offset: i64,
    pub outcome: AnswerOutcome<'a>,
    pub high_watermark: i64,
    pub log_start_offset: i64,
}

#[derive(Debug, Clone, Copy)]
pub enum AnswerOutcome<'a> {
    /// Whole batches continuing this log (possibly none).
    Records(&'a [u8]),
    /// Fetch v12+: the leader's `epoch` ends at `end_offset`; this log must truncate.
    Diverging { epoch: i32, end_offset: i64 },
    /// OFFSET_OUT_OF_RANGE.
    OutOfRange,
}

/// What applying a leader's answer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowerApplied {
    /// The answer belongs to a fetch the partition has moved past (another leadership, or a
    /// log end that changed): dropped, fetched again.
    Stale,
    Appended {
        log_end_offset: i64,
    },
    Truncated {
        to: i64,
    },
    /// Behind the leader's log start: the log restarted, empty, there.
    Restarted {
        at: i64,
    },
    /// Out of range, but not below the leader's log start: fetch again after a backoff.
    Retry,
}

#[derive(Debug, thiserror::Error)]
pub enum DeleteRecordsError {
    #[error("this broker does not lead the partition")]
    NotLeader,
    #[error("offset {offset} is beyond the high watermark {high_watermark}")]
    OutOfRange { offset: i64, high_watermark: i64 },
    #[error("storage error: {0}")]
    Storage(String),
}

#[derive(Debug, thiserror::Error)]
pub enum FollowerError {
    #[error("truncation failed: {0}")]
    Truncate(std::io::Error),
    #[error("follower append failed: {0}")]
    Append(AppendError),
    #[error("an earlier fsync failed; the replica takes nothing more until the broker restarts")]
    StorageFailed,
}

/// Group-commit progress: everything below `offset` is fsynced, unless `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Flushed {
    offset: i64,
    failed: bool,
}

pub struct Partition {
    pub topic: String,
    pub index: i32,
    pub topic_id: uuid::Uuid,
    node_id: i32,
    log: Mutex<Log>,
    role: Mutex<Role>,
    /// Mirrors of the role's values for lock-free reads.
    high_watermark: AtomicI64,
    leader_epoch: AtomicI32,
    hw_watch: watch::Sender<i64>,
    /// Wakes the group-commit task.
    flush_wanted: Arc<Notify>,
    flushed: watch::Sender<Flushed>,
    /// Whether the group-commit task runs (started by the first before-ack config).
    group_commit: std::sync::atomic::AtomicBool,
    /// Broker-wide wake-ups for long-poll fetches.
    signals: Arc<Signals>,
}

impl Partition {
    /// Opens the partition as leader of `assignment` (standalone: `[node_id]`).
    pub fn new(
        id: PartitionId,
        node_id: i32,
        log: Log,
        lead: Leadership,
        signals: Arc<Signals>,
        now_ms: i64,
    ) -> Arc<Self> {
        let PartitionId {
            topic,
            index,
            topic_id,
        } = id;
        let Leadership {
            assignment,
            settings,
            high_watermark,
        } = lead;
        let leo = log.log_end_offset();
        let fsync = log.fsync_policy();
        let start = log.log_start_offset();
        let checkpointed = high_watermark.unwrap_or(0).clamp(start, leo);
        let epoch = assignment.leader_epoch;
        // Standalone: the only replica's log is all there is, so it is committed (before-ack
        // logs were fsynced on open after an unclean stop).
        let alone = assignment.replicas == [node_id];
        let hw = if alone { leo } else { checkpointed };
        let state = LeaderState::new(node_id, settings, assignment, leo, hw, now_ms);
        let hw = state.high_watermark().max(start);
        let partition = Arc::new(Self {
            topic,
            index,
            topic_id,
            node_id,
            log: Mutex::new(log),
            role: Mutex::new(Role::Leader(Box::new(state))),
            high_watermark: AtomicI64::new(hw),
            leader_epoch: AtomicI32::new(epoch),
            hw_watch: watch::Sender::new(hw),
            flush_wanted: Arc::new(Notify::new()),
            flushed: watch::Sender::new(Flushed {
                offset: leo,
                failed: false,
            }),
            group_commit: std::sync::atomic::AtomicBool::new(false),
            signals,
        });
        if fsync == FsyncPolicy::BeforeAck {
            partition.start_group_commit();
        }
        partition
    }

    fn start_group_commit(self: &Arc<Self>) {
        if !self.group_commit.swap(true, Ordering::AcqRel) {
            tokio::spawn(group_commit(
                Arc::downgrade(self),
                Arc::clone(&self.flush_wanted),
            ));
        }
    }

    /// Applies a changed topic config to this live replica: the log's (retention, segment
    /// rolls, max.message.bytes, fsync policy) and, on a leader, acks=all's
    /// min.insync.replicas, which may move the high watermark at once when it is lowered.
    /// Returns an ISR proposal if that change leads to one.
    pub fn reconfigure(
        self: &Arc<Self>,
        config: TopicConfig,
        settings: Settings,
    ) -> Option<IsrProposal> {
        let fsync = config.fsync;
        {
            let mut log = self.log();
            if *log.config() != config {
                log.set_config(config);
            }
        }
        if fsync == FsyncPolicy::BeforeAck {
            self.start_group_commit();
        }
        // Data appended under before-ack waits for a flush; after a switch to none nothing
        // else would wake the task for it.
        self.flush_wanted.notify_one();
        let (effects, epoch) = self.with_leader(|s| {
            if s.settings() == settings {
                Vec::new()
            } else {
                s.set_settings(settings)
            }
        })?;
        self.apply(effects, epoch)
    }

    /// The log, locked. Never hold this across an await.
    pub fn log(&self) -> MutexGuard<'_, Log> {
        // A poisoned lock means a panic mid-append; the log state is still consistent on disk
        // because size counters move only after writes succeed, so keep serving.
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn role(&self) -> MutexGuard<'_, Role> {
        self.role.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.load(Ordering::Acquire)
    }
    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Acquire)
    }
    pub fn node_id(&self) -> i32 {
        self.node_id
    }

    pub fn is_leader(&self) -> bool {
        matches!(*self.role(), Role::Leader(_))
    }

    /// The leader's id, from this broker's point of view.
    pub fn leader_id(&self) -> i32 {
        match &*self.role() {
            Role::Leader(_) => self.node_id,
            Role::Follower { leader, .. } => *leader,
        }
    }

    /// Replicas and ISR as the leader knows them (empty when following).
    pub fn replicas_and_isr(&self) -> (Vec<i32>, Vec<i32>) {
        match &*self.role() {
            Role::Leader(s) => (s.assignment().replicas.clone(), s.isr().to_vec()),
            Role::Follower { .. } => (Vec::new(), Vec::new()),
        }
    }

    /// Role, offsets, ISR and follower lag for the admin endpoint.
    pub fn status(&self, now_ms: i64) -> Status {
        let (start, leo) = {
            let log = self.log();
            (log.log_start_offset(), log.log_end_offset())
        };
        let role = self.role();
        let (name, leader, isr, replicas, followers) = match &*role {
            Role::Leader(s) => {
                let followers = s
                    .assignment()
                    .replicas
                    .iter()
                    .filter(|r| **r != self.node_id)
                    .filter_map(|r| s.follower(*r).map(|f| (*r, f)))
                    .map(|(r, f)| FollowerLag {
                        broker: r,
                        log_end_offset: f.log_end_offset,
                        lag_records: if f.log_end_offset < 0 {
                            leo
                        } else {
                            leo - f.log_end_offset
                        },
                        caught_up_ms_ago: now_ms - f.last_caught_up_ms,
                    })
                    .collect();
                (
                    "leader",
                    self.node_id,
                    s.isr().to_vec(),
                    s.assignment().replicas.clone(),
                    followers,
                )
            }
            Role::Follower { leader, .. } => {
                ("follower", *leader, Vec::new(), Vec::new(), Vec::new())
            }
        };
        Status {
            topic: self.topic.clone(),
            partition: self.index,
            role: name,
            leader,
            leader_epoch: self.leader_epoch(),
            log_start_offset: start,
            log_end_offset: leo,
            high_watermark: self.high_watermark(),
            isr,
            replicas,
            followers,
        }
    }

    /// acks=all is refused (NOT_ENOUGH_REPLICAS) while the ISR is below min.insync.replicas.
    pub fn enough_replicas(&self) -> bool {
        match &*self.role() {
            Role::Leader(s) => s.enough_replicas(),
            Role::Follower { .. } => false,
        }
    }

    fn publish_high_watermark(&self, hw: i64) {
        if self.high_watermark.fetch_max(hw, Ordering::AcqRel) < hw {
            self.hw_watch.send_replace(self.high_watermark());
            self.signals.high_watermark_moved();
        }
    }

    /// Carries out the leader state's effects; returns ISR proposals for the controller.
    fn apply(&self, effects: Vec<Effect>, leader_epoch: i32) -> Option<IsrProposal> {
        let mut proposal = None;
        for e in effects {
            match e {
                Effect::HighWatermark(hw) => self.publish_high_watermark(hw),
                Effect::ProposeIsr {
                    isr,
                    partition_epoch,
                } => {
                    proposal = Some(IsrProposal {
                        leader_epoch,
                        partition_epoch,
                        isr,
                    });
                }
            }
        }
        proposal
    }

    fn with_leader<T>(&self, f: impl FnOnce(&mut LeaderState) -> T) -> Option<(T, i32)> {
        match &mut *self.role() {
            Role::Leader(s) => {
                let epoch = s.assignment().leader_epoch;
                Some((f(s), epoch))
            }
            Role::Follower { .. } => None,
        }
    }

    /// Appends a batch as leader (Kafka's `appendRecordsToLeader`), the one way records enter
    /// a leader's log, for clients and the group coordinator alike. Refused before anything
    /// is written: when this broker does not lead the partition (or no longer leads `epoch`,
    /// when the caller's state belongs to one leadership); after a failed fsync; and for
    /// acks=all while the ISR is smaller than min.insync.replicas (Kafka checks that before
    /// appending, so a refused write is never stored). Leadership is checked again under the
    /// log lock: appending under an old epoch would write a record the new leader never sees.
    pub fn append_as_leader(
        &self,
        batch: &[u8],
        header: &BatchHeader,
        epoch: Option<i32>,
        acks_all: bool,
        now_ms: i64,
    ) -> Result<LeaderAppend, AppendRefused> {
        let leads = |e: i32| self.is_leader() && epoch.is_none_or(|want| want == e);
        if !leads(self.leader_epoch()) {
            return Err(AppendRefused::NotLeader);
        }
        if self.storage_failed() {
            return Err(AppendRefused::StorageFailed);
        }
        if acks_all && !self.enough_replicas() {
            return Err(AppendRefused::NotEnoughReplicas {
                isr: self.replicas_and_isr().1,
            });
        }
        let leader_epoch = self.leader_epoch();
        let mut log = self.log();
        if !leads(leader_epoch) || self.leader_epoch() != leader_epoch {
            return Err(AppendRefused::NotLeader);
        }
        let info = log
            .append_as_leader(batch, header, leader_epoch, now_ms)
            .map_err(AppendRefused::Append)?;
        let (log_end_offset, log_start_offset) = (log.log_end_offset(), log.log_start_offset());
        let fsync = log.fsync_policy();
        drop(log);
        let proposal = self.appended(log_end_offset, fsync);
        Ok(LeaderAppend {
            info,
            leader_epoch,
            log_start_offset,
            fsync,
            proposal,
        })
    }

    /// Called after a local append (with the log end offset now). With fsync policy none the
    /// leader's own copy counts at once; before-ack waits for the group commit.
    fn appended(&self, log_end_offset: i64, fsync: FsyncPolicy) -> Option<IsrProposal> {
        self.signals.log_grew();
        match fsync {
            FsyncPolicy::None => self.local_progress(log_end_offset),
            FsyncPolicy::BeforeAck => {
                self.flush_wanted.notify_one();
                None
            }
        }
    }

    /// The leader's own copy reached `offset`.
    fn local_progress(&self, offset: i64) -> Option<IsrProposal> {
        let (effects, epoch) = self.with_leader(|s| s.on_append(offset))?;
        self.apply(effects, epoch)
    }

    /// Serves one partition of a Fetch (Kafka's `Partition.fetchRecords`): fences the
    /// fetcher's leader epoch, finds a follower's divergence (Fetch v12+), reads, and, for a
    /// follower when `record_progress` (its fetch's first read, not a long poll's re-read),
    /// records what it holds.
    pub fn read_for_fetch(
        &self,
        pos: FetchPosition,
        fetcher: Fetcher,
        record_progress: bool,
        now_ms: i64,
    ) -> FetchRead {
        let (result, leader_log_end) = self.read_validated(pos, fetcher);
        let proposal = match fetcher {
            Fetcher::Replica(replica) if record_progress => {
                // Only a read that found the offset in this leader's lineage proves what the
                // follower holds (Kafka updates the follower's fetch state only then): a
                // diverged follower must truncate first, an offset outside the log (a lying
                // client) proves nothing.
                let valid = matches!(
                    result,
                    Ok(FetchedPartition {
                        outcome: FetchOutcome::Records(_),
                        ..
                    })
                );
                let fetch = FollowerFetch {
                    replica,
                    leader_epoch: pos.current_leader_epoch,
                    fetch_offset: pos.fetch_offset,
                    log_start_offset: pos.log_start_offset,
                    leader_log_end,
                    valid,
                    now_ms,
                };
                self.follower_fetched(fetch).ok().flatten()
            }
            _ => None,
        };
        FetchRead { result, proposal }
    }

    /// What a parked fetch at `pos` could read now, found from log positions without reading
    /// any data (Kafka's DelayedFetch). `None` when it must be answered now whatever it
    /// reads: leadership or the epoch changed, its log diverged, its offset left the log, or
    /// the positions could not be read.
    pub fn readable_bytes(&self, pos: &FetchPosition, fetcher: Fetcher) -> Option<u64> {
        let ours = self.leader_epoch();
        if pos.current_leader_epoch != -1 && pos.current_leader_epoch != ours {
            return None;
        }
        // Under the log lock, which a follower's appends and truncations hold while they move
        // it: the high watermark and the log are read as one.
        let log = self.log();
        let hw = self.high_watermark();
        if !self.serves(fetcher, &log) {
            return None;
        }
        let leo = log.log_end_offset();
        if diverging(&log, pos).is_some()
            || pos.fetch_offset < log.log_start_offset()
            || pos.fetch_offset > leo
        {
            return None;
        }
        let up_to = match fetcher {
            Fetcher::Replica(_) => leo,
            Fetcher::Consumer | Fetcher::AnyReplicaConsumer => hw,
        };
        log.bytes_between(pos.fetch_offset, up_to).ok()
    }

    /// The read itself, and the log end it saw (-1 if it did not get that far).
    fn read_validated(
        &self,
        pos: FetchPosition,
        fetcher: Fetcher,
    ) -> (Result<FetchedPartition, FetchError>, i64) {
        let ours = self.leader_epoch();
        match pos.current_leader_epoch {
            -1 => {}
            e if e < ours => return (Err(FetchError::FencedLeaderEpoch(ours)), -1),
            e if e > ours => return (Err(FetchError::UnknownLeaderEpoch(ours)), -1),
            _ => {}
        }
        let log = self.log();
        let hw = self.high_watermark();
        if !self.serves(fetcher, &log) {
            drop(log);
            let not_leader = FetchError::NotLeader {
                leader: self.leader_id(),
                leader_epoch: ours,
            };
            return (Err(not_leader), -1);
        }
        let (start, leo) = (log.log_start_offset(), log.log_end_offset());
        let mut fetched = FetchedPartition {
            high_watermark: hw,
            log_start_offset: start,
            leader_epoch: ours,
            outcome: FetchOutcome::Records(Vec::new()),
        };
        // Divergence comes before the range check: an old leader's log can end past this one's.
        if let Some((epoch, end_offset)) = diverging(&log, &pos) {
            fetched.outcome = FetchOutcome::Diverging { epoch, end_offset };
            return (Ok(fetched), leo);
        }
        if pos.fetch_offset < start || pos.fetch_offset > leo {
            let out = FetchError::OffsetOutOfRange {
                offset: pos.fetch_offset,
                start,
                end: leo,
            };
            return (Err(out), leo);
        }
        if pos.max_bytes == 0 {
            return (Ok(fetched), leo);
        }
        let max_offset = match fetcher {
            Fetcher::Replica(_) => leo,
            Fetcher::Consumer | Fetcher::AnyReplicaConsumer => hw,
        };
        let result = match log.read(pos.fetch_offset, pos.max_bytes, max_offset) {
            Ok(bytes) => {
                fetched.outcome = FetchOutcome::Records(bytes);
                Ok(fetched)
            }
            Err(ReadError::OutOfRange { offset, start, end }) => {
                Err(FetchError::OffsetOutOfRange { offset, start, end })
            }
            Err(ReadError::Storage(e)) => Err(FetchError::Storage(e.to_string())),
        };
        (result, leo)
    }

    /// While leading: whether the high watermark is still below the log end this leadership
    /// began at. The previous leader may have shown clients a high watermark up to there, so
    /// until then this one's must not be shown as the latest offset (Kafka answers
    /// OFFSET_NOT_AVAILABLE), or a consumer would see the end of the partition move back.
    pub fn high_watermark_behind_epoch_start(&self) -> bool {
        self.with_leader(|s| s.high_watermark() < s.epoch_start_offset())
            .is_some_and(|(behind, _)| behind)
    }

    /// Whether this replica answers `fetcher` with records: the leader always; a follower only
    /// a consumer that may read from followers, and only while it still holds the replica.
    /// Called under the log lock, which role changes take.
    fn serves(&self, fetcher: Fetcher, log: &Log) -> bool {
        match &*self.role() {
            Role::Leader(_) => true,
            Role::Follower { leader, .. } => {
                fetcher == Fetcher::AnyReplicaConsumer
                    && *leader != crate::metadata::NO_LEADER
                    && !log.is_deleted()
            }
        }
    }

    /// The followers a consumer could be sent to (KIP-392), as this leader sees them; None when
    /// not leading. `rack_of` and `alive` come from the cluster's metadata.
    pub fn read_candidates(
        &self,
        rack_of: impl Fn(i32) -> Option<String>,
        alive: impl Fn(i32) -> bool,
    ) -> Option<Vec<crate::replication::read_replica::Candidate>> {
        let role = self.role();
        let Role::Leader(state) = &*role else {
            return None;
        };
        let isr = state.isr();
        let candidates = state
            .assignment()
            .replicas
            .iter()
            .filter_map(|id| Some((*id, state.follower(*id)?)))
            .map(|(id, f)| crate::replication::read_replica::Candidate {
                id,
                rack: rack_of(id),
                log_start_offset: f.log_start_offset,
                log_end_offset: f.log_end_offset,
                last_caught_up_ms: f.last_caught_up_ms,
                in_isr: isr.contains(&id),
                alive: alive(id),
            })
            .collect();
        Some(candidates)
    }

    /// A follower's fetch, once read (see `LeaderState::on_fetch`).
    fn follower_fetched(&self, fetch: FollowerFetch) -> Result<Option<IsrProposal>, FetchRejected> {
        let Some((result, epoch)) = self.with_leader(|s| s.on_fetch(fetch)) else {
            return Err(FetchRejected::NotAReplica(fetch.replica));
        };
        Ok(self.apply(result?, epoch))
    }

    /// Periodic ISR check (shrink lagging followers).
    pub fn tick(&self, now_ms: i64) -> Option<IsrProposal> {
        let (effects, epoch) = self.with_leader(|s| s.on_tick(now_ms))?;
        self.apply(effects, epoch)
    }

    /// The controller's answer to a proposal, or a newer assignment of this leadership.
    pub fn assignment_committed(&self, assignment: Assignment, now_ms: i64) -> Option<IsrProposal> {
        let epoch = assignment.leader_epoch;
        let (effects, _) = self.with_leader(|s| s.on_assignment(assignment, now_ms))?;
        self.apply(effects?, epoch)
    }

    /// Whether `proposal` is still this leader's pending ISR proposal, from the same state.
    pub fn is_pending(&self, proposal: &IsrProposal) -> bool {
        self.with_leader(|s| {
            s.pending_isr() == Some(proposal.isr.as_slice())
                && s.assignment().partition_epoch == proposal.partition_epoch
        })
        .is_some_and(|(pending, epoch)| pending && epoch == proposal.leader_epoch)
    }

    pub fn proposal_rejected(&self) {
        self.with_leader(|s| s.on_proposal_rejected());
    }

    /// Becomes leader of a new epoch (cluster mode). The epoch starts at the log end.
    pub fn become_leader(&self, assignment: Assignment, settings: Settings, now_ms: i64) {
        let epoch = assignment.leader_epoch;
        {
            // The role changes under the log lock, with the epoch: a follower append that
            // checked the role before cannot land after this leadership began.
            let mut log = self.log();
            log.assign_leader_epoch(epoch);
            let (leo, hw) = (log.log_end_offset(), self.high_watermark());
            // Under before-ack the leader's own copy counts only once fsynced: the tail it
            // fetched as a follower may not be yet (the fetcher fsyncs before its next fetch).
            // Counted at once, an ISR of this broker alone would acknowledge records no disk
            // holds; the group commit (woken below) counts them when it has fsynced them.
            let counted = match log.fsync_policy() {
                FsyncPolicy::BeforeAck => self.flushed.borrow().offset.min(leo),
                FsyncPolicy::None => leo,
            };
            let state =
                LeaderState::counting(self.node_id, settings, assignment, leo, counted, hw, now_ms);
            // An ISR of this broker alone puts the high watermark at the log end at once; with
            // nothing published, it would wait for the next append (an idle partition would
            // hide committed records, and show an older end than the last leader did).
            self.publish_high_watermark(state.high_watermark());
            *self.role() = Role::Leader(Box::new(state));
            self.leader_epoch.store(epoch, Ordering::Release);
        }
        // Wake acks=all waiters: their leadership ended.
        self.hw_watch.send_modify(|_| {});
        self.flushed.send_modify(|_| {});
        self.signals.high_watermark_moved();
        self.flush_wanted.notify_one();
    }

    /// Becomes a follower of `leader` at `leader_epoch` (cluster mode).
    pub fn become_follower(&self, leader: i32, leader_epoch: i32) {
        {
            let _log = self.log();
            *self.role() = Role::Follower {
                leader,
                leader_epoch,
            };
            self.leader_epoch.store(leader_epoch, Ordering::Release);
        }
        self.hw_watch.send_modify(|_| {});
        self.flushed.send_modify(|_| {});
        self.signals.high_watermark_moved();
    }

    /// Applies a leader's answer to this follower's fetch (Kafka's `appendAsFollower` and the
    /// fetcher's truncation): appends its batches verbatim, truncates where the leader says
    /// the logs diverge, restarts the log at the leader's log start when this one fell behind
    /// it, and takes the leader's high watermark and log start. An answer applies only if
    /// nothing changed since the fetch was sent (Kafka checks the fetch state's epoch the
    /// same way): still a follower of the epoch it was sent for, its log end still the fetch
    /// offset. A response from a leadership that ended must not write into a log that has
    /// since become a leader, or been truncated.
    pub fn append_as_follower(
        &self,
        answer: LeaderAnswer<'_>,
    ) -> Result<FollowerApplied, FollowerError> {
        let mut log = self.log();
        let leo = log.log_end_offset();
        // Under the log lock, which role changes also take, so the check is exact. A removed
        // replica takes nothing either.
        if self.is_leader()
            || log.is_deleted()
            || self.leader_epoch() != answer.fetched_epoch
            || leo != answer.fetch_offset
        {
            return Ok(FollowerApplied::Stale);
        }
        if self.storage_failed() {
            return Err(FollowerError::StorageFailed);
        }
        let applied = match answer.outcome {
            AnswerOutcome::Diverging { epoch, end_offset } => {
                let to = truncation_offset(&log, epoch, end_offset);
                log.truncate_to(to).map_err(FollowerError::Truncate)?;
                self.flushed_at_most(to);
                // Never a high watermark past the log end: a follower serves consumers up to
                // it (KIP-392). (A clean election never truncates below it; this keeps that
                // from being something reads rely on.)
                if self.high_watermark() > to {
                    self.follower_high_watermark(to, to);
                }
                return Ok(FollowerApplied::Truncated { to });
            }
            AnswerOutcome::OutOfRange if answer.log_start_offset <= leo => {
                return Ok(FollowerApplied::Retry);
            }
            AnswerOutcome::OutOfRange => {
                // The leader deleted what this follower still needs (retention, an offsets-log
                // snapshot, a new replica starting at 0): Kafka's truncateFullyAndStartAt.
                log.truncate_fully_and_start_at(answer.log_start_offset)
                    .map_err(FollowerError::Truncate)?;
                self.flushed_at_most(answer.log_start_offset);
                FollowerApplied::Restarted {
                    at: answer.log_start_offset,
                }
            }
            AnswerOutcome::Records(records) => {
                let first = crate::protocol::batch::Batches::new(records).next();
                match first {
                    // This log restarted at the leader's log start, which DeleteRecords put
                    // inside a batch: the leader sends that whole batch, from below this log's
                    // end. Restart at the batch's base and keep the start where it was
                    // (Kafka's handling of UnexpectedAppendOffsetException); appending it as
                    // is would be refused at every fetch, and the replica never catch up.
                    Some((h, _))
                        if log.log_start_offset() == leo
                            && h.base_offset < leo
                            && leo <= h.last_offset() =>
                    {
                        log.truncate_fully_and_start_at(h.base_offset)
                            .map_err(FollowerError::Truncate)?;
                        self.flushed_at_most(h.base_offset);
                        log.append_replicated(records, crate::clock::now_ms())
                            .map_err(FollowerError::Append)?;
                        log.advance_log_start(leo)
                            .map_err(FollowerError::Truncate)?;
                    }
                    Some(_) => {
                        log.append_replicated(records, crate::clock::now_ms())
                            .map_err(FollowerError::Append)?;
                    }
                    None => {}
                }
                FollowerApplied::Appended {
                    log_end_offset: log.log_end_offset(),
                }
            }
        };
        let leo = log.log_end_offset();
        drop(log);
        self.follower_high_watermark(answer.high_watermark, leo);
        // Follow the leader's log start offset (Kafka's maybeIncrementLogStartOffset): what
        // the leader deleted (retention, an offsets-log snapshot, DeleteRecords) goes here too.
        if matches!(applied, FollowerApplied::Appended { .. }) && answer.log_start_offset > 0 {
            let below = answer.log_start_offset.min(self.high_watermark());
            if let Err(e) = self.log().advance_log_start(below) {
                warn!(topic = %self.topic, partition = self.index, error = %e, "cannot delete segments below the leader's log start");
            }
        }
        Ok(applied)
    }

    /// DeleteRecords on the leader: moves the log start offset to `offset` (-1: the high
    /// watermark), never past the high watermark (only committed records can be deleted, so
    /// no replica that may lead next holds less). Followers take it from the fetch answers.
    /// Returns the new log start offset (Kafka's low watermark).
    pub fn delete_records(&self, offset: i64) -> Result<i64, DeleteRecordsError> {
        // Roles change under the log lock: checked under it, leadership cannot end midway.
        let mut log = self.log();
        if !self.is_leader() {
            return Err(DeleteRecordsError::NotLeader);
        }
        let hw = self.high_watermark();
        let offset = if offset == -1 { hw } else { offset };
        if offset < 0 || offset > hw {
            return Err(DeleteRecordsError::OutOfRange {
                offset,
                high_watermark: hw,
            });
        }
        log.advance_log_start(offset)
            .map_err(|e| DeleteRecordsError::Storage(e.to_string()))?;
        Ok(log.log_start_offset())
    }

    /// Kafka's low watermark, as a leader knows it: the lowest log start offset of the ISR
    /// (a follower's as its last fetch reported it; -1 while one has not). None: not leading.
    pub fn low_watermark(&self) -> Option<i64> {
        let local = self.log().log_start_offset();
        self.with_leader(|s| s.low_watermark(local)).map(|(w, _)| w)
    }

    /// A follower takes the leader's high watermark, bounded by its own log end.
    fn follower_high_watermark(&self, leader_hw: i64, log_end_offset: i64) {
        let hw = leader_hw.min(log_end_offset);
        let old = self.high_watermark.swap(hw, Ordering::AcqRel);
        if old != hw {
            self.hw_watch.send_replace(hw);
            self.signals.high_watermark_moved();
        }
    }

    /// Waits until the high watermark passes `offset` (acks=all). False if it cannot.
    ///
    /// `leader_epoch` is the leadership the write was appended under: if it ends while waiting
    /// (this broker became a follower, or a newer epoch began), the write may be truncated, so
    /// it must not be acknowledged, whatever the high watermark (which a follower takes from
    /// the new leader, whose log may hold other records at those offsets) says.
    pub async fn wait_high_watermark(&self, offset: i64, leader_epoch: i32) -> bool {
        let still_ours = || self.is_leader() && self.leader_epoch() == leader_epoch;
        let mut rx = self.hw_watch.subscribe();
        let done = rx
            .wait_for(|hw| *hw >= offset || !still_ours())
            .await
            .is_ok();
        done && still_ours() && self.high_watermark() >= offset
    }

    /// Waits until everything below `offset` is fsynced (before-ack, acks=1), while the
    /// leadership the write was appended under lasts. False if an fsync failed (the data may
    /// not be on disk) or the leadership ended (the write may have been truncated, and the
    /// offsets filled again from the new leader and fsynced by this broker as a follower):
    /// either way it must not be acknowledged.
    pub async fn wait_flushed(&self, offset: i64, leader_epoch: i32) -> bool {
        let still_ours = || self.is_leader() && self.leader_epoch() == leader_epoch;
        let mut rx = self.flushed.subscribe();
        match rx
            .wait_for(|f| f.failed || f.offset >= offset || !still_ours())
            .await
        {
            Ok(f) => !f.failed && f.offset >= offset && still_ours(),
            Err(_) => false,
        }
    }

    /// An fsync failed earlier: the partition refuses writes until the broker restarts.
    pub fn storage_failed(&self) -> bool {
        self.flushed.borrow().failed
    }

    /// The log was cut back to `offset`: the records fsynced above it are gone, and those
    /// appended there next are not on disk yet. Left higher, the group commit would skip
    /// them (it fsyncs only past `flushed`), and acks=1 would not wait for them.
    fn flushed_at_most(&self, offset: i64) {
        self.flushed.send_if_modified(|f| {
            let lowered = f.offset > offset;
            f.offset = f.offset.min(offset);
            lowered
        });
    }

    /// `fsync.policy=before-ack` on a follower (Kafka's `flush.messages=1`): what it appended
    /// reaches the disk before its next fetch reports the new log end, since the leader
    /// counts that report toward acks=all. Without it a follower's copy of an acknowledged
    /// write sat in the page cache, so a power loss of the follower left as the last ISR
    /// member took the write. Blocks: run it off the async runtime. A failed fsync marks the
    /// partition failed, and the fetcher never fetches it again (its next fetch would report
    /// what may not be on disk); the leader drops it from the ISR.
    pub fn flush_as_follower(&self) -> std::io::Result<()> {
        // Again while a truncation overtook the fsync (a leader's group commit, or another
        // fetcher after a leader change, may truncate meanwhile).
        loop {
            let target = {
                let log = self.log();
                if log.fsync_policy() != FsyncPolicy::BeforeAck || log.is_deleted() {
                    return Ok(());
                }
                log.flush_target()
            };
            if target.end <= self.flushed.borrow().offset {
                return Ok(());
            }
            if let Err(e) = target.file.sync_data() {
                self.flushed.send_modify(|f| f.failed = true);
                return Err(e);
            }
            if self.flushed_through(&target) {
                return Ok(());
            }
        }
    }

    /// Whether this follower holds records that `fsync.policy=before-ack` wants on disk
    /// before a fetch reports them (cheap: the fetcher asks before every fetch).
    pub fn unflushed_as_follower(&self) -> bool {
        let log = self.log();
        log.fsync_policy() == FsyncPolicy::BeforeAck
            && !log.is_deleted()
            && log.log_end_offset() > self.flushed.borrow().offset
    }

    /// The fsync of `target` finished: marks it, under the log lock so that no truncation
    /// (which lowers the mark under the same lock) falls between the check and the mark.
    /// False if a truncation came after `target` was taken: nothing is marked.
    fn flushed_through(&self, target: &crate::storage::log::FlushTarget) -> bool {
        let mut log = self.log();
        if !log.mark_flushed(target) {
            return false;
        }
        self.flushed
            .send_modify(|f| f.offset = f.offset.max(target.end));
        true
    }

    /// This broker no longer holds the replica (its topic was deleted, or it was reassigned
    /// away, possibly straight from leading it: metadata can skip the step where it followed).
    /// The log writes nothing more, the role ends so that acks=all producers still waiting on
    /// it are answered NOT_LEADER at once (they used to wait out their request timeout, 30 s),
    /// and the group-commit task stops.
    pub fn remove(&self) {
        let epoch = self.leader_epoch();
        {
            let mut log = self.log();
            log.mark_deleted();
            *self.role() = Role::Follower {
                leader: crate::metadata::NO_LEADER,
                leader_epoch: epoch,
            };
        }
        self.hw_watch.send_modify(|_| {});
        self.flushed.send_modify(|_| {});
        self.signals.high_watermark_moved();
        self.shutdown();
    }

    /// Lets the group-commit task notice that the partition is gone.
    pub fn shutdown(&self) {
        self.flush_wanted.notify_one();
    }
}

/// Where a follower truncates when the leader answers that `leader_epoch` ends at
/// `leader_end` in its log (Kafka's `getOffsetTruncationState`): at the end of the same epoch
/// in both logs, whichever is earlier. If this log has no such epoch (it skipped it), first to
/// the end of its own largest epoch below it; the next fetch then names that epoch and the
/// leader answers again. Truncating only to the leader's end, as before, kept a tail of a
/// newer epoch the leader never had, and the follower asked the same question forever.
fn truncation_offset(log: &Log, leader_epoch: i32, leader_end: i64) -> i64 {
    truncation_offset_in(log.epochs(), log.log_end_offset(), leader_epoch, leader_end)
}

/// [`truncation_offset`] over a log's epoch cache and end offset (pure: the simulation's log
/// model uses the same rule).
pub fn truncation_offset_in(
    epochs: &EpochCache,
    log_end_offset: i64,
    leader_epoch: i32,
    leader_end: i64,
) -> i64 {
    let leo = log_end_offset;
    match epochs.end_offset_for(leader_epoch, leo) {
        Some((epoch, end)) if epoch == leader_epoch => end.min(leader_end).min(leo),
        Some((_, end)) => end.min(leo),
        None => leader_end.min(leo),
    }
}

/// One fsync covers every append that landed before it started: concurrent producers share it.
/// Holds only a weak reference so a deleted partition's task ends. A failed fsync fails the
/// partition for good: after EIO the kernel may have dropped the dirty pages, so a later
/// successful fsync would acknowledge data that is gone.
async fn group_commit(partition: Weak<Partition>, wanted: Arc<Notify>) {
    loop {
        {
            let Some(p) = partition.upgrade() else { return };
            if p.storage_failed() {
                return;
            }
            let target = p.log().flush_target();
            if target.end > p.flushed.borrow().offset {
                let file = Arc::clone(&target.file);
                match tokio::task::spawn_blocking(move || file.sync_data()).await {
                    Ok(Ok(())) => {
                        // Truncated meanwhile (this leader was demoted): nothing counts,
                        // and the loop fsyncs again from the log as it is now.
                        if p.flushed_through(&target) {
                            p.local_progress(target.end);
                        }
                        continue;
                    }
                    Ok(Err(e)) => {
                        error!(topic = %p.topic, partition = p.index, error = %e, "fsync failed; the partition refuses writes until restart");
                        p.flushed.send_modify(|f| f.failed = true);
                        return;
                    }
                    Err(e) => error!(error = %e, "fsync task failed"),
                }
            }
        }
        wanted.notified().await;
    }
}

/// Kafka's divergence rule for a fetch with a last fetched epoch: that epoch ends earlier in
/// this log (or is unknown here), so the fetcher must truncate before it reads. The epoch and
/// end offset to answer with.
fn diverging(log: &Log, pos: &FetchPosition) -> Option<(i32, i64)> {
    diverging_in(
        log.epochs(),
        log.log_end_offset(),
        pos.last_fetched_epoch,
        pos.fetch_offset,
    )
}

/// [`diverging`] over a leader's epoch cache and end offset (pure: the simulation's log model
/// uses the same rule).
pub fn diverging_in(
    epochs: &EpochCache,
    log_end_offset: i64,
    last_fetched_epoch: i32,
    fetch_offset: i64,
) -> Option<(i32, i64)> {
    if last_fetched_epoch < 0 {
        return None;
    }
    let (epoch, end) = epochs
        .end_offset_for(last_fetched_epoch, log_end_offset)
        .unwrap_or((-1, -1));
    (epoch < last_fetched_epoch || end < fetch_offset).then_some((epoch, end))
}

#[cfg(test)]
mod tests {
    //! Replication safety through the partition's fetch path, on real logs in a temp dir.

    use super::*;
    use crate::protocol::batch::{BatchHeader, Batches, test_support::batch};
    use crate::storage::log::OpenHints;

    fn open_log(dir: &std::path::Path) -> Log {
        Log::open(dir, TopicConfig::default(), OpenHints::default())
            .unwrap()
            .0
    }

    fn append(log: &mut Log, records: i32, epoch: i32) -> i64 {
        let b = batch(records, 1_000, (-1, -1, -1), 8);
        let h = BatchHeader::parse(&b).unwrap();
        log.append_as_leader(&b, &h, epoch, 1_000).unwrap();
        log.log_end_offset()
    }

    /// Every batch of a log: (base offset, last offset, leader epoch, crc).
    fn lineage(log: &Log) -> Vec<(i64, i64, i32, u32)> {
        let data = log
            .read(log.log_start_offset(), 64 << 20, i64::MAX)
            .unwrap();
        Batches::new(&data)
            .map(|(h, _)| {
                (
                    h.base_offset,
                    h.last_offset(),
                    h.partition_leader_epoch,
                    h.crc,
                )
            })
            .collect()
    }

    /// Kafka's guarantee as a check: below the high watermark, a replica that could be elected
    /// (an ISR member) holds exactly the leader's batches.
    fn assert_same_below(hw: i64, leader: &Log, follower: &Log, what: &str) {
        let below = |l: &Log| -> Vec<_> {
            lineage(l)
                .into_iter()
                .filter(|(base, _, _, _)| *base < hw)
                .collect()
        };
        assert_eq!(
            below(leader),
            below(follower),
            "{what}: high watermark {hw}, but an ISR member holds other records below it"
        );
    }

    fn pos(fetch_offset: i64, last_fetched_epoch: i32, current_leader_epoch: i32) -> FetchPosition {
        FetchPosition {
            fetch_offset,
            last_fetched_epoch,
            current_leader_epoch,
            max_bytes: 1 << 20,
            log_start_offset: -1,
        }
    }

    /// Copies what a fetch returned into a follower's log, as the fetcher does.
    fn apply_records(read: &FetchRead, follower: &mut Log) {
        if let Ok(FetchedPartition {
            outcome: FetchOutcome::Records(bytes),
            ..
        }) = &read.result
            && !bytes.is_empty()
        {
            follower.append_replicated(bytes, 1_000).unwrap();
        }
    }

    /// A parked fetch judges what it could read from positions alone; that figure must be
    /// exactly what the read would return, for every start and bound, across segments.
    #[test]
    fn positions_tell_what_a_read_would_return() {
        let dir = tempfile::tempdir().unwrap();
        let config = TopicConfig {
            index_interval_bytes: 150,
            ..TopicConfig::default()
        };
        let mut log = Log::open(dir.path(), config, OpenHints::default())
            .unwrap()
            .0;
        for i in 0..12 {
            append(&mut log, 1 + i % 4, 1);
            if i % 5 == 4 {
                log.roll().unwrap();
            }
        }
        assert!(log.segment_count() > 2, "the case needs several segments");
        let leo = log.log_end_offset();
        for from in 0..=leo {
            for to in 0..=leo + 1 {
                // One read stops at its segment's end; the next one goes on from there.
                let (mut at, mut read) = (from, 0u64);
                loop {
                    let bytes = log.read(at, 1 << 20, to).unwrap();
                    let Some((last, _)) = Batches::new(&bytes).last() else {
                        break;
                    };
                    read += bytes.len() as u64;
                    at = last.last_offset() + 1;
                }
                assert_eq!(
                    log.bytes_between(from, to).unwrap(),
                    read,
                    "from {from} to {to}"
                );
            }
        }
    }

    /// The schedule of the replication-safety issue: broker 3 led epoch 1 and has an
    /// uncommitted tail (offsets 10-14) that nobody else got; broker 1 leads epoch 2 with ISR
    /// {1, 3} and min.insync.replicas 2, appends 10 records (producers wait for acks=all);
    /// broker 3 comes back and fetches at its log end with its last epoch, 1. Its offsets
    /// 10-14 are not the leader's, so that fetch proves nothing: the high watermark must stay
    /// at 10. Had it moved, the acks=all writes at 10-14 would be acknowledged, and when broker
    /// 1 then died, broker 3 (in the ISR) would be elected with other records there.
    #[test]
    fn a_diverged_follower_moves_nothing_until_it_has_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let mut leader_log = open_log(&dir.path().join("leader"));
        let mut old_leader = open_log(&dir.path().join("old-leader"));
        // Epoch 1 (broker 3 leading): offsets 0-9 replicated everywhere...
        append(&mut old_leader, 10, 1);
        let committed = old_leader.read(0, 1 << 20, 10).unwrap();
        leader_log.append_replicated(&committed, 1_000).unwrap();
        // ...and 10-14 only on broker 3.
        assert_eq!(append(&mut old_leader, 5, 1), 15);
        // Epoch 2: broker 1 leads from offset 10.
        leader_log.assign_leader_epoch(2);
        let lead = Leadership {
            assignment: Assignment {
                leader: 1,
                leader_epoch: 2,
                partition_epoch: 7,
                replicas: vec![1, 2, 3],
                isr: vec![1, 3],
            },
            settings: Settings {
                replica_lag_time_max_ms: 30_000,
                min_insync_replicas: 2,
            },
            high_watermark: Some(10),
        };
        let id = PartitionId {
            topic: "t".into(),
            index: 0,
            topic_id: uuid::Uuid::nil(),
        };
        let p = Partition::new(id, 1, leader_log, lead, Arc::default(), 0);
        let leo = append(&mut p.log(), 10, 2);
        assert_eq!(leo, 20);
        assert_eq!(p.appended(leo, FsyncPolicy::None), None);
        assert_eq!(p.high_watermark(), 10);

        // Broker 3 returns and fetches from its log end with its last epoch.
        let read = p.read_for_fetch(pos(15, 1, 2), Fetcher::Replica(3), true, 10);
        assert_eq!(
            read.result.as_ref().map(|f| f.outcome.clone()),
            Ok(FetchOutcome::Diverging {
                epoch: 1,
                end_offset: 10
            }),
            "the leader tells broker 3 where its epoch 1 ended"
        );
        assert_same_below(p.high_watermark(), &p.log(), &old_leader, "diverged fetch");

        // Broker 3 truncates as told and catches up: then, and only then, it counts.
        old_leader.truncate_to(10).unwrap();
        let read = p.read_for_fetch(pos(10, 1, 2), Fetcher::Replica(3), true, 20);
        apply_records(&read, &mut old_leader);
        assert_eq!(old_leader.log_end_offset(), 20);
        let read = p.read_for_fetch(pos(20, 2, 2), Fetcher::Replica(3), true, 30);
        assert!(read.result.is_ok());
        assert_eq!(p.high_watermark(), 20);
        assert_same_below(
            p.high_watermark(),
            &p.log(),
            &old_leader,
            "after catching up",
        );
    }

    /// A leader with ISR {1, 2, 3} and min.insync.replicas 2 whose followers are stopped.
    fn leader_of_three(dir: &std::path::Path) -> Arc<Partition> {
        leader_of_three_at(dir, 4)
    }

    fn leader_of_three_at(dir: &std::path::Path, leader_epoch: i32) -> Arc<Partition> {
        let mut log = open_log(dir);
        log.assign_leader_epoch(leader_epoch);
        let lead = Leadership {
            assignment: Assignment {
                leader: 1,
                leader_epoch,
                partition_epoch: 9,
                replicas: vec![1, 2, 3],
                isr: vec![1, 2, 3],
            },
            settings: Settings {
                replica_lag_time_max_ms: 30_000,
                min_insync_replicas: 2,
            },
            high_watermark: Some(0),
        };
        let id = PartitionId {
            topic: "t".into(),
            index: 0,
            topic_id: uuid::Uuid::nil(),
        };
        Partition::new(id, 1, log, lead, Arc::default(), 0)
    }

    /// The hostile-clients issue's forged follower fetch: a client claims to be broker 2 and
    /// fetches far past the log end. That proves nothing about what broker 2 holds.
    #[test]
    fn a_fetch_past_the_log_end_counts_for_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = leader_of_three(dir.path());
        let leo = append(&mut p.log(), 20, 4);
        p.appended(leo, FsyncPolicy::None);
        for (replica, epoch) in [(2, -1), (3, 4), (2, 4)] {
            let read = p.read_for_fetch(
                pos(1 << 62, epoch, epoch),
                Fetcher::Replica(replica),
                true,
                5,
            );
            // Without a last fetched epoch it is out of range; with one, the leader first
            // answers where that epoch ends here (Kafka's order: an old leader's log may end
            // past this one's, and must be told where to truncate). Neither is progress.
            let expected = if epoch < 0 {
                matches!(read.result, Err(FetchError::OffsetOutOfRange { .. }))
            } else {
                matches!(&read.result, Ok(f) if f.outcome == FetchOutcome::Diverging { epoch: 4, end_offset: 20 })
            };
            assert!(expected, "{:?}", read.result);
            assert_eq!(read.proposal, None);
        }
        assert_eq!(
            p.high_watermark(),
            0,
            "acks=all writes held by the leader alone"
        );
    }

    /// A topic deleted and recreated under its name, while both followers' metadata lags: they
    /// still fetch the old topic's partition, by name (Fetch v12 has no topic id), at offset 15,
    /// which the new topic's log has reached. Only the leader epoch tells the two apart, so the
    /// controller never gives a recreated topic an epoch its predecessor had
    /// (`first_leader_epoch`). Under a colliding epoch the leader is fooled, which is why.
    #[test]
    fn a_follower_of_a_deleted_topic_counts_only_under_a_colliding_epoch() {
        const OLD_EPOCH: i32 = 4;
        for (new_epoch, fooled) in [(OLD_EPOCH, true), (OLD_EPOCH + 1, false)] {
            let dir = tempfile::tempdir().unwrap();
            let p = leader_of_three_at(dir.path(), new_epoch);
            let leo = append(&mut p.log(), 20, new_epoch);
            p.appended(leo, FsyncPolicy::None);
            for replica in [2, 3] {
                let read = p.read_for_fetch(
                    pos(15, OLD_EPOCH, OLD_EPOCH),
                    Fetcher::Replica(replica),
                    true,
                    5,
                );
                if !fooled {
                    assert!(
                        matches!(read.result, Err(FetchError::FencedLeaderEpoch(_))),
                        "{:?}",
                        read.result
                    );
                }
            }
            let expected = if fooled { 15 } else { 0 };
            assert_eq!(
                p.high_watermark(),
                expected,
                "leader epoch {new_epoch}: the followers hold none of this topic's records"
            );
        }
    }

    /// A follower's log with `(epoch, records)` batches appended in order.
    fn log_with(dir: &std::path::Path, batches: &[(i32, i32)]) -> Log {
        let (mut log, _) = Log::open(dir, TopicConfig::default(), OpenHints::default()).unwrap();
        for (epoch, n) in batches {
            let b = batch(*n, 1_000, (-1, -1, -1), 4);
            log.append_as_leader(&b, &BatchHeader::parse(&b).unwrap(), *epoch, 1_000)
                .unwrap();
        }
        log
    }

    #[test]
    fn truncation_stops_at_the_end_of_the_epoch_both_logs_share() {
        let dir = tempfile::tempdir().unwrap();
        // Epoch 1 at 0-9, epoch 3 at 10-14 (this broker led epoch 3; the leader never had it).
        let log = log_with(&dir.path().join("a"), &[(1, 10), (3, 5)]);
        // The leader's epoch 1 ran to 12: this log's ended at 10, so truncate there.
        assert_eq!(truncation_offset(&log, 1, 12), 10);
        // The leader's epoch 1 ended at 8: there.
        assert_eq!(truncation_offset(&log, 1, 8), 8);
        // The leader names epoch 2, which this log never had: to the end of its epoch 1 (10),
        // not to the leader's end (which would keep epoch 3's records 10-14).
        assert_eq!(truncation_offset(&log, 2, 20), 10);
        // An epoch older than any here: everything goes.
        assert_eq!(truncation_offset(&log, 0, 5), 0);
    }

    /// The follower that got stuck on "batch epoch N is older than the log's N+1" during
    /// leader moves: it led epoch N+1 for a moment without appending (an epoch entry at its
    /// log end), then followed a leader with more epoch-N records. Its truncation to its own
    /// log end must drop that empty epoch, so that its next fetch names epoch N and succeeds.
    #[test]
    fn an_empty_epoch_at_the_log_end_goes_with_the_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = log_with(&dir.path().join("a"), &[(4, 10)]);
        log.assign_leader_epoch(5);
        assert_eq!(log.latest_epoch(), Some(5));
        // The new leader (epoch 6) has epoch 4 up to 15: it answers epoch 4, end 15.
        let to = truncation_offset(&log, 4, 15);
        assert_eq!(to, 10);
        log.truncate_to(to).unwrap();
        assert_eq!(log.latest_epoch(), Some(4), "{:?}", log.epochs().entries());
        assert_eq!(log.log_end_offset(), 10);
        // And it stays dropped after a restart (the checkpoint was rewritten).
        drop(log);
        let (log, _) = Log::open(
            &dir.path().join("a"),
            TopicConfig::default(),
            OpenHints::default(),
        )
        .unwrap();
        assert_eq!(log.latest_epoch(), Some(4));
    }

    /// fsync.policy=before-ack on a follower: what it took in is fsynced (the recovery point
    /// moves to its log end) before the fetcher reports it; under none, nothing is.
    #[test]
    fn a_follower_under_before_ack_fsyncs_what_it_took_in() {
        let dir = tempfile::tempdir().unwrap();
        let mut leader = open_log(&dir.path().join("leader"));
        append(&mut leader, 4, 6);
        let data = leader.read(0, 1 << 20, i64::MAX).unwrap();
        for (fsync, recovered) in [(FsyncPolicy::None, 0), (FsyncPolicy::BeforeAck, 4)] {
            let p = leader_of_three(&dir.path().join(format!("{fsync:?}")));
            p.become_follower(2, 6);
            p.log().set_config(TopicConfig {
                fsync,
                ..TopicConfig::default()
            });
            let applied = p
                .append_as_follower(LeaderAnswer {
                    fetched_epoch: 6,
                    fetch_offset: 0,
                    outcome: AnswerOutcome::Records(&data),
                    high_watermark: 0,
                    log_start_offset: 0,
                })
                .unwrap();
            assert_eq!(applied, FollowerApplied::Appended { log_end_offset: 4 });
            assert_eq!(p.log().recovery_point(), 0);
            p.flush_as_follower().unwrap();
            assert_eq!(p.log().recovery_point(), recovered, "{fsync:?}");
        }
    }

    /// A truncation takes the group commit's mark down with the log: records appended again
    /// below the old mark are not on disk, and the group commit (which fsyncs only past the
    /// mark) and acks=1 (which waits for it) must not take them as fsynced.
    #[test]
    fn a_truncation_lowers_what_counts_as_fsynced() {
        let dir = tempfile::tempdir().unwrap();
        let p = leader_of_three(dir.path());
        append(&mut p.log(), 10, 4);
        p.flushed.send_modify(|f| f.offset = 10);
        p.become_follower(2, 6);
        let applied = p
            .append_as_follower(LeaderAnswer {
                fetched_epoch: 6,
                fetch_offset: 10,
                outcome: AnswerOutcome::Diverging {
                    epoch: 4,
                    end_offset: 5,
                },
                high_watermark: 5,
                log_start_offset: 0,
            })
            .unwrap();
        assert_eq!(applied, FollowerApplied::Truncated { to: 5 });
        assert_eq!(p.flushed.borrow().offset, 5);
    }

    /// An fsync begun before a truncation (a demoted leader's group commit still running when
    /// its fetcher truncates and takes other records at those offsets) marks nothing: those
    /// records came after it and are not on disk.
    #[test]
    fn an_fsync_overtaken_by_a_truncation_marks_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = leader_of_three(dir.path());
        append(&mut p.log(), 10, 4);
        p.flushed.send_modify(|f| f.offset = 0);
        let target = p.log().flush_target();
        p.become_follower(2, 6);
        let applied = p
            .append_as_follower(LeaderAnswer {
                fetched_epoch: 6,
                fetch_offset: 10,
                outcome: AnswerOutcome::Diverging {
                    epoch: 4,
                    end_offset: 5,
                },
                high_watermark: 5,
                log_start_offset: 0,
            })
            .unwrap();
        assert_eq!(applied, FollowerApplied::Truncated { to: 5 });
        append(&mut p.log(), 5, 6);
        target.file.sync_data().unwrap();
        assert!(!p.flushed_through(&target));
        assert_eq!(p.flushed.borrow().offset, 0);
        assert_eq!(p.log().recovery_point(), 0);
        assert!(p.unflushed_as_follower() || p.log().fsync_policy() == FsyncPolicy::None);
        let again = p.log().flush_target();
        assert!(p.flushed_through(&again));
        assert_eq!(
            p.flushed.borrow().offset,
            p.log().log_end_offset(),
            "{}",
            p.log().log_end_offset()
        );
    }

    /// acks=1 under before-ack waits for the fsync only while the leadership lasts: once it
    /// ends, the write may be truncated and its offsets fsynced again holding other records.
    #[tokio::test]
    async fn an_acks_1_wait_ends_with_the_leadership() {
        let dir = tempfile::tempdir().unwrap();
        let p = leader_of_three(dir.path());
        let waiting = tokio::spawn({
            let p = Arc::clone(&p);
            async move { p.wait_flushed(100, 4).await }
        });
        tokio::task::yield_now().await;
        p.become_follower(2, 6);
        p.flushed.send_modify(|f| f.offset = 200);
        assert!(!waiting.await.unwrap());
        assert!(!p.wait_flushed(100, 4).await);
    }

    /// Under before-ack a new leader counts its own copy only once fsynced: with an ISR of
    /// itself, records it fetched as a follower and has not fsynced are not acknowledged (nor
    /// shown to consumers) until its group commit has them on disk.
    #[test]
    fn a_new_leader_under_before_ack_counts_only_its_fsynced_copy() {
        let dir = tempfile::tempdir().unwrap();
        let mut leader = open_log(&dir.path().join("leader"));
        append(&mut leader, 4, 6);
        let data = leader.read(0, 1 << 20, i64::MAX).unwrap();
        let p = leader_of_three(&dir.path().join("p"));
        p.become_follower(2, 6);
        p.log().set_config(TopicConfig {
            fsync: FsyncPolicy::BeforeAck,
            ..TopicConfig::default()
        });
        p.append_as_follower(LeaderAnswer {
            fetched_epoch: 6,
            fetch_offset: 0,
            outcome: AnswerOutcome::Records(&data),
            high_watermark: 0,
            log_start_offset: 0,
        })
        .unwrap();
        let alone = Assignment {
            leader: 1,
            leader_epoch: 7,
            partition_epoch: 10,
            replicas: vec![1, 2, 3],
            isr: vec![1],
        };
        let settings = Settings {
            replica_lag_time_max_ms: 30_000,
            min_insync_replicas: 1,
        };
        p.become_leader(alone, settings, 0);
        assert_eq!(p.high_watermark(), 0, "an unsynced tail was counted");
        // The group commit's round: fsync, mark, count.
        let target = p.log().flush_target();
        target.file.sync_data().unwrap();
        assert!(p.flushed_through(&target));
        p.local_progress(target.end);
        assert_eq!(p.high_watermark(), 4);
    }

    /// A follower restarted at a log start that DeleteRecords put inside a batch (offset 4 of
    /// the batch 3..5) gets that whole batch from the leader: it takes it, from the batch's
    /// base, and keeps its start at 4. It used to refuse the batch at every fetch.
    #[test]
    fn a_follower_restarted_inside_a_batch_takes_that_batch() {
        let dir = tempfile::tempdir().unwrap();
        let p = leader_of_three(dir.path());
        p.become_follower(2, 6);
        let mut leader = open_log(&dir.path().join("leader"));
        append(&mut leader, 3, 4);
        append(&mut leader, 3, 4);
        assert!(leader.advance_log_start(4).unwrap());
        p.log().truncate_fully_and_start_at(4).unwrap();
        let data = leader.read(4, 1 << 20, i64::MAX).unwrap();
        let applied = p
            .append_as_follower(LeaderAnswer {
                fetched_epoch: 6,
                fetch_offset: 4,
                outcome: AnswerOutcome::Records(&data),
                high_watermark: 6,
                log_start_offset: 4,
            })
            .unwrap();
        assert_eq!(applied, FollowerApplied::Appended { log_end_offset: 6 });
        let log = p.log();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (4, 6));
        assert_eq!(lineage(&log), lineage(&leader));
    }

    /// An answer to a fetch the partition has moved past writes nothing: one sent under an
    /// earlier leadership (it became leader, or followed another), or at another log end.
    #[test]
    fn a_stale_answer_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let p = leader_of_three(dir.path());
        let mut other = open_log(&dir.path().join("other"));
        append(&mut other, 5, 4);
        let data = other.read(0, 1 << 20, i64::MAX).unwrap();
        let answer = |fetched_epoch, fetch_offset| LeaderAnswer {
            fetched_epoch,
            fetch_offset,
            outcome: AnswerOutcome::Records(&data),
            high_watermark: 5,
            log_start_offset: 0,
        };
        // Still the leader: a late answer from its time as a follower must not land.
        assert_eq!(
            p.append_as_follower(answer(4, 0)).unwrap(),
            FollowerApplied::Stale
        );
        p.become_follower(2, 6);
        assert_eq!(
            p.append_as_follower(answer(4, 0)).unwrap(),
            FollowerApplied::Stale
        );
        assert_eq!(
            p.append_as_follower(answer(6, 3)).unwrap(),
            FollowerApplied::Stale
        );
        assert_eq!(p.log().log_end_offset(), 0);
        assert_eq!(
            p.append_as_follower(answer(6, 0)).unwrap(),
            FollowerApplied::Appended { log_end_offset: 5 }
        );
        assert_eq!(p.high_watermark(), 5);
    }

    /// KIP-392: a follower serves a consumer of Fetch v11+ up to its own high watermark (what
    /// the leader said every ISR member holds), never past it, and refuses older consumers and
    /// every consumer once its replica is removed.
    #[test]
    fn a_follower_serves_consumers_up_to_its_high_watermark() {
        let dir = tempfile::tempdir().unwrap();
        let p = leader_of_three(dir.path());
        p.become_follower(2, 6);
        let mut leader = open_log(&dir.path().join("leader"));
        append(&mut leader, 5, 6);
        append(&mut leader, 5, 6);
        let data = leader.read(0, 1 << 20, i64::MAX).unwrap();
        let applied = p.append_as_follower(LeaderAnswer {
            fetched_epoch: 6,
            fetch_offset: 0,
            outcome: AnswerOutcome::Records(&data),
            high_watermark: 5,
            log_start_offset: 0,
        });
        assert_eq!(
            applied.unwrap(),
            FollowerApplied::Appended { log_end_offset: 10 }
        );
        assert_eq!(p.high_watermark(), 5);

        let read = p.read_for_fetch(pos(0, -1, 6), Fetcher::AnyReplicaConsumer, true, 5);
        let Ok(FetchedPartition {
            outcome: FetchOutcome::Records(bytes),
            high_watermark: 5,
            ..
        }) = &read.result
        else {
            panic!("{:?}", read.result);
        };
        let offsets: Vec<i64> = Batches::new(bytes).map(|(h, _)| h.last_offset()).collect();
        assert_eq!(offsets, vec![4], "records up to the high watermark only");
        let parked = p.readable_bytes(&pos(5, -1, 6), Fetcher::AnyReplicaConsumer);
        assert_eq!(parked, Some(0), "above the high watermark a consumer waits");
        // An older epoch is fenced here as at the leader.
        let read = p.read_for_fetch(pos(0, -1, 5), Fetcher::AnyReplicaConsumer, true, 5);
        assert!(matches!(read.result, Err(FetchError::FencedLeaderEpoch(6))));

        for fetcher in [Fetcher::Consumer, Fetcher::Replica(3)] {
            let read = p.read_for_fetch(pos(0, -1, 6), fetcher, true, 5);
            assert!(
                matches!(
                    read.result,
                    Err(FetchError::NotLeader {
                        leader: 2,
                        leader_epoch: 6
                    })
                ),
                "{fetcher:?}: {:?}",
                read.result
            );
            assert_eq!(p.readable_bytes(&pos(0, -1, 6), fetcher), None);
        }
        p.remove();
        let read = p.read_for_fetch(pos(0, -1, 6), Fetcher::AnyReplicaConsumer, true, 5);
        assert!(
            matches!(read.result, Err(FetchError::NotLeader { .. })),
            "{:?}",
            read.result
        );
    }

    /// KIP-207: a new leader whose high watermark is below the log end it took over at must
    /// not show its high watermark as the latest offset: the previous leader may have shown
    /// one up to there. It may once followers hold that much.
    #[test]
    fn a_new_leader_hides_its_high_watermark_until_it_reaches_the_epoch_start() {
        let dir = tempfile::tempdir().unwrap();
        let p = leader_of_three(dir.path());
        p.become_follower(2, 6);
        let mut leader = open_log(&dir.path().join("leader"));
        append(&mut leader, 10, 6);
        let data = leader.read(0, 1 << 20, i64::MAX).unwrap();
        let applied = p.append_as_follower(LeaderAnswer {
            fetched_epoch: 6,
            fetch_offset: 0,
            outcome: AnswerOutcome::Records(&data),
            high_watermark: 4,
            log_start_offset: 0,
        });
        assert!(applied.is_ok());
        assert!(
            !p.high_watermark_behind_epoch_start(),
            "a follower shows no latest offset"
        );
        let assignment = Assignment {
            leader: 1,
            leader_epoch: 7,
            partition_epoch: 10,
            replicas: vec![1, 2, 3],
            isr: vec![1, 2, 3],
        };
        let settings = Settings {
            replica_lag_time_max_ms: 30_000,
            min_insync_replicas: 2,
        };
        p.become_leader(assignment.clone(), settings, 5);
        assert!(p.high_watermark_behind_epoch_start());
        for replica in [2, 3] {
            p.read_for_fetch(pos(10, 6, 7), Fetcher::Replica(replica), true, 6);
        }
        assert_eq!(p.high_watermark(), 10);
        assert!(!p.high_watermark_behind_epoch_start());

        // Elected with an ISR of itself alone: everything it holds is committed, and shown at
        // once, not at the next append (an idle partition would hide it).
        let dir = tempfile::tempdir().unwrap();
        let alone = leader_of_three(dir.path());
        alone.become_follower(2, 6);
        let applied = alone.append_as_follower(LeaderAnswer {
            fetched_epoch: 6,
            fetch_offset: 0,
            outcome: AnswerOutcome::Records(&data),
            high_watermark: 4,
            log_start_offset: 0,
        });
        assert!(applied.is_ok());
        let only_me = Assignment {
            isr: vec![1],
            ..assignment
        };
        let settings = Settings {
            min_insync_replicas: 1,
            ..settings
        };
        alone.become_leader(only_me, settings, 5);
        assert_eq!(alone.high_watermark(), 10);
        assert!(!alone.high_watermark_behind_epoch_start());
    }

    /// A follower told to truncate below its high watermark (no clean election does that)
    /// brings the high watermark down with the log, so follower reads never pass the log end.
    #[test]
    fn a_truncating_follower_keeps_its_high_watermark_within_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let p = leader_of_three(dir.path());
        p.become_follower(2, 6);
        let mut leader = open_log(&dir.path().join("leader"));
        append(&mut leader, 10, 6);
        let data = leader.read(0, 1 << 20, i64::MAX).unwrap();
        let answer = |fetch_offset, outcome| LeaderAnswer {
            fetched_epoch: 6,
            fetch_offset,
            outcome,
            high_watermark: 10,
            log_start_offset: 0,
        };
        assert!(
            p.append_as_follower(answer(0, AnswerOutcome::Records(&data)))
                .is_ok()
        );
        assert_eq!(p.high_watermark(), 10);
        let diverging = AnswerOutcome::Diverging {
            epoch: 6,
            end_offset: 0,
        };
        assert_eq!(
            p.append_as_follower(answer(10, diverging)).unwrap(),
            FollowerApplied::Truncated { to: 0 }
        );
        assert_eq!(p.high_watermark(), 0);
    }

    /// A leader whose replica is removed (reassigned away in one metadata step) answers its
    /// waiting acks=all producers at once, as not committed, instead of leaving them to time
    /// out (the drain test's 30 s stalls).
    #[tokio::test]
    async fn removing_a_leading_replica_ends_its_waits() {
        let dir = tempfile::tempdir().unwrap();
        let p = leader_of_three(dir.path());
        let leo = append(&mut p.log(), 3, 4);
        p.appended(leo, FsyncPolicy::None);
        let waiter = tokio::spawn({
            let p = Arc::clone(&p);
            async move { p.wait_high_watermark(leo, 4).await }
        });
        tokio::task::yield_now().await;
        p.remove();
        let committed = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("the wait ended")
            .unwrap();
        assert!(!committed);
        assert!(!p.is_leader());
        let b = batch(1, 1_000, (-1, -1, -1), 8);
        let h = BatchHeader::parse(&b).unwrap();
        assert!(matches!(
            p.append_as_leader(&b, &h, None, false, 1),
            Err(AppendRefused::NotLeader)
        ));
    }
}
