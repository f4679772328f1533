//! OffsetFetch: committed offsets of one group (v1-7) or several (v8+); a partition without a
//! commit answers offset -1. Only committed (replicated) commits are visible.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};

use super::str_bytes;
use crate::group::records::OffsetValue;
use crate::state::Broker;

type Wanted = Option<Vec<(String, Vec<i32>)>>;
type Found = Vec<(String, Vec<(i32, Option<OffsetValue>)>)>;

/// Offsets for one group; a group-level error is reported for every requested partition.
fn fetch(
    broker: &Arc<Broker>,
    group_id: &str,
    wanted: Wanted,
    member: Option<(&str, i32)>,
) -> (Found, Option<ResponseError>) {
    match broker
        .groups
        .fetch_offsets(broker, group_id, wanted.clone(), member)
    {
        Ok(found) => (found, None),
        Err(e) => {
            let found = wanted
                .unwrap_or_default()
                .into_iter()
                .map(|(t, parts)| (t, parts.into_iter().map(|p| (p, None)).collect()))
                .collect();
            (found, Some(e))
        }
    }
}

pub fn handle(broker: &Arc<Broker>, req: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
    let mut r = OffsetFetchResponse::default();
    if version >= 8 {
        r.groups = req
            .groups
            .iter()
            .map(|g| {
                let wanted = g.topics.as_ref().map(|ts| {
                    ts.iter()
                        .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
                        .collect()
                });
                let member = g.member_id.as_ref().map(|m| (m.as_str(), g.member_epoch));
                let (found, error) = fetch(broker, g.group_id.0.as_str(), wanted, member);
                let mut out = OffsetFetchResponseGroup::default();
                out.group_id = g.group_id.clone();
                out.error_code = error.map_or(0, |e| e.code());
                if error.is_none() {
                    out.topics = found
                        .into_iter()
                        .map(|(name, parts)| {
                            let mut t = OffsetFetchResponseTopics::default();
                            t.name = TopicName(str_bytes(name));
                            t.partitions = parts
                                .into_iter()
                                .map(|(index, v)| {
                                    let mut p = OffsetFetchResponsePartitions::default();
                                    p.partition_index = index;
                                    fill(&v, |o, e, m| {
                                        p.committed_offset = o;
                                        p.committed_leader_epoch = e;
                                        p.metadata = Some(str_bytes(m));
                                    });
                                    p
                                })
                                .collect();
                            t
                        })
                        .collect();
                }
                out
            })
            .collect();
        return r;
    }
    let wanted = req.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
            .collect()
    });
    let (found, error) = fetch(broker, req.group_id.0.as_str(), wanted, None);
    // v2+ carries a group-level error; v1 has only per-partition errors.
    if version >= 2 {
        r.error_code = error.map_or(0, |e| e.code());
    }
    if version >= 2 && error.is_some() {
        return r;
    }
    r.topics = found
        .into_iter()
        .map(|(name, parts)| {
            let mut t = OffsetFetchResponseTopic::default();
            t.name = TopicName(str_bytes(name));
            t.partitions = parts
                .into_iter()
                .map(|(index, v)| {
                    let mut p = OffsetFetchResponsePartition::default();
                    p.partition_index = index;
                    p.error_code = error.map_or(0, |e| e.code());
                    fill(&v, |o, e, m| {
                        p.committed_offset = o;
                        p.committed_leader_epoch = e;
                        p.metadata = Some(str_bytes(m));
                    });
                    p
                })
                .collect();
            t
        })
        .collect();
    r
}

/// (offset, leader epoch, metadata) of a commit, or Kafka's "no commit" values.
fn fill(v: &Option<OffsetValue>, mut set: impl FnMut(i64, i32, String)) {
    match v {
        Some(v) => set(v.offset, v.leader_epoch, v.metadata.clone()),
        None => set(-1, -1, String::new()),
    }
}
