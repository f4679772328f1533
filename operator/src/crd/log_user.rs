//! The `LogUser` resource (`strand.dev/v1alpha1`, short name `lu`): a Kafka client user of a
//! `LogCluster` in the same namespace, as Strimzi's KafkaUser is one of a Kafka cluster. Its
//! spec says how the user logs in (a SCRAM-SHA-512 password the operator makes) and what it
//! may do (Kafka ACLs for `User:<metadata.name>`); the operator writes the password into a
//! Secret of the same name, puts the salted credential and the ACLs into the cluster's
//! controller, and takes both away when the resource goes.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::condition::Condition;

/// A Kafka user of a LogCluster: its SCRAM-SHA-512 password (in the Secret named like this
/// resource) and its ACLs. The Kafka user name is `metadata.name`.
// Each `printcolumn(...)` repeats `type_ = ...`, which clippy mistakes for a duplicate attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "strand.dev",
    version = "v1alpha1",
    kind = "LogUser",
    plural = "logusers",
    shortname = "lu",
    category = "strand",
    namespaced,
    status = "LogUserStatus",
    derive = "PartialEq",
    doc = "A Kafka user of a LogCluster in the same namespace: a SCRAM-SHA-512 password in a Secret of the same name, and the user's ACLs.",
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".spec.cluster",
        description = "LogCluster the user belongs to"
    ),
    printcolumn(
        name = "Authentication",
        type_ = "string",
        json_path = ".spec.authentication.type"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct LogUserSpec {
    /// Name of the LogCluster (same namespace) the user logs in to. Immutable.
    #[schemars(length(min = 1))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("cluster is immutable"))]
    pub cluster: String,
    /// How the user logs in.
    pub authentication: UserAuthentication,
    /// What the user may do once the cluster has `spec.authorization`; without it every
    /// logged-in user may do everything, as in Kafka without an authorizer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<UserAuthorization>,
}

/// How a user logs in.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UserAuthentication {
    /// `scram-sha-512`: a password the operator makes and keeps in the Secret named like the
    /// LogUser (keys `password` and `sasl.jaas.config`), for listeners with
    /// `authentication: scram-sha-512`. Delete the Secret to get a new password.
    #[serde(rename = "type")]
    pub type_: UserAuthenticationType,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserAuthenticationType {
    #[serde(rename = "scram-sha-512")]
    ScramSha512,
}

/// The user's ACLs (Kafka's simple ACL model; a matching deny wins over any allow).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UserAuthorization {
    /// `simple` (the default, and the only one): Kafka's ACLs.
    #[serde(default, rename = "type")]
    pub type_: UserAuthorizationType,
    /// Each rule becomes one Kafka ACL per operation, for principal `User:<metadata.name>`.
    /// At most 100 rules: every user's ACLs travel in the cluster's controller state, which
    /// must stay well within an API object's size.
    #[serde(default)]
    #[schemars(length(max = 100))]
    pub acls: Vec<AclRule>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum UserAuthorizationType {
    #[default]
    Simple,
}

/// One rule: a resource pattern, operations on it, from a host, allowed or denied.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AclRule {
    pub resource: AclResource,
    /// Kafka's operations, e.g. `[Read, Describe]`.
    #[schemars(length(min = 1, max = 11))]
    pub operations: Vec<AclOperation>,
    /// The client IP address the rule applies to; `*` (the default) is any.
    #[serde(default = "any_host")]
    #[schemars(length(min = 1))]
    pub host: String,
    /// `allow` (the default) or `deny`.
    #[serde(default, rename = "type")]
    pub type_: AclRuleType,
}

fn any_host() -> String {
    broker::auth::acl::WILDCARD.into()
}

/// What a rule is about.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.type == 'cluster' ? !has(self.name) && (!has(self.patternType) || self.patternType == 'literal') : has(self.name)").message("a topic, group or transactionalId rule needs a name; the cluster resource has none and is literal"))]
pub struct AclResource {
    /// `topic`, `group`, `transactionalId` or `cluster`.
    #[serde(rename = "type")]
    pub type_: AclResourceType,
    /// The resource's name, or `*` for every one; for `patternType: prefix`, the prefix.
    /// Not given for `cluster`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub name: Option<String>,
    /// `literal` (the default): the name itself (or `*`); `prefix`: every name starting
    /// with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern_type: Option<AclPatternType>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum AclResourceType {
    Topic,
    Group,
    TransactionalId,
    Cluster,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum AclPatternType {
    Literal,
    Prefix,
}

/// Kafka's ACL operations, as Strimzi and `kafka-acls` name them.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AclOperation {
    All,
    Read,
    Write,
    Create,
    Delete,
    Alter,
    Describe,
    ClusterAction,
    DescribeConfigs,
    AlterConfigs,
    IdempotentWrite,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum AclRuleType {
    #[default]
    Allow,
    Deny,
}

/// What the operator did with the user.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogUserStatus {
    /// The Kafka user name (`metadata.name`); clients log in as it, ACLs name `User:<it>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The Secret holding the password (`password`, `sasl.jaas.config`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Number of Kafka ACLs the rules became.
    #[serde(default)]
    pub acls: u32,
    /// The `metadata.generation` last applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` True once the credential and the ACLs are in the cluster's controller.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
