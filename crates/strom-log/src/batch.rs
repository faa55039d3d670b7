//! Kafka record batches (magic 2): header layout, validation and in-place offset assignment.
//!
//! A batch is stored on disk exactly as a client sent it, except for two header fields the log
//! owns: `base_offset` and `partition_leader_epoch`. Both lie outside the CRC-32C, which covers
//! `attributes` to the end of the batch, so rewriting them never invalidates a checksum.
//!
//! ```text
//!  0       8       12      16  17      21   23      27          35          43          51   53      57      61
//!  +-------+-------+-------+---+-------+----+-------+-----------+-----------+-----------+----+-------+-------+---------
//!  | base  | batch | leader|mag| crc32c|attr| last  | base      | max       | producer  |prod| base  |record | records
//!  | offset| length| epoch | ic|       |    | offset| timestamp | timestamp | id        |epch| seq   |count  | ...
//!  | i64   | i32   | i32   |i8 | u32   |i16 | delta | i64       | i64       | i64       |i16 | i32   | i32   |
//!  +-------+-------+-------+---+-------+----+-------+-----------+-----------+-----------+----+-------+-------+---------
//! ```
//! All integers are big-endian. `batch_length` counts the bytes after itself (total size - 12).

use crate::error::{Error, Result};

/// Size of the fixed v2 batch header.
pub const HEADER_SIZE: usize = 61;
/// Bytes needed to know a batch's offset and length: `base_offset` and `batch_length`.
pub const LOG_OVERHEAD: usize = 12;
/// The only record-batch format the log stores.
pub const MAGIC_V2: i8 = 2;

pub(crate) const OFF_BASE_OFFSET: usize = 0;
pub(crate) const OFF_LENGTH: usize = 8;
pub(crate) const OFF_LEADER_EPOCH: usize = 12;
pub(crate) const OFF_MAGIC: usize = 16;
pub(crate) const OFF_CRC: usize = 17;
pub(crate) const OFF_ATTRIBUTES: usize = 21;
pub(crate) const OFF_LAST_OFFSET_DELTA: usize = 23;
pub(crate) const OFF_BASE_TIMESTAMP: usize = 27;
pub(crate) const OFF_MAX_TIMESTAMP: usize = 35;
pub(crate) const OFF_PRODUCER_ID: usize = 43;
pub(crate) const OFF_PRODUCER_EPOCH: usize = 51;
pub(crate) const OFF_BASE_SEQUENCE: usize = 53;
pub(crate) const OFF_RECORD_COUNT: usize = 57;

/// Attribute bits 0-2: the compression codec of the records section.
pub const ATTR_COMPRESSION_MASK: i16 = 0x07;
/// Attribute bit 3: timestamps are the broker's append time, not the producer's create time.
pub const ATTR_LOG_APPEND_TIME: i16 = 0x08;
/// Attribute bit 4: the batch belongs to a transaction.
pub const ATTR_TRANSACTIONAL: i16 = 0x10;
/// Attribute bit 5: a control batch (transaction markers).
pub const ATTR_CONTROL: i16 = 0x20;

pub(crate) fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
pub(crate) fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
pub(crate) fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
pub(crate) fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(x)
}

/// The decoded fixed header of one v2 record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record (assigned by the log).
    pub base_offset: i64,
    /// Bytes following the `batch_length` field.
    pub batch_length: i32,
    /// Leader epoch of the partition when the batch was appended (assigned by the log).
    pub partition_leader_epoch: i32,
    /// Format version; always 2 in a valid batch.
    pub magic: i8,
    /// CRC-32C over `attributes..end`.
    pub crc: u32,
    /// Compression, timestamp type, transactional and control bits.
    pub attributes: i16,
    /// `last_offset - base_offset`.
    pub last_offset_delta: i32,
    /// Timestamp of the first record.
    pub base_timestamp: i64,
    /// Largest timestamp in the batch.
    pub max_timestamp: i64,
    /// Idempotent/transactional producer id, or -1.
    pub producer_id: i64,
    /// Producer epoch, or -1.
    pub producer_epoch: i16,
    /// Sequence number of the first record, or -1.
    pub base_sequence: i32,
    /// Number of records in the batch (fewer than `last_offset_delta + 1` after compaction).
    pub record_count: i32,
}

impl BatchHeader {
    /// Parses the header at the start of `b`, which must hold at least [`HEADER_SIZE`] bytes.
    /// Performs no validation beyond the length.
    pub fn parse(b: &[u8]) -> Option<Self> {
        if b.len() < HEADER_SIZE {
            return None;
        }
        Some(BatchHeader {
            base_offset: be_i64(b, OFF_BASE_OFFSET),
            batch_length: be_i32(b, OFF_LENGTH),
            partition_leader_epoch: be_i32(b, OFF_LEADER_EPOCH),
            magic: b[OFF_MAGIC] as i8,
            crc: be_u32(b, OFF_CRC),
            attributes: be_i16(b, OFF_ATTRIBUTES),
            last_offset_delta: be_i32(b, OFF_LAST_OFFSET_DELTA),
            base_timestamp: be_i64(b, OFF_BASE_TIMESTAMP),
            max_timestamp: be_i64(b, OFF_MAX_TIMESTAMP),
            producer_id: be_i64(b, OFF_PRODUCER_ID),
            producer_epoch: be_i16(b, OFF_PRODUCER_EPOCH),
            base_sequence: be_i32(b, OFF_BASE_SEQUENCE),
            record_count: be_i32(b, OFF_RECORD_COUNT),
        })
    }

    /// Total size of the batch on disk, header included.
    /// (A negative length, possible only in unvalidated bytes, counts as zero.)
    pub fn total_size(&self) -> usize {
        self.batch_length.max(0) as usize + LOG_OVERHEAD
    }

    /// Offset of the last record the batch covers.
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(self.last_offset_delta as i64)
    }

    /// Offset just past the batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset().saturating_add(1)
    }

    /// Compression codec id (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression(&self) -> u8 {
        (self.attributes & ATTR_COMPRESSION_MASK) as u8
    }

    /// Whether this is a control batch (transaction markers).
    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    /// Whether this batch belongs to a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }
}

/// What the validator learned about one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidBatch {
    /// Byte position of the batch in the validated buffer.
    pub position: usize,
    /// Its header.
    pub header: BatchHeader,
}

/// How strict validation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Fresh batches from a producer: the record count must equal `last_offset_delta + 1`.
    Client,
    /// Batches copied from another log (a replica, or the cleaner): gaps left by compaction are
    /// allowed, offsets are kept as given.
    Replica,
}

/// Parses the length prefix of the batch at `pos` in `buf` and returns its total size, or `None`
/// if fewer than [`LOG_OVERHEAD`] bytes remain.
pub fn peek_size(buf: &[u8], pos: usize) -> Option<i64> {
    if buf.len() < pos + LOG_OVERHEAD {
        return None;
    }
    Some(be_i32(buf, pos + OFF_LENGTH) as i64 + LOG_OVERHEAD as i64)
}

/// Length of the prefix of `buf` made of whole batches (by their length fields): a fetch may
/// end with a partial batch, which a replica drops and fetches again.
pub fn whole_batches_len(buf: &[u8]) -> usize {
    let mut pos = 0usize;
    while let Some(size) = peek_size(buf, pos) {
        if size < LOG_OVERHEAD as i64 || pos as i64 + size > buf.len() as i64 {
            break;
        }
        pos += size as usize;
    }
    pos
}

/// Validates the single batch that starts at `buf[pos..]`: length, magic, CRC-32C and the record
/// count. Returns the header, or an error naming what is wrong. Never panics, whatever the bytes.
pub fn validate_one(buf: &[u8], pos: usize, origin: Origin) -> Result<ValidBatch> {
    let rest = buf.get(pos..).unwrap_or_default();
    if rest.len() < HEADER_SIZE {
        return Err(Error::invalid(
            pos,
            format!(
                "{} bytes left, a batch header needs {HEADER_SIZE}",
                rest.len()
            ),
        ));
    }
    let batch_length = be_i32(rest, OFF_LENGTH);
    if batch_length < (HEADER_SIZE - LOG_OVERHEAD) as i32 {
        return Err(Error::invalid(
            pos,
            format!("batch length {batch_length} is smaller than a header"),
        ));
    }
    let total = batch_length as usize + LOG_OVERHEAD;
    if total > rest.len() {
        return Err(Error::invalid(
            pos,
            format!(
                "batch length says {total} bytes but only {} are present",
                rest.len()
            ),
        ));
    }
    let magic = rest[OFF_MAGIC] as i8;
    if magic != MAGIC_V2 {
        return Err(Error::invalid(
            pos,
            format!("magic {magic} is not supported (only record batch v2)"),
        ));
    }
    let stored = be_u32(rest, OFF_CRC);
    let computed = crc32c::crc32c(&rest[OFF_ATTRIBUTES..total]);
    if stored != computed {
        return Err(Error::invalid(
            pos,
            format!("CRC-32C mismatch: stored {stored:#010x}, computed {computed:#010x}"),
        ));
    }
    let header = BatchHeader::parse(rest).ok_or_else(|| Error::invalid(pos, "short header"))?;
    if header.last_offset_delta < 0 {
        return Err(Error::invalid(
            pos,
            format!("negative last offset delta {}", header.last_offset_delta),
        ));
    }
    if header.record_count < 0 {
        return Err(Error::invalid(
            pos,
            format!("negative record count {}", header.record_count),
        ));
    }
    let span = header.last_offset_delta as i64 + 1;
    match origin {
        Origin::Client if header.record_count as i64 != span => {
            return Err(Error::invalid(
                pos,
                format!(
                    "record count {} does not match last offset delta {}",
                    header.record_count, header.last_offset_delta
                ),
            ))
        }
        Origin::Replica if header.record_count as i64 > span => {
            return Err(Error::invalid(
                pos,
                format!(
                    "record count {} exceeds the {span} offsets the batch spans",
                    header.record_count
                ),
            ))
        }
        Origin::Replica
            if header.base_offset < 0 || header.base_offset.checked_add(span).is_none() =>
        {
            return Err(Error::invalid(
                pos,
                format!("base offset {} is out of range", header.base_offset),
            ))
        }
        _ => {}
    }
    if header.compression() > 4 {
        return Err(Error::invalid(
            pos,
            format!("unknown compression codec {}", header.compression()),
        ));
    }
    if origin == Origin::Client && header.record_count == 0 && !header.is_control() {
        return Err(Error::invalid(
            pos,
            "a batch from a producer holds no records",
        ));
    }
    Ok(ValidBatch {
        position: pos,
        header,
    })
}

/// Validates every batch in `buf` (one produce request's records for one partition) and returns
/// their positions and headers. The buffer must consist of whole batches only.
pub fn validate_all(buf: &[u8], origin: Origin) -> Result<Vec<ValidBatch>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let b = validate_one(buf, pos, origin)?;
        pos += b.header.total_size();
        out.push(b);
    }
    if out.is_empty() {
        return Err(Error::invalid(0, "no record batch in an empty append"));
    }
    Ok(out)
}

/// Writes `base_offset` and `partition_leader_epoch` into the header at `buf[pos..]`.
/// Neither is covered by the CRC.
pub fn assign(buf: &mut [u8], pos: usize, base_offset: i64, leader_epoch: i32) {
    buf[pos + OFF_BASE_OFFSET..pos + OFF_BASE_OFFSET + 8]
        .copy_from_slice(&base_offset.to_be_bytes());
    buf[pos + OFF_LEADER_EPOCH..pos + OFF_LEADER_EPOCH + 4]
        .copy_from_slice(&leader_epoch.to_be_bytes());
}

/// Overwrites `max_timestamp` and sets the log-append-time attribute, then recomputes the CRC
/// (both fields are inside it). Used when a topic is configured with
/// `message.timestamp.type=LogAppendTime`.
pub fn set_log_append_time(buf: &mut [u8], pos: usize, now_ms: i64) {
    let total = be_i32(buf, pos + OFF_LENGTH) as usize + LOG_OVERHEAD;
    let attrs = be_i16(buf, pos + OFF_ATTRIBUTES) | ATTR_LOG_APPEND_TIME;
    buf[pos + OFF_ATTRIBUTES..pos + OFF_ATTRIBUTES + 2].copy_from_slice(&attrs.to_be_bytes());
    buf[pos + OFF_MAX_TIMESTAMP..pos + OFF_MAX_TIMESTAMP + 8]
        .copy_from_slice(&now_ms.to_be_bytes());
    let crc = crc32c::crc32c(&buf[pos + OFF_ATTRIBUTES..pos + total]);
    buf[pos + OFF_CRC..pos + OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{BatchBuilder, Compression, Record};

    fn batch(n: usize) -> Vec<u8> {
        let mut b = BatchBuilder::new(Compression::None);
        for i in 0..n {
            b.push(Record::new(
                Some(format!("k{i}")),
                Some(vec![i as u8; 10]),
                1000 + i as i64,
            ));
        }
        b.build().unwrap()
    }

    #[test]
    fn valid_batch_round_trips() {
        let b = batch(3);
        let v = validate_all(&b, Origin::Client).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].header.record_count, 3);
        assert_eq!(v[0].header.last_offset_delta, 2);
        assert_eq!(v[0].header.max_timestamp, 1002);
    }

    #[test]
    fn assigning_offsets_keeps_crc_valid() {
        let mut b = batch(2);
        assign(&mut b, 0, 12345, 7);
        let v = validate_one(&b, 0, Origin::Client).unwrap();
        assert_eq!(v.header.base_offset, 12345);
        assert_eq!(v.header.partition_leader_epoch, 7);
    }

    #[test]
    fn flipped_byte_is_rejected() {
        let b = batch(2);
        for i in OFF_MAGIC..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x40;
            assert!(
                validate_all(&c, Origin::Client).is_err(),
                "flip at {i} accepted"
            );
        }
    }

    #[test]
    fn truncated_batches_are_rejected() {
        let b = batch(2);
        for cut in 0..b.len() {
            assert!(
                validate_all(&b[..cut], Origin::Client).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn log_append_time_rewrites_crc() {
        let mut b = batch(2);
        set_log_append_time(&mut b, 0, 99);
        let v = validate_one(&b, 0, Origin::Client).unwrap();
        assert_eq!(v.header.max_timestamp, 99);
        assert_ne!(v.header.attributes & ATTR_LOG_APPEND_TIME, 0);
    }
}
