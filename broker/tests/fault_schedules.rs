//! Randomised fault schedules over a real cluster (a controller and 3 brokers, each on its own
//! loopback address), many per run. Each schedule is drawn from a seed: one to four faults,
//! overlapping at random, among kill -9 and restart of a broker or of the controller,
//! SIGSTOP/SIGCONT of a broker (sometimes past its session timeout), a broker cut off from the
//! controller and the other brokers (iptables), a leader drain, a preferred-leader election,
//! a full disk (each broker's data directory is its own small tmpfs, filled with a ballast
//! file until writes fail with ENOSPC, the ballast deleted when the step ends), a torn segment
//! tail (kill -9, then the tail of the broker's active segment of one partition cut inside its
//! last batch, followed by garbage, or followed by part of a next batch; restarted when the
//! step ends, its log must say recovery truncated that segment), and a reassignment (one
//! partition shrunk to two replicas, the dropped broker's copy deleted, then grown back to
//! three in a new order, so the dropped broker copies the partition from scratch and the
//! preferred leader may change; it must have completed once the faults are healed).
//! Meanwhile an idempotent acks=all producer writes to a fresh topic.
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
//!   acknowledged is still there (the group's committed offsets at least as high);
//! - once the faults are healed, every partition is led with 3 replicas in sync, and every
//!   reassignment has completed (the replicas are the target, none being added or removed);
//! - a broker restarted on a torn tail logs that recovery truncated that segment.
//!
//! The topic has small segments (128 KiB), so logs roll a few times per schedule, and
//! `fsync.policy=before-ack` for half the seeds (leaders and followers fsync before what they
//! hold counts toward an ack), `none` for the others.
//!
//! `STRAND_FAULT_SCHEDULES` (default 50) sets how many run; `STRAND_FAULT_SEED` replays one
//! schedule exactly (its faults and times; the processes' own timing still varies);
//! `STRAND_FAULT_SOAK_SECS` keeps drawing schedules for that long. A failing schedule is
//! shrunk (each fault dropped in turn, kept out if the failure remains) and printed with the
//! command that replays it. `STRAND_FAULT_KINDS` (a comma-separated list of `kill`, `pause`,
//! `isolate`, `kill-controller`, `drain`, `elect`, `fill-disk`, `tear`, `reassign`) draws only
//! those kinds, to focus a run on some. Isolation and the full disk need root (iptables, mount);
//! `STRAND_SKIP_ROOT_TESTS=1` leaves them out, and a full disk is also left out, with the
//! reason printed, when mounting a tmpfs fails.
//!
//! A torn tail is drawn at most once per schedule and only with min.insync.replicas 2: it
//! destroys acknowledged data on one replica, which the others must still hold.

mod common;

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use broker::protocol::batch::Batches;
use broker::protocol::frames::consumer_fetch;
use broker::replication::client::Connection;
use common::cluster::{Cluster, Isolation, SERIAL, base_port, record, test_dir};
use common::kafka::{ACKS_ALL_IDEMPOTENT, Duplicate, Load};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{FetchRequest, ListOffsetsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const BROKERS: i32 = 3;
/// Longest a schedule may take, its checks included (they take seconds normally).
const SCHEDULE_LIMIT: Duration = Duration::from_secs(300);
const PARTITIONS: i32 = 3;
const SEGMENT_BYTES: &str = "131072";

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
    /// A broker's data filesystem filled with a ballast file until writes fail with ENOSPC;
    /// the ballast deleted when the step ends.
    FillDisk(i32),
    /// kill -9 of a broker, the tail of its active segment of `partition` damaged; restarted
    /// when the step ends.
    Tear {
        broker: i32,
        partition: i32,
        damage: Damage,
    },
    /// `partition` shrunk to the two replicas other than `dropped`; when the step ends grown
    /// back to three with `first` as the preferred leader.
    Reassign {
        partition: i32,
        dropped: i32,
        first: i32,
    },
}

/// How a torn tail is damaged (the numbers are drawn; each is mapped onto the segment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Damage {
    /// The last batch cut short (by 1 to its length - 1 bytes).
    Cut(u16),
    /// Random bytes appended after the last batch.
    Garbage(u16),
    /// A copy of the last batch, as the next one, of which only a part (percent) was written.
    PartialBatch(u8),
}

impl Fault {
    fn broker(self) -> Option<i32> {
        match self {
            Fault::Kill(b)
            | Fault::Pause(b)
            | Fault::Isolate(b)
            | Fault::Drain(b)
            | Fault::FillDisk(b)
            | Fault::Tear { broker: b, .. } => Some(b),
            Fault::KillController | Fault::Elect | Fault::Reassign { .. } => None,
        }
    }
    /// Needs the controller up (an admin call).
    fn calls_controller(self) -> bool {
        matches!(
            self,
            Fault::Drain(_) | Fault::Elect | Fault::Reassign { .. }
        )
    }
    /// The name `STRAND_FAULT_KINDS` uses.
    fn kind(self) -> &'static str {
        match self {
            Fault::Kill(_) => "kill",
            Fault::Pause(_) => "pause",
            Fault::Isolate(_) => "isolate",
            Fault::KillController => "kill-controller",
            Fault::Drain(_) => "drain",
            Fault::Elect => "elect",
            Fault::FillDisk(_) => "fill-disk",
            Fault::Tear { .. } => "tear",
            Fault::Reassign { .. } => "reassign",
        }
    }
}

const KINDS: [&str; 9] = [
    "kill",
    "pause",
    "isolate",
    "kill-controller",
    "drain",
    "elect",
    "fill-disk",
    "tear",
    "reassign",
];

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

/// What this run can draw: iptables and tmpfs need root, and `STRAND_FAULT_KINDS` may
/// narrow the kinds down.
#[derive(Debug, Clone)]
struct Kinds {
    isolation: bool,
    full_disk: bool,
    only: Option<Vec<String>>,
}

impl Kinds {
    fn all() -> Self {
        Self {
            isolation: true,
            full_disk: true,
            only: None,
        }
    }
    fn allows(&self, fault: Fault) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|k| k == fault.kind()))
    }
}

/// The schedule a seed stands for. Faults overlap freely, except that one broker has one
/// fault at a time (a stopped process cannot also be killed and restarted), admin calls
/// never overlap the controller's kill (they would only fail), reassignments do not
/// overlap each other, and a torn tail does not overlap a reassignment of its partition. A torn tail is drawn at most once, and only with min.insync.replicas 2
/// (it destroys acknowledged data on one replica). Isolation is left out where iptables
/// cannot be used, a full disk where no tmpfs could be mounted (both replaced by a pause).
fn schedule(seed: u64, kinds: &Kinds) -> Vec<Step> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut steps: Vec<Step> = Vec::new();
    let wanted = rng.random_range(1..=4);
    let mut tries = 0;
    while steps.len() < wanted && tries < 200 {
        tries += 1;
        let broker = rng.random_range(0..BROKERS);
        let fault = match rng.random_range(0..15) {
            0..=3 => Fault::Kill(broker),
            4..=5 => Fault::Pause(broker),
            6..=7 if kinds.isolation => Fault::Isolate(broker),
            6..=7 => Fault::Pause(broker),
            8..=9 => Fault::KillController,
            10 => Fault::Drain(broker),
            11 => Fault::Elect,
            12 if kinds.full_disk => Fault::FillDisk(broker),
            12 => Fault::Pause(broker),
            13 => Fault::Tear {
                broker,
                partition: rng.random_range(0..PARTITIONS),
                damage: match rng.random_range(0..3) {
                    0 => Damage::Cut(rng.random()),
                    1 => Damage::Garbage(rng.random_range(1..4096)),
                    _ => Damage::PartialBatch(rng.random_range(0..100)),
                },
            },
            _ => Fault::Reassign {
                partition: rng.random_range(0..PARTITIONS),
                dropped: broker,
                first: rng.random_range(0..BROKERS),
            },
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
        let tear = |s: &Step| matches!(s.fault, Fault::Tear { .. });
        let reassign = |s: &Step| matches!(s.fault, Fault::Reassign { .. });
        // A torn tail and a reassignment of one partition do not overlap: the shrink may
        // have removed the replica to tear.
        let partition = |s: &Step| match s.fault {
            Fault::Tear { partition, .. } | Fault::Reassign { partition, .. } => Some(partition),
            _ => None,
        };
        if !kinds.allows(fault) || (tear(&step) && (min_insync(seed) < 2 || steps.iter().any(tear)))
        {
            continue;
        }
        let clash = steps.iter().any(|s| {
            s.overlaps(&step)
                && ((s.fault.broker().is_some() && s.fault.broker() == step.fault.broker())
                    || (s.fault == Fault::KillController && step.fault.calls_controller())
                    || (step.fault == Fault::KillController && s.fault.calls_controller())
                    || (s.fault == Fault::KillController && step.fault == Fault::KillController)
                    || (reassign(s) && reassign(&step))
                    || (partition(s).is_some() && partition(s) == partition(&step)))
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

/// The topic's fsync.policy for a schedule, independent of `min_insync`: before-ack for half
/// the seeds (the leader's group commit and every follower's fsync before its next fetch
/// reports what it took in are then on the path of every ack), none otherwise.
fn fsync_policy(seed: u64) -> &'static str {
    if (seed / 3).is_multiple_of(2) {
        "none"
    } else {
        "before-ack"
    }
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

/// Carries out one step: the fault, the wait, and its end. A reassignment returns the
/// partition and the replicas it must end with.
async fn run_step(
    cluster: Arc<Cluster>,
    topic: &'static str,
    step: Step,
    ip: fn(i32) -> String,
) -> Option<(i32, Vec<i32>)> {
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
        Fault::FillDisk(b) => {
            let dir = cluster.dir.join(format!("broker-{b}"));
            let ballast = tokio::task::spawn_blocking(move || Ballast::fill(&dir))
                .await
                .expect("the ballast task");
            let ballast = match ballast {
                Ok(ballast) => ballast,
                Err(e) => panic!("filling broker {b}'s disk: {e}"),
            };
            eprintln!(
                "broker {b}'s disk full: ballast of {} MiB",
                ballast.bytes >> 20
            );
            tokio::time::sleep(hold).await;
            drop(ballast);
        }
        Fault::Tear {
            broker: b,
            partition,
            damage,
        } => {
            cluster.kill9(b);
            let gone = Instant::now() + Duration::from_secs(10);
            while cluster.is_running(b) {
                assert!(Instant::now() < gone, "broker {b} outlived kill -9");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let dir = cluster.dir.join(format!("broker-{b}/{topic}-{partition}"));
            let torn = match tear(&dir, damage) {
                Ok(torn) => torn,
                Err(e) => panic!("tearing {}: {e}", dir.display()),
            };
            eprintln!("broker {b}, {topic}-{partition}: {torn:?}");
            let log_path = cluster.dir.join(format!("broker-{b}.log"));
            let log_from = std::fs::metadata(&log_path).map_or(0, |m| m.len());
            tokio::time::sleep(hold).await;
            cluster.start_broker(b);
            // Recovery runs before the broker serves: its log must say where it cut.
            if torn.is_some() {
                let wanted = format!("{topic}-{partition}");
                let deadline = Instant::now() + Duration::from_secs(20);
                loop {
                    let log = std::fs::read(&log_path).unwrap_or_default();
                    let new = String::from_utf8_lossy(log.get(log_from as usize..).unwrap_or(&[]));
                    if new
                        .lines()
                        .any(|l| l.contains("recovery truncated the log") && l.contains(&wanted))
                    {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "broker {b} did not report cutting the torn tail of {wanted} ({torn:?}); its log since the restart:\n{new}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        Fault::Reassign {
            partition,
            dropped,
            first,
        } => {
            let Some(replicas) = cluster
                .try_metadata()
                .await
                .and_then(|m| m.partition(topic, partition).map(|p| p.replicas.clone()))
            else {
                eprintln!("reassignment of {topic}-{partition}: no metadata, not started");
                return None;
            };
            let kept: Vec<i32> = replicas.iter().copied().filter(|r| *r != dropped).collect();
            let shrunk = cluster
                .try_admin(
                    "reassign",
                    serde_json::json!({"topic": topic, "partition": partition, "replicas": kept}),
                )
                .await;
            eprintln!(
                "reassignment of {topic}-{partition} from {replicas:?} to {kept:?}: {shrunk:?}"
            );
            tokio::time::sleep(hold).await;
            if shrunk.is_err() {
                return None;
            }
            let mut grown = vec![first];
            grown.extend((0..BROKERS).filter(|b| *b != first));
            // Refused while a target broker is down (a fault still on) or the shrink is still
            // in flight: asked again until the faults let it through.
            let deadline = Instant::now() + Duration::from_secs(60);
            let body =
                serde_json::json!({"topic": topic, "partition": partition, "replicas": grown});
            loop {
                match cluster.try_admin("reassign", body.clone()).await {
                    Ok(()) => break,
                    Err(e) if Instant::now() < deadline => {
                        eprintln!(
                            "reassignment of {topic}-{partition} to {grown:?} refused, asking again: {e}"
                        );
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    Err(e) => panic!(
                        "reassignment of {topic}-{partition} to {grown:?} refused for 60 s: {e}"
                    ),
                }
            }
            eprintln!("reassignment of {topic}-{partition} to {grown:?} started");
            return Some((partition, grown));
        }
    }
    None
}

/// A file filling a broker's data filesystem (a tmpfs of its own); deleted when dropped, so
/// an aborted step frees the disk too.
struct Ballast {
    path: std::path::PathBuf,
    bytes: u64,
}

impl Ballast {
    const NAME: &str = "ballast";

    /// Writes until the filesystem refuses more (ENOSPC), in ever smaller pieces, then checks
    /// that a new file cannot take a byte either.
    fn fill(dir: &std::path::Path) -> std::io::Result<Self> {
        use std::io::Write;
        let path = dir.join(Self::NAME);
        let mut file = std::fs::File::create(&path)?;
        let mut ballast = Self { path, bytes: 0 };
        let chunk = vec![0u8; 1 << 20];
        for size in [1 << 20, 4096, 1] {
            loop {
                match file.write(&chunk[..size]) {
                    Ok(0) => break,
                    Ok(n) => ballast.bytes += n as u64,
                    Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                    Err(e) => return Err(e),
                }
            }
        }
        let probe = dir.join("ballast-probe");
        let wrote = std::fs::File::create(&probe).and_then(|mut f| f.write_all(&[0; 4096]));
        let _ = std::fs::remove_file(&probe);
        match wrote {
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => Ok(ballast),
            Err(e) => Err(e),
            Ok(()) => Err(std::io::Error::other(
                "the filesystem still takes writes after the ballast",
            )),
        }
    }
}

impl Drop for Ballast {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Damages the tail of the active (last) segment in partition directory `dir`; returns what
/// was done, or None when the segment holds no batch to damage.
fn tear(dir: &std::path::Path, damage: Damage) -> std::io::Result<Option<String>> {
    use std::io::Write;
    let entries = match std::fs::read_dir(dir) {
        // Not hosted here (any more): nothing to damage.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        entries => entries?,
    };
    let mut logs: Vec<std::path::PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    let Some(segment) = logs.pop() else {
        return Ok(None);
    };
    let bytes = std::fs::read(&segment)?;
    let Some((last, range)) = Batches::new(&bytes).last() else {
        return Ok(None);
    };
    let len = range.len() as u64;
    let name = segment.file_name().unwrap_or_default().to_string_lossy();
    let mut file = std::fs::OpenOptions::new().write(true).open(&segment)?;
    let what = match damage {
        Damage::Cut(n) => {
            let cut = 1 + u64::from(n) % (len - 1);
            file.set_len(range.end as u64 - cut)?;
            format!(
                "{name}: cut {cut} of the last batch's {len} bytes (offsets {}..={})",
                last.base_offset,
                last.last_offset()
            )
        }
        Damage::Garbage(n) => {
            let mut rng = StdRng::seed_from_u64(u64::from(n));
            let garbage: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            file.set_len(range.end as u64)?;
            std::io::Seek::seek(&mut file, std::io::SeekFrom::End(0))?;
            file.write_all(&garbage)?;
            format!(
                "{name}: {n} bytes of garbage after the last batch (offsets {}..={})",
                last.base_offset,
                last.last_offset()
            )
        }
        Damage::PartialBatch(percent) => {
            let mut next = bytes[range.clone()].to_vec();
            next[..8].copy_from_slice(&(last.last_offset() + 1).to_be_bytes());
            let part = 1 + (len - 1) * u64::from(percent) / 100;
            file.set_len(range.end as u64)?;
            std::io::Seek::seek(&mut file, std::io::SeekFrom::End(0))?;
            file.write_all(&next[..part as usize])?;
            format!(
                "{name}: {part} of {len} bytes of a next batch at offset {} after the last one",
                last.last_offset() + 1
            )
        }
    };
    Ok(Some(what))
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
/// start for any process that is gone, no ballast left (iptables cuts and ballasts go with
/// their step; this is in case one outlived it).
fn heal(cluster: &Cluster) {
    for b in 0..BROKERS {
        let _ = std::fs::remove_file(cluster.dir.join(format!("broker-{b}/{}", Ballast::NAME)));
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
    // Small segments: a schedule rolls each partition's log a few times, so full disks meet
    // rolls (new files, producer snapshots) and torn tails are not always in the first segment.
    cluster
        .create_topic_configured(
            topic,
            PARTITIONS,
            min_insync(seed),
            &[
                ("segment.bytes", SEGMENT_BYTES),
                ("fsync.policy", fsync_policy(seed)),
            ],
        )
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
        faults.spawn(run_step(Arc::clone(&cluster), topic, *s, broker_ip));
    }
    let mut moved: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    while let Some(done) = faults.join_next().await {
        if let Some((partition, replicas)) = done.expect("a fault step failed") {
            moved.insert(partition, replicas);
        }
    }
    // Reassignments complete too: the new replicas caught up and in sync, none in flight.
    cluster
        .wait_for(
            "every partition led with 3 in sync and every reassignment complete after the faults",
            60,
            |m| {
                (0..PARTITIONS).all(|i| {
                    m.partition(topic, i).is_some_and(|p| {
                        p.leader >= 0
                            && p.isr.len() == 3
                            && p.adding.is_empty()
                            && p.removing.is_empty()
                            && moved.get(&i).is_none_or(|r| *r == p.replicas)
                    })
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
    let (sent, acked, read, twice) = load
        .finish_listing_duplicates(&cluster.bootstrap, topic, &partitions)
        .await;
    let resent = match client_resends(&cluster, topic, &twice).await {
        Ok(n) => n,
        Err(e) => panic!("{e}"),
    };
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
        "schedule seed={seed} faults={steps:?}: sent {sent}, acknowledged {}, stored {}, re-sent by the client under a new producer id or epoch {resent}, group commits kept on {committed} partitions, violations 0",
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
    let mut run = tokio::spawn(run_schedule(
        Arc::clone(cluster),
        topic,
        seed,
        steps.to_vec(),
    ));
    // A schedule takes seconds; one that hangs must fail the run, not hold CI to its limit.
    let Ok(joined) = tokio::time::timeout(SCHEDULE_LIMIT, &mut run).await else {
        run.abort();
        tokio::time::sleep(Duration::from_millis(1000)).await;
        heal(cluster);
        return Err(format!(
            "the schedule did not finish within {SCHEDULE_LIMIT:?} (a hang: see the cluster logs)"
        ));
    };
    let result = match joined {
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
            Err(why)
        }
        ok => ok,
    };
    heal(cluster);
    result
}

/// Tells apart the two ways a value can be stored twice. The same producer id and epoch on
/// both copies: the broker appended a retry it should have recognised, a violation. Different
/// ones: the client sent the value again as a new record after taking a new producer id or
/// epoch (librdkafka does so after an OUT_OF_ORDER_SEQUENCE_NUMBER on a later batch in flight,
/// renumbering batches the broker already held), which Kafka stores twice as well. Returns how
/// many were such re-sends; an error describes a violation, or a copy it could not read.
async fn client_resends(
    cluster: &Cluster,
    topic: &'static str,
    twice: &[Duplicate],
) -> Result<usize, String> {
    for d in twice {
        let first = batch_at(cluster, topic, d.first).await;
        let second = batch_at(cluster, topic, d.second).await;
        let detail = format!(
            "value {} stored twice: at {:?} and {:?} (partition, offset)\n  first: {}\n  second: {}",
            d.value,
            d.first,
            d.second,
            first.as_ref().map_or_else(|e| e.clone(), |b| b.to_string()),
            second
                .as_ref()
                .map_or_else(|e| e.clone(), |b| b.to_string()),
        );
        match (first, second) {
            (Ok(a), Ok(b)) if a.producer != b.producer => {
                record(&format!("client re-send, not a violation: {detail}"));
            }
            _ => return Err(detail),
        }
    }
    Ok(twice.len())
}

/// The batch holding `at`, as the partition's leader has it.
struct BatchAt {
    base_offset: i64,
    last_offset: i64,
    leader_epoch: i32,
    /// Producer id and epoch.
    producer: (i64, i16),
    sequences: (i32, i32),
}

impl std::fmt::Display for BatchAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "batch {}..={} leader epoch {} producer id {} epoch {} sequence {}..={}",
            self.base_offset,
            self.last_offset,
            self.leader_epoch,
            self.producer.0,
            self.producer.1,
            self.sequences.0,
            self.sequences.1
        )
    }
}

async fn batch_at(
    cluster: &Cluster,
    topic: &'static str,
    (partition, offset): (i32, i64),
) -> Result<BatchAt, String> {
    let m = cluster
        .try_metadata()
        .await
        .ok_or("no metadata to read the copy")?;
    let leader = m
        .partition(topic, partition)
        .map(|p| p.leader)
        .ok_or("no such partition")?;
    let mut conn = Connection::connect(&broker_addr(cluster, leader), "describe")
        .await
        .map_err(|e| format!("leader {leader} unreachable: {e}"))?;
    let resp = conn
        .send(&fetch_request(topic, partition, offset), 12)
        .await
        .map_err(|e| format!("fetch from leader {leader} failed: {e}"))?;
    let data = resp
        .responses
        .first()
        .and_then(|t| t.partitions.first())
        .and_then(|p| p.records.clone())
        .unwrap_or_default();
    let (h, _) = Batches::new(&data)
        .next()
        .ok_or_else(|| format!("leader {leader} returned no batch at {offset}"))?;
    Ok(BatchAt {
        base_offset: h.base_offset,
        last_offset: h.last_offset(),
        leader_epoch: h.partition_leader_epoch,
        producer: (h.producer_id, h.producer_epoch),
        sequences: (h.base_sequence, h.last_sequence()),
    })
}

/// A consumer's Fetch (sent as v12) of one partition from `offset`.
fn fetch_request(topic: &'static str, partition: i32, offset: i64) -> FetchRequest {
    consumer_fetch(topic, partition, offset, 0, 0, 1 << 20, "")
}

/// Each broker's data directory on a tmpfs of its own (so a ballast fills one broker's disk
/// only), unmounted when dropped, on a failing run's unwinding too (after a copy of the data
/// next to it, when `keep` is set). A tmpfs holds the broker's data only: its log is next to
/// the data directory, on the ordinary disk.
struct Disks {
    mounts: Vec<std::path::PathBuf>,
    keep: AtomicBool,
}

impl Disks {
    /// Big enough for a schedule's data (each schedule's topic is deleted after it): on an
    /// idle machine one schedule's load wrote 65 MB to every replica, filling 64 MiB disks
    /// with no fault drawn. Still filled by a ballast in a moment (tmpfs takes RAM only for
    /// what is written).
    const SIZE: &str = "size=512m";

    fn mount(dir: &std::path::Path) -> Result<Self, String> {
        let mut disks = Self {
            mounts: Vec::new(),
            keep: AtomicBool::new(false),
        };
        for b in 0..BROKERS {
            let mnt = dir.join(format!("broker-{b}"));
            std::fs::create_dir_all(&mnt).map_err(|e| format!("{}: {e}", mnt.display()))?;
            let out = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", Self::SIZE, "tmpfs"])
                .arg(&mnt)
                .output()
                .map_err(|e| format!("running mount: {e}"))?;
            if !out.status.success() {
                // Dropping `disks` unmounts those already mounted.
                return Err(format!(
                    "mount -t tmpfs on {} failed: {}",
                    mnt.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            disks.mounts.push(mnt);
        }
        Ok(disks)
    }
}

impl Drop for Disks {
    fn drop(&mut self) {
        for mnt in &self.mounts {
            if self.keep.load(Ordering::Relaxed) {
                let _ = std::process::Command::new("cp")
                    .arg("-a")
                    .arg(mnt)
                    .arg(mnt.with_extension("kept"))
                    .status();
            }
            let unmounted = std::process::Command::new("umount")
                .arg(mnt)
                .status()
                .is_ok_and(|s| s.success());
            if !unmounted {
                // Busy (a process still in it): detached now, freed once it lets go.
                let _ = std::process::Command::new("umount")
                    .arg("-l")
                    .arg(mnt)
                    .status();
            }
        }
    }
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
    // Declared before the cluster, so dropped after it: the brokers are stopped before their
    // filesystems go.
    let disks = if isolation {
        Disks::mount(dir.path())
    } else {
        Err("STRAND_SKIP_ROOT_TESTS is set".into())
    };
    let disks = match disks {
        Ok(d) => Some(d),
        Err(why) => {
            eprintln!("full disks are not drawn: {why}");
            None
        }
    };
    let only: Option<Vec<String>> = std::env::var("STRAND_FAULT_KINDS").ok().map(|v| {
        v.split(',')
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty())
            .collect()
    });
    if let Some(unknown) = only.iter().flatten().find(|k| !KINDS.contains(&k.as_str())) {
        panic!("STRAND_FAULT_KINDS names {unknown:?}; the kinds are {KINDS:?}");
    }
    let kinds = Kinds {
        isolation,
        full_disk: disks.is_some(),
        only,
    };
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
        let steps = schedule(seed, &kinds);
        eprintln!(
            "schedule {ran}: seed {seed} (min.insync.replicas={}, fsync.policy={}): {steps:?}",
            min_insync(seed),
            fsync_policy(seed)
        );
        match attempt(&cluster, &mut n, seed, &steps).await {
            Ok(line) => {
                eprintln!("{line}");
                record(&line);
            }
            Err(why) => {
                eprintln!("schedule seed {seed} FAILED: {why}");
                let shrunk = shrink(&cluster, &mut n, seed, steps.clone()).await;
                // The logs and data stay for a look (the processes are stopped; the data
                // directories are copied off their tmpfs before it is unmounted).
                if let Some(d) = &disks {
                    d.keep.store(true, Ordering::Relaxed);
                }
                let kept = dir.keep();
                eprintln!("cluster directory kept: {}", kept.display());
                let focus = std::env::var("STRAND_FAULT_KINDS")
                    .map(|k| format!("STRAND_FAULT_KINDS={k} "))
                    .unwrap_or_default();
                panic!(
                    "fault schedule seed {seed} failed: {why}\nfaults: {steps:?}\nshrunk to (may not fail every time): {shrunk:?}\nreplay: {focus}STRAND_FAULT_SEED={seed} STRAND_FAULT_SCHEDULES=1 cargo test -p broker --test fault_schedules -- --nocapture"
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
/// controller is down, reassignments one at a time, at most one torn tail and never with
/// min.insync.replicas 1, times in range, no kind drawn that the run cannot or may not use, and
/// the same schedule for the same seed.
#[test]
fn schedules_are_reproducible_and_well_formed() {
    let all = Kinds::all();
    let mut kinds = std::collections::HashSet::new();
    for seed in 0..2000 {
        let steps = schedule(seed, &all);
        assert_eq!(steps, schedule(seed, &all), "seed {seed}");
        assert!((1..=4).contains(&steps.len()), "seed {seed}: {steps:?}");
        let tears = steps
            .iter()
            .filter(|s| matches!(s.fault, Fault::Tear { .. }))
            .count();
        assert!(
            tears <= 1 && (tears == 0 || min_insync(seed) == 2),
            "seed {seed}: {steps:?}"
        );
        for (i, a) in steps.iter().enumerate() {
            kinds.insert(a.fault.kind());
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
                assert!(
                    !(a.fault.kind() == "reassign" && b.fault.kind() == "reassign"),
                    "seed {seed}: two reassignments at once: {a:?} {b:?}"
                );
                let partition = |s: &Step| match s.fault {
                    Fault::Tear { partition, .. } | Fault::Reassign { partition, .. } => {
                        Some(partition)
                    }
                    _ => None,
                };
                assert!(
                    partition(a).is_none() || partition(a) != partition(b),
                    "seed {seed}: a torn tail and a reassignment of one partition at once: {a:?} {b:?}"
                );
            }
        }
        let without_root = Kinds {
            isolation: false,
            full_disk: false,
            only: None,
        };
        assert!(
            schedule(seed, &without_root)
                .iter()
                .all(|s| !matches!(s.fault, Fault::Isolate(_) | Fault::FillDisk(_))),
            "seed {seed}: isolation or a full disk where root is not available"
        );
        let focused = Kinds {
            only: Some(vec!["tear".into(), "fill-disk".into()]),
            ..Kinds::all()
        };
        assert!(
            schedule(seed, &focused)
                .iter()
                .all(|s| matches!(s.fault.kind(), "tear" | "fill-disk")),
            "seed {seed}: a kind STRAND_FAULT_KINDS left out"
        );
    }
    assert_eq!(
        kinds.len(),
        KINDS.len(),
        "every kind of fault is drawn: {kinds:?}"
    );
}
