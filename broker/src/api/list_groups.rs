//! ListGroups: every group this broker coordinates, filtered by state (v4+) and type (v5+:
//! "classic", or "consumer" for the consumer group protocol's groups).

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

use super::str_bytes;
use crate::state::Broker;

pub fn handle(broker: &Arc<Broker>, req: ListGroupsRequest, version: i16) -> ListGroupsResponse {
    let mut r = ListGroupsResponse::default();
    let (groups, loading) = broker.groups.list();
    if loading {
        r.error_code = ResponseError::CoordinatorLoadInProgress.code();
    }
    let wants = |filter: &[kafka_protocol::protocol::StrBytes], value: &str| {
        filter.is_empty() || filter.iter().any(|f| f.eq_ignore_ascii_case(value))
    };
    r.groups = groups
        .into_iter()
        .filter(|l| version < 4 || wants(&req.states_filter, l.state))
        .filter(|l| version < 5 || wants(&req.types_filter, l.kind))
        .map(|l| {
            let mut g = ListedGroup::default();
            g.group_id = GroupId(str_bytes(l.id));
            g.protocol_type = str_bytes(l.protocol_type);
            g.group_state = str_bytes(l.state);
            g.group_type = str_bytes(l.kind);
            g
        })
        .collect();
    r
}
