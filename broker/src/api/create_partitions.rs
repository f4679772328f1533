//! CreatePartitions: grows topics (`kafka-topics --alter --partitions`). The new partitions'
//! replicas are placed the way a new topic's are, or where the client's assignment says (the
//! controller checks it: one list per new partition, the topic's replication factor, live
//! brokers).

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse, ResponseKind};

use super::topic_admin::Admin;
use super::{Reply, str_bytes};
use crate::state::Broker;

pub fn handle(broker: &Arc<Broker>, req: CreatePartitionsRequest) -> Reply {
    let admin = Admin::of(broker);
    Reply::Later(Box::pin(async move {
        let duplicated = super::repeated(req.topics.iter().map(|t| t.name.as_str()));
        let mut r = CreatePartitionsResponse::default();
        for topic in req.topics {
            let name = topic.name.as_str().to_string();
            let outcome = if duplicated.contains(&name) {
                Err((
                    ResponseError::InvalidRequest,
                    format!("topic '{name}' appears more than once in the request"),
                ))
            } else {
                // Kafka's AdminClient sends null without an assignment; an empty list is the same.
                let assignment = topic
                    .assignments
                    .as_ref()
                    .filter(|a| !a.is_empty())
                    .map(|a| {
                        a.iter()
                            .map(|r| r.broker_ids.iter().map(|b| b.0).collect())
                            .collect()
                    });
                admin
                    .add_partitions(&name, topic.count, assignment, req.validate_only)
                    .await
            };
            let mut res = CreatePartitionsTopicResult::default();
            res.name = topic.name;
            if let Err((code, message)) = outcome {
                res.error_code = code.code();
                res.error_message = Some(str_bytes(message));
            }
            r.results.push(res);
        }
        ResponseKind::CreatePartitions(r)
    }))
}
