//! The controller as a real process, driven over its HTTP API: registration, topics, session
//! expiry moving leadership, AlterPartition fencing, admin moves, clear errors for bad input,
//! state that survives kill -9, and the topic and partition admin routes brokers call.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::ControllerProcess;

use broker::cluster::controller_client::{
    ControllerCallError, ControllerClient, ElectionOutcome, Registration,
};
use broker::metadata::{ClusterMetadata, PartitionMeta};
use serde_json::{Value, json};

async fn post(c: &ControllerProcess, path: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(c.url(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn metadata(c: &ControllerProcess) -> ClusterMetadata {
    reqwest::get(c.url("/v1/metadata"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn register(c: &ControllerProcess, id: i32, incarnation: &str) -> i64 {
    let (status, body) = post(
        c,
        "/v1/brokers/register",
        json!({"id": id, "incarnation": incarnation, "host": "127.0.0.1", "port": 9000 + id}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["epoch"].as_i64().unwrap()
}

fn partition(m: &ClusterMetadata, p: i32) -> PartitionMeta {
    m.partition("orders", p).unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = ControllerProcess::start(dir.path());
    let mut epochs = Vec::new();
    for id in 0..4 {
        epochs.push(register(&c, id, "first").await);
    }
    // Bad input gets clear errors.
    let (status, body) = post(
        &c,
        "/v1/topics",
        json!({"name": "orders", "partitions": 4, "replication_factor": 9}),
    )
    .await;
    assert_eq!(
        (status, body["kind"].as_str()),
        (400, Some("invalid_replication_factor")),
        "{body}"
    );
    let r = reqwest::Client::new()
        .delete(c.url("/v1/topics/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let (status, body) = post(
        &c,
        "/v1/topics",
        json!({"name": "orders", "partitions": 4, "replication_factor": 3}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = post(
        &c,
        "/v1/topics",
        json!({"name": "orders", "partitions": 4, "replication_factor": 3}),
    )
    .await;
    assert_eq!(status, 409);

    // A metadata long-poll returns as soon as a newer version exists.
    let m = metadata(&c).await;
    let waiter = {
        let url = c.url(&format!("/v1/metadata?after={}&wait_ms=10000", m.version));
        tokio::spawn(async move {
            reqwest::get(url)
                .await
                .unwrap()
                .json::<ClusterMetadata>()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, body) = post(&c, "/v1/admin/brokers/3/drain", json!({})).await;
    assert_eq!(status, 200, "{body}");
    let newer = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap();
    assert!(newer.version > m.version);
    assert!(
        newer.partitions().all(|(_, p)| p.leader != 3),
        "drained broker still leads"
    );
    let (_, body) = post(&c, "/v1/admin/preferred-leader-election", json!({})).await;
    assert!(body["moved"].as_u64().unwrap() >= 1, "{body}");

    // AlterPartition: a stale partition epoch is refused, the current one commits.
    let p0 = partition(&metadata(&c).await, 0);
    let leader = p0.leader;
    let isr: Vec<i32> = vec![leader];
    let req = |pe: i32| {
        json!({"broker": leader, "broker_epoch": epochs[leader as usize], "topic": "orders", "partition": 0,
               "leader_epoch": p0.leader_epoch, "partition_epoch": pe, "isr": isr})
    };
    let (status, body) = post(&c, "/v1/alter-partition", req(p0.partition_epoch + 7)).await;
    assert_eq!(
        (status, body["kind"].as_str()),
        (409, Some("stale_partition_epoch")),
        "{body}"
    );
    let (status, body) = post(&c, "/v1/alter-partition", req(p0.partition_epoch)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["isr"], json!([leader]));

    // Sessions: only broker `silent` stops heartbeating; its leaderships move to ISR members.
    let silent = partition(&metadata(&c).await, 1).leader;
    let deadline = Instant::now() + Duration::from_secs(4);
    while Instant::now() < deadline {
        for id in 0..4 {
            if id != silent {
                let (status, body) = post(
                    &c,
                    &format!("/v1/brokers/{id}/heartbeat"),
                    json!({"epoch": epochs[id as usize]}),
                )
                .await;
                assert!(status == 204 || status == 409, "{status} {body}");
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let m = metadata(&c).await;
    let p1 = partition(&m, 1);
    assert_ne!(
        p1.leader, silent,
        "leadership did not move off the silent broker"
    );
    assert!(!p1.isr.contains(&silent));
    let (status, body) = post(
        &c,
        &format!("/v1/brokers/{silent}/heartbeat"),
        json!({"epoch": epochs[silent as usize]}),
    )
    .await;
    assert_eq!(
        (status, body["kind"].as_str()),
        (409, Some("fenced")),
        "{body}"
    );

    // kill -9 and restart: the state is where it was.
    c.kill9();
    c.spawn();
    let after = metadata(&c).await;
    assert_eq!(after, m, "controller state changed across a restart");

    // Reassignment through the admin API starts with adding/removing sets.
    let target: Vec<i32> = (0..4).filter(|b| *b != silent).collect();
    let (status, body) = post(
        &c,
        "/v1/admin/reassign",
        json!({"topic": "orders", "partition": 2, "replicas": target}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(
        &c,
        "/v1/admin/reassign",
        json!({"topic": "orders", "partition": 2, "replicas": [0, 0]}),
    )
    .await;
    assert!(status == 400 || status == 409, "{status} {body}");
}

/// Issue part 2: the controller took `./victim`, `../ESCAPED` and `bad\0name` (200), and one
/// such topic in the metadata broke every broker. Kafka's name rule is enforced here, before a
/// name can reach the metadata, and so is its `.`/`_` collision rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_names_follow_kafkas_rule_at_the_controller() {
    let dir = tempfile::tempdir().unwrap();
    let c = ControllerProcess::start(dir.path());
    register(&c, 0, "first").await;
    let long = "x".repeat(250);
    for name in [
        "./victim",
        "../ESCAPED",
        "bad\0name",
        "",
        ".",
        "..",
        "a/b",
        "naïve",
        long.as_str(),
    ] {
        let (status, body) = post(
            &c,
            "/v1/topics",
            json!({"name": name, "partitions": 1, "replication_factor": 1}),
        )
        .await;
        assert_eq!(
            (status, body["kind"].as_str()),
            (400, Some("invalid_topic_name")),
            "{name:?}: {body}"
        );
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("invalid topic name")),
            "{name:?}: {body}"
        );
    }
    let (status, body) = post(
        &c,
        "/v1/topics",
        json!({"name": "x".repeat(249), "partitions": 1, "replication_factor": 1}),
    )
    .await;
    assert_eq!(status, 200, "249 characters are allowed: {body}");

    // `a.b` and `a_b` collide (Kafka's metric names cannot tell them apart).
    let (status, body) = post(
        &c,
        "/v1/topics",
        json!({"name": "a.b", "partitions": 1, "replication_factor": 1}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(
        &c,
        "/v1/topics",
        json!({"name": "a_b", "partitions": 1, "replication_factor": 1}),
    )
    .await;
    assert_eq!(
        (status, body["kind"].as_str()),
        (400, Some("topic_collision")),
        "{body}"
    );
    let error = body["error"].as_str().unwrap_or_default();
    assert!(error.contains("a_b") && error.contains("a.b"), "{body}");
    let (status, _) = post(
        &c,
        "/v1/topics",
        json!({"name": "a.b", "partitions": 1, "replication_factor": 1}),
    )
    .await;
    assert_eq!(status, 409, "the same name again is topic_exists");

    let m = metadata(&c).await;
    let names: Vec<&str> = m.topics.keys().map(String::as_str).collect();
    assert_eq!(names, ["a.b", "x".repeat(249).as_str()]);
}

async fn put(c: &ControllerProcess, path: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .put(c.url(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// `status` and `kind` of a refusal through `ControllerClient`.
fn refused<T: std::fmt::Debug>(r: Result<T, ControllerCallError>) -> (u16, String, String) {
    match r {
        Err(ControllerCallError::Refused {
            status,
            kind,
            message,
        }) => (status, kind, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// The topic and partition admin routes brokers call for Kafka's CreatePartitions,
/// AlterConfigs, ElectLeaders and AlterPartitionReassignments: their refusals (status and
/// kind), and `ControllerClient`'s methods round-tripping them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_and_partition_admin_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let c = ControllerProcess::start(dir.path());
    let client = ControllerClient::new(&c.url(""));
    let mut epochs = BTreeMap::new();
    for id in 0..5 {
        let reg = Registration {
            id,
            incarnation: "first".into(),
            host: "127.0.0.1".into(),
            port: 9000 + id as u16,
            replication_host: None,
            rack: None,
            listeners: Vec::new(),
            unclean_shutdown: false,
            min_insync_replicas: None,
        };
        epochs.insert(id, client.register(&reg).await.unwrap().epoch);
    }
    // Sessions last 1.5 s here: keep every broker alive throughout.
    let beating = tokio::spawn({
        let (client, epochs) = (client.clone(), epochs.clone());
        async move {
            loop {
                for (id, e) in &epochs {
                    let _ = client.heartbeat(*id, *e).await;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    let none = BTreeMap::new();
    client.create_topic("orders", 2, 3, &none).await.unwrap();
    client.create_topic("wide", 1, 5, &none).await.unwrap();

    // Topic configs no broker could apply are refused at creation too.
    let (status, body) = post(
        &c,
        "/v1/topics",
        json!({"name": "bad", "partitions": 1, "replication_factor": 1, "configs": {"nope": "1"}}),
    )
    .await;
    assert_eq!(
        (status, body["kind"].as_str(), body["error"].as_str()),
        (
            400,
            Some("invalid_config"),
            Some("unknown topic config 'nope'")
        ),
        "{body}"
    );

    // CreatePartitions.
    for (path, n, want) in [
        (
            "/v1/topics/nope/partitions",
            3,
            (404, "unknown_topic_or_partition"),
        ),
        (
            "/v1/topics/orders/partitions",
            1,
            (400, "partition_decrease"),
        ),
        (
            "/v1/topics/orders/partitions",
            100_001,
            (400, "invalid_partitions"),
        ),
    ] {
        let (status, body) = post(&c, path, json!({ "partitions": n })).await;
        assert_eq!(
            (status, body["kind"].as_str()),
            (want.0, Some(want.1)),
            "{path} {n}: {body}"
        );
    }
    assert!(client.add_partitions("orders", 4).await.unwrap());
    assert!(
        !client.add_partitions("orders", 4).await.unwrap(),
        "same count"
    );
    assert_eq!(metadata(&c).await.topics["orders"].partitions.len(), 4);
    let (status, kind, _) = refused(client.add_partitions("orders", 2).await);
    assert_eq!((status, kind.as_str()), (400, "partition_decrease"));
    let (status, kind, _) = refused(client.add_partitions("../orders", 9).await);
    assert_eq!((status, kind.as_str()), (400, "invalid_topic_name"));
    // A legal name of dots only is a path segment like any other (not `..`).
    client.create_topic("...", 1, 1, &none).await.unwrap();
    assert!(client.add_partitions("...", 2).await.unwrap());
    assert_eq!(metadata(&c).await.topics["..."].partitions.len(), 2);

    // AlterConfigs.
    let (status, body) = put(
        &c,
        "/v1/topics/orders/configs",
        json!({"configs": {"nope": "1"}}),
    )
    .await;
    assert_eq!(
        (status, body["kind"].as_str(), body["error"].as_str()),
        (
            400,
            Some("invalid_config"),
            Some("unknown topic config 'nope'")
        ),
        "{body}"
    );
    let (status, body) = put(&c, "/v1/topics/nope/configs", json!({"configs": {}})).await;
    assert_eq!(
        (status, body["kind"].as_str()),
        (404, Some("unknown_topic_or_partition")),
        "{body}"
    );
    let configs = BTreeMap::from([("retention.ms".to_string(), "60000".to_string())]);
    assert!(client.set_topic_configs("orders", &configs).await.unwrap());
    assert!(!client.set_topic_configs("orders", &configs).await.unwrap());
    assert_eq!(metadata(&c).await.topics["orders"].configs, configs);
    let bad = BTreeMap::from([("retention.ms".to_string(), "soon".to_string())]);
    let (status, kind, message) = refused(client.set_topic_configs("orders", &bad).await);
    assert_eq!((status, kind.as_str()), (400, "invalid_config"));
    assert!(
        message.contains("retention.ms") && message.contains("soon"),
        "{message}"
    );
    assert_eq!(
        metadata(&c).await.topics["orders"].configs,
        configs,
        "unchanged"
    );
    // Compare-and-set: a change computed from overrides replaced since is refused.
    let stale = BTreeMap::new();
    let merged = BTreeMap::from([("segment.ms".to_string(), "99999".to_string())]);
    let (status, kind, _) = refused(
        client
            .set_topic_configs_if("orders", Some(&stale), &merged)
            .await,
    );
    assert_eq!((status, kind.as_str()), (409, "config_conflict"));
    assert_eq!(
        metadata(&c).await.topics["orders"].configs,
        configs,
        "unchanged"
    );
    let mut both = configs.clone();
    both.extend(merged);
    assert!(
        client
            .set_topic_configs_if("orders", Some(&configs), &both)
            .await
            .unwrap()
    );
    assert_eq!(metadata(&c).await.topics["orders"].configs, both);
    assert!(client.set_topic_configs("orders", &configs).await.unwrap());

    // AlterClientQuotas: all or none, into the metadata every broker enforces.
    use broker::quota::config::{Alteration, Entity, Name, Op};
    let alter = |entity: Entity, key: &str, value: Option<f64>| Alteration {
        entity,
        ops: vec![Op {
            key: key.into(),
            value,
        }],
    };
    let alice = Entity {
        user: Some(Name::Named("alice".into())),
        client_id: None,
    };
    let default_client = Entity {
        user: None,
        client_id: Some(Name::Default),
    };
    let set = [
        alter(alice.clone(), "producer_byte_rate", Some(1024.0)),
        alter(default_client.clone(), "consumer_byte_rate", Some(2048.0)),
    ];
    assert!(client.alter_client_quotas(&set).await.unwrap());
    assert!(
        !client.alter_client_quotas(&set).await.unwrap(),
        "unchanged"
    );
    let quotas = metadata(&c).await.client_quotas;
    assert_eq!(
        quotas.iter().map(|q| q.entity.clone()).collect::<Vec<_>>(),
        [default_client.clone(), alice.clone()],
        "in entity order"
    );
    // One refused alteration refuses the request whole.
    let mixed = [
        alter(alice.clone(), "producer_byte_rate", None),
        alter(default_client.clone(), "consumer_byte_rate", Some(0.5)),
    ];
    let (status, kind, message) = refused(client.alter_client_quotas(&mixed).await);
    assert_eq!((status, kind.as_str()), (400, "invalid_client_quota"));
    assert!(message.contains("whole number"), "{message}");
    assert_eq!(metadata(&c).await.client_quotas, quotas, "unchanged");
    let clear = [
        alter(alice, "producer_byte_rate", None),
        alter(default_client, "consumer_byte_rate", None),
    ];
    assert!(client.alter_client_quotas(&clear).await.unwrap());
    assert!(metadata(&c).await.client_quotas.is_empty());

    // ElectLeaders. Drain orders-0's preferred leader: it cannot take leadership back, and
    // stays drained.
    let m = metadata(&c).await;
    let drained = partition(&m, 0).replicas[0];
    let (status, body) = post(&c, &format!("/v1/admin/brokers/{drained}/drain"), json!({})).await;
    assert_eq!(status, 200, "{body}");
    let results = client
        .elect_preferred(Some(&[("orders".to_string(), 0), ("nope".to_string(), 0)]))
        .await
        .unwrap();
    let outcomes: Vec<_> = results
        .iter()
        .map(|r| (r.topic.as_str(), r.partition, r.outcome.clone()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("orders", 0, ElectionOutcome::PreferredLeaderNotAvailable),
            ("nope", 0, ElectionOutcome::UnknownTopicOrPartition),
        ]
    );
    assert!(
        results[0]
            .message
            .as_deref()
            .is_some_and(|m| m.contains("drained")),
        "{results:?}"
    );
    // Every partition when none are named (`null` or absent).
    let total = metadata(&c).await.partitions().count();
    for body in [json!({"partitions": null}), json!({})] {
        let (status, answer) = post(&c, "/v1/admin/elect-leaders", body).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(
            answer["results"].as_array().map(Vec::len),
            Some(total),
            "{answer}"
        );
    }
    assert!(
        metadata(&c).await.brokers[&drained].drained,
        "still drained"
    );
    // A reordering makes another replica preferred; electing it moves leadership.
    let p1 = partition(&metadata(&c).await, 1);
    let first = *p1
        .replicas
        .iter()
        .find(|r| **r != drained && **r != p1.leader)
        .unwrap();
    let mut reordered = vec![first];
    reordered.extend(p1.replicas.iter().filter(|r| **r != first));
    let moved = client.reassign("orders", 1, &reordered).await.unwrap();
    assert_eq!(moved.replicas, reordered);
    assert!(moved.adding.is_empty() && moved.removing.is_empty());
    let results = client
        .elect_preferred(Some(&[("orders".to_string(), 1)]))
        .await
        .unwrap();
    assert_eq!(results[0].outcome, ElectionOutcome::Elected, "{results:?}");
    let p1_now = partition(&metadata(&c).await, 1);
    assert_eq!(p1_now.leader, first);
    assert_eq!(p1_now.leader_epoch, moved.leader_epoch + 1);

    // AlterPartitionReassignments: cancelling.
    let (status, kind, _) = refused(client.cancel_reassignment("orders", 2).await);
    assert_eq!(
        (status, kind.as_str()),
        (409, "no_reassignment_in_progress")
    );
    let (status, body) = post(
        &c,
        "/v1/admin/reassign/cancel",
        json!({"topic": "orders", "partition": 9}),
    )
    .await;
    assert_eq!(
        (status, body["kind"].as_str()),
        (404, Some("unknown_topic_or_partition")),
        "{body}"
    );
    // An expansion whose new replica never catches up goes back where it was.
    let p2 = partition(&metadata(&c).await, 2);
    let spare = (0..5).find(|b| !p2.replicas.contains(b)).unwrap();
    let mut grown = p2.replicas.clone();
    grown.push(spare);
    let started = client.reassign("orders", 2, &grown).await.unwrap();
    assert_eq!(started.adding, vec![spare]);
    let cancelled = client.cancel_reassignment("orders", 2).await.unwrap();
    assert_eq!(cancelled.replicas, p2.replicas);
    assert_eq!(cancelled.isr, p2.isr);
    assert!(cancelled.adding.is_empty() && cancelled.removing.is_empty());
    assert_eq!(partition(&metadata(&c).await, 2), cancelled);
    // A move onto two new brokers where only the first caught up, leads, and shrank the ISR to
    // itself: no original replica is in sync, so it cannot be cancelled.
    let p3 = partition(&metadata(&c).await, 3);
    let mut spares: Vec<i32> = (0..5).filter(|b| !p3.replicas.contains(b)).collect();
    spares.sort_by_key(|b| *b == drained); // the one to lead must not be drained
    let (s1, s2) = (spares[0], spares[1]);
    let started = client
        .reassign("orders", 3, &[s1, s2, p3.replicas[0]])
        .await
        .unwrap();
    assert_eq!(started.adding, vec![s1, s2]);
    let alter = |p: &PartitionMeta, broker: i32, isr: Vec<i32>| {
        json!({"broker": broker, "broker_epoch": epochs[&broker], "topic": "orders", "partition": 3,
               "leader_epoch": p.leader_epoch, "partition_epoch": p.partition_epoch, "isr": isr})
    };
    let mut isr = started.isr.clone();
    isr.push(s1);
    let (status, body) = post(
        &c,
        "/v1/alter-partition",
        alter(&started, started.leader, isr),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let results = client
        .elect_preferred(Some(&[("orders".to_string(), 3)]))
        .await
        .unwrap();
    assert_eq!(results[0].outcome, ElectionOutcome::Elected, "{results:?}");
    let led = partition(&metadata(&c).await, 3);
    assert_eq!(led.leader, s1);
    let (status, body) = post(&c, "/v1/alter-partition", alter(&led, s1, vec![s1])).await;
    assert_eq!(status, 200, "{body}");
    let (status, kind, message) = refused(client.cancel_reassignment("orders", 3).await);
    assert_eq!((status, kind.as_str()), (409, "cannot_cancel"), "{message}");
    let still = partition(&metadata(&c).await, 3);
    assert_eq!(still.adding, vec![s1, s2], "nothing changed");

    // CreatePartitions that placement cannot satisfy: "wide" needs 5 live brokers.
    let down = 4;
    client
        .controlled_shutdown(down, epochs[&down])
        .await
        .unwrap();
    let (status, kind, _) = refused(client.add_partitions("wide", 2).await);
    assert_eq!((status, kind.as_str()), (400, "invalid_replication_factor"));
    beating.abort();
}
