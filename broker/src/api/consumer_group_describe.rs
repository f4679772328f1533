//! ConsumerGroupDescribe (KIP-848): a consumer group's epochs, assignor and members, with
//! each member's current and target assignment. A group of the classic protocol is answered
//! GROUP_ID_NOT_FOUND ("is not a consumer group"), which sends Kafka's admin client to
//! DescribeGroups for it.

use std::sync::Arc;

use kafka_protocol::messages::consumer_group_describe_response::{
    Assignment, DescribedGroup, Member, TopicPartitions,
};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, TopicName,
};

use super::str_bytes;
use crate::group::assignor;
use crate::state::Broker;

const OPERATIONS_OMITTED: i32 = i32::MIN;
/// KIP-1099's member type of a consumer group protocol member.
const MEMBER_TYPE_CONSUMER: i8 = 1;

pub fn handle(
    broker: &Arc<Broker>,
    req: ConsumerGroupDescribeRequest,
) -> ConsumerGroupDescribeResponse {
    let names = topic_names(broker);
    let to_wire = |a: &assignor::Assignment| {
        let mut out = Assignment::default();
        out.topic_partitions = a
            .iter()
            .filter_map(|(id, ps)| {
                let mut tp = TopicPartitions::default();
                tp.topic_id = *id;
                tp.topic_name = TopicName(str_bytes(names.get(id)?.clone()));
                tp.partitions = ps.iter().copied().collect();
                Some(tp)
            })
            .collect();
        out
    };
    let mut r = ConsumerGroupDescribeResponse::default();
    r.groups = req
        .group_ids
        .into_iter()
        .map(|id| {
            let mut g = DescribedGroup::default();
            g.authorized_operations = OPERATIONS_OMITTED;
            match broker.groups.describe_consumer(broker, id.0.as_str()) {
                Err(refusal) => {
                    g.error_code = refusal.error.code();
                    g.error_message =
                        (!refusal.message.is_empty()).then(|| str_bytes(refusal.message));
                    g.group_state = str_bytes("Dead");
                }
                Ok(c) => {
                    g.group_state = str_bytes(c.state().name());
                    g.group_epoch = c.epoch();
                    g.assignment_epoch = c.assignment_epoch();
                    g.assignor_name = str_bytes(c.assignor());
                    g.members = c
                        .members()
                        .map(|m| {
                            let mut d = Member::default();
                            d.member_id = str_bytes(m.id.clone());
                            d.instance_id = m.instance_id.clone().map(str_bytes);
                            d.rack_id = m.rack_id.clone().map(str_bytes);
                            d.member_epoch = m.epoch;
                            d.client_id = str_bytes(m.client_id.clone());
                            d.client_host = str_bytes(m.client_host.clone());
                            d.subscribed_topic_regex =
                                m.subscribed_topic_regex.clone().map(str_bytes);
                            d.subscribed_topic_names = m
                                .subscribed_topic_names
                                .iter()
                                .map(|n| TopicName(str_bytes(n.clone())))
                                .collect();
                            d.assignment = to_wire(&m.assigned);
                            d.target_assignment =
                                to_wire(c.target_of(&m.id).unwrap_or(&assignor::Assignment::new()));
                            d.member_type = MEMBER_TYPE_CONSUMER;
                            d
                        })
                        .collect();
                }
            }
            g.group_id = id;
            g
        })
        .collect();
    r
}

/// Topic names by id, as this broker knows them.
fn topic_names(broker: &Broker) -> std::collections::HashMap<uuid::Uuid, String> {
    if let Some(rt) = broker.cluster() {
        return rt
            .membership
            .metadata()
            .topics
            .values()
            .map(|t| (t.id, t.name.clone()))
            .collect();
    }
    broker
        .topics()
        .iter()
        .map(|t| (t.record.id, t.record.name.clone()))
        .collect()
}
