//! The ReplicatedTopic reconciler. [`plan`] is pure: from the resource, the cluster's size, the
//! controller's view of the topic and any competing resource, what to do (create, grow, change
//! config, nothing) or why it cannot be done. The glue below carries the plan out through the
//! cluster's controller, keeps a finalizer for `deletionPolicy`, and reports per-partition state.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use broker::metadata::{ClusterMetadata, TopicMeta};
use broker::topic_config::TopicConfig;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::reflector::Store;
use kube::{Api, ResourceExt};
use serde_json::json;
use tracing::info;

use super::{Context, condition, publish};
use crate::controller::decisions;
use crate::controller::{ControllerError, service::ServiceError};
use crate::crd::replicated_topic::{DeletionPolicy, PartitionStatus};
use crate::crd::{
    ConditionType, LogCluster, ReplicatedTopic, ReplicatedTopicStatus, set_condition,
};

pub const FINALIZER: &str = "strand.dev/topic";

/// What the reconciler should do with a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicPlan {
    Create,
    /// Grow to `spec.partitions`.
    AddPartitions(usize),
    /// Replace the topic's config overrides with `spec.config`.
    SetConfig,
    /// The topic matches the spec.
    InSync,
    /// Cannot be done; `reason` is a condition reason, `message` says what to change.
    Refuse {
        reason: &'static str,
        message: String,
    },
}

/// A resource naming the same topic on the same cluster.
pub struct Rival {
    pub name: String,
}

/// `existing` is the controller's topic of this name; `colliding` an existing topic whose name
/// collides with this one under Kafka's `.`/`_` rule ([`broker::topic_name::find_collision`]).
pub fn plan(
    rt: &ReplicatedTopic,
    cluster_brokers: i32,
    existing: Option<&TopicMeta>,
    colliding: Option<&str>,
    older_rival: Option<&Rival>,
) -> TopicPlan {
    let spec = &rt.spec;
    let topic = rt.topic_name();
    if let Some(r) = older_rival {
        return TopicPlan::Refuse {
            reason: "TopicConflict",
            message: format!(
                "topic '{topic}' on cluster {} is already managed by ReplicatedTopic {}; this resource changes nothing until that one is gone",
                spec.cluster, r.name
            ),
        };
    }
    if let Err(e) = validate_topic_name(topic) {
        return TopicPlan::Refuse {
            reason: "InvalidTopicName",
            message: e,
        };
    }
    if spec.replication_factor > cluster_brokers {
        return TopicPlan::Refuse {
            reason: "ReplicationFactorTooLarge",
            message: format!(
                "replicationFactor {} is larger than cluster {}'s {cluster_brokers} brokers",
                spec.replication_factor, spec.cluster
            ),
        };
    }
    let config = match TopicConfig::default().with_overrides(&spec.config) {
        Ok(c) => c,
        Err(e) => {
            return TopicPlan::Refuse {
                reason: "InvalidConfig",
                message: format!("spec.config: {e}"),
            };
        }
    };
    if i64::from(config.min_insync_replicas) > i64::from(spec.replication_factor) {
        return TopicPlan::Refuse {
            reason: "InvalidConfig",
            message: format!(
                "min.insync.replicas={} is larger than replicationFactor {}: acks=all writes could never succeed",
                config.min_insync_replicas, spec.replication_factor
            ),
        };
    }
    let Some(t) = existing else {
        if let Some(other) = colliding {
            return TopicPlan::Refuse {
                reason: "TopicNameCollision",
                message: format!(
                    "topic '{topic}' collides with existing topic '{other}' on cluster {}: Kafka treats '.' and '_' as the same in metric names, so it refuses one beside the other; choose another spec.topicName",
                    spec.cluster
                ),
            };
        }
        return TopicPlan::Create;
    };
    let have = t.partitions.len();
    let want = usize::try_from(spec.partitions).unwrap_or(0);
    if want < have {
        return TopicPlan::Refuse {
            reason: "PartitionDecrease",
            message: format!(
                "topic '{topic}' already has {have} partitions; Kafka cannot remove partitions, so spec.partitions must be at least {have}"
            ),
        };
    }
    let rf = t
        .partitions
        .first()
        .map_or(0, |p| p.target_replicas().len());
    if i32::try_from(rf).ok() != Some(spec.replication_factor) {
        return TopicPlan::Refuse {
            reason: "ReplicationFactorMismatch",
            message: format!(
                "topic '{topic}' exists with replication factor {rf}, spec says {}; changing it needs a reassignment",
                spec.replication_factor
            ),
        };
    }
    if want > have {
        TopicPlan::AddPartitions(want)
    } else if t.configs != spec.config {
        TopicPlan::SetConfig
    } else {
        TopicPlan::InSync
    }
}

/// Kafka's topic name rule ([`broker::topic_name`], the same the controller and the brokers
/// apply), plus the operator's own: names starting with `__` are left to internal topics.
fn validate_topic_name(name: &str) -> Result<(), String> {
    broker::topic_name::validate(name).map_err(|e| {
        format!(
            "{e}; Kafka topic names are 1-{} characters of letters, digits, '.', '_' and '-', not '.' or '..' (set spec.topicName when metadata.name cannot be one)",
            broker::topic_name::MAX_LENGTH
        )
    })?;
    if name.starts_with("__") {
        return Err(format!(
            "topic name {name:?} starts with '__', which is reserved for internal topics (e.g. __consumer_offsets)"
        ));
    }
    Ok(())
}

/// The oldest other resource naming the same topic on the same cluster, if it was there first.
/// Age decides (creation time, then name), so the winner never changes while both exist.
pub fn older_rival(rt: &ReplicatedTopic, all: &[Arc<ReplicatedTopic>]) -> Option<Rival> {
    let key = |r: &ReplicatedTopic| (r.metadata.creation_timestamp.clone(), r.name_any());
    all.iter()
        .filter(|o| {
            o.uid() != rt.uid()
                && o.namespace() == rt.namespace()
                && o.spec.cluster == rt.spec.cluster
                && o.topic_name() == rt.topic_name()
        })
        .filter(|o| key(o) < key(rt))
        .min_by_key(|o| key(o))
        .map(|o| Rival { name: o.name_any() })
}

/// The status for a topic the controller has (or a refusal, when `refused` is set).
pub fn status(
    rt: &ReplicatedTopic,
    md: Option<&ClusterMetadata>,
    refused: Option<(&str, &str)>,
    default_min_insync: i32,
) -> ReplicatedTopicStatus {
    let gen_ = rt.metadata.generation;
    let mut s = rt.status.clone().unwrap_or_default();
    s.observed_generation = gen_;
    let found = md.and_then(|m| m.topics.get(rt.topic_name()).map(|t| (m, t)));
    if let Some((reason, message)) = refused {
        set_condition(
            &mut s.conditions,
            condition(ConditionType::Ready, false, reason, message.into(), gen_),
        );
        set_condition(
            &mut s.conditions,
            condition(ConditionType::Degraded, true, reason, message.into(), gen_),
        );
        set_condition(
            &mut s.conditions,
            condition(
                ConditionType::Progressing,
                false,
                reason,
                "nothing will change until the spec or the cluster does".into(),
                gen_,
            ),
        );
        return s;
    }
    let Some((md, t)) = found else {
        set_condition(
            &mut s.conditions,
            condition(
                ConditionType::Ready,
                false,
                "Creating",
                "the topic is being created".into(),
                gen_,
            ),
        );
        return s;
    };
    s.topic_id = Some(t.id.to_string());
    s.partitions = t.partitions.iter().map(PartitionStatus::from).collect();
    let leaderless: Vec<String> = t
        .partitions
        .iter()
        .filter(|p| !p.has_leader() || !md.is_alive(p.leader))
        .map(|p| p.partition.to_string())
        .collect();
    let min_isr = t
        .configs
        .get("min.insync.replicas")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(usize::try_from(default_min_insync).unwrap_or(1));
    let under_min: Vec<String> = t
        .partitions
        .iter()
        .filter(|p| p.isr.len() < min_isr)
        .map(|p| p.partition.to_string())
        .collect();
    let moving: Vec<String> = t
        .partitions
        .iter()
        .filter(|p| !p.adding.is_empty() || !p.removing.is_empty())
        .map(|p| p.partition.to_string())
        .collect();
    let ready = if leaderless.is_empty() {
        condition(
            ConditionType::Ready,
            true,
            "AllPartitionsLed",
            format!("all {} partitions have a live leader", t.partitions.len()),
            gen_,
        )
    } else {
        condition(
            ConditionType::Ready,
            false,
            "NoLeader",
            format!(
                "partitions {} have no live in-sync replica to lead",
                leaderless.join(",")
            ),
            gen_,
        )
    };
    set_condition(&mut s.conditions, ready);
    set_condition(
        &mut s.conditions,
        if under_min.is_empty() {
            condition(
                ConditionType::Degraded,
                false,
                "InSync",
                format!("every ISR has at least min.insync.replicas={min_isr} members"),
                gen_,
            )
        } else {
            condition(
                ConditionType::Degraded,
                true,
                "UnderMinIsr",
                format!(
                    "partitions {} have fewer than min.insync.replicas={min_isr} in-sync replicas; acks=all writes to them fail",
                    under_min.join(",")
                ),
                gen_,
            )
        },
    );
    set_condition(
        &mut s.conditions,
        if moving.is_empty() {
            condition(
                ConditionType::Progressing,
                false,
                "Stable",
                "no reassignment in progress".into(),
                gen_,
            )
        } else {
            condition(
                ConditionType::Progressing,
                true,
                "Reassigning",
                format!("partitions {} are being reassigned", moving.join(",")),
                gen_,
            )
        },
    );
    s
}

#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("Kubernetes API: {0}")]
    Api(#[from] kube::Error),
    #[error("controller: {0}")]
    Controller(#[from] crate::controller::service::ServiceError),
    #[error("the controller of cluster {0} is not running yet")]
    ClusterNotStarted(String),
    #[error("finalizer: {0}")]
    Finalizer(String),
}

/// One reconcile, in a span naming the resource, so every log line says which one it is about.
#[tracing::instrument(skip_all, fields(replicatedtopic = %format!("{}/{}", rt.namespace().unwrap_or_default(), rt.name_any())))]
pub async fn reconcile(rt: Arc<ReplicatedTopic>, ctx: Arc<Context>) -> Result<Action, TopicError> {
    let ns = rt.namespace().unwrap_or_default();
    let api: Api<ReplicatedTopic> = Api::namespaced(ctx.client.clone(), &ns);
    let topics = ctx.topics.clone();
    finalizer(&api, FINALIZER, rt, |event| async {
        match event {
            finalizer::Event::Apply(rt) => apply(rt, &ctx, &topics).await,
            finalizer::Event::Cleanup(rt) => cleanup(rt, &ctx, &topics).await,
        }
    })
    .await
    .map_err(|e| match e {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
        other => TopicError::Finalizer(other.to_string()),
    })
}

async fn apply(
    rt: Arc<ReplicatedTopic>,
    ctx: &Context,
    topics: &Store<ReplicatedTopic>,
) -> Result<Action, TopicError> {
    let ns = rt.namespace().unwrap_or_default();
    let lcs: Api<LogCluster> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(lc) = lcs.get_opt(&rt.spec.cluster).await? else {
        let msg = format!(
            "LogCluster {} does not exist in namespace {ns}",
            rt.spec.cluster
        );
        write_status(
            ctx,
            &rt,
            status(&rt, None, Some(("ClusterNotFound", &msg)), 1),
        )
        .await?;
        return Ok(Action::requeue(Duration::from_secs(30)));
    };
    let Some(entry) = ctx.registry.get(&ns, &rt.spec.cluster).await else {
        return Err(TopicError::ClusterNotStarted(rt.spec.cluster.clone()));
    };
    let default_min =
        crate::roll::min_insync_replicas(&lc.spec.broker_config, 1, "brokerConfig").unwrap_or(1);
    let md = entry.controller.snapshot().await.metadata;
    let rival = older_rival(&rt, &topics.state());
    let name = rt.topic_name().to_string();
    let colliding = broker::topic_name::find_collision(&name, md.topics.keys().map(String::as_str));
    let decided = plan(
        &rt,
        lc.spec.replicas,
        md.topics.get(&name),
        colliding,
        rival.as_ref(),
    );
    let spec = &rt.spec;
    let done = match &decided {
        TopicPlan::Refuse { reason, message } => {
            publish(ctx, &*rt, EventType::Warning, reason, message).await;
            let st = status(&rt, Some(&md), Some((reason, message)), default_min);
            write_status(ctx, &rt, st).await?;
            return Ok(Action::requeue(Duration::from_secs(60)));
        }
        TopicPlan::InSync => None,
        TopicPlan::Create => {
            let id = uuid::Uuid::new_v4();
            let (p, rf) = (
                usize::try_from(spec.partitions).unwrap_or(0),
                usize::try_from(spec.replication_factor).unwrap_or(0),
            );
            let configs = spec.config.clone();
            match entry
                .controller
                .update(|s, _| decisions::create_topic(s, &name, p, rf, configs, id))
                .await
            {
                Ok(_) => Some((
                    "TopicCreated",
                    format!("created topic '{name}': {p} partitions, replication factor {rf}"),
                )),
                // The controller's own name checks (a topic created beside this one since the
                // snapshot, say): refused like the plan's refusals.
                Err(ServiceError::Refused(
                    e @ (ControllerError::InvalidTopicName(_)
                    | ControllerError::TopicCollision { .. }),
                )) => {
                    let reason = match e {
                        ControllerError::TopicCollision { .. } => "TopicNameCollision",
                        _ => "InvalidTopicName",
                    };
                    let msg = format!("the controller refused topic '{name}': {e}");
                    publish(ctx, &*rt, EventType::Warning, reason, &msg).await;
                    let st = status(&rt, Some(&md), Some((reason, &msg)), default_min);
                    write_status(ctx, &rt, st).await?;
                    return Ok(Action::requeue(Duration::from_secs(60)));
                }
                // Placement needs live brokers; say so and retry soon.
                Err(e) => {
                    let msg = format!("cannot create topic '{name}' yet: {e}");
                    let st = status(
                        &rt,
                        Some(&md),
                        Some(("NotEnoughBrokers", &msg)),
                        default_min,
                    );
                    write_status(ctx, &rt, st).await?;
                    return Ok(Action::requeue(Duration::from_secs(5)));
                }
            }
        }
        TopicPlan::AddPartitions(n) => {
            let n = *n;
            entry
                .controller
                .update(|s, _| decisions::add_partitions(s, &name, n))
                .await?;
            Some((
                "PartitionsAdded",
                format!("topic '{name}' grown to {n} partitions"),
            ))
        }
        TopicPlan::SetConfig => {
            let configs = spec.config.clone();
            entry
                .controller
                .update(|s, _| decisions::set_topic_configs(s, &name, configs))
                .await?;
            Some((
                "ConfigChanged",
                format!("topic '{name}' config set to {:?}", spec.config),
            ))
        }
    };
    if let Some((reason, note)) = done {
        info!(topic = %name, cluster = %spec.cluster, %reason, "{note}");
        publish(ctx, &*rt, EventType::Normal, reason, &note).await;
    }
    // The topic is this resource's: Kafka's admin API refuses to change it (see
    // `decisions::check_unmanaged`), since this reconciler would undo the change.
    let owner = Some(owner_label(&rt));
    entry
        .controller
        .update(|s, _| decisions::set_topic_owner(s, &name, owner))
        .await?;
    let md = entry.controller.snapshot().await.metadata;
    write_status(ctx, &rt, status(&rt, Some(&md), None, default_min)).await?;
    Ok(Action::requeue(Duration::from_secs(60)))
}

/// How a topic names the resource that declares it (`TopicMeta::managed_by`).
fn owner_label(rt: &ReplicatedTopic) -> String {
    format!(
        "ReplicatedTopic {}/{}",
        rt.namespace().unwrap_or_default(),
        rt.name_any()
    )
}

async fn cleanup(
    rt: Arc<ReplicatedTopic>,
    ctx: &Context,
    topics: &Store<ReplicatedTopic>,
) -> Result<Action, TopicError> {
    let ns = rt.namespace().unwrap_or_default();
    let name = rt.topic_name().to_string();
    if rt.spec.deletion_policy != DeletionPolicy::Delete {
        // Kept, and no longer declared: from now on it is managed through Kafka's API. With
        // the cluster still there, that must happen before the finalizer goes (retried until
        // its controller runs); a cluster being deleted takes its topics with it.
        let lcs: Api<LogCluster> = Api::namespaced(ctx.client.clone(), &ns);
        let cluster_lives = lcs
            .get_opt(&rt.spec.cluster)
            .await?
            .is_some_and(|lc| lc.metadata.deletion_timestamp.is_none());
        let entry = ctx.registry.get(&ns, &rt.spec.cluster).await;
        if cluster_lives && entry.is_none() {
            return Err(TopicError::ClusterNotStarted(rt.spec.cluster.clone()));
        }
        if let Some(entry) = entry.filter(|_| cluster_lives) {
            let label = owner_label(&rt);
            entry
                .controller
                .update(|s, _| {
                    let ours = s
                        .metadata
                        .topics
                        .get(&name)
                        .is_some_and(|t| t.managed_by.as_ref() == Some(&label));
                    if ours {
                        decisions::set_topic_owner(s, &name, None)
                    } else {
                        Ok(false)
                    }
                })
                .await?;
        }
        publish(
            ctx,
            &*rt,
            EventType::Normal,
            "TopicRetained",
            &format!(
                "deletionPolicy Retain: topic '{name}' and its data stay in cluster {}",
                rt.spec.cluster
            ),
        )
        .await;
        return Ok(Action::await_change());
    }
    // A resource that lost a conflict never owned the topic: deleting it must not delete data.
    if let Some(r) = older_rival(&rt, &topics.state()) {
        publish(
            ctx,
            &*rt,
            EventType::Normal,
            "TopicRetained",
            &format!(
                "topic '{name}' belongs to ReplicatedTopic {}; not deleted",
                r.name
            ),
        )
        .await;
        return Ok(Action::await_change());
    }
    let lcs: Api<LogCluster> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(lc) = lcs.get_opt(&rt.spec.cluster).await? else {
        return Ok(Action::await_change()); // the cluster and its data are gone already
    };
    if lc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let Some(entry) = ctx.registry.get(&ns, &rt.spec.cluster).await else {
        return Err(TopicError::ClusterNotStarted(rt.spec.cluster.clone()));
    };
    // Only the topic this resource created or adopted (its id in our status) is deleted: a
    // topic recreated under the name since, or one another resource owns, is left alone.
    let ours = rt.status.as_ref().and_then(|s| s.topic_id.clone());
    let exists = entry
        .controller
        .snapshot()
        .await
        .metadata
        .topics
        .get(&name)
        .is_some_and(|t| Some(t.id.to_string()) == ours);
    if exists {
        entry
            .controller
            .update(|s, _| decisions::delete_topic(s, &name))
            .await?;
        publish(
            ctx,
            &*rt,
            EventType::Normal,
            "TopicDeleted",
            &format!(
                "deletionPolicy Delete: topic '{name}' deleted from cluster {}",
                rt.spec.cluster
            ),
        )
        .await;
    }
    Ok(Action::await_change())
}

async fn write_status(
    ctx: &Context,
    rt: &ReplicatedTopic,
    new: ReplicatedTopicStatus,
) -> Result<(), kube::Error> {
    if rt.status.as_ref() == Some(&new) {
        return Ok(());
    }
    let api: Api<ReplicatedTopic> =
        Api::namespaced(ctx.client.clone(), &rt.namespace().unwrap_or_default());
    api.patch_status(
        &rt.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": new })),
    )
    .await?;
    Ok(())
}

pub fn error_policy(_: Arc<ReplicatedTopic>, e: &TopicError, _: Arc<Context>) -> Action {
    tracing::warn!(error = %e, "topic reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// Config overrides as a plain map (for tests and messages).
pub fn configs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ConditionStatus;
    use crate::crd::ReplicatedTopicSpec;
    use broker::metadata::PartitionMeta;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn rt(partitions: i32, rf: i32, config: &[(&str, &str)]) -> ReplicatedTopic {
        let mut r = ReplicatedTopic::new(
            "orders",
            ReplicatedTopicSpec {
                cluster: "demo".into(),
                partitions,
                replication_factor: rf,
                config: configs(config),
                deletion_policy: DeletionPolicy::Retain,
                topic_name: None,
            },
        );
        r.metadata.namespace = Some("ns".into());
        r.metadata.uid = Some("u1".into());
        r.metadata.generation = Some(1);
        r
    }

    fn topic(partitions: usize, rf: usize, config: &[(&str, &str)]) -> TopicMeta {
        TopicMeta {
            name: "orders".into(),
            id: uuid::Uuid::nil(),
            configs: configs(config),
            partitions: (0..partitions)
                .map(|p| {
                    let replicas: Vec<i32> = (0..rf as i32).collect();
                    PartitionMeta {
                        partition: p as i32,
                        leader: 0,
                        isr: replicas.clone(),
                        replicas,
                        leader_epoch: 0,
                        partition_epoch: 0,
                        adding: vec![],
                        removing: vec![],
                        elr: vec![],
                    }
                })
                .collect(),
            managed_by: None,
        }
    }

    fn refused(p: TopicPlan) -> &'static str {
        match p {
            TopicPlan::Refuse { reason, .. } => reason,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn plans() {
        assert_eq!(plan(&rt(6, 3, &[]), 3, None, None, None), TopicPlan::Create);
        assert_eq!(
            plan(&rt(6, 3, &[]), 3, Some(&topic(6, 3, &[])), None, None),
            TopicPlan::InSync
        );
        assert_eq!(
            plan(&rt(8, 3, &[]), 3, Some(&topic(6, 3, &[])), None, None),
            TopicPlan::AddPartitions(8)
        );
        assert_eq!(
            plan(
                &rt(6, 3, &[("retention.ms", "1000")]),
                3,
                Some(&topic(6, 3, &[])),
                None,
                None
            ),
            TopicPlan::SetConfig
        );
        assert_eq!(
            refused(plan(&rt(6, 4, &[]), 3, None, None, None)),
            "ReplicationFactorTooLarge"
        );
        assert_eq!(
            refused(plan(&rt(4, 3, &[]), 3, Some(&topic(6, 3, &[])), None, None)),
            "PartitionDecrease"
        );
        assert_eq!(
            refused(plan(&rt(6, 3, &[]), 3, Some(&topic(6, 2, &[])), None, None)),
            "ReplicationFactorMismatch"
        );
        assert_eq!(
            refused(plan(
                &rt(6, 3, &[("retention.ms", "soon")]),
                3,
                None,
                None,
                None
            )),
            "InvalidConfig"
        );
        assert_eq!(
            refused(plan(
                &rt(6, 3, &[("no.such.config", "1")]),
                3,
                None,
                None,
                None
            )),
            "InvalidConfig"
        );
        assert_eq!(
            refused(plan(
                &rt(6, 2, &[("min.insync.replicas", "3")]),
                3,
                None,
                None,
                None
            )),
            "InvalidConfig"
        );
        let rival = Rival {
            name: "first".into(),
        };
        assert_eq!(
            refused(plan(&rt(6, 3, &[]), 3, None, None, Some(&rival))),
            "TopicConflict"
        );
        let mut bad = rt(1, 1, &[]);
        bad.spec.topic_name = Some("bad name!".into());
        assert_eq!(refused(plan(&bad, 3, None, None, None)), "InvalidTopicName");
        for name in [
            "./victim",
            "../ESCAPED",
            "bad\0name",
            ".",
            "..",
            &"x".repeat(250),
        ] {
            bad.spec.topic_name = Some(name.into());
            let TopicPlan::Refuse { reason, message } = plan(&bad, 3, None, None, None) else {
                panic!("{name:?} was not refused");
            };
            assert_eq!(reason, "InvalidTopicName", "{name:?}");
            assert!(
                message.contains("invalid topic name"),
                "{name:?}: {message}"
            );
        }
        // metadata.name is the topic name when spec.topicName is unset: Kubernetes allows
        // 253 characters, Kafka 249.
        let mut long = rt(1, 1, &[]);
        long.metadata.name = Some("x".repeat(250));
        assert_eq!(
            refused(plan(&long, 3, None, None, None)),
            "InvalidTopicName"
        );
        // `a_b` beside an existing `a.b`: Kafka refuses it, and so does the plan; the topic
        // itself (already there under this very name) is no collision.
        let mut ab = rt(1, 1, &[]);
        ab.spec.topic_name = Some("a_b".into());
        let TopicPlan::Refuse { reason, message } = plan(&ab, 3, None, Some("a.b"), None) else {
            panic!("a_b beside a.b was not refused");
        };
        assert_eq!(reason, "TopicNameCollision");
        assert!(
            message.contains("'a_b'") && message.contains("'a.b'"),
            "{message}"
        );
        assert_eq!(
            plan(&ab, 3, Some(&topic(1, 1, &[])), Some("a.b"), None),
            TopicPlan::InSync
        );
        bad.spec.topic_name = Some("__consumer_offsets".into());
        assert_eq!(refused(plan(&bad, 3, None, None, None)), "InvalidTopicName");
    }

    #[test]
    fn the_older_resource_owns_the_topic() {
        let at = |s| Some(Time(Timestamp::from_second(s).unwrap()));
        let mut a = rt(1, 1, &[]);
        a.metadata.name = Some("a".into());
        a.spec.topic_name = Some("orders".into());
        a.metadata.creation_timestamp = at(10);
        let mut b = rt(1, 1, &[]);
        b.metadata.name = Some("b".into());
        b.metadata.uid = Some("u2".into());
        b.metadata.creation_timestamp = at(20);
        b.spec.topic_name = Some("orders".into());
        let all = vec![Arc::new(a.clone()), Arc::new(b.clone())];
        assert!(older_rival(&a, &all).is_none());
        assert_eq!(older_rival(&b, &all).unwrap().name, "a");
        // Another cluster, or another topic name, is no rival.
        b.spec.cluster = "other".into();
        assert!(older_rival(&b, &[Arc::new(a.clone()), Arc::new(b.clone())]).is_none());
    }

    #[test]
    fn status_reports_partitions_and_conditions() {
        let r = rt(2, 3, &[("min.insync.replicas", "2")]);
        let mut md = ClusterMetadata::default();
        for id in 0..3 {
            md.brokers.insert(
                id,
                broker::metadata::BrokerMeta {
                    id,
                    epoch: 1,
                    host: "h".into(),
                    port: 1,
                    replication_host: None,
                    rack: None,
                    listeners: Vec::new(),
                    status: broker::metadata::BrokerStatus::Alive,
                    drained: false,
                },
            );
        }
        let mut t = topic(2, 3, &[("min.insync.replicas", "2")]);
        t.partitions[1].isr = vec![0];
        t.partitions[1].elr = vec![1];
        md.topics.insert("orders".into(), t);
        let s = status(&r, Some(&md), None, 1);
        assert_eq!(s.partitions.len(), 2);
        assert_eq!(
            s.partitions[1].elr,
            [1],
            "eligible leader replicas are shown"
        );
        assert_eq!(s.observed_generation, Some(1));
        let get = |ty| {
            crate::crd::find_condition(&s.conditions, ty)
                .unwrap()
                .clone()
        };
        assert_eq!(get(ConditionType::Ready).status, ConditionStatus::True);
        let degraded = get(ConditionType::Degraded);
        assert_eq!(degraded.status, ConditionStatus::True);
        assert!(
            degraded.message.contains("partitions 1 "),
            "{}",
            degraded.message
        );
        // Refusals are False Ready with the reason, never silently ignored.
        let s = status(&r, Some(&md), Some(("PartitionDecrease", "no")), 1);
        let ready = crate::crd::find_condition(&s.conditions, ConditionType::Ready).unwrap();
        assert_eq!(
            (ready.status, ready.reason.as_str()),
            (ConditionStatus::False, "PartitionDecrease")
        );
    }
}
