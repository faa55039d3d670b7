//! Idempotent-producer state: for every producer id, its epoch and the last five batches it
//! appended, so a retried batch is recognised and acknowledged without being written twice, and
//! a gap in sequence numbers is refused.
//!
//! The state is rebuilt from batch headers alone (producer id, epoch, base sequence and offset
//! span are all in the header), so a snapshot only saves work: it is written to
//! `producer-state/<20-digit offset>.snapshot` when a segment rolls and on close, and opening a
//! log loads the newest snapshot at or below the log end and replays the batches after it.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::batch::BatchHeader;
use crate::checkpoint::{self, PRODUCER_STATE_DIR};
use crate::error::{Error, IoContext, Result};

/// Batches remembered per producer for duplicate detection (Kafka's
/// `max.in.flight.requests.per.connection` limit for idempotence).
pub const RETAINED_BATCHES: usize = 5;

/// One appended batch of a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchMeta {
    /// Sequence of the first record.
    pub first_seq: i32,
    /// Sequence of the last record.
    pub last_seq: i32,
    /// Offset of the first record.
    pub first_offset: i64,
    /// Offset of the last record.
    pub last_offset: i64,
}

/// What the log knows about one producer id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerEntry {
    /// Current epoch.
    pub epoch: i16,
    /// The last batches, oldest first.
    pub batches: VecDeque<BatchMeta>,
}

/// The outcome of checking a batch's sequence numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// New data: append it.
    Append,
    /// A retry of a batch already in the log at these offsets: acknowledge, do not write.
    Duplicate(BatchMeta),
}

/// Sequence of the last record of a batch; sequences wrap from `i32::MAX` to 0.
pub fn last_sequence(h: &BatchHeader) -> i32 {
    ((h.base_sequence as i64 + h.last_offset_delta as i64) % (i32::MAX as i64 + 1)) as i32
}

fn next_sequence(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

/// Producer state of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerStates {
    entries: BTreeMap<i64, ProducerEntry>,
}

impl ProducerStates {
    /// Checks a batch from a producer against the state. Batches without a producer id pass.
    pub fn check(&self, h: &BatchHeader) -> Result<SequenceCheck> {
        if h.producer_id < 0 {
            return Ok(SequenceCheck::Append);
        }
        let Some(e) = self.entries.get(&h.producer_id) else {
            return if h.base_sequence <= 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err(Error::UnknownProducerId {
                    producer_id: h.producer_id,
                    sequence: h.base_sequence,
                })
            };
        };
        if h.producer_epoch < e.epoch {
            return Err(Error::InvalidProducerEpoch {
                producer_id: h.producer_id,
                epoch: h.producer_epoch,
                current: e.epoch,
            });
        }
        if h.producer_epoch > e.epoch {
            return if h.base_sequence == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err(Error::OutOfOrderSequence {
                    producer_id: h.producer_id,
                    expected: 0,
                    got: h.base_sequence,
                })
            };
        }
        let last = last_sequence(h);
        if let Some(dup) = e
            .batches
            .iter()
            .find(|b| b.first_seq == h.base_sequence && b.last_seq == last)
        {
            return Ok(SequenceCheck::Duplicate(*dup));
        }
        let expected = e.batches.back().map_or(0, |b| next_sequence(b.last_seq));
        if h.base_sequence != expected {
            return Err(Error::OutOfOrderSequence {
                producer_id: h.producer_id,
                expected,
                got: h.base_sequence,
            });
        }
        Ok(SequenceCheck::Append)
    }

    /// Records a batch that is now in the log (with its final offsets).
    pub fn record(&mut self, h: &BatchHeader) {
        if h.producer_id < 0 || h.base_sequence < 0 {
            return;
        }
        let e = self.entries.entry(h.producer_id).or_default();
        if h.producer_epoch != e.epoch {
            e.epoch = h.producer_epoch;
            e.batches.clear();
        }
        e.batches.push_back(BatchMeta {
            first_seq: h.base_sequence,
            last_seq: last_sequence(h),
            first_offset: h.base_offset,
            last_offset: h.last_offset(),
        });
        while e.batches.len() > RETAINED_BATCHES {
            e.batches.pop_front();
        }
    }

    /// The entry of one producer.
    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.entries.get(&producer_id)
    }

    /// Number of producers tracked.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no producer is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn snapshot_offsets(dir: &Path) -> Result<Vec<i64>> {
    let sdir = dir.join(PRODUCER_STATE_DIR);
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(&sdir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io(&sdir, e)),
    };
    for entry in rd {
        let entry = entry.at(&sdir)?;
        let name = entry.file_name();
        if name.to_str().is_some_and(|n| n.ends_with(".tmp")) {
            // An interrupted snapshot write.
            let p = entry.path();
            std::fs::remove_file(&p).at(&p)?;
            continue;
        }
        if let Some(o) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".snapshot"))
            .and_then(|n| n.parse::<i64>().ok())
        {
            out.push(o);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Writes a snapshot of `states` taken at log end `offset`, keeping the newest two.
pub fn write_snapshot(dir: &Path, offset: i64, states: &ProducerStates) -> Result<()> {
    let sdir = dir.join(PRODUCER_STATE_DIR);
    std::fs::create_dir_all(&sdir).at(&sdir)?;
    let bytes = serde_json::to_vec(states).map_err(|e| Error::Internal(e.to_string()))?;
    checkpoint::write_atomic(&sdir.join(format!("{offset:020}.snapshot")), &bytes)?;
    let all = snapshot_offsets(dir)?;
    for old in all.iter().take(all.len().saturating_sub(2)) {
        let p = sdir.join(format!("{old:020}.snapshot"));
        std::fs::remove_file(&p).at(&p)?;
    }
    Ok(())
}

/// Loads the newest snapshot at or below `log_end`, deleting newer ones (they describe data a
/// truncation removed). Returns the state and the offset to replay from.
pub fn load_snapshot(dir: &Path, log_end: i64) -> Result<(ProducerStates, i64)> {
    let sdir = dir.join(PRODUCER_STATE_DIR);
    for o in snapshot_offsets(dir)?.into_iter().rev() {
        let p = sdir.join(format!("{o:020}.snapshot"));
        if o > log_end {
            std::fs::remove_file(&p).at(&p)?;
            continue;
        }
        match std::fs::read(&p)
            .ok()
            .and_then(|b| serde_json::from_slice::<ProducerStates>(&b).ok())
        {
            Some(s) => return Ok((s, o)),
            None => {
                tracing::warn!(snapshot = %p.display(), "unreadable producer snapshot; ignoring it");
                std::fs::remove_file(&p).at(&p)?;
            }
        }
    }
    Ok((ProducerStates::default(), 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pid: i64, epoch: i16, seq: i32, n: i32, offset: i64) -> BatchHeader {
        BatchHeader {
            base_offset: offset,
            batch_length: 100,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: n - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            record_count: n,
        }
    }

    #[test]
    fn retries_are_duplicates_and_gaps_are_refused() {
        let mut s = ProducerStates::default();
        assert_eq!(s.check(&h(7, 0, 0, 3, 0)).unwrap(), SequenceCheck::Append);
        s.record(&h(7, 0, 0, 3, 0));
        s.record(&h(7, 0, 3, 2, 3));
        match s.check(&h(7, 0, 0, 3, 99)).unwrap() {
            SequenceCheck::Duplicate(b) => assert_eq!((b.first_offset, b.last_offset), (0, 2)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            s.check(&h(7, 0, 6, 1, 5)),
            Err(Error::OutOfOrderSequence {
                expected: 5,
                got: 6,
                ..
            })
        ));
        assert_eq!(s.check(&h(7, 0, 5, 1, 5)).unwrap(), SequenceCheck::Append);
        assert!(matches!(
            s.check(&h(8, 0, 4, 1, 5)),
            Err(Error::UnknownProducerId { .. })
        ));
        // A new epoch starts again at 0; an old epoch is fenced.
        assert_eq!(s.check(&h(7, 1, 0, 1, 5)).unwrap(), SequenceCheck::Append);
        s.record(&h(7, 1, 0, 1, 5));
        assert!(matches!(
            s.check(&h(7, 0, 6, 1, 6)),
            Err(Error::InvalidProducerEpoch { .. })
        ));
    }

    #[test]
    fn only_five_batches_are_remembered() {
        let mut s = ProducerStates::default();
        for i in 0..7 {
            s.record(&h(1, 0, i, 1, i as i64));
        }
        assert_eq!(s.get(1).unwrap().batches.len(), RETAINED_BATCHES);
        assert!(matches!(
            s.check(&h(1, 0, 0, 1, 9)),
            Err(Error::OutOfOrderSequence { .. })
        ));
        assert!(matches!(
            s.check(&h(1, 0, 3, 1, 9)).unwrap(),
            SequenceCheck::Duplicate(_)
        ));
    }

    #[test]
    fn sequences_wrap() {
        let b = h(1, 0, i32::MAX - 1, 3, 0);
        assert_eq!(last_sequence(&b), 0);
        let mut s = ProducerStates::default();
        s.record(&h(1, 0, 0, 1, 0));
        s.entries
            .get_mut(&1)
            .unwrap()
            .batches
            .back_mut()
            .unwrap()
            .last_seq = i32::MAX;
        assert_eq!(s.check(&h(1, 0, 0, 1, 1)).unwrap(), SequenceCheck::Append);
    }
}
