//! Client quotas (Kafka's KIP-13 byte rates and KIP-124 request percentage), enforced the way
//! KIP-219 does it: a client over its quota still gets its response at once, carrying
//! `throttle_time_ms`, and its connection then reads nothing more for that long (Kafka mutes
//! the channel). Kafka 2.0+ clients also hold back on their own when they see it.
//!
//! What is measured, per client (its SASL user, `ANONYMOUS` without one, and its client id):
//! - `producer_byte_rate`: the size of its Produce requests;
//! - `consumer_byte_rate`: the size of its Fetch responses (replica fetches are exempt);
//! - `request_percentage`: the time its requests spend in their handlers (the synchronous
//!   part on the runtime; a long poll's wait is not work), as a percentage of one thread.
//!
//! Connections authenticated as a broker are exempt from all three. Unlike Kafka, a
//! throttled fetch still carries its data: the next fetch waits instead, which gives the
//! same average rate without emptying a response the client's fetch session already counted.

pub mod config;
pub mod rate;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

pub use config::ClientQuota;
use rate::Rate;

/// Milliseconds on a monotonic clock (quota windows must not jump with the wall clock).
pub fn now_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

/// Kafka's principal name for an unauthenticated connection.
pub const ANONYMOUS: &str = "ANONYMOUS";

/// Most distinct clients measured at once. Beyond it (a client cycling through client ids to
/// escape a per-client default), the rest share one rate per quota key: memory stays bounded
/// and the excess is throttled together rather than not at all.
const MAX_SENSORS: usize = 50_000;

/// A standalone broker's quotas, from its data directory (none when the file is absent). A
/// file that does not parse stops the broker: starting without the quotas it was given would
/// silently lift them.
pub fn load(path: &Path) -> Result<Vec<ClientQuota>, crate::storage::StorageError> {
    let Some(bytes) = crate::storage::checkpoint::read_if_exists(path)? else {
        return Ok(Vec::new());
    };
    let corrupt = |reason: String| crate::storage::StorageError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let quotas: Vec<ClientQuota> =
        serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let mut seen = std::collections::HashSet::new();
    for q in &quotas {
        if !seen.insert(&q.entity) {
            return Err(corrupt(format!("{} is listed twice", q.entity)));
        }
        for (_, name) in q.entity.parts() {
            if name
                .to_wire()
                .is_some_and(|n| n.is_empty() || n.len() > config::MAX_NAME_BYTES)
            {
                return Err(corrupt(format!("{}: a name out of bounds", q.entity)));
            }
        }
        for (key, value) in &q.values {
            let op = config::Op {
                key: key.clone(),
                value: Some(value.0),
            };
            config::check_op(&op).map_err(|e| corrupt(format!("{}: {e}", q.entity)))?;
        }
    }
    Ok(quotas)
}

/// Writes a standalone broker's quotas (write, fsync, rename).
pub fn save(path: &Path, quotas: &[ClientQuota]) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(quotas).map_err(std::io::Error::other)?;
    crate::storage::checkpoint::write_atomic(path, &json)
}

/// What a quota limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Produce,
    Fetch,
    Request,
}

impl Kind {
    fn key(self) -> &'static str {
        match self {
            Kind::Produce => config::PRODUCER_BYTE_RATE,
            Kind::Fetch => config::CONSUMER_BYTE_RATE,
            Kind::Request => config::REQUEST_PERCENTAGE,
        }
    }
}

/// Whose rate: the parts of the client's identity that the applying entity names (a quota on
/// `user=alice` is shared by all of alice's clients; one on `client-id=<default>` is each
/// client id's own).
/// Names are kept as keyed hashes: a client id may be 32 KiB long, and 50,000 of those must
/// not cost more than 50,000 small keys. (Two names colliding under a random 64-bit key only
/// share a rate.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct SensorKey {
    kind: Kind,
    user: Option<u64>,
    client_id: Option<u64>,
}

struct Sensor {
    rate: Rate,
    last_ms: u64,
}

#[derive(Default)]
struct Sensors {
    by_key: HashMap<SensorKey, Sensor>,
    /// Names are hashed with a key of this process's own.
    names: std::collections::hash_map::RandomState,
    /// When idle sensors were last swept (at most once a window, so a full table costs a
    /// sweep per window, not per request).
    swept_ms: Option<u64>,
}

impl Sensors {
    fn hash(&self, name: &str) -> u64 {
        use std::hash::BuildHasher;
        self.names.hash_one(name)
    }
}

/// The quotas in force, indexed by entity (a request looks up to eight entities per key).
#[derive(Default)]
struct InForce {
    list: Arc<Vec<ClientQuota>>,
    by_entity: HashMap<config::Entity, usize>,
}

/// The quotas in force and each measured client's rates.
#[derive(Default)]
pub struct Quotas {
    config: RwLock<Arc<InForce>>,
    /// Whether any quota is set: when none is (the default), a request costs one load.
    any: std::sync::atomic::AtomicBool,
    sensors: Mutex<Sensors>,
    /// Serialises standalone alterations (read, apply, write the file, put in force).
    changes: Mutex<()>,
}

impl Quotas {
    /// Puts a new configuration in force (from the controller's metadata, or standalone from
    /// an AlterClientQuotas). Rates measured so far are kept.
    pub fn set(&self, quotas: Vec<ClientQuota>) {
        let by_entity = quotas
            .iter()
            .enumerate()
            .map(|(i, q)| (q.entity.clone(), i))
            .collect();
        self.any
            .store(!quotas.is_empty(), std::sync::atomic::Ordering::Relaxed);
        let in_force = InForce {
            list: Arc::new(quotas),
            by_entity,
        };
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(in_force);
    }

    fn in_force(&self) -> Arc<InForce> {
        Arc::clone(&self.config.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Held while a standalone alteration runs.
    pub fn changing(&self) -> std::sync::MutexGuard<'_, ()> {
        self.changes.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn current(&self) -> Arc<Vec<ClientQuota>> {
        Arc::clone(&self.in_force().list)
    }

    /// Whether any quota is set (when none is, nothing is measured at all).
    pub fn any(&self) -> bool {
        self.any.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Counts `value` against the client's `kind` quota, if one applies, and answers the
    /// throttle time in ms (0 when within it or when no quota applies).
    pub fn record(&self, user: &str, client_id: &str, kind: Kind, value: f64, now_ms: u64) -> u64 {
        let config = self.in_force();
        let find = |e: &config::Entity| config.by_entity.get(e).map(|i| &config.list[*i]);
        let Some((entity, quota)) = config::resolve_by(find, user, client_id, kind.key()) else {
            return 0;
        };
        let mut sensors = self.sensors.lock().unwrap_or_else(|p| p.into_inner());
        let key = SensorKey {
            kind,
            user: entity.user.as_ref().map(|_| sensors.hash(user)),
            client_id: entity.client_id.as_ref().map(|_| sensors.hash(client_id)),
        };
        let window = rate::SAMPLES as u64 * rate::SAMPLE_MS;
        let full = |s: &Sensors| s.by_key.len() >= MAX_SENSORS && !s.by_key.contains_key(&key);
        if full(&sensors) && sensors.swept_ms.is_none_or(|t| t + window <= now_ms) {
            // A sensor idle for a whole window holds nothing; drop those.
            sensors.by_key.retain(|_, s| s.last_ms + window > now_ms);
            sensors.swept_ms = Some(now_ms);
        }
        let key = if full(&sensors) {
            SensorKey {
                kind,
                user: None,
                client_id: None,
            }
        } else {
            key
        };
        let sensor = sensors.by_key.entry(key).or_insert_with(|| Sensor {
            rate: Rate::default(),
            last_ms: now_ms,
        });
        sensor.last_ms = now_ms;
        // Kafka caps only the request-time throttle, at one sample window.
        let cap = match kind {
            Kind::Request => rate::SAMPLE_MS,
            Kind::Produce | Kind::Fetch => u64::MAX,
        };
        sensor.rate.record(now_ms, value, quota, cap)
    }

    #[cfg(test)]
    fn sensors(&self) -> usize {
        self.sensors.lock().unwrap().by_key.len()
    }
}

#[cfg(test)]
mod tests {
    use super::config::{Alteration, Entity, Name, Op, apply};
    use super::*;

    fn quotas(entity: Entity, key: &str, v: f64) -> Quotas {
        let q = Quotas::default();
        let mut list = Vec::new();
        apply(
            &mut list,
            &Alteration {
                entity,
                ops: vec![Op {
                    key: key.into(),
                    value: Some(v),
                }],
            },
        )
        .unwrap();
        q.set(list);
        q
    }

    #[test]
    fn a_user_quota_is_shared_by_the_users_clients_and_a_default_is_per_client() {
        let shared = quotas(
            Entity {
                user: Some(Name::Named("alice".into())),
                client_id: None,
            },
            config::PRODUCER_BYTE_RATE,
            1000.0,
        );
        // Two of alice's clients send 6 KB each at once: together they exceed 1 KB/s over the
        // 10 s window, so the second is throttled.
        assert_eq!(shared.record("alice", "a", Kind::Produce, 6000.0, 0), 0);
        assert!(shared.record("alice", "b", Kind::Produce, 6000.0, 0) > 0);
        // Another user has no quota; another kind is not limited.
        assert_eq!(shared.record("bob", "a", Kind::Produce, 1e9, 0), 0);
        assert_eq!(shared.record("alice", "a", Kind::Fetch, 1e9, 0), 0);

        let per_client = quotas(
            Entity {
                user: None,
                client_id: Some(Name::Default),
            },
            config::PRODUCER_BYTE_RATE,
            1000.0,
        );
        assert_eq!(per_client.record("alice", "a", Kind::Produce, 6000.0, 0), 0);
        assert_eq!(per_client.record("alice", "b", Kind::Produce, 6000.0, 0), 0);
        assert!(per_client.record("alice", "b", Kind::Produce, 6000.0, 0) > 0);
    }

    #[test]
    fn clients_beyond_the_sensor_bound_share_one_rate() {
        let q = quotas(
            Entity {
                user: None,
                client_id: Some(Name::Default),
            },
            config::PRODUCER_BYTE_RATE,
            1000.0,
        );
        for i in 0..MAX_SENSORS + 10 {
            q.record(ANONYMOUS, &format!("c{i}"), Kind::Produce, 1.0, 0);
        }
        assert_eq!(q.sensors(), MAX_SENSORS + 1);
        // The overflow rate is shared: a burst through new ids is throttled.
        assert!(q.record(ANONYMOUS, "fresh-1", Kind::Produce, 30_000.0, 0) > 0);
        // After a window idle, the old sensors go and new clients get their own again.
        assert_eq!(q.record(ANONYMOUS, "later", Kind::Produce, 1.0, 60_000), 0);
        assert_eq!(q.sensors(), 1);
    }

    #[test]
    fn without_quotas_nothing_is_measured() {
        let q = Quotas::default();
        assert!(!q.any());
        assert_eq!(q.record("u", "c", Kind::Produce, 1e12, 0), 0);
        assert_eq!(q.sensors(), 0);
    }
}
