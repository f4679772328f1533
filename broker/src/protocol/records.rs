//! Record-level reads inside a stored batch, for the rare paths that need them (ListOffsets by
//! timestamp). The data path never decompresses: batches are stored and served verbatim.

use bytes::Bytes;
use kafka_protocol::records::RecordBatchDecoder;

use super::batch::BatchHeader;

/// Decoding allocates per record, so batches that claim more records than this are answered at
/// batch granularity instead (a client controls the count; see kafka-protocol issue #156).
const MAX_DECODED_RECORDS: i32 = 100_000;

/// Offset and timestamp of the first record in `batch` with timestamp >= `target`. Falls back
/// to the batch's base offset and max timestamp when the records cannot be decoded.
pub fn first_record_at_or_after(batch: Bytes, target: i64) -> (i64, i64) {
    let Ok(header) = BatchHeader::parse(&batch) else {
        return (-1, -1);
    };
    let fallback = (header.base_offset, header.max_timestamp);
    // LogAppendTime batches stamp every record with the batch time.
    if header.attributes & 0x08 != 0 || !(0..=MAX_DECODED_RECORDS).contains(&header.records_count) {
        return fallback;
    }
    let mut buf = batch;
    match RecordBatchDecoder::decode(&mut buf) {
        Ok(set) => set
            .records
            .iter()
            .find(|r| r.timestamp >= target)
            .map_or(fallback, |r| (r.offset, r.timestamp)),
        Err(_) => fallback,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::test_support::batch;

    #[test]
    fn finds_the_record_inside_the_batch() {
        // The test batch gives every record the base timestamp; patch deltas are 0, so the
        // first record matches any target up to the base timestamp.
        let b = Bytes::from(batch(5, 1000, (-1, -1, -1), 3));
        assert_eq!(first_record_at_or_after(b.clone(), 900), (0, 1000));
        assert_eq!(first_record_at_or_after(b, 1000), (0, 1000));
    }
}
