//! Kafka's authorization of every request, when the broker has an authorizer
//! (`authorizer.class.name`): which operation on which resource each API needs (as Kafka's
//! KafkaApis asks it), decided by `auth::acl` for the connection's principal (`User:<name>`,
//! `User:ANONYMOUS` without one) and host.
//!
//! A refused part of a request is taken out before the handler runs (a refused Produce
//! writes nothing, a refused CreateTopics creates nothing) and answered with Kafka's error
//! (TOPIC_AUTHORIZATION_FAILED, GROUP_AUTHORIZATION_FAILED, CLUSTER_AUTHORIZATION_FAILED) in
//! the response, which `Post` fixes up after the handler. Read-only answers are filtered
//! after (Metadata hides topics the principal may not describe). An API this module does
//! not know is refused by closing the connection: nothing is served unchecked.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::Client;
use crate::auth::acl::{self, AclSet, CLUSTER_NAME, Operation, ResourceType, Settings};

/// Changes a response after its handler ran (adds the refused parts, hides what may not be
/// seen).
pub type Post = Box<dyn FnOnce(&mut ResponseKind) + Send>;

pub enum Checked {
    /// Run the (possibly reduced) request, then `Post` on its response.
    Go(RequestKind, Option<Post>),
    /// Answer this instead; nothing runs.
    Refused(ResponseKind),
    /// An API without an authorization rule: the connection closes.
    Unchecked,
}

/// Who is asking, with the ACLs in force when the request arrived.
#[derive(Clone)]
pub struct Who {
    settings: Arc<Settings>,
    acls: Arc<AclSet>,
    principal: String,
    host: String,
}

impl Who {
    pub fn new(settings: Arc<Settings>, acls: Arc<AclSet>, client: &Client) -> Self {
        let name = client.principal.as_deref().unwrap_or("ANONYMOUS");
        Self {
            settings,
            acls,
            principal: format!("User:{name}"),
            host: client.host.trim_start_matches('/').to_string(),
        }
    }

    fn can(&self, op: Operation, kind: ResourceType, name: &str) -> bool {
        acl::authorize(
            &self.settings,
            &self.acls,
            &self.principal,
            &self.host,
            op,
            kind,
            name,
        )
    }

    fn topic(&self, op: Operation, name: &str) -> bool {
        self.can(op, ResourceType::Topic, name)
    }

    fn group(&self, op: Operation, name: &str) -> bool {
        self.can(op, ResourceType::Group, name)
    }

    fn cluster(&self, op: Operation) -> bool {
        self.can(op, ResourceType::Cluster, CLUSTER_NAME)
    }

    pub fn is_super(&self) -> bool {
        self.settings.super_users.contains(&self.principal)
    }

    /// Kafka's rule for an idempotent producer (KIP-679): IDEMPOTENT_WRITE on the cluster, or
    /// WRITE on some topic.
    fn may_produce_idempotently(&self) -> bool {
        self.cluster(Operation::IdempotentWrite)
            || self.acls.list().iter().any(|a| {
                a.resource_type == ResourceType::Topic
                    && (a.principal == self.principal || a.principal == "User:*")
                    && (a.host == self.host || a.host == acl::WILDCARD)
                    && a.permission == acl::Permission::Allow
                    && matches!(a.operation, Operation::Write | Operation::All)
                    && self.topic(Operation::Write, &a.resource_name)
            })
    }
}

fn code(e: ResponseError) -> i16 {
    e.code()
}

fn topic_denied() -> i16 {
    code(ResponseError::TopicAuthorizationFailed)
}

fn group_denied() -> i16 {
    code(ResponseError::GroupAuthorizationFailed)
}

fn cluster_denied() -> i16 {
    code(ResponseError::ClusterAuthorizationFailed)
}

fn message(what: &str) -> Option<StrBytes> {
    Some(StrBytes::from_string(format!("Not authorized: {what}")))
}

fn post(f: impl FnOnce(&mut ResponseKind) + Send + 'static) -> Option<Post> {
    Some(Box::new(f))
}

/// Splits `items` by `allowed`; the refused ones are returned.
fn split<T>(items: &mut Vec<T>, mut allowed: impl FnMut(&T) -> bool) -> Vec<T> {
    let (keep, refused): (Vec<T>, Vec<T>) =
        std::mem::take(items).into_iter().partition(|t| allowed(t));
    *items = keep;
    refused
}

/// An API the cluster's permission `$op` decides whole: run, or refused with the response's
/// top-level error and message.
macro_rules! cluster_only {
    ($who:expr, $op:expr, $kind:ident, $r:expr, $resp:ty) => {{
        if $who.cluster($op) {
            return Checked::Go(RequestKind::$kind($r), None);
        }
        let mut resp = <$resp>::default();
        resp.error_code = cluster_denied();
        resp.error_message = message(&format!("{} on the cluster", $op.name()));
        Checked::Refused(ResponseKind::$kind(resp))
    }};
}

/// AlterConfigs and IncrementalAlterConfigs (the same shape, two generated types): the
/// resources without ALTER_CONFIGS are taken out and answered refused.
macro_rules! alter_configs {
    ($who:expr, $r:expr, $kind:ident, $response:ident) => {{
        let mut r = $r;
        let refused = split(&mut r.resources, |res| {
            config_allowed(
                &$who,
                Operation::AlterConfigs,
                res.resource_type,
                &res.resource_name,
            )
        });
        Checked::Go(
            RequestKind::$kind(r),
            post(move |resp| {
                if let ResponseKind::$kind(a) = resp {
                    for res in refused {
                        let mut x = $response::AlterConfigsResourceResponse::default();
                        x.error_code = config_denied(res.resource_type);
                        x.error_message = message("ALTER_CONFIGS");
                        x.resource_type = res.resource_type;
                        x.resource_name = res.resource_name;
                        a.responses.push(x);
                    }
                }
            }),
        )
    }};
}

/// Authorizes one request for `who`.
pub fn check(who: Who, request: RequestKind, version: i16) -> Checked {
    use Operation::*;
    if who.is_super() {
        return Checked::Go(request, None);
    }
    match request {
        // Served to anyone: they carry nothing to protect, or are how a client logs in.
        r @ (RequestKind::ApiVersions(_)
        | RequestKind::SaslHandshake(_)
        | RequestKind::SaslAuthenticate(_)
        | RequestKind::DescribeCluster(_)) => Checked::Go(r, None),

        RequestKind::Produce(mut r) => {
            let refused = split(&mut r.topic_data, |t| who.topic(Write, &t.name));
            let refused: Vec<(TopicName, Vec<i32>)> = refused
                .into_iter()
                .map(|t| (t.name, t.partition_data.iter().map(|p| p.index).collect()))
                .collect();
            let fix = (!refused.is_empty()).then(|| {
                post(move |resp| {
                    if let ResponseKind::Produce(p) = resp {
                        for (name, partitions) in refused {
                            let mut t = produce_response::TopicProduceResponse::default();
                            t.name = name;
                            t.partition_responses = partitions
                                .into_iter()
                                .map(|i| {
                                    let mut pr =
                                        produce_response::PartitionProduceResponse::default();
                                    pr.index = i;
                                    pr.error_code = topic_denied();
                                    pr.base_offset = -1;
                                    pr.log_append_time_ms = -1;
                                    pr.log_start_offset = -1;
                                    pr
                                })
                                .collect();
                            p.responses.push(t);
                        }
                    }
                })
            });
            Checked::Go(RequestKind::Produce(r), fix.flatten())
        }

        RequestKind::Fetch(r) if r.replica_id.0 >= 0 || r.replica_state.replica_id.0 >= 0 => {
            // A follower's fetch (it reads past the high watermark): CLUSTER_ACTION, which
            // brokers have as super users.
            if who.cluster(ClusterAction) {
                return Checked::Go(RequestKind::Fetch(r), None);
            }
            let mut resp = FetchResponse::default();
            resp.responses = r
                .topics
                .into_iter()
                .map(|t| {
                    let mut tr = fetch_response::FetchableTopicResponse::default();
                    tr.partitions = t
                        .partitions
                        .iter()
                        .map(|p| fetch_denied(p.partition))
                        .collect();
                    tr.topic = t.topic;
                    tr
                })
                .collect();
            Checked::Refused(ResponseKind::Fetch(resp))
        }
        RequestKind::Fetch(mut r) => {
            // Replica fetches come from brokers (super users) or are refused by the fetch
            // handler itself. A consumer's topics: refused ones are answered with an error,
            // and a fetch session's partitions are checked again in the answer (an ACL may
            // have gone since they joined the session).
            let refused = split(&mut r.topics, |t| who.topic(Read, &t.topic));
            let refused: Vec<(TopicName, Vec<i32>)> = refused
                .into_iter()
                .map(|t| (t.topic, t.partitions.iter().map(|p| p.partition).collect()))
                .collect();
            let who = who.clone();
            Checked::Go(
                RequestKind::Fetch(r),
                post(move |resp| {
                    if let ResponseKind::Fetch(f) = resp {
                        for t in &mut f.responses {
                            if !who.topic(Read, &t.topic) {
                                for p in &mut t.partitions {
                                    *p = fetch_denied(p.partition_index);
                                }
                            }
                        }
                        for (name, partitions) in refused {
                            let mut t = fetch_response::FetchableTopicResponse::default();
                            t.topic = name;
                            t.partitions = partitions.into_iter().map(fetch_denied).collect();
                            f.responses.push(t);
                        }
                    }
                }),
            )
        }

        RequestKind::Metadata(mut r) => {
            let mut refused = Vec::new();
            let mut uncreatable: Vec<TopicName> = Vec::new();
            if let Some(topics) = &mut r.topics {
                refused = split(topics, |t| {
                    t.name.as_ref().is_none_or(|n| who.topic(Describe, n))
                });
                // Auto-creation needs CREATE (on the cluster or on each topic named); without
                // it none is created (even those the client may create: a simplification),
                // and a missing topic it may not create is answered TOPIC_AUTHORIZATION_FAILED,
                // as Kafka does, so producers stop waiting for it.
                if r.allow_auto_topic_creation && !who.cluster(Create) {
                    uncreatable = topics
                        .iter()
                        .filter_map(|t| t.name.clone())
                        .filter(|n| !who.topic(Create, n))
                        .collect();
                    if !uncreatable.is_empty() {
                        r.allow_auto_topic_creation = false;
                    }
                }
            }
            let refused: Vec<TopicName> = refused.into_iter().filter_map(|t| t.name).collect();
            let who = who.clone();
            Checked::Go(
                RequestKind::Metadata(r),
                post(move |resp| {
                    if let ResponseKind::Metadata(m) = resp {
                        m.topics
                            .retain(|t| t.name.as_ref().is_some_and(|n| who.topic(Describe, n)));
                        let missing = code(ResponseError::UnknownTopicOrPartition);
                        for t in &mut m.topics {
                            if t.error_code == missing
                                && t.name.as_ref().is_some_and(|n| uncreatable.contains(n))
                            {
                                t.error_code = topic_denied();
                            }
                        }
                        for name in refused {
                            let mut t = metadata_response::MetadataResponseTopic::default();
                            t.name = Some(name);
                            t.error_code = topic_denied();
                            m.topics.push(t);
                        }
                    }
                }),
            )
        }

        RequestKind::ListOffsets(mut r) => {
            let refused = split(&mut r.topics, |t| who.topic(Describe, &t.name));
            let refused: Vec<(TopicName, Vec<i32>)> = refused
                .into_iter()
                .map(|t| {
                    (
                        t.name,
                        t.partitions.iter().map(|p| p.partition_index).collect(),
                    )
                })
                .collect();
            Checked::Go(
                RequestKind::ListOffsets(r),
                post(move |resp| {
                    if let ResponseKind::ListOffsets(l) = resp {
                        for (name, partitions) in refused {
                            let mut t = list_offsets_response::ListOffsetsTopicResponse::default();
                            t.name = name;
                            t.partitions = partitions
                                .into_iter()
                                .map(|i| {
                                    let mut p = list_offsets_response::ListOffsetsPartitionResponse::default();
                                    p.partition_index = i;
                                    p.error_code = topic_denied();
                                    p.timestamp = -1;
                                    p.offset = -1;
                                    p.leader_epoch = -1;
                                    p
                                })
                                .collect();
                            l.topics.push(t);
                        }
                    }
                }),
            )
        }

        RequestKind::OffsetForLeaderEpoch(mut r) => {
            let refused = split(&mut r.topics, |t| who.topic(Describe, &t.topic));
            let refused: Vec<(TopicName, Vec<i32>)> = refused
                .into_iter()
                .map(|t| (t.topic, t.partitions.iter().map(|p| p.partition).collect()))
                .collect();
            Checked::Go(
                RequestKind::OffsetForLeaderEpoch(r),
                post(move |resp| {
                    if let ResponseKind::OffsetForLeaderEpoch(o) = resp {
                        for (name, partitions) in refused {
                            let mut t = offset_for_leader_epoch_response::OffsetForLeaderTopicResult::default();
                            t.topic = name;
                            t.partitions = partitions
                                .into_iter()
                                .map(|i| {
                                    let mut p =
                                        offset_for_leader_epoch_response::EpochEndOffset::default();
                                    p.partition = i;
                                    p.error_code = topic_denied();
                                    p.leader_epoch = -1;
                                    p.end_offset = -1;
                                    p
                                })
                                .collect();
                            o.topics.push(t);
                        }
                    }
                }),
            )
        }

        RequestKind::CreateTopics(mut r) => {
            let anywhere = who.cluster(Create);
            let refused = split(&mut r.topics, |t| anywhere || who.topic(Create, &t.name));
            let refused: Vec<TopicName> = refused.into_iter().map(|t| t.name).collect();
            Checked::Go(
                RequestKind::CreateTopics(r),
                post(move |resp| {
                    if let ResponseKind::CreateTopics(c) = resp {
                        for name in refused {
                            let mut t = create_topics_response::CreatableTopicResult::default();
                            t.name = name;
                            t.error_code = topic_denied();
                            t.error_message = message("CREATE on the topic or the cluster");
                            t.topic_config_error_code = topic_denied();
                            t.num_partitions = -1;
                            t.replication_factor = -1;
                            c.topics.push(t);
                        }
                    }
                }),
            )
        }

        RequestKind::DeleteTopics(mut r) => {
            let by_name = split(&mut r.topic_names, |n| who.topic(Delete, n));
            // By id (v6): refused unless named, since the name decides.
            let by_state = split(&mut r.topics, |t| {
                t.name.as_ref().is_some_and(|n| who.topic(Delete, n))
            });
            let refused: Vec<(Option<TopicName>, uuid::Uuid)> = by_name
                .into_iter()
                .map(|n| (Some(n), uuid::Uuid::nil()))
                .chain(by_state.into_iter().map(|t| (t.name, t.topic_id)))
                .collect();
            Checked::Go(
                RequestKind::DeleteTopics(r),
                post(move |resp| {
                    if let ResponseKind::DeleteTopics(d) = resp {
                        for (name, id) in refused {
                            let mut t = delete_topics_response::DeletableTopicResult::default();
                            t.name = name;
                            t.topic_id = id;
                            t.error_code = topic_denied();
                            t.error_message = message("DELETE on the topic");
                            d.responses.push(t);
                        }
                    }
                }),
            )
        }

        RequestKind::DeleteRecords(mut r) => {
            let refused = split(&mut r.topics, |t| who.topic(Delete, &t.name));
            Checked::Go(
                RequestKind::DeleteRecords(r),
                post(move |resp| {
                    if let ResponseKind::DeleteRecords(d) = resp {
                        for t in refused {
                            let mut tr =
                                delete_records_response::DeleteRecordsTopicResult::default();
                            tr.name = t.name;
                            tr.partitions = t
                                .partitions
                                .iter()
                                .map(|p| {
                                    let mut pr = delete_records_response::DeleteRecordsPartitionResult::default();
                                    pr.partition_index = p.partition_index;
                                    pr.low_watermark = -1;
                                    pr.error_code = topic_denied();
                                    pr
                                })
                                .collect();
                            d.topics.push(tr);
                        }
                    }
                }),
            )
        }

        RequestKind::CreatePartitions(mut r) => {
            let refused = split(&mut r.topics, |t| who.topic(Alter, &t.name));
            Checked::Go(
                RequestKind::CreatePartitions(r),
                post(move |resp| {
                    if let ResponseKind::CreatePartitions(c) = resp {
                        for t in refused {
                            let mut tr =
                                create_partitions_response::CreatePartitionsTopicResult::default();
                            tr.name = t.name;
                            tr.error_code = topic_denied();
                            tr.error_message = message("ALTER on the topic");
                            c.results.push(tr);
                        }
                    }
                }),
            )
        }

        RequestKind::AlterConfigs(r) => {
            alter_configs!(who, r, AlterConfigs, alter_configs_response)
        }
        RequestKind::IncrementalAlterConfigs(r) => {
            alter_configs!(
                who,
                r,
                IncrementalAlterConfigs,
                incremental_alter_configs_response
            )
        }

        RequestKind::DescribeConfigs(r) => {
            let who = who.clone();
            Checked::Go(
                RequestKind::DescribeConfigs(r),
                post(move |resp| {
                    if let ResponseKind::DescribeConfigs(d) = resp {
                        for res in &mut d.results {
                            if !config_allowed(
                                &who,
                                DescribeConfigs,
                                res.resource_type,
                                &res.resource_name,
                            ) {
                                res.error_code = config_denied(res.resource_type);
                                res.error_message = message("DESCRIBE_CONFIGS");
                                res.configs.clear();
                            }
                        }
                    }
                }),
            )
        }

        RequestKind::DescribeTopicPartitions(r) => {
            let listed = !r.topics.is_empty();
            let who = who.clone();
            Checked::Go(
                RequestKind::DescribeTopicPartitions(r),
                post(move |resp| {
                    if let ResponseKind::DescribeTopicPartitions(d) = resp {
                        if listed {
                            for t in &mut d.topics {
                                if !t.name.as_ref().is_some_and(|n| who.topic(Describe, n)) {
                                    t.error_code = topic_denied();
                                    t.topic_id = uuid::Uuid::nil();
                                    t.partitions.clear();
                                }
                            }
                        } else {
                            d.topics.retain(|t| {
                                t.name.as_ref().is_some_and(|n| who.topic(Describe, n))
                            });
                        }
                    }
                }),
            )
        }

        RequestKind::DescribeProducers(r) => {
            let who = who.clone();
            Checked::Go(
                RequestKind::DescribeProducers(r),
                post(move |resp| {
                    if let ResponseKind::DescribeProducers(d) = resp {
                        for t in &mut d.topics {
                            if !who.topic(Read, &t.name) {
                                for p in &mut t.partitions {
                                    p.error_code = topic_denied();
                                    p.error_message = message("READ on the topic");
                                    p.active_producers.clear();
                                }
                            }
                        }
                    }
                }),
            )
        }

        RequestKind::InitProducerId(r) => {
            if r.transactional_id.as_ref().is_none_or(|t| t.is_empty())
                && !who.may_produce_idempotently()
            {
                let mut resp = InitProducerIdResponse::default();
                resp.error_code = cluster_denied();
                resp.producer_id = (-1).into();
                resp.producer_epoch = -1;
                return Checked::Refused(ResponseKind::InitProducerId(resp));
            }
            Checked::Go(RequestKind::InitProducerId(r), None)
        }

        // Groups.
        RequestKind::FindCoordinator(mut r) => {
            if r.key_type != 0 {
                return Checked::Go(RequestKind::FindCoordinator(r), None);
            }
            if version < 4 {
                if who.group(Describe, &r.key) {
                    return Checked::Go(RequestKind::FindCoordinator(r), None);
                }
                let mut resp = FindCoordinatorResponse::default();
                resp.error_code = group_denied();
                resp.error_message = message("DESCRIBE on the group");
                resp.node_id = (-1).into();
                resp.port = -1;
                return Checked::Refused(ResponseKind::FindCoordinator(resp));
            }
            let refused = split(&mut r.coordinator_keys, |k| who.group(Describe, k));
            Checked::Go(
                RequestKind::FindCoordinator(r),
                post(move |resp| {
                    if let ResponseKind::FindCoordinator(f) = resp {
                        for key in refused {
                            let mut c = find_coordinator_response::Coordinator::default();
                            c.key = key;
                            c.node_id = (-1).into();
                            c.port = -1;
                            c.error_code = group_denied();
                            c.error_message = message("DESCRIBE on the group");
                            f.coordinators.push(c);
                        }
                    }
                }),
            )
        }
        RequestKind::JoinGroup(r) => {
            if who.group(Read, &r.group_id) {
                return Checked::Go(RequestKind::JoinGroup(r), None);
            }
            let mut resp = JoinGroupResponse::default();
            resp.error_code = group_denied();
            resp.generation_id = -1;
            Checked::Refused(ResponseKind::JoinGroup(resp))
        }
        RequestKind::SyncGroup(r) => {
            if who.group(Read, &r.group_id) {
                return Checked::Go(RequestKind::SyncGroup(r), None);
            }
            let mut resp = SyncGroupResponse::default();
            resp.error_code = group_denied();
            Checked::Refused(ResponseKind::SyncGroup(resp))
        }
        RequestKind::Heartbeat(r) => {
            if who.group(Read, &r.group_id) {
                return Checked::Go(RequestKind::Heartbeat(r), None);
            }
            let mut resp = HeartbeatResponse::default();
            resp.error_code = group_denied();
            Checked::Refused(ResponseKind::Heartbeat(resp))
        }
        // As Kafka: READ on the group, and DESCRIBE on every topic it subscribes to.
        RequestKind::ConsumerGroupHeartbeat(r) => {
            let mut resp = ConsumerGroupHeartbeatResponse::default();
            resp.member_epoch = -1;
            if !who.group(Read, &r.group_id) {
                resp.error_code = group_denied();
                return Checked::Refused(ResponseKind::ConsumerGroupHeartbeat(resp));
            }
            let hidden: Vec<String> = r
                .subscribed_topic_names
                .iter()
                .flatten()
                .filter(|t| !who.topic(Describe, t))
                .map(|t| t.0.to_string())
                .collect();
            if hidden.is_empty() {
                return Checked::Go(RequestKind::ConsumerGroupHeartbeat(r), None);
            }
            resp.error_code = ResponseError::TopicAuthorizationFailed.code();
            resp.error_message = Some(StrBytes::from_string(format!(
                "The group member is not authorized to describe topics {}.",
                hidden.join(", ")
            )));
            Checked::Refused(ResponseKind::ConsumerGroupHeartbeat(resp))
        }
        RequestKind::ConsumerGroupDescribe(r) => {
            let who = who.clone();
            Checked::Go(
                RequestKind::ConsumerGroupDescribe(r),
                post(move |resp| {
                    if let ResponseKind::ConsumerGroupDescribe(d) = resp {
                        for g in &mut d.groups {
                            // As Kafka: a group whose members hold topics the client may
                            // not describe is refused whole, so no topic name leaks.
                            let hidden_topic = || {
                                g.members.iter().any(|m| {
                                    m.assignment
                                        .topic_partitions
                                        .iter()
                                        .chain(&m.target_assignment.topic_partitions)
                                        .any(|tp| !who.topic(Describe, &tp.topic_name))
                                })
                            };
                            let error = if !who.group(Describe, &g.group_id) {
                                Some((group_denied(), None))
                            } else if hidden_topic() {
                                Some((
                                    ResponseError::TopicAuthorizationFailed.code(),
                                    Some(
                                        "The group has described topic(s) that the client is not authorized to describe.",
                                    ),
                                ))
                            } else {
                                None
                            };
                            if let Some((code, text)) = error {
                                let id = std::mem::take(&mut g.group_id);
                                *g = consumer_group_describe_response::DescribedGroup::default();
                                g.group_id = id;
                                g.error_code = code;
                                g.error_message = text.map(StrBytes::from_static_str);
                            }
                        }
                    }
                }),
            )
        }
        RequestKind::LeaveGroup(r) => {
            if who.group(Read, &r.group_id) {
                return Checked::Go(RequestKind::LeaveGroup(r), None);
            }
            let mut resp = LeaveGroupResponse::default();
            resp.error_code = group_denied();
            Checked::Refused(ResponseKind::LeaveGroup(resp))
        }
        RequestKind::OffsetCommit(mut r) => {
            let group_ok = who.group(Read, &r.group_id);
            let refused = if group_ok {
                split(&mut r.topics, |t| who.topic(Read, &t.name))
            } else {
                std::mem::take(&mut r.topics)
            };
            let error = if group_ok {
                topic_denied()
            } else {
                group_denied()
            };
            let refused: Vec<(TopicName, Vec<i32>)> = refused
                .into_iter()
                .map(|t| {
                    (
                        t.name,
                        t.partitions.iter().map(|p| p.partition_index).collect(),
                    )
                })
                .collect();
            let respond = move |refused: Vec<(TopicName, Vec<i32>)>,
                                o: &mut OffsetCommitResponse| {
                for (name, partitions) in refused {
                    let mut t = offset_commit_response::OffsetCommitResponseTopic::default();
                    t.name = name;
                    t.partitions = partitions
                        .into_iter()
                        .map(|i| {
                            let mut p =
                                offset_commit_response::OffsetCommitResponsePartition::default();
                            p.partition_index = i;
                            p.error_code = error;
                            p
                        })
                        .collect();
                    o.topics.push(t);
                }
            };
            if !group_ok {
                let mut resp = OffsetCommitResponse::default();
                respond(refused, &mut resp);
                return Checked::Refused(ResponseKind::OffsetCommit(resp));
            }
            Checked::Go(
                RequestKind::OffsetCommit(r),
                post(move |resp| {
                    if let ResponseKind::OffsetCommit(o) = resp {
                        respond(refused, o);
                    }
                }),
            )
        }
        RequestKind::OffsetFetch(mut r) => {
            if version < 8 {
                if !who.group(Describe, &r.group_id) {
                    let mut resp = OffsetFetchResponse::default();
                    if version >= 2 {
                        resp.error_code = group_denied();
                    }
                    // v1 has no top-level error: each partition asked for carries it.
                    resp.topics = r
                        .topics
                        .unwrap_or_default()
                        .into_iter()
                        .map(|t| {
                            let mut tr = offset_fetch_response::OffsetFetchResponseTopic::default();
                            tr.partitions = t
                                .partition_indexes
                                .iter()
                                .map(|i| {
                                    let mut p = offset_fetch_response::OffsetFetchResponsePartition::default();
                                    p.partition_index = *i;
                                    p.committed_offset = -1;
                                    p.committed_leader_epoch = -1;
                                    p.error_code = group_denied();
                                    p
                                })
                                .collect();
                            tr.name = t.name;
                            tr
                        })
                        .collect();
                    return Checked::Refused(ResponseKind::OffsetFetch(resp));
                }
                let listed = r.topics.is_some();
                let who = who.clone();
                return Checked::Go(
                    RequestKind::OffsetFetch(r),
                    post(move |resp| {
                        if let ResponseKind::OffsetFetch(o) = resp {
                            if listed {
                                for t in &mut o.topics {
                                    if !who.topic(Describe, &t.name) {
                                        for p in &mut t.partitions {
                                            p.error_code = topic_denied();
                                            p.committed_offset = -1;
                                            p.metadata = None;
                                        }
                                    }
                                }
                            } else {
                                o.topics.retain(|t| who.topic(Describe, &t.name));
                            }
                        }
                    }),
                );
            }
            let refused = split(&mut r.groups, |g| who.group(Describe, &g.group_id));
            let refused: Vec<GroupId> = refused.into_iter().map(|g| g.group_id).collect();
            // Groups that named their topics: a refused topic is marked; otherwise hidden.
            let listed: Vec<GroupId> = r
                .groups
                .iter()
                .filter(|g| g.topics.is_some())
                .map(|g| g.group_id.clone())
                .collect();
            let who = who.clone();
            Checked::Go(
                RequestKind::OffsetFetch(r),
                post(move |resp| {
                    if let ResponseKind::OffsetFetch(o) = resp {
                        for g in &mut o.groups {
                            if listed.contains(&g.group_id) {
                                for t in &mut g.topics {
                                    if !who.topic(Describe, &t.name) {
                                        for p in &mut t.partitions {
                                            p.error_code = topic_denied();
                                            p.committed_offset = -1;
                                            p.metadata = None;
                                        }
                                    }
                                }
                            } else {
                                g.topics.retain(|t| who.topic(Describe, &t.name));
                            }
                        }
                        for id in refused {
                            let mut g = offset_fetch_response::OffsetFetchResponseGroup::default();
                            g.group_id = id;
                            g.error_code = group_denied();
                            o.groups.push(g);
                        }
                    }
                }),
            )
        }
        RequestKind::DescribeGroups(r) => {
            let who = who.clone();
            Checked::Go(
                RequestKind::DescribeGroups(r),
                post(move |resp| {
                    if let ResponseKind::DescribeGroups(d) = resp {
                        for g in &mut d.groups {
                            if !who.group(Describe, &g.group_id) {
                                let id = std::mem::take(&mut g.group_id);
                                *g = describe_groups_response::DescribedGroup::default();
                                g.group_id = id;
                                g.error_code = group_denied();
                            }
                        }
                    }
                }),
            )
        }
        RequestKind::ListGroups(r) => {
            let all = who.cluster(Describe);
            let who = who.clone();
            Checked::Go(
                RequestKind::ListGroups(r),
                post(move |resp| {
                    if let ResponseKind::ListGroups(l) = resp
                        && !all
                    {
                        l.groups.retain(|g| who.group(Describe, &g.group_id));
                    }
                }),
            )
        }
        RequestKind::DeleteGroups(mut r) => {
            let refused = split(&mut r.groups_names, |g| who.group(Delete, g));
            Checked::Go(
                RequestKind::DeleteGroups(r),
                post(move |resp| {
                    if let ResponseKind::DeleteGroups(d) = resp {
                        for id in refused {
                            let mut g = delete_groups_response::DeletableGroupResult::default();
                            g.group_id = id;
                            g.error_code = group_denied();
                            d.results.push(g);
                        }
                    }
                }),
            )
        }
        RequestKind::OffsetDelete(mut r) => {
            if !who.group(Delete, &r.group_id) {
                let mut resp = OffsetDeleteResponse::default();
                resp.error_code = group_denied();
                return Checked::Refused(ResponseKind::OffsetDelete(resp));
            }
            let refused = split(&mut r.topics, |t| who.topic(Read, &t.name));
            Checked::Go(
                RequestKind::OffsetDelete(r),
                post(move |resp| {
                    if let ResponseKind::OffsetDelete(o) = resp {
                        for t in refused {
                            let mut tr =
                                offset_delete_response::OffsetDeleteResponseTopic::default();
                            tr.partitions = t
                                .partitions
                                .iter()
                                .map(|p| {
                                    let mut pr = offset_delete_response::OffsetDeleteResponsePartition::default();
                                    pr.partition_index = p.partition_index;
                                    pr.error_code = topic_denied();
                                    pr
                                })
                                .collect();
                            tr.name = t.name;
                            o.topics.push(tr);
                        }
                    }
                }),
            )
        }

        // The cluster's own operations.
        RequestKind::ElectLeaders(r) => {
            if who.cluster(Alter) {
                return Checked::Go(RequestKind::ElectLeaders(r), None);
            }
            let mut resp = ElectLeadersResponse::default();
            if version >= 1 {
                resp.error_code = cluster_denied();
            }
            resp.replica_election_results = r
                .topic_partitions
                .unwrap_or_default()
                .into_iter()
                .map(|t| {
                    let mut e = elect_leaders_response::ReplicaElectionResult::default();
                    e.topic = t.topic;
                    e.partition_result = t
                        .partitions
                        .into_iter()
                        .map(|p| {
                            let mut pr = elect_leaders_response::PartitionResult::default();
                            pr.partition_id = p;
                            pr.error_code = cluster_denied();
                            pr.error_message = message("ALTER on the cluster");
                            pr
                        })
                        .collect();
                    e
                })
                .collect();
            Checked::Refused(ResponseKind::ElectLeaders(resp))
        }
        RequestKind::AlterPartitionReassignments(r) => {
            cluster_only!(
                who,
                Alter,
                AlterPartitionReassignments,
                r,
                AlterPartitionReassignmentsResponse
            )
        }
        RequestKind::ListPartitionReassignments(r) => {
            cluster_only!(
                who,
                Describe,
                ListPartitionReassignments,
                r,
                ListPartitionReassignmentsResponse
            )
        }
        RequestKind::DescribeLogDirs(r) => {
            if who.cluster(Describe) {
                return Checked::Go(RequestKind::DescribeLogDirs(r), None);
            }
            let mut resp = DescribeLogDirsResponse::default();
            resp.error_code = cluster_denied();
            Checked::Refused(ResponseKind::DescribeLogDirs(resp))
        }
        RequestKind::DescribeClientQuotas(r) => {
            cluster_only!(
                who,
                DescribeConfigs,
                DescribeClientQuotas,
                r,
                DescribeClientQuotasResponse
            )
        }
        RequestKind::AlterClientQuotas(r) => {
            if who.cluster(AlterConfigs) {
                return Checked::Go(RequestKind::AlterClientQuotas(r), None);
            }
            let mut resp = AlterClientQuotasResponse::default();
            resp.entries = r
                .entries
                .into_iter()
                .map(|e| {
                    let mut x = alter_client_quotas_response::EntryData::default();
                    x.error_code = cluster_denied();
                    x.error_message = message("ALTER_CONFIGS on the cluster");
                    x.entity = e
                        .entity
                        .into_iter()
                        .map(|d| {
                            let mut a = alter_client_quotas_response::EntityData::default();
                            a.entity_type = d.entity_type;
                            a.entity_name = d.entity_name;
                            a
                        })
                        .collect();
                    x
                })
                .collect();
            Checked::Refused(ResponseKind::AlterClientQuotas(resp))
        }
        RequestKind::DescribeUserScramCredentials(r) => {
            cluster_only!(
                who,
                Describe,
                DescribeUserScramCredentials,
                r,
                DescribeUserScramCredentialsResponse
            )
        }
        RequestKind::AlterUserScramCredentials(r) => {
            if who.cluster(Alter) {
                return Checked::Go(RequestKind::AlterUserScramCredentials(r), None);
            }
            let mut users: Vec<StrBytes> = Vec::new();
            for u in r
                .deletions
                .iter()
                .map(|d| &d.name)
                .chain(r.upsertions.iter().map(|u| &u.name))
            {
                if !users.contains(u) {
                    users.push(u.clone());
                }
            }
            let mut resp = AlterUserScramCredentialsResponse::default();
            resp.results = users
                .into_iter()
                .map(|u| {
                    let mut x = alter_user_scram_credentials_response::AlterUserScramCredentialsResult::default();
                    x.user = u;
                    x.error_code = cluster_denied();
                    x.error_message = message("ALTER on the cluster");
                    x
                })
                .collect();
            Checked::Refused(ResponseKind::AlterUserScramCredentials(resp))
        }
        RequestKind::DescribeAcls(r) => {
            cluster_only!(who, Describe, DescribeAcls, r, DescribeAclsResponse)
        }
        RequestKind::CreateAcls(r) => {
            if who.cluster(Alter) {
                return Checked::Go(RequestKind::CreateAcls(r), None);
            }
            let mut resp = CreateAclsResponse::default();
            resp.results = r
                .creations
                .iter()
                .map(|_| {
                    let mut x = create_acls_response::AclCreationResult::default();
                    x.error_code = cluster_denied();
                    x.error_message = message("ALTER on the cluster");
                    x
                })
                .collect();
            Checked::Refused(ResponseKind::CreateAcls(resp))
        }
        RequestKind::DeleteAcls(r) => {
            if who.cluster(Alter) {
                return Checked::Go(RequestKind::DeleteAcls(r), None);
            }
            let mut resp = DeleteAclsResponse::default();
            resp.filter_results = r
                .filters
                .iter()
                .map(|_| {
                    let mut x = delete_acls_response::DeleteAclsFilterResult::default();
                    x.error_code = cluster_denied();
                    x.error_message = message("ALTER on the cluster");
                    x
                })
                .collect();
            Checked::Refused(ResponseKind::DeleteAcls(resp))
        }
        _ => Checked::Unchecked,
    }
}

fn fetch_denied(partition: i32) -> fetch_response::PartitionData {
    let mut p = fetch_response::PartitionData::default();
    p.partition_index = partition;
    p.error_code = topic_denied();
    p.high_watermark = -1;
    p.last_stable_offset = -1;
    p.log_start_offset = -1;
    p.preferred_read_replica = (-1).into();
    p
}

/// Kafka's config resource types: 2 a topic; 4 a broker and 8 a broker logger, both the
/// cluster's.
fn config_allowed(who: &Who, op: Operation, resource_type: i8, name: &str) -> bool {
    match resource_type {
        2 => who.topic(op, name),
        _ => who.cluster(op),
    }
}

fn config_denied(resource_type: i8) -> i16 {
    if resource_type == 2 {
        topic_denied()
    } else {
        cluster_denied()
    }
}
