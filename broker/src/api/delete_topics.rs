//! DeleteTopics: by name (v1-5) or by name or topic id (v6).

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};

use super::create_topics::error_for;
use super::str_bytes;
use crate::state::Broker;

pub fn handle(
    broker: &Arc<Broker>,
    req: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    let targets = targets(&req, version);
    let mut r = DeleteTopicsResponse::default();
    for (name, id) in targets {
        let mut result = DeletableTopicResult::default();
        result.topic_id = id;
        let name = match name {
            Some(n) => Some(n),
            None => broker.topic_by_id(id).map(|t| t.record.name.clone()),
        };
        match name {
            None => result.error_code = ResponseError::UnknownTopicId.code(),
            Some(name) => {
                result.name = Some(TopicName(str_bytes(name.clone())));
                // v6 answers with the topic's id, also when the request named it (as Kafka).
                if version >= 6
                    && let Some(t) = broker.topic(&name)
                {
                    result.topic_id = t.record.id;
                }
                if let Some((code, message)) =
                    super::topic_admin::internal_topic_refusal(&name, "deleted")
                {
                    result.error_code = code.code();
                    result.error_message = Some(str_bytes(message));
                } else if let Err(e) = broker.delete_topic(&name) {
                    result.error_code = error_for(&e).code();
                    result.error_message = Some(str_bytes(e.to_string()));
                }
            }
        }
        r.responses.push(result);
    }
    r
}

/// The topics a DeleteTopics request names: by name before v6, by name or topic id from v6.
pub fn targets(req: &DeleteTopicsRequest, version: i16) -> Vec<(Option<String>, uuid::Uuid)> {
    if version >= 6 {
        req.topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.as_str().to_string()), t.topic_id))
            .collect()
    } else {
        req.topic_names
            .iter()
            .map(|n| (Some(n.as_str().to_string()), uuid::Uuid::nil()))
            .collect()
    }
}
