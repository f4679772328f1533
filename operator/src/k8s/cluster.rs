//! The LogCluster reconciler: starts (or resumes) the cluster's controller from the state in its
//! status, applies the children with server-side apply, carries out the roll planner's next step,
//! shrinks the StatefulSet only after the leaving brokers' replicas have moved, rebalances onto
//! new brokers after a scale-up, and reports brokers, rollout and conditions. Each action that
//! matters is also an Event.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::{info, warn};

use super::resources::{self, Names};
use super::{Context, condition, publish};
use super::{certs, cluster_secret, listeners, security};
use crate::controller::decisions;
use crate::controller::rebalance::{self, Outcome};
use crate::controller::state::ControllerState;
use crate::crd::log_cluster::{BrokerState, RolloutPhase, RolloutStatus};
use crate::crd::{ConditionType, LogCluster, LogClusterStatus, set_condition};
use crate::roll::{self, PodState, RollAction, RollInput};

/// Field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "strand-operator";

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("Kubernetes API: {0}")]
    Api(#[from] kube::Error),
    #[error("controller state: {0}")]
    Store(#[from] crate::controller::store::StoreError),
    #[error("controller: {0}")]
    Controller(#[from] crate::controller::service::ServiceError),
    #[error("cannot render {0}: {1}")]
    Render(&'static str, serde_json::Error),
    #[error("cluster secret: {0}")]
    Secret(String),
}

/// One reconcile, in a span naming the resource, so every log line says which one it is about.
#[tracing::instrument(skip_all, fields(logcluster = %format!("{}/{}", lc.namespace().unwrap_or_default(), lc.name_any())))]
pub async fn reconcile(lc: Arc<LogCluster>, ctx: Arc<Context>) -> Result<Action, ClusterError> {
    let ns = lc.namespace().unwrap_or_default();
    let name = lc.name_any();
    if lc.metadata.deletion_timestamp.is_some() {
        ctx.registry.remove(&ns, &name).await;
        return Ok(Action::await_change());
    }
    let lcs: Api<LogCluster> = Api::namespaced(ctx.client.clone(), &ns);
    // The cluster id is the resource's uid: stable for its life, new if it is recreated.
    let uid = lc.uid().unwrap_or_default();
    let cluster_id = uid.replace('-', "");
    let names = resources::names(&lc);
    let current = current_statefulset(&ctx, &ns, &names).await?;
    let current_replicas = current.as_ref().and_then(|s| s.spec.replicas);
    let running = broker_pods(&ctx, &ns, &lc).await?;
    let (secret, unauthenticated) =
        match cluster_secret::resolve(&ctx, &lc, &names, current.as_ref(), &running).await? {
            cluster_secret::Outcome::Use(secret) => (secret, None),
            cluster_secret::Outcome::Open(why) => (None, Some(why)),
            cluster_secret::Outcome::Refuse(reason, why) => {
                return refuse(&ctx, &lc, &ns, reason, why).await;
            }
        };
    if let Some(why) = &unauthenticated {
        warn_once(&ctx, &lc, "Unauthenticated", why).await;
    }
    let entry = ctx
        .registry
        .ensure(lcs, &ns, &name, &uid, &cluster_id, secret.clone())
        .await?;
    let state = entry.controller.snapshot().await;
    let rctx = resources::Context {
        controller_url: ctx.controller_url.clone(),
        cluster_id: state.metadata.cluster_id.clone(),
        cluster_secret: secret.as_ref().map(|s| s.fingerprint()),
    };
    if let Err(reason) = listeners::validate(&lc) {
        let message = format!("spec.listeners: {reason}");
        return refuse(&ctx, &lc, &ns, "InvalidListeners", message).await;
    }
    if let Err(reason) = security::validate(&lc, secret.is_some()) {
        return refuse(&ctx, &lc, &ns, "InvalidSecurity", reason).await;
    }

    // Scale-down: the StatefulSet keeps the leaving pods until their replicas have moved. A
    // shrink below a topic's replication factor can never finish: refused before anything moves.
    let refusal = scale_down_refusal(&lc, current_replicas, &state);
    let (sts_replicas, leaving_note) = match (&refusal, current_replicas) {
        (Some(_), Some(current)) => (current, None),
        _ => scale_target(&lc, current_replicas, &state),
    };
    if let Some(reason) = &refusal {
        warn_once(&ctx, &lc, "ScaleDownRefused", reason).await;
    }
    if let Some(note) = &leaving_note {
        // A broker that never registered holds nothing; naming it would fail the whole move.
        let leaving: Vec<i32> = (lc.spec.replicas..sts_replicas)
            .filter(|id| state.metadata.brokers.contains_key(id))
            .collect();
        let started = entry
            .controller
            .update(|s, _| decisions::decommission_all(s, &leaving))
            .await;
        match started {
            Ok(moves) if !moves.is_empty() => {
                publish(
                    &ctx,
                    &*lc,
                    EventType::Normal,
                    "Decommissioning",
                    &format!(
                        "moving {} partition replicas off brokers {leaving:?} before scaling down",
                        moves.len()
                    ),
                )
                .await
            }
            Ok(_) => {}
            Err(e) => {
                publish(
                    &ctx,
                    &*lc,
                    EventType::Warning,
                    "ScaleDownBlocked",
                    &format!("{note}: {e}"),
                )
                .await
            }
        }
    }

    apply(&ctx, &lc, &ns, resources::service_account(&lc)).await?;
    apply(&ctx, &lc, &ns, resources::config_map(&lc)).await?;
    apply(&ctx, &lc, &ns, resources::headless_service(&lc)).await?;
    apply(&ctx, &lc, &ns, resources::client_service(&lc)).await?;
    apply(&ctx, &lc, &ns, resources::pod_disruption_budget(&lc)).await?;
    // The brokers' certificates before the pods that mount them.
    if let Err(reason) = certs::ensure(&ctx, &lc, &ns, &names, sts_replicas).await? {
        return refuse(&ctx, &lc, &ns, "CertificatesInvalid", reason).await;
    }
    let mut sts = resources::statefulset(&lc, &rctx);
    sts.spec.replicas = Some(sts_replicas);
    let sts = apply(&ctx, &lc, &ns, sts).await?;
    let refused_services = apply_listener_services(&ctx, &lc, &ns, sts_replicas).await?;

    let pods = broker_pods(&ctx, &ns, &lc).await?;
    if let Some(key) = &lc.spec.rack_label_key {
        let racks = node_racks(&ctx, &pods, &names.statefulset, key).await;
        if !racks.is_empty() {
            entry
                .controller
                .update(|s, _| Ok(decisions::set_racks(s, &racks)))
                .await?;
        }
    }
    let rollout = roll_step(&ctx, &lc, &ns, &names, &sts, &pods, &entry.controller).await?;
    // Only once nothing else moves brokers: a roll restarts them, a scale-down empties some.
    let may_move = leaving_note.is_none()
        && refusal.is_none()
        && sts_replicas == lc.spec.replicas
        && rollout.phase == RolloutPhase::Idle;
    rebalance_step(&ctx, &lc, &entry.controller, may_move).await?;
    let state = entry.controller.snapshot().await;
    let rebalancing = rebalance::progress(&state).map(|p| p.to_string());
    let mut status = cluster_status(
        &lc,
        &state,
        &pods,
        sts_replicas,
        rollout,
        leaving_note,
        rebalancing,
    );
    status.listeners = listeners::status(&lc, &pods, sts_replicas);
    let listener_refusal = listener_refusal(&refused_services);
    if let Some(reason) = &listener_refusal {
        warn_once(&ctx, &lc, "ListenerServiceRefused", reason).await;
    }
    // In order of weight: the last one set is what Degraded says.
    for (code, reason) in [
        ("Unauthenticated", unauthenticated),
        ("ListenerServiceRefused", listener_refusal),
        ("ScaleDownRefused", refusal),
    ] {
        if let Some(reason) = reason {
            let degraded = condition(
                ConditionType::Degraded,
                true,
                code,
                reason,
                lc.metadata.generation,
            );
            set_condition(&mut status.conditions, degraded);
        }
    }
    if lc.status.as_ref().map(without_state) != Some(without_state(&status)) {
        let api: Api<LogCluster> = Api::namespaced(ctx.client.clone(), &ns);
        let body = status_patch(&status).map_err(|e| ClusterError::Render("status", e))?;
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": body })),
        )
        .await?;
    }
    Ok(Action::requeue(Duration::from_secs(15)))
}

/// The cluster cannot be reconciled as it is (invalid `spec.listeners`, a cluster secret gone
/// or changed under its brokers): nothing changes until it is fixed, Degraded says why and a
/// Warning Event says it once.
async fn refuse(
    ctx: &Context,
    lc: &LogCluster,
    ns: &str,
    reason: &str,
    message: String,
) -> Result<Action, ClusterError> {
    let mut s = lc.status.clone().unwrap_or_default();
    let degraded = condition(
        ConditionType::Degraded,
        true,
        reason,
        message,
        lc.metadata.generation,
    );
    let unchanged = crate::crd::find_condition(&s.conditions, ConditionType::Degraded)
        .is_some_and(|c| c.reason == degraded.reason && c.message == degraded.message);
    if !unchanged {
        publish(ctx, lc, EventType::Warning, reason, &degraded.message).await;
        set_condition(&mut s.conditions, degraded);
        let api: Api<LogCluster> = Api::namespaced(ctx.client.clone(), ns);
        api.patch_status(
            &lc.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": { "conditions": s.conditions } })),
        )
        .await?;
    }
    Ok(Action::requeue(Duration::from_secs(60)))
}

/// A Warning Event for a Degraded reason, unless the status already says exactly that (every
/// reconcile would repeat it).
async fn warn_once(ctx: &Context, lc: &LogCluster, code: &str, message: &str) {
    let already = lc
        .status
        .as_ref()
        .and_then(|s| crate::crd::find_condition(&s.conditions, ConditionType::Degraded))
        .is_some_and(|c| c.reason == code && c.message == message);
    if !already {
        publish(ctx, lc, EventType::Warning, code, message).await;
    }
}

/// The Degraded message for listener Services the API server refused, if any.
pub fn listener_refusal(refused: &[String]) -> Option<String> {
    (!refused.is_empty()).then(|| {
        format!(
            "the API server refused external listener Services (a NodePort in \
             spec.listeners[].nodePortBase..+replicas already allocated or out of the \
             cluster's range?): {}",
            refused.join("; ")
        )
    })
}

/// The per-broker Services of the external listeners for brokers `0..replicas`; those of
/// brokers gone by a scale-down and of removed listeners are deleted. A Service the API server
/// refuses as invalid (its NodePort taken by another Service) is returned, not an error: the
/// other brokers' Services and the rest of the reconcile (rolls, status) go on without it.
async fn apply_listener_services(
    ctx: &Context,
    lc: &LogCluster,
    ns: &str,
    replicas: i32,
) -> Result<Vec<String>, ClusterError> {
    let mut refused = Vec::new();
    for svc in listeners::node_port_services(lc, replicas) {
        let name = svc.name_any();
        match apply(ctx, lc, ns, svc).await {
            Ok(_) => {}
            Err(ClusterError::Api(kube::Error::Api(e))) if e.code == 422 => {
                tracing::warn!(service = %name, error = %e.message, "Service refused");
                refused.push(format!("Service {name}: {}", e.message));
            }
            Err(e) => return Err(e),
        }
    }
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), ns);
    let selector = format!(
        "{}={},{}",
        resources::CLUSTER_LABEL,
        lc.name_any(),
        listeners::LISTENER_LABEL
    );
    let existing: Vec<_> = api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .into_iter()
        .filter(|s| {
            // Only Services this LogCluster owns.
            s.owner_references()
                .iter()
                .any(|o| Some(&o.uid) == lc.uid().as_ref())
        })
        .map(|s| (s.name_any(), s.labels().clone()))
        .collect();
    for name in listeners::stale_services(lc, replicas, &existing) {
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => continue,
            Err(e) => return Err(e.into()),
        }
        info!(service = %name, "deleted");
        publish(
            ctx,
            lc,
            EventType::Normal,
            "Deleted",
            &format!("deleted Service {name} (its broker or listener is gone)"),
        )
        .await;
    }
    Ok(refused)
}

/// The body of the status merge patch: our fields only (status.controllerState is the
/// controller's).
pub fn status_patch(status: &LogClusterStatus) -> Result<serde_json::Value, serde_json::Error> {
    let mut body = serde_json::to_value(status)?;
    if let Some(o) = body.as_object_mut() {
        o.remove("controllerState");
    }
    // A field left out of a merge patch keeps its old value: without explicit nulls a finished
    // roll kept its rollingBroker, which the next roll then took as the broker in flight.
    if let Some(r) = body.get_mut("rollout").and_then(|r| r.as_object_mut()) {
        for key in [
            "currentRevision",
            "updateRevision",
            "rollingBroker",
            "blockedReason",
        ] {
            r.entry(key).or_insert(serde_json::Value::Null);
        }
    }
    Ok(body)
}

fn without_state(s: &LogClusterStatus) -> LogClusterStatus {
    LogClusterStatus {
        controller_state: None,
        ..s.clone()
    }
}

async fn current_statefulset(
    ctx: &Context,
    ns: &str,
    names: &Names,
) -> Result<Option<StatefulSet>, kube::Error> {
    let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), ns);
    api.get_opt(&names.statefulset).await
}

/// Why a requested scale-down must not start: fewer brokers than some topic's replication
/// factor could never hold its replicas, so no replica moves and no pod is removed. `None`
/// when nothing shrinks or the target can hold every topic.
pub fn scale_down_refusal(
    lc: &LogCluster,
    current: Option<i32>,
    state: &ControllerState,
) -> Option<String> {
    let want = lc.spec.replicas;
    current.filter(|c| *c > want)?;
    let (topic, rf) = state
        .metadata
        .topics
        .iter()
        .map(|(name, t)| {
            let rf = t
                .partitions
                .iter()
                .map(|p| p.replicas.len())
                .max()
                .unwrap_or(0);
            (name, i32::try_from(rf).unwrap_or(i32::MAX))
        })
        .filter(|(_, rf)| *rf > want)
        .max_by_key(|(_, rf)| *rf)?;
    Some(format!(
        "scale-down to {want} brokers refused: topic {topic} has replication factor {rf}, which {want} brokers cannot hold; no broker is removed (set spec.replicas to at least {rf}, or lower the topic's replication factor first)"
    ))
}

/// The StatefulSet size to apply: `spec.replicas`, except during a scale-down while brokers at
/// or above it still hold replicas (then the current size, and a note saying why).
pub fn scale_target(
    lc: &LogCluster,
    current: Option<i32>,
    state: &ControllerState,
) -> (i32, Option<String>) {
    let want = lc.spec.replicas;
    let Some(current) = current.filter(|c| *c > want) else {
        return (want, None);
    };
    let holding: BTreeSet<i32> = state
        .metadata
        .partitions()
        .flat_map(|(_, p)| p.replicas.iter().copied())
        .filter(|r| *r >= want && *r < current)
        .collect();
    if holding.is_empty() {
        (want, None)
    } else {
        (
            current,
            Some(format!(
                "scaling down to {want} brokers: brokers {:?} still hold partition replicas, moving them first",
                holding.iter().collect::<Vec<_>>()
            )),
        )
    }
}

/// Server-side apply of a child owned by `lc`. Emits an Event when it creates or changes it.
async fn apply<K>(ctx: &Context, lc: &LogCluster, ns: &str, obj: K) -> Result<K, ClusterError>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let name = obj.name_any();
    let before = api.get_opt(&name).await?.and_then(|o| o.resource_version());
    let mut body = serde_json::to_value(&obj)
        .map_err(|e| ClusterError::Render(std::any::type_name::<K>(), e))?;
    body["apiVersion"] = K::api_version(&()).into();
    body["kind"] = K::kind(&()).into();
    let applied = api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(body),
        )
        .await?;
    let after = applied.resource_version();
    let (reason, verb) = match before {
        None => ("Created", "created"),
        Some(rv) if Some(&rv) != after.as_ref() => ("Updated", "updated"),
        Some(_) => return Ok(applied),
    };
    let kind = K::kind(&());
    info!(%kind, %name, "{verb}");
    publish(
        ctx,
        lc,
        EventType::Normal,
        reason,
        &format!("{verb} {kind} {name}"),
    )
    .await;
    Ok(applied)
}

async fn broker_pods(ctx: &Context, ns: &str, lc: &LogCluster) -> Result<Vec<Pod>, kube::Error> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let selector = resources::selector_labels(lc)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    Ok(api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items)
}

/// Broker id -> the `key` label of the node its pod is bound to. Pods not bound yet, nodes
/// without the label, and nodes that cannot be read (an Event says why) are left out.
async fn node_racks(ctx: &Context, pods: &[Pod], sts: &str, key: &str) -> BTreeMap<i32, String> {
    let api: Api<Node> = Api::all(ctx.client.clone());
    let mut labels: HashMap<String, Option<String>> = HashMap::new();
    let mut racks = BTreeMap::new();
    for pod in pods {
        let (Some(id), Some(node)) = (
            ordinal(pod, sts),
            pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        ) else {
            continue;
        };
        if !labels.contains_key(&node) {
            let value = match api.get_opt(&node).await {
                Ok(n) => n.and_then(|n| n.labels().get(key).cloned()),
                Err(e) => {
                    // Most likely RBAC: the chart grants get on nodes for this.
                    warn!(%node, error = %e, "cannot read the node's rack label");
                    None
                }
            };
            labels.insert(node.clone(), value);
        }
        if let Some(Some(rack)) = labels.get(&node) {
            racks.insert(id, rack.clone());
        }
    }
    racks
}

fn ordinal(pod: &Pod, sts: &str) -> Option<i32> {
    pod.name_any()
        .strip_prefix(&format!("{sts}-"))?
        .parse()
        .ok()
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Asks the roll planner for the next step and carries it out.
async fn roll_step(
    ctx: &Context,
    lc: &LogCluster,
    ns: &str,
    names: &Names,
    sts: &StatefulSet,
    pods: &[Pod],
    controller: &super::registry::KubeController,
) -> Result<RolloutStatus, ClusterError> {
    let update_revision = sts.status.as_ref().and_then(|s| s.update_revision.clone());
    let current_revision = sts.status.as_ref().and_then(|s| s.current_revision.clone());
    let pod_states: Vec<PodState> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| {
            Some(PodState {
                ordinal: ordinal(p, &names.statefulset)?,
                ready: pod_ready(p),
                revision: p.labels().get("controller-revision-hash")?.clone(),
            })
        })
        .collect();
    let previous = lc.status.as_ref().and_then(|s| s.rollout.clone());
    let mut status = RolloutStatus {
        phase: RolloutPhase::Idle,
        current_revision,
        update_revision: update_revision.clone(),
        updated_brokers: 0,
        rolling_broker: None,
        blocked_reason: None,
    };
    let Some(target) = update_revision else {
        return Ok(status); // the StatefulSet controller has not computed a revision yet
    };
    status.updated_brokers =
        i32::try_from(pod_states.iter().filter(|p| p.revision == target).count())
            .unwrap_or(i32::MAX);
    let md = controller.snapshot().await.metadata;
    let default_min_insync =
        match roll::min_insync_replicas(&lc.spec.broker_config, 1, "spec.brokerConfig") {
            Ok(n) => n,
            Err(e) => {
                status.phase = RolloutPhase::Blocked;
                status.blocked_reason = Some(e.to_string());
                return Ok(status);
            }
        };
    let input = RollInput {
        pods: &pod_states,
        target_revision: &target,
        metadata: &md,
        default_min_insync,
        paused: lc.spec.paused,
        rolling_broker: previous.as_ref().and_then(|r| r.rolling_broker),
    };
    let outdated = pod_states.iter().any(|p| p.revision != target);
    let action = roll::plan(&input);
    match &action {
        RollAction::Done | RollAction::Wait { .. } => {}
        RollAction::Blocked { reason } => {
            publish(ctx, lc, EventType::Warning, "RollBlocked", reason).await;
        }
        &RollAction::DrainBroker(b) => {
            controller.update(|s, _| decisions::drain(s, b)).await?;
            publish(
                ctx,
                lc,
                EventType::Normal,
                "DrainBroker",
                &format!("moving leadership off broker {b} before restarting it"),
            )
            .await;
        }
        &RollAction::DeletePod(b) => {
            let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
            let pod = format!("{}-{b}", names.statefulset);
            match api.delete(&pod, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
            publish(
                ctx,
                lc,
                EventType::Normal,
                "RestartBroker",
                &format!("deleted pod {pod} to move it to revision {target}"),
            )
            .await;
        }
        RollAction::RestorePreferredLeaders => {
            let moved = controller
                .update(|s, _| Ok(decisions::preferred_leader_election(s)))
                .await?;
            publish(
                ctx,
                lc,
                EventType::Normal,
                "PreferredLeaders",
                &format!("preferred-leader election moved {moved} partition leaders"),
            )
            .await;
        }
    }
    Ok(rollout_after(
        status,
        action,
        outdated,
        input.rolling_broker,
        lc.spec.paused,
    ))
}

/// `status.rollout` once the planner answered `action` (and it was carried out). `outdated`:
/// some pod is not on the target revision; `rolling`: the broker in flight from the previous
/// status.
pub fn rollout_after(
    mut status: RolloutStatus,
    action: RollAction,
    outdated: bool,
    rolling: Option<i32>,
    paused: bool,
) -> RolloutStatus {
    // The roll is under way until the planner says Done, not until the last pod is on the new
    // revision: after that it still waits for the last broker to come back into every ISR and
    // restores leadership. Judging by revisions alone said Idle (Progressing=False) the moment
    // the last pod was deleted, while that broker could not even fetch.
    let under_way = outdated || rolling.is_some();
    match action {
        RollAction::Done => {}
        RollAction::RestorePreferredLeaders => {
            if under_way {
                status.phase = RolloutPhase::Rolling;
                status.rolling_broker = rolling;
                status.blocked_reason = Some("restoring preferred leaders".into());
            }
        }
        RollAction::Wait { reason } => {
            status.phase = if paused {
                RolloutPhase::Paused
            } else if under_way {
                RolloutPhase::Rolling
            } else {
                RolloutPhase::Idle
            };
            if under_way {
                status.rolling_broker = rolling;
                status.blocked_reason = Some(reason);
            }
        }
        RollAction::Blocked { reason } => {
            status.phase = RolloutPhase::Blocked;
            status.rolling_broker = rolling;
            status.blocked_reason = Some(reason);
        }
        RollAction::DrainBroker(b) | RollAction::DeletePod(b) => {
            status.phase = RolloutPhase::Rolling;
            status.rolling_broker = Some(b);
        }
    }
    status
}

/// Spreads replicas and leaders onto brokers 0..spec.replicas once all of them are live and
/// the set grew (a scale-up), at most `--rebalance-max-moves` partitions at a time; an Event
/// when a rebalance starts, finishes or is cancelled.
async fn rebalance_step(
    ctx: &Context,
    lc: &LogCluster,
    controller: &super::registry::KubeController,
    may_move: bool,
) -> Result<(), ClusterError> {
    let members: Vec<i32> = (0..lc.spec.replicas).collect();
    let max = controller.settings.rebalance_max_moves;
    match controller.rebalance(&members, may_move, true).await? {
        Outcome::Started(p) => {
            info!(onto = ?p.onto, moves = p.total, "rebalance started");
            publish(
                ctx,
                lc,
                EventType::Normal,
                "RebalanceStarted",
                &format!(
                    "{p}: moving replicas and leaders onto the new brokers, {max} partitions at a time"
                ),
            )
            .await
        }
        Outcome::Progressed(p) => info!(onto = ?p.onto, done = p.done, total = p.total, "rebalancing"),
        Outcome::Finished {
            progress,
            leaders_moved,
        } => {
            info!(onto = ?progress.onto, moves = progress.total, "rebalance finished");
            publish(
                ctx,
                lc,
                EventType::Normal,
                "RebalanceFinished",
                &format!(
                    "{progress}; the preferred-leader election moved {leaders_moved} partition leaders"
                ),
            )
            .await
        }
        Outcome::Cancelled { onto, left } => {
            publish(
                ctx,
                lc,
                EventType::Warning,
                "RebalanceCancelled",
                &format!(
                    "stopped rebalancing onto brokers {onto:?}: brokers {left:?} are leaving the cluster (moves in flight finish)"
                ),
            )
            .await
        }
        Outcome::Nothing | Outcome::Balanced { .. } => {}
    }
    Ok(())
}

/// The status: one entry per broker of the StatefulSet, rollout progress and conditions.
pub fn cluster_status(
    lc: &LogCluster,
    state: &ControllerState,
    pods: &[Pod],
    sts_replicas: i32,
    rollout: RolloutStatus,
    leaving_note: Option<String>,
    rebalancing: Option<String>,
) -> LogClusterStatus {
    let gen_ = lc.metadata.generation;
    let sts = lc.name_any();
    let mut s = lc.status.clone().unwrap_or_default();
    s.controller_state = None;
    s.observed_generation = gen_;
    s.brokers = (0..sts_replicas)
        .map(|id| {
            let meta = state.metadata.brokers.get(&id);
            BrokerState {
                id,
                ready: pods
                    .iter()
                    .any(|p| ordinal(p, &sts) == Some(id) && pod_ready(p)),
                registered: state.metadata.is_alive(id),
                epoch: meta.map(|b| b.epoch),
                rack: meta.and_then(|b| b.rack.clone()),
            }
        })
        .collect();
    s.ready_brokers = i32::try_from(s.brokers.iter().filter(|b| b.ready && b.registered).count())
        .unwrap_or(i32::MAX);
    let want = lc.spec.replicas;
    let registered = (0..want).filter(|id| state.metadata.is_alive(*id)).count();
    let ready = if s.ready_brokers >= want {
        condition(
            ConditionType::Ready,
            true,
            "AllBrokersReady",
            format!("{want}/{want} brokers ready and registered"),
            gen_,
        )
    } else {
        condition(
            ConditionType::Ready,
            false,
            "BrokersNotReady",
            format!(
                "{}/{want} brokers ready and registered ({registered} registered with the controller)",
                s.ready_brokers
            ),
            gen_,
        )
    };
    set_condition(&mut s.conditions, ready);
    let progressing = match (&leaving_note, rollout.phase) {
        (Some(note), _) => condition(
            ConditionType::Progressing,
            true,
            "ScalingDown",
            note.clone(),
            gen_,
        ),
        (None, RolloutPhase::Rolling) => condition(
            ConditionType::Progressing,
            true,
            "Rolling",
            rollout
                .blocked_reason
                .clone()
                .unwrap_or_else(|| "rolling brokers to the new revision".into()),
            gen_,
        ),
        (None, RolloutPhase::Paused) => condition(
            ConditionType::Progressing,
            false,
            "Paused",
            "spec.paused is true".into(),
            gen_,
        ),
        (None, RolloutPhase::Blocked) => condition(
            ConditionType::Progressing,
            false,
            "RollBlocked",
            rollout.blocked_reason.clone().unwrap_or_default(),
            gen_,
        ),
        (None, RolloutPhase::Idle) if rebalancing.is_some() => condition(
            ConditionType::Progressing,
            true,
            "Rebalancing",
            rebalancing.clone().unwrap_or_default(),
            gen_,
        ),
        (None, RolloutPhase::Idle) => condition(
            ConditionType::Progressing,
            false,
            "Idle",
            "every broker runs the current revision".into(),
            gen_,
        ),
    };
    set_condition(&mut s.conditions, progressing);
    let degraded = if rollout.phase == RolloutPhase::Blocked {
        condition(
            ConditionType::Degraded,
            true,
            "RollBlocked",
            rollout.blocked_reason.clone().unwrap_or_default(),
            gen_,
        )
    } else {
        condition(
            ConditionType::Degraded,
            false,
            "Healthy",
            "nothing blocks the operator".into(),
            gen_,
        )
    };
    set_condition(&mut s.conditions, degraded);
    s.rollout = Some(rollout);
    s
}

pub fn error_policy(_: Arc<LogCluster>, e: &ClusterError, _: Arc<Context>) -> Action {
    tracing::warn!(error = %e, "cluster reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::LogClusterSpec;
    use crate::crd::log_cluster::StorageSpec;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn lc(replicas: i32) -> LogCluster {
        LogCluster::new(
            "demo",
            LogClusterSpec {
                replicas,
                image: "i".into(),
                storage: StorageSpec {
                    size: Quantity("1Gi".into()),
                    storage_class_name: None,
                },
                resources: None,
                broker_config: Default::default(),
                rack_label_key: None,
                pod_template: None,
                paused: false,
                listeners: Vec::new(),
                authorization: None,
            },
        )
    }

    #[test]
    fn a_rebalance_under_way_is_progressing() {
        let idle = RolloutStatus {
            phase: RolloutPhase::Idle,
            current_revision: None,
            update_revision: None,
            updated_brokers: 0,
            rolling_broker: None,
            blocked_reason: None,
        };
        let s = ControllerState::new("c".into());
        let msg = "rebalancing onto brokers [3, 4]: 4 of 12 partition moves done";
        let status = cluster_status(&lc(5), &s, &[], 5, idle.clone(), None, Some(msg.into()));
        let c = crate::crd::find_condition(&status.conditions, ConditionType::Progressing).unwrap();
        assert_eq!(
            (c.reason.as_str(), c.message.as_str()),
            ("Rebalancing", msg)
        );
        assert_eq!(c.status, crate::crd::ConditionStatus::True);
        // A scale-down says so first.
        let status = cluster_status(
            &lc(5),
            &s,
            &[],
            5,
            idle,
            Some("down".into()),
            Some(msg.into()),
        );
        let c = crate::crd::find_condition(&status.conditions, ConditionType::Progressing).unwrap();
        assert_eq!(c.reason, "ScalingDown");
    }

    /// The config roll seen on kind: the last broker (1) restarted, re-registered (fenced out of
    /// every ISR) and could not fetch from leader 2, so it stayed out of 2's ISRs. Every pod was
    /// on the new revision and the planner was (rightly) waiting, yet the LogCluster said
    /// Progressing=False "every broker runs the current revision" and forgot the broker in
    /// flight. The roll is under way until the planner says Done, and the status must say so,
    /// then clear what it wrote once it is.
    #[test]
    fn a_roll_waiting_for_the_last_broker_to_catch_up_is_still_progressing() {
        use crate::controller::decisions::{Registration, create_topic, drain, register};
        use crate::roll::MIN_INSYNC_REPLICAS;
        let reg = |id: i32, incarnation: &str| Registration {
            id,
            incarnation: incarnation.into(),
            host: "h".into(),
            port: 9092,
            replication_host: None,
            rack: None,
            listeners: Vec::new(),
            unclean_shutdown: false,
            min_insync_replicas: None,
        };
        let mut s = ControllerState::new("c".into());
        for id in 0..3 {
            register(&mut s, reg(id, "old"), 0);
        }
        let min2 = BTreeMap::from([(MIN_INSYNC_REPLICAS.to_string(), "2".to_string())]);
        create_topic(&mut s, "orders", 6, 3, min2, uuid::Uuid::nil()).unwrap();
        // Brokers 0 and 2 are done; broker 1 is drained, restarted and registers anew.
        drain(&mut s, 1).unwrap();
        register(&mut s, reg(1, "new"), 0);
        // Leaders 0 re-admit it; leader 2 never hears from it.
        for t in s.metadata.topics.values_mut() {
            for p in &mut t.partitions {
                if p.leader != 2 {
                    p.isr = p.replicas.clone();
                }
            }
        }
        let pods: Vec<PodState> = (0..3)
            .map(|ordinal| PodState {
                ordinal,
                ready: true,
                revision: "new".into(),
            })
            .collect();
        let base = RolloutStatus {
            phase: RolloutPhase::Idle,
            current_revision: Some("old".into()),
            update_revision: Some("new".into()),
            updated_brokers: 3,
            rolling_broker: None,
            blocked_reason: None,
        };
        let step = |s: &ControllerState, rolling: Option<i32>| {
            let action = roll::plan(&RollInput {
                pods: &pods,
                target_revision: "new",
                metadata: &s.metadata,
                default_min_insync: 2,
                paused: false,
                rolling_broker: rolling,
            });
            (
                action.clone(),
                rollout_after(base.clone(), action, false, rolling, false),
            )
        };
        let progressing = |s: &ControllerState, rollout: RolloutStatus| {
            let status = cluster_status(&lc(3), s, &[], 3, rollout, None, None);
            crate::crd::find_condition(&status.conditions, ConditionType::Progressing)
                .unwrap()
                .clone()
        };

        let (action, rollout) = step(&s, Some(1));
        assert!(
            matches!(&action, RollAction::Wait { reason } if reason.contains("broker 1 (updated) is catching up")),
            "{action:?}"
        );
        assert_eq!(rollout.phase, RolloutPhase::Rolling);
        assert_eq!(
            rollout.rolling_broker,
            Some(1),
            "the broker in flight is kept"
        );
        let c = progressing(&s, rollout);
        assert_eq!(c.status, crate::crd::ConditionStatus::True, "{c:?}");
        assert_eq!(c.reason, "Rolling");
        assert!(c.message.contains("not yet in the ISR of orders-"), "{c:?}");

        // Broker 1 catches up: leadership is restored, still as part of the roll.
        for t in s.metadata.topics.values_mut() {
            for p in &mut t.partitions {
                p.isr = p.replicas.clone();
            }
        }
        let (action, rollout) = step(&s, Some(1));
        assert_eq!(action, RollAction::RestorePreferredLeaders);
        assert_eq!(rollout.phase, RolloutPhase::Rolling);
        decisions::preferred_leader_election(&mut s);

        // Done: Idle, and the merge patch clears the broker in flight and the old reason (a
        // field left out of a merge patch keeps its old value).
        let (action, rollout) = step(&s, rollout.rolling_broker);
        assert_eq!(action, RollAction::Done);
        assert_eq!(rollout.phase, RolloutPhase::Idle);
        assert_eq!(progressing(&s, rollout.clone()).reason, "Idle");
        let status = LogClusterStatus {
            rollout: Some(rollout),
            ..Default::default()
        };
        let patch = status_patch(&status).unwrap();
        assert_eq!(patch["rollout"]["rollingBroker"], serde_json::Value::Null);
        assert!(
            patch["rollout"]
                .as_object()
                .unwrap()
                .contains_key("rollingBroker"),
            "{patch}"
        );
        assert!(
            patch["rollout"]
                .as_object()
                .unwrap()
                .contains_key("blockedReason"),
            "{patch}"
        );
    }

    #[test]
    fn scale_down_waits_for_replicas_to_move() {
        let mut s = ControllerState::new("c".into());
        for id in 0..5 {
            decisions::register(
                &mut s,
                decisions::Registration {
                    id,
                    incarnation: "a".into(),
                    host: "h".into(),
                    port: 1,
                    replication_host: None,
                    rack: None,
                    listeners: Vec::new(),
                    unclean_shutdown: false,
                    min_insync_replicas: None,
                },
                0,
            );
        }
        decisions::create_topic(&mut s, "t", 5, 3, Default::default(), uuid::Uuid::nil()).unwrap();
        // Growing or steady: spec.replicas.
        assert_eq!(scale_target(&lc(5), Some(3), &s), (5, None));
        assert_eq!(scale_target(&lc(5), None, &s), (5, None));
        // Shrinking while brokers 3 and 4 hold replicas: keep 5 and say why.
        let (n, note) = scale_target(&lc(3), Some(5), &s);
        assert_eq!(n, 5);
        assert!(note.unwrap().contains("[3, 4]"));
        // Once every replica has moved, shrink.
        s.metadata.topics.clear();
        assert_eq!(scale_target(&lc(3), Some(5), &s), (3, None));
    }

    #[test]
    fn a_shrink_below_a_replication_factor_is_refused_before_anything_moves() {
        let mut s = ControllerState::new("c".into());
        for id in 0..5 {
            let reg = decisions::Registration {
                id,
                incarnation: "a".into(),
                host: "h".into(),
                port: 1,
                replication_host: None,
                rack: None,
                listeners: Vec::new(),
                unclean_shutdown: false,
                min_insync_replicas: None,
            };
            decisions::register(&mut s, reg, 0);
        }
        decisions::create_topic(&mut s, "t", 5, 3, Default::default(), uuid::Uuid::nil()).unwrap();
        decisions::create_topic(&mut s, "u", 1, 2, Default::default(), uuid::Uuid::nil()).unwrap();
        // Below RF 3: refused, naming the topic and what to do.
        let why = scale_down_refusal(&lc(2), Some(5), &s).unwrap();
        assert!(why.contains("topic t has replication factor 3"), "{why}");
        assert!(why.contains("no broker is removed"), "{why}");
        // At the largest RF, or not shrinking at all: nothing to refuse.
        assert_eq!(scale_down_refusal(&lc(3), Some(5), &s), None);
        assert_eq!(scale_down_refusal(&lc(2), Some(2), &s), None);
        assert_eq!(scale_down_refusal(&lc(2), None, &s), None);
        assert_eq!(
            scale_down_refusal(&lc(1), Some(2), &ControllerState::new("c".into())),
            None
        );
    }
}
