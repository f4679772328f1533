//! Fetch sessions (KIP-227) against a real broker, with raw Fetch v12 requests: a full fetch
//! opens a session, incremental fetches answer only the partitions that changed (records, a
//! moved high watermark), forgotten partitions leave the session, a parked incremental fetch
//! answers with the partition that got data, a wrong epoch and an unknown id get their errors,
//! epoch -1 closes the session, another fetcher cannot use it, and slots=0 (from the config
//! file) disables sessions.

mod common;

use std::time::Duration;

use broker::replication::client::Connection;
use common::BrokerProcess;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::producer::{FutureProducer, FutureRecord};

const TOPIC: &str = "sessions";
const V: i16 = 12;

fn partition(p: i32, offset: i64) -> FetchPartition {
    let mut fp = FetchPartition::default();
    fp.partition = p;
    fp.fetch_offset = offset;
    fp.partition_max_bytes = 1 << 20;
    fp
}

fn request(id: i32, epoch: i32, parts: Vec<FetchPartition>, forgotten: Vec<i32>) -> FetchRequest {
    let mut r = FetchRequest::default();
    r.replica_id = (-1).into();
    r.max_wait_ms = 0;
    r.min_bytes = 0;
    r.max_bytes = 1 << 20;
    r.session_id = id;
    r.session_epoch = epoch;
    if !parts.is_empty() {
        let mut t = FetchTopic::default();
        t.topic = TopicName(StrBytes::from_static_str(TOPIC));
        t.partitions = parts;
        r.topics = vec![t];
    }
    if !forgotten.is_empty() {
        let mut f = ForgottenTopic::default();
        f.topic = TopicName(StrBytes::from_static_str(TOPIC));
        f.partitions = forgotten;
        r.forgotten_topics_data = vec![f];
    }
    r
}

/// (partition, high watermark, record bytes) of every partition in the response, sorted.
fn answered(r: &FetchResponse) -> Vec<(i32, i64, usize)> {
    let mut out: Vec<_> = r
        .responses
        .iter()
        .flat_map(|t| {
            assert_eq!(t.topic.as_str(), TOPIC);
            t.partitions.iter().map(|p| {
                assert_eq!(p.error_code, 0, "{p:?}");
                (
                    p.partition_index,
                    p.high_watermark,
                    p.records.as_ref().map_or(0, |r| r.len()),
                )
            })
        })
        .collect();
    out.sort();
    out
}

async fn produce_to(p: &FutureProducer, partition: i32, n: usize) {
    for i in 0..n {
        let value = format!("v{i}");
        p.send(
            FutureRecord::<(), _>::to(TOPIC)
                .partition(partition)
                .payload(&value),
            Duration::from_secs(10),
        )
        .await
        .unwrap_or_else(|(e, _)| panic!("produce to {partition}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_then_incremental_fetches_answer_only_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("data"), &["--num-partitions", "3"]);
    let p = common::kafka::producer(&broker.bootstrap(), &[("linger.ms", "0")]);
    for part in 0..3 {
        produce_to(&p, part, 5).await;
    }
    let mut c = Connection::connect(&broker.bootstrap(), "sessions")
        .await
        .unwrap();

    // A full fetch (id 0, epoch 0) at the ends opens a session and answers every partition.
    let all = (0..3).map(|p| partition(p, 5)).collect();
    let r = c.send(&request(0, 0, all, vec![]), V).await.unwrap();
    assert_eq!(r.error_code, 0);
    let id = r.session_id;
    assert!(id > 0, "no session: {r:?}");
    assert_eq!(answered(&r), vec![(0, 5, 0), (1, 5, 0), (2, 5, 0)]);
    assert_eq!(broker.metric("strand_fetch_sessions"), 1.0);

    // Nothing changed: an empty incremental answer.
    let r = c.send(&request(id, 1, vec![], vec![]), V).await.unwrap();
    assert_eq!((r.error_code, r.session_id), (0, id));
    assert_eq!(answered(&r), vec![]);

    // Records on partition 1 only: only partition 1, with them.
    produce_to(&p, 1, 3).await;
    let r = c.send(&request(id, 2, vec![], vec![]), V).await.unwrap();
    let got = answered(&r);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0].0, got[0].1), (1, 8));
    assert!(got[0].2 > 0);
    // The client did not move partition 1's offset (it omitted it): the session still reads
    // it from 5, and its answer has records again; once it names 8, it is quiet.
    let r = c.send(&request(id, 3, vec![], vec![]), V).await.unwrap();
    assert_eq!(answered(&r).len(), 1);
    let r = c
        .send(&request(id, 4, vec![partition(1, 8)], vec![]), V)
        .await
        .unwrap();
    assert_eq!(answered(&r), vec![]);

    // Forget partition 2: new records there are not answered; partition 0's are.
    produce_to(&p, 2, 2).await;
    produce_to(&p, 0, 2).await;
    let r = c.send(&request(id, 5, vec![], vec![2]), V).await.unwrap();
    let got = answered(&r);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0].0, got[0].1), (0, 7));
    let r = c
        .send(&request(id, 6, vec![partition(0, 7)], vec![]), V)
        .await
        .unwrap();
    assert_eq!(answered(&r), vec![]);

    // A parked incremental fetch waits on the session's partitions (none named here) and
    // answers with the one that got data.
    let mut parked = request(id, 7, vec![], vec![]);
    parked.max_wait_ms = 10_000;
    parked.min_bytes = 1;
    let producing = {
        let p = p.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            produce_to(&p, 1, 1).await;
        })
    };
    let started = std::time::Instant::now();
    let r = c.send(&parked, V).await.unwrap();
    producing.await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(8), "did not wake");
    let got = answered(&r);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0].0, got[0].1), (1, 9));

    // A wrong epoch, an unknown id.
    let r = c.send(&request(id, 7, vec![], vec![]), V).await.unwrap();
    assert_eq!(
        r.error_code,
        ResponseError::InvalidFetchSessionEpoch.code(),
        "{r:?}"
    );
    let unknown = if id == i32::MAX { 1 } else { id + 1 };
    let r = c
        .send(&request(unknown, 1, vec![], vec![]), V)
        .await
        .unwrap();
    assert_eq!(r.error_code, ResponseError::FetchSessionIdNotFound.code());
    // Another fetcher (a replica id) cannot use the consumer's session.
    let mut as_replica = request(id, 8, vec![], vec![]);
    as_replica.replica_id = 7.into();
    let r = c.send(&as_replica, V).await.unwrap();
    assert_eq!(r.error_code, ResponseError::FetchSessionIdNotFound.code());
    // The refusals did not move the epoch.
    let r = c.send(&request(id, 8, vec![], vec![]), V).await.unwrap();
    assert_eq!((r.error_code, r.session_id), (0, id));
    assert_eq!(broker.metric("strand_incremental_fetches_total"), 8.0);

    // Epoch -1 with the id: a sessionless full fetch that closes the session.
    let r = c
        .send(&request(id, -1, vec![partition(0, 7)], vec![]), V)
        .await
        .unwrap();
    assert_eq!((r.error_code, r.session_id), (0, 0));
    assert_eq!(answered(&r), vec![(0, 7, 0)]);
    let r = c.send(&request(id, 9, vec![], vec![]), V).await.unwrap();
    assert_eq!(r.error_code, ResponseError::FetchSessionIdNotFound.code());
    assert_eq!(broker.metric("strand_fetch_sessions"), 0.0);

    // Fetch v4-v6 have no sessions: the same request at v6 is a plain full fetch.
    let r = c
        .send(&request(0, 0, vec![partition(0, 7)], vec![]), 6)
        .await
        .unwrap();
    assert_eq!(answered(&r), vec![(0, 7, 0)]);
    assert_eq!(broker.metric("strand_fetch_sessions"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_slots_in_the_config_file_disables_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("broker.properties");
    std::fs::write(&config, "max.incremental.fetch.session.cache.slots=0\n").unwrap();
    let broker = BrokerProcess::start(
        &dir.path().join("data"),
        &["--config-file", config.to_str().unwrap()],
    );
    let p = common::kafka::producer(&broker.bootstrap(), &[("linger.ms", "0")]);
    produce_to(&p, 0, 1).await;
    let mut c = Connection::connect(&broker.bootstrap(), "sessions")
        .await
        .unwrap();
    let r = c
        .send(&request(0, 0, vec![partition(0, 0)], vec![]), V)
        .await
        .unwrap();
    assert_eq!((r.error_code, r.session_id), (0, 0));
    assert_eq!(answered(&r).len(), 1);
    let r = c.send(&request(1, 1, vec![], vec![]), V).await.unwrap();
    assert_eq!(r.error_code, ResponseError::FetchSessionIdNotFound.code());
    assert_eq!(broker.metric("strand_fetch_sessions"), 0.0);
}

/// Kafka's own Java consumer uses fetch sessions: `strand.interop.ConsumerPerf`
/// (e2e/interop/java, assign() of every partition, default settings) reads a topic of about
/// 2 MiB per partition, more than one fetch returns (1 MiB per partition), so it fetches
/// incrementally after its first full fetch. It must read every record, and the broker must
/// have served incremental fetches. Needs `java`, and builds the interop client with
/// e2e/interop/java/run.sh (Maven, offline from $STRAND_CACHE/m2 when warm); skipped, saying
/// so, when `java` is not installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_java_consumer_reads_everything_through_incremental_fetches() {
    if std::process::Command::new("java")
        .arg("-version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: no java on PATH");
        return;
    }
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let interop = repo.join("e2e/interop/java");
    let built = std::process::Command::new("bash")
        .arg(interop.join("run.sh"))
        .arg("--build-only")
        .status()
        .expect("run e2e/interop/java/run.sh");
    assert!(built.success(), "building the Java interop client failed");

    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("data"), &["--num-partitions", "8"]);
    let topic = "java-sessions";
    let records = 2000;
    let p = common::kafka::producer(&broker.bootstrap(), &[("linger.ms", "5")]);
    let value = vec![b'x'; 8 * 1024];
    let mut pending = Vec::new();
    for i in 0..records {
        let key = format!("k{}", i % 64);
        let fut = p
            .send_result(FutureRecord::to(topic).key(&key).payload(&value))
            .map_err(|(e, _)| e)
            .expect("enqueue");
        pending.push(fut);
    }
    for fut in pending {
        fut.await
            .expect("delivery future")
            .unwrap_or_else(|(e, _)| panic!("delivery failed: {e}"));
    }
    let before = broker.metric("strand_incremental_fetches_total");

    let classpath = format!(
        "{}:{}/*",
        interop.join("target/classes").display(),
        interop.join("target/lib").display()
    );
    let out = std::process::Command::new("java")
        .args(["-Xmx256m", "-cp", &classpath])
        .arg("-Dorg.slf4j.simpleLogger.defaultLogLevel=warn")
        .args([
            "strand.interop.ConsumerPerf",
            &broker.bootstrap(),
            topic,
            "120",
        ])
        .output()
        .expect("run ConsumerPerf");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ConsumerPerf failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("records={records} ")),
        "ConsumerPerf did not read every record: {stdout}"
    );
    let incremental = broker.metric("strand_incremental_fetches_total") - before;
    eprintln!("the Java consumer: {stdout} incremental fetches: {incremental}");
    assert!(incremental >= 1.0, "no incremental fetch served");
}
