//! Prometheus metrics: request rates and latencies by API, bytes in and out, log end offsets
//! and recovery figures. Rendered in the text format by the admin server.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    pub api: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub topic: String,
    pub partition: String,
}

pub struct Metrics {
    pub registry: Registry,
    pub requests: Family<ApiLabels, Counter>,
    pub request_seconds: Family<ApiLabels, Histogram>,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub connections: Gauge,
    pub connections_refused: Counter,
    /// TLS handshakes that failed on SSL listeners (the connection was closed).
    pub tls_handshakes_failed: Counter,
    /// Request bytes reserved and response bytes built but unwritten (set when rendered).
    pub request_bytes_queued: Gauge,
    pub response_bytes_unwritten: Gauge,
    /// Partition reads done for Fetch requests (a parked fetch reads once, when it answers).
    pub fetch_partition_reads: Counter,
    /// Responses that carried a quota throttle (their connection then paused reading).
    pub throttled_responses: Counter,
    /// Fetch sessions (KIP-227) cached, the partitions they hold, incremental fetches
    /// accepted and sessions evicted.
    pub fetch_sessions: Gauge,
    pub fetch_session_partitions: Gauge,
    pub incremental_fetches: Counter,
    pub fetch_session_evictions: Counter,
    pub log_end_offset: Family<PartitionLabels, Gauge>,
    pub high_watermark: Family<PartitionLabels, Gauge>,
    pub recovery_seconds: Gauge<f64, AtomicU64>,
    pub recovery_segments: Counter,
    pub recovery_truncated_bytes: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("strand");
        let requests = Family::<ApiLabels, Counter>::default();
        let request_seconds = Family::<ApiLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 18))
        });
        let m = Self {
            requests,
            request_seconds,
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            connections: Gauge::default(),
            connections_refused: Counter::default(),
            tls_handshakes_failed: Counter::default(),
            request_bytes_queued: Gauge::default(),
            response_bytes_unwritten: Gauge::default(),
            fetch_partition_reads: Counter::default(),
            throttled_responses: Counter::default(),
            fetch_sessions: Gauge::default(),
            fetch_session_partitions: Gauge::default(),
            incremental_fetches: Counter::default(),
            fetch_session_evictions: Counter::default(),
            log_end_offset: Family::default(),
            high_watermark: Family::default(),
            recovery_seconds: Gauge::default(),
            recovery_segments: Counter::default(),
            recovery_truncated_bytes: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "Kafka requests handled, by API",
            m.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Kafka request latency, by API",
            m.request_seconds.clone(),
        );
        registry.register(
            "bytes_in",
            "Record bytes appended by producers",
            m.bytes_in.clone(),
        );
        registry.register(
            "bytes_out",
            "Record bytes served to fetchers",
            m.bytes_out.clone(),
        );
        registry.register(
            "connections",
            "Open client connections",
            m.connections.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections closed at once: max.connections.per.ip reached",
            m.connections_refused.clone(),
        );
        registry.register(
            "tls_handshakes_failed",
            "TLS handshakes that failed on SSL listeners (plaintext on a TLS port, an untrusted or missing client certificate, a timeout)",
            m.tls_handshakes_failed.clone(),
        );
        registry.register(
            "request_bytes_queued",
            "Request bytes read or reserved and not yet handled (queued.max.request.bytes)",
            m.request_bytes_queued.clone(),
        );
        registry.register(
            "response_bytes_unwritten",
            "Response bytes built and not yet written to their clients",
            m.response_bytes_unwritten.clone(),
        );
        registry.register(
            "fetch_partition_reads",
            "Partition reads done for Fetch requests",
            m.fetch_partition_reads.clone(),
        );
        registry.register(
            "throttled_responses",
            "Responses throttled by a client quota (throttle_time_ms > 0)",
            m.throttled_responses.clone(),
        );
        registry.register(
            "fetch_sessions",
            "Fetch sessions cached (max.incremental.fetch.session.cache.slots)",
            m.fetch_sessions.clone(),
        );
        registry.register(
            "fetch_session_partitions",
            "Partitions held by all cached fetch sessions",
            m.fetch_session_partitions.clone(),
        );
        registry.register(
            "incremental_fetches",
            "Incremental fetches (KIP-227) accepted",
            m.incremental_fetches.clone(),
        );
        registry.register(
            "fetch_session_evictions",
            "Fetch sessions evicted to make room for new ones",
            m.fetch_session_evictions.clone(),
        );
        registry.register(
            "log_end_offset",
            "Log end offset per partition",
            m.log_end_offset.clone(),
        );
        registry.register(
            "high_watermark",
            "High watermark per partition",
            m.high_watermark.clone(),
        );
        registry.register(
            "recovery_duration_seconds",
            "Time spent opening logs at startup",
            m.recovery_seconds.clone(),
        );
        registry.register(
            "recovery_segments_scanned",
            "Segments validated by crash recovery",
            m.recovery_segments.clone(),
        );
        registry.register(
            "recovery_truncated_bytes",
            "Bytes cut off by crash recovery",
            m.recovery_truncated_bytes.clone(),
        );
        Self { registry, ..m }
    }
}

impl Metrics {
    pub fn observe(&self, api: &str, seconds: f64) {
        let labels = ApiLabels {
            api: api.to_string(),
        };
        self.requests.get_or_create(&labels).inc();
        self.request_seconds.get_or_create(&labels).observe(seconds);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
