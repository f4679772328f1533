//! The LogUser reconciler. The pure part turns a LogUser into what the cluster's controller
//! should hold for it (Kafka ACLs for `User:<name>`, what to add and remove) and into its
//! Secret; the glue below keeps the password in that Secret, puts the salted SCRAM-SHA-512
//! credential and the ACLs into the controller (which carries them to every broker), and takes
//! both out when the resource is deleted (finalizer `strand.dev/user`).
//!
//! The password lives only in the Secret: the controller keeps salt, iteration count, StoredKey
//! and ServerKey (RFC 5802), and the reconciler checks the stored credential against the
//! Secret's password, so a rotated password (a deleted Secret) reaches the brokers while an
//! unchanged one is never salted again.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use broker::auth::acl::{self, Acl, Creation};
use broker::auth::scram::Mechanism;
use broker::auth::users::{Alteration, UserCredential};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{self, finalizer};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::info;

use super::{Context, condition, publish};
use crate::controller::decisions;
use crate::crd::log_user::{
    AclOperation, AclPatternType, AclResourceType, AclRule, AclRuleType, LogUser, LogUserStatus,
};
use crate::crd::{ConditionType, LogCluster, set_condition};

pub const FINALIZER: &str = "strand.dev/user";
/// The mechanism of every LogUser credential.
const MECHANISM: Mechanism = Mechanism::Sha512;
/// The Secret's keys, as Strimzi's KafkaUser Secrets name them.
pub const PASSWORD_KEY: &str = "password";
pub const JAAS_KEY: &str = "sasl.jaas.config";
/// How often a user is checked again without a change (a deleted Secret is remade then).
const RECHECK: Duration = Duration::from_secs(60);

/// The user's Kafka principal.
pub fn principal(lu: &LogUser) -> String {
    format!("User:{}", lu.name_any())
}

/// Why the user name cannot be a Kafka user here (or its Secret's name could not be its).
pub fn check_username(name: &str) -> Result<(), String> {
    if name == broker::auth::BROKER_USER {
        return Err(format!(
            "user name {name:?} is reserved for the cluster's brokers; name the LogUser otherwise"
        ));
    }
    for suffix in [
        "-cluster-secret",
        "-cluster-ca",
        "-cluster-ca-cert",
        "-broker-certs",
    ] {
        if name.ends_with(suffix) {
            return Err(format!(
                "{name:?} ends in {suffix}, the name of a LogCluster's own Secret; name the LogUser otherwise"
            ));
        }
    }
    Ok(())
}

/// The Kafka ACLs of `spec.authorization`, one per rule and operation, sorted and without
/// duplicates; or why a rule cannot be one (the message names the rule).
pub fn acls(lu: &LogUser) -> Result<Vec<Acl>, String> {
    let principal = principal(lu);
    let rules = lu
        .spec
        .authorization
        .as_ref()
        .map_or(&[][..], |a| &a.acls[..]);
    let mut out = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let bad = |e: String| format!("spec.authorization.acls[{i}]: {e}");
        let host = canonical_host(&rule.host).map_err(bad)?;
        let (resource_type, name) = resource(rule);
        let pattern = match rule.resource.pattern_type {
            Some(AclPatternType::Prefix) => acl::PatternType::Prefixed,
            Some(AclPatternType::Literal) | None => acl::PatternType::Literal,
        };
        let permission = match rule.type_ {
            AclRuleType::Allow => acl::Permission::Allow,
            AclRuleType::Deny => acl::Permission::Deny,
        };
        for op in &rule.operations {
            let binding = acl::binding(&Creation {
                resource_type: resource_type.code(),
                resource_name: name,
                pattern_type: pattern.code(),
                principal: &principal,
                host: &host,
                operation: operation(*op).code(),
                permission: permission.code(),
            })
            .map_err(bad)?;
            out.push(binding);
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn resource(rule: &AclRule) -> (acl::ResourceType, &str) {
    let name = rule.resource.name.as_deref().unwrap_or_default();
    match rule.resource.type_ {
        AclResourceType::Topic => (acl::ResourceType::Topic, name),
        AclResourceType::Group => (acl::ResourceType::Group, name),
        AclResourceType::TransactionalId => (acl::ResourceType::TransactionalId, name),
        AclResourceType::Cluster => (acl::ResourceType::Cluster, acl::CLUSTER_NAME),
    }
}

fn operation(op: AclOperation) -> acl::Operation {
    match op {
        AclOperation::All => acl::Operation::All,
        AclOperation::Read => acl::Operation::Read,
        AclOperation::Write => acl::Operation::Write,
        AclOperation::Create => acl::Operation::Create,
        AclOperation::Delete => acl::Operation::Delete,
        AclOperation::Alter => acl::Operation::Alter,
        AclOperation::Describe => acl::Operation::Describe,
        AclOperation::ClusterAction => acl::Operation::ClusterAction,
        AclOperation::DescribeConfigs => acl::Operation::DescribeConfigs,
        AclOperation::AlterConfigs => acl::Operation::AlterConfigs,
        AclOperation::IdempotentWrite => acl::Operation::IdempotentWrite,
    }
}

/// `*`, or an IP address written as the broker writes a client's (an IPv4-mapped IPv6
/// address as IPv4), so the rule matches the connections it names.
fn canonical_host(host: &str) -> Result<String, String> {
    if host == acl::WILDCARD {
        return Ok(host.into());
    }
    let ip: IpAddr = host
        .parse()
        .map_err(|_| format!("host {host:?} is not an IP address or *"))?;
    Ok(ip.to_canonical().to_string())
}

/// What to add and remove so that `principal`'s ACLs among `all` become `desired`.
pub fn acl_changes(desired: &[Acl], all: &[Acl], principal: &str) -> (Vec<Acl>, Vec<Acl>) {
    let add = desired
        .iter()
        .filter(|a| !all.contains(a))
        .cloned()
        .collect();
    let remove = all
        .iter()
        .filter(|a| a.principal == principal && !desired.contains(a))
        .cloned()
        .collect();
    (add, remove)
}

/// Kafka's client setting for this user (`sasl.jaas.config`), as a Secret key.
pub fn jaas_config(user: &str, password: &str) -> String {
    format!(
        "org.apache.kafka.common.security.scram.ScramLoginModule required username=\"{user}\" password=\"{password}\";"
    )
}

/// The user's Secret, owned by the LogUser (deleted with it).
pub fn secret(lu: &LogUser, password: &str) -> Secret {
    let name = lu.name_any();
    let mut labels = BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "strand".to_string()),
        (
            "app.kubernetes.io/managed-by".to_string(),
            "strand-operator".to_string(),
        ),
        ("strand.dev/cluster".to_string(), lu.spec.cluster.clone()),
    ]);
    labels.insert("strand.dev/user".into(), name.clone());
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.clone()),
            namespace: lu.namespace(),
            labels: Some(labels),
            owner_references: lu.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        data: Some(BTreeMap::from([
            (
                PASSWORD_KEY.to_string(),
                ByteString(password.as_bytes().to_vec()),
            ),
            (
                JAAS_KEY.to_string(),
                ByteString(jaas_config(&name, password).into_bytes()),
            ),
        ])),
        type_: Some("Opaque".into()),
        ..Secret::default()
    }
}

/// Whether `s` is this user's Secret (made by the operator for it), and its password.
fn password_of(s: &Secret, lu: &LogUser) -> Result<Option<String>, String> {
    let ours = s
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| Some(&o.uid) == lu.metadata.uid.as_ref());
    if !ours {
        return Err(format!(
            "Secret {} exists and is not this LogUser's; delete or rename it",
            lu.name_any()
        ));
    }
    Ok(s.data
        .as_ref()
        .and_then(|d| d.get(PASSWORD_KEY))
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
        .filter(|p| !p.is_empty()))
}

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("Kubernetes API: {0}")]
    Api(#[from] kube::Error),
    #[error("controller: {0}")]
    Controller(#[from] crate::controller::service::ServiceError),
    #[error("the controller of cluster {0} is not running yet")]
    ClusterNotStarted(String),
    #[error("finalizer: {0}")]
    Finalizer(String),
    #[error("salting the password: {0}")]
    Task(String),
}

/// Whether `password` logs in with `stored`: PBKDF2 with thousands of rounds, so off the
/// runtime the controller's API shares.
async fn accepts(stored: UserCredential, password: String) -> bool {
    tokio::task::spawn_blocking(move || stored.accepts(&password))
        .await
        .unwrap_or(false)
}

/// One reconcile, in a span naming the resource.
#[tracing::instrument(skip_all, fields(loguser = %format!("{}/{}", lu.namespace().unwrap_or_default(), lu.name_any())))]
pub async fn reconcile(lu: Arc<LogUser>, ctx: Arc<Context>) -> Result<Action, UserError> {
    let ns = lu.namespace().unwrap_or_default();
    let api: Api<LogUser> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, lu, |event| async {
        match event {
            finalizer::Event::Apply(lu) => apply(lu, &ctx).await,
            finalizer::Event::Cleanup(lu) => cleanup(lu, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
        other => UserError::Finalizer(other.to_string()),
    })
}

/// The status: Ready with `ok`, the reason and message.
fn status(lu: &LogUser, acls: usize, ok: bool, reason: &str, message: String) -> LogUserStatus {
    let generation = lu.metadata.generation;
    let mut s = lu.status.clone().unwrap_or_default();
    s.username = Some(lu.name_any());
    s.secret = ok.then(|| lu.name_any()).or(s.secret);
    s.acls = u32::try_from(acls).unwrap_or(u32::MAX);
    s.observed_generation = generation;
    set_condition(
        &mut s.conditions,
        condition(ConditionType::Ready, ok, reason, message, generation),
    );
    s
}

async fn refuse(
    ctx: &Context,
    lu: &LogUser,
    reason: &str,
    message: String,
) -> Result<Action, UserError> {
    publish(ctx, lu, EventType::Warning, reason, &message).await;
    let acls = lu.status.as_ref().map_or(0, |s| s.acls as usize);
    write_status(ctx, lu, status(lu, acls, false, reason, message)).await?;
    Ok(Action::requeue(RECHECK))
}

async fn apply(lu: Arc<LogUser>, ctx: &Context) -> Result<Action, UserError> {
    let ns = lu.namespace().unwrap_or_default();
    let user = lu.name_any();
    let cluster = lu.spec.cluster.clone();
    let lcs: Api<LogCluster> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(lc) = lcs.get_opt(&cluster).await? else {
        let msg = format!("LogCluster {cluster} does not exist in namespace {ns}");
        return refuse(ctx, &lu, "ClusterNotFound", msg).await;
    };
    if let Err(e) = check_username(&user) {
        return refuse(ctx, &lu, "InvalidUserName", e).await;
    }
    let desired = match acls(&lu) {
        Ok(a) => a,
        Err(e) => return refuse(ctx, &lu, "InvalidAcl", e).await,
    };
    let Some(entry) = ctx.registry.get(&ns, &cluster).await else {
        return Err(UserError::ClusterNotStarted(cluster));
    };

    // The password: the Secret's, or a new one in a new Secret.
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let existing = secrets.get_opt(&user).await?;
    let found = match existing.as_ref().map(|s| password_of(s, &lu)).transpose() {
        Ok(p) => p.flatten(),
        Err(e) => return refuse(ctx, &lu, "SecretConflict", e).await,
    };
    if existing.is_some() && found.is_none() {
        let msg =
            format!("Secret {user} has no password; delete it and the operator makes a new one");
        return refuse(ctx, &lu, "SecretInvalid", msg).await;
    }
    let snapshot = entry.controller.snapshot().await.metadata;
    let stored = snapshot
        .scram_credentials
        .iter()
        .find(|c| c.user == user && c.mechanism == MECHANISM)
        .cloned();
    let accepted = match (&stored, &found) {
        (Some(c), Some(p)) => accepts(c.clone(), p.clone()).await,
        _ => false,
    };
    // A user made through Kafka's API (kafka-configs) is not taken over: the LogUser only
    // ever replaces a credential it set itself (it has applied before), e.g. after its
    // Secret was deleted to rotate the password.
    let applied_before = lu.status.as_ref().is_some_and(|s| s.secret.is_some());
    if stored.is_some() && !accepted && !applied_before {
        let msg = format!(
            "Kafka user {user} already exists in cluster {cluster} (made with kafka-configs?); delete its credential or name the LogUser otherwise"
        );
        return refuse(ctx, &lu, "UserExists", msg).await;
    }
    let password = match found {
        Some(p) => p,
        None => {
            let fresh = broker::auth::ClusterSecret::generate();
            secrets
                .create(&PostParams::default(), &secret(&lu, &fresh))
                .await?;
            info!(secret = %user, "wrote the user's password");
            fresh
        }
    };
    if !accepted {
        let credential = {
            let (user, password) = (user.clone(), password.clone());
            tokio::task::spawn_blocking(move || {
                UserCredential::for_password(user, MECHANISM, &password)
            })
            .await
            .map_err(|e| UserError::Task(e.to_string()))?
        };
        let upsert = Alteration::Upsert(credential);
        entry
            .controller
            .update(|s, _| decisions::alter_scram_credentials(s, std::slice::from_ref(&upsert)))
            .await?;
        let note = format!("SCRAM-SHA-512 credential of user {user} set in cluster {cluster}");
        info!("{note}");
        publish(ctx, &*lu, EventType::Normal, "CredentialSet", &note).await;
    }
    let (add, remove) = acl_changes(&desired, &snapshot.acls, &principal(&lu));
    if !add.is_empty() || !remove.is_empty() {
        entry
            .controller
            .update(|s, _| decisions::alter_acls(s, &add, &remove))
            .await?;
        let note = format!(
            "ACLs of {} in cluster {cluster}: {} added, {} removed",
            principal(&lu),
            add.len(),
            remove.len()
        );
        info!("{note}");
        publish(ctx, &*lu, EventType::Normal, "AclsChanged", &note).await;
    }
    let mut message = format!(
        "user {user} logs in with the password in Secret {user}; {} ACLs",
        desired.len()
    );
    if !desired.is_empty() && lc.spec.authorization.is_none() {
        message.push_str(&format!(
            " (not enforced: LogCluster {cluster} has no spec.authorization)"
        ));
    } else if !desired.is_empty() {
        message.push_str(" (enforced by every broker running with spec.authorization)");
    }
    if !lc.spec.listeners.iter().any(|l| l.authentication.is_some()) {
        message.push_str(&format!(
            "; LogCluster {cluster} has no listener with authentication, so no client logs in with it yet"
        ));
    }
    write_status(
        ctx,
        &lu,
        status(&lu, desired.len(), true, "Applied", message),
    )
    .await?;
    Ok(Action::requeue(RECHECK))
}

async fn cleanup(lu: Arc<LogUser>, ctx: &Context) -> Result<Action, UserError> {
    let ns = lu.namespace().unwrap_or_default();
    let user = lu.name_any();
    let cluster = &lu.spec.cluster;
    // A cluster that is gone (or going) takes its users with it; one that lives must forget
    // the user before the resource goes.
    let lcs: Api<LogCluster> = Api::namespaced(ctx.client.clone(), &ns);
    let lives = lcs
        .get_opt(cluster)
        .await?
        .is_some_and(|lc| lc.metadata.deletion_timestamp.is_none());
    if !lives {
        return Ok(Action::await_change());
    }
    let Some(entry) = ctx.registry.get(&ns, cluster).await else {
        return Err(UserError::ClusterNotStarted(cluster.clone()));
    };
    let who = principal(&lu);
    let removed = entry
        .controller
        .update(|s, _| {
            // Every credential of the user, SCRAM-SHA-256 ones made with kafka-configs too:
            // the user is gone.
            let deletes: Vec<Alteration> = s
                .metadata
                .scram_credentials
                .iter()
                .filter(|c| c.user == user)
                .map(|c| Alteration::Delete {
                    user: user.clone(),
                    mechanism: c.mechanism,
                })
                .collect();
            let mut changed = decisions::alter_scram_credentials(s, &deletes)?;
            let (_, remove) = acl_changes(&[], &s.metadata.acls, &who);
            changed |= decisions::alter_acls(s, &[], &remove)?;
            Ok(changed)
        })
        .await?;
    if removed {
        let note = format!("user {user} and its ACLs removed from cluster {cluster}");
        info!("{note}");
        publish(ctx, &*lu, EventType::Normal, "UserRemoved", &note).await;
    }
    Ok(Action::await_change())
}

async fn write_status(ctx: &Context, lu: &LogUser, new: LogUserStatus) -> Result<(), kube::Error> {
    if lu.status.as_ref() == Some(&new) {
        return Ok(());
    }
    let api: Api<LogUser> =
        Api::namespaced(ctx.client.clone(), &lu.namespace().unwrap_or_default());
    api.patch_status(
        &lu.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": new })),
    )
    .await?;
    Ok(())
}

pub fn error_policy(_: Arc<LogUser>, e: &UserError, _: Arc<Context>) -> Action {
    tracing::warn!(error = %e, "user reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::LogUserSpec;
    use crate::crd::log_user::{
        AclResource, UserAuthentication, UserAuthenticationType, UserAuthorization,
    };

    fn rule(
        type_: AclResourceType,
        name: Option<&str>,
        pattern: Option<AclPatternType>,
        ops: &[AclOperation],
    ) -> AclRule {
        AclRule {
            resource: AclResource {
                type_,
                name: name.map(String::from),
                pattern_type: pattern,
            },
            operations: ops.to_vec(),
            host: "*".into(),
            type_: AclRuleType::Allow,
        }
    }

    fn user(name: &str, rules: Vec<AclRule>) -> LogUser {
        let mut lu = LogUser::new(
            name,
            LogUserSpec {
                cluster: "demo".into(),
                authentication: UserAuthentication {
                    type_: UserAuthenticationType::ScramSha512,
                },
                authorization: Some(UserAuthorization {
                    type_: Default::default(),
                    acls: rules,
                }),
            },
        );
        lu.metadata.namespace = Some("prod".into());
        lu.metadata.uid = Some("u-1".into());
        lu
    }

    #[test]
    fn each_rule_and_operation_becomes_one_acl_for_the_user() {
        let lu = user(
            "alice",
            vec![
                rule(
                    AclResourceType::Topic,
                    Some("orders"),
                    None,
                    &[AclOperation::Read, AclOperation::Describe],
                ),
                rule(
                    AclResourceType::Group,
                    Some("billing-"),
                    Some(AclPatternType::Prefix),
                    &[AclOperation::Read],
                ),
                rule(
                    AclResourceType::Cluster,
                    None,
                    None,
                    &[AclOperation::IdempotentWrite],
                ),
                // The same binding twice is one ACL.
                rule(
                    AclResourceType::Topic,
                    Some("orders"),
                    Some(AclPatternType::Literal),
                    &[AclOperation::Read],
                ),
            ],
        );
        let got = acls(&lu).unwrap();
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(
            got.iter()
                .all(|a| a.principal == "User:alice" && a.host == "*")
        );
        assert!(
            got.iter()
                .any(|a| a.resource_type == acl::ResourceType::Group
                    && a.pattern_type == acl::PatternType::Prefixed
                    && a.resource_name == "billing-")
        );
        assert!(
            got.iter()
                .any(|a| a.resource_type == acl::ResourceType::Cluster
                    && a.resource_name == acl::CLUSTER_NAME
                    && a.operation == acl::Operation::IdempotentWrite)
        );
    }

    #[test]
    fn a_bad_host_is_refused_naming_the_rule_and_ipv4_mapped_hosts_are_canonical() {
        let mut r = rule(
            AclResourceType::Topic,
            Some("t"),
            None,
            &[AclOperation::Write],
        );
        r.host = "db.example".into();
        let mut ok = r.clone();
        ok.host = "::ffff:10.0.0.5".into();
        let e = acls(&user("a", vec![ok.clone(), r])).unwrap_err();
        assert!(e.starts_with("spec.authorization.acls[1]: host"), "{e}");
        assert_eq!(acls(&user("a", vec![ok])).unwrap()[0].host, "10.0.0.5");
    }

    #[test]
    fn changes_touch_only_this_users_acls() {
        let lu = user(
            "alice",
            vec![rule(
                AclResourceType::Topic,
                Some("orders"),
                None,
                &[AclOperation::Read, AclOperation::Write],
            )],
        );
        let desired = acls(&lu).unwrap();
        let mut bob = desired[0].clone();
        bob.principal = "User:bob".into();
        let mut stale = desired[0].clone();
        stale.resource_name = "old".into();
        let all = vec![desired[0].clone(), bob.clone(), stale.clone()];
        let (add, remove) = acl_changes(&desired, &all, "User:alice");
        assert_eq!(add, vec![desired[1].clone()]);
        assert_eq!(remove, vec![stale]);
        // Cleanup: every one of alice's, none of bob's.
        let (add, remove) = acl_changes(&[], &all, "User:alice");
        assert!(add.is_empty());
        assert_eq!(remove.len(), 2);
        assert!(!remove.contains(&bob));
    }

    #[test]
    fn the_secret_holds_the_password_and_kafkas_jaas_line() {
        let lu = user("alice", vec![]);
        let s = secret(&lu, "pw123");
        let data = s.data.as_ref().unwrap();
        assert_eq!(data[PASSWORD_KEY].0, b"pw123");
        assert_eq!(
            String::from_utf8(data[JAAS_KEY].0.clone()).unwrap(),
            "org.apache.kafka.common.security.scram.ScramLoginModule required username=\"alice\" password=\"pw123\";"
        );
        let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("LogUser", "u-1")
        );
        assert_eq!(password_of(&s, &lu), Ok(Some("pw123".into())));
        // Someone else's Secret of that name is never taken over.
        let mut foreign = s.clone();
        foreign.metadata.owner_references = None;
        assert!(
            password_of(&foreign, &lu)
                .unwrap_err()
                .contains("not this LogUser's")
        );
    }

    #[test]
    fn the_brokers_user_name_is_refused() {
        assert!(check_username(broker::auth::BROKER_USER).is_err());
        for taken in [
            "demo-cluster-secret",
            "demo-cluster-ca",
            "demo-broker-certs",
        ] {
            assert!(check_username(taken).is_err(), "{taken}");
        }
        assert_eq!(check_username("alice"), Ok(()));
    }
}
