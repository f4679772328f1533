//! Durable storage on Kafka's on-disk layout: `<data-dir>/<topic>-<partition>/` holding
//! segments (`.log`, `.index`, `.timeindex`), `leader-epoch-checkpoint` and producer-state
//! snapshots; the data dir holds the offset checkpoints and the clean-shutdown marker.

pub mod checkpoint;
pub mod epoch_cache;
pub mod index;
pub mod log;
pub mod log_dir;
pub mod producer_state;
pub mod segment;

use std::path::PathBuf;

/// Storage errors tell corruption (the bytes are wrong) from I/O failure (the disk is).
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("corrupt file {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{0}")]
    Refused(String),
}
