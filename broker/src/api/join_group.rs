//! JoinGroup: parks the member until the group's rebalance completes (or answers at once:
//! MEMBER_ID_REQUIRED on a first v4+ join, errors). Protocol metadata passes through
//! untouched: assignors run in the clients.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse, ResponseKind};

use super::{Client, Reply, str_bytes};
use crate::group::GroupReply;
use crate::group::state::{JoinRequest, JoinResponse};
use crate::state::Broker;
use tracing::debug;

pub fn handle(broker: &Arc<Broker>, req: JoinGroupRequest, version: i16, client: &Client) -> Reply {
    let group_id = req.group_id.0.to_string();
    let instance_id = if version >= 5 {
        req.group_instance_id.as_ref().map(|s| s.to_string())
    } else {
        None
    };
    // Kafka names members "<client id or instance id>-<uuid>".
    let prefix = instance_id.clone().unwrap_or_else(|| client.id.clone());
    let join = JoinRequest {
        member_id: req.member_id.to_string(),
        instance_id,
        require_known_member_id: version >= 4,
        fresh_member_id: format!("{prefix}-{}", uuid::Uuid::new_v4()),
        client_id: client.id.clone(),
        client_host: client.host.clone(),
        rebalance_timeout_ms: if version >= 1 {
            req.rebalance_timeout_ms
        } else {
            req.session_timeout_ms
        },
        session_timeout_ms: req.session_timeout_ms,
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
    };
    let member_id = join.member_id.clone();
    debug!(group = %group_id, member = %member_id, version, "JoinGroup");
    match broker.groups.join(broker, &group_id, join) {
        Err(e) => Reply::now(ResponseKind::JoinGroup(encode(
            JoinResponse {
                error: Some(e),
                generation: -1,
                member_id,
                ..JoinResponse::default()
            },
            version,
        ))),
        Ok(rx) => Reply::Later(Box::pin(async move {
            let resp = match rx.await {
                Ok(GroupReply::Join(r)) => r,
                _ => JoinResponse {
                    error: Some(ResponseError::NotCoordinator),
                    generation: -1,
                    member_id,
                    ..JoinResponse::default()
                },
            };
            debug!(
                group = %group_id,
                member = %resp.member_id,
                error = ?resp.error,
                generation = resp.generation,
                leader = %resp.leader,
                members = resp.members.len(),
                "JoinGroup answered"
            );
            ResponseKind::JoinGroup(encode(resp, version))
        })),
    }
}

fn encode(r: JoinResponse, version: i16) -> JoinGroupResponse {
    let mut out = JoinGroupResponse::default();
    out.error_code = r.error.map_or(0, |e| e.code());
    out.generation_id = r.generation;
    out.protocol_type = r.protocol_type.map(str_bytes);
    // Before v7 the protocol name is not nullable.
    out.protocol_name = match r.protocol_name {
        Some(n) => Some(str_bytes(n)),
        None if version < 7 => Some(str_bytes("")),
        None => None,
    };
    out.leader = str_bytes(r.leader);
    out.member_id = str_bytes(r.member_id);
    out.members = r
        .members
        .into_iter()
        .map(|m| {
            let mut e = JoinGroupResponseMember::default();
            e.member_id = str_bytes(m.member_id);
            e.group_instance_id = m.instance_id.map(str_bytes);
            e.metadata = m.metadata;
            e
        })
        .collect();
    out
}
