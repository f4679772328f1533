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

/// The real follower fetcher against a leader that deleted the segments the follower still
/// needed (retention here; an offsets-log snapshot does the same): the leader answers
/// OFFSET_OUT_OF_RANGE, and the follower restarts its log at the leader's log start and
/// catches up from there, instead of asking again at the same offset forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_below_the_leaders_log_start_restarts_there_and_catches_up() {
    use std::sync::Arc;

    use broker::partition::{Leadership, Partition, PartitionId, Signals};
    use broker::replication::fetcher::{FetcherManager, FetcherSettings};
    use broker::replication::state::{Assignment, Settings};

    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(
        &dir.path().join("data"),
        &[
            "--topic-config",
            "segment.bytes=2048",
            "--topic-config",
            "retention.bytes=4096",
            "--retention-check-interval-ms",
            "100",
        ],
    );
    // Small batches, so the log spans many segments whatever the client's timing: one batch
    // of hundreds of records would fill the active segment, which retention never deletes.
    let p = producer(
        &broker.bootstrap(),
        &[("linger.ms", "0"), ("batch.num.messages", "10")],
    );
    produce(&p, "rep", "a", 5).await;

    // The follower holds the start of the log, then falls behind while the leader moves on
    // and retention deletes what it would fetch next.
    let mut conn = Connection::connect(&broker.bootstrap(), "replica-1")
        .await
        .unwrap();
    let (mut log, _) = Log::open(
        &dir.path().join("follower/rep-0"),
        TopicConfig::default(),
        OpenHints::default(),
    )
    .unwrap();
    let resp = conn.send(&fetch_request(1, 0, -1), 12).await.unwrap();
    log.append_replicated(&records(&resp), 0).unwrap();
    let stale_end = log.log_end_offset();
    assert!(stale_end > 0);
    produce(&p, "rep", "b", 500).await;
    drop(p);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (leader_start, leader_end) = loop {
        let resp = conn.send(&fetch_request(-1, 0, -1), 12).await.unwrap();
        let part = &resp.responses[0].partitions[0];
        if part.log_start_offset > stale_end {
            break (part.log_start_offset, part.high_watermark);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "retention never ran: {part:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(leader_end, 505);

    let follower = Partition::new(
        PartitionId {
            topic: "rep".into(),
            index: 0,
            topic_id: uuid::Uuid::nil(),
        },
        1,
        log,
        Leadership {
            assignment: Assignment {
                leader: 1,
                leader_epoch: 0,
                partition_epoch: 0,
                replicas: vec![1],
                isr: vec![1],
            },
            settings: Settings::default(),
            high_watermark: None,
        },
        Arc::new(Signals::default()),
        0,
    );
    follower.become_follower(0, -1);
    let fetchers = FetcherManager::new(
        1,
        FetcherSettings {
            max_wait: Duration::from_millis(100),
            ..FetcherSettings::default()
        },
    );
    fetchers.follow(Arc::clone(&follower), 0, broker.bootstrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while follower.log().log_end_offset() < leader_end {
        assert!(
            std::time::Instant::now() < deadline,
            "the follower never caught up: {:?}\n{}",
            follower.status(0),
            broker.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fetchers.shutdown();
    assert_eq!(follower.high_watermark(), leader_end);

    // Byte for byte the leader's log from the follower's new start (which is the leader's
    // start then, or the leader's later start if retention ran again meanwhile).
    let start = follower.log().log_start_offset();
    assert!(start >= leader_start, "{start} < {leader_start}");
    let mut at = start;
    while at < leader_end {
        let resp = conn.send(&fetch_request(1, at, -1), 12).await.unwrap();
        let data = records(&resp);
        assert!(!data.is_empty(), "leader has nothing at {at}: {resp:?}");
        let ours = follower.log().read(at, data.len(), i64::MAX).unwrap();
        assert_eq!(ours, data[..ours.len()], "differs at {at}");
        let mut it = broker::protocol::batch::Batches::new(&ours);
        for (h, _) in it.by_ref() {
            at = h.next_offset();
        }
        assert!(it.consumed() > 0);
    }
}
