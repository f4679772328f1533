//! The glue of [`super::tls`]: the cluster CA and the brokers' certificates of a LogCluster with
//! a `tls: true` listener, made and kept current in their Secrets before the StatefulSet that
//! mounts them is applied.
//!
//! The operator writes only Secrets this LogCluster owns. A `<cluster>-cluster-ca` Secret it
//! does not own is used only when annotated [`USER_CA_ANNOTATION`] (the user's own CA, never
//! replaced); otherwise, and when the CA is gone while brokers hold certificates it signed, the
//! cluster is refused with a condition saying what to do, so no client's trust is ever broken
//! silently.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::api::{ListParams, PostParams};
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use time::OffsetDateTime;
use tracing::info;

use super::cluster::ClusterError;
use super::resources::{self, Names};
use super::tls::{self, CA_CERT, CA_KEY, Ca};
use super::{Context, publish};
use crate::crd::LogCluster;
use crate::crd::log_cluster::ListenerType;

/// On a `<cluster>-cluster-ca` Secret made by the user: use it as the cluster CA.
pub const USER_CA_ANNOTATION: &str = "strand.dev/user-ca";

/// What [`ensure`] found: done, or why the certificates cannot be made (a condition message).
pub type Outcome = Result<(), String>;

/// Makes or refreshes the three Secrets when a listener has TLS; nothing otherwise (Secrets
/// made earlier stay until the LogCluster goes, which takes them with it).
pub async fn ensure(
    ctx: &Context,
    lc: &LogCluster,
    ns: &str,
    names: &Names,
    replicas: i32,
) -> Result<Outcome, ClusterError> {
    if !super::security::tls(lc) {
        return Ok(Ok(()));
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let now = OffsetDateTime::now_utc();
    let current = api.get_opt(&names.broker_certs).await?;
    if let Some(s) = &current
        && !owned(lc, s)
    {
        return Ok(Err(foreign(&names.broker_certs)));
    }
    let ca = match api.get_opt(&names.cluster_ca).await? {
        Some(s) if owned(lc, &s) || user_ca(&s) => match read_ca(&s) {
            Some(ca) => ca,
            None => {
                return Ok(Err(format!(
                    "Secret {} has no {CA_KEY} and {CA_CERT} (PEM)",
                    names.cluster_ca
                )));
            }
        },
        Some(_) => {
            return Ok(Err(format!(
                "Secret {} exists and is not this LogCluster's; to use it as the cluster CA annotate it {USER_CA_ANNOTATION}=true, else delete or rename it",
                names.cluster_ca
            )));
        }
        // The brokers hold certificates of a CA that is gone: a new CA would break every
        // client that trusts the old one, which only the user may decide.
        None if current.is_some() => {
            return Ok(Err(format!(
                "Secret {} (the cluster CA) is gone while Secret {} holds certificates it signed; restore it, or delete {} too to start over with a new CA (clients must then trust the new {CA_CERT})",
                names.cluster_ca, names.broker_certs, names.broker_certs
            )));
        }
        None => {
            let label = format!("{ns}/{}", lc.name_any());
            let ca = tls::new_ca(&label, now).map_err(|e| ClusterError::Secret(e.to_string()))?;
            let data = BTreeMap::from([
                (CA_KEY.to_string(), ca.key_pem.clone()),
                (CA_CERT.to_string(), ca.cert_pem.clone()),
            ]);
            api.create(
                &PostParams::default(),
                &secret(lc, &names.cluster_ca, data, None),
            )
            .await?;
            info!(secret = %names.cluster_ca, "made the cluster CA");
            ca
        }
    };
    let ca_ends = match tls::check_ca(&ca, now) {
        Ok(t) => t,
        Err(e) => return Ok(Err(format!("Secret {}: {e}", names.cluster_ca))),
    };
    let ca_cert = BTreeMap::from([(CA_CERT.to_string(), ca.cert_pem.clone())]);
    if let Err(e) = put(lc, &api, secret(lc, &names.cluster_ca_cert, ca_cert, None)).await? {
        return Ok(Err(e));
    }

    // A failed node list must not issue certificates without the nodes' addresses.
    let extra = match extra_names(ctx, lc).await {
        Ok(e) => e,
        Err(e) => return Ok(Err(format!("cannot list the nodes' addresses: {e}"))),
    };
    let wanted: BTreeMap<String, Vec<String>> = (0..replicas)
        .map(|i| {
            let pod = format!("{}-{i}", names.statefulset);
            let n = tls::broker_names(&pod, &names.headless, &names.client, ns, &extra);
            (pod, n)
        })
        .collect();
    let issued_for = tls::issued_for(&ca, &wanted);
    let ends = tls::ends(now, ca_ends);
    let complete = current.as_ref().is_some_and(|s| {
        wanted.keys().all(|pod| {
            s.data
                .as_ref()
                .is_some_and(|d| d.contains_key(&format!("{pod}.pem")))
        })
    });
    let stale = tls::must_issue(
        current
            .as_ref()
            .and_then(|s| s.metadata.annotations.as_ref()),
        &issued_for,
        now,
        ends,
    );
    if complete && !stale {
        return Ok(Ok(()));
    }
    let mut data = BTreeMap::new();
    for (pod, pod_names) in &wanted {
        let pem = tls::issue(&ca, pod, pod_names, now, ends)
            .map_err(|e| ClusterError::Secret(e.to_string()))?;
        data.insert(format!("{pod}.pem"), pem);
    }
    let annotations = BTreeMap::from([
        (tls::ISSUED_FOR_ANNOTATION.to_string(), issued_for),
        (tls::NOT_AFTER_ANNOTATION.to_string(), tls::rfc3339(ends)),
    ]);
    let certs = secret(lc, &names.broker_certs, data, Some(annotations));
    if let Err(e) = put(lc, &api, certs).await? {
        return Ok(Err(e));
    }
    let note = format!(
        "issued certificates for brokers 0-{} from the cluster CA, valid until {} (Secret {})",
        replicas - 1,
        tls::rfc3339(ends),
        names.broker_certs
    );
    info!("{note}");
    publish(ctx, lc, EventType::Normal, "CertificatesIssued", &note).await;
    Ok(Ok(()))
}

fn owned(lc: &LogCluster, s: &Secret) -> bool {
    s.owner_references()
        .iter()
        .any(|o| Some(&o.uid) == lc.metadata.uid.as_ref())
}

fn user_ca(s: &Secret) -> bool {
    s.annotations().get(USER_CA_ANNOTATION).map(String::as_str) == Some("true")
}

fn foreign(name: &str) -> String {
    format!("Secret {name} exists and is not this LogCluster's; delete or rename it")
}

fn read_ca(s: &Secret) -> Option<Ca> {
    let data = s.data.as_ref()?;
    let text = |k: &str| String::from_utf8(data.get(k)?.0.clone()).ok();
    Some(Ca {
        key_pem: text(CA_KEY)?,
        cert_pem: text(CA_CERT)?,
    })
}

/// Names besides the cluster's own DNS names: each TLS listener's advertised host, and for a
/// NodePort listener that advertises its node's address, every node's addresses (a broker may
/// be scheduled on any node).
async fn extra_names(ctx: &Context, lc: &LogCluster) -> Result<Vec<String>, kube::Error> {
    let mut out = Vec::new();
    let mut nodes_needed = false;
    for l in lc.spec.listeners.iter().filter(|l| l.tls) {
        match (&l.advertised_host, l.type_) {
            (Some(h), _) => out.push(h.clone()),
            (None, ListenerType::NodePort) => nodes_needed = true,
            // Its pod DNS names and the client Service's are in every certificate.
            (None, ListenerType::Internal) => {}
        }
    }
    if nodes_needed {
        let api: Api<Node> = Api::all(ctx.client.clone());
        for n in api.list(&ListParams::default()).await? {
            let addresses = n.status.and_then(|s| s.addresses).unwrap_or_default();
            out.extend(
                addresses
                    .into_iter()
                    .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
                    .map(|a| a.address),
            );
        }
    }
    Ok(out)
}

fn secret(
    lc: &LogCluster,
    name: &str,
    data: BTreeMap<String, String>,
    annotations: Option<BTreeMap<String, String>>,
) -> Secret {
    let mut metadata = resources::meta(lc, name);
    metadata.annotations = annotations;
    Secret {
        metadata,
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k, ByteString(v.into_bytes())))
                .collect(),
        ),
        type_: Some("Opaque".into()),
        ..Secret::default()
    }
}

/// Creates `s`, or replaces the Secret of its name (only one this LogCluster owns) when its
/// data or the operator's annotations differ; others' annotations are kept.
async fn put(lc: &LogCluster, api: &Api<Secret>, mut s: Secret) -> Result<Outcome, ClusterError> {
    let name = s.name_any();
    let Some(old) = api.get_opt(&name).await? else {
        api.create(&PostParams::default(), &s).await?;
        return Ok(Ok(()));
    };
    if !owned(lc, &old) {
        return Ok(Err(foreign(&name)));
    }
    let ours = s.metadata.annotations.clone().unwrap_or_default();
    let mut annotations = old.metadata.annotations.clone().unwrap_or_default();
    let unchanged = ours.iter().all(|(k, v)| annotations.get(k) == Some(v));
    if old.data == s.data && unchanged {
        return Ok(Ok(()));
    }
    annotations.extend(ours);
    s.metadata.annotations = Some(annotations);
    s.metadata.resource_version = old.metadata.resource_version;
    api.replace(&name, &PostParams::default(), &s).await?;
    Ok(Ok(()))
}
