//! Heartbeat: keeps a member's session alive and tells it when a rebalance is under way.

use std::sync::Arc;

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use crate::state::Broker;
use tracing::debug;

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
    debug!(
        group = %req.group_id.0,
        member = %req.member_id,
        generation = req.generation_id,
        error_code = r.error_code,
        "Heartbeat"
    );
    r
}
