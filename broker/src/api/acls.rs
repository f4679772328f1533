//! CreateAcls, DescribeAcls and DeleteAcls (`kafka-acls`): the bindings `auth::acl` decides
//! with. Without an authorizer they answer SECURITY_DISABLED, as Kafka does, so no one
//! believes an ACL protects anything. Standalone the ACLs are this broker's, kept in its data
//! directory; in a cluster they are the controller's and every broker enforces what its
//! metadata carries. Who may call these is decided by `api::authorize` (ALTER, or DESCRIBE,
//! on the cluster).

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse, ResponseKind,
};

use super::topic_admin::{Admin, Refusal, controller_refusal, until_shown};
use super::{Reply, str_bytes};
use crate::auth::acl::{self, Acl, Creation, Filter};
use crate::state::Broker;

const DISABLED: &str = "No authorizer is configured (authorizer.class.name)";

pub fn handle_describe(broker: &Broker, req: DescribeAclsRequest) -> DescribeAclsResponse {
    let mut r = DescribeAclsResponse::default();
    if broker.config.authorizer.is_none() {
        r.error_code = ResponseError::SecurityDisabled.code();
        r.error_message = Some(str_bytes(DISABLED));
        return r;
    }
    let filter = Filter {
        resource_type: req.resource_type_filter,
        resource_name: req.resource_name_filter.as_deref(),
        pattern_type: req.pattern_type_filter,
        principal: req.principal_filter.as_deref(),
        host: req.host_filter.as_deref(),
        operation: req.operation,
        permission: req.permission_type,
    };
    if let Err(m) = filter.check() {
        r.error_code = ResponseError::InvalidRequest.code();
        r.error_message = Some(str_bytes(m));
        return r;
    }
    let acls = broker.acls.current();
    // Grouped by resource pattern, as Kafka answers.
    let mut by_resource: BTreeMap<(i8, String, i8), Vec<AclDescription>> = BTreeMap::new();
    for a in acls.list().iter().filter(|a| filter.matches(a)) {
        let mut d = AclDescription::default();
        d.principal = str_bytes(a.principal.clone());
        d.host = str_bytes(a.host.clone());
        d.operation = a.operation.code();
        d.permission_type = a.permission.code();
        by_resource
            .entry((
                a.resource_type.code(),
                a.resource_name.clone(),
                a.pattern_type.code(),
            ))
            .or_default()
            .push(d);
    }
    r.resources = by_resource
        .into_iter()
        .map(|((kind, name, pattern), acls)| {
            let mut res = DescribeAclsResource::default();
            res.resource_type = kind;
            res.resource_name = str_bytes(name);
            res.pattern_type = pattern;
            res.acls = acls;
            res
        })
        .collect();
    r
}

pub fn handle_create(broker: &Arc<Broker>, req: CreateAclsRequest) -> Reply {
    let admin = Admin::of(broker);
    Reply::Later(Box::pin(async move {
        let enabled = admin.broker().config.authorizer.is_some();
        let checked: Vec<Result<Acl, Refusal>> = req
            .creations
            .iter()
            .map(|c| {
                if !enabled {
                    return Err((ResponseError::SecurityDisabled, DISABLED.to_string()));
                }
                acl::binding(&Creation {
                    resource_type: c.resource_type,
                    resource_name: &c.resource_name,
                    pattern_type: c.resource_pattern_type,
                    principal: &c.principal,
                    host: &c.host,
                    operation: c.operation,
                    permission: c.permission_type,
                })
                .map_err(|m| (ResponseError::InvalidRequest, m))
            })
            .collect();
        let add: Vec<Acl> = checked
            .iter()
            .filter_map(|c| c.as_ref().ok().cloned())
            .collect();
        let applied = if add.is_empty() {
            Ok(())
        } else {
            alter(&admin, add, Vec::new()).await
        };
        let mut r = CreateAclsResponse::default();
        r.results = checked
            .into_iter()
            .map(|c| {
                let mut e = AclCreationResult::default();
                let refused = match (c, &applied) {
                    (Err(refusal), _) => Some(refusal),
                    (Ok(_), Err(refusal)) => Some(refusal.clone()),
                    (Ok(_), Ok(())) => None,
                };
                if let Some((code, message)) = refused {
                    e.error_code = code.code();
                    e.error_message = Some(str_bytes(message));
                }
                e
            })
            .collect();
        ResponseKind::CreateAcls(r)
    }))
}

pub fn handle_delete(broker: &Arc<Broker>, req: DeleteAclsRequest) -> Reply {
    let admin = Admin::of(broker);
    Reply::Later(Box::pin(async move {
        let enabled = admin.broker().config.authorizer.is_some();
        let known = admin.broker().acls.current();
        // Each filter's matches among the ACLs this broker knows; removed as one change.
        let matched: Vec<Result<Vec<Acl>, Refusal>> = req
            .filters
            .iter()
            .map(|f| {
                if !enabled {
                    return Err((ResponseError::SecurityDisabled, DISABLED.to_string()));
                }
                let filter = Filter {
                    resource_type: f.resource_type_filter,
                    resource_name: f.resource_name_filter.as_deref(),
                    pattern_type: f.pattern_type_filter,
                    principal: f.principal_filter.as_deref(),
                    host: f.host_filter.as_deref(),
                    operation: f.operation,
                    permission: f.permission_type,
                };
                filter
                    .check()
                    .map_err(|m| (ResponseError::InvalidRequest, m))?;
                Ok(known
                    .list()
                    .iter()
                    .filter(|a| filter.matches(a))
                    .cloned()
                    .collect())
            })
            .collect();
        let remove: Vec<Acl> = matched.iter().flatten().flatten().cloned().collect();
        let applied = if remove.is_empty() {
            Ok(())
        } else {
            alter(&admin, Vec::new(), remove).await
        };
        let mut r = DeleteAclsResponse::default();
        r.filter_results = matched
            .into_iter()
            .map(|m| {
                let mut fr = DeleteAclsFilterResult::default();
                let m = match (m, &applied) {
                    (Ok(_), Err(refusal)) => Err(refusal.clone()),
                    (m, _) => m,
                };
                match m {
                    Err((code, message)) => {
                        fr.error_code = code.code();
                        fr.error_message = Some(str_bytes(message));
                    }
                    Ok(acls) => {
                        fr.matching_acls = acls
                            .into_iter()
                            .map(|a| {
                                let mut d = DeleteAclsMatchingAcl::default();
                                d.resource_type = a.resource_type.code();
                                d.resource_name = str_bytes(a.resource_name);
                                d.pattern_type = a.pattern_type.code();
                                d.principal = str_bytes(a.principal);
                                d.host = str_bytes(a.host);
                                d.operation = a.operation.code();
                                d.permission_type = a.permission.code();
                                d
                            })
                            .collect();
                    }
                }
                fr
            })
            .collect();
        ResponseKind::DeleteAcls(r)
    }))
}

async fn alter(admin: &Admin, add: Vec<Acl>, remove: Vec<Acl>) -> Result<(), Refusal> {
    match admin {
        Admin::Local(broker) => {
            let broker = Arc::clone(broker);
            crate::blocking::off_runtime(move || {
                let _one_at_a_time = broker.acls.changing();
                let mut acls = broker.acls.current().list().to_vec();
                if acl::alter(&mut acls, &add, &remove) {
                    acl::save(&broker.acl_file(), &acls).map_err(|e| {
                        (
                            ResponseError::KafkaStorageError,
                            format!("cannot write {}: {e}", broker.acl_file().display()),
                        )
                    })?;
                    broker.acls.set(acl::AclSet::new(acls));
                }
                Ok(())
            })
        }
        Admin::Cluster(_, rt) => {
            rt.membership
                .client()
                .alter_acls(&add, &remove)
                .await
                .map_err(|e| controller_refusal(&e))?;
            // Answered once this broker enforces it (Kafka's brokers catch up within moments
            // too).
            let broker = admin.broker();
            until_shown("an ACL change", || {
                let current = broker.acls.current();
                let acls = current.list();
                add.iter().all(|a| acls.binary_search(a).is_ok())
                    && remove.iter().all(|a| acls.binary_search(a).is_err())
            })
            .await;
            Ok(())
        }
    }
}
