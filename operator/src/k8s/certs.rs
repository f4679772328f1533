//! The glue of [`super::tls`]: the cluster CA and the brokers' certificates of a LogCluster with
//! a `tls: true` listener, made and kept current in their Secrets before the StatefulSet that
//! mounts them is applied.
//!
//! A CA Secret that exists without being this LogCluster's (made by the user, with `ca.key`
//! and `ca.crt`) is the user's CA: the operator signs with it and never replaces it.

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

/// Makes or refreshes the three Secrets when a listener has TLS; nothing otherwise (Secrets
/// made earlier stay until the LogCluster goes, which takes them with it).
pub async fn ensure(
    ctx: &Context,
    lc: &LogCluster,
    ns: &str,
    names: &Names,
    replicas: i32,
) -> Result<(), ClusterError> {
    if !super::security::tls(lc) {
        return Ok(());
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let label = format!("{ns}/{}", lc.name_any());
    let now = OffsetDateTime::now_utc();
    let ca = match api.get_opt(&names.cluster_ca).await? {
        Some(s) => read_ca(&s).ok_or_else(|| {
            ClusterError::Secret(format!(
                "Secret {} has no {CA_KEY} and {CA_CERT}; delete it (the operator makes a CA) or put the CA's PEM key and certificate there",
                names.cluster_ca
            ))
        })?,
        None => {
            let ca = tls::new_ca(&label, now).map_err(|e| ClusterError::Secret(e.to_string()))?;
            let data = BTreeMap::from([
                (CA_KEY.to_string(), ca.key_pem.clone()),
                (CA_CERT.to_string(), ca.cert_pem.clone()),
            ]);
            api.create(&PostParams::default(), &secret(lc, &names.cluster_ca, data, None))
                .await?;
            info!(secret = %names.cluster_ca, "made the cluster CA");
            ca
        }
    };
    let ca_cert = BTreeMap::from([(CA_CERT.to_string(), ca.cert_pem.clone())]);
    put(&api, secret(lc, &names.cluster_ca_cert, ca_cert, None)).await?;

    let extra = extra_names(ctx, lc).await;
    let wanted: BTreeMap<String, Vec<String>> = (0..replicas)
        .map(|i| {
            let pod = format!("{}-{i}", names.statefulset);
            let n = tls::broker_names(&pod, &names.headless, &names.client, ns, &extra);
            (pod, n)
        })
        .collect();
    let issued_for = tls::issued_for(&ca, &wanted);
    let current = api.get_opt(&names.broker_certs).await?;
    if !tls::must_issue(
        current
            .as_ref()
            .and_then(|s| s.metadata.annotations.as_ref()),
        &issued_for,
        now,
    ) {
        return Ok(());
    }
    let mut data = BTreeMap::new();
    for (pod, pod_names) in &wanted {
        let pem = tls::issue(&ca, &label, pod, pod_names, now)
            .map_err(|e| ClusterError::Secret(e.to_string()))?;
        data.insert(format!("{pod}.pem"), pem);
    }
    let annotations = BTreeMap::from([
        (tls::ISSUED_FOR_ANNOTATION.to_string(), issued_for),
        (tls::NOT_AFTER_ANNOTATION.to_string(), tls::not_after(now)),
    ]);
    put(
        &api,
        secret(lc, &names.broker_certs, data, Some(annotations)),
    )
    .await?;
    let note = format!(
        "issued certificates for brokers 0-{} from the cluster CA (Secret {})",
        replicas - 1,
        names.broker_certs
    );
    info!("{note}");
    publish(ctx, lc, EventType::Normal, "CertificatesIssued", &note).await;
    Ok(())
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
async fn extra_names(ctx: &Context, lc: &LogCluster) -> Vec<String> {
    let mut out = Vec::new();
    let mut nodes_needed = false;
    for l in lc.spec.listeners.iter().filter(|l| l.tls) {
        match (&l.advertised_host, l.type_) {
            (Some(h), _) => out.push(h.clone()),
            (None, ListenerType::NodePort) => nodes_needed = true,
        }
    }
    if nodes_needed {
        let api: Api<Node> = Api::all(ctx.client.clone());
        match api.list(&ListParams::default()).await {
            Ok(nodes) => {
                for n in nodes {
                    let addresses = n.status.and_then(|s| s.addresses).unwrap_or_default();
                    out.extend(
                        addresses
                            .into_iter()
                            .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
                            .map(|a| a.address),
                    );
                }
            }
            // Most likely RBAC (the chart grants list on nodes for this): the certificates
            // then name the cluster's DNS names only, and clients checking host names fail.
            Err(e) => tracing::warn!(error = %e, "cannot list the nodes' addresses"),
        }
    }
    out
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

/// Creates `s`, or replaces the Secret of its name when its data or annotations differ.
async fn put(api: &Api<Secret>, mut s: Secret) -> Result<(), ClusterError> {
    let name = s.name_any();
    match api.get_opt(&name).await? {
        None => {
            api.create(&PostParams::default(), &s).await?;
        }
        Some(old) => {
            if old.data == s.data && old.metadata.annotations == s.metadata.annotations {
                return Ok(());
            }
            s.metadata.resource_version = old.metadata.resource_version;
            api.replace(&name, &PostParams::default(), &s).await?;
        }
    }
    Ok(())
}
