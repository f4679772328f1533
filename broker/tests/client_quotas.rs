//! Client quotas against the real broker process: Kafka's DescribeClientQuotas and
//! AlterClientQuotas (what `kafka-configs --entity-type users|clients` sends), kept across a
//! restart, and enforced as KIP-219 does it: a response over the quota carries
//! `throttle_time_ms`, and the connection reads nothing more until that time has passed.
//! No test asserts an upper bound on time; the mute is checked as a lower bound.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use broker::protocol::frames::{call, consumer_fetch, frame, read_response};
use common::BrokerProcess;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    AlterClientQuotasRequest, AlterClientQuotasResponse, CreateTopicsRequest,
    DescribeClientQuotasRequest, DescribeClientQuotasResponse, FetchRequest, ProduceRequest,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;

const WAIT: Duration = Duration::from_secs(30);

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// An entity as (type, name); a None name is the default.
fn entry(entity: &[(&str, Option<&str>)], ops: &[(&str, Option<f64>)]) -> EntryData {
    let mut e = EntryData::default();
    e.entity = entity
        .iter()
        .map(|(t, n)| {
            let mut d = EntityData::default();
            d.entity_type = s(t);
            d.entity_name = n.map(s);
            d
        })
        .collect();
    e.ops = ops
        .iter()
        .map(|(k, v)| {
            let mut o = OpData::default();
            o.key = s(k);
            o.value = v.unwrap_or(0.0);
            o.remove = v.is_none();
            o
        })
        .collect();
    e
}

fn alter(b: &BrokerProcess, entries: Vec<EntryData>, validate_only: bool) -> Vec<i16> {
    let mut r = AlterClientQuotasRequest::default();
    r.entries = entries;
    r.validate_only = validate_only;
    let resp: AlterClientQuotasResponse = call(b.kafka, &r, 1, WAIT).expect("answered");
    resp.entries.iter().map(|e| e.error_code).collect()
}

/// (entity as "type=name" pairs, sorted values) per matching entry.
type Described = Vec<(Vec<String>, Vec<(String, f64)>)>;

fn describe(
    b: &BrokerProcess,
    components: &[(&str, i8, Option<&str>)],
    strict: bool,
) -> Result<Described, i16> {
    let mut r = DescribeClientQuotasRequest::default();
    r.components = components
        .iter()
        .map(|(t, m, n)| {
            let mut c = ComponentData::default();
            c.entity_type = s(t);
            c.match_type = *m;
            c._match = n.map(s);
            c
        })
        .collect();
    r.strict = strict;
    let resp: DescribeClientQuotasResponse = call(b.kafka, &r, 1, WAIT).expect("answered");
    if resp.error_code != 0 {
        return Err(resp.error_code);
    }
    Ok(resp
        .entries
        .unwrap_or_default()
        .iter()
        .map(|e| {
            let entity = e
                .entity
                .iter()
                .map(|d| {
                    format!(
                        "{}={}",
                        d.entity_type,
                        d.entity_name.as_deref().unwrap_or("<default>")
                    )
                })
                .collect();
            let values = e
                .values
                .iter()
                .map(|v| (v.key.to_string(), v.value))
                .collect();
            (entity, values)
        })
        .collect())
}

const INVALID_REQUEST: i16 = 42;

#[test]
fn quotas_are_altered_checked_described_and_kept_across_a_restart() {
    assert_eq!(ResponseError::InvalidRequest.code(), INVALID_REQUEST);
    let dir = tempfile::tempdir().unwrap();
    let mut b = BrokerProcess::start(&dir.path().join("data"), &[]);

    let codes = alter(
        &b,
        vec![
            entry(
                &[("user", Some("alice")), ("client-id", None)],
                &[
                    ("producer_byte_rate", Some(1024.0)),
                    ("request_percentage", Some(50.0)),
                ],
            ),
            entry(
                &[("client-id", Some("app"))],
                &[("consumer_byte_rate", Some(2048.0))],
            ),
            // Refused, each with Kafka's INVALID_REQUEST, and none of them changes anything.
            entry(
                &[("ip", Some("10.0.0.1"))],
                &[("connection_creation_rate", Some(5.0))],
            ),
            entry(
                &[("user", Some("bob"))],
                &[("producer_byte_rate", Some(1.5))],
            ),
            entry(
                &[("user", Some("bob"))],
                &[("producer_byte_rate", Some(-1.0))],
            ),
            entry(
                &[("user", Some("carol"))],
                &[("controller_mutation_rate", Some(1.0))],
            ),
            entry(&[("user", Some("carol"))], &[("no_such_quota", Some(1.0))]),
            entry(
                &[("group", Some("g"))],
                &[("producer_byte_rate", Some(10.0))],
            ),
            entry(
                &[("user", Some("a")), ("user", Some("b"))],
                &[("producer_byte_rate", Some(10.0))],
            ),
            entry(&[], &[("producer_byte_rate", Some(10.0))]),
            // An entity listed twice: both refused, as Kafka does.
            entry(
                &[("user", Some("frank"))],
                &[("producer_byte_rate", Some(10.0))],
            ),
            entry(
                &[("user", Some("frank"))],
                &[("consumer_byte_rate", Some(10.0))],
            ),
            // One bad key refuses its whole entity.
            entry(
                &[("user", Some("dave"))],
                &[("producer_byte_rate", Some(10.0)), ("bogus", Some(1.0))],
            ),
        ],
        false,
    );
    assert_eq!(codes[..2], [0, 0]);
    assert!(
        codes[2..].iter().all(|c| *c == INVALID_REQUEST),
        "{codes:?}"
    );

    // validate_only answers as a real change would and changes nothing.
    let codes = alter(
        &b,
        vec![
            entry(
                &[("user", Some("erin"))],
                &[("producer_byte_rate", Some(100.0))],
            ),
            entry(
                &[("user", Some("erin2"))],
                &[("producer_byte_rate", Some(0.5))],
            ),
        ],
        true,
    );
    assert_eq!(codes, [0, INVALID_REQUEST]);

    let alice_default = (
        vec!["user=alice".to_string(), "client-id=<default>".to_string()],
        vec![
            ("producer_byte_rate".to_string(), 1024.0),
            ("request_percentage".to_string(), 50.0),
        ],
    );
    let app = (
        vec!["client-id=app".to_string()],
        vec![("consumer_byte_rate".to_string(), 2048.0)],
    );
    let all = describe(&b, &[], false).unwrap();
    assert_eq!(all, vec![app.clone(), alice_default.clone()]);
    assert_eq!(
        describe(&b, &[("user", 0, Some("alice"))], false).unwrap(),
        vec![alice_default.clone()]
    );
    assert!(
        describe(&b, &[("user", 0, Some("alice"))], true)
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        describe(&b, &[("client-id", 1, None)], false).unwrap(),
        vec![alice_default.clone()]
    );
    assert_eq!(
        describe(&b, &[("client-id", 2, None)], true).unwrap(),
        vec![app.clone()]
    );
    assert_eq!(
        describe(&b, &[("user", 2, None)], false).unwrap(),
        vec![alice_default.clone()]
    );
    assert_eq!(
        describe(&b, &[("group", 2, None)], false),
        Err(INVALID_REQUEST)
    );
    assert_eq!(
        describe(&b, &[("user", 0, None)], false),
        Err(INVALID_REQUEST)
    );

    // Kept across a restart.
    assert!(b.terminate());
    b.spawn();
    assert_eq!(describe(&b, &[], false).unwrap(), all);

    // Removing every key of an entity removes the entity.
    let codes = alter(
        &b,
        vec![entry(
            &[("client-id", Some("app"))],
            &[("consumer_byte_rate", None)],
        )],
        false,
    );
    assert_eq!(codes, [0]);
    assert_eq!(describe(&b, &[], false).unwrap(), vec![alice_default]);
}

fn records(n: usize, size: usize) -> bytes::Bytes {
    let n = i32::try_from(n).unwrap();
    bytes::Bytes::from(broker::protocol::batch::test_support::batch(
        n,
        0,
        (-1, -1, -1),
        size,
    ))
}

fn produce_request(topic: &str, batch: bytes::Bytes) -> ProduceRequest {
    let mut data = PartitionProduceData::default();
    data.index = 0;
    data.records = Some(batch);
    let mut t = TopicProduceData::default();
    t.name = TopicName(s(topic));
    t.partition_data = vec![data];
    let mut r = ProduceRequest::default();
    r.acks = 1;
    r.timeout_ms = 30_000;
    r.topic_data = vec![t];
    r
}

/// Sends `req` on `conn` and answers its response, when it was sent and when it arrived.
fn round_trip<R>(conn: &mut TcpStream, req: &R, version: i16) -> (R::Response, Instant, Instant)
where
    R: kafka_protocol::protocol::Request + kafka_protocol::protocol::Encodable,
    R::Response: kafka_protocol::protocol::Decodable,
{
    let sent = Instant::now();
    conn.write_all(&frame(req, version, 7)).unwrap();
    let r = read_response::<R>(conn, version).expect("answered");
    (r, sent, Instant::now())
}

/// A producer and a consumer over their byte rates: the broker answers at once with the
/// throttle, and the connection's next request is not read until it has passed. The raw
/// requests' client id is `strand-raw`; a quota on another client id does not touch them.
#[test]
fn clients_over_their_byte_rates_are_throttled_and_muted() {
    let dir = tempfile::tempdir().unwrap();
    let b = BrokerProcess::start(&dir.path().join("data"), &[]);
    let mut t = CreatableTopic::default();
    t.name = TopicName(s("metered"));
    t.num_partitions = 1;
    t.replication_factor = 1;
    let mut create = CreateTopicsRequest::default();
    create.topics = vec![t];
    create.timeout_ms = 30_000;
    call(b.kafka, &create, 5, WAIT).expect("topic created");

    let batch = records(1, 64 * 1024);
    let mut conn = TcpStream::connect(b.kafka).unwrap();
    conn.set_read_timeout(Some(WAIT)).unwrap();
    // A quota for someone else: nothing is throttled.
    assert_eq!(
        alter(
            &b,
            vec![entry(
                &[("client-id", Some("other"))],
                &[("producer_byte_rate", Some(1024.0))]
            )],
            false
        ),
        [0]
    );
    for _ in 0..4 {
        let (r, _, _) = round_trip(&mut conn, &produce_request("metered", batch.clone()), 8);
        assert_eq!(r.throttle_time_ms, 0);
    }

    // 10 KiB/s for strand-raw (its default user is ANONYMOUS): the 10 s window takes about
    // 100 KiB before the rate is over, so the second 64 KiB request is throttled.
    assert_eq!(
        alter(
            &b,
            vec![entry(
                &[("client-id", Some("strand-raw"))],
                &[("producer_byte_rate", Some(10240.0))]
            )],
            false
        ),
        [0]
    );
    let (first, _, _) = round_trip(&mut conn, &produce_request("metered", batch.clone()), 8);
    assert_eq!(first.throttle_time_ms, 0);
    let (second, sent, _) = round_trip(&mut conn, &produce_request("metered", batch.clone()), 8);
    assert!(
        second.throttle_time_ms > 1000,
        "throttle {} ms",
        second.throttle_time_ms
    );
    for r in [&first, &second] {
        let p = &r.responses[0].partition_responses[0];
        assert_eq!(
            p.error_code, 0,
            "throttled writes are still written: {:?}",
            p.error_message
        );
    }
    // Muted: the next request on this connection waits out the throttle, which began after
    // the throttled request was sent.
    let (_, _, third) = round_trip(&mut conn, &produce_request("metered", batch.clone()), 8);
    let muted = third - sent;
    let expected = Duration::from_millis(second.throttle_time_ms as u64);
    assert!(
        muted >= expected,
        "answered {muted:?} after the throttled request was sent; throttle {expected:?}"
    );
    assert!(b.metric("strand_throttled_responses_total") >= 2.0);

    // Fetches: 8 KiB/s for the default user, and 64 KiB fetched twice.
    assert_eq!(
        alter(
            &b,
            vec![entry(
                &[("user", None)],
                &[("consumer_byte_rate", Some(8192.0))]
            )],
            false
        ),
        [0]
    );
    let mut fetcher = TcpStream::connect(b.kafka).unwrap();
    fetcher.set_read_timeout(Some(WAIT)).unwrap();
    let fetch = |offset| consumer_fetch("metered", 0, offset, 1, 0, 70 * 1024, "");
    let (r1, _, _) = round_trip::<FetchRequest>(&mut fetcher, &fetch(0), 11);
    let got = r1.responses[0].partitions[0]
        .records
        .as_ref()
        .map_or(0, |r| r.len());
    assert!(got > 60 * 1024, "fetched {got} bytes");
    assert_eq!(r1.throttle_time_ms, 0);
    let (r2, sent, _) = round_trip::<FetchRequest>(&mut fetcher, &fetch(1), 11);
    assert!(
        r2.throttle_time_ms > 1000,
        "throttle {} ms",
        r2.throttle_time_ms
    );
    assert!(
        r2.responses[0].partitions[0]
            .records
            .as_ref()
            .is_some_and(|r| !r.is_empty())
    );
    let (_, _, third) = round_trip::<FetchRequest>(&mut fetcher, &fetch(2), 11);
    assert!(
        third - sent >= Duration::from_millis(r2.throttle_time_ms as u64),
        "a throttled fetcher was read from before its throttle passed"
    );

    // Removing the quotas lifts them for the next window's requests.
    let codes = alter(
        &b,
        vec![
            entry(
                &[("client-id", Some("strand-raw"))],
                &[("producer_byte_rate", None)],
            ),
            entry(&[("user", None)], &[("consumer_byte_rate", None)]),
            entry(
                &[("client-id", Some("other"))],
                &[("producer_byte_rate", None)],
            ),
        ],
        false,
    );
    assert_eq!(codes, [0, 0, 0]);
    let mut fresh = TcpStream::connect(b.kafka).unwrap();
    fresh.set_read_timeout(Some(WAIT)).unwrap();
    for _ in 0..4 {
        let (r, _, _) = round_trip(&mut fresh, &produce_request("metered", batch.clone()), 8);
        assert_eq!(r.throttle_time_ms, 0);
    }
}
