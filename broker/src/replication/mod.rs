//! Kafka-style replication by follower fetch. `state` is the leader's bookkeeping as a pure
//! state machine (follower end offsets, high watermark, ISR proposals); the I/O around it (the
//! follower fetch loop, AlterPartition calls to the controller) drives it with explicit times.

pub mod client;
pub mod fetcher;
pub mod read_replica;
pub mod state;
