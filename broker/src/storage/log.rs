//! A partition's log: an ordered map of segments (the last one active), the log start offset,
//! the recovery point, the leader-epoch cache and the idempotent-producer table.
//!
//! Not thread-safe by itself: the partition owns it behind a mutex and never holds the lock
//! across an await. fsync for group commit happens outside the lock on a cloned file handle.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::protocol::batch::{self, BatchHeader};
use crate::topic_config::{FsyncPolicy, TimestampType, TopicConfig};

use super::StorageError;
use super::checkpoint::write_atomic;
use super::epoch_cache::EpochCache;
use super::producer_state::{self, ProducerError, ProducerStateTable, SequenceCheck};
use super::segment::Segment;

/// What the log directory knows about this partition from its checkpoints.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenHints {
    /// The previous run wrote the clean-shutdown marker.
    pub clean_shutdown: bool,
    pub recovery_point: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments_scanned: usize,
    pub batches_validated: u64,
    pub truncated_bytes: u64,
    /// Offset and reason of the first invalid batch, when recovery cut the log.
    pub truncated_at: Option<(i64, String)>,
    pub segments_deleted: usize,
    pub duration: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    /// -1 unless the topic uses LogAppendTime.
    pub log_append_time: i64,
    /// A retried batch already in the log: nothing was written.
    pub duplicate: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error(transparent)]
    Producer(#[from] ProducerError),
    #[error("storage error: {0}")]
    Storage(#[from] io::Error),
    #[error("replicated data does not continue the log: {0}")]
    Replication(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("offset {offset} is out of range [{start}, {end}]")]
    OutOfRange { offset: i64, start: i64, end: i64 },
    #[error("storage error: {0}")]
    Storage(#[from] io::Error),
}

pub struct Log {
    dir: PathBuf,
    config: TopicConfig,
    segments: BTreeMap<i64, Segment>,
    log_start_offset: i64,
    recovery_point: i64,
    epochs: EpochCache,
    /// The last leader-epoch checkpoint write failed (a full disk), so the file lags the cache.
    /// Written again before the recovery point moves: recovery rebuilds epochs only from there.
    epochs_unsaved: bool,
    producers: ProducerStateTable,
    /// The topic was deleted: nothing may touch the files any more.
    deleted: bool,
    /// Bumped by every truncation: an fsync begun before one must not mark what was appended
    /// after it (at offsets the truncation freed) as on disk.
    truncations: u64,
}

/// See [`Log::flush_target`].
pub struct FlushTarget {
    pub file: std::sync::Arc<fs::File>,
    pub end: i64,
    truncations: u64,
}

/// A partition's log start offset when DeleteRecords moved it inside a segment.
const LOG_START_FILE: &str = "log-start-offset";

/// The recorded log start; an unreadable file (torn by a crash before its rename, which
/// `write_atomic` prevents, or damaged) counts as none: the log then starts at its first
/// segment, so deleted records may show again, never acknowledged ones hide.
fn read_log_start(dir: &Path) -> io::Result<Option<i64>> {
    let path = dir.join(LOG_START_FILE);
    match fs::read(&path) {
        Ok(bytes) => {
            let parsed = std::str::from_utf8(&bytes)
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .filter(|o| *o >= 0);
            if parsed.is_none() {
                warn!(file = %path.display(), "ignoring an unreadable log start offset file");
            }
            Ok(parsed)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn deleted_error() -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, "the partition was deleted")
}

fn segment_bases(dir: &Path) -> io::Result<Vec<i64>> {
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.ends_with(".tmp") || name.ends_with(".deleted") {
            let _ = fs::remove_file(&path);
            continue;
        }
        if let Some(stem) = name.strip_suffix(".log")
            && let Ok(base) = stem.parse::<i64>()
        {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

impl Log {
    /// Opens (or creates) the log in `dir`, recovering it if the last stop was unclean.
    pub fn open(
        dir: &Path,
        config: TopicConfig,
        hints: OpenHints,
    ) -> Result<(Self, RecoveryReport), StorageError> {
        let started = Instant::now();
        fs::create_dir_all(dir)?;
        let mut report = RecoveryReport::default();
        let bases = segment_bases(dir)?;
        let recovery_point = if hints.clean_shutdown {
            i64::MAX
        } else {
            hints.recovery_point.unwrap_or(0)
        };
        // Recovery starts at the segment containing the recovery point.
        let first_to_recover = bases
            .iter()
            .rev()
            .find(|b| **b <= recovery_point)
            .copied()
            .unwrap_or(0);
        let mut epochs = EpochCache::load(dir.join("leader-epoch-checkpoint"))?;
        let mut segments = BTreeMap::new();
        let mut cut = false;
        for (i, base) in bases.iter().copied().enumerate() {
            let path = dir.join(super::segment::file_name(base, ".log"));
            if cut {
                // Everything after a truncation point goes.
                let len = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                report.truncated_bytes += len;
                report.segments_deleted += 1;
                for suffix in [".log", ".index", ".timeindex"] {
                    let _ = fs::remove_file(dir.join(super::segment::file_name(base, suffix)));
                }
                continue;
            }
            let recover = !hints.clean_shutdown && base >= first_to_recover;
            let mut batches = 0u64;
            let mut epoch_changed = false;
            let (mut seg, invalid) =
                Segment::open(dir, base, config.index_interval_bytes, recover, &mut |h| {
                    batches += 1;
                    if recover && h.partition_leader_epoch >= 0 {
                        epoch_changed |= epochs.assign(h.partition_leader_epoch, h.base_offset);
                    }
                })?;
            if recover {
                report.segments_scanned += 1;
                report.batches_validated += batches;
            }
            let expected_end = bases.get(i + 1).copied();
            if let Some(bad) = invalid {
                let file_len = fs::metadata(&path)?.len();
                report.truncated_bytes += file_len - bad.position;
                warn!(
                    segment = %path.display(), position = bad.position, offset = seg.next_offset(),
                    cut_bytes = file_len - bad.position, reason = %bad.reason,
                    "recovery truncated the log at the first invalid batch"
                );
                report.truncated_at = Some((seg.next_offset(), bad.reason));
                seg.cut_at(bad.position)?;
                cut = true;
            } else if let Some(next) = expected_end
                && seg.next_offset() > next
            {
                warn!(segment = %path.display(), "segment overlaps the next one; truncating the log here");
                report.truncated_at = Some((seg.next_offset(), "overlapping segments".into()));
                cut = true;
            }
            segments.insert(base, seg);
        }
        // The log starts where its first segment does, or later where DeleteRecords moved it
        // (`LOG_START_FILE`, in the partition's own directory, so it goes with the directory
        // when a deleted topic's leftovers are removed; the log-dir checkpoint could be stale).
        let first_base = segments.keys().next().copied().unwrap_or(0);
        let recorded_start = read_log_start(dir)?;
        let log_start_offset = recorded_start.map_or(first_base, |o| o.max(first_base));
        if segments.is_empty() {
            segments.insert(
                log_start_offset,
                Segment::create(dir, log_start_offset, config.index_interval_bytes)?,
            );
        }
        let mut log = Self {
            dir: dir.to_path_buf(),
            config,
            segments,
            log_start_offset,
            recovery_point: 0,
            epochs,
            epochs_unsaved: false,
            producers: ProducerStateTable::default(),
            deleted: false,
            truncations: 0,
        };
        let leo = log.log_end_offset();
        log.log_start_offset = log.log_start_offset.min(leo);
        // Recovery cut the log below a recorded start (its records were never fsynced): the
        // log now starts at its end, and the file must say so before anything is appended, or
        // the next open would put the start back above records written from here on.
        if recorded_start.is_some_and(|r| r > log.log_start_offset) {
            let start = log.log_start_offset;
            warn!(dir = %dir.display(), recorded = ?recorded_start, start, "the recorded log start is past the recovered log end; recording the log end");
            super::checkpoint::write_atomic(
                &dir.join(LOG_START_FILE),
                format!("{start}\n").as_bytes(),
            )?;
        }
        log.recovery_point = if hints.clean_shutdown {
            leo
        } else {
            recovery_point.min(leo)
        };
        let epochs_before = log.epochs.entries().to_vec();
        log.epochs.truncate_from_end(leo);
        log.epochs.truncate_from_start(log.log_start_offset);
        // Write only on change, so a full disk does not stop a broker from opening its logs.
        if log.epochs.entries() != epochs_before.as_slice() || !log.epochs.path().exists() {
            log.save_epochs()?;
        }
        log.rebuild_producer_state()?;
        if !hints.clean_shutdown && log.config.fsync == FsyncPolicy::BeforeAck {
            // The recovered tail came from the page cache; make it durable before anything
            // (a retried duplicate, a consumer) treats it as acknowledged.
            log.flush()?;
        }
        report.duration = started.elapsed();
        if report.segments_scanned > 0 {
            info!(
                dir = %dir.display(), segments = report.segments_scanned, batches = report.batches_validated,
                truncated_bytes = report.truncated_bytes, log_end_offset = leo,
                ms = report.duration.as_millis() as u64, "recovered log"
            );
        }
        Ok((log, report))
    }

    /// Loads the newest usable producer snapshot at or below the log end and replays batch
    /// headers after it. Snapshots past the log end (from before a truncation) are deleted.
    fn rebuild_producer_state(&mut self) -> io::Result<()> {
        let leo = self.log_end_offset();
        let mut snapshots = self.snapshot_offsets()?;
        snapshots.sort_unstable();
        let mut table = ProducerStateTable::default();
        let mut from = self.log_start_offset;
        for &off in snapshots.iter().rev() {
            let path = self.dir.join(producer_state::snapshot_name(off));
            if off > leo {
                fs::remove_file(&path)?;
                continue;
            }
            if let Some(t) = fs::read(&path)
                .ok()
                .and_then(|b| ProducerStateTable::decode(&b))
            {
                table = t;
                from = off;
                break;
            }
            warn!(snapshot = %path.display(), "ignoring unreadable producer state snapshot");
        }
        for seg in self.segments.values() {
            if seg.next_offset() <= from {
                continue;
            }
            seg.for_each_header_from(from, &mut |h| table.record(h, 0))?;
        }
        table.seen_at(crate::clock::now_ms());
        self.producers = table;
        Ok(())
    }

    fn snapshot_offsets(&self) -> io::Result<Vec<i64>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            if let Some(off) = producer_state::snapshot_offset(&entry?.path()) {
                out.push(off);
            }
        }
        Ok(out)
    }

    /// Writes a producer snapshot as of the log end and keeps only the two newest.
    fn take_producer_snapshot(&self) -> io::Result<()> {
        let leo = self.log_end_offset();
        write_atomic(
            &self.dir.join(producer_state::snapshot_name(leo)),
            &self.producers.encode(),
        )?;
        let mut offs = self.snapshot_offsets()?;
        offs.sort_unstable();
        for off in offs.iter().rev().skip(2) {
            let _ = fs::remove_file(self.dir.join(producer_state::snapshot_name(*off)));
        }
        Ok(())
    }

    fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has an active segment")
    }
    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has an active segment")
    }

    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset()
    }
    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }
    pub fn recovery_point(&self) -> i64 {
        self.recovery_point
    }
    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(Segment::size).sum()
    }
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
    pub fn config(&self) -> &TopicConfig {
        &self.config
    }
    pub fn set_config(&mut self, config: TopicConfig) {
        self.config = config;
    }
    pub fn epochs(&self) -> &EpochCache {
        &self.epochs
    }
    pub fn latest_epoch(&self) -> Option<i32> {
        self.epochs.latest_epoch()
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// De-duplication check for a client batch (see `ProducerStateTable::check`).
    pub fn check_producer(&self, header: &BatchHeader) -> Result<SequenceCheck, ProducerError> {
        self.producers.check(header)
    }

    /// Appends a validated client batch as leader: assigns offsets from the log end, stamps the
    /// leader epoch, and records producer state. A retried duplicate is answered with its
    /// original offsets and not written again.
    pub fn append_as_leader(
        &mut self,
        batch: &[u8],
        header: &BatchHeader,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, AppendError> {
        if let SequenceCheck::Duplicate(m) = self.producers.check(header)? {
            return Ok(AppendInfo {
                base_offset: m.first_offset,
                last_offset: m.last_offset,
                log_append_time: -1,
                duplicate: true,
            });
        }
        let log_append = self.config.timestamp_type == TimestampType::LogAppendTime;
        let rewritten;
        let batch = if log_append {
            rewritten = with_log_append_time(batch, now_ms);
            &rewritten[..]
        } else {
            batch
        };
        if self.deleted {
            return Err(AppendError::Storage(deleted_error()));
        }
        let mut h =
            BatchHeader::parse(batch).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        self.maybe_roll(batch.len(), h.last_offset_delta, now_ms)?;
        let base = self.log_end_offset();
        h.base_offset = base;
        h.partition_leader_epoch = leader_epoch;
        let prefix = batch::patched_prefix(batch, base, leader_epoch);
        self.active_mut().append(&prefix, batch, &h)?;
        // The batch is in the log: producer state first, so a retry is a duplicate even if the
        // checkpoint write below fails (recovery rebuilds the epoch cache anyway).
        self.producers.record(&h, now_ms);
        if self.epochs.assign(leader_epoch, base)
            && let Err(e) = self.save_epochs()
        {
            warn!(dir = %self.dir.display(), error = %e, "cannot write leader-epoch checkpoint");
        }
        Ok(AppendInfo {
            base_offset: base,
            last_offset: h.last_offset(),
            log_append_time: if log_append { now_ms } else { -1 },
            duplicate: false,
        })
    }

    /// Appends batches fetched from the leader (follower side), keeping their offsets and
    /// leader epochs byte for byte. `data` must be whole batches continuing exactly at the log
    /// end; each is checked (size, CRC-32C, offsets) before anything is written, so a bad
    /// response writes nothing. Returns the new log end offset.
    pub fn append_replicated(&mut self, data: &[u8], now_ms: i64) -> Result<i64, AppendError> {
        if self.deleted {
            return Err(AppendError::Storage(deleted_error()));
        }
        let mut expected = self.log_end_offset();
        let mut latest_epoch = self.epochs.latest_epoch().unwrap_or(-1);
        let mut batches = Vec::new();
        let mut it = batch::Batches::new(data);
        for (h, range) in it.by_ref() {
            batch::check_crc(&h, &data[range.clone()])
                .map_err(|e| AppendError::Replication(e.to_string()))?;
            if h.base_offset != expected || h.last_offset_delta < 0 {
                return Err(AppendError::Replication(format!(
                    "batch at offset {} where {expected} was expected",
                    h.base_offset
                )));
            }
            if h.partition_leader_epoch < latest_epoch {
                return Err(AppendError::Replication(format!(
                    "batch epoch {} is older than the log's {latest_epoch}",
                    h.partition_leader_epoch
                )));
            }
            latest_epoch = h.partition_leader_epoch;
            expected = h.next_offset();
            batches.push((h, range));
        }
        if it.consumed() != data.len() {
            // Kafka may end a fetch response with a partial batch; it is fetched again next time.
            tracing::debug!(dir = %self.dir.display(), bytes = data.len() - it.consumed(), "ignoring a partial trailing batch");
        }
        for (h, range) in batches {
            let bytes = &data[range];
            self.maybe_roll(bytes.len(), h.last_offset_delta, now_ms)?;
            let mut prefix = [0u8; 16];
            prefix.copy_from_slice(&bytes[..16]);
            self.active_mut().append(&prefix, bytes, &h)?;
            self.producers.record(&h, now_ms);
            if self.epochs.assign(h.partition_leader_epoch, h.base_offset)
                && let Err(e) = self.save_epochs()
            {
                warn!(dir = %self.dir.display(), error = %e, "cannot write leader-epoch checkpoint");
            }
        }
        Ok(self.log_end_offset())
    }

    fn maybe_roll(
        &mut self,
        incoming: usize,
        last_offset_delta: i32,
        now_ms: i64,
    ) -> io::Result<()> {
        let active = self.active();
        if active.is_empty() {
            return Ok(());
        }
        let too_big = active.size() + incoming as u64 > self.config.segment_bytes;
        let too_old = active
            .first_batch_timestamp()
            .is_some_and(|t| now_ms.saturating_sub(t) > self.config.segment_ms);
        // Index entries hold offsets relative to the base as u32.
        let offset_overflow = active.next_offset() + i64::from(last_offset_delta)
            - active.base_offset()
            > i64::from(i32::MAX);
        if too_big || too_old || offset_overflow {
            self.roll()?;
        }
        Ok(())
    }

    /// Closes the active segment (fsynced, so the recovery point moves to the new segment) and
    /// starts a new one at the log end.
    pub fn roll(&mut self) -> io::Result<()> {
        if self.deleted {
            return Err(deleted_error());
        }
        let leo = self.log_end_offset();
        if self.active().is_empty() {
            return Ok(());
        }
        self.save_unsaved_epochs()?;
        self.active_mut().flush(true)?;
        self.recovery_point = self.recovery_point.max(leo);
        let seg = Segment::create(&self.dir, leo, self.config.index_interval_bytes)?;
        self.segments.insert(leo, seg);
        super::checkpoint::sync_dir(&self.dir)?;
        self.take_producer_snapshot()?;
        Ok(())
    }

    /// Reads whole batches from `offset` (at most `max_bytes`, but at least one whole batch),
    /// stopping before `max_offset` (exclusive): the high watermark for consumers.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset: i64,
    ) -> Result<Vec<u8>, ReadError> {
        let leo = self.log_end_offset();
        if offset < self.log_start_offset || offset > leo {
            return Err(ReadError::OutOfRange {
                offset,
                start: self.log_start_offset,
                end: leo,
            });
        }
        if offset >= max_offset {
            return Ok(Vec::new());
        }
        let floor = self
            .segments
            .range(..=offset)
            .next_back()
            .map_or(self.log_start_offset, |(b, _)| *b);
        for seg in self.segments.range(floor..).map(|(_, s)| s) {
            if let Some((pos, _)) = seg.find(offset)? {
                return Ok(seg.read(pos, max_bytes, max_offset)?);
            }
        }
        Ok(Vec::new())
    }

    /// Bytes of the whole batches a read from `from` bounded by `to` (exclusive) would cover,
    /// found from positions (the sparse index and batch headers) without reading records.
    /// 0 when `from` is at or past `to` or outside the log.
    pub fn bytes_between(&self, from: i64, to: i64) -> io::Result<u64> {
        if from >= to || from < self.log_start_offset || from >= self.log_end_offset() {
            return Ok(0);
        }
        let floor = self
            .segments
            .range(..=from)
            .next_back()
            .map_or(self.log_start_offset, |(b, _)| *b);
        let mut total = 0u64;
        for (base, seg) in self.segments.range(floor..) {
            if *base >= to {
                break;
            }
            let start = if *base <= from {
                match seg.find(from)? {
                    Some((pos, _)) => pos,
                    None => continue, // `from` is past this segment's batches
                }
            } else {
                0
            };
            // A batch holding `to` is not read (its last offset is not below `to`).
            let end = if to < seg.next_offset() {
                seg.find(to)?.map_or(seg.size(), |(pos, _)| pos)
            } else {
                seg.size()
            };
            total += end.saturating_sub(start);
        }
        Ok(total)
    }

    /// First record with a timestamp >= `timestamp`: its offset and timestamp, and the
    /// leader epoch of its batch.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> io::Result<Option<(i64, i64, i32)>> {
        for seg in self.segments.values() {
            if let Some(found) = seg.find_by_timestamp(timestamp)? {
                return Ok(Some((found.0.max(self.log_start_offset), found.1, found.2)));
            }
        }
        Ok(None)
    }

    /// The batch holding the largest timestamp (ListOffsets -3, KIP-734).
    pub fn offset_of_max_timestamp(&self) -> io::Result<Option<(i64, i64, i32)>> {
        let Some(seg) = self
            .segments
            .values()
            .filter(|s| !s.is_empty())
            .max_by_key(|s| s.max_timestamp())
        else {
            return Ok(None);
        };
        seg.find_by_timestamp(seg.max_timestamp())
    }

    /// Starts a new leader epoch at the log end (on becoming leader).
    pub fn assign_leader_epoch(&mut self, epoch: i32) {
        let leo = self.log_end_offset();
        if self.epochs.assign(epoch, leo)
            && let Err(e) = self.save_epochs()
        {
            warn!(dir = %self.dir.display(), error = %e, "cannot write leader-epoch checkpoint");
        }
    }

    /// Marks the log deleted (its topic is gone): from now on it writes nothing, so a new
    /// topic of the same name can never be touched through it.
    pub fn mark_deleted(&mut self) {
        self.deleted = true;
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted
    }

    /// Forgets idempotent producers with no batch appended for `expiration_ms` (Kafka's
    /// producer.id.expiration.ms); returns how many.
    pub fn remove_expired_producers(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        self.producers.remove_expired(now_ms, expiration_ms)
    }

    /// Idempotent producers whose state this log keeps.
    pub fn producer_count(&self) -> usize {
        self.producers.len()
    }

    /// The idempotent producers whose state this log keeps (DescribeProducers).
    pub fn producers(&self) -> &ProducerStateTable {
        &self.producers
    }

    /// Deletes whole, inactive segments past retention (time, then size) that lie entirely
    /// below the high watermark; returns how many.
    pub fn apply_retention(&mut self, now_ms: i64, high_watermark: i64) -> io::Result<usize> {
        let mut deleted = 0;
        loop {
            if self.segments.len() < 2 || self.deleted {
                break;
            }
            let next_base = self.segments.keys().nth(1).copied().unwrap_or(i64::MAX);
            if next_base > high_watermark {
                break;
            }
            let (&base, oldest) = self.segments.iter().next().expect("checked above");
            let expired = self.config.retention_ms >= 0
                && oldest.max_timestamp() >= 0
                && now_ms - oldest.max_timestamp() > self.config.retention_ms;
            let oversize = self.config.retention_bytes >= 0
                && self.size_bytes().saturating_sub(oldest.size())
                    >= self.config.retention_bytes as u64;
            if !(expired || oversize) {
                break;
            }
            let seg = self.segments.remove(&base).expect("present");
            let next_start = self
                .segments
                .keys()
                .next()
                .copied()
                .expect("active remains");
            self.log_start_offset = self.log_start_offset.max(next_start);
            info!(segment = %seg.log_path().display(), expired, oversize, "retention deleted segment");
            seg.delete()?;
            deleted += 1;
        }
        if deleted > 0 {
            self.epochs.truncate_from_start(self.log_start_offset);
            self.save_epochs()?;
        }
        Ok(deleted)
    }

    /// Deletes whole segments that lie entirely below `offset` (a snapshot superseded them,
    /// or the leader's log start offset moved past them); the active segment always stays.
    /// The log start offset moves to the first remaining segment. Returns how many went.
    pub fn delete_segments_below(&mut self, offset: i64) -> io::Result<usize> {
        let mut deleted = 0;
        while self.segments.len() >= 2 && !self.deleted {
            let mut bases = self.segments.keys().copied();
            let (Some(base), Some(next_base)) = (bases.next(), bases.next()) else {
                break;
            };
            if next_base > offset {
                break;
            }
            let Some(seg) = self.segments.remove(&base) else {
                break;
            };
            self.log_start_offset = self.log_start_offset.max(next_base);
            info!(segment = %seg.log_path().display(), below = offset, "deleted a superseded segment");
            seg.delete()?;
            deleted += 1;
        }
        if deleted > 0 {
            self.epochs.truncate_from_start(self.log_start_offset);
            self.save_epochs()?;
        }
        Ok(deleted)
    }

    /// Moves the log start offset up to `offset` (DeleteRecords on a leader; a follower taking
    /// its leader's): records below it are gone for readers at once and whole segments below
    /// it are deleted. Durable before it returns, so a restart never brings them back. The
    /// caller bounds `offset` by the high watermark; beyond the log end it is clamped there.
    /// Returns whether the start moved.
    pub fn advance_log_start(&mut self, offset: i64) -> io::Result<bool> {
        if self.deleted {
            return Err(deleted_error());
        }
        let offset = offset.min(self.log_end_offset());
        if offset <= self.log_start_offset {
            return Ok(false);
        }
        super::checkpoint::write_atomic(
            &self.dir.join(LOG_START_FILE),
            format!("{offset}\n").as_bytes(),
        )?;
        self.log_start_offset = offset;
        self.delete_segments_below(offset)?;
        self.epochs.truncate_from_start(self.log_start_offset);
        self.save_epochs()?;
        Ok(true)
    }

    /// Removes every batch at or after `offset` (follower divergence, tests).
    pub fn truncate_to(&mut self, offset: i64) -> io::Result<()> {
        self.truncations += 1;
        if offset >= self.log_end_offset() {
            // Nothing to remove, but an epoch may start at the log end with no batch in it:
            // this broker was leader of it for a moment and appended nothing. Kept, it is the
            // "last fetched epoch" of every fetch, which the new leader never had, so the
            // follower is told to truncate again and again (Kafka drops it here too).
            let before = self.epochs.entries().len();
            self.epochs.truncate_from_end(self.log_end_offset());
            if self.epochs.entries().len() != before {
                self.save_epochs()?;
            }
            return Ok(());
        }
        let offset = offset.max(self.log_start_offset);
        if self.deleted {
            return Err(deleted_error());
        }
        // Newest first, so a crash midway leaves a contiguous log (recovery handles the rest).
        let doomed: Vec<i64> = self
            .segments
            .range(offset + 1..)
            .map(|(b, _)| *b)
            .rev()
            .collect();
        for base in doomed {
            if let Some(seg) = self.segments.remove(&base) {
                seg.delete()?;
            }
        }
        super::checkpoint::sync_dir(&self.dir)?;
        if self.segments.is_empty() {
            self.segments.insert(
                offset,
                Segment::create(&self.dir, offset, self.config.index_interval_bytes)?,
            );
        } else {
            self.active_mut().truncate_to(offset)?;
            self.active_mut().flush(true)?;
        }
        self.recovery_point = self.recovery_point.min(self.log_end_offset());
        self.epochs.truncate_from_end(self.log_end_offset());
        self.save_epochs()?;
        self.rebuild_producer_state()
    }

    /// Kafka's truncateFullyAndStartAt: deletes every segment and restarts the log, empty, at
    /// `offset` (a follower whose log end fell below the leader's log start). The log start,
    /// recovery point and log end all become `offset`; the epoch cache and producer state are
    /// cleared (they are rebuilt from the batches fetched next).
    pub fn truncate_fully_and_start_at(&mut self, offset: i64) -> io::Result<()> {
        if self.deleted {
            return Err(deleted_error());
        }
        self.truncations += 1;
        // Newest first, so a crash midway leaves a contiguous log that simply starts over.
        let doomed: Vec<i64> = self.segments.keys().rev().copied().collect();
        for base in doomed {
            if let Some(seg) = self.segments.remove(&base) {
                seg.delete()?;
            }
        }
        for off in self.snapshot_offsets()? {
            let _ = fs::remove_file(self.dir.join(producer_state::snapshot_name(off)));
        }
        self.segments.insert(
            offset,
            Segment::create(&self.dir, offset, self.config.index_interval_bytes)?,
        );
        super::checkpoint::sync_dir(&self.dir)?;
        if self.dir.join(LOG_START_FILE).exists() {
            super::checkpoint::write_atomic(
                &self.dir.join(LOG_START_FILE),
                format!("{offset}\n").as_bytes(),
            )?;
        }
        self.log_start_offset = offset;
        self.recovery_point = offset;
        self.epochs.truncate_from_end(i64::MIN);
        self.save_epochs()?;
        self.producers = ProducerStateTable::default();
        Ok(())
    }

    /// What an fsync done outside the lock (group commit, a follower's flush) covers: the
    /// active segment's file, the log end, and the truncation count to hand back to
    /// [`Log::mark_flushed`]. (A roll fsyncs the segment it closes.)
    pub fn flush_target(&self) -> FlushTarget {
        FlushTarget {
            file: self.active().file_handle(),
            end: self.log_end_offset(),
            truncations: self.truncations,
        }
    }

    /// Records that the fsync of `target` finished: everything below its end is on disk,
    /// unless the log was truncated since it was taken (records appended again below that
    /// end came after the fsync). False then: nothing is marked, and the caller fsyncs again.
    pub fn mark_flushed(&mut self, target: &FlushTarget) -> bool {
        if target.truncations != self.truncations {
            return false;
        }
        self.recovery_point = self
            .recovery_point
            .max(target.end.min(self.log_end_offset()));
        true
    }

    /// fsyncs all data and indexes; the recovery point becomes the log end.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.deleted {
            return Ok(());
        }
        // The data is fsynced whatever happens to the epoch checkpoint; only the recovery
        // point waits for the checkpoint (see `save_unsaved_epochs`).
        let epochs = self.save_unsaved_epochs();
        for seg in self.segments.values_mut() {
            seg.flush(true)?;
        }
        epochs?;
        self.recovery_point = self.log_end_offset();
        Ok(())
    }

    /// Clean close: everything flushed, producer snapshot at the log end, epochs saved.
    pub fn close(&mut self) -> io::Result<()> {
        if self.deleted {
            return Ok(());
        }
        self.flush()?;
        self.take_producer_snapshot()?;
        self.save_epochs()
    }

    /// Writes the leader-epoch checkpoint, remembering whether the file is behind the cache.
    fn save_epochs(&mut self) -> io::Result<()> {
        let saved = self.epochs.save();
        self.epochs_unsaved = saved.is_err();
        saved
    }

    /// Writes the leader-epoch checkpoint if an earlier write failed. Called before the
    /// recovery point moves: recovery after a crash reassigns epochs only from the batches
    /// at and after it, so an epoch that started below it would be lost (or placed at the
    /// first batch recovery sees), and with it the divergence answers built on it.
    fn save_unsaved_epochs(&mut self) -> io::Result<()> {
        if self.epochs_unsaved {
            self.save_epochs()?;
        }
        Ok(())
    }

    pub fn fsync_policy(&self) -> FsyncPolicy {
        self.config.fsync
    }
}

/// A copy of `batch` with LogAppendTime set (attribute bit 3, max timestamp) and a new CRC.
fn with_log_append_time(batch: &[u8], now_ms: i64) -> Vec<u8> {
    let mut b = batch.to_vec();
    let attributes = i16::from_be_bytes([b[21], b[22]]) | 0x08;
    b[21..23].copy_from_slice(&attributes.to_be_bytes());
    b[35..43].copy_from_slice(&now_ms.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}
