//! Small per-partition state files, written atomically (temp file, fsync, rename, fsync dir).
//!
//! - `partition.json`: log start offset, recovery point, high watermark, cleaner offset.
//! - `leader-epoch-checkpoint`: Kafka's text format: a version line (`0`), a count line, then one
//!   `epoch start-offset` line per leader epoch.
//! - `producer-state/`: reserved for producer-id snapshots (idempotent and transactional
//!   producers); the broker fills it.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};

/// File holding [`PartitionCheckpoint`].
pub const PARTITION_FILE: &str = "partition.json";
/// File holding the leader-epoch cache.
pub const LEADER_EPOCH_FILE: &str = "leader-epoch-checkpoint";
/// Directory reserved for producer-state snapshots.
pub const PRODUCER_STATE_DIR: &str = "producer-state";

/// Offsets of a partition that must survive a restart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionCheckpoint {
    /// First offset visible to consumers.
    pub log_start_offset: i64,
    /// Everything below this offset was fsynced with its indexes.
    pub recovery_point: i64,
    /// Last high watermark set by the owner of the log.
    pub high_watermark: i64,
    /// Offset up to which the cleaner has compacted (the start of the dirty section).
    pub cleaner_offset: i64,
}

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).at(&tmp)?;
    f.write_all(bytes).at(&tmp)?;
    f.sync_data().at(&tmp)?;
    std::fs::rename(&tmp, path).at(path)?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Removes a file; a file that is already gone is not an error.
pub fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(path, e)),
        _ => Ok(()),
    }
}

/// Fsyncs a directory so renames and creations in it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

/// Reads the partition checkpoint, or defaults when the file is absent.
pub fn read_partition(dir: &Path) -> Result<Option<PartitionCheckpoint>> {
    let path = dir.join(PARTITION_FILE);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::Corrupt {
                path,
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Writes the partition checkpoint.
pub fn write_partition(dir: &Path, c: &PartitionCheckpoint) -> Result<()> {
    let bytes = serde_json::to_vec(c).map_err(|e| Error::Internal(e.to_string()))?;
    write_atomic(&dir.join(PARTITION_FILE), &bytes)
}

/// Reads the leader-epoch cache (`(epoch, start offset)` pairs).
pub fn read_epochs(dir: &Path) -> Result<Vec<(i32, i64)>> {
    let path = dir.join(LEADER_EPOCH_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let corrupt = |reason: &str| Error::Corrupt {
        path: path.clone(),
        reason: reason.to_string(),
    };
    let mut lines = text.lines();
    if lines.next() != Some("0") {
        return Err(corrupt("unknown version"));
    }
    let n: usize = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| corrupt("bad entry count"))?;
    let mut out = Vec::with_capacity(n.min(1024));
    for l in lines.take(n) {
        let mut it = l.split_whitespace();
        let e = it.next().and_then(|x| x.parse().ok());
        let o = it.next().and_then(|x| x.parse().ok());
        match (e, o) {
            (Some(e), Some(o)) => out.push((e, o)),
            _ => return Err(corrupt("bad entry")),
        }
    }
    if out.len() != n {
        return Err(corrupt("fewer entries than the count says"));
    }
    Ok(out)
}

/// Writes the leader-epoch cache.
pub fn write_epochs(dir: &Path, epochs: &[(i32, i64)]) -> Result<()> {
    let mut s = format!("0\n{}\n", epochs.len());
    for (e, o) in epochs {
        s.push_str(&format!("{e} {o}\n"));
    }
    write_atomic(&dir.join(LEADER_EPOCH_FILE), s.as_bytes())
}
