//! The records of `__consumer_offsets`, in Kafka's own formats so Kafka's tools can read the
//! topic: keys OffsetCommitKey (version 1: group, topic, partition) and GroupMetadataKey
//! (version 2: group); values OffsetCommitValue version 3 and GroupMetadataValue version 3
//! (both non-flexible; versions 0-3 are read); a null value is a tombstone. Records travel in
//! ordinary uncompressed v2 record batches. Pure code: nothing here touches disk or network,
//! and nothing read can make it panic or allocate more than the input's size.

use bytes::Bytes;

use super::state::{GroupMetadata, MemberMetadata};
use crate::protocol::batch::{BatchHeader, HEADER_LEN};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("record is truncated")]
    Truncated,
    #[error("unsupported {0} version {1}")]
    Version(&'static str, i16),
    #[error("malformed record: {0}")]
    Malformed(&'static str),
    #[error("a string of {0} bytes does not fit an int16 length (at most 32767)")]
    TooLong(usize),
}

/// Longest string the records can hold (Kafka's non-flexible int16 length). Longer group,
/// member or instance ids (which flexible request versions allow) are refused before
/// anything is written.
pub const MAX_STRING_BYTES: usize = i16::MAX as usize;

/// What a key names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordKey {
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    Group {
        group: String,
    },
}

impl RecordKey {
    pub fn group(&self) -> &str {
        match self {
            RecordKey::Offset { group, .. } | RecordKey::Group { group } => group,
        }
    }
}

/// A committed offset (OffsetCommitValue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

const OFFSET_KEY_VERSION: i16 = 1;
const GROUP_KEY_VERSION: i16 = 2;
const OFFSET_VALUE_VERSION: i16 = 3;
const GROUP_VALUE_VERSION: i16 = 3;

// ---- encoding (Kafka's non-flexible types: int16-length strings, int32-length bytes) ----

/// Never truncates: two long ids cut to one prefix would be one key.
fn put_str(out: &mut Vec<u8>, s: &str) -> Result<(), FormatError> {
    let len = i16::try_from(s.len()).map_err(|_| FormatError::TooLong(s.len()))?;
    out.extend(len.to_be_bytes());
    out.extend(s.as_bytes());
    Ok(())
}

fn put_nullable_str(out: &mut Vec<u8>, s: Option<&str>) -> Result<(), FormatError> {
    match s {
        Some(s) => put_str(out, s),
        None => {
            out.extend((-1i16).to_be_bytes());
            Ok(())
        }
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend((b.len() as i32).to_be_bytes());
    out.extend(b);
}

pub fn encode_key(key: &RecordKey) -> Result<Vec<u8>, FormatError> {
    let mut out = Vec::new();
    match key {
        RecordKey::Offset {
            group,
            topic,
            partition,
        } => {
            out.extend(OFFSET_KEY_VERSION.to_be_bytes());
            put_str(&mut out, group)?;
            put_str(&mut out, topic)?;
            out.extend(partition.to_be_bytes());
        }
        RecordKey::Group { group } => {
            out.extend(GROUP_KEY_VERSION.to_be_bytes());
            put_str(&mut out, group)?;
        }
    }
    Ok(out)
}

pub fn encode_offset_value(v: &OffsetValue) -> Result<Vec<u8>, FormatError> {
    let mut out = Vec::new();
    out.extend(OFFSET_VALUE_VERSION.to_be_bytes());
    out.extend(v.offset.to_be_bytes());
    out.extend(v.leader_epoch.to_be_bytes());
    put_str(&mut out, &v.metadata)?;
    out.extend(v.commit_timestamp_ms.to_be_bytes());
    Ok(out)
}

pub fn encode_group_value(g: &GroupMetadata) -> Result<Vec<u8>, FormatError> {
    let mut out = Vec::new();
    out.extend(GROUP_VALUE_VERSION.to_be_bytes());
    put_str(&mut out, &g.protocol_type)?;
    out.extend(g.generation.to_be_bytes());
    put_nullable_str(&mut out, g.protocol_name.as_deref())?;
    put_nullable_str(&mut out, g.leader.as_deref())?;
    out.extend(g.state_timestamp_ms.to_be_bytes());
    out.extend((g.members.len() as i32).to_be_bytes());
    for m in &g.members {
        put_str(&mut out, &m.member_id)?;
        put_nullable_str(&mut out, m.instance_id.as_deref())?;
        put_str(&mut out, &m.client_id)?;
        put_str(&mut out, &m.client_host)?;
        out.extend(m.rebalance_timeout_ms.to_be_bytes());
        out.extend(m.session_timeout_ms.to_be_bytes());
        put_bytes(&mut out, &m.subscription);
        put_bytes(&mut out, &m.assignment);
    }
    Ok(out)
}

// ---- decoding ----

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        if self.0.len() < n {
            return Err(FormatError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn i16(&mut self) -> Result<i16, FormatError> {
        Ok(i16::from_be_bytes(
            self.take(2)?.try_into().unwrap_or([0; 2]),
        ))
    }
    fn i32(&mut self) -> Result<i32, FormatError> {
        Ok(i32::from_be_bytes(
            self.take(4)?.try_into().unwrap_or([0; 4]),
        ))
    }
    fn i64(&mut self) -> Result<i64, FormatError> {
        Ok(i64::from_be_bytes(
            self.take(8)?.try_into().unwrap_or([0; 8]),
        ))
    }
    fn nullable_str(&mut self) -> Result<Option<String>, FormatError> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        let raw = self.take(len as usize)?;
        String::from_utf8(raw.to_vec())
            .map(Some)
            .map_err(|_| FormatError::Malformed("string is not UTF-8"))
    }
    fn str(&mut self) -> Result<String, FormatError> {
        self.nullable_str()?
            .ok_or(FormatError::Malformed("null where a string is required"))
    }
    fn bytes(&mut self) -> Result<Bytes, FormatError> {
        let len = self.i32()?;
        if len < 0 {
            return Ok(Bytes::new());
        }
        Ok(Bytes::copy_from_slice(self.take(len as usize)?))
    }
}

pub fn decode_key(raw: &[u8]) -> Result<RecordKey, FormatError> {
    let mut r = Reader(raw);
    match r.i16()? {
        0 | 1 => Ok(RecordKey::Offset {
            group: r.str()?,
            topic: r.str()?,
            partition: r.i32()?,
        }),
        2 => Ok(RecordKey::Group { group: r.str()? }),
        v => Err(FormatError::Version("key", v)),
    }
}

pub fn decode_offset_value(raw: &[u8]) -> Result<OffsetValue, FormatError> {
    let mut r = Reader(raw);
    let version = r.i16()?;
    if !(0..=3).contains(&version) {
        return Err(FormatError::Version("offset commit value", version));
    }
    let offset = r.i64()?;
    let leader_epoch = if version >= 3 { r.i32()? } else { -1 };
    let metadata = r.str()?;
    let commit_timestamp_ms = r.i64()?;
    Ok(OffsetValue {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp_ms,
    })
}

pub fn decode_group_value(raw: &[u8]) -> Result<GroupMetadata, FormatError> {
    let mut r = Reader(raw);
    let version = r.i16()?;
    if !(0..=3).contains(&version) {
        return Err(FormatError::Version("group metadata value", version));
    }
    let protocol_type = r.str()?;
    let generation = r.i32()?;
    let protocol_name = r.nullable_str()?;
    let leader = r.nullable_str()?;
    let state_timestamp_ms = if version >= 2 { r.i64()? } else { -1 };
    let count = r.i32()?;
    let mut members = Vec::new();
    for _ in 0..count.max(0) {
        let member_id = r.str()?;
        let instance_id = if version >= 3 {
            r.nullable_str()?
        } else {
            None
        };
        let client_id = r.str()?;
        let client_host = r.str()?;
        let rebalance_timeout_ms = if version >= 1 { r.i32()? } else { -1 };
        let session_timeout_ms = r.i32()?;
        let rebalance_timeout_ms = if rebalance_timeout_ms < 0 {
            session_timeout_ms
        } else {
            rebalance_timeout_ms
        };
        members.push(MemberMetadata {
            member_id,
            instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms,
            session_timeout_ms,
            subscription: r.bytes()?,
            assignment: r.bytes()?,
        });
    }
    Ok(GroupMetadata {
        protocol_type,
        generation,
        protocol_name,
        leader,
        state_timestamp_ms,
        members,
    })
}

// ---- record batches ----

fn put_varlong(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn put_varbytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            put_varlong(out, b.len() as i64);
            out.extend(b);
        }
        None => put_varlong(out, -1),
    }
}

/// One uncompressed v2 batch (no producer id) holding `records` as (key, value or tombstone).
/// Base offset and leader epoch are left for the log to assign. `records` must not be empty.
pub fn build_batch(records: &[(Vec<u8>, Option<Vec<u8>>)], timestamp_ms: i64) -> Vec<u8> {
    let mut body = Vec::new();
    for (i, (key, value)) in records.iter().enumerate() {
        let mut rec = vec![0u8]; // attributes
        put_varlong(&mut rec, 0); // timestamp delta
        put_varlong(&mut rec, i as i64); // offset delta
        put_varbytes(&mut rec, Some(key));
        put_varbytes(&mut rec, value.as_deref());
        put_varlong(&mut rec, 0); // headers
        put_varlong(&mut body, rec.len() as i64);
        body.extend(rec);
    }
    let count = records.len() as i32;
    let mut b = Vec::with_capacity(HEADER_LEN + body.len());
    b.extend(0i64.to_be_bytes()); // base offset
    b.extend(0i32.to_be_bytes()); // length, patched below
    b.extend((-1i32).to_be_bytes()); // partition leader epoch
    b.push(2); // magic
    b.extend(0u32.to_be_bytes()); // crc, patched below
    b.extend(0i16.to_be_bytes()); // attributes: no compression
    b.extend((count - 1).to_be_bytes()); // last offset delta
    b.extend(timestamp_ms.to_be_bytes());
    b.extend(timestamp_ms.to_be_bytes());
    b.extend((-1i64).to_be_bytes()); // producer id
    b.extend((-1i16).to_be_bytes()); // producer epoch
    b.extend((-1i32).to_be_bytes()); // base sequence
    b.extend(count.to_be_bytes());
    b.extend(body);
    let len = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

fn varlong(buf: &mut &[u8]) -> Result<i64, FormatError> {
    let mut value: u64 = 0;
    for i in 0..10 {
        let (&b, rest) = buf.split_first().ok_or(FormatError::Truncated)?;
        *buf = rest;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    Err(FormatError::Malformed("varint longer than 10 bytes"))
}

fn varbytes<'a>(buf: &mut &'a [u8]) -> Result<Option<&'a [u8]>, FormatError> {
    let len = varlong(buf)?;
    if len < 0 {
        return Ok(None);
    }
    let len = usize::try_from(len).map_err(|_| FormatError::Truncated)?;
    if buf.len() < len {
        return Err(FormatError::Truncated);
    }
    let (head, rest) = buf.split_at(len);
    *buf = rest;
    Ok(Some(head))
}

/// Calls `f(offset, key, value)` for each record of one uncompressed batch (header included).
/// Control and compressed batches hold no coordinator records and are skipped.
pub fn for_each_record(
    batch: &[u8],
    header: &BatchHeader,
    mut f: impl FnMut(i64, Option<&[u8]>, Option<&[u8]>),
) -> Result<(), FormatError> {
    if header.is_control() || header.attributes & 0x07 != 0 {
        return Ok(());
    }
    let mut buf = batch.get(HEADER_LEN..).ok_or(FormatError::Truncated)?;
    for _ in 0..header.records_count.max(0) {
        let len = usize::try_from(varlong(&mut buf)?)
            .map_err(|_| FormatError::Malformed("negative record length"))?;
        if buf.len() < len {
            return Err(FormatError::Truncated);
        }
        let (mut rec, rest) = buf.split_at(len);
        buf = rest;
        rec = rec.get(1..).ok_or(FormatError::Truncated)?; // attributes
        varlong(&mut rec)?; // timestamp delta
        let delta = varlong(&mut rec)?;
        let key = varbytes(&mut rec)?;
        let value = varbytes(&mut rec)?;
        f(header.base_offset.saturating_add(delta), key, value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch;

    fn member(id: &str) -> MemberMetadata {
        MemberMetadata {
            member_id: id.into(),
            instance_id: Some("i-1".into()),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            rebalance_timeout_ms: 300_000,
            session_timeout_ms: 45_000,
            subscription: Bytes::from_static(b"sub"),
            assignment: Bytes::from_static(b"asg"),
        }
    }

    #[test]
    fn keys_and_values_round_trip() {
        for key in [
            RecordKey::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition: 7,
            },
            RecordKey::Group { group: "g2".into() },
        ] {
            assert_eq!(decode_key(&encode_key(&key).unwrap()).unwrap(), key);
        }
        let v = OffsetValue {
            offset: 42,
            leader_epoch: 3,
            metadata: "m".into(),
            commit_timestamp_ms: 1000,
        };
        assert_eq!(
            decode_offset_value(&encode_offset_value(&v).unwrap()).unwrap(),
            v
        );
        let g = GroupMetadata {
            protocol_type: "consumer".into(),
            generation: 5,
            protocol_name: Some("range".into()),
            leader: None,
            state_timestamp_ms: 9,
            members: vec![member("a"), member("b")],
        };
        assert_eq!(
            decode_group_value(&encode_group_value(&g).unwrap()).unwrap(),
            g
        );
    }

    #[test]
    fn matches_kafkas_bytes_for_an_offset_key() {
        // OffsetCommitKey v1 for ("g", "t", 1), as Kafka's generated code writes it.
        let expected = [0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 1];
        let key = RecordKey::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 1,
        };
        assert_eq!(encode_key(&key).unwrap(), expected);
    }

    #[test]
    fn strings_too_long_for_the_format_are_refused_not_truncated() {
        let long = "g".repeat(MAX_STRING_BYTES + 1);
        let fits = "g".repeat(MAX_STRING_BYTES);
        // Truncated, these two would have been one key.
        assert_eq!(
            encode_key(&RecordKey::Group {
                group: format!("{fits}a")
            }),
            Err(FormatError::TooLong(MAX_STRING_BYTES + 1))
        );
        assert_eq!(
            encode_key(&RecordKey::Offset {
                group: long.clone(),
                topic: "t".into(),
                partition: 0,
            }),
            Err(FormatError::TooLong(MAX_STRING_BYTES + 1))
        );
        let key = RecordKey::Group { group: fits };
        assert_eq!(decode_key(&encode_key(&key).unwrap()).unwrap(), key);
        let mut m = member("a");
        m.instance_id = Some(long.clone());
        let g = GroupMetadata {
            members: vec![m],
            ..GroupMetadata::default()
        };
        assert!(matches!(
            encode_group_value(&g),
            Err(FormatError::TooLong(_))
        ));
        let v = OffsetValue {
            offset: 1,
            leader_epoch: -1,
            metadata: long,
            commit_timestamp_ms: 0,
        };
        assert!(matches!(
            encode_offset_value(&v),
            Err(FormatError::TooLong(_))
        ));
    }

    #[test]
    fn reads_older_offset_value_versions() {
        // v1: offset, metadata, commit timestamp, expire timestamp.
        let mut raw = vec![0, 1];
        raw.extend(5i64.to_be_bytes());
        raw.extend([0, 0]);
        raw.extend(7i64.to_be_bytes());
        raw.extend((-1i64).to_be_bytes());
        let v = decode_offset_value(&raw).unwrap();
        assert_eq!(
            (v.offset, v.leader_epoch, v.commit_timestamp_ms),
            (5, -1, 7)
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let good = encode_group_value(&GroupMetadata {
            members: vec![member("a")],
            ..GroupMetadata::default()
        })
        .unwrap();
        for cut in 0..good.len() {
            assert!(decode_group_value(&good[..cut]).is_err());
        }
        assert!(decode_key(&[0, 9, 0, 0]).is_err());
        assert!(decode_offset_value(&[0, 3, 1]).is_err());
    }

    #[test]
    fn batches_are_valid_and_walkable() {
        let records = vec![
            (b"k1".to_vec(), Some(b"v1".to_vec())),
            (b"k2".to_vec(), None),
        ];
        let b = build_batch(&records, 123);
        let mut h = batch::validate(&b).unwrap();
        h.base_offset = 10;
        let mut seen = Vec::new();
        for_each_record(&b, &h, |o, k, v| {
            seen.push((o, k.map(<[u8]>::to_vec), v.map(<[u8]>::to_vec)))
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![
                (10, Some(b"k1".to_vec()), Some(b"v1".to_vec())),
                (11, Some(b"k2".to_vec()), None)
            ]
        );
        // Truncated record bodies are errors.
        let mut short = b.clone();
        short.truncate(b.len() - 3);
        assert!(for_each_record(&short, &h, |_, _, _| {}).is_err());
    }
}
