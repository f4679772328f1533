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
use tracing::error;

use crate::replication::state::{Assignment, Effect, FetchRejected, LeaderState, Settings};
use crate::storage::log::Log;
use crate::topic_config::FsyncPolicy;

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
            signals,
        });
        if fsync == FsyncPolicy::BeforeAck {
            tokio::spawn(group_commit(
                Arc::downgrade(&partition),
                Arc::clone(&partition.flush_wanted),
            ));
        }
        partition
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

    /// Called after a local append (with the log end offset now). With fsync policy none the
    /// leader's own copy counts at once; before-ack waits for the group commit.
    pub fn appended(&self, log_end_offset: i64, fsync: FsyncPolicy) -> Option<IsrProposal> {
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

    /// A follower fetched from `fetch_offset`, a valid offset of this leader's log, whose end
    /// was `log_end_offset` when the fetch read it.
    pub fn follower_fetched(
        &self,
        replica: i32,
        fetch_offset: i64,
        log_end_offset: i64,
        now_ms: i64,
    ) -> Result<Option<IsrProposal>, FetchRejected> {
        let Some((result, epoch)) =
            self.with_leader(|s| s.on_fetch(replica, fetch_offset, log_end_offset, now_ms))
        else {
            return Err(FetchRejected::NotAReplica(replica));
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

    pub fn proposal_rejected(&self) {
        self.with_leader(|s| s.on_proposal_rejected());
    }

    /// Becomes leader of a new epoch (cluster mode). The epoch starts at the log end.
    pub fn become_leader(&self, assignment: Assignment, settings: Settings, now_ms: i64) {
        let epoch = assignment.leader_epoch;
        let (leo, hw) = {
            let mut log = self.log();
            log.assign_leader_epoch(epoch);
            (log.log_end_offset(), self.high_watermark())
        };
        let state = LeaderState::new(self.node_id, settings, assignment, leo, hw, now_ms);
        *self.role() = Role::Leader(Box::new(state));
        self.leader_epoch.store(epoch, Ordering::Release);
        // Wake acks=all waiters: their leadership ended.
        self.hw_watch.send_modify(|_| {});
        self.signals.high_watermark_moved();
    }

    /// Becomes a follower of `leader` at `leader_epoch` (cluster mode).
    pub fn become_follower(&self, leader: i32, leader_epoch: i32) {
        *self.role() = Role::Follower {
            leader,
            leader_epoch,
        };
        self.leader_epoch.store(leader_epoch, Ordering::Release);
        self.hw_watch.send_modify(|_| {});
        self.signals.high_watermark_moved();
    }

    /// A follower takes the leader's high watermark, bounded by its own log end.
    pub fn follower_high_watermark(&self, leader_hw: i64, log_end_offset: i64) {
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

    /// Waits until everything below `offset` is fsynced (before-ack, acks=1). False if an
    /// fsync failed: the data may not be on disk and must not be acknowledged.
    pub async fn wait_flushed(&self, offset: i64) -> bool {
        let mut rx = self.flushed.subscribe();
        match rx.wait_for(|f| f.failed || f.offset >= offset).await {
            Ok(f) => !f.failed,
            Err(_) => false,
        }
    }

    /// An fsync failed earlier: the partition refuses writes until the broker restarts.
    pub fn storage_failed(&self) -> bool {
        self.flushed.borrow().failed
    }

    /// Lets the group-commit task notice that the partition is gone.
    pub fn shutdown(&self) {
        self.flush_wanted.notify_one();
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
            let (file, leo) = p.log().flush_target();
            if leo > p.flushed.borrow().offset {
                match tokio::task::spawn_blocking(move || file.sync_data()).await {
                    Ok(Ok(())) => {
                        p.log().mark_flushed(leo);
                        p.flushed.send_modify(|f| f.offset = f.offset.max(leo));
                        p.local_progress(leo);
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
