//! DescribeTopicPartitions and DescribeProducers against a real standalone broker: the paged
//! view walked with a small limit is exactly Metadata's, and the producers librdkafka's
//! idempotent producers leave behind are listed with their epochs and last sequences, also
//! after a restart. (The same in a 3-broker cluster: `cluster_faults.rs`.)

mod common;

use std::time::Duration;

use broker::replication::client::Connection;
use common::BrokerProcess;
use common::describe::{metadata, producers, walk};
use common::kafka::{produce, producer};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::FindCoordinatorRequest;
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;

async fn create_topics(bootstrap: &str, topics: &[(&str, i32)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(n, p)| NewTopic::new(n, *p, TopicReplication::Fixed(1)))
        .collect();
    let res = admin
        .create_topics(&new, &AdminOptions::new())
        .await
        .unwrap();
    assert!(res.iter().all(Result::is_ok), "{res:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_topic_partitions_pages_through_exactly_what_metadata_shows() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(
        &dir.path().join("data"),
        &["--offsets-topic-partitions", "2"],
    );
    let bootstrap = broker.bootstrap();
    create_topics(&bootstrap, &[("paged", 10), ("paged-a", 1), ("paged-z", 4)]).await;
    let mut conn = Connection::connect(&bootstrap, "describe-test")
        .await
        .unwrap();
    // The internal offsets topic exists once a group coordinator is asked for.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let req = FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("g"));
        if conn.send(&req, 0).await.unwrap().error_code == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no group coordinator");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let want = metadata(&mut conn, &[]).await;
    let total = want.len();
    assert_eq!(total, 10 + 1 + 4 + 2, "{want:#?}");
    let w = walk(&mut conn, &[], 3).await;
    assert_eq!(w.partitions, want);
    // Full pages of 3, the last one holding the rest.
    assert_eq!(w.pages.len(), total.div_ceil(3), "pages {:?}", w.pages);
    assert!(
        w.pages[..w.pages.len() - 1].iter().all(|n| *n == 3),
        "pages {:?}",
        w.pages
    );
    for p in &w.partitions {
        assert_eq!(p.internal, p.topic == "__consumer_offsets", "{p:?}");
        assert_eq!(
            (p.leader, &p.replicas[..], &p.isr[..]),
            (0, &[0][..], &[0][..])
        );
        assert!(p.offline.is_empty(), "{p:?}");
    }

    // Named topics (one twice), in name order; Kafka's default limit fits it in one response.
    let named = ["paged-z", "paged", "paged"];
    let want = metadata(&mut conn, &named).await;
    assert_eq!(walk(&mut conn, &named, 3).await.partitions, want);
    let one = walk(&mut conn, &named, 2000).await;
    assert_eq!((one.partitions, one.pages), (want, vec![14]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_producers_lists_idempotent_producers_also_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let bootstrap = broker.bootstrap();
    create_topics(&bootstrap, &[("idem", 2)]).await;
    let idempotent = [
        ("enable.idempotence", "true"),
        ("linger.ms", "5"),
        ("partitioner", "murmur2_random"),
    ];
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };

    let before = now();
    let p = producer(&bootstrap, &idempotent);
    let acked = produce(&p, "idem", "first", 40).await;
    drop(p);
    let after = now();
    let mut conn = Connection::connect(&bootstrap, "describe-test")
        .await
        .unwrap();
    let mut first = Vec::new();
    for partition in [0, 1] {
        let records = acked.keys().filter(|(p, _)| *p == partition).count() as i32;
        let listed = producers(&mut conn, "idem", partition).await.unwrap();
        if records == 0 {
            assert!(listed.is_empty(), "{listed:?}");
            continue;
        }
        // Sequences count records from 0 per partition.
        assert_eq!(listed.len(), 1, "{listed:?}");
        let (id, epoch, last_seq, ts) = listed[0];
        assert!(id >= 0, "{listed:?}");
        assert_eq!((epoch, last_seq), (0, records - 1), "partition {partition}");
        assert!(
            (before..=after).contains(&ts),
            "{ts} not in {before}..={after}"
        );
        first.push((partition, listed[0]));
    }
    assert!(!first.is_empty());

    // A second idempotent producer is listed beside the first; a plain one is not listed.
    let p = producer(&bootstrap, &idempotent);
    let second = produce(&p, "idem", "second", 10).await;
    drop(p);
    let plain = producer(
        &bootstrap,
        &[("enable.idempotence", "false"), ("acks", "1")],
    );
    produce(&plain, "idem", "plain", 10).await;
    drop(plain);
    let mut listed_before = Vec::new();
    for partition in [0, 1] {
        let listed = producers(&mut conn, "idem", partition).await.unwrap();
        let mine = first.iter().find(|(p, _)| *p == partition).map(|(_, s)| *s);
        let records = second.keys().filter(|(p, _)| *p == partition).count() as i32;
        let want = usize::from(mine.is_some()) + usize::from(records > 0);
        assert_eq!(listed.len(), want, "partition {partition}: {listed:?}");
        if let Some(mine) = mine {
            assert_eq!(listed[0], mine, "the first producer, unchanged");
        }
        if records > 0 {
            let (id, epoch, last_seq, _) = *listed.last().unwrap();
            assert!(mine.is_none_or(|m| id > m.0), "{listed:?}");
            assert_eq!((epoch, last_seq), (0, records - 1), "{listed:?}");
        }
        listed_before.push(listed);
    }

    // The state is the log's: a restart rebuilds the same table.
    assert!(broker.terminate());
    broker.spawn();
    let mut conn = Connection::connect(&broker.bootstrap(), "describe-test")
        .await
        .unwrap();
    for partition in [0, 1] {
        assert_eq!(
            producers(&mut conn, "idem", partition).await.unwrap(),
            listed_before[partition as usize],
            "partition {partition} after a restart"
        );
    }

    let unknown = ResponseError::UnknownTopicOrPartition.code();
    assert_eq!(producers(&mut conn, "idem", 2).await, Err(unknown));
    assert_eq!(producers(&mut conn, "no-such-topic", 0).await, Err(unknown));
    assert_eq!(
        producers(&mut conn, "bad/name", 0).await,
        Err(ResponseError::InvalidTopicException.code())
    );
}
