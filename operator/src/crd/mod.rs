//! Strand's custom resources, API group `strand.dev`, version `v1alpha1` (fields may still
//! change; a `v1` will come with a conversion path). One file per resource: `log_cluster`
//! (`LogCluster`, short name `lc`), `replicated_topic` (`ReplicatedTopic`, short name `rt`) and
//! `log_user` (`LogUser`, short name `lu`);
//! `condition` holds the status conditions both share. This module also renders the CRD YAML
//! that `crdgen` writes into `crds/`.

pub mod condition;
pub mod log_cluster;
pub mod log_user;
pub mod replicated_topic;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use condition::{
    Condition, ConditionStatus, ConditionType, find_condition, is_true, set_condition,
};
pub use log_cluster::{LogCluster, LogClusterSpec, LogClusterStatus};
pub use log_user::{LogUser, LogUserSpec, LogUserStatus};
pub use replicated_topic::{ReplicatedTopic, ReplicatedTopicSpec, ReplicatedTopicStatus};

/// API group of every Strand resource.
pub const GROUP: &str = "strand.dev";
/// API version of every Strand resource.
pub const VERSION: &str = "v1alpha1";

/// Where the generated CRDs live, relative to the repository root: the install directory and
/// the Helm chart's copy.
pub const CRD_DIRS: [&str; 2] = ["crds", "charts/strand/crds"];

/// The command that regenerates both, run from the repository root.
pub const REGENERATE: &str = "cargo run -p operator --bin crdgen -- crds/ charts/strand/crds/";

#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    #[error("cannot render CRD {name} as YAML: {source}")]
    Yaml {
        name: String,
        #[source]
        source: serde_saphyr::SerializeError,
    },
}

/// Every CRD, in a fixed order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![LogCluster::crd(), ReplicatedTopic::crd(), LogUser::crd()]
}

/// One file of `crds/`: its name (`<plural>.yaml`) and contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrdFile {
    pub file_name: String,
    pub yaml: String,
}

/// The files of `crds/`, one per CRD, each with a header naming the command that made it.
pub fn crd_files() -> Result<Vec<CrdFile>, CrdError> {
    crds()
        .iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let body = serde_saphyr::to_string(crd).map_err(|source| CrdError::Yaml {
                name: name.clone(),
                source,
            })?;
            Ok(CrdFile {
                file_name: format!("{}.yaml", crd.spec.names.plural),
                yaml: format!(
                    "# Generated from operator/src/crd by `{REGENERATE}`. Do not edit.\n{body}"
                ),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn schema_of(crd: &CustomResourceDefinition) -> Value {
        let v = serde_json::to_value(crd).unwrap();
        v["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
    }

    fn rules(schema: &Value) -> Vec<String> {
        schema["x-kubernetes-validations"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|r| r["rule"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn names_group_version_and_short_names() {
        for (crd, plural, short) in [
            (LogCluster::crd(), "logclusters", "lc"),
            (ReplicatedTopic::crd(), "replicatedtopics", "rt"),
            (LogUser::crd(), "logusers", "lu"),
        ] {
            assert_eq!(crd.spec.group, GROUP);
            assert_eq!(crd.spec.versions[0].name, VERSION);
            assert_eq!(crd.spec.names.plural, plural);
            assert_eq!(
                crd.spec.names.short_names.as_deref(),
                Some(&[short.to_string()][..])
            );
            assert_eq!(crd.spec.scope, "Namespaced");
            let v = &crd.spec.versions[0];
            assert!(
                v.subresources
                    .as_ref()
                    .and_then(|s| s.status.as_ref())
                    .is_some()
            );
            let cols: Vec<_> = v
                .additional_printer_columns
                .iter()
                .flatten()
                .map(|c| c.name.as_str())
                .collect();
            assert!(cols.contains(&"Ready") && cols.contains(&"Age"), "{cols:?}");
        }
    }

    #[test]
    fn topic_schema_carries_the_cel_rules_and_enum() {
        let s = schema_of(&ReplicatedTopic::crd());
        let spec = &s["properties"]["spec"];
        assert_eq!(
            rules(&spec["properties"]["partitions"]),
            ["self >= oldSelf"]
        );
        assert_eq!(rules(&spec["properties"]["cluster"]), ["self == oldSelf"]);
        assert_eq!(
            rules(&spec["properties"]["replicationFactor"]),
            ["self == oldSelf"]
        );
        assert_eq!(rules(&spec["properties"]["topicName"]), ["self == oldSelf"]);
        assert_eq!(
            rules(spec),
            ["has(self.topicName) == has(oldSelf.topicName)"]
        );
        assert_eq!(spec["properties"]["partitions"]["minimum"], 1.0);
        assert_eq!(
            spec["properties"]["deletionPolicy"]["enum"],
            json!(["Retain", "Delete"])
        );
        assert_eq!(spec["properties"]["deletionPolicy"]["default"], "Retain");
        let status = &s["properties"]["status"]["properties"];
        assert_eq!(status["conditions"]["x-kubernetes-list-type"], "map");
        assert_eq!(
            status["conditions"]["x-kubernetes-list-map-keys"],
            json!(["type"])
        );
        assert_eq!(
            status["partitions"]["x-kubernetes-list-map-keys"],
            json!(["partition"])
        );
    }

    /// Issue part 2: the schema carries Kafka's name rule from `broker::topic_name`, so the API
    /// server refuses `../ESCAPED`, `bad\0name`, `.` and `..` before the operator sees them.
    #[test]
    fn topic_name_schema_is_kafkas_rule() {
        use broker::topic_name::{MAX_LENGTH, PATTERN};
        let s = schema_of(&ReplicatedTopic::crd());
        let name = &s["properties"]["spec"]["properties"]["topicName"];
        assert_eq!(name["pattern"], PATTERN);
        assert_eq!(name["maxLength"], json!(MAX_LENGTH));
        assert_eq!(name["minLength"], json!(1));
        // metadata.name is the topic name when topicName is unset.
        assert_eq!(
            rules(&s),
            [format!(
                "has(self.spec.topicName) || size(self.metadata.name) <= {MAX_LENGTH}"
            )]
        );
    }

    /// PATTERN, run by a real regex engine (CEL's `matches`, as the API server runs patterns),
    /// says exactly what `broker::topic_name::validate` says for every name up to four
    /// characters over the legal characters and a few illegal ones.
    #[test]
    fn the_name_pattern_agrees_with_the_rule() {
        use broker::topic_name::{PATTERN, validate};
        use kube::core::cel::Validator;
        let schema = json!({
            "type": "string",
            "x-kubernetes-validations": [{"rule": format!("self.matches(r'{PATTERN}')")}],
        });
        let alphabet = ['.', '_', '-', 'a', 'Z', '0', '/', '\0', ' '];
        let mut names = vec![String::new()];
        for _ in 0..4 {
            let longer: Vec<String> = names
                .iter()
                .flat_map(|n| alphabet.iter().map(move |c| format!("{n}{c}")))
                .collect();
            names.extend(longer);
        }
        names.sort();
        names.dedup();
        assert!(names.len() > 5000);
        for extra in [
            "./victim",
            "../ESCAPED",
            "bad\0name",
            "orders.v1_x-y",
            "...",
        ] {
            names.push(extra.to_string());
        }
        let v = Validator::new();
        for n in &names {
            let matched = v.validate(&schema, &json!(n), None).is_ok();
            assert_eq!(matched, validate(n).is_ok(), "{n:?}");
        }
    }

    #[test]
    fn a_topic_named_by_a_long_metadata_name_is_refused() {
        use kube::core::cel::validate_cel;
        let mut t = topic(1, 1, None);
        t.metadata.name = Some("x".repeat(249));
        assert!(validate_cel(&t).is_ok());
        t.metadata.name = Some("x".repeat(250));
        let err = validate_cel(&t).unwrap_err();
        assert!(err.to_string().contains("at most 249 characters"), "{err}");
        t.spec.topic_name = Some("short".into());
        assert!(validate_cel(&t).is_ok(), "topicName names the topic");
    }

    #[test]
    fn cluster_schema_has_descriptions_and_bounds() {
        let s = schema_of(&LogCluster::crd());
        let spec = &s["properties"]["spec"]["properties"];
        assert_eq!(spec["replicas"]["minimum"], 1.0);
        assert_eq!(rules(&spec["storage"]), ["self == oldSelf"]);
        for field in [
            "replicas",
            "image",
            "storage",
            "brokerConfig",
            "rackLabelKey",
            "paused",
        ] {
            assert!(
                spec[field]["description"].is_string(),
                "{field} has no description"
            );
        }
        let status = &s["properties"]["status"]["properties"];
        assert_eq!(
            status["brokers"]["x-kubernetes-list-map-keys"],
            json!(["id"])
        );
        assert_eq!(
            status["rollout"]["properties"]["phase"]["enum"],
            json!(["Idle", "Rolling", "Blocked", "Paused"])
        );
    }

    fn topic(partitions: i32, rf: i32, topic_name: Option<&str>) -> ReplicatedTopic {
        ReplicatedTopic::new(
            "orders",
            ReplicatedTopicSpec {
                cluster: "main".into(),
                partitions,
                replication_factor: rf,
                config: Default::default(),
                deletion_policy: Default::default(),
                topic_name: topic_name.map(str::to_string),
            },
        )
    }

    /// The CEL rules evaluated as the API server would (kube's client-side CEL evaluator).
    #[test]
    fn topic_cel_rules_refuse_what_cannot_be_applied() {
        use kube::core::cel::validate_cel_update;
        let old = topic(6, 3, None);
        assert!(
            validate_cel_update(&topic(8, 3, None), &old).is_ok(),
            "growing is fine"
        );
        let shrink = validate_cel_update(&topic(4, 3, None), &old).unwrap_err();
        assert!(
            shrink
                .to_string()
                .contains("partitions cannot be decreased"),
            "{shrink}"
        );
        let rf = validate_cel_update(&topic(6, 2, None), &old).unwrap_err();
        assert!(
            rf.to_string().contains("replicationFactor is immutable"),
            "{rf}"
        );
        let mut moved = topic(6, 3, None);
        moved.spec.cluster = "other".into();
        let err = validate_cel_update(&moved, &old).unwrap_err();
        assert!(err.to_string().contains("cluster is immutable"), "{err}");
        let named = topic(6, 3, Some("Orders_v2"));
        let err = validate_cel_update(&named, &old).unwrap_err();
        assert!(
            err.to_string().contains("cannot be added or removed"),
            "{err}"
        );
        let renamed = topic(6, 3, Some("Orders_v3"));
        let err = validate_cel_update(&renamed, &named).unwrap_err();
        assert!(err.to_string().contains("topicName is immutable"), "{err}");
    }

    #[test]
    fn cluster_storage_cannot_change() {
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
        use kube::core::cel::validate_cel_update;
        use log_cluster::StorageSpec;
        let cluster = |size: &str, replicas: i32| {
            LogCluster::new(
                "main",
                LogClusterSpec {
                    replicas,
                    image: "strand/broker:1".into(),
                    storage: StorageSpec {
                        size: Quantity(size.into()),
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
        };
        let old = cluster("10Gi", 3);
        assert!(
            validate_cel_update(&cluster("10Gi", 5), &old).is_ok(),
            "scaling is fine"
        );
        let err = validate_cel_update(&cluster("20Gi", 3), &old).unwrap_err();
        assert!(err.to_string().contains("storage is immutable"), "{err}");
    }

    #[test]
    fn cluster_listeners_are_checked_by_cel() {
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
        use kube::core::cel::validate_cel;
        use log_cluster::{ListenerSpec, ListenerType, StorageSpec};
        let cluster = |replicas: i32, name: &str, base: Option<i32>| {
            LogCluster::new(
                "main",
                LogClusterSpec {
                    replicas,
                    image: "strand/broker:1".into(),
                    storage: StorageSpec {
                        size: Quantity("1Gi".into()),
                        storage_class_name: None,
                    },
                    resources: None,
                    broker_config: Default::default(),
                    rack_label_key: None,
                    pod_template: None,
                    paused: false,
                    listeners: vec![ListenerSpec {
                        name: name.into(),
                        type_: ListenerType::NodePort,
                        port: 9094,
                        node_port_base: base,
                        advertised_host: None,
                        tls: false,
                        authentication: None,
                    }],
                    authorization: None,
                },
            )
        };
        assert!(validate_cel(&cluster(3, "external", Some(30100))).is_ok());
        assert!(validate_cel(&cluster(3, "external", Some(32765))).is_ok());
        let err = validate_cel(&cluster(3, "external", Some(32766))).unwrap_err();
        assert!(err.to_string().contains("at most 32767"), "{err}");
        let err = validate_cel(&cluster(3, "external", None)).unwrap_err();
        assert!(err.to_string().contains("needs nodePortBase"), "{err}");
        for reserved in ["internal", "kafka", "a--b"] {
            let err = validate_cel(&cluster(3, reserved, Some(30100))).unwrap_err();
            assert!(
                err.to_string().contains("listener names"),
                "{reserved}: {err}"
            );
        }
    }

    #[test]
    fn topic_name_defaults_to_metadata_name() {
        assert_eq!(topic(1, 1, None).topic_name(), "orders");
        assert_eq!(topic(1, 1, Some("Orders_v2")).topic_name(), "Orders_v2");
    }

    #[test]
    fn every_crd_renders_to_a_file() {
        let files = crd_files().unwrap();
        let names: Vec<_> = files.iter().map(|f| f.file_name.as_str()).collect();
        assert_eq!(
            names,
            ["logclusters.yaml", "replicatedtopics.yaml", "logusers.yaml"]
        );
        assert!(
            files
                .iter()
                .all(|f| f.yaml.contains("x-kubernetes-validations"))
        );
    }

    #[test]
    fn user_acl_resources_are_checked_by_cel() {
        use kube::core::cel::validate_cel;
        use log_user::*;
        let user = |type_: AclResourceType, name: Option<&str>, pattern: Option<AclPatternType>| {
            let spec: LogUserSpec = serde_json::from_value(json!({
                "cluster": "demo",
                "authentication": { "type": "scram-sha-512" },
                "authorization": { "acls": [{
                    "resource": { "type": type_, "name": name, "patternType": pattern },
                    "operations": ["Read"],
                }]},
            }))
            .unwrap();
            LogUser::new("alice", spec)
        };
        let topic = AclResourceType::Topic;
        let cluster = AclResourceType::Cluster;
        assert!(validate_cel(&user(topic, Some("orders"), None)).is_ok());
        assert!(validate_cel(&user(cluster, None, None)).is_ok());
        for bad in [
            user(topic, None, None),
            user(cluster, Some("kafka-cluster"), None),
            user(cluster, None, Some(AclPatternType::Prefix)),
        ] {
            let err = validate_cel(&bad).unwrap_err();
            assert!(err.to_string().contains("needs a name"), "{err}");
        }
        // Defaults: any host, allow.
        let u = user(topic, Some("orders"), None);
        let rule = &u.spec.authorization.as_ref().unwrap().acls[0];
        assert_eq!((rule.host.as_str(), rule.type_), ("*", AclRuleType::Allow));
    }

    #[test]
    fn an_internal_listener_takes_no_node_port_by_cel() {
        use kube::core::cel::validate_cel;
        let cluster = |listener: Value| {
            let spec: LogClusterSpec = serde_json::from_value(json!({
                "replicas": 3,
                "image": "strand/broker:1",
                "storage": { "size": "1Gi" },
                "listeners": [listener],
            }))
            .unwrap();
            LogCluster::new("main", spec)
        };
        let ok = json!({ "name": "apps", "type": "Internal", "port": 9095, "tls": true });
        assert!(validate_cel(&cluster(ok)).is_ok());
        for bad in [
            json!({ "name": "apps", "type": "Internal", "port": 9095, "nodePortBase": 30100 }),
            json!({ "name": "apps", "type": "Internal", "port": 9095, "advertisedHost": "x" }),
        ] {
            let err = validate_cel(&cluster(bad)).unwrap_err();
            assert!(err.to_string().contains("Internal listener"), "{err}");
        }
    }
}
