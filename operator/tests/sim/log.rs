//! An in-memory model of one replica's log: batches (base offset, leader epoch, records),
//! the broker's own epoch cache, and the prefix that is on disk. The divergence and
//! truncation rules are the broker's (`broker::partition::{diverging_in,
//! truncation_offset_in}`), not rewritten here.

use broker::partition::{diverging_in, truncation_offset_in};
use broker::storage::epoch_cache::EpochCache;
use rand::Rng;

/// One record batch. Record values are unique across a schedule, so an offset's value says
/// which write it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub base: i64,
    pub epoch: i32,
    pub values: Vec<u64>,
}

impl Batch {
    pub fn end(&self) -> i64 {
        self.base + self.values.len() as i64
    }
}

#[derive(Debug)]
pub struct LogModel {
    batches: Vec<Batch>,
    epochs: EpochCache,
    /// Everything below this offset is on disk and survives a power loss.
    flushed: i64,
}

impl Default for LogModel {
    fn default() -> Self {
        Self {
            batches: Vec::new(),
            epochs: EpochCache::in_memory(),
            flushed: 0,
        }
    }
}

impl LogModel {
    pub fn end(&self) -> i64 {
        self.batches.last().map_or(0, Batch::end)
    }
    pub fn latest_epoch(&self) -> i32 {
        self.epochs.latest_epoch().unwrap_or(-1)
    }

    /// The value at `offset`, if the log holds it.
    pub fn value_at(&self, offset: i64) -> Option<u64> {
        let i = self.batches.partition_point(|b| b.end() <= offset);
        let b = self.batches.get(i)?;
        (b.base <= offset).then(|| b.values[(offset - b.base) as usize])
    }

    /// (offset, epoch, value) of every record below `end`.
    pub fn records_below(&self, end: i64) -> impl Iterator<Item = (i64, i32, u64)> + '_ {
        self.batches.iter().flat_map(move |b| {
            b.values
                .iter()
                .enumerate()
                .map(move |(i, v)| (b.base + i as i64, b.epoch, *v))
                .filter(move |(o, _, _)| *o < end)
        })
    }

    /// A new leader epoch starts at the log end (the broker's `assign_leader_epoch`).
    pub fn assign_leader_epoch(&mut self, epoch: i32) {
        let end = self.end();
        self.epochs.assign(epoch, end);
    }

    /// Appends a leader's batch; returns its base offset.
    pub fn append_as_leader(&mut self, epoch: i32, values: Vec<u64>) -> i64 {
        let base = self.end();
        self.epochs.assign(epoch, base);
        self.batches.push(Batch {
            base,
            epoch,
            values,
        });
        base
    }

    /// Appends batches fetched from the leader, verbatim; they must continue this log.
    pub fn append_replicated(&mut self, batches: &[Batch]) -> Result<(), String> {
        for b in batches {
            if b.base != self.end() {
                return Err(format!(
                    "fetched batch at {} does not continue log end {}",
                    b.base,
                    self.end()
                ));
            }
            self.epochs.assign(b.epoch, b.base);
            self.batches.push(b.clone());
        }
        Ok(())
    }

    /// Whole batches from `offset` up to `end` (a follower's read: up to the log end).
    pub fn read(&self, offset: i64, max_batches: usize) -> Vec<Batch> {
        self.batches
            .iter()
            .filter(|b| b.end() > offset)
            .take(max_batches)
            .cloned()
            .collect()
    }

    /// Drops every batch that ends past `offset` (a truncation removes whole batches).
    pub fn truncate_to(&mut self, offset: i64) {
        self.batches.retain(|b| b.end() <= offset);
        let end = self.end();
        self.epochs.truncate_from_end(end);
        self.flushed = self.flushed.min(end);
    }

    /// Everything written so far reaches the disk (a group-commit fsync, a segment roll).
    pub fn flush_to(&mut self, offset: i64) {
        self.flushed = self.flushed.max(offset.min(self.end()));
    }

    /// A power loss: the page cache is gone, so some suffix of the unflushed batches is lost
    /// (how much reached the disk anyway is up to the kernel). Returns the values lost.
    pub fn lose_unflushed_tail(&mut self, rng: &mut impl Rng) -> Vec<u64> {
        let unflushed: Vec<i64> = self
            .batches
            .iter()
            .filter(|b| b.end() > self.flushed)
            .map(|b| b.base)
            .collect();
        // Any suffix of them, from none to all.
        let keep = rng.random_range(0..=unflushed.len());
        let Some(cut) = unflushed.get(keep).copied() else {
            return Vec::new();
        };
        let lost = self
            .records_below(i64::MAX)
            .filter(|(o, _, _)| *o >= cut)
            .map(|(_, _, v)| v);
        let lost = lost.collect();
        self.truncate_to(cut);
        lost
    }

    /// The leader's answer to a fetch naming `last_fetched_epoch` at `fetch_offset`.
    pub fn diverging(&self, last_fetched_epoch: i32, fetch_offset: i64) -> Option<(i32, i64)> {
        diverging_in(&self.epochs, self.end(), last_fetched_epoch, fetch_offset)
    }

    /// Where a follower truncates when the leader says `epoch` ends at `end_offset`.
    pub fn truncation_offset(&self, epoch: i32, end_offset: i64) -> i64 {
        truncation_offset_in(&self.epochs, self.end(), epoch, end_offset)
    }
}
