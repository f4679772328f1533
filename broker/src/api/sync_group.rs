//! SyncGroup: the leader hands in the assignment; every member (the leader included) gets its
//! own share once the group's new state is committed to the offsets log.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{ResponseKind, SyncGroupRequest, SyncGroupResponse};

use super::{Reply, str_bytes};
use crate::group::GroupReply;
use crate::group::state::{SyncRequest, SyncResponse};
use crate::state::Broker;
use tracing::debug;

pub fn handle(broker: &Arc<Broker>, req: SyncGroupRequest, version: i16) -> Reply {
    let group_id = req.group_id.0.to_string();
    let sync = SyncRequest {
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
        generation: req.generation_id,
        protocol_type: req.protocol_type.as_ref().map(|s| s.to_string()),
        protocol_name: req.protocol_name.as_ref().map(|s| s.to_string()),
        assignments: req
            .assignments
            .iter()
            .map(|a| (a.member_id.to_string(), a.assignment.clone()))
            .collect(),
    };
    let (member, generation) = (sync.member_id.clone(), sync.generation);
    debug!(group = %group_id, %member, generation, assignments = sync.assignments.len(), "SyncGroup");
    match broker.groups.sync(broker, &group_id, sync) {
        Err(e) => Reply::now(ResponseKind::SyncGroup(encode(
            SyncResponse::error(e),
            version,
        ))),
        Ok(rx) => Reply::Later(Box::pin(async move {
            let resp = match rx.await {
                Ok(GroupReply::Sync(r)) => r,
                _ => SyncResponse::error(ResponseError::NotCoordinator),
            };
            debug!(
                group = %group_id,
                %member,
                generation,
                error = ?resp.error,
                assignment_bytes = resp.assignment.len(),
                "SyncGroup answered"
            );
            ResponseKind::SyncGroup(encode(resp, version))
        })),
    }
}

fn encode(r: SyncResponse, version: i16) -> SyncGroupResponse {
    let mut out = SyncGroupResponse::default();
    out.error_code = r.error.map_or(0, |e| e.code());
    if version >= 5 {
        out.protocol_type = r.protocol_type.map(str_bytes);
        out.protocol_name = r.protocol_name.map(str_bytes);
    }
    out.assignment = r.assignment;
    out
}
