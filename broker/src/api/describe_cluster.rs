//! DescribeCluster (AdminClient.describeCluster, what Kafka's tools ask first): the cluster id,
//! the brokers' addresses on the listener the request came in on, and a controller id. The
//! controller here is the operator, not a broker, so, as Metadata does, this answers with the
//! receiving broker's id: every broker forwards controller work.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{DescribeClusterRequest, DescribeClusterResponse};

use super::str_bytes;
use crate::metadata::BrokerStatus;
use crate::state::Broker;

const OPERATIONS_OMITTED: i32 = i32::MIN;
/// Kafka's endpoint types: brokers (1) and controllers (2).
const BROKERS: i8 = 1;

pub fn handle(
    broker: &Arc<Broker>,
    req: DescribeClusterRequest,
    version: i16,
    listener: &str,
) -> DescribeClusterResponse {
    let mut r = DescribeClusterResponse::default();
    r.endpoint_type = BROKERS;
    r.cluster_authorized_operations = OPERATIONS_OMITTED;
    r.controller_id = broker.config.node_id.into();
    if version >= 1 && req.endpoint_type != BROKERS {
        r.error_code = ResponseError::UnsupportedEndpointType.code();
        r.error_message = Some(str_bytes(
            "only broker endpoints are served: the controller is the operator, reached over HTTP",
        ));
        return r;
    }
    let entry = |id: i32, host: &str, port: i32, rack: Option<String>, fenced: bool| {
        let mut b = DescribeClusterBroker::default();
        b.broker_id = id.into();
        b.host = str_bytes(host);
        b.port = port;
        b.rack = rack.map(str_bytes);
        b.is_fenced = fenced;
        b
    };
    match broker.cluster() {
        None => {
            r.cluster_id = str_bytes(broker.cluster_id());
            if let Some((host, port)) = broker.config.advertised(listener) {
                r.brokers
                    .push(entry(broker.config.node_id, &host, port, None, false));
            }
        }
        Some(rt) => {
            let meta = rt.membership.metadata();
            r.cluster_id = str_bytes(meta.cluster_id.clone());
            for b in meta.brokers.values() {
                let fenced = b.status == BrokerStatus::Fenced;
                if fenced && !(version >= 2 && req.include_fenced_brokers) {
                    continue;
                }
                if let Some((host, port)) = b.endpoint(listener) {
                    r.brokers
                        .push(entry(b.id, host, i32::from(port), b.rack.clone(), fenced));
                }
            }
        }
    }
    r
}
