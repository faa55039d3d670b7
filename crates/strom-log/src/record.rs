//! Records inside a v2 batch: zig-zag varints, compression codecs, a record iterator and a batch
//! builder.
//!
//! The log itself never needs records to store or serve batches; it opens them only to answer a
//! lookup by timestamp inside a batch and to compact by key. Producers (tests, the benchmark, and
//! later the client crate) use [`BatchBuilder`].

use std::io::{Read, Write};

use bytes::Bytes;

use crate::batch::{self, BatchHeader, HEADER_SIZE, MAGIC_V2};
use crate::error::{Error, Result};

/// Compression codec of a batch's records section (attribute bits 0-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Stored as is.
    None,
    /// gzip (RFC 1952).
    Gzip,
    /// Snappy; written in the xerial framing Java clients use, read in either framing.
    Snappy,
    /// LZ4 frame format.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl Compression {
    /// The codec for attribute value `id`.
    pub fn from_id(id: u8) -> Result<Self> {
        Ok(match id {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            _ => {
                return Err(Error::Compression {
                    codec: "unknown",
                    reason: format!("codec id {id}"),
                })
            }
        })
    }

    /// The attribute value for this codec.
    pub fn id(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// Kafka's name for the codec (`compression.type`).
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }

    /// Every codec, for tests and benchmarks.
    pub const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    fn err(self, e: impl std::fmt::Display) -> Error {
        Error::Compression {
            codec: self.name(),
            reason: e.to_string(),
        }
    }

    /// Compresses `data`.
    pub fn compress(self, data: &[u8]) -> Result<Vec<u8>> {
        match self {
            Compression::None => Ok(data.to_vec()),
            Compression::Gzip => {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                enc.write_all(data).map_err(|e| self.err(e))?;
                enc.finish().map_err(|e| self.err(e))
            }
            Compression::Snappy => {
                let mut out = Vec::with_capacity(data.len() / 2 + 32);
                out.extend_from_slice(&XERIAL_HEADER);
                let mut enc = snap::raw::Encoder::new();
                for chunk in data.chunks(XERIAL_BLOCK) {
                    let block = enc.compress_vec(chunk).map_err(|e| self.err(e))?;
                    out.extend_from_slice(&(block.len() as u32).to_be_bytes());
                    out.extend_from_slice(&block);
                }
                Ok(out)
            }
            Compression::Lz4 => {
                let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
                enc.write_all(data).map_err(|e| self.err(e))?;
                enc.finish().map_err(|e| self.err(e))
            }
            Compression::Zstd => zstd::bulk::compress(data, 3).map_err(|e| self.err(e)),
        }
    }

    /// Decompresses `data`, refusing to produce more than `limit` bytes.
    pub fn decompress(self, data: &[u8], limit: usize) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let read_limited = |r: &mut dyn Read, out: &mut Vec<u8>| -> Result<()> {
            r.take(limit as u64 + 1)
                .read_to_end(out)
                .map_err(|e| self.err(e))?;
            Ok(())
        };
        match self {
            Compression::None => out.extend_from_slice(data),
            Compression::Gzip => read_limited(&mut flate2::read::GzDecoder::new(data), &mut out)?,
            Compression::Snappy => {
                let mut dec = snap::raw::Decoder::new();
                if data.starts_with(&XERIAL_HEADER[..8]) && data.len() >= XERIAL_HEADER.len() {
                    let mut pos = XERIAL_HEADER.len();
                    while pos < data.len() {
                        let len_bytes = data
                            .get(pos..pos + 4)
                            .ok_or_else(|| self.err("truncated xerial block length"))?;
                        let len = batch::be_u32(len_bytes, 0) as usize;
                        pos += 4;
                        let block = data
                            .get(pos..pos.saturating_add(len))
                            .ok_or_else(|| self.err("truncated xerial block"))?;
                        pos += len;
                        let n = snap::raw::decompress_len(block).map_err(|e| self.err(e))?;
                        if out.len() + n > limit {
                            return Err(self.err("decompressed size exceeds the limit"));
                        }
                        out.extend_from_slice(&dec.decompress_vec(block).map_err(|e| self.err(e))?);
                    }
                } else {
                    let n = snap::raw::decompress_len(data).map_err(|e| self.err(e))?;
                    if n > limit {
                        return Err(self.err("decompressed size exceeds the limit"));
                    }
                    out = dec.decompress_vec(data).map_err(|e| self.err(e))?;
                }
            }
            Compression::Lz4 => {
                read_limited(&mut lz4_flex::frame::FrameDecoder::new(data), &mut out)?
            }
            Compression::Zstd => {
                let mut dec = zstd::stream::read::Decoder::new(data).map_err(|e| self.err(e))?;
                read_limited(&mut dec, &mut out)?
            }
        }
        if out.len() > limit {
            return Err(self.err("decompressed size exceeds the limit"));
        }
        Ok(out)
    }
}

/// The xerial snappy-java stream header: magic, version 1, compatible version 1.
const XERIAL_HEADER: [u8; 16] = [
    0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0, 0, 0, 0, 1, 0, 0, 0, 1,
];
const XERIAL_BLOCK: usize = 32 * 1024;

/// Upper bound on a decompressed records section, against decompression bombs.
pub const MAX_DECOMPRESSED: usize = 256 * 1024 * 1024;

/// One record header (key, optional value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header key.
    pub key: String,
    /// Header value; `None` is a null value.
    pub value: Option<Bytes>,
}

/// One record as decoded from a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Absolute offset (`base_offset + offset_delta`); 0-based delta before the batch is stored.
    pub offset: i64,
    /// Absolute timestamp in milliseconds.
    pub timestamp: i64,
    /// Key, or `None` for a null key.
    pub key: Option<Bytes>,
    /// Value, or `None` for a tombstone.
    pub value: Option<Bytes>,
    /// Record headers in order.
    pub headers: Vec<Header>,
}

impl Record {
    /// A record with the given key, value and timestamp and no headers.
    pub fn new(
        key: Option<impl Into<Bytes>>,
        value: Option<impl Into<Bytes>>,
        timestamp: i64,
    ) -> Self {
        Record {
            offset: 0,
            timestamp,
            key: key.map(Into::into),
            value: value.map(Into::into),
            headers: Vec::new(),
        }
    }
}

// ---- varints --------------------------------------------------------------------------------

/// Appends `v` zig-zag encoded as a varint.
pub fn put_varlong(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Reads a zig-zag varint (up to 10 bytes) at `*pos`, advancing it.
pub fn get_varlong(b: &[u8], pos: &mut usize) -> Option<i64> {
    let mut z: u64 = 0;
    for i in 0..10 {
        let byte = *b.get(*pos)?;
        *pos += 1;
        z |= ((byte & 0x7f) as u64) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(((z >> 1) as i64) ^ -((z & 1) as i64));
        }
    }
    None
}

fn get_varint(b: &[u8], pos: &mut usize) -> Option<i32> {
    get_varlong(b, pos).and_then(|v| i32::try_from(v).ok())
}

fn get_nullable(b: &Bytes, pos: &mut usize) -> Option<Option<Bytes>> {
    let len = get_varint(b, pos)?;
    if len < 0 {
        return Some(None);
    }
    let end = pos.checked_add(len as usize)?;
    if end > b.len() {
        return None;
    }
    let v = b.slice(*pos..end);
    *pos = end;
    Some(Some(v))
}

fn put_nullable(out: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        None => put_varlong(out, -1),
        Some(v) => {
            put_varlong(out, v.len() as i64);
            out.extend_from_slice(v);
        }
    }
}

/// A record borrowed from a batch: what [`visit_records`] hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// Absolute offset.
    pub offset: i64,
    /// Absolute timestamp in milliseconds.
    pub timestamp: i64,
    /// Key, or `None` for a null key.
    pub key: Option<&'a [u8]>,
    /// Value, or `None` for a tombstone.
    pub value: Option<&'a [u8]>,
}

fn get_nullable_slice<'a>(b: &'a [u8], pos: &mut usize) -> Option<Option<&'a [u8]>> {
    let len = get_varint(b, pos)?;
    if len < 0 {
        return Some(None);
    }
    let end = pos.checked_add(len as usize)?;
    let v = b.get(*pos..end)?;
    *pos = end;
    Some(Some(v))
}

/// Calls `f` with every record of the batch in `batch_bytes` (whole batch, header included)
/// without copying keys or values out of it (an uncompressed batch is read in place, a
/// compressed one is decompressed once); headers are skipped. Checks what
/// [`decode_records`] checks and returns the batch header.
pub fn visit_records(batch_bytes: &[u8], mut f: impl FnMut(RecordView<'_>)) -> Result<BatchHeader> {
    let header =
        BatchHeader::parse(batch_bytes).ok_or_else(|| Error::invalid(0, "short batch header"))?;
    if (header.batch_length as i64) < (HEADER_SIZE - batch::LOG_OVERHEAD) as i64 {
        return Err(Error::invalid(0, "batch length smaller than a header"));
    }
    let end = header.total_size().min(batch_bytes.len());
    let raw = batch_bytes.get(HEADER_SIZE..end).unwrap_or_default();
    let codec = Compression::from_id(header.compression())?;
    let owned;
    let body: &[u8] = match codec {
        Compression::None => raw,
        c => {
            owned = c.decompress(raw, MAX_DECOMPRESSED)?;
            &owned
        }
    };
    let bad = |what: &str| Error::invalid(0, format!("malformed record in batch: {what}"));
    let mut pos = 0usize;
    for _ in 0..header.record_count {
        let len = get_varint(body, &mut pos).ok_or_else(|| bad("length"))?;
        let rec_end = pos
            .checked_add(usize::try_from(len).map_err(|_| bad("negative length"))?)
            .filter(|&e| e <= body.len())
            .ok_or_else(|| bad("length past the end"))?;
        pos += 1; // attributes, unused in v2
        let ts_delta = get_varlong(body, &mut pos).ok_or_else(|| bad("timestamp delta"))?;
        let off_delta = get_varint(body, &mut pos).ok_or_else(|| bad("offset delta"))?;
        let key = get_nullable_slice(body, &mut pos).ok_or_else(|| bad("key"))?;
        let value = get_nullable_slice(body, &mut pos).ok_or_else(|| bad("value"))?;
        let n_headers = get_varint(body, &mut pos).ok_or_else(|| bad("header count"))?;
        for _ in 0..n_headers.max(0) {
            get_nullable_slice(body, &mut pos)
                .flatten()
                .ok_or_else(|| bad("header key"))?;
            get_nullable_slice(body, &mut pos).ok_or_else(|| bad("header value"))?;
        }
        if pos != rec_end {
            return Err(bad("record length disagrees with its fields"));
        }
        let offset = header
            .base_offset
            .checked_add(off_delta as i64)
            .ok_or_else(|| bad("offset overflows"))?;
        f(RecordView {
            offset,
            timestamp: header.base_timestamp.wrapping_add(ts_delta),
            key,
            value,
        });
    }
    Ok(header)
}

/// Decodes every record of the batch in `batch` (whole batch bytes, header included).
/// The batch is assumed CRC-valid; malformed records still yield an error, never a panic.
pub fn decode_records(batch_bytes: &[u8]) -> Result<(BatchHeader, Vec<Record>)> {
    let header =
        BatchHeader::parse(batch_bytes).ok_or_else(|| Error::invalid(0, "short batch header"))?;
    if (header.batch_length as i64) < (HEADER_SIZE - batch::LOG_OVERHEAD) as i64 {
        return Err(Error::invalid(0, "batch length smaller than a header"));
    }
    let end = header.total_size().min(batch_bytes.len());
    let raw = batch_bytes.get(HEADER_SIZE..end).unwrap_or_default();
    let codec = Compression::from_id(header.compression())?;
    let body = Bytes::from(codec.decompress(raw, MAX_DECOMPRESSED)?);
    let bad = |what: &str| Error::invalid(0, format!("malformed record in batch: {what}"));
    let mut records = Vec::with_capacity(header.record_count.clamp(0, 4096) as usize);
    let mut pos = 0usize;
    for _ in 0..header.record_count {
        let len = get_varint(&body, &mut pos).ok_or_else(|| bad("length"))?;
        let start = pos;
        let rec_end = start
            .checked_add(usize::try_from(len).map_err(|_| bad("negative length"))?)
            .filter(|&e| e <= body.len())
            .ok_or_else(|| bad("length past the end"))?;
        pos += 1; // attributes, unused in v2
        let ts_delta = get_varlong(&body, &mut pos).ok_or_else(|| bad("timestamp delta"))?;
        let off_delta = get_varint(&body, &mut pos).ok_or_else(|| bad("offset delta"))?;
        let key = get_nullable(&body, &mut pos).ok_or_else(|| bad("key"))?;
        let value = get_nullable(&body, &mut pos).ok_or_else(|| bad("value"))?;
        let n_headers = get_varint(&body, &mut pos).ok_or_else(|| bad("header count"))?;
        let mut headers = Vec::new();
        for _ in 0..n_headers.max(0) {
            let k = get_nullable(&body, &mut pos)
                .flatten()
                .ok_or_else(|| bad("header key"))?;
            let v = get_nullable(&body, &mut pos).ok_or_else(|| bad("header value"))?;
            headers.push(Header {
                key: String::from_utf8_lossy(&k).into_owned(),
                value: v,
            });
        }
        if pos != rec_end {
            return Err(bad("record length disagrees with its fields"));
        }
        let offset = header
            .base_offset
            .checked_add(off_delta as i64)
            .ok_or_else(|| bad("offset overflows"))?;
        records.push(Record {
            offset,
            timestamp: header.base_timestamp.wrapping_add(ts_delta),
            key,
            value,
            headers,
        });
    }
    Ok((header, records))
}

/// Producer identity stamped into a batch header (all -1 for a plain producer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerInfo {
    /// Producer id.
    pub producer_id: i64,
    /// Producer epoch.
    pub producer_epoch: i16,
    /// Sequence number of the first record.
    pub base_sequence: i32,
}

impl Default for ProducerInfo {
    fn default() -> Self {
        ProducerInfo {
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
        }
    }
}

/// Builds one v2 record batch, the way a producer does.
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    compression: Compression,
    producer: ProducerInfo,
    attributes_extra: i16,
    records: Vec<Record>,
    /// Offset deltas to use instead of 0..n (the cleaner keeps the originals).
    deltas: Option<Vec<i32>>,
    last_offset_delta: Option<i32>,
    /// The header's max timestamp when it is not the records' (log-append-time batches).
    max_timestamp: Option<i64>,
    base_offset: i64,
    leader_epoch: i32,
}

impl BatchBuilder {
    /// An empty batch with the given codec.
    pub fn new(compression: Compression) -> Self {
        BatchBuilder {
            compression,
            producer: ProducerInfo::default(),
            attributes_extra: 0,
            records: Vec::new(),
            deltas: None,
            last_offset_delta: None,
            max_timestamp: None,
            base_offset: 0,
            leader_epoch: -1,
        }
    }

    /// Sets the producer id, epoch and base sequence.
    pub fn producer(mut self, info: ProducerInfo) -> Self {
        self.producer = info;
        self
    }

    /// Adds a record.
    pub fn push(&mut self, record: Record) {
        self.records.push(record);
    }

    /// Number of records so far.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no record was added.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Rebuilds a batch from a stored one, keeping its header fields and the absolute offsets of
    /// `records` (used by the cleaner, which drops records but never renumbers them).
    pub(crate) fn like(header: &BatchHeader, records: Vec<Record>) -> Result<Self> {
        let deltas = records
            .iter()
            .map(|r| i32::try_from(r.offset - header.base_offset))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|_| Error::Internal("record offset outside its batch".into()))?;
        Ok(BatchBuilder {
            compression: Compression::from_id(header.compression())?,
            producer: ProducerInfo {
                producer_id: header.producer_id,
                producer_epoch: header.producer_epoch,
                base_sequence: header.base_sequence,
            },
            attributes_extra: header.attributes & !batch::ATTR_COMPRESSION_MASK,
            records,
            deltas: Some(deltas),
            last_offset_delta: Some(header.last_offset_delta),
            max_timestamp: (header.attributes & batch::ATTR_LOG_APPEND_TIME != 0)
                .then_some(header.max_timestamp),
            base_offset: header.base_offset,
            leader_epoch: header.partition_leader_epoch,
        })
    }

    /// Encodes the batch with offset 0 (the log assigns the real one on append).
    pub fn build(&self) -> Result<Vec<u8>> {
        let base_ts = self.records.first().map(|r| r.timestamp).unwrap_or(-1);
        let max_ts = self
            .max_timestamp
            .unwrap_or_else(|| self.records.iter().map(|r| r.timestamp).max().unwrap_or(-1));
        let mut body = Vec::with_capacity(
            self.records
                .iter()
                .map(|r| {
                    24 + r.key.as_ref().map_or(0, |k| k.len())
                        + r.value.as_ref().map_or(0, |v| v.len())
                })
                .sum(),
        );
        let mut rec = Vec::new();
        for (i, r) in self.records.iter().enumerate() {
            rec.clear();
            rec.push(0); // attributes
            put_varlong(&mut rec, r.timestamp.wrapping_sub(base_ts));
            let delta = self.deltas.as_ref().map_or(i as i32, |d| d[i]);
            put_varlong(&mut rec, delta as i64);
            put_nullable(&mut rec, r.key.as_deref());
            put_nullable(&mut rec, r.value.as_deref());
            put_varlong(&mut rec, r.headers.len() as i64);
            for h in &r.headers {
                put_nullable(&mut rec, Some(h.key.as_bytes()));
                put_nullable(&mut rec, h.value.as_deref());
            }
            put_varlong(&mut body, rec.len() as i64);
            body.extend_from_slice(&rec);
        }
        let body = self.compression.compress(&body)?;
        let last_delta = self
            .last_offset_delta
            .unwrap_or(self.records.len().saturating_sub(1) as i32);
        let total = HEADER_SIZE + body.len();
        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(&self.base_offset.to_be_bytes());
        out.extend_from_slice(&((total - 12) as i32).to_be_bytes());
        out.extend_from_slice(&self.leader_epoch.to_be_bytes());
        out.push(MAGIC_V2 as u8);
        out.extend_from_slice(&[0; 4]); // crc, filled below
        let attrs = self.attributes_extra | self.compression.id() as i16;
        out.extend_from_slice(&attrs.to_be_bytes());
        out.extend_from_slice(&last_delta.to_be_bytes());
        out.extend_from_slice(&base_ts.to_be_bytes());
        out.extend_from_slice(&max_ts.to_be_bytes());
        out.extend_from_slice(&self.producer.producer_id.to_be_bytes());
        out.extend_from_slice(&self.producer.producer_epoch.to_be_bytes());
        out.extend_from_slice(&self.producer.base_sequence.to_be_bytes());
        out.extend_from_slice(&(self.records.len() as i32).to_be_bytes());
        out.extend_from_slice(&body);
        let crc = crc32c::crc32c(&out[batch::OFF_ATTRIBUTES..]);
        out[batch::OFF_CRC..batch::OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn varint_edges() {
        for v in [
            0i64,
            1,
            -1,
            63,
            -64,
            64,
            i32::MAX as i64,
            i32::MIN as i64,
            i64::MAX,
            i64::MIN,
        ] {
            let mut b = Vec::new();
            put_varlong(&mut b, v);
            let mut p = 0;
            assert_eq!(get_varlong(&b, &mut p), Some(v));
            assert_eq!(p, b.len());
        }
    }

    fn arb_record() -> impl Strategy<Value = Record> {
        (
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
            -1_000_000i64..1_000_000,
            proptest::collection::vec(
                (
                    "[a-z]{0,5}",
                    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
                ),
                0..3,
            ),
        )
            .prop_map(|(k, v, ts, hs)| Record {
                offset: 0,
                timestamp: 1_700_000_000_000 + ts,
                key: k.map(Bytes::from),
                value: v.map(Bytes::from),
                headers: hs
                    .into_iter()
                    .map(|(key, value)| Header {
                        key,
                        value: value.map(Bytes::from),
                    })
                    .collect(),
            })
    }

    proptest! {
        #[test]
        fn batches_round_trip_with_every_codec(
            records in proptest::collection::vec(arb_record(), 1..20),
            codec in 0u8..5,
        ) {
            let codec = Compression::from_id(codec).unwrap();
            let mut b = BatchBuilder::new(codec);
            for r in &records { b.push(r.clone()); }
            let bytes = b.build().unwrap();
            let v = batch::validate_all(&bytes, batch::Origin::Client).unwrap();
            prop_assert_eq!(v.len(), 1);
            let (h, decoded) = decode_records(&bytes).unwrap();
            prop_assert_eq!(h.compression(), codec.id());
            let mut expect = records.clone();
            for (i, r) in expect.iter_mut().enumerate() { r.offset = i as i64; }
            prop_assert_eq!(&decoded, &expect);
            // The borrowing visitor sees the same records.
            let mut seen = Vec::new();
            visit_records(&bytes, |r| {
                seen.push((r.offset, r.timestamp, r.key.map(<[u8]>::to_vec), r.value.map(<[u8]>::to_vec)))
            })
            .unwrap();
            let want: Vec<_> = expect
                .iter()
                .map(|r| (r.offset, r.timestamp, r.key.as_ref().map(|b| b.to_vec()), r.value.as_ref().map(|b| b.to_vec())))
                .collect();
            prop_assert_eq!(seen, want);
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_records(&bytes);
            let _ = visit_records(&bytes, |_| {});
            let _ = batch::validate_all(&bytes, batch::Origin::Replica);
        }
    }

    #[test]
    fn snappy_reads_raw_and_xerial() {
        let data = b"hello hello hello hello".repeat(100);
        let raw = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        assert_eq!(Compression::Snappy.decompress(&raw, 1 << 20).unwrap(), data);
        let framed = Compression::Snappy.compress(&data).unwrap();
        assert_eq!(
            Compression::Snappy.decompress(&framed, 1 << 20).unwrap(),
            data
        );
    }

    #[test]
    fn decompression_is_bounded() {
        let data = vec![0u8; 1 << 20];
        for c in Compression::ALL {
            let z = c.compress(&data).unwrap();
            assert!(c.decompress(&z, 1000).is_err(), "{c:?}");
        }
    }
}

#[cfg(test)]
mod regressions {
    use super::*;

    fn one_batch() -> Vec<u8> {
        let mut b = BatchBuilder::new(Compression::None);
        b.push(Record::new(Some("k"), Some("v"), 1000));
        b.push(Record::new(Some("k"), Some("w"), 1001));
        b.build().expect("build")
    }

    /// Found by the fuzzer: a negative batch length overflowed `total_size`.
    #[test]
    fn negative_batch_length_is_an_error_not_a_panic() {
        let mut b = one_batch();
        b[8..12].copy_from_slice(&(-1i32).to_be_bytes());
        assert!(decode_records(&b).is_err());
        assert!(batch::validate_all(&b, batch::Origin::Replica).is_err());
    }

    /// A CRC-valid batch whose base offset (outside the CRC) is near `i64::MAX`.
    #[test]
    fn base_offset_near_the_top_is_refused_not_overflowed() {
        let mut b = one_batch();
        batch::assign(&mut b, 0, i64::MAX - 1, 0);
        assert!(batch::validate_all(&b, batch::Origin::Replica).is_err());
        batch::assign(&mut b, 0, i64::MAX, 0);
        assert!(
            decode_records(&b).is_err(),
            "offset of the second record overflows"
        );
        batch::assign(&mut b, 0, -5, 0);
        assert!(batch::validate_all(&b, batch::Origin::Replica).is_err());
    }
}
