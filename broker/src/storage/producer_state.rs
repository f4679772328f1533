//! Idempotent-producer state per partition: for every producer id, its epoch and the metadata
//! of its last five batches, so a retried batch is acknowledged with its original offsets
//! instead of being stored twice. Rules follow Kafka's ProducerStateManager / ProducerAppendInfo.
//!
//! Snapshots (`<20-digit offset>.snapshot`) hold the table as of an offset; on open the log
//! loads the newest snapshot at or below its end and replays batch headers after it.

use std::collections::{HashMap, VecDeque};
use std::path::Path;

use crate::protocol::batch::{BatchHeader, NO_PRODUCER_ID};

/// Kafka keeps the metadata of this many batches per producer for de-duplication.
pub const RETAINED_BATCHES: usize = 5;
const NO_EPOCH: i16 = -1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    pub timestamp: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    pub batches: VecDeque<BatchMeta>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// New data: append it.
    Append,
    /// A retry of a batch already in the log: answer with these offsets, store nothing.
    Duplicate(BatchMeta),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProducerError {
    #[error("producer {producer_id} epoch {got} is older than the current epoch {current}")]
    InvalidEpoch {
        producer_id: i64,
        current: i16,
        got: i16,
    },
    #[error("producer {producer_id}: out of order sequence {got}, expected {expected}")]
    OutOfOrder {
        producer_id: i64,
        expected: i32,
        got: i32,
    },
}

#[derive(Debug, Clone, Default)]
pub struct ProducerStateTable {
    producers: HashMap<i64, ProducerEntry>,
    /// When this broker last appended a batch of each producer (wall-clock ms): what
    /// expiry judges, so a client's own timestamps cannot keep an id alive. Not in snapshots:
    /// a rebuilt table counts every producer as seen when it was rebuilt (`seen_at`).
    last_seen: HashMap<i64, i64>,
}

/// Equal when they hold the same producers (when each was last seen is bookkeeping).
impl PartialEq for ProducerStateTable {
    fn eq(&self, other: &Self) -> bool {
        self.producers == other.producers
    }
}
impl Eq for ProducerStateTable {}

fn in_sequence(last_seq: i32, next_first_seq: i32) -> bool {
    next_first_seq
        == if last_seq == i32::MAX {
            0
        } else {
            last_seq + 1
        }
}

impl ProducerStateTable {
    pub fn len(&self) -> usize {
        self.producers.len()
    }
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }
    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }
    /// Every producer this table keeps, by id.
    pub fn iter(&self) -> impl Iterator<Item = (i64, &ProducerEntry)> {
        self.producers.iter().map(|(id, e)| (*id, e))
    }

    /// Decides what to do with a client batch from an idempotent producer.
    pub fn check(&self, h: &BatchHeader) -> Result<SequenceCheck, ProducerError> {
        if h.producer_id == NO_PRODUCER_ID {
            return Ok(SequenceCheck::Append);
        }
        let (first, last) = (h.base_sequence, h.last_sequence());
        let Some(entry) = self.producers.get(&h.producer_id) else {
            // Unknown producer (new, or its state aged out): accept any sequence, as Kafka does.
            return Ok(SequenceCheck::Append);
        };
        if h.producer_epoch < entry.epoch {
            return Err(ProducerError::InvalidEpoch {
                producer_id: h.producer_id,
                current: entry.epoch,
                got: h.producer_epoch,
            });
        }
        if h.producer_epoch == entry.epoch
            && let Some(dup) = entry
                .batches
                .iter()
                .find(|b| b.first_seq == first && b.last_seq == last)
        {
            return Ok(SequenceCheck::Duplicate(*dup));
        }
        if h.producer_epoch > entry.epoch {
            // A bumped epoch restarts sequences at 0.
            if first != 0 && entry.epoch != NO_EPOCH {
                return Err(ProducerError::OutOfOrder {
                    producer_id: h.producer_id,
                    expected: 0,
                    got: first,
                });
            }
            return Ok(SequenceCheck::Append);
        }
        match entry.batches.back() {
            Some(prev) if !in_sequence(prev.last_seq, first) => Err(ProducerError::OutOfOrder {
                producer_id: h.producer_id,
                expected: if prev.last_seq == i32::MAX {
                    0
                } else {
                    prev.last_seq + 1
                },
                got: first,
            }),
            _ => Ok(SequenceCheck::Append),
        }
    }

    /// Records a batch that is now in the log (leader append, follower append or recovery),
    /// appended at `seen_ms`.
    pub fn record(&mut self, h: &BatchHeader, seen_ms: i64) {
        if h.producer_id == NO_PRODUCER_ID || h.is_control() {
            return;
        }
        self.last_seen.insert(h.producer_id, seen_ms);
        let entry = self.producers.entry(h.producer_id).or_default();
        if h.producer_epoch != entry.epoch {
            entry.epoch = h.producer_epoch;
            entry.batches.clear();
        }
        entry.batches.push_back(BatchMeta {
            first_seq: h.base_sequence,
            last_seq: h.last_sequence(),
            first_offset: h.base_offset,
            last_offset: h.last_offset(),
            timestamp: h.max_timestamp,
        });
        while entry.batches.len() > RETAINED_BATCHES {
            entry.batches.pop_front();
        }
    }

    /// Kafka's producer.id.expiration.ms: forgets every producer with no batch appended for
    /// `expiration_ms`; returns how many. A producer that comes back later is a new one (any
    /// sequence is accepted, as for an unknown id).
    pub fn remove_expired(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        let last_seen = &self.last_seen;
        self.producers.retain(|id, _| {
            last_seen
                .get(id)
                .is_some_and(|t| now_ms.saturating_sub(*t) < expiration_ms)
        });
        let producers = &self.producers;
        self.last_seen.retain(|id, _| producers.contains_key(id));
        before - self.producers.len()
    }

    /// Counts every producer as seen at `now_ms`: after the table is rebuilt (recovery, or a
    /// truncation on a leader change) the append times are gone, and the batches' own
    /// timestamps are the clients' (an old one would expire a live producer at once and let a
    /// retry in twice; a future one would keep it forever). Keeping it one more period is safe.
    pub fn seen_at(&mut self, now_ms: i64) {
        for t in self.last_seen.values_mut() {
            *t = now_ms;
        }
    }

    /// Serialises the table: "SPS1", entry count, entries, then a CRC-32C of all before it.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = b"SPS1".to_vec();
        out.extend((self.producers.len() as u32).to_be_bytes());
        let mut ids: Vec<_> = self.producers.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let e = &self.producers[&id];
            out.extend(id.to_be_bytes());
            out.extend(e.epoch.to_be_bytes());
            out.push(e.batches.len() as u8);
            for b in &e.batches {
                out.extend(b.first_seq.to_be_bytes());
                out.extend(b.last_seq.to_be_bytes());
                out.extend(b.first_offset.to_be_bytes());
                out.extend(b.last_offset.to_be_bytes());
                out.extend(b.timestamp.to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&out);
        out.extend(crc.to_be_bytes());
        out
    }

    /// Parses a snapshot; None when it is truncated or its CRC does not match.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
        if crc32c::crc32c(body).to_be_bytes() != crc || !body.starts_with(b"SPS1") {
            return None;
        }
        let mut r = Reader(&body[4..]);
        let count = r.u32()?;
        let mut producers = HashMap::new();
        for _ in 0..count {
            let id = r.i64()?;
            let epoch = r.i16()?;
            let n = r.u8()?;
            let mut batches = VecDeque::new();
            for _ in 0..n {
                batches.push_back(BatchMeta {
                    first_seq: r.i32()?,
                    last_seq: r.i32()?,
                    first_offset: r.i64()?,
                    last_offset: r.i64()?,
                    timestamp: r.i64()?,
                });
            }
            producers.insert(id, ProducerEntry { epoch, batches });
        }
        let last_seen = producers
            .iter()
            .map(|(id, e)| (*id, e.batches.back().map_or(i64::MIN, |b| b.timestamp)))
            .collect();
        r.0.is_empty().then_some(Self {
            producers,
            last_seen,
        })
    }
}

struct Reader<'a>(&'a [u8]);
impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|b| b[0])
    }
    fn i16(&mut self) -> Option<i16> {
        self.take().map(i16::from_be_bytes)
    }
    fn i32(&mut self) -> Option<i32> {
        self.take().map(i32::from_be_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_be_bytes)
    }
    fn i64(&mut self) -> Option<i64> {
        self.take().map(i64::from_be_bytes)
    }
}

/// Snapshot file name for the table as of `offset`.
pub fn snapshot_name(offset: i64) -> String {
    format!("{offset:020}.snapshot")
}

/// Parses a snapshot file name back to its offset.
pub fn snapshot_offset(path: &Path) -> Option<i64> {
    let name = path.file_name()?.to_str()?;
    name.strip_suffix(".snapshot")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::test_support::batch;

    fn header(pid: i64, epoch: i16, seq: i32, count: i32, base_offset: i64) -> BatchHeader {
        let mut h = BatchHeader::parse(&batch(count, 0, (pid, epoch, seq), 1)).unwrap();
        h.base_offset = base_offset;
        h
    }

    #[test]
    fn in_order_duplicate_gap_and_fencing() {
        let mut t = ProducerStateTable::default();
        let b0 = header(1, 0, 0, 3, 0);
        assert_eq!(t.check(&b0), Ok(SequenceCheck::Append));
        t.record(&b0, 0);
        // The same batch again is a duplicate carrying the original offsets.
        let retry = header(1, 0, 0, 3, 99);
        match t.check(&retry) {
            Ok(SequenceCheck::Duplicate(m)) => assert_eq!((m.first_offset, m.last_offset), (0, 2)),
            other => panic!("{other:?}"),
        }
        let next = header(1, 0, 3, 2, 3);
        assert_eq!(t.check(&next), Ok(SequenceCheck::Append));
        t.record(&next, 0);
        let gap = header(1, 0, 9, 1, 5);
        assert!(matches!(
            t.check(&gap),
            Err(ProducerError::OutOfOrder {
                expected: 5,
                got: 9,
                ..
            })
        ));
        t.producers.get_mut(&1).unwrap().epoch = 2;
        let stale = header(1, 1, 5, 1, 5);
        assert!(matches!(
            t.check(&stale),
            Err(ProducerError::InvalidEpoch { .. })
        ));
        let bumped_bad = header(1, 3, 7, 1, 5);
        assert!(matches!(
            t.check(&bumped_bad),
            Err(ProducerError::OutOfOrder { .. })
        ));
        let bumped = header(1, 3, 0, 1, 5);
        assert_eq!(t.check(&bumped), Ok(SequenceCheck::Append));
        // Unknown producers and non-idempotent batches are always appended.
        assert_eq!(t.check(&header(2, 0, 77, 1, 0)), Ok(SequenceCheck::Append));
        assert_eq!(
            t.check(&header(-1, -1, -1, 1, 0)),
            Ok(SequenceCheck::Append)
        );
    }

    #[test]
    fn keeps_five_batches_and_round_trips() {
        let mut t = ProducerStateTable::default();
        for i in 0..8 {
            t.record(&header(5, 1, i * 2, 2, i64::from(i) * 2), 0);
        }
        assert_eq!(t.get(5).unwrap().batches.len(), RETAINED_BATCHES);
        // The oldest batches aged out: a retry of one is no longer recognised as a duplicate.
        assert!(matches!(
            t.check(&header(5, 1, 0, 2, 0)),
            Err(ProducerError::OutOfOrder { .. })
        ));
        assert!(matches!(
            t.check(&header(5, 1, 6, 2, 6)),
            Ok(SequenceCheck::Duplicate(_))
        ));
        let bytes = t.encode();
        assert_eq!(ProducerStateTable::decode(&bytes), Some(t.clone()));
        let mut bad = bytes.clone();
        bad[6] ^= 1;
        assert_eq!(ProducerStateTable::decode(&bad), None);
        assert_eq!(ProducerStateTable::decode(&bytes[..bytes.len() - 1]), None);
    }

    /// Producer ids expire a while after their last append (Kafka's producer.id.expiration.ms),
    /// judged by the append time, not by timestamps a client chose.
    #[test]
    fn producers_expire_after_their_last_append() {
        let mut t = ProducerStateTable::default();
        t.record(&header(1, 0, 0, 1, 0), 1_000);
        // A client stamping its batches far in the future does not keep its id alive.
        let mut future = header(2, 0, 0, 1, 1);
        future.max_timestamp = i64::MAX;
        t.record(&future, 1_000);
        t.record(&header(3, 0, 0, 1, 2), 5_000);
        assert_eq!(t.remove_expired(5_999, 5_000), 0);
        assert_eq!(t.remove_expired(6_000, 5_000), 2);
        assert!(t.get(1).is_none() && t.get(2).is_none());
        assert!(t.get(3).is_some());
        // An expired producer coming back is accepted like a new one.
        assert_eq!(t.check(&header(1, 0, 42, 1, 3)), Ok(SequenceCheck::Append));
        // Rebuilt (from a snapshot here), every producer counts as seen at the rebuild, whatever
        // its batches' timestamps: an old one must not expire it at once, a future one not
        // keep it forever.
        let mut old = header(4, 0, 0, 1, 3);
        old.max_timestamp = 0;
        t.record(&old, 7_000);
        t.record(&future, 7_000);
        let mut loaded = ProducerStateTable::decode(&t.encode()).unwrap();
        loaded.seen_at(8_000);
        assert_eq!(loaded.remove_expired(12_999, 5_000), 0);
        assert_eq!(loaded.remove_expired(13_000, 5_000), 3);
        assert!(loaded.is_empty());
    }

    #[test]
    fn wraps_sequence() {
        assert!(in_sequence(i32::MAX, 0));
        assert!(in_sequence(4, 5));
        assert!(!in_sequence(4, 6));
    }
}
