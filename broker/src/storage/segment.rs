//! One log segment: `<base offset>.log` holding record batches back to back, with its sparse
//! `.index` and `.timeindex`.
//!
//! Durability order: a batch is written to the page cache with `pwrite` (first the 16 patched
//! header bytes, then the client's bytes verbatim) and only then counted in `size`, so readers
//! never see a partial batch. fsync happens per the topic's policy (see `Log`). After a crash,
//! recovery revalidates every batch from the recovery point and truncates at the first one that
//! is short, malformed, out of order or fails its CRC-32C.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::protocol::batch::{self, BatchHeader, HEADER_LEN};
use crate::protocol::records;

use super::index::{Index, OffsetEntry, TimeEntry};

/// Scans read the log in chunks of this size.
const SCAN_CHUNK: usize = 1 << 20;

pub fn file_name(base_offset: i64, suffix: &str) -> String {
    format!("{base_offset:020}{suffix}")
}

/// Why a scan stopped before the end of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub position: u64,
    pub reason: String,
}

pub struct Segment {
    base_offset: i64,
    log_path: PathBuf,
    file: Arc<File>,
    /// Bytes of whole, valid batches.
    size: u64,
    next_offset: i64,
    index: Index<OffsetEntry>,
    time_index: Index<TimeEntry>,
    index_interval: u64,
    bytes_since_index: u64,
    max_timestamp: i64,
    /// Max timestamp of the first batch: segment.ms rolls are measured from it, as in Kafka.
    first_batch_timestamp: Option<i64>,
}

impl Segment {
    /// Creates an empty segment, replacing any files with its name.
    pub fn create(dir: &Path, base_offset: i64, index_interval: u64) -> io::Result<Self> {
        let log_path = dir.join(file_name(base_offset, ".log"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&log_path)?;
        let mut index = Index::empty(dir.join(file_name(base_offset, ".index")));
        let mut time_index = Index::empty(dir.join(file_name(base_offset, ".timeindex")));
        // Create the index files now so the directory always has the full set.
        index.flush(false)?;
        time_index.flush(false)?;
        Ok(Self {
            base_offset,
            log_path,
            file: Arc::new(file),
            size: 0,
            next_offset: base_offset,
            index,
            time_index,
            index_interval,
            bytes_since_index: 0,
            max_timestamp: -1,
            first_batch_timestamp: None,
        })
    }

    /// Opens an existing segment. With `recover`, every batch is validated and the indexes are
    /// rebuilt; otherwise the indexes are trusted when they load and only the tail after the last
    /// index entry is scanned. Returns the segment and, if the scan hit bad data, where and why;
    /// the caller truncates.
    pub fn open(
        dir: &Path,
        base_offset: i64,
        index_interval: u64,
        recover: bool,
        on_batch: &mut dyn FnMut(&BatchHeader),
    ) -> io::Result<(Self, Option<Invalid>)> {
        let log_path = dir.join(file_name(base_offset, ".log"));
        let file = OpenOptions::new().read(true).write(true).open(&log_path)?;
        let file_len = file.metadata()?.len();
        let index_path = dir.join(file_name(base_offset, ".index"));
        let time_path = dir.join(file_name(base_offset, ".timeindex"));
        let loaded = if recover {
            None
        } else {
            match (
                Index::load(index_path.clone())?,
                Index::load(time_path.clone())?,
            ) {
                (Some(i), Some(t))
                    if i.last()
                        .is_none_or(|e: &OffsetEntry| u64::from(e.position) < file_len) =>
                {
                    Some((i, t))
                }
                _ => None,
            }
        };
        let rebuild = loaded.is_none();
        let (index, time_index) =
            loaded.unwrap_or_else(|| (Index::empty(index_path), Index::empty(time_path)));
        let mut seg = Self {
            base_offset,
            log_path,
            file: Arc::new(file),
            size: 0,
            next_offset: base_offset,
            index,
            time_index,
            index_interval,
            bytes_since_index: 0,
            max_timestamp: -1,
            first_batch_timestamp: None,
        };
        let start = if rebuild {
            0
        } else {
            seg.max_timestamp = seg.time_index.last().map_or(-1, |e| e.timestamp);
            seg.index.last().map_or(0, |e| u64::from(e.position))
        };
        if start > 0 {
            // The first batch's timestamp drives age-based rolling.
            if let Some(h) = seg.header_at(0)? {
                seg.first_batch_timestamp = Some(h.max_timestamp);
            }
        }
        let invalid = seg.scan_from(start, file_len, rebuild, recover, on_batch)?;
        Ok((seg, invalid))
    }

    /// Walks batches from `start` to `file_len`, updating size/next offset/timestamps and, with
    /// `reindex`, the indexes. `verify` checks CRCs.
    fn scan_from(
        &mut self,
        start: u64,
        file_len: u64,
        reindex: bool,
        verify: bool,
        on_batch: &mut dyn FnMut(&BatchHeader),
    ) -> io::Result<Option<Invalid>> {
        let mut pos = start;
        let mut buf = Vec::new();
        let mut expected_min_offset = if start == 0 {
            self.base_offset
        } else {
            i64::MIN
        };
        while pos < file_len {
            let want = (file_len - pos).min(SCAN_CHUNK as u64) as usize;
            buf.resize(want.max(HEADER_LEN.min((file_len - pos) as usize)), 0);
            self.file.read_exact_at(&mut buf, pos)?;
            let mut local = 0usize;
            loop {
                let rest = &buf[local..];
                if rest.is_empty() {
                    break;
                }
                let header = match BatchHeader::parse(rest) {
                    Ok(h) => h,
                    Err(batch::BatchError::TooShort(_))
                        if (pos + local as u64 + HEADER_LEN as u64) <= file_len =>
                    {
                        break;
                    }
                    Err(e) => {
                        return Ok(Some(Invalid {
                            position: pos + local as u64,
                            reason: e.to_string(),
                        }));
                    }
                };
                let at = pos + local as u64;
                if at + header.total_len() as u64 > file_len {
                    return Ok(Some(Invalid {
                        position: at,
                        reason: format!(
                            "torn batch: {} bytes declared, {} present",
                            header.total_len(),
                            file_len - at
                        ),
                    }));
                }
                if rest.len() < header.total_len() {
                    if local == 0 {
                        // A batch larger than the chunk: read it whole.
                        buf.resize(header.total_len(), 0);
                        self.file.read_exact_at(&mut buf, pos)?;
                        continue;
                    }
                    break;
                }
                if header.base_offset < expected_min_offset || header.last_offset_delta < 0 {
                    return Ok(Some(Invalid {
                        position: at,
                        reason: format!(
                            "offset {} out of order (expected at least {})",
                            header.base_offset, expected_min_offset
                        ),
                    }));
                }
                if verify && let Err(e) = batch::check_crc(&header, rest) {
                    return Ok(Some(Invalid {
                        position: at,
                        reason: e.to_string(),
                    }));
                }
                if header.last_offset() - self.base_offset > i64::from(u32::MAX) {
                    return Ok(Some(Invalid {
                        position: at,
                        reason: "offset too far from segment base".into(),
                    }));
                }
                expected_min_offset = header.next_offset();
                self.note_batch(&header, at, reindex);
                on_batch(&header);
                local += header.total_len();
            }
            if local == 0 {
                break;
            }
            pos += local as u64;
        }
        Ok(None)
    }

    /// Bookkeeping after a batch at `position` became part of the segment.
    fn note_batch(&mut self, h: &BatchHeader, position: u64, reindex: bool) {
        if self.first_batch_timestamp.is_none() {
            self.first_batch_timestamp = Some(h.max_timestamp);
        }
        let relative = (h.base_offset - self.base_offset) as u32;
        if reindex
            && (self.bytes_since_index >= self.index_interval || self.index.entries().is_empty())
        {
            self.index.push(OffsetEntry {
                relative_offset: relative,
                position: position as u32,
            });
            if h.max_timestamp > self.time_index.last().map_or(-1, |e| e.timestamp) {
                self.time_index.push(TimeEntry {
                    timestamp: h.max_timestamp,
                    relative_offset: relative,
                });
            }
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += h.total_len() as u64;
        self.max_timestamp = self.max_timestamp.max(h.max_timestamp);
        self.size = position + h.total_len() as u64;
        self.next_offset = h.next_offset();
    }

    /// Appends one batch whose header has already been patched in `prefix` (first 16 bytes).
    /// On a write error the file is cut back so nothing partial remains.
    pub fn append(
        &mut self,
        prefix: &[u8; 16],
        batch: &[u8],
        header: &BatchHeader,
    ) -> io::Result<()> {
        let pos = self.size;
        let result = self
            .file
            .write_all_at(prefix, pos)
            .and_then(|()| self.file.write_all_at(&batch[16..], pos + 16));
        if let Err(e) = result {
            let _ = self.file.set_len(pos);
            return Err(e);
        }
        self.note_batch(header, pos, true);
        Ok(())
    }

    /// Reads the header of the batch at `position`, if a whole header is there.
    fn header_at(&self, position: u64) -> io::Result<Option<BatchHeader>> {
        if position + HEADER_LEN as u64 > self.size {
            return Ok(None);
        }
        let mut buf = [0u8; HEADER_LEN];
        self.file.read_exact_at(&mut buf, position)?;
        Ok(BatchHeader::parse(&buf).ok())
    }

    /// Position and header of the first batch whose last offset is >= `offset`.
    pub fn find(&self, offset: i64) -> io::Result<Option<(u64, BatchHeader)>> {
        let mut pos = self
            .index
            .floor(offset - self.base_offset)
            .map_or(0, |e| u64::from(e.position));
        while let Some(h) = self.header_at(pos)? {
            if h.last_offset() >= offset {
                return Ok(Some((pos, h)));
            }
            pos += h.total_len() as u64;
        }
        Ok(None)
    }

    /// Reads whole batches starting at `position`: at most `max_bytes`, but always the first
    /// batch whole (so a consumer can make progress past a large batch); only batches that end
    /// before `max_offset` (exclusive).
    pub fn read(&self, position: u64, max_bytes: usize, max_offset: i64) -> io::Result<Vec<u8>> {
        let available = self.size.saturating_sub(position) as usize;
        let Some(first) = self.header_at(position)? else {
            return Ok(Vec::new());
        };
        if first.last_offset() >= max_offset {
            return Ok(Vec::new());
        }
        let want = max_bytes.max(first.total_len()).min(available);
        let mut buf = vec![0u8; want];
        self.file.read_exact_at(&mut buf, position)?;
        let mut keep = 0;
        for (h, range) in batch::Batches::new(&buf) {
            if h.last_offset() >= max_offset {
                break;
            }
            keep = range.end;
        }
        buf.truncate(keep);
        Ok(buf)
    }

    /// The first record whose timestamp is >= `timestamp`: offset, timestamp, leader epoch.
    pub fn find_by_timestamp(&self, timestamp: i64) -> io::Result<Option<(i64, i64, i32)>> {
        if self.max_timestamp < timestamp {
            return Ok(None);
        }
        // Start from the last index point known to be before the target time.
        let start_rel = self
            .time_index
            .entries()
            .iter()
            .take_while(|e| e.timestamp < timestamp)
            .last()
            .map_or(0, |e| e.relative_offset);
        let mut pos = self
            .index
            .floor(i64::from(start_rel))
            .map_or(0, |e| u64::from(e.position));
        while let Some(h) = self.header_at(pos)? {
            if h.max_timestamp >= timestamp {
                // Kafka answers with the first record at or after the time, inside the batch.
                let mut whole = vec![0u8; h.total_len()];
                self.file.read_exact_at(&mut whole, pos)?;
                let (offset, ts) = records::first_record_at_or_after(
                    &whole,
                    &h,
                    timestamp,
                    records::MAX_DECOMPRESSED,
                );
                return Ok(Some((offset, ts, h.partition_leader_epoch)));
            }
            pos += h.total_len() as u64;
        }
        Ok(None)
    }

    /// Removes every batch at or after `offset`'s batch. Returns the new next offset.
    pub fn truncate_to(&mut self, offset: i64) -> io::Result<i64> {
        let Some((pos, h)) = self.find(offset)? else {
            return Ok(self.next_offset);
        };
        let cut = if h.base_offset >= offset {
            pos
        } else {
            pos + h.total_len() as u64
        };
        self.file.set_len(cut)?;
        let keep_rel = offset - self.base_offset;
        self.index.truncate_where(|e| {
            i64::from(e.relative_offset) < keep_rel && u64::from(e.position) < cut
        });
        self.time_index
            .truncate_where(|e| i64::from(e.relative_offset) < keep_rel);
        self.size = 0;
        self.next_offset = self.base_offset;
        self.max_timestamp = -1;
        self.first_batch_timestamp = None;
        self.bytes_since_index = 0;
        // Rescan to restore counters; the remaining batches were valid before.
        let start = self.index.last().map_or(0, |e| u64::from(e.position));
        if start > 0 {
            self.size = start;
            self.first_batch_timestamp = self.header_at(0)?.map(|h| h.max_timestamp);
            self.max_timestamp = self.time_index.last().map_or(-1, |e| e.timestamp);
        }
        self.scan_from(start, cut, false, false, &mut |_| {})?;
        if self.size != cut {
            self.file.set_len(self.size)?;
        }
        Ok(self.next_offset)
    }

    /// Cuts the file at `position` (recovery found bad data there).
    pub fn cut_at(&mut self, position: u64) -> io::Result<()> {
        self.file.set_len(position)
    }

    /// Writes index entries and, with `sync`, fsyncs log and indexes.
    pub fn flush(&mut self, sync: bool) -> io::Result<()> {
        if sync {
            self.file.sync_data()?;
        }
        self.index.flush(sync)?;
        self.time_index.flush(sync)
    }

    /// A handle for fsync outside the log's lock (group commit).
    pub fn file_handle(&self) -> Arc<File> {
        Arc::clone(&self.file)
    }

    pub fn delete(self) -> io::Result<()> {
        for p in [
            self.log_path.clone(),
            self.index.path().to_path_buf(),
            self.time_index.path().to_path_buf(),
        ] {
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }
    pub fn size(&self) -> u64 {
        self.size
    }
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }
    pub fn first_batch_timestamp(&self) -> Option<i64> {
        self.first_batch_timestamp
    }
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }
    /// Header scan over all batches from `offset` on, without CRC checks (used to replay
    /// producer state from a snapshot).
    pub fn for_each_header_from(
        &self,
        offset: i64,
        f: &mut dyn FnMut(&BatchHeader),
    ) -> io::Result<()> {
        let Some((mut pos, _)) = self.find(offset)? else {
            return Ok(());
        };
        while let Some(h) = self.header_at(pos)? {
            f(&h);
            pos += h.total_len() as u64;
        }
        Ok(())
    }
}
