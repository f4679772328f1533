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

/// The `brokerConfig` keys the spec's security settings own, with the field that owns them;
/// with a TLS listener every `ssl.*` key is the operator's too. (`allow.everyone.if.no.acl.found`
/// stays the user's: Kafka's way to bring ACLs in gradually.)
const OWNED_KEYS: [(&str, Owner); 4] = [
    ("listener.security.protocol.map", Owner::Listeners),
    ("sasl.enabled.mechanisms", Owner::Authentication),
    ("authorizer.class.name", Owner::Authorization),
    ("super.users", Owner::Authorization),
];

#[derive(Clone, Copy)]
enum Owner {
    Listeners,
    Authentication,
    Authorization,
}

impl Owner {
    fn field(self) -> &'static str {
        match self {
            Owner::Listeners => "spec.listeners[] (tls, authentication)",
            Owner::Authentication => "spec.listeners[].authentication",
            Owner::Authorization => "spec.authorization",
        }
    }

    fn sets(self, lc: &LogCluster) -> bool {
        match self {
            Owner::Listeners => tls(lc) || authenticated(lc).next().is_some(),
            Owner::Authentication => authenticated(lc).next().is_some(),
            Owner::Authorization => lc.spec.authorization.is_some(),
        }
    }
}

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

/// Where the brokers' keystores (`k8s::tls`) are mounted.
pub const TLS_MOUNT: &str = "/etc/strand/tls";

/// Whether the spec asks for logins or ACLs (which need the cluster secret).
pub fn enabled(lc: &LogCluster) -> bool {
    lc.spec.authorization.is_some() || authenticated(lc).next().is_some()
}

/// Whether any listener has TLS.
pub fn tls(lc: &LogCluster) -> bool {
    lc.spec.listeners.iter().any(|l| l.tls)
}

/// Why the security settings cannot be applied, for a condition message. `has_secret`: the
/// brokers have the cluster secret (without it the brokers refuse SASL users and ACLs, which
/// live in the controller's metadata that only the secret protects).
pub fn validate(lc: &LogCluster, has_secret: bool) -> Result<(), String> {
    if tls(lc)
        && let Some(key) = lc.spec.broker_config.keys().find(|k| k.starts_with("ssl."))
    {
        return Err(format!(
            "spec.brokerConfig sets {key}, and with spec.listeners[].tls the operator sets TLS (its own CA and certificates); remove it from brokerConfig"
        ));
    }
    for (key, owner) in OWNED_KEYS {
        if owner.sets(lc) && lc.spec.broker_config.contains_key(key) {
            return Err(format!(
                "spec.brokerConfig sets {key}, which {} sets; remove it from brokerConfig",
                owner.field()
            ));
        }
    }
    if !enabled(lc) {
        return Ok(());
    }
    if !has_secret {
        return Err("authentication and authorization need the cluster secret, and this cluster runs without one (see the Unauthenticated condition)".into());
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
    let map: Vec<String> = lc
        .spec
        .listeners
        .iter()
        .filter_map(|l| {
            let protocol = match (l.tls, l.authentication.map(|a| a.type_)) {
                (false, None) => return None,
                (true, None) => "SSL",
                (false, Some(ListenerAuthenticationType::ScramSha512)) => "SASL_PLAINTEXT",
                (true, Some(ListenerAuthenticationType::ScramSha512)) => "SASL_SSL",
            };
            Some(format!("{}:{protocol}", l.name))
        })
        .collect();
    if !map.is_empty() {
        args.push(format!(
            "--listener-security-protocol-map={}",
            map.join(",")
        ));
    }
    if authenticated(lc).next().is_some() {
        // LogUsers get SCRAM-SHA-512 credentials only.
        args.push("--sasl-enabled-mechanisms=SCRAM-SHA-512".into());
    }
    if tls(lc) {
        // Each pod reads its own file of the brokers' Secret (Kubernetes expands $(POD_NAME)).
        args.push(format!(
            "--ssl-keystore-location={TLS_MOUNT}/$(POD_NAME).pem"
        ));
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
                        tls: false,
                        authentication: None,
                    },
                    ListenerSpec {
                        name: "secure".into(),
                        type_: ListenerType::NodePort,
                        port: 9095,
                        node_port_base: Some(30110),
                        advertised_host: None,
                        tls: false,
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
    fn a_tls_listener_is_ssl_or_sasl_ssl_with_each_pods_keystore() {
        let mut c = lc(SCRAM, None, &[]);
        c.spec.listeners[1].tls = true;
        assert_eq!(validate(&c, true), Ok(()));
        assert_eq!(
            broker_args(&c),
            [
                "--listener-security-protocol-map=secure:SASL_SSL",
                "--sasl-enabled-mechanisms=SCRAM-SHA-512",
                "--ssl-keystore-location=/etc/strand/tls/$(POD_NAME).pem"
            ]
        );
        c.spec.listeners[1].authentication = None;
        c.spec.listeners[0].tls = true;
        // TLS alone needs no cluster secret.
        assert_eq!(validate(&c, false), Ok(()));
        assert_eq!(
            broker_args(&c),
            [
                "--listener-security-protocol-map=open:SSL,secure:SSL",
                "--ssl-keystore-location=/etc/strand/tls/$(POD_NAME).pem"
            ]
        );
        let mut own = c.clone();
        own.spec
            .broker_config
            .insert("ssl.keystore.location".into(), "/x.pem".into());
        assert!(
            validate(&own, true)
                .unwrap_err()
                .contains("ssl.keystore.location")
        );
        own.spec.broker_config.clear();
        own.spec
            .broker_config
            .insert("listener.security.protocol.map".into(), "open:SSL".into());
        assert!(validate(&own, false).is_err());
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
        assert!(e.contains("which spec.authorization sets"), "{e}");
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
