//! Sparse offset index (`.index`, 8-byte entries: relative offset, position) and time index
//! (`.timeindex`, 12-byte entries: max timestamp so far, relative offset), as in Kafka.
//!
//! Entries live in memory for lookups and are appended to the file lazily: the file is flushed
//! on roll, on flush and on clean close. After an unclean stop, recovery rebuilds the index of
//! every segment from the recovery point on, so a lagging index file is never trusted.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

pub trait Entry: Copy {
    const SIZE: usize;
    fn encode(&self, out: &mut Vec<u8>);
    fn decode(b: &[u8]) -> Self;
    /// The key entries are sorted by.
    fn key(&self) -> i64;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

impl Entry for OffsetEntry {
    const SIZE: usize = 8;
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend(self.relative_offset.to_be_bytes());
        out.extend(self.position.to_be_bytes());
    }
    fn decode(b: &[u8]) -> Self {
        Self {
            relative_offset: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            position: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
    fn key(&self) -> i64 {
        i64::from(self.relative_offset)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

impl Entry for TimeEntry {
    const SIZE: usize = 12;
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend(self.timestamp.to_be_bytes());
        out.extend(self.relative_offset.to_be_bytes());
    }
    fn decode(b: &[u8]) -> Self {
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&b[..8]);
        Self {
            timestamp: i64::from_be_bytes(ts),
            relative_offset: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        }
    }
    fn key(&self) -> i64 {
        self.timestamp
    }
}

/// An index file and its entries.
pub struct Index<E: Entry> {
    path: PathBuf,
    entries: Vec<E>,
    /// Entries [..written] are in the file.
    written: usize,
    /// The file must be rewritten from scratch on the next flush (new or rebuilt index).
    rewrite: bool,
}

impl<E: Entry> Index<E> {
    /// A new, empty index; any existing file is replaced on the next flush.
    pub fn empty(path: PathBuf) -> Self {
        Self {
            path,
            entries: Vec::new(),
            written: 0,
            rewrite: true,
        }
    }

    /// Loads an index file. Returns None when the file is missing or malformed (size not a
    /// multiple of the entry size, or keys out of order): the caller rebuilds it.
    pub fn load(path: PathBuf) -> io::Result<Option<Self>> {
        let mut bytes = Vec::new();
        match File::open(&path) {
            Ok(mut f) => f.read_to_end(&mut bytes)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if bytes.len() % E::SIZE != 0 {
            return Ok(None);
        }
        let entries: Vec<E> = bytes.chunks_exact(E::SIZE).map(E::decode).collect();
        if entries.windows(2).any(|w| w[0].key() > w[1].key()) {
            return Ok(None);
        }
        let written = entries.len();
        Ok(Some(Self {
            path,
            entries,
            written,
            rewrite: false,
        }))
    }

    pub fn entries(&self) -> &[E] {
        &self.entries
    }
    pub fn last(&self) -> Option<&E> {
        self.entries.last()
    }
    pub fn push(&mut self, e: E) {
        self.entries.push(e);
    }

    /// Keeps only entries for which `keep` holds (a prefix, since entries are ordered).
    pub fn truncate_where(&mut self, keep: impl Fn(&E) -> bool) {
        let n = self.entries.partition_point(keep);
        self.entries.truncate(n);
        if self.written > n {
            self.rewrite = true;
        }
    }

    /// The last entry whose key is <= `key`.
    pub fn floor(&self, key: i64) -> Option<E> {
        let n = self.entries.partition_point(|e| e.key() <= key);
        n.checked_sub(1).map(|i| self.entries[i])
    }

    /// The first entry whose key is >= `key`.
    pub fn ceiling(&self, key: i64) -> Option<E> {
        let n = self.entries.partition_point(|e| e.key() < key);
        self.entries.get(n).copied()
    }

    /// Writes unwritten entries; `sync` also fsyncs the file.
    pub fn flush(&mut self, sync: bool) -> io::Result<()> {
        if self.written == self.entries.len() && !sync && !self.rewrite {
            return Ok(());
        }
        let rewrite = self.rewrite;
        let mut f = if rewrite {
            File::create(&self.path)?
        } else {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?
        };
        let from = if rewrite { 0 } else { self.written };
        let mut buf = Vec::with_capacity((self.entries.len() - from) * E::SIZE);
        for e in &self.entries[from..] {
            e.encode(&mut buf);
        }
        f.write_all(&buf)?;
        if sync {
            f.sync_all()?;
        }
        self.written = self.entries.len();
        self.rewrite = false;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_ceiling_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.index");
        let mut idx = Index::<OffsetEntry>::empty(path.clone());
        for i in 0..10u32 {
            idx.push(OffsetEntry {
                relative_offset: i * 10,
                position: i * 100,
            });
        }
        assert_eq!(idx.floor(25).unwrap().relative_offset, 20);
        assert_eq!(idx.floor(-1), None);
        assert_eq!(idx.ceiling(25).unwrap().relative_offset, 30);
        idx.flush(true).unwrap();
        let loaded = Index::<OffsetEntry>::load(path.clone()).unwrap().unwrap();
        assert_eq!(loaded.entries(), idx.entries());
        idx.truncate_where(|e| e.relative_offset < 50);
        idx.flush(false).unwrap();
        assert_eq!(
            Index::<OffsetEntry>::load(path.clone())
                .unwrap()
                .unwrap()
                .entries()
                .len(),
            5
        );
        std::fs::write(&path, [1u8; 7]).unwrap();
        assert!(Index::<OffsetEntry>::load(path).unwrap().is_none());
    }
}
