//! Malformed and hostile client input against the real `broker` process: bad frame lengths,
//! bad headers, unknown APIs and versions, undecodable bodies, invalid record batches, invalid
//! arguments to every supported API, a broker shutdown with stuck clients, and a seeded fuzz.
//!
//! After every input the broker must still be running and answer valid requests on a new
//! connection; data produced before the abuse must read back byte for byte; SIGTERM must still
//! stop it cleanly. Expected answers are Apache Kafka's; where the code is not the obvious
//! guess, the comment names the Kafka class that decides it.
//!
//! Every case runs even when an earlier one fails (a dead broker is restarted), and the test
//! fails at the end with the whole list, each with the broker's log lines from that case.
//!
//! Fuzz: `STRAND_FUZZ_SEED=<u64>` replays a run (the seed is printed and is in the failure
//! message), `STRAND_FUZZ_FRAMES=<n>` changes its length (default 3000, capped at ~25 s).

mod common;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::BrokerProcess;
use kafka_protocol::messages::create_topics_request::{
    CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig,
};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, CreateTopicsRequest,
    CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, DescribeConfigsRequest,
    DescribeConfigsResponse, FetchRequest, FetchResponse, InitProducerIdRequest,
    InitProducerIdResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest,
    MetadataResponse, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, ProduceRequest,
    ProduceResponse, RequestHeader, ResponseHeader, TopicName, TransactionalId,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

// ---------------------------------------------------------------------------------------------
// Kafka error codes used below.

const NONE: i16 = 0;
const OFFSET_OUT_OF_RANGE: i16 = 1;
const CORRUPT_MESSAGE: i16 = 2;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const MESSAGE_TOO_LARGE: i16 = 10;
const INVALID_TOPIC_EXCEPTION: i16 = 17;
const INVALID_REQUIRED_ACKS: i16 = 21;
const UNSUPPORTED_VERSION: i16 = 35;
const TOPIC_ALREADY_EXISTS: i16 = 36;
const INVALID_PARTITIONS: i16 = 37;
const INVALID_REPLICATION_FACTOR: i16 = 38;
const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
const INVALID_CONFIG: i16 = 40;
const INVALID_REQUEST: i16 = 42;
const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
const UNSUPPORTED_COMPRESSION_TYPE: i16 = 76;
const INVALID_RECORD: i16 = 87;
const UNKNOWN_TOPIC_ID: i16 = 100;

const CLIENT_ID: &str = "malformed-input-test";
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Kafka's socket.request.max.bytes default, the broker's --max-request-bytes default.
const DEFAULT_MAX_REQUEST_BYTES: i64 = 104_857_600;

// ---------------------------------------------------------------------------------------------
// Wire helpers.

static CORRELATION: AtomicI32 = AtomicI32::new(1);

fn next_correlation_id() -> i32 {
    CORRELATION.fetch_add(1, Ordering::Relaxed)
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn topic_name(s: &str) -> TopicName {
    TopicName(sb(s))
}

fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    Ok(s)
}

/// `payload` with its 4-byte big-endian length prefix.
fn framed(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 4);
    out.extend_from_slice(&(payload.len() as i32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A non-flexible (v1) request header, for keys and versions the protocol crate cannot encode.
fn raw_header(api_key: i16, version: i16, correlation_id: i32) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&api_key.to_be_bytes());
    h.extend_from_slice(&version.to_be_bytes());
    h.extend_from_slice(&correlation_id.to_be_bytes());
    h.extend_from_slice(&(CLIENT_ID.len() as i16).to_be_bytes());
    h.extend_from_slice(CLIENT_ID.as_bytes());
    h
}

/// Header and body of a valid request (no length prefix).
fn encode_request_as<R: Encodable>(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    client_id: &str,
    body: &R,
) -> Vec<u8> {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(sb(client_id)))
        .encode(&mut buf, key.request_header_version(version))
        .expect("encode request header");
    body.encode(&mut buf, version)
        .unwrap_or_else(|e| panic!("cannot encode {key:?} v{version}: {e}"));
    buf.to_vec()
}

fn encode_request<R: Encodable>(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &R,
) -> Vec<u8> {
    encode_request_as(key, version, correlation_id, CLIENT_ID, body)
}

/// What came back on a connection.
#[derive(Debug)]
enum Reply {
    /// One whole response frame (without its length prefix).
    Frame(Vec<u8>),
    /// The broker closed (or reset) the connection without sending anything more.
    Closed,
    /// Nothing within the read timeout.
    Silent,
    /// A partial or impossible frame.
    Broken(String),
}

/// Fills `buf`; Ok(false) on a clean EOF before the first byte.
fn read_full(s: &mut TcpStream, buf: &mut [u8]) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match s.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn read_reply(s: &mut TcpStream) -> Reply {
    let mut len = [0u8; 4];
    match read_full(s, &mut len) {
        Ok(true) => {}
        Ok(false) => return Reply::Closed,
        Err(e) if is_timeout(&e) => return Reply::Silent,
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return Reply::Broken("connection closed inside a length prefix".into());
        }
        Err(_) => return Reply::Closed, // reset
    }
    let n = i32::from_be_bytes(len);
    if n < 0 {
        return Reply::Broken(format!("response length {n}"));
    }
    let mut frame = vec![0u8; n as usize];
    match read_full(s, &mut frame) {
        Ok(true) => Reply::Frame(frame),
        Ok(false) if n == 0 => Reply::Frame(frame),
        Ok(false) => Reply::Broken(format!("connection closed before a {n}-byte response")),
        Err(e) => Reply::Broken(format!("reading a {n}-byte response: {e}")),
    }
}

/// The broker must close the connection without answering.
fn expect_closed(s: &mut TcpStream) -> Result<(), String> {
    match read_reply(s) {
        Reply::Closed => Ok(()),
        Reply::Frame(f) => Err(format!(
            "broker answered ({} bytes: {}) instead of closing the connection",
            f.len(),
            hex(&f, 64)
        )),
        Reply::Silent => Err(format!(
            "connection still open after {IO_TIMEOUT:?}; expected the broker to close it"
        )),
        Reply::Broken(why) => Err(format!("expected a clean close, got {why}")),
    }
}

fn decode_response<Resp: Decodable>(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    frame: Vec<u8>,
) -> Result<Resp, String> {
    let mut b = Bytes::from(frame);
    let header = ResponseHeader::decode(&mut b, key.response_header_version(version))
        .map_err(|e| format!("{key:?} v{version}: undecodable response header: {e}"))?;
    if header.correlation_id != correlation_id {
        return Err(format!(
            "{key:?} v{version}: correlation id {} in the response, {correlation_id} sent",
            header.correlation_id
        ));
    }
    let body = Resp::decode(&mut b, version)
        .map_err(|e| format!("{key:?} v{version}: undecodable response: {e}"))?;
    if !b.is_empty() {
        return Err(format!(
            "{key:?} v{version}: {} bytes left after the response body",
            b.len()
        ));
    }
    Ok(body)
}

/// Sends one valid request on `s` and decodes its response.
fn round_trip<Req: Encodable, Resp: Decodable>(
    s: &mut TcpStream,
    key: ApiKey,
    version: i16,
    req: &Req,
) -> Result<Resp, String> {
    let cid = next_correlation_id();
    s.write_all(&framed(&encode_request(key, version, cid, req)))
        .map_err(|e| format!("{key:?} v{version}: write failed: {e}"))?;
    match read_reply(s) {
        Reply::Frame(f) => decode_response(key, version, cid, f),
        other => Err(format!("{key:?} v{version}: no response: {other:?}")),
    }
}

/// One valid request on a new connection.
fn call<Req: Encodable, Resp: Decodable>(
    addr: SocketAddr,
    key: ApiKey,
    version: i16,
    req: &Req,
) -> Result<Resp, String> {
    let mut s = connect(addr)?;
    round_trip(&mut s, key, version, req)
}

fn hex(b: &[u8], max: usize) -> String {
    let mut s: String = b.iter().take(max).map(|x| format!("{x:02x}")).collect();
    if b.len() > max {
        s.push_str(&format!("...(+{} bytes)", b.len() - max));
    }
    s
}

fn check_code(what: &str, got: i16, want: i16) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: error code {got}, expected {want}"))
    }
}

// ---------------------------------------------------------------------------------------------
// Request builders.

fn api_versions_request() -> ApiVersionsRequest {
    ApiVersionsRequest::default()
        .with_client_software_name(sb("strand-malformed-input"))
        .with_client_software_version(sb("1.0"))
}

fn metadata_request(topics: &[&str], auto_create: bool) -> MetadataRequest {
    MetadataRequest::default()
        .with_topics(Some(
            topics
                .iter()
                .map(|t| MetadataRequestTopic::default().with_name(Some(topic_name(t))))
                .collect(),
        ))
        .with_allow_auto_topic_creation(auto_create)
}

fn produce_request(acks: i16, parts: Vec<(&str, i32, Option<Vec<u8>>)>) -> ProduceRequest {
    let mut topics: Vec<TopicProduceData> = Vec::new();
    for (topic, partition, records) in parts {
        let pd = PartitionProduceData::default()
            .with_index(partition)
            .with_records(records.map(Bytes::from));
        match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
            Some(t) => t.partition_data.push(pd),
            None => topics.push(
                TopicProduceData::default()
                    .with_name(topic_name(topic))
                    .with_partition_data(vec![pd]),
            ),
        }
    }
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(10_000)
        .with_topic_data(topics)
}

fn fetch_request(topic: &str, partition: i32, offset: i64) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(64 << 20)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(topic_name(topic))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(partition)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(16 << 20),
                ]),
        ])
}

fn list_offsets_request(topic: &str, partition: i32, timestamp: i64) -> ListOffsetsRequest {
    ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(topic_name(topic))
                .with_partitions(vec![
                    ListOffsetsPartition::default()
                        .with_partition_index(partition)
                        .with_timestamp(timestamp),
                ]),
        ])
}

fn creatable(name: &str, partitions: i32, replication: i16) -> CreatableTopic {
    CreatableTopic::default()
        .with_name(topic_name(name))
        .with_num_partitions(partitions)
        .with_replication_factor(replication)
}

fn create_topics_request(topics: Vec<CreatableTopic>, validate_only: bool) -> CreateTopicsRequest {
    CreateTopicsRequest::default()
        .with_topics(topics)
        .with_timeout_ms(10_000)
        .with_validate_only(validate_only)
}

fn offset_for_leader_epoch_request(
    topic: &str,
    partition: i32,
    epoch: i32,
) -> OffsetForLeaderEpochRequest {
    OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![
            OffsetForLeaderTopic::default()
                .with_topic(topic_name(topic))
                .with_partitions(vec![
                    OffsetForLeaderPartition::default()
                        .with_partition(partition)
                        .with_current_leader_epoch(-1)
                        .with_leader_epoch(epoch),
                ]),
        ])
}

fn describe_configs_request(resource_type: i8, name: &str) -> DescribeConfigsRequest {
    DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(sb(name))
            .with_configuration_keys(None),
    ])
}

// ---------------------------------------------------------------------------------------------
// Record batches (v2), built by hand so they can be broken precisely.
//
// Header offsets: 0 baseOffset i64 | 8 batchLength i32 | 12 partitionLeaderEpoch i32 |
// 16 magic i8 | 17 crc u32 | 21 attributes i16 | 23 lastOffsetDelta i32 | 27 baseTimestamp i64 |
// 35 maxTimestamp i64 | 43 producerId i64 | 51 producerEpoch i16 | 53 baseSequence i32 |
// 57 recordsCount i32 | 61 records. The CRC-32C covers bytes 21.. .

const MAGIC_AT: usize = 16;
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const RECORDS_COUNT_AT: usize = 57;
const BATCH_HEADER_LEN: usize = 61;

fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn record_bytes(offset_delta: i64, value: &[u8]) -> Vec<u8> {
    let mut rec = vec![0u8]; // attributes
    put_varint(&mut rec, 0); // timestamp delta
    put_varint(&mut rec, offset_delta);
    put_varint(&mut rec, -1); // null key
    put_varint(&mut rec, value.len() as i64);
    rec.extend_from_slice(value);
    put_varint(&mut rec, 0); // no headers
    let mut out = Vec::new();
    put_varint(&mut out, rec.len() as i64);
    out.extend(rec);
    out
}

/// A valid batch of `values` (base offset 0, CreateTime now: an old timestamp would let
/// time-based retention delete the baseline on a restart).
fn batch_with(values: &[Vec<u8>], producer: (i64, i16, i32), attributes: i16) -> Vec<u8> {
    let count = values.len() as i32;
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut b = Vec::new();
    b.extend(0i64.to_be_bytes());
    b.extend(0i32.to_be_bytes()); // batch length, set by reseal
    b.extend((-1i32).to_be_bytes());
    b.push(2);
    b.extend(0u32.to_be_bytes()); // crc, set by reseal
    b.extend(attributes.to_be_bytes());
    b.extend((count - 1).to_be_bytes());
    b.extend(ts.to_be_bytes());
    b.extend(ts.to_be_bytes());
    b.extend(producer.0.to_be_bytes());
    b.extend(producer.1.to_be_bytes());
    b.extend(producer.2.to_be_bytes());
    b.extend(count.to_be_bytes());
    for (i, v) in values.iter().enumerate() {
        b.extend(record_bytes(i as i64, v));
    }
    reseal(&mut b);
    b
}

fn batch(values: &[Vec<u8>]) -> Vec<u8> {
    batch_with(values, (-1, -1, -1), 0)
}

fn values(prefix: &str, n: usize, len: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut v = format!("{prefix}-{i}-").into_bytes();
            v.resize(len.max(v.len()), b'a' + (i % 26) as u8);
            v
        })
        .collect()
}

/// Recomputes the batch length and the CRC after an edit.
fn reseal(b: &mut [u8]) {
    let len = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
}

fn set_i16(b: &mut [u8], at: usize, v: i16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}
fn set_i32(b: &mut [u8], at: usize, v: i32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// Splits a fetched log into its batches.
fn split_batches(mut log: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    while !log.is_empty() {
        if log.len() < 12 {
            return Err(format!("{} stray bytes after the last batch", log.len()));
        }
        let len = i32::from_be_bytes(log[8..12].try_into().unwrap());
        let total = 12 + usize::try_from(len).map_err(|_| format!("batch length {len}"))?;
        if total > log.len() {
            return Err(format!("batch of {total} bytes, {} present", log.len()));
        }
        out.push(log[..total].to_vec());
        log = &log[total..];
    }
    Ok(out)
}

fn base_offset_of(b: &[u8]) -> i64 {
    i64::from_be_bytes(b[0..8].try_into().unwrap())
}

// ---------------------------------------------------------------------------------------------
// Higher-level client operations.

fn create_topic(
    addr: SocketAddr,
    name: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> Result<(), String> {
    let topic = creatable(name, partitions, 1).with_configs(
        configs
            .iter()
            .map(|(k, v)| {
                CreatableTopicConfig::default()
                    .with_name(sb(k))
                    .with_value(Some(sb(v)))
            })
            .collect(),
    );
    let r: CreateTopicsResponse = call(
        addr,
        ApiKey::CreateTopics,
        7,
        &create_topics_request(vec![topic], false),
    )?;
    let code = r.topics.first().map_or(-1, |t| t.error_code);
    check_code(&format!("creating topic {name}"), code, NONE)
}

/// Produces `records` to one partition (acks=all, Produce v9) and returns the partition's
/// error code and base offset.
fn produce(
    addr: SocketAddr,
    version: i16,
    acks: i16,
    topic: &str,
    partition: i32,
    records: Option<Vec<u8>>,
) -> Result<(i16, i64), String> {
    let r: ProduceResponse = call(
        addr,
        ApiKey::Produce,
        version,
        &produce_request(acks, vec![(topic, partition, records)]),
    )?;
    let p = r
        .responses
        .first()
        .and_then(|t| t.partition_responses.first())
        .ok_or("produce response without a partition")?;
    Ok((p.error_code, p.base_offset))
}

fn fetch_partition(
    addr: SocketAddr,
    version: i16,
    req: &FetchRequest,
) -> Result<(i16, PartitionData), String> {
    let r: FetchResponse = call(addr, ApiKey::Fetch, version, req)?;
    let p = r
        .responses
        .first()
        .and_then(|t| t.partitions.first())
        .cloned()
        .ok_or_else(|| {
            format!(
                "fetch response without a partition (top-level error {})",
                r.error_code
            )
        })?;
    Ok((r.error_code, p))
}

/// Every batch of a partition up to its high watermark, as stored.
fn read_log(addr: SocketAddr, topic: &str, partition: i32) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let (top, p) = fetch_partition(addr, 12, &fetch_request(topic, partition, offset))?;
        if top != NONE || p.error_code != NONE {
            return Err(format!(
                "fetching {topic}-{partition} at {offset}: errors {top}/{}",
                p.error_code
            ));
        }
        let records = p.records.unwrap_or_default();
        if records.is_empty() {
            if offset < p.high_watermark {
                return Err(format!(
                    "fetch of {topic}-{partition} at {offset} returned nothing below the high watermark {}",
                    p.high_watermark
                ));
            }
            return Ok(out);
        }
        for b in split_batches(&records)? {
            let last_delta = i32::from_be_bytes(b[23..27].try_into().unwrap());
            offset = base_offset_of(&b) + i64::from(last_delta) + 1;
            out.extend_from_slice(&b);
        }
    }
}

fn latest_offset(addr: SocketAddr, topic: &str, partition: i32) -> Result<i64, String> {
    let r: ListOffsetsResponse = call(
        addr,
        ApiKey::ListOffsets,
        7,
        &list_offsets_request(topic, partition, -1),
    )?;
    let p = r
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .ok_or("ListOffsets response without a partition")?;
    check_code("ListOffsets latest", p.error_code, NONE)?;
    Ok(p.offset)
}

/// The live broker's advertised versions, from ApiVersions v3.
fn advertised_versions(addr: SocketAddr) -> Result<Vec<(i16, i16, i16)>, String> {
    let r: ApiVersionsResponse = call(addr, ApiKey::ApiVersions, 3, &api_versions_request())?;
    check_code("ApiVersions v3", r.error_code, NONE)?;
    Ok(r.api_keys
        .iter()
        .map(|k| (k.api_key, k.min_version, k.max_version))
        .collect())
}

// ---------------------------------------------------------------------------------------------
// Broker log inspection.

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

fn read_log_from(path: &PathBuf, start: usize) -> String {
    use std::io::{Seek, SeekFrom};
    let mut tail = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path)
        && f.seek(SeekFrom::Start(start as u64)).is_ok()
    {
        let _ = f.read_to_end(&mut tail);
    }
    strip_ansi(&String::from_utf8_lossy(&tail))
}

/// Lines naming `peer` exactly (not a longer port that starts with the same digits).
fn lines_naming(log: &str, peer: SocketAddr) -> Vec<String> {
    let needle = peer.to_string();
    log.lines()
        .filter(|l| {
            l.match_indices(&needle)
                .any(|(i, _)| !l[i + needle.len()..].starts_with(|c: char| c.is_ascii_digit()))
        })
        .map(str::to_string)
        .collect()
}

/// The last `n` log lines, without backtrace frames (RUST_BACKTRACE may be set).
fn last_lines(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            let frame = t
                .split_once(": ")
                .is_some_and(|(num, _)| !num.is_empty() && num.bytes().all(|b| b.is_ascii_digit()));
            !(frame || t.starts_with("at ") || t.starts_with("note: Some details are omitted"))
        })
        .collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A log excerpt for a report, or nothing when the log is empty.
fn log_excerpt(title: &str, log: &str, n: usize) -> String {
    let lines = last_lines(log, n);
    if lines.trim().is_empty() {
        String::new()
    } else {
        format!("\n    --- {title} ---\n{lines}")
    }
}

/// How many WARN lines about one connection a rejected input may cause.
#[derive(Clone, Copy)]
enum Warn {
    /// Exactly one (the brief: unknown API key, unsupported version).
    One,
    /// No flood: at most one.
    AtMostOne,
}

/// What a case gets: the broker's address and its log from the start of the case.
struct Probe {
    addr: SocketAddr,
    log_path: PathBuf,
    log_start: usize,
}

impl Probe {
    fn log_since(&self) -> String {
        read_log_from(&self.log_path, self.log_start)
    }

    /// Sends `bytes` on a new connection; the broker must close it without answering, and log
    /// as `warn` says about it.
    fn expect_close(&self, bytes: &[u8], warn: Warn) -> Result<(), String> {
        let mut s = connect(self.addr)?;
        let peer = s.local_addr().unwrap();
        // The broker may close before it has read everything; that is fine.
        let _ = s.write_all(bytes);
        let _ = s.flush();
        expect_closed(&mut s)?;
        self.check_warns(peer, warn)
    }

    /// Sends `bytes` on a new connection; the broker may answer with one well-formed frame
    /// or close the connection, nothing else.
    fn expect_close_or_answer(&self, bytes: &[u8]) -> Result<(), String> {
        let mut s = connect(self.addr)?;
        let peer = s.local_addr().unwrap();
        let _ = s.write_all(bytes);
        let _ = s.shutdown(Shutdown::Write);
        match read_reply(&mut s) {
            Reply::Frame(_) | Reply::Closed => {}
            Reply::Silent => return Err(format!("no answer and no close within {IO_TIMEOUT:?}")),
            Reply::Broken(why) => return Err(why),
        }
        expect_closed(&mut s)?;
        self.check_warns(peer, Warn::AtMostOne)
    }

    fn check_warns(&self, peer: SocketAddr, warn: Warn) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let warns: Vec<String> = lines_naming(&self.log_since(), peer)
                .into_iter()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                .collect();
            let ok = match warn {
                Warn::One => warns.len() == 1 && warns[0].contains("WARN"),
                Warn::AtMostOne => warns.len() <= 1,
            };
            if ok && matches!(warn, Warn::AtMostOne) {
                // Give a flood the chance to show.
                std::thread::sleep(Duration::from_millis(30));
                let again = lines_naming(&self.log_since(), peer)
                    .into_iter()
                    .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                    .count();
                if again <= 1 {
                    return Ok(());
                }
            } else if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                let want = match warn {
                    Warn::One => "exactly one WARN line",
                    Warn::AtMostOne => "at most one WARN/ERROR line",
                };
                return Err(format!(
                    "expected {want} naming connection {peer}, found {}: {warns:#?}",
                    warns.len()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The harness: a broker with known data, cases that cannot hide each other, final checks.

struct Harness {
    name: &'static str,
    _dir: tempfile::TempDir,
    broker: BrokerProcess,
    /// The topic written before the abuse: (name, partition count).
    keep: (String, i32),
    /// Its log per partition right after it was written.
    baseline: Vec<Vec<u8>>,
    failures: Vec<String>,
    cases: usize,
}

impl Harness {
    /// Starts a broker and writes a few batches to `keep` (2 partitions) with Produce v9.
    fn start(name: &'static str, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let broker = BrokerProcess::start(&dir.path().join("data"), args);
        let mut h = Self {
            name,
            _dir: dir,
            broker,
            keep: ("keep".to_string(), 2),
            baseline: Vec::new(),
            failures: Vec::new(),
            cases: 0,
        };
        h.write_baseline();
        h
    }

    fn addr(&self) -> SocketAddr {
        self.broker.kafka
    }

    fn write_baseline(&mut self) {
        let addr = self.addr();
        let (topic, partitions) = self.keep.clone();
        create_topic(addr, &topic, partitions, &[]).unwrap();
        for p in 0..partitions {
            let mut produced = Vec::new();
            for i in 0..(3 - p as usize) {
                let b = batch(&values(&format!("{topic}-{p}-{i}"), 3 + i, 20 + 10 * i));
                let (code, base) = produce(addr, 9, -1, &topic, p, Some(b.clone())).unwrap();
                assert_eq!(code, NONE, "baseline produce to {topic}-{p}");
                produced.push((base, b));
            }
            let log = read_log(addr, &topic, p).unwrap();
            let stored = split_batches(&log).unwrap();
            assert_eq!(
                stored.len(),
                produced.len(),
                "baseline batches of {topic}-{p}"
            );
            for ((base, sent), got) in produced.iter().zip(&stored) {
                assert_eq!(base_offset_of(got), *base, "stored base offset");
                // The broker rewrites the base offset (0..8) and the leader epoch (12..16).
                assert_eq!(got[8..12], sent[8..12], "stored batch length");
                assert_eq!(
                    got[16..],
                    sent[16..],
                    "stored batch bytes after the header prefix"
                );
            }
            self.baseline.push(log);
        }
    }

    fn probe(&self) -> Probe {
        Probe {
            addr: self.addr(),
            log_path: self.broker.log_path.clone(),
            log_start: std::fs::metadata(&self.broker.log_path).map_or(0, |m| m.len() as usize),
        }
    }

    /// Runs one case, then checks the broker is alive and serving on a new connection (and
    /// restarts it if not, so later cases still run).
    fn case(&mut self, name: &str, f: impl FnOnce(&Probe) -> Result<(), String>) {
        self.cases += 1;
        let probe = self.probe();
        let mut problems = Vec::new();
        if let Err(e) = f(&probe) {
            problems.push(e);
        }
        if let Err(e) = self.check_alive() {
            problems.push(format!("broker not healthy afterwards: {e}"));
            self.restart();
        }
        let log = probe.log_since();
        if log.contains("panicked") {
            problems.push("the broker log shows a panic".into());
        }
        if !problems.is_empty() {
            self.failures.push(format!(
                "[{}] {name}:\n    {}{}",
                self.name,
                problems.join("\n    "),
                log_excerpt("broker log during the case", &log, 15)
            ));
        }
    }

    /// Running, and a new connection gets valid ApiVersions and Metadata answers.
    fn check_alive(&mut self) -> Result<(), String> {
        if !self.broker.is_running() {
            return Err("the broker process exited".into());
        }
        let mut s = connect(self.addr())?;
        let av: ApiVersionsResponse =
            round_trip(&mut s, ApiKey::ApiVersions, 3, &api_versions_request())?;
        check_code("liveness ApiVersions v3", av.error_code, NONE)?;
        if !av
            .api_keys
            .iter()
            .any(|k| k.api_key == ApiKey::Produce as i16)
        {
            return Err("liveness ApiVersions: Produce not advertised".into());
        }
        let (topic, partitions) = self.keep.clone();
        let md: MetadataResponse = round_trip(
            &mut s,
            ApiKey::Metadata,
            12,
            &metadata_request(&[&topic], false),
        )?;
        let t = md.topics.first().ok_or("liveness Metadata: no topic")?;
        check_code("liveness Metadata", t.error_code, NONE)?;
        if t.partitions.len() != partitions as usize {
            return Err(format!(
                "liveness Metadata: {} partitions of {topic}, expected {partitions}",
                t.partitions.len()
            ));
        }
        Ok(())
    }

    fn restart(&mut self) {
        self.broker.kill9();
        self.broker.spawn();
    }

    /// Data written before the abuse reads back unchanged, no task panicked, SIGTERM stops the
    /// broker cleanly; then every failure is reported.
    fn finish(mut self) {
        let addr = self.addr();
        let (topic, partitions) = self.keep.clone();
        for p in 0..partitions {
            match read_log(addr, &topic, p) {
                Ok(log) if log == self.baseline[p as usize] => {}
                Ok(log) => self.failures.push(format!(
                    "[{}] data written before the abuse changed in {topic}-{p}: {} bytes before, {} now",
                    self.name,
                    self.baseline[p as usize].len(),
                    log.len()
                )),
                Err(e) => self.failures.push(format!(
                    "[{}] cannot read back {topic}-{p}: {e}",
                    self.name
                )),
            }
        }
        let log = read_log_from(&self.broker.log_path, 0);
        if !self.broker.terminate() {
            self.failures.push(format!(
                "[{}] SIGTERM did not stop the broker cleanly within 30 s (or it exited with an error); log tail:\n{}",
                self.name,
                last_lines(&read_log_from(&self.broker.log_path, 0), 15)
            ));
        }
        if log.contains("panicked") {
            let panics: Vec<&str> = log.lines().filter(|l| l.contains("panicked")).collect();
            self.failures.push(format!(
                "[{}] the broker log shows panics: {panics:#?}",
                self.name
            ));
        }
        assert!(
            self.failures.is_empty(),
            "{} failures in {} malformed-input cases:\n\n{}",
            self.failures.len(),
            self.cases,
            self.failures.join("\n\n")
        );
        eprintln!("[{}] {} cases passed", self.name, self.cases);
    }
}

// ---------------------------------------------------------------------------------------------
// Frames and request headers.

#[test]
fn bad_frames_headers_and_versions_close_only_that_connection() {
    let mut h = Harness::start("frames", &[]);
    let advertised = advertised_versions(h.addr()).unwrap();
    assert!(!advertised.is_empty());

    // Frame lengths outside 0..=max: closed at once, without waiting for a body.
    for len in [
        -1i64,
        i64::from(i32::MIN),
        DEFAULT_MAX_REQUEST_BYTES + 1,
        i64::from(i32::MAX),
    ] {
        h.case(&format!("frame length {len}"), |p| {
            let mut bytes = (len as i32).to_be_bytes().to_vec();
            bytes.extend(raw_header(ApiKey::Metadata as i16, 1, 1));
            p.expect_close(&bytes, Warn::AtMostOne)
        });
    }
    // Frames too short for a request header.
    for len in [0usize, 1, 7] {
        h.case(&format!("{len}-byte frame"), |p| {
            p.expect_close(&framed(&vec![0u8; len]), Warn::AtMostOne)
        });
    }
    // Length prefix or frame cut short, then the client half-closes.
    h.case("2 bytes of a length prefix, then EOF", |p| {
        let mut s = connect(p.addr)?;
        s.write_all(&[0, 0]).map_err(|e| e.to_string())?;
        s.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
        expect_closed(&mut s)
    });
    h.case("100-byte frame with 10 bytes sent, then EOF", |p| {
        let mut s = connect(p.addr)?;
        let mut bytes = 100i32.to_be_bytes().to_vec();
        bytes.extend(&raw_header(ApiKey::Metadata as i16, 1, 1)[..10]);
        s.write_all(&bytes).map_err(|e| e.to_string())?;
        s.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
        expect_closed(&mut s)
    });

    // Unknown API keys: closed, one WARN line (Kafka closes too).
    for key in [9999i16, -1, i16::MAX, 1000] {
        h.case(&format!("unknown API key {key}"), |p| {
            let mut payload = raw_header(key, 0, 7);
            payload.extend([0u8; 8]);
            p.expect_close(&framed(&payload), Warn::One)
        });
    }
    // A key Kafka knows but this broker does not serve (OffsetCommit v8, FindCoordinator v4).
    for (key, version) in [(ApiKey::OffsetCommit, 8i16), (ApiKey::FindCoordinator, 4)] {
        if advertised.iter().any(|(k, _, _)| *k == key as i16) {
            continue;
        }
        h.case(&format!("unserved API {key:?} v{version}"), |p| {
            let payload = encode_request(key, version, 8, &default_body(key));
            p.expect_close(&framed(&payload), Warn::One)
        });
    }
    // Versions just outside every advertised range (below it only where a real version is
    // below the minimum), and absurd ones (not ApiVersions) for a few: every case writes one
    // WARN line, and the broker lets only a burst of 100 through before it rate-limits them,
    // so the cases stay well under that as APIs are added.
    for (i, &(key, min, max)) in advertised.iter().enumerate() {
        if key == ApiKey::ApiVersions as i16 {
            continue;
        }
        let below: &[i16] = if min > 0 { &[min - 1] } else { &[] };
        let absurd: &[i16] = if i < 4 {
            &[-1, i16::MAX, i16::MIN]
        } else {
            &[]
        };
        for &version in [max + 1].iter().chain(below).chain(absurd) {
            h.case(&format!("API key {key} unsupported v{version}"), |p| {
                let mut payload = raw_header(key, version, 9);
                payload.extend([0u8; 16]);
                p.expect_close(&framed(&payload), Warn::One)
            });
        }
    }

    // ApiVersions at a version the broker does not know: a v0 answer with UNSUPPORTED_VERSION
    // and the full list, and the connection stays usable (KIP-511).
    let (_, _, av_max) = *advertised
        .iter()
        .find(|(k, _, _)| *k == ApiKey::ApiVersions as i16)
        .expect("ApiVersions advertised");
    for version in [127i16, av_max + 1, i16::MAX, -1] {
        let advertised = advertised.clone();
        h.case(&format!("ApiVersions v{version}"), move |p| {
            let mut s = connect(p.addr)?;
            let cid = 0x0bad_cafe;
            let mut payload = raw_header(ApiKey::ApiVersions as i16, version, cid);
            // What a newer client would send: flexible header tags and a v3-style body.
            payload.extend([0u8, 7, b'c', b'l', b'i', b'e', b'n', b't', 2, b'9', 0]);
            s.write_all(&framed(&payload)).map_err(|e| e.to_string())?;
            let frame = match read_reply(&mut s) {
                Reply::Frame(f) => f,
                other => return Err(format!("no ApiVersions answer: {other:?}")),
            };
            let r: ApiVersionsResponse = decode_response(ApiKey::ApiVersions, 0, cid, frame)
                .map_err(|e| format!("answer is not a v0 ApiVersions response: {e}"))?;
            check_code("ApiVersions fallback", r.error_code, UNSUPPORTED_VERSION)?;
            let listed: Vec<(i16, i16, i16)> = r
                .api_keys
                .iter()
                .map(|k| (k.api_key, k.min_version, k.max_version))
                .collect();
            if listed != advertised {
                return Err(format!(
                    "fallback lists {listed:?}, v3 advertises {advertised:?}"
                ));
            }
            // The client retries on the same connection.
            let again: ApiVersionsResponse = round_trip(
                &mut s,
                ApiKey::ApiVersions,
                0,
                &ApiVersionsRequest::default(),
            )?;
            check_code("ApiVersions v0 retry", again.error_code, NONE)
        });
    }

    // Broken request headers on supported versions.
    h.case("header without client id", |p| {
        let mut payload = Vec::new();
        payload.extend((ApiKey::Metadata as i16).to_be_bytes());
        payload.extend(1i16.to_be_bytes());
        payload.extend(5i32.to_be_bytes());
        p.expect_close(&framed(&payload), Warn::AtMostOne)
    });
    h.case("client id longer than the frame", |p| {
        let mut payload = raw_header(ApiKey::Metadata as i16, 1, 5);
        payload.truncate(8);
        payload.extend(200i16.to_be_bytes());
        payload.extend(b"abc");
        p.expect_close(&framed(&payload), Warn::AtMostOne)
    });
    h.case("client id length -2", |p| {
        let mut payload = raw_header(ApiKey::Metadata as i16, 1, 5);
        payload.truncate(8);
        payload.extend((-2i16).to_be_bytes());
        payload.extend([0u8; 8]);
        p.expect_close(&framed(&payload), Warn::AtMostOne)
    });
    h.case("flexible header with tagged fields cut off", |p| {
        // Metadata v12 uses request header v2: client id then tagged fields.
        let mut payload = raw_header(ApiKey::Metadata as i16, 12, 5);
        payload.extend([5u8, 1]); // 5 tagged fields, tag 1, then nothing
        p.expect_close(&framed(&payload), Warn::AtMostOne)
    });
    h.case(
        "flexible header with a tagged field longer than the frame",
        |p| {
            let mut payload = raw_header(ApiKey::Metadata as i16, 12, 5);
            payload.extend([1u8, 0, 0xff, 0xff, 0xff, 0xff, 0x07, 1, 2, 3]);
            p.expect_close(&framed(&payload), Warn::AtMostOne)
        },
    );

    h.finish();
}

/// A default (empty) body of the right type for keys used above.
fn default_body(key: ApiKey) -> Box<dyn EncodeAny> {
    match key {
        ApiKey::OffsetCommit => Box::new(kafka_protocol::messages::OffsetCommitRequest::default()),
        ApiKey::FindCoordinator => {
            Box::new(kafka_protocol::messages::FindCoordinatorRequest::default())
        }
        other => panic!("no default body for {other:?}"),
    }
}

/// Object-safe encoding, so differently typed bodies fit one list.
trait EncodeAny {
    fn encode_any(&self, buf: &mut BytesMut, version: i16) -> anyhow::Result<()>;
}

impl<T: Encodable> EncodeAny for T {
    fn encode_any(&self, buf: &mut BytesMut, version: i16) -> anyhow::Result<()> {
        self.encode(buf, version)
    }
}

impl Encodable for Box<dyn EncodeAny> {
    fn encode<B: kafka_protocol::protocol::buf::ByteBufMut>(
        &self,
        buf: &mut B,
        version: i16,
    ) -> anyhow::Result<()> {
        let mut tmp = BytesMut::new();
        (**self).encode_any(&mut tmp, version)?;
        buf.put_slice(&tmp);
        Ok(())
    }
    fn compute_size(&self, version: i16) -> anyhow::Result<usize> {
        let mut tmp = BytesMut::new();
        (**self).encode_any(&mut tmp, version)?;
        Ok(tmp.len())
    }
}

// ---------------------------------------------------------------------------------------------
// Request bodies that do not decode.

/// A valid request of every supported API (one version each), for truncation.
fn valid_requests(keep: &str) -> Vec<(ApiKey, i16, Box<dyn EncodeAny>)> {
    let b = batch(&values("trunc", 2, 30));
    let mut out: Vec<(ApiKey, i16, Box<dyn EncodeAny>)> = vec![
        (
            ApiKey::Produce,
            9,
            Box::new(produce_request(-1, vec![(keep, 0, Some(b.clone()))])),
        ),
        (
            ApiKey::Produce,
            3,
            Box::new(produce_request(1, vec![(keep, 1, Some(b))])),
        ),
        (ApiKey::Fetch, 12, Box::new(fetch_request(keep, 0, 0))),
        (ApiKey::Fetch, 4, Box::new(fetch_request(keep, 0, 0))),
        (
            ApiKey::ListOffsets,
            7,
            Box::new(list_offsets_request(keep, 0, -2)),
        ),
        (
            ApiKey::Metadata,
            12,
            Box::new(metadata_request(&[keep], false)),
        ),
        (
            ApiKey::Metadata,
            1,
            Box::new(metadata_request(&[keep], true)),
        ),
        (ApiKey::ApiVersions, 3, Box::new(api_versions_request())),
        (
            ApiKey::CreateTopics,
            7,
            Box::new(create_topics_request(
                vec![creatable("never-created", 1, 1)],
                true,
            )),
        ),
        (
            ApiKey::DeleteTopics,
            6,
            Box::new(DeleteTopicsRequest::default().with_topics(vec![
                DeleteTopicState::default().with_name(Some(topic_name("never-existed"))),
            ])),
        ),
        (
            ApiKey::DeleteTopics,
            1,
            Box::new(
                DeleteTopicsRequest::default().with_topic_names(vec![topic_name("never-existed")]),
            ),
        ),
        (
            ApiKey::InitProducerId,
            4,
            Box::new(InitProducerIdRequest::default().with_transaction_timeout_ms(60_000)),
        ),
        (
            ApiKey::OffsetForLeaderEpoch,
            4,
            Box::new(offset_for_leader_epoch_request(keep, 0, 0)),
        ),
        (
            ApiKey::DescribeConfigs,
            4,
            Box::new(describe_configs_request(2, keep)),
        ),
    ];
    out.extend(group_requests(keep));
    out
}

#[test]
fn undecodable_bodies_close_only_that_connection() {
    let mut h = Harness::start("bodies", &[]);
    let keep = h.keep.0.clone();
    let leo_before: Vec<i64> = (0..2)
        .map(|p| latest_offset(h.addr(), &keep, p).unwrap())
        .collect();

    for (key, version, body) in valid_requests(&keep) {
        let payload = encode_request(key, version, 11, &body);
        let header_len = {
            let mut b = BytesMut::new();
            RequestHeader::default()
                .with_request_api_key(key as i16)
                .with_request_api_version(version)
                .with_client_id(Some(sb(CLIENT_ID)))
                .encode(&mut b, key.request_header_version(version))
                .unwrap();
            b.len()
        };
        let body_len = payload.len() - header_len;
        if body_len == 0 {
            continue; // nothing to cut (ApiVersions v0-2)
        }
        // Cut the body: last byte, half, all but the first byte.
        for keep_body in [body_len - 1, body_len / 2, 1] {
            let cut = &payload[..header_len + keep_body];
            h.case(
                &format!("{key:?} v{version} body cut to {keep_body} of {body_len} bytes"),
                |p| p.expect_close(&framed(cut), Warn::AtMostOne),
            );
        }
        // Header only.
        h.case(&format!("{key:?} v{version} header without body"), |p| {
            p.expect_close(&framed(&payload[..header_len]), Warn::AtMostOne)
        });
        // Body replaced by 0xff bytes (-1 lengths, huge varints). That can still be a valid
        // request (Metadata v1: null topics = all), so a well-formed answer is fine too.
        let mut garbage = payload[..header_len].to_vec();
        garbage.extend(vec![0xffu8; body_len.min(40)]);
        h.case(&format!("{key:?} v{version} body of 0xff bytes"), |p| {
            p.expect_close_or_answer(&framed(&garbage))
        });
    }

    // Array counts far beyond the frame. Kafka's generated readers refuse a count larger than
    // the bytes left ("Tried to allocate a collection of size ..."), so the connection closes.
    let huge_counts: Vec<(&str, i16, i16, Vec<u8>)> = vec![
        (
            "Metadata v1 with 2^31-1 topics in a 4-byte body",
            ApiKey::Metadata as i16,
            1,
            vec![0x7f, 0xff, 0xff, 0xff],
        ),
        (
            "Metadata v1 with 50 million topics",
            ApiKey::Metadata as i16,
            1,
            50_000_000i32.to_be_bytes().to_vec(),
        ),
        (
            "Produce v3 with 2^31-1 topics",
            ApiKey::Produce as i16,
            3,
            [
                &(-1i16).to_be_bytes()[..],  // null transactional id
                &1i16.to_be_bytes()[..],     // acks
                &1000i32.to_be_bytes()[..],  // timeout
                &i32::MAX.to_be_bytes()[..], // topic count
            ]
            .concat(),
        ),
        (
            "DescribeConfigs v1 with 2^31-1 resources",
            ApiKey::DescribeConfigs as i16,
            1,
            i32::MAX.to_be_bytes().to_vec(),
        ),
    ];
    for (name, key, version, body) in huge_counts {
        h.case(name, |p| {
            let mut payload = raw_header(key, version, 12);
            payload.extend(&body);
            p.expect_close(&framed(&payload), Warn::AtMostOne)
        });
    }
    // The same with compact (varint) counts in flexible versions.
    h.case("Metadata v12 with 2^32-2 topics (compact array)", |p| {
        let mut payload = raw_header(ApiKey::Metadata as i16, 12, 13);
        payload.push(0); // header tagged fields
        payload.extend([0xff, 0xff, 0xff, 0xff, 0x0f]);
        p.expect_close(&framed(&payload), Warn::AtMostOne)
    });
    h.case("Fetch v12 with 2^28 topics (compact array)", |p| {
        let mut payload = raw_header(ApiKey::Fetch as i16, 12, 14);
        payload.push(0); // header tagged fields
        payload.extend((-1i32).to_be_bytes()); // replica id
        payload.extend(0i32.to_be_bytes()); // max wait
        payload.extend(0i32.to_be_bytes()); // min bytes
        payload.extend(1000i32.to_be_bytes()); // max bytes
        payload.push(0); // isolation level
        payload.extend(0i32.to_be_bytes()); // session id
        payload.extend((-1i32).to_be_bytes()); // session epoch
        payload.extend([0x80, 0x80, 0x80, 0x80, 0x01]); // topics: 2^28 - 1
        p.expect_close(&framed(&payload), Warn::AtMostOne)
    });

    // None of the cut Produce requests may have written anything.
    let leo_after: Vec<i64> = (0..2)
        .map(|p| latest_offset(h.addr(), &keep, p).unwrap_or(-1))
        .collect();
    if leo_after != leo_before {
        h.failures.push(format!(
            "undecodable produce requests changed the log end offsets: {leo_before:?} -> {leo_after:?}"
        ));
    }
    h.finish();
}

// ---------------------------------------------------------------------------------------------
// Produce: record batches the broker must refuse with the right partition error.

#[test]
fn invalid_record_batches_get_kafkas_partition_errors() {
    let mut h = Harness::start("produce", &[]);
    let addr = h.addr();
    create_topic(addr, "small", 2, &[("max.message.bytes", "2000")]).unwrap();
    let good = || batch(&values("v", 3, 20));

    // (case, produce version, records, expected code). Every one must leave the log untouched.
    let mut cases: Vec<(String, i16, Option<Vec<u8>>, i16)> = Vec::new();
    {
        let mut b = good();
        let n = b.len();
        b[n - 1] ^= 0x01;
        cases.push((
            "a flipped record byte (bad CRC)".into(),
            9,
            Some(b),
            CORRUPT_MESSAGE,
        ));
        let mut b = good();
        b[17] ^= 0x80;
        cases.push(("a wrong CRC field".into(), 9, Some(b), CORRUPT_MESSAGE));
        let mut b = good();
        b.extend(good());
        cases.push(("two batches".into(), 9, Some(b), INVALID_RECORD));
        let mut b = good();
        b[0..8].copy_from_slice(&5i64.to_be_bytes());
        cases.push(("base offset 5".into(), 9, Some(b), INVALID_RECORD));
        let mut b = good();
        b[0..8].copy_from_slice(&(-1i64).to_be_bytes());
        cases.push(("base offset -1".into(), 9, Some(b), INVALID_RECORD));
        // Kafka's ProduceRequest.validateRecords (v3+): a batch whose magic is not 2 is an
        // InvalidRecordException, i.e. INVALID_RECORD (87), before any log-level check.
        let mut b = good();
        b[MAGIC_AT] = 1;
        cases.push(("magic 1".into(), 9, Some(b), INVALID_RECORD));
        let mut b = good();
        b[MAGIC_AT] = 0;
        cases.push(("magic 0".into(), 3, Some(b), INVALID_RECORD));
        cases.push((
            "a 3000-byte batch over max.message.bytes=2000".into(),
            9,
            Some(batch(&values("big", 3, 1000))),
            MESSAGE_TOO_LARGE,
        ));
        // validateRecords: "must have at least one record batch" -> INVALID_RECORD.
        cases.push(("empty records".into(), 9, Some(Vec::new()), INVALID_RECORD));
        // LogValidator.validateBatch: count and offset range must agree -> INVALID_RECORD.
        let mut b = good();
        set_i32(&mut b, LAST_OFFSET_DELTA_AT, 7);
        reseal(&mut b);
        cases.push((
            "lastOffsetDelta 7 for 3 records".into(),
            9,
            Some(b),
            INVALID_RECORD,
        ));
        let mut b = good();
        set_i32(&mut b, LAST_OFFSET_DELTA_AT, -1);
        set_i32(&mut b, RECORDS_COUNT_AT, 0);
        reseal(&mut b);
        cases.push((
            "recordsCount 0, lastOffsetDelta -1".into(),
            9,
            Some(b),
            INVALID_RECORD,
        ));
        // The record iterator must find exactly recordsCount records ("Incorrect declared
        // batch size") -> INVALID_RECORD. Header fields are self-consistent and the CRC valid.
        let mut b = batch(&values("few", 1, 20));
        set_i32(&mut b, LAST_OFFSET_DELTA_AT, 2);
        set_i32(&mut b, RECORDS_COUNT_AT, 3);
        reseal(&mut b);
        cases.push((
            "recordsCount 3 with 1 record present".into(),
            9,
            Some(b),
            INVALID_RECORD,
        ));
        let mut b = batch(&values("huge", 1, 20));
        set_i32(&mut b, LAST_OFFSET_DELTA_AT, i32::MAX - 1);
        set_i32(&mut b, RECORDS_COUNT_AT, i32::MAX);
        reseal(&mut b);
        cases.push((
            "recordsCount 2^31-1 with 1 record present".into(),
            9,
            Some(b),
            INVALID_RECORD,
        ));
        let mut b = batch(&values("extra", 2, 20));
        set_i32(&mut b, LAST_OFFSET_DELTA_AT, 0);
        set_i32(&mut b, RECORDS_COUNT_AT, 1);
        reseal(&mut b);
        cases.push((
            "recordsCount 1 with 2 records present".into(),
            9,
            Some(b),
            INVALID_RECORD,
        ));
        let mut b = batch(&values("hdr", 1, 20));
        b.truncate(BATCH_HEADER_LEN);
        set_i32(&mut b, LAST_OFFSET_DELTA_AT, 0);
        set_i32(&mut b, RECORDS_COUNT_AT, 1);
        reseal(&mut b);
        cases.push((
            "a header-only batch claiming 1 record".into(),
            9,
            Some(b),
            INVALID_RECORD,
        ));
        // Control batches from clients -> INVALID_RECORD.
        let b = batch_with(&values("ctl", 1, 8), (-1, -1, -1), 0x20);
        cases.push(("a control batch".into(), 9, Some(b), INVALID_RECORD));
        // Producer id without a sequence -> INVALID_RECORD.
        let b = batch_with(&values("pid", 2, 8), (4242, 0, -1), 0);
        cases.push((
            "producer id with base sequence -1".into(),
            9,
            Some(b),
            INVALID_RECORD,
        ));
        // zstd before Produce v7 -> UNSUPPORTED_COMPRESSION_TYPE (validateRecords).
        let b = batch_with(&values("zstd", 1, 8), (-1, -1, -1), 4);
        cases.push((
            "zstd attribute on Produce v3".into(),
            3,
            Some(b),
            UNSUPPORTED_COMPRESSION_TYPE,
        ));
    }
    for (name, version, records, want) in cases {
        h.case(&format!("Produce v{version}: {name}"), |p| {
            let before = latest_offset(p.addr, "small", 0)?;
            let (code, base) = produce(p.addr, version, -1, "small", 0, records)?;
            let after = latest_offset(p.addr, "small", 0)?;
            let mut errs = Vec::new();
            if code != want {
                errs.push(format!("partition error {code}, expected {want}"));
            }
            if code != NONE && base != -1 {
                errs.push(format!("base offset {base} on an error"));
            }
            if after != before {
                errs.push(format!("log end offset moved {before} -> {after}"));
            }
            if errs.is_empty() {
                Ok(())
            } else {
                Err(errs.join("; "))
            }
        });
    }

    // Outcomes that Kafka leaves less precise: any error, nothing written.
    let mut loose: Vec<(String, Option<Vec<u8>>)> = vec![("null records".into(), None)];
    {
        let b = good();
        loose.push(("batch cut after 40 bytes".into(), Some(b[..40].to_vec())));
        loose.push(("batch cut after 70 bytes".into(), Some(b[..70].to_vec())));
        let mut b = good();
        set_i32(&mut b, 8, 5000);
        loose.push(("batch length 5000 with fewer bytes".into(), Some(b)));
        let mut b = good();
        set_i32(&mut b, 8, 10);
        loose.push(("batch length 10".into(), Some(b)));
        let mut b = good();
        set_i16(&mut b, ATTRIBUTES_AT, 7);
        reseal(&mut b);
        loose.push(("compression codec 7".into(), Some(b)));
        let b = batch_with(&values("gz", 1, 8), (-1, -1, -1), 1);
        loose.push(("gzip attribute over plain bytes".into(), Some(b)));
        let b = batch_with(&values("txn", 1, 8), (4243, 0, 0), 0x10);
        loose.push((
            "a transactional batch without a transaction".into(),
            Some(b),
        ));
        let mut b = good();
        b.truncate(BATCH_HEADER_LEN + 3);
        reseal(&mut b);
        loose.push((
            "records section of 3 garbage bytes, valid CRC".into(),
            Some(b),
        ));
    }
    for (name, records) in loose {
        h.case(&format!("Produce v9: {name}"), |p| {
            let before = latest_offset(p.addr, "small", 1)?;
            let (code, base) = produce(p.addr, 9, -1, "small", 1, records)?;
            let after = latest_offset(p.addr, "small", 1)?;
            let mut errs = Vec::new();
            if code == NONE {
                errs.push(format!("accepted at offset {base}"));
            }
            if after != before {
                errs.push(format!("log end offset moved {before} -> {after}"));
            }
            if errs.is_empty() {
                Ok(())
            } else {
                Err(errs.join("; "))
            }
        });
    }

    // Where the batch is fine but the target or the request is not.
    let targets: Vec<(&str, &str, i32, i16, i16)> = vec![
        (
            "unknown topic",
            "no-such-topic",
            0,
            -1,
            UNKNOWN_TOPIC_OR_PARTITION,
        ),
        (
            "unknown partition 7",
            "small",
            7,
            -1,
            UNKNOWN_TOPIC_OR_PARTITION,
        ),
        ("partition -1", "small", -1, -1, UNKNOWN_TOPIC_OR_PARTITION),
        ("acks=5", "small", 0, 5, INVALID_REQUIRED_ACKS),
        ("acks=-2", "small", 0, -2, INVALID_REQUIRED_ACKS),
        ("acks=i16::MAX", "small", 0, i16::MAX, INVALID_REQUIRED_ACKS),
    ];
    for (name, topic, partition, acks, want) in targets {
        h.case(&format!("Produce v9: {name}"), |p| {
            let before = latest_offset(p.addr, "small", 0)?;
            let (code, _) = produce(p.addr, 9, acks, topic, partition, Some(good()))?;
            check_code(name, code, want)?;
            let after = latest_offset(p.addr, "small", 0)?;
            if after != before {
                return Err(format!("log end offset moved {before} -> {after}"));
            }
            Ok(())
        });
    }
    h.case("Produce v9: unknown topic is not auto-created", |p| {
        let md: MetadataResponse = call(
            p.addr,
            ApiKey::Metadata,
            12,
            &metadata_request(&["no-such-topic"], false),
        )?;
        let t = md.topics.first().ok_or("no topic in Metadata")?;
        check_code(
            "Metadata of no-such-topic",
            t.error_code,
            UNKNOWN_TOPIC_OR_PARTITION,
        )
    });
    // A whole batch followed by the start of another: Kafka's batch iterator stops at the
    // incomplete one and UnifiedLog.trimInvalidBytes appends only the whole batch; refusing
    // everything is fine too. Never a partial append or the stray bytes stored.
    h.case("Produce v9: a batch and 30 bytes of a second one", |p| {
        let before = latest_offset(p.addr, "small", 0)?;
        let whole = good();
        let mut records = whole.clone();
        records.extend(&good()[..30]);
        let (code, base) = produce(p.addr, 9, -1, "small", 0, Some(records))?;
        let after = latest_offset(p.addr, "small", 0)?;
        match code {
            NONE => {
                if base != before || after != before + 3 {
                    return Err(format!(
                        "accepted at {base}, log end offset {before} -> {after}; expected 3 records at {before}"
                    ));
                }
                let log = read_log(p.addr, "small", 0)?;
                let last = split_batches(&log)?.pop().ok_or("no batch stored")?;
                if last[16..] != whole[16..] || base_offset_of(&last) != before {
                    return Err("the stored batch is not the whole first batch".into());
                }
                Ok(())
            }
            _ if after != before => Err(format!(
                "error {code} but the log end offset moved {before} -> {after}"
            )),
            _ => Ok(()),
        }
    });
    // Kafka checks the transactional id only for transactional records (KafkaApis), so send
    // one: without an ongoing transaction it must be refused.
    h.case(
        "Produce v9: a transactional batch with a transactional id",
        |p| {
            let txn_batch = batch_with(&values("txn", 2, 8), (4244, 0, 0), 0x10);
            let req = produce_request(-1, vec![("small", 0, Some(txn_batch))])
                .with_transactional_id(Some(TransactionalId(sb("txn-1"))));
            let before = latest_offset(p.addr, "small", 0)?;
            let r: ProduceResponse = call(p.addr, ApiKey::Produce, 9, &req)?;
            let code = r.responses[0].partition_responses[0].error_code;
            let after = latest_offset(p.addr, "small", 0)?;
            if code == NONE || after != before {
                return Err(format!("code {code}, log end offset {before} -> {after}"));
            }
            Ok(())
        },
    );
    h.case("one bad and one good partition in one request", |p| {
        let mut bad = good();
        bad[20] ^= 0xff;
        let before = latest_offset(p.addr, "small", 1)?;
        let req = produce_request(
            -1,
            vec![("small", 0, Some(bad)), ("small", 1, Some(good()))],
        );
        let r: ProduceResponse = call(p.addr, ApiKey::Produce, 9, &req)?;
        let codes: Vec<(i32, i16, i64)> = r.responses[0]
            .partition_responses
            .iter()
            .map(|x| (x.index, x.error_code, x.base_offset))
            .collect();
        if codes != vec![(0, CORRUPT_MESSAGE, -1), (1, NONE, before)] {
            return Err(format!(
                "per-partition results {codes:?}, expected [(0, 2, -1), (1, 0, {before})]"
            ));
        }
        Ok(())
    });
    // acks=0: no response; on a partition error Kafka closes the connection so the client
    // learns of it and refreshes metadata (KafkaApis.handleProduceRequest).
    h.case(
        "acks=0 with a good batch: no response, connection stays",
        |p| {
            let before = latest_offset(p.addr, "small", 0)?;
            let mut s = connect(p.addr)?;
            let req = produce_request(0, vec![("small", 0, Some(good()))]);
            s.write_all(&framed(&encode_request(ApiKey::Produce, 9, 76, &req)))
                .map_err(|e| e.to_string())?;
            let av: ApiVersionsResponse =
                round_trip(&mut s, ApiKey::ApiVersions, 3, &api_versions_request())?;
            check_code("ApiVersions after acks=0", av.error_code, NONE)?;
            let after = latest_offset(p.addr, "small", 0)?;
            if after != before + 3 {
                return Err(format!("log end offset {before} -> {after}, expected +3"));
            }
            Ok(())
        },
    );
    // That append is not abuse.
    let keep_small_0 = read_log(addr, "small", 0).unwrap();
    h.case(
        "acks=0 with a bad batch: no response, connection closed",
        |p| {
            let before = latest_offset(p.addr, "small", 0)?;
            let mut s = connect(p.addr)?;
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let mut bad = good();
            bad[30] ^= 1;
            let req = produce_request(0, vec![("small", 0, Some(bad))]);
            s.write_all(&framed(&encode_request(ApiKey::Produce, 9, 77, &req)))
                .map_err(|e| e.to_string())?;
            let closed = match read_reply(&mut s) {
                Reply::Closed => Ok(()),
                Reply::Silent => Err("the connection stayed open (3 s) after an acks=0 produce \
                                  failed with CORRUPT_MESSAGE; Kafka closes it"
                    .to_string()),
                other => Err(format!("expected a close, got {other:?}")),
            };
            let after = latest_offset(p.addr, "small", 0)?;
            if after != before {
                return Err(format!("log end offset moved {before} -> {after}"));
            }
            closed
        },
    );
    h.case("small-0 holds exactly the accepted batches", |p| {
        let log = read_log(p.addr, "small", 0)?;
        if log != keep_small_0 {
            return Err(format!(
                "{} bytes stored, {} after the last accepted append",
                log.len(),
                keep_small_0.len()
            ));
        }
        Ok(())
    });

    h.finish();
}

// ---------------------------------------------------------------------------------------------
// Bad arguments to the other APIs.

#[test]
fn invalid_arguments_get_kafkas_error_codes() {
    let mut h = Harness::start("arguments", &[]);
    let keep = h.keep.0.clone();
    let leo = latest_offset(h.addr(), &keep, 0).unwrap();
    assert!(leo > 0);

    // Fetch.
    for (name, version, offset, want) in [
        ("log end + 1", 12i16, leo + 1, OFFSET_OUT_OF_RANGE),
        ("log end + 1000", 12, leo + 1000, OFFSET_OUT_OF_RANGE),
        ("i64::MAX", 12, i64::MAX, OFFSET_OUT_OF_RANGE),
        ("-1", 12, -1, OFFSET_OUT_OF_RANGE),
        ("i64::MIN", 12, i64::MIN, OFFSET_OUT_OF_RANGE),
        ("log end + 1 (v4)", 4, leo + 1, OFFSET_OUT_OF_RANGE),
    ] {
        let keep = keep.clone();
        h.case(&format!("Fetch v{version} at offset {name}"), move |p| {
            let (top, part) = fetch_partition(p.addr, version, &fetch_request(&keep, 0, offset))?;
            check_code("top level", top, NONE)?;
            check_code("partition", part.error_code, want)?;
            if part.records.as_ref().is_some_and(|r| !r.is_empty()) {
                return Err("records returned with an error".into());
            }
            Ok(())
        });
    }
    for (name, topic, partition) in [
        ("unknown topic", "no-such-topic", 0),
        ("unknown partition 9", keep.as_str(), 9),
        ("partition -1", keep.as_str(), -1),
    ] {
        h.case(&format!("Fetch v12 {name}"), |p| {
            let (_, part) = fetch_partition(p.addr, 12, &fetch_request(topic, partition, 0))?;
            check_code(name, part.error_code, UNKNOWN_TOPIC_OR_PARTITION)
        });
    }
    h.case(
        "Fetch v12 with negative waits and sizes answers at once",
        |p| {
            let mut req = fetch_request(&keep, 0, 0)
                .with_max_wait_ms(-5)
                .with_min_bytes(-1)
                .with_max_bytes(-1);
            req.topics[0].partitions[0].partition_max_bytes = -1;
            let started = Instant::now();
            let (top, part) = fetch_partition(p.addr, 12, &req)?;
            check_code("top level", top, NONE)?;
            check_code("partition", part.error_code, NONE)?;
            if started.elapsed() > Duration::from_secs(5) {
                return Err(format!("took {:?}", started.elapsed()));
            }
            Ok(())
        },
    );
    h.case("Fetch v12 with an unknown session id", |p| {
        let req = fetch_request(&keep, 0, 0)
            .with_session_id(12345)
            .with_session_epoch(3);
        let r: FetchResponse = call(p.addr, ApiKey::Fetch, 12, &req)?;
        check_code("Fetch session", r.error_code, FETCH_SESSION_ID_NOT_FOUND)
    });

    // ListOffsets.
    for (name, topic, partition) in [
        ("unknown partition 9", keep.as_str(), 9),
        ("partition -1", keep.as_str(), -1),
        ("unknown topic", "no-such-topic", 0),
    ] {
        h.case(&format!("ListOffsets v7 {name}"), |p| {
            let r: ListOffsetsResponse = call(
                p.addr,
                ApiKey::ListOffsets,
                7,
                &list_offsets_request(topic, partition, -1),
            )?;
            let part = &r.topics.first().ok_or("no topic")?.partitions[0];
            check_code(name, part.error_code, UNKNOWN_TOPIC_OR_PARTITION)
        });
    }
    for ts in [-4i64, -100, i64::MIN] {
        h.case(&format!("ListOffsets v7 timestamp {ts}"), |p| {
            let r: ListOffsetsResponse = call(
                p.addr,
                ApiKey::ListOffsets,
                7,
                &list_offsets_request(&keep, 0, ts),
            )?;
            // Kafka searches by timestamp for any other value, so only a well-formed answer
            // is required.
            let t = r.topics.first().ok_or("no topic")?;
            if t.partitions.len() != 1 {
                return Err(format!("{} partitions in the answer", t.partitions.len()));
            }
            Ok(())
        });
    }

    // CreateTopics.
    let long_name = "x".repeat(250);
    let mut create_cases: Vec<(String, CreatableTopic, i16)> = Vec::new();
    for bad in [
        "bad name",
        "",
        ".",
        "..",
        long_name.as_str(),
        "a/b",
        "../escape",
        "ümlaut",
        "a\0b",
    ] {
        create_cases.push((
            format!("name {:?}", bad.chars().take(20).collect::<String>()),
            creatable(bad, 1, 1),
            INVALID_TOPIC_EXCEPTION,
        ));
    }
    create_cases.push((
        "0 partitions".into(),
        creatable("zero-parts", 0, 1),
        INVALID_PARTITIONS,
    ));
    create_cases.push((
        "-5 partitions".into(),
        creatable("neg-parts", -5, 1),
        INVALID_PARTITIONS,
    ));
    create_cases.push((
        "replication factor 3".into(),
        creatable("rf-three", 1, 3),
        INVALID_REPLICATION_FACTOR,
    ));
    create_cases.push((
        "replication factor 0".into(),
        creatable("rf-zero", 1, 0),
        INVALID_REPLICATION_FACTOR,
    ));
    create_cases.push((
        "replication factor -2".into(),
        creatable("rf-neg", 1, -2),
        INVALID_REPLICATION_FACTOR,
    ));
    create_cases.push((
        "unknown config".into(),
        creatable("bad-config", 1, 1).with_configs(vec![
            CreatableTopicConfig::default()
                .with_name(sb("no.such.config"))
                .with_value(Some(sb("1"))),
        ]),
        INVALID_CONFIG,
    ));
    create_cases.push((
        "non-numeric config value".into(),
        creatable("bad-value", 1, 1).with_configs(vec![
            CreatableTopicConfig::default()
                .with_name(sb("retention.ms"))
                .with_value(Some(sb("soon"))),
        ]),
        INVALID_CONFIG,
    ));
    create_cases.push((
        "max.message.bytes -1".into(),
        creatable("bad-max", 1, 1).with_configs(vec![
            CreatableTopicConfig::default()
                .with_name(sb("max.message.bytes"))
                .with_value(Some(sb("-1"))),
        ]),
        INVALID_CONFIG,
    ));
    create_cases.push((
        "assignment to broker 7".into(),
        creatable("bad-assign", -1, -1).with_assignments(vec![
            CreatableReplicaAssignment::default()
                .with_partition_index(0)
                .with_broker_ids(vec![BrokerId(7)]),
        ]),
        INVALID_REPLICA_ASSIGNMENT,
    ));
    create_cases.push((
        "existing topic".into(),
        creatable(&keep, 1, 1),
        TOPIC_ALREADY_EXISTS,
    ));
    for validate_only in [true, false] {
        for (name, topic, want) in &create_cases {
            h.case(
                &format!("CreateTopics v7 {name} (validate_only={validate_only})"),
                |p| {
                    let r: CreateTopicsResponse = call(
                        p.addr,
                        ApiKey::CreateTopics,
                        7,
                        &create_topics_request(vec![topic.clone()], validate_only),
                    )?;
                    let t = r.topics.first().ok_or("no topic in the response")?;
                    check_code(name, t.error_code, *want)
                },
            );
        }
    }
    h.case("CreateTopics v7 with the same name twice", |p| {
        let r: CreateTopicsResponse = call(
            p.addr,
            ApiKey::CreateTopics,
            7,
            &create_topics_request(
                vec![creatable("twice", 1, 1), creatable("twice", 1, 1)],
                false,
            ),
        )?;
        for t in &r.topics {
            check_code("duplicate name", t.error_code, INVALID_REQUEST)?;
        }
        Ok(())
    });
    h.case("CreateTopics v2 invalid next to valid", |p| {
        let r: CreateTopicsResponse = call(
            p.addr,
            ApiKey::CreateTopics,
            2,
            &create_topics_request(
                vec![creatable("bad name", 1, 1), creatable("fine", 1, 1)],
                false,
            ),
        )?;
        let codes: Vec<i16> = r.topics.iter().map(|t| t.error_code).collect();
        if codes != vec![INVALID_TOPIC_EXCEPTION, NONE] {
            return Err(format!("codes {codes:?}, expected [17, 0]"));
        }
        Ok(())
    });
    h.case("no refused topic was created", |p| {
        let md: MetadataResponse = call(
            p.addr,
            ApiKey::Metadata,
            12,
            &MetadataRequest::default()
                .with_topics(None)
                .with_allow_auto_topic_creation(false),
        )?;
        let mut names: Vec<String> = md
            .topics
            .iter()
            .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
            .collect();
        names.sort();
        if names != ["fine", "keep"] {
            return Err(format!(
                "topics now: {names:?}, expected [\"fine\", \"keep\"]"
            ));
        }
        Ok(())
    });

    // DeleteTopics.
    h.case("DeleteTopics v1 unknown topic", |p| {
        let r: DeleteTopicsResponse = call(
            p.addr,
            ApiKey::DeleteTopics,
            1,
            &DeleteTopicsRequest::default()
                .with_topic_names(vec![topic_name("no-such-topic")])
                .with_timeout_ms(5000),
        )?;
        check_code(
            "DeleteTopics v1",
            r.responses[0].error_code,
            UNKNOWN_TOPIC_OR_PARTITION,
        )
    });
    h.case("DeleteTopics v6 unknown name", |p| {
        let r: DeleteTopicsResponse = call(
            p.addr,
            ApiKey::DeleteTopics,
            6,
            &DeleteTopicsRequest::default()
                .with_topics(vec![
                    DeleteTopicState::default().with_name(Some(topic_name("no-such-topic"))),
                ])
                .with_timeout_ms(5000),
        )?;
        check_code(
            "DeleteTopics v6",
            r.responses[0].error_code,
            UNKNOWN_TOPIC_OR_PARTITION,
        )
    });
    h.case("DeleteTopics v6 unknown topic id", |p| {
        let r: DeleteTopicsResponse = call(
            p.addr,
            ApiKey::DeleteTopics,
            6,
            &DeleteTopicsRequest::default()
                .with_topics(vec![
                    DeleteTopicState::default()
                        .with_name(None)
                        .with_topic_id(uuid::Uuid::from_u128(0x1234_5678_9abc)),
                ])
                .with_timeout_ms(5000),
        )?;
        check_code(
            "DeleteTopics v6 by id",
            r.responses[0].error_code,
            UNKNOWN_TOPIC_ID,
        )
    });

    // DescribeConfigs.
    h.case("DescribeConfigs v4 unknown topic", |p| {
        let r: DescribeConfigsResponse = call(
            p.addr,
            ApiKey::DescribeConfigs,
            4,
            &describe_configs_request(2, "no-such-topic"),
        )?;
        check_code(
            "DescribeConfigs",
            r.results[0].error_code,
            UNKNOWN_TOPIC_OR_PARTITION,
        )
    });
    for (name, rtype, rname) in [
        ("resource type 99", 99i8, "x"),
        ("resource type -1", -1, "x"),
        ("another broker's id", 4, "7"),
    ] {
        h.case(&format!("DescribeConfigs v1 {name}"), |p| {
            let r: DescribeConfigsResponse = call(
                p.addr,
                ApiKey::DescribeConfigs,
                1,
                &describe_configs_request(rtype, rname),
            )?;
            if r.results[0].error_code == NONE {
                return Err("answered without an error".into());
            }
            Ok(())
        });
    }

    // InitProducerId with a transactional id: refused (transactions are not supported).
    for version in [0i16, 4] {
        h.case(
            &format!("InitProducerId v{version} with a transactional id"),
            |p| {
                let r: InitProducerIdResponse = call(
                    p.addr,
                    ApiKey::InitProducerId,
                    version,
                    &InitProducerIdRequest::default()
                        .with_transactional_id(Some(TransactionalId(sb("txn-1"))))
                        .with_transaction_timeout_ms(60_000),
                )?;
                if r.error_code == NONE || r.producer_id.0 != -1 {
                    return Err(format!(
                        "error {} producer id {}",
                        r.error_code, r.producer_id.0
                    ));
                }
                Ok(())
            },
        );
    }

    // OffsetForLeaderEpoch.
    for (name, topic, partition) in [
        ("unknown partition 9", keep.as_str(), 9),
        ("partition -1", keep.as_str(), -1),
        ("unknown topic", "no-such-topic", 0),
    ] {
        h.case(&format!("OffsetForLeaderEpoch v4 {name}"), |p| {
            let r: OffsetForLeaderEpochResponse = call(
                p.addr,
                ApiKey::OffsetForLeaderEpoch,
                4,
                &offset_for_leader_epoch_request(topic, partition, 0),
            )?;
            check_code(
                name,
                r.topics.first().ok_or("no topic")?.partitions[0].error_code,
                UNKNOWN_TOPIC_OR_PARTITION,
            )
        });
    }
    for epoch in [-1i32, i32::MAX, i32::MIN] {
        h.case(&format!("OffsetForLeaderEpoch v4 epoch {epoch}"), |p| {
            let _: OffsetForLeaderEpochResponse = call(
                p.addr,
                ApiKey::OffsetForLeaderEpoch,
                4,
                &offset_for_leader_epoch_request(&keep, 0, epoch),
            )?;
            Ok(())
        });
    }

    // Metadata.
    h.case("Metadata v12 invalid topic name with auto-creation", |p| {
        let md: MetadataResponse = call(
            p.addr,
            ApiKey::Metadata,
            12,
            &metadata_request(&["bad name!"], true),
        )?;
        check_code("Metadata", md.topics[0].error_code, INVALID_TOPIC_EXCEPTION)
    });
    h.case("Metadata v12 unknown topic id", |p| {
        let req = MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default()
                    .with_name(None)
                    .with_topic_id(uuid::Uuid::from_u128(0xfeed)),
            ]))
            .with_allow_auto_topic_creation(false);
        let md: MetadataResponse = call(p.addr, ApiKey::Metadata, 12, &req)?;
        check_code("Metadata by id", md.topics[0].error_code, UNKNOWN_TOPIC_ID)
    });

    h.finish();
}

// ---------------------------------------------------------------------------------------------
// --max-request-bytes at its boundary.

#[test]
fn request_size_limit_is_exact() {
    const MAX: usize = 4096;
    let mut h = Harness::start("size-limit", &["--max-request-bytes", "4096"]);
    let keep = h.keep.0.clone();

    // A Produce v9 request whose frame (without the prefix) is exactly `size` bytes.
    let produce_of_size = |size: usize| -> Vec<u8> {
        let mut value_len = size.saturating_sub(200);
        for _ in 0..1000 {
            let req = produce_request(
                -1,
                vec![(keep.as_str(), 0, Some(batch(&[vec![b'z'; value_len]])))],
            );
            let payload = encode_request(ApiKey::Produce, 9, 21, &req);
            match payload.len().cmp(&size) {
                std::cmp::Ordering::Equal => return payload,
                std::cmp::Ordering::Less => value_len += 1,
                std::cmp::Ordering::Greater => value_len -= 1,
            }
        }
        panic!("cannot build a Produce request of exactly {size} bytes");
    };
    h.case("a request of exactly --max-request-bytes is served", |p| {
        let before = latest_offset(p.addr, &keep, 0)?;
        let mut s = connect(p.addr)?;
        let payload = produce_of_size(MAX);
        s.write_all(&framed(&payload)).map_err(|e| e.to_string())?;
        let frame = match read_reply(&mut s) {
            Reply::Frame(f) => f,
            other => return Err(format!("no answer to a {MAX}-byte request: {other:?}")),
        };
        let r: ProduceResponse = decode_response(ApiKey::Produce, 9, 21, frame)?;
        check_code(
            "produce",
            r.responses[0].partition_responses[0].error_code,
            NONE,
        )?;
        let after = latest_offset(p.addr, &keep, 0)?;
        if after != before + 1 {
            return Err(format!("log end offset {before} -> {after}"));
        }
        Ok(())
    });
    // That append is not abuse: take it into the baseline.
    h.baseline[0] = read_log(h.addr(), &keep, 0).unwrap();

    h.case(
        "a request one byte over --max-request-bytes closes the connection",
        |p| {
            let before = latest_offset(p.addr, &keep, 0)?;
            p.expect_close(&framed(&produce_of_size(MAX + 1)), Warn::AtMostOne)?;
            let after = latest_offset(p.addr, &keep, 0)?;
            if after != before {
                return Err(format!("log end offset moved {before} -> {after}"));
            }
            Ok(())
        },
    );
    for len in [MAX as i32 + 1, 1_000_000, i32::MAX] {
        h.case(&format!("length prefix {len} alone closes at once"), |p| {
            let started = Instant::now();
            p.expect_close(&len.to_be_bytes(), Warn::AtMostOne)?;
            if started.elapsed() > Duration::from_secs(5) {
                return Err(format!("took {:?} to close", started.elapsed()));
            }
            Ok(())
        });
    }
    h.finish();
}

// ---------------------------------------------------------------------------------------------
// Shutdown with clients that stopped mid-frame or stopped reading.

#[test]
fn sigterm_stops_the_broker_while_a_client_holds_a_partial_frame() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    // A frame that promises 1000 bytes and delivers 20, and a 2-byte length prefix; both
    // connections stay open.
    let mut partial = connect(broker.kafka).unwrap();
    let mut bytes = 1000i32.to_be_bytes().to_vec();
    bytes.extend(&raw_header(ApiKey::Metadata as i16, 1, 1)[..20]);
    partial.write_all(&bytes).unwrap();
    let mut prefix = connect(broker.kafka).unwrap();
    prefix.write_all(&[0, 0]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // Other clients are not affected.
    let av: ApiVersionsResponse = call(
        broker.kafka,
        ApiKey::ApiVersions,
        3,
        &api_versions_request(),
    )
    .unwrap();
    assert_eq!(av.error_code, NONE);

    let started = Instant::now();
    let stopped = broker.terminate();
    let took = started.elapsed();
    let log = read_log_from(&broker.log_path, 0);
    assert!(
        stopped,
        "SIGTERM did not stop the broker cleanly ({took:?}) while a client held a partial frame \
         (1000-byte length prefix, 20 bytes sent); log tail:\n{}",
        last_lines(&log, 10)
    );
    assert!(!log.contains("panicked"), "panic in log:\n{log}");
    drop((partial, prefix));
}

#[test]
fn sigterm_stops_the_broker_while_a_client_does_not_read_its_responses() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let addr = broker.kafka;
    create_topic(addr, "big", 1, &[]).unwrap();
    let (code, _) = produce(
        addr,
        9,
        -1,
        "big",
        0,
        Some(batch(&values("big", 1, 512 * 1024))),
    )
    .unwrap();
    assert_eq!(code, NONE);
    // 200 pipelined fetches of a 512 KiB batch, never read: ~100 MiB of responses back up.
    let mut greedy = connect(addr).unwrap();
    let mut pipeline = Vec::new();
    for _ in 0..200 {
        pipeline.extend(framed(&encode_request(
            ApiKey::Fetch,
            12,
            next_correlation_id(),
            &fetch_request("big", 0, 0),
        )));
    }
    greedy.write_all(&pipeline).unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    let av: ApiVersionsResponse =
        call(addr, ApiKey::ApiVersions, 3, &api_versions_request()).unwrap();
    assert_eq!(av.error_code, NONE);

    let started = Instant::now();
    let stopped = broker.terminate();
    let took = started.elapsed();
    let log = read_log_from(&broker.log_path, 0);
    assert!(
        stopped,
        "SIGTERM did not stop the broker cleanly ({took:?}) while a client left 200 pipelined \
         Fetch responses unread; log tail:\n{}",
        last_lines(&log, 10)
    );
    drop(greedy);
}

// ---------------------------------------------------------------------------------------------
// Seeded fuzz.

/// Valid requests of the consumer-group APIs (one group, one member, one topic), for the
/// truncation and fuzz cases.
fn group_requests(topic: &str) -> Vec<(ApiKey, i16, Box<dyn EncodeAny>)> {
    use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    use kafka_protocol::messages::leave_group_request::MemberIdentity;
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::offset_fetch_request::{
        OffsetFetchRequestGroup, OffsetFetchRequestTopics,
    };
    use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
    use kafka_protocol::messages::{
        DeleteGroupsRequest, DescribeGroupsRequest, FindCoordinatorRequest, GroupId,
        HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, ListGroupsRequest,
        OffsetCommitRequest, OffsetFetchRequest, SyncGroupRequest,
    };
    let group = || GroupId(sb("fuzz-group"));
    let join = JoinGroupRequest::default()
        .with_group_id(group())
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_member_id(sb("m-1"))
        .with_group_instance_id(Some(sb("i-1")))
        .with_protocol_type(sb("consumer"))
        .with_protocols(vec![
            JoinGroupRequestProtocol::default()
                .with_name(sb("range"))
                .with_metadata(Bytes::from_static(b"\x00\x01subscription")),
        ]);
    let commit = OffsetCommitRequest::default()
        .with_group_id(group())
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(topic_name(topic))
                .with_partitions(vec![
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(1)
                        .with_committed_metadata(Some(sb("meta"))),
                ]),
        ]);
    vec![
        (
            ApiKey::FindCoordinator,
            4,
            Box::new(
                FindCoordinatorRequest::default().with_coordinator_keys(vec![sb("fuzz-group")]),
            ),
        ),
        (
            ApiKey::FindCoordinator,
            1,
            Box::new(FindCoordinatorRequest::default().with_key(sb("fuzz-group"))),
        ),
        (
            ApiKey::JoinGroup,
            2,
            Box::new(join.clone().with_group_instance_id(None)),
        ),
        (ApiKey::JoinGroup, 9, Box::new(join)),
        (
            ApiKey::SyncGroup,
            5,
            Box::new(
                SyncGroupRequest::default()
                    .with_group_id(group())
                    .with_generation_id(1)
                    .with_member_id(sb("m-1"))
                    .with_protocol_type(Some(sb("consumer")))
                    .with_protocol_name(Some(sb("range")))
                    .with_assignments(vec![
                        SyncGroupRequestAssignment::default()
                            .with_member_id(sb("m-1"))
                            .with_assignment(Bytes::from_static(b"assignment")),
                    ]),
            ),
        ),
        (
            ApiKey::Heartbeat,
            4,
            Box::new(
                HeartbeatRequest::default()
                    .with_group_id(group())
                    .with_generation_id(1)
                    .with_member_id(sb("m-1")),
            ),
        ),
        (
            ApiKey::LeaveGroup,
            5,
            Box::new(
                LeaveGroupRequest::default()
                    .with_group_id(group())
                    .with_members(vec![MemberIdentity::default().with_member_id(sb("m-1"))]),
            ),
        ),
        (ApiKey::OffsetCommit, 9, Box::new(commit.clone())),
        (ApiKey::OffsetCommit, 2, Box::new(commit)),
        (
            ApiKey::OffsetFetch,
            8,
            Box::new(OffsetFetchRequest::default().with_groups(vec![
                    OffsetFetchRequestGroup::default()
                        .with_group_id(group())
                        .with_topics(Some(vec![
                            OffsetFetchRequestTopics::default()
                                .with_name(topic_name(topic))
                                .with_partition_indexes(vec![0, 1]),
                        ])),
                ])),
        ),
        (
            ApiKey::OffsetFetch,
            1,
            Box::new(OffsetFetchRequest::default().with_group_id(group())),
        ),
        (
            ApiKey::DescribeGroups,
            5,
            Box::new(DescribeGroupsRequest::default().with_groups(vec![group()])),
        ),
        (
            ApiKey::ListGroups,
            5,
            Box::new(ListGroupsRequest::default().with_states_filter(vec![sb("Stable")])),
        ),
        (
            ApiKey::DeleteGroups,
            2,
            Box::new(DeleteGroupsRequest::default().with_groups_names(vec![group()])),
        ),
    ]
}

/// Valid requests of every supported API at several versions, aimed at fuzz topics.
fn fuzz_seeds() -> Vec<(ApiKey, i16, Vec<u8>)> {
    let b = batch(&values("fz", 2, 12));
    let idem = batch_with(&values("fzi", 2, 12), (77, 0, 0), 0);
    let mut out: Vec<(ApiKey, i16, Box<dyn EncodeAny>)> = Vec::new();
    for v in [3i16, 7, 9] {
        out.push((
            ApiKey::Produce,
            v,
            Box::new(produce_request(
                -1,
                vec![("fuzz-target", 0, Some(b.clone()))],
            )),
        ));
    }
    out.push((
        ApiKey::Produce,
        9,
        Box::new(produce_request(
            1,
            vec![
                ("fuzz-target", 1, Some(idem)),
                ("fuzz-target", 0, Some(b.clone())),
            ],
        )),
    ));
    for v in [4i16, 11, 12] {
        out.push((ApiKey::Fetch, v, Box::new(fetch_request("fuzz-keep", 0, 0))));
    }
    for v in [1i16, 4, 7] {
        out.push((
            ApiKey::ListOffsets,
            v,
            Box::new(list_offsets_request("fuzz-keep", 0, -1)),
        ));
    }
    for v in [0i16, 1, 4, 9, 12] {
        let req = if v >= 4 {
            metadata_request(&["fuzz-keep", "fuzz-target"], false)
        } else {
            metadata_request(&["fuzz-keep"], true)
        };
        out.push((ApiKey::Metadata, v, Box::new(req)));
    }
    out.push((
        ApiKey::ApiVersions,
        0,
        Box::new(ApiVersionsRequest::default()),
    ));
    out.push((ApiKey::ApiVersions, 3, Box::new(api_versions_request())));
    for v in [2i16, 5, 7] {
        out.push((
            ApiKey::CreateTopics,
            v,
            Box::new(create_topics_request(
                vec![creatable("fuzz-new", -1, -1).with_configs(vec![
                    CreatableTopicConfig::default()
                        .with_name(sb("retention.ms"))
                        .with_value(Some(sb("60000"))),
                ])],
                true,
            )),
        ));
    }
    out.push((
        ApiKey::DeleteTopics,
        1,
        Box::new(DeleteTopicsRequest::default().with_topic_names(vec![topic_name("fuzz-doomed")])),
    ));
    out.push((
        ApiKey::DeleteTopics,
        6,
        Box::new(DeleteTopicsRequest::default().with_topics(vec![
            DeleteTopicState::default().with_name(Some(topic_name("fuzz-doomed"))),
        ])),
    ));
    out.push((
        ApiKey::InitProducerId,
        0,
        Box::new(InitProducerIdRequest::default().with_transaction_timeout_ms(1000)),
    ));
    out.push((
        ApiKey::InitProducerId,
        4,
        Box::new(InitProducerIdRequest::default().with_transaction_timeout_ms(1000)),
    ));
    for v in [2i16, 4] {
        out.push((
            ApiKey::OffsetForLeaderEpoch,
            v,
            Box::new(offset_for_leader_epoch_request("fuzz-keep", 0, 0)),
        ));
    }
    for v in [1i16, 4] {
        out.push((
            ApiKey::DescribeConfigs,
            v,
            Box::new(describe_configs_request(2, "fuzz-keep")),
        ));
        out.push((
            ApiKey::DescribeConfigs,
            v,
            Box::new(describe_configs_request(4, "0")),
        ));
    }
    out.extend(group_requests("fuzz-keep"));
    out.into_iter()
        .map(|(k, v, body)| (k, v, encode_request_as(k, v, 99, "fz", &body)))
        .collect()
}

const INTERESTING_I32: [i32; 6] = [0, -1, 1, i32::MAX, i32::MIN, 0x7fff_fff0];
const INTERESTING_I16: [i16; 5] = [0, -1, 1, i16::MAX, i16::MIN];

fn mutate(rng: &mut StdRng, data: &mut Vec<u8>) {
    for _ in 0..rng.random_range(1..=3) {
        let len = data.len();
        let at = if len == 0 {
            0
        } else {
            rng.random_range(0..len)
        };
        match rng.random_range(0..10) {
            0 if len > 0 => data[at] ^= 1 << rng.random_range(0..8),
            1 if len > 0 => data[at] = rng.random(),
            2 if len > 0 => data[at] = [0u8, 0xff, 0x7f, 0x80, 0x01][rng.random_range(0..5)],
            3 if len >= 2 => {
                let at = at.min(len - 2);
                let v = INTERESTING_I16[rng.random_range(0..INTERESTING_I16.len())];
                data[at..at + 2].copy_from_slice(&v.to_be_bytes());
            }
            4 if len >= 4 => {
                let at = at.min(len - 4);
                let v = INTERESTING_I32[rng.random_range(0..INTERESTING_I32.len())];
                data[at..at + 4].copy_from_slice(&v.to_be_bytes());
            }
            5 => data.truncate(at),
            6 => {
                let n = rng.random_range(1..=16);
                let junk: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                data.splice(at..at, junk);
            }
            7 if len > 0 => {
                let end = rng.random_range(at..=len.min(at + 16));
                data.drain(at..end);
            }
            8 if len > 0 => {
                let end = rng.random_range(at..=len.min(at + 32));
                let copy = data[at..end].to_vec();
                let to = rng.random_range(0..=data.len());
                data.splice(to..to, copy);
            }
            _ => {
                let n = rng.random_range(1..=8);
                data.extend((0..n).map(|_| rng.random::<u8>()));
            }
        }
    }
}

/// One fuzz input: the exact bytes to write, and how it was made.
fn fuzz_input(
    rng: &mut StdRng,
    seeds: &[(ApiKey, i16, Vec<u8>)],
    advertised: &[(i16, i16, i16)],
) -> (Vec<u8>, String) {
    match rng.random_range(0..20) {
        0 => {
            let n = rng.random_range(0..64);
            let junk: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            (framed(&junk), format!("{n} random bytes"))
        }
        1 => {
            // A length prefix that does not match what follows.
            let n = rng.random_range(0..64);
            let mut bytes: Vec<u8> = rng.random::<i32>().to_be_bytes().to_vec();
            bytes.extend((0..n).map(|_| rng.random::<u8>()));
            (bytes, format!("random length prefix and {n} random bytes"))
        }
        2..=4 => {
            let (key, min, max) = advertised[rng.random_range(0..advertised.len())];
            let version = rng.random_range(min..=max);
            let mut payload = raw_header(key, version, 3);
            if rng.random_bool(0.5) {
                payload.push(0); // tagged fields of a flexible header
            }
            let n = rng.random_range(0..64);
            payload.extend((0..n).map(|_| rng.random::<u8>()));
            (
                framed(&payload),
                format!("api {key} v{version} with a random {n}-byte body"),
            )
        }
        _ => {
            let (key, version, payload) = &seeds[rng.random_range(0..seeds.len())];
            let mut payload = payload.clone();
            mutate(rng, &mut payload);
            (framed(&payload), format!("mutated {key:?} v{version}"))
        }
    }
}

#[derive(Default, Debug)]
struct FuzzStats {
    frames: usize,
    answered: usize,
    closed: usize,
    slow: usize,
    deaths: usize,
}

/// One fuzz input and how it was made.
#[derive(Clone)]
struct FuzzFrame {
    index: usize,
    how: String,
    bytes: Vec<u8>,
}

impl FuzzFrame {
    fn describe(&self) -> String {
        format!(
            "frame #{} ({}): {}",
            self.index,
            self.how,
            hex(&self.bytes, 256)
        )
    }
}

enum FuzzOutcome {
    Answered,
    Closed,
    /// No answer within 2 s (a long-poll fetch can do that); liveness checks catch real hangs.
    Slow,
    /// Not a valid way to react to any input.
    Wrong(String),
}

/// Sends one frame on a new connection, half-closes, and classifies what comes back. Err when
/// the broker does not accept the connection.
fn send_fuzz_frame(addr: SocketAddr, bytes: &[u8]) -> Result<FuzzOutcome, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect failed: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(bytes);
    let _ = s.shutdown(Shutdown::Write);
    let first = read_reply(&mut s);
    let answered = matches!(first, Reply::Frame(_));
    let end = if answered { read_reply(&mut s) } else { first };
    Ok(match end {
        Reply::Closed if answered => FuzzOutcome::Answered,
        Reply::Closed => FuzzOutcome::Closed,
        Reply::Silent => FuzzOutcome::Slow,
        Reply::Frame(_) => FuzzOutcome::Wrong("two responses to one request".into()),
        Reply::Broken(why) => FuzzOutcome::Wrong(format!("broken response: {why}")),
    })
}

fn log_len(h: &Harness) -> usize {
    std::fs::metadata(&h.broker.log_path).map_or(0, |m| m.len() as usize)
}

/// Replays `frame` alone against the (freshly restarted) broker: does it kill it?
fn kills_the_broker(h: &mut Harness, frame: &FuzzFrame) -> Option<String> {
    let log_start = log_len(h);
    let _ = send_fuzz_frame(h.addr(), &frame.bytes);
    let deadline = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < deadline {
        if !h.broker.is_running() {
            return Some(read_log_from(&h.broker.log_path, log_start));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// A frame that is a well-formed admin request changing the kept topic, which the liveness
/// checks and the final read-back rely on: a mutated api key can turn a Metadata request for
/// `fuzz-keep` into a DeleteTopics one with the same body (both start with an array of topic
/// names), and the broker then rightly deletes the topic. Such frames are drawn again.
fn changes_the_kept_topic(bytes: &[u8]) -> bool {
    // DeleteTopics, DeleteRecords, AlterConfigs, CreatePartitions, ElectLeaders,
    // IncrementalAlterConfigs, AlterPartitionReassignments.
    const CHANGING: [i16; 7] = [20, 21, 33, 37, 43, 44, 45];
    bytes.len() >= 6
        && CHANGING.contains(&i16::from_be_bytes([bytes[4], bytes[5]]))
        && bytes.windows(b"fuzz-keep".len()).any(|w| w == b"fuzz-keep")
}

#[test]
fn seeded_fuzz_never_takes_the_broker_down() {
    let seed: u64 = std::env::var("STRAND_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let frames: usize = std::env::var("STRAND_FUZZ_FRAMES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    eprintln!(
        "malformed_input fuzz: seed {seed} (replay with STRAND_FUZZ_SEED={seed}), {frames} frames"
    );
    let mut rng = StdRng::seed_from_u64(seed);

    let mut h = Harness::start("fuzz", &[]);
    h.keep = ("fuzz-keep".to_string(), 1);
    h.baseline.clear();
    h.write_baseline();
    create_topic(h.addr(), "fuzz-target", 2, &[]).unwrap();
    let advertised = advertised_versions(h.addr()).unwrap();
    let seeds = fuzz_seeds();

    const MAX_DEATHS: usize = 5;
    let budget = Duration::from_secs(25);
    let started = Instant::now();
    let mut stats = FuzzStats::default();
    // The last frames sent, newest last, with the log length before each.
    let mut recent: std::collections::VecDeque<(FuzzFrame, usize)> = Default::default();
    for index in 0..frames {
        if started.elapsed() > budget {
            eprintln!("fuzz: time budget spent after {index} frames");
            break;
        }
        let (bytes, how) = loop {
            let (bytes, how) = fuzz_input(&mut rng, &seeds, &advertised);
            if !changes_the_kept_topic(&bytes) {
                break (bytes, how);
            }
        };
        let frame = FuzzFrame { index, how, bytes };
        let log_start = log_len(&h);
        let mut death = None;
        match send_fuzz_frame(h.addr(), &frame.bytes) {
            Err(e) => death = Some(e),
            Ok(outcome) => {
                stats.frames += 1;
                match outcome {
                    FuzzOutcome::Answered => stats.answered += 1,
                    FuzzOutcome::Closed => stats.closed += 1,
                    FuzzOutcome::Slow => stats.slow += 1,
                    FuzzOutcome::Wrong(why) => h.failures.push(format!(
                        "[fuzz seed {seed}] {why}\n    {}{}",
                        frame.describe(),
                        log_excerpt(
                            "broker log",
                            &read_log_from(&h.broker.log_path, log_start),
                            12
                        )
                    )),
                }
            }
        }
        if death.is_none() && !h.broker.is_running() {
            death = Some("the broker process died".into());
        }
        if death.is_none()
            && (index % 100 == 99 || index + 1 == frames)
            && let Err(e) = h.check_alive()
        {
            death = Some(format!("liveness check failed: {e}"));
        }
        let log = read_log_from(&h.broker.log_path, log_start);
        if log.contains("panicked") {
            h.failures.push(format!(
                "[fuzz seed {seed}] a broker task panicked\n    {}{}",
                frame.describe(),
                log_excerpt("broker log", &log, 12)
            ));
        }
        let sent = !matches!(&death, Some(e) if e.starts_with("connect failed"));
        if sent {
            recent.push_back((frame, log_start));
            if recent.len() > 3 {
                recent.pop_front();
            }
        }
        let Some(why) = death else {
            continue;
        };

        // Which frame was it? The process can die a while after its connection closed (it may
        // be printing a backtrace), so replay the last frames one at a time on a fresh start:
        // the one before the newest first, as that is the usual culprit.
        stats.deaths += 1;
        let since = recent.front().map_or(0, |(_, at)| *at);
        let log = read_log_from(&h.broker.log_path, since);
        h.restart();
        let mut suspects: Vec<FuzzFrame> = recent.drain(..).map(|(f, _)| f).collect();
        let newest = suspects.len().saturating_sub(1);
        if suspects.len() >= 2 {
            suspects.swap(newest - 1, newest);
        }
        suspects.reverse();
        let mut culprit = None;
        for f in &suspects {
            if let Some(replay_log) = kills_the_broker(&mut h, f) {
                culprit = Some((f.clone(), replay_log));
                h.restart();
                break;
            }
        }
        h.failures.push(match culprit {
            Some((f, replay_log)) => format!(
                "[fuzz seed {seed}] this frame kills the broker (reproduced alone on a fresh start):\n    {}{}",
                f.describe(),
                log_excerpt("broker log of the replay", &replay_log, 6)
            ),
            None => format!(
                "[fuzz seed {seed}] the broker went down ({why}) after frame #{index}; replaying \
                 the last frames alone did not reproduce it:\n    {}{}",
                suspects
                    .iter()
                    .map(FuzzFrame::describe)
                    .collect::<Vec<_>>()
                    .join("\n    "),
                log_excerpt("broker log", &log, 12)
            ),
        });
        if stats.deaths >= MAX_DEATHS {
            eprintln!("fuzz: stopping after {} broker deaths", stats.deaths);
            break;
        }
    }
    eprintln!("fuzz: {stats:?} in {:?}", started.elapsed());
    h.cases = stats.frames;
    h.finish();
}
