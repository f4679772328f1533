//! InitProducerId: a fresh producer id (epoch 0) for idempotent producers. Transactions are
//! not supported yet, so a transactional id is refused with a clear error.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse};
use tracing::{error, warn};

use crate::state::Broker;

static TRANSACTIONAL_WARNINGS: crate::log_limit::Limit =
    crate::log_limit::Limit::new(10, std::time::Duration::from_secs(1));

pub fn handle(broker: &Arc<Broker>, req: InitProducerIdRequest) -> InitProducerIdResponse {
    let mut r = InitProducerIdResponse::default();
    r.producer_id = (-1).into();
    r.producer_epoch = -1;
    if let Some(txn) = req.transactional_id.as_ref().filter(|t| !t.is_empty()) {
        // A client retrying in a loop must not fill the disk with this line.
        if let Some(held_back) = TRANSACTIONAL_WARNINGS.allow() {
            warn!(transactional_id = %txn.as_str(), held_back, "transactions are not supported; refusing InitProducerId");
        }
        r.error_code = ResponseError::TransactionalIdAuthorizationFailed.code();
        return r;
    }
    // Like Kafka, an idempotent (non-transactional) producer always gets a new id, also when it
    // re-initialises with its old id and epoch (KIP-360).
    match broker.next_producer_id() {
        Ok(id) => {
            r.producer_id = id.into();
            r.producer_epoch = 0;
        }
        Err(e) => {
            error!(error = %e, "cannot persist producer id block");
            r.error_code = ResponseError::KafkaStorageError.code();
        }
    }
    r
}
