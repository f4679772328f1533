//! DescribeClientQuotas and AlterClientQuotas (`kafka-configs --entity-type users|clients`):
//! the quotas `crate::quota` enforces. Standalone they are this broker's, kept in its data
//! directory; in a cluster they are the controller's, and every broker enforces what its
//! metadata carries. Alterations are checked here first, so `validate_only` answers exactly
//! what a real change would, and an entity refused changes nothing.

use std::collections::HashMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_client_quotas_response::{
    EntityData as AlteredEntity, EntryData as AlteredEntry,
};
use kafka_protocol::messages::describe_client_quotas_response::{EntityData, EntryData, ValueData};
use kafka_protocol::messages::{
    AlterClientQuotasRequest, AlterClientQuotasResponse, DescribeClientQuotasRequest,
    DescribeClientQuotasResponse, ResponseKind,
};

use super::topic_admin::{Admin, Refusal, controller_refusal, until_shown};
use super::{Reply, str_bytes};
use crate::quota::ClientQuota;
use crate::quota::config::{self, Alteration, Entity, Filter, Invalid, Op};
use crate::state::Broker;

pub fn handle_describe(
    broker: &Broker,
    req: DescribeClientQuotasRequest,
) -> DescribeClientQuotasResponse {
    let mut r = DescribeClientQuotasResponse::default();
    let filter = Filter::from_wire(
        req.components
            .iter()
            .map(|c| (c.entity_type.as_str(), c.match_type, c._match.as_deref())),
        req.strict,
    );
    let filter = match filter {
        Ok(f) => f,
        Err(Invalid(message)) => {
            r.error_code = ResponseError::InvalidRequest.code();
            r.error_message = Some(str_bytes(message));
            return r;
        }
    };
    let entries = broker
        .quotas
        .current()
        .iter()
        .filter(|q| filter.matches(&q.entity))
        .map(|q| {
            let mut e = EntryData::default();
            e.entity = q
                .entity
                .parts()
                .into_iter()
                .map(|(t, name)| {
                    let mut d = EntityData::default();
                    d.entity_type = str_bytes(t);
                    d.entity_name = name.to_wire().map(str_bytes);
                    d
                })
                .collect();
            e.values = q
                .values
                .iter()
                .map(|(k, v)| {
                    let mut d = ValueData::default();
                    d.key = str_bytes(k.as_str());
                    d.value = v.0;
                    d
                })
                .collect();
            e
        })
        .collect();
    r.entries = Some(entries);
    r
}

/// Each request entry, parsed and checked: its entity, an entity listed twice (Kafka refuses
/// both: which change would win?), its keys and values, and whether it fits beside the
/// quotas this broker knows (so `validate_only` answers what a real change would).
fn alterations(
    entries: &[kafka_protocol::messages::alter_client_quotas_request::EntryData],
    known: &[ClientQuota],
) -> Vec<Result<Alteration, Invalid>> {
    let entities: Vec<Result<Entity, Invalid>> = entries
        .iter()
        .map(|entry| {
            config::entity_from_parts(
                entry
                    .entity
                    .iter()
                    .map(|e| (e.entity_type.as_str(), e.entity_name.as_deref())),
            )
        })
        .collect();
    let mut listed: HashMap<&Entity, usize> = HashMap::new();
    for e in entities.iter().flatten() {
        *listed.entry(e).or_default() += 1;
    }
    let mut simulated = known.to_vec();
    entries
        .iter()
        .zip(&entities)
        .map(|(entry, entity)| {
            let entity = entity.clone()?;
            if listed.get(&entity).is_some_and(|n| *n > 1) {
                return Err(Invalid(format!(
                    "quota entity {entity} is listed more than once in one request"
                )));
            }
            let ops = entry
                .ops
                .iter()
                .map(|o| Op {
                    key: o.key.to_string(),
                    value: (!o.remove).then_some(o.value),
                })
                .collect();
            let alteration = Alteration { entity, ops };
            config::apply(&mut simulated, &alteration)?;
            Ok(alteration)
        })
        .collect()
}

pub fn handle_alter(broker: &Arc<Broker>, req: AlterClientQuotasRequest) -> Reply {
    let admin = Admin::of(broker);
    Reply::Later(Box::pin(async move {
        let known = admin.broker().quotas.current();
        let parsed = alterations(&req.entries, &known);
        let valid: Vec<Alteration> = parsed
            .iter()
            .filter_map(|p| p.as_ref().ok().cloned())
            .collect();
        let applied: Result<(), Refusal> = if req.validate_only || valid.is_empty() {
            Ok(())
        } else {
            alter(&admin, &valid).await
        };
        let mut r = AlterClientQuotasResponse::default();
        r.entries = req
            .entries
            .iter()
            .zip(&parsed)
            .map(|(entry, parsed)| {
                let mut e = AlteredEntry::default();
                e.entity = entry
                    .entity
                    .iter()
                    .map(|d| {
                        let mut a = AlteredEntity::default();
                        a.entity_type = d.entity_type.clone();
                        a.entity_name = d.entity_name.clone();
                        a
                    })
                    .collect();
                let refused = match (parsed, &applied) {
                    (Err(Invalid(m)), _) => Some((ResponseError::InvalidRequest, m.clone())),
                    (Ok(_), Err((code, m))) => Some((*code, m.clone())),
                    (Ok(_), Ok(())) => None,
                };
                if let Some((code, message)) = refused {
                    e.error_code = code.code();
                    e.error_message = Some(str_bytes(message));
                }
                e
            })
            .collect();
        ResponseKind::AlterClientQuotas(r)
    }))
}

async fn alter(admin: &Admin, alterations: &[Alteration]) -> Result<(), Refusal> {
    match admin {
        Admin::Local(broker) => {
            let broker = Arc::clone(broker);
            let alterations = alterations.to_vec();
            crate::blocking::off_runtime(move || alter_local(&broker, &alterations))
        }
        Admin::Cluster(_, rt) => {
            rt.membership
                .client()
                .alter_client_quotas(alterations)
                .await
                .map_err(|e| controller_refusal(&e))?;
            // Answered once this broker enforces it (its metadata applied, not just received).
            let broker = admin.broker();
            until_shown("a client quota change", || {
                let mut q = broker.quotas.current().as_ref().clone();
                alterations
                    .iter()
                    .all(|a| !config::apply(&mut q, a).unwrap_or(true))
            })
            .await;
            Ok(())
        }
    }
}

/// Standalone: applied, written to the data directory, then enforced.
fn alter_local(broker: &Broker, alterations: &[Alteration]) -> Result<(), Refusal> {
    let _one_at_a_time = broker.quotas.changing();
    let mut quotas = broker.quotas.current().as_ref().clone();
    let mut changed = false;
    for a in alterations {
        changed |= config::apply(&mut quotas, a)
            .map_err(|Invalid(m)| (ResponseError::InvalidRequest, m))?;
    }
    if changed {
        crate::quota::save(&broker.quota_file(), &quotas).map_err(|e| {
            (
                ResponseError::KafkaStorageError,
                format!("cannot write {}: {e}", broker.quota_file().display()),
            )
        })?;
        broker.quotas.set(quotas);
    }
    Ok(())
}
