//! Per-topic log configuration, named and parsed as Kafka names them (`retention.ms`, ...).

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// How often data is forced to disk with `fsync`.
///
/// The default is [`FlushPolicy::os`]: never fsync on the write path and let the operating system
/// write dirty pages back, exactly as Kafka does by default. Durability comes from replication
/// (an acknowledged record lives in the page cache of every in-sync replica) and a process crash
/// loses nothing that was written; only a power loss of every replica at once could. Fsyncing per
/// message would cap throughput at the disk's sync rate for no gain in a replicated cluster.
/// Rolled segments are always fsynced in the background, which bounds recovery work after a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushPolicy {
    /// `flush.messages`: fsync after this many records (`None` = never).
    pub messages: Option<u64>,
    /// `flush.ms`: fsync when the oldest unflushed write is this old (`None` = never).
    pub ms: Option<u64>,
}

impl FlushPolicy {
    /// Leave flushing to the operating system (the default).
    pub fn os() -> Self {
        FlushPolicy {
            messages: None,
            ms: None,
        }
    }
    /// Fsync after every append.
    pub fn every_append() -> Self {
        FlushPolicy {
            messages: Some(1),
            ms: None,
        }
    }
}

/// Which timestamp a stored record carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    /// The producer's timestamp.
    CreateTime,
    /// The broker's clock when the batch was appended.
    LogAppendTime,
}

/// Configuration of one partition log. [`LogConfig::default`] gives Kafka's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// `segment.bytes`: roll when the active segment would grow past this size.
    pub segment_bytes: u64,
    /// `segment.ms`: roll when the active segment is older than this.
    pub segment_ms: u64,
    /// `segment.index.bytes`: roll when an index of the active segment reaches this size.
    pub segment_index_bytes: u64,
    /// `index.interval.bytes`: bytes of log between two offset-index entries.
    pub index_interval_bytes: u64,
    /// `retention.ms`: delete segments whose newest record is older than this (`None` = forever).
    pub retention_ms: Option<u64>,
    /// `retention.bytes`: delete the oldest segments while the log is larger (`None` = no limit).
    pub retention_bytes: Option<u64>,
    /// `cleanup.policy` contains `delete`.
    pub delete: bool,
    /// `cleanup.policy` contains `compact`.
    pub compact: bool,
    /// `delete.retention.ms`: how long tombstones survive compaction.
    pub delete_retention_ms: u64,
    /// `min.compaction.lag.ms`: records younger than this are never compacted.
    pub min_compaction_lag_ms: u64,
    /// `min.cleanable.dirty.ratio`: compact when this share of the log is uncompacted.
    pub min_cleanable_dirty_ratio: f64,
    /// `flush.messages` and `flush.ms`.
    pub flush: FlushPolicy,
    /// `max.message.bytes`: the largest batch accepted.
    pub max_message_bytes: u64,
    /// `min.insync.replicas`: used by the broker for `acks=all`.
    pub min_insync_replicas: u32,
    /// `message.timestamp.type`.
    pub timestamp_type: TimestampType,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            segment_index_bytes: 10 * 1024 * 1024,
            index_interval_bytes: 4096,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            delete: true,
            compact: false,
            delete_retention_ms: 24 * 3600 * 1000,
            min_compaction_lag_ms: 0,
            min_cleanable_dirty_ratio: 0.5,
            flush: FlushPolicy::os(),
            max_message_bytes: 1024 * 1024 + 12,
            min_insync_replicas: 1,
            timestamp_type: TimestampType::CreateTime,
        }
    }
}

/// Every config key [`LogConfig::set`] understands.
pub const KEYS: &[&str] = &[
    "segment.bytes",
    "segment.ms",
    "segment.index.bytes",
    "index.interval.bytes",
    "retention.ms",
    "retention.bytes",
    "cleanup.policy",
    "delete.retention.ms",
    "min.compaction.lag.ms",
    "min.cleanable.dirty.ratio",
    "flush.messages",
    "flush.ms",
    "max.message.bytes",
    "min.insync.replicas",
    "message.timestamp.type",
];

fn parse_i64(key: &str, value: &str) -> Result<i64> {
    value
        .trim()
        .parse::<i64>()
        .map_err(|_| Error::InvalidConfig(format!("{key}={value:?}: expected a whole number")))
}

fn parse_u64(key: &str, value: &str, min: u64) -> Result<u64> {
    let v = parse_i64(key, value)?;
    if v < min as i64 {
        return Err(Error::InvalidConfig(format!(
            "{key}={value}: must be at least {min}"
        )));
    }
    Ok(v as u64)
}

/// `-1` (or any negative number) means "no limit", as in Kafka.
fn parse_limit(key: &str, value: &str) -> Result<Option<u64>> {
    let v = parse_i64(key, value)?;
    Ok(if v < 0 { None } else { Some(v as u64) })
}

/// Kafka treats `Long.MAX_VALUE` as "never" for the flush settings.
fn parse_never(key: &str, value: &str) -> Result<Option<u64>> {
    let v = parse_u64(key, value, 1)?;
    Ok(if v >= i64::MAX as u64 { None } else { Some(v) })
}

impl LogConfig {
    /// Sets one Kafka-named config. Unknown keys and bad values are refused with a message that
    /// names the key and what it accepts.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        match key {
            "segment.bytes" => self.segment_bytes = parse_u64(key, value, 14)?,
            "segment.ms" => self.segment_ms = parse_u64(key, value, 1)?,
            "segment.index.bytes" => self.segment_index_bytes = parse_u64(key, value, 8)?,
            "index.interval.bytes" => self.index_interval_bytes = parse_u64(key, value, 0)?,
            "retention.ms" => self.retention_ms = parse_limit(key, value)?,
            "retention.bytes" => self.retention_bytes = parse_limit(key, value)?,
            "cleanup.policy" => {
                let (mut delete, mut compact) = (false, false);
                for p in value.split(',').map(str::trim) {
                    match p {
                        "delete" => delete = true,
                        "compact" => compact = true,
                        "" => {}
                        other => {
                            return Err(Error::InvalidConfig(format!(
                            "cleanup.policy={other:?}: expected delete, compact or compact,delete"
                        )))
                        }
                    }
                }
                self.delete = delete;
                self.compact = compact;
            }
            "delete.retention.ms" => self.delete_retention_ms = parse_u64(key, value, 0)?,
            "min.compaction.lag.ms" => self.min_compaction_lag_ms = parse_u64(key, value, 0)?,
            "min.cleanable.dirty.ratio" => {
                let v: f64 = value.trim().parse().map_err(|_| {
                    Error::InvalidConfig(format!("{key}={value:?}: expected a number"))
                })?;
                if !(0.0..=1.0).contains(&v) {
                    return Err(Error::InvalidConfig(format!(
                        "{key}={value}: must be between 0 and 1"
                    )));
                }
                self.min_cleanable_dirty_ratio = v;
            }
            "flush.messages" => self.flush.messages = parse_never(key, value)?,
            "flush.ms" => self.flush.ms = parse_never(key, value)?,
            "max.message.bytes" => self.max_message_bytes = parse_u64(key, value, 0)?,
            "min.insync.replicas" => {
                self.min_insync_replicas = parse_u64(key, value, 1)?.min(u32::MAX as u64) as u32
            }
            "message.timestamp.type" => {
                self.timestamp_type = match value.trim() {
                    "CreateTime" => TimestampType::CreateTime,
                    "LogAppendTime" => TimestampType::LogAppendTime,
                    other => {
                        return Err(Error::InvalidConfig(format!(
                            "message.timestamp.type={other:?}: expected CreateTime or LogAppendTime"
                        )))
                    }
                }
            }
            other => {
                return Err(Error::InvalidConfig(format!(
                    "unknown topic config {other:?}; known: {}",
                    KEYS.join(", ")
                )))
            }
        }
        Ok(())
    }

    /// `defaults` with every override in `overrides` applied.
    pub fn with_overrides(
        defaults: &LogConfig,
        overrides: &BTreeMap<String, String>,
    ) -> Result<Self> {
        let mut c = defaults.clone();
        for (k, v) in overrides {
            c.set(k, v)?;
        }
        Ok(c)
    }

    /// The value of `key` in Kafka's notation, for DescribeConfigs.
    pub fn get(&self, key: &str) -> Option<String> {
        let limit = |v: Option<u64>| v.map_or("-1".to_string(), |v| v.to_string());
        let never = |v: Option<u64>| v.map_or(i64::MAX.to_string(), |v| v.to_string());
        Some(match key {
            "segment.bytes" => self.segment_bytes.to_string(),
            "segment.ms" => self.segment_ms.to_string(),
            "segment.index.bytes" => self.segment_index_bytes.to_string(),
            "index.interval.bytes" => self.index_interval_bytes.to_string(),
            "retention.ms" => limit(self.retention_ms),
            "retention.bytes" => limit(self.retention_bytes),
            "cleanup.policy" => match (self.compact, self.delete) {
                (true, true) => "compact,delete".into(),
                (true, false) => "compact".into(),
                (false, true) => "delete".into(),
                (false, false) => "".into(),
            },
            "delete.retention.ms" => self.delete_retention_ms.to_string(),
            "min.compaction.lag.ms" => self.min_compaction_lag_ms.to_string(),
            "min.cleanable.dirty.ratio" => self.min_cleanable_dirty_ratio.to_string(),
            "flush.messages" => never(self.flush.messages),
            "flush.ms" => never(self.flush.ms),
            "max.message.bytes" => self.max_message_bytes.to_string(),
            "min.insync.replicas" => self.min_insync_replicas.to_string(),
            "message.timestamp.type" => match self.timestamp_type {
                TimestampType::CreateTime => "CreateTime".into(),
                TimestampType::LogAppendTime => "LogAppendTime".into(),
            },
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_round_trips_through_get_and_set() {
        let d = LogConfig::default();
        for k in KEYS {
            let v = d.get(k).unwrap();
            let mut c = LogConfig::default();
            c.set(k, &v).unwrap_or_else(|e| panic!("{k}={v}: {e}"));
            assert_eq!(c, d, "{k}");
        }
    }

    #[test]
    fn bad_values_name_the_key() {
        let mut c = LogConfig::default();
        let e = c.set("retention.ms", "soon").unwrap_err().to_string();
        assert!(e.contains("retention.ms"), "{e}");
        let e = c.set("cleanup.policy", "shred").unwrap_err().to_string();
        assert!(e.contains("cleanup.policy"), "{e}");
        assert!(c.set("no.such.key", "1").is_err());
        c.set("cleanup.policy", "compact,delete").unwrap();
        assert!(c.compact && c.delete);
    }
}
