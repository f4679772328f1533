//! ConsumerGroupHeartbeat (KIP-848): a member of a consumer group joins, stays, reports what
//! it owns and learns its assignment, all in one request (see `group::consumer`).

use std::sync::Arc;

use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse};
use tracing::debug;

use super::{Client, str_bytes};
use crate::group::OFFSETS_TOPIC;
use crate::group::assignor;
use crate::group::consumer::{Heartbeat, TopicInfo, Topics};
use crate::state::Broker;

/// The topics as this broker knows them: the cluster's metadata in a cluster.
struct BrokerTopics<'a>(&'a Broker);

impl Topics for BrokerTopics<'_> {
    fn info(&self, name: &str) -> Option<TopicInfo> {
        if let Some(rt) = self.0.cluster() {
            let meta = rt.membership.metadata();
            return meta
                .topics
                .get(name)
                .map(|t| (t.id, t.partitions.len() as i32));
        }
        self.0
            .topic(name)
            .map(|t| (t.record.id, t.partitions.len() as i32))
    }

    fn names(&self) -> Vec<String> {
        let all: Vec<String> = match self.0.cluster() {
            Some(rt) => rt.membership.metadata().topics.keys().cloned().collect(),
            None => self
                .0
                .topics()
                .iter()
                .map(|t| t.record.name.clone())
                .collect(),
        };
        all.into_iter().filter(|n| n != OFFSETS_TOPIC).collect()
    }
}

pub fn handle(
    broker: &Arc<Broker>,
    req: ConsumerGroupHeartbeatRequest,
    version: i16,
    client: &Client,
) -> ConsumerGroupHeartbeatResponse {
    let owned = req.topic_partitions.as_ref().map(|tps| {
        let mut a = assignor::Assignment::new();
        for tp in tps {
            a.entry(tp.topic_id)
                .or_default()
                .extend(tp.partitions.iter().copied());
        }
        a
    });
    let hb = Heartbeat {
        member_id: req.member_id.to_string(),
        fresh_member_id: uuid::Uuid::new_v4().simple().to_string(),
        member_epoch: req.member_epoch,
        instance_id: req.instance_id.as_ref().map(|s| s.to_string()),
        rack_id: req.rack_id.as_ref().map(|s| s.to_string()),
        rebalance_timeout_ms: req.rebalance_timeout_ms,
        subscribed_topic_names: req
            .subscribed_topic_names
            .as_ref()
            .map(|ns| ns.iter().map(|n| n.0.to_string()).collect()),
        // An empty regex is "no regex" (Kafka: it removes one).
        subscribed_topic_regex: req
            .subscribed_topic_regex
            .as_ref()
            .filter(|s| !s.is_empty())
            .map(|s| s.to_string()),
        server_assignor: req.server_assignor.as_ref().map(|s| s.to_string()),
        owned,
        client_id: client.id.clone(),
        client_host: client.host.clone(),
        version,
    };
    let group_id = req.group_id.0.as_str();
    let mut r = ConsumerGroupHeartbeatResponse::default();
    match broker
        .groups
        .consumer_heartbeat(broker, group_id, hb, &BrokerTopics(broker))
    {
        Ok(reply) => {
            r.member_id = Some(str_bytes(reply.member_id));
            r.member_epoch = reply.member_epoch;
            r.heartbeat_interval_ms = reply.heartbeat_interval_ms;
            r.assignment = reply.assignment.map(|a| {
                let mut out = Assignment::default();
                out.topic_partitions = a
                    .into_iter()
                    .map(|(topic_id, ps)| {
                        let mut tp = TopicPartitions::default();
                        tp.topic_id = topic_id;
                        tp.partitions = ps.into_iter().collect();
                        tp
                    })
                    .collect();
                out
            });
        }
        Err(refusal) => {
            r.error_code = refusal.error.code();
            r.member_epoch = -1;
            r.error_message = (!refusal.message.is_empty()).then(|| str_bytes(refusal.message));
        }
    }
    debug!(
        group = %group_id,
        member = %req.member_id,
        epoch = req.member_epoch,
        reply_epoch = r.member_epoch,
        error_code = r.error_code,
        error = r.error_message.as_deref().unwrap_or(""),
        "ConsumerGroupHeartbeat"
    );
    r
}
