//! Leader-epoch cache: which leader epoch started at which offset, kept in Kafka's
//! `leader-epoch-checkpoint` text format. Followers use it to find where their log diverges
//! from the leader's (OffsetForLeaderEpoch, Fetch v12 diverging epoch).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::StorageError;
use super::checkpoint::write_atomic;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

#[derive(Debug)]
pub struct EpochCache {
    path: PathBuf,
    entries: Vec<EpochEntry>,
}

impl EpochCache {
    pub fn load(path: PathBuf) -> Result<Self, StorageError> {
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e.into()),
        };
        let mut entries = Vec::new();
        let mut lines = text.lines().skip(2);
        for line in lines.by_ref() {
            let mut p = line.split_whitespace();
            match (
                p.next().and_then(|e| e.parse().ok()),
                p.next().and_then(|o| o.parse().ok()),
            ) {
                (Some(epoch), Some(start_offset)) => entries.push(EpochEntry {
                    epoch,
                    start_offset,
                }),
                _ => {
                    return Err(StorageError::Corrupt {
                        path,
                        reason: format!("bad line {line:?}"),
                    });
                }
            }
        }
        Ok(Self { path, entries })
    }

    /// An empty cache with no file behind it (for models and tests; `save` needs a path).
    pub fn in_memory() -> Self {
        Self {
            path: PathBuf::new(),
            entries: Vec::new(),
        }
    }

    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }
    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    /// Records that `epoch` starts at `start_offset` if it is newer than the latest epoch.
    /// Returns whether anything changed.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if epoch < 0 || self.latest_epoch().is_some_and(|l| epoch <= l) {
            return false;
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        true
    }

    /// Drops epochs that start at or after `end_offset` (the log was truncated there).
    pub fn truncate_from_end(&mut self, end_offset: i64) {
        self.entries.retain(|e| e.start_offset < end_offset);
    }

    /// Drops epochs wholly before `start_offset`, keeping the one that covers it.
    pub fn truncate_from_start(&mut self, start_offset: i64) {
        let covering = self
            .entries
            .partition_point(|e| e.start_offset <= start_offset);
        if covering > 1 {
            self.entries.drain(..covering - 1);
        }
        if let Some(first) = self.entries.first_mut() {
            first.start_offset = first.start_offset.max(start_offset);
        }
    }

    /// Kafka's OffsetForLeaderEpoch answer (LeaderEpochFileCache.endOffsetFor): for the latest
    /// epoch, the log end; otherwise the largest epoch <= `epoch` (or `epoch` itself if it is
    /// older than every known one) and the start of the next epoch. None (UNDEFINED) for an
    /// unknown epoch newer than the latest, or an empty cache.
    pub fn end_offset_for(&self, epoch: i32, log_end_offset: i64) -> Option<(i32, i64)> {
        if epoch < 0 {
            return None;
        }
        if self.latest_epoch() == Some(epoch) {
            return Some((epoch, log_end_offset));
        }
        let n = self.entries.partition_point(|e| e.epoch <= epoch);
        let higher = self.entries.get(n)?;
        match n.checked_sub(1).map(|i| self.entries[i]) {
            Some(floor) => Some((floor.epoch, higher.start_offset)),
            None => Some((epoch, higher.start_offset)),
        }
    }

    /// The epoch of the batch that contains `offset`, if known.
    pub fn epoch_for_offset(&self, offset: i64) -> Option<i32> {
        let n = self.entries.partition_point(|e| e.start_offset <= offset);
        n.checked_sub(1).map(|i| self.entries[i].epoch)
    }

    pub fn save(&self) -> io::Result<()> {
        let mut s = format!("0\n{}\n", self.entries.len());
        for e in &self.entries {
            s.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
        }
        write_atomic(&self.path, s.as_bytes())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_offsets_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = EpochCache::load(dir.path().join("leader-epoch-checkpoint")).unwrap();
        assert!(c.assign(0, 0));
        assert!(c.assign(2, 10));
        assert!(!c.assign(1, 12), "older epochs are ignored");
        assert!(c.assign(5, 30));
        assert_eq!(c.end_offset_for(0, 50), Some((0, 10)));
        assert_eq!(c.end_offset_for(1, 50), Some((0, 10)));
        assert_eq!(c.end_offset_for(3, 50), Some((2, 30)));
        assert_eq!(c.end_offset_for(5, 50), Some((5, 50)));
        assert_eq!(
            c.end_offset_for(9, 50),
            None,
            "newer than the latest: undefined"
        );
        assert_eq!(c.end_offset_for(-1, 50), None);
        assert_eq!(c.epoch_for_offset(29), Some(2));
        c.save().unwrap();
        let reloaded = EpochCache::load(c.path().to_path_buf()).unwrap();
        assert_eq!(reloaded.entries(), c.entries());
        c.truncate_from_end(30);
        assert_eq!(c.latest_epoch(), Some(2));
        c.truncate_from_start(15);
        assert_eq!(
            c.entries(),
            &[EpochEntry {
                epoch: 2,
                start_offset: 15
            }]
        );
        c.assign(4, 20);
        assert_eq!(
            c.end_offset_for(1, 50),
            Some((1, 15)),
            "older than every epoch"
        );
    }
}
