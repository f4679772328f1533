//! Wire-level pieces that need no I/O: the record batch header and its checks. Request and
//! response messages come from the `kafka-protocol` crate.

pub mod batch;
pub mod records;
