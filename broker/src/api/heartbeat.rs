//! Heartbeat: keeps a member's session alive and tells it when a rebalance is under way.

use std::sync::Arc;

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use crate::state::Broker;

pub fn handle(broker: &Arc<Broker>, req: HeartbeatRequest) -> HeartbeatResponse {
    let mut r = HeartbeatResponse::default();
    if let Err(e) = broker.groups.heartbeat(
        broker,
        req.group_id.0.as_str(),
        req.member_id.as_str(),
        req.group_instance_id.as_ref().map(|s| s.as_str()),
        req.generation_id,
    ) {
        r.error_code = e.code();
    }
    r
}
