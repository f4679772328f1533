//! One partition hosted by this broker: its log behind a short-held mutex, the high watermark,
//! and group commit for the before-ack fsync policy.
//!
//! In standalone mode the broker is the only replica, so the high watermark is the log end
//! (fsync policy none) or the last fsynced offset (before-ack).

use std::sync::atomic::{AtomicI32, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::sync::{Notify, watch};
use tracing::error;

use crate::storage::log::Log;
use crate::topic_config::FsyncPolicy;

pub struct Partition {
    pub topic: String,
    pub index: i32,
    pub topic_id: uuid::Uuid,
    log: Mutex<Log>,
    high_watermark: AtomicI64,
    leader_epoch: AtomicI32,
    /// Wakes the group-commit task.
    flush_wanted: Arc<Notify>,
    /// Offset below which everything is fsynced (before-ack policy).
    flushed: watch::Sender<i64>,
    /// Broker-wide counter bumped whenever a high watermark moves (wakes long-poll fetches).
    data_version: Arc<watch::Sender<u64>>,
}

impl Partition {
    pub fn new(
        topic: String,
        index: i32,
        topic_id: uuid::Uuid,
        log: Log,
        high_watermark: Option<i64>,
        data_version: Arc<watch::Sender<u64>>,
    ) -> Arc<Self> {
        let leo = log.log_end_offset();
        let fsync = log.fsync_policy();
        // Standalone: the only replica's log end is committed, or what was fsynced last time
        // (unfsynced data may still be in the page cache, and it is all we have).
        let hw = match fsync {
            FsyncPolicy::None => leo,
            FsyncPolicy::BeforeAck => high_watermark
                .unwrap_or(leo)
                .max(log.recovery_point())
                .min(leo),
        };
        let hw = hw.max(log.log_start_offset());
        let leader_epoch = log.latest_epoch().unwrap_or(0);
        let partition = Arc::new(Self {
            topic,
            index,
            topic_id,
            log: Mutex::new(log),
            high_watermark: AtomicI64::new(hw),
            leader_epoch: AtomicI32::new(leader_epoch),
            flush_wanted: Arc::new(Notify::new()),
            flushed: watch::Sender::new(hw),
            data_version,
        });
        if fsync == FsyncPolicy::BeforeAck {
            // Everything already in the log at open is treated as committed.
            partition.advance_high_watermark(leo);
            let _ = partition.flushed.send(leo);
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

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.load(Ordering::Acquire)
    }
    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Acquire)
    }

    pub fn advance_high_watermark(&self, to: i64) {
        if self.high_watermark.fetch_max(to, Ordering::AcqRel) < to {
            self.data_version.send_modify(|v| *v += 1);
        }
    }

    /// Called after an append (with the log end offset now). Commits at once, or asks the
    /// group-commit task for an fsync.
    pub fn appended(&self, log_end_offset: i64, fsync: FsyncPolicy) {
        match fsync {
            FsyncPolicy::None => self.advance_high_watermark(log_end_offset),
            FsyncPolicy::BeforeAck => self.flush_wanted.notify_one(),
        }
    }

    /// Lets the group-commit task notice that the partition is gone.
    pub fn shutdown(&self) {
        self.flush_wanted.notify_one();
    }

    /// Waits until everything below `offset` is fsynced (before-ack policy).
    pub async fn wait_flushed(&self, offset: i64) -> bool {
        let mut rx = self.flushed.subscribe();
        rx.wait_for(|f| *f >= offset).await.is_ok()
    }
}

/// One fsync covers every append that landed before it started: concurrent producers share it.
/// Holds only a weak reference so a deleted partition's task ends.
async fn group_commit(partition: Weak<Partition>, wanted: Arc<Notify>) {
    loop {
        {
            let Some(p) = partition.upgrade() else { return };
            let (file, leo) = p.log().flush_target();
            if leo > *p.flushed.borrow() {
                match tokio::task::spawn_blocking(move || file.sync_data()).await {
                    Ok(Ok(())) => {
                        p.log().mark_flushed(leo);
                        p.advance_high_watermark(leo);
                        p.flushed.send_modify(|f| *f = (*f).max(leo));
                        continue;
                    }
                    // Retry after the next append rather than spinning on a failing disk.
                    Ok(Err(e)) => {
                        error!(topic = %p.topic, partition = p.index, error = %e, "fsync failed")
                    }
                    Err(e) => error!(error = %e, "fsync task failed"),
                }
            }
        }
        wanted.notified().await;
    }
}
