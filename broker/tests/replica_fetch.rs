//! The follower side of replication against a real broker: Fetch v12 as a replica over the
//! broker-to-broker client, follower appends that reproduce the leader's log byte for byte,
//! and Kafka's diverging-epoch answer when a fetcher's epoch ended earlier on the leader.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::BrokerProcess;
use common::kafka::{produce, producer};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use broker::replication::client::Connection;
use broker::storage::log::{Log, OpenHints};
use broker::topic_config::TopicConfig;

fn fetch_request(replica: i32, offset: i64, last_fetched_epoch: i32) -> FetchRequest {
    let mut p = FetchPartition::default();
    p.partition = 0;
    p.fetch_offset = offset;
    p.last_fetched_epoch = last_fetched_epoch;
    p.current_leader_epoch = -1;
    p.partition_max_bytes = 64 * 1024;
    let mut t = FetchTopic::default();
    t.topic = TopicName(StrBytes::from_static_str("rep"));
    t.partitions = vec![p];
    let mut r = FetchRequest::default();
    r.replica_id = replica.into();
    r.max_wait_ms = 0;
    r.min_bytes = 0;
    r.max_bytes = 1 << 20;
    r.session_epoch = -1;
    r.topics = vec![t];
    r
}

fn records(resp: &FetchResponse) -> Bytes {
    resp.responses[0].partitions[0]
        .records
        .clone()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_copies_the_leader_and_is_told_where_it_diverges() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let p = producer(
        &broker.bootstrap(),
        &[("enable.idempotence", "true"), ("linger.ms", "1")],
    );
    let first = produce(&p, "rep", "a", 300).await;
    drop(p);
    // A restart is a new leader epoch (standalone).
    assert!(broker.terminate());
    broker.spawn();
    let p = producer(
        &broker.bootstrap(),
        &[("enable.idempotence", "true"), ("linger.ms", "1")],
    );
    produce(&p, "rep", "b", 300).await;
    drop(p);

    // Copy the whole log as replica 1, one fetch at a time.
    let mut conn = Connection::connect(&broker.bootstrap(), "replica-1")
        .await
        .unwrap();
    let (mut follower, _) = Log::open(
        &dir.path().join("follower/rep-0"),
        TopicConfig::default(),
        OpenHints::default(),
    )
    .unwrap();
    loop {
        let leo = follower.log_end_offset();
        let last_epoch = follower.latest_epoch().unwrap_or(-1);
        let resp = conn
            .send(&fetch_request(1, leo, last_epoch), 12)
            .await
            .unwrap();
        let part = &resp.responses[0].partitions[0];
        assert_eq!(part.error_code, 0);
        assert_eq!(
            part.diverging_epoch.epoch, -1,
            "no divergence expected: {part:?}"
        );
        let data = records(&resp);
        if data.is_empty() {
            assert_eq!(leo, part.high_watermark);
            break;
        }
        follower.append_replicated(&data, 0).unwrap();
    }
    assert_eq!(follower.log_end_offset(), 600);
    assert_eq!(
        follower.epochs().entries().len(),
        2,
        "{:?}",
        follower.epochs().entries()
    );
    // Byte for byte what a consumer reads from the leader.
    let mut from_leader = Vec::new();
    let mut at = 0;
    while at < 600 {
        let resp = conn.send(&fetch_request(-1, at, -1), 12).await.unwrap();
        let data = records(&resp);
        let mut it = broker::protocol::batch::Batches::new(&data);
        for (h, _) in it.by_ref() {
            at = h.next_offset();
        }
        from_leader.extend_from_slice(&data[..it.consumed()]);
    }
    assert_eq!(follower.read(0, 64 << 20, i64::MAX).unwrap(), from_leader);

    // A fetcher claiming epoch 0 past where epoch 0 ended is told to truncate to its end.
    let epoch0_end = follower.epochs().entries()[1].start_offset;
    assert_eq!(epoch0_end, first.len() as i64);
    let first_epoch = follower.epochs().entries()[0].epoch;
    let resp = conn
        .send(&fetch_request(1, epoch0_end + 5, first_epoch), 12)
        .await
        .unwrap();
    let part = &resp.responses[0].partitions[0];
    assert_eq!(
        (part.diverging_epoch.epoch, part.diverging_epoch.end_offset),
        (first_epoch, epoch0_end)
    );
    assert!(records(&resp).is_empty(), "no records with a divergence");
    // Consumers never see past the high watermark; replicas read to the log end.
    tokio::time::timeout(
        Duration::from_secs(5),
        conn.send(&fetch_request(1, 600, follower.latest_epoch().unwrap()), 12),
    )
    .await
    .unwrap()
    .unwrap();
}
