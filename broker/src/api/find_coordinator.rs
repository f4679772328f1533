//! FindCoordinator: the broker that coordinates a group (the leader of its
//! `__consumer_offsets` partition). v4+ asks for several keys at once. Transactions are not
//! supported, so transaction coordinators are never available. The address is the
//! coordinator's on the listener the request came in on.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::str_bytes;
use crate::state::Broker;

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

fn find(
    broker: &Arc<Broker>,
    key_type: i8,
    key: &str,
    listener: &str,
) -> Result<(i32, String, i32), ResponseError> {
    match key_type {
        KEY_TYPE_GROUP if key.is_empty() => Err(ResponseError::InvalidRequest),
        KEY_TYPE_GROUP => broker.groups.find(broker, key, listener),
        KEY_TYPE_TRANSACTION => Err(ResponseError::CoordinatorNotAvailable),
        _ => Err(ResponseError::InvalidRequest),
    }
}

pub fn handle(
    broker: &Arc<Broker>,
    req: FindCoordinatorRequest,
    version: i16,
    listener: &str,
) -> FindCoordinatorResponse {
    let mut r = FindCoordinatorResponse::default();
    if version >= 4 {
        r.coordinators = req
            .coordinator_keys
            .iter()
            .map(|key| {
                let mut c = Coordinator::default();
                c.key = key.clone();
                match find(broker, req.key_type, key, listener) {
                    Ok((node, host, port)) => {
                        c.node_id = node.into();
                        c.host = str_bytes(host);
                        c.port = port;
                    }
                    Err(e) => {
                        c.node_id = (-1).into();
                        c.host = StrBytes::default();
                        c.port = -1;
                        c.error_code = e.code();
                        c.error_message = Some(str_bytes(e.to_string()));
                    }
                }
                c
            })
            .collect();
        return r;
    }
    match find(broker, req.key_type, &req.key, listener) {
        Ok((node, host, port)) => {
            r.node_id = node.into();
            r.host = str_bytes(host);
            r.port = port;
        }
        Err(e) => {
            r.node_id = (-1).into();
            r.port = -1;
            r.error_code = e.code();
            if version >= 1 {
                r.error_message = Some(str_bytes(e.to_string()));
            }
        }
    }
    r
}
