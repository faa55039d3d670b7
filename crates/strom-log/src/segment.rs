//! One segment of a partition log: a `.log` file of record batches and its two sparse indexes.
//!
//! The segment has a single writer (the partition's writer lock) and any number of readers.
//! Readers only look at bytes below `size`, which the writer publishes (Release) after the bytes
//! are written, so a reader never sees a partially written batch.
//!
//! Indexes live in memory and are written to their files when the segment is flushed or closed;
//! after an unclean shutdown every segment past the recovery point is rescanned and its indexes
//! rebuilt, so an index file is never trusted beyond the last flush.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::batch::{self, BatchHeader, Origin, HEADER_SIZE, LOG_OVERHEAD};
use crate::error::{Error, IoContext, Result};

/// Size of one offset-index entry: relative offset (u32) and file position (u32).
pub const OFFSET_ENTRY: u64 = 8;
/// Size of one time-index entry: timestamp (i64) and relative offset (u32).
pub const TIME_ENTRY: u64 = 12;

/// The three file names of the segment that starts at `base` (20-digit, zero-padded, as Kafka).
pub fn file_stem(base: i64) -> String {
    format!("{base:020}")
}

/// Paths of a segment's files.
#[derive(Debug, Clone)]
pub(crate) struct SegmentPaths {
    pub log: PathBuf,
    pub index: PathBuf,
    pub timeindex: PathBuf,
}

impl SegmentPaths {
    pub fn new(dir: &Path, base: i64) -> Self {
        let stem = file_stem(base);
        SegmentPaths {
            log: dir.join(format!("{stem}.log")),
            index: dir.join(format!("{stem}.index")),
            timeindex: dir.join(format!("{stem}.timeindex")),
        }
    }
}

#[derive(Debug, Default)]
struct Indexes {
    /// (offset - base, file position), strictly increasing in both.
    offsets: Vec<(u32, u32)>,
    /// (max timestamp so far, offset - base of the record carrying it), increasing timestamps.
    times: Vec<(i64, u32)>,
    offsets_persisted: usize,
    times_persisted: usize,
    /// Set once the segment's files are deleted or replaced: nothing may write them again.
    retired: bool,
    bytes_since_entry: u64,
    max_ts: i64,
    offset_of_max_ts: i64,
}

/// A contiguous byte range of a segment file: whole record batches, ready to be sent as is
/// (with `sendfile` later) or read into memory.
#[derive(Debug, Clone)]
pub struct FileSlice {
    file: Arc<File>,
    path: Arc<PathBuf>,
    /// Start position within the file.
    pub position: u64,
    /// Number of bytes.
    pub len: u64,
    /// The bytes, when the read already brought them into memory.
    data: Option<bytes::Bytes>,
}

impl FileSlice {
    /// Reads the range into memory.
    pub fn read(&self) -> Result<bytes::Bytes> {
        if let Some(d) = &self.data {
            return Ok(d.clone());
        }
        let mut buf = vec![0u8; self.len as usize];
        self.file
            .read_exact_at(&mut buf, self.position)
            .at(&self.path)?;
        Ok(buf.into())
    }

    /// The open file the range lies in.
    pub fn file(&self) -> &File {
        &self.file
    }
}

/// What a full scan of a segment found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanOutcome {
    /// Bytes of valid batches kept.
    pub valid_bytes: u64,
    /// Bytes cut off at the end because they were torn or corrupt.
    pub truncated_bytes: u64,
    /// Why the scan stopped early, if it did.
    pub reason: Option<String>,
}

pub(crate) struct Segment {
    pub base_offset: i64,
    pub paths: SegmentPaths,
    file: Arc<File>,
    log_path: Arc<PathBuf>,
    size: AtomicU64,
    next_offset: AtomicI64,
    /// When the segment began, for `segment.ms`: the wall clock at creation, or after a restart
    /// the first timestamp in it (file mtime if it has none).
    created_ms: AtomicI64,
    idx: Mutex<Indexes>,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("base_offset", &self.base_offset)
            .field("size", &self.size())
            .field("next_offset", &self.next_offset())
            .finish()
    }
}

fn open_rw(path: &Path, create: bool) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(path)
        .at(path)
}

impl Segment {
    fn with_file(paths: SegmentPaths, base: i64, file: File, created_ms: i64) -> Self {
        Segment {
            base_offset: base,
            log_path: Arc::new(paths.log.clone()),
            paths,
            file: Arc::new(file),
            size: AtomicU64::new(0),
            next_offset: AtomicI64::new(base),
            created_ms: AtomicI64::new(created_ms),
            idx: Mutex::new(Indexes {
                max_ts: -1,
                offset_of_max_ts: base,
                ..Default::default()
            }),
        }
    }

    /// Creates an empty segment (its files are truncated if they exist).
    pub fn create(dir: &Path, base: i64, now_ms: i64) -> Result<Self> {
        let paths = SegmentPaths::new(dir, base);
        let file = open_rw(&paths.log, true)?;
        file.set_len(0).at(&paths.log)?;
        for p in [&paths.index, &paths.timeindex] {
            crate::checkpoint::remove_if_exists(p)?;
        }
        Ok(Self::with_file(paths, base, file, now_ms))
    }

    /// Opens a segment written before a clean shutdown: loads its index files and reads only the
    /// batch headers after the last index entry. If the index files are missing or inconsistent,
    /// or the tail is not whole batches, it falls back to a validating scan and returns what the
    /// scan found.
    pub fn open_clean(
        dir: &Path,
        base: i64,
        interval: u64,
        next_base: Option<i64>,
    ) -> Result<(Self, Option<ScanOutcome>)> {
        let paths = SegmentPaths::new(dir, base);
        let file = open_rw(&paths.log, false)?;
        let len = file.metadata().at(&paths.log)?.len();
        let seg = Self::with_file(paths, base, file, 0);
        seg.size.store(len, Ordering::Release);
        let problem = match seg.load_indexes(len) {
            Ok(start) => {
                // Trust everything the index covers; walk headers of the short tail after it.
                let mut pos = start;
                loop {
                    if pos >= len {
                        break (pos != len).then(|| "the tail overruns the file".to_string());
                    }
                    match seg.header_at(pos, len) {
                        Ok(Some(h)) => {
                            seg.note_batch(&h, pos, interval);
                            pos += h.total_size() as u64;
                        }
                        Ok(None) => break Some(format!("a partial header at position {pos}")),
                        Err(Error::Corrupt { reason, .. }) => break Some(reason),
                        Err(e) => return Err(e),
                    }
                }
            }
            Err(reason) => Some(reason),
        };
        match problem {
            None => {
                seg.finish_load();
                Ok((seg, None))
            }
            Some(reason) => {
                tracing::warn!(segment = %seg.paths.log.display(), %reason, "scanning the segment");
                drop(seg);
                let (seg, mut outcome) = Self::open_recover(dir, base, interval, next_base)?;
                outcome.reason.get_or_insert(reason);
                Ok((seg, Some(outcome)))
            }
        }
    }

    /// Opens a segment by scanning and validating every batch, truncating at the first torn or
    /// corrupt one, and rebuilding both indexes.
    /// `next_base`, the next segment's base offset, bounds the offsets this one may hold.
    pub fn open_recover(
        dir: &Path,
        base: i64,
        interval: u64,
        next_base: Option<i64>,
    ) -> Result<(Self, ScanOutcome)> {
        let paths = SegmentPaths::new(dir, base);
        let file = open_rw(&paths.log, false)?;
        let len = file.metadata().at(&paths.log)?.len();
        let seg = Self::with_file(paths, base, file, 0);
        let mut pos = 0u64;
        let mut buf = Vec::new();
        let mut reason = None;
        let mut expected_min = base;
        while pos < len {
            let remaining = len - pos;
            if remaining < LOG_OVERHEAD as u64 {
                reason = Some(format!("{remaining} trailing bytes at position {pos}"));
                break;
            }
            let mut head = [0u8; LOG_OVERHEAD];
            seg.file.read_exact_at(&mut head, pos).at(&seg.paths.log)?;
            let total = batch::peek_size(&head, 0).unwrap_or(0);
            if total < HEADER_SIZE as i64 || total as u64 > remaining {
                reason = Some(format!(
                    "batch at position {pos} claims {total} bytes, {remaining} remain"
                ));
                break;
            }
            buf.resize(total as usize, 0);
            seg.file.read_exact_at(&mut buf, pos).at(&seg.paths.log)?;
            let h = match batch::validate_one(&buf, 0, Origin::Replica) {
                Ok(v) => v.header,
                Err(e) => {
                    reason = Some(format!("at position {pos}: {e}"));
                    break;
                }
            };
            if h.base_offset < expected_min || h.last_offset_delta < 0 {
                reason = Some(format!(
                    "batch at position {pos} has offset {} below {expected_min}",
                    h.base_offset
                ));
                break;
            }
            if next_base.is_some_and(|n| h.last_offset() >= n) {
                // The base offset is outside the CRC: a damaged one can claim offsets that
                // belong to the next segment.
                reason = Some(format!(
                    "batch at position {pos} claims offset {} of the next segment",
                    h.last_offset()
                ));
                break;
            }
            if h.last_offset() - base > u32::MAX as i64 {
                reason = Some(format!(
                    "offset {} does not belong to this segment",
                    h.last_offset()
                ));
                break;
            }
            expected_min = h.next_offset();
            seg.note_batch(&h, pos, interval);
            pos += total as u64;
        }
        let outcome = ScanOutcome {
            valid_bytes: pos,
            truncated_bytes: len - pos,
            reason,
        };
        if pos < len {
            seg.file.set_len(pos).at(&seg.paths.log)?;
        }
        seg.size.store(pos, Ordering::Release);
        seg.finish_load();
        // The rebuilt indexes replace whatever the files held.
        seg.rewrite_index_files()?;
        Ok((seg, outcome))
    }

    fn finish_load(&self) {
        let mut created = self.idx.lock().times.first().map_or(-1, |t| t.0);
        if created < 0 {
            created = now_from_mtime(&self.paths.log);
        }
        self.created_ms.store(created, Ordering::Relaxed);
    }

    /// When the segment began (see the field).
    pub fn created_ms(&self) -> i64 {
        self.created_ms.load(Ordering::Relaxed)
    }

    /// Loads index files; returns the file position after which batches are not indexed.
    fn load_indexes(&self, log_len: u64) -> std::result::Result<u64, String> {
        if log_len == 0 {
            // Nothing to index (and an empty segment never wrote its index files).
            return Ok(0);
        }
        let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        let offs = read(&self.paths.index)?;
        let times = read(&self.paths.timeindex)?;
        if !(offs.len() as u64).is_multiple_of(OFFSET_ENTRY)
            || !(times.len() as u64).is_multiple_of(TIME_ENTRY)
        {
            return Err("index file size is not a whole number of entries".into());
        }
        let mut idx = self.idx.lock();
        idx.offsets = offs
            .chunks_exact(8)
            .map(|c| (batch::be_u32(c, 0), batch::be_u32(c, 4)))
            .collect();
        idx.times = times
            .chunks_exact(12)
            .map(|c| (batch::be_i64(c, 0), batch::be_u32(c, 8)))
            .collect();
        let sorted = idx
            .offsets
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1)
            && idx.times.windows(2).all(|w| w[0].0 < w[1].0);
        if !sorted {
            return Err("index entries are not increasing".into());
        }
        idx.offsets_persisted = idx.offsets.len();
        idx.times_persisted = idx.times.len();
        let start = match idx.offsets.last() {
            Some(&(_, pos)) if pos as u64 >= log_len => {
                return Err(format!(
                    "index points at {pos}, past the log's {log_len} bytes"
                ))
            }
            Some(&(_, pos)) => pos as u64,
            None => 0,
        };
        if let Some(&(ts, rel)) = idx.times.last() {
            idx.max_ts = ts;
            idx.offset_of_max_ts = self.base_offset + rel as i64;
        }
        // Batches from `start` on are walked again; forget the entry at `start` and force the
        // walk to add it back, so the tail is indexed exactly as it was when written.
        if start > 0 {
            idx.offsets.pop();
            idx.offsets_persisted -= 1;
            idx.bytes_since_entry = u64::MAX / 2;
        }
        drop(idx);
        // Resume the walk at the last indexed batch, so next_offset and the tail are recomputed.
        Ok(start)
    }

    /// Updates in-memory indexes and offsets for a batch written at `pos`.
    fn note_batch(&self, h: &BatchHeader, pos: u64, interval: u64) {
        let mut idx = self.idx.lock();
        let rel = (h.base_offset - self.base_offset) as u32;
        if h.max_timestamp > idx.max_ts {
            idx.max_ts = h.max_timestamp;
            idx.offset_of_max_ts = h.last_offset();
        }
        if idx.offsets.is_empty() && pos == 0 || idx.bytes_since_entry >= interval {
            if idx.offsets.last().is_none_or(|&(r, _)| r < rel) {
                idx.offsets.push((rel, pos as u32));
            }
            let (ts, off) = (idx.max_ts, idx.offset_of_max_ts);
            if ts >= 0 && idx.times.last().is_none_or(|&(t, _)| t < ts) {
                idx.times.push((ts, (off - self.base_offset) as u32));
            }
            idx.bytes_since_entry = 0;
        }
        idx.bytes_since_entry += h.total_size() as u64;
        self.next_offset.store(h.next_offset(), Ordering::Release);
    }

    /// Appends whole, validated batches (`buf`) at the end of the file. `batches` lists each
    /// batch's position in `buf` and header.
    pub fn append(
        &self,
        buf: &[u8],
        batches: &[(usize, BatchHeader)],
        interval: u64,
    ) -> Result<()> {
        let start = self.size.load(Ordering::Acquire);
        self.file.write_all_at(buf, start).at(&self.paths.log)?;
        for (pos, h) in batches {
            self.note_batch(h, start + *pos as u64, interval);
        }
        self.size.store(start + buf.len() as u64, Ordering::Release);
        Ok(())
    }

    /// Committed bytes.
    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    /// Offset after the last batch (the base offset when empty).
    pub fn next_offset(&self) -> i64 {
        self.next_offset.load(Ordering::Acquire)
    }

    /// Largest timestamp in the segment, or -1.
    pub fn max_timestamp(&self) -> i64 {
        self.idx.lock().max_ts
    }

    /// Bytes the two indexes would occupy on disk.
    pub fn index_bytes(&self) -> u64 {
        let idx = self.idx.lock();
        (idx.offsets.len() as u64 * OFFSET_ENTRY).max(idx.times.len() as u64 * TIME_ENTRY)
    }

    /// Reads the header of the batch at `pos`, if a whole header lies below `limit`.
    pub fn header_at(&self, pos: u64, limit: u64) -> Result<Option<BatchHeader>> {
        if pos + HEADER_SIZE as u64 > limit {
            return Ok(None);
        }
        let mut b = [0u8; HEADER_SIZE];
        self.file.read_exact_at(&mut b, pos).at(&self.paths.log)?;
        let h = BatchHeader::parse(&b).ok_or_else(|| Error::Internal("short header".into()))?;
        if h.batch_length < (HEADER_SIZE - LOG_OVERHEAD) as i32
            || pos + h.total_size() as u64 > limit
        {
            return Err(Error::Corrupt {
                path: self.paths.log.clone(),
                reason: format!("batch at position {pos} has length {}", h.batch_length),
            });
        }
        Ok(Some(h))
    }

    /// Position of the last indexed batch at or before `offset`.
    fn index_floor(&self, offset: i64) -> u64 {
        let rel = (offset - self.base_offset).clamp(0, u32::MAX as i64) as u32;
        let idx = self.idx.lock();
        match idx.offsets.partition_point(|&(r, _)| r <= rel) {
            0 => 0,
            i => idx.offsets[i - 1].1 as u64,
        }
    }

    /// The first batch whose last offset is `>= offset`, with its position.
    pub fn find(&self, offset: i64) -> Result<Option<(u64, BatchHeader)>> {
        let limit = self.size();
        let mut pos = self.index_floor(offset);
        while let Some(h) = self.header_at(pos, limit)? {
            if h.last_offset() >= offset {
                return Ok(Some((pos, h)));
            }
            pos += h.total_size() as u64;
        }
        Ok(None)
    }

    /// Whole batches from `start` (a batch boundary) while the total stays within `max_bytes`
    /// and each batch ends below `max_offset`; with `min_one`, the first batch is included even
    /// if it alone is larger than `max_bytes`.
    ///
    /// The candidate range is read with one `pread` and the batch boundaries are found in
    /// memory (walking headers with a syscall each costs more than the copy); the bytes stay
    /// in the returned slice.
    pub fn slice(
        &self,
        start: u64,
        max_bytes: u64,
        max_offset: i64,
        min_one: bool,
    ) -> Result<FileSlice> {
        let limit = self.size();
        let empty = FileSlice {
            file: self.file.clone(),
            path: self.log_path.clone(),
            position: start,
            len: 0,
            data: None,
        };
        let Some(first) = self.header_at(start, limit)? else {
            return Ok(empty);
        };
        if first.last_offset() >= max_offset {
            return Ok(empty);
        }
        let first_size = first.total_size() as u64;
        let span = if first_size > max_bytes {
            if !min_one {
                return Ok(empty);
            }
            first_size
        } else {
            max_bytes.min(limit - start)
        };
        let mut buf = vec![0u8; span as usize];
        self.file
            .read_exact_at(&mut buf, start)
            .at(&self.paths.log)?;
        let mut end = 0usize;
        while let Some(h) = BatchHeader::parse(&buf[end..]) {
            if h.batch_length < (HEADER_SIZE - LOG_OVERHEAD) as i32 {
                return Err(Error::Corrupt {
                    path: self.paths.log.clone(),
                    reason: format!(
                        "batch at position {} has length {}",
                        start + end as u64,
                        h.batch_length
                    ),
                });
            }
            if end + h.total_size() > buf.len() || h.last_offset() >= max_offset {
                break;
            }
            end += h.total_size();
        }
        buf.truncate(end);
        Ok(FileSlice {
            len: end as u64,
            data: Some(bytes::Bytes::from(buf)),
            ..empty
        })
    }

    /// Reads the whole batch at `pos` with header `h`.
    pub fn read_batch(&self, pos: u64, h: &BatchHeader) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; h.total_size()];
        self.file.read_exact_at(&mut buf, pos).at(&self.paths.log)?;
        Ok(buf)
    }

    /// Every batch of the segment in order, with its position.
    pub fn batches(&self) -> Result<Vec<(u64, BatchHeader)>> {
        let limit = self.size();
        let mut out = Vec::new();
        let mut pos = 0;
        while let Some(h) = self.header_at(pos, limit)? {
            out.push((pos, h));
            pos += h.total_size() as u64;
        }
        Ok(out)
    }

    /// The first record at or after offset `min_offset` with a timestamp `>= ts`
    /// (offset, timestamp), if the segment has one.
    pub fn find_timestamp(&self, ts: i64, min_offset: i64) -> Result<Option<(i64, i64)>> {
        if self.max_timestamp() < ts {
            return Ok(None);
        }
        let from = {
            let idx = self.idx.lock();
            match idx.times.partition_point(|&(t, _)| t < ts) {
                0 => self.base_offset,
                i => self.base_offset + idx.times[i - 1].1 as i64,
            }
        };
        let limit = self.size();
        let mut pos = self.index_floor(from.max(min_offset));
        while let Some(h) = self.header_at(pos, limit)? {
            if h.max_timestamp >= ts && h.last_offset() >= min_offset {
                let bytes = self.read_batch(pos, &h)?;
                let (_, records) = crate::record::decode_records(&bytes)?;
                let mut live = records.iter().filter(|r| r.offset >= min_offset);
                if h.attributes & batch::ATTR_LOG_APPEND_TIME != 0 {
                    // A log-append-time batch stamps every record with max_timestamp.
                    if let Some(r) = live.next() {
                        return Ok(Some((r.offset, h.max_timestamp)));
                    }
                } else if let Some(r) = live.find(|r| r.timestamp >= ts) {
                    return Ok(Some((r.offset, r.timestamp)));
                }
            }
            pos += h.total_size() as u64;
        }
        Ok(None)
    }

    /// Removes every batch whose last offset is `>= offset`. Returns the bytes removed.
    pub fn truncate_to(&self, offset: i64) -> Result<u64> {
        let size = self.size();
        let Some((pos, cut)) = self.find(offset)? else {
            return Ok(0);
        };
        self.file.set_len(pos).at(&self.paths.log)?;
        self.size.store(pos, Ordering::Release);
        let rel_cut = (cut.base_offset - self.base_offset).max(0) as u32;
        {
            let mut idx = self.idx.lock();
            idx.offsets.retain(|&(_, p)| (p as u64) < pos);
            idx.times.retain(|&(_, r)| r < rel_cut);
            idx.offsets_persisted = idx.offsets_persisted.min(idx.offsets.len());
            idx.times_persisted = idx.times_persisted.min(idx.times.len());
            idx.bytes_since_entry = 0;
            idx.max_ts = idx.times.last().map_or(-1, |t| t.0);
            idx.offset_of_max_ts = idx
                .times
                .last()
                .map_or(self.base_offset, |t| self.base_offset + t.1 as i64);
        }
        // Walk the kept batches after the last index entry to restore next offset and max ts.
        let start = self.idx.lock().offsets.last().map_or(0, |e| e.1 as u64);
        self.next_offset.store(self.base_offset, Ordering::Release);
        let mut p = start;
        let mut next = None;
        while let Some(h) = self.header_at(p, pos)? {
            let mut idx = self.idx.lock();
            if h.max_timestamp > idx.max_ts {
                idx.max_ts = h.max_timestamp;
                idx.offset_of_max_ts = h.last_offset();
            }
            idx.bytes_since_entry += h.total_size() as u64;
            next = Some(h.next_offset());
            p += h.total_size() as u64;
        }
        if let Some(n) = next {
            self.next_offset.store(n, Ordering::Release);
        } else if start > 0 {
            return Err(Error::Internal(
                "index entry points past the truncated end".into(),
            ));
        }
        self.rewrite_index_files()?;
        Ok(size - pos)
    }

    /// Fsyncs the log file and writes the index entries not yet on disk.
    pub fn flush(&self) -> Result<()> {
        self.file.sync_data().at(&self.paths.log)?;
        self.persist_indexes(true)
    }

    /// Writes index entries not yet on disk (append-only), optionally fsyncing.
    pub fn persist_indexes(&self, sync: bool) -> Result<()> {
        let mut idx = self.idx.lock();
        if idx.retired {
            return Ok(());
        }
        if idx.offsets_persisted < idx.offsets.len() {
            let mut out = Vec::new();
            for &(r, p) in &idx.offsets[idx.offsets_persisted..] {
                out.extend_from_slice(&r.to_be_bytes());
                out.extend_from_slice(&p.to_be_bytes());
            }
            append_file(
                &self.paths.index,
                idx.offsets_persisted as u64 * OFFSET_ENTRY,
                &out,
                sync,
            )?;
            idx.offsets_persisted = idx.offsets.len();
        }
        if idx.times_persisted < idx.times.len() {
            let mut out = Vec::new();
            for &(t, r) in &idx.times[idx.times_persisted..] {
                out.extend_from_slice(&t.to_be_bytes());
                out.extend_from_slice(&r.to_be_bytes());
            }
            append_file(
                &self.paths.timeindex,
                idx.times_persisted as u64 * TIME_ENTRY,
                &out,
                sync,
            )?;
            idx.times_persisted = idx.times.len();
        }
        Ok(())
    }

    /// Rewrites both index files from memory.
    pub fn rewrite_index_files(&self) -> Result<()> {
        {
            let mut idx = self.idx.lock();
            if idx.retired {
                return Ok(());
            }
            idx.offsets_persisted = 0;
            idx.times_persisted = 0;
        }
        for p in [&self.paths.index, &self.paths.timeindex] {
            let f = open_rw(p, true)?;
            f.set_len(0).at(p)?;
        }
        self.persist_indexes(false)
    }

    /// Deletes the segment's files. Readers holding a [`FileSlice`] keep their open file.
    pub fn delete_files(&self) -> Result<()> {
        let mut idx = self.idx.lock();
        idx.retired = true;
        delete_segment_files_at(&self.paths)?;
        drop(idx);
        Ok(())
    }

    /// Marks the segment as replaced (by the cleaner) without touching files.
    pub fn retire(&self) {
        self.idx.lock().retired = true;
    }

    /// Offset of the record with the largest timestamp, with that timestamp.
    pub fn offset_of_max_timestamp(&self) -> (i64, i64) {
        let idx = self.idx.lock();
        (idx.offset_of_max_ts, idx.max_ts)
    }
}

/// Deletes the files of the segment at `base` in `dir` without opening it.
pub(crate) fn delete_segment_files(dir: &Path, base: i64) -> Result<()> {
    delete_segment_files_at(&SegmentPaths::new(dir, base))
}

fn delete_segment_files_at(p: &SegmentPaths) -> Result<()> {
    for p in [&p.log, &p.index, &p.timeindex] {
        crate::checkpoint::remove_if_exists(p)?;
    }
    Ok(())
}

fn append_file(path: &Path, at: u64, bytes: &[u8], sync: bool) -> Result<()> {
    let f = open_rw(path, true)?;
    f.set_len(at).at(path)?;
    f.write_all_at(bytes, at).at(path)?;
    if sync {
        f.sync_data().at(path)?;
    }
    Ok(())
}

fn now_from_mtime(path: &Path) -> i64 {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64)
}
