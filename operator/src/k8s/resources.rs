//! What a LogCluster becomes in Kubernetes, as pure functions of the resource: the brokers'
//! StatefulSet, a headless Service (stable DNS per broker for replication and clients), a client
//! Service (bootstrap), a PodDisruptionBudget, the broker ConfigMap and ServiceAccount, and a new
//! cluster's secret. The
//! reconciler applies them with server-side apply; tests check them without an API server.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar,
    EnvVarSource, HTTPGetAction, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, SeccompProfile, Secret, SecretVolumeSource, SecurityContext, Service,
    ServiceAccount, ServicePort, ServiceSpec, Volume, VolumeMount, VolumeResourceRequirements,
    WeightedPodAffinityTerm,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use crate::crd::LogCluster;

pub const KAFKA_PORT: i32 = 9092;
pub const HTTP_PORT: i32 = 8080;
/// Where the broker's volume is mounted, and its data directory inside it (a subdirectory, so
/// a filesystem's `lost+found` is never mistaken for a partition).
const DATA_MOUNT: &str = "/var/lib/strand";
const CONFIG_MOUNT: &str = "/etc/strand";
const CONFIG_FILE: &str = "broker.properties";
/// Annotation carrying a hash of the broker config: a config change changes the pod template,
/// hence the StatefulSet revision, hence a roll.
pub const CONFIG_HASH_ANNOTATION: &str = "strand.dev/config-hash";
/// Label every object of a cluster carries, with the LogCluster's name.
pub const CLUSTER_LABEL: &str = "strand.dev/cluster";
/// The pod-index label the StatefulSet controller sets (Kubernetes 1.28+): the broker id.
const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// Everything the builders need besides the resource itself.
#[derive(Debug, Clone)]
pub struct Context {
    /// Base URL of the operator's controller API as brokers reach it, e.g.
    /// `http://strand-operator-controller.strand-system.svc:9190`.
    pub controller_url: String,
    /// Cluster id (the controller's; stamped into every broker volume).
    pub cluster_id: String,
    /// Brokers get the cluster secret (`Names::cluster_secret`): its fingerprint, stamped on
    /// the pod template so the operator knows which value each broker started with.
    pub cluster_secret: Option<String>,
}

/// The key of the cluster secret in its Secret, and where brokers find it.
pub const CLUSTER_SECRET_KEY: &str = "secret";
const CLUSTER_SECRET_MOUNT: &str = "/etc/strand/cluster-secret";

/// A new cluster's secret: brokers authenticate to each other (SASL SCRAM) and to the
/// controller with it. Owned by the LogCluster, so it goes with it.
pub fn cluster_secret(lc: &LogCluster, value: &str) -> Secret {
    Secret {
        metadata: meta(lc, &names(lc).cluster_secret),
        string_data: Some(BTreeMap::from([(
            CLUSTER_SECRET_KEY.to_string(),
            value.to_string(),
        )])),
        type_: Some("Opaque".into()),
        ..Secret::default()
    }
}

/// Object names of a cluster's children.
pub struct Names {
    pub statefulset: String,
    pub headless: String,
    pub client: String,
    pub config: String,
    pub service_account: String,
    pub pdb: String,
    /// The Secret holding the cluster secret (`broker::auth`).
    pub cluster_secret: String,
    /// TLS listeners' Secrets (`k8s::tls`): the CA with its key, the CA certificate alone
    /// (for clients), and each broker's key and certificate.
    pub cluster_ca: String,
    pub cluster_ca_cert: String,
    pub broker_certs: String,
}

pub fn names(lc: &LogCluster) -> Names {
    let n = lc.name_any();
    Names {
        statefulset: n.clone(),
        headless: format!("{n}-brokers"),
        client: n.clone(),
        config: format!("{n}-config"),
        service_account: format!("{n}-broker"),
        cluster_secret: format!("{n}-cluster-secret"),
        cluster_ca: format!("{n}-cluster-ca"),
        cluster_ca_cert: format!("{n}-cluster-ca-cert"),
        broker_certs: format!("{n}-broker-certs"),
        pdb: n,
    }
}

/// Labels selecting a cluster's broker pods (and stamped on every child).
pub fn selector_labels(lc: &LogCluster) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "strand-broker".into()),
        (CLUSTER_LABEL.into(), lc.name_any()),
    ])
}

fn labels(lc: &LogCluster) -> BTreeMap<String, String> {
    let mut l = selector_labels(lc);
    l.insert("app.kubernetes.io/instance".into(), lc.name_any());
    l.insert(
        "app.kubernetes.io/managed-by".into(),
        "strand-operator".into(),
    );
    l.insert("app.kubernetes.io/component".into(), "broker".into());
    l
}

fn owner(lc: &LogCluster) -> Vec<OwnerReference> {
    lc.controller_owner_ref(&()).into_iter().collect()
}

/// A child's metadata: namespace, the cluster's labels, owned by the LogCluster.
pub(super) fn meta(lc: &LogCluster, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: lc.namespace(),
        labels: Some(labels(lc)),
        owner_references: Some(owner(lc)),
        ..ObjectMeta::default()
    }
}

/// The controller URL one cluster's brokers use: the operator serves each LogCluster under
/// `/clusters/<namespace>/<name>`.
pub fn cluster_controller_url(lc: &LogCluster, ctx: &Context) -> String {
    format!(
        "{}/clusters/{}/{}",
        ctx.controller_url.trim_end_matches('/'),
        lc.namespace().unwrap_or_default(),
        lc.name_any()
    )
}

/// `broker.properties`: the user's broker config, in Kafka's properties format, sorted.
pub fn broker_properties(lc: &LogCluster) -> String {
    let mut out = String::from("# Rendered by the Strand operator from spec.brokerConfig.\n");
    for (k, v) in &lc.spec.broker_config {
        out.push_str(&format!("{k}={v}\n"));
    }
    out
}

/// FNV-1a of the rendered config: stable across operator versions and processes (unlike
/// `DefaultHasher`), so an operator upgrade does not roll every cluster.
pub fn config_hash(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

pub fn config_map(lc: &LogCluster) -> ConfigMap {
    ConfigMap {
        metadata: meta(lc, &names(lc).config),
        data: Some(BTreeMap::from([(
            CONFIG_FILE.to_string(),
            broker_properties(lc),
        )])),
        ..ConfigMap::default()
    }
}

pub fn service_account(lc: &LogCluster) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(lc, &names(lc).service_account),
        // Brokers never call the Kubernetes API.
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}

fn kafka_port() -> ServicePort {
    ServicePort {
        name: Some("kafka".into()),
        port: KAFKA_PORT,
        target_port: Some(IntOrString::String("kafka".into())),
        ..ServicePort::default()
    }
}

/// Headless: one DNS name per broker pod, published before the pod is ready so that a
/// restarting broker can be reached by its followers and the controller while it catches up.
pub fn headless_service(lc: &LogCluster) -> Service {
    Service {
        metadata: meta(lc, &names(lc).headless),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(lc)),
            ports: Some(vec![kafka_port()]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// Bootstrap for clients: any ready broker answers Metadata with every broker's own address.
pub fn client_service(lc: &LogCluster) -> Service {
    Service {
        metadata: meta(lc, &names(lc).client),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(lc)),
            ports: Some(
                std::iter::once(kafka_port())
                    .chain(super::listeners::internal_service_ports(lc))
                    .collect(),
            ),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// At most one broker down by voluntary disruption (node drains), like the operator's own rolls.
pub fn pod_disruption_budget(lc: &LogCluster) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(lc, &names(lc).pdb),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(lc)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }
}

fn env_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

/// Without user affinity, prefer one broker per node: losing a node then costs one replica.
fn default_affinity(lc: &LogCluster) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        label_selector: Some(LabelSelector {
                            match_labels: Some(selector_labels(lc)),
                            ..LabelSelector::default()
                        }),
                        topology_key: "kubernetes.io/hostname".into(),
                        ..PodAffinityTerm::default()
                    },
                },
            ]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    }
}

pub fn statefulset(lc: &LogCluster, ctx: &Context) -> StatefulSet {
    let n = names(lc);
    let ns = lc.namespace().unwrap_or_default();
    let overrides = lc.spec.pod_template.clone().unwrap_or_default();
    let mut pod_labels = overrides.labels.clone();
    pod_labels.extend(labels(lc));
    let mut annotations = overrides.annotations.clone();
    annotations.insert(
        CONFIG_HASH_ANNOTATION.into(),
        config_hash(&broker_properties(lc)),
    );
    let mut args = vec![
        format!("--data-dir={DATA_MOUNT}/data"),
        format!("--listen=0.0.0.0:{KAFKA_PORT}"),
        format!("--http=0.0.0.0:{HTTP_PORT}"),
        // Kubernetes expands $(VAR) from the container's env.
        format!(
            "--advertised=$(POD_NAME).{}.{ns}.svc:{KAFKA_PORT}",
            n.headless
        ),
        format!("--controller={}", cluster_controller_url(lc, ctx)),
        format!("--config-file={CONFIG_MOUNT}/{CONFIG_FILE}"),
        "--log-format=json".into(),
    ];
    args.extend(super::listeners::broker_args(lc));
    args.extend(super::security::broker_args(lc));
    let mut env = vec![
        env_field("POD_NAME", "metadata.name"),
        // Followers dial the pod's IP: its DNS name may not be published yet when they first
        // look (a broker registers as soon as it starts), and a resolver caches a miss.
        env_field("STRAND_INTER_BROKER_HOST", "status.podIP"),
        env_field(
            "STRAND_NODE_ID",
            &format!("metadata.labels['{POD_INDEX_LABEL}']"),
        ),
        EnvVar {
            name: "STRAND_CLUSTER_ID".into(),
            value: Some(ctx.cluster_id.clone()),
            ..EnvVar::default()
        },
    ];
    if super::listeners::needs_node_ip(lc) {
        env.push(env_field(super::listeners::NODE_IP_ENV, "status.hostIP"));
    }
    let mut mounts = vec![
        VolumeMount {
            name: "data".into(),
            mount_path: DATA_MOUNT.into(),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "config".into(),
            mount_path: CONFIG_MOUNT.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
    ];
    let mut volumes = vec![Volume {
        name: "config".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: n.config.clone(),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }];
    if let Some(fingerprint) = &ctx.cluster_secret {
        annotations.insert(
            super::cluster_secret::FINGERPRINT_ANNOTATION.into(),
            fingerprint.clone(),
        );
        env.push(EnvVar {
            name: "STRAND_CLUSTER_SECRET_FILE".into(),
            value: Some(format!("{CLUSTER_SECRET_MOUNT}/{CLUSTER_SECRET_KEY}")),
            ..EnvVar::default()
        });
        mounts.push(VolumeMount {
            name: "cluster-secret".into(),
            mount_path: CLUSTER_SECRET_MOUNT.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        volumes.push(Volume {
            name: "cluster-secret".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(n.cluster_secret.clone()),
                // Readable by the broker's group (the pod's fsGroup) only.
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    if super::security::tls(lc) {
        mounts.push(VolumeMount {
            name: "broker-certs".into(),
            mount_path: super::security::TLS_MOUNT.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        volumes.push(Volume {
            name: "broker-certs".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(n.broker_certs.clone()),
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    let mut ports = vec![
        ContainerPort {
            name: Some("kafka".into()),
            container_port: KAFKA_PORT,
            ..ContainerPort::default()
        },
        ContainerPort {
            name: Some("http".into()),
            container_port: HTTP_PORT,
            ..ContainerPort::default()
        },
    ];
    ports.extend(super::listeners::container_ports(lc));
    let container = Container {
        name: "broker".into(),
        image: Some(lc.spec.image.clone()),
        args: Some(args),
        env: Some(env),
        ports: Some(ports),
        readiness_probe: Some(http_probe("/readyz", 5, 3)),
        liveness_probe: Some(http_probe("/healthz", 10, 6)),
        resources: lc.spec.resources.clone(),
        volume_mounts: Some(mounts),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };
    let pod = PodSpec {
        service_account_name: Some(n.service_account.clone()),
        automount_service_account_token: Some(false),
        // Controlled shutdown moves leadership away and flushes logs before exit.
        termination_grace_period_seconds: Some(60),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(65532),
            run_as_group: Some(65532),
            fs_group: Some(65532),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        containers: vec![container],
        volumes: Some(volumes),
        node_selector: (!overrides.node_selector.is_empty()).then_some(overrides.node_selector),
        tolerations: (!overrides.tolerations.is_empty()).then_some(overrides.tolerations),
        affinity: Some(overrides.affinity.unwrap_or_else(|| default_affinity(lc))),
        ..PodSpec::default()
    };
    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("data".into()),
            labels: Some(selector_labels(lc)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: lc.spec.storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".into(),
                    lc.spec.storage.size.clone(),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    };
    StatefulSet {
        metadata: meta(lc, &n.statefulset),
        spec: StatefulSetSpec {
            replicas: Some(lc.spec.replicas),
            service_name: Some(n.headless.clone()),
            // Brokers start together (no ordering needed); the operator owns every restart.
            pod_management_policy: Some("Parallel".into()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".into()),
                ..StatefulSetUpdateStrategy::default()
            }),
            // Data outlives the cluster resource and scale-down: deleting logs is the user's call.
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Retain".into()),
                    when_scaled: Some("Retain".into()),
                },
            ),
            selector: LabelSelector {
                match_labels: Some(selector_labels(lc)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            volume_claim_templates: Some(vec![claim]),
            ..StatefulSetSpec::default()
        },
        ..StatefulSet::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::LogClusterSpec;
    use crate::crd::log_cluster::StorageSpec;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn lc() -> LogCluster {
        let mut lc = LogCluster::new(
            "demo",
            LogClusterSpec {
                replicas: 3,
                image: "strand/broker:0.1.0".into(),
                storage: StorageSpec {
                    size: Quantity("1Gi".into()),
                    storage_class_name: Some("fast".into()),
                },
                resources: None,
                broker_config: BTreeMap::from([(
                    "min.insync.replicas".to_string(),
                    "2".to_string(),
                )]),
                rack_label_key: None,
                pod_template: None,
                paused: false,
                listeners: Vec::new(),
                authorization: None,
            },
        );
        lc.metadata.namespace = Some("prod".into());
        lc.metadata.uid = Some("uid-1".into());
        lc
    }

    fn ctx() -> Context {
        Context {
            cluster_secret: Some("f1".into()),
            controller_url: "http://op.strand.svc:9190/".into(),
            cluster_id: "cid".into(),
        }
    }

    #[test]
    fn brokers_get_the_cluster_secret_only_when_it_exists() {
        let template = |secret: Option<&str>| {
            let ctx = Context {
                cluster_secret: secret.map(String::from),
                ..ctx()
            };
            statefulset(&lc(), &ctx).spec.template
        };
        let annotation = |t: &PodTemplateSpec| {
            t.metadata
                .as_ref()
                .unwrap()
                .annotations
                .as_ref()
                .unwrap()
                .get(super::super::cluster_secret::FINGERPRINT_ANNOTATION)
                .cloned()
        };
        let t = template(Some("f1"));
        assert_eq!(annotation(&t).as_deref(), Some("f1"));
        let with = t.spec.unwrap();
        let volume = with
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "cluster-secret")
            .expect("a cluster-secret volume");
        let source = volume.secret.as_ref().unwrap();
        assert_eq!(source.secret_name.as_deref(), Some("demo-cluster-secret"));
        assert_eq!(source.default_mode, Some(0o440));
        let c = &with.containers[0];
        let env = c.env.as_ref().unwrap();
        let file = env
            .iter()
            .find(|e| e.name == "STRAND_CLUSTER_SECRET_FILE")
            .and_then(|e| e.value.clone())
            .unwrap();
        let mount = c
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == "cluster-secret")
            .unwrap();
        assert_eq!(file, format!("{}/{CLUSTER_SECRET_KEY}", mount.mount_path));
        assert_eq!(mount.read_only, Some(true));

        let t = template(None);
        assert_eq!(annotation(&t), None);
        let without = t.spec.unwrap();
        assert!(without.volumes.unwrap().iter().all(|v| v.secret.is_none()));
        let c = &without.containers[0];
        assert!(
            c.env
                .as_ref()
                .unwrap()
                .iter()
                .all(|e| e.name != "STRAND_CLUSTER_SECRET_FILE")
        );

        let secret = cluster_secret(&lc(), "value");
        assert_eq!(secret.metadata.name.as_deref(), Some("demo-cluster-secret"));
        assert_eq!(
            secret.metadata.owner_references.unwrap()[0].kind,
            "LogCluster"
        );
        assert_eq!(secret.string_data.unwrap()[CLUSTER_SECRET_KEY], "value");
    }

    #[test]
    fn statefulset_is_ondelete_owned_and_points_at_the_controller() {
        let sts = statefulset(&lc(), &ctx());
        let owner = &sts.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.controller),
            ("LogCluster", "demo", Some(true))
        );
        let spec = sts.spec;
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(spec.service_name.as_deref(), Some("demo-brokers"));
        assert_eq!(
            spec.update_strategy.unwrap().type_.as_deref(),
            Some("OnDelete")
        );
        let pod = spec.template.spec.unwrap();
        let args = pod.containers[0].args.clone().unwrap();
        assert!(args.contains(&"--controller=http://op.strand.svc:9190/clusters/prod/demo".into()));
        assert!(args.contains(&"--advertised=$(POD_NAME).demo-brokers.prod.svc:9092".into()));
        let env = pod.containers[0].env.clone().unwrap();
        let field = |name: &str| {
            env.iter()
                .find(|e| e.name == name)
                .and_then(|e| e.value_from.as_ref()?.field_ref.as_ref())
                .map(|f| f.field_path.clone())
        };
        assert_eq!(
            field("STRAND_INTER_BROKER_HOST").as_deref(),
            Some("status.podIP")
        );
        let node_id = env.iter().find(|e| e.name == "STRAND_NODE_ID").unwrap();
        assert_eq!(
            node_id
                .value_from
                .as_ref()
                .unwrap()
                .field_ref
                .as_ref()
                .unwrap()
                .field_path,
            "metadata.labels['apps.kubernetes.io/pod-index']"
        );
        let claim = &spec.volume_claim_templates.unwrap()[0];
        let claim_spec = claim.spec.as_ref().unwrap();
        assert_eq!(claim_spec.storage_class_name.as_deref(), Some("fast"));
    }

    #[test]
    fn an_external_listener_reaches_the_broker_container() {
        use crate::crd::log_cluster::{ListenerSpec, ListenerType};
        let mut l = lc();
        l.spec.listeners = vec![ListenerSpec {
            name: "external".into(),
            type_: ListenerType::NodePort,
            port: 9094,
            node_port_base: Some(30100),
            advertised_host: None,
            tls: false,
            authentication: None,
        }];
        let pod = statefulset(&l, &ctx()).spec.template.spec.unwrap();
        let c = &pod.containers[0];
        let args = c.args.clone().unwrap();
        assert!(args.contains(&"--listener=external=0.0.0.0:9094".into()));
        assert!(args.contains(&"--advertised-listener=external=$(NODE_IP):30100+id".into()));
        let env = c.env.clone().unwrap();
        let node_ip = env.iter().find(|e| e.name == "NODE_IP").unwrap();
        let field = node_ip.value_from.as_ref().unwrap().field_ref.as_ref();
        assert_eq!(field.unwrap().field_path, "status.hostIP");
        let ports = c.ports.clone().unwrap();
        assert!(
            ports
                .iter()
                .any(|p| p.name.as_deref() == Some("external") && p.container_port == 9094)
        );
        // Without listeners the container is as before.
        let plain = statefulset(&lc(), &ctx()).spec.template.spec.unwrap();
        let env = plain.containers[0].env.clone().unwrap();
        assert!(env.iter().all(|e| e.name != "NODE_IP"));
    }

    #[test]
    fn a_config_change_changes_the_pod_template() {
        let a = lc();
        let mut b = lc();
        b.spec
            .broker_config
            .insert("retention.ms".into(), "1000".into());
        let hash = |lc: &LogCluster| {
            statefulset(lc, &ctx())
                .spec
                .template
                .metadata
                .unwrap()
                .annotations
                .unwrap()[CONFIG_HASH_ANNOTATION]
                .clone()
        };
        assert_ne!(hash(&a), hash(&b));
        assert_eq!(hash(&a), hash(&lc()), "same spec, same hash");
        assert!(broker_properties(&b).contains("retention.ms=1000\n"));
    }

    #[test]
    fn user_labels_never_override_the_selector() {
        let mut l = lc();
        l.spec.pod_template = Some(crate::crd::log_cluster::PodOverrides {
            labels: BTreeMap::from([(CLUSTER_LABEL.to_string(), "other".to_string())]),
            ..Default::default()
        });
        let sts = statefulset(&l, &ctx());
        let labels = sts.spec.template.metadata.unwrap().labels.unwrap();
        assert_eq!(labels[CLUSTER_LABEL], "demo");
    }

    #[test]
    fn services_select_the_brokers() {
        let l = lc();
        let h = headless_service(&l).spec.unwrap();
        assert_eq!(h.cluster_ip.as_deref(), Some("None"));
        assert_eq!(h.publish_not_ready_addresses, Some(true));
        assert_eq!(h.selector, Some(selector_labels(&l)));
        assert_eq!(
            client_service(&l).spec.unwrap().selector,
            Some(selector_labels(&l))
        );
        assert_eq!(
            pod_disruption_budget(&l).spec.unwrap().max_unavailable,
            Some(IntOrString::Int(1))
        );
    }
}
