//! DeleteGroups: removes empty groups (NON_EMPTY_GROUP otherwise) with tombstones for their
//! metadata and offsets, answered once the tombstones are committed.

use std::sync::Arc;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse, ResponseKind};

use super::Reply;
use crate::state::Broker;

pub fn handle(broker: &Arc<Broker>, req: DeleteGroupsRequest) -> Reply {
    let broker = Arc::clone(broker);
    Reply::Later(Box::pin(async move {
        let mut r = DeleteGroupsResponse::default();
        for id in req.groups_names {
            let mut res = DeletableGroupResult::default();
            if let Err(e) = broker.groups.delete(&broker, id.0.as_str()).await {
                res.error_code = e.code();
            }
            res.group_id = id;
            r.results.push(res);
        }
        ResponseKind::DeleteGroups(r)
    }))
}
