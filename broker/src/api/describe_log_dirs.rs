//! DescribeLogDirs (`kafka-log-dirs`, and `kafka-reassign-partitions`, which records where each
//! replica lives before it moves one): this broker's one data directory, the size of each
//! replica it holds, and the directory's disk space (KIP-827).

use std::path::Path;
use std::sync::Arc;

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};

use super::str_bytes;
use crate::state::Broker;

/// Kafka's answer when a volume's size is unknown.
const UNKNOWN_BYTES: i64 = -1;

pub fn handle(broker: &Arc<Broker>, req: DescribeLogDirsRequest) -> DescribeLogDirsResponse {
    let wanted = |topic: &str, partition: i32| match &req.topics {
        None => true,
        Some(ts) => ts
            .iter()
            .any(|t| t.topic.as_str() == topic && t.partitions.contains(&partition)),
    };
    let mut dir = DescribeLogDirsResult::default();
    dir.log_dir = str_bytes(broker.config.data_dir.display().to_string());
    (dir.total_bytes, dir.usable_bytes) = disk_space(&broker.config.data_dir)
        .map_or((UNKNOWN_BYTES, UNKNOWN_BYTES), |(total, free)| {
            (total as i64, free as i64)
        });
    for topic in broker.topics() {
        let partitions: Vec<DescribeLogDirsPartition> = topic
            .partitions
            .iter()
            .flatten()
            .filter(|p| wanted(&p.topic, p.index))
            .map(|p| {
                let mut e = DescribeLogDirsPartition::default();
                e.partition_index = p.index;
                e.partition_size = p.log().size_bytes() as i64;
                // Kafka reports a lag only for a replica being moved between directories
                // (a "future" log); there is one directory here.
                e.offset_lag = 0;
                e
            })
            .collect();
        if !partitions.is_empty() {
            let mut t = DescribeLogDirsTopic::default();
            t.name = TopicName(str_bytes(topic.record.name.clone()));
            t.partitions = partitions;
            dir.topics.push(t);
        }
    }
    let mut r = DescribeLogDirsResponse::default();
    r.results.push(dir);
    r
}

/// Total and available bytes of the filesystem holding `path`.
fn disk_space(path: &Path) -> Option<(u64, u64)> {
    let s = rustix::fs::statvfs(path).ok()?;
    Some((
        s.f_blocks.saturating_mul(s.f_frsize),
        s.f_bavail.saturating_mul(s.f_frsize),
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn disk_space_is_read_for_a_real_directory_and_none_for_a_missing_one() {
        let dir = std::env::temp_dir();
        let (total, free) = super::disk_space(&dir).expect("statvfs of the temp dir");
        assert!(total > 0 && free <= total, "{total} {free}");
        assert!(super::disk_space(std::path::Path::new("/nonexistent/strand")).is_none());
    }
}
