//! Fault tests of a replicated cluster of real processes (controller + 3 brokers on loopback,
//! started by e2e/local-cluster), checked the Jepsen way: every acknowledged write is read back
//! at its offset, no offset holds two values, no value is stored twice. The fault schedule is
//! random with a printed seed (STRAND_FAULT_SEED replays one).

mod common;

use std::time::{Duration, Instant};

use common::cluster::{Cluster, Isolation, SERIAL, base_port, record, test_dir};
use common::kafka::{ACKS_ALL_IDEMPOTENT, Load, producer};
use rand::{Rng, SeedableRng};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::FutureRecord;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_leaders_under_acks_all_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let seed: u64 = std::env::var("STRAND_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("fault schedule seed: {seed} (STRAND_FAULT_SEED={seed} replays it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = test_dir();
    let base = base_port(0);
    let cluster = Cluster::up(dir.path(), base, 3);
    cluster.create_topic("jepsen", 3).await;
    let load = Load::start(&cluster.bootstrap, ACKS_ALL_IDEMPOTENT, "jepsen");
    // Round 0 kills the leader of a random partition; round 1 kills that partition's new
    // leader (while the first victim may still be catching up); round 2 a random one again.
    let partition = rng.random_range(0..3);
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(1000..2500))).await;
        let partition = if round < 2 {
            partition
        } else {
            rng.random_range(0..3)
        };
        let victim = cluster.leader_of("jepsen", partition).await;
        assert!(victim >= 0, "no leader for partition {partition}");
        eprintln!(
            "seed {seed} round {round}: kill -9 broker {victim} (leader of jepsen-{partition}), {} acknowledged",
            load.acked_count()
        );
        cluster.kill9(victim);
        tokio::time::sleep(Duration::from_millis(rng.random_range(5000..7000))).await;
        let new_leader = cluster.leader_of("jepsen", partition).await;
        assert!(
            new_leader >= 0 && new_leader != victim,
            "seed {seed}: leadership did not move off {victim}"
        );
        cluster.start_broker(victim);
    }
    tokio::time::sleep(Duration::from_millis(3000)).await;
    // The followers fetch through sessions (KIP-227) across the kills and restarts.
    let mut incremental = 0.0;
    for id in 0..3 {
        incremental += cluster
            .broker_metric(id, "strand_incremental_fetches_total")
            .await;
    }
    assert!(incremental > 0.0, "no broker served an incremental fetch");
    let (sent, acked, read) = load.finish(&cluster.bootstrap, "jepsen", &[0, 1, 2]).await;
    let line = format!(
        "killing_leaders seed={seed}: sent {sent}, acknowledged {}, stored {}, violations 0",
        acked.len(),
        read.len()
    );
    eprintln!("{line}");
    record(&line);
}

/// Controller operations under acks=all load: drain moves every leadership off a broker,
/// preferred-leader election restores the spread, a reassignment moves a partition to another
/// replica set, and decommission empties a broker. No acknowledged write is lost and no
/// delivery fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_election_reassignment_and_decommission_under_load() {
    let _serial = SERIAL.lock().await;
    let dir = test_dir();
    let base = base_port(1);
    let cluster = Cluster::up(dir.path(), base, 4);
    cluster.create_topic("ops", 4).await;
    let preferred: Vec<i32> = {
        let m = cluster.metadata().await;
        (0..4)
            .map(|p| m.partition("ops", p).unwrap().replicas[0])
            .collect()
    };
    let load = Load::start(&cluster.bootstrap, ACKS_ALL_IDEMPOTENT, "ops");
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Drain the preferred leader of partition 0.
    let drained = preferred[0];
    cluster
        .admin(&format!("brokers/{drained}/drain"), serde_json::json!({}))
        .await;
    cluster
        .wait_for("no leadership on the drained broker", 10, |m| {
            m.partitions().all(|(_, p)| p.leader != drained)
        })
        .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // Preferred-leader election restores the original leaders.
    cluster
        .admin("preferred-leader-election", serde_json::json!({}))
        .await;
    cluster
        .wait_for("preferred leaders back", 10, |m| {
            (0..4).all(|p| m.partition("ops", p).unwrap().leader == preferred[p as usize])
        })
        .await;

    // Reassign partition 1 to a set that swaps one replica for the broker it lacks.
    let current = cluster
        .metadata()
        .await
        .partition("ops", 1)
        .unwrap()
        .replicas
        .clone();
    let newcomer = (0..4).find(|b| !current.contains(b)).unwrap();
    let target = vec![current[1], current[2], newcomer];
    cluster
        .admin(
            "reassign",
            serde_json::json!({"topic": "ops", "partition": 1, "replicas": target}),
        )
        .await;
    cluster
        .wait_for("reassignment of ops-1 complete", 30, |m| {
            let p = m.partition("ops", 1).unwrap();
            p.replicas == target && p.adding.is_empty() && p.removing.is_empty() && p.isr.len() == 3
        })
        .await;

    // Decommission broker 3: it ends up holding no replica.
    cluster
        .admin("brokers/3/decommission", serde_json::json!({}))
        .await;
    cluster
        .wait_for("broker 3 empty", 40, |m| {
            m.partitions()
                .all(|(_, p)| !p.replicas.contains(&3) && p.adding.is_empty())
        })
        .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let (sent, acked, read) = load.finish(&cluster.bootstrap, "ops", &[0, 1, 2, 3]).await;
    assert_eq!(read.len() as u64, sent, "every sent record is stored once");
    // The decommissioned broker deleted its replicas.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("broker-3"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("ops-"))
        .map(|e| e.file_name())
        .collect();
    assert!(leftovers.is_empty(), "broker 3 still holds {leftovers:?}");
    let line = format!(
        "drain_election_reassignment_and_decommission: sent {sent}, acknowledged {}, stored {}, violations 0",
        acked.len(),
        read.len()
    );
    eprintln!("{line}");
    record(&line);
}

/// Scale-up: two brokers join a 3-broker cluster under acks=all load and a rebalance moves
/// replicas and leaders onto them, two partitions at a time; the controller is killed -9
/// halfway and resumes the rebalance from its state file. Replica counts end within 1, every
/// partition is led by its first replica, the new brokers lead partitions, and no acknowledged
/// write is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_up_rebalances_onto_new_brokers_under_load() {
    let _serial = SERIAL.lock().await;
    let dir = test_dir();
    let base = base_port(2);
    let cluster = Cluster::up(dir.path(), base, 3);
    cluster.create_topic("grow", 6).await;
    let load = Load::start(&cluster.bootstrap, ACKS_ALL_IDEMPOTENT, "grow");
    tokio::time::sleep(Duration::from_millis(1500)).await;

    cluster.start_broker(3);
    cluster.start_broker(4);
    cluster
        .wait_for("brokers 3 and 4 registered", 20, |m| {
            m.is_alive(3) && m.is_alive(4)
        })
        .await;
    let answer = cluster.admin("rebalance", serde_json::json!({})).await;
    assert_eq!(answer["under_way"], true, "{answer}");
    assert_eq!(answer["onto"], serde_json::json!([3, 4]), "{answer}");
    let total = answer["total"].as_u64().unwrap();

    // Kill the controller once a move is under way; its successor resumes from the file.
    cluster
        .wait_for("a move in flight (or done)", 20, |m| {
            m.partitions()
                .any(|(_, p)| !p.adding.is_empty() || p.replicas.iter().any(|r| *r >= 3))
        })
        .await;
    cluster.kill9_controller();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    cluster.start_controller();

    let describe = format!("http://127.0.0.1:{}/v1/admin/describe", cluster.base);
    let started = Instant::now();
    loop {
        let d: serde_json::Value = reqwest::get(&describe).await.unwrap().json().await.unwrap();
        if d.get("rebalance").is_none_or(|r| r.is_null()) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the rebalance did not finish: {}",
            d["rebalance"]
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "rebalance of {total} partitions finished {} ms after the controller restart",
        started.elapsed().as_millis()
    );
    cluster
        .wait_for("preferred leaders elected", 20, |m| {
            m.partitions()
                .all(|(_, p)| p.leader == p.replicas[0] && p.isr.len() == 3)
        })
        .await;
    let m = cluster.metadata().await;
    let mut replicas = [0usize; 5];
    let mut leaders = [0usize; 5];
    for (_, p) in m.partitions().filter(|(t, _)| *t == "grow") {
        assert_eq!(p.replicas.len(), 3, "{p:?}");
        for r in &p.replicas {
            replicas[*r as usize] += 1;
        }
        leaders[p.leader as usize] += 1;
    }
    // 18 replicas over 5 brokers: 3 or 4 each; 6 leaders: 1 or 2 each.
    assert!(replicas.iter().all(|n| (3..=4).contains(n)), "{replicas:?}");
    assert!(leaders.iter().all(|n| (1..=2).contains(n)), "{leaders:?}");
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let (sent, acked, read) = load
        .finish(&cluster.bootstrap, "grow", &[0, 1, 2, 3, 4, 5])
        .await;
    let line = format!(
        "scale_up_rebalance: {total} partition moves, replicas {replicas:?}, leaders {leaders:?}; sent {sent}, acknowledged {}, stored {}, violations 0",
        acked.len(),
        read.len()
    );
    eprintln!("{line}");
    record(&line);
}

/// A stalled follower (SIGSTOP past the lag time) leaves the ISR and rejoins after SIGCONT;
/// the controller killed during load comes back with its state; with two of three brokers down
/// acks=all writes are refused (NOT_ENOUGH_REPLICAS) and succeed again once they return. The
/// acks=all load running throughout loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_follower_controller_loss_and_min_isr() {
    let _serial = SERIAL.lock().await;
    let dir = test_dir();
    let base = base_port(3);
    let cluster = Cluster::up(dir.path(), base, 3);
    cluster.create_topic("faults", 1).await;
    let load = Load::start(&cluster.bootstrap, ACKS_ALL_IDEMPOTENT, "faults");
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // A follower stalls past replica.lag.time.max.ms (4 s here) and is dropped from the ISR;
    // once resumed it catches up and is added back.
    let m = cluster.metadata().await;
    let p = m.partition("faults", 0).unwrap().clone();
    let follower = *p.replicas.iter().find(|r| **r != p.leader).unwrap();
    cluster.signal(follower, "STOP");
    cluster
        .wait_for("stalled follower out of the ISR", 20, |m| {
            !m.partition("faults", 0).unwrap().isr.contains(&follower)
        })
        .await;
    // The leader's admin endpoint shows the stalled follower's lag.
    let statuses = cluster.broker_http(p.leader, "/v1/partitions").await;
    let status = statuses
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["topic"] == "faults")
        .unwrap()
        .clone();
    assert_eq!(status["role"], "leader", "{status}");
    let lag = status["followers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["broker"] == follower)
        .unwrap()
        .clone();
    // Out of the ISR either by the leader's lag check or by the controller fencing the silent
    // broker (session and lag time are both 4 s here); either way the leader reports the gap.
    assert!(
        lag["caught_up_ms_ago"].as_i64().unwrap() > 1000
            && lag["lag_records"].as_i64().unwrap() > 0,
        "{lag}"
    );
    cluster.signal(follower, "CONT");
    cluster
        .wait_for("follower back in the ISR", 30, |m| {
            m.partition("faults", 0).unwrap().isr.contains(&follower)
        })
        .await;

    // The controller dies under load and comes back with the same state.
    let before = cluster.metadata().await;
    cluster.kill9_controller();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.start_controller();
    let after = cluster.metadata().await;
    assert_eq!(
        after.topics, before.topics,
        "controller state changed across a restart"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Two of three brokers down: the ISR falls below min.insync.replicas, acks=all is refused.
    let leader = cluster.leader_of("faults", 0).await;
    let impact = cluster.broker_http(leader, "/v1/if-stopped").await;
    assert_eq!(impact[0]["outcome"], "leader-moves", "{impact}");
    let others: Vec<i32> = (0..3).filter(|b| *b != leader).collect();
    for b in &others {
        cluster.kill9(*b);
    }
    cluster
        .wait_for("ISR below min.insync.replicas", 20, |m| {
            m.partition("faults", 0).unwrap().isr.len() < 2
        })
        .await;
    let impact = cluster.broker_http(leader, "/v1/if-stopped").await;
    assert_eq!(impact[0]["outcome"], "offline", "{impact}");
    let strict = producer(
        &cluster.bootstrap,
        &[
            ("acks", "all"),
            ("message.timeout.ms", "3000"),
            ("enable.idempotence", "false"),
        ],
    );
    let refused = strict
        .send(
            FutureRecord::to("faults").key("x").payload("refused"),
            Duration::from_secs(10),
        )
        .await;
    let err = refused
        .expect_err("a write below min.insync.replicas must not be acknowledged")
        .0
        .to_string();
    assert!(
        err.contains("replicas") || err.contains("timed out"),
        "unexpected error: {err}"
    );
    for b in &others {
        cluster.start_broker(*b);
    }
    cluster
        .wait_for("ISR healed", 30, |m| {
            m.partition("faults", 0).unwrap().isr.len() == 3
        })
        .await;
    let healed = strict
        .send(
            FutureRecord::to("faults").key("x").payload("healed"),
            Duration::from_secs(10),
        )
        .await;
    assert!(
        healed.is_ok(),
        "writes must succeed once the ISR is healed: {healed:?}"
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let (sent, acked, read) = load.finish(&cluster.bootstrap, "faults", &[0]).await;
    // The refused write never appears; the healed one does, once.
    let values: Vec<&str> = read.values().map(|(_, v)| v.as_str()).collect();
    assert!(
        !values.contains(&"refused"),
        "a refused write was stored and served"
    );
    assert_eq!(values.iter().filter(|v| **v == "healed").count(), 1);
    let line = format!(
        "stalled_follower_controller_loss_and_min_isr: sent {sent}, acknowledged {}, stored {}, violations 0",
        acked.len(),
        read.len()
    );
    eprintln!("{line}");
    record(&line);
}

/// The value of the record only the isolated leader ever receives.
const LONELY_VALUE: &str = "lonely-write-that-must-never-be-acknowledged";

/// A Produce request for one uncompressed record carrying [`LONELY_VALUE`], acks=all.
fn lonely_produce() -> kafka_protocol::messages::ProduceRequest {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    let mut record = vec![0u8]; // attributes
    let varint = |out: &mut Vec<u8>, v: i64| {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            out.push((z as u8) | 0x80);
            z >>= 7;
        }
        out.push(z as u8);
    };
    varint(&mut record, 0); // timestamp delta
    varint(&mut record, 0); // offset delta
    varint(&mut record, -1); // null key
    varint(&mut record, LONELY_VALUE.len() as i64);
    record.extend(LONELY_VALUE.as_bytes());
    varint(&mut record, 0); // no headers
    let mut records = Vec::new();
    varint(&mut records, record.len() as i64);
    records.extend(record);
    let now = broker::clock::now_ms();
    let mut b = Vec::new();
    b.extend(0i64.to_be_bytes());
    b.extend(0i32.to_be_bytes());
    b.extend((-1i32).to_be_bytes());
    b.push(2);
    b.extend(0u32.to_be_bytes());
    b.extend(0i16.to_be_bytes());
    b.extend(0i32.to_be_bytes()); // last offset delta
    b.extend(now.to_be_bytes());
    b.extend(now.to_be_bytes());
    b.extend((-1i64).to_be_bytes());
    b.extend((-1i16).to_be_bytes());
    b.extend((-1i32).to_be_bytes());
    b.extend(1i32.to_be_bytes());
    b.extend(records);
    let len = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    let mut pd = PartitionProduceData::default();
    pd.index = 0;
    pd.records = Some(bytes::Bytes::from(b));
    let mut td = TopicProduceData::default();
    td.name = kafka_protocol::messages::TopicName(
        kafka_protocol::protocol::StrBytes::from_static_str("split"),
    );
    td.partition_data = vec![pd];
    let mut r = kafka_protocol::messages::ProduceRequest::default();
    r.acks = -1;
    r.timeout_ms = 8000;
    r.topic_data = vec![td];
    r
}

/// A leader cut off from the controller and its followers (iptables on per-broker loopback
/// addresses) must not acknowledge what it cannot replicate: a client that can only reach it
/// gets no acknowledgement, the controller elects a new leader, the writers fail over, and
/// when the old leader returns it truncates what it alone had. Nothing acknowledged is lost;
/// the write only the isolated leader saw is never served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_acknowledges_nothing() {
    let _serial = SERIAL.lock().await;
    if std::env::var_os("STRAND_SKIP_ROOT_TESTS").is_some() {
        eprintln!("skipped: STRAND_SKIP_ROOT_TESTS is set");
        return;
    }
    let dir = test_dir();
    let base = base_port(4);
    let cluster = Cluster::up_with(dir.path(), base, 3, true);
    let ip = |b: i32| format!("127.0.1.{}", b + 1);
    cluster.create_topic("split", 1).await;
    let load = Load::start(&cluster.bootstrap, ACKS_ALL_IDEMPOTENT, "split");
    tokio::time::sleep(Duration::from_millis(2000)).await;

    let old = cluster.leader_of("split", 0).await;
    let others: Vec<String> = (0..3).filter(|b| *b != old).map(ip).collect();
    // One Produce request (acks=all) sent straight to the old leader over our own client:
    // no retries and no redirection, so any acknowledgement could only come from it.
    let old_addr = format!("{}:{}", ip(old), base + 10 + old as u16);
    let mut direct = broker::replication::client::Connection::connect(&old_addr, "lonely")
        .await
        .unwrap();
    let cut = Isolation::cut(&ip(old), &others, base);
    let answer =
        tokio::time::timeout(Duration::from_secs(12), direct.send(&lonely_produce(), 9)).await;
    match &answer {
        Ok(Ok(resp)) => eprintln!(
            "isolated leader answered error {}",
            resp.responses[0].partition_responses[0].error_code
        ),
        Ok(Err(e)) => eprintln!("isolated leader connection failed: {e}"),
        Err(_) => eprintln!("isolated leader did not answer within 12 s"),
    }
    if let Ok(Ok(resp)) = &answer {
        let code = resp.responses[0].partition_responses[0].error_code;
        assert_ne!(
            code, 0,
            "the isolated leader acknowledged a write it could not replicate: {resp:?}"
        );
    }
    cluster
        .wait_for("a new leader", 20, |m| {
            let p = m.partition("split", 0).unwrap();
            p.leader >= 0 && p.leader != old
        })
        .await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    drop(cut);
    cluster
        .wait_for("the old leader back in the ISR", 40, |m| {
            m.partition("split", 0).unwrap().isr.len() == 3
        })
        .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let (sent, acked, read) = load.finish(&cluster.bootstrap, "split", &[0]).await;
    assert!(
        !read.values().any(|(_, v)| *v == LONELY_VALUE),
        "a write only the isolated leader had is served"
    );
    // The old leader's copy converged to the same log as the others.
    let statuses = cluster.broker_http(old, "/v1/partitions").await;
    // Other partitions (e.g. __consumer_offsets) may be listed first.
    let leo = statuses
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["topic"] == "split" && s["partition"] == 0)
        .unwrap_or_else(|| panic!("split-0 not hosted by broker {old}: {statuses}"))["log_end_offset"]
        .as_i64()
        .unwrap();
    assert_eq!(
        leo,
        read.keys().map(|(_, o)| o + 1).max().unwrap_or(0),
        "old leader's log end differs"
    );
    let line = format!(
        "isolated_leader: sent {sent}, acknowledged {}, stored {}, violations 0",
        acked.len(),
        read.len()
    );
    eprintln!("{line}");
    record(&line);
}

/// A consumer group on a 3-broker cluster: a member reads part of a topic and commits; the
/// broker coordinating the group (the leader of its `__consumer_offsets` partition) is killed
/// with SIGKILL; a new member of the group, served by the new coordinator, starts exactly at
/// the committed offsets, and between them the two members read every record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_survive_killing_the_group_coordinator() {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::message::Message;
    use std::collections::BTreeMap;

    let _serial = SERIAL.lock().await;
    let dir = test_dir();
    let base = base_port(5);
    let cluster = Cluster::up(dir.path(), base, 3);
    cluster.create_topic("orders", 4).await;
    let p = producer(&cluster.bootstrap, ACKS_ALL_IDEMPOTENT);
    let acked = common::kafka::produce(&p, "orders", "o", 400).await;
    let group = "survivors";
    let member = move |bootstrap: &str| -> BaseConsumer {
        ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .create()
            .unwrap()
    };
    // First member: read about half, commit its positions, leave.
    let bs = cluster.bootstrap.clone();
    let (first, committed) = tokio::task::spawn_blocking(move || {
        let c = member(&bs);
        c.subscribe(&["orders"]).unwrap();
        let mut read = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while read.len() < 200 {
            assert!(std::time::Instant::now() < deadline, "first member stalled");
            if let Some(m) = c.poll(Duration::from_millis(200)) {
                // Transport errors (the killed broker) are reported here; the client recovers.
                let Ok(m) = m else { continue };
                read.insert((m.partition(), m.offset()), ());
            }
        }
        c.commit_consumer_state(CommitMode::Sync).unwrap();
        let committed: BTreeMap<i32, i64> = c
            .position()
            .unwrap()
            .elements()
            .iter()
            .filter_map(|e| e.offset().to_raw().map(|o| (e.partition(), o)))
            .filter(|(_, o)| *o >= 0)
            .collect();
        (read, committed)
    })
    .await
    .unwrap();
    // Kill the coordinator: the leader of the group's offsets partition.
    let offsets_partition = broker::group::partition_for(group, 3) as i32;
    let victim = cluster
        .leader_of(broker::group::OFFSETS_TOPIC, offsets_partition)
        .await;
    assert!(victim >= 0, "no coordinator");
    eprintln!(
        "kill -9 broker {victim}, coordinator of {group} (offsets partition {offsets_partition}); committed {committed:?}"
    );
    cluster.kill9(victim);
    cluster
        .wait_for("a new coordinator", 30, |m| {
            m.partition(broker::group::OFFSETS_TOPIC, offsets_partition)
                .is_some_and(|p| p.leader >= 0 && p.leader != victim)
        })
        .await;
    // Second member: resumes at the commits and reads the rest.
    let bs = cluster.bootstrap.clone();
    let remaining = acked.len() - committed.values().map(|o| *o as usize).sum::<usize>();
    let (second, firsts) = tokio::task::spawn_blocking(move || {
        let c = member(&bs);
        c.subscribe(&["orders"]).unwrap();
        let mut read: BTreeMap<(i32, i64), ()> = BTreeMap::new();
        let mut firsts: BTreeMap<i32, i64> = BTreeMap::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        while read.len() < remaining {
            assert!(
                std::time::Instant::now() < deadline,
                "second member read {} of {remaining}",
                read.len()
            );
            if let Some(m) = c.poll(Duration::from_millis(200)) {
                // Transport errors (the killed broker) are reported here; the client recovers.
                let Ok(m) = m else { continue };
                firsts.entry(m.partition()).or_insert(m.offset());
                read.insert((m.partition(), m.offset()), ());
            }
        }
        (read, firsts)
    })
    .await
    .unwrap();
    for (p, first_offset) in &firsts {
        assert_eq!(
            *first_offset,
            committed.get(p).copied().unwrap_or(0),
            "partition {p}: the new member must start at the committed offset"
        );
    }
    for at in acked.keys() {
        assert!(
            first.contains_key(at) || second.contains_key(at),
            "record at {at:?} never read"
        );
    }
    let line = format!(
        "group_coordinator_kill: killed broker {victim}; first member read {}, second {} starting at {firsts:?}; none lost, none skipped",
        first.len(),
        second.len(),
    );
    eprintln!("{line}");
    record(&line);
}

/// `__consumer_offsets` is never created with fewer replicas than
/// --offsets-topic-replication-factor (default 3): with one broker alive, FindCoordinator
/// answers COORDINATOR_NOT_AVAILABLE and the topic does not exist; once three brokers are
/// alive it is created with three replicas per partition and a coordinator is found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_offsets_topic_waits_for_its_replication_factor() {
    use broker::replication::client::Connection;
    use kafka_protocol::messages::FindCoordinatorRequest;
    use kafka_protocol::protocol::StrBytes;

    let _serial = SERIAL.lock().await;
    let dir = test_dir();
    let base = base_port(6);
    let cluster = Cluster::up(dir.path(), base, 1);
    let mut c = Connection::connect(&cluster.bootstrap, "raw-client")
        .await
        .unwrap();
    let find = FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("early"));
    let not_available = kafka_protocol::error::ResponseError::CoordinatorNotAvailable.code();
    for _ in 0..10 {
        let r = c.send(&find, 3).await.unwrap();
        assert_eq!(r.error_code, not_available, "{r:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        !cluster
            .metadata()
            .await
            .topics
            .contains_key(broker::group::OFFSETS_TOPIC),
        "created with too few replicas"
    );

    cluster.start_broker(1);
    cluster.start_broker(2);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = c.send(&find, 3).await.unwrap();
        if r.error_code == 0 {
            break;
        }
        assert_eq!(r.error_code, not_available, "{r:?}");
        assert!(
            std::time::Instant::now() < deadline,
            "no coordinator with three brokers: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let m = cluster.metadata().await;
    let topic = &m.topics[broker::group::OFFSETS_TOPIC];
    assert_eq!(topic.partitions.len(), 3);
    assert!(
        topic.partitions.iter().all(|p| p.replicas.len() == 3),
        "{topic:#?}"
    );
}

/// What a forged-fetch attack achieved.
struct Forgery {
    /// acks=all writes acknowledged while both followers were stopped (of 20).
    acked: usize,
    /// Fetch requests sent claiming a follower's id.
    sent: u32,
    /// Partitions answered TOPIC_AUTHORIZATION_FAILED.
    refused: u32,
}

/// The hostile-clients issue's forged follower fetch, on real processes: one write is
/// acknowledged normally (so a real follower fetched), then both followers of `topic`-0 are
/// stopped and an ordinary client keeps sending Fetch requests claiming to come from them, at
/// each offset of `offsets` in turn, every 20 ms, while 20 acks=all writes are made
/// (min.insync.replicas 2). Every write that is acknowledged is held by the leader alone.
async fn forged_fetch_attack(cluster: &Cluster, topic: &'static str, offsets: Vec<i64>) -> Forgery {
    use broker::protocol::frames::consumer_fetch;
    use broker::replication::client::Connection;

    cluster.create_topic(topic, 1).await;
    cluster
        .wait_for("a full ISR", 30, |m| {
            m.partition(topic, 0).is_some_and(|p| p.isr.len() == 3)
        })
        .await;
    let strict = producer(
        &cluster.bootstrap,
        &[
            ("acks", "all"),
            ("message.timeout.ms", "3000"),
            ("enable.idempotence", "false"),
        ],
    );
    let before = strict
        .send(
            FutureRecord::to(topic).key("k").payload("before"),
            Duration::from_secs(10),
        )
        .await;
    assert!(
        before.is_ok(),
        "a write with the followers running: {before:?}"
    );

    let m = cluster.metadata().await;
    let p = m.partition(topic, 0).unwrap().clone();
    let leader = &m.brokers[&p.leader];
    let followers: Vec<i32> = p
        .replicas
        .iter()
        .copied()
        .filter(|r| *r != p.leader)
        .collect();
    for f in &followers {
        cluster.signal(*f, "STOP");
    }
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let addr = format!("{}:{}", leader.host, leader.port);
    let (forged_followers, epoch) = (followers.clone(), p.leader_epoch);
    let forger = tokio::spawn(async move {
        let mut conn = Connection::connect(&addr, "forger").await.unwrap();
        let (mut sent, mut refused) = (0u32, 0u32);
        loop {
            for replica in &forged_followers {
                for offset in &offsets {
                    // A consumer's Fetch, claiming to come from a follower.
                    let mut r = consumer_fetch(topic, 0, *offset, 0, 0, 1 << 20, "");
                    r.replica_id = (*replica).into();
                    let fp = &mut r.topics[0].partitions[0];
                    fp.current_leader_epoch = epoch;
                    fp.last_fetched_epoch = epoch;
                    let resp = conn.send(&r, 12).await.unwrap();
                    sent += 1;
                    refused += resp
                        .responses
                        .iter()
                        .flat_map(|t| &t.partitions)
                        .filter(|p| {
                            p.error_code
                                == kafka_protocol::error::ResponseError::TopicAuthorizationFailed
                                    .code()
                        })
                        .count() as u32;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                _ = stopped.changed() => return (sent, refused),
            }
        }
    });
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..20 {
        let strict = strict.clone();
        sends.spawn(async move {
            let value = format!("forged-{i}");
            strict
                .send(
                    FutureRecord::to(topic).key("k").payload(&value),
                    Duration::from_secs(10),
                )
                .await
                .is_ok()
        });
    }
    let acked = sends.join_all().await.into_iter().filter(|ok| *ok).count();
    let _ = stop.send(true);
    let (sent, refused) = forger.await.unwrap();
    for f in &followers {
        cluster.signal(*f, "CONT");
    }
    eprintln!(
        "{topic}: forged follower fetches {sent} ({refused} refused), acks=all writes acknowledged: {acked} of 20"
    );
    assert!(sent > 20, "the forger ran ({sent} fetches)");
    Forgery {
        acked,
        sent,
        refused,
    }
}

/// A forged fetch at an offset far past the log end counts for nothing, secret or not (before
/// the fix 20 of 20 writes were acknowledged, and a kill of the leader then lost them all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_follower_fetch_acknowledges_nothing() {
    let _serial = SERIAL.lock().await;
    let dir = test_dir();
    let cluster = Cluster::up(dir.path(), base_port(7), 3);
    let f = forged_fetch_attack(&cluster, "forged", vec![1 << 62]).await;
    assert_eq!(
        f.acked, 0,
        "writes held by the leader alone were acknowledged on forged follower fetches"
    );
}

/// A forged fetch at offsets the leader does hold: without a cluster secret nothing tells it
/// from the follower's own, and the leader acknowledges writes no follower has (the attack
/// this test makes is real: it is run once that way and must succeed). With a secret, only a
/// connection authenticated as a broker may fetch as a replica: every forged fetch is refused
/// and nothing is acknowledged, while the real followers (authenticated) keep replicating.
/// The controller refuses calls without its token, and shows broker epochs only with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_authenticated_brokers_fetch_as_replicas() {
    let _serial = SERIAL.lock().await;
    // Offsets up to the log end after all 21 writes: the highest one the leader holds counts.
    let held: Vec<i64> = (1..=21).collect();

    let dir = test_dir();
    let open = Cluster::up(dir.path(), base_port(9), 3);
    let f = forged_fetch_attack(&open, "open", held.clone()).await;
    assert!(
        f.acked > 0,
        "without a secret the forged fetches should get writes acknowledged (else this test \
         proves nothing): {} sent",
        f.sent
    );
    drop(open);

    let dir = test_dir();
    let secured = Cluster::up_secured(dir.path(), base_port(9), 3);
    let f = forged_fetch_attack(&secured, "secured", held).await;
    assert_eq!(f.refused, f.sent, "every forged fetch is refused");
    assert_eq!(
        f.acked, 0,
        "writes held by the leader alone were acknowledged on forged follower fetches"
    );

    // The controller: health is open, everything else needs the token.
    let http = reqwest::Client::new();
    let url = |path: &str| format!("http://127.0.0.1:{}{path}", secured.base);
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(status(http.get(url("/healthz")).send().await.unwrap()), 200);
    assert_eq!(
        status(http.get(url("/v1/metadata")).send().await.unwrap()),
        401
    );
    let forged_isr = serde_json::json!({
        "broker": 0, "broker_epoch": 1, "topic": "secured", "partition": 0,
        "leader_epoch": 0, "partition_epoch": 0, "isr": [0, 1, 2]
    });
    for (path, body) in [
        ("/v1/alter-partition", forged_isr),
        ("/v1/admin/brokers/0/drain", serde_json::json!({})),
    ] {
        let r = http.post(url(path)).json(&body).send().await.unwrap();
        assert_eq!(status(r), 401, "{path} without the token");
        let r = http
            .post(url(path))
            .bearer_auth("0123456789abcdef")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(status(r), 401, "{path} with a wrong token");
    }
    // Describe is open, but broker epochs are for brokers: hidden without the token.
    let epochs = |d: serde_json::Value| -> Vec<i64> {
        d["metadata"]["brokers"]
            .as_object()
            .map(|b| b.values().filter_map(|b| b["epoch"].as_i64()).collect())
            .unwrap_or_default()
    };
    let anonymous = http.get(url("/v1/admin/describe")).send().await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 200);
    assert_eq!(epochs(anonymous.json().await.unwrap()), [-1, -1, -1]);
    let trusted = secured
        .controller(reqwest::Method::GET, "/v1/admin/describe")
        .send()
        .await
        .unwrap();
    let trusted = epochs(trusted.json().await.unwrap());
    assert!(
        trusted.len() == 3 && trusted.iter().all(|e| *e > 0),
        "{trusted:?}"
    );
    // The followers came back and rejoined the ISR by authenticated fetches.
    secured
        .wait_for("the ISR whole again", 30, |m| {
            m.partition("secured", 0).is_some_and(|p| p.isr.len() == 3)
        })
        .await;
}

/// The crash fast path: with a 60 s session timeout, a broker killed -9 is fenced (and its
/// partitions led elsewhere) long before its session could expire, because its metadata watch
/// closed and was not reopened; a broker stopped with SIGSTOP keeps its connections open and
/// is left alone. Before the fast path, the killed broker stayed alive for the whole 60 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_broker_is_fenced_without_waiting_for_its_session() {
    use broker::metadata::BrokerStatus;
    let _serial = SERIAL.lock().await;
    let dir = test_dir();
    let c = Cluster::up_full(
        dir.path(),
        base_port(8),
        3,
        false,
        "--session-timeout-ms 60000 --crash-fence-grace-ms 300",
    );
    c.create_topic("fast-path", 6).await;
    c.wait_for("every partition led", 60, |m| {
        (0..6).all(|p| m.partition("fast-path", p).is_some_and(|p| p.leader >= 0))
    })
    .await;
    let status =
        |m: &broker::metadata::ClusterMetadata, b: i32| m.brokers.get(&b).map(|b| b.status);

    c.signal(1, "STOP");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let m = c.metadata().await;
    assert_eq!(
        status(&m, 1),
        Some(BrokerStatus::Alive),
        "a stopped broker was fenced"
    );

    c.kill9(2);
    c.wait_for(
        "the killed broker fenced and its partitions led elsewhere",
        20,
        |m| {
            status(m, 2) == Some(BrokerStatus::Fenced)
                && (0..6).all(|p| m.partition("fast-path", p).is_some_and(|p| p.leader != 2))
        },
    )
    .await;
    let m = c.metadata().await;
    assert_eq!(
        status(&m, 1),
        Some(BrokerStatus::Alive),
        "a stopped broker was fenced"
    );
    assert_eq!(
        status(&m, 0),
        Some(BrokerStatus::Alive),
        "a healthy broker was fenced"
    );
    c.signal(1, "CONT");
    record("fast path: broker 2 killed -9 (fenced), broker 1 SIGSTOPped (left alone)");
}

/// A broker told to stop (SIGTERM) while no controller answers keeps serving and asking for
/// its controlled shutdown, and leaves only once a controller has moved its leaderships. On
/// Kubernetes a node drain can stop a broker and the operator's leader together; a broker that
/// gave up at once left its partitions leaderless until the next controller fenced it, a
/// whole session timeout after taking over (a 16.9 s gap in the kind drain scenario).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_broker_waits_for_a_controller_to_move_its_leaderships() {
    let _serial = SERIAL.lock().await;
    let dir = test_dir();
    // A long session and no crash fast path: only a controlled shutdown moves leaders here.
    let controller_args = "--session-timeout-ms 60000 --crash-fence-grace-ms 0";
    let c = Cluster::up_full(dir.path(), base_port(8), 3, false, controller_args);
    c.create_topic("stopping", 6).await;
    c.wait_for("every partition led", 60, |m| {
        (0..6).all(|p| m.partition("stopping", p).is_some_and(|p| p.leader >= 0))
    })
    .await;
    let victim = c.leader_of("stopping", 0).await;

    c.kill9_controller();
    c.signal(victim, "TERM");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        c.is_running(victim),
        "broker {victim} stopped without a controller to move its leaderships"
    );
    c.start_controller_with(controller_args);
    c.wait_for("every leadership moved off the stopping broker", 20, |m| {
        (0..6).all(|p| {
            m.partition("stopping", p)
                .is_some_and(|p| p.leader >= 0 && p.leader != victim)
        })
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while c.is_running(victim) {
        assert!(
            Instant::now() < deadline,
            "broker {victim} did not stop after its controlled shutdown"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A second SIGTERM ends the wait: with the controller gone again, another broker asked
    // twice stops without its controlled shutdown.
    let other = (0..3).find(|b| *b != victim).unwrap();
    c.kill9_controller();
    c.signal(other, "TERM");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        c.is_running(other),
        "broker {other} stopped without a controller"
    );
    c.signal(other, "TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.is_running(other) {
        assert!(
            Instant::now() < deadline,
            "broker {other} did not stop on a second SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    record(
        "controlled shutdown: waited out a controller restart, then moved every leadership; a second SIGTERM stops at once",
    );
}

/// Kafka's admin APIs change a running cluster under an acks=all load and lose nothing:
/// CreatePartitions grows the topic (through librdkafka's admin client), a partition is
/// reassigned onto another broker (AlterPartitionReassignments, listed by
/// ListPartitionReassignments until it completes), ElectLeaders moves leadership back to the
/// preferred replicas, and a config change reaches the live leaders at once: with
/// min.insync.replicas raised above the replication factor (AlterConfigs, librdkafka) acks=all
/// writes are refused, and taken again once it is removed (IncrementalAlterConfigs DELETE).
/// Before these APIs every such call failed as unsupported; before live reconfiguration a
/// changed min.insync.replicas took effect only when a broker restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_admin_apis_change_a_running_cluster_and_lose_nothing() {
    use broker::replication::client::Connection;
    use kafka_protocol::error::ResponseError;
    use kafka_protocol::messages::alter_partition_reassignments_request::{
        ReassignablePartition, ReassignableTopic,
    };
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    use kafka_protocol::messages::{
        AlterPartitionReassignmentsRequest, DescribeClusterRequest, DescribeConfigsRequest,
        ElectLeadersRequest, IncrementalAlterConfigsRequest, ListPartitionReassignmentsRequest,
        TopicName,
    };
    use kafka_protocol::protocol::StrBytes;
    use rdkafka::admin::{AlterConfig, NewPartitions, ResourceSpecifier};

    let _serial = SERIAL.lock().await;
    let dir = test_dir();
    let cluster = Cluster::up(dir.path(), base_port(7), 3);
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &cluster.bootstrap)
        .create()
        .unwrap();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)));
    let topics = [
        NewTopic::new("grown", 2, TopicReplication::Fixed(2)).set("min.insync.replicas", "2"),
        NewTopic::new("strict", 1, TopicReplication::Fixed(2)),
    ];
    let res = admin.create_topics(&topics, &opts).await.unwrap();
    assert!(res.iter().all(Result::is_ok), "{res:?}");
    cluster
        .wait_for("both topics led", 30, |m| {
            m.partition("grown", 1).is_some_and(|p| p.leader >= 0)
                && m.partition("strict", 0).is_some_and(|p| p.leader >= 0)
        })
        .await;
    let first = cluster.bootstrap.split(',').next().unwrap().to_string();
    let mut conn = Connection::connect(&first, "admin-test").await.unwrap();
    let sb = |s: &str| StrBytes::from_string(s.to_string());

    let r = conn
        .send(&DescribeClusterRequest::default().with_endpoint_type(1), 1)
        .await
        .unwrap();
    assert_eq!((r.error_code, r.brokers.len()), (0, 3), "{r:?}");

    let load = Load::start(&cluster.bootstrap, ACKS_ALL_IDEMPOTENT, "grown");
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Grow to 4 partitions; the new ones are led and the load writes to them.
    let res = admin
        .create_partitions([&NewPartitions::new("grown", 4)], &opts)
        .await
        .unwrap();
    assert!(res[0].is_ok(), "{res:?}");
    cluster
        .wait_for("four partitions led", 30, |m| {
            (0..4).all(|p| m.partition("grown", p).is_some_and(|p| p.leader >= 0))
        })
        .await;
    let res = admin
        .create_partitions([&NewPartitions::new("grown", 3)], &opts)
        .await
        .unwrap();
    assert!(
        matches!(
            &res[0],
            Err((_, rdkafka::types::RDKafkaErrorCode::InvalidPartitions))
        ),
        "shrinking: {res:?}"
    );

    // The client's own replica choice, for a new topic and for new partitions.
    let placed = NewTopic::new("placed", 2, TopicReplication::Variable(&[&[2, 0], &[1, 2]]));
    let res = admin.create_topics([&placed], &opts).await.unwrap();
    assert!(res[0].is_ok(), "{res:?}");
    let grow = NewPartitions::new("placed", 3).assign(&[&[0, 1]]);
    let res = admin.create_partitions([&grow], &opts).await.unwrap();
    assert!(res[0].is_ok(), "{res:?}");
    let bad = NewPartitions::new("placed", 4).assign(&[&[0, 99]]);
    let res = admin.create_partitions([&bad], &opts).await.unwrap();
    assert!(
        matches!(
            &res[0],
            Err((
                _,
                rdkafka::types::RDKafkaErrorCode::InvalidReplicaAssignment
            ))
        ),
        "onto an unknown broker: {res:?}"
    );
    let m = cluster.metadata().await;
    let replicas: Vec<Vec<i32>> = (0..3)
        .map(|p| m.partition("placed", p).unwrap().replicas.clone())
        .collect();
    assert_eq!(replicas, [vec![2, 0], vec![1, 2], vec![0, 1]]);
    assert!(m.partition("placed", 3).is_none());

    // Move partition 0 to the broker that holds no replica of it, keeping its first replica.
    let before = cluster.metadata().await;
    let p0 = before.partition("grown", 0).unwrap().replicas.clone();
    let outsider = (0..3).find(|b| !p0.contains(b)).unwrap();
    let target = vec![outsider, p0[0]];
    let reassign = |replicas: Option<Vec<i32>>| {
        AlterPartitionReassignmentsRequest::default()
            .with_timeout_ms(20_000)
            .with_topics(vec![
                ReassignableTopic::default()
                    .with_name(TopicName(sb("grown")))
                    .with_partitions(vec![
                        ReassignablePartition::default()
                            .with_partition_index(0)
                            .with_replicas(
                                replicas.map(|r| r.into_iter().map(Into::into).collect()),
                            ),
                    ]),
            ])
    };
    let r = conn.send(&reassign(Some(vec![0, 99])), 0).await.unwrap();
    assert_eq!(
        r.responses[0].partitions[0].error_code,
        ResponseError::InvalidReplicaAssignment.code(),
        "{r:?}"
    );
    let r = conn.send(&reassign(Some(target.clone())), 0).await.unwrap();
    assert_eq!(r.responses[0].partitions[0].error_code, 0, "{r:?}");
    cluster
        .wait_for("the reassignment done", 60, |m| {
            m.partition("grown", 0)
                .is_some_and(|p| p.replicas == target && p.adding.is_empty())
        })
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let list = conn
            .send(&ListPartitionReassignmentsRequest::default(), 0)
            .await
            .unwrap();
        if list.topics.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still listed: {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = conn.send(&reassign(None), 0).await.unwrap();
    assert_eq!(
        r.responses[0].partitions[0].error_code,
        ResponseError::NoReassignmentInProgress.code(),
        "cancel after completion: {r:?}"
    );

    // Preferred leaders everywhere.
    let r = conn
        .send(
            &ElectLeadersRequest::default()
                .with_timeout_ms(20_000)
                .with_topic_partitions(None),
            1,
        )
        .await
        .unwrap();
    assert_eq!(r.error_code, 0, "{r:?}");
    cluster
        .wait_for("preferred leaders", 30, |m| {
            (0..4).all(|p| {
                m.partition("grown", p)
                    .is_some_and(|p| p.leader == p.replicas[0])
            })
        })
        .await;

    // min.insync.replicas 3 on a topic of 2 replicas: acks=all refused at once.
    let strict = producer(
        &cluster.bootstrap,
        &[("acks", "all"), ("message.timeout.ms", "3000")],
    );
    let send = |v: &'static str| {
        strict.send(
            FutureRecord::<(), str>::to("strict").payload(v),
            Duration::from_secs(5),
        )
    };
    assert!(send("before").await.is_ok());
    let alter =
        AlterConfig::new(ResourceSpecifier::Topic("strict")).set("min.insync.replicas", "3");
    let res = admin.alter_configs([&alter], &opts).await.unwrap();
    assert!(res[0].is_ok(), "{res:?}");
    // The controller has it; brokers apply metadata on their own time (as in Kafka), so wait
    // until the leader describes the new value before writing.
    let leader = cluster.leader_of("strict", 0).await;
    let mut on_leader = Connection::connect(
        &format!("127.0.0.1:{}", cluster.base + 10 + leader as u16),
        "admin-test",
    )
    .await
    .unwrap();
    let describe = DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(sb("strict"))
            .with_configuration_keys(Some(vec![sb("min.insync.replicas")])),
    ]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = on_leader.send(&describe, 4).await.unwrap();
        if r.results[0]
            .configs
            .first()
            .and_then(|c| c.value.as_deref())
            == Some("3")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the leader never took it: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused = send("refused").await;
    assert!(
        refused.is_err(),
        "acks=all with 2 in-sync replicas and min.insync.replicas 3: {refused:?}"
    );
    let delete = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(sb("strict"))
            .with_configs(vec![
                AlterableConfig::default()
                    .with_name(sb("min.insync.replicas"))
                    .with_config_operation(1),
            ]),
    ]);
    let r = conn.send(&delete, 1).await.unwrap();
    assert_eq!(r.responses[0].error_code, 0, "{r:?}");
    assert!(send("after").await.is_ok());

    let (sent, acked, _) = load
        .finish(&cluster.bootstrap, "grown", &[0, 1, 2, 3])
        .await;
    let on_new = acked.keys().filter(|(p, _)| *p >= 2).count();
    assert!(on_new > 0, "no acknowledged write on the new partitions");
    eprintln!(
        "admin under load: {sent} sent, {} acknowledged ({on_new} on the new partitions), all read back",
        acked.len()
    );

    // Client quotas: altered through one broker, kept by the controller, enforced by the
    // broker that leads the partition a client writes to.
    {
        use kafka_protocol::messages::alter_client_quotas_request::{
            EntityData, EntryData, OpData,
        };
        use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
        use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
        use kafka_protocol::messages::{
            AlterClientQuotasRequest, DescribeClientQuotasRequest, ProduceRequest,
        };
        let alter = AlterClientQuotasRequest::default().with_entries(vec![
            EntryData::default()
                .with_entity(vec![
                    EntityData::default()
                        .with_entity_type(sb("client-id"))
                        .with_entity_name(Some(sb("quota-probe"))),
                ])
                .with_ops(vec![
                    OpData::default()
                        .with_key(sb("producer_byte_rate"))
                        .with_value(10240.0),
                ]),
        ]);
        let r = conn.send(&alter, 1).await.unwrap();
        assert_eq!(r.entries[0].error_code, 0, "{r:?}");
        let leader = cluster.leader_of("strict", 0).await;
        let at = format!("127.0.0.1:{}", cluster.base + 10 + leader as u16);
        let describe = DescribeClientQuotasRequest::default().with_components(vec![
            ComponentData::default()
                .with_entity_type(sb("client-id"))
                .with_match_type(0)
                .with_match(Some(sb("quota-probe"))),
        ]);
        let mut on_leader = Connection::connect(&at, "quota-probe").await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let r = on_leader.send(&describe, 1).await.unwrap();
            let entries = r.entries.unwrap_or_default();
            if entries.len() == 1 {
                assert_eq!(entries[0].values[0].value, 10240.0);
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the leader never had the quota"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // One 64 KiB record per request: the second is over 10 KiB/s across the window.
        let batch = bytes::Bytes::from(broker::protocol::batch::test_support::batch(
            1,
            0,
            (-1, -1, -1),
            64 * 1024,
        ));
        let produce = ProduceRequest::default()
            .with_acks(1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(sb("strict")))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(batch)),
                    ]),
            ]);
        let throttles: Vec<i32> = {
            let mut t = Vec::new();
            for _ in 0..2 {
                let r = on_leader.send(&produce, 8).await.unwrap();
                let p = &r.responses[0].partition_responses[0];
                assert_eq!(p.error_code, 0, "{r:?}");
                t.push(r.throttle_time_ms);
            }
            t
        };
        assert!(throttles[0] == 0 && throttles[1] > 1000, "{throttles:?}");
    }

    // DeleteRecords on partition 1's leader: answered once its followers have the new log
    // start, which so outlives the leader (killed -9 at once): the new leader starts there.
    use kafka_protocol::messages::DeleteRecordsRequest;
    use kafka_protocol::messages::ListOffsetsRequest;
    use kafka_protocol::messages::delete_records_request::{
        DeleteRecordsPartition, DeleteRecordsTopic,
    };
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    let address = |id: i32| format!("127.0.0.1:{}", cluster.base + 10 + id as u16);
    let leader = cluster.leader_of("grown", 1).await;
    let mut on_leader = Connection::connect(&address(leader), "admin-test")
        .await
        .unwrap();
    let cut = acked.keys().filter(|(p, _)| *p == 1).count() as i64 / 2;
    assert!(cut > 0, "no records on partition 1");
    let delete = DeleteRecordsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![
            DeleteRecordsTopic::default()
                .with_name(TopicName(sb("grown")))
                .with_partitions(vec![
                    DeleteRecordsPartition::default()
                        .with_partition_index(1)
                        .with_offset(cut),
                ]),
        ]);
    let r = on_leader.send(&delete, 2).await.unwrap();
    let p = &r.topics[0].partitions[0];
    assert_eq!((p.error_code, p.low_watermark), (0, cut), "{r:?}");
    let replicas = cluster
        .metadata()
        .await
        .partition("grown", 1)
        .unwrap()
        .replicas
        .clone();
    // Answered once every in-sync replica's start reached the cut (Kafka's low watermark):
    // the followers hold it already.
    for b in replicas.iter().filter(|b| **b != leader) {
        let status = cluster.broker_http(*b, "/v1/partitions").await;
        let start = status
            .as_array()
            .and_then(|ps| {
                ps.iter()
                    .find(|p| p["topic"] == "grown" && p["partition"] == 1)
            })
            .and_then(|p| p["log_start_offset"].as_i64());
        assert_eq!(
            start,
            Some(cut),
            "follower {b}'s log start after the answer"
        );
    }
    cluster.kill9(leader);
    cluster
        .wait_for("partition 1 led by another broker", 30, |m| {
            m.partition("grown", 1)
                .is_some_and(|p| p.leader >= 0 && p.leader != leader)
        })
        .await;
    let earliest = ListOffsetsRequest::default()
        .with_replica_id((-1).into())
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(TopicName(sb("grown")))
                .with_partitions(vec![
                    ListOffsetsPartition::default()
                        .with_partition_index(1)
                        .with_timestamp(-2),
                ]),
        ]);
    let new_leader = cluster.leader_of("grown", 1).await;
    let mut on_new_leader = Connection::connect(&address(new_leader), "admin-test")
        .await
        .unwrap();
    let r = on_new_leader.send(&earliest, 1).await.unwrap();
    assert_eq!(
        r.topics[0].partitions[0].offset, cut,
        "the new leader's earliest offset: {r:?}"
    );
}

/// DescribeTopicPartitions shows, from every broker and three partitions at a time, exactly
/// what that broker's Metadata shows (replicas, ISR, leaders, and a killed broker as an
/// offline replica); DescribeProducers lists an idempotent producer on the leader and on the
/// followers (as Kafka), NOT_LEADER_OR_FOLLOWER on a broker without a replica, and the same
/// producer on the new leader after the old one is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_apis_show_metadatas_view_and_producers_on_every_replica() {
    use broker::replication::client::Connection;
    use common::describe::{PartitionView, metadata, producers, walk};
    use kafka_protocol::error::ResponseError;

    let _serial = SERIAL.lock().await;
    let dir = test_dir();
    let cluster = Cluster::up(dir.path(), base_port(8), 3);
    cluster.create_topic("described", 7).await;
    cluster.create_topic("idem", 1).await;
    cluster
        .wait_for("every partition led with 3 in sync", 30, |m| {
            m.partitions()
                .all(|(_, p)| p.leader >= 0 && p.isr.len() == 3)
                && m.topics.contains_key("idem")
                && m.topics.contains_key("described")
        })
        .await;
    let address = |id: i32| format!("127.0.0.1:{}", cluster.base + 10 + id as u16);
    let connect = |id: i32| {
        let a = address(id);
        async move { Connection::connect(&a, "describe-test").await.unwrap() }
    };
    // Both views of one broker agree (retried: an ISR change may land between the two).
    async fn agree(conn: &mut Connection, topics: &[&str]) -> Vec<PartitionView> {
        let mut last = None;
        for _ in 0..50 {
            let paged = walk(conn, topics, 3).await.partitions;
            let want = metadata(conn, topics).await;
            if paged == want {
                return want;
            }
            last = Some((paged, want));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("DescribeTopicPartitions and Metadata disagree: {last:#?}");
    }
    for b in 0..3 {
        let mut conn = connect(b).await;
        let view = agree(&mut conn, &[]).await;
        assert!(
            view.iter()
                .filter(|p| p.topic == "described")
                .all(|p| p.replicas.len() == 3 && p.isr.len() == 3 && p.offline.is_empty()),
            "{view:#?}"
        );
        assert_eq!(view.iter().filter(|p| p.topic == "described").count(), 7);
    }

    let p = producer(&cluster.bootstrap, ACKS_ALL_IDEMPOTENT);
    for i in 0..20 {
        let key = format!("k{i}");
        p.send(
            FutureRecord::to("idem").key(&key).payload("v"),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    }
    drop(p);
    let leader = cluster.leader_of("idem", 0).await;
    let listed = producers(&mut connect(leader).await, "idem", 0)
        .await
        .unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!((listed[0].1, listed[0].2), (0, 19), "{listed:?}");
    // Followers have the producer from the batches they replicated (acks=all: they hold them).
    for b in (0..3).filter(|b| *b != leader) {
        assert_eq!(
            producers(&mut connect(b).await, "idem", 0).await,
            Ok(listed.clone()),
            "follower {b}"
        );
    }
    // A broker without a replica of the partition.
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &cluster.bootstrap)
        .create()
        .unwrap();
    let single = NewTopic::new("single", 1, TopicReplication::Fixed(1));
    let res = admin
        .create_topics([&single], &AdminOptions::new())
        .await
        .unwrap();
    assert!(res[0].is_ok(), "{res:?}");
    cluster
        .wait_for("single led", 30, |m| {
            m.partition("single", 0).is_some_and(|p| p.leader >= 0)
        })
        .await;
    let holder = cluster.leader_of("single", 0).await;
    let not_leader = ResponseError::NotLeaderOrFollower.code();
    for b in (0..3).filter(|b| *b != holder) {
        let mut conn = connect(b).await;
        // Each broker applies the new topic on its own time.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let got = producers(&mut conn, "single", 0).await;
            if got == Err(not_leader) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "broker {b} holds no replica of single-0: {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    cluster.kill9(leader);
    cluster
        .wait_for("idem led elsewhere, the old leader fenced", 30, |m| {
            m.partition("idem", 0)
                .is_some_and(|p| p.leader >= 0 && p.leader != leader)
                && !m.is_alive(leader)
        })
        .await;
    let new_leader = cluster.leader_of("idem", 0).await;
    let mut conn = connect(new_leader).await;
    let after = producers(&mut conn, "idem", 0).await;
    assert_eq!(
        after,
        Ok(listed),
        "the producer on the new leader {new_leader}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let view = loop {
        let view = agree(&mut conn, &["idem", "described"]).await;
        if view.iter().all(|p| p.offline == [leader]) || std::time::Instant::now() > deadline {
            break view;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        view.iter()
            .all(|p| p.offline == [leader] && p.leader != leader && !p.isr.contains(&leader)),
        "broker {leader} killed: {view:#?}"
    );
}

/// KIP-392 with brokers in racks and the rack-aware selector: the leader sends a consumer that
/// names a follower's rack to that follower (offsets, no records); a follower serves consumers
/// of Fetch v11+ up to its high watermark and refuses older ones; librdkafka's own
/// fetch-from-follower (`client.rack`) reads every acknowledged record from the follower.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_read_from_a_replica_in_their_rack() {
    use broker::protocol::frames::consumer_fetch;
    use broker::replication::client::Connection;
    use kafka_protocol::error::ResponseError;
    use kafka_protocol::messages::fetch_response::PartitionData;

    let _serial = SERIAL.lock().await;
    let dir = test_dir();
    let cluster = Cluster::up_in_racks(dir.path(), base_port(6), 3);
    cluster.create_topic("near", 1).await;
    cluster
        .wait_for("a full ISR", 30, |m| {
            m.partition("near", 0).is_some_and(|p| p.isr.len() == 3)
        })
        .await;
    let acked = common::kafka::produce(
        &producer(&cluster.bootstrap, &[("acks", "all")]),
        "near",
        "r",
        200,
    )
    .await;
    let m = cluster.metadata().await;
    let part = m.partition("near", 0).unwrap().clone();
    let follower = *part.replicas.iter().find(|r| **r != part.leader).unwrap();
    let rack = |id: i32| format!("rack-{id}");
    let connect = |id: i32| {
        let a = format!("127.0.0.1:{}", cluster.base + 10 + id as u16);
        async move { Connection::connect(&a, "rack-test").await.unwrap() }
    };
    let fetch = |rack: String| {
        let mut r = consumer_fetch("near", 0, 0, 0, 0, 1 << 20, &rack);
        r.topics[0].partitions[0].current_leader_epoch = part.leader_epoch;
        r
    };
    let only = |r: kafka_protocol::messages::FetchResponse| -> PartitionData {
        r.responses
            .into_iter()
            .next()
            .unwrap()
            .partitions
            .into_iter()
            .next()
            .unwrap()
    };
    let records = |p: &PartitionData| p.records.as_ref().map_or(0, |r| r.len());

    let mut leader = connect(part.leader).await;
    let sent = only(leader.send(&fetch(rack(follower)), 11).await.unwrap());
    assert_eq!(sent.error_code, 0, "{sent:?}");
    assert_eq!(sent.preferred_read_replica.0, follower, "{sent:?}");
    assert_eq!((records(&sent), sent.high_watermark), (0, 200), "{sent:?}");
    for here in [rack(part.leader), String::new(), "nowhere".into()] {
        let read = only(leader.send(&fetch(here.clone()), 11).await.unwrap());
        assert_eq!(read.preferred_read_replica.0, -1, "rack {here:?}: {read:?}");
        assert!(records(&read) > 0, "rack {here:?}: {read:?}");
    }
    let size = records(&only(leader.send(&fetch(String::new()), 12).await.unwrap()));

    let mut near = connect(follower).await;
    // The follower learns the high watermark at its next fetch.
    let mut served = None;
    for _ in 0..100 {
        let read = only(near.send(&fetch(rack(follower)), 12).await.unwrap());
        assert_eq!(read.error_code, 0, "{read:?}");
        if read.high_watermark == 200 {
            served = Some(read);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let served = served.expect("the follower's high watermark reached 200");
    assert_eq!(
        records(&served),
        size,
        "the follower serves what the leader does"
    );
    let old = only(near.send(&fetch(rack(follower)), 10).await.unwrap());
    assert_eq!(
        old.error_code,
        ResponseError::NotLeaderOrFollower.code(),
        "Fetch v10: {old:?}"
    );

    let out = "strand_bytes_out_total";
    let (leader_before, near_before) = (
        cluster.broker_metric(part.leader, out).await,
        cluster.broker_metric(follower, out).await,
    );
    let (bootstrap, client_rack) = (cluster.bootstrap.clone(), rack(follower));
    let read = tokio::task::spawn_blocking(move || {
        common::kafka::consume_all_with(&bootstrap, &[("client.rack", &client_rack)], "near", &[0])
    })
    .await
    .unwrap();
    common::kafka::assert_acked_present(&acked, &read);
    let from_leader = cluster.broker_metric(part.leader, out).await - leader_before;
    let from_near = cluster.broker_metric(follower, out).await - near_before;
    assert!(
        from_near >= size as f64 && from_leader < size as f64,
        "{size} record bytes: {from_near} read from the follower, {from_leader} from the leader"
    );
}

/// `fsync.policy=before-ack` (Kafka's `flush.messages=1`): every replica that acks=all counts
/// fsyncs its copy before it counts, followers included, so a power loss of whichever replica
/// is left to lead cannot take an acknowledged write. Seen from outside through each broker's
/// recovery-point checkpoint (written every 5 s): it reaches the log end only once the
/// records are fsynced, and with segments too large to roll nothing else moves it. Followers
/// that appended without fsyncing kept it at 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_under_before_ack_fsync_what_they_fetched() {
    let _serial = SERIAL.lock().await;
    let dir = test_dir();
    let c = Cluster::up(dir.path(), base_port(8), 3);
    c.create_topic_configured("synced", 1, 2, &[("fsync.policy", "before-ack")])
        .await;
    let p = producer(&c.bootstrap, ACKS_ALL_IDEMPOTENT);
    let sent = common::kafka::produce(&p, "synced", "fsync", 300).await;
    assert_eq!(sent.len(), 300);
    let recovery_point = |broker: i32| {
        let path = dir
            .path()
            .join(format!("broker-{broker}/recovery-point-offset-checkpoint"));
        broker::storage::checkpoint::read_offsets(&path)
            .ok()
            .and_then(|m| m.get(&("synced".to_string(), 0)).copied())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let points: Vec<i64> = (0..3).map(recovery_point).collect();
        if points.iter().all(|p| *p >= 300) {
            record(&format!(
                "before-ack: recovery points {points:?} after 300 acks=all records"
            ));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "recovery points {points:?} after 300 acknowledged records (leader {}): a replica counted toward acks=all holds them unsynced",
            c.leader_of("synced", 0).await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Eligible leader replicas (KIP-966) and the unclean-shutdown report, with real processes:
/// acknowledged writes on all three replicas of a partition with min.insync.replicas 2; a
/// follower killed -9 (the ISR keeps two, so it is not eligible), the other follower killed
/// (it leaves an ISR of one: eligible), then the leader, the last ISR member, killed and its
/// last acknowledged batch cut from its segment (a torn tail). Restarted, its recovery cuts
/// the batch and it registers as having lost records: it must not lead, the partition waits
/// for the eligible follower, which leads once back, and every acknowledged write is read
/// back. Before the fix the damaged broker led again and the others truncated to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_last_isr_member_that_lost_records_waits_for_an_eligible_replica() {
    use rdkafka::producer::Producer;
    let _serial = SERIAL.lock().await;
    let dir = test_dir();
    let c = Cluster::up(dir.path(), base_port(9), 3);
    let topic = "eligible";
    c.create_topic_with(topic, 1, 2).await;
    c.wait_for("the partition led by a full ISR", 60, |m| {
        m.partition(topic, 0)
            .is_some_and(|p| p.leader >= 0 && p.isr.len() == 3)
    })
    .await;
    let p = producer(&c.bootstrap, ACKS_ALL_IDEMPOTENT);
    let mut acked = common::kafka::Records::new();
    for i in 0..200u32 {
        let (key, value) = (format!("k{i}"), format!("v{i}"));
        let delivered = p
            .send(
                FutureRecord::to(topic).key(&key).payload(&value),
                Duration::from_secs(30),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("record {i} not acknowledged: {e}"));
        acked.insert((delivered.partition, delivered.offset), (key, value));
    }
    p.flush(Duration::from_secs(10)).unwrap();
    drop(p);
    let part = c.metadata().await.partition(topic, 0).unwrap().clone();
    let leader = part.leader;
    let others: Vec<i32> = part
        .replicas
        .iter()
        .copied()
        .filter(|r| *r != leader)
        .collect();
    let (first, second) = (others[0], others[1]);
    eprintln!("leader {leader}; killing {first}, then {second}, then the leader");
    let isr_is = |isr: Vec<i32>, elr: Vec<i32>| {
        move |m: &broker::metadata::ClusterMetadata| {
            m.partition(topic, 0)
                .is_some_and(|p| p.isr == isr && p.elr == elr)
        }
    };
    c.kill9(first);
    let mut both = vec![leader, second];
    both.sort_unstable();
    c.wait_for("the first follower out of the ISR", 30, move |m| {
        m.partition(topic, 0).is_some_and(|p| {
            let mut isr = p.isr.clone();
            isr.sort_unstable();
            isr == both && p.elr.is_empty()
        })
    })
    .await;
    c.kill9(second);
    c.wait_for(
        "the second follower eligible",
        30,
        isr_is(vec![leader], vec![second]),
    )
    .await;
    // DescribeTopicPartitions shows it (`kafka-topics --describe` prints `Elr:`).
    let addr = format!("127.0.0.1:{}", c.base + 10 + leader as u16);
    let mut conn = broker::replication::client::Connection::connect(&addr, "elr-test")
        .await
        .unwrap();
    let mut shown = Vec::new();
    for _ in 0..50 {
        let req = kafka_protocol::messages::DescribeTopicPartitionsRequest::default()
            .with_topics(vec![
                kafka_protocol::messages::describe_topic_partitions_request::TopicRequest::default(
                )
                .with_name(common::describe::name(topic)),
            ])
            .with_response_partition_limit(10);
        let r = conn.send(&req, 0).await.unwrap();
        shown = r.topics[0].partitions[0]
            .eligible_leader_replicas
            .iter()
            .flatten()
            .map(|b| b.0)
            .collect();
        if shown == [second] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(shown, vec![second], "the leader's DescribeTopicPartitions");
    drop(conn);
    c.kill9(leader);
    c.wait_for("the partition leaderless", 30, |m| {
        m.partition(topic, 0).is_some_and(|p| p.leader < 0)
    })
    .await;
    while c.is_running(leader) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Cut 10 bytes off the active segment: inside the last batch, which was acknowledged.
    let pdir = c.dir.join(format!("broker-{leader}/{topic}-0"));
    let segment = std::fs::read_dir(&pdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .max()
        .expect("a segment");
    let len = std::fs::metadata(&segment).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap();
    f.set_len(len - 10).unwrap();
    drop(f);
    let epoch_before = c.metadata().await.brokers[&leader].epoch;
    c.start_broker(leader);
    c.wait_for("the damaged broker registered again", 60, move |m| {
        m.brokers.get(&leader).is_some_and(|b| {
            b.epoch != epoch_before && b.status == broker::metadata::BrokerStatus::Alive
        })
    })
    .await;
    let log = std::fs::read_to_string(c.dir.join(format!("broker-{leader}.log"))).unwrap();
    assert!(
        log.contains("may have lost records"),
        "the damaged broker did not report its loss:\n{log}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let now = c.metadata().await.partition(topic, 0).unwrap().clone();
    assert_eq!(
        (now.leader, now.isr.clone(), now.elr.clone()),
        (-1, vec![second], vec![]),
        "the damaged last ISR member must give way to the eligible replica: {now:?}"
    );
    c.start_broker(second);
    c.wait_for("the eligible replica leading", 60, move |m| {
        m.partition(topic, 0).is_some_and(|p| p.leader == second)
    })
    .await;
    c.start_broker(first);
    c.wait_for("every replica back in sync", 60, |m| {
        m.partition(topic, 0).is_some_and(|p| p.isr.len() == 3)
    })
    .await;
    let read = common::kafka::consume_all(&c.bootstrap, topic, &[0]);
    common::kafka::assert_acked_read_back(&acked, &read);
    record(&format!(
        "eligible leader replicas: {} acknowledged writes kept after the last ISR member (broker {leader}) lost its tail; broker {second} led",
        acked.len()
    ));
}
