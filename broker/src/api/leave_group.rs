//! LeaveGroup: one member (v0-2) or a batch of members, static ones by instance id (v3+).

use std::sync::Arc;

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use crate::state::Broker;
use tracing::debug;

pub fn handle(broker: &Arc<Broker>, req: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let mut r = LeaveGroupResponse::default();
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        req.members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|s| s.to_string()),
                )
            })
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    debug!(group = %req.group_id.0, ?members, "LeaveGroup");
    match broker
        .groups
        .leave(broker, req.group_id.0.as_str(), &members)
    {
        Err(e) => r.error_code = e.code(),
        Ok(results) if version < 3 => {
            if let Some(Err(e)) = results.first() {
                r.error_code = e.code();
            }
        }
        Ok(results) => {
            r.members = req
                .members
                .into_iter()
                .zip(results)
                .map(|(m, res)| {
                    let mut e = MemberResponse::default();
                    e.member_id = m.member_id;
                    e.group_instance_id = m.group_instance_id;
                    e.error_code = res.err().map_or(0, |e| e.code());
                    e
                })
                .collect();
        }
    }
    r
}
