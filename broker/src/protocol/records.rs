//! Records inside a v2 batch: a streaming, bounded walk used to validate client batches (as
//! Kafka's LogValidator does) and to find a record by timestamp. Compressed batches are
//! decompressed as a stream with a cap on the output, so a small "bomb" cannot exhaust memory,
//! and nothing is allocated from a count a client declared.
//!
//! Record layout: length varint, attributes i8, timestampDelta varlong, offsetDelta varint,
//! key (varint length + bytes, -1 = null), value (likewise), header count varint, headers
//! (key: varint length + bytes, value: varint length + bytes, -1 = null).

use std::io::{self, BufRead, BufReader, Read};
use std::ops::ControlFlow;

use super::batch::{BatchHeader, Compression, HEADER_LEN};

/// Cap on the decompressed size of one batch's records (a client batch is at most
/// max.message.bytes compressed; this bounds what a decompression "bomb" can cost).
pub const MAX_DECOMPRESSED: usize = 256 << 20;

/// More than snappy's format can expand (a 3-byte copy element yields at most 64 bytes).
const SNAPPY_MAX_RATIO: usize = 32;

/// Largest zstd window a client batch may use (2^25 = 32 MiB; level 19 uses 8 MiB): a frame
/// asking for more would make the decoder allocate it before anything is checked.
const ZSTD_WINDOW_LOG_MAX: u32 = 25;

/// Largest single record accepted while walking (the batch limit bounds it in practice).
const MAX_RECORD_BYTES: usize = 64 << 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("records are truncated")]
    Truncated,
    #[error("malformed record: {0}")]
    Malformed(&'static str),
    #[error("cannot decompress records: {0}")]
    Decompress(String),
    #[error("records decompress to more than {0} bytes")]
    TooLarge(usize),
    #[error("batch declares {declared} records but holds {actual}")]
    Count { declared: i32, actual: i64 },
    #[error("record {index} has offset delta {got}")]
    OffsetDelta { index: i64, got: i32 },
    #[error("unknown compression codec")]
    Codec,
}

impl From<io::Error> for RecordError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            Self::Truncated
        } else {
            Self::Decompress(e.to_string())
        }
    }
}

/// What the walk reports per record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMeta {
    pub offset_delta: i32,
    pub timestamp_delta: i64,
}

fn read_varlong(r: &mut impl BufRead) -> Result<i64, RecordError> {
    let mut value: u64 = 0;
    for i in 0..10 {
        let mut b = [0u8; 1];
        r.read_exact(&mut b)?;
        value |= u64::from(b[0] & 0x7f) << (7 * i);
        if b[0] & 0x80 == 0 {
            return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    Err(RecordError::Malformed("varint longer than 10 bytes"))
}

fn varlong_from(buf: &mut &[u8]) -> Result<i64, RecordError> {
    read_varlong(buf)
}

fn varint_from(buf: &mut &[u8]) -> Result<i32, RecordError> {
    i32::try_from(varlong_from(buf)?).map_err(|_| RecordError::Malformed("varint out of range"))
}

/// Skips a length-prefixed field; `nullable` allows -1.
fn skip_bytes(buf: &mut &[u8], nullable: bool) -> Result<(), RecordError> {
    let len = varint_from(buf)?;
    if len == -1 && nullable {
        return Ok(());
    }
    let len = usize::try_from(len).map_err(|_| RecordError::Malformed("negative length"))?;
    if buf.len() < len {
        return Err(RecordError::Malformed("field longer than its record"));
    }
    *buf = &buf[len..];
    Ok(())
}

fn parse_record(mut body: &[u8]) -> Result<RecordMeta, RecordError> {
    let buf = &mut body;
    let (_attributes, rest) = buf
        .split_first()
        .ok_or(RecordError::Malformed("empty record"))?;
    *buf = rest;
    let timestamp_delta = varlong_from(buf)?;
    let offset_delta = varint_from(buf)?;
    skip_bytes(buf, true)?; // key
    skip_bytes(buf, true)?; // value
    let headers = varint_from(buf)?;
    if headers < 0 {
        return Err(RecordError::Malformed("negative header count"));
    }
    for _ in 0..headers {
        skip_bytes(buf, false)?; // header key
        skip_bytes(buf, true)?; // header value
    }
    if !buf.is_empty() {
        return Err(RecordError::Malformed("bytes left after the last field"));
    }
    Ok(RecordMeta {
        offset_delta,
        timestamp_delta,
    })
}

/// xerial-framed snappy (Kafka's Java client) or raw snappy, decompressed block by block with
/// a running cap.
fn snappy(data: &[u8], cap: usize) -> Result<Vec<u8>, RecordError> {
    const MAGIC: &[u8] = b"\x82SNAPPY\x00";
    let err = |e: snap::Error| RecordError::Decompress(e.to_string());
    let mut out = Vec::new();
    let block = |compressed: &[u8], out: &mut Vec<u8>| -> Result<(), RecordError> {
        let len = snap::raw::decompress_len(compressed).map_err(err)?;
        if out.len() + len > cap {
            return Err(RecordError::TooLarge(cap));
        }
        // The length is the sender's word; snappy cannot expand more than ~22x (a 3-byte copy
        // of 64 bytes), so a larger claim is a lie told to make us zero-fill memory.
        if len > compressed.len().saturating_mul(SNAPPY_MAX_RATIO) {
            return Err(RecordError::Decompress(format!(
                "snappy block of {} bytes claims {len} bytes",
                compressed.len()
            )));
        }
        let start = out.len();
        out.resize(start + len, 0);
        snap::raw::Decoder::new()
            .decompress(compressed, &mut out[start..])
            .map_err(err)?;
        Ok(())
    };
    if !data.starts_with(MAGIC) {
        block(data, &mut out)?;
        return Ok(out);
    }
    let mut rest = data.get(16..).ok_or(RecordError::Truncated)?;
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or(RecordError::Truncated)?;
        let len = u32::from_be_bytes(*len) as usize;
        let chunk = tail.get(..len).ok_or(RecordError::Truncated)?;
        block(chunk, &mut out)?;
        rest = &tail[len..];
    }
    Ok(out)
}

/// Walks every record of `batch` (a whole batch, header included), calling `f` until it
/// breaks. Decompressed data is capped at `max_decompressed` bytes. Returns the number of
/// records walked.
pub fn for_each_record(
    batch: &[u8],
    header: &BatchHeader,
    max_decompressed: usize,
    mut f: impl FnMut(RecordMeta) -> ControlFlow<()>,
) -> Result<i64, RecordError> {
    let data = batch.get(HEADER_LEN..).ok_or(RecordError::Truncated)?;
    let snappy_buf;
    let reader: Box<dyn Read + '_> = match header.compression().ok_or(RecordError::Codec)? {
        Compression::None => Box::new(data),
        Compression::Gzip => Box::new(flate2::read::GzDecoder::new(data)),
        Compression::Snappy => {
            snappy_buf = snappy(data, max_decompressed)?;
            Box::new(&snappy_buf[..])
        }
        Compression::Lz4 => Box::new(lz4::Decoder::new(data)?),
        Compression::Zstd => {
            let mut d = zstd::stream::read::Decoder::new(data)?;
            d.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
            Box::new(d)
        }
    };
    // One byte over the cap tells "too large" from "exactly at the cap".
    let mut r = BufReader::new(reader.take(max_decompressed as u64 + 1));
    let mut consumed = 0usize;
    let mut count = 0i64;
    let mut body = Vec::new();
    loop {
        if r.fill_buf()?.is_empty() {
            break;
        }
        let before = r.buffer().len();
        let len = read_varlong(&mut r)?;
        let len =
            usize::try_from(len).map_err(|_| RecordError::Malformed("negative record length"))?;
        if len > MAX_RECORD_BYTES {
            return Err(RecordError::Malformed("record too large"));
        }
        consumed += before.saturating_sub(r.buffer().len()).max(1) + len;
        if consumed > max_decompressed {
            return Err(RecordError::TooLarge(max_decompressed));
        }
        body.resize(len, 0);
        r.read_exact(&mut body)?;
        let meta = parse_record(&body)?;
        count += 1;
        if f(meta).is_break() {
            return Ok(count);
        }
    }
    Ok(count)
}

/// Kafka's checks on the records of a client batch: the declared count matches, offset deltas
/// run 0, 1, 2..., and every record parses.
pub fn validate_client_records(
    batch: &[u8],
    header: &BatchHeader,
    max_decompressed: usize,
) -> Result<(), RecordError> {
    let mut index = 0i64;
    let mut bad = None;
    let count = for_each_record(batch, header, max_decompressed, |m| {
        if i64::from(m.offset_delta) != index {
            bad = Some(RecordError::OffsetDelta {
                index,
                got: m.offset_delta,
            });
            return ControlFlow::Break(());
        }
        index += 1;
        ControlFlow::Continue(())
    })?;
    if let Some(e) = bad {
        return Err(e);
    }
    if count != i64::from(header.records_count) {
        return Err(RecordError::Count {
            declared: header.records_count,
            actual: count,
        });
    }
    Ok(())
}

/// Offset and timestamp of the first record in `batch` with timestamp >= `target`; the batch's
/// base offset and max timestamp if its records cannot be walked.
pub fn first_record_at_or_after(
    batch: &[u8],
    header: &BatchHeader,
    target: i64,
    max_decompressed: usize,
) -> (i64, i64) {
    let fallback = (header.base_offset, header.max_timestamp);
    // LogAppendTime batches stamp every record with the batch time.
    if header.attributes & 0x08 != 0 {
        return fallback;
    }
    let mut found = None;
    let walked = for_each_record(batch, header, max_decompressed, |m| {
        let ts = header.base_timestamp.saturating_add(m.timestamp_delta);
        if ts >= target {
            found = Some((header.base_offset + i64::from(m.offset_delta), ts));
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    match (walked, found) {
        (Ok(_), Some(hit)) => hit,
        _ => fallback,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::test_support::batch;

    fn h(b: &[u8]) -> BatchHeader {
        BatchHeader::parse(b).unwrap()
    }

    #[test]
    fn walks_and_validates_uncompressed_records() {
        let b = batch(5, 1000, (-1, -1, -1), 3);
        assert_eq!(validate_client_records(&b, &h(&b), 1 << 20), Ok(()));
        let mut seen = Vec::new();
        for_each_record(&b, &h(&b), 1 << 20, |m| {
            seen.push(m.offset_delta);
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(seen, vec![0, 1, 2, 3, 4]);
        assert_eq!(
            first_record_at_or_after(&b, &h(&b), 900, 1 << 20),
            (0, 1000)
        );
    }

    #[test]
    fn lies_about_counts_and_lengths_are_caught() {
        let b = batch(3, 1, (-1, -1, -1), 3);
        let mut header = h(&b);
        header.records_count = i32::MAX;
        assert!(matches!(
            validate_client_records(&b, &header, 1 << 20),
            Err(RecordError::Count { .. })
        ));
        // Cut the last record short.
        assert!(validate_client_records(&b[..b.len() - 2], &h(&b), 1 << 20).is_err());
        // Garbage after the records.
        let mut extra = b.clone();
        extra.extend([0x02, 0x00]);
        assert!(validate_client_records(&extra, &h(&b), 1 << 20).is_err());
        // A huge declared header count inside a record must not allocate: it fails to parse.
        let mut evil = batch(1, 1, (-1, -1, -1), 0);
        let n = evil.len();
        evil[n - 1] = 0xfe; // header count varint byte -> continuation with nothing after
        assert!(validate_client_records(&evil, &h(&evil), 1 << 20).is_err());
    }

    /// A snappy block's declared length is not believed past what snappy can expand to: ten
    /// bytes claiming 100 MiB are refused before anything is allocated for them.
    #[test]
    fn a_snappy_length_lie_is_refused() {
        let plain = batch(1, 1, (-1, -1, -1), 1);
        let mut b = plain[..HEADER_LEN].to_vec();
        let mut claim = 100u32 << 20;
        while claim >= 0x80 {
            b.push((claim as u8) | 0x80);
            claim >>= 7;
        }
        b.push(claim as u8);
        b.extend([0u8; 6]);
        b[21..23].copy_from_slice(&2i16.to_be_bytes()); // snappy
        let err = validate_client_records(&b, &h(&b), 256 << 20).unwrap_err();
        assert!(
            matches!(&err, RecordError::Decompress(m) if m.contains("claims")),
            "{err:?}"
        );
    }

    #[test]
    fn decompression_is_capped() {
        use std::io::Write;
        // A gzip "bomb": many records of zeros that expand far beyond the cap.
        let plain = batch(2000, 1, (-1, -1, -1), 1000);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&plain[HEADER_LEN..]).unwrap();
        let compressed = gz.finish().unwrap();
        let mut b = plain[..HEADER_LEN].to_vec();
        b.extend(&compressed);
        b[21..23].copy_from_slice(&1i16.to_be_bytes()); // gzip
        let header = h(&b);
        assert_eq!(validate_client_records(&b, &header, 16 << 20), Ok(()));
        assert_eq!(
            validate_client_records(&b, &header, 100_000),
            Err(RecordError::TooLarge(100_000))
        );
    }
}
