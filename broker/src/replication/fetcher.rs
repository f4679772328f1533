//! Follower fetch: one task per leader broker fetches every partition this broker follows
//! from it (Fetch v12 with our replica id and each partition's last fetched epoch), truncates
//! where the leader reports a diverging epoch, appends what it gets verbatim, and takes the
//! leader's high watermark.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::client::Connection;
use crate::partition::Partition;

const FETCH_VERSION: i16 = 12;

#[derive(Debug, Clone)]
pub struct FetcherSettings {
    pub max_wait: Duration,
    pub partition_max_bytes: i32,
    pub backoff: Duration,
    /// Source address of fetch connections (a multi-homed broker's own address).
    pub source: Option<std::net::IpAddr>,
}

impl Default for FetcherSettings {
    fn default() -> Self {
        Self {
            max_wait: Duration::from_millis(500),
            partition_max_bytes: 1 << 20,
            backoff: Duration::from_millis(200),
            source: None,
        }
    }
}

type Key = (String, i32);

struct Fetcher {
    addr: String,
    partitions: Arc<Mutex<BTreeMap<Key, Arc<Partition>>>>,
    wake: Arc<Notify>,
    stop: watch::Sender<bool>,
}

/// The follower fetch tasks of this broker, one per leader.
pub struct FetcherManager {
    node_id: i32,
    settings: FetcherSettings,
    fetchers: Mutex<HashMap<i32, Fetcher>>,
}

impl FetcherManager {
    pub fn new(node_id: i32, settings: FetcherSettings) -> Arc<Self> {
        Arc::new(Self {
            node_id,
            settings,
            fetchers: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Fetcher>> {
        self.fetchers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Follows `partition` from broker `leader` at `addr` (host:port), moving it off any other
    /// leader's fetcher.
    pub fn follow(&self, partition: Arc<Partition>, leader: i32, addr: String) {
        let key = (partition.topic.clone(), partition.index);
        let mut fetchers = self.lock();
        for (id, f) in fetchers.iter() {
            if *id != leader {
                f.partitions
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&key);
            }
        }
        let restart = fetchers.get(&leader).is_some_and(|f| f.addr != addr);
        if restart && let Some(old) = fetchers.remove(&leader) {
            let _ = old.stop.send(true);
        }
        let f = fetchers.entry(leader).or_insert_with(|| {
            let f = Fetcher {
                addr: addr.clone(),
                partitions: Arc::default(),
                wake: Arc::new(Notify::new()),
                stop: watch::Sender::new(false),
            };
            tokio::spawn(run(
                self.node_id,
                leader,
                addr,
                self.settings.clone(),
                f.partitions.clone(),
                f.wake.clone(),
                f.stop.subscribe(),
            ));
            f
        });
        f.partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, partition);
        f.wake.notify_one();
    }

    /// Stops following a partition (it became leader, or left this broker).
    pub fn unfollow(&self, topic: &str, index: i32) {
        let key = (topic.to_string(), index);
        for f in self.lock().values() {
            f.partitions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
        }
    }

    /// Stops every fetcher.
    pub fn shutdown(&self) {
        for (_, f) in self.lock().drain() {
            let _ = f.stop.send(true);
        }
    }
}

fn request(
    node_id: i32,
    settings: &FetcherSettings,
    parts: &BTreeMap<Key, Arc<Partition>>,
) -> FetchRequest {
    let mut topics: BTreeMap<&str, FetchTopic> = BTreeMap::new();
    for ((topic, _), p) in parts {
        let (leo, last_epoch) = {
            let log = p.log();
            (log.log_end_offset(), log.latest_epoch().unwrap_or(-1))
        };
        let mut fp = FetchPartition::default();
        fp.partition = p.index;
        fp.fetch_offset = leo;
        fp.last_fetched_epoch = last_epoch;
        fp.current_leader_epoch = p.leader_epoch();
        fp.partition_max_bytes = settings.partition_max_bytes;
        fp.log_start_offset = -1;
        let t = topics.entry(topic.as_str()).or_insert_with(|| {
            let mut t = FetchTopic::default();
            t.topic = TopicName(StrBytes::from_string(topic.clone()));
            t
        });
        t.partitions.push(fp);
    }
    let mut r = FetchRequest::default();
    r.replica_id = node_id.into();
    r.max_wait_ms = settings.max_wait.as_millis() as i32;
    r.min_bytes = 1;
    r.max_bytes = 16 << 20;
    r.session_id = 0;
    r.session_epoch = -1;
    r.topics = topics.into_values().collect();
    r
}

/// Applies one fetch response. Returns the partitions that failed (an error code, a failed
/// append or truncation): they sit out the backoff before being fetched again (Kafka's
/// delayed partitions), so an error the leader answers at once cannot make the fetcher spin.
///
/// A partition's answer applies only if nothing changed since the request was built (Kafka
/// checks the fetch state's epoch the same way): still a follower at the leader epoch it was
/// fetched for, and its log end still the fetch offset. Otherwise it is dropped and fetched
/// again: a response from a leadership that ended must not write into a log that has since
/// become a leader, or been truncated.
fn apply(
    req: &FetchRequest,
    resp: &FetchResponse,
    parts: &BTreeMap<Key, Arc<Partition>>,
) -> Vec<Key> {
    let sent: HashMap<(&str, i32), &FetchPartition> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| ((t.topic.as_str(), p.partition), p))
        })
        .collect();
    let mut failed = Vec::new();
    for t in &resp.responses {
        for pd in &t.partitions {
            let key = (t.topic.as_str().to_string(), pd.partition_index);
            let (Some(p), Some(fp)) = (
                parts.get(&key),
                sent.get(&(t.topic.as_str(), pd.partition_index)),
            ) else {
                continue;
            };
            if p.is_leader() || p.leader_epoch() != fp.current_leader_epoch {
                debug!(topic = %p.topic, partition = p.index, fetched_at_epoch = fp.current_leader_epoch, "dropping a fetch answer for a leadership that ended");
                continue;
            }
            if pd.error_code == ResponseError::OffsetOutOfRange.code() {
                if !out_of_range(p, pd) {
                    failed.push(key);
                }
                continue;
            }
            if pd.error_code != 0 {
                debug!(topic = %p.topic, partition = p.index, error = pd.error_code, "follower fetch error");
                failed.push(key);
                continue;
            }
            let mut log = p.log();
            if log.log_end_offset() != fp.fetch_offset {
                continue;
            }
            if pd.diverging_epoch.epoch >= 0 {
                let to = truncation_offset(
                    &log,
                    pd.diverging_epoch.epoch,
                    pd.diverging_epoch.end_offset,
                );
                info!(topic = %p.topic, partition = p.index, epoch = pd.diverging_epoch.epoch, leader_end_offset = pd.diverging_epoch.end_offset, to, "log diverged from the leader; truncating");
                if let Err(e) = log.truncate_to(to) {
                    warn!(topic = %p.topic, partition = p.index, error = %e, "truncation failed");
                    failed.push(key);
                }
                continue;
            }
            if let Some(records) = pd.records.as_ref().filter(|r| !r.is_empty()) {
                match log.append_replicated(records, crate::clock::now_ms()) {
                    Ok(_) => {}
                    Err(e) => {
                        warn!(topic = %p.topic, partition = p.index, error = %e, "follower append failed");
                        failed.push(key.clone());
                    }
                }
            }
            let leo = log.log_end_offset();
            drop(log);
            p.follower_high_watermark(pd.high_watermark, leo);
            // Follow the leader's log start offset (Kafka's maybeIncrementLogStartOffset):
            // segments the leader deleted (retention, an offsets-log snapshot) go here too.
            if pd.log_start_offset > 0 {
                let below = pd.log_start_offset.min(p.high_watermark());
                if let Err(e) = p.log().delete_segments_below(below) {
                    warn!(topic = %p.topic, partition = p.index, error = %e, "cannot delete segments below the leader's log start");
                }
            }
        }
    }
    failed
}

/// Where a follower truncates when the leader answers that `leader_epoch` ends at
/// `leader_end` in its log (Kafka's `getOffsetTruncationState`): at the end of the same epoch
/// in both logs, whichever is earlier. If this log has no such epoch (it skipped it), first to
/// the end of its own largest epoch below it; the next fetch then names that epoch and the
/// leader answers again. Truncating only to the leader's end, as before, kept a tail of a
/// newer epoch the leader never had, and the follower asked the same question forever.
fn truncation_offset(log: &crate::storage::log::Log, leader_epoch: i32, leader_end: i64) -> i64 {
    let leo = log.log_end_offset();
    match log.epochs().end_offset_for(leader_epoch, leo) {
        Some((epoch, end)) if epoch == leader_epoch => end.min(leader_end).min(leo),
        Some((_, end)) => end.min(leo),
        None => leader_end.min(leo),
    }
}

/// OFFSET_OUT_OF_RANGE from the leader. Below its log start (the leader deleted what this
/// follower still needs: retention, an offsets-log snapshot, a new replica starting at 0),
/// the follower's log restarts empty at the leader's log start (Kafka's
/// truncateFullyAndStartAt) and fetching continues from there. Above its log end, the
/// diverging-epoch answer normally truncates first; otherwise it is retried after the
/// backoff. Returns whether the partition can be fetched again at once.
fn out_of_range(p: &Partition, pd: &PartitionData) -> bool {
    let mut log = p.log();
    let leo = log.log_end_offset();
    if pd.log_start_offset <= leo {
        warn!(topic = %p.topic, partition = p.index, log_end_offset = leo, leader_log_start = pd.log_start_offset, "fetch offset out of range on the leader, not below its log start; retrying");
        return false;
    }
    warn!(topic = %p.topic, partition = p.index, log_end_offset = leo, leader_log_start = pd.log_start_offset, "behind the leader's log start; restarting the log there");
    if let Err(e) = log.truncate_fully_and_start_at(pd.log_start_offset) {
        warn!(topic = %p.topic, partition = p.index, error = %e, "cannot restart the log at the leader's log start");
        return false;
    }
    let leo = log.log_end_offset();
    drop(log);
    p.follower_high_watermark(pd.high_watermark, leo);
    true
}

async fn run(
    node_id: i32,
    leader: i32,
    addr: String,
    settings: FetcherSettings,
    partitions: Arc<Mutex<BTreeMap<Key, Arc<Partition>>>>,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut conn: Option<Connection> = None;
    // Partitions that failed, and until when they sit out.
    let mut delayed: HashMap<Key, Instant> = HashMap::new();
    loop {
        if *stop.borrow() {
            return;
        }
        let mut parts = partitions.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let now = Instant::now();
        delayed.retain(|k, until| *until > now && parts.contains_key(k));
        parts.retain(|k, _| !delayed.contains_key(k));
        if parts.is_empty() {
            let until = delayed.values().min().copied();
            tokio::select! {
                _ = wake.notified() => continue,
                _ = async {
                    match until {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => continue,
                _ = stop.changed() => return,
            }
        }
        if conn.is_none() {
            match Connection::connect_from(&addr, &format!("replica-{node_id}"), settings.source)
                .await
            {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    debug!(leader, %addr, error = %e, "cannot reach the leader");
                    tokio::select! {
                        _ = tokio::time::sleep(settings.backoff) => continue,
                        _ = stop.changed() => return,
                    }
                }
            }
        }
        let req = request(node_id, &settings, &parts);
        let Some(c) = conn.as_mut() else { continue };
        let sent = tokio::select! {
            r = tokio::time::timeout(settings.max_wait + Duration::from_secs(10), c.send(&req, FETCH_VERSION)) => r,
            _ = stop.changed() => return,
        };
        match sent {
            Ok(Ok(resp)) => {
                // A failed partition (e.g. not leader any more: wait for metadata) sits out
                // the backoff; when all have, the loop waits above.
                let until = Instant::now() + settings.backoff;
                for key in apply(&req, &resp, &parts) {
                    delayed.insert(key, until);
                }
            }
            Ok(Err(e)) => {
                debug!(leader, error = %e, "fetch failed; reconnecting");
                conn = None;
                tokio::time::sleep(settings.backoff).await;
            }
            Err(_) => {
                conn = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::{BatchHeader, test_support::batch};
    use crate::storage::log::{Log, OpenHints};
    use crate::topic_config::TopicConfig;

    /// A follower's log with `(epoch, records)` batches appended in order.
    fn log_with(dir: &std::path::Path, batches: &[(i32, i32)]) -> Log {
        let (mut log, _) = Log::open(dir, TopicConfig::default(), OpenHints::default()).unwrap();
        for (epoch, n) in batches {
            let b = batch(*n, 1_000, (-1, -1, -1), 4);
            log.append_as_leader(&b, &BatchHeader::parse(&b).unwrap(), *epoch, 1_000)
                .unwrap();
        }
        log
    }

    #[test]
    fn truncation_stops_at_the_end_of_the_epoch_both_logs_share() {
        let dir = tempfile::tempdir().unwrap();
        // Epoch 1 at 0-9, epoch 3 at 10-14 (this broker led epoch 3; the leader never had it).
        let log = log_with(&dir.path().join("a"), &[(1, 10), (3, 5)]);
        // The leader's epoch 1 ran to 12: this log's ended at 10, so truncate there.
        assert_eq!(truncation_offset(&log, 1, 12), 10);
        // The leader's epoch 1 ended at 8: there.
        assert_eq!(truncation_offset(&log, 1, 8), 8);
        // The leader names epoch 2, which this log never had: to the end of its epoch 1 (10),
        // not to the leader's end (which would keep epoch 3's records 10-14).
        assert_eq!(truncation_offset(&log, 2, 20), 10);
        // An epoch older than any here: everything goes.
        assert_eq!(truncation_offset(&log, 0, 5), 0);
    }

    /// The follower that got stuck on "batch epoch N is older than the log's N+1" during
    /// leader moves: it led epoch N+1 for a moment without appending (an epoch entry at its
    /// log end), then followed a leader with more epoch-N records. Its truncation to its own
    /// log end must drop that empty epoch, so that its next fetch names epoch N and succeeds.
    #[test]
    fn an_empty_epoch_at_the_log_end_goes_with_the_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = log_with(&dir.path().join("a"), &[(4, 10)]);
        log.assign_leader_epoch(5);
        assert_eq!(log.latest_epoch(), Some(5));
        // The new leader (epoch 6) has epoch 4 up to 15: it answers epoch 4, end 15.
        let to = truncation_offset(&log, 4, 15);
        assert_eq!(to, 10);
        log.truncate_to(to).unwrap();
        assert_eq!(log.latest_epoch(), Some(4), "{:?}", log.epochs().entries());
        assert_eq!(log.log_end_offset(), 10);
        // And it stays dropped after a restart (the checkpoint was rewritten).
        drop(log);
        let (log, _) = Log::open(
            &dir.path().join("a"),
            TopicConfig::default(),
            OpenHints::default(),
        )
        .unwrap();
        assert_eq!(log.latest_epoch(), Some(4));
    }
}
