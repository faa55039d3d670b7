//! One partition's log: an ordered map of segments, a single writer, concurrent readers.
//!
//! ```text
//!            log start                         recovery point         high watermark     log end
//!                |                                   |                      |               |
//!  [ segment 0 ......... ][ segment 1200 ......... ][ segment 2400 (active) ...............]
//!                                                    ^ fsynced below        ^ readable by    ^ next offset
//!                                                                             consumers
//! ```
//! Appends take the writer lock, write whole batches at the end of the active segment and then
//! publish the new end; reads never take the writer lock.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::batch::{self, BatchHeader, Origin};
use crate::checkpoint::{self, PartitionCheckpoint};
use crate::config::{LogConfig, TimestampType};
use crate::error::{Error, IoContext, Result};
use crate::producer::{self, ProducerStates, SequenceCheck};
use crate::segment::{FileSlice, Segment};

/// How an append treats offsets and epochs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOptions {
    /// [`Origin::Client`]: the log assigns offsets and stamps `leader_epoch`.
    /// [`Origin::Replica`]: batches keep the offsets and epochs they carry.
    pub origin: Origin,
    /// The current leader epoch (for `Origin::Client`).
    pub leader_epoch: i32,
    /// Wall clock in milliseconds (log-append time, segment age, flush policy).
    pub now_ms: i64,
}

impl AppendOptions {
    /// Append as the leader at `leader_epoch`, now.
    pub fn leader(leader_epoch: i32) -> Self {
        AppendOptions {
            origin: Origin::Client,
            leader_epoch,
            now_ms: now_ms(),
        }
    }
    /// Append batches copied from the leader, keeping their offsets.
    pub fn replica() -> Self {
        AppendOptions {
            origin: Origin::Replica,
            leader_epoch: -1,
            now_ms: now_ms(),
        }
    }
}

/// What an append stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset of the first record appended.
    pub first_offset: i64,
    /// Offset of the last record appended.
    pub last_offset: i64,
    /// Number of batches.
    pub batches: usize,
    /// Number of records.
    pub records: i64,
    /// Largest timestamp appended.
    pub max_timestamp: i64,
    /// The append time stamped into the batches, for `LogAppendTime` topics; otherwise -1.
    pub log_append_time: i64,
    /// Log start offset after the append.
    pub log_start_offset: i64,
    /// The batch was a retry of one already in the log (idempotent producer): nothing was
    /// written and the offsets are those of the original.
    pub duplicate: bool,
}

/// Upper bound for a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadLimit {
    /// Everything written (replica fetches).
    LogEnd,
    /// Only records below the high watermark (consumer fetches).
    HighWatermark,
    /// Only records below this offset.
    Offset(i64),
}

/// The result of a read: whole batches from one segment plus the partition's offsets.
#[derive(Debug, Clone)]
pub struct LogRead {
    /// The batches, or `None` if there was nothing to return below the limit.
    pub records: Option<FileSlice>,
    /// The log start offset at the time of the read.
    pub log_start_offset: i64,
    /// The high watermark at the time of the read.
    pub high_watermark: i64,
    /// The log end offset at the time of the read.
    pub log_end_offset: i64,
}

impl LogRead {
    /// The batches as bytes (empty when there are none).
    pub fn bytes(&self) -> Result<bytes::Bytes> {
        match &self.records {
            Some(s) => s.read(),
            None => Ok(bytes::Bytes::new()),
        }
    }
}

/// What recovery did to one partition on open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Partition directory.
    pub dir: PathBuf,
    /// Segments scanned and validated.
    pub segments_scanned: usize,
    /// Bytes cut off torn or corrupt segment tails.
    pub bytes_truncated: u64,
    /// Segments after a corruption that were deleted.
    pub segments_deleted: usize,
    /// Leftover files of an interrupted compaction that were removed.
    pub stale_files_removed: usize,
    /// One line per problem found.
    pub problems: Vec<String>,
}

#[derive(Debug)]
struct Writer {
    unflushed: u64,
    last_flush_ms: i64,
    epochs: Vec<(i32, i64)>,
    producers: ProducerStates,
}

/// One partition's log.
#[derive(Debug)]
pub struct PartitionLog {
    dir: PathBuf,
    config: RwLock<Arc<LogConfig>>,
    pub(crate) segments: RwLock<BTreeMap<i64, Arc<Segment>>>,
    pub(crate) writer: Mutex<()>,
    state: Mutex<Writer>,
    log_start: AtomicI64,
    log_end: AtomicI64,
    high_watermark: AtomicI64,
    recovery_point: Arc<AtomicI64>,
    pub(crate) cleaner_offset: AtomicI64,
    closed: AtomicBool,
    /// The background fsync of the last rolled segment; the next one waits for it, so the
    /// recovery point only ever covers segments that are all on disk.
    roll_flush: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn segment_bases(dir: &Path, report: &mut RecoveryReport) -> Result<Vec<i64>> {
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir).at(dir)? {
        let entry = entry.at(dir)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".cleaned") || name.ends_with(".tmp") {
            // A compaction or checkpoint write was interrupted; the originals are intact.
            std::fs::remove_file(entry.path()).at(&entry.path())?;
            report.stale_files_removed += 1;
            continue;
        }
        if let Some(stem) = name.strip_suffix(".log") {
            if stem.len() == 20 {
                if let Ok(b) = stem.parse::<i64>() {
                    bases.push(b);
                }
            }
        }
    }
    // Index files whose log is gone are leftovers of a deleted segment.
    for entry in std::fs::read_dir(dir).at(dir)? {
        let entry = entry.at(dir)?;
        let path = entry.path();
        let ext = path.extension().and_then(|e| e.to_str());
        if matches!(ext, Some("index") | Some("timeindex")) && !path.with_extension("log").exists()
        {
            std::fs::remove_file(&path).at(&path)?;
            report.stale_files_removed += 1;
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// Loads the newest producer snapshot at or below `log_end` and replays the batch headers after
/// it.
fn rebuild_producers(
    dir: &Path,
    segments: &BTreeMap<i64, Arc<Segment>>,
    log_end: i64,
) -> Result<ProducerStates> {
    let (mut states, from) = producer::load_snapshot(dir, log_end)?;
    let start = segments
        .range(..=from)
        .next_back()
        .map_or(i64::MIN, |(k, _)| *k);
    for seg in segments.range(start..).map(|(_, s)| s) {
        for (_, h) in seg.batches()? {
            if h.base_offset >= from {
                states.record(&h);
            }
        }
    }
    Ok(states)
}

impl PartitionLog {
    /// Opens (or creates) the log in `dir`. `clean` says whether the previous shutdown was clean;
    /// if not, every segment past the recovery point is scanned and repaired.
    pub fn open(dir: &Path, config: Arc<LogConfig>, clean: bool) -> Result<(Self, RecoveryReport)> {
        std::fs::create_dir_all(dir).at(dir)?;
        let mut report = RecoveryReport {
            dir: dir.to_path_buf(),
            ..Default::default()
        };
        let cp = checkpoint::read_partition(dir)?.unwrap_or_default();
        let bases = segment_bases(dir, &mut report)?;
        let interval = config.index_interval_bytes;
        let mut segments = BTreeMap::new();
        let mut damaged = false;
        // (base, next offset, scanned) of the previous segment.
        let mut prev: Option<(i64, i64, bool)> = None;
        for (i, &base) in bases.iter().enumerate() {
            // A scanned segment that ends before the next one begins lost its tail in the crash
            // (a cut on a batch boundary looks whole). Only the cleaner leaves such gaps, and
            // only below the cleaner offset; anywhere else the rest is unreachable.
            if let Some((pbase, pnext, scanned)) = prev {
                if !damaged && scanned && pnext < base && pbase >= cp.cleaner_offset {
                    report.problems.push(format!(
                        "segment {pbase} ends at offset {pnext} but the next segment starts at {base}"
                    ));
                    damaged = true;
                }
            }
            if damaged {
                // Everything after a damaged segment is unreachable: offsets must stay contiguous.
                crate::segment::delete_segment_files(dir, base)?;
                report.segments_deleted += 1;
                report
                    .problems
                    .push(format!("deleted segment {base} after a damaged segment"));
                continue;
            }
            let next_base = bases.get(i + 1).copied();
            let trusted = clean || next_base.is_some_and(|n| n <= cp.recovery_point);
            let (seg, scan) = if trusted {
                Segment::open_clean(dir, base, interval, next_base)?
            } else {
                let (seg, outcome) = Segment::open_recover(dir, base, interval, next_base)?;
                (seg, Some(outcome))
            };
            if let Some(outcome) = &scan {
                report.segments_scanned += 1;
                if trusted {
                    report.problems.push(format!(
                        "segment {base}: rescanned: {}",
                        outcome.reason.clone().unwrap_or_default()
                    ));
                }
                if outcome.truncated_bytes > 0 {
                    report.bytes_truncated += outcome.truncated_bytes;
                    report.problems.push(format!(
                        "segment {base}: truncated {} bytes: {}",
                        outcome.truncated_bytes,
                        outcome.reason.clone().unwrap_or_default()
                    ));
                    damaged = true;
                }
            }
            prev = Some((base, seg.next_offset(), !trusted || scan.is_some()));
            segments.insert(base, Arc::new(seg));
        }
        let now = now_ms();
        if segments.is_empty() {
            let base = cp.log_start_offset.max(0);
            segments.insert(base, Arc::new(Segment::create(dir, base, now)?));
        }
        let last = segments
            .values()
            .next_back()
            .cloned()
            .ok_or_else(|| Error::Internal("log without segments".into()))?;
        let first_base = segments.keys().next().copied().unwrap_or(0);
        let log_end = last.next_offset().max(last.base_offset);
        let log_start = cp.log_start_offset.max(first_base).min(log_end);
        let mut epochs = checkpoint::read_epochs(dir).unwrap_or_else(|e| {
            report.problems.push(format!("leader epochs reset: {e}"));
            Vec::new()
        });
        epochs.retain(|&(_, o)| o < log_end);
        for p in &report.problems {
            tracing::warn!(dir = %dir.display(), "recovery: {p}");
        }
        let producers = rebuild_producers(dir, &segments, log_end)?;
        let log = PartitionLog {
            dir: dir.to_path_buf(),
            config: RwLock::new(config),
            segments: RwLock::new(segments),
            writer: Mutex::new(()),
            state: Mutex::new(Writer {
                unflushed: 0,
                last_flush_ms: now,
                epochs,
                producers,
            }),
            log_start: AtomicI64::new(log_start),
            log_end: AtomicI64::new(log_end),
            high_watermark: AtomicI64::new(cp.high_watermark.clamp(log_start, log_end)),
            recovery_point: Arc::new(AtomicI64::new(if clean {
                log_end
            } else {
                cp.recovery_point.min(log_end)
            })),
            cleaner_offset: AtomicI64::new(cp.cleaner_offset.min(log_end)),
            closed: AtomicBool::new(false),
            roll_flush: Mutex::new(None),
        };
        if !clean {
            // Recovery rewrote segments and indexes; make the new state the checkpointed one.
            log.flush()?;
        }
        Ok((log, report))
    }

    /// The partition directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The current configuration.
    pub fn config(&self) -> Arc<LogConfig> {
        self.config.read().clone()
    }

    /// Replaces the configuration (takes effect on the next append, roll or cleaning).
    pub fn set_config(&self, config: Arc<LogConfig>) {
        *self.config.write() = config;
    }

    /// First offset still readable.
    pub fn log_start_offset(&self) -> i64 {
        self.log_start.load(Ordering::Acquire)
    }

    /// Offset the next record will get.
    pub fn log_end_offset(&self) -> i64 {
        self.log_end.load(Ordering::Acquire)
    }

    /// Offset below which records are committed and visible to consumers.
    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    /// Sets the high watermark (clamped to `[log start, log end]`). The owner of the log (the
    /// partition's leader) decides it; on a single node it follows the log end.
    pub fn set_high_watermark(&self, hw: i64) {
        let hw = hw.clamp(self.log_start_offset(), self.log_end_offset());
        self.high_watermark.store(hw, Ordering::Release);
    }

    /// Moves the high watermark forward to `hw` (clamped to the log), never backwards: the
    /// leader's path, where racing updates must not undo one another.
    pub fn advance_high_watermark(&self, hw: i64) {
        let hw = hw.clamp(self.log_start_offset(), self.log_end_offset());
        self.high_watermark.fetch_max(hw, Ordering::AcqRel);
    }

    /// Offset below which all data and indexes are fsynced.
    pub fn recovery_point(&self) -> i64 {
        self.recovery_point.load(Ordering::Acquire)
    }

    /// Total bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.read().values().map(|s| s.size()).sum()
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.segments.read().len()
    }

    /// Base offsets of all segments, oldest first.
    pub fn segment_bases(&self) -> Vec<i64> {
        self.segments.read().keys().copied().collect()
    }

    pub(crate) fn active(&self) -> Result<Arc<Segment>> {
        self.segments
            .read()
            .values()
            .next_back()
            .cloned()
            .ok_or_else(|| Error::Internal("log without segments".into()))
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed(self.dir.clone()));
        }
        Ok(())
    }

    /// Validates and appends the record batches in `records`. For a leader append the log
    /// assigns offsets (written into the buffer) and stamps the leader epoch. Nothing is stored
    /// unless every batch is valid.
    pub fn append(&self, records: &mut [u8], opts: AppendOptions) -> Result<AppendInfo> {
        let config = self.config();
        let valid = batch::validate_all(records, opts.origin)?;
        for v in &valid {
            if v.header.total_size() as u64 > config.max_message_bytes {
                return Err(Error::BatchTooLarge {
                    size: v.header.total_size(),
                    max: config.max_message_bytes as usize,
                });
            }
        }
        let _w = self.writer.lock();
        self.check_open()?;
        if opts.origin == Origin::Client {
            let latest = self.state.lock().epochs.last().map(|&(e, _)| e);
            if let Some(latest) = latest.filter(|l| opts.leader_epoch < *l) {
                return Err(Error::StaleLeaderEpoch {
                    epoch: opts.leader_epoch,
                    latest,
                });
            }
        }
        let leo = self.log_end_offset();
        let mut headers: Vec<(usize, BatchHeader)> = Vec::with_capacity(valid.len());
        let mut next = leo;
        let mut log_append_time = -1;
        for v in &valid {
            let mut h = v.header;
            match opts.origin {
                Origin::Client => {
                    batch::assign(records, v.position, next, opts.leader_epoch);
                    h.base_offset = next;
                    h.partition_leader_epoch = opts.leader_epoch;
                    if config.timestamp_type == TimestampType::LogAppendTime {
                        batch::set_log_append_time(records, v.position, opts.now_ms);
                        h.max_timestamp = opts.now_ms;
                        log_append_time = opts.now_ms;
                    }
                }
                Origin::Replica => {
                    if h.base_offset < next {
                        return Err(Error::invalid(
                            v.position,
                            format!(
                                "replicated batch starts at offset {} but the log ends at {next}",
                                h.base_offset
                            ),
                        ));
                    }
                }
            }
            next = h.next_offset();
            headers.push((v.position, h));
        }
        if opts.origin == Origin::Client {
            if let Some(dup) = self.check_sequences(&headers)? {
                return Ok(AppendInfo {
                    first_offset: dup.first_offset,
                    last_offset: dup.last_offset,
                    batches: 1,
                    records: dup.last_offset - dup.first_offset + 1,
                    max_timestamp: headers[0].1.max_timestamp,
                    log_append_time,
                    log_start_offset: self.log_start_offset(),
                    duplicate: true,
                });
            }
        }
        let first = headers[0].1.base_offset;
        if next - 1 - first > i32::MAX as i64 {
            return Err(Error::invalid(
                0,
                format!("one append may span at most 2^31 offsets ({first}..{next})"),
            ));
        }
        let mut active = self.active()?;
        if self.should_roll(
            &active,
            &config,
            records.len() as u64,
            next - 1,
            opts.now_ms,
        ) {
            active = self.roll(first, opts.now_ms)?;
        }
        active.append(records, &headers, config.index_interval_bytes)?;
        self.log_end.store(next, Ordering::Release);
        let count: i64 = headers.iter().map(|(_, h)| h.record_count as i64).sum();
        let max_timestamp = headers
            .iter()
            .map(|(_, h)| h.max_timestamp)
            .max()
            .unwrap_or(-1);
        let flush_now = {
            let mut st = self.state.lock();
            for (_, h) in &headers {
                st.producers.record(h);
                let e = h.partition_leader_epoch;
                if e >= 0 && st.epochs.last().is_none_or(|&(last, _)| e > last) {
                    st.epochs.push((e, h.base_offset));
                    // The batches are in the log already: a failed checkpoint must not turn
                    // the append into an error (a retry would duplicate them). The cache is
                    // written again on close.
                    if let Err(e) = checkpoint::write_epochs(&self.dir, &st.epochs) {
                        tracing::error!(dir = %self.dir.display(), "writing leader epochs failed: {e}");
                    }
                }
            }
            st.unflushed += count as u64;
            config.flush.messages.is_some_and(|n| st.unflushed >= n)
                || config
                    .flush
                    .ms
                    .is_some_and(|ms| opts.now_ms - st.last_flush_ms >= ms as i64)
        };
        if flush_now {
            // As above: the append happened; a failed fsync is reported, and the recovery
            // point stays where it was, so a crash rescans these batches.
            if let Err(e) = self.flush_locked(opts.now_ms) {
                tracing::error!(dir = %self.dir.display(), "flush after append failed: {e}");
            }
        }
        Ok(AppendInfo {
            first_offset: first,
            last_offset: next - 1,
            batches: headers.len(),
            records: count,
            max_timestamp,
            log_append_time,
            log_start_offset: self.log_start_offset(),
            duplicate: false,
        })
    }

    /// Checks idempotent-producer sequences of a leader append. Returns the original offsets if
    /// the append is a retry of a batch already in the log.
    fn check_sequences(
        &self,
        headers: &[(usize, BatchHeader)],
    ) -> Result<Option<producer::BatchMeta>> {
        if headers.iter().all(|(_, h)| h.producer_id < 0) {
            return Ok(None);
        }
        let st = self.state.lock();
        if let [(_, h)] = headers {
            return match st.producers.check(h)? {
                SequenceCheck::Append => Ok(None),
                SequenceCheck::Duplicate(meta) => Ok(Some(meta)),
            };
        }
        // Several batches: each must follow the one before; a retry must come alone.
        let mut scratch = st.producers.clone();
        for (_, h) in headers {
            if let SequenceCheck::Duplicate(_) = scratch.check(h)? {
                return Err(Error::OutOfOrderSequence {
                    producer_id: h.producer_id,
                    expected: scratch
                        .get(h.producer_id)
                        .and_then(|e| e.batches.back())
                        .map_or(0, |b| b.last_seq.wrapping_add(1)),
                    got: h.base_sequence,
                });
            }
            scratch.record(h);
        }
        Ok(None)
    }

    /// A copy of the idempotent-producer state.
    pub fn producer_states(&self) -> ProducerStates {
        self.state.lock().producers.clone()
    }

    fn should_roll(&self, active: &Segment, c: &LogConfig, len: u64, last: i64, now: i64) -> bool {
        if active.size() == 0 {
            // Only a replica append far beyond the empty segment's base needs a new one.
            return last - active.base_offset > i32::MAX as i64;
        }
        let max_bytes = c.segment_bytes.min(i32::MAX as u64);
        active.size() + len > max_bytes
            || now - active.created_ms() > c.segment_ms as i64
            || active.index_bytes() + crate::segment::TIME_ENTRY > c.segment_index_bytes
            || last - active.base_offset > i32::MAX as i64
    }

    /// Starts a new active segment at `base` and fsyncs the old one in the background.
    fn roll(&self, base: i64, now: i64) -> Result<Arc<Segment>> {
        let old = self.active()?;
        let states = self.state.lock().producers.clone();
        producer::write_snapshot(&self.dir, base, &states)?;
        let seg = Arc::new(Segment::create(&self.dir, base, now)?);
        {
            let mut map = self.segments.write();
            if old.size() == 0 {
                // An empty active segment is replaced, not kept.
                map.remove(&old.base_offset);
            }
            map.insert(base, seg.clone());
        }
        if old.size() == 0 {
            old.delete_files()?;
            return Ok(seg);
        }
        let rp = self.recovery_point.clone();
        let previous = self.roll_flush.lock().take();
        // Kafka flushes a rolled segment asynchronously too: the writer must not wait for it.
        let handle = std::thread::Builder::new()
            .name("strom-log-flush".into())
            .spawn(move || {
                if let Some(p) = previous {
                    let _ = p.join();
                }
                match old.flush() {
                    Ok(()) => {
                        rp.fetch_max(base, Ordering::AcqRel);
                    }
                    Err(e) => tracing::error!("flushing a rolled segment failed: {e}"),
                }
            })
            .map_err(|e| Error::io(&self.dir, e))?;
        *self.roll_flush.lock() = Some(handle);
        Ok(seg)
    }

    /// Forces a new segment now (even if the active one is not full).
    pub fn roll_now(&self) -> Result<()> {
        let _w = self.writer.lock();
        self.check_open()?;
        if self.active()?.size() > 0 {
            self.roll(self.log_end_offset(), now_ms())?;
        }
        Ok(())
    }

    /// Fsyncs everything written, writes indexes and checkpoints, and advances the recovery point.
    pub fn flush(&self) -> Result<()> {
        let _w = self.writer.lock();
        self.flush_locked(now_ms())
    }

    fn flush_locked(&self, now: i64) -> Result<()> {
        let leo = self.log_end_offset();
        let from = self.recovery_point();
        let segs: Vec<Arc<Segment>> = {
            let map = self.segments.read();
            let start = map.range(..=from).next_back().map_or(i64::MIN, |(k, _)| *k);
            map.range(start..).map(|(_, s)| s.clone()).collect()
        };
        for s in segs {
            s.flush()?;
        }
        self.recovery_point.fetch_max(leo, Ordering::AcqRel);
        {
            let mut st = self.state.lock();
            st.unflushed = 0;
            st.last_flush_ms = now;
        }
        self.write_checkpoint()
    }

    /// Flushes if `flush.ms` says so (called periodically by the log manager).
    pub fn maybe_flush(&self, now: i64) -> Result<bool> {
        let due = {
            let st = self.state.lock();
            st.unflushed > 0
                && self
                    .config()
                    .flush
                    .ms
                    .is_some_and(|ms| now - st.last_flush_ms >= ms as i64)
        };
        if due {
            let _w = self.writer.lock();
            self.flush_locked(now)?;
        }
        Ok(due)
    }

    pub(crate) fn write_checkpoint(&self) -> Result<()> {
        checkpoint::write_partition(
            &self.dir,
            &PartitionCheckpoint {
                log_start_offset: self.log_start_offset(),
                recovery_point: self.recovery_point(),
                high_watermark: self.high_watermark(),
                cleaner_offset: self.cleaner_offset.load(Ordering::Acquire),
            },
        )
    }

    /// Reads whole batches starting with the one that contains `offset`, at most `max_bytes`
    /// (but always at least one batch, so a batch larger than `max_bytes` still makes progress).
    pub fn read(&self, offset: i64, max_bytes: u64, limit: ReadLimit) -> Result<LogRead> {
        self.read_with(offset, max_bytes, limit, true)
    }

    /// Like [`PartitionLog::read`]; with `min_one` false, `max_bytes` is a hard bound even for
    /// the first batch (a fetch's later partitions once the response has data, KIP-74).
    pub fn read_with(
        &self,
        offset: i64,
        max_bytes: u64,
        limit: ReadLimit,
        min_one: bool,
    ) -> Result<LogRead> {
        let (log_start, log_end, hw) = (
            self.log_start_offset(),
            self.log_end_offset(),
            self.high_watermark(),
        );
        let mut out = LogRead {
            records: None,
            log_start_offset: log_start,
            high_watermark: hw,
            log_end_offset: log_end,
        };
        if offset < log_start || offset > log_end {
            return Err(Error::OffsetOutOfRange {
                offset,
                log_start,
                log_end,
            });
        }
        let max_offset = match limit {
            ReadLimit::LogEnd => log_end,
            ReadLimit::HighWatermark => hw,
            ReadLimit::Offset(o) => o.min(log_end),
        };
        if offset >= max_offset {
            return Ok(out);
        }
        let mut seg = {
            let map = self.segments.read();
            map.range(..=offset)
                .next_back()
                .or_else(|| map.iter().next())
                .map(|(_, s)| s.clone())
        };
        while let Some(s) = seg {
            if let Some((pos, h)) = s.find(offset)? {
                if h.last_offset() >= max_offset {
                    return Ok(out);
                }
                let slice = s.slice(pos, max_bytes, max_offset, min_one)?;
                if slice.len > 0 {
                    out.records = Some(slice);
                }
                return Ok(out);
            }
            // `offset` lies in a gap at the end of this segment (compaction); try the next one.
            seg = self
                .segments
                .read()
                .range(s.base_offset + 1..)
                .next()
                .map(|(_, s)| s.clone());
        }
        Ok(out)
    }

    /// The first offset whose record timestamp is `>= ts`, with that record's timestamp
    /// (`ListOffsets` by time). `None` if every record is older.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<i64>> {
        Ok(self.record_for_timestamp(ts)?.map(|(o, _)| o))
    }

    /// Like [`PartitionLog::offset_for_timestamp`], with the found record's timestamp.
    pub fn record_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>> {
        let segs: Vec<Arc<Segment>> = self.segments.read().values().cloned().collect();
        let start = self.log_start_offset();
        for s in segs {
            if s.next_offset() <= start || s.max_timestamp() < ts {
                continue;
            }
            if let Some(found) = s.find_timestamp(ts, start)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// Offset and timestamp of the record with the largest timestamp (`ListOffsets` -3).
    pub fn max_timestamp_offset(&self) -> Option<(i64, i64)> {
        let start = self.log_start_offset();
        let best = self
            .segments
            .read()
            .values()
            .filter(|s| s.next_offset() > start && s.max_timestamp() >= 0)
            .fold(None, |best: Option<Arc<Segment>>, s| match best {
                Some(b) if b.max_timestamp() >= s.max_timestamp() => Some(b),
                _ => Some(s.clone()),
            })?;
        let (batch_last, ts) = best.offset_of_max_timestamp();
        // The index knows the batch; the exact record needs the batch's records (KAFKA-16310).
        let exact = || -> Result<Option<i64>> {
            let Some((pos, h)) = best.find(batch_last)? else {
                return Ok(None);
            };
            if h.attributes & batch::ATTR_LOG_APPEND_TIME != 0 {
                return Ok(Some(h.base_offset));
            }
            let (_, records) = crate::record::decode_records(&best.read_batch(pos, &h)?)?;
            Ok(records.iter().find(|r| r.timestamp == ts).map(|r| r.offset))
        };
        let offset = exact().ok().flatten().unwrap_or(batch_last);
        Some((offset.max(start), ts))
    }

    /// The leader epoch cache: `(epoch, first offset of that epoch)`, ascending.
    pub fn leader_epochs(&self) -> Vec<(i32, i64)> {
        self.state.lock().epochs.clone()
    }

    /// Records that leader epoch `epoch` starts at the current log end, as a new leader does
    /// when elected (before it appends anything in that epoch), so `OffsetForLeaderEpoch`
    /// answers for the epoch right away. Older or equal epochs are ignored.
    pub fn assign_epoch(&self, epoch: i32) -> Result<()> {
        let _w = self.writer.lock();
        let leo = self.log_end_offset();
        let mut st = self.state.lock();
        if epoch < 0 || st.epochs.last().is_some_and(|&(last, _)| epoch <= last) {
            return Ok(());
        }
        // An epoch that started at the same offset but held nothing is superseded.
        st.epochs.retain(|&(_, o)| o < leo);
        st.epochs.push((epoch, leo));
        checkpoint::write_epochs(&self.dir, &st.epochs)
    }

    /// For `OffsetForLeaderEpoch`: the largest epoch `<= epoch` and the offset where it ended
    /// (the start of the next epoch, or the log end for the latest one).
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        let epochs = self.state.lock().epochs.clone();
        end_offset_for_epoch(&epochs, self.log_end_offset(), epoch)
    }

    /// Removes every record at or after `offset` (a follower discarding what the leader does not
    /// have). A batch that straddles `offset` is removed whole.
    pub fn truncate_to(&self, offset: i64) -> Result<()> {
        let _w = self.writer.lock();
        self.check_open()?;
        if offset >= self.log_end_offset() {
            // Nothing to remove, but an epoch that starts at or after `offset` holds nothing
            // here (a leader deposed before it appended): it goes, as in Kafka, or the next
            // reconciliation would ask about an epoch this log never wrote.
            let mut st = self.state.lock();
            if st.epochs.last().is_some_and(|&(_, o)| o >= offset) {
                st.epochs.retain(|&(_, o)| o < offset);
                checkpoint::write_epochs(&self.dir, &st.epochs)?;
            }
            return Ok(());
        }
        let first_base = self.segments.read().keys().next().copied().unwrap_or(0);
        let removed: Vec<Arc<Segment>> = {
            let mut map = self.segments.write();
            let keys: Vec<i64> = map.range(offset + 1..).map(|(k, _)| *k).collect();
            let keep_first = offset <= first_base;
            keys.into_iter()
                .filter(|k| !(keep_first && *k == first_base))
                .filter_map(|k| map.remove(&k))
                .collect()
        };
        for s in removed {
            s.delete_files()?;
        }
        let last = self.active()?;
        last.truncate_to(offset)?;
        let leo = last.next_offset();
        self.log_end.store(leo, Ordering::Release);
        if self.log_start_offset() > leo {
            self.log_start.store(leo, Ordering::Release);
        }
        self.high_watermark.fetch_min(leo, Ordering::AcqRel);
        self.recovery_point.fetch_min(leo, Ordering::AcqRel);
        self.cleaner_offset.fetch_min(leo, Ordering::AcqRel);
        let producers = rebuild_producers(&self.dir, &self.segments.read(), leo)?;
        {
            let mut st = self.state.lock();
            st.epochs.retain(|&(_, o)| o < leo);
            st.producers = producers;
            checkpoint::write_epochs(&self.dir, &st.epochs)?;
        }
        self.write_checkpoint()
    }

    /// Discards every record and restarts the log, empty, at `offset`, with `log_start` (at or
    /// after `offset`) as its first readable offset (Kafka's `truncateFullyAndStartAt`): a
    /// follower whose log ends below the leader's log start can only copy from there. `offset`
    /// must be past the log end, or the log must be empty (a leader's first batch may begin
    /// below its log start).
    pub fn truncate_fully_and_start_at(&self, offset: i64, log_start: i64) -> Result<()> {
        let _w = self.writer.lock();
        self.check_open()?;
        let (start, end) = (self.log_start_offset(), self.log_end_offset());
        let empty = start == end;
        if offset < 0 || log_start < offset || !(offset > end || (empty && offset != end)) {
            return Err(Error::OffsetOutOfRange {
                offset,
                log_start: start,
                log_end: end,
            });
        }
        let now = now_ms();
        let seg = Arc::new(Segment::create(&self.dir, offset, now)?);
        let old: Vec<Arc<Segment>> = {
            let mut map = self.segments.write();
            let old = map.values().cloned().collect();
            map.clear();
            map.insert(offset, seg);
            old
        };
        // The new state first, then the files: a failed deletion leaves garbage, not a log
        // whose offsets disagree with its segments.
        self.log_start.store(log_start, Ordering::Release);
        for a in [&self.log_end, &self.high_watermark, &self.cleaner_offset] {
            a.store(offset, Ordering::Release);
        }
        self.recovery_point.store(offset, Ordering::Release);
        {
            let mut st = self.state.lock();
            st.epochs.clear();
            st.producers = ProducerStates::default();
            checkpoint::write_epochs(&self.dir, &st.epochs)?;
            producer::write_snapshot(&self.dir, offset, &st.producers)?;
        }
        self.write_checkpoint()?;
        for s in old {
            if let Err(e) = s.delete_files() {
                tracing::warn!(dir = %self.dir.display(), "deleting a discarded segment: {e}");
            }
        }
        Ok(())
    }

    /// Makes every offset below `before` unreadable (`DeleteRecords`): advances the log start
    /// offset and deletes segments that lie wholly below it. Returns the new log start offset.
    pub fn delete_records(&self, before: i64) -> Result<i64> {
        let _w = self.writer.lock();
        self.check_open()?;
        let (start, end) = (self.log_start_offset(), self.log_end_offset());
        // As in Kafka, only committed records (below the high watermark) can be deleted.
        if before > self.high_watermark() || before < 0 {
            return Err(Error::OffsetOutOfRange {
                offset: before,
                log_start: start,
                log_end: end,
            });
        }
        if before > start {
            self.log_start.store(before, Ordering::Release);
            self.write_checkpoint()?;
        }
        self.delete_segments_locked(|_, _| false)?;
        Ok(self.log_start_offset())
    }

    /// Applies `retention.ms` and `retention.bytes` (when the policy includes `delete`) and
    /// deletes segments below the log start offset. Only non-active segments wholly below the
    /// high watermark are deleted. Returns the number of segments deleted.
    pub fn enforce_retention(&self, now: i64) -> Result<usize> {
        let _w = self.writer.lock();
        self.check_open()?;
        let c = self.config();
        let mut remaining = self.size_bytes();
        self.delete_segments_locked(|s, _| {
            if !c.delete {
                return false;
            }
            let by_time = c
                .retention_ms
                .is_some_and(|ms| s.max_timestamp() >= 0 && now - s.max_timestamp() > ms as i64);
            let by_size = c
                .retention_bytes
                .is_some_and(|max| remaining - s.size() >= max);
            if by_time || by_size {
                remaining -= s.size();
                true
            } else {
                false
            }
        })
    }

    /// Deletes the oldest segments while they lie below the log start offset or `pred` holds.
    fn delete_segments_locked(&self, mut pred: impl FnMut(&Segment, i64) -> bool) -> Result<usize> {
        let hw = self.high_watermark();
        let start = self.log_start_offset();
        let segs: Vec<Arc<Segment>> = self.segments.read().values().cloned().collect();
        let mut doomed = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            let Some(next) = segs.get(i + 1) else { break }; // never the active segment
            let end = next.base_offset;
            if end > hw && end > start {
                break;
            }
            if end <= start || pred(s, end) {
                doomed.push((s.clone(), end));
            } else {
                break;
            }
        }
        if doomed.is_empty() {
            return Ok(0);
        }
        {
            let mut map = self.segments.write();
            for (s, _) in &doomed {
                map.remove(&s.base_offset);
            }
        }
        let new_start = doomed.last().map_or(start, |(_, end)| *end).max(start);
        self.log_start.store(new_start, Ordering::Release);
        self.high_watermark.fetch_max(new_start, Ordering::AcqRel);
        self.write_checkpoint()?;
        for (s, _) in &doomed {
            tracing::debug!(dir = %self.dir.display(), base = s.base_offset, "deleting segment");
            s.delete_files()?;
        }
        Ok(doomed.len())
    }

    /// Flushes and marks the log closed. Further operations fail with [`Error::Closed`].
    pub fn close(&self) -> Result<()> {
        let _w = self.writer.lock();
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        if let Some(h) = self.roll_flush.lock().take() {
            let _ = h.join();
        }
        self.flush_locked(now_ms())?;
        let (epochs, producers) = {
            let st = self.state.lock();
            (st.epochs.clone(), st.producers.clone())
        };
        producer::write_snapshot(&self.dir, self.log_end_offset(), &producers)?;
        checkpoint::write_epochs(&self.dir, &epochs)
    }

    /// Closes the log and deletes its directory.
    pub fn delete(&self) -> Result<()> {
        let _w = self.writer.lock();
        self.closed.store(true, Ordering::Release);
        for s in self.segments.read().values() {
            s.retire();
        }
        std::fs::remove_dir_all(&self.dir).at(&self.dir)
    }
}

impl Drop for PartitionLog {
    /// Waits for a background fsync of a rolled segment, so nothing of this log writes files
    /// after it is gone (as a process exit would stop it).
    fn drop(&mut self) {
        if let Some(h) = self.roll_flush.get_mut().take() {
            let _ = h.join();
        }
    }
}

/// In an epoch cache (`(epoch, start offset)`, ascending) of a log ending at `log_end`: the
/// largest epoch `<= requested` and the offset where it ended (the next epoch's start, or the
/// log end for the latest), or `None` when every epoch is newer.
pub fn end_offset_for_epoch(
    epochs: &[(i32, i64)],
    log_end: i64,
    requested: i32,
) -> Option<(i32, i64)> {
    let i = epochs.partition_point(|&(e, _)| e <= requested);
    if i == 0 {
        return None;
    }
    let end = epochs.get(i).map_or(log_end, |&(_, start)| start);
    Some((epochs[i - 1].0, end))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{BatchBuilder, Compression, Record};

    fn batch(n: usize) -> Vec<u8> {
        let mut b = BatchBuilder::new(Compression::None);
        for _ in 0..n {
            b.push(Record::new(
                None::<bytes::Bytes>,
                Some(bytes::Bytes::from_static(b"v")),
                1,
            ));
        }
        b.build().unwrap()
    }

    #[test]
    fn truncate_fully_restarts_the_log_at_the_leaders_start() {
        let dir = tempfile::tempdir().unwrap();
        let config = Arc::new(LogConfig::default());
        let (log, _) = PartitionLog::open(dir.path(), config.clone(), true).unwrap();
        log.append(&mut batch(5), AppendOptions::leader(1)).unwrap();
        assert!(
            log.truncate_fully_and_start_at(3, 3).is_err(),
            "not past the log end"
        );
        log.truncate_fully_and_start_at(100, 100).unwrap();
        assert_eq!(
            (
                log.log_start_offset(),
                log.log_end_offset(),
                log.high_watermark()
            ),
            (100, 100, 100)
        );
        assert!(log.leader_epochs().is_empty());
        // The leader's batches continue from there.
        let mut b = batch(2);
        crate::batch::assign(&mut b, 0, 100, 4);
        log.append(&mut b, AppendOptions::replica()).unwrap();
        assert_eq!(log.log_end_offset(), 102);
        assert_eq!(log.leader_epochs(), vec![(4, 100)]);
        log.close().unwrap();
        let (log, _) = PartitionLog::open(dir.path(), config, true).unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (100, 102));
        assert!(log.read(99, 1 << 20, ReadLimit::LogEnd).is_err());
        assert!(!log
            .read(100, 1 << 20, ReadLimit::LogEnd)
            .unwrap()
            .bytes()
            .unwrap()
            .is_empty());
        // Emptied again, it may restart lower, where the leader's first batch begins, with the
        // readable start kept.
        log.truncate_fully_and_start_at(200, 200).unwrap();
        log.truncate_fully_and_start_at(195, 200).unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (200, 195));
        let mut b = batch(10);
        crate::batch::assign(&mut b, 0, 195, 6);
        log.append(&mut b, AppendOptions::replica()).unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (200, 205));
        assert!(log.read(199, 1 << 20, ReadLimit::LogEnd).is_err());
    }
}
