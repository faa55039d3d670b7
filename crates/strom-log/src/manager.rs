//! The [`LogManager`]: a data directory of partition logs, topic metadata and background upkeep.
//!
//! ```text
//! <data-dir>/
//!   .lock                         held while a process has the directory open
//!   .clean-shutdown               present only between a clean close and the next open
//!   .topics/<topic>.json          partition count, topic id and config overrides
//!   <topic>-<partition>/          one PartitionLog (segments, indexes, checkpoints)
//! ```

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, RwLock};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, write_atomic};
use crate::config::LogConfig;
use crate::error::{Error, IoContext, Result};
use crate::log::{now_ms, PartitionLog, RecoveryReport};

const CLEAN_MARKER: &str = ".clean-shutdown";
const TOPICS_DIR: &str = ".topics";
const LOCK_FILE: &str = ".lock";

/// What the manager knows about a topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    /// Number of partitions.
    pub partitions: i32,
    /// Kafka topic id (a random UUID, as 32 hex digits).
    pub topic_id: String,
    /// Config overrides; everything else comes from the manager's defaults.
    pub configs: BTreeMap<String, String>,
    /// Set while the topic is being deleted; an open that finds it finishes the deletion.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleting: bool,
}

/// What one maintenance round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaintenanceStats {
    /// Segments deleted by retention or log-start advances.
    pub segments_deleted: usize,
    /// Records removed by compaction.
    pub records_compacted: u64,
    /// Logs fsynced because of `flush.ms`.
    pub logs_flushed: usize,
}

type Key = (String, i32);

struct Shared {
    dir: PathBuf,
    defaults: LogConfig,
    topics: RwLock<BTreeMap<String, TopicMeta>>,
    logs: RwLock<BTreeMap<Key, Arc<PartitionLog>>>,
    stop: Mutex<bool>,
    wake: Condvar,
}

/// Owns every partition log under one data directory.
pub struct LogManager {
    shared: Arc<Shared>,
    _lock: File,
    reports: Vec<RecoveryReport>,
    closed: AtomicBool,
    upkeep: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for LogManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogManager")
            .field("dir", &self.shared.dir)
            .finish()
    }
}

/// Checks a topic name against Kafka's rules: 1 to 249 characters of `[a-zA-Z0-9._-]`,
/// not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::InvalidConfig(format!("topic name {name:?} {why}")));
    if name.is_empty() {
        return bad("is empty");
    }
    if name.len() > 249 {
        return bad("is longer than 249 characters");
    }
    if name == "." || name == ".." {
        return bad("is not allowed");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return bad("may only contain ASCII letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

fn new_topic_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Removes leftovers of interrupted atomic writes (`*.tmp`) in `dir`.
fn remove_tmp_files(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).at(dir)? {
        let path = entry.at(dir)?.path();
        if path.extension().is_some_and(|e| e == "tmp") && path.is_file() {
            std::fs::remove_file(&path).at(&path)?;
        }
    }
    Ok(())
}

fn parse_partition_dir(name: &str) -> Option<(String, i32)> {
    let (topic, p) = name.rsplit_once('-')?;
    let p: i32 = p.parse().ok()?;
    if p < 0 || validate_topic_name(topic).is_err() {
        return None;
    }
    Some((topic.to_string(), p))
}

impl LogManager {
    /// Opens (creating if needed) the data directory `dir`. If the previous process did not
    /// close it cleanly, every partition is recovered from its recovery point; see
    /// [`LogManager::recovery_reports`].
    pub fn open(dir: impl AsRef<Path>, defaults: LogConfig) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(dir.join(TOPICS_DIR)).at(&dir)?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = File::create(&lock_path).at(&lock_path)?;
        lock.try_lock().map_err(|_| {
            Error::InvalidConfig(format!(
                "data directory {} is in use by another process",
                dir.display()
            ))
        })?;
        let marker = dir.join(CLEAN_MARKER);
        let clean = marker.exists();

        let mut topics = BTreeMap::new();
        let tdir = dir.join(TOPICS_DIR);
        remove_tmp_files(&dir)?;
        remove_tmp_files(&tdir)?;
        for entry in std::fs::read_dir(&tdir).at(&tdir)? {
            let path = entry.at(&tdir)?.path();
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            let meta: TopicMeta = serde_json::from_slice(&std::fs::read(&path).at(&path)?)
                .map_err(|e| Error::Corrupt {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            if meta.deleting {
                // A deletion was interrupted: finish it.
                tracing::info!(topic = name, "finishing an interrupted topic deletion");
                for p in 0..meta.partitions {
                    let pdir = dir.join(format!("{name}-{p}"));
                    if pdir.exists() {
                        std::fs::remove_dir_all(&pdir).at(&pdir)?;
                    }
                }
                std::fs::remove_file(&path).at(&path)?;
                continue;
            }
            topics.insert(name.to_string(), meta);
        }

        let mut logs = BTreeMap::new();
        let mut reports = Vec::new();
        for entry in std::fs::read_dir(&dir).at(&dir)? {
            let entry = entry.at(&dir)?;
            if !entry.file_type().at(&entry.path())?.is_dir() {
                continue;
            }
            let name = entry.file_name();
            let Some((topic, p)) = name.to_str().and_then(parse_partition_dir) else {
                continue;
            };
            let meta = topics.entry(topic.clone()).or_insert_with(|| {
                tracing::warn!(%topic, "partition directory without topic metadata; using defaults");
                TopicMeta {
                    partitions: 0,
                    topic_id: new_topic_id(),
                    configs: BTreeMap::new(),
                    deleting: false,
                }
            });
            meta.partitions = meta.partitions.max(p + 1);
            if !clean && logs.is_empty() {
                tracing::info!(dir = %dir.display(), "no clean-shutdown marker: recovering logs");
            }
            let config = Arc::new(LogConfig::with_overrides(&defaults, &meta.configs)?);
            let (log, report) = PartitionLog::open(&entry.path(), config, clean)?;
            if !report.problems.is_empty() || report.segments_scanned > 0 {
                reports.push(report);
            }
            logs.insert((topic, p), Arc::new(log));
        }
        // Partitions that a topic declares but that have no directory yet (e.g. after a crash
        // during creation) are created now.
        for (topic, meta) in &topics {
            let config = Arc::new(LogConfig::with_overrides(&defaults, &meta.configs)?);
            for p in 0..meta.partitions {
                if let std::collections::btree_map::Entry::Vacant(v) =
                    logs.entry((topic.clone(), p))
                {
                    let pdir = dir.join(format!("{topic}-{p}"));
                    let (log, _) = PartitionLog::open(&pdir, config.clone(), true)?;
                    v.insert(Arc::new(log));
                }
            }
            write_atomic(
                &tdir.join(format!("{topic}.json")),
                &serde_json::to_vec_pretty(meta).map_err(|e| Error::Internal(e.to_string()))?,
            )?;
        }
        if clean {
            std::fs::remove_file(&marker).at(&marker)?;
            checkpoint::sync_dir(&dir)?;
        }
        Ok(LogManager {
            shared: Arc::new(Shared {
                dir,
                defaults,
                topics: RwLock::new(topics),
                logs: RwLock::new(logs),
                stop: Mutex::new(false),
                wake: Condvar::new(),
            }),
            _lock: lock,
            reports,
            closed: AtomicBool::new(false),
            upkeep: Mutex::new(None),
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The broker-wide defaults topic configs override.
    pub fn defaults(&self) -> &LogConfig {
        &self.shared.defaults
    }

    /// What recovery did on open (empty after a clean shutdown).
    pub fn recovery_reports(&self) -> &[RecoveryReport] {
        &self.reports
    }

    fn write_topic(&self, name: &str, meta: &TopicMeta) -> Result<()> {
        let path = self
            .shared
            .dir
            .join(TOPICS_DIR)
            .join(format!("{name}.json"));
        write_atomic(
            &path,
            &serde_json::to_vec_pretty(meta).map_err(|e| Error::Internal(e.to_string()))?,
        )
    }

    /// Creates a topic with `partitions` partitions and the given config overrides.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: &BTreeMap<String, String>,
    ) -> Result<TopicMeta> {
        self.create_topic_with_id(name, &new_topic_id(), partitions, configs)
    }

    /// Creates a topic whose id was decided elsewhere (a cluster's metadata quorum).
    pub fn create_topic_with_id(
        &self,
        name: &str,
        topic_id: &str,
        partitions: i32,
        configs: &BTreeMap<String, String>,
    ) -> Result<TopicMeta> {
        validate_topic_name(name)?;
        if partitions < 1 {
            return Err(Error::InvalidConfig(format!(
                "topic {name:?}: partition count must be at least 1, got {partitions}"
            )));
        }
        let config = Arc::new(LogConfig::with_overrides(&self.shared.defaults, configs)?);
        let mut topics = self.shared.topics.write();
        if topics.contains_key(name) {
            return Err(Error::TopicAlreadyExists(name.to_string()));
        }
        let meta = TopicMeta {
            partitions,
            topic_id: topic_id.to_string(),
            configs: configs.clone(),
            deleting: false,
        };
        self.write_topic(name, &meta)?;
        let mut logs = self.shared.logs.write();
        for p in 0..partitions {
            let dir = self.shared.dir.join(format!("{name}-{p}"));
            let (log, _) = PartitionLog::open(&dir, config.clone(), true)?;
            logs.insert((name.to_string(), p), Arc::new(log));
        }
        topics.insert(name.to_string(), meta.clone());
        Ok(meta)
    }

    /// Grows a topic to `total` partitions.
    pub fn create_partitions(&self, name: &str, total: i32) -> Result<()> {
        let mut topics = self.shared.topics.write();
        let meta = topics
            .get_mut(name)
            .ok_or_else(|| Error::UnknownTopicOrPartition(name.to_string()))?;
        if total <= meta.partitions {
            return Err(Error::InvalidConfig(format!(
                "topic {name:?} has {} partitions; the new count {total} must be larger",
                meta.partitions
            )));
        }
        let config = Arc::new(LogConfig::with_overrides(
            &self.shared.defaults,
            &meta.configs,
        )?);
        let mut logs = self.shared.logs.write();
        for p in meta.partitions..total {
            let dir = self.shared.dir.join(format!("{name}-{p}"));
            let (log, _) = PartitionLog::open(&dir, config.clone(), true)?;
            logs.insert((name.to_string(), p), Arc::new(log));
        }
        meta.partitions = total;
        let meta = meta.clone();
        self.write_topic(name, &meta)
    }

    /// Deletes a topic and all its data.
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        let mut topics = self.shared.topics.write();
        let meta = topics
            .remove(name)
            .ok_or_else(|| Error::UnknownTopicOrPartition(name.to_string()))?;
        let path = self
            .shared
            .dir
            .join(TOPICS_DIR)
            .join(format!("{name}.json"));
        std::fs::remove_file(&path).at(&path)?;
        let mut logs = self.shared.logs.write();
        for p in 0..meta.partitions {
            if let Some(log) = logs.remove(&(name.to_string(), p)) {
                log.delete()?;
            }
        }
        Ok(())
    }

    /// Replaces a topic's config overrides (all of them) and applies them to its partitions.
    pub fn set_topic_configs(&self, name: &str, configs: &BTreeMap<String, String>) -> Result<()> {
        let config = Arc::new(LogConfig::with_overrides(&self.shared.defaults, configs)?);
        let mut topics = self.shared.topics.write();
        let meta = topics
            .get_mut(name)
            .ok_or_else(|| Error::UnknownTopicOrPartition(name.to_string()))?;
        meta.configs = configs.clone();
        let meta = meta.clone();
        self.write_topic(name, &meta)?;
        for p in 0..meta.partitions {
            if let Some(log) = self.log(name, p) {
                log.set_config(config.clone());
            }
        }
        Ok(())
    }

    /// A topic's metadata.
    pub fn topic(&self, name: &str) -> Option<TopicMeta> {
        self.shared.topics.read().get(name).cloned()
    }

    /// A topic's effective configuration.
    pub fn topic_config(&self, name: &str) -> Result<LogConfig> {
        let meta = self
            .topic(name)
            .ok_or_else(|| Error::UnknownTopicOrPartition(name.to_string()))?;
        LogConfig::with_overrides(&self.shared.defaults, &meta.configs)
    }

    /// All topics, sorted by name.
    pub fn topics(&self) -> Vec<(String, TopicMeta)> {
        self.shared
            .topics
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The log of one partition.
    pub fn log(&self, topic: &str, partition: i32) -> Option<Arc<PartitionLog>> {
        self.shared
            .logs
            .read()
            .get(&(topic.to_string(), partition))
            .cloned()
    }

    /// Every partition log.
    pub fn logs(&self) -> Vec<((String, i32), Arc<PartitionLog>)> {
        self.shared
            .logs
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// One round of upkeep on every log: retention, compaction and `flush.ms` flushes.
    /// Errors of one partition are logged and do not stop the others.
    pub fn maintain(&self, now: i64) -> MaintenanceStats {
        self.shared.maintain(now)
    }

    /// Starts a background thread that calls [`LogManager::maintain`] every `interval`.
    pub fn start_upkeep(&self, interval: Duration) {
        let shared = self.shared.clone();
        let handle = std::thread::Builder::new()
            .name("strom-log-upkeep".into())
            .spawn(move || loop {
                {
                    let mut stop = shared.stop.lock();
                    if !*stop {
                        shared.wake.wait_for(&mut stop, interval);
                    }
                    if *stop {
                        return;
                    }
                }
                shared.maintain(now_ms());
            });
        match handle {
            Ok(h) => *self.upkeep.lock() = Some(h),
            Err(e) => tracing::error!("could not start the log upkeep thread: {e}"),
        }
    }

    fn stop_upkeep(&self) {
        *self.shared.stop.lock() = true;
        self.shared.wake.notify_all();
        if let Some(h) = self.upkeep.lock().take() {
            let _ = h.join();
        }
    }

    /// Flushes and closes every log and leaves the clean-shutdown marker, so the next open
    /// skips recovery.
    pub fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.stop_upkeep();
        for (_, log) in self.logs() {
            log.close()?;
        }
        let marker = self.shared.dir.join(CLEAN_MARKER);
        write_atomic(&marker, b"")?;
        Ok(())
    }
}

impl Shared {
    fn maintain(&self, now: i64) -> MaintenanceStats {
        let mut stats = MaintenanceStats::default();
        let logs: Vec<_> = self.logs.read().values().cloned().collect();
        for log in logs {
            match log.enforce_retention(now) {
                Ok(n) => stats.segments_deleted += n,
                Err(Error::Closed(_)) => continue,
                Err(e) => tracing::error!(dir = %log.dir().display(), "retention failed: {e}"),
            }
            match log.compact(now, false) {
                Ok(s) => stats.records_compacted += s.records_removed,
                Err(e) => tracing::error!(dir = %log.dir().display(), "compaction failed: {e}"),
            }
            match log.maybe_flush(now) {
                Ok(true) => stats.logs_flushed += 1,
                Ok(false) => {}
                Err(e) => tracing::error!(dir = %log.dir().display(), "flush failed: {e}"),
            }
        }
        stats
    }
}

impl Drop for LogManager {
    /// Dropping without [`LogManager::close`] is treated like a crash: no marker is written.
    fn drop(&mut self) {
        self.stop_upkeep();
    }
}
