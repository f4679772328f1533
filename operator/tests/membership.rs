//! A broker's cluster membership against the real controller process: registration,
//! heartbeats, metadata followed by long poll and saved to disk, fencing after missed
//! heartbeats and re-registration with a new epoch, and a controller restart.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::cluster::controller_client::{ControllerClient, Registration};
use broker::cluster::membership::{METADATA_FILE, Membership, Settings};
use broker::metadata::{BrokerStatus, ClusterMetadata};
use common::ControllerProcess;
use tokio::sync::watch;

async fn wait_for(
    rx: &mut watch::Receiver<Arc<ClusterMetadata>>,
    what: &str,
    f: impl Fn(&ClusterMetadata) -> bool,
) -> Arc<ClusterMetadata> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let m = rx.borrow_and_update().clone();
        if f(&m) {
            return m;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "timed out waiting for: {what}; last metadata {m:?}"
        );
        let _ = tokio::time::timeout(left, rx.changed()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_membership_follows_the_controller() {
    let dir = tempfile::tempdir().unwrap();
    let mut controller = ControllerProcess::start(&dir.path().join("controller"));
    let data = dir.path().join("broker-0");
    std::fs::create_dir_all(&data).unwrap();
    let client = ControllerClient::new(&controller.url(""));
    let registration = Registration {
        id: 0,
        incarnation: "run-1".into(),
        host: "127.0.0.1".into(),
        port: 9092,
        replication_host: None,
        rack: Some("r1".into()),
        listeners: Vec::new(),
        unclean_shutdown: false,
        min_insync_replicas: None,
    };
    let settings = Settings {
        heartbeat_interval: Duration::from_millis(300),
        metadata_wait: Duration::from_millis(1000),
        retry_backoff: Duration::from_millis(100),
    };
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let m = Membership::join(
        client.clone(),
        registration.clone(),
        data.clone(),
        settings.clone(),
        &mut stop_rx,
    )
    .await
    .unwrap();
    let first_epoch = m.epoch();
    let hb = tokio::spawn(m.clone().heartbeat_loop(stop_rx.clone()));
    let md = tokio::spawn(m.clone().metadata_loop(stop_rx.clone()));
    let mut rx = m.subscribe();
    wait_for(&mut rx, "broker 0 alive", |m| {
        m.brokers
            .get(&0)
            .is_some_and(|b| b.status == BrokerStatus::Alive)
    })
    .await;

    // A topic created at the controller reaches the broker and its disk copy.
    let r = reqwest::Client::new()
        .post(controller.url("/v1/topics"))
        .json(&serde_json::json!({"name": "t", "partitions": 2, "replication_factor": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let seen = wait_for(&mut rx, "topic t", |m| m.topics.contains_key("t")).await;
    let on_disk: ClusterMetadata =
        serde_json::from_slice(&std::fs::read(data.join(METADATA_FILE)).unwrap()).unwrap();
    assert!(on_disk.version >= seen.version - 1 && on_disk.topics.contains_key("t"));

    // Silence past the session timeout: fenced; heartbeats resume and it registers again.
    stop_tx.send(true).unwrap();
    hb.await.unwrap();
    md.await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let now = client.metadata(None, Duration::ZERO, None).await.unwrap();
    assert_eq!(now.brokers[&0].status, BrokerStatus::Fenced);
    let (stop_tx, stop_rx) = watch::channel(false);
    let hb = tokio::spawn(m.clone().heartbeat_loop(stop_rx.clone()));
    let md = tokio::spawn(m.clone().metadata_loop(stop_rx.clone()));
    let back = wait_for(&mut rx, "broker 0 alive again", |md| {
        md.brokers
            .get(&0)
            .is_some_and(|b| b.status == BrokerStatus::Alive && b.epoch > first_epoch)
    })
    .await;
    assert_eq!(m.epoch(), back.brokers[&0].epoch);

    // The controller restarts (kill -9): membership carries on with the same epoch.
    controller.kill9();
    tokio::time::sleep(Duration::from_millis(500)).await;
    controller.spawn();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let after = client.metadata(None, Duration::ZERO, None).await.unwrap();
    assert_eq!(
        after.brokers[&0].status,
        BrokerStatus::Alive,
        "heartbeats must keep the broker alive across a controller restart"
    );
    assert_eq!(after.brokers[&0].epoch, m.epoch());
    stop_tx.send(true).unwrap();
    hb.await.unwrap();
    md.await.unwrap();

    // A broker whose cached metadata names another cluster is refused.
    let mut other = on_disk.clone();
    other.cluster_id = "someone-else".into();
    std::fs::write(
        data.join(METADATA_FILE),
        serde_json::to_vec(&other).unwrap(),
    )
    .unwrap();
    let (_t, mut s) = watch::channel(false);
    let refused = Membership::join(client, registration, data, settings, &mut s).await;
    assert!(
        refused.is_err(),
        "a broker of another cluster must not join"
    );
}

/// A restarted broker (a new incarnation) must act on nothing its previous life knew: its
/// saved copy may name it the leader of an epoch it led then, with a log that has since lost
/// its unsynced tail. Once `join` returns, the metadata is the controller's from after the
/// registration, in which the previous life was fenced (its leadership moved to the other
/// in-sync replica at a new epoch). Before, `join` returned with the saved copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_broker_acts_on_no_metadata_from_its_previous_life() {
    let dir = tempfile::tempdir().unwrap();
    let controller = ControllerProcess::start(&dir.path().join("controller"));
    let client = ControllerClient::new(&controller.url(""));
    let settings = Settings {
        heartbeat_interval: Duration::from_millis(300),
        metadata_wait: Duration::from_millis(1000),
        retry_backoff: Duration::from_millis(100),
    };
    let registration = |id: i32, incarnation: &str| Registration {
        id,
        incarnation: incarnation.into(),
        host: "127.0.0.1".into(),
        port: 9092 + id as u16,
        replication_host: None,
        rack: None,
        listeners: Vec::new(),
        unclean_shutdown: false,
        min_insync_replicas: None,
    };
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let mut members = Vec::new();
    for id in [0, 1] {
        let data = dir.path().join(format!("broker-{id}"));
        std::fs::create_dir_all(&data).unwrap();
        let m = Membership::join(
            client.clone(),
            registration(id, "run-1"),
            data,
            settings.clone(),
            &mut stop_rx,
        )
        .await
        .unwrap();
        tokio::spawn(m.clone().heartbeat_loop(stop_rx.clone()));
        tokio::spawn(m.clone().metadata_loop(stop_rx.clone()));
        members.push(m);
    }
    let r = reqwest::Client::new()
        .post(controller.url("/v1/topics"))
        .json(&serde_json::json!({"name": "t", "partitions": 1, "replication_factor": 2, "assignments": [[0, 1]]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let mut rx = members[0].subscribe();
    let led = wait_for(&mut rx, "broker 0 leading t-0", |m| {
        m.partition("t", 0).is_some_and(|p| p.leader == 0)
    })
    .await;
    let old_epoch = led.partition("t", 0).unwrap().leader_epoch;
    // Its disk copy says so too (the copy is written before it is published).
    let saved: ClusterMetadata = serde_json::from_slice(
        &std::fs::read(dir.path().join("broker-0").join(METADATA_FILE)).unwrap(),
    )
    .unwrap();
    assert_eq!(saved.partition("t", 0).unwrap().leader, 0);

    // Broker 0 crashes and comes back at once (its session has not expired).
    stop_tx.send(true).unwrap();
    let (_keep, mut s) = watch::channel(false);
    let restarted = Membership::join(
        client.clone(),
        registration(0, "run-2"),
        dir.path().join("broker-0"),
        settings,
        &mut s,
    )
    .await
    .unwrap();
    let first = restarted.metadata();
    let p = first.partition("t", 0).unwrap();
    assert!(
        p.leader == 1 && p.leader_epoch > old_epoch && !p.isr.contains(&0),
        "the first metadata a restarted broker acts on must come after its registration: {p:?}"
    );
    assert_eq!(first.brokers[&0].epoch, restarted.epoch());
}
