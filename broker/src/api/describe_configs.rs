//! DescribeConfigs for topics (effective values, with the source of each) and a small set of
//! broker settings.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};

use super::create_topics::{SOURCE_DEFAULT, SOURCE_TOPIC};
use super::str_bytes;
use crate::state::Broker;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// Kafka's ConfigSource for static broker config.
const SOURCE_STATIC_BROKER: i8 = 4;
/// Kafka's ConfigType STRING (v3+ field).
const TYPE_STRING: i8 = 2;

fn entry(name: &str, value: String, source: i8) -> DescribeConfigsResourceResult {
    let mut c = DescribeConfigsResourceResult::default();
    c.name = str_bytes(name);
    c.value = Some(str_bytes(value));
    c.config_source = source;
    c.config_type = TYPE_STRING;
    c
}

pub fn handle(
    broker: &Arc<Broker>,
    req: DescribeConfigsRequest,
    _version: i16,
) -> DescribeConfigsResponse {
    let mut r = DescribeConfigsResponse::default();
    for res in req.resources {
        let mut out = DescribeConfigsResult::default();
        out.resource_type = res.resource_type;
        out.resource_name = res.resource_name.clone();
        let wanted = |name: &str| {
            res.configuration_keys
                .as_ref()
                .is_none_or(|keys| keys.iter().any(|k| k.as_str() == name))
        };
        match res.resource_type {
            RESOURCE_TOPIC => match broker.topic(res.resource_name.as_str()) {
                Some(t) => {
                    out.configs = t
                        .config
                        .describe()
                        .into_iter()
                        .filter(|(k, _)| wanted(k))
                        .map(|(k, v)| {
                            entry(
                                k,
                                v,
                                if t.record.configs.contains_key(k) {
                                    SOURCE_TOPIC
                                } else {
                                    SOURCE_DEFAULT
                                },
                            )
                        })
                        .collect();
                }
                None => {
                    out.error_code = ResponseError::UnknownTopicOrPartition.code();
                    out.error_message = Some(str_bytes(format!(
                        "unknown topic '{}'",
                        res.resource_name.as_str()
                    )));
                }
            },
            RESOURCE_BROKER => {
                let node = broker.config.node_id;
                if !res.resource_name.is_empty() && res.resource_name.as_str() != node.to_string() {
                    out.error_code = ResponseError::InvalidRequest.code();
                    out.error_message = Some(str_bytes(format!("this is broker {node}")));
                } else {
                    let settings = [
                        ("node.id", node.to_string()),
                        (
                            "auto.create.topics.enable",
                            broker.config.auto_create_topics.to_string(),
                        ),
                        (
                            "num.partitions",
                            broker.config.default_partitions.to_string(),
                        ),
                        (
                            "socket.request.max.bytes",
                            broker.config.max_request_bytes.to_string(),
                        ),
                        (
                            "replica.selector.class",
                            broker.config.replica_selector.class().to_string(),
                        ),
                    ];
                    out.configs = settings
                        .into_iter()
                        .filter(|(k, _)| wanted(k))
                        .map(|(k, v)| entry(k, v, SOURCE_STATIC_BROKER))
                        .collect();
                }
            }
            other => {
                out.error_code = ResponseError::InvalidRequest.code();
                out.error_message =
                    Some(str_bytes(format!("resource type {other} is not supported")));
            }
        }
        r.results.push(out);
    }
    r
}
