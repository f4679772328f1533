//! OffsetDelete (KIP-496): `kafka-consumer-groups --delete-offsets`. Partitions of topics this
//! broker does not know are answered UNKNOWN_TOPIC_OR_PARTITION; the rest go to the group's
//! coordinator (`GroupCoordinator::delete_offsets`).

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse, ResponseKind};

use super::Reply;
use crate::state::Broker;

pub fn handle(broker: &Arc<Broker>, req: OffsetDeleteRequest) -> Reply {
    let broker = Arc::clone(broker);
    Reply::Later(Box::pin(async move {
        let mut r = OffsetDeleteResponse::default();
        let known = |topic: &str, p: i32| {
            broker
                .topic(topic)
                .is_some_and(|t| (0..t.record.partitions).contains(&p))
        };
        let mut asked = Vec::new();
        let mut answers: BTreeMap<(String, i32), Option<ResponseError>> = BTreeMap::new();
        for t in &req.topics {
            for p in &t.partitions {
                let slot = (t.name.to_string(), p.partition_index);
                if known(&slot.0, slot.1) {
                    asked.push(slot);
                } else {
                    answers.insert(slot, Some(ResponseError::UnknownTopicOrPartition));
                }
            }
        }
        match broker
            .groups
            .delete_offsets(&broker, req.group_id.as_str(), &asked)
            .await
        {
            Ok(done) => answers.extend(asked.into_iter().zip(done)),
            Err(e) => {
                r.error_code = e.code();
                return ResponseKind::OffsetDelete(r);
            }
        }
        for t in req.topics {
            let mut out = OffsetDeleteResponseTopic::default();
            for p in &t.partitions {
                let mut res = OffsetDeleteResponsePartition::default();
                res.partition_index = p.partition_index;
                let slot = (t.name.to_string(), p.partition_index);
                if let Some(Some(e)) = answers.get(&slot) {
                    res.error_code = e.code();
                }
                out.partitions.push(res);
            }
            out.name = t.name;
            r.topics.push(out);
        }
        ResponseKind::OffsetDelete(r)
    }))
}
