//! DescribeGroups: state, protocol and members of groups coordinated here. Member metadata
//! and assignments are shown only while the group is Stable, as Kafka does.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};

use super::str_bytes;
use crate::state::Broker;

const OPERATIONS_OMITTED: i32 = i32::MIN;

pub fn handle(
    broker: &Arc<Broker>,
    req: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let mut r = DescribeGroupsResponse::default();
    r.groups = req
        .groups
        .into_iter()
        .map(|id| {
            let mut g = DescribedGroup::default();
            g.authorized_operations = OPERATIONS_OMITTED;
            match broker.groups.describe(broker, id.0.as_str()) {
                // A consumer group protocol group: Kafka's admin client describes it with
                // ConsumerGroupDescribe; this API shows it Dead (v6: with the reason).
                Err(ResponseError::GroupIdNotFound) => {
                    g.group_state = str_bytes("Dead");
                    if version >= 6 {
                        g.error_code = ResponseError::GroupIdNotFound.code();
                        g.error_message = Some(str_bytes(format!(
                            "Group {} is not a classic group.",
                            id.0.as_str()
                        )));
                    }
                }
                Err(e) => {
                    g.error_code = e.code();
                    g.group_state = str_bytes("");
                }
                // Unknown groups are "Dead"; v6 also says GROUP_ID_NOT_FOUND (KIP-1043).
                Ok(None) => {
                    g.group_state = str_bytes("Dead");
                    if version >= 6 {
                        g.error_code = ResponseError::GroupIdNotFound.code();
                        g.error_message =
                            Some(str_bytes(format!("group {} not found", id.0.as_str())));
                    }
                }
                Ok(Some((state, protocol_type, protocol, members))) => {
                    g.group_state = str_bytes(state.name());
                    g.protocol_type = str_bytes(protocol_type);
                    g.protocol_data = str_bytes(protocol);
                    g.members = members
                        .into_iter()
                        .map(|m| {
                            let mut d = DescribedGroupMember::default();
                            d.member_id = str_bytes(m.member_id);
                            d.group_instance_id = m.instance_id.map(str_bytes);
                            d.client_id = str_bytes(m.client_id);
                            d.client_host = str_bytes(m.client_host);
                            d.member_metadata = m.metadata;
                            d.member_assignment = m.assignment;
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
