//! DescribeTopicPartitions walked page by page, Metadata's view to compare it with, and
//! DescribeProducers for one partition (kafka-protocol requests on one connection).

use broker::replication::client::Connection;
use kafka_protocol::messages::describe_topic_partitions_request::{Cursor, TopicRequest};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    DescribeProducersRequest, DescribeTopicPartitionsRequest, MetadataRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

/// One partition as either API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionView {
    pub topic: String,
    pub topic_id: uuid::Uuid,
    pub internal: bool,
    pub partition: i32,
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub offline: Vec<i32>,
}

pub fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn ids(v: &[kafka_protocol::messages::BrokerId]) -> Vec<i32> {
    v.iter().map(|b| b.0).collect()
}

/// A DescribeTopicPartitions walk: every partition shown, and the partitions in each response.
pub struct Walk {
    pub partitions: Vec<PartitionView>,
    pub pages: Vec<usize>,
}

/// Walks DescribeTopicPartitions for `topics` (empty: all) `limit` partitions at a time,
/// following `next_cursor` to the end. Panics on a topic-level error, on a partition error
/// (Kafka sets none in this API: a leaderless partition shows leader -1) or an ELR list that
/// is not empty.
pub async fn walk(conn: &mut Connection, topics: &[&str], limit: i32) -> Walk {
    let mut out = Walk {
        partitions: Vec::new(),
        pages: Vec::new(),
    };
    let mut cursor: Option<Cursor> = None;
    loop {
        let req = DescribeTopicPartitionsRequest::default()
            .with_topics(
                topics
                    .iter()
                    .map(|t| TopicRequest::default().with_name(name(t)))
                    .collect(),
            )
            .with_response_partition_limit(limit)
            .with_cursor(cursor.take());
        let r = conn.send(&req, 0).await.unwrap();
        out.pages
            .push(r.topics.iter().map(|t| t.partitions.len()).sum());
        for t in &r.topics {
            assert_eq!(t.error_code, 0, "{r:?}");
            assert_eq!(t.topic_authorized_operations, i32::MIN, "{r:?}");
            for p in &t.partitions {
                assert_eq!(p.error_code, 0, "{p:?}");
                assert!(
                    p.eligible_leader_replicas
                        .as_ref()
                        .is_some_and(Vec::is_empty)
                        && p.last_known_elr.as_ref().is_some_and(Vec::is_empty),
                    "{p:?}"
                );
                out.partitions.push(PartitionView {
                    topic: t.name.as_ref().unwrap().as_str().to_string(),
                    topic_id: t.topic_id,
                    internal: t.is_internal,
                    partition: p.partition_index,
                    leader: p.leader_id.0,
                    leader_epoch: p.leader_epoch,
                    replicas: ids(&p.replica_nodes),
                    isr: ids(&p.isr_nodes),
                    offline: ids(&p.offline_replicas),
                });
            }
        }
        match r.next_cursor {
            None => return out,
            Some(c) => {
                cursor = Some(
                    Cursor::default()
                        .with_topic_name(c.topic_name)
                        .with_partition_index(c.partition_index),
                );
            }
        }
        assert!(out.pages.len() < 100_000, "the cursor never ends");
    }
}

/// Metadata v12's view of `topics` (empty: all), topics in name order (partition error codes
/// left out: DescribeTopicPartitions has none).
pub async fn metadata(conn: &mut Connection, topics: &[&str]) -> Vec<PartitionView> {
    let req = MetadataRequest::default().with_topics(if topics.is_empty() {
        None
    } else {
        Some(
            topics
                .iter()
                .map(|t| MetadataRequestTopic::default().with_name(Some(name(t))))
                .collect(),
        )
    });
    let mut r = conn.send(&req, 12).await.unwrap();
    r.topics.sort_by(|a, b| a.name.cmp(&b.name));
    r.topics.dedup_by(|a, b| a.name == b.name);
    let mut out = Vec::new();
    for t in &r.topics {
        assert_eq!(t.error_code, 0, "{r:?}");
        for p in &t.partitions {
            out.push(PartitionView {
                topic: t.name.as_ref().unwrap().as_str().to_string(),
                topic_id: t.topic_id,
                internal: t.is_internal,
                partition: p.partition_index,
                leader: p.leader_id.0,
                leader_epoch: p.leader_epoch,
                replicas: ids(&p.replica_nodes),
                isr: ids(&p.isr_nodes),
                offline: ids(&p.offline_replicas),
            });
        }
    }
    out
}

/// (producer id, epoch, last sequence, last timestamp) of each producer DescribeProducers
/// lists for one partition, or its error code.
pub async fn producers(
    conn: &mut Connection,
    topic: &str,
    partition: i32,
) -> Result<Vec<(i64, i32, i32, i64)>, i16> {
    use kafka_protocol::messages::describe_producers_request::TopicRequest;
    let req = DescribeProducersRequest::default().with_topics(vec![
        TopicRequest::default()
            .with_name(name(topic))
            .with_partition_indexes(vec![partition]),
    ]);
    let r = conn.send(&req, 0).await.unwrap();
    let p = &r.topics[0].partitions[0];
    assert_eq!(p.partition_index, partition);
    if p.error_code != 0 {
        return Err(p.error_code);
    }
    Ok(p.active_producers
        .iter()
        .map(|s| {
            assert_eq!(
                (s.coordinator_epoch, s.current_txn_start_offset),
                (-1, -1),
                "{s:?}"
            );
            (
                s.producer_id.0,
                s.producer_epoch,
                s.last_sequence,
                s.last_timestamp,
            )
        })
        .collect())
}
