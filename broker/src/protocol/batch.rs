//! The v2 record batch header (61 bytes), parsed zero-copy, and CRC-32C validation.
//!
//! Layout (big endian), offsets in bytes:
//! ```text
//!  0 baseOffset i64        | 12 partitionLeaderEpoch i32 | 16 magic i8 | 17 crc u32
//!  8 batchLength i32       | 21 attributes i16 | 23 lastOffsetDelta i32 | 27 baseTimestamp i64
//! 35 maxTimestamp i64      | 43 producerId i64 | 51 producerEpoch i16 | 53 baseSequence i32
//! 57 recordsCount i32      | 61 records...
//! ```
//! The CRC covers bytes 21.. (attributes to the end), so the broker may rewrite the base offset
//! and the partition leader epoch without recomputing it.

use thiserror::Error;

/// Bytes before `batchLength` counts: base offset (8) + batch length (4).
pub const LOG_OVERHEAD: usize = 12;
/// Size of the fixed v2 header.
pub const HEADER_LEN: usize = 61;
/// Smallest legal `batchLength`: the header minus the log overhead.
pub const MIN_BATCH_LENGTH: i32 = (HEADER_LEN - LOG_OVERHEAD) as i32;
/// Offset of the first byte covered by the CRC.
const CRC_START: usize = 21;

pub const NO_PRODUCER_ID: i64 = -1;
pub const NO_SEQUENCE: i32 = -1;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum BatchError {
    #[error("batch shorter than its {HEADER_LEN}-byte header ({0} bytes)")]
    TooShort(usize),
    #[error("unsupported record batch magic {0} (only v2 is supported)")]
    BadMagic(i8),
    #[error("invalid batch length {0}")]
    BadLength(i32),
    #[error("batch length {declared} does not match the {actual} bytes present")]
    LengthMismatch { declared: usize, actual: usize },
    #[error("CRC-32C mismatch: header says {expected:#010x}, bytes give {actual:#010x}")]
    Crc { expected: u32, actual: u32 },
    #[error("invalid last offset delta {delta} for {count} records")]
    BadOffsetDelta { delta: i32, count: i32 },
}

/// Compression codec in the low three attribute bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    pub fn from_attributes(attributes: i16) -> Option<Self> {
        match attributes & 0x07 {
            0 => Some(Self::None),
            1 => Some(Self::Gzip),
            2 => Some(Self::Snappy),
            3 => Some(Self::Lz4),
            4 => Some(Self::Zstd),
            _ => None,
        }
    }
}

/// The decoded fixed header of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

fn i16_at(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn i64_at(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

impl BatchHeader {
    /// Parses the fixed header from the start of `buf`. Checks magic and the length field's
    /// lower bound only; use [`validate`] for a whole batch.
    pub fn parse(buf: &[u8]) -> Result<Self, BatchError> {
        if buf.len() < HEADER_LEN {
            return Err(BatchError::TooShort(buf.len()));
        }
        let magic = buf[16] as i8;
        if magic != 2 {
            return Err(BatchError::BadMagic(magic));
        }
        let batch_length = i32_at(buf, 8);
        if batch_length < MIN_BATCH_LENGTH {
            return Err(BatchError::BadLength(batch_length));
        }
        Ok(Self {
            base_offset: i64_at(buf, 0),
            batch_length,
            partition_leader_epoch: i32_at(buf, 12),
            magic,
            crc: u32::from_be_bytes([buf[17], buf[18], buf[19], buf[20]]),
            attributes: i16_at(buf, 21),
            last_offset_delta: i32_at(buf, 23),
            base_timestamp: i64_at(buf, 27),
            max_timestamp: i64_at(buf, 35),
            producer_id: i64_at(buf, 43),
            producer_epoch: i16_at(buf, 51),
            base_sequence: i32_at(buf, 53),
            records_count: i32_at(buf, 57),
        })
    }

    /// Bytes the whole batch occupies, including the log overhead.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }
    /// The offset after this batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }
    pub fn compression(&self) -> Option<Compression> {
        Compression::from_attributes(self.attributes)
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes & 0x10 != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }
    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }
    /// Sequence of the last record, wrapping past i32::MAX to 0 as Kafka does.
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence == NO_SEQUENCE {
            return NO_SEQUENCE;
        }
        let last = i64::from(self.base_sequence) + i64::from(self.last_offset_delta);
        if last > i64::from(i32::MAX) {
            (last - i64::from(i32::MAX) - 1) as i32
        } else {
            last as i32
        }
    }
}

/// Checks that `buf` is exactly one well-formed batch with a correct CRC-32C.
pub fn validate(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(buf)?;
    if header.total_len() != buf.len() {
        return Err(BatchError::LengthMismatch {
            declared: header.total_len(),
            actual: buf.len(),
        });
    }
    check_crc(&header, buf)?;
    if header.last_offset_delta < 0
        || header.records_count < 0
        || (header.records_count > 0 && header.last_offset_delta != header.records_count - 1)
    {
        return Err(BatchError::BadOffsetDelta {
            delta: header.last_offset_delta,
            count: header.records_count,
        });
    }
    Ok(header)
}

/// Verifies the CRC of a batch whose bytes are `buf[..header.total_len()]`.
pub fn check_crc(header: &BatchHeader, buf: &[u8]) -> Result<(), BatchError> {
    let end = header.total_len();
    if buf.len() < end {
        return Err(BatchError::LengthMismatch {
            declared: end,
            actual: buf.len(),
        });
    }
    let actual = crc32c::crc32c(&buf[CRC_START..end]);
    if actual != header.crc {
        return Err(BatchError::Crc {
            expected: header.crc,
            actual,
        });
    }
    Ok(())
}

/// The first 16 bytes of a batch with the base offset and leader epoch rewritten; the rest of
/// the batch is written verbatim after it.
pub fn patched_prefix(batch: &[u8], base_offset: i64, leader_epoch: i32) -> [u8; 16] {
    let mut prefix = [0u8; 16];
    prefix.copy_from_slice(&batch[..16]);
    prefix[0..8].copy_from_slice(&base_offset.to_be_bytes());
    prefix[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
    prefix
}

/// Walks whole batches in a buffer that starts at a batch boundary. Stops (returns None) at the
/// first incomplete or unparsable batch; `consumed()` tells how far it got.
pub struct Batches<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Batches<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }
    pub fn consumed(&self) -> usize {
        self.pos
    }
}

impl Iterator for Batches<'_> {
    /// A header and the batch's byte range within the buffer.
    type Item = (BatchHeader, std::ops::Range<usize>);
    fn next(&mut self) -> Option<Self::Item> {
        let rest = &self.buf[self.pos..];
        let header = BatchHeader::parse(rest).ok()?;
        let len = header.total_len();
        if rest.len() < len {
            return None;
        }
        let range = self.pos..self.pos + len;
        self.pos += len;
        Some((header, range))
    }
}

#[doc(hidden)]
pub mod test_support {
    //! Builds valid uncompressed batches for tests (unit, property and process tests).

    /// One batch of `count` records with the given producer fields and a correct CRC.
    pub fn batch(
        count: i32,
        timestamp: i64,
        producer: (i64, i16, i32),
        value_len: usize,
    ) -> Vec<u8> {
        let mut records = Vec::new();
        for i in 0..count {
            let mut rec = Vec::new();
            rec.push(0u8); // attributes
            put_varlong(&mut rec, 0); // timestamp delta
            put_varlong(&mut rec, i64::from(i)); // offset delta
            put_varlong(&mut rec, -1); // null key
            put_varlong(&mut rec, value_len as i64);
            rec.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, value_len));
            put_varlong(&mut rec, 0); // headers
            put_varlong(&mut records, rec.len() as i64);
            records.extend(rec);
        }
        let mut b = Vec::new();
        b.extend(0i64.to_be_bytes());
        b.extend(0i32.to_be_bytes()); // length, patched below
        b.extend((-1i32).to_be_bytes());
        b.push(2);
        b.extend(0u32.to_be_bytes()); // crc, patched below
        b.extend(0i16.to_be_bytes());
        b.extend((count - 1).to_be_bytes());
        b.extend(timestamp.to_be_bytes());
        b.extend(timestamp.to_be_bytes());
        b.extend(producer.0.to_be_bytes());
        b.extend(producer.1.to_be_bytes());
        b.extend(producer.2.to_be_bytes());
        b.extend(count.to_be_bytes());
        b.extend(records);
        let len = (b.len() - 12) as i32;
        b[8..12].copy_from_slice(&len.to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }

    fn put_varlong(out: &mut Vec<u8>, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            out.push((z as u8) | 0x80);
            z >>= 7;
        }
        out.push(z as u8);
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::batch;
    use super::*;

    #[test]
    fn parses_and_validates_a_batch() {
        let b = batch(3, 1000, (7, 1, 10), 5);
        let h = validate(&b).unwrap();
        assert_eq!(h.records_count, 3);
        assert_eq!(h.last_offset_delta, 2);
        assert_eq!(h.producer_id, 7);
        assert_eq!(h.base_sequence, 10);
        assert_eq!(h.last_sequence(), 12);
        assert_eq!(h.compression(), Some(Compression::None));
    }

    #[test]
    fn rejects_flipped_byte_and_bad_length() {
        let mut b = batch(2, 1, (-1, -1, -1), 3);
        let n = b.len();
        b[n - 1] ^= 0xff;
        assert!(matches!(validate(&b), Err(BatchError::Crc { .. })));
        let b = batch(2, 1, (-1, -1, -1), 3);
        assert!(matches!(
            validate(&b[..b.len() - 1]),
            Err(BatchError::LengthMismatch { .. })
        ));
        assert!(matches!(validate(&b[..10]), Err(BatchError::TooShort(10))));
        let mut b = batch(2, 1, (-1, -1, -1), 3);
        b[16] = 1;
        assert_eq!(validate(&b), Err(BatchError::BadMagic(1)));
    }

    #[test]
    fn patching_keeps_the_crc_valid() {
        let b = batch(2, 1, (-1, -1, -1), 3);
        let mut patched = b.clone();
        patched[..16].copy_from_slice(&patched_prefix(&b, 4242, 9));
        let h = validate(&patched).unwrap();
        assert_eq!(h.base_offset, 4242);
        assert_eq!(h.partition_leader_epoch, 9);
    }

    #[test]
    fn sequence_wraps_like_kafka() {
        let mut h = BatchHeader::parse(&batch(3, 1, (1, 0, 0), 1)).unwrap();
        h.base_sequence = i32::MAX - 1;
        assert_eq!(h.last_sequence(), 0);
    }

    #[test]
    fn iterates_whole_batches_only() {
        let mut buf = batch(1, 1, (-1, -1, -1), 10);
        buf.extend(batch(2, 1, (-1, -1, -1), 10));
        let full = buf.len();
        buf.extend(&batch(1, 1, (-1, -1, -1), 10)[..20]);
        let mut it = Batches::new(&buf);
        assert_eq!(it.by_ref().count(), 2);
        assert_eq!(it.consumed(), full);
    }
}
