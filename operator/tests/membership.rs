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
