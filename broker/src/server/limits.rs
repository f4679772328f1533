//! What clients may hold of a broker: bytes of requests read but not yet handled (Kafka's
//! `queued.max.request.bytes`), bytes of responses built but not yet written, connections in
//! all and per address (`max.connections`, `max.connections.per.ip`), and how long a connection
//! may sit idle (`connections.max.idle.ms`) or stall half-way through a frame.
//!
//! The rules, and why:
//! - A request's bytes are reserved from a pool before its body is read, so a client that
//!   announces a large frame and goes silent holds a reservation, not the broker's memory, and
//!   other connections wait (unread, as Kafka mutes them) instead of the broker growing.
//! - Frames up to `SMALL_FRAME` (a producer's default `max.request.size`) have a pool of their
//!   own: the pools are FIFO, and a large frame waiting must not hold up every small request.
//! - Frames up to `TINY_FRAME` need no reservation, so a client holding the pools (announcing
//!   frames and sending nothing until the stall timeout) delays only larger requests, never
//!   fetches, follower fetches or heartbeats.
//! - A body must keep arriving, and a response must keep being taken: no progress for the
//!   stall timeout closes the connection and releases what it held.
//! - A fetch reads no more than the room left for unwritten responses (at least one batch, as
//!   KIP-74 requires), and a connection with a large response unwritten reads no further
//!   requests: a client that asks and never reads holds one response, not a pipeline of them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Frames up to this size need no reservation: nearly every request (fetches, follower
/// fetches, metadata, heartbeats, small produces) is this small, so a client that announces
/// big frames and sends nothing can stall no one's replication or polling. What they can hold
/// is bounded by `max.connections` times this.
pub const TINY_FRAME: usize = 16 * 1024;
/// Frames up to this size draw from the small-request pool.
pub const SMALL_FRAME: usize = 1 << 20;
/// The small-request pool: 32 full-size small requests in flight at once.
pub const SMALL_POOL: usize = 32 << 20;
/// Unwritten response bytes past which a connection stops reading requests until they go out.
pub const CONNECTION_RESPONSE_BYTES: usize = 1 << 20;

/// The configured limits (see `--help` for each flag's Kafka property name).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Request bytes (of frames over `SMALL_FRAME`) read but not yet handled; also the room
    /// for response bytes built but not yet written.
    pub queued_max_request_bytes: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// A connection with nothing to read for this long is closed.
    pub connections_max_idle: Duration,
    /// A request body that takes longer than this to arrive, or a response that takes longer
    /// to be taken, closes the connection.
    pub stall_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            queued_max_request_bytes: 256 << 20,
            max_connections: 10_000,
            max_connections_per_ip: i32::MAX as usize,
            connections_max_idle: Duration::from_secs(600),
            stall_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LimitsError {
    #[error(
        "queued.max.request.bytes ({queued}) must be at least socket.request.max.bytes ({max_request}): a request that fits no pool would wait forever"
    )]
    PoolBelowMaxRequest { queued: usize, max_request: usize },
    #[error("{0} must be positive")]
    NotPositive(&'static str),
    #[error(
        "queued.max.request.bytes ({0}) is above the largest pool this broker can keep (4 GiB)"
    )]
    PoolTooLarge(usize),
}

impl Limits {
    pub fn validate(&self, max_request_bytes: usize) -> Result<(), LimitsError> {
        if self.queued_max_request_bytes < max_request_bytes {
            return Err(LimitsError::PoolBelowMaxRequest {
                queued: self.queued_max_request_bytes,
                max_request: max_request_bytes,
            });
        }
        if self.queued_max_request_bytes > u32::MAX as usize {
            return Err(LimitsError::PoolTooLarge(self.queued_max_request_bytes));
        }
        if self.max_connections == 0 {
            return Err(LimitsError::NotPositive("max.connections"));
        }
        if self.max_connections_per_ip == 0 {
            return Err(LimitsError::NotPositive("max.connections.per.ip"));
        }
        if self.connections_max_idle.is_zero() {
            return Err(LimitsError::NotPositive("connections.max.idle.ms"));
        }
        if self.stall_timeout.is_zero() {
            return Err(LimitsError::NotPositive("--socket-stall-timeout-ms"));
        }
        Ok(())
    }
}

/// The broker-wide memory budgets.
pub struct Memory {
    small: Arc<Semaphore>,
    large: Arc<Semaphore>,
    large_capacity: usize,
    /// Response bytes built and not yet written, over every connection.
    responses: Arc<AtomicUsize>,
    response_capacity: usize,
}

impl Memory {
    pub fn new(limits: &Limits) -> Self {
        let large_capacity = limits.queued_max_request_bytes.min(Semaphore::MAX_PERMITS);
        Self {
            small: Arc::new(Semaphore::new(SMALL_POOL)),
            large: Arc::new(Semaphore::new(large_capacity)),
            large_capacity,
            responses: Arc::new(AtomicUsize::new(0)),
            response_capacity: limits.queued_max_request_bytes,
        }
    }

    /// Waits until `len` request bytes may be read. `None` when no pool could ever hold them
    /// (the frame size check comes first, so only a misconfiguration gets here).
    pub async fn reserve_request(&self, len: usize) -> Option<OwnedSemaphorePermit> {
        let pool = if len <= SMALL_FRAME {
            &self.small
        } else if len <= self.large_capacity {
            &self.large
        } else {
            return None;
        };
        let n = u32::try_from(len).ok()?;
        Arc::clone(pool).acquire_many_owned(n).await.ok()
    }

    /// Request bytes reserved right now.
    pub fn request_bytes(&self) -> usize {
        (SMALL_POOL - self.small.available_permits())
            + (self.large_capacity - self.large.available_permits())
    }

    /// How many response bytes may still be built before the budget is spent.
    pub fn response_room(&self) -> usize {
        self.response_capacity
            .saturating_sub(self.responses.load(Ordering::Relaxed))
    }

    /// Response bytes built right now and not yet written.
    pub fn response_bytes(&self) -> usize {
        self.responses.load(Ordering::Relaxed)
    }

    /// Counts `bytes` of a response against the budget until the hold is dropped.
    pub fn hold_response(&self, bytes: usize) -> ResponseHold {
        self.responses.fetch_add(bytes, Ordering::Relaxed);
        ResponseHold {
            counter: Arc::clone(&self.responses),
            bytes,
        }
    }
}

/// Response bytes counted against the budget; released on drop.
pub struct ResponseHold {
    counter: Arc<AtomicUsize>,
    bytes: usize,
}

impl Drop for ResponseHold {
    fn drop(&mut self) {
        self.counter.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// Open connections per client address (`max.connections.per.ip`).
pub struct PerIp {
    max: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl PerIp {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            open: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// A slot for one more connection from `ip`, or `None` when it already has the most.
    pub fn admit(&self, ip: IpAddr) -> Option<IpSlot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            ip,
            open: Arc::clone(&self.open),
        })
    }
}

/// One admitted connection; gives its slot back on drop.
pub struct IpSlot {
    ip: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(queued: usize) -> Limits {
        Limits {
            queued_max_request_bytes: queued,
            ..Limits::default()
        }
    }

    #[test]
    fn a_pool_smaller_than_the_largest_request_is_refused() {
        assert_eq!(
            limits(10 << 20).validate(100 << 20),
            Err(LimitsError::PoolBelowMaxRequest {
                queued: 10 << 20,
                max_request: 100 << 20
            })
        );
        assert_eq!(limits(100 << 20).validate(100 << 20), Ok(()));
        let zero = Limits {
            max_connections_per_ip: 0,
            ..Limits::default()
        };
        assert_eq!(
            zero.validate(1),
            Err(LimitsError::NotPositive("max.connections.per.ip"))
        );
    }

    #[tokio::test]
    async fn large_frames_wait_for_the_pool_and_small_ones_do_not_wait_behind_them() {
        let m = Memory::new(&limits(8 << 20));
        let first = m.reserve_request(6 << 20).await.unwrap();
        assert_eq!(m.request_bytes(), 6 << 20);
        // A second large frame does not fit until the first is released.
        let second = m.reserve_request(6 << 20);
        tokio::pin!(second);
        assert!(
            futures_poll_once(second.as_mut()).await.is_none(),
            "a large frame must wait while the pool is spent"
        );
        // A small request goes ahead meanwhile.
        let small = m.reserve_request(4096).await.unwrap();
        drop(small);
        drop(first);
        assert!(second.await.is_some());
        // Nothing fits a frame larger than the large pool.
        assert!(m.reserve_request(9 << 20).await.is_none());
    }

    async fn futures_poll_once<F: std::future::Future + Unpin>(f: F) -> Option<F::Output> {
        tokio::time::timeout(Duration::from_millis(50), f)
            .await
            .ok()
    }

    #[test]
    fn response_holds_give_their_room_back() {
        let m = Memory::new(&limits(1000));
        let a = m.hold_response(600);
        assert_eq!(m.response_room(), 400);
        let b = m.hold_response(600);
        assert_eq!(
            m.response_room(),
            0,
            "an overshoot leaves no room, never a wrap"
        );
        drop(a);
        drop(b);
        assert_eq!(m.response_room(), 1000);
    }

    #[test]
    fn per_ip_slots_are_counted_and_given_back() {
        let p = PerIp::new(2);
        let ip: IpAddr = "127.0.0.2".parse().unwrap();
        let other: IpAddr = "127.0.0.3".parse().unwrap();
        let a = p.admit(ip).unwrap();
        let _b = p.admit(ip).unwrap();
        assert!(p.admit(ip).is_none());
        assert!(
            p.admit(other).is_some(),
            "another address has its own count"
        );
        drop(a);
        assert!(p.admit(ip).is_some());
    }
}
