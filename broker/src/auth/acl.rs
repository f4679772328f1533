//! Kafka's ACL model, pure: bindings (a resource pattern, a principal, a host, an operation,
//! allow or deny), the filters of DescribeAcls and DeleteAcls, and the decision Kafka's
//! StandardAuthorizer makes. Wire codes are Kafka's (`AclOperation`, `ResourceType`,
//! `PatternType`, `AclPermissionType`).
//!
//! The decision, in Kafka's order: a super user is allowed everything; otherwise a DENY that
//! matches the principal, host and operation refuses; otherwise an ALLOW that matches (or
//! implies the operation: READ, WRITE, DELETE and ALTER imply DESCRIBE; ALTER_CONFIGS implies
//! DESCRIBE_CONFIGS) allows; a resource no ACL names at all is allowed only with
//! `allow.everyone.if.no.acl.found`.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

/// The resource name of the cluster resource (Kafka's `kafka-cluster`).
pub const CLUSTER_NAME: &str = "kafka-cluster";
/// A literal name that matches every resource of its type.
pub const WILDCARD: &str = "*";

macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $code:expr, $text:expr;)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        pub enum $name { $($variant),* }

        impl $name {
            pub fn code(self) -> i8 {
                match self { $($name::$variant => $code),* }
            }
            pub fn from_code(code: i8) -> Option<Self> {
                match code { $($code => Some($name::$variant),)* _ => None }
            }
            pub fn name(self) -> &'static str {
                match self { $($name::$variant => $text),* }
            }
        }
    };
}

wire_enum!(
    /// Kafka's ResourceType (1 is ANY in filters).
    ResourceType {
        Topic = 2, "TOPIC";
        Group = 3, "GROUP";
        Cluster = 4, "CLUSTER";
        TransactionalId = 5, "TRANSACTIONAL_ID";
    }
);

wire_enum!(
    /// Kafka's PatternType of a binding (filters also have ANY = 1 and MATCH = 2).
    PatternType {
        Literal = 3, "LITERAL";
        Prefixed = 4, "PREFIXED";
    }
);

wire_enum!(
    /// Kafka's AclOperation (1 is ANY in filters).
    Operation {
        All = 2, "ALL";
        Read = 3, "READ";
        Write = 4, "WRITE";
        Create = 5, "CREATE";
        Delete = 6, "DELETE";
        Alter = 7, "ALTER";
        Describe = 8, "DESCRIBE";
        ClusterAction = 9, "CLUSTER_ACTION";
        DescribeConfigs = 10, "DESCRIBE_CONFIGS";
        AlterConfigs = 11, "ALTER_CONFIGS";
        IdempotentWrite = 12, "IDEMPOTENT_WRITE";
    }
);

wire_enum!(
    /// Kafka's AclPermissionType (1 is ANY in filters).
    Permission {
        Deny = 2, "DENY";
        Allow = 3, "ALLOW";
    }
);

/// The wire code of ANY in a filter's enums.
const ANY: i8 = 1;
/// The wire code of MATCH in a filter's pattern type.
const MATCH: i8 = 2;

/// One ACL binding.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Acl {
    pub resource_type: ResourceType,
    pub pattern_type: PatternType,
    pub resource_name: String,
    /// `User:alice`, `User:CN=alice,O=Example`, `User:*`.
    pub principal: String,
    /// A client IP address, or `*`.
    pub host: String,
    pub operation: Operation,
    pub permission: Permission,
}

/// A CreateAcls entry as the wire has it.
#[derive(Debug, Clone)]
pub struct Creation<'a> {
    pub resource_type: i8,
    pub resource_name: &'a str,
    pub pattern_type: i8,
    pub principal: &'a str,
    pub host: &'a str,
    pub operation: i8,
    pub permission: i8,
}

/// Checks a CreateAcls entry as Kafka does; the message says what is wrong
/// (INVALID_REQUEST).
pub fn binding(c: &Creation<'_>) -> Result<Acl, String> {
    let resource_type = ResourceType::from_code(c.resource_type).ok_or_else(|| {
        format!(
            "resource type {} is not one an ACL can name",
            c.resource_type
        )
    })?;
    let pattern_type = PatternType::from_code(c.pattern_type)
        .ok_or_else(|| format!("pattern type {} is not LITERAL or PREFIXED", c.pattern_type))?;
    let operation = Operation::from_code(c.operation)
        .ok_or_else(|| format!("operation {} is not one an ACL can name", c.operation))?;
    let permission = Permission::from_code(c.permission)
        .ok_or_else(|| format!("permission type {} is not ALLOW or DENY", c.permission))?;
    if c.resource_name.is_empty() {
        return Err("the resource name must not be empty".into());
    }
    if resource_type == ResourceType::Cluster
        && (c.resource_name != CLUSTER_NAME || pattern_type != PatternType::Literal)
    {
        return Err(format!(
            "the cluster resource is the literal {CLUSTER_NAME:?}"
        ));
    }
    match c.principal.split_once(':') {
        Some(("User", name)) if !name.is_empty() => {}
        _ => {
            return Err(format!(
                "principal {:?} is not User:<name> (or User:*)",
                c.principal
            ));
        }
    }
    if c.host.is_empty() {
        return Err("the host must be an IP address or *".into());
    }
    Ok(Acl {
        resource_type,
        pattern_type,
        resource_name: c.resource_name.to_string(),
        principal: c.principal.to_string(),
        host: c.host.to_string(),
        operation,
        permission,
    })
}

/// A DescribeAcls or DeleteAcls filter, as the wire has it (None and ANY match anything).
#[derive(Debug, Clone, Default)]
pub struct Filter<'a> {
    pub resource_type: i8,
    pub resource_name: Option<&'a str>,
    pub pattern_type: i8,
    pub principal: Option<&'a str>,
    pub host: Option<&'a str>,
    pub operation: i8,
    pub permission: i8,
}

impl Filter<'_> {
    /// Whether the filter's codes are ones a filter may use (INVALID_REQUEST otherwise).
    pub fn check(&self) -> Result<(), String> {
        let ok = (self.resource_type == ANY
            || ResourceType::from_code(self.resource_type).is_some())
            && (self.pattern_type == ANY
                || self.pattern_type == MATCH
                || PatternType::from_code(self.pattern_type).is_some())
            && (self.operation == ANY || Operation::from_code(self.operation).is_some())
            && (self.permission == ANY || Permission::from_code(self.permission).is_some());
        if ok {
            Ok(())
        } else {
            Err(
                "the filter has an unknown resource type, pattern type, operation or permission"
                    .into(),
            )
        }
    }

    pub fn matches(&self, acl: &Acl) -> bool {
        let code_ok = |want: i8, have: i8| want == ANY || want == have;
        if !code_ok(self.resource_type, acl.resource_type.code())
            || !code_ok(self.operation, acl.operation.code())
            || !code_ok(self.permission, acl.permission.code())
            || self.principal.is_some_and(|p| p != acl.principal)
            || self.host.is_some_and(|h| h != acl.host)
        {
            return false;
        }
        match self.pattern_type {
            // Every binding that would apply to the named resource.
            MATCH => match self.resource_name {
                None => true,
                Some(name) => match acl.pattern_type {
                    PatternType::Literal => {
                        acl.resource_name == name || acl.resource_name == WILDCARD
                    }
                    PatternType::Prefixed => name.starts_with(&acl.resource_name),
                },
            },
            p => {
                code_ok(p, acl.pattern_type.code())
                    && self.resource_name.is_none_or(|n| n == acl.resource_name)
            }
        }
    }
}

/// The authorizer's settings (Kafka's `authorizer.class.name`, `super.users`,
/// `allow.everyone.if.no.acl.found`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    pub super_users: BTreeSet<String>,
    pub allow_if_no_acl: bool,
}

/// The authorizer class names that switch ours on: Kafka's KRaft and ZooKeeper-era ones.
pub const AUTHORIZER_CLASSES: [&str; 2] = [
    "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "kafka.security.authorizer.AclAuthorizer",
];

/// Reads `super.users` (`User:a;User:b`).
pub fn parse_super_users(value: &str) -> Result<BTreeSet<String>, String> {
    value
        .split(';')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| match u.split_once(':') {
            Some(("User", name)) if !name.is_empty() => Ok(u.to_string()),
            _ => Err(format!("super.users: {u:?} is not User:<name>")),
        })
        .collect()
}

/// Whether an ALLOW for `granted` allows `wanted`.
fn implies(granted: Operation, wanted: Operation) -> bool {
    granted == wanted
        || granted == Operation::All
        || (wanted == Operation::Describe
            && matches!(
                granted,
                Operation::Read | Operation::Write | Operation::Delete | Operation::Alter
            ))
        || (wanted == Operation::DescribeConfigs && granted == Operation::AlterConfigs)
}

/// Kafka's decision for `principal` (`User:...`) from `host` doing `op` on `resource`.
pub fn authorize(
    settings: &Settings,
    acls: &AclSet,
    principal: &str,
    host: &str,
    op: Operation,
    kind: ResourceType,
    resource: &str,
) -> bool {
    if settings.super_users.contains(principal) {
        return true;
    }
    let mut named = false;
    let mut allowed = false;
    for acl in acls.naming(kind, resource) {
        named = true;
        let who = acl.principal == principal || acl.principal == "User:*";
        let from = acl.host == host || acl.host == WILDCARD;
        if !(who && from) {
            continue;
        }
        match acl.permission {
            Permission::Deny if acl.operation == op || acl.operation == Operation::All => {
                return false;
            }
            Permission::Deny => {}
            Permission::Allow => allowed |= implies(acl.operation, op),
        }
    }
    allowed || (!named && settings.allow_if_no_acl)
}

/// The ACLs in force on this broker.
pub type Acls = crate::in_force::InForce<AclSet>;

/// ACLs in order, indexed by what they name, so a decision looks at the bindings of one
/// resource (and of the prefixes of its name), not at every ACL.
#[derive(Debug, Default)]
pub struct AclSet {
    list: Vec<Acl>,
    /// Literal bindings (including `*`) by type and name.
    literal: HashMap<ResourceType, HashMap<String, Vec<usize>>>,
    /// Prefixed bindings by type and prefix.
    prefixed: HashMap<ResourceType, HashMap<String, Vec<usize>>>,
}

impl AclSet {
    pub fn new(list: Vec<Acl>) -> Self {
        let mut set = Self {
            list,
            ..Self::default()
        };
        for (i, a) in set.list.iter().enumerate() {
            let index = match a.pattern_type {
                PatternType::Literal => &mut set.literal,
                PatternType::Prefixed => &mut set.prefixed,
            };
            index
                .entry(a.resource_type)
                .or_default()
                .entry(a.resource_name.clone())
                .or_default()
                .push(i);
        }
        set
    }

    pub fn list(&self) -> &[Acl] {
        &self.list
    }

    /// The bindings that name `resource` of `kind`: literally, by `*`, or by a prefix.
    fn naming<'a>(
        &'a self,
        kind: ResourceType,
        resource: &'a str,
    ) -> impl Iterator<Item = &'a Acl> {
        let literal = self.literal.get(&kind);
        let exact = literal.and_then(|l| l.get(resource)).into_iter().flatten();
        let wildcard = literal
            .and_then(|l| l.get(WILDCARD))
            .filter(|_| resource != WILDCARD)
            .into_iter()
            .flatten();
        let prefixed = self.prefixed.get(&kind);
        let prefixes = resource
            .char_indices()
            .map(|(i, c)| i + c.len_utf8())
            .filter_map(move |end| prefixed.and_then(|p| p.get(&resource[..end])))
            .flatten();
        exact
            .chain(wildcard)
            .chain(prefixes)
            .map(|i| &self.list[*i])
    }
}

/// Adds `add` and removes `remove` (exact bindings) from `acls`, kept sorted without
/// duplicates; answers whether anything changed.
pub fn alter(acls: &mut Vec<Acl>, add: &[Acl], remove: &[Acl]) -> bool {
    let before = acls.len();
    let removed: BTreeSet<&Acl> = remove.iter().collect();
    acls.retain(|a| !removed.contains(a));
    let mut changed = acls.len() != before;
    for a in add {
        if let Err(i) = acls.binary_search(a) {
            acls.insert(i, a.clone());
            changed = true;
        }
    }
    changed
}

/// Reads a standalone broker's ACLs (none when the file does not exist yet).
pub fn load(path: &std::path::Path) -> Result<Vec<Acl>, crate::storage::StorageError> {
    let Some(bytes) = crate::storage::checkpoint::read_if_exists(path)? else {
        return Ok(Vec::new());
    };
    let mut acls: Vec<Acl> =
        serde_json::from_slice(&bytes).map_err(|e| crate::storage::StorageError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    acls.sort();
    acls.dedup();
    Ok(acls)
}

pub fn save(path: &std::path::Path, acls: &[Acl]) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(acls).map_err(std::io::Error::other)?;
    crate::storage::checkpoint::write_atomic(path, &json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(
        kind: ResourceType,
        pattern: PatternType,
        name: &str,
        who: &str,
        op: Operation,
        p: Permission,
    ) -> Acl {
        Acl {
            resource_type: kind,
            pattern_type: pattern,
            resource_name: name.into(),
            principal: who.into(),
            host: "*".into(),
            operation: op,
            permission: p,
        }
    }

    use Operation::*;
    use PatternType::*;
    use Permission::*;
    use ResourceType::*;

    fn can(acls: &[Acl], who: &str, op: Operation, kind: ResourceType, name: &str) -> bool {
        let s = Settings {
            super_users: ["User:admin".to_string()].into(),
            allow_if_no_acl: false,
        };
        authorize(
            &s,
            &AclSet::new(acls.to_vec()),
            who,
            "10.0.0.1",
            op,
            kind,
            name,
        )
    }

    #[test]
    fn allow_deny_and_implied_operations_follow_kafka() {
        let acls = [
            acl(Topic, Prefixed, "orders-", "User:alice", Read, Allow),
            acl(Topic, Literal, "orders-secret", "User:alice", Read, Deny),
            acl(Topic, Literal, "*", "User:bob", Write, Allow),
            acl(Group, Literal, "g", "User:*", All, Allow),
            acl(Topic, Literal, "configs", "User:carol", AlterConfigs, Allow),
        ];
        assert!(can(&acls, "User:alice", Read, Topic, "orders-eu"));
        // READ implies DESCRIBE; not WRITE.
        assert!(can(&acls, "User:alice", Describe, Topic, "orders-eu"));
        assert!(!can(&acls, "User:alice", Write, Topic, "orders-eu"));
        // Deny wins over a prefixed allow; a deny of READ does not deny DESCRIBE.
        assert!(!can(&acls, "User:alice", Read, Topic, "orders-secret"));
        assert!(can(&acls, "User:alice", Describe, Topic, "orders-secret"));
        // The wildcard names every topic; User:* every principal.
        assert!(can(&acls, "User:bob", Write, Topic, "anything"));
        assert!(can(&acls, "User:ANONYMOUS", Read, Group, "g"));
        assert!(!can(&acls, "User:ANONYMOUS", Read, Group, "h"));
        assert!(can(&acls, "User:carol", DescribeConfigs, Topic, "configs"));
        assert!(!can(&acls, "User:carol", Describe, Topic, "configs"));
        // Super users need no ACL.
        assert!(can(&acls, "User:admin", Delete, Cluster, CLUSTER_NAME));
        // No ACL names the cluster: refused without allow.everyone.if.no.acl.found.
        assert!(!can(&acls, "User:alice", Create, Cluster, CLUSTER_NAME));
    }

    #[test]
    fn allow_everyone_applies_only_where_no_acl_names_the_resource() {
        let s = Settings {
            allow_if_no_acl: true,
            ..Settings::default()
        };
        let acls = [acl(Topic, Literal, "t", "User:alice", Read, Allow)];
        let acls = AclSet::new(acls.to_vec());
        assert!(authorize(&s, &acls, "User:bob", "h", Write, Topic, "u"));
        assert!(!authorize(&s, &acls, "User:bob", "h", Read, Topic, "t"));
    }

    #[test]
    fn hosts_are_matched_exactly_or_by_wildcard() {
        let mut a = acl(Topic, Literal, "t", "User:alice", Read, Allow);
        a.host = "10.0.0.2".into();
        assert!(!can(&[a.clone()], "User:alice", Read, Topic, "t"));
        a.host = "10.0.0.1".into();
        assert!(can(&[a], "User:alice", Read, Topic, "t"));
    }

    #[test]
    fn alterations_keep_one_sorted_copy() {
        let a = acl(Topic, Literal, "t", "User:alice", Read, Allow);
        let b = acl(Group, Literal, "g", "User:alice", Read, Allow);
        let mut acls = Vec::new();
        assert!(alter(&mut acls, &[a.clone(), b.clone(), a.clone()], &[]));
        assert_eq!(acls.len(), 2);
        assert!(!alter(&mut acls, std::slice::from_ref(&a), &[]));
        assert!(alter(&mut acls, &[], std::slice::from_ref(&a)));
        assert_eq!(acls, vec![b]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("acls.json");
        assert!(load(&path).unwrap().is_empty());
        save(&path, &acls).unwrap();
        assert_eq!(load(&path).unwrap(), acls);
    }

    #[test]
    fn creations_are_checked() {
        let ok = Creation {
            resource_type: 2,
            resource_name: "t",
            pattern_type: 3,
            principal: "User:alice",
            host: "*",
            operation: 3,
            permission: 3,
        };
        assert!(binding(&ok).is_ok());
        for bad in [
            Creation {
                resource_type: 1,
                ..ok.clone()
            },
            Creation {
                pattern_type: 2,
                ..ok.clone()
            },
            Creation {
                operation: 1,
                ..ok.clone()
            },
            Creation {
                permission: 1,
                ..ok.clone()
            },
            Creation {
                principal: "alice",
                ..ok.clone()
            },
            Creation {
                principal: "Group:x",
                ..ok.clone()
            },
            Creation {
                resource_name: "",
                ..ok.clone()
            },
            Creation {
                host: "",
                ..ok.clone()
            },
            Creation {
                resource_type: 4,
                resource_name: "other",
                ..ok.clone()
            },
        ] {
            assert!(binding(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn filters_match_as_kafka_describes_them() {
        let a = acl(Topic, Prefixed, "orders-", "User:alice", Read, Allow);
        let any = Filter {
            resource_type: ANY,
            pattern_type: ANY,
            operation: ANY,
            permission: ANY,
            ..Filter::default()
        };
        assert!(any.check().is_ok() && any.matches(&a));
        let literal = Filter {
            pattern_type: 3,
            resource_name: Some("orders-"),
            ..any.clone()
        };
        assert!(!literal.matches(&a));
        let matching = Filter {
            pattern_type: MATCH,
            resource_name: Some("orders-eu"),
            ..any.clone()
        };
        assert!(matching.matches(&a));
        let other_user = Filter {
            principal: Some("User:bob"),
            ..any.clone()
        };
        assert!(!other_user.matches(&a));
        assert!(
            Filter {
                operation: 0,
                ..any
            }
            .check()
            .is_err()
        );
    }

    /// The index finds exactly the bindings a scan of every ACL would: literal names, `*`,
    /// and every prefix (multi-byte characters included).
    #[test]
    fn the_index_finds_what_a_scan_finds() {
        use proptest::prelude::*;
        fn scan<'a>(acls: &'a [Acl], kind: ResourceType, name: &str) -> Vec<&'a Acl> {
            acls.iter()
                .filter(|a| {
                    a.resource_type == kind
                        && match a.pattern_type {
                            Literal => a.resource_name == name || a.resource_name == WILDCARD,
                            Prefixed => name.starts_with(&a.resource_name),
                        }
                })
                .collect()
        }
        let names = prop::sample::select(vec!["a", "ab", "abc", "*", "é", "éa", "b", "abcd"]);
        let kinds = prop::sample::select(vec![Topic, Group]);
        let binding = (kinds.clone(), any::<bool>(), names.clone()).prop_map(|(k, prefixed, n)| {
            acl(
                k,
                if prefixed { Prefixed } else { Literal },
                n,
                "User:x",
                Read,
                Allow,
            )
        });
        proptest!(|(list in prop::collection::vec(binding, 0..12), kind in kinds, name in names)| {
            let mut list = list;
            list.sort();
            list.dedup();
            let set = AclSet::new(list.clone());
            let mut found: Vec<&Acl> = set.naming(kind, name).collect();
            let mut want = scan(&list, kind, name);
            found.sort();
            want.sort();
            prop_assert_eq!(found, want);
        });
    }
}
