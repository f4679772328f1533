//! Interop with librdkafka (built from the rdkafka crate's bundled source): its default
//! settings (acks=all), idempotence, and every compression codec, against the real broker.

mod common;

use common::BrokerProcess;
use common::kafka::{assert_acked_present, consume_all, produce, producer};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::Consumer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_codec_round_trips_with_default_and_idempotent_producers() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("data"), &["--num-partitions", "3"]);
    let bootstrap = broker.bootstrap();
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        for idempotent in ["false", "true"] {
            let topic = format!("codec-{codec}-{idempotent}");
            let p = producer(
                &bootstrap,
                &[
                    ("compression.codec", codec),
                    ("enable.idempotence", idempotent),
                    ("linger.ms", "5"),
                ],
            );
            let acked = produce(&p, &topic, &topic, 3000).await;
            let read = consume_all(&bootstrap, &topic, &[0, 1, 2]);
            assert_eq!(
                read.len(),
                acked.len(),
                "{topic}: read {} of {}",
                read.len(),
                acked.len()
            );
            assert_acked_present(&acked, &read);
            // Offsets are dense per partition.
            for part in 0..3 {
                let offs: Vec<i64> = read
                    .keys()
                    .filter(|(p, _)| *p == part)
                    .map(|(_, o)| *o)
                    .collect();
                assert!(
                    offs.iter().enumerate().all(|(i, o)| *o == i as i64),
                    "{topic}-{part} has gaps"
                );
            }
        }
    }
    let (status, metrics) = broker.http_get("/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("strand_requests_total{api=\"produce\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("strand_log_end_offset{topic=\"codec-zstd-true\""),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_client_creates_and_deletes_topics() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("data"), &["--auto-create-topics", "false"]);
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .unwrap();
    let opts = AdminOptions::new();
    let topic =
        NewTopic::new("admin-made", 4, TopicReplication::Fixed(1)).set("retention.ms", "60000");
    let res = admin.create_topics([&topic], &opts).await.unwrap();
    assert!(res[0].is_ok(), "{res:?}");
    let again = admin.create_topics([&topic], &opts).await.unwrap();
    assert!(again[0].is_err(), "second create must fail: {again:?}");
    let bad = NewTopic::new("bad", 1, TopicReplication::Fixed(1)).set("no.such.config", "1");
    assert!(admin.create_topics([&bad], &opts).await.unwrap()[0].is_err());
    let p = producer(&broker.bootstrap(), &[("enable.idempotence", "true")]);
    let acked = produce(&p, "admin-made", "a", 400).await;
    let read = consume_all(&broker.bootstrap(), "admin-made", &[0, 1, 2, 3]);
    assert_acked_present(&acked, &read);
    let deleted = admin.delete_topics(&["admin-made"], &opts).await.unwrap();
    assert!(deleted[0].is_ok(), "{deleted:?}");
    assert!(!dir.path().join("data/admin-made-0").exists());
    // Recreating the name starts empty: nothing of the deleted topic comes back.
    let res = admin.create_topics([&topic], &opts).await.unwrap();
    assert!(res[0].is_ok(), "{res:?}");
    let c = common::kafka::consumer(&broker.bootstrap());
    for p in 0..4 {
        let (low, high) = c
            .fetch_watermarks("admin-made", p, std::time::Duration::from_secs(10))
            .unwrap();
        assert_eq!(
            (low, high),
            (0, 0),
            "partition {p} of the recreated topic is not empty"
        );
    }
}

/// The before-ack fsync policy acknowledges only fsynced writes; concurrent producers share
/// fsyncs (group commit). Checked end to end: everything acknowledged is read back, and it
/// survives kill -9 with the high watermark restored from what was fsynced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsync_before_ack_topic_acknowledges_and_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .unwrap();
    let topic =
        NewTopic::new("durable", 2, TopicReplication::Fixed(1)).set("fsync.policy", "before-ack");
    let res = admin
        .create_topics([&topic], &AdminOptions::new())
        .await
        .unwrap();
    assert!(res[0].is_ok(), "{res:?}");
    let p = producer(
        &broker.bootstrap(),
        &[("enable.idempotence", "true"), ("linger.ms", "1")],
    );
    let acked = produce(&p, "durable", "d", 5000).await;
    drop(p);
    broker.kill9();
    broker.spawn();
    let read = consume_all(&broker.bootstrap(), "durable", &[0, 1]);
    assert_eq!(read.len(), acked.len());
    assert_acked_present(&acked, &read);
}
