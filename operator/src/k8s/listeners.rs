//! External listeners (`spec.listeners`), pure: their validation, what they add to the broker
//! container, the per-broker NodePort Services, which Services a scale-down leaves stale, and
//! the bootstrap addresses reported in `status.listeners`.
//!
//! Broker N of a NodePort listener gets NodePort `nodePortBase+N`, set explicitly on its
//! Service, so the broker can advertise it itself: `--advertised-listener
//! NAME=$(NODE_IP):BASE+id` (the pod template is shared and `$(VAR)` cannot add).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{ContainerPort, Pod, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::resources::{self, HTTP_PORT, KAFKA_PORT};
use crate::crd::LogCluster;
use crate::crd::log_cluster::{ListenerSpec, ListenerStatus, ListenerType};

/// The in-cluster listener: `--listen`/`--advertised`, the client Service.
pub const INTERNAL: &str = broker::listener::DEFAULT_LISTENER;
/// Names a listener may not take: the internal one and the container's other port names.
const RESERVED: [&str; 3] = [INTERNAL, "kafka", "http"];
/// Label on a listener Service: the listener's name.
pub const LISTENER_LABEL: &str = "strand.dev/listener";
/// Label on a listener Service: the broker id it exposes.
pub const BROKER_LABEL: &str = "strand.dev/broker";
/// The label the StatefulSet controller puts on each pod with its own name.
const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The env var the broker's advertised address takes the node's IP from.
pub const NODE_IP_ENV: &str = "NODE_IP";
const NODE_PORT_RANGE: std::ops::RangeInclusive<i32> = 30000..=32767;

/// `<cluster>-<ordinal>-<listener>`.
pub fn service_name(lc: &LogCluster, ordinal: i32, listener: &str) -> String {
    format!("{}-{ordinal}-{listener}", lc.name_any())
}

/// Why `spec.listeners` cannot be applied, for a condition message; the CRD's schema and CEL
/// rules refuse most of this already, this also catches what they cannot see.
pub fn validate(lc: &LogCluster) -> Result<(), String> {
    let replicas = lc.spec.replicas.max(1);
    let mut names = BTreeSet::new();
    let mut ports = BTreeMap::from([(KAFKA_PORT, "kafka"), (HTTP_PORT, "http")]);
    let mut node_ports: Vec<(i32, i32, &str)> = Vec::new();
    for l in &lc.spec.listeners {
        let name = l.name.as_str();
        if RESERVED.contains(&name) {
            return Err(format!(
                "listener name {name:?} is reserved (internal, kafka and http are the broker's own)"
            ));
        }
        broker::listener::validate_name(name).map_err(|e| e.to_string())?;
        if !names.insert(name) {
            return Err(format!("listener {name:?} is given twice"));
        }
        if let Some(other) = ports.insert(l.port, name) {
            return Err(format!(
                "listener {name:?} port {} is already used by {other:?}",
                l.port
            ));
        }
        if !(1..=65535).contains(&l.port) {
            return Err(format!("listener {name:?} port {} is not a port", l.port));
        }
        let longest = service_name(lc, replicas - 1, name);
        // Only NodePort listeners get per-broker Services.
        if l.type_ == ListenerType::NodePort && longest.len() > 63 {
            return Err(format!(
                "listener {name:?}: Service name {longest:?} is longer than 63 characters; use a shorter listener name"
            ));
        }
        match l.type_ {
            ListenerType::NodePort => {
                let Some(base) = l.node_port_base else {
                    return Err(format!(
                        "NodePort listener {name:?} needs nodePortBase (broker N gets nodePortBase+N)"
                    ));
                };
                let last = base.checked_add(replicas - 1).unwrap_or(i32::MAX);
                if !NODE_PORT_RANGE.contains(&base) || !NODE_PORT_RANGE.contains(&last) {
                    return Err(format!(
                        "listener {name:?}: NodePorts {base}-{last} for {replicas} brokers are outside 30000-32767"
                    ));
                }
                if let Some((_, _, other)) =
                    node_ports.iter().find(|(b, e, _)| base <= *e && *b <= last)
                {
                    return Err(format!(
                        "listener {name:?}: NodePorts {base}-{last} overlap those of listener {other:?}"
                    ));
                }
                node_ports.push((base, last, name));
            }
            ListenerType::Internal => {
                if l.node_port_base.is_some() || l.advertised_host.is_some() {
                    return Err(format!(
                        "Internal listener {name:?} takes no nodePortBase or advertisedHost (brokers advertise their pod DNS names)"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The host a broker advertises on `l`: `advertisedHost`, else its node's IP.
fn advertised_host(l: &ListenerSpec) -> String {
    l.advertised_host
        .clone()
        .unwrap_or_else(|| format!("$({NODE_IP_ENV})"))
}

/// The broker flags of every extra listener.
pub fn broker_args(lc: &LogCluster) -> Vec<String> {
    let n = resources::names(lc);
    let ns = lc.namespace().unwrap_or_default();
    let mut args = Vec::new();
    for l in &lc.spec.listeners {
        let advertised = match (l.type_, l.node_port_base) {
            (ListenerType::NodePort, Some(base)) => format!("{}:{base}+id", advertised_host(l)),
            // Refused by `validate` before anything is applied.
            (ListenerType::NodePort, None) => continue,
            // Kubernetes expands $(POD_NAME) from the container's env.
            (ListenerType::Internal, _) => {
                format!("$(POD_NAME).{}.{ns}.svc:{}", n.headless, l.port)
            }
        };
        args.push(format!("--listener={}=0.0.0.0:{}", l.name, l.port));
        args.push(format!("--advertised-listener={}={advertised}", l.name));
    }
    args
}

/// The client Service's ports for the Internal listeners (bootstrap on `<cluster>:<port>`).
pub fn internal_service_ports(lc: &LogCluster) -> Vec<ServicePort> {
    lc.spec
        .listeners
        .iter()
        .filter(|l| l.type_ == ListenerType::Internal)
        .map(|l| ServicePort {
            name: Some(l.name.clone()),
            port: l.port,
            target_port: Some(IntOrString::String(l.name.clone())),
            ..ServicePort::default()
        })
        .collect()
}

/// Whether the broker container needs `NODE_IP` (a listener advertises its node's IP).
pub fn needs_node_ip(lc: &LogCluster) -> bool {
    lc.spec
        .listeners
        .iter()
        .any(|l| l.type_ == ListenerType::NodePort && l.advertised_host.is_none())
}

/// The container ports of every external listener, named after it.
pub fn container_ports(lc: &LogCluster) -> Vec<ContainerPort> {
    lc.spec
        .listeners
        .iter()
        .map(|l| ContainerPort {
            name: Some(l.name.clone()),
            container_port: l.port,
            ..ContainerPort::default()
        })
        .collect()
}

/// One NodePort Service per broker `0..replicas` and NodePort listener, each selecting that
/// broker's pod alone.
pub fn node_port_services(lc: &LogCluster, replicas: i32) -> Vec<Service> {
    let sts = resources::names(lc).statefulset;
    let mut out = Vec::new();
    for l in &lc.spec.listeners {
        let (ListenerType::NodePort, Some(base)) = (l.type_, l.node_port_base) else {
            continue;
        };
        for ordinal in 0..replicas {
            let mut metadata = resources::meta(lc, &service_name(lc, ordinal, &l.name));
            let labels = metadata.labels.get_or_insert_with(BTreeMap::new);
            labels.insert(LISTENER_LABEL.into(), l.name.clone());
            labels.insert(BROKER_LABEL.into(), ordinal.to_string());
            out.push(Service {
                metadata,
                spec: Some(ServiceSpec {
                    type_: Some("NodePort".into()),
                    selector: Some(BTreeMap::from([(
                        POD_NAME_LABEL.to_string(),
                        format!("{sts}-{ordinal}"),
                    )])),
                    // The broker must be reachable on its node before it is ready, like the
                    // headless Service, or a restarting broker's clients could not reconnect.
                    publish_not_ready_addresses: Some(true),
                    ports: Some(vec![ServicePort {
                        name: Some(l.name.clone()),
                        port: l.port,
                        target_port: Some(IntOrString::String(l.name.clone())),
                        node_port: Some(base + ordinal),
                        ..ServicePort::default()
                    }]),
                    ..ServiceSpec::default()
                }),
                ..Service::default()
            });
        }
    }
    out
}

/// Of the listener Services that exist (`existing`: their names and labels), the ones to
/// delete: brokers at or above `replicas`, or listeners no longer in the spec.
pub fn stale_services(
    lc: &LogCluster,
    replicas: i32,
    existing: &[(String, BTreeMap<String, String>)],
) -> Vec<String> {
    let wanted: BTreeSet<String> = node_port_services(lc, replicas)
        .into_iter()
        .map(|s| s.name_any())
        .collect();
    existing
        .iter()
        .filter(|(name, labels)| labels.contains_key(LISTENER_LABEL) && !wanted.contains(name))
        .map(|(name, _)| name.clone())
        .collect()
}

/// `status.listeners`: the internal bootstrap (the client Service) and, per external listener,
/// every broker `0..replicas` whose address is known (its pod has a node) as host:NodePort.
pub fn status(lc: &LogCluster, pods: &[Pod], replicas: i32) -> Vec<ListenerStatus> {
    let n = resources::names(lc);
    let ns = lc.namespace().unwrap_or_default();
    let mut out = vec![ListenerStatus {
        name: INTERNAL.into(),
        bootstrap_servers: format!("{}.{ns}.svc:{KAFKA_PORT}", n.client),
    }];
    let host_ip = |ordinal: i32| {
        let pod_name = format!("{}-{ordinal}", n.statefulset);
        pods.iter()
            .find(|p| p.name_any() == pod_name)
            .and_then(|p| p.status.as_ref()?.host_ip.clone())
            .filter(|ip| !ip.is_empty())
    };
    for l in &lc.spec.listeners {
        let base = match (l.type_, l.node_port_base) {
            (ListenerType::NodePort, Some(base)) => base,
            (ListenerType::NodePort, None) => continue,
            (ListenerType::Internal, _) => {
                out.push(ListenerStatus {
                    name: l.name.clone(),
                    bootstrap_servers: format!("{}.{ns}.svc:{}", n.client, l.port),
                });
                continue;
            }
        };
        let servers: Vec<String> = (0..replicas)
            .filter_map(|ordinal| {
                let host = l.advertised_host.clone().or_else(|| host_ip(ordinal))?;
                Some(format!("{host}:{}", base + ordinal))
            })
            .collect();
        out.push(ListenerStatus {
            name: l.name.clone(),
            bootstrap_servers: servers.join(","),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::LogClusterSpec;
    use crate::crd::log_cluster::StorageSpec;
    use k8s_openapi::api::core::v1::PodStatus;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn external(name: &str, port: i32, base: i32) -> ListenerSpec {
        ListenerSpec {
            name: name.into(),
            type_: ListenerType::NodePort,
            port,
            node_port_base: Some(base),
            advertised_host: None,
            tls: false,
            authentication: None,
        }
    }

    fn lc(replicas: i32, listeners: Vec<ListenerSpec>) -> LogCluster {
        let mut lc = LogCluster::new(
            "demo",
            LogClusterSpec {
                replicas,
                image: "strand/broker:0.1.0".into(),
                storage: StorageSpec {
                    size: Quantity("1Gi".into()),
                    storage_class_name: None,
                },
                resources: None,
                broker_config: BTreeMap::new(),
                rack_label_key: None,
                pod_template: None,
                paused: false,
                listeners,
                authorization: None,
            },
        );
        lc.metadata.namespace = Some("prod".into());
        lc.metadata.uid = Some("uid-1".into());
        lc
    }

    #[test]
    fn an_internal_listener_advertises_pod_names_and_bootstraps_on_the_client_service() {
        let internal = ListenerSpec {
            type_: ListenerType::Internal,
            node_port_base: None,
            ..external("secure", 9095, 0)
        };
        let l = lc(3, vec![external("external", 9094, 30100), internal.clone()]);
        validate(&l).unwrap();
        let args = broker_args(&l);
        assert!(
            args.contains(&"--listener=secure=0.0.0.0:9095".into()),
            "{args:?}"
        );
        assert!(
            args.contains(
                &"--advertised-listener=secure=$(POD_NAME).demo-brokers.prod.svc:9095".into()
            ),
            "{args:?}"
        );
        // No NodePort Services for it, and the node's address is not needed for it alone.
        assert_eq!(node_port_services(&l, 3).len(), 3);
        assert!(!needs_node_ip(&lc(3, vec![internal.clone()])));
        let ports: Vec<_> = resources::client_service(&l)
            .spec
            .unwrap()
            .ports
            .unwrap()
            .into_iter()
            .map(|p| (p.name.unwrap_or_default(), p.port))
            .collect();
        assert_eq!(
            ports,
            [("kafka".to_string(), 9092), ("secure".to_string(), 9095)]
        );
        let st = status(&l, &[], 3);
        assert_eq!(st[2].name, "secure");
        assert_eq!(st[2].bootstrap_servers, "demo.prod.svc:9095");
        // A NodePort base or an advertised host makes no sense for it.
        let mut bad = internal.clone();
        bad.advertised_host = Some("kafka.example.com".into());
        assert!(
            validate(&lc(3, vec![bad]))
                .unwrap_err()
                .contains("Internal listener")
        );
    }

    #[test]
    fn one_node_port_service_per_broker_selecting_its_pod() {
        let l = lc(3, vec![external("external", 9094, 30100)]);
        validate(&l).unwrap();
        let svcs = node_port_services(&l, 3);
        let names: Vec<_> = svcs.iter().map(|s| s.name_any()).collect();
        assert_eq!(
            names,
            ["demo-0-external", "demo-1-external", "demo-2-external"]
        );
        let s1 = &svcs[1];
        let owner = &s1.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("LogCluster", "demo")
        );
        let spec = s1.spec.as_ref().unwrap();
        assert_eq!(spec.type_.as_deref(), Some("NodePort"));
        assert_eq!(
            spec.selector.as_ref().unwrap()[POD_NAME_LABEL],
            "demo-1",
            "only broker 1's pod"
        );
        let port = &spec.ports.as_ref().unwrap()[0];
        assert_eq!((port.port, port.node_port), (9094, Some(30101)));
        assert_eq!(
            port.target_port,
            Some(IntOrString::String("external".into()))
        );
        let labels = s1.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[LISTENER_LABEL], "external");
        assert_eq!(labels[BROKER_LABEL], "1");
    }

    #[test]
    fn the_broker_computes_its_own_node_port() {
        let mut ext = external("external", 9094, 30100);
        let l = lc(3, vec![ext.clone()]);
        assert_eq!(
            broker_args(&l),
            [
                "--listener=external=0.0.0.0:9094",
                "--advertised-listener=external=$(NODE_IP):30100+id"
            ]
        );
        assert!(needs_node_ip(&l));
        ext.advertised_host = Some("kafka.example.com".into());
        let l = lc(3, vec![ext]);
        assert_eq!(
            broker_args(&l)[1],
            "--advertised-listener=external=kafka.example.com:30100+id"
        );
        assert!(!needs_node_ip(&l));
        // The flags the broker gets are ones it accepts, and give broker 2 its NodePort.
        let args = broker_args(&l);
        let flag = |prefix: &str| {
            args.iter()
                .find_map(|a| a.strip_prefix(prefix))
                .unwrap()
                .to_string()
        };
        let resolved =
            broker::listener::resolve(&[flag("--listener=")], &[flag("--advertised-listener=")], 2)
                .unwrap();
        assert_eq!(resolved[0].advertised.port, 30102);
        assert_eq!(resolved[0].bind.port(), 9094);
    }

    #[test]
    fn invalid_listeners_are_refused_with_the_reason() {
        let refused = |ls: Vec<ListenerSpec>, replicas: i32, want: &str| {
            let e = validate(&lc(replicas, ls)).unwrap_err();
            assert!(e.contains(want), "{e:?} should say {want:?}");
        };
        refused(
            vec![external("a", 9094, 30100), external("a", 9095, 30200)],
            3,
            "twice",
        );
        refused(vec![external("internal", 9094, 30100)], 3, "reserved");
        refused(vec![external("kafka", 9094, 30100)], 3, "reserved");
        refused(vec![external("Ext", 9094, 30100)], 3, "lowercase");
        refused(vec![external("a", 9092, 30100)], 3, "already used");
        refused(
            vec![external("a", 9094, 30100), external("b", 9094, 30200)],
            3,
            "already used",
        );
        refused(vec![external("a", 9094, 32766)], 3, "outside 30000-32767");
        refused(vec![external("a", 9094, 29999)], 1, "outside 30000-32767");
        refused(
            vec![external("a", 9094, 30100), external("b", 9095, 30102)],
            3,
            "overlap",
        );
        let mut no_base = external("a", 9094, 30100);
        no_base.node_port_base = None;
        refused(vec![no_base], 3, "needs nodePortBase");
        validate(&lc(3, vec![external("a", 9094, 32765)])).unwrap();
        validate(&lc(
            3,
            vec![external("a", 9094, 30100), external("b", 9095, 30103)],
        ))
        .unwrap();
    }

    #[test]
    fn scale_down_and_removed_listeners_leave_stale_services() {
        let l = lc(2, vec![external("external", 9094, 30100)]);
        let svc = |name: &str, listener: Option<&str>| {
            let mut labels =
                BTreeMap::from([("strand.dev/cluster".to_string(), "demo".to_string())]);
            if let Some(li) = listener {
                labels.insert(LISTENER_LABEL.into(), li.into());
            }
            (name.to_string(), labels)
        };
        let existing = vec![
            svc("demo", None),
            svc("demo-brokers", None),
            svc("demo-0-external", Some("external")),
            svc("demo-1-external", Some("external")),
            svc("demo-2-external", Some("external")),
            svc("demo-0-old", Some("old")),
        ];
        assert_eq!(
            stale_services(&l, 2, &existing),
            ["demo-2-external", "demo-0-old"]
        );
    }

    #[test]
    fn status_lists_each_listeners_bootstrap() {
        let l = lc(3, vec![external("external", 9094, 30100)]);
        let pod = |ordinal: i32, ip: Option<&str>| Pod {
            metadata: kube::api::ObjectMeta {
                name: Some(format!("demo-{ordinal}")),
                ..Default::default()
            },
            status: Some(PodStatus {
                host_ip: ip.map(String::from),
                ..Default::default()
            }),
            ..Default::default()
        };
        // Broker 1's pod is not scheduled yet.
        let pods = [
            pod(0, Some("10.0.0.1")),
            pod(1, None),
            pod(2, Some("10.0.0.3")),
        ];
        let s = status(&l, &pods, 3);
        assert_eq!(
            s,
            [
                ListenerStatus {
                    name: "internal".into(),
                    bootstrap_servers: "demo.prod.svc:9092".into()
                },
                ListenerStatus {
                    name: "external".into(),
                    bootstrap_servers: "10.0.0.1:30100,10.0.0.3:30102".into()
                }
            ]
        );
    }
}
