//! Fetch sessions (KIP-227, incremental fetch): the broker remembers what a fetcher asked for
//! and what it was last told, so the fetcher sends only partitions whose request changed and
//! gets back only partitions whose answer changed. Pure bookkeeping: no I/O, the clock is an
//! argument; `api::fetch` reads the logs.
//!
//! The rules (Kafka's `FetchSession.scala`, and where this differs, why):
//! - Session id 0 and epoch 0: a full fetch that opens a session if the cache has room or can
//!   evict. Epoch -1: a full fetch without a session; with a session id it closes that
//!   session. Epoch 0 with a session id closes it and opens another.
//! - Otherwise an incremental fetch: the session must exist (FETCH_SESSION_ID_NOT_FOUND) and
//!   the epoch be the expected one (INVALID_FETCH_SESSION_EPOCH); listed partitions are added
//!   or updated, forgotten ones removed, and the expected epoch moves on (after i32::MAX, 1).
//! - A session belongs to one fetcher (a consumer, or one follower's broker id); another
//!   fetcher naming it gets FETCH_SESSION_ID_NOT_FOUND. Kafka does not check this; here a
//!   session's cached offsets can count as a follower's progress, so no one else may use it.
//! - Fetch offsets (what the fetcher holds) come only from requests, never from what a
//!   response returned: a follower's offset counts as proof of what it holds only because it
//!   said so. What the fetcher was last told (high watermark, log start, leader epoch) is
//!   recorded only from a response actually sent.
//! - Bounded: at most `slots` sessions (Kafka's max.incremental.fetch.session.cache.slots, 0
//!   disables sessions) and at most `max_partitions` partitions over all sessions (Kafka has
//!   no such bound; without it a thousand sessions of a hundred thousand partitions each would
//!   hold gigabytes). A full fetch that does not fit gets no session (the fetcher keeps
//!   sending full fetches); an incremental fetch that would grow past the bound closes its
//!   session (FETCH_SESSION_ID_NOT_FOUND: the fetcher starts again with a full fetch).
//! - Eviction, Kafka's rule: a new session may evict (1) the least recently used session if
//!   it has been unused for `eviction_ms` (stale), else (2) the least valuable evictable
//!   session if the new one is worth more, valued by (privileged, partitions): followers
//!   outrank consumers, then larger outranks smaller, strictly (equal sessions do not churn).
//!   A consumer's session may be evicted by a follower's at any time; any session may be
//!   evicted by a more valuable one once it is older than `eviction_ms` (a new session is not
//!   evicted before its owner could use it). Sessions are not tied to connections (as in
//!   Kafka): those of closed connections go stale and are evicted first.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::partition::Fetcher;

pub const INVALID_SESSION_ID: i32 = 0;
pub const INITIAL_EPOCH: i32 = 0;
pub const FINAL_EPOCH: i32 = -1;

/// Kafka's min.incremental.fetch.session.eviction.ms default.
pub const EVICTION_MS: i64 = 120_000;
/// Default bound on partitions cached over all sessions. An entry takes about 170 bytes (its
/// two map slots, what was asked, what was told) plus its topic name when no other partition
/// of the same request shares it: about 40 MB when full, about 110 MB if every partition came
/// with its own 249-byte topic name.
pub const MAX_CACHED_PARTITIONS: usize = 250_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Most sessions (0: no sessions).
    pub slots: usize,
    /// Most partitions over all sessions.
    pub max_partitions: usize,
    /// A session unused this long may be evicted by any new one; a session younger than this
    /// only by a follower's if it is a consumer's.
    pub eviction_ms: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            slots: 1000,
            max_partitions: MAX_CACHED_PARTITIONS,
            eviction_ms: EVICTION_MS,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("fetch session {0} not found")]
    NotFound(i32),
    #[error("fetch session {id} expects epoch {expected}, got {got}")]
    InvalidEpoch { id: i32, expected: i32, got: i32 },
    #[error("fetch session {0} would hold more partitions than the cache allows; closed")]
    TooLarge(i32),
}

/// A partition as a fetcher asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted {
    pub fetch_offset: i64,
    pub last_fetched_epoch: i32,
    pub current_leader_epoch: i32,
    pub log_start_offset: i64,
    pub partition_max_bytes: i32,
}

/// What a response told the fetcher about a partition, besides records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Told {
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    pub leader_epoch: i32,
}

/// How one partition was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub told: Told,
    /// Record bytes returned.
    pub records: bool,
    /// An error code, or a diverging epoch: always sent, and the partition is sent again
    /// once it clears.
    pub error: bool,
    pub diverging: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub topic: Arc<str>,
    pub partition: i32,
}

#[derive(Debug)]
struct Entry {
    /// Position in the session's order; a partition that returned records moves to the end,
    /// so a response bounded by max bytes does not always favour the same partitions.
    seq: u64,
    wanted: Wanted,
    /// None: never told, or told an error; the next answer is sent whatever it is.
    told: Option<Told>,
}

/// One fetcher's session.
#[derive(Debug)]
pub struct Session {
    id: i32,
    fetcher: Fetcher,
    /// The epoch the next incremental fetch must carry.
    next_epoch: i32,
    entries: HashMap<Key, Entry>,
    order: BTreeMap<u64, Key>,
    next_seq: u64,
}

impl Session {
    fn new(id: i32, fetcher: Fetcher) -> Self {
        Self {
            id,
            fetcher,
            next_epoch: 1,
            entries: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
        }
    }

    pub fn id(&self) -> i32 {
        self.id
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The session's partitions, in reading order.
    pub fn partitions(&self) -> impl Iterator<Item = (&Key, &Wanted)> + '_ {
        self.order
            .values()
            .filter_map(|k| self.entries.get(k).map(|e| (k, &e.wanted)))
    }

    /// Adds or updates a partition (its position kept when it was there).
    fn upsert(&mut self, key: Key, wanted: Wanted) {
        if let Some(e) = self.entries.get_mut(&key) {
            e.wanted = wanted;
            return;
        }
        let seq = self.bump();
        self.order.insert(seq, key.clone());
        self.entries.insert(
            key,
            Entry {
                seq,
                wanted,
                told: None,
            },
        );
    }

    fn forget(&mut self, key: &Key) {
        if let Some(e) = self.entries.remove(key) {
            self.order.remove(&e.seq);
        }
    }

    fn bump(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Records how `key` was answered in a response that is being sent, and whether an
    /// incremental response must carry it (records, an error, a diverging epoch, or anything
    /// it was told before changed). A partition the session does not hold is always sent.
    pub fn answered(&mut self, key: &Key, answer: &Answer) -> bool {
        let Some(e) = self.entries.get_mut(key) else {
            return true;
        };
        let send = answer.records
            || answer.error
            || answer.diverging
            || e.told.as_ref() != Some(&answer.told);
        e.told = (!answer.error).then_some(answer.told);
        if answer.records {
            let old = e.seq;
            let seq = self.next_seq;
            self.next_seq += 1;
            if let Some(e) = self.entries.get_mut(key) {
                e.seq = seq;
            }
            self.order.remove(&old);
            self.order.insert(seq, key.clone());
        }
        send
    }
}

fn lock(s: &Mutex<Session>) -> MutexGuard<'_, Session> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

struct Slot {
    session: Arc<Mutex<Session>>,
    privileged: bool,
    created_ms: i64,
    last_used_ms: i64,
    size: usize,
}

/// What a Fetch request is, once its session fields are read.
#[derive(Debug)]
pub enum Context {
    /// Answer the listed partitions, with session id 0.
    Sessionless,
    /// Answer the listed partitions, then open a session with them (`SessionCache::open`).
    Full,
    /// Answer the session's partitions, only those that changed.
    Incremental(Arc<Mutex<Session>>),
}

/// The broker's sessions.
pub struct SessionCache {
    settings: Settings,
    sessions: HashMap<i32, Slot>,
    partitions: usize,
    evictions: u64,
}

impl SessionCache {
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            sessions: HashMap::new(),
            partitions: 0,
            evictions: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Partitions held over all sessions.
    pub fn partitions(&self) -> usize {
        self.partitions
    }

    /// Sessions evicted so far.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Reads a request's session fields, and for an incremental fetch applies its listed
    /// (`listed`) and forgotten partitions to the session.
    pub fn begin(
        &mut self,
        session_id: i32,
        epoch: i32,
        fetcher: Fetcher,
        now_ms: i64,
        listed: impl IntoIterator<Item = (Key, Wanted)>,
        forgotten: impl IntoIterator<Item = Key>,
    ) -> Result<Context, SessionError> {
        if epoch == FINAL_EPOCH || epoch == INITIAL_EPOCH {
            // Only its own fetcher may close a session (a consumer naming a follower's session
            // id would otherwise send that follower back to full fetches).
            let owned = self
                .sessions
                .get(&session_id)
                .is_some_and(|slot| lock(&slot.session).fetcher == fetcher);
            if session_id != INVALID_SESSION_ID && owned {
                self.remove(session_id);
            }
            return Ok(if epoch == INITIAL_EPOCH && self.settings.slots > 0 {
                Context::Full
            } else {
                Context::Sessionless
            });
        }
        let slot = self
            .sessions
            .get_mut(&session_id)
            .ok_or(SessionError::NotFound(session_id))?;
        let session = Arc::clone(&slot.session);
        let mut s = lock(&session);
        if s.fetcher != fetcher {
            return Err(SessionError::NotFound(session_id));
        }
        if s.next_epoch != epoch {
            return Err(SessionError::InvalidEpoch {
                id: session_id,
                expected: s.next_epoch,
                got: epoch,
            });
        }
        for (key, wanted) in listed {
            s.upsert(key, wanted);
        }
        for key in forgotten {
            s.forget(&key);
        }
        s.next_epoch = if s.next_epoch == i32::MAX {
            1
        } else {
            s.next_epoch + 1
        };
        let size = s.len();
        drop(s);
        let others = self.partitions - slot.size;
        if others + size > self.settings.max_partitions {
            self.remove(session_id);
            return Err(SessionError::TooLarge(session_id));
        }
        slot.size = size;
        slot.last_used_ms = now_ms;
        self.partitions = others + size;
        Ok(Context::Incremental(session))
    }

    /// Opens a session for a full fetch being answered, holding `partitions` as asked and as
    /// told (`Answer`); evicts if it must and may. Returns the new session's id, or 0 when
    /// there is no room.
    pub fn open(
        &mut self,
        fetcher: Fetcher,
        now_ms: i64,
        partitions: impl IntoIterator<Item = (Key, Wanted, Answer)>,
        random: &mut impl FnMut() -> i32,
    ) -> i32 {
        if self.settings.slots == 0 {
            return INVALID_SESSION_ID;
        }
        let privileged = matches!(fetcher, Fetcher::Replica(_));
        let mut session = Session::new(INVALID_SESSION_ID, fetcher);
        for (key, wanted, answer) in partitions {
            session.upsert(key.clone(), wanted);
            session.answered(&key, &answer);
        }
        let size = session.len();
        if size > self.settings.max_partitions {
            return INVALID_SESSION_ID;
        }
        while self.sessions.len() >= self.settings.slots
            || self.partitions + size > self.settings.max_partitions
        {
            if !self.evict_one(privileged, size, now_ms) {
                return INVALID_SESSION_ID;
            }
        }
        let id = loop {
            let id = random();
            if id > 0 && !self.sessions.contains_key(&id) {
                break id;
            }
        };
        session.id = id;
        self.sessions.insert(
            id,
            Slot {
                session: Arc::new(Mutex::new(session)),
                privileged,
                created_ms: now_ms,
                last_used_ms: now_ms,
                size,
            },
        );
        self.partitions += size;
        id
    }

    /// Kafka's `tryEvict` (see the module's rules).
    fn evict_one(&mut self, privileged: bool, size: usize, now_ms: i64) -> bool {
        let eviction_ms = self.settings.eviction_ms;
        let stale = self
            .sessions
            .iter()
            .min_by_key(|(id, s)| (s.last_used_ms, **id))
            .filter(|(_, s)| now_ms - s.last_used_ms >= eviction_ms)
            .map(|(id, _)| *id);
        let victim = stale.or_else(|| {
            self.sessions
                .iter()
                .filter(|(_, s)| {
                    (privileged && !s.privileged) || now_ms - s.created_ms >= eviction_ms
                })
                .min_by_key(|(id, s)| (s.privileged, s.size, **id))
                .filter(|(_, s)| (privileged, size) > (s.privileged, s.size))
                .map(|(id, _)| *id)
        });
        match victim {
            Some(id) => {
                self.remove(id);
                self.evictions += 1;
                true
            }
            None => false,
        }
    }

    pub fn remove(&mut self, id: i32) -> bool {
        match self.sessions.remove(&id) {
            Some(slot) => {
                self.partitions -= slot.size;
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(t: &str, p: i32) -> Key {
        Key {
            topic: Arc::from(t),
            partition: p,
        }
    }

    fn wanted(offset: i64) -> Wanted {
        Wanted {
            fetch_offset: offset,
            last_fetched_epoch: -1,
            current_leader_epoch: 0,
            log_start_offset: -1,
            partition_max_bytes: 1 << 20,
        }
    }

    fn answer(hw: i64, records: bool) -> Answer {
        Answer {
            told: Told {
                high_watermark: hw,
                last_stable_offset: hw,
                log_start_offset: 0,
                leader_epoch: 0,
            },
            records,
            error: false,
            diverging: false,
        }
    }

    fn counter() -> impl FnMut() -> i32 {
        let mut n = 0;
        move || {
            n += 1;
            n
        }
    }

    fn cache(slots: usize, max_partitions: usize) -> SessionCache {
        SessionCache::new(Settings {
            slots,
            max_partitions,
            eviction_ms: 1000,
        })
    }

    fn open(c: &mut SessionCache, fetcher: Fetcher, now: i64, n: i32) -> i32 {
        let parts = (0..n).map(|p| (key("t", p), wanted(0), answer(0, false)));
        c.open(fetcher, now, parts, &mut counter())
    }

    fn incremental(
        c: &mut SessionCache,
        id: i32,
        epoch: i32,
        listed: Vec<(Key, Wanted)>,
        forgotten: Vec<Key>,
    ) -> Result<Arc<Mutex<Session>>, SessionError> {
        match c.begin(id, epoch, Fetcher::Consumer, 0, listed, forgotten)? {
            Context::Incremental(s) => Ok(s),
            other => panic!("expected an incremental context, got {other:?}"),
        }
    }

    #[test]
    fn full_fetch_kinds() {
        let mut c = cache(10, 100);
        let none = std::iter::empty::<(Key, Wanted)>;
        let b = |c: &mut SessionCache, id, epoch| {
            c.begin(id, epoch, Fetcher::Consumer, 0, none(), vec![])
                .unwrap()
        };
        assert!(matches!(b(&mut c, 0, 0), Context::Full));
        assert!(matches!(b(&mut c, 0, -1), Context::Sessionless));
        let id = open(&mut c, Fetcher::Consumer, 0, 3);
        assert!(id > 0);
        assert_eq!((c.len(), c.partitions()), (1, 3));
        // Epoch -1 with an id closes it.
        assert!(matches!(b(&mut c, id, -1), Context::Sessionless));
        assert_eq!((c.len(), c.partitions()), (0, 0));
        // Epoch 0 with an id closes it and asks for a new one.
        let id = open(&mut c, Fetcher::Consumer, 0, 3);
        assert!(matches!(b(&mut c, id, 0), Context::Full));
        assert!(c.is_empty());
        // No slots: no sessions at all.
        let mut off = cache(0, 100);
        assert!(matches!(b(&mut off, 0, 0), Context::Sessionless));
        assert_eq!(open(&mut off, Fetcher::Consumer, 0, 3), 0);
    }

    #[test]
    fn epochs_advance_and_are_checked() {
        let mut c = cache(10, 100);
        let id = open(&mut c, Fetcher::Consumer, 0, 2);
        assert_eq!(
            incremental(&mut c, id + 1, 1, vec![], vec![]).unwrap_err(),
            SessionError::NotFound(id + 1)
        );
        assert_eq!(
            incremental(&mut c, id, 2, vec![], vec![]).unwrap_err(),
            SessionError::InvalidEpoch {
                id,
                expected: 1,
                got: 2
            }
        );
        incremental(&mut c, id, 1, vec![], vec![]).unwrap();
        // The same epoch twice (a retried or duplicated request) is refused.
        assert!(matches!(
            incremental(&mut c, id, 1, vec![], vec![]),
            Err(SessionError::InvalidEpoch { expected: 2, .. })
        ));
        incremental(&mut c, id, 2, vec![], vec![]).unwrap();
        // Another fetcher cannot use the session, nor close it.
        assert_eq!(
            c.begin(id, 3, Fetcher::Replica(1), 0, vec![], vec![])
                .unwrap_err(),
            SessionError::NotFound(id)
        );
        for close in [INITIAL_EPOCH, FINAL_EPOCH] {
            c.begin(id, close, Fetcher::Replica(1), 0, vec![], vec![])
                .unwrap();
        }
        assert_eq!(c.len(), 1, "another fetcher's close left it open");
        incremental(&mut c, id, 3, vec![], vec![]).unwrap();
        // Its own fetcher closes it.
        c.begin(id, FINAL_EPOCH, Fetcher::Consumer, 0, vec![], vec![])
            .unwrap();
        assert!(c.is_empty());
    }

    #[test]
    fn epoch_wraps_to_one() {
        let mut c = cache(10, 100);
        let id = open(&mut c, Fetcher::Consumer, 0, 1);
        let s = incremental(&mut c, id, 1, vec![], vec![]).unwrap();
        lock(&s).next_epoch = i32::MAX;
        incremental(&mut c, id, i32::MAX, vec![], vec![]).unwrap();
        incremental(&mut c, id, 1, vec![], vec![]).unwrap();
    }

    #[test]
    fn listed_partitions_update_and_forgotten_ones_leave() {
        let mut c = cache(10, 100);
        let id = open(&mut c, Fetcher::Consumer, 0, 3);
        let s = incremental(
            &mut c,
            id,
            1,
            vec![(key("t", 1), wanted(7)), (key("u", 0), wanted(5))],
            vec![key("t", 0), key("nope", 9)],
        )
        .unwrap();
        let got: Vec<(String, i32, i64)> = lock(&s)
            .partitions()
            .map(|(k, w)| (k.topic.to_string(), k.partition, w.fetch_offset))
            .collect();
        assert_eq!(
            got,
            vec![("t".into(), 1, 7), ("t".into(), 2, 0), ("u".into(), 0, 5)]
        );
        assert_eq!(c.partitions(), 3);
    }

    #[test]
    fn only_changed_partitions_are_sent() {
        let mut c = cache(10, 100);
        let id = open(&mut c, Fetcher::Consumer, 0, 3);
        let s = incremental(&mut c, id, 1, vec![(key("new", 0), wanted(0))], vec![]).unwrap();
        let mut s = lock(&s);
        // Unchanged: not sent. A new partition, records, a moved high watermark, an error and a
        // divergence are.
        assert!(!s.answered(&key("t", 0), &answer(0, false)));
        assert!(s.answered(&key("new", 0), &answer(0, false)));
        assert!(!s.answered(&key("new", 0), &answer(0, false)));
        assert!(s.answered(&key("t", 1), &answer(0, true)));
        assert!(s.answered(&key("t", 2), &answer(5, false)));
        assert!(!s.answered(&key("t", 2), &answer(5, false)));
        let mut err = answer(5, false);
        err.error = true;
        assert!(s.answered(&key("t", 2), &err));
        // Sent again once the error clears, though nothing else changed.
        assert!(s.answered(&key("t", 2), &answer(5, false)));
        let mut div = answer(5, false);
        div.diverging = true;
        assert!(s.answered(&key("t", 2), &div));
        let mut epoch = answer(5, false);
        epoch.told.leader_epoch = 1;
        assert!(s.answered(&key("t", 2), &epoch));
        // The partition that returned records now reads last.
        let order: Vec<(String, i32)> = s
            .partitions()
            .map(|(k, _)| (k.topic.to_string(), k.partition))
            .collect();
        assert_eq!(
            order,
            vec![
                ("t".into(), 0),
                ("t".into(), 2),
                ("new".into(), 0),
                ("t".into(), 1)
            ]
        );
    }

    #[test]
    fn fetch_offsets_come_only_from_requests() {
        let mut c = cache(10, 100);
        let id = open(&mut c, Fetcher::Replica(2), 0, 1);
        let s = match c
            .begin(id, 1, Fetcher::Replica(2), 0, vec![], vec![])
            .unwrap()
        {
            Context::Incremental(s) => s,
            other => panic!("{other:?}"),
        };
        let mut s = lock(&s);
        s.answered(&key("t", 0), &answer(100, true));
        assert_eq!(s.partitions().next().unwrap().1.fetch_offset, 0);
    }

    #[test]
    fn bounded_by_slots_with_kafka_eviction() {
        let mut c = cache(2, 1000);
        let small = open(&mut c, Fetcher::Consumer, 0, 1);
        let big = open(&mut c, Fetcher::Consumer, 0, 5);
        assert!(small > 0 && big > 0 && small != big);
        // Full, nothing stale, nothing old enough: a consumer gets no session.
        assert_eq!(open(&mut c, Fetcher::Consumer, 10, 50), 0);
        // A follower evicts a consumer even when young: the smallest.
        let f = open(&mut c, Fetcher::Replica(1), 20, 1);
        assert!(f > 0);
        assert!(
            c.begin(small, 1, Fetcher::Consumer, 0, vec![], vec![])
                .is_err()
        );
        assert_eq!(c.evictions(), 1);
        // Old enough: a larger consumer session evicts a smaller one, never an equal one, and
        // never a follower's.
        incremental(&mut c, big, 1, vec![], vec![]).unwrap();
        let mut c2 = cache(1, 1000);
        let f = open(&mut c2, Fetcher::Replica(1), 0, 1);
        c2.begin(f, 1, Fetcher::Replica(1), 1400, vec![], vec![])
            .unwrap();
        assert_eq!(open(&mut c2, Fetcher::Consumer, 1500, 100), 0);
        // Unused for eviction_ms: stale, evicted by anyone.
        assert!(open(&mut c2, Fetcher::Consumer, 2400, 1) > 0);
        let mut c3 = cache(1, 1000);
        open(&mut c3, Fetcher::Consumer, 0, 3);
        // Touched at 1400, so not stale at 1500, but older than eviction_ms.
        let id = c3.sessions.keys().copied().next().unwrap();
        c3.sessions.get_mut(&id).unwrap().last_used_ms = 1400;
        assert_eq!(open(&mut c3, Fetcher::Consumer, 1500, 3), 0);
        assert!(open(&mut c3, Fetcher::Consumer, 1500, 4) > 0);
        assert_eq!(c3.len(), 1);
    }

    #[test]
    fn stale_sessions_are_evicted_first() {
        let mut c = cache(2, 1000);
        let a = open(&mut c, Fetcher::Replica(1), 0, 100);
        let b = open(&mut c, Fetcher::Replica(2), 500, 100);
        // At 1200 `a` is stale (unused for 1000 ms): even a tiny consumer session evicts it.
        let n = open(&mut c, Fetcher::Consumer, 1200, 1);
        assert!(n > 0);
        assert_eq!(c.len(), 2);
        assert!(
            c.begin(a, 1, Fetcher::Replica(1), 1200, vec![], vec![])
                .is_err()
        );
        assert!(
            c.begin(b, 1, Fetcher::Replica(2), 1200, vec![], vec![])
                .is_ok()
        );
        assert_eq!(c.partitions(), 101);
    }

    #[test]
    fn bounded_by_partitions() {
        let mut c = cache(10, 10);
        // Too large for the whole cache: no session.
        assert_eq!(open(&mut c, Fetcher::Consumer, 0, 11), 0);
        let a = open(&mut c, Fetcher::Consumer, 0, 6);
        // Does not fit beside `a`, and cannot evict it (young, and a consumer's).
        assert_eq!(open(&mut c, Fetcher::Consumer, 0, 5), 0);
        assert_eq!(c.partitions(), 6);
        // Growing past the bound closes the session.
        let more: Vec<_> = (10..15).map(|p| (key("t", p), wanted(0))).collect();
        assert_eq!(
            incremental(&mut c, a, 1, more, vec![]).unwrap_err(),
            SessionError::TooLarge(a)
        );
        assert_eq!((c.len(), c.partitions()), (0, 0));
        // Forgetting frees room.
        let b = open(&mut c, Fetcher::Consumer, 0, 10);
        incremental(&mut c, b, 1, vec![], vec![key("t", 0), key("t", 1)]).unwrap();
        assert_eq!(c.partitions(), 8);
        assert!(open(&mut c, Fetcher::Replica(1), 0, 2) > 0);
        assert_eq!(c.partitions(), 10);
    }

    #[test]
    fn ids_are_positive_and_unique() {
        let mut c = cache(100, 1000);
        // A generator that repeats itself and offers 0 and negatives.
        let mut seq = [0, -5, 7, 7, 7, 9, 9, 11].into_iter().cycle();
        let mut random = move || seq.next().unwrap_or(1);
        let ids: Vec<i32> = (0..3)
            .map(|_| c.open(Fetcher::Consumer, 0, std::iter::empty(), &mut random))
            .collect();
        assert_eq!(ids, vec![7, 9, 11]);
    }
}
