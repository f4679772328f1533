//! Whole Kafka request frames and responses over a blocking socket, for process tests and the
//! abuse bench: code that must behave as no real client would (pipeline and never read, send
//! half a frame, hold a connection open).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{ApiKey, FetchRequest, RequestHeader, ResponseHeader, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};

/// A whole request frame (length prefix, header, body) for `req` at `version`, from the
/// client id `strand-raw`.
pub fn frame<R: Request + Encodable>(req: &R, version: i16, correlation_id: i32) -> Vec<u8> {
    frame_as(req, version, correlation_id, "strand-raw")
}

/// As [`frame`], from another client id (client quotas are per client id).
pub fn frame_as<R: Request + Encodable>(
    req: &R,
    version: i16,
    correlation_id: i32,
    client_id: &str,
) -> Vec<u8> {
    let mut header = RequestHeader::default();
    header.request_api_key = R::KEY;
    header.request_api_version = version;
    header.correlation_id = correlation_id;
    header.client_id = Some(StrBytes::from_string(client_id.to_string()));
    let header_version = ApiKey::try_from(R::KEY).map_or(1, |k| k.request_header_version(version));
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    // Encoding a message of a version its type knows cannot fail; a caller passing another
    // version gets the bytes encoded so far, which the broker refuses.
    let _ = header.encode(&mut buf, header_version);
    let _ = req.encode(&mut buf, version);
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    buf.to_vec()
}

/// Reads one response to `R` at `version`; `None` when the connection closed, the read timed
/// out or the answer did not decode whole.
pub fn read_response<R: Request>(s: &mut TcpStream, version: i16) -> Option<R::Response>
where
    R::Response: Decodable,
{
    let key = ApiKey::try_from(R::KEY).ok()?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut frame = vec![0u8; usize::try_from(i32::from_be_bytes(len)).ok()?];
    s.read_exact(&mut frame).ok()?;
    let mut frame = Bytes::from(frame);
    ResponseHeader::decode(&mut frame, key.response_header_version(version)).ok()?;
    let r = R::Response::decode(&mut frame, version).ok()?;
    (!frame.has_remaining()).then_some(r)
}

/// One request on a new connection; `None` when it was not answered within `timeout`.
pub fn call<R: Request + Encodable>(
    addr: SocketAddr,
    req: &R,
    version: i16,
    timeout: Duration,
) -> Option<R::Response>
where
    R::Response: Decodable,
{
    let mut s = TcpStream::connect_timeout(&addr, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.write_all(&frame(req, version, 1)).ok()?;
    read_response::<R>(&mut s, version)
}

/// A consumer's Fetch (no session, no leader epoch) of `partition` of `topic` from `offset`,
/// `max` bytes at most (request and partition), waiting up to `max_wait_ms` for `min_bytes`;
/// `rack` is the client's rack id (KIP-392; empty for none).
pub fn consumer_fetch(
    topic: &str,
    partition: i32,
    offset: i64,
    min_bytes: i32,
    max_wait_ms: i32,
    max: i32,
    rack: &str,
) -> FetchRequest {
    let mut p = FetchPartition::default();
    p.partition = partition;
    p.fetch_offset = offset;
    p.partition_max_bytes = max;
    let mut t = FetchTopic::default();
    t.topic = TopicName(StrBytes::from_string(topic.to_string()));
    t.partitions = vec![p];
    let mut r = FetchRequest::default();
    r.replica_id = (-1).into();
    r.session_epoch = -1;
    r.max_wait_ms = max_wait_ms;
    r.min_bytes = min_bytes;
    r.max_bytes = max;
    r.rack_id = StrBytes::from_string(rack.to_string());
    r.topics = vec![t];
    r
}
