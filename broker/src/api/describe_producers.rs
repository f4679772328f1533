//! DescribeProducers (`kafka-transactions describe-producers`, AdminClient.describeProducers):
//! the idempotent producers a replica keeps state for (the same table that de-duplicates
//! retries, so bounded and expired as it is: producer.id.expiration.ms). As in Kafka, any
//! replica answers, the leader (the tool's default) or a follower (`--broker-id`: its table is
//! built from the batches it replicated, so it may lag the leader's); a broker without a
//! replica answers NOT_LEADER_OR_FOLLOWER.
//!
//! Per producer: its id and epoch, and its last batch's last sequence and max timestamp (what
//! Kafka's ProducerStateEntry reports). There are no transactions here, so the coordinator
//! epoch and the current transaction's start offset are always -1, as Kafka answers for an
//! idempotent producer outside a transaction.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse};

use super::{lookup, str_bytes};
use crate::partition::Partition;
use crate::state::Broker;
use crate::topic_name;

/// No transaction coordinator / no open transaction.
const NONE: i64 = -1;

pub fn handle(broker: &Arc<Broker>, req: DescribeProducersRequest) -> DescribeProducersResponse {
    let mut r = DescribeProducersResponse::default();
    for wanted in req.topics {
        let name = wanted.name.as_str();
        let found = broker.topic(name);
        let invalid = topic_name::validate(name).is_err();
        let mut t = TopicResponse::default();
        t.name = wanted.name.clone();
        for index in wanted.partition_indexes {
            let mut p = PartitionResponse::default();
            p.partition_index = index;
            let hosted = if invalid {
                Err(ResponseError::InvalidTopicException)
            } else {
                lookup(found.as_deref(), index)
            };
            match hosted {
                Ok(partition) => p.active_producers = active_producers(partition),
                Err(code) => {
                    p.error_code = code.code();
                    p.error_message = Some(str_bytes(code.to_string()));
                }
            }
            t.partitions.push(p);
        }
        r.topics.push(t);
    }
    r
}

/// The partition's producers, by id.
fn active_producers(partition: &Partition) -> Vec<ProducerState> {
    let log = partition.log();
    let mut out: Vec<ProducerState> = log
        .producers()
        .iter()
        .map(|(id, entry)| {
            let last = entry.batches.back();
            let mut s = ProducerState::default();
            s.producer_id = id.into();
            s.producer_epoch = i32::from(entry.epoch);
            s.last_sequence = last.map_or(-1, |b| b.last_seq);
            s.last_timestamp = last.map_or(-1, |b| b.timestamp);
            s.coordinator_epoch = NONE as i32;
            s.current_txn_start_offset = NONE;
            s
        })
        .collect();
    out.sort_by_key(|s| s.producer_id.0);
    out
}
