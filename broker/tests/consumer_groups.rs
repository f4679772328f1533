//! Consumer groups against a real standalone broker: librdkafka group members sharing a
//! topic's partitions and resuming from committed offsets, and the group APIs' error codes
//! for bad input (spoken raw, the way a misbehaving client would), including offsets that
//! survive a restart.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use broker::replication::client::Connection;
use bytes::Bytes;
use common::BrokerProcess;
use common::kafka::{produce, producer};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    DeleteGroupsRequest, DescribeGroupsRequest, FindCoordinatorRequest, GroupId, HeartbeatRequest,
    JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, ListGroupsRequest, OffsetCommitRequest,
    OffsetFetchRequest, ProduceRequest, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

const GROUP_ARGS: &[&str] = &[
    "--num-partitions",
    "4",
    "--offsets-topic-partitions",
    "3",
    "--group-initial-rebalance-delay-ms",
    "0",
];

fn group_consumer(bootstrap: &str, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .create()
        .expect("consumer")
}

/// Polls every consumer in turn until `done` says stop; returns (consumer, partition,
/// offset) -> value.
fn poll_until(
    consumers: &[&BaseConsumer],
    secs: u64,
    mut done: impl FnMut(&BTreeMap<(i32, i64), String>) -> bool,
) -> BTreeMap<(i32, i64), String> {
    let mut seen = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done(&seen) {
        assert!(
            Instant::now() < deadline,
            "timed out with {} records",
            seen.len()
        );
        for c in consumers {
            if let Some(m) = c.poll(Duration::from_millis(100)) {
                let m = m.expect("consume");
                let v = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                seen.insert((m.partition(), m.offset()), v);
            }
        }
    }
    seen
}

/// Two librdkafka members share four partitions; every record is read; after they commit
/// and leave, a new member of the group starts exactly where they committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafka_group_members_share_partitions_and_resume_from_commits() {
    let dir = tempfile::tempdir().unwrap();
    let b = BrokerProcess::start(&dir.path().join("data"), GROUP_ARGS);
    let bootstrap = b.bootstrap();
    let p = producer(&bootstrap, &[("acks", "all")]);
    let acked = produce(&p, "shared", "a", 400).await;
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    for (p, o) in acked.keys() {
        let e = ends.entry(*p).or_insert(0);
        *e = (*e).max(o + 1);
    }
    let (bs, want) = (bootstrap.clone(), ends.clone());
    tokio::task::spawn_blocking(move || {
        let one = group_consumer(&bs, "lib-group");
        let two = group_consumer(&bs, "lib-group");
        one.subscribe(&["shared"]).unwrap();
        two.subscribe(&["shared"]).unwrap();
        // Both members get a share of the partitions, and each has read its share to the end.
        let caught_up = |c: &BaseConsumer| {
            let Ok(pos) = c.position() else { return false };
            pos.count() > 0
                && pos.elements().iter().all(|e| {
                    let end = want.get(&e.partition()).copied().unwrap_or(0);
                    match e.offset() {
                        Offset::Offset(n) => n == end,
                        _ => end == 0,
                    }
                })
        };
        let seen = poll_until(&[&one, &two], 90, |_| {
            let a = one.assignment().map_or(0, |t| t.count());
            let b = two.assignment().map_or(0, |t| t.count());
            a + b == 4 && caught_up(&one) && caught_up(&two)
        });
        assert!(seen.len() <= 400);
        one.commit_consumer_state(CommitMode::Sync).unwrap();
        two.commit_consumer_state(CommitMode::Sync).unwrap();
    })
    .await
    .unwrap();
    // The commits are where the log ends; a new member resumes there and reads only new data.
    let fresh = produce(&p, "shared", "b", 40).await;
    let bs = bootstrap.clone();
    let (committed, read) = tokio::task::spawn_blocking(move || {
        let c = group_consumer(&bs, "lib-group");
        let mut tpl = TopicPartitionList::new();
        for p in 0..4 {
            tpl.add_partition("shared", p);
        }
        let committed = c.committed_offsets(tpl, Duration::from_secs(20)).unwrap();
        c.subscribe(&["shared"]).unwrap();
        let read = poll_until(&[&c], 60, |s| s.len() >= 40);
        (committed, read)
    })
    .await
    .unwrap();
    for e in committed.elements() {
        let want = ends.get(&e.partition()).copied().unwrap_or(0);
        if want > 0 {
            assert_eq!(
                e.offset(),
                Offset::Offset(want),
                "committed offset of partition {}",
                e.partition()
            );
        }
    }
    let fresh_at: Vec<(i32, i64)> = fresh.keys().copied().collect();
    let read_at: Vec<(i32, i64)> = read.keys().copied().collect();
    assert_eq!(read_at, fresh_at, "resumed exactly at the commits");
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn gid(s: &str) -> GroupId {
    GroupId(sb(s))
}

fn join(group: &str, member: &str, protocol_type: &str, session_ms: i32) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(gid(group))
        .with_session_timeout_ms(session_ms)
        .with_rebalance_timeout_ms(10_000)
        .with_member_id(sb(member))
        .with_protocol_type(sb(protocol_type))
        .with_protocols(vec![
            JoinGroupRequestProtocol::default()
                .with_name(sb("range"))
                .with_metadata(Bytes::from_static(b"opaque-subscription")),
        ])
}

fn commit(
    group: &str,
    member: &str,
    generation: i32,
    topic: &str,
    partition: i32,
    offset: i64,
    metadata: &str,
) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(gid(group))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(sb(member))
        .with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(TopicName(sb(topic)))
                .with_partitions(vec![
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(partition)
                        .with_committed_offset(offset)
                        .with_committed_leader_epoch(-1)
                        .with_committed_metadata(Some(sb(metadata))),
                ]),
        ])
}

fn code(e: ResponseError) -> i16 {
    e.code()
}

/// Committed offset of (group, topic, partition) through OffsetFetch v8.
async fn fetch_offset(c: &mut Connection, group: &str, topic: &str, partition: i32) -> i64 {
    let req = OffsetFetchRequest::default().with_groups(vec![
        OffsetFetchRequestGroup::default()
            .with_group_id(gid(group))
            .with_topics(Some(vec![
                OffsetFetchRequestTopics::default()
                    .with_name(TopicName(sb(topic)))
                    .with_partition_indexes(vec![partition]),
            ])),
    ]);
    let r = c.send(&req, 8).await.unwrap();
    assert_eq!(r.groups[0].error_code, 0, "{r:?}");
    r.groups[0].topics[0].partitions[0].committed_offset
}

/// Every committed offset of `group` (topic, partition, offset), through OffsetFetch v8 once
/// the coordinator has loaded its partition (after a restart).
async fn offsets_once_loaded(c: &mut Connection, group: &str) -> Vec<(String, i32, i64)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let req = OffsetFetchRequest::default().with_groups(vec![
            OffsetFetchRequestGroup::default()
                .with_group_id(gid(group))
                .with_topics(None),
        ]);
        let r = c.send(&req, 8).await.unwrap();
        if r.groups[0].error_code == 0 {
            return r.groups[0]
                .topics
                .iter()
                .flat_map(|t| {
                    t.partitions
                        .iter()
                        .map(|p| (t.name.0.to_string(), p.partition_index, p.committed_offset))
                })
                .collect();
        }
        assert!(Instant::now() < deadline, "offsets partition never loaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Retries a JoinGroup while the coordinator loads.
async fn join_group(c: &mut Connection, req: &JoinGroupRequest, version: i16) -> JoinGroupResponse {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = c.send(req, version).await.unwrap();
        if r.error_code != code(ResponseError::CoordinatorLoadInProgress)
            || Instant::now() > deadline
        {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_apis_answer_bad_input_with_kafkas_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = BrokerProcess::start(&dir.path().join("data"), GROUP_ARGS);
    let bootstrap = b.bootstrap();
    let p = producer(&bootstrap, &[("acks", "all")]);
    produce(&p, "t", "x", 10).await;
    let mut c = Connection::connect(&bootstrap, "raw-client").await.unwrap();

    // FindCoordinator creates the offsets topic; batched keys (v4) and transactions.
    let r = c
        .send(
            &FindCoordinatorRequest::default().with_coordinator_keys(vec![sb("g1"), sb("g2")]),
            4,
        )
        .await
        .unwrap();
    assert_eq!(r.coordinators.len(), 2);
    assert!(
        r.coordinators
            .iter()
            .all(|k| k.error_code == 0 && k.node_id.0 == 0),
        "{r:?}"
    );
    let r = c
        .send(
            &FindCoordinatorRequest::default()
                .with_key(sb("tx"))
                .with_key_type(1),
            3,
        )
        .await
        .unwrap();
    assert_eq!(r.error_code, code(ResponseError::CoordinatorNotAvailable));

    // JoinGroup: session timeout bounds; MEMBER_ID_REQUIRED first (v4+), then a generation.
    let r = join_group(&mut c, &join("g1", "", "consumer", 1), 5).await;
    assert_eq!(r.error_code, code(ResponseError::InvalidSessionTimeout));
    let r = join_group(&mut c, &join("g1", "", "consumer", 10_000), 5).await;
    assert_eq!(r.error_code, code(ResponseError::MemberIdRequired));
    let member = r.member_id.to_string();
    assert!(member.starts_with("raw-client-"), "{member}");
    let r = join_group(&mut c, &join("g1", &member, "consumer", 10_000), 5).await;
    assert_eq!(r.error_code, 0, "{r:?}");
    assert_eq!(r.generation_id, 1);
    assert_eq!(r.leader.as_str(), member);
    assert_eq!(r.members.len(), 1);
    assert_eq!(
        r.members[0].metadata,
        Bytes::from_static(b"opaque-subscription")
    );
    // A member with another protocol type cannot join.
    let r = join_group(&mut c, &join("g1", "", "connect", 10_000), 5).await;
    assert_eq!(r.error_code, code(ResponseError::InconsistentGroupProtocol));
    // Oversized protocol metadata is refused.
    let mut big = join("g1", "", "consumer", 10_000);
    big.protocols[0].metadata = Bytes::from(vec![7u8; 2 << 20]);
    let r = join_group(&mut c, &big, 5).await;
    assert_eq!(r.error_code, code(ResponseError::InvalidRequest));

    // SyncGroup: generation and member checks, then the assignment comes back.
    let sync = |member: &str, generation: i32| {
        SyncGroupRequest::default()
            .with_group_id(gid("g1"))
            .with_generation_id(generation)
            .with_member_id(sb(member))
            .with_assignments(vec![
                SyncGroupRequestAssignment::default()
                    .with_member_id(sb(member))
                    .with_assignment(Bytes::from_static(b"my-partitions")),
            ])
    };
    let r = c.send(&sync(&member, 7), 3).await.unwrap();
    assert_eq!(r.error_code, code(ResponseError::IllegalGeneration));
    let r = c.send(&sync("nobody", 1), 3).await.unwrap();
    assert_eq!(r.error_code, code(ResponseError::UnknownMemberId));
    let r = c.send(&sync(&member, 1), 3).await.unwrap();
    assert_eq!(r.error_code, 0);
    assert_eq!(r.assignment, Bytes::from_static(b"my-partitions"));

    // Heartbeat.
    let hb = |member: &str, generation: i32, group: &str| {
        HeartbeatRequest::default()
            .with_group_id(gid(group))
            .with_generation_id(generation)
            .with_member_id(sb(member))
    };
    assert_eq!(
        c.send(&hb(&member, 1, "g1"), 4).await.unwrap().error_code,
        0
    );
    assert_eq!(
        c.send(&hb(&member, 2, "g1"), 4).await.unwrap().error_code,
        code(ResponseError::IllegalGeneration)
    );
    assert_eq!(
        c.send(&hb("nobody", 1, "g1"), 4).await.unwrap().error_code,
        code(ResponseError::UnknownMemberId)
    );
    assert_eq!(
        c.send(&hb(&member, 1, "no-such-group"), 4)
            .await
            .unwrap()
            .error_code,
        code(ResponseError::UnknownMemberId)
    );

    // OffsetCommit: unknown partitions, oversized metadata, stale generations; then a good one.
    let partition_error =
        |r: &kafka_protocol::messages::OffsetCommitResponse| r.topics[0].partitions[0].error_code;
    let r = c
        .send(&commit("g1", &member, 1, "no-such-topic", 0, 5, ""), 8)
        .await
        .unwrap();
    assert_eq!(
        partition_error(&r),
        code(ResponseError::UnknownTopicOrPartition)
    );
    let r = c
        .send(&commit("g1", &member, 1, "t", 0, 5, &"m".repeat(5000)), 8)
        .await
        .unwrap();
    assert_eq!(
        partition_error(&r),
        code(ResponseError::OffsetMetadataTooLarge)
    );
    let r = c
        .send(&commit("g1", &member, 0, "t", 0, 5, ""), 8)
        .await
        .unwrap();
    assert_eq!(partition_error(&r), code(ResponseError::IllegalGeneration));
    let r = c
        .send(&commit("g1", "nobody", 1, "t", 0, 5, ""), 8)
        .await
        .unwrap();
    assert_eq!(partition_error(&r), code(ResponseError::UnknownMemberId));
    let r = c
        .send(&commit("g1", &member, 1, "t", 0, 7, "meta"), 8)
        .await
        .unwrap();
    assert_eq!(partition_error(&r), 0);
    assert_eq!(fetch_offset(&mut c, "g1", "t", 0).await, 7);
    assert_eq!(fetch_offset(&mut c, "other", "t", 0).await, -1);
    // A client managing partitions itself (generation -1) commits to a group of its own.
    let r = c
        .send(&commit("manual", "", -1, "t", 0, 3, ""), 2)
        .await
        .unwrap();
    assert_eq!(partition_error(&r), 0);

    // DescribeGroups and ListGroups.
    let r = c
        .send(
            &DescribeGroupsRequest::default().with_groups(vec![gid("g1"), gid("ghost")]),
            5,
        )
        .await
        .unwrap();
    assert_eq!(r.groups[0].group_state.as_str(), "Stable");
    assert_eq!(r.groups[0].protocol_data.as_str(), "range");
    assert_eq!(r.groups[0].members[0].client_id.as_str(), "raw-client");
    assert_eq!(r.groups[0].members[0].client_host.as_str(), "/127.0.0.1");
    assert_eq!(r.groups[1].group_state.as_str(), "Dead");
    assert_eq!(r.groups[1].error_code, 0);
    let r = c
        .send(
            &DescribeGroupsRequest::default().with_groups(vec![gid("ghost")]),
            6,
        )
        .await
        .unwrap();
    assert_eq!(r.groups[0].error_code, code(ResponseError::GroupIdNotFound));
    let r = c.send(&ListGroupsRequest::default(), 4).await.unwrap();
    let listed: Vec<(String, String)> = r
        .groups
        .iter()
        .map(|g| (g.group_id.0.to_string(), g.group_state.to_string()))
        .collect();
    assert!(
        listed.contains(&("g1".into(), "Stable".into())),
        "{listed:?}"
    );
    assert!(
        listed.contains(&("manual".into(), "Empty".into())),
        "{listed:?}"
    );

    // DeleteGroups: not while it has members; after the member leaves, yes.
    let del = |g: &str| DeleteGroupsRequest::default().with_groups_names(vec![gid(g)]);
    let r = c.send(&del("g1"), 2).await.unwrap();
    assert_eq!(r.results[0].error_code, code(ResponseError::NonEmptyGroup));
    let r = c.send(&del("ghost"), 2).await.unwrap();
    assert_eq!(
        r.results[0].error_code,
        code(ResponseError::GroupIdNotFound)
    );
    let r = c
        .send(
            &LeaveGroupRequest::default()
                .with_group_id(gid("g1"))
                .with_members(vec![
                    MemberIdentity::default().with_member_id(sb(&member)),
                    MemberIdentity::default().with_member_id(sb("nobody")),
                ]),
            4,
        )
        .await
        .unwrap();
    assert_eq!(r.members[0].error_code, 0);
    assert_eq!(
        r.members[1].error_code,
        code(ResponseError::UnknownMemberId)
    );
    let r = c.send(&del("g1"), 2).await.unwrap();
    assert_eq!(r.results[0].error_code, 0);
    assert_eq!(fetch_offset(&mut c, "g1", "t", 0).await, -1);

    // Clients may not write the offsets topic.
    let produce_internal = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(sb("__consumer_offsets")))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(Bytes::from(
                            broker::protocol::batch::test_support::batch(1, 1, (-1, -1, -1), 4),
                        ))),
                ]),
        ]);
    let r = c.send(&produce_internal, 9).await.unwrap();
    assert_eq!(
        r.responses[0].partition_responses[0].error_code,
        code(ResponseError::InvalidTopicException)
    );

    // Committed offsets survive a restart (the log is replayed on load).
    drop(c);
    assert!(b.terminate(), "clean stop");
    b.spawn();
    let mut c = Connection::connect(&bootstrap, "raw-client").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let req = OffsetFetchRequest::default().with_groups(vec![
            OffsetFetchRequestGroup::default()
                .with_group_id(gid("manual"))
                .with_topics(None),
        ]);
        let r = c.send(&req, 8).await.unwrap();
        if r.groups[0].error_code == 0 {
            let t = &r.groups[0].topics[0];
            assert_eq!(
                (t.name.as_str(), t.partitions[0].committed_offset),
                ("t", 3)
            );
            break;
        }
        assert_eq!(
            r.groups[0].error_code,
            code(ResponseError::CoordinatorLoadInProgress)
        );
        assert!(Instant::now() < deadline, "offsets partition never loaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Ids longer than the offsets log's int16-length strings (flexible request versions allow
/// them) are refused before anything is written, never truncated: two groups that share the
/// first 32767 bytes must not share offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_too_long_for_the_offsets_log_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let b = BrokerProcess::start(&dir.path().join("data"), GROUP_ARGS);
    let bootstrap = b.bootstrap();
    let p = producer(&bootstrap, &[("acks", "all")]);
    produce(&p, "t", "x", 10).await;
    let mut c = Connection::connect(&bootstrap, "raw-client").await.unwrap();
    let fits = "g".repeat(32767);
    let long = format!("{fits}-other");

    // The longest group id that fits works (FindCoordinator creates the offsets topic;
    // retried while its partition loads).
    c.send(&FindCoordinatorRequest::default().with_key(sb(&fits)), 3)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = c
            .send(&commit(&fits, "", -1, "t", 0, 4, ""), 8)
            .await
            .unwrap();
        let e = r.topics[0].partitions[0].error_code;
        if e == 0 {
            break;
        }
        assert!(
            (e == code(ResponseError::CoordinatorLoadInProgress)
                || e == code(ResponseError::NotCoordinator))
                && Instant::now() < deadline,
            "{e}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // One byte more is an invalid group id for every group API, and nothing is written.
    let r = c
        .send(&commit(&long, "", -1, "t", 0, 9, ""), 8)
        .await
        .unwrap();
    assert_eq!(
        r.topics[0].partitions[0].error_code,
        code(ResponseError::InvalidGroupId)
    );
    let r = join_group(&mut c, &join(&long, "", "consumer", 10_000), 7).await;
    assert_eq!(r.error_code, code(ResponseError::InvalidGroupId));
    assert_eq!(fetch_offset(&mut c, &fits, "t", 0).await, 4);

    // Over-long member and instance ids.
    let r = join_group(
        &mut c,
        &join("g", &"m".repeat(40_000), "consumer", 10_000),
        7,
    )
    .await;
    assert_eq!(r.error_code, code(ResponseError::UnknownMemberId));
    let mut req = join("g", "", "consumer", 10_000);
    req.group_instance_id = Some(sb(&"i".repeat(40_000)));
    let r = join_group(&mut c, &req, 7).await;
    assert_eq!(r.error_code, code(ResponseError::InvalidRequest));
    let r = join_group(&mut c, &join("g", "", &"p".repeat(40_000), 10_000), 7).await;
    assert_eq!(r.error_code, code(ResponseError::InvalidRequest));
    // The group was never created.
    let r = c
        .send(
            &DescribeGroupsRequest::default().with_groups(vec![gid("g")]),
            5,
        )
        .await
        .unwrap();
    assert_eq!(r.groups[0].group_state.as_str(), "Dead", "{r:?}");
}

/// The offsets log stays bounded: once it outgrows its live state it is snapshotted and the
/// segments below the snapshot are deleted; the state replayed after a restart is the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_offsets_log_is_snapshotted_and_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = GROUP_ARGS.to_vec();
    args.extend(["--offsets-snapshot-min-bytes", "20000"]);
    let mut b = BrokerProcess::start(&dir.path().join("data"), &args);
    let bootstrap = b.bootstrap();
    let p = producer(&bootstrap, &[("acks", "all")]);
    produce(&p, "t", "x", 10).await;
    let mut c = Connection::connect(&bootstrap, "committer").await.unwrap();
    let find = FindCoordinatorRequest::default().with_key(sb("busy"));
    assert_eq!(c.send(&find, 3).await.unwrap().error_code, 0);
    // 3000 commits of ~100 bytes each: about 15 times the snapshot threshold.
    let mut committed = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while committed < 3000 {
        let partition = committed % 2;
        let r = c
            .send(
                &commit("busy", "", -1, "t", partition, i64::from(committed), "m"),
                8,
            )
            .await
            .unwrap();
        match r.topics[0].partitions[0].error_code {
            0 => committed += 1,
            e if e == code(ResponseError::CoordinatorLoadInProgress) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            e => panic!("commit failed with {e}"),
        }
        assert!(Instant::now() < deadline);
    }
    let offsets_partition = broker::group::partition_for("busy", 3);
    let log_dir = dir
        .path()
        .join("data")
        .join(format!("__consumer_offsets-{offsets_partition}"));
    // Segment base offsets: the first one moves up as snapshots replace older segments.
    let bases = || -> Vec<i64> {
        let mut b: Vec<i64> = std::fs::read_dir(&log_dir)
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().to_string_lossy().into_owned();
                name.strip_suffix(".log").and_then(|n| n.parse().ok())
            })
            .collect();
        b.sort_unstable();
        b
    };
    // Snapshots are written by the coordinator's timer; give it a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    while bases().len() > 2 || bases()[0] == 0 {
        assert!(Instant::now() < deadline, "segments {:?}", bases());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let size: u64 = std::fs::read_dir(&log_dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(size < 200_000, "offsets log holds {size} bytes");
    assert_eq!(fetch_offset(&mut c, "busy", "t", 0).await, 2998);
    assert_eq!(fetch_offset(&mut c, "busy", "t", 1).await, 2999);
    drop(c);
    // kill -9: the state is rebuilt from the snapshot and what follows it.
    b.kill9();
    b.spawn();
    let mut c = Connection::connect(&bootstrap, "committer").await.unwrap();
    assert_eq!(
        offsets_once_loaded(&mut c, "busy").await,
        vec![("t".to_string(), 0, 2998), ("t".to_string(), 1, 2999)]
    );
}

/// Groups in ListGroups.
async fn listed_groups(c: &mut Connection) -> Vec<String> {
    let r = c.send(&ListGroupsRequest::default(), 4).await.unwrap();
    r.groups.iter().map(|g| g.group_id.0.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_expire_after_the_retention() {
    const RETENTION_MS: u64 = 3_000;
    let dir = tempfile::tempdir().unwrap();
    let mut args = GROUP_ARGS.to_vec();
    let retention = RETENTION_MS.to_string();
    args.extend([
        "--offsets-retention-ms",
        &retention,
        "--offsets-retention-check-interval-ms",
        "100",
    ]);
    let mut b = BrokerProcess::start(&dir.path().join("data"), &args);
    let bootstrap = b.bootstrap();
    let p = producer(&bootstrap, &[("acks", "all")]);
    produce(&p, "t", "x", 10).await;
    let mut c = Connection::connect(&bootstrap, "raw-client").await.unwrap();
    let find = FindCoordinatorRequest::default().with_key(sb("lone"));
    assert_eq!(c.send(&find, 3).await.unwrap().error_code, 0);

    // A member of "team" commits and stays (heartbeats); "lone" commits without a group.
    let r = join_group(&mut c, &join("team", "", "consumer", 10_000), 5).await;
    let member = r.member_id.to_string();
    let r = join_group(&mut c, &join("team", &member, "consumer", 10_000), 5).await;
    assert_eq!(r.error_code, 0, "{r:?}");
    let sync = SyncGroupRequest::default()
        .with_group_id(gid("team"))
        .with_generation_id(1)
        .with_member_id(sb(&member));
    assert_eq!(c.send(&sync, 3).await.unwrap().error_code, 0);
    let r = c
        .send(&commit("team", &member, 1, "t", 0, 7, ""), 8)
        .await
        .unwrap();
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    let started = Instant::now();
    let r = c
        .send(&commit("lone", "", -1, "t", 1, 5, ""), 8)
        .await
        .unwrap();
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    assert_eq!(fetch_offset(&mut c, "lone", "t", 1).await, 5);

    // Past the retention, the standalone commit is gone; the live group keeps its offset.
    let hb = HeartbeatRequest::default()
        .with_group_id(gid("team"))
        .with_generation_id(1)
        .with_member_id(sb(&member));
    while fetch_offset(&mut c, "lone", "t", 1).await != -1 {
        assert!(
            started.elapsed() < Duration::from_millis(RETENTION_MS + 5_000),
            "the standalone commit never expired"
        );
        assert_eq!(c.send(&hb, 4).await.unwrap().error_code, 0);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(started.elapsed() >= Duration::from_millis(RETENTION_MS - 100));
    assert!(!listed_groups(&mut c).await.contains(&"lone".to_string()));
    // Another retention period of membership: still there.
    let deadline = Instant::now() + Duration::from_millis(RETENTION_MS + 500);
    while Instant::now() < deadline {
        assert_eq!(c.send(&hb, 4).await.unwrap().error_code, 0);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(fetch_offset(&mut c, "team", "t", 0).await, 7);

    // Once the member leaves, the group's offsets expire a retention later, and the group
    // goes with them.
    let leave = LeaveGroupRequest::default()
        .with_group_id(gid("team"))
        .with_members(vec![MemberIdentity::default().with_member_id(sb(&member))]);
    assert_eq!(c.send(&leave, 4).await.unwrap().members[0].error_code, 0);
    let emptied = Instant::now();
    assert!(listed_groups(&mut c).await.contains(&"team".to_string()));
    while fetch_offset(&mut c, "team", "t", 0).await != -1 {
        assert!(
            emptied.elapsed() < Duration::from_millis(RETENTION_MS + 5_000),
            "the empty group's offsets never expired"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(emptied.elapsed() >= Duration::from_millis(RETENTION_MS - 100));
    assert!(!listed_groups(&mut c).await.contains(&"team".to_string()));

    // The expiry is in the log: after kill -9 neither offset comes back.
    drop(c);
    b.kill9();
    b.spawn();
    let mut c = Connection::connect(&bootstrap, "raw-client").await.unwrap();
    assert_eq!(offsets_once_loaded(&mut c, "team").await, vec![]);
    assert_eq!(fetch_offset(&mut c, "lone", "t", 1).await, -1);
    let listed = listed_groups(&mut c).await;
    assert!(
        !listed.iter().any(|g| g == "team" || g == "lone"),
        "{listed:?}"
    );
}
