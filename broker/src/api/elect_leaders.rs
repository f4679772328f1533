//! ElectLeaders (`kafka-leader-election`): preferred-replica and unclean elections at the
//! controller. An unclean election is the admin's explicit choice, as in Kafka (KIP-460: it
//! runs whatever `unclean.leader.election.enable` says): a partition with a live leader
//! answers ELECTION_NOT_NEEDED, one an ISR or eligible replica can lead gets it, otherwise the
//! first live replica leads and what it lacks is lost (`decisions::elect_unclean`); with no
//! live replica, ELIGIBLE_LEADERS_NOT_AVAILABLE. A standalone broker leads everything.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{
    ElectLeadersRequest, ElectLeadersResponse, ResponseKind, TopicName,
};

use super::topic_admin::{Admin, controller_refusal};
use super::{Reply, str_bytes};
use crate::cluster::controller_client::{ElectionOutcome, ElectionResult};
use crate::state::Broker;

const PREFERRED: i8 = 0;
const UNCLEAN: i8 = 1;

/// Every partition the cluster has now, with whether it has a live leader.
fn partitions(admin: &Admin) -> Vec<(String, i32, bool)> {
    match admin {
        Admin::Local(b) => b
            .topics()
            .iter()
            .flat_map(|t| (0..t.record.partitions).map(move |p| (t.record.name.clone(), p, true)))
            .collect(),
        Admin::Cluster(_, rt) => {
            let meta = rt.membership.metadata();
            meta.partitions()
                .map(|(t, p)| {
                    (
                        t.to_string(),
                        p.partition,
                        p.has_leader() && meta.is_alive(p.leader),
                    )
                })
                .collect()
        }
    }
}

fn outcome_for(
    wanted: &(String, i32),
    known: &[(String, i32, bool)],
    election_type: i8,
) -> ElectionResult {
    let found = known
        .iter()
        .find(|(t, p, _)| *t == wanted.0 && *p == wanted.1);
    let (outcome, message) = match found {
        None => (ElectionOutcome::UnknownTopicOrPartition, None),
        Some((_, _, true)) => (ElectionOutcome::ElectionNotNeeded, None),
        Some((_, _, false)) => (
            ElectionOutcome::PreferredLeaderNotAvailable,
            Some(format!(
                "no {} leader can be elected",
                if election_type == UNCLEAN {
                    "unclean"
                } else {
                    "preferred"
                }
            )),
        ),
    };
    ElectionResult {
        topic: wanted.0.clone(),
        partition: wanted.1,
        outcome,
        message,
    }
}

/// None: elected.
fn code(outcome: &ElectionOutcome, election_type: i8) -> Option<ResponseError> {
    Some(match outcome {
        ElectionOutcome::Elected => return None,
        ElectionOutcome::ElectionNotNeeded => ResponseError::ElectionNotNeeded,
        ElectionOutcome::PreferredLeaderNotAvailable if election_type == UNCLEAN => {
            ResponseError::EligibleLeadersNotAvailable
        }
        ElectionOutcome::PreferredLeaderNotAvailable => ResponseError::PreferredLeaderNotAvailable,
        ElectionOutcome::UnknownTopicOrPartition => ResponseError::UnknownTopicOrPartition,
    })
}

pub fn handle(broker: &Arc<Broker>, req: ElectLeadersRequest, version: i16) -> Reply {
    let admin = Admin::of(broker);
    Reply::Later(Box::pin(async move {
        let mut r = ElectLeadersResponse::default();
        // v0 has no election type: preferred.
        let election_type = if version == 0 {
            PREFERRED
        } else {
            req.election_type
        };
        if election_type != PREFERRED && election_type != UNCLEAN {
            r.error_code = ResponseError::InvalidRequest.code();
            return ResponseKind::ElectLeaders(r);
        }
        let named: Option<Vec<(String, i32)>> = req.topic_partitions.map(|tps| {
            tps.iter()
                .flat_map(|tp| {
                    tp.partitions
                        .iter()
                        .map(|p| (tp.topic.to_string(), *p))
                        .collect::<Vec<_>>()
                })
                .collect()
        });
        let known = partitions(&admin);
        let results: Vec<ElectionResult> = match &admin {
            Admin::Cluster(_, rt) => {
                match rt
                    .membership
                    .client()
                    .elect_leaders(named.as_deref(), election_type == UNCLEAN)
                    .await
                {
                    Ok(results) => results,
                    Err(e) => {
                        r.error_code = controller_refusal(&e).0.code();
                        return ResponseKind::ElectLeaders(r);
                    }
                }
            }
            _ => {
                let wanted: Vec<(String, i32)> = named
                    .clone()
                    .unwrap_or_else(|| known.iter().map(|(t, p, _)| (t.clone(), *p)).collect());
                wanted
                    .iter()
                    .map(|w| outcome_for(w, &known, election_type))
                    .collect()
            }
        };
        if let Admin::Cluster(_, rt) = &admin {
            let elected: Vec<&ElectionResult> = results
                .iter()
                .filter(|e| e.outcome == ElectionOutcome::Elected)
                .collect();
            if !elected.is_empty() {
                // Answer once this broker's metadata shows the new leaders, so a client's
                // next Metadata here sees them.
                super::topic_admin::shown(rt, |m| {
                    elected.iter().all(|e| {
                        m.partition(&e.topic, e.partition).is_some_and(|p| {
                            if election_type == UNCLEAN {
                                p.has_leader()
                            } else {
                                p.leader == p.target_replicas().first().copied().unwrap_or(-1)
                            }
                        })
                    })
                })
                .await;
            }
        }
        // For "every partition" Kafka leaves out the ones already led by their preferred
        // replica.
        let mut by_topic: BTreeMap<String, Vec<PartitionResult>> = BTreeMap::new();
        for e in results {
            if named.is_none() && e.outcome == ElectionOutcome::ElectionNotNeeded {
                continue;
            }
            let mut p = PartitionResult::default();
            p.partition_id = e.partition;
            if let Some(c) = code(&e.outcome, election_type) {
                p.error_code = c.code();
                p.error_message = Some(str_bytes(e.message.unwrap_or_else(|| c.to_string())));
            }
            by_topic.entry(e.topic).or_default().push(p);
        }
        r.replica_election_results = by_topic
            .into_iter()
            .map(|(topic, partition_result)| {
                let mut t = ReplicaElectionResult::default();
                t.topic = TopicName(str_bytes(topic));
                t.partition_result = partition_result;
                t
            })
            .collect();
        ResponseKind::ElectLeaders(r)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_controller_call_every_outcome_is_decided_from_what_is_known() {
        let known = vec![("t".to_string(), 0, true), ("t".to_string(), 1, false)];
        let got = |p: i32, ty: i8| {
            let e = outcome_for(&("t".to_string(), p), &known, ty);
            code(&e.outcome, ty).unwrap()
        };
        assert_eq!(got(0, PREFERRED), ResponseError::ElectionNotNeeded);
        assert_eq!(got(0, UNCLEAN), ResponseError::ElectionNotNeeded);
        assert_eq!(got(1, UNCLEAN), ResponseError::EligibleLeadersNotAvailable);
        assert_eq!(
            got(1, PREFERRED),
            ResponseError::PreferredLeaderNotAvailable
        );
        assert_eq!(got(2, PREFERRED), ResponseError::UnknownTopicOrPartition);
    }
}
