//! AlterConfigs (whole override sets) and IncrementalAlterConfigs (SET, DELETE, APPEND,
//! SUBTRACT per key): `kafka-configs --alter`. Topic configs change through `topic_admin`
//! (the controller in a cluster) and reach live partitions at once. Broker configs are
//! static here (set in `--config-file`), so a change to one is refused by name.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse, ResponseKind, alter_configs_response,
    incremental_alter_configs_response,
};

use kafka_protocol::protocol::StrBytes;

use super::topic_admin::{Admin, Refusal};
use super::{Reply, str_bytes};
use crate::state::Broker;
use crate::topic_config::KNOWN_KEYS;

/// Read-merge-write rounds of one IncrementalAlterConfigs before it gives up.
const MERGE_ATTEMPTS: usize = 5;

/// Kafka's ConfigResource types.
const TOPIC: i8 = 2;
const BROKER: i8 = 4;

/// One key's change, in IncrementalAlterConfigs' terms (AlterConfigs is a SET of every key
/// given and a DELETE of every other override).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Set(String),
    Delete,
    Append(String),
    Subtract(String),
}

impl Op {
    fn parse(code: i8, value: Option<&str>) -> Result<Self, Refusal> {
        let value = || value.unwrap_or_default().to_string();
        match code {
            0 => Ok(Self::Set(value())),
            1 => Ok(Self::Delete),
            2 => Ok(Self::Append(value())),
            3 => Ok(Self::Subtract(value())),
            other => Err((
                ResponseError::InvalidRequest,
                format!("unknown config operation {other}"),
            )),
        }
    }
}

/// List-typed topic configs (APPEND and SUBTRACT apply only to these) and their defaults.
const LIST_CONFIGS: &[(&str, &str)] = &[("cleanup.policy", "delete")];

/// The override map after `ops`; pure, so the rules are tested without a broker.
fn apply_ops(
    current: &BTreeMap<String, String>,
    ops: &[(String, Op)],
) -> Result<BTreeMap<String, String>, Refusal> {
    let mut seen = HashSet::new();
    if let Some((dup, _)) = ops.iter().find(|(k, _)| !seen.insert(k.as_str())) {
        return Err((
            ResponseError::InvalidRequest,
            format!("config '{dup}' appears more than once for this resource"),
        ));
    }
    let mut next = current.clone();
    for (key, op) in ops {
        // Deleting an override that is not there changes nothing, whatever the key (Kafka's
        // `kafka-reassign-partitions --verify` clears throttle configs so).
        if *op == Op::Delete && !next.contains_key(key) {
            continue;
        }
        if !KNOWN_KEYS.iter().any(|(k, _)| k == key) {
            return Err((
                ResponseError::InvalidConfig,
                format!("unknown topic config '{key}'"),
            ));
        }
        let list_default = LIST_CONFIGS.iter().find(|(k, _)| k == key).map(|(_, d)| *d);
        match op {
            Op::Set(v) => {
                next.insert(key.clone(), v.clone());
            }
            Op::Delete => {
                next.remove(key);
            }
            Op::Append(v) | Op::Subtract(v) => {
                let Some(default) = list_default else {
                    return Err((
                        ResponseError::InvalidConfig,
                        format!("config '{key}' is not a list; APPEND and SUBTRACT need one"),
                    ));
                };
                let now = next.get(key).map_or(default, String::as_str);
                let mut items: Vec<String> = now
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect();
                for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    match op {
                        Op::Append(_) if !items.iter().any(|i| i == item) => {
                            items.push(item.to_string())
                        }
                        Op::Subtract(_) => items.retain(|i| i != item),
                        _ => {}
                    }
                }
                next.insert(key.clone(), items.join(","));
            }
        }
    }
    Ok(next)
}

/// Applies `ops` to one resource.
async fn alter(
    admin: &Admin,
    resource_type: i8,
    name: &str,
    ops: Result<Vec<(String, Op)>, Refusal>,
    replace: bool,
    validate_only: bool,
) -> Result<(), Refusal> {
    let ops = ops?;
    match resource_type {
        TOPIC if replace => {
            // AlterConfigs: the whole set, whatever it was (Kafka's last writer wins).
            admin.topic(name).await?;
            let mut next = apply_ops(&BTreeMap::new(), &ops)?;
            if name == crate::group::OFFSETS_TOPIC {
                next = keep_offsets_topic_configs(&ops, next)?;
            }
            admin.set_configs(name, next, validate_only).await
        }
        TOPIC => {
            // A merge into the overrides as read: applied only if they are still those, else
            // read again (at the controller) and merged again, so two concurrent changes never
            // undo one another.
            for attempt in 0..MERGE_ATTEMPTS {
                let topic = admin.topic_from(name, attempt > 0).await?;
                let mut next = apply_ops(&topic.overrides, &ops)?;
                if name == crate::group::OFFSETS_TOPIC {
                    next = keep_offsets_topic_configs(&ops, next)?;
                }
                if admin
                    .set_configs_if(name, Some(&topic.overrides), next, validate_only)
                    .await?
                {
                    return Ok(());
                }
            }
            Err(super::topic_admin::config_conflict(name))
        }
        // No broker config is dynamic here, so there is never one to delete.
        BROKER if ops.iter().all(|(_, op)| *op == Op::Delete) => Ok(()),
        BROKER => Err((
            ResponseError::InvalidRequest,
            format!(
                "Cannot update these configs dynamically: {}; broker configs are read at start \
                 (--config-file), change them there and restart the broker",
                ops.iter()
                    .map(|(k, _)| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
        other => Err((
            ResponseError::InvalidRequest,
            format!("config resource type {other} is not supported (only topics and brokers)"),
        )),
    }
}

/// The offsets topic's own overrides (no retention by time or size: snapshots bound it) hold
/// every group's committed offsets: a request may not change them, and AlterConfigs, which
/// replaces the whole set, keeps them.
fn keep_offsets_topic_configs(
    ops: &[(String, Op)],
    mut next: BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, Refusal> {
    let fixed: BTreeMap<String, String> = crate::group::Coordinator::offsets_topic_configs()
        .into_iter()
        .filter(|(k, _)| k.starts_with("retention."))
        .collect();
    if let Some((key, _)) = ops.iter().find(|(k, _)| fixed.contains_key(k)) {
        return Err((
            ResponseError::InvalidConfig,
            format!(
                "'{key}' of the internal topic {} is fixed: the group coordinator bounds it \
                 with snapshots, and retention would delete committed offsets",
                crate::group::OFFSETS_TOPIC
            ),
        ));
    }
    next.extend(fixed);
    Ok(next)
}

/// One resource of either request: its type, name and the changes it asks for.
type Resource = (i8, StrBytes, Result<Vec<(String, Op)>, Refusal>);

/// Applies each resource in request order; a resource named twice is refused both times
/// (Kafka's answer), and nothing of it changes. One outcome per resource.
async fn alter_all(
    admin: &Admin,
    resources: Vec<Resource>,
    replace: bool,
    validate_only: bool,
) -> Vec<(i8, StrBytes, Option<Refusal>)> {
    let mut seen = HashSet::new();
    let repeated: HashSet<(i8, String)> = resources
        .iter()
        .map(|(t, n, _)| (*t, n.to_string()))
        .filter(|r| !seen.insert(r.clone()))
        .collect();
    let mut out = Vec::with_capacity(resources.len());
    for (kind, name, ops) in resources {
        let outcome = if repeated.contains(&(kind, name.to_string())) {
            Err((
                ResponseError::InvalidRequest,
                "resource appears more than once in the request".into(),
            ))
        } else {
            alter(admin, kind, &name, ops, replace, validate_only).await
        };
        out.push((kind, name, outcome.err()));
    }
    out
}

pub fn handle_incremental(broker: &Arc<Broker>, req: IncrementalAlterConfigsRequest) -> Reply {
    let admin = Admin::of(broker);
    Reply::Later(Box::pin(async move {
        let resources = req
            .resources
            .into_iter()
            .map(|r| {
                let ops = r
                    .configs
                    .iter()
                    .map(|c| {
                        Op::parse(c.config_operation, c.value.as_deref())
                            .map(|op| (c.name.to_string(), op))
                    })
                    .collect();
                (r.resource_type, r.resource_name, ops)
            })
            .collect();
        let mut out = IncrementalAlterConfigsResponse::default();
        for (kind, name, refusal) in alter_all(&admin, resources, false, req.validate_only).await {
            let mut r = incremental_alter_configs_response::AlterConfigsResourceResponse::default();
            r.resource_type = kind;
            r.resource_name = name;
            if let Some((code, message)) = refusal {
                r.error_code = code.code();
                r.error_message = Some(str_bytes(message));
            }
            out.responses.push(r);
        }
        ResponseKind::IncrementalAlterConfigs(out)
    }))
}

pub fn handle(broker: &Arc<Broker>, req: AlterConfigsRequest) -> Reply {
    let admin = Admin::of(broker);
    Reply::Later(Box::pin(async move {
        // The whole set: every key given is set, every other override removed.
        let resources = req
            .resources
            .into_iter()
            .map(|r| {
                let ops = r
                    .configs
                    .iter()
                    .map(|c| {
                        let op = match &c.value {
                            Some(v) => Op::Set(v.to_string()),
                            None => Op::Delete,
                        };
                        (c.name.to_string(), op)
                    })
                    .collect();
                (r.resource_type, r.resource_name, Ok(ops))
            })
            .collect();
        let mut out = AlterConfigsResponse::default();
        for (kind, name, refusal) in alter_all(&admin, resources, true, req.validate_only).await {
            let mut r = alter_configs_response::AlterConfigsResourceResponse::default();
            r.resource_type = kind;
            r.resource_name = name;
            if let Some((code, message)) = refusal {
                r.error_code = code.code();
                r.error_message = Some(str_bytes(message));
            }
            out.responses.push(r);
        }
        ResponseKind::AlterConfigs(out)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn op(k: &str, op: Op) -> (String, Op) {
        (k.to_string(), op)
    }

    #[test]
    fn set_and_delete_change_only_their_keys() {
        let now = map(&[("retention.ms", "1000"), ("segment.bytes", "4096")]);
        let next = apply_ops(
            &now,
            &[
                op("retention.ms", Op::Delete),
                op("max.message.bytes", Op::Set("2000".into())),
            ],
        )
        .unwrap();
        assert_eq!(
            next,
            map(&[("segment.bytes", "4096"), ("max.message.bytes", "2000")])
        );
        // Deleting a key that has no override is a no-op, as in Kafka, even one this broker
        // does not know (tools clear Kafka's throttle configs so).
        let throttle = op("leader.replication.throttled.replicas", Op::Delete);
        assert_eq!(apply_ops(&now, &[throttle]).unwrap(), now);
        assert_eq!(
            apply_ops(&now, &[op("segment.ms", Op::Delete)]).unwrap(),
            now
        );
    }

    #[test]
    fn unknown_keys_duplicates_and_list_ops_on_scalars_are_refused() {
        let now = BTreeMap::new();
        let refused = |ops: &[(String, Op)]| apply_ops(&now, ops).unwrap_err().0;
        assert_eq!(
            refused(&[op("retention.msx", Op::Set("1".into()))]),
            ResponseError::InvalidConfig
        );
        assert_eq!(
            refused(&[
                op("retention.ms", Op::Set("1".into())),
                op("retention.ms", Op::Delete)
            ]),
            ResponseError::InvalidRequest
        );
        assert_eq!(
            refused(&[op("retention.ms", Op::Append("1".into()))]),
            ResponseError::InvalidConfig
        );
        assert_eq!(
            Op::parse(7, None).unwrap_err().0,
            ResponseError::InvalidRequest
        );
    }

    #[test]
    fn the_offsets_topics_retention_stays_off() {
        let set = |k: &str| vec![op(k, Op::Set("1000".into()))];
        for key in ["retention.ms", "retention.bytes"] {
            let e = keep_offsets_topic_configs(&set(key), BTreeMap::new()).unwrap_err();
            assert_eq!(e.0, ResponseError::InvalidConfig, "{key}");
        }
        let kept =
            keep_offsets_topic_configs(&set("segment.bytes"), map(&[("segment.bytes", "1000")]))
                .unwrap();
        assert_eq!(kept.get("retention.ms").map(String::as_str), Some("-1"));
        assert_eq!(kept.get("retention.bytes").map(String::as_str), Some("-1"));
        assert_eq!(kept.get("segment.bytes").map(String::as_str), Some("1000"));
    }

    #[test]
    fn append_and_subtract_edit_a_list_from_its_default() {
        let now = BTreeMap::new();
        let appended = apply_ops(&now, &[op("cleanup.policy", Op::Append("delete".into()))]);
        assert_eq!(appended.unwrap(), map(&[("cleanup.policy", "delete")]));
        let subtracted = apply_ops(&now, &[op("cleanup.policy", Op::Subtract("delete".into()))]);
        assert_eq!(subtracted.unwrap(), map(&[("cleanup.policy", "")]));
    }
}
