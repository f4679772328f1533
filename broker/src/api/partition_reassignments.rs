//! AlterPartitionReassignments and ListPartitionReassignments (`kafka-reassign-partitions
//! --execute/--verify/--cancel`), onto the controller's KIP-455 reassignment: new replicas
//! catch up as followers, join the ISR, and only then do the old ones leave. A standalone
//! broker is the only replica of everything, so the only valid target there is itself.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, ResponseKind, TopicName,
};

use super::topic_admin::{Admin, Refusal, controller_refusal};
use super::{Reply, str_bytes};
use crate::metadata::PartitionMeta;
use crate::state::Broker;

/// The partition's replica set as the cluster knows it now.
fn current_replicas(admin: &Admin, topic: &str, partition: i32) -> Option<Vec<i32>> {
    match admin {
        Admin::Local(b) => {
            let t = b.topic(topic)?;
            (0..t.record.partitions)
                .contains(&partition)
                .then(|| vec![b.config.node_id])
        }
        Admin::Cluster(_, rt) => rt
            .membership
            .metadata()
            .partition(topic, partition)
            .map(PartitionMeta::target_replicas),
    }
}

async fn reassign_one(
    admin: &Admin,
    topic: &str,
    partition: i32,
    target: Option<Vec<i32>>,
    allow_rf_change: bool,
) -> Result<(), Refusal> {
    let Some(current) = current_replicas(admin, topic, partition) else {
        return Err((
            ResponseError::UnknownTopicOrPartition,
            format!("unknown partition {topic}-{partition}"),
        ));
    };
    if let Some(t) = &target
        && !allow_rf_change
        && t.len() != current.len()
    {
        return Err((
            ResponseError::InvalidReplicationFactor,
            format!(
                "the reassignment changes the replication factor from {} to {} and the request does not allow that",
                current.len(),
                t.len()
            ),
        ));
    }
    match admin {
        Admin::Local(b) => match target {
            None => Err((
                ResponseError::NoReassignmentInProgress,
                format!("no reassignment of {topic}-{partition} is in progress"),
            )),
            Some(t) if t == [b.config.node_id] => Ok(()),
            Some(t) => Err((
                ResponseError::InvalidReplicaAssignment,
                format!(
                    "replicas {t:?} are not possible: a standalone broker ({}) is the only replica",
                    b.config.node_id
                ),
            )),
        },
        Admin::Cluster(_, rt) => {
            let client = rt.membership.client();
            let answer = match &target {
                Some(t) => client.reassign(topic, partition, t).await,
                None => client.cancel_reassignment(topic, partition).await,
            };
            answer.map(|_| ()).map_err(|e| controller_refusal(&e))
        }
    }
}

pub fn handle_alter(
    broker: &Arc<Broker>,
    req: AlterPartitionReassignmentsRequest,
    version: i16,
) -> Reply {
    let admin = Admin::of(broker);
    // v0 has no such flag, and allowed changes.
    let allow_rf_change = version == 0 || req.allow_replication_factor_change;
    Reply::Later(Box::pin(async move {
        let mut r = AlterPartitionReassignmentsResponse::default();
        r.allow_replication_factor_change = allow_rf_change;
        for topic in req.topics {
            let mut t = ReassignableTopicResponse::default();
            for p in topic.partitions {
                let target = p
                    .replicas
                    .map(|rs| rs.into_iter().map(|b| b.0).collect::<Vec<i32>>());
                let outcome = reassign_one(
                    &admin,
                    topic.name.as_str(),
                    p.partition_index,
                    target,
                    allow_rf_change,
                )
                .await;
                let mut res = ReassignablePartitionResponse::default();
                res.partition_index = p.partition_index;
                if let Err((code, message)) = outcome {
                    res.error_code = code.code();
                    res.error_message = Some(str_bytes(message));
                }
                t.partitions.push(res);
            }
            t.name = topic.name;
            r.responses.push(t);
        }
        ResponseKind::AlterPartitionReassignments(r)
    }))
}

pub fn handle_list(
    broker: &Arc<Broker>,
    req: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let mut r = ListPartitionReassignmentsResponse::default();
    // Standalone, nothing is ever being moved.
    let Some(rt) = broker.cluster() else {
        return r;
    };
    let meta = rt.membership.metadata();
    let wanted = |topic: &str, partition: i32| match &req.topics {
        None => true,
        Some(ts) => ts
            .iter()
            .any(|t| t.name.as_str() == topic && t.partition_indexes.contains(&partition)),
    };
    for t in meta.topics.values() {
        let ongoing: Vec<OngoingPartitionReassignment> = t
            .partitions
            .iter()
            .filter(|p| !(p.adding.is_empty() && p.removing.is_empty()))
            .filter(|p| wanted(&t.name, p.partition))
            .map(|p| {
                let mut o = OngoingPartitionReassignment::default();
                o.partition_index = p.partition;
                o.replicas = p.replicas.iter().map(|b| (*b).into()).collect();
                o.adding_replicas = p.adding.iter().map(|b| (*b).into()).collect();
                o.removing_replicas = p.removing.iter().map(|b| (*b).into()).collect();
                o
            })
            .collect();
        if !ongoing.is_empty() {
            let mut o = OngoingTopicReassignment::default();
            o.name = TopicName(str_bytes(t.name.clone()));
            o.partitions = ongoing;
            r.topics.push(o);
        }
    }
    r
}
