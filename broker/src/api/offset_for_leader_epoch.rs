//! OffsetForLeaderEpoch: the end offset of the largest epoch <= the requested one, so a
//! follower or a consumer can detect and cut a diverged log (KIP-101, KIP-320).

use std::sync::Arc;

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::{check_leader_epoch, lookup};
use crate::state::Broker;

pub fn handle(
    broker: &Arc<Broker>,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let mut r = OffsetForLeaderEpochResponse::default();
    for topic in req.topics {
        let found = broker.topic(topic.topic.as_str());
        let mut t = OffsetForLeaderTopicResult::default();
        t.topic = topic.topic.clone();
        for rp in topic.partitions {
            let mut e = EpochEndOffset::default();
            e.partition = rp.partition;
            e.leader_epoch = -1;
            e.end_offset = -1;
            match lookup(found.as_deref(), rp.partition) {
                Err(code) => e.error_code = code.code(),
                Ok(p) => match check_leader_epoch(p, rp.current_leader_epoch) {
                    Err(code) => e.error_code = code.code(),
                    Ok(()) => {
                        let log = p.log();
                        if let Some((epoch, end)) = log
                            .epochs()
                            .end_offset_for(rp.leader_epoch, log.log_end_offset())
                        {
                            e.leader_epoch = epoch;
                            e.end_offset = end;
                        }
                    }
                },
            }
            t.partitions.push(e);
        }
        r.topics.push(t);
    }
    r
}
