//! Follower fetch: one task per leader broker fetches every partition this broker follows
//! from it (Fetch v12 with our replica id and each partition's last fetched epoch), truncates
//! where the leader reports a diverging epoch, appends what it gets verbatim, and takes the
//! leader's high watermark. It keeps a fetch session (KIP-227) with each leader: a fetch names
//! only the partitions whose position changed since the leader last heard it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::client::Connection;
use crate::partition::{AnswerOutcome, FollowerApplied, LeaderAnswer, Partition};

const FETCH_VERSION: i16 = 12;
/// A leader unreachable this long is worth a warning; repeated at most this often.
const UNREACHABLE_WARN_AFTER: Duration = Duration::from_secs(5);
const UNREACHABLE_WARN_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct FetcherSettings {
    pub max_wait: Duration,
    pub partition_max_bytes: i32,
    pub backoff: Duration,
    /// How long a connection attempt to the leader may take. Without a bound, a connect to an
    /// address nobody answers any more (a replaced pod's IP, still in a DNS cache) waits out the
    /// kernel's SYN retries, about two minutes, while the partition stays out of the ISR.
    pub connect_timeout: Duration,
    /// Source address of fetch connections (a multi-homed broker's own address).
    pub source: Option<std::net::IpAddr>,
    /// The cluster's secret: fetch connections authenticate as the broker user with it.
    pub secret: Option<Arc<crate::auth::ClusterSecret>>,
}

impl Default for FetcherSettings {
    fn default() -> Self {
        Self {
            max_wait: Duration::from_millis(500),
            partition_max_bytes: 1 << 20,
            backoff: Duration::from_millis(200),
            connect_timeout: Duration::from_secs(3),
            source: None,
            secret: None,
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
    /// Set by `shutdown`: metadata applied after it (a late apply, a retry) starts nothing
    /// that would append while the broker closes its logs.
    stopped: std::sync::atomic::AtomicBool,
}

impl FetcherManager {
    pub fn new(node_id: i32, settings: FetcherSettings) -> Arc<Self> {
        Arc::new(Self {
            node_id,
            settings,
            fetchers: Mutex::new(HashMap::new()),
            stopped: std::sync::atomic::AtomicBool::new(false),
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
        // Checked under the lock `shutdown` drains with, so no fetcher starts after it.
        if self.stopped.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
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
        let mut fetchers = self.lock();
        self.stopped
            .store(true, std::sync::atomic::Ordering::Release);
        for (_, f) in fetchers.drain() {
            let _ = f.stop.send(true);
        }
    }
}

/// Where this follower stands in each partition, as a Fetch names it; computed from the logs
/// every round.
fn positions(
    settings: &FetcherSettings,
    parts: &BTreeMap<Key, Arc<Partition>>,
) -> BTreeMap<Key, FetchPartition> {
    let mut out = BTreeMap::new();
    for (key, p) in parts {
        let (leo, last_epoch, log_start) = {
            let log = p.log();
            (
                log.log_end_offset(),
                log.latest_epoch().unwrap_or(-1),
                log.log_start_offset(),
            )
        };
        let mut fp = FetchPartition::default();
        fp.partition = p.index;
        fp.fetch_offset = leo;
        fp.last_fetched_epoch = last_epoch;
        fp.current_leader_epoch = p.leader_epoch();
        fp.partition_max_bytes = settings.partition_max_bytes;
        // The leader's DeleteRecords waits until its followers' starts reach the offset.
        fp.log_start_offset = log_start;
        out.insert(key.clone(), fp);
    }
    out
}

/// This follower's fetch session with one leader (KIP-227; Kafka's FetchSessionHandler): the
/// positions the leader's session holds for it. A request names only the partitions whose
/// position differs from those (an append, a truncation, a restart at the log start, a new
/// leader epoch: anything), so the leader never reads an omitted partition at an offset this
/// log does not end at, and forgets the partitions no longer fetched (moved away, or sitting
/// out a backoff). Any doubt (an error, a lost answer, a reconnect) falls back to a full fetch.
#[derive(Debug, Default)]
struct Session {
    /// 0: none.
    id: i32,
    /// 0: the next fetch is a full one (closing `id` if set, opening a new session).
    next_epoch: i32,
    held: HashMap<Key, FetchPartition>,
}

impl Session {
    /// Starts over with a full fetch that also closes the current session on the leader.
    fn restart(&mut self) {
        self.next_epoch = 0;
        self.held.clear();
    }

    /// Records the leader's answer to `req` (which `request` built from this state).
    fn answered(
        &mut self,
        req: &FetchRequest,
        resp: &FetchResponse,
        positions: &BTreeMap<Key, FetchPartition>,
    ) {
        if resp.error_code != 0 || resp.session_id == 0 {
            // FETCH_SESSION_ID_NOT_FOUND, INVALID_FETCH_SESSION_EPOCH, or no session given.
            if resp.session_id == 0 && resp.error_code == 0 {
                self.id = 0;
            }
            self.restart();
            return;
        }
        if req.session_epoch == 0 {
            self.id = resp.session_id;
            self.held = positions
                .iter()
                .map(|(k, p)| (k.clone(), p.clone()))
                .collect();
        } else {
            if resp.session_id != self.id {
                self.restart();
                return;
            }
            for t in &req.forgotten_topics_data {
                for p in &t.partitions {
                    self.held.remove(&(t.topic.as_str().to_string(), *p));
                }
            }
            for t in &req.topics {
                for p in &t.partitions {
                    self.held
                        .insert((t.topic.as_str().to_string(), p.partition), p.clone());
                }
            }
        }
        self.next_epoch = if req.session_epoch == i32::MAX {
            1
        } else {
            req.session_epoch + 1
        };
    }
}

/// The next Fetch: full (every partition) when there is no session, incremental otherwise.
fn request(
    node_id: i32,
    settings: &FetcherSettings,
    positions: &BTreeMap<Key, FetchPartition>,
    session: &Session,
) -> FetchRequest {
    let full = session.next_epoch == 0;
    let mut topics: BTreeMap<&str, FetchTopic> = BTreeMap::new();
    for ((topic, _), fp) in positions
        .iter()
        .filter(|(key, fp)| full || session.held.get(*key) != Some(*fp))
    {
        let t = topics.entry(topic.as_str()).or_insert_with(|| {
            let mut t = FetchTopic::default();
            t.topic = TopicName(StrBytes::from_string(topic.clone()));
            t
        });
        t.partitions.push(fp.clone());
    }
    let mut r = FetchRequest::default();
    r.replica_id = node_id.into();
    r.max_wait_ms = settings.max_wait.as_millis() as i32;
    r.min_bytes = 1;
    r.max_bytes = 16 << 20;
    r.session_id = session.id;
    r.session_epoch = session.next_epoch;
    r.topics = topics.into_values().collect();
    if !full {
        let mut forgotten: BTreeMap<&str, ForgottenTopic> = BTreeMap::new();
        for (topic, index) in session.held.keys().filter(|k| !positions.contains_key(*k)) {
            forgotten
                .entry(topic.as_str())
                .or_insert_with(|| {
                    let mut t = ForgottenTopic::default();
                    t.topic = TopicName(StrBytes::from_string(topic.clone()));
                    t
                })
                .partitions
                .push(*index);
        }
        r.forgotten_topics_data = forgotten.into_values().collect();
    }
    r
}

/// Applies one fetch response through each partition's `append_as_follower`. Returns the
/// partitions that failed (an error code, a failed append or truncation): they sit out the
/// backoff before being fetched again (Kafka's delayed partitions), so an error the leader
/// answers at once cannot make the fetcher spin; and whether an answer was dropped as stale
/// (the leader's session then holds as told what this follower never took in).
fn apply(
    positions: &BTreeMap<Key, FetchPartition>,
    resp: &FetchResponse,
    parts: &BTreeMap<Key, Arc<Partition>>,
) -> (Vec<Key>, bool) {
    let mut failed = Vec::new();
    let mut stale = false;
    for t in &resp.responses {
        for pd in &t.partitions {
            let key = (t.topic.as_str().to_string(), pd.partition_index);
            // A partition the request left out was read at the position the session holds,
            // which is this one (else the request would have named it).
            let (Some(p), Some(fp)) = (parts.get(&key), positions.get(&key)) else {
                continue;
            };
            let outcome = if pd.error_code == ResponseError::OffsetOutOfRange.code() {
                AnswerOutcome::OutOfRange
            } else if pd.error_code != 0 {
                debug!(topic = %p.topic, partition = p.index, error = pd.error_code, "follower fetch error");
                failed.push(key);
                continue;
            } else if pd.diverging_epoch.epoch >= 0 {
                AnswerOutcome::Diverging {
                    epoch: pd.diverging_epoch.epoch,
                    end_offset: pd.diverging_epoch.end_offset,
                }
            } else {
                AnswerOutcome::Records(pd.records.as_deref().unwrap_or_default())
            };
            let answer = LeaderAnswer {
                fetched_epoch: fp.current_leader_epoch,
                fetch_offset: fp.fetch_offset,
                outcome,
                high_watermark: pd.high_watermark,
                log_start_offset: pd.log_start_offset,
            };
            match p.append_as_follower(answer) {
                Ok(FollowerApplied::Appended { .. }) => {}
                Ok(FollowerApplied::Stale) => {
                    stale = true;
                    debug!(topic = %p.topic, partition = p.index, fetched_at_epoch = fp.current_leader_epoch, "dropping a fetch answer the partition has moved past");
                }
                Ok(FollowerApplied::Truncated { to }) => {
                    info!(topic = %p.topic, partition = p.index, epoch = pd.diverging_epoch.epoch, leader_end_offset = pd.diverging_epoch.end_offset, to, "log diverged from the leader; truncated");
                }
                Ok(FollowerApplied::Restarted { at }) => {
                    warn!(topic = %p.topic, partition = p.index, fetch_offset = fp.fetch_offset, leader_log_start = at, "behind the leader's log start; restarted the log there");
                }
                Ok(FollowerApplied::Retry) => {
                    warn!(topic = %p.topic, partition = p.index, fetch_offset = fp.fetch_offset, leader_log_start = pd.log_start_offset, "fetch offset out of range on the leader, not below its log start; retrying");
                    failed.push(key);
                }
                Err(e) => {
                    warn!(topic = %p.topic, partition = p.index, error = %e, "cannot apply the leader's answer");
                    failed.push(key);
                }
            }
        }
    }
    (failed, stale)
}

/// fsyncs what partitions under `fsync.policy=before-ack` hold beyond their last fsync, before
/// a fetch reports it (see `Partition::flush_as_follower`). Asked before every fetch rather
/// than after each append, so that nothing reaches a report unsynced: not records an append
/// wrote before failing midway, nor those a partition brought from another fetcher. Off the
/// runtime: an fsync blocks.
fn flush_before_reporting(parts: &BTreeMap<Key, Arc<Partition>>) {
    let unflushed: Vec<&Arc<Partition>> = parts
        .values()
        .filter(|p| p.unflushed_as_follower())
        .collect();
    if unflushed.is_empty() {
        return;
    }
    crate::blocking::off_runtime(|| {
        for p in unflushed {
            if let Err(e) = p.flush_as_follower() {
                error!(topic = %p.topic, partition = p.index, error = %e, "fsync failed; this replica is no longer fetched until the broker restarts");
            }
        }
    });
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
    let mut unreachable_since: Option<Instant> = None;
    let mut last_warn: Option<Instant> = None;
    // Partitions that failed, and until when they sit out.
    let mut delayed: HashMap<Key, Instant> = HashMap::new();
    let mut session = Session::default();
    loop {
        if *stop.borrow() {
            return;
        }
        let mut parts = partitions.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let now = Instant::now();
        delayed.retain(|k, until| *until > now && parts.contains_key(k));
        parts.retain(|k, _| !delayed.contains_key(k));
        flush_before_reporting(&parts);
        // A replica whose fsync failed is never fetched again: its fetch offset would
        // report records that may not be on disk.
        parts.retain(|_, p| !p.storage_failed());
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
            let client_id = format!("replica-{node_id}");
            let attempt = tokio::time::timeout(settings.connect_timeout, async {
                let mut c = Connection::connect_from(&addr, &client_id, settings.source).await?;
                if let Some(secret) = &settings.secret {
                    c.authenticate(secret).await?;
                }
                Ok::<_, crate::replication::client::ClientError>(c)
            });
            let result = tokio::select! {
                r = attempt => r,
                _ = stop.changed() => return,
            };
            let error = match result {
                Ok(Ok(c)) => {
                    if let Some(since) = unreachable_since.take() {
                        info!(leader, %addr, after_ms = since.elapsed().as_millis() as u64, "reached the leader again");
                    }
                    conn = Some(c);
                    None
                }
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some(format!(
                    "no connection within {} ms",
                    settings.connect_timeout.as_millis()
                )),
            };
            if let Some(error) = error {
                // Debug for a blip, warn (every 30 s at most) once it lasts.
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= UNREACHABLE_WARN_AFTER
                    && last_warn.is_none_or(|t| t.elapsed() >= UNREACHABLE_WARN_EVERY)
                {
                    warn!(leader, %addr, %error, for_ms = since.elapsed().as_millis() as u64, "cannot reach the leader");
                    last_warn = Some(Instant::now());
                } else {
                    debug!(leader, %addr, %error, "cannot reach the leader");
                }
                tokio::select! {
                    _ = tokio::time::sleep(settings.backoff) => continue,
                    _ = stop.changed() => return,
                }
            }
        }
        let positions = positions(&settings, &parts);
        let req = request(node_id, &settings, &positions, &session);
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
                // Large appends (they may roll a segment: an fsync of up to a segment) run off
                // the runtime, as a leader's do (`api::produce::LARGE_APPEND`).
                let bytes: usize = resp
                    .responses
                    .iter()
                    .flat_map(|t| &t.partitions)
                    .map(|p| p.records.as_ref().map_or(0, |r| r.len()))
                    .sum();
                let (failed, stale) = if bytes >= crate::api::produce::LARGE_APPEND {
                    crate::blocking::off_runtime(|| apply(&positions, &resp, &parts))
                } else {
                    apply(&positions, &resp, &parts)
                };
                for key in failed {
                    delayed.insert(key, until);
                }
                session.answered(&req, &resp, &positions);
                if stale {
                    // The leader counts that answer as told (a high watermark, say) and
                    // would not send it again: start over with a full fetch.
                    session.restart();
                }
            }
            Ok(Err(e)) => {
                debug!(leader, error = %e, "fetch failed; reconnecting");
                conn = None;
                session.restart();
                tokio::time::sleep(settings.backoff).await;
            }
            Err(_) => {
                debug!(leader, "no fetch answer in time; reconnecting");
                conn = None;
                session.restart();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::error::ResponseError;

    fn pos(offset: i64) -> FetchPartition {
        let mut fp = FetchPartition::default();
        fp.fetch_offset = offset;
        fp.current_leader_epoch = 3;
        fp
    }

    fn key(p: i32) -> Key {
        ("t".to_string(), p)
    }

    fn named(r: &FetchRequest) -> Vec<(i32, i64)> {
        r.topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (p.partition, p.fetch_offset)))
            .collect()
    }

    fn positions(offsets: &[(i32, i64)]) -> BTreeMap<Key, FetchPartition> {
        offsets
            .iter()
            .map(|(p, o)| {
                let mut fp = pos(*o);
                fp.partition = *p;
                (key(*p), fp)
            })
            .collect()
    }

    fn answer(session_id: i32, error: Option<ResponseError>) -> FetchResponse {
        let mut r = FetchResponse::default();
        r.session_id = session_id;
        r.error_code = error.map_or(0, |e| e.code());
        r
    }

    /// A partition is left out of a fetch only while its position is exactly what the
    /// leader's session holds; anything else names it, and any doubt is a full fetch.
    #[test]
    fn a_follower_names_every_partition_whose_position_changed() {
        let s_ = FetcherSettings::default();
        let mut s = Session::default();
        let at = positions(&[(0, 10), (1, 20), (2, 30)]);
        let r = request(1, &s_, &at, &s);
        assert_eq!((r.session_id, r.session_epoch), (0, 0));
        assert_eq!(named(&r), vec![(0, 10), (1, 20), (2, 30)]);
        s.answered(&r, &answer(7, None), &at);

        // Nothing moved: an empty incremental fetch.
        let r = request(1, &s_, &at, &s);
        assert_eq!((r.session_id, r.session_epoch), (7, 1));
        assert!(named(&r).is_empty() && r.forgotten_topics_data.is_empty());
        s.answered(&r, &answer(7, None), &at);

        // An append on 0, a truncation on 1, a new leader epoch on 2... all named; a
        // partition no longer fetched is forgotten.
        let mut moved = positions(&[(0, 15), (1, 12), (2, 30)]);
        moved.get_mut(&key(2)).unwrap().current_leader_epoch = 4;
        let r = request(1, &s_, &moved, &s);
        assert_eq!(r.session_epoch, 2);
        assert_eq!(named(&r), vec![(0, 15), (1, 12), (2, 30)]);
        s.answered(&r, &answer(7, None), &moved);
        let fewer = positions(&[(0, 15), (2, 30)]);
        let mut fewer = fewer;
        fewer.get_mut(&key(2)).unwrap().current_leader_epoch = 4;
        let r = request(1, &s_, &fewer, &s);
        assert!(named(&r).is_empty());
        assert_eq!(r.forgotten_topics_data.len(), 1);
        assert_eq!(r.forgotten_topics_data[0].partitions, vec![1]);
        s.answered(&r, &answer(7, None), &fewer);
        // Back again: named.
        let r = request(1, &s_, &moved, &s);
        assert_eq!(named(&r), vec![(1, 12)]);

        // The leader refuses the epoch: a full fetch that closes session 7.
        s.answered(
            &r,
            &answer(0, Some(ResponseError::InvalidFetchSessionEpoch)),
            &moved,
        );
        let r = request(1, &s_, &moved, &s);
        assert_eq!((r.session_id, r.session_epoch), (7, 0));
        assert_eq!(named(&r).len(), 3);
        // No session given (the leader's cache is full): full fetches from then on.
        s.answered(&r, &answer(0, None), &moved);
        let r = request(1, &s_, &moved, &s);
        assert_eq!((r.session_id, r.session_epoch), (0, 0));
        assert_eq!(named(&r).len(), 3);
        // A lost answer: full again.
        s.answered(&r, &answer(9, None), &moved);
        s.restart();
        let r = request(1, &s_, &moved, &s);
        assert_eq!((r.session_id, r.session_epoch), (9, 0));
        assert_eq!(named(&r).len(), 3);
    }
}
