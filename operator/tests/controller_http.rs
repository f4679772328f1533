//! The controller as a real process, driven over its HTTP API: registration, topics, session
//! expiry moving leadership, AlterPartition fencing, admin moves, clear errors for bad input,
//! and state that survives kill -9.

mod common;

use std::time::{Duration, Instant};

use common::ControllerProcess;

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
