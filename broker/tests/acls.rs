//! The authorizer against requests no Kafka client library sends on purpose, with a real
//! broker process: a fetch claiming to be a follower's needs CLUSTER_ACTION (else anyone
//! could read past the high watermark), and Metadata before v4 (whose auto-creation has no
//! flag) creates no topic for a principal without CREATE. Clients' view of ACLs is in
//! e2e/interop/python/test_acls.py.

mod common;

use broker::replication::client::Connection;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{BrokerId, FetchRequest, MetadataRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use common::BrokerProcess;

fn topic(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.into()))
}

fn metadata_for(name: &str) -> MetadataRequest {
    MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(topic(name))),
    ]))
}

#[tokio::test]
async fn unprivileged_followers_and_v0_auto_creation_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // Anonymous clients may read (so describe) never-* topics, and nothing else: no CREATE,
    // no CLUSTER_ACTION.
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::write(
        dir.path().join("data/acls.json"),
        r#"[{"resource_type":"TOPIC","pattern_type":"PREFIXED","resource_name":"never-",
             "principal":"User:ANONYMOUS","host":"*","operation":"READ","permission":"ALLOW"}]"#,
    )
    .unwrap();
    let broker = BrokerProcess::start(
        &dir.path().join("data"),
        &[
            "--authorizer-class-name",
            "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "--auto-create-topics",
            "true",
        ],
    );
    let mut c = Connection::connect(&broker.bootstrap(), "probe")
        .await
        .unwrap();

    for v in [1, 3] {
        let name = format!("never-made-v{v}");
        let r = c.send(&metadata_for(&name), v).await.unwrap();
        // Kafka's answer for a missing topic the client may not create.
        assert_eq!(r.topics.len(), 1, "v{v}: {r:?}");
        assert_eq!(r.topics[0].error_code, 29, "v{v}: {r:?}");
        // Still not there for the broker itself.
        let log = broker.log();
        assert!(!log.contains(&name), "{log}");
    }
    // A follower's fetch from a principal without CLUSTER_ACTION, for a topic it may read as
    // a consumer: refused per partition, nothing read.
    let fetch = FetchRequest::default()
        .with_replica_id(BrokerId(1))
        .with_max_wait_ms(0)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(topic("never-fetched"))
                .with_partitions(vec![FetchPartition::default().with_partition(0)]),
        ]);
    let r = c.send(&fetch, 12).await.unwrap();
    assert_eq!(r.responses.len(), 1, "{r:?}");
    let p = &r.responses[0].partitions[0];
    assert_eq!(p.error_code, 29, "{r:?}");
    assert!(p.records.as_ref().is_none_or(|r| r.is_empty()), "{r:?}");
}
