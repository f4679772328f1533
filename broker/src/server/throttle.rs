//! Client quotas on the wire (KIP-219): what a request counts against its client's quotas,
//! the `throttle_time_ms` its response carries, and the mute that keeps the connection from
//! reading the client's next request until the throttle has passed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kafka_protocol::messages::{ApiKey, ResponseKind};
use tokio::time::Instant;

use crate::quota::{ANONYMOUS, Kind, Quotas};

/// What one request is measured by, kept until its response is built.
#[derive(Debug)]
pub struct Metered {
    user: Arc<str>,
    client_id: String,
    request_bytes: usize,
    /// Time its handler ran before returning (a long poll's wait is not in it).
    pub handler: Duration,
}

impl Metered {
    /// None when the request is not metered: no quota is set anywhere, the connection is a
    /// broker's, or the request is `exempt` (a follower's fetch, which Kafka leaves to
    /// replication quotas; a SASL step, whose response cannot carry a throttle).
    pub fn new(
        quotas: &Quotas,
        principal: Option<&Arc<str>>,
        client_id: &str,
        request_bytes: usize,
        exempt: bool,
    ) -> Option<Self> {
        if exempt || !quotas.any() || principal.is_some_and(|p| &**p == crate::auth::BROKER_USER) {
            return None;
        }
        Some(Self {
            user: principal.cloned().unwrap_or_else(|| Arc::from(ANONYMOUS)),
            client_id: client_id.to_string(),
            request_bytes,
            handler: Duration::ZERO,
        })
    }

    /// Counts the request (and its response, if it has one) and answers the throttle in ms.
    pub fn throttle_ms(&self, quotas: &Quotas, api: ApiKey, response_bytes: usize) -> u64 {
        let now = crate::quota::now_ms();
        let record =
            |kind, value: f64| quotas.record(&self.user, &self.client_id, kind, value, now);
        let mut ms = record(Kind::Request, self.handler.as_secs_f64() * 100.0);
        match api {
            ApiKey::Produce => ms = ms.max(record(Kind::Produce, self.request_bytes as f64)),
            ApiKey::Fetch => ms = ms.max(record(Kind::Fetch, response_bytes as f64)),
            _ => {}
        }
        ms
    }
}

/// What a response counts against a consumer byte rate: a Fetch response's encoded size, as
/// Kafka counts it (an empty partition costs its few dozen bytes, not a guess); 0 otherwise.
pub fn counted_bytes(body: &ResponseKind, version: i16) -> usize {
    use kafka_protocol::protocol::Encodable;
    match body {
        ResponseKind::Fetch(r) => r.compute_size(version).unwrap_or(0),
        _ => 0,
    }
}

/// Until when a connection reads nothing (a throttled client's mute).
pub struct Mute {
    base: Instant,
    until_ms: AtomicU64,
}

impl Default for Mute {
    fn default() -> Self {
        Self {
            base: Instant::now(),
            until_ms: AtomicU64::new(0),
        }
    }
}

impl Mute {
    /// Mutes for `ms` from now (a longer mute already set stays).
    pub fn extend(&self, ms: u64) {
        let until = self.base.elapsed().as_millis() as u64 + ms;
        self.until_ms.fetch_max(until, Ordering::Relaxed);
    }

    /// How much longer the connection stays muted.
    pub fn remaining(&self) -> Duration {
        let until = self.until_ms.load(Ordering::Relaxed);
        let now = self.base.elapsed().as_millis() as u64;
        Duration::from_millis(until.saturating_sub(now))
    }
}

/// Puts the throttle in the response; versions without the field simply do not carry it.
pub fn set_throttle(body: &mut ResponseKind, ms: u64) {
    let ms = i32::try_from(ms).unwrap_or(i32::MAX);
    macro_rules! set {
        ($($api:ident),* $(,)?) => {
            match body {
                $(ResponseKind::$api(r) => r.throttle_time_ms = ms,)*
                _ => {}
            }
        };
    }
    set!(
        Produce,
        Fetch,
        ListOffsets,
        Metadata,
        ApiVersions,
        CreateTopics,
        DeleteTopics,
        InitProducerId,
        OffsetForLeaderEpoch,
        DescribeConfigs,
        FindCoordinator,
        JoinGroup,
        SyncGroup,
        Heartbeat,
        LeaveGroup,
        OffsetCommit,
        OffsetFetch,
        DescribeGroups,
        ListGroups,
        DeleteGroups,
        OffsetDelete,
        CreatePartitions,
        AlterConfigs,
        IncrementalAlterConfigs,
        ElectLeaders,
        AlterPartitionReassignments,
        ListPartitionReassignments,
        DescribeCluster,
        DescribeLogDirs,
        DeleteRecords,
        DescribeClientQuotas,
        AlterClientQuotas,
        DescribeTopicPartitions,
        DescribeProducers,
        DescribeUserScramCredentials,
        AlterUserScramCredentials,
        DescribeAcls,
        CreateAcls,
        DeleteAcls,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{FetchResponse, ProduceResponse};

    #[test]
    fn the_throttle_goes_into_every_served_response() {
        let mut r = ResponseKind::Fetch(FetchResponse::default());
        set_throttle(&mut r, 1500);
        assert!(matches!(r, ResponseKind::Fetch(ref f) if f.throttle_time_ms == 1500));
        let mut r = ResponseKind::Produce(ProduceResponse::default());
        set_throttle(&mut r, u64::MAX);
        assert!(matches!(r, ResponseKind::Produce(ref p) if p.throttle_time_ms == i32::MAX));
    }

    #[test]
    fn a_mute_lasts_as_long_as_the_longest_throttle() {
        let m = Mute::default();
        assert_eq!(m.remaining(), Duration::ZERO);
        m.extend(0);
        assert_eq!(m.remaining(), Duration::ZERO);
        m.extend(60_000);
        m.extend(100);
        // The shorter throttle did not cut the longer one short.
        let left = m.remaining();
        assert!(
            left > Duration::from_secs(50) && left <= Duration::from_secs(60),
            "{left:?}"
        );
    }
}
