//! Client security of a LogCluster, pure: what `spec.authorization` and each listener's
//! `authentication` add to the broker container, and the checks that keep them consistent.
//!
//! The brokers get Kafka's settings as flags: `listener.security.protocol.map` (an
//! authenticated listener is SASL_PLAINTEXT; every other one stays PLAINTEXT, the `internal`
//! one included, where brokers log in to each other with the cluster secret), the SASL
//! mechanism, `authorizer.class.name` and `super.users`. A `brokerConfig` key that would
//! override one of them is refused while the spec sets it, so the two never disagree.

use crate::crd::LogCluster;
use crate::crd::log_cluster::{AuthorizationType, ListenerAuthenticationType};

/// The `brokerConfig` keys the spec's security settings own, with the field that owns them.
/// (`allow.everyone.if.no.acl.found` stays the user's: Kafka's way to bring ACLs in
/// gradually.)
const OWNED_KEYS: [(&str, &str); 4] = [
    (
        "listener.security.protocol.map",
        "spec.listeners[].authentication",
    ),
    ("sasl.enabled.mechanisms", "spec.listeners[].authentication"),
    ("authorizer.class.name", "spec.authorization"),
    ("super.users", "spec.authorization.superUsers"),
];

fn authenticated(lc: &LogCluster) -> impl Iterator<Item = (&str, ListenerAuthenticationType)> {
    lc.spec
        .listeners
        .iter()
        .filter_map(|l| Some((l.name.as_str(), l.authentication?.type_)))
}

/// `super.users` from `spec.authorization.superUsers`: a bare name is `User:<name>`, as
/// Strimzi writes them.
fn super_users(names: &[String]) -> String {
    names
        .iter()
        .map(|u| {
            if u.contains(':') {
                u.clone()
            } else {
                format!("User:{u}")
            }
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// Whether the spec asks for any client security.
pub fn enabled(lc: &LogCluster) -> bool {
    lc.spec.authorization.is_some() || authenticated(lc).next().is_some()
}

/// Why the security settings cannot be applied, for a condition message. `has_secret`: the
/// brokers have the cluster secret (without it the brokers refuse SASL users and ACLs, which
/// live in the controller's metadata that only the secret protects).
pub fn validate(lc: &LogCluster, has_secret: bool) -> Result<(), String> {
    if !enabled(lc) {
        return Ok(());
    }
    if !has_secret {
        return Err("authentication and authorization need the cluster secret, and this cluster runs without one (see the Unauthenticated condition)".into());
    }
    for (key, owner) in OWNED_KEYS {
        let owned = match owner {
            "spec.listeners[].authentication" => authenticated(lc).next().is_some(),
            _ => lc.spec.authorization.is_some(),
        };
        if owned && lc.spec.broker_config.contains_key(key) {
            return Err(format!(
                "spec.brokerConfig sets {key}, which {owner} sets; remove it from brokerConfig"
            ));
        }
    }
    if let Some(a) = &lc.spec.authorization {
        broker::auth::acl::parse_super_users(&super_users(&a.super_users))
            .map_err(|e| format!("spec.authorization.superUsers: {e}"))?;
        if a.super_users.iter().any(|u| u.contains(';')) {
            return Err("spec.authorization.superUsers: a principal may not contain ';'".into());
        }
    }
    Ok(())
}

/// The broker flags of the security settings.
pub fn broker_args(lc: &LogCluster) -> Vec<String> {
    let mut args = Vec::new();
    let map: Vec<String> = authenticated(lc)
        .map(|(name, auth)| match auth {
            ListenerAuthenticationType::ScramSha512 => format!("{name}:SASL_PLAINTEXT"),
        })
        .collect();
    if !map.is_empty() {
        args.push(format!(
            "--listener-security-protocol-map={}",
            map.join(",")
        ));
        // LogUsers get SCRAM-SHA-512 credentials only.
        args.push("--sasl-enabled-mechanisms=SCRAM-SHA-512".into());
    }
    if let Some(a) = &lc.spec.authorization {
        match a.type_ {
            AuthorizationType::Simple => args.push(format!(
                "--authorizer-class-name={}",
                broker::auth::acl::AUTHORIZER_CLASSES[0]
            )),
        }
        if !a.super_users.is_empty() {
            args.push(format!("--super-users={}", super_users(&a.super_users)));
        }
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::LogClusterSpec;
    use crate::crd::log_cluster::{
        AuthorizationSpec, ListenerAuthentication, ListenerSpec, ListenerType, StorageSpec,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use std::collections::BTreeMap;

    fn lc(
        auth: Option<ListenerAuthentication>,
        authorization: Option<AuthorizationSpec>,
        config: &[(&str, &str)],
    ) -> LogCluster {
        LogCluster::new(
            "demo",
            LogClusterSpec {
                replicas: 3,
                image: "strand/broker:0.1.0".into(),
                storage: StorageSpec {
                    size: Quantity("1Gi".into()),
                    storage_class_name: None,
                },
                resources: None,
                broker_config: config
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
                rack_label_key: None,
                pod_template: None,
                paused: false,
                listeners: vec![
                    ListenerSpec {
                        name: "open".into(),
                        type_: ListenerType::NodePort,
                        port: 9094,
                        node_port_base: Some(30100),
                        advertised_host: None,
                        authentication: None,
                    },
                    ListenerSpec {
                        name: "secure".into(),
                        type_: ListenerType::NodePort,
                        port: 9095,
                        node_port_base: Some(30110),
                        advertised_host: None,
                        authentication: auth,
                    },
                ],
                authorization,
            },
        )
    }

    const SCRAM: Option<ListenerAuthentication> = Some(ListenerAuthentication {
        type_: ListenerAuthenticationType::ScramSha512,
    });

    fn simple(super_users: &[&str]) -> Option<AuthorizationSpec> {
        Some(AuthorizationSpec {
            type_: AuthorizationType::Simple,
            super_users: super_users.iter().map(|s| s.to_string()).collect(),
        })
    }

    #[test]
    fn an_open_cluster_gets_no_flags_and_needs_no_secret() {
        let c = lc(None, None, &[("authorizer.class.name", "x")]);
        assert!(!enabled(&c));
        assert_eq!(validate(&c, false), Ok(()));
        assert!(broker_args(&c).is_empty());
    }

    #[test]
    fn an_authenticated_listener_is_sasl_plaintext_with_scram_sha_512() {
        let c = lc(SCRAM, None, &[]);
        assert_eq!(validate(&c, true), Ok(()));
        assert_eq!(
            broker_args(&c),
            [
                "--listener-security-protocol-map=secure:SASL_PLAINTEXT",
                "--sasl-enabled-mechanisms=SCRAM-SHA-512"
            ]
        );
    }

    #[test]
    fn authorization_switches_on_kafkas_standard_authorizer() {
        // A bare name is a user, as Strimzi writes it.
        let c = lc(None, simple(&["User:admin", "ops"]), &[]);
        assert_eq!(validate(&c, true), Ok(()));
        assert_eq!(
            broker_args(&c),
            [
                "--authorizer-class-name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                "--super-users=User:admin;User:ops"
            ]
        );
    }

    #[test]
    fn security_needs_the_cluster_secret() {
        let c = lc(SCRAM, None, &[]);
        assert!(validate(&c, false).unwrap_err().contains("cluster secret"));
        let c = lc(None, simple(&[]), &[]);
        assert!(validate(&c, false).unwrap_err().contains("cluster secret"));
    }

    #[test]
    fn broker_config_may_not_override_what_the_spec_sets() {
        let scram = SCRAM;
        let e = validate(
            &lc(
                scram,
                None,
                &[("listener.security.protocol.map", "secure:PLAINTEXT")],
            ),
            true,
        )
        .unwrap_err();
        assert!(e.contains("listener.security.protocol.map"), "{e}");
        let e = validate(&lc(None, simple(&[]), &[("super.users", "User:x")]), true).unwrap_err();
        assert!(e.contains("spec.authorization.superUsers"), "{e}");
        // A key the spec does not set stays the user's.
        assert_eq!(
            validate(&lc(scram, None, &[("super.users", "User:x")]), true),
            Ok(())
        );
    }

    #[test]
    fn super_users_are_kafka_principals() {
        for bad in ["Group:x", "User:a;User:b", "User:"] {
            assert!(
                validate(&lc(None, simple(&[bad]), &[]), true).is_err(),
                "{bad}"
            );
        }
    }
}
