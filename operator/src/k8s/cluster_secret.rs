//! Whether a LogCluster's brokers and controller API use a cluster secret (`broker::auth`),
//! decided from what runs, never from the Secret alone: a broker reads the secret once, when
//! it starts, so a secret switched on, off or changed under running brokers would have the
//! controller refuse them (401, then fenced) and leave them unable to replicate with the
//! brokers restarted after. The rule ([`decide`], pure):
//!
//! - A new cluster (no StatefulSet, no broker pod) gets a Secret first, so every broker
//!   starts with it.
//! - A cluster runs secured when its Secret exists and every broker pod mounts it and started
//!   with this value (the pod template carries the value's fingerprint).
//! - Pods that run without it keep the cluster open (a Warning says so): an older operator
//!   made it, or its StatefulSet was recreated under running pods.
//! - A Secret gone or changed under pods that use it changes nothing until it is restored.

use std::sync::Arc;

use broker::auth::ClusterSecret;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::PostParams;
use kube::{Api, ResourceExt};
use tracing::info;

use super::Context;
use super::cluster::ClusterError;
use super::resources::{self, Names};
use crate::crd::LogCluster;

/// The pod template annotation holding the fingerprint of the secret its brokers start with.
pub const FINGERPRINT_ANNOTATION: &str = "strand.dev/cluster-secret-fingerprint";

/// What one broker pod uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSecret {
    pub name: String,
    pub mounts: bool,
    pub fingerprint: Option<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// A new cluster: create the Secret, then run secured.
    Create,
    /// Run secured with the Secret.
    Secured,
    /// Run open; the message says why (a Warning and Degraded).
    Open(String),
    /// Change nothing until this is fixed: (reason, message).
    Refuse(&'static str, String),
}

/// The rule of this module. `secret`: the Secret's fingerprint, if it exists.
pub fn decide(secret: Option<&str>, statefulset_exists: bool, pods: &[PodSecret]) -> Decision {
    let names = |f: &dyn Fn(&PodSecret) -> bool| {
        pods.iter()
            .filter(|p| f(p))
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mounting = names(&|p| p.mounts);
    let without = names(&|p| !p.mounts);
    match secret {
        None if !mounting.is_empty() => Decision::Refuse(
            "ClusterSecretMissing",
            format!(
                "brokers {mounting} run with the cluster secret but its Secret is gone: restore \
                 it with the value they started with; nothing changes meanwhile"
            ),
        ),
        None if !statefulset_exists && pods.is_empty() => Decision::Create,
        None => Decision::Open(format!(
            "brokers {without} run without a cluster secret (made before the operator created \
             one): any client may fetch as a replica and call the controller API"
        )),
        Some(f) => {
            let other = names(&|p| p.mounts && p.fingerprint.as_deref() != Some(f));
            if !other.is_empty() {
                Decision::Refuse(
                    "ClusterSecretChanged",
                    format!(
                        "brokers {other} started with another value of the cluster secret: \
                         restore the value they started with; nothing changes meanwhile"
                    ),
                )
            } else if !without.is_empty() {
                Decision::Open(format!(
                    "brokers {without} run without the cluster secret, so it is not used: any \
                     client may fetch as a replica and call the controller API"
                ))
            } else {
                Decision::Secured
            }
        }
    }
}

/// What a broker pod mounts.
fn pod_secret(pod: &Pod, names: &Names) -> PodSecret {
    let mounts = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .is_some_and(|vs| {
            vs.iter().any(|v| {
                v.secret
                    .as_ref()
                    .is_some_and(|s| s.secret_name.as_deref() == Some(&names.cluster_secret))
            })
        });
    PodSecret {
        name: pod.name_any(),
        mounts,
        fingerprint: pod.annotations().get(FINGERPRINT_ANNOTATION).cloned(),
    }
}

/// The secret a reconcile runs with (None: open), or why it must change nothing.
pub enum Outcome {
    Use(Option<Arc<ClusterSecret>>),
    /// Open, with the reason for a Warning.
    Open(String),
    Refuse(&'static str, String),
}

/// Reads (or, for a new cluster, creates) the Secret and applies [`decide`].
pub async fn resolve(
    ctx: &Context,
    lc: &LogCluster,
    names: &Names,
    statefulset: Option<&StatefulSet>,
    pods: &[Pod],
) -> Result<Outcome, ClusterError> {
    let ns = lc.namespace().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let found = api.get_opt(&names.cluster_secret).await?;
    if let Some(s) = &found {
        // An earlier LogCluster's of the same name, not collected yet: about to be deleted.
        let foreign = s
            .owner_references()
            .iter()
            .any(|o| o.kind == "LogCluster" && Some(&o.uid) != lc.uid().as_ref());
        if foreign {
            return Ok(Outcome::Refuse(
                "ClusterSecretForeign",
                format!(
                    "Secret {} belongs to an earlier LogCluster of this name; waiting for it to \
                     be collected",
                    names.cluster_secret
                ),
            ));
        }
    }
    let secret = match &found {
        Some(s) => Some(parse(s, names)?),
        None => None,
    };
    let fingerprint = secret.as_ref().map(|s| s.fingerprint());
    let pods: Vec<PodSecret> = pods.iter().map(|p| pod_secret(p, names)).collect();
    Ok(
        match decide(fingerprint.as_deref(), statefulset.is_some(), &pods) {
            Decision::Secured => Outcome::Use(secret.map(Arc::new)),
            Decision::Open(why) => Outcome::Open(why),
            Decision::Refuse(reason, why) => Outcome::Refuse(reason, why),
            Decision::Create => {
                let fresh = resources::cluster_secret(lc, &ClusterSecret::generate());
                let created = match api.create(&PostParams::default(), &fresh).await {
                    Ok(s) => {
                        info!(secret = %names.cluster_secret, "created the cluster secret");
                        s
                    }
                    // Created meanwhile (another reconcile): use that one.
                    Err(kube::Error::Api(e)) if e.code == 409 => {
                        api.get(&names.cluster_secret).await?
                    }
                    Err(e) => return Err(e.into()),
                };
                Outcome::Use(Some(Arc::new(parse(&created, names)?)))
            }
        },
    )
}

fn parse(s: &Secret, names: &Names) -> Result<ClusterSecret, ClusterError> {
    let value = s
        .data
        .as_ref()
        .and_then(|d| d.get(resources::CLUSTER_SECRET_KEY))
        .ok_or_else(|| {
            ClusterError::Secret(format!(
                "Secret {} has no key {:?}",
                names.cluster_secret,
                resources::CLUSTER_SECRET_KEY
            ))
        })?;
    ClusterSecret::from_bytes(&value.0)
        .map_err(|e| ClusterError::Secret(format!("Secret {}: {e}", names.cluster_secret)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, mounts: bool, fingerprint: Option<&str>) -> PodSecret {
        PodSecret {
            name: name.into(),
            mounts,
            fingerprint: fingerprint.map(String::from),
        }
    }

    #[test]
    fn only_a_new_cluster_gets_a_secret() {
        assert_eq!(decide(None, false, &[]), Decision::Create);
        // A StatefulSet without pods yet (or pods without a StatefulSet: deleted with
        // --cascade=orphan) already runs, or is about to, without the secret.
        assert!(matches!(decide(None, true, &[]), Decision::Open(_)));
        let orphan = [pod("demo-0", false, None)];
        assert!(matches!(decide(None, false, &orphan), Decision::Open(_)));
    }

    #[test]
    fn secured_only_when_every_pod_started_with_this_value() {
        let all = [
            pod("demo-0", true, Some("f1")),
            pod("demo-1", true, Some("f1")),
        ];
        assert_eq!(decide(Some("f1"), true, &all), Decision::Secured);
        // No pods (scaled to zero, or all being recreated): they all start with it.
        assert_eq!(decide(Some("f1"), true, &[]), Decision::Secured);
        assert_eq!(decide(Some("f1"), false, &[]), Decision::Secured);
    }

    #[test]
    fn a_secret_beside_pods_that_run_without_it_is_not_used() {
        // A Secret made by hand for an open cluster: switching on would fence the brokers.
        let open = [pod("demo-0", false, None), pod("demo-1", false, None)];
        let Decision::Open(why) = decide(Some("f1"), true, &open) else {
            panic!("not open")
        };
        assert!(why.contains("demo-0, demo-1"), "{why}");
    }

    #[test]
    fn a_secret_gone_or_changed_under_its_brokers_changes_nothing() {
        let running = [
            pod("demo-0", true, Some("f1")),
            pod("demo-1", true, Some("f1")),
        ];
        let Decision::Refuse(reason, why) = decide(None, true, &running) else {
            panic!("not refused")
        };
        assert_eq!(reason, "ClusterSecretMissing");
        assert!(why.contains("demo-0, demo-1"), "{why}");
        let Decision::Refuse(reason, why) = decide(Some("f2"), true, &running) else {
            panic!("not refused")
        };
        assert_eq!(reason, "ClusterSecretChanged");
        assert!(why.contains("demo-0"), "{why}");
        // A pod without the annotation started with an unknown value: refused too.
        let unknown = [pod("demo-0", true, None)];
        assert!(matches!(
            decide(Some("f1"), true, &unknown),
            Decision::Refuse("ClusterSecretChanged", _)
        ));
        // Mixed mounting and not (cannot arise from the operator): a change would fence
        // someone, so the changed value wins and nothing changes.
        let mixed = [pod("demo-0", true, Some("f0")), pod("demo-1", false, None)];
        assert!(matches!(
            decide(Some("f1"), true, &mixed),
            Decision::Refuse("ClusterSecretChanged", _)
        ));
    }
}
