//! DescribeTopicPartitions (KIP-966; what Kafka 4's `kafka-topics --describe` and
//! AdminClient.describeTopics ask first): Metadata's view of topics, paged by partition.
//!
//! The view is Metadata's own (`metadata::topic_entry` standalone, `cluster_admin::topic_entry`
//! in a cluster), so both APIs always agree. Paging follows Kafka's broker: at most
//! `min(response_partition_limit, 2000)` partitions (at least 1) per response, topics in name
//! order from the request's cursor, and a `next_cursor` naming the first partition left out.
//! A partition's eligible leader replicas (KIP-966) are the controller's ELR; a standalone
//! broker has none. `last_known_elr` (kept by Kafka for its unclean recovery) stays empty.

use std::collections::BTreeSet;
use std::ops::Range;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use kafka_protocol::messages::{
    BrokerId, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, TopicName,
};

use super::cluster_admin::View;
use super::metadata::OPERATIONS_OMITTED;
use super::str_bytes;
use crate::state::Broker;
use crate::topic_name;

/// Kafka's max.request.partition.size.limit default: the most partitions one response holds.
pub const MAX_PARTITIONS: i32 = 2000;

/// Metadata's newest version: how a leader unreachable on the request's listener is shown.
const METADATA_VIEW: i16 = 12;

/// The topics this broker can describe: their names, and one topic's entry with the partitions
/// in a range, plus how many partitions it has.
trait Topics {
    fn names(&self) -> Vec<String>;
    fn describe(&self, name: &str, range: Range<usize>) -> Option<(MetadataResponseTopic, usize)>;
    /// A partition's eligible leader replicas.
    fn elr(&self, _name: &str, _partition: i32) -> Vec<i32> {
        Vec::new()
    }
}

struct Standalone<'a>(&'a Broker);

impl Topics for Standalone<'_> {
    fn names(&self) -> Vec<String> {
        self.0
            .topics()
            .iter()
            .map(|t| t.record.name.clone())
            .collect()
    }
    fn describe(&self, name: &str, range: Range<usize>) -> Option<(MetadataResponseTopic, usize)> {
        let t = self.0.topic(name)?;
        let entry = super::metadata::topic_entry(self.0, &t, range);
        Some((entry, t.partitions.len()))
    }
}

struct Cluster<'a> {
    meta: Arc<crate::metadata::ClusterMetadata>,
    listener: &'a str,
}

impl Topics for Cluster<'_> {
    fn names(&self) -> Vec<String> {
        self.meta.topics.keys().cloned().collect()
    }
    fn describe(&self, name: &str, range: Range<usize>) -> Option<(MetadataResponseTopic, usize)> {
        let t = self.meta.topics.get(name)?;
        let view = View {
            listener: self.listener,
            version: METADATA_VIEW,
        };
        let entry = super::cluster_admin::topic_entry(&self.meta, t, &view, range);
        Some((entry, t.partitions.len()))
    }
    fn elr(&self, name: &str, partition: i32) -> Vec<i32> {
        self.meta
            .partition(name, partition)
            .map_or_else(Vec::new, |p| p.elr.clone())
    }
}

pub fn handle(
    broker: &Arc<Broker>,
    req: DescribeTopicPartitionsRequest,
    listener: &str,
) -> DescribeTopicPartitionsResponse {
    match broker.cluster() {
        None => answer(&Standalone(broker), req),
        Some(rt) => answer(
            &Cluster {
                meta: rt.membership.metadata(),
                listener,
            },
            req,
        ),
    }
}

fn answer(
    topics: &dyn Topics,
    req: DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    let mut r = DescribeTopicPartitionsResponse::default();
    let all = req.topics.is_empty();
    let (cursor_topic, cursor_partition) = req.cursor.as_ref().map_or((String::new(), 0), |c| {
        (c.topic_name.to_string(), c.partition_index)
    });
    let requested: Vec<String> = req.topics.iter().map(|t| t.name.to_string()).collect();
    // Kafka refuses a cursor outside the named topics, or at a negative partition, by failing
    // every named topic with INVALID_REQUEST.
    let bad_cursor = req.cursor.as_ref().is_some_and(|c| {
        c.partition_index < 0 || (!all && !requested.contains(&c.topic_name.to_string()))
    });
    if bad_cursor {
        r.topics = requested
            .into_iter()
            .map(|n| error_topic(n, ResponseError::InvalidRequest))
            .collect();
        return r;
    }
    // Named topics once each, in name order, from the cursor's topic on.
    let names: BTreeSet<String> = if all { topics.names() } else { requested }
        .into_iter()
        .filter(|n| *n >= cursor_topic)
        .collect();
    let mut remaining = req.response_partition_limit.clamp(1, MAX_PARTITIONS) as usize;
    for name in names {
        if remaining == 0 {
            // Every partition so far fitted exactly: the next response starts at this topic.
            r.next_cursor = Some(cursor(&name, 0));
            break;
        }
        let start = if name == cursor_topic {
            cursor_partition as usize
        } else {
            0
        };
        let Some((entry, count)) = topics.describe(&name, start..start.saturating_add(remaining))
        else {
            // All topics: only what exists (a topic deleted meanwhile is left out).
            if !all {
                let code = if topic_name::validate(&name).is_err() {
                    ResponseError::InvalidTopicException
                } else {
                    ResponseError::UnknownTopicOrPartition
                };
                r.topics.push(error_topic(name, code));
            }
            continue;
        };
        let end = start.saturating_add(remaining);
        let shown = entry.partitions.len();
        let mut described = topic(entry);
        for p in &mut described.partitions {
            let elr = topics.elr(&name, p.partition_index);
            p.eligible_leader_replicas = Some(elr.into_iter().map(BrokerId).collect());
        }
        r.topics.push(described);
        if end < count {
            r.next_cursor = Some(cursor(&name, end as i32));
            break;
        }
        remaining -= shown;
    }
    r
}

fn cursor(topic: &str, partition: i32) -> Cursor {
    let mut c = Cursor::default();
    c.topic_name = TopicName(str_bytes(topic));
    c.partition_index = partition;
    c
}

fn error_topic(name: String, code: ResponseError) -> DescribeTopicPartitionsResponseTopic {
    let mut t = DescribeTopicPartitionsResponseTopic::default();
    t.error_code = code.code();
    t.is_internal = name == crate::group::OFFSETS_TOPIC;
    t.name = Some(TopicName(str_bytes(name)));
    t.topic_authorized_operations = OPERATIONS_OMITTED;
    t
}

/// Metadata's entry for a topic, in this API's shape. As Kafka (4.3) answers this API, a
/// partition carries no error code: one without a leader (Metadata's LEADER_NOT_AVAILABLE) or
/// whose leader is not on the request's listener (LISTENER_NOT_FOUND) shows leader -1.
fn topic(m: MetadataResponseTopic) -> DescribeTopicPartitionsResponseTopic {
    let mut t = DescribeTopicPartitionsResponseTopic::default();
    t.error_code = m.error_code;
    t.name = m.name;
    t.topic_id = m.topic_id;
    t.is_internal = m.is_internal;
    t.topic_authorized_operations = m.topic_authorized_operations;
    t.partitions = m
        .partitions
        .into_iter()
        .map(|p| {
            let mut e = DescribeTopicPartitionsResponsePartition::default();
            e.partition_index = p.partition_index;
            e.leader_id = p.leader_id;
            e.leader_epoch = p.leader_epoch;
            e.replica_nodes = p.replica_nodes;
            e.isr_nodes = p.isr_nodes;
            e.offline_replicas = p.offline_replicas;
            e.eligible_leader_replicas = Some(Vec::new());
            e.last_known_elr = Some(Vec::new());
            e
        })
        .collect();
    t
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::describe_topic_partitions_request::{
        Cursor as RequestCursor, TopicRequest,
    };
    use kafka_protocol::messages::metadata_response::MetadataResponsePartition;

    use super::*;

    /// Topics with these partition counts, each partition led by broker 1.
    struct Fake(Vec<(&'static str, usize)>);

    impl Topics for Fake {
        fn names(&self) -> Vec<String> {
            self.0.iter().map(|(n, _)| n.to_string()).collect()
        }
        fn describe(
            &self,
            name: &str,
            range: Range<usize>,
        ) -> Option<(MetadataResponseTopic, usize)> {
            let (_, count) = self.0.iter().find(|(n, _)| *n == name)?;
            let mut t = MetadataResponseTopic::default();
            t.name = Some(TopicName(str_bytes(name)));
            t.partitions = (0..*count)
                .skip(range.start)
                .take(range.len())
                .map(|i| {
                    let mut p = MetadataResponsePartition::default();
                    p.partition_index = i as i32;
                    p.leader_id = 1.into();
                    if name == "leaderless" {
                        p.leader_id = (-1).into();
                        p.error_code = ResponseError::LeaderNotAvailable.code();
                    }
                    p
                })
                .collect();
            Some((t, *count))
        }
    }

    fn request(
        names: &[&str],
        limit: i32,
        cursor: Option<(&str, i32)>,
    ) -> DescribeTopicPartitionsRequest {
        DescribeTopicPartitionsRequest::default()
            .with_topics(
                names
                    .iter()
                    .map(|n| TopicRequest::default().with_name(TopicName(str_bytes(*n))))
                    .collect(),
            )
            .with_response_partition_limit(limit)
            .with_cursor(cursor.map(|(t, p)| {
                RequestCursor::default()
                    .with_topic_name(TopicName(str_bytes(t)))
                    .with_partition_index(p)
            }))
    }

    /// (topic, partitions shown) per topic.
    type Shown = Vec<(String, Vec<i32>)>;

    /// What a response shows, and its next cursor.
    fn shown(r: &DescribeTopicPartitionsResponse) -> (Shown, Option<(String, i32)>) {
        let topics = r
            .topics
            .iter()
            .map(|t| {
                (
                    t.name.as_ref().unwrap().as_str().to_string(),
                    t.partitions.iter().map(|p| p.partition_index).collect(),
                )
            })
            .collect();
        let cursor = r
            .next_cursor
            .as_ref()
            .map(|c| (c.topic_name.as_str().to_string(), c.partition_index));
        (topics, cursor)
    }

    fn owned(v: &[(&str, &[i32])]) -> Shown {
        v.iter().map(|(n, p)| (n.to_string(), p.to_vec())).collect()
    }

    #[test]
    fn pages_in_name_order_and_the_cursor_walks_every_partition() {
        let topics = Fake(vec![("b", 5), ("a", 2), ("c", 1)]);
        // a-0 a-1 b-0 | b-1 b-2 b-3 | b-4 c-0
        let r = answer(&topics, request(&[], 3, None));
        assert_eq!(
            shown(&r),
            (owned(&[("a", &[0, 1]), ("b", &[0])]), Some(("b".into(), 1)))
        );
        let r = answer(&topics, request(&[], 3, Some(("b", 1))));
        assert_eq!(
            shown(&r),
            (owned(&[("b", &[1, 2, 3])]), Some(("b".into(), 4)))
        );
        let r = answer(&topics, request(&[], 3, Some(("b", 4))));
        assert_eq!(shown(&r), (owned(&[("b", &[4]), ("c", &[0])]), None));
    }

    /// A page that ends exactly at a topic's end points the cursor at the next topic's start;
    /// a limit of 0 (or less) is 1, and one above Kafka's cap is the cap.
    #[test]
    fn limits_are_kafkas() {
        let topics = Fake(vec![("a", 2), ("b", 1), ("big", 2500)]);
        let r = answer(&topics, request(&["a", "b"], 2, None));
        assert_eq!(shown(&r), (owned(&[("a", &[0, 1])]), Some(("b".into(), 0))));
        let r = answer(&topics, request(&["a"], 0, None));
        assert_eq!(shown(&r), (owned(&[("a", &[0])]), Some(("a".into(), 1))));
        let r = answer(&topics, request(&["big"], i32::MAX, None));
        assert_eq!(r.topics[0].partitions.len(), MAX_PARTITIONS as usize);
        assert_eq!(shown(&r).1, Some(("big".into(), 2000)));
    }

    #[test]
    fn named_topics_errors_and_bad_cursors() {
        let topics = Fake(vec![("a", 1)]);
        let r = answer(&topics, request(&["zz", "a", "bad/name", "a"], 10, None));
        let got: Vec<(&str, i16)> = r
            .topics
            .iter()
            .map(|t| (t.name.as_ref().unwrap().as_str(), t.error_code))
            .collect();
        assert_eq!(
            got,
            [
                ("a", 0),
                ("bad/name", ResponseError::InvalidTopicException.code()),
                ("zz", ResponseError::UnknownTopicOrPartition.code()),
            ]
        );
        let invalid = ResponseError::InvalidRequest.code();
        // The cursor must name a listed topic, at a partition >= 0.
        let r = answer(&topics, request(&["a"], 10, Some(("b", 0))));
        assert!(r.topics.iter().all(|t| t.error_code == invalid), "{r:?}");
        let r = answer(&topics, request(&["a"], 10, Some(("a", -1))));
        assert!(r.topics.iter().all(|t| t.error_code == invalid), "{r:?}");
        // A cursor past a topic's end shows none of it.
        let r = answer(&topics, request(&["a"], 10, Some(("a", 5))));
        assert_eq!(shown(&r), (owned(&[("a", &[])]), None));
    }

    #[test]
    fn a_partition_without_a_leader_shows_leader_minus_one_and_no_error() {
        let r = answer(&Fake(vec![("leaderless", 1)]), request(&[], 10, None));
        let p = &r.topics[0].partitions[0];
        assert_eq!((p.leader_id.0, p.error_code), (-1, 0), "{r:?}");
    }

    #[test]
    fn the_offsets_topic_is_internal_also_when_unknown() {
        let r = answer(&Fake(vec![]), request(&["__consumer_offsets"], 10, None));
        assert!(r.topics[0].is_internal);
        assert_eq!(r.topics[0].topic_authorized_operations, OPERATIONS_OMITTED);
    }
}
