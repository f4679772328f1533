//! Named listeners on a replicated cluster of real processes (controller + 3 brokers started
//! by e2e/local-cluster, plus a 4th broker without the extra listener): a client connected on
//! the `external` listener gets every broker's external address in Metadata and
//! FindCoordinator, one on `internal` the internal ones, a broker without the listener is
//! left out, and librdkafka produces and consumes through the external listener alone.

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, FindCoordinatorRequest, FindCoordinatorResponse, MetadataRequest, MetadataResponse,
    RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e/local-cluster")
}

/// The directory holding the broker and operator binaries (building the operator if needed).
fn bin_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_broker"))
        .parent()
        .unwrap()
        .to_path_buf();
    if !dir.join("operator").exists() {
        let ok = Command::new(env!("CARGO"))
            .args(["build", "-p", "operator"])
            .status()
            .unwrap()
            .success();
        assert!(ok, "building the operator failed");
    }
    dir
}

struct Cluster {
    dir: PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .args(["down", "--dir"])
            .arg(&self.dir)
            .status();
    }
}

/// One request on a new connection to `addr`, answered at `version`.
fn call<R: Request + Encodable>(addr: &str, req: &R, version: i16) -> R::Response
where
    R::Response: Decodable,
{
    use std::io::{Read, Write};
    let key = ApiKey::try_from(R::KEY).unwrap();
    let mut header = RequestHeader::default();
    header.request_api_key = R::KEY;
    header.request_api_version = version;
    header.correlation_id = 7;
    header.client_id = Some(StrBytes::from_static_str("listeners-test"));
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    header
        .encode(&mut buf, key.request_header_version(version))
        .unwrap();
    req.encode(&mut buf, version).unwrap();
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(&buf).unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut frame = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut frame).unwrap();
    let mut frame = Bytes::from(frame);
    let h = ResponseHeader::decode(&mut frame, key.response_header_version(version)).unwrap();
    assert_eq!(h.correlation_id, 7);
    let r = R::Response::decode(&mut frame, version).unwrap();
    assert!(!frame.has_remaining(), "trailing bytes");
    r
}

/// (node id, host:port) of every broker Metadata lists.
fn brokers(addr: &str, version: i16) -> Vec<(i32, String)> {
    let req = MetadataRequest::default().with_topics(Some(vec![]));
    let r: MetadataResponse = call(addr, &req, version);
    let mut out: Vec<_> = r
        .brokers
        .iter()
        .map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port)))
        .collect();
    out.sort();
    out
}

/// The coordinator of `group` as (node id, host:port), asked with FindCoordinator v3 (one
/// key) and v4 (a key list), which must agree; waits while `__consumer_offsets` is created.
fn coordinator(addr: &str, group: &str) -> (i32, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v3: FindCoordinatorResponse = call(
            addr,
            &FindCoordinatorRequest::default().with_key(StrBytes::from_string(group.into())),
            3,
        );
        let v4: FindCoordinatorResponse = call(
            addr,
            &FindCoordinatorRequest::default()
                .with_coordinator_keys(vec![StrBytes::from_string(group.into())]),
            4,
        );
        let c = &v4.coordinators[0];
        if v3.error_code == 0 && c.error_code == 0 {
            let a = (v3.node_id.0, format!("{}:{}", v3.host, v3.port));
            let b = (c.node_id.0, format!("{}:{}", c.host, c.port));
            if a == b {
                return a;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no coordinator for {group} on {addr}: {v3:?} {v4:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_listener_answers_with_its_own_addresses() {
    let dir = tempfile::Builder::new()
        .prefix("strand-listeners-")
        .tempdir()
        .unwrap();
    // local-cluster's ports: controller base, broker i Kafka base+10+i, HTTP base+50+i; the
    // external listener of broker i is ext+i (one flag for all brokers: `BASE+id`).
    // Below the control plane's 14000 and the kernel's ephemeral range (see cluster_faults).
    let base: u16 = 2000 + (rand::random::<u16>() % 50) * 200;
    let ext = base + 100;
    let internal = |id: u16| format!("127.0.0.1:{}", base + 10 + id);
    let external = |id: u16| format!("127.0.0.1:{}", ext + id);
    let broker_args = format!(
        "--listener external=127.0.0.1:{ext}+id --advertised-listener external=127.0.0.1:{ext}+id \
         --offsets-topic-partitions 3 --group-initial-rebalance-delay-ms 0"
    );
    let out = Command::new(script())
        .args([
            "up",
            "--brokers",
            "3",
            "--base-port",
            &base.to_string(),
            "--dir",
        ])
        .arg(dir.path())
        .env("STRAND_BIN_DIR", bin_dir())
        .env("STRAND_DISTINCT_IPS", "0")
        .env("STRAND_BROKER_ARGS", &broker_args)
        .output()
        .unwrap();
    let _cluster = Cluster {
        dir: dir.path().to_path_buf(),
    };
    assert!(
        out.status.success(),
        "cluster did not start: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let want_internal: Vec<_> = (0..3).map(|i| (i32::from(i), internal(i))).collect();
    let want_external: Vec<_> = (0..3).map(|i| (i32::from(i), external(i))).collect();
    for id in 0..3 {
        for version in [1, 9, 12] {
            assert_eq!(
                brokers(&external(id), version),
                want_external,
                "Metadata v{version} on broker {id}'s external listener"
            );
            assert_eq!(
                brokers(&internal(id), version),
                want_internal,
                "Metadata v{version} on broker {id}'s internal listener"
            );
        }
    }

    // FindCoordinator: the same broker, at the address of the asking listener.
    for group in ["g-one", "g-two", "g-three"] {
        let (node, addr) = coordinator(&external(1), group);
        assert!((0..3).contains(&node), "{node}");
        assert_eq!(addr, external(node as u16), "{group}: coordinator {node}");
        assert_eq!(
            coordinator(&internal(2), group),
            (node, internal(node as u16)),
            "{group}"
        );
    }

    // librdkafka through the external listener alone: bootstrap, produce, consume.
    let bootstrap = external(0);
    let p = common::kafka::producer(&bootstrap, &[("acks", "all")]);
    let acked = common::kafka::produce(&p, "via-external", "x", 50).await;
    let read = common::kafka::consume_all(&bootstrap, "via-external", &[0]);
    assert_eq!(acked, read);

    // A 4th broker with the internal listener only: listed on internal, left out on external.
    let mut fourth = common::BrokerProcess::start(
        &dir.path().join("broker-3"),
        &[
            "--node-id",
            "3",
            "--controller",
            &format!("http://127.0.0.1:{base}"),
        ],
    );
    let mut with_fourth = want_internal.clone();
    with_fourth.push((3, fourth.bootstrap()));
    let deadline = Instant::now() + Duration::from_secs(30);
    while brokers(&internal(0), 12) != with_fourth {
        assert!(Instant::now() < deadline, "broker 3 never listed");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(brokers(&fourth.bootstrap(), 12), with_fourth);
    assert_eq!(brokers(&external(2), 12), want_external);

    // A partition it leads has no leader for external clients (Kafka: LISTENER_NOT_FOUND).
    let admin = |path: &str, body: serde_json::Value| {
        let url = format!("http://127.0.0.1:{base}/v1/admin/{path}");
        async move {
            let r = reqwest::Client::new()
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{}", r.text().await.unwrap());
        }
    };
    admin(
        "reassign",
        serde_json::json!({"topic": "via-external", "partition": 0, "replicas": [3, 0, 1]}),
    )
    .await;
    let leader = |addr: &str| {
        let req = MetadataRequest::default().with_topics(Some(vec![
            kafka_protocol::messages::metadata_request::MetadataRequestTopic::default().with_name(
                Some(kafka_protocol::messages::TopicName(
                    StrBytes::from_static_str("via-external"),
                )),
            ),
        ]));
        let r: MetadataResponse = call(addr, &req, 12);
        let p = &r.topics[0].partitions[0];
        (p.leader_id.0, p.error_code)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while leader(&internal(0)) != (3, 0) {
        assert!(
            Instant::now() < deadline,
            "broker 3 never led via-external-0"
        );
        admin("preferred-leader-election", serde_json::json!({})).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        leader(&external(0)),
        (
            -1,
            kafka_protocol::error::ResponseError::ListenerNotFound.code()
        )
    );

    fourth.terminate();
}
