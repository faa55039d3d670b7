//! Log compaction (`cleanup.policy=compact`): keep only the latest record per key.
//!
//! A pass works on the *cleanable* segments: every segment except the active one, wholly below
//! the high watermark and older than `min.compaction.lag.ms`. It maps each key to its latest
//! offset in that range, then rewrites each segment keeping a record only if it is the latest for
//! its key (records without a key and control batches are always kept). Offsets never change:
//! a rewritten batch keeps its base offset and offset span, so consumers see gaps. Tombstones
//! (null values) are kept while their segment's newest record is younger than
//! `delete.retention.ms`, so consumers that are behind still see the delete.
//!
//! Each segment is replaced atomically: the cleaned copy is written to `<base>.log.cleaned` and
//! fsynced, the old index files are removed, then the copy is renamed over `<base>.log`. A crash
//! at any point leaves either the old segment (a stray `.cleaned` is removed on open) or the new
//! one (whose missing indexes are rebuilt on open). The active segment is never touched.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use crate::batch::{self, Origin};
use crate::checkpoint;
use crate::error::{IoContext, Result};
use crate::log::PartitionLog;
use crate::record::{decode_records, BatchBuilder};
use crate::segment::Segment;

/// What one compaction pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanStats {
    /// Segments rewritten.
    pub segments_rewritten: usize,
    /// Segments removed because nothing in them survived.
    pub segments_removed: usize,
    /// Records dropped (superseded values and expired tombstones).
    pub records_removed: u64,
    /// Bytes of the cleanable range before the pass.
    pub bytes_before: u64,
    /// Bytes of the cleanable range after the pass.
    pub bytes_after: u64,
}

impl PartitionLog {
    /// Runs one compaction pass if the topic is compacted and enough of it is dirty
    /// (`min.cleanable.dirty.ratio`), or always when `force` is set.
    pub fn compact(&self, now: i64, force: bool) -> Result<CleanStats> {
        let mut stats = CleanStats::default();
        let c = self.config();
        if !c.compact {
            return Ok(stats);
        }
        let hw = self.high_watermark();
        let all: Vec<Arc<Segment>> = self.segments.read().values().cloned().collect();
        let mut cleanable = Vec::new();
        for pair in all.windows(2) {
            let (s, next) = (&pair[0], &pair[1]);
            let lagging = now - s.max_timestamp() < c.min_compaction_lag_ms as i64;
            if next.base_offset > hw || lagging {
                break;
            }
            cleanable.push(s.clone());
        }
        let Some(end) = cleanable.last().map(|s| s.next_offset()) else {
            return Ok(stats);
        };
        let first_dirty = self.cleaner_offset.load(Ordering::Acquire);
        let total: u64 = cleanable.iter().map(|s| s.size()).sum();
        let dirty: u64 = cleanable
            .iter()
            .filter(|s| s.next_offset() > first_dirty)
            .map(|s| s.size())
            .sum();
        if total == 0 || (!force && (dirty as f64) < c.min_cleanable_dirty_ratio * total as f64) {
            return Ok(stats);
        }
        stats.bytes_before = total;

        // Pass 1: the latest offset of every key in the cleanable range.
        let mut latest: HashMap<Bytes, i64> = HashMap::new();
        for s in &cleanable {
            for (pos, h) in s.batches()? {
                if h.is_control() {
                    continue;
                }
                let (_, records) = decode_records(&s.read_batch(pos, &h)?)?;
                for r in records {
                    if let Some(k) = r.key {
                        latest.insert(Bytes::copy_from_slice(&k), r.offset);
                    }
                }
            }
        }

        // Pass 2: rewrite each segment that loses something.
        for s in &cleanable {
            let tombstones_expire = now - s.max_timestamp() > c.delete_retention_ms as i64;
            let mut out = Vec::with_capacity(s.size() as usize);
            let mut removed = 0u64;
            for (pos, h) in s.batches()? {
                let raw = s.read_batch(pos, &h)?;
                if h.is_control() {
                    out.extend_from_slice(&raw);
                    continue;
                }
                let (_, records) = decode_records(&raw)?;
                let n = records.len();
                let kept: Vec<_> = records
                    .into_iter()
                    .filter(|r| match &r.key {
                        None => true,
                        Some(k) => {
                            latest.get(k) == Some(&r.offset)
                                && !(r.value.is_none() && tombstones_expire)
                        }
                    })
                    .collect();
                removed += (n - kept.len()) as u64;
                if kept.len() == n {
                    out.extend_from_slice(&raw);
                } else if !kept.is_empty() {
                    out.extend_from_slice(&BatchBuilder::like(&h, kept)?.build()?);
                }
            }
            if removed == 0 {
                stats.bytes_after += s.size();
                continue;
            }
            stats.records_removed += removed;
            stats.bytes_after += out.len() as u64;
            if self.swap_in(s, &out)? {
                if out.is_empty() && self.segments.read().get(&s.base_offset).is_none() {
                    stats.segments_removed += 1;
                } else {
                    stats.segments_rewritten += 1;
                }
            }
        }
        self.cleaner_offset.fetch_max(end, Ordering::AcqRel);
        self.write_checkpoint()?;
        tracing::debug!(dir = %self.dir().display(), ?stats, "compaction pass");
        Ok(stats)
    }

    /// Atomically replaces segment `old` with `cleaned` bytes. Returns false if the segment was
    /// deleted or replaced meanwhile (by retention or truncation), in which case nothing changes.
    fn swap_in(&self, old: &Arc<Segment>, cleaned: &[u8]) -> Result<bool> {
        // Validate what we are about to install: the cleaner must never store a bad batch.
        if !cleaned.is_empty() {
            batch::validate_all(cleaned, Origin::Replica)?;
        }
        let dir = self.dir().to_path_buf();
        let tmp = old.paths.log.with_extension("log.cleaned");
        {
            let mut f = std::fs::File::create(&tmp).at(&tmp)?;
            f.write_all(cleaned).at(&tmp)?;
            f.sync_all().at(&tmp)?;
        }
        let _w = self.writer.lock();
        let current = self.segments.read().get(&old.base_offset).cloned();
        if !current.is_some_and(|c| Arc::ptr_eq(&c, old)) {
            std::fs::remove_file(&tmp).at(&tmp)?;
            return Ok(false);
        }
        old.retire();
        // The first segment stays even when empty, so the log start offset (which a restart
        // derives from the first segment) does not move.
        let is_first = self.segments.read().keys().next() == Some(&old.base_offset);
        if cleaned.is_empty() && !is_first {
            self.segments.write().remove(&old.base_offset);
            std::fs::remove_file(&tmp).at(&tmp)?;
            old.delete_files()?;
            return Ok(true);
        }
        for p in [&old.paths.index, &old.paths.timeindex] {
            checkpoint::remove_if_exists(p)?;
        }
        std::fs::rename(&tmp, &old.paths.log).at(&old.paths.log)?;
        checkpoint::sync_dir(&dir)?;
        let interval = self.config().index_interval_bytes;
        let next_base = self
            .segments
            .read()
            .range(old.base_offset + 1..)
            .next()
            .map(|(k, _)| *k);
        let (fresh, _) = Segment::open_recover(&dir, old.base_offset, interval, next_base)?;
        fresh.flush()?;
        self.segments
            .write()
            .insert(old.base_offset, Arc::new(fresh));
        Ok(true)
    }
}
