//! The operator on Kubernetes: the controller's store in the LogCluster status (`store`), leader
//! election with a Lease (`lease`), the children of a LogCluster (`resources`), one controller
//! per LogCluster behind one HTTP listener (`registry`), the reconcilers (`cluster`, `topic`),
//! the client security settings (`security`), TLS certificates (`tls`, `certs`), the LogUser reconciler (`user`) and the process
//! that wires them together (`run`).

pub mod certs;
pub mod cluster;
pub mod cluster_secret;
pub mod lease;
pub mod listeners;
pub mod registry;
pub mod resources;
pub mod run;
pub mod security;
pub mod store;
pub mod tls;
pub mod topic;
pub mod user;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::Store;
use kube::{Client, Resource};

use crate::crd::{Condition, ConditionStatus, ConditionType, ReplicatedTopic};

/// What every reconcile needs.
pub struct Context {
    pub client: Client,
    pub registry: registry::Registry,
    pub recorder: Recorder,
    /// Base URL of the controller API as brokers reach it.
    pub controller_url: String,
    /// Every ReplicatedTopic, for conflict detection.
    pub topics: Store<ReplicatedTopic>,
}

/// A condition observed now, True when `ok`.
fn condition(
    type_: ConditionType,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_,
        status: if ok {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        },
        reason: reason.into(),
        message,
        last_transition_time: Time(Timestamp::now()),
        observed_generation: generation,
    }
}

/// Publishes an Event about `obj`; a failure is logged, never fails the reconcile.
async fn publish<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    obj: &K,
    type_: EventType,
    reason: &str,
    note: &str,
) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &obj.object_ref(&())).await {
        tracing::warn!(error = %e, "cannot publish event");
    }
}
