//! Wire-level pieces: the record batch header and its checks (no I/O), and whole request
//! frames over a blocking socket for raw test clients (`frames`). Request and
//! response messages come from the `kafka-protocol` crate.

pub mod batch;
pub mod frames;
pub mod records;
