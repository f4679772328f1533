//! Randomised fault schedules over a real cluster (a controller and 3 brokers, each on its own
//! loopback address), many per run. Each schedule is drawn from a seed: one to four faults,
//! overlapping at random, among kill -9 and restart of a broker or of the controller,
//! SIGSTOP/SIGCONT of a broker (sometimes past its session timeout), a broker cut off from the
//! controller and the other brokers (iptables), a leader drain, and a preferred-leader
//! election; meanwhile an idempotent acks=all producer writes to a fresh topic.
//!
//! Checked for every schedule:
//! - the end of each partition as consumers see it (ListOffsets latest at the leader) never
//!   moves back, across every leader change;
//! - once the faults are healed, the replicas of each partition hold the same batches (same
//!   offsets, leader epochs and CRCs) below the lowest high watermark among them, read from
//!   each replica (followers serve Fetch v11+);
//! - no delivery failed, every acknowledged write is read back at its offset, and nothing
//!   is stored twice or invented (`Load::finish`);
//! - a consumer group member committing its positions every 200 ms: every commit it had
//!   acknowledged is still there (the group's committed offsets at least as high).
//!
//! `STRAND_FAULT_SCHEDULES` (default 50) sets how many run; `STRAND_FAULT_SEED` replays one
//! schedule exactly (its faults and times; the processes' own timing still varies);
//! `STRAND_FAULT_SOAK_SECS` keeps drawing schedules for that long. A failing schedule is
//! shrunk (each fault dropped in turn, kept out if the failure remains) and printed with the
//! command that replays it. Not yet drawn: a full disk, a torn segment tail, reassignment.

mod common;

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use broker::protocol::batch::Batches;
use broker::replication::client::Connection;
use common::cluster::{Cluster, Isolation, SERIAL, base_port, record, test_dir};
use common::kafka::{ACKS_ALL_IDEMPOTENT, Load};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{FetchRequest, ListOffsetsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const BROKERS: i32 = 3;
const PARTITIONS: i32 = 3;

/// What one step of a schedule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// kill -9 of a broker, restarted when the step ends.
    Kill(i32),
    /// SIGSTOP of a broker, SIGCONT when the step ends.
    Pause(i32),
    /// A broker cut off from the controller and the other brokers until the step ends.
    Isolate(i32),
    /// kill -9 of the controller, restarted when the step ends.
    KillController,
    /// Leadership drained off a broker; preferred leaders elected again when the step ends.
    Drain(i32),
    /// A preferred-leader election.
    Elect,
}

impl Fault {
    fn broker(self) -> Option<i32> {
        match self {
            Fault::Kill(b) | Fault::Pause(b) | Fault::Isolate(b) | Fault::Drain(b) => Some(b),
            Fault::KillController | Fault::Elect => None,
        }
    }
    /// Needs the controller up (an admin call).
    fn calls_controller(self) -> bool {
        matches!(self, Fault::Drain(_) | Fault::Elect)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Step {
    at_ms: u64,
    for_ms: u64,
    fault: Fault,
}

impl Step {
    fn end_ms(&self) -> u64 {
        self.at_ms + self.for_ms
    }
    fn overlaps(&self, other: &Step) -> bool {
        // A restart takes a moment after the step ends: keep a gap.
        self.at_ms < other.end_ms() + 1000 && other.at_ms < self.end_ms() + 1000
    }
}

/// The schedule a seed stands for. Faults overlap freely, except that one broker has one
/// fault at a time (a stopped process cannot also be killed and restarted), and admin calls
/// never overlap the controller's kill (they would only fail). `isolation` is false where
/// iptables cannot be used.
fn schedule(seed: u64, isolation: bool) -> Vec<Step> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut steps: Vec<Step> = Vec::new();
    let wanted = rng.random_range(1..=4);
    let mut tries = 0;
    while steps.len() < wanted && tries < 100 {
        tries += 1;
        let broker = rng.random_range(0..BROKERS);
        let fault = match rng.random_range(0..12) {
            0..=3 => Fault::Kill(broker),
            4..=5 => Fault::Pause(broker),
            6..=7 if isolation => Fault::Isolate(broker),
            6..=7 => Fault::Pause(broker),
            8..=9 => Fault::KillController,
            10 => Fault::Drain(broker),
            _ => Fault::Elect,
        };
        let for_ms = match fault {
            Fault::Elect => 0,
            // Either side of the 4 s session timeout.
            Fault::Pause(_) | Fault::Isolate(_) => rng.random_range(500..7000),
            _ => rng.random_range(300..5000),
        };
        let step = Step {
            at_ms: rng.random_range(0..6000),
            for_ms,
            fault,
        };
        let clash = steps.iter().any(|s| {
            s.overlaps(&step)
                && ((s.fault.broker().is_some() && s.fault.broker() == step.fault.broker())
                    || (s.fault == Fault::KillController && step.fault.calls_controller())
                    || (step.fault == Fault::KillController && s.fault.calls_controller())
                    || (s.fault == Fault::KillController && step.fault == Fault::KillController))
        });
        if !clash {
            steps.push(step);
        }
    }
    steps.sort_by_key(|s| s.at_ms);
    steps
}

/// The topic's min.insync.replicas for a schedule: 2 mostly, 1 for every third seed (the high
/// watermark then moves with an ISR of the leader alone, a path min.insync.replicas=2 holds
/// back).
fn min_insync(seed: u64) -> i32 {
    if seed.is_multiple_of(3) { 1 } else { 2 }
}

/// Sets every flag when dropped: a schedule that fails midway stops its producer, its group
/// member (a blocking thread the runtime would otherwise wait for forever) and its watcher.
struct StopOnDrop(Vec<Arc<AtomicBool>>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        for flag in &self.0 {
            flag.store(true, Ordering::Relaxed);
        }
    }
}

/// Carries out one step: the fault, the wait, and its end.
async fn run_step(cluster: Arc<Cluster>, step: Step, ip: fn(i32) -> String) {
    tokio::time::sleep(Duration::from_millis(step.at_ms)).await;
    let hold = Duration::from_millis(step.for_ms);
    match step.fault {
        Fault::Kill(b) => {
            cluster.kill9(b);
            tokio::time::sleep(hold).await;
            cluster.start_broker(b);
        }
        Fault::Pause(b) => {
            cluster.signal(b, "STOP");
            tokio::time::sleep(hold).await;
            cluster.signal(b, "CONT");
        }
        Fault::Isolate(b) => {
            let others: Vec<String> = (0..BROKERS).filter(|o| *o != b).map(ip).collect();
            let cut = Isolation::cut(&ip(b), &others, cluster.base);
            tokio::time::sleep(hold).await;
            drop(cut);
        }
        Fault::KillController => {
            cluster.kill9_controller();
            tokio::time::sleep(hold).await;
            cluster.start_controller();
        }
        // A refused admin call (say, a drain of a fenced broker) is no violation: logged.
        Fault::Drain(b) => {
            let drained = cluster
                .try_admin(&format!("brokers/{b}/drain"), serde_json::json!({}))
                .await;
            tokio::time::sleep(hold).await;
            let elected = cluster
                .try_admin("preferred-leader-election", serde_json::json!({}))
                .await;
            eprintln!("drain of broker {b}: {drained:?}; election after it: {elected:?}");
        }
        Fault::Elect => {
            let elected = cluster
                .try_admin("preferred-leader-election", serde_json::json!({}))
                .await;
            eprintln!("preferred-leader election: {elected:?}");
        }
    }
}

fn broker_ip(id: i32) -> String {
    format!("127.0.1.{}", id + 1)
}

fn broker_addr(cluster: &Cluster, id: i32) -> String {
    format!("{}:{}", broker_ip(id), cluster.base + 10 + id as u16)
}

/// Polls ListOffsets latest at each partition's leader until `stop`, and returns the first
/// time the end of a partition moved back, if it did.
async fn watch_ends(
    cluster: Arc<Cluster>,
    topic: &'static str,
    stop: Arc<AtomicBool>,
) -> Option<String> {
    let mut conns: BTreeMap<i32, Connection> = BTreeMap::new();
    let mut highest: BTreeMap<i32, (i64, i32, i32)> = BTreeMap::new();
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Some(m) = cluster.try_metadata().await else {
            continue;
        };
        for partition in 0..PARTITIONS {
            let Some(p) = m.partition(topic, partition) else {
                continue;
            };
            if p.leader < 0 {
                continue;
            }
            let conn = match conns.entry(p.leader) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => {
                    let addr = broker_addr(&cluster, p.leader);
                    let connect = Connection::connect(&addr, "ends");
                    match tokio::time::timeout(Duration::from_millis(500), connect).await {
                        Ok(Ok(c)) => e.insert(c),
                        _ => continue,
                    }
                }
            };
            let mut lp = ListOffsetsPartition::default();
            lp.partition_index = partition;
            lp.timestamp = -1;
            lp.current_leader_epoch = -1;
            let mut lt = ListOffsetsTopic::default();
            lt.name = TopicName(StrBytes::from_static_str(topic));
            lt.partitions = vec![lp];
            let mut req = ListOffsetsRequest::default();
            req.replica_id = (-1).into();
            req.topics = vec![lt];
            let answer = tokio::time::timeout(Duration::from_millis(500), conn.send(&req, 7)).await;
            let Ok(Ok(resp)) = answer else {
                // A stopped, killed or cut-off leader: try again with a new connection.
                conns.remove(&p.leader);
                continue;
            };
            let Some(got) = resp.topics.first().and_then(|t| t.partitions.first()) else {
                continue;
            };
            if got.error_code != 0 {
                continue;
            }
            let seen = (got.offset, p.leader, got.leader_epoch);
            match highest.get(&partition) {
                Some(best) if got.offset < best.0 => {
                    return Some(format!(
                        "the end of {topic}-{partition} moved back: {} (leader {}, epoch {}) after {} (leader {}, epoch {})",
                        seen.0, seen.1, seen.2, best.0, best.1, best.2
                    ));
                }
                _ => {
                    highest.insert(partition, seen);
                }
            }
        }
    }
    None
}

/// Each replica's batches of `topic`-`partition` (base offset, last offset, leader epoch,
/// CRC) below the lowest high watermark among the replicas, read from every replica, once
/// that high watermark covers `acked_end` (so the comparison covers every acknowledged write;
/// retried for a while, as followers learn the high watermark at their next fetch).
async fn replicas_agree(
    cluster: &Cluster,
    topic: &'static str,
    partition: i32,
    acked_end: i64,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match replica_batches(cluster, topic, partition).await {
            Ok((lowest_hw, logs)) if lowest_hw >= acked_end => {
                return compare(topic, partition, lowest_hw, &logs);
            }
            Ok((lowest_hw, _)) if Instant::now() > deadline => {
                return Err(format!(
                    "{topic}-{partition}: a replica's high watermark stayed at {lowest_hw}, below the acknowledged {acked_end}"
                ));
            }
            Err(e) if Instant::now() > deadline => return Err(e),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

type Lineage = Vec<(i64, i64, i32, u32)>;

/// Each replica's batches and the lowest high watermark among them.
async fn replica_batches(
    cluster: &Cluster,
    topic: &'static str,
    partition: i32,
) -> Result<(i64, BTreeMap<i32, Lineage>), String> {
    let m = cluster.metadata().await;
    let p = m
        .partition(topic, partition)
        .ok_or_else(|| format!("{topic}-{partition} is gone"))?
        .clone();
    let mut logs = BTreeMap::new();
    let mut lowest_hw = i64::MAX;
    for replica in &p.replicas {
        let mut conn = Connection::connect(&broker_addr(cluster, *replica), "agree")
            .await
            .map_err(|e| format!("broker {replica}: {e}"))?;
        let mut batches = Vec::new();
        let mut offset = 0;
        let hw = loop {
            let r = fetch_request(topic, partition, offset);
            let resp = conn
                .send(&r, 12)
                .await
                .map_err(|e| format!("fetch from broker {replica}: {e}"))?;
            let pd = resp
                .responses
                .first()
                .and_then(|t| t.partitions.first())
                .ok_or("an empty fetch answer")?;
            if pd.error_code != 0 {
                return Err(format!(
                    "broker {replica} answered {topic}-{partition} with error {}",
                    pd.error_code
                ));
            }
            let data = pd.records.clone().unwrap_or_default();
            let before = batches.len();
            for (h, _) in Batches::new(&data) {
                offset = h.last_offset() + 1;
                batches.push((
                    h.base_offset,
                    h.last_offset(),
                    h.partition_leader_epoch,
                    h.crc,
                ));
            }
            if batches.len() == before || offset >= pd.high_watermark {
                break pd.high_watermark;
            }
        };
        lowest_hw = lowest_hw.min(hw);
        logs.insert(*replica, batches);
    }
    Ok((lowest_hw, logs))
}

/// Every replica holds the same batches below `lowest_hw`.
fn compare(
    topic: &str,
    partition: i32,
    lowest_hw: i64,
    logs: &BTreeMap<i32, Lineage>,
) -> Result<(), String> {
    let below =
        |b: &Lineage| -> Lineage { b.iter().copied().filter(|x| x.0 < lowest_hw).collect() };
    let mut views = logs.iter().map(|(r, b)| (r, below(b)));
    let Some((first, want)) = views.next() else {
        return Ok(());
    };
    for (replica, got) in views {
        if got != want {
            return Err(format!(
                "{topic}-{partition}: below the high watermark {lowest_hw}, broker {replica} holds {} batches and broker {first} {}; first difference at {:?} / {:?}",
                got.len(),
                want.len(),
                got.iter().zip(&want).find(|(a, b)| a != b).map(|x| x.0),
                got.iter().zip(&want).find(|(a, b)| a != b).map(|x| x.1),
            ));
        }
    }
    Ok(())
}

/// A consumer group member reading the schedule's topic and committing its positions every
/// 200 ms (synchronously); the highest commit acknowledged per partition is what the group
/// must never lose.
struct GroupCommits {
    stop: Arc<AtomicBool>,
    handle: tokio::task::JoinHandle<BTreeMap<i32, i64>>,
}

impl GroupCommits {
    fn start(bootstrap: &str, topic: &'static str, group: &str) -> Self {
        use rdkafka::consumer::{CommitMode, Consumer};
        use rdkafka::message::Message;
        let consumer = common::kafka::consumer_with(
            bootstrap,
            &[
                ("group.id", group),
                ("auto.offset.reset", "earliest"),
                ("session.timeout.ms", "6000"),
            ],
        );
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let handle = tokio::task::spawn_blocking(move || {
            consumer.subscribe(&[topic]).expect("subscribe");
            let mut next: BTreeMap<i32, i64> = BTreeMap::new();
            let mut acked: BTreeMap<i32, i64> = BTreeMap::new();
            let mut last_commit = Instant::now();
            while !stopping.load(Ordering::Relaxed) {
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
                    next.insert(m.partition(), m.offset() + 1);
                }
                if last_commit.elapsed() < Duration::from_millis(200) || next.is_empty() {
                    continue;
                }
                last_commit = Instant::now();
                let mut tpl = rdkafka::TopicPartitionList::new();
                for (p, o) in &next {
                    let _ = tpl.add_partition_offset(topic, *p, rdkafka::Offset::Offset(*o));
                }
                if consumer.commit(&tpl, CommitMode::Sync).is_ok() {
                    for (p, o) in &next {
                        let best = acked.entry(*p).or_insert(*o);
                        *best = (*best).max(*o);
                    }
                }
            }
            acked
        });
        Self { stop, handle }
    }

    /// Stops the member; then every acknowledged commit must still be there (the group's
    /// committed offset per partition at least as high).
    async fn check(self, bootstrap: &str, topic: &str, group: &str) -> Result<usize, String> {
        use rdkafka::consumer::Consumer;
        self.stop.store(true, Ordering::Relaxed);
        let acked = self.handle.await.map_err(|e| e.to_string())?;
        let (bootstrap, topic, group) =
            (bootstrap.to_string(), topic.to_string(), group.to_string());
        let commits = acked.len();
        tokio::task::spawn_blocking(move || {
            let reader = common::kafka::consumer_with(&bootstrap, &[("group.id", &group)]);
            let mut tpl = rdkafka::TopicPartitionList::new();
            for p in acked.keys() {
                tpl.add_partition(&topic, *p);
            }
            let committed = reader
                .committed_offsets(tpl, Duration::from_secs(20))
                .map_err(|e| format!("OffsetFetch for group {group}: {e}"))?;
            for (p, want) in &acked {
                let got = committed
                    .find_partition(&topic, *p)
                    .map(|e| e.offset())
                    .ok_or_else(|| format!("no committed offset for {topic}-{p}"))?;
                if got.to_raw().unwrap_or(-1) < *want {
                    return Err(format!(
                        "group {group} lost a commit on {topic}-{p}: {want} was acknowledged, {got:?} is committed"
                    ));
                }
            }
            Ok(commits)
        })
        .await
        .map_err(|e| e.to_string())?
    }
}

/// Makes every process run again, whatever a failed schedule left: SIGCONT to every broker, a
/// start for any process that is gone (iptables cuts go with their step).
fn heal(cluster: &Cluster) {
    for b in 0..BROKERS {
        if cluster.is_running(b) {
            let pid = cluster.pid(b).to_string();
            let _ = std::process::Command::new("kill")
                .args(["-CONT", &pid])
                .status();
        } else {
            cluster.start_broker(b);
        }
    }
    if !cluster.controller_running() {
        cluster.start_controller();
    }
}

/// One schedule on a fresh topic, start to finish. Panics (inside its task) on a violation.
async fn run_schedule(
    cluster: Arc<Cluster>,
    topic: &'static str,
    seed: u64,
    steps: Vec<Step>,
) -> String {
    cluster
        .create_topic_with(topic, PARTITIONS, min_insync(seed))
        .await;
    cluster
        .wait_for("the schedule's topic fully in sync", 30, |m| {
            (0..PARTITIONS).all(|i| {
                m.partition(topic, i)
                    .is_some_and(|p| p.leader >= 0 && p.isr.len() == 3)
            })
        })
        .await;
    let load = Load::start(&cluster.bootstrap, ACKS_ALL_IDEMPOTENT, topic);
    let group = format!("{topic}-group");
    let commits = GroupCommits::start(&cluster.bootstrap, topic, &group);
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_all = StopOnDrop(vec![
        load.stop_flag(),
        Arc::clone(&commits.stop),
        Arc::clone(&stop),
    ]);
    let ends = tokio::spawn(watch_ends(Arc::clone(&cluster), topic, Arc::clone(&stop)));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // In a JoinSet: if this schedule fails, the steps not yet run are aborted with it (an
    // aborted cut drops its iptables rules) instead of firing into the next schedule.
    let mut faults = tokio::task::JoinSet::new();
    for s in &steps {
        faults.spawn(run_step(Arc::clone(&cluster), *s, broker_ip));
    }
    while let Some(done) = faults.join_next().await {
        done.expect("a fault step failed");
    }
    cluster
        .wait_for(
            "every partition led with 3 in sync after the faults",
            60,
            |m| {
                (0..PARTITIONS).all(|i| {
                    m.partition(topic, i)
                        .is_some_and(|p| p.leader >= 0 && p.isr.len() == 3)
                })
            },
        )
        .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    if let Some(moved_back) = ends.await.unwrap() {
        panic!("{moved_back}");
    }
    let committed = match commits.check(&cluster.bootstrap, topic, &group).await {
        Ok(n) => n,
        Err(e) => panic!("{e}"),
    };
    let partitions: Vec<i32> = (0..PARTITIONS).collect();
    let (sent, acked, read) = load.finish(&cluster.bootstrap, topic, &partitions).await;
    for partition in 0..PARTITIONS {
        // Every replica must hold at least every acknowledged write of the partition.
        let acked_end = acked
            .keys()
            .filter(|(p, _)| *p == partition)
            .map(|(_, o)| o + 1)
            .max()
            .unwrap_or(0);
        if let Err(e) = replicas_agree(&cluster, topic, partition, acked_end).await {
            panic!("{e}");
        }
    }
    cluster.delete_topic(topic).await;
    format!(
        "schedule seed={seed} faults={steps:?}: sent {sent}, acknowledged {}, stored {}, group commits kept on {committed} partitions, violations 0",
        acked.len(),
        read.len()
    )
}

/// Runs a schedule in its own task, so a violation (a panic) comes back as an error, and heals
/// the cluster after it whatever happened.
async fn attempt(
    cluster: &Arc<Cluster>,
    n: &mut u32,
    seed: u64,
    steps: &[Step],
) -> Result<String, String> {
    *n += 1;
    let topic: &'static str = Box::leak(format!("sched-{n}").into_boxed_str());
    let run = tokio::spawn(run_schedule(
        Arc::clone(cluster),
        topic,
        seed,
        steps.to_vec(),
    ));
    let result = match run.await {
        Ok(line) => Ok(line),
        Err(e) => Err(match e.try_into_panic() {
            Ok(p) => p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".into()),
            Err(e) => e.to_string(),
        }),
    };
    let result = match result {
        Err(why) => {
            // Aborted steps end at their next await; let them go before healing.
            tokio::time::sleep(Duration::from_millis(1000)).await;
            let detail = describe_duplicate(cluster, topic, &why).await;
            Err(format!("{why}{detail}"))
        }
        ok => ok,
    };
    heal(cluster);
    result
}

/// For a value stored twice ("stored twice: at (P, O1) and (P, O2)"), the batch holding each
/// copy as the partition's leader has it: whether both carry one producer id, epoch and
/// sequence (the broker appended a retry twice) or not (the client sent it again as new).
async fn describe_duplicate(cluster: &Cluster, topic: &'static str, why: &str) -> String {
    let Some(rest) = why.split("stored twice: at ").nth(1) else {
        return String::new();
    };
    let numbers: Vec<i64> = rest
        .split(|c: char| !c.is_ascii_digit())
        .filter(|t| !t.is_empty())
        .take(4)
        .filter_map(|t| t.parse().ok())
        .collect();
    let [p, first, _, second] = numbers[..] else {
        return String::new();
    };
    let partition = p as i32;
    let Some(m) = cluster.try_metadata().await else {
        return "(no metadata to describe the duplicate)".into();
    };
    let Some(leader) = m.partition(topic, partition).map(|p| p.leader) else {
        return String::new();
    };
    let Ok(mut conn) = Connection::connect(&broker_addr(cluster, leader), "describe").await else {
        return "(leader unreachable)".into();
    };
    let mut out = String::new();
    for offset in [first, second] {
        let r = fetch_request(topic, partition, offset);
        let Ok(resp) = conn.send(&r, 12).await else {
            continue;
        };
        let data = resp
            .responses
            .first()
            .and_then(|t| t.partitions.first())
            .and_then(|p| p.records.clone())
            .unwrap_or_default();
        if let Some((h, _)) = Batches::new(&data).next() {
            out.push_str(&format!(
                "\n  offset {offset}: batch {}..={} leader epoch {} producer id {} epoch {} sequence {}..={}",
                h.base_offset,
                h.last_offset(),
                h.partition_leader_epoch,
                h.producer_id,
                h.producer_epoch,
                h.base_sequence,
                h.last_sequence()
            ));
        }
    }
    out
}

/// A consumer's Fetch v12 of one partition from `offset`.
fn fetch_request(topic: &'static str, partition: i32, offset: i64) -> FetchRequest {
    let mut fp = FetchPartition::default();
    fp.partition = partition;
    fp.fetch_offset = offset;
    fp.current_leader_epoch = -1;
    fp.last_fetched_epoch = -1;
    fp.partition_max_bytes = 1 << 20;
    let mut t = FetchTopic::default();
    t.topic = TopicName(StrBytes::from_static_str(topic));
    t.partitions = vec![fp];
    let mut r = FetchRequest::default();
    r.replica_id = (-1).into();
    r.session_epoch = -1;
    r.max_bytes = 1 << 20;
    r.topics = vec![t];
    r
}

/// Drops each fault in turn, keeping it out when the schedule still fails without it.
async fn shrink(cluster: &Arc<Cluster>, n: &mut u32, seed: u64, mut steps: Vec<Step>) -> Vec<Step> {
    let mut i = 0;
    while i < steps.len() && steps.len() > 1 {
        let mut fewer = steps.clone();
        fewer.remove(i);
        eprintln!("shrinking seed {seed}: trying without {:?}", steps[i]);
        if attempt(cluster, n, seed, &fewer).await.is_err() {
            steps = fewer;
        } else {
            i += 1;
        }
    }
    steps
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_fault_schedules_lose_no_acknowledged_write() {
    let _serial = SERIAL.lock().await;
    let isolation = std::env::var_os("STRAND_SKIP_ROOT_TESTS").is_none_or(|v| v != "1");
    let replay: Option<u64> = std::env::var("STRAND_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok());
    let count: u32 = std::env::var("STRAND_FAULT_SCHEDULES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let soak = std::env::var("STRAND_FAULT_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs);
    let dir = test_dir();
    let cluster = Arc::new(Cluster::up_with(
        dir.path(),
        base_port(1),
        BROKERS as usize,
        true,
    ));
    let started = Instant::now();
    let first: u64 = replay.unwrap_or_else(rand::random);
    let mut n = 0u32;
    let mut ran = 0u32;
    loop {
        let seed = first.wrapping_add(u64::from(ran));
        let steps = schedule(seed, isolation);
        eprintln!("schedule {ran}: seed {seed}: {steps:?}");
        match attempt(&cluster, &mut n, seed, &steps).await {
            Ok(line) => {
                eprintln!("{line}");
                record(&line);
            }
            Err(why) => {
                eprintln!("schedule seed {seed} FAILED: {why}");
                let shrunk = shrink(&cluster, &mut n, seed, steps.clone()).await;
                // The logs and data stay for a look (the processes are stopped).
                let kept = dir.keep();
                eprintln!("cluster directory kept: {}", kept.display());
                panic!(
                    "fault schedule seed {seed} failed: {why}\nfaults: {steps:?}\nshrunk to (may not fail every time): {shrunk:?}\nreplay: STRAND_FAULT_SEED={seed} STRAND_FAULT_SCHEDULES=1 cargo test -p broker --test fault_schedules -- --nocapture"
                );
            }
        }
        ran += 1;
        if replay.is_some() && ran >= count.max(1) && soak.is_none() {
            break;
        }
        let done = match soak {
            Some(d) => started.elapsed() >= d,
            None => ran >= count,
        };
        if done {
            break;
        }
    }
    let line = format!(
        "random fault schedules: {ran} from seed {first} in {:.0} s, every acknowledged write kept",
        started.elapsed().as_secs_f64()
    );
    eprintln!("{line}");
    record(&line);
}

/// The generator keeps its promises: one fault per broker at a time, no admin call while the
/// controller is down, times in range, and the same schedule for the same seed.
#[test]
fn schedules_are_reproducible_and_well_formed() {
    let mut kinds = std::collections::HashSet::new();
    for seed in 0..2000 {
        let steps = schedule(seed, true);
        assert_eq!(steps, schedule(seed, true), "seed {seed}");
        assert!((1..=4).contains(&steps.len()), "seed {seed}: {steps:?}");
        for (i, a) in steps.iter().enumerate() {
            kinds.insert(std::mem::discriminant(&a.fault));
            assert!(a.at_ms < 6000 && a.for_ms < 7000, "{a:?}");
            for b in &steps[i + 1..] {
                if !a.overlaps(b) {
                    continue;
                }
                assert!(
                    a.fault.broker().is_none() || a.fault.broker() != b.fault.broker(),
                    "seed {seed}: one broker twice at once: {a:?} {b:?}"
                );
                let down = |s: &Step| s.fault == Fault::KillController;
                assert!(
                    !(down(a) && (b.fault.calls_controller() || down(b)))
                        && !(down(b) && a.fault.calls_controller()),
                    "seed {seed}: an admin call while the controller is down: {a:?} {b:?}"
                );
            }
        }
        assert!(
            schedule(seed, false)
                .iter()
                .all(|s| !matches!(s.fault, Fault::Isolate(_))),
            "seed {seed}: isolation where iptables is off"
        );
    }
    assert_eq!(kinds.len(), 6, "every kind of fault is drawn");
}
