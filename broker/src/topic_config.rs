//! Topic configuration: Kafka's names, defaults and validation, plus our fsync policy.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// When the broker fsyncs appended data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FsyncPolicy {
    /// Kafka's default: never fsync on the write path; rely on replication (and the OS).
    None,
    /// fsync before acknowledging a write (acks=1 or all); concurrent writes share one fsync.
    BeforeAck,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    pub segment_bytes: u64,
    pub segment_ms: i64,
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub index_interval_bytes: u64,
    pub max_message_bytes: usize,
    pub min_insync_replicas: i32,
    pub fsync: FsyncPolicy,
    pub timestamp_type: TimestampType,
}

impl Default for TopicConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            index_interval_bytes: 4096,
            max_message_bytes: 1_048_588,
            min_insync_replicas: 1,
            fsync: FsyncPolicy::None,
            timestamp_type: TimestampType::CreateTime,
        }
    }
}

/// Topic config keys this broker understands, with a one-line description.
pub const KNOWN_KEYS: &[(&str, &str)] = &[
    ("cleanup.policy", "only 'delete' is supported"),
    ("segment.bytes", "roll a segment at this size"),
    ("segment.ms", "roll a segment at this age"),
    (
        "retention.ms",
        "delete whole segments older than this (-1: forever)",
    ),
    (
        "retention.bytes",
        "delete oldest segments above this partition size (-1: no limit)",
    ),
    ("index.interval.bytes", "bytes between offset index entries"),
    ("max.message.bytes", "largest record batch accepted"),
    (
        "min.insync.replicas",
        "replicas that must have a write for acks=all",
    ),
    ("message.timestamp.type", "CreateTime or LogAppendTime"),
    ("fsync.policy", "none (Kafka's default) or before-ack"),
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown topic config '{0}'")]
    Unknown(String),
    #[error("invalid value '{value}' for '{key}': {reason}")]
    Invalid {
        key: String,
        value: String,
        reason: String,
    },
}

fn parse_num<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, ConfigError> {
    value.trim().parse().map_err(|_| ConfigError::Invalid {
        key: key.into(),
        value: value.into(),
        reason: "not a number".into(),
    })
}

fn at_least(key: &str, value: &str, v: i64, min: i64) -> Result<(), ConfigError> {
    if v < min {
        return Err(ConfigError::Invalid {
            key: key.into(),
            value: value.into(),
            reason: format!("must be >= {min}"),
        });
    }
    Ok(())
}

impl TopicConfig {
    /// Applies overrides (Kafka config names) over `self`, refusing unknown keys and bad values.
    pub fn with_overrides(
        &self,
        overrides: &BTreeMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let mut c = self.clone();
        for (key, value) in overrides {
            let k = key.as_str();
            match k {
                "cleanup.policy" => {
                    if value != "delete" {
                        return Err(ConfigError::Invalid {
                            key: key.clone(),
                            value: value.clone(),
                            reason: "only 'delete' is supported (no log compaction yet)".into(),
                        });
                    }
                }
                "segment.bytes" => {
                    let v: i64 = parse_num(k, value)?;
                    at_least(k, value, v, 1024)?;
                    if v > i64::from(i32::MAX) {
                        return Err(ConfigError::Invalid {
                            key: key.clone(),
                            value: value.clone(),
                            reason: "must fit in 2 GiB".into(),
                        });
                    }
                    c.segment_bytes = v as u64;
                }
                "segment.ms" => {
                    c.segment_ms = parse_num(k, value)?;
                    at_least(k, value, c.segment_ms, 1)?;
                }
                "retention.ms" => {
                    c.retention_ms = parse_num(k, value)?;
                    at_least(k, value, c.retention_ms, -1)?;
                }
                "retention.bytes" => {
                    c.retention_bytes = parse_num(k, value)?;
                    at_least(k, value, c.retention_bytes, -1)?;
                }
                "index.interval.bytes" => {
                    let v: i64 = parse_num(k, value)?;
                    at_least(k, value, v, 0)?;
                    c.index_interval_bytes = v as u64;
                }
                "max.message.bytes" => {
                    let v: i64 = parse_num(k, value)?;
                    at_least(k, value, v, 0)?;
                    c.max_message_bytes = v.min(i64::from(i32::MAX)) as usize;
                }
                "min.insync.replicas" => {
                    c.min_insync_replicas = parse_num(k, value)?;
                    at_least(k, value, i64::from(c.min_insync_replicas), 1)?;
                }
                "message.timestamp.type" => {
                    c.timestamp_type = match value.as_str() {
                        "CreateTime" => TimestampType::CreateTime,
                        "LogAppendTime" => TimestampType::LogAppendTime,
                        _ => {
                            return Err(ConfigError::Invalid {
                                key: key.clone(),
                                value: value.clone(),
                                reason: "expected CreateTime or LogAppendTime".into(),
                            });
                        }
                    }
                }
                "fsync.policy" => {
                    c.fsync = match value.as_str() {
                        "none" => FsyncPolicy::None,
                        "before-ack" => FsyncPolicy::BeforeAck,
                        _ => {
                            return Err(ConfigError::Invalid {
                                key: key.clone(),
                                value: value.clone(),
                                reason: "expected none or before-ack".into(),
                            });
                        }
                    }
                }
                _ => return Err(ConfigError::Unknown(key.clone())),
            }
        }
        Ok(c)
    }

    /// Every known key with its effective value, for DescribeConfigs.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        vec![
            ("cleanup.policy", "delete".into()),
            ("segment.bytes", self.segment_bytes.to_string()),
            ("segment.ms", self.segment_ms.to_string()),
            ("retention.ms", self.retention_ms.to_string()),
            ("retention.bytes", self.retention_bytes.to_string()),
            (
                "index.interval.bytes",
                self.index_interval_bytes.to_string(),
            ),
            ("max.message.bytes", self.max_message_bytes.to_string()),
            ("min.insync.replicas", self.min_insync_replicas.to_string()),
            (
                "message.timestamp.type",
                match self.timestamp_type {
                    TimestampType::CreateTime => "CreateTime".into(),
                    TimestampType::LogAppendTime => "LogAppendTime".into(),
                },
            ),
            (
                "fsync.policy",
                match self.fsync {
                    FsyncPolicy::None => "none".into(),
                    FsyncPolicy::BeforeAck => "before-ack".into(),
                },
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn overrides_apply_and_bad_input_is_refused() {
        let base = TopicConfig::default();
        let c = base
            .with_overrides(&map(&[
                ("retention.ms", "1000"),
                ("fsync.policy", "before-ack"),
            ]))
            .unwrap();
        assert_eq!(c.retention_ms, 1000);
        assert_eq!(c.fsync, FsyncPolicy::BeforeAck);
        assert_eq!(
            base.with_overrides(&map(&[("nope", "1")])),
            Err(ConfigError::Unknown("nope".into()))
        );
        assert!(
            base.with_overrides(&map(&[("segment.bytes", "12x")]))
                .is_err()
        );
        assert!(
            base.with_overrides(&map(&[("segment.bytes", "10")]))
                .is_err()
        );
        assert!(
            base.with_overrides(&map(&[("cleanup.policy", "compact")]))
                .is_err()
        );
        assert!(
            base.with_overrides(&map(&[("min.insync.replicas", "0")]))
                .is_err()
        );
        let described: BTreeMap<_, _> = c.describe().into_iter().collect();
        assert_eq!(described["retention.ms"], "1000");
        assert_eq!(described.len(), KNOWN_KEYS.len());
    }
}
