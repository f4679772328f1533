//! Client quota configuration, Kafka's model (KIP-13, KIP-55, KIP-546): quotas are set on
//! entities made of a user, a client id, or both, each a name or the default (`<default>`);
//! which entity's quota applies to a client is decided per quota key, most specific first.
//! Pure: validation, alteration, description filters and resolution, all unit tested here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Bytes a producer may send per second (the Produce requests' size).
pub const PRODUCER_BYTE_RATE: &str = "producer_byte_rate";
/// Bytes a consumer may fetch per second (the Fetch responses' size).
pub const CONSUMER_BYTE_RATE: &str = "consumer_byte_rate";
/// Percent of one request-handling thread's time per quota window (200 = two threads).
pub const REQUEST_PERCENTAGE: &str = "request_percentage";

/// The keys Kafka has and this broker does not enforce: refused by name rather than stored
/// and silently ignored.
const NOT_ENFORCED: &[&str] = &["controller_mutation_rate", "connection_creation_rate"];

pub const USER: &str = "user";
pub const CLIENT_ID: &str = "client-id";
pub const IP: &str = "ip";

/// One part of an entity: a specific name, or the default for that type.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Name {
    Default,
    Named(String),
}

impl Name {
    /// Kafka's wire form: null is the default.
    pub fn from_wire(name: Option<&str>) -> Self {
        name.map_or(Name::Default, |n| Name::Named(n.to_string()))
    }
    pub fn to_wire(&self) -> Option<&str> {
        match self {
            Name::Default => None,
            Name::Named(n) => Some(n),
        }
    }
}

/// A quota entity: a user, a client id, or a user's client id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Entity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Name>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<Name>,
}

impl Entity {
    /// Each (type, name) part, in Kafka's order.
    pub fn parts(&self) -> Vec<(&'static str, &Name)> {
        let mut parts = Vec::new();
        if let Some(u) = &self.user {
            parts.push((USER, u));
        }
        if let Some(c) = &self.client_id {
            parts.push((CLIENT_ID, c));
        }
        parts
    }
    fn part(&self, entity_type: &str) -> Option<&Name> {
        match entity_type {
            USER => self.user.as_ref(),
            CLIENT_ID => self.client_id.as_ref(),
            _ => None,
        }
    }
}

impl std::fmt::Display for Entity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .parts()
            .into_iter()
            .map(|(t, n)| format!("{t}={}", n.to_wire().unwrap_or("<default>")))
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// A quota value. Validated values are finite and positive, so equality is plain.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Value(pub f64);

impl Eq for Value {}

/// One entity's quotas, as kept in the cluster metadata (and standalone, on disk).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientQuota {
    pub entity: Entity,
    pub values: BTreeMap<String, Value>,
}

/// One change to one key of an entity: set it, or remove it (`None`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Op {
    pub key: String,
    pub value: Option<f64>,
}

/// Every change to one entity, applied together or not at all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alteration {
    pub entity: Entity,
    pub ops: Vec<Op>,
}

/// Why an alteration or a filter is refused (Kafka's INVALID_REQUEST, with this message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

fn invalid(msg: impl Into<String>) -> Invalid {
    Invalid(msg.into())
}

/// Parses Kafka's (type, name) list into an entity: user and client-id, each at most once;
/// `ip` entities (connection_creation_rate) are not enforced here and refused by name.
pub fn entity_from_parts<'a>(
    parts: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
) -> Result<Entity, Invalid> {
    let mut entity = Entity {
        user: None,
        client_id: None,
    };
    for (entity_type, name) in parts {
        let slot = match entity_type {
            USER => &mut entity.user,
            CLIENT_ID => &mut entity.client_id,
            IP => {
                return Err(invalid(
                    "ip quotas (connection_creation_rate) are not supported by this broker; \
                     see max.connections.per.ip",
                ));
            }
            other => return Err(invalid(format!("unexpected quota entity type '{other}'"))),
        };
        if slot.is_some() {
            return Err(invalid(format!(
                "quota entity type '{entity_type}' given more than once"
            )));
        }
        if name == Some("") {
            return Err(invalid(format!(
                "empty {entity_type} name (the default is a null name)"
            )));
        }
        if name.is_some_and(|n| n.len() > MAX_NAME_BYTES) {
            return Err(invalid(format!(
                "{entity_type} names for quotas are limited to {MAX_NAME_BYTES} bytes"
            )));
        }
        *slot = Some(Name::from_wire(name));
    }
    if entity.user.is_none() && entity.client_id.is_none() {
        return Err(invalid("a quota entity needs a user, a client-id or both"));
    }
    Ok(entity)
}

/// Checks one key and value the way Kafka's QuotaConfigs define them: byte rates are
/// positive whole numbers, the request percentage a positive number.
pub fn check_op(op: &Op) -> Result<(), Invalid> {
    let integral = match op.key.as_str() {
        PRODUCER_BYTE_RATE | CONSUMER_BYTE_RATE => true,
        REQUEST_PERCENTAGE => false,
        k if NOT_ENFORCED.contains(&k) => {
            return Err(invalid(format!(
                "quota '{k}' is not enforced by this broker, so it is refused rather than kept"
            )));
        }
        k => return Err(invalid(format!("invalid quota configuration key '{k}'"))),
    };
    let Some(v) = op.value else { return Ok(()) };
    if !v.is_finite() || v <= 0.0 {
        return Err(invalid(format!(
            "invalid value {v} for '{}': it must be positive",
            op.key
        )));
    }
    if integral && (v.fract() != 0.0 || v > i64::MAX as f64) {
        return Err(invalid(format!(
            "invalid value {v} for '{}': it must be a whole number of bytes per second",
            op.key
        )));
    }
    Ok(())
}

/// Checks an alteration whole: a key changed twice in one entity is refused, as Kafka does.
pub fn check(alteration: &Alteration) -> Result<(), Invalid> {
    let mut seen = std::collections::HashSet::new();
    for op in &alteration.ops {
        check_op(op)?;
        if !seen.insert(op.key.as_str()) {
            return Err(invalid(format!(
                "quota '{}' is changed more than once for {}",
                op.key, alteration.entity
            )));
        }
    }
    Ok(())
}

/// Most bytes the quota configuration may take as JSON: it travels in every metadata image,
/// and on Kubernetes the controller's whole state lives in one object (etcd keeps objects
/// under 1.5 MiB). Some 3,000 entities with short names.
pub const MAX_QUOTA_BYTES: usize = 256 * 1024;

/// Longest user or client id name a quota may be set on.
pub const MAX_NAME_BYTES: usize = 1024;

/// Applies a checked alteration; an entity left with no quota is dropped. Returns whether
/// anything changed.
pub fn apply(quotas: &mut Vec<ClientQuota>, alteration: &Alteration) -> Result<bool, Invalid> {
    check(alteration)?;
    let at = quotas.iter().position(|q| q.entity == alteration.entity);
    let mut values = at.map(|i| quotas[i].values.clone()).unwrap_or_default();
    for op in &alteration.ops {
        match op.value {
            Some(v) => values.insert(op.key.clone(), Value(v)),
            None => values.remove(&op.key),
        };
    }
    let before = at.map(|i| &quotas[i].values);
    if before == Some(&values) || (before.is_none() && values.is_empty()) {
        return Ok(false);
    }
    match (at, values.is_empty()) {
        (Some(i), true) => {
            quotas.remove(i);
        }
        (Some(i), false) => quotas[i].values = values,
        (None, _) => {
            let added = ClientQuota {
                entity: alteration.entity.clone(),
                values,
            };
            let size = |q: &[ClientQuota]| serde_json::to_vec(q).map_or(usize::MAX, |v| v.len());
            if size(quotas).saturating_add(size(std::slice::from_ref(&added))) > MAX_QUOTA_BYTES {
                return Err(invalid(format!(
                    "the quota configuration is limited to {MAX_QUOTA_BYTES} bytes; remove \
                     some entities first"
                )));
            }
            quotas.push(added);
            quotas.sort_by(|a, b| a.entity.cmp(&b.entity));
        }
    }
    Ok(true)
}

/// How a DescribeClientQuotas filter component matches an entity part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// That exact name.
    Exact(String),
    /// The default.
    Default,
    /// Any name, the default included.
    Any,
}

/// A DescribeClientQuotas filter: every component must match a part of the entity; with
/// `strict`, the entity may have no other parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub components: Vec<(String, Match)>,
    pub strict: bool,
}

impl Filter {
    /// Kafka's wire form: match type 0 exact (a name), 1 default, 2 any specified.
    pub fn from_wire<'a>(
        components: impl IntoIterator<Item = (&'a str, i8, Option<&'a str>)>,
        strict: bool,
    ) -> Result<Self, Invalid> {
        let mut parsed: Vec<(String, Match)> = Vec::new();
        for (entity_type, match_type, name) in components {
            if ![USER, CLIENT_ID, IP].contains(&entity_type) {
                return Err(invalid(format!(
                    "unexpected quota entity type '{entity_type}'"
                )));
            }
            if parsed.iter().any(|(t, _)| t == entity_type) {
                return Err(invalid(format!(
                    "duplicate filter component for entity type '{entity_type}'"
                )));
            }
            let m = match (match_type, name) {
                (0, Some(n)) => Match::Exact(n.to_string()),
                (0, None) => {
                    return Err(invalid(format!(
                        "an exact match for '{entity_type}' needs a name"
                    )));
                }
                (1 | 2, Some(_)) => {
                    return Err(invalid(format!(
                        "a name is only given with an exact match (of '{entity_type}')"
                    )));
                }
                (1, None) => Match::Default,
                (2, None) => Match::Any,
                (other, _) => return Err(invalid(format!("unknown match type {other}"))),
            };
            parsed.push((entity_type.to_string(), m));
        }
        let has = |t: &str| parsed.iter().any(|(p, _)| p == t);
        if has(IP) && (has(USER) || has(CLIENT_ID)) {
            return Err(invalid(
                "ip filters cannot be combined with user or client-id filters",
            ));
        }
        Ok(Self {
            components: parsed,
            strict,
        })
    }

    pub fn matches(&self, entity: &Entity) -> bool {
        let all = self
            .components
            .iter()
            .all(|(t, m)| match (entity.part(t), m) {
                (None, _) => false,
                (Some(_), Match::Any) => true,
                (Some(Name::Default), Match::Default) => true,
                (Some(Name::Named(n)), Match::Exact(want)) => n == want,
                _ => false,
            });
        all && (!self.strict || entity.parts().len() == self.components.len())
    }
}

/// The entity whose `key` quota applies to a client, and its value: Kafka's order, most
/// specific first (user and client id, user and default client, user, default user and
/// client id, default user and default client, default user, client id, default client).
pub fn resolve<'a>(
    quotas: &'a [ClientQuota],
    user: &str,
    client_id: &str,
    key: &str,
) -> Option<(&'a Entity, f64)> {
    resolve_by(
        |e| quotas.iter().find(|q| &q.entity == e),
        user,
        client_id,
        key,
    )
}

/// As [`resolve`], finding each candidate entity's quotas with `find` (an index).
pub fn resolve_by<'a>(
    find: impl Fn(&Entity) -> Option<&'a ClientQuota>,
    user: &str,
    client_id: &str,
    key: &str,
) -> Option<(&'a Entity, f64)> {
    let u = || Some(Name::Named(user.to_string()));
    let c = || Some(Name::Named(client_id.to_string()));
    let d = || Some(Name::Default);
    let order = [
        (u(), c()),
        (u(), d()),
        (u(), None),
        (d(), c()),
        (d(), d()),
        (d(), None),
        (None, c()),
        (None, d()),
    ];
    order.into_iter().find_map(|(user, client_id)| {
        let entity = Entity { user, client_id };
        find(&entity).and_then(|q| q.values.get(key).map(|v| (&q.entity, v.0)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(user: Option<Option<&str>>, client: Option<Option<&str>>) -> Entity {
        Entity {
            user: user.map(Name::from_wire),
            client_id: client.map(Name::from_wire),
        }
    }

    fn set(entity: &Entity, key: &str, v: f64) -> Alteration {
        Alteration {
            entity: entity.clone(),
            ops: vec![Op {
                key: key.into(),
                value: Some(v),
            }],
        }
    }

    #[test]
    fn entities_are_parsed_as_kafka_names_them() {
        let ent = entity_from_parts([(USER, Some("alice")), (CLIENT_ID, None)]).unwrap();
        assert_eq!(ent, e(Some(Some("alice")), Some(None)));
        assert_eq!(ent.to_string(), "user=alice,client-id=<default>");
        for bad in [
            vec![],
            vec![(USER, Some("a")), (USER, Some("b"))],
            vec![("group", Some("g"))],
            vec![(IP, Some("1.2.3.4"))],
            vec![(USER, Some(""))],
        ] {
            assert!(entity_from_parts(bad.clone()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn values_are_checked_by_key() {
        let op = |k: &str, v: Option<f64>| Op {
            key: k.into(),
            value: v,
        };
        assert!(check_op(&op(PRODUCER_BYTE_RATE, Some(1024.0))).is_ok());
        assert!(check_op(&op(REQUEST_PERCENTAGE, Some(12.5))).is_ok());
        assert!(check_op(&op(CONSUMER_BYTE_RATE, None)).is_ok());
        for bad in [
            op(PRODUCER_BYTE_RATE, Some(1.5)),
            op(PRODUCER_BYTE_RATE, Some(0.0)),
            op(CONSUMER_BYTE_RATE, Some(-5.0)),
            op(REQUEST_PERCENTAGE, Some(f64::NAN)),
            op(REQUEST_PERCENTAGE, Some(f64::INFINITY)),
            op("controller_mutation_rate", Some(10.0)),
            op("bogus", Some(1.0)),
        ] {
            assert!(check_op(&bad).is_err(), "{bad:?}");
        }
        let twice = Alteration {
            entity: e(Some(Some("a")), None),
            ops: vec![
                op(PRODUCER_BYTE_RATE, Some(1.0)),
                op(PRODUCER_BYTE_RATE, None),
            ],
        };
        assert!(check(&twice).is_err());
    }

    #[test]
    fn alterations_set_replace_and_remove() {
        let alice = e(Some(Some("alice")), None);
        let mut q = Vec::new();
        assert!(apply(&mut q, &set(&alice, PRODUCER_BYTE_RATE, 100.0)).unwrap());
        assert!(!apply(&mut q, &set(&alice, PRODUCER_BYTE_RATE, 100.0)).unwrap());
        assert!(apply(&mut q, &set(&alice, CONSUMER_BYTE_RATE, 200.0)).unwrap());
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].values.len(), 2);
        let remove = |k: &str| Alteration {
            entity: alice.clone(),
            ops: vec![Op {
                key: k.into(),
                value: None,
            }],
        };
        assert!(apply(&mut q, &remove(PRODUCER_BYTE_RATE)).unwrap());
        assert!(apply(&mut q, &remove(CONSUMER_BYTE_RATE)).unwrap());
        assert!(q.is_empty(), "an entity with no quota left is dropped");
        assert!(!apply(&mut q, &remove(CONSUMER_BYTE_RATE)).unwrap());
        // An invalid alteration changes nothing.
        let bad = Alteration {
            entity: alice.clone(),
            ops: vec![
                Op {
                    key: PRODUCER_BYTE_RATE.into(),
                    value: Some(5.0),
                },
                Op {
                    key: "bogus".into(),
                    value: Some(1.0),
                },
            ],
        };
        assert!(apply(&mut q, &bad).is_err());
        assert!(q.is_empty());
        // Bounded: a new entity past the limit is refused; existing ones still change.
        let mut i = 0;
        while serde_json::to_vec(&q).unwrap().len() < MAX_QUOTA_BYTES - 100 {
            for _ in 0..50 {
                q.push(ClientQuota {
                    entity: e(Some(Some(&format!("u{i}"))), None),
                    values: BTreeMap::from([(PRODUCER_BYTE_RATE.to_string(), Value(1.0))]),
                });
                i += 1;
            }
        }
        while q.len() > 1 && serde_json::to_vec(&q).unwrap().len() > MAX_QUOTA_BYTES - 100 {
            q.pop();
            i -= 1;
        }
        q.sort_by(|a, b| a.entity.cmp(&b.entity));
        assert!(i > 2000, "only {i} entities fit");
        assert!(serde_json::to_vec(&q).unwrap().len() <= MAX_QUOTA_BYTES);
        let wide = e(Some(Some(&"w".repeat(MAX_NAME_BYTES))), None);
        assert!(apply(&mut q, &set(&wide, PRODUCER_BYTE_RATE, 1.0)).is_err());
        let u0 = e(Some(Some("u0")), None);
        assert!(apply(&mut q, &set(&u0, PRODUCER_BYTE_RATE, 2.0)).unwrap());
        let long = "n".repeat(MAX_NAME_BYTES + 1);
        assert!(entity_from_parts([(USER, Some(long.as_str()))]).is_err());
    }

    #[test]
    fn the_most_specific_entity_wins_per_key() {
        let mut q = Vec::new();
        let levels = [
            (e(Some(Some("u")), Some(Some("c"))), 1.0),
            (e(Some(Some("u")), Some(None)), 2.0),
            (e(Some(Some("u")), None), 3.0),
            (e(Some(None), Some(Some("c"))), 4.0),
            (e(Some(None), Some(None)), 5.0),
            (e(Some(None), None), 6.0),
            (e(None, Some(Some("c"))), 7.0),
            (e(None, Some(None)), 8.0),
        ];
        for (ent, v) in &levels {
            apply(&mut q, &set(ent, PRODUCER_BYTE_RATE, *v)).unwrap();
        }
        // Remove levels from the most specific down: each time the next one applies.
        for (ent, v) in &levels {
            let (found, value) = resolve(&q, "u", "c", PRODUCER_BYTE_RATE).unwrap();
            assert_eq!((found, value), (ent, *v));
            let rm = Alteration {
                entity: ent.clone(),
                ops: vec![Op {
                    key: PRODUCER_BYTE_RATE.into(),
                    value: None,
                }],
            };
            apply(&mut q, &rm).unwrap();
        }
        assert!(resolve(&q, "u", "c", PRODUCER_BYTE_RATE).is_none());
        // Per key: another user's quota and another key never apply.
        apply(
            &mut q,
            &set(&e(Some(Some("x")), None), CONSUMER_BYTE_RATE, 9.0),
        )
        .unwrap();
        assert!(resolve(&q, "u", "c", CONSUMER_BYTE_RATE).is_none());
        assert!(resolve(&q, "x", "c", PRODUCER_BYTE_RATE).is_none());
        assert_eq!(resolve(&q, "x", "c", CONSUMER_BYTE_RATE).unwrap().1, 9.0);
    }

    #[test]
    fn filters_match_as_kafka_describes_them() {
        let alice = e(Some(Some("alice")), None);
        let alice_app = e(Some(Some("alice")), Some(Some("app")));
        let default_user = e(Some(None), None);
        let app = e(None, Some(Some("app")));
        let all = [&alice, &alice_app, &default_user, &app];
        let matching =
            |f: Filter| -> Vec<&Entity> { all.iter().copied().filter(|x| f.matches(x)).collect() };
        let f = |c: Vec<(&str, i8, Option<&str>)>, strict| Filter::from_wire(c, strict).unwrap();
        assert_eq!(
            matching(f(vec![(USER, 0, Some("alice"))], false)),
            vec![&alice, &alice_app]
        );
        assert_eq!(
            matching(f(vec![(USER, 0, Some("alice"))], true)),
            vec![&alice]
        );
        assert_eq!(
            matching(f(vec![(USER, 1, None)], false)),
            vec![&default_user]
        );
        assert_eq!(
            matching(f(vec![(USER, 2, None)], true)),
            vec![&alice, &default_user]
        );
        assert_eq!(
            matching(f(vec![(CLIENT_ID, 2, None)], false)),
            vec![&alice_app, &app]
        );
        assert_eq!(matching(f(vec![], false)).len(), 4);
        assert!(matching(f(vec![], true)).is_empty());
        for bad in [
            vec![("group", 2, None)],
            vec![(USER, 0, None)],
            vec![(USER, 7, None)],
            vec![(USER, 2, None), (USER, 1, None)],
            vec![(USER, 1, Some("alice"))],
            vec![(IP, 2, None), (USER, 2, None)],
        ] {
            assert!(Filter::from_wire(bad.clone(), false).is_err(), "{bad:?}");
        }
    }
}
