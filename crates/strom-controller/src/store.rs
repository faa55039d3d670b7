//! Durable Raft storage for the metadata log (openraft's storage-v2 traits).
//!
//! Files in the controller's directory (`<data-dir>/__cluster_metadata`):
//! - `vote.json`: the last vote, replaced atomically (fsync, rename) before it is acknowledged;
//! - `log.jsonl`: one JSON entry per line, appended and fsynced before `append` reports
//!   success; truncation and purging rewrite it atomically (the log stays short: a snapshot is
//!   taken every few hundred entries and older entries are purged);
//! - `committed.json`: the last committed log id, so a restart re-applies committed entries;
//! - `snapshot.json`: the latest snapshot (its meta and the serialized [`Image`]).
//!
//! The state machine keeps the [`Image`] in memory and publishes every new version on a
//! `watch` channel: the broker on the same node reacts to it.

// openraft's traits fix the error type (`StorageError`, which is large); boxing it here would
// only move the allocation.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::{Cursor, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine};
use openraft::{
    Entry, EntryPayload, LogId, LogState, RaftLogReader, RaftSnapshotBuilder, Snapshot,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::image::{Command, Image, Outcome};

openraft::declare_raft_types!(
    /// Strom's Raft types: metadata commands in, outcomes out.
    pub TypeConfig:
        D = Command,
        R = Outcome,
);

/// Node ids in Raft terms.
pub type RaftNodeId = u64;
type StorageResult<T> = Result<T, StorageError<RaftNodeId>>;

fn io_err(e: impl std::fmt::Display) -> StorageError<RaftNodeId> {
    StorageIOError::write(&std::io::Error::other(e.to_string())).into()
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> StorageResult<Option<T>> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(io_err),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(e)),
    }
}

#[derive(Debug, Default)]
struct LogInner {
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    last_purged: Option<LogId<RaftNodeId>>,
    vote: Option<Vote<RaftNodeId>>,
    committed: Option<LogId<RaftNodeId>>,
}

#[derive(Serialize, Deserialize)]
struct PurgedFile {
    last_purged: Option<LogId<RaftNodeId>>,
}

/// The metadata log on disk.
#[derive(Debug, Clone)]
pub struct LogStore {
    dir: PathBuf,
    inner: Arc<Mutex<LogInner>>,
}

impl LogStore {
    /// Opens (creating) the log in `dir`.
    pub fn open(dir: &Path) -> Result<Self, crate::Error> {
        std::fs::create_dir_all(dir).map_err(|e| crate::Error::Storage(e.to_string()))?;
        let load = || -> StorageResult<LogInner> {
            let mut inner = LogInner {
                vote: read_json(&dir.join("vote.json"))?,
                // Only a hint (re-applying after an election is always possible): a torn
                // write of it is as good as none.
                committed: read_json(&dir.join("committed.json")).ok().flatten(),
                last_purged: read_json::<PurgedFile>(&dir.join("purged.json"))?
                    .and_then(|p| p.last_purged),
                ..LogInner::default()
            };
            let path = dir.join("log.jsonl");
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(io_err(e)),
            };
            let mut valid = 0usize;
            let mut rest = &bytes[..];
            while let Some(nl) = rest.iter().position(|b| *b == b'\n') {
                let line = &rest[..nl];
                match serde_json::from_slice::<Entry<TypeConfig>>(line) {
                    Ok(e) => {
                        inner.entries.insert(e.log_id.index, e);
                    }
                    Err(e) => {
                        return Err(io_err(format!(
                            "{} is corrupt at byte {valid}: {e}",
                            path.display()
                        )))
                    }
                }
                valid += nl + 1;
                rest = &rest[nl + 1..];
            }
            if valid < bytes.len() {
                // A torn last line (a crash during an append that was never acknowledged):
                // cut it off, or the next append would be glued to it.
                tracing::warn!(
                    path = %path.display(),
                    bytes = bytes.len() - valid,
                    "dropping a torn entry at the end of the metadata log"
                );
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_err)?;
                f.set_len(valid as u64).map_err(io_err)?;
                f.sync_all().map_err(io_err)?;
            }
            Ok(inner)
        };
        let inner = load().map_err(|e| crate::Error::Storage(e.to_string()))?;
        Ok(LogStore {
            dir: dir.to_path_buf(),
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    fn rewrite(&self, inner: &LogInner) -> StorageResult<()> {
        let mut out = Vec::new();
        for e in inner.entries.values() {
            serde_json::to_writer(&mut out, e).map_err(io_err)?;
            out.push(b'\n');
        }
        write_atomic(&self.dir.join("log.jsonl"), &out).map_err(io_err)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let inner = self.inner.lock();
        Ok(inner.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let inner = self.inner.lock();
        let last = inner
            .entries
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(inner.last_purged);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<RaftNodeId>) -> StorageResult<()> {
        let bytes = serde_json::to_vec(vote).map_err(io_err)?;
        write_atomic(&self.dir.join("vote.json"), &bytes).map_err(io_err)?;
        self.inner.lock().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<RaftNodeId>>> {
        Ok(self.inner.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<RaftNodeId>>) -> StorageResult<()> {
        let bytes = serde_json::to_vec(&committed).map_err(io_err)?;
        // Not fsynced: losing it only means re-applying after the next election.
        std::fs::write(self.dir.join("committed.json"), bytes).map_err(io_err)?;
        self.inner.lock().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<RaftNodeId>>> {
        Ok(self.inner.lock().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut out = Vec::new();
        let mut inner = self.inner.lock();
        for e in entries {
            serde_json::to_writer(&mut out, &e).map_err(io_err)?;
            out.push(b'\n');
            inner.entries.insert(e.log_id.index, e);
        }
        let result = (|| -> std::io::Result<()> {
            let path = self.dir.join("log.jsonl");
            let created = !path.exists();
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?;
            f.write_all(&out)?;
            f.sync_data()?;
            if created {
                std::fs::File::open(&self.dir)?.sync_all()?;
            }
            Ok(())
        })();
        let failed = result.as_ref().err().map(|e| e.to_string());
        callback.log_io_completed(result);
        match failed {
            Some(e) => Err(io_err(e)),
            None => Ok(()),
        }
    }

    async fn truncate(&mut self, log_id: LogId<RaftNodeId>) -> StorageResult<()> {
        let mut inner = self.inner.lock();
        inner.entries.retain(|i, _| *i < log_id.index);
        self.rewrite(&inner)
    }

    async fn purge(&mut self, log_id: LogId<RaftNodeId>) -> StorageResult<()> {
        let mut inner = self.inner.lock();
        let bytes = serde_json::to_vec(&PurgedFile {
            last_purged: Some(log_id),
        })
        .map_err(io_err)?;
        write_atomic(&self.dir.join("purged.json"), &bytes).map_err(io_err)?;
        inner.last_purged = Some(log_id);
        inner.entries.retain(|i, _| *i > log_id.index);
        self.rewrite(&inner)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta<RaftNodeId, openraft::BasicNode>,
    image: Image,
}

#[derive(Debug, Default)]
struct SmInner {
    last_applied: Option<LogId<RaftNodeId>>,
    membership: StoredMembership<RaftNodeId, openraft::BasicNode>,
    image: Image,
    snapshot: Option<SnapshotFile>,
    snapshot_seq: u64,
}

/// The state machine: the [`Image`], published on a watch channel after every change.
#[derive(Debug, Clone)]
pub struct StateMachine {
    dir: PathBuf,
    inner: Arc<Mutex<SmInner>>,
    publish: Arc<watch::Sender<Arc<Image>>>,
}

impl StateMachine {
    /// Opens the state machine, starting from the snapshot in `dir` if there is one.
    pub fn open(dir: &Path) -> Result<Self, crate::Error> {
        let snap: Option<SnapshotFile> = read_json(&dir.join("snapshot.json"))
            .map_err(|e| crate::Error::Storage(e.to_string()))?;
        let mut inner = SmInner::default();
        if let Some(s) = snap {
            inner.last_applied = s.meta.last_log_id;
            inner.membership = s.meta.last_membership.clone();
            inner.image = s.image.clone();
            inner.snapshot = Some(s);
        }
        let (tx, _) = watch::channel(Arc::new(inner.image.clone()));
        Ok(StateMachine {
            dir: dir.to_path_buf(),
            inner: Arc::new(Mutex::new(inner)),
            publish: Arc::new(tx),
        })
    }

    /// Follows the image.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Image>> {
        self.publish.subscribe()
    }

    /// The current image.
    pub fn image(&self) -> Arc<Image> {
        self.publish.borrow().clone()
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        // Built and written under the state machine's lock: a snapshot installed meanwhile
        // (a lagging follower catching up) is never overwritten by an older one.
        let mut inner = self.inner.lock();
        let newer = inner
            .snapshot
            .as_ref()
            .filter(|s| s.meta.last_log_id >= inner.last_applied)
            .cloned();
        let file = match newer {
            Some(f) => f,
            None => {
                inner.snapshot_seq += 1;
                let id = format!(
                    "{}-{}",
                    inner.last_applied.map_or(0, |l| l.index),
                    inner.snapshot_seq
                );
                let file = SnapshotFile {
                    meta: SnapshotMeta {
                        last_log_id: inner.last_applied,
                        last_membership: inner.membership.clone(),
                        snapshot_id: id,
                    },
                    image: inner.image.clone(),
                };
                let bytes = serde_json::to_vec(&file).map_err(io_err)?;
                write_atomic(&self.dir.join("snapshot.json"), &bytes).map_err(io_err)?;
                inner.snapshot = Some(file.clone());
                file
            }
        };
        drop(inner);
        let data = serde_json::to_vec(&file.image).map_err(io_err)?;
        Ok(Snapshot {
            meta: file.meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(
        Option<LogId<RaftNodeId>>,
        StoredMembership<RaftNodeId, openraft::BasicNode>,
    )> {
        let inner = self.inner.lock();
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Outcome>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut out = Vec::new();
        let image = {
            let mut inner = self.inner.lock();
            for e in entries {
                inner.last_applied = Some(e.log_id);
                match e.payload {
                    EntryPayload::Blank => {
                        inner.image.version = e.log_id.index;
                        out.push(Outcome::Done);
                    }
                    EntryPayload::Normal(cmd) => {
                        let o = inner.image.apply(e.log_id.index, &cmd);
                        out.push(o);
                    }
                    EntryPayload::Membership(m) => {
                        inner.membership = StoredMembership::new(Some(e.log_id), m);
                        inner.image.version = e.log_id.index;
                        out.push(Outcome::Done);
                    }
                }
            }
            Arc::new(inner.image.clone())
        };
        self.publish.send_replace(image);
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<RaftNodeId, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let image: Image = serde_json::from_slice(snapshot.get_ref()).map_err(io_err)?;
        let file = SnapshotFile {
            meta: meta.clone(),
            image: image.clone(),
        };
        let bytes = serde_json::to_vec(&file).map_err(io_err)?;
        {
            let mut inner = self.inner.lock();
            write_atomic(&self.dir.join("snapshot.json"), &bytes).map_err(io_err)?;
            inner.last_applied = meta.last_log_id;
            inner.membership = meta.last_membership.clone();
            inner.image = image.clone();
            inner.snapshot = Some(file);
        }
        self.publish.send_replace(Arc::new(image));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let inner = self.inner.lock();
        let Some(s) = &inner.snapshot else {
            return Ok(None);
        };
        let data = serde_json::to_vec(&s.image).map_err(io_err)?;
        Ok(Some(Snapshot {
            meta: s.meta.clone(),
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}
