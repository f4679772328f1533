//! Strand broker: a Kafka-compatible broker with durable segment storage.
//!
//! Layers, from the wire inwards: `server` (sockets, frames, request order) -> `api` (one
//! handler per Kafka API) -> `state` and `partition` (hosted topics, high watermark, group
//! commit) -> `storage` (segments, indexes, checkpoints, recovery). `protocol` holds the pure
//! record-batch code; `group` the consumer-group coordinator and its offsets log; `admin`
//! serves health, readiness and metrics over HTTP.
//!
//! Glossary (Kafka's words):
//! - **LEO** (log end offset): the offset the next appended record gets.
//! - **HW** (high watermark): records below it are committed and visible to consumers.
//! - **log start offset**: the first offset still stored (retention moves it up).
//! - **leader epoch**: a counter bumped on every leadership change; stamped on each batch.
//! - **recovery point**: offsets below it are known to be fsynced; recovery starts there.
//! - **ISR**: in-sync replicas (here, in standalone mode, only this broker).

#![deny(unsafe_code)]

pub mod admin;
#[allow(unsafe_code)] // the only unsafe code: see its SAFETY notes
pub mod alloc_guard;
pub mod api;
pub mod auth;
pub mod blocking;
pub mod clock;
pub mod cluster;
pub mod group;
pub mod in_force;
pub mod listener;
pub mod log_limit;
pub mod metadata;
pub mod metrics;
pub mod partition;
pub mod producer_ids;
pub mod protocol;
pub mod quota;
pub mod replication;
pub mod server;
pub mod state;
pub mod storage;
pub mod tls;
pub mod topic_config;
pub mod topic_name;
