//! Kafka API handlers, one file per API key. Each takes the broker state and a decoded request
//! and returns a [`Reply`]; the connection encodes and writes it in request order.

pub mod acls;
pub mod alter_configs;
pub mod api_versions;
pub mod authorize;
pub mod client_quotas;
pub mod cluster_admin;
pub mod consumer_group_describe;
pub mod consumer_group_heartbeat;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod describe_log_dirs;
pub mod describe_producers;
pub mod describe_topic_partitions;
pub mod elect_leaders;
pub mod fetch;
pub mod fetch_session;
pub mod find_coordinator;
pub mod heartbeat;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod partition_reassignments;
pub mod produce;
pub mod scram_credentials;
pub mod sync_group;
pub mod topic_admin;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use kafka_protocol::protocol::StrBytes;

use crate::partition::Partition;
use crate::state::Broker;

/// Versions this broker implements fully, and so advertises. (See ../shared facts: Produce
/// from v3, Fetch to v12 for diverging epochs without topic ids, Metadata to v12.)
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::DescribeGroups, 0, 6),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    // The consumer group protocol (KIP-848, `group::consumer`), beside the classic one.
    (ApiKey::ConsumerGroupHeartbeat, 0, 1),
    (ApiKey::ConsumerGroupDescribe, 0, 1),
    // Admin APIs onto the controller (`topic_admin`); standalone, onto this broker's topics.
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::AlterPartitionReassignments, 0, 1),
    (ApiKey::ListPartitionReassignments, 0, 0),
    (ApiKey::DescribeCluster, 0, 2),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::DescribeClientQuotas, 0, 1),
    (ApiKey::AlterClientQuotas, 0, 1),
    // Client users' SCRAM credentials (`scram_credentials`, `auth::users`).
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::AlterUserScramCredentials, 0, 0),
    // ACLs (`acls`, `auth::acl`); v0 (no pattern types) is gone from Kafka 4 clients.
    (ApiKey::DescribeAcls, 1, 3),
    (ApiKey::CreateAcls, 1, 3),
    (ApiKey::DeleteAcls, 1, 3),
    // Read-only views: Metadata's, paged (`describe_topic_partitions`), and the idempotent
    // producer state a replica keeps (`describe_producers`).
    (ApiKey::DescribeTopicPartitions, 0, 0),
    (ApiKey::DescribeProducers, 0, 0),
    // Answered by the connection itself (`auth::sasl`): they change its state. Handshake v0
    // (raw SASL frames after it) is not served; every current client sends v1.
    (ApiKey::SaslHandshake, 1, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
];

/// Who sent a request (JoinGroup records it for DescribeGroups), and on which listener.
#[derive(Debug, Clone, Default)]
pub struct Client {
    pub id: String,
    /// Kafka's form: "/<ip>".
    pub host: String,
    /// The listener the connection came in on: Metadata and FindCoordinator answer with
    /// addresses on that listener, as Kafka does.
    pub listener: Arc<str>,
    /// The SASL user this connection authenticated as (`auth`), else the subject of its
    /// verified client certificate (`tls::principal_of`), if any.
    pub principal: Option<Arc<str>>,
}

pub fn supported_range(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, min, max)| (*min, *max))
}

pub fn is_supported(key: ApiKey, version: i16) -> bool {
    supported_range(key).is_some_and(|(min, max)| (min..=max).contains(&version))
}

pub type ResponseFuture = Pin<Box<dyn Future<Output = ResponseKind> + Send>>;

/// What a handler produced.
pub enum Reply {
    /// A response ready now.
    Now(Box<ResponseKind>),
    /// A response that completes later (long-poll fetch, produce waiting for fsync). The
    /// handler already did everything that must happen in request order (appends).
    Later(ResponseFuture),
    /// No response at all (produce with acks=0).
    Nothing,
    /// No response, and close the connection once earlier responses are written (a failed
    /// produce with acks=0).
    Close,
}

impl Reply {
    pub fn now(body: ResponseKind) -> Self {
        Self::Now(Box::new(body))
    }
}

impl Reply {
    /// Applies `f` (a refusal's fix-up) to the response, now or once it completes.
    fn then(self, f: authorize::Post) -> Self {
        match self {
            Reply::Now(mut body) => {
                f(&mut body);
                Reply::Now(body)
            }
            Reply::Later(fut) => Reply::Later(Box::pin(async move {
                let mut body = fut.await;
                f(&mut body);
                body
            })),
            // acks=0 with a refused part: closed, as Kafka does, so the producer notices.
            Reply::Nothing => Reply::Close,
            other => other,
        }
    }
}

/// Authorizes a decoded request (when the broker has an authorizer), then runs its handler.
pub fn dispatch(
    broker: &Arc<Broker>,
    request: RequestKind,
    version: i16,
    client: &Client,
) -> Reply {
    let Some(settings) = &broker.config.authorizer else {
        return route(broker, request, version, client);
    };
    let who = authorize::Who::new(Arc::clone(settings), broker.acls.current(), client);
    if !broker.acls_ready.load(std::sync::atomic::Ordering::Acquire) && !who.is_super() {
        // A cluster broker that has not applied the controller's ACLs yet must neither
        // refuse what they allow nor allow what they deny: the client reconnects shortly.
        if let Some(suppressed) = UNCHECKED.allow() {
            tracing::warn!(
                suppressed,
                "closing connection: the ACLs have not arrived from the controller yet"
            );
        }
        return Reply::Close;
    }
    match authorize::check(who, request, version) {
        authorize::Checked::Go(request, None) => route(broker, request, version, client),
        authorize::Checked::Go(request, Some(post)) => {
            route(broker, request, version, client).then(post)
        }
        authorize::Checked::Refused(body) => Reply::now(body),
        authorize::Checked::Unchecked => {
            if let Some(suppressed) = UNCHECKED.allow() {
                tracing::warn!(
                    suppressed,
                    "closing connection: a request of an API without an authorization rule"
                );
            }
            Reply::Close
        }
    }
}

/// Rate-limits the warning for requests the authorizer has no rule for.
static UNCHECKED: crate::log_limit::Limit =
    crate::log_limit::Limit::new(5, std::time::Duration::from_secs(60));

/// Runs the handler for a decoded (and authorized) request.
fn route(broker: &Arc<Broker>, request: RequestKind, version: i16, client: &Client) -> Reply {
    if let Some(rt) = broker.cluster() {
        match request {
            RequestKind::Metadata(r) => {
                return Reply::now(ResponseKind::Metadata(cluster_admin::metadata(
                    broker,
                    rt,
                    r,
                    version,
                    &client.listener,
                )));
            }
            RequestKind::CreateTopics(r) => return cluster_admin::create_topics(broker, rt, r),
            RequestKind::DeleteTopics(r) => return cluster_admin::delete_topics(rt, r, version),
            RequestKind::InitProducerId(r)
                if r.transactional_id.as_ref().is_none_or(|t| t.is_empty()) =>
            {
                return cluster_admin::init_producer_id(rt);
            }
            other => return dispatch_local(broker, other, version, client),
        }
    }
    dispatch_local(broker, request, version, client)
}

/// Handlers whose answer comes from this broker alone (every API standalone).
fn dispatch_local(
    broker: &Arc<Broker>,
    request: RequestKind,
    version: i16,
    client: &Client,
) -> Reply {
    match request {
        RequestKind::ApiVersions(_) => {
            Reply::now(ResponseKind::ApiVersions(api_versions::handle(0)))
        }
        RequestKind::Metadata(r) => Reply::now(ResponseKind::Metadata(metadata::handle(
            broker,
            r,
            version,
            &client.listener,
        ))),
        RequestKind::Produce(r) => produce::handle(broker, r, version),
        RequestKind::Fetch(r) => fetch::handle(broker, r, version, client),
        RequestKind::ListOffsets(r) => Reply::now(ResponseKind::ListOffsets(list_offsets::handle(
            broker, r, version,
        ))),
        RequestKind::InitProducerId(r) => Reply::now(ResponseKind::InitProducerId(
            init_producer_id::handle(broker, r),
        )),
        RequestKind::CreateTopics(r) => Reply::now(ResponseKind::CreateTopics(
            create_topics::handle(broker, r, version),
        )),
        RequestKind::DeleteTopics(r) => Reply::now(ResponseKind::DeleteTopics(
            delete_topics::handle(broker, r, version),
        )),
        RequestKind::OffsetForLeaderEpoch(r) => Reply::now(ResponseKind::OffsetForLeaderEpoch(
            offset_for_leader_epoch::handle(broker, r),
        )),
        RequestKind::DescribeConfigs(r) => Reply::now(ResponseKind::DescribeConfigs(
            describe_configs::handle(broker, r, version),
        )),
        RequestKind::FindCoordinator(r) => Reply::now(ResponseKind::FindCoordinator(
            find_coordinator::handle(broker, r, version, &client.listener),
        )),
        RequestKind::JoinGroup(r) => join_group::handle(broker, r, version, client),
        RequestKind::SyncGroup(r) => sync_group::handle(broker, r, version),
        RequestKind::Heartbeat(r) => {
            Reply::now(ResponseKind::Heartbeat(heartbeat::handle(broker, r)))
        }
        RequestKind::LeaveGroup(r) => Reply::now(ResponseKind::LeaveGroup(leave_group::handle(
            broker, r, version,
        ))),
        RequestKind::OffsetCommit(r) => offset_commit::handle(broker, r, version),
        RequestKind::OffsetFetch(r) => Reply::now(ResponseKind::OffsetFetch(offset_fetch::handle(
            broker, r, version,
        ))),
        RequestKind::DescribeGroups(r) => Reply::now(ResponseKind::DescribeGroups(
            describe_groups::handle(broker, r, version),
        )),
        RequestKind::ListGroups(r) => Reply::now(ResponseKind::ListGroups(list_groups::handle(
            broker, r, version,
        ))),
        RequestKind::DeleteGroups(r) => delete_groups::handle(broker, r),
        RequestKind::ConsumerGroupHeartbeat(r) => Reply::now(ResponseKind::ConsumerGroupHeartbeat(
            consumer_group_heartbeat::handle(broker, r, version, client),
        )),
        RequestKind::ConsumerGroupDescribe(r) => Reply::now(ResponseKind::ConsumerGroupDescribe(
            consumer_group_describe::handle(broker, r),
        )),
        RequestKind::OffsetDelete(r) => offset_delete::handle(broker, r),
        RequestKind::CreatePartitions(r) => create_partitions::handle(broker, r),
        RequestKind::AlterConfigs(r) => alter_configs::handle(broker, r),
        RequestKind::IncrementalAlterConfigs(r) => alter_configs::handle_incremental(broker, r),
        RequestKind::ElectLeaders(r) => elect_leaders::handle(broker, r, version),
        RequestKind::AlterPartitionReassignments(r) => {
            partition_reassignments::handle_alter(broker, r, version)
        }
        RequestKind::ListPartitionReassignments(r) => {
            Reply::now(ResponseKind::ListPartitionReassignments(
                partition_reassignments::handle_list(broker, r),
            ))
        }
        RequestKind::DeleteRecords(r) => delete_records::handle(broker, r),
        RequestKind::DescribeClientQuotas(r) => Reply::now(ResponseKind::DescribeClientQuotas(
            client_quotas::handle_describe(broker, r),
        )),
        RequestKind::AlterClientQuotas(r) => client_quotas::handle_alter(broker, r),
        RequestKind::DescribeUserScramCredentials(r) => {
            Reply::now(ResponseKind::DescribeUserScramCredentials(
                scram_credentials::handle_describe(broker, r),
            ))
        }
        RequestKind::AlterUserScramCredentials(r) => scram_credentials::handle_alter(broker, r),
        RequestKind::DescribeAcls(r) => {
            Reply::now(ResponseKind::DescribeAcls(acls::handle_describe(broker, r)))
        }
        RequestKind::CreateAcls(r) => acls::handle_create(broker, r),
        RequestKind::DeleteAcls(r) => acls::handle_delete(broker, r),
        RequestKind::DescribeLogDirs(r) => Reply::now(ResponseKind::DescribeLogDirs(
            describe_log_dirs::handle(broker, r),
        )),
        RequestKind::DescribeCluster(r) => Reply::now(ResponseKind::DescribeCluster(
            describe_cluster::handle(broker, r, version, &client.listener),
        )),
        RequestKind::DescribeTopicPartitions(r) => {
            Reply::now(ResponseKind::DescribeTopicPartitions(
                describe_topic_partitions::handle(broker, r, &client.listener),
            ))
        }
        RequestKind::DescribeProducers(r) => Reply::now(ResponseKind::DescribeProducers(
            describe_producers::handle(broker, r),
        )),
        // The connection only dispatches supported API keys.
        _ => Reply::Nothing,
    }
}

/// Names a request lists more than once (Kafka refuses each of those entries).
pub fn repeated<'a>(names: impl Iterator<Item = &'a str>) -> std::collections::HashSet<String> {
    let mut seen = std::collections::HashSet::new();
    names
        .filter(|n| !seen.insert(*n))
        .map(str::to_string)
        .collect()
}

pub fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// A hosted partition of `topic`, or the Kafka error for why not: an unknown topic or index
/// is UNKNOWN_TOPIC_OR_PARTITION; a known partition hosted elsewhere is NOT_LEADER_OR_FOLLOWER.
pub fn lookup(
    topic: Option<&crate::state::Topic>,
    index: i32,
) -> Result<&Arc<Partition>, ResponseError> {
    let topic = topic.ok_or(ResponseError::UnknownTopicOrPartition)?;
    let slot = usize::try_from(index)
        .ok()
        .and_then(|i| topic.partitions.get(i))
        .ok_or(ResponseError::UnknownTopicOrPartition)?;
    slot.as_ref().ok_or(ResponseError::NotLeaderOrFollower)
}

/// Kafka's leader-epoch fencing for requests that carry the client's view of the epoch
/// (KIP-320): older -> FENCED_LEADER_EPOCH, newer -> UNKNOWN_LEADER_EPOCH, -1 -> no check.
pub fn check_leader_epoch(
    partition: &Partition,
    current_leader_epoch: i32,
) -> Result<(), ResponseError> {
    let ours = partition.leader_epoch();
    if current_leader_epoch == -1 || current_leader_epoch == ours {
        Ok(())
    } else if current_leader_epoch < ours {
        Err(ResponseError::FencedLeaderEpoch)
    } else {
        Err(ResponseError::UnknownLeaderEpoch)
    }
}
