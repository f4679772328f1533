//! Consumer groups (Kafka's classic group protocol) and committed offsets.
//!
//! - `state`: one group's membership state machine, pure (time and ids passed in).
//! - `records`: the `__consumer_offsets` record formats (Kafka's), pure.
//! - `retention`: when a committed offset expires (offsets.retention.minutes), pure.
//! - `coordinator`: the I/O side: which offsets partitions this broker leads, loading a
//!   partition's log into groups on becoming its leader, parking requests until the state
//!   machine answers them, writing through the partition's leader append and answering only
//!   once the write is committed (high watermark), timers, offsets expiry, and snapshots that
//!   bound the log.

pub mod assignor;
pub mod consumer;
pub mod coordinator;
pub mod records;
pub mod retention;
pub mod state;

pub use coordinator::{Coordinator, GroupConfig, GroupReply, OFFSETS_TOPIC};

/// The offsets partition that holds `group_id`: Kafka's `Utils.abs(groupId.hashCode) %
/// partitions`, with Java's String.hashCode over UTF-16 code units, so Kafka's tools and
/// ours agree on where a group lives.
pub fn partition_for(group_id: &str, partitions: usize) -> usize {
    let hash = group_id
        .encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
    // Kafka's Utils.abs maps i32::MIN to 0 rather than overflowing.
    let abs = if hash == i32::MIN { 0 } else { hash.abs() };
    abs as usize % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::partition_for;

    #[test]
    fn matches_java_string_hash_code() {
        // Values from jshell: "my-group".hashCode() == -1906497762, "".hashCode() == 0,
        // "console-consumer-1".hashCode() == 35782224, and "polygenelubricants" hashes to
        // Integer.MIN_VALUE, which Kafka's Utils.abs maps to 0.
        assert_eq!(partition_for("my-group", 50), 1_906_497_762 % 50);
        assert_eq!(partition_for("", 50), 0);
        assert_eq!(partition_for("console-consumer-1", 50), 35_782_224 % 50);
        assert_eq!(partition_for("polygenelubricants", 50), 0);
        // Non-ASCII goes by UTF-16 code units: "é".hashCode() == 233.
        assert_eq!(partition_for("é", 50), 233 % 50);
        assert_eq!(partition_for("x", 0), 0);
    }
}
