//! Every advertised (API, version) against a real standalone broker: for each entry of
//! `broker::api::SUPPORTED` and every version from its min to its max, a valid request of
//! that API at that version is encoded with kafka-protocol's generated schema, sent, and its
//! answer decoded with the same schema, so no advertised version goes untested. Each answer is
//! checked where it means something (error codes, offsets, leader epochs, members), and the
//! connection must stay usable afterwards: a response the broker cannot encode at the
//! client's version closes the connection (as ListOffsets v1-v3 did whenever a partition had a
//! leader epoch, the field being v4+).
//!
//! The topic has records in two leader epochs (a restart in between), so leader-epoch fields
//! are never trivially -1. A newly advertised API without a request here fails the test.

mod common;

use std::fmt::Debug;
use std::time::{Duration, Instant};

use broker::api::SUPPORTED;
use broker::replication::client::Connection;
use bytes::Bytes;
use common::BrokerProcess;
use common::kafka::{produce, producer};
use kafka_protocol::error::{ParseResponseErrorCode, ResponseError};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse,
    CreatePartitionsRequest, DescribeClusterRequest, ElectLeadersRequest, ElectLeadersResponse,
    IncrementalAlterConfigsRequest, ListPartitionReassignmentsRequest,
};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, CreateTopicsRequest, CreateTopicsResponse, DeleteGroupsRequest,
    DeleteTopicsRequest, DescribeConfigsRequest, DescribeGroupsRequest, FetchRequest,
    FetchResponse, FindCoordinatorRequest, GroupId, HeartbeatRequest, InitProducerIdRequest,
    JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, ListGroupsRequest, ListOffsetsRequest,
    MetadataRequest, MetadataResponse, OffsetCommitRequest, OffsetFetchRequest,
    OffsetForLeaderEpochRequest, ProduceRequest, SaslAuthenticateRequest, SaslHandshakeRequest,
    SyncGroupRequest, TopicName, TransactionalId,
};
use kafka_protocol::protocol::{Request, StrBytes};

/// The topic every data API reads: one partition, records in two leader epochs.
const TOPIC: &str = "every-version";
const CLIENT_ID: &str = "every-version";
/// Records produced before and after the restart.
const FIRST_EPOCH_RECORDS: usize = 100;
const SECOND_EPOCH_RECORDS: usize = 50;
/// A group's members must outlive the whole run (a short session would expire them while
/// later probes still describe their groups).
const SESSION_MS: i32 = 120_000;
const SUBSCRIPTION: &[u8] = b"every-version-subscription";
const ASSIGNMENT: &[u8] = b"every-version-assignment";
/// Kafka's DescribeConfigs resource types.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// Kafka's FindCoordinator key types.
const KEY_GROUP: i8 = 0;
const KEY_TRANSACTION: i8 = 1;
/// Longest wait for one response (JoinGroup completes at once with no initial delay).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(15);

const BROKER_ARGS: &[&str] = &[
    "--offsets-topic-partitions",
    "1",
    "--group-initial-rebalance-delay-ms",
    "0",
];

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn topic_name(s: &str) -> TopicName {
    TopicName(sb(s))
}

fn gid(s: &str) -> GroupId {
    GroupId(sb(s))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Fails the probe (not the whole run) with a message.
macro_rules! check {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(format!($($arg)+));
        }
    };
}

/// `got` must be the error code `want` (`None`: no error).
fn expect_code(what: &str, got: i16, want: Option<ResponseError>, resp: &impl Debug) -> Probe {
    let want_code = want.map_or(0, |e| e.code());
    check!(
        got == want_code,
        "{what}: error code {got} ({:?}), want {want_code} ({want:?}); response {resp:?}",
        got.err()
    );
    Ok(())
}

type Probe = Result<(), String>;

/// What the test knows about the broker and its data, and the connection it talks on.
struct Ctx {
    bootstrap: String,
    port: i32,
    conn: Connection,
    /// The connection may be out of step (a response timed out): reconnect before going on.
    broken: bool,
    /// End offset of the first leader epoch (records produced before the restart).
    first_end: i64,
    /// High watermark of the topic's partition; Produce probes move it.
    log_end: i64,
    first_epoch: i32,
    epoch: i32,
    topic_id: uuid::Uuid,
    requests: usize,
}

impl Ctx {
    /// Encodes `req` at `version`, sends it and decodes the answer at that version.
    async fn send<R: Request + Debug>(
        &mut self,
        req: &R,
        version: i16,
    ) -> Result<R::Response, String> {
        self.requests += 1;
        check!(
            R::VERSIONS.min <= version && version <= R::VERSIONS.max,
            "kafka-protocol's {} has versions {}, not {version}",
            std::any::type_name::<R>(),
            R::VERSIONS
        );
        match tokio::time::timeout(RESPONSE_TIMEOUT, self.conn.send(req, version)).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(format!("send/decode failed: {e}; request {req:?}")),
            Err(_) => {
                self.broken = true;
                Err(format!(
                    "no response in {RESPONSE_TIMEOUT:?}; request {req:?}"
                ))
            }
        }
    }

    async fn reconnect(&mut self) {
        self.conn = Connection::connect(&self.bootstrap, CLIENT_ID)
            .await
            .expect("reconnect");
        self.broken = false;
    }

    /// The connection still answers after a probe (an ApiVersions v0 on the same socket).
    async fn still_usable(&mut self) -> Probe {
        check!(!self.broken, "a response never came");
        let r = self.send(&ApiVersionsRequest::default(), 0).await?;
        expect_code("ApiVersions v0 afterwards", r.error_code, None, &r)
    }

    /// Metadata v4 (no auto-creation) for one topic name.
    async fn topic_exists(&mut self, name: &str) -> Result<bool, String> {
        let req = MetadataRequest::default()
            .with_allow_auto_topic_creation(false)
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(topic_name(name))),
            ]));
        let r = self.send(&req, 4).await?;
        let t = &r.topics[0];
        match t.error_code.err() {
            None => Ok(true),
            Some(ResponseError::UnknownTopicOrPartition) => Ok(false),
            Some(e) => Err(format!("Metadata for {name}: {e:?}")),
        }
    }

    /// Partitions of `name` (Metadata v4).
    async fn partition_count(&mut self, name: &str) -> Result<usize, String> {
        let req = MetadataRequest::default()
            .with_allow_auto_topic_creation(false)
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(topic_name(name))),
            ]));
        let r = self.send(&req, 4).await?;
        expect_code("metadata", r.topics[0].error_code, None, &r)?;
        Ok(r.topics[0].partitions.len())
    }

    /// The value of one topic config (DescribeConfigs v4).
    async fn topic_config(&mut self, topic: &str, key: &str) -> Result<Option<String>, String> {
        let req = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(RESOURCE_TOPIC)
                .with_resource_name(sb(topic))
                .with_configuration_keys(Some(vec![sb(key)])),
        ]);
        let r = self.send(&req, 4).await?;
        expect_code("describe configs", r.results[0].error_code, None, &r)?;
        Ok(r.results[0]
            .configs
            .first()
            .and_then(|c| c.value.as_ref().map(|v| v.to_string())))
    }

    /// Creates a one-partition topic with CreateTopics v7; returns its id.
    async fn create_topic(&mut self, name: &str) -> Result<uuid::Uuid, String> {
        let req = CreateTopicsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![
                CreatableTopic::default()
                    .with_name(topic_name(name))
                    .with_num_partitions(1)
                    .with_replication_factor(1),
            ]);
        let r = self.send(&req, 7).await?;
        expect_code(&format!("create {name}"), r.topics[0].error_code, None, &r)?;
        Ok(r.topics[0].topic_id)
    }

    /// Commits `offset` for partition 0 of the topic outside any generation (OffsetCommit v9).
    async fn simple_commit(&mut self, group: &str, offset: i64, metadata: &str) -> Probe {
        let req = OffsetCommitRequest::default()
            .with_group_id(gid(group))
            .with_generation_id_or_member_epoch(-1)
            .with_member_id(sb(""))
            .with_topics(vec![commit_topic(offset, self.epoch, metadata, 9)]);
        let r = self.send(&req, 9).await?;
        expect_code(
            &format!("commit for {group}"),
            r.topics[0].partitions[0].error_code,
            None,
            &r,
        )
    }

    /// The committed offset of partition 0 for `group` (OffsetFetch v8), -1 if none.
    async fn committed(&mut self, group: &str) -> Result<i64, String> {
        let req = OffsetFetchRequest::default().with_groups(vec![
            OffsetFetchRequestGroup::default()
                .with_group_id(gid(group))
                .with_topics(Some(vec![
                    OffsetFetchRequestTopics::default()
                        .with_name(topic_name(TOPIC))
                        .with_partition_indexes(vec![0]),
                ])),
        ]);
        let r = self.send(&req, 8).await?;
        expect_code("OffsetFetch v8", r.groups[0].error_code, None, &r)?;
        Ok(r.groups[0].topics[0].partitions[0].committed_offset)
    }

    /// Joins `group` at `version` until it is a member: a dynamic v4+ member is first told
    /// MEMBER_ID_REQUIRED with the id to join with. Returns the final answer and whether that
    /// first answer came.
    async fn join(
        &mut self,
        group: &str,
        instance: Option<&str>,
        version: i16,
    ) -> Result<(JoinGroupResponse, bool), String> {
        let mut req = join_request(group, instance, version);
        let mut member_id_required = false;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = self.send(&req, version).await?;
            match r.error_code.err() {
                Some(ResponseError::MemberIdRequired) if req.member_id.is_empty() => {
                    check!(
                        version >= 4 && !r.member_id.is_empty(),
                        "MEMBER_ID_REQUIRED at v{version} with member id {:?}",
                        r.member_id
                    );
                    member_id_required = true;
                    req.member_id = r.member_id.clone();
                }
                Some(ResponseError::CoordinatorLoadInProgress) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                _ => return Ok((r, member_id_required)),
            }
        }
    }

    /// A member of a fresh group that has its assignment (JoinGroup v9, SyncGroup v5).
    async fn member(&mut self, group: &str, instance: Option<&str>) -> Result<Member, String> {
        let (j, _) = self.join(group, instance, 9).await?;
        expect_code(&format!("join {group}"), j.error_code, None, &j)?;
        let m = Member {
            group: group.to_string(),
            id: j.member_id.to_string(),
            instance: instance.map(str::to_string),
            generation: j.generation_id,
        };
        let s = self.send(&sync_request(&m, 5), 5).await?;
        expect_code(&format!("sync {group}"), s.error_code, None, &s)?;
        check!(s.assignment == ASSIGNMENT, "assignment {:?}", s.assignment);
        Ok(m)
    }
}

struct Member {
    group: String,
    id: String,
    instance: Option<String>,
    generation: i32,
}

fn join_request(group: &str, instance: Option<&str>, version: i16) -> JoinGroupRequest {
    let mut r = JoinGroupRequest::default()
        .with_group_id(gid(group))
        .with_session_timeout_ms(SESSION_MS)
        .with_member_id(sb(""))
        .with_protocol_type(sb("consumer"))
        .with_protocols(vec![
            JoinGroupRequestProtocol::default()
                .with_name(sb("range"))
                .with_metadata(Bytes::from_static(SUBSCRIPTION)),
        ]);
    if version >= 1 {
        r.rebalance_timeout_ms = 10_000;
    }
    if version >= 5 {
        r.group_instance_id = instance.map(sb);
    }
    if version >= 8 {
        r.reason = Some(sb("every-version test"));
    }
    r
}

/// The leader's SyncGroup, handing itself the assignment.
fn sync_request(m: &Member, version: i16) -> SyncGroupRequest {
    let mut r = SyncGroupRequest::default()
        .with_group_id(gid(&m.group))
        .with_generation_id(m.generation)
        .with_member_id(sb(&m.id))
        .with_assignments(vec![
            SyncGroupRequestAssignment::default()
                .with_member_id(sb(&m.id))
                .with_assignment(Bytes::from_static(ASSIGNMENT)),
        ]);
    if version >= 3 {
        r.group_instance_id = m.instance.as_deref().map(sb);
    }
    if version >= 5 {
        r.protocol_type = Some(sb("consumer"));
        r.protocol_name = Some(sb("range"));
    }
    r
}

fn commit_topic(offset: i64, epoch: i32, metadata: &str, version: i16) -> OffsetCommitRequestTopic {
    let mut p = OffsetCommitRequestPartition::default()
        .with_partition_index(0)
        .with_committed_offset(offset)
        .with_committed_metadata(Some(sb(metadata)));
    if version >= 6 {
        p.committed_leader_epoch = epoch;
    }
    OffsetCommitRequestTopic::default()
        .with_name(topic_name(TOPIC))
        .with_partitions(vec![p])
}

/// Sends a valid request of `key` at `version` (several where the API has distinct paths)
/// and checks the answers.
async fn probe(ctx: &mut Ctx, key: ApiKey, version: i16) -> Probe {
    match key {
        ApiKey::Produce => produce_at(ctx, version).await,
        ApiKey::Fetch => fetch_at(ctx, version).await,
        ApiKey::ListOffsets => list_offsets_at(ctx, version).await,
        ApiKey::Metadata => metadata_at(ctx, version).await,
        ApiKey::ApiVersions => api_versions_at(ctx, version).await,
        ApiKey::CreateTopics => create_topics_at(ctx, version).await,
        ApiKey::DeleteTopics => delete_topics_at(ctx, version).await,
        ApiKey::InitProducerId => init_producer_id_at(ctx, version).await,
        ApiKey::OffsetForLeaderEpoch => offset_for_leader_epoch_at(ctx, version).await,
        ApiKey::DescribeConfigs => describe_configs_at(ctx, version).await,
        ApiKey::FindCoordinator => find_coordinator_at(ctx, version).await,
        ApiKey::JoinGroup => join_group_at(ctx, version).await,
        ApiKey::SyncGroup => sync_group_at(ctx, version).await,
        ApiKey::Heartbeat => heartbeat_at(ctx, version).await,
        ApiKey::LeaveGroup => leave_group_at(ctx, version).await,
        ApiKey::OffsetCommit => offset_commit_at(ctx, version).await,
        ApiKey::OffsetFetch => offset_fetch_at(ctx, version).await,
        ApiKey::DescribeGroups => describe_groups_at(ctx, version).await,
        ApiKey::ListGroups => list_groups_at(ctx, version).await,
        ApiKey::DeleteGroups => delete_groups_at(ctx, version).await,
        ApiKey::SaslHandshake => sasl_handshake_at(ctx, version).await,
        ApiKey::SaslAuthenticate => sasl_authenticate_at(ctx, version).await,
        ApiKey::CreatePartitions => create_partitions_at(ctx, version).await,
        ApiKey::AlterConfigs => alter_configs_at(ctx, version).await,
        ApiKey::IncrementalAlterConfigs => incremental_alter_configs_at(ctx, version).await,
        ApiKey::ElectLeaders => elect_leaders_at(ctx, version).await,
        ApiKey::AlterPartitionReassignments => reassignments_at(ctx, version).await,
        ApiKey::ListPartitionReassignments => list_reassignments_at(ctx, version).await,
        ApiKey::DescribeCluster => describe_cluster_at(ctx, version).await,
        ApiKey::DescribeLogDirs => describe_log_dirs_at(ctx, version).await,
        ApiKey::OffsetDelete => offset_delete_at(ctx, version).await,
        ApiKey::DeleteRecords => delete_records_at(ctx, version).await,
        ApiKey::DescribeClientQuotas | ApiKey::AlterClientQuotas => {
            client_quotas_at(ctx, version).await
        }
        ApiKey::DescribeUserScramCredentials | ApiKey::AlterUserScramCredentials => {
            scram_credentials_at(ctx, version).await
        }
        ApiKey::DescribeAcls | ApiKey::CreateAcls | ApiKey::DeleteAcls => {
            acls_at(ctx, version).await
        }
        ApiKey::DescribeTopicPartitions => describe_topic_partitions_at(ctx, version).await,
        ApiKey::DescribeProducers => describe_producers_at(ctx, version).await,
        ApiKey::ConsumerGroupHeartbeat => consumer_group_heartbeat_at(ctx, version).await,
        ApiKey::ConsumerGroupDescribe => consumer_group_describe_at(ctx, version).await,
        other => panic!(
            "{other:?} is advertised (broker::api::SUPPORTED) but every_version.rs sends no \
             request for it: add one to `probe`"
        ),
    }
}

/// The broker's cluster secret: the password of the broker user.
const SECRET: &str = "every-version-secret-0123456789abcdef";

/// A connection of its own: SASL changes a connection's state (and a failure closes it).
async fn fresh_connection(ctx: &Ctx) -> Connection {
    Connection::connect(&ctx.bootstrap, CLIENT_ID)
        .await
        .unwrap()
}

async fn sasl_handshake_at(ctx: &mut Ctx, v: i16) -> Probe {
    let mut conn = fresh_connection(ctx).await;
    for (mechanism, want) in [
        ("SCRAM-SHA-512", None),
        ("PLAIN", Some(ResponseError::UnsupportedSaslMechanism)),
    ] {
        ctx.requests += 1;
        let req = SaslHandshakeRequest::default().with_mechanism(sb(mechanism));
        let r = conn.send(&req, v).await.map_err(|e| e.to_string())?;
        expect_code(
            &format!("SaslHandshake {mechanism}"),
            r.error_code,
            want,
            &r,
        )?;
        let offered: Vec<&str> = r.mechanisms.iter().map(|m| m.as_str()).collect();
        check!(
            offered == ["SCRAM-SHA-256", "SCRAM-SHA-512"],
            "mechanisms offered: {offered:?}"
        );
        // A refused mechanism ends the connection, as in Kafka.
        conn = fresh_connection(ctx).await;
    }
    Ok(())
}

/// A whole SCRAM exchange at version `v`: the right password is accepted (and the server's
/// signature verifies), a wrong one gets SASL_AUTHENTICATION_FAILED with Kafka's message.
async fn sasl_authenticate_at(ctx: &mut Ctx, v: i16) -> Probe {
    use broker::auth::scram::{ClientExchange, Mechanism};
    for (password, want) in [
        (SECRET, None),
        (
            "wrong-secret-0123456789abcdef0123",
            Some(ResponseError::SaslAuthenticationFailed),
        ),
    ] {
        let mut conn = fresh_connection(ctx).await;
        let m = Mechanism::Sha256;
        let handshake = SaslHandshakeRequest::default().with_mechanism(sb(m.name()));
        let r = conn.send(&handshake, 1).await.map_err(|e| e.to_string())?;
        expect_code("SaslHandshake", r.error_code, None, &r)?;
        let mut client =
            ClientExchange::new(m, broker::auth::BROKER_USER, password.as_bytes(), "nonce-1");
        let first =
            SaslAuthenticateRequest::default().with_auth_bytes(client.client_first().into());
        ctx.requests += 2;
        let r = conn.send(&first, v).await.map_err(|e| e.to_string())?;
        expect_code("SaslAuthenticate client-first", r.error_code, None, &r)?;
        let fin = client
            .client_final(&r.auth_bytes)
            .map_err(|e| e.to_string())?;
        let fin = SaslAuthenticateRequest::default().with_auth_bytes(fin.into());
        let r = conn.send(&fin, v).await.map_err(|e| e.to_string())?;
        expect_code("SaslAuthenticate client-final", r.error_code, want, &r)?;
        match want {
            None => {
                client
                    .verify_server_final(&r.auth_bytes)
                    .map_err(|e| e.to_string())?;
                check!(
                    r.session_lifetime_ms == 0,
                    "session lifetime {}",
                    r.session_lifetime_ms
                );
                // Still usable once authenticated.
                let a = conn
                    .send(&ApiVersionsRequest::default(), 3)
                    .await
                    .map_err(|e| e.to_string())?;
                expect_code("ApiVersions after SASL", a.error_code, None, &a)?;
            }
            Some(_) => {
                let message = r.error_message.as_deref().unwrap_or_default();
                check!(
                    message.contains("invalid credentials with SASL mechanism SCRAM-SHA-256"),
                    "message {message:?}"
                );
                // ...and the broker closes the connection.
                let after = conn.send(&ApiVersionsRequest::default(), 3).await;
                check!(
                    after.is_err(),
                    "the connection stayed open after a failed SASL exchange"
                );
            }
        }
    }
    Ok(())
}

async fn produce_at(ctx: &mut Ctx, v: i16) -> Probe {
    let records: Vec<(Vec<u8>, Option<Vec<u8>>)> = (0..3)
        .map(|i| {
            (
                format!("k{i}").into_bytes(),
                Some(format!("produce-v{v}-{i}").into_bytes()),
            )
        })
        .collect();
    let batch = broker::group::records::build_batch(&records, now_ms());
    let request = |partition: i32| {
        ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(topic_name(TOPIC))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(partition)
                            .with_records(Some(Bytes::from(batch.clone()))),
                    ]),
            ])
    };
    let r = ctx.send(&request(0), v).await?;
    let p = &r.responses[0].partition_responses[0];
    expect_code("produce", p.error_code, None, &r)?;
    check!(
        p.base_offset == ctx.log_end,
        "base offset {} != log end {}",
        p.base_offset,
        ctx.log_end
    );
    if v >= 5 {
        check!(p.log_start_offset == 0, "log start {}", p.log_start_offset);
    }
    ctx.log_end += records.len() as i64;

    // A partition the topic does not have.
    let r = ctx.send(&request(7), v).await?;
    let p = &r.responses[0].partition_responses[0];
    expect_code(
        "produce to a missing partition",
        p.error_code,
        Some(ResponseError::UnknownTopicOrPartition),
        &r,
    )
}

async fn fetch_at(ctx: &mut Ctx, v: i16) -> Probe {
    let request = |offset: i64, current_leader_epoch: i32, last_fetched_epoch: i32| {
        let mut p = FetchPartition::default()
            .with_partition(0)
            .with_fetch_offset(offset)
            .with_partition_max_bytes(1 << 20);
        if v >= 9 {
            p.current_leader_epoch = current_leader_epoch;
        }
        if v >= 12 {
            p.last_fetched_epoch = last_fetched_epoch;
        }
        FetchRequest::default()
            .with_replica_id((-1).into())
            .with_max_wait_ms(0)
            .with_min_bytes(0)
            .with_max_bytes(1 << 20)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(topic_name(TOPIC))
                    .with_partitions(vec![p]),
            ])
    };
    let partition = |r: &FetchResponse| r.responses[0].partitions[0].clone();

    // From the start: the first batch is the first epoch's.
    let r = ctx.send(&request(0, -1, -1), v).await?;
    let p = partition(&r);
    expect_code("fetch from 0", p.error_code, None, &r)?;
    check!(
        p.high_watermark == ctx.log_end && p.last_stable_offset == ctx.log_end,
        "high watermark {} / last stable {} != {}",
        p.high_watermark,
        p.last_stable_offset,
        ctx.log_end
    );
    if v >= 5 {
        check!(p.log_start_offset == 0, "log start {}", p.log_start_offset);
    }
    let data = p.records.clone().unwrap_or_default();
    let (first, _) = broker::protocol::batch::Batches::new(&data)
        .next()
        .ok_or_else(|| format!("no records from offset 0: {p:?}"))?;
    check!(
        first.base_offset == 0 && first.partition_leader_epoch == ctx.first_epoch,
        "first batch at {} in epoch {}, want 0 in {}",
        first.base_offset,
        first.partition_leader_epoch,
        ctx.first_epoch
    );

    // Read committed (every advertised version has isolation levels).
    let mut req = request(0, -1, -1);
    req.isolation_level = 1;
    let r = ctx.send(&req, v).await?;
    expect_code("read_committed fetch", partition(&r).error_code, None, &r)?;

    // Past the end.
    let r = ctx.send(&request(ctx.log_end + 1000, -1, -1), v).await?;
    expect_code(
        "fetch past the end",
        partition(&r).error_code,
        Some(ResponseError::OffsetOutOfRange),
        &r,
    )?;

    // KIP-320 fencing: the current epoch passes, the older one is fenced.
    if v >= 9 {
        let r = ctx.send(&request(0, ctx.epoch, -1), v).await?;
        expect_code(
            "fetch in the current epoch",
            partition(&r).error_code,
            None,
            &r,
        )?;
        let r = ctx.send(&request(0, ctx.first_epoch, -1), v).await?;
        expect_code(
            "fetch in an older epoch",
            partition(&r).error_code,
            Some(ResponseError::FencedLeaderEpoch),
            &r,
        )?;
    }

    // A fetcher whose last epoch ended earlier here is told where it diverges.
    if v >= 12 {
        let r = ctx
            .send(&request(ctx.first_end + 5, -1, ctx.first_epoch), v)
            .await?;
        let p = partition(&r);
        expect_code("diverging fetch", p.error_code, None, &r)?;
        check!(
            (p.diverging_epoch.epoch, p.diverging_epoch.end_offset)
                == (ctx.first_epoch, ctx.first_end),
            "diverging epoch {:?}, want ({}, {})",
            p.diverging_epoch,
            ctx.first_epoch,
            ctx.first_end
        );
    }
    Ok(())
}

async fn list_offsets_at(ctx: &mut Ctx, v: i16) -> Probe {
    let request = |timestamp: i64, current_leader_epoch: i32| {
        let mut p = ListOffsetsPartition::default()
            .with_partition_index(0)
            .with_timestamp(timestamp);
        if v >= 4 {
            p.current_leader_epoch = current_leader_epoch;
        }
        ListOffsetsRequest::default()
            .with_replica_id((-1).into())
            .with_topics(vec![
                ListOffsetsTopic::default()
                    .with_name(topic_name(TOPIC))
                    .with_partitions(vec![p]),
            ])
    };
    // (what, timestamp, offset wanted, leader epoch wanted from v4)
    let mut cases = vec![
        ("earliest", -2, 0, ctx.first_epoch),
        ("latest", -1, ctx.log_end, ctx.epoch),
        ("timestamp 0", 0, 0, ctx.first_epoch),
    ];
    if v >= 7 {
        // Max timestamp: the last record (the newest produce) in the current epoch.
        cases.push(("max timestamp", -3, -1, ctx.epoch));
    }
    for (what, timestamp, offset, epoch) in cases {
        let r = ctx.send(&request(timestamp, -1), v).await?;
        let p = &r.topics[0].partitions[0];
        expect_code(what, p.error_code, None, &r)?;
        if offset >= 0 {
            check!(
                p.offset == offset,
                "{what}: offset {}, want {offset}",
                p.offset
            );
        } else {
            check!(
                (0..ctx.log_end).contains(&p.offset),
                "{what}: offset {}",
                p.offset
            );
        }
        // Before v4 the field is absent and decodes as -1.
        let want_epoch = if v >= 4 { epoch } else { -1 };
        check!(
            p.leader_epoch == want_epoch,
            "{what}: leader epoch {}, want {want_epoch}",
            p.leader_epoch
        );
    }
    if v >= 4 {
        let r = ctx.send(&request(-1, ctx.epoch), v).await?;
        expect_code(
            "latest in the current epoch",
            r.topics[0].partitions[0].error_code,
            None,
            &r,
        )?;
        let r = ctx.send(&request(-1, ctx.first_epoch), v).await?;
        expect_code(
            "latest in an older epoch",
            r.topics[0].partitions[0].error_code,
            Some(ResponseError::FencedLeaderEpoch),
            &r,
        )?;
    }
    Ok(())
}

fn check_topic_entry(ctx: &Ctx, r: &MetadataResponse, v: i16) -> Probe {
    let t = r
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.as_str() == TOPIC))
        .ok_or_else(|| format!("{TOPIC} missing from {r:?}"))?;
    expect_code("topic", t.error_code, None, r)?;
    check!(t.partitions.len() == 1, "partitions {:?}", t.partitions);
    let p = &t.partitions[0];
    expect_code("partition", p.error_code, None, r)?;
    check!(
        p.leader_id.0 == 0 && p.replica_nodes.len() == 1 && p.isr_nodes.len() == 1,
        "partition {p:?}"
    );
    if v >= 7 {
        check!(
            p.leader_epoch == ctx.epoch,
            "leader epoch {}",
            p.leader_epoch
        );
    }
    if v >= 10 {
        check!(t.topic_id == ctx.topic_id, "topic id {}", t.topic_id);
    }
    check!(
        r.brokers.len() == 1 && r.brokers[0].port == ctx.port,
        "brokers {:?}",
        r.brokers
    );
    if v >= 2 {
        check!(r.cluster_id.is_some(), "no cluster id");
    }
    Ok(())
}

async fn metadata_at(ctx: &mut Ctx, v: i16) -> Probe {
    let named = |name: &str| MetadataRequestTopic::default().with_name(Some(topic_name(name)));
    let r = ctx
        .send(
            &MetadataRequest::default().with_topics(Some(vec![named(TOPIC)])),
            v,
        )
        .await?;
    check!(r.topics.len() == 1, "topics {:?}", r.topics);
    check_topic_entry(ctx, &r, v)?;

    // All topics: v0 by an empty list, v1+ by null.
    let all = if v == 0 { Some(vec![]) } else { None };
    let r = ctx
        .send(&MetadataRequest::default().with_topics(all), v)
        .await?;
    check_topic_entry(ctx, &r, v)?;

    if v >= 4 {
        let req = MetadataRequest::default()
            .with_allow_auto_topic_creation(false)
            .with_topics(Some(vec![named("every-version-missing")]));
        let r = ctx.send(&req, v).await?;
        expect_code(
            "unknown topic without auto-creation",
            r.topics[0].error_code,
            Some(ResponseError::UnknownTopicOrPartition),
            &r,
        )?;
    }
    if v >= 10 {
        let req = MetadataRequest::default().with_topics(Some(vec![
            MetadataRequestTopic::default()
                .with_name(None)
                .with_topic_id(ctx.topic_id),
        ]));
        let r = ctx.send(&req, v).await?;
        check_topic_entry(ctx, &r, v)?;
    }
    Ok(())
}

async fn api_versions_at(ctx: &mut Ctx, v: i16) -> Probe {
    let mut req = ApiVersionsRequest::default();
    if v >= 3 {
        req.client_software_name = sb("strand-every-version");
        req.client_software_version = sb("0.1.0");
    }
    let r = ctx.send(&req, v).await?;
    expect_code("ApiVersions", r.error_code, None, &r)?;
    let advertised: Vec<(i16, i16, i16)> = r
        .api_keys
        .iter()
        .map(|k| (k.api_key, k.min_version, k.max_version))
        .collect();
    let supported: Vec<(i16, i16, i16)> = SUPPORTED
        .iter()
        .map(|(k, min, max)| (*k as i16, *min, *max))
        .collect();
    check!(
        advertised == supported,
        "advertised {advertised:?}, SUPPORTED {supported:?}"
    );
    Ok(())
}

async fn create_topics_at(ctx: &mut Ctx, v: i16) -> Probe {
    let request = |name: &str, partitions: i32, replication: i16, validate_only: bool| {
        CreateTopicsRequest::default()
            .with_timeout_ms(10_000)
            .with_validate_only(validate_only)
            .with_topics(vec![
                CreatableTopic::default()
                    .with_name(topic_name(name))
                    .with_num_partitions(partitions)
                    .with_replication_factor(replication)
                    .with_configs(vec![
                        CreatableTopicConfig::default()
                            .with_name(sb("retention.ms"))
                            .with_value(Some(sb("3600000"))),
                    ]),
            ])
    };
    let check_created = |what: &str, r: &CreateTopicsResponse, partitions: i32| -> Probe {
        let t = &r.topics[0];
        expect_code(what, t.error_code, None, r)?;
        if v >= 5 {
            check!(
                t.num_partitions == partitions && t.replication_factor == 1,
                "{what}: {t:?}"
            );
            let retention = t
                .configs
                .iter()
                .flatten()
                .find(|c| c.name.as_str() == "retention.ms");
            check!(
                retention.is_some_and(|c| c.value.as_deref() == Some("3600000")),
                "{what}: configs {:?}",
                t.configs
            );
        }
        Ok(())
    };

    let name = format!("every-version-create-v{v}");
    let r = ctx.send(&request(&name, 2, 1, false), v).await?;
    check_created("create", &r, 2)?;
    if v >= 7 {
        check!(!r.topics[0].topic_id.is_nil(), "no topic id: {r:?}");
    }
    check!(ctx.topic_exists(&name).await?, "{name} was not created");

    let r = ctx.send(&request(&name, 2, 1, false), v).await?;
    expect_code(
        "create again",
        r.topics[0].error_code,
        Some(ResponseError::TopicAlreadyExists),
        &r,
    )?;

    let validated = format!("every-version-validate-v{v}");
    let r = ctx.send(&request(&validated, 1, 1, true), v).await?;
    check_created("validate only", &r, 1)?;
    check!(
        !ctx.topic_exists(&validated).await?,
        "validate_only created {validated}"
    );

    // v4+: -1 takes the broker's defaults (one partition here).
    if v >= 4 {
        let defaults = format!("every-version-defaults-v{v}");
        let r = ctx.send(&request(&defaults, -1, -1, false), v).await?;
        check_created("create with defaults", &r, 1)?;
    }
    Ok(())
}

async fn delete_topics_at(ctx: &mut Ctx, v: i16) -> Probe {
    let by_name = |name: &str| {
        let req = DeleteTopicsRequest::default().with_timeout_ms(10_000);
        if v >= 6 {
            req.with_topics(vec![
                DeleteTopicState::default().with_name(Some(topic_name(name))),
            ])
        } else {
            req.with_topic_names(vec![topic_name(name)])
        }
    };
    let name = format!("every-version-delete-v{v}");
    let id = ctx.create_topic(&name).await?;
    let r = ctx.send(&by_name(&name), v).await?;
    expect_code("delete", r.responses[0].error_code, None, &r)?;
    if v >= 6 {
        check!(r.responses[0].topic_id == id, "topic id in {r:?}");
    }
    check!(!ctx.topic_exists(&name).await?, "{name} still exists");

    let r = ctx.send(&by_name("every-version-never-created"), v).await?;
    expect_code(
        "delete an unknown topic",
        r.responses[0].error_code,
        Some(ResponseError::UnknownTopicOrPartition),
        &r,
    )?;
    // The internal offsets topic holds every group's commits: never deleted.
    let r = ctx.send(&by_name("__consumer_offsets"), v).await?;
    let want = Some(ResponseError::InvalidRequest);
    expect_code(
        "delete __consumer_offsets",
        r.responses[0].error_code,
        want,
        &r,
    )?;

    if v >= 6 {
        let by_id = |id: uuid::Uuid| {
            DeleteTopicsRequest::default()
                .with_timeout_ms(10_000)
                .with_topics(vec![
                    DeleteTopicState::default()
                        .with_name(None)
                        .with_topic_id(id),
                ])
        };
        let name = format!("every-version-delete-by-id-v{v}");
        let id = ctx.create_topic(&name).await?;
        let r = ctx.send(&by_id(id), v).await?;
        expect_code("delete by id", r.responses[0].error_code, None, &r)?;
        check!(
            r.responses[0].name.as_ref().map(|n| n.as_str()) == Some(name.as_str()),
            "name in {r:?}"
        );
        let r = ctx.send(&by_id(uuid::Uuid::new_v4()), v).await?;
        expect_code(
            "delete an unknown id",
            r.responses[0].error_code,
            Some(ResponseError::UnknownTopicId),
            &r,
        )?;
    }
    Ok(())
}

async fn init_producer_id_at(ctx: &mut Ctx, v: i16) -> Probe {
    let request = |txn: Option<&str>| {
        InitProducerIdRequest::default()
            .with_transactional_id(txn.map(|t| TransactionalId(sb(t))))
            .with_transaction_timeout_ms(60_000)
    };
    let r = ctx.send(&request(None), v).await?;
    expect_code("idempotent producer", r.error_code, None, &r)?;
    check!(
        r.producer_id.0 >= 0 && r.producer_epoch == 0,
        "producer {:?} epoch {}",
        r.producer_id,
        r.producer_epoch
    );
    let r = ctx.send(&request(Some("every-version-txn")), v).await?;
    expect_code(
        "transactional producer",
        r.error_code,
        Some(ResponseError::TransactionalIdAuthorizationFailed),
        &r,
    )
}

async fn offset_for_leader_epoch_at(ctx: &mut Ctx, v: i16) -> Probe {
    let request = |partition: i32, leader_epoch: i32, current_leader_epoch: i32| {
        let mut r = OffsetForLeaderEpochRequest::default().with_topics(vec![
            OffsetForLeaderTopic::default()
                .with_topic(topic_name(TOPIC))
                .with_partitions(vec![
                    OffsetForLeaderPartition::default()
                        .with_partition(partition)
                        .with_leader_epoch(leader_epoch)
                        .with_current_leader_epoch(current_leader_epoch),
                ]),
        ]);
        if v >= 3 {
            r.replica_id = (-1).into(); // a consumer
        }
        r
    };
    for (what, epoch, end) in [
        ("first epoch", ctx.first_epoch, ctx.first_end),
        ("current epoch", ctx.epoch, ctx.log_end),
    ] {
        for current in [-1, ctx.epoch] {
            let r = ctx.send(&request(0, epoch, current), v).await?;
            let p = &r.topics[0].partitions[0];
            expect_code(what, p.error_code, None, &r)?;
            check!(
                (p.leader_epoch, p.end_offset) == (epoch, end),
                "{what}: ({}, {}), want ({epoch}, {end})",
                p.leader_epoch,
                p.end_offset
            );
        }
    }
    let r = ctx.send(&request(0, ctx.epoch, ctx.first_epoch), v).await?;
    expect_code(
        "stale current epoch",
        r.topics[0].partitions[0].error_code,
        Some(ResponseError::FencedLeaderEpoch),
        &r,
    )?;
    let r = ctx.send(&request(7, ctx.epoch, -1), v).await?;
    expect_code(
        "missing partition",
        r.topics[0].partitions[0].error_code,
        Some(ResponseError::UnknownTopicOrPartition),
        &r,
    )
}

async fn describe_configs_at(ctx: &mut Ctx, v: i16) -> Probe {
    let request = |resource_type: i8, name: &str, keys: Option<&[&str]>| {
        let mut r = DescribeConfigsRequest::default()
            .with_include_synonyms(true)
            .with_resources(vec![
                DescribeConfigsResource::default()
                    .with_resource_type(resource_type)
                    .with_resource_name(sb(name))
                    .with_configuration_keys(keys.map(|k| k.iter().map(|k| sb(k)).collect())),
            ]);
        if v >= 3 {
            r.include_documentation = true;
        }
        r
    };
    let r = ctx.send(&request(RESOURCE_TOPIC, TOPIC, None), v).await?;
    let res = &r.results[0];
    expect_code("topic configs", res.error_code, None, &r)?;
    check!(
        res.configs
            .iter()
            .any(|c| c.name.as_str() == "retention.ms"),
        "no retention.ms in {r:?}"
    );

    let r = ctx
        .send(
            &request(RESOURCE_TOPIC, TOPIC, Some(&["cleanup.policy"])),
            v,
        )
        .await?;
    let res = &r.results[0];
    expect_code("one topic config", res.error_code, None, &r)?;
    check!(
        res.configs.len() == 1 && res.configs[0].value.as_deref() == Some("delete"),
        "cleanup.policy: {r:?}"
    );

    let r = ctx.send(&request(RESOURCE_BROKER, "0", None), v).await?;
    let res = &r.results[0];
    expect_code("broker configs", res.error_code, None, &r)?;
    check!(
        res.configs
            .iter()
            .any(|c| c.name.as_str() == "node.id" && c.value.as_deref() == Some("0")),
        "no node.id in {r:?}"
    );

    let r = ctx
        .send(&request(RESOURCE_TOPIC, "every-version-missing", None), v)
        .await?;
    expect_code(
        "unknown topic",
        r.results[0].error_code,
        Some(ResponseError::UnknownTopicOrPartition),
        &r,
    )
}

async fn find_coordinator_at(ctx: &mut Ctx, v: i16) -> Probe {
    let port = ctx.port;
    if v >= 4 {
        let keys = ["every-version-find-a", "every-version-find-b"];
        let req = FindCoordinatorRequest::default()
            .with_key_type(KEY_GROUP)
            .with_coordinator_keys(keys.iter().map(|k| sb(k)).collect());
        let r = ctx.send(&req, v).await?;
        check!(r.coordinators.len() == 2, "coordinators {r:?}");
        for (c, key) in r.coordinators.iter().zip(keys) {
            expect_code(key, c.error_code, None, &r)?;
            check!(
                c.key.as_str() == key && c.node_id.0 == 0 && c.port == port,
                "coordinator {c:?}"
            );
        }
        let req = FindCoordinatorRequest::default()
            .with_key_type(KEY_TRANSACTION)
            .with_coordinator_keys(vec![sb("every-version-txn")]);
        let r = ctx.send(&req, v).await?;
        return expect_code(
            "transaction coordinator",
            r.coordinators[0].error_code,
            Some(ResponseError::CoordinatorNotAvailable),
            &r,
        );
    }
    let mut req =
        FindCoordinatorRequest::default().with_key(sb(&format!("every-version-find-v{v}")));
    if v >= 1 {
        req.key_type = KEY_GROUP;
    }
    let r = ctx.send(&req, v).await?;
    expect_code("group coordinator", r.error_code, None, &r)?;
    check!(
        r.node_id.0 == 0 && r.port == port && !r.host.is_empty(),
        "coordinator {r:?}"
    );
    if v >= 1 {
        let req = FindCoordinatorRequest::default()
            .with_key(sb("every-version-txn"))
            .with_key_type(KEY_TRANSACTION);
        let r = ctx.send(&req, v).await?;
        expect_code(
            "transaction coordinator",
            r.error_code,
            Some(ResponseError::CoordinatorNotAvailable),
            &r,
        )?;
    }
    Ok(())
}

async fn join_group_at(ctx: &mut Ctx, v: i16) -> Probe {
    let check_joined = |what: &str, r: &JoinGroupResponse, instance: Option<&str>| -> Probe {
        expect_code(what, r.error_code, None, r)?;
        check!(
            r.generation_id >= 1 && r.leader == r.member_id && r.members.len() == 1,
            "{what}: {r:?}"
        );
        let m = &r.members[0];
        check!(
            m.member_id == r.member_id && m.metadata == SUBSCRIPTION,
            "{what}: member {m:?}"
        );
        check!(
            m.group_instance_id.as_deref() == instance,
            "{what}: instance {:?}, want {instance:?}",
            m.group_instance_id
        );
        check!(
            r.protocol_name.as_deref() == Some("range"),
            "{what}: protocol {:?}",
            r.protocol_name
        );
        if v >= 7 {
            check!(
                r.protocol_type.as_deref() == Some("consumer"),
                "{what}: protocol type {:?}",
                r.protocol_type
            );
        }
        Ok(())
    };
    let (r, _) = ctx
        .join(&format!("every-version-join-v{v}"), None, v)
        .await?;
    check_joined("dynamic member", &r, None)?;
    if v >= 5 {
        let instance = format!("every-version-join-instance-v{v}");
        let (r, _) = ctx
            .join(
                &format!("every-version-join-static-v{v}"),
                Some(&instance),
                v,
            )
            .await?;
        check_joined("static member", &r, Some(&instance))?;
    }
    Ok(())
}

/// Static membership where the API at `v` can say so (`instance_from`), dynamic before.
fn instance_for(prefix: &str, v: i16, instance_from: i16) -> Option<String> {
    (v >= instance_from).then(|| format!("{prefix}-instance-v{v}"))
}

async fn sync_group_at(ctx: &mut Ctx, v: i16) -> Probe {
    let group = format!("every-version-sync-v{v}");
    let instance = instance_for("every-version-sync", v, 3);
    let (j, _) = ctx.join(&group, instance.as_deref(), 9).await?;
    expect_code("join", j.error_code, None, &j)?;
    let m = Member {
        group,
        id: j.member_id.to_string(),
        instance,
        generation: j.generation_id,
    };
    let r = ctx.send(&sync_request(&m, v), v).await?;
    expect_code("sync", r.error_code, None, &r)?;
    check!(r.assignment == ASSIGNMENT, "assignment {r:?}");
    if v >= 5 {
        check!(
            r.protocol_type.as_deref() == Some("consumer")
                && r.protocol_name.as_deref() == Some("range"),
            "protocol {r:?}"
        );
    }
    let stranger = Member {
        id: "every-version-stranger".into(),
        instance: None,
        ..m
    };
    let r = ctx.send(&sync_request(&stranger, v), v).await?;
    expect_code(
        "sync of an unknown member",
        r.error_code,
        Some(ResponseError::UnknownMemberId),
        &r,
    )
}

async fn heartbeat_at(ctx: &mut Ctx, v: i16) -> Probe {
    let instance = instance_for("every-version-heartbeat", v, 3);
    let m = ctx
        .member(
            &format!("every-version-heartbeat-v{v}"),
            instance.as_deref(),
        )
        .await?;
    let request = |member: &str, generation: i32, instance: Option<&str>| {
        let mut r = HeartbeatRequest::default()
            .with_group_id(gid(&m.group))
            .with_generation_id(generation)
            .with_member_id(sb(member));
        if v >= 3 {
            r.group_instance_id = instance.map(sb);
        }
        r
    };
    let r = ctx
        .send(&request(&m.id, m.generation, m.instance.as_deref()), v)
        .await?;
    expect_code("heartbeat", r.error_code, None, &r)?;
    let r = ctx
        .send(&request(&m.id, m.generation + 1, m.instance.as_deref()), v)
        .await?;
    expect_code(
        "heartbeat of another generation",
        r.error_code,
        Some(ResponseError::IllegalGeneration),
        &r,
    )?;
    let r = ctx
        .send(&request("every-version-stranger", m.generation, None), v)
        .await?;
    expect_code(
        "heartbeat of an unknown member",
        r.error_code,
        Some(ResponseError::UnknownMemberId),
        &r,
    )
}

async fn leave_group_at(ctx: &mut Ctx, v: i16) -> Probe {
    let instance = instance_for("every-version-leave", v, 3);
    let m = ctx
        .member(&format!("every-version-leave-v{v}"), instance.as_deref())
        .await?;
    let request = || {
        let r = LeaveGroupRequest::default().with_group_id(gid(&m.group));
        if v >= 3 {
            let mut who = MemberIdentity::default()
                .with_member_id(sb(&m.id))
                .with_group_instance_id(m.instance.as_deref().map(sb));
            if v >= 5 {
                who.reason = Some(sb("every-version test"));
            }
            r.with_members(vec![who])
        } else {
            r.with_member_id(sb(&m.id))
        }
    };
    let r = ctx.send(&request(), v).await?;
    expect_code("leave", r.error_code, None, &r)?;
    if v >= 3 {
        check!(r.members.len() == 1, "members {r:?}");
        expect_code("leave (member)", r.members[0].error_code, None, &r)?;
        check!(r.members[0].member_id.as_str() == m.id, "member {r:?}");
    }
    // Gone now.
    let r = ctx.send(&request(), v).await?;
    let code = if v >= 3 {
        expect_code("leave again", r.error_code, None, &r)?;
        r.members[0].error_code
    } else {
        r.error_code
    };
    expect_code(
        "leave again",
        code,
        Some(ResponseError::UnknownMemberId),
        &r,
    )
}

async fn offset_commit_at(ctx: &mut Ctx, v: i16) -> Probe {
    let epoch = ctx.epoch;
    let request =
        |group: &str, member: &str, generation: i32, instance: Option<&str>, partition: i32| {
            let mut t = commit_topic(3, epoch, "every-version", v);
            t.partitions[0].partition_index = partition;
            let mut r = OffsetCommitRequest::default()
                .with_group_id(gid(group))
                .with_generation_id_or_member_epoch(generation)
                .with_member_id(sb(member))
                .with_topics(vec![t]);
            if v >= 7 {
                r.group_instance_id = instance.map(sb);
            }
            r
        };
    // A member's commit.
    let instance = instance_for("every-version-commit", v, 7);
    let m = ctx
        .member(&format!("every-version-commit-v{v}"), instance.as_deref())
        .await?;
    let req = request(&m.group, &m.id, m.generation, m.instance.as_deref(), 0);
    let r = ctx.send(&req, v).await?;
    expect_code(
        "member commit",
        r.topics[0].partitions[0].error_code,
        None,
        &r,
    )?;
    let at = ctx.committed(&m.group).await?;
    check!(at == 3, "committed {at}");

    // A commit outside any generation (a consumer with assign()).
    let group = format!("every-version-commit-simple-v{v}");
    let r = ctx.send(&request(&group, "", -1, None, 0), v).await?;
    expect_code(
        "simple commit",
        r.topics[0].partitions[0].error_code,
        None,
        &r,
    )?;
    let at = ctx.committed(&group).await?;
    check!(at == 3, "committed {at}");

    let r = ctx.send(&request(&group, "", -1, None, 7), v).await?;
    expect_code(
        "commit for a missing partition",
        r.topics[0].partitions[0].error_code,
        Some(ResponseError::UnknownTopicOrPartition),
        &r,
    )
}

async fn offset_fetch_at(ctx: &mut Ctx, v: i16) -> Probe {
    let group = format!("every-version-fetch-v{v}");
    let metadata = format!("meta-v{v}");
    ctx.simple_commit(&group, 7, &metadata).await?;
    let unknown = "every-version-fetch-nobody";
    let epoch = ctx.epoch;
    // (offset, leader epoch, metadata, error) of partition 0 of the topic.
    type Seen = (i64, i32, String, i16);
    let want_epoch = if v >= 5 { epoch } else { -1 };
    let want: Seen = (7, want_epoch, metadata.clone(), 0);
    let nothing: Seen = (-1, -1, String::new(), 0);

    if v >= 8 {
        let groups = |all: bool| {
            [group.as_str(), unknown]
                .iter()
                .map(|g| {
                    OffsetFetchRequestGroup::default()
                        .with_group_id(gid(g))
                        .with_topics((!all).then(|| {
                            vec![
                                OffsetFetchRequestTopics::default()
                                    .with_name(topic_name(TOPIC))
                                    .with_partition_indexes(vec![0]),
                            ]
                        }))
                })
                .collect::<Vec<_>>()
        };
        for all in [false, true] {
            let r = ctx
                .send(
                    &OffsetFetchRequest::default()
                        .with_require_stable(true)
                        .with_groups(groups(all)),
                    v,
                )
                .await?;
            check!(r.groups.len() == 2, "groups {r:?}");
            for (g, wanted) in r.groups.iter().zip([&want, &nothing]) {
                expect_code(g.group_id.as_str(), g.error_code, None, &r)?;
                let seen: Option<Seen> = g
                    .topics
                    .iter()
                    .filter(|t| t.name.as_str() == TOPIC)
                    .flat_map(|t| &t.partitions)
                    .find(|p| p.partition_index == 0)
                    .map(|p| {
                        (
                            p.committed_offset,
                            p.committed_leader_epoch,
                            p.metadata.as_deref().unwrap_or_default().to_string(),
                            p.error_code,
                        )
                    });
                // Asking for all topics of a group without commits lists none.
                if all && wanted.0 < 0 {
                    check!(seen.is_none(), "{}: {r:?}", g.group_id.as_str());
                } else {
                    check!(
                        seen.as_ref() == Some(wanted),
                        "{}: {seen:?}, want {wanted:?}",
                        g.group_id.as_str()
                    );
                }
            }
        }
        return Ok(());
    }

    let request = |g: &str, all: bool| {
        let mut r = OffsetFetchRequest::default()
            .with_group_id(gid(g))
            .with_topics((!all).then(|| {
                vec![
                    OffsetFetchRequestTopic::default()
                        .with_name(topic_name(TOPIC))
                        .with_partition_indexes(vec![0]),
                ]
            }));
        if v >= 7 {
            r.require_stable = true;
        }
        r
    };
    // v2+ may ask for all topics (null).
    let shapes: &[bool] = if v >= 2 { &[false, true] } else { &[false] };
    for &all in shapes {
        for (g, wanted) in [(group.as_str(), &want), (unknown, &nothing)] {
            let r = ctx.send(&request(g, all), v).await?;
            if v >= 2 {
                expect_code(g, r.error_code, None, &r)?;
            }
            let seen: Option<Seen> = r
                .topics
                .iter()
                .filter(|t| t.name.as_str() == TOPIC)
                .flat_map(|t| &t.partitions)
                .find(|p| p.partition_index == 0)
                .map(|p| {
                    (
                        p.committed_offset,
                        p.committed_leader_epoch,
                        p.metadata.as_deref().unwrap_or_default().to_string(),
                        p.error_code,
                    )
                });
            if all && wanted.0 < 0 {
                check!(seen.is_none(), "{g}: {r:?}");
            } else {
                check!(
                    seen.as_ref() == Some(wanted),
                    "{g} (all topics: {all}): {seen:?}, want {wanted:?}"
                );
            }
        }
    }
    Ok(())
}

async fn describe_groups_at(ctx: &mut Ctx, v: i16) -> Probe {
    // A static member: its instance id is shown from v4 and must be left out before.
    let group = format!("every-version-describe-v{v}");
    let instance = format!("every-version-describe-instance-v{v}");
    let m = ctx.member(&group, Some(&instance)).await?;
    let unknown = "every-version-describe-nobody";
    let mut req = DescribeGroupsRequest::default().with_groups(vec![gid(&group), gid(unknown)]);
    if v >= 3 {
        req.include_authorized_operations = true;
    }
    let r = ctx.send(&req, v).await?;
    check!(r.groups.len() == 2, "groups {r:?}");
    let g = &r.groups[0];
    expect_code(&group, g.error_code, None, &r)?;
    check!(
        g.group_state.as_str() == "Stable"
            && g.protocol_type.as_str() == "consumer"
            && g.protocol_data.as_str() == "range"
            && g.members.len() == 1,
        "{group}: {g:?}"
    );
    let d = &g.members[0];
    let want_instance = (v >= 4).then_some(instance.as_str());
    check!(
        d.member_id.as_str() == m.id
            && d.client_id.as_str() == CLIENT_ID
            && d.group_instance_id.as_deref() == want_instance
            && d.member_metadata == SUBSCRIPTION
            && d.member_assignment == ASSIGNMENT,
        "member {d:?}"
    );
    let u = &r.groups[1];
    let want = (v >= 6).then_some(ResponseError::GroupIdNotFound);
    expect_code(unknown, u.error_code, want, &r)?;
    check!(u.group_state.as_str() == "Dead", "{unknown}: {u:?}");
    Ok(())
}

async fn list_groups_at(ctx: &mut Ctx, v: i16) -> Probe {
    let group = format!("every-version-list-v{v}");
    ctx.member(&group, None).await?;
    let request = |states: &[&str], types: &[&str]| {
        let mut r = ListGroupsRequest::default();
        if v >= 4 {
            r.states_filter = states.iter().map(|s| sb(s)).collect();
        }
        if v >= 5 {
            r.types_filter = types.iter().map(|s| sb(s)).collect();
        }
        r
    };
    let r = ctx.send(&request(&[], &[]), v).await?;
    expect_code("list", r.error_code, None, &r)?;
    let listed = r
        .groups
        .iter()
        .find(|g| g.group_id.as_str() == group)
        .ok_or_else(|| format!("{group} not listed: {r:?}"))?;
    check!(listed.protocol_type.as_str() == "consumer", "{listed:?}");
    if v >= 4 {
        check!(listed.group_state.as_str() == "Stable", "{listed:?}");
        let r = ctx.send(&request(&["Empty"], &[]), v).await?;
        expect_code("list empty groups", r.error_code, None, &r)?;
        check!(
            r.groups.iter().all(|g| g.group_id.as_str() != group),
            "{group} listed as empty: {r:?}"
        );
    }
    if v >= 5 {
        check!(listed.group_type.as_str() == "classic", "{listed:?}");
        let r = ctx.send(&request(&["Stable"], &["classic"]), v).await?;
        expect_code("list stable classic groups", r.error_code, None, &r)?;
        check!(
            r.groups.iter().any(|g| g.group_id.as_str() == group),
            "{group} not listed: {r:?}"
        );
    }
    Ok(())
}

async fn delete_groups_at(ctx: &mut Ctx, v: i16) -> Probe {
    let empty = format!("every-version-delete-group-v{v}");
    ctx.simple_commit(&empty, 4, "").await?;
    let busy = format!("every-version-delete-busy-v{v}");
    ctx.member(&busy, None).await?;
    let unknown = "every-version-delete-nobody";
    let req = DeleteGroupsRequest::default().with_groups_names(vec![
        gid(&empty),
        gid(&busy),
        gid(unknown),
    ]);
    let r = ctx.send(&req, v).await?;
    check!(r.results.len() == 3, "results {r:?}");
    for (res, (group, want)) in r.results.iter().zip([
        (empty.as_str(), None),
        (busy.as_str(), Some(ResponseError::NonEmptyGroup)),
        (unknown, Some(ResponseError::GroupIdNotFound)),
    ]) {
        check!(res.group_id.as_str() == group, "results {r:?}");
        expect_code(group, res.error_code, want, &r)?;
    }
    let at = ctx.committed(&empty).await?;
    check!(at == -1, "{empty} still has offset {at}");
    Ok(())
}

/// Leader epoch of the topic's partition, by Metadata v12.
async fn leader_epoch(bootstrap: &str) -> (i32, uuid::Uuid) {
    let mut c = Connection::connect(bootstrap, CLIENT_ID).await.unwrap();
    let req = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(topic_name(TOPIC))),
    ]));
    let r = c.send(&req, 12).await.unwrap();
    let t = &r.topics[0];
    assert_eq!(t.error_code, 0, "{r:?}");
    (t.partitions[0].leader_epoch, t.topic_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_advertised_version_of_every_api_encodes_decodes_and_answers() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    // With a cluster secret, so SaslHandshake and SaslAuthenticate have a user to accept.
    let secret_file = dir.path().join("cluster-secret");
    std::fs::write(&secret_file, SECRET).unwrap();
    let mut broker = BrokerProcess::start_with_env(
        &dir.path().join("data"),
        BROKER_ARGS,
        &[("STRAND_CLUSTER_SECRET_FILE", secret_file.to_str().unwrap())],
    );

    // Records in two leader epochs: a restart of a standalone broker starts a new one.
    let settings = [("enable.idempotence", "true"), ("linger.ms", "1")];
    let p = producer(&broker.bootstrap(), &settings);
    let first = produce(&p, TOPIC, "a", FIRST_EPOCH_RECORDS).await;
    drop(p);
    let (first_epoch, _) = leader_epoch(&broker.bootstrap()).await;
    assert!(broker.terminate());
    broker.spawn();
    let p = producer(&broker.bootstrap(), &settings);
    let second = produce(&p, TOPIC, "b", SECOND_EPOCH_RECORDS).await;
    drop(p);
    let (epoch, topic_id) = leader_epoch(&broker.bootstrap()).await;
    assert!(
        first_epoch >= 0 && epoch > first_epoch,
        "leader epochs {first_epoch} then {epoch}"
    );
    assert!(
        first.keys().chain(second.keys()).all(|(p, _)| *p == 0),
        "one partition"
    );
    println!(
        "{TOPIC}-0: {} records in leader epoch {first_epoch}, then {} in epoch {epoch}",
        first.len(),
        second.len()
    );

    let bootstrap = broker.bootstrap();
    let mut ctx = Ctx {
        conn: Connection::connect(&bootstrap, CLIENT_ID).await.unwrap(),
        bootstrap,
        port: i32::from(broker.kafka.port()),
        broken: false,
        first_end: first.len() as i64,
        log_end: (first.len() + second.len()) as i64,
        first_epoch,
        epoch,
        topic_id,
        requests: 0,
    };

    // The group coordinator is ready (its offsets partition created and loaded).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let req = FindCoordinatorRequest::default().with_key(sb("every-version-warm-up"));
        let r = ctx.send(&req, 0).await.unwrap();
        if r.error_code == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no group coordinator: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut pairs = 0;
    let mut failed_pairs = 0;
    let mut failures = Vec::new();
    for &(key, min, max) in SUPPORTED {
        assert!(min <= max, "{key:?} advertises {min}..={max}");
        let api_started = Instant::now();
        let mut api_failures = 0;
        for v in min..=max {
            pairs += 1;
            let mut failed = Vec::new();
            if let Err(e) = probe(&mut ctx, key, v).await {
                failed.push(e);
            }
            if let Err(e) = ctx.still_usable().await {
                failed.push(format!("connection unusable afterwards: {e}"));
                ctx.reconnect().await;
            }
            if !failed.is_empty() {
                failed_pairs += 1;
                api_failures += 1;
            }
            for e in failed {
                eprintln!("FAILED {key:?} v{v}: {e}");
                failures.push(format!("{key:?} v{v}: {e}"));
            }
        }
        println!(
            "{key:?} v{min}-v{max}: {} in {:?}",
            if api_failures == 0 { "ok" } else { "FAILED" },
            api_started.elapsed()
        );
    }
    println!(
        "checked {pairs} (API, version) pairs of {} APIs with {} requests in {:?} \
         ({failed_pairs} pairs failed)",
        SUPPORTED.len(),
        ctx.requests,
        started.elapsed(),
    );
    assert!(
        failures.is_empty(),
        "{failed_pairs} of {pairs} advertised (API, version) pairs failed:\n{}\nbroker log:\n{}",
        failures.join("\n"),
        broker.log()
    );
    assert!(broker.terminate(), "broker did not stop cleanly");
}

async fn create_partitions_at(ctx: &mut Ctx, v: i16) -> Probe {
    let name = format!("every-version-grow-v{v}");
    ctx.create_topic(&name).await?;
    let request = |topic: &str, count: i32, validate_only: bool| {
        CreatePartitionsRequest::default()
            .with_timeout_ms(10_000)
            .with_validate_only(validate_only)
            .with_topics(vec![
                CreatePartitionsTopic::default()
                    .with_name(topic_name(topic))
                    .with_count(count),
            ])
    };
    let r = ctx.send(&request(&name, 3, false), v).await?;
    expect_code("grow to 3", r.results[0].error_code, None, &r)?;
    check!(
        ctx.partition_count(&name).await? == 3,
        "{name} did not grow"
    );
    let r = ctx.send(&request(&name, 5, true), v).await?;
    expect_code("validate 5", r.results[0].error_code, None, &r)?;
    let r = ctx.send(&request(&name, 2, false), v).await?;
    let want = Some(ResponseError::InvalidPartitions);
    expect_code("shrink to 2", r.results[0].error_code, want, &r)?;
    check!(
        ctx.partition_count(&name).await? == 3,
        "validate_only or a refused shrink changed {name}"
    );
    let r = ctx
        .send(&request("every-version-nope", 3, false), v)
        .await?;
    let want = Some(ResponseError::UnknownTopicOrPartition);
    expect_code("unknown topic", r.results[0].error_code, want, &r)?;
    // Growing the offsets topic would move every group to another partition, away from its
    // commits.
    let r = ctx
        .send(&request("__consumer_offsets", 8, false), v)
        .await?;
    let want = Some(ResponseError::InvalidRequest);
    expect_code("grow __consumer_offsets", r.results[0].error_code, want, &r)
}

async fn alter_configs_at(ctx: &mut Ctx, v: i16) -> Probe {
    use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
    let name = format!("every-version-alter-v{v}");
    ctx.create_topic(&name).await?;
    let request = |resource_type: i8, resource: &str, key: &str, value: &str| {
        AlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(sb(resource))
                .with_configs(vec![
                    AlterableConfig::default()
                        .with_name(sb(key))
                        .with_value(Some(sb(value))),
                ]),
        ])
    };
    let r = ctx
        .send(
            &request(RESOURCE_TOPIC, &name, "retention.ms", "1234567"),
            v,
        )
        .await?;
    expect_code("set retention.ms", r.responses[0].error_code, None, &r)?;
    let now = ctx.topic_config(&name, "retention.ms").await?;
    check!(now.as_deref() == Some("1234567"), "retention.ms is {now:?}");
    // The whole set is replaced: retention.ms goes back to its default.
    let r = ctx
        .send(
            &request(RESOURCE_TOPIC, &name, "max.message.bytes", "300000"),
            v,
        )
        .await?;
    expect_code("set max.message.bytes", r.responses[0].error_code, None, &r)?;
    let now = ctx.topic_config(&name, "retention.ms").await?;
    check!(
        now.as_deref() == Some("604800000"),
        "retention.ms is {now:?}"
    );
    let r = ctx
        .send(&request(RESOURCE_TOPIC, &name, "retention.ms", "banana"), v)
        .await?;
    let want = Some(ResponseError::InvalidConfig);
    expect_code("bad value", r.responses[0].error_code, want, &r)?;
    let now = ctx.topic_config(&name, "max.message.bytes").await?;
    check!(
        now.as_deref() == Some("300000"),
        "a refused change changed {now:?}"
    );
    let r = ctx
        .send(&request(RESOURCE_BROKER, "0", "log.retention.ms", "1"), v)
        .await?;
    let want = Some(ResponseError::InvalidRequest);
    expect_code("broker config", r.responses[0].error_code, want, &r)
}

async fn incremental_alter_configs_at(ctx: &mut Ctx, v: i16) -> Probe {
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    const SET: i8 = 0;
    const DELETE: i8 = 1;
    const APPEND: i8 = 2;
    let name = format!("every-version-incremental-v{v}");
    ctx.create_topic(&name).await?;
    let request = |ops: &[(&str, i8, &str)], validate_only: bool| {
        IncrementalAlterConfigsRequest::default()
            .with_validate_only(validate_only)
            .with_resources(vec![
                AlterConfigsResource::default()
                    .with_resource_type(RESOURCE_TOPIC)
                    .with_resource_name(sb(&name))
                    .with_configs(
                        ops.iter()
                            .map(|(k, op, value)| {
                                AlterableConfig::default()
                                    .with_name(sb(k))
                                    .with_config_operation(*op)
                                    .with_value(Some(sb(value)))
                            })
                            .collect(),
                    ),
            ])
    };
    let both = [
        ("retention.ms", SET, "7654321"),
        ("segment.ms", SET, "99999"),
    ];
    let r = ctx.send(&request(&both, false), v).await?;
    expect_code("set two", r.responses[0].error_code, None, &r)?;
    let r = ctx
        .send(&request(&[("retention.ms", DELETE, "")], false), v)
        .await?;
    expect_code("delete one", r.responses[0].error_code, None, &r)?;
    let (retention, segment) = (
        ctx.topic_config(&name, "retention.ms").await?,
        ctx.topic_config(&name, "segment.ms").await?,
    );
    check!(
        retention.as_deref() == Some("604800000") && segment.as_deref() == Some("99999"),
        "after DELETE: retention.ms {retention:?}, segment.ms {segment:?}"
    );
    let r = ctx
        .send(&request(&[("segment.ms", SET, "11111")], true), v)
        .await?;
    expect_code("validate only", r.responses[0].error_code, None, &r)?;
    let r = ctx
        .send(&request(&[("retention.ms", APPEND, "1")], false), v)
        .await?;
    let want = Some(ResponseError::InvalidConfig);
    expect_code("append to a scalar", r.responses[0].error_code, want, &r)?;
    let segment = ctx.topic_config(&name, "segment.ms").await?;
    check!(
        segment.as_deref() == Some("99999"),
        "validate_only or a refused change changed segment.ms: {segment:?}"
    );
    Ok(())
}

async fn elect_leaders_at(ctx: &mut Ctx, v: i16) -> Probe {
    use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
    let request = |election_type: i8, partitions: Vec<i32>| {
        ElectLeadersRequest::default()
            .with_election_type(if v >= 1 { election_type } else { 0 })
            .with_timeout_ms(10_000)
            .with_topic_partitions(Some(vec![
                TopicPartitions::default()
                    .with_topic(topic_name(TOPIC))
                    .with_partitions(partitions),
            ]))
    };
    let results = |r: &ElectLeadersResponse| -> Vec<(i32, i16)> {
        r.replica_election_results
            .iter()
            .flat_map(|t| {
                t.partition_result
                    .iter()
                    .map(|p| (p.partition_id, p.error_code))
            })
            .collect()
    };
    let r = ctx.send(&request(0, vec![0, 99]), v).await?;
    let got = results(&r);
    check!(
        got.contains(&(0, ResponseError::ElectionNotNeeded.code()))
            && got.contains(&(99, ResponseError::UnknownTopicOrPartition.code())),
        "preferred: {r:?}"
    );
    if v >= 1 {
        let r = ctx.send(&request(1, vec![0]), v).await?;
        check!(
            results(&r) == [(0, ResponseError::ElectionNotNeeded.code())],
            "unclean: {r:?}"
        );
    }
    Ok(())
}

async fn reassignments_at(ctx: &mut Ctx, v: i16) -> Probe {
    use kafka_protocol::messages::alter_partition_reassignments_request::{
        ReassignablePartition, ReassignableTopic,
    };
    let node = {
        let r = ctx.send(&MetadataRequest::default(), 1).await?;
        r.brokers[0].node_id.0
    };
    let request = |replicas: Option<Vec<i32>>| {
        let mut r = AlterPartitionReassignmentsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![
                ReassignableTopic::default()
                    .with_name(topic_name(TOPIC))
                    .with_partitions(vec![
                        ReassignablePartition::default()
                            .with_partition_index(0)
                            .with_replicas(
                                replicas.map(|rs| rs.into_iter().map(Into::into).collect()),
                            ),
                    ]),
            ]);
        if v >= 1 {
            r.allow_replication_factor_change = true;
        }
        r
    };
    let code = |r: &AlterPartitionReassignmentsResponse| r.responses[0].partitions[0].error_code;
    let r = ctx.send(&request(Some(vec![node])), v).await?;
    expect_code("onto itself", code(&r), None, &r)?;
    let r = ctx.send(&request(Some(vec![node, 99])), v).await?;
    let want = Some(ResponseError::InvalidReplicaAssignment);
    expect_code("onto an unknown broker", code(&r), want, &r)?;
    let r = ctx.send(&request(None), v).await?;
    let want = Some(ResponseError::NoReassignmentInProgress);
    expect_code("cancel", code(&r), want, &r)
}

async fn list_reassignments_at(ctx: &mut Ctx, v: i16) -> Probe {
    let r = ctx
        .send(
            &ListPartitionReassignmentsRequest::default().with_timeout_ms(10_000),
            v,
        )
        .await?;
    expect_code("list", r.error_code, None, &r)?;
    check!(
        r.topics.is_empty(),
        "a standalone broker moves nothing: {r:?}"
    );
    Ok(())
}

async fn describe_cluster_at(ctx: &mut Ctx, v: i16) -> Probe {
    let mut req = DescribeClusterRequest::default();
    if v >= 1 {
        req.endpoint_type = 1;
    }
    let r = ctx.send(&req, v).await?;
    expect_code("describe", r.error_code, None, &r)?;
    check!(
        !r.cluster_id.is_empty() && r.brokers.len() == 1 && r.brokers[0].port == ctx.port,
        "describe cluster: {r:?}"
    );
    if v >= 1 {
        req.endpoint_type = 2;
        let r = ctx.send(&req, v).await?;
        let want = Some(ResponseError::UnsupportedEndpointType);
        expect_code("controllers", r.error_code, want, &r)?;
    }
    Ok(())
}

/// Alter then describe a quota of a user no probe connects as (so nothing is throttled), a
/// refused entity beside it, and remove it again.
async fn client_quotas_at(ctx: &mut Ctx, v: i16) -> Probe {
    use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
    use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
    use kafka_protocol::messages::{AlterClientQuotasRequest, DescribeClientQuotasRequest};
    let user = format!("every-version-{v}");
    let entry = |entity_type: &str, value: f64, remove: bool| {
        EntryData::default()
            .with_entity(vec![
                EntityData::default()
                    .with_entity_type(sb(entity_type))
                    .with_entity_name(Some(sb(&user))),
            ])
            .with_ops(vec![
                OpData::default()
                    .with_key(sb("producer_byte_rate"))
                    .with_value(value)
                    .with_remove(remove),
            ])
    };
    let set = AlterClientQuotasRequest::default().with_entries(vec![
        entry("user", 4096.0, false),
        entry("group", 1.0, false),
    ]);
    let r = ctx.send(&set, v).await?;
    check!(r.entries.len() == 2, "two entries: {r:?}");
    expect_code("set", r.entries[0].error_code, None, &r)?;
    let invalid = Some(ResponseError::InvalidRequest);
    expect_code("unknown entity type", r.entries[1].error_code, invalid, &r)?;
    let describe = DescribeClientQuotasRequest::default().with_components(vec![
        ComponentData::default()
            .with_entity_type(sb("user"))
            .with_match_type(0)
            .with_match(Some(sb(&user))),
    ]);
    let r = ctx.send(&describe, v).await?;
    expect_code("describe", r.error_code, None, &r)?;
    let entries = r.entries.clone().unwrap_or_default();
    check!(
        entries.len() == 1
            && entries[0].entity[0].entity_name.as_deref() == Some(user.as_str())
            && entries[0].values.len() == 1
            && entries[0].values[0].value == 4096.0,
        "the quota set: {r:?}"
    );
    let remove = AlterClientQuotasRequest::default().with_entries(vec![entry("user", 0.0, true)]);
    let r = ctx.send(&remove, v).await?;
    expect_code("remove", r.entries[0].error_code, None, &r)?;
    let r = ctx.send(&describe, v).await?;
    check!(
        r.entries.as_ref().is_some_and(|e| e.is_empty()),
        "removed: {r:?}"
    );
    Ok(())
}

/// Create a user's SCRAM-SHA-512 credential beside a refused one (unknown mechanism), describe
/// it (mechanism and iterations, nothing else), delete it, and find it gone.
async fn scram_credentials_at(ctx: &mut Ctx, v: i16) -> Probe {
    use kafka_protocol::messages::alter_user_scram_credentials_request::{
        ScramCredentialDeletion, ScramCredentialUpsertion,
    };
    use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
    use kafka_protocol::messages::{
        AlterUserScramCredentialsRequest, DescribeUserScramCredentialsRequest,
    };
    let user = format!("every-version-{v}");
    let upsert = |name: &str, mechanism: i8| {
        ScramCredentialUpsertion::default()
            .with_name(sb(name))
            .with_mechanism(mechanism)
            .with_iterations(8192)
            .with_salt(bytes::Bytes::from_static(b"salt"))
            .with_salted_password(bytes::Bytes::from(vec![7u8; 64]))
    };
    let create = AlterUserScramCredentialsRequest::default()
        .with_upsertions(vec![upsert(&user, 2), upsert("every-version-bad", 9)]);
    let r = ctx.send(&create, v).await?;
    check!(r.results.len() == 2, "two users: {r:?}");
    expect_code("create", r.results[0].error_code, None, &r)?;
    let unsupported = Some(ResponseError::UnsupportedSaslMechanism);
    expect_code("mechanism 9", r.results[1].error_code, unsupported, &r)?;
    let describe = DescribeUserScramCredentialsRequest::default().with_users(Some(vec![
        UserName::default().with_name(sb(&user)),
        UserName::default().with_name(sb("every-version-bad")),
    ]));
    let r = ctx.send(&describe, v).await?;
    expect_code("describe", r.error_code, None, &r)?;
    check!(
        r.results.len() == 2
            && r.results[0].credential_infos.len() == 1
            && r.results[0].credential_infos[0].mechanism == 2
            && r.results[0].credential_infos[0].iterations == 8192,
        "the credential: {r:?}"
    );
    let not_found = Some(ResponseError::ResourceNotFound);
    expect_code("refused user", r.results[1].error_code, not_found, &r)?;
    let delete = AlterUserScramCredentialsRequest::default().with_deletions(vec![
        ScramCredentialDeletion::default()
            .with_name(sb(&user))
            .with_mechanism(2),
    ]);
    let r = ctx.send(&delete, v).await?;
    expect_code("delete", r.results[0].error_code, None, &r)?;
    let r = ctx.send(&describe, v).await?;
    expect_code("deleted", r.results[0].error_code, not_found, &r)?;
    Ok(())
}

/// This broker has no authorizer: every ACL API answers SECURITY_DISABLED, as Kafka's does,
/// and creates nothing (test_acls.py covers the authorizer).
async fn acls_at(ctx: &mut Ctx, v: i16) -> Probe {
    use kafka_protocol::messages::create_acls_request::AclCreation;
    use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
    use kafka_protocol::messages::{CreateAclsRequest, DeleteAclsRequest, DescribeAclsRequest};
    let disabled = Some(ResponseError::SecurityDisabled);
    let create = CreateAclsRequest::default().with_creations(vec![
        AclCreation::default()
            .with_resource_type(2)
            .with_resource_name(sb(TOPIC))
            .with_resource_pattern_type(3)
            .with_principal(sb("User:alice"))
            .with_host(sb("*"))
            .with_operation(3)
            .with_permission_type(3),
    ]);
    let r = ctx.send(&create, v).await?;
    check!(r.results.len() == 1, "one result: {r:?}");
    expect_code("create", r.results[0].error_code, disabled, &r)?;
    let describe = DescribeAclsRequest::default()
        .with_resource_type_filter(1)
        .with_pattern_type_filter(1)
        .with_operation(1)
        .with_permission_type(1);
    let r = ctx.send(&describe, v).await?;
    expect_code("describe", r.error_code, disabled, &r)?;
    check!(r.resources.is_empty(), "nothing described: {r:?}");
    let delete = DeleteAclsRequest::default().with_filters(vec![
        DeleteAclsFilter::default()
            .with_resource_type_filter(1)
            .with_pattern_type_filter(1)
            .with_operation(1)
            .with_permission_type(1),
    ]);
    let r = ctx.send(&delete, v).await?;
    check!(r.filter_results.len() == 1, "one filter result: {r:?}");
    expect_code("delete", r.filter_results[0].error_code, disabled, &r)?;
    Ok(())
}

async fn describe_log_dirs_at(ctx: &mut Ctx, v: i16) -> Probe {
    use kafka_protocol::messages::DescribeLogDirsRequest;
    use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
    let one = DescribeLogDirsRequest::default().with_topics(Some(vec![
        DescribableLogDirTopic::default()
            .with_topic(topic_name(TOPIC))
            .with_partitions(vec![0]),
    ]));
    let r = ctx.send(&one, v).await?;
    check!(r.results.len() == 1, "one data directory: {r:?}");
    let dir = &r.results[0];
    expect_code("log dir", dir.error_code, None, &r)?;
    check!(
        dir.topics.len() == 1
            && dir.topics[0].name.as_str() == TOPIC
            && dir.topics[0].partitions.len() == 1
            && dir.topics[0].partitions[0].partition_size > 0,
        "the topic's partition and its size: {r:?}"
    );
    if v >= 4 {
        check!(
            dir.total_bytes > 0 && (0..=dir.total_bytes).contains(&dir.usable_bytes),
            "disk space: {r:?}"
        );
    }
    let all = ctx
        .send(&DescribeLogDirsRequest::default().with_topics(None), v)
        .await?;
    check!(
        all.results[0].topics.len() > 1,
        "every hosted topic when none is named: {all:?}"
    );
    Ok(())
}

async fn offset_delete_at(ctx: &mut Ctx, v: i16) -> Probe {
    use kafka_protocol::messages::OffsetDeleteRequest;
    use kafka_protocol::messages::offset_delete_request::{
        OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
    };
    let request = |group: &str, topic: &str| {
        OffsetDeleteRequest::default()
            .with_group_id(gid(group))
            .with_topics(vec![
                OffsetDeleteRequestTopic::default()
                    .with_name(topic_name(topic))
                    .with_partitions(vec![
                        OffsetDeleteRequestPartition::default().with_partition_index(0),
                    ]),
            ])
    };
    let code = |r: &kafka_protocol::messages::OffsetDeleteResponse| {
        r.topics.first().map_or(-1, |t| t.partitions[0].error_code)
    };
    // An empty group's offsets go.
    let group = format!("every-version-offset-delete-v{v}");
    ctx.simple_commit(&group, 5, "doomed").await?;
    let r = ctx.send(&request(&group, TOPIC), v).await?;
    expect_code("delete", r.error_code, None, &r)?;
    expect_code("delete partition", code(&r), None, &r)?;
    let at = ctx.committed(&group).await?;
    check!(at == -1, "still committed after OffsetDelete: {at}");
    let r = ctx.send(&request(&group, "every-version-nope"), v).await?;
    let want = Some(ResponseError::UnknownTopicOrPartition);
    expect_code("unknown topic", code(&r), want, &r)?;
    let r = ctx
        .send(&request("every-version-no-such-group", TOPIC), v)
        .await?;
    let want = Some(ResponseError::GroupIdNotFound);
    expect_code("unknown group", r.error_code, want, &r)?;
    // A group with a member: its subscription (not a ConsumerProtocol one here, so read as
    // every topic) keeps the offsets, which stay committed.
    let m = ctx
        .member(&format!("every-version-offset-keep-v{v}"), None)
        .await?;
    ctx.simple_commit(&m.group, 6, "kept").await.ok();
    let before = ctx.committed(&m.group).await?;
    let r = ctx.send(&request(&m.group, TOPIC), v).await?;
    let want = Some(ResponseError::GroupSubscribedToTopic);
    expect_code("subscribed", code(&r), want, &r)?;
    let after = ctx.committed(&m.group).await?;
    check!(
        before == after,
        "a refused OffsetDelete changed {before} to {after}"
    );
    Ok(())
}

/// A consumer group protocol member joins `group` (subscribed to TOPIC) at `v`: its id and
/// epoch, once it owns TOPIC's partition.
async fn consumer_member(ctx: &mut Ctx, group: &str, v: i16) -> Result<(String, i32), String> {
    use kafka_protocol::messages::ConsumerGroupHeartbeatRequest;
    let id = format!("{group}-member");
    let join = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(gid(group))
        .with_member_id(sb(&id))
        .with_member_epoch(0)
        .with_rebalance_timeout_ms(30_000)
        .with_subscribed_topic_names(Some(vec![topic_name(TOPIC)]))
        .with_topic_partitions(Some(vec![]));
    let r = ctx.send(&join, v).await?;
    expect_code("join", r.error_code, None, &r)?;
    let assigned: Vec<(uuid::Uuid, Vec<i32>)> = r
        .assignment
        .iter()
        .flat_map(|a| &a.topic_partitions)
        .map(|tp| (tp.topic_id, tp.partitions.clone()))
        .collect();
    check!(
        assigned == [(ctx.topic_id, vec![0])] && r.member_epoch > 0,
        "a lone member gets the whole topic: {r:?}"
    );
    check!(
        r.member_id.as_deref() == Some(id.as_str()),
        "member id {:?}",
        r.member_id
    );
    Ok((id, r.member_epoch))
}

async fn consumer_group_heartbeat_at(ctx: &mut Ctx, v: i16) -> Probe {
    use kafka_protocol::messages::ConsumerGroupHeartbeatRequest;
    use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
    let group = format!("every-version-cg-heartbeat-v{v}");
    let (id, epoch) = consumer_member(ctx, &group, v).await?;
    let beat = |epoch: i32| {
        ConsumerGroupHeartbeatRequest::default()
            .with_group_id(gid(&group))
            .with_member_id(sb(&id))
            .with_member_epoch(epoch)
            .with_rebalance_timeout_ms(-1)
    };
    // An unchanged member: same epoch, no assignment (null means unchanged).
    let owned = vec![
        TopicPartitions::default()
            .with_topic_id(ctx.topic_id)
            .with_partitions(vec![0]),
    ];
    let r = ctx
        .send(&beat(epoch).with_topic_partitions(Some(owned)), v)
        .await?;
    expect_code("heartbeat", r.error_code, None, &r)?;
    check!(
        r.member_epoch == epoch && r.assignment.is_none(),
        "steady heartbeat: {r:?}"
    );
    // Commits carry the member epoch; a stale one is refused.
    let commit = |epoch: i32| {
        OffsetCommitRequest::default()
            .with_group_id(gid(&group))
            .with_member_id(sb(&id))
            .with_generation_id_or_member_epoch(epoch)
            .with_topics(vec![commit_topic(9, 3, "cg", 9)])
    };
    let r = ctx.send(&commit(epoch), 9).await?;
    let code = r.topics[0].partitions[0].error_code;
    expect_code("commit with the member epoch", code, None, &r)?;
    let r = ctx.send(&commit(epoch + 7), 9).await?;
    let code = r.topics[0].partitions[0].error_code;
    expect_code(
        "commit with a stale epoch",
        code,
        Some(ResponseError::StaleMemberEpoch),
        &r,
    )?;
    let r = ctx.send(&beat(epoch + 1), v).await?;
    let want = Some(ResponseError::FencedMemberEpoch);
    expect_code("greater epoch", r.error_code, want, &r)?;
    // v0 lets the broker choose a new member's id; v1 needs one.
    let anonymous = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(gid(&format!("{group}-anonymous")))
        .with_member_epoch(0)
        .with_rebalance_timeout_ms(30_000)
        .with_subscribed_topic_names(Some(vec![topic_name(TOPIC)]))
        .with_topic_partitions(Some(vec![]));
    let r = ctx.send(&anonymous, v).await?;
    if v == 0 {
        expect_code("v0 join without an id", r.error_code, None, &r)?;
        check!(
            r.member_id.as_deref().is_some_and(|m| !m.is_empty()),
            "no member id chosen: {r:?}"
        );
    } else {
        let want = Some(ResponseError::InvalidRequest);
        expect_code("v1 join without an id", r.error_code, want, &r)?;
    }
    let r = ctx.send(&beat(-1).with_rebalance_timeout_ms(-1), v).await?;
    expect_code("leave", r.error_code, None, &r)?;
    check!(
        r.member_epoch == -1,
        "leave answered epoch {}",
        r.member_epoch
    );
    let r = ctx.send(&beat(epoch), v).await?;
    let want = Some(ResponseError::UnknownMemberId);
    expect_code("after leaving", r.error_code, want, &r)?;
    Ok(())
}

async fn consumer_group_describe_at(ctx: &mut Ctx, v: i16) -> Probe {
    use kafka_protocol::messages::ConsumerGroupDescribeRequest;
    let group = format!("every-version-cg-describe-v{v}");
    let (id, epoch) = consumer_member(ctx, &group, 1).await?;
    let classic = ctx
        .member(&format!("every-version-cg-classic-v{v}"), None)
        .await?;
    let req = ConsumerGroupDescribeRequest::default().with_group_ids(vec![
        gid(&group),
        gid(&classic.group),
        gid("every-version-no-such-group"),
    ]);
    let r = ctx.send(&req, v).await?;
    check!(r.groups.len() == 3, "{r:?}");
    let g = &r.groups[0];
    expect_code("describe", g.error_code, None, &r)?;
    check!(
        g.group_state.as_str() == "Stable" && g.group_epoch == epoch && g.assignment_epoch == epoch,
        "group: {g:?}"
    );
    check!(
        g.assignor_name.as_str() == "uniform",
        "assignor {}",
        g.assignor_name.as_str()
    );
    let m = g.members.first().ok_or("no members")?;
    check!(
        m.member_id.as_str() == id && m.member_epoch == epoch,
        "member {m:?}"
    );
    let assigned: Vec<(&str, &[i32])> = m
        .assignment
        .topic_partitions
        .iter()
        .map(|tp| (tp.topic_name.0.as_str(), tp.partitions.as_slice()))
        .collect();
    check!(assigned == [(TOPIC, &[0][..])], "assignment {assigned:?}");
    check!(
        m.target_assignment == m.assignment,
        "target {:?}",
        m.target_assignment
    );
    if v >= 1 {
        check!(m.member_type == 1, "member type {}", m.member_type);
    }
    let not_consumer = Some(ResponseError::GroupIdNotFound);
    expect_code("classic group", r.groups[1].error_code, not_consumer, &r)?;
    expect_code("unknown group", r.groups[2].error_code, not_consumer, &r)?;
    Ok(())
}

async fn delete_records_at(ctx: &mut Ctx, v: i16) -> Probe {
    use kafka_protocol::messages::DeleteRecordsRequest;
    use kafka_protocol::messages::delete_records_request::{
        DeleteRecordsPartition, DeleteRecordsTopic,
    };
    let request = |topic: &str, offset: i64| {
        DeleteRecordsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![
                DeleteRecordsTopic::default()
                    .with_name(topic_name(topic))
                    .with_partitions(vec![
                        DeleteRecordsPartition::default()
                            .with_partition_index(0)
                            .with_offset(offset),
                    ]),
            ])
    };
    let answer = |r: &kafka_protocol::messages::DeleteRecordsResponse| {
        let p = &r.topics[0].partitions[0];
        (p.error_code, p.low_watermark)
    };
    let earliest_req = |topic: &str| {
        ListOffsetsRequest::default()
            .with_replica_id((-1).into())
            .with_topics(vec![
                ListOffsetsTopic::default()
                    .with_name(topic_name(topic))
                    .with_partitions(vec![
                        ListOffsetsPartition::default()
                            .with_partition_index(0)
                            .with_timestamp(-2),
                    ]),
            ])
    };
    let name = format!("every-version-delete-records-v{v}");
    ctx.create_topic(&name).await?;
    produce(&producer(&ctx.bootstrap, &[]), &name, "dr", 10).await;
    let r = ctx.send(&request(&name, 3), v).await?;
    check!(answer(&r) == (0, 3), "delete below 3: {r:?}");
    let r = ctx.send(&earliest_req(&name), 1).await?;
    let start = r.topics[0].partitions[0].offset;
    check!(start == 3, "earliest offset after DeleteRecords: {start}");
    let r = ctx.send(&request(&name, 11), v).await?;
    let out_of_range = ResponseError::OffsetOutOfRange.code();
    check!(
        answer(&r).0 == out_of_range,
        "past the high watermark: {r:?}"
    );
    let r = ctx.send(&request(&name, -1), v).await?;
    check!(
        answer(&r) == (0, 10),
        "-1 deletes up to the high watermark: {r:?}"
    );
    let r = ctx.send(&request(&name, 2), v).await?;
    check!(
        answer(&r) == (0, 10),
        "a lower offset changes nothing: {r:?}"
    );
    let r = ctx.send(&request("__consumer_offsets", 1), v).await?;
    let internal = ResponseError::InvalidTopicException.code();
    check!(answer(&r).0 == internal, "the offsets topic: {r:?}");
    let r = ctx.send(&request("every-version-nope", 1), v).await?;
    let unknown = ResponseError::UnknownTopicOrPartition.code();
    check!(answer(&r).0 == unknown, "unknown topic: {r:?}");
    Ok(())
}

/// The topic as Metadata shows it, paged; unknown and invalid names; all topics in name order
/// with the offsets topic marked internal; a limit of one gives a cursor.
async fn describe_topic_partitions_at(ctx: &mut Ctx, v: i16) -> Probe {
    use kafka_protocol::messages::DescribeTopicPartitionsRequest;
    use kafka_protocol::messages::describe_topic_partitions_request::{Cursor, TopicRequest};
    let named = |names: &[&str]| {
        DescribeTopicPartitionsRequest::default().with_topics(
            names
                .iter()
                .map(|n| TopicRequest::default().with_name(topic_name(n)))
                .collect(),
        )
    };
    let r = ctx.send(&named(&[TOPIC]), v).await?;
    check!(r.topics.len() == 1 && r.next_cursor.is_none(), "{r:?}");
    let t = &r.topics[0];
    expect_code("topic", t.error_code, None, &r)?;
    check!(
        t.topic_id == ctx.topic_id && !t.is_internal && t.topic_authorized_operations == i32::MIN,
        "topic {t:?}"
    );
    check!(t.partitions.len() == 1, "partitions {:?}", t.partitions);
    let p = &t.partitions[0];
    expect_code("partition", p.error_code, None, &r)?;
    check!(
        p.partition_index == 0
            && p.leader_id.0 == 0
            && p.leader_epoch == ctx.epoch
            && p.replica_nodes.iter().map(|b| b.0).eq([0])
            && p.isr_nodes.iter().map(|b| b.0).eq([0])
            && p.offline_replicas.is_empty()
            && p.eligible_leader_replicas
                .as_ref()
                .is_some_and(Vec::is_empty)
            && p.last_known_elr.as_ref().is_some_and(Vec::is_empty),
        "partition {p:?}"
    );

    let r = ctx
        .send(&named(&["every-version-missing", "bad/name"]), v)
        .await?;
    // In name order: "bad/name" < "every-version-missing".
    check!(r.topics.len() == 2, "{r:?}");
    expect_code(
        "invalid name",
        r.topics[0].error_code,
        Some(ResponseError::InvalidTopicException),
        &r,
    )?;
    expect_code(
        "unknown topic",
        r.topics[1].error_code,
        Some(ResponseError::UnknownTopicOrPartition),
        &r,
    )?;

    // All topics, in name order, the offsets topic (one partition here) internal.
    let r = ctx.send(&named(&[]), v).await?;
    check!(r.next_cursor.is_none(), "cursor {:?}", r.next_cursor);
    let names: Vec<&str> = r
        .topics
        .iter()
        .filter_map(|t| t.name.as_deref().map(|n| n.as_str()))
        .collect();
    check!(names.is_sorted(), "not in name order: {names:?}");
    let offsets = r
        .topics
        .iter()
        .find(|t| {
            t.name
                .as_deref()
                .is_some_and(|n| n.as_str() == "__consumer_offsets")
        })
        .ok_or_else(|| format!("no offsets topic in {names:?}"))?;
    check!(
        offsets.is_internal,
        "offsets topic not internal: {offsets:?}"
    );
    check!(names.contains(&TOPIC), "{TOPIC} missing from {names:?}");

    // One partition per response: the cursor walks every partition of every topic in order.
    let every: Vec<(String, i32)> = r
        .topics
        .iter()
        .flat_map(|t| {
            let name = t.name.as_deref().map_or("", |n| n.as_str());
            t.partitions
                .iter()
                .map(move |p| (name.to_string(), p.partition_index))
        })
        .collect();
    let mut cursor: Option<Cursor> = None;
    let mut walked = Vec::new();
    for _ in 0..=every.len() {
        let req = named(&[])
            .with_response_partition_limit(1)
            .with_cursor(cursor.clone());
        let r = ctx.send(&req, v).await?;
        let shown: usize = r.topics.iter().map(|t| t.partitions.len()).sum();
        check!(shown <= 1, "limit 1 but {shown} partitions: {r:?}");
        for t in &r.topics {
            let name = t.name.as_deref().map_or("", |n| n.as_str());
            walked.extend(
                t.partitions
                    .iter()
                    .map(|p| (name.to_string(), p.partition_index)),
            );
        }
        match r.next_cursor {
            None => break,
            Some(c) => {
                cursor = Some(
                    Cursor::default()
                        .with_topic_name(c.topic_name)
                        .with_partition_index(c.partition_index),
                )
            }
        }
    }
    check!(walked == every, "walked {walked:?}, all topics {every:?}");
    Ok(())
}

/// The two idempotent producers that wrote the topic (one before the restart, one after),
/// with their epochs and last sequences; unknown partitions and topics refused.
async fn describe_producers_at(ctx: &mut Ctx, v: i16) -> Probe {
    use kafka_protocol::messages::DescribeProducersRequest;
    use kafka_protocol::messages::describe_producers_request::TopicRequest;
    let req = DescribeProducersRequest::default().with_topics(vec![
        TopicRequest::default()
            .with_name(topic_name(TOPIC))
            .with_partition_indexes(vec![0, 7]),
        TopicRequest::default()
            .with_name(topic_name("every-version-missing"))
            .with_partition_indexes(vec![0]),
    ]);
    let r = ctx.send(&req, v).await?;
    check!(
        r.topics.len() == 2 && r.topics[0].partitions.len() == 2,
        "{r:?}"
    );
    let p = &r.topics[0].partitions[0];
    expect_code("partition 0", p.error_code, None, &r)?;
    let got: Vec<(i32, i32)> = p
        .active_producers
        .iter()
        .map(|s| (s.producer_epoch, s.last_sequence))
        .collect();
    let want = vec![
        (0, FIRST_EPOCH_RECORDS as i32 - 1),
        (0, SECOND_EPOCH_RECORDS as i32 - 1),
    ];
    check!(
        got == want,
        "(epoch, last sequence) {got:?}, want {want:?}: {r:?}"
    );
    let now = now_ms();
    check!(
        p.active_producers.iter().all(|s| s.producer_id.0 >= 0
            && s.coordinator_epoch == -1
            && s.current_txn_start_offset == -1
            && s.last_timestamp > now - 3_600_000
            && s.last_timestamp <= now),
        "producers {:?}",
        p.active_producers
    );
    expect_code(
        "partition 7",
        r.topics[0].partitions[1].error_code,
        Some(ResponseError::UnknownTopicOrPartition),
        &r,
    )?;
    expect_code(
        "unknown topic",
        r.topics[1].partitions[0].error_code,
        Some(ResponseError::UnknownTopicOrPartition),
        &r,
    )
}
