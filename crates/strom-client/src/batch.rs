//! Building and reading Kafka v2 record batches on the client side.
//!
//! The producer appends records to an [`OpenBatch`] as they are sent (so its size is exact), and
//! the batch is compressed and given its header only when it is sent, off the `send` path.

use bytes::Bytes;
use strom_log::record::put_varlong;
use strom_log::Compression;

use crate::error::{Error, Result};
use crate::types::{ConsumerRecord, Header};

/// Size of the fixed v2 batch header.
pub const HEADER_SIZE: usize = 61;
const ATTR_LOG_APPEND_TIME: i16 = 0x08;

/// Producer identity written into a batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerStamp {
    /// Producer id (-1 without idempotence).
    pub id: i64,
    /// Producer epoch.
    pub epoch: i16,
    /// Sequence of the batch's first record (-1 without idempotence).
    pub base_sequence: i32,
}

impl ProducerStamp {
    /// A plain, non-idempotent producer.
    pub const NONE: ProducerStamp = ProducerStamp {
        id: -1,
        epoch: -1,
        base_sequence: -1,
    };
}

/// Records of one partition being collected into a batch (uncompressed record bodies).
#[derive(Debug)]
pub struct OpenBatch {
    body: Vec<u8>,
    count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
}

/// Bytes a record adds to a batch at most, before compression (for buffer accounting).
pub fn record_size_bound(key: Option<&[u8]>, value: Option<&[u8]>, headers: &[Header]) -> usize {
    let h: usize = headers
        .iter()
        .map(|h| h.key.len() + h.value.as_ref().map_or(0, |v| v.len()) + 10)
        .sum();
    key.map_or(0, |k| k.len()) + value.map_or(0, |v| v.len()) + h + 5 + 1 + 10 + 5 + 5 + 5 + 5
}

/// Bytes `put_varlong` writes for `v` (zig-zag varint).
fn varlong_len(v: i64) -> usize {
    let z = ((v << 1) ^ (v >> 63)) as u64;
    (64 - (z | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_bytes(out: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        None => put_varlong(out, -1),
        Some(v) => {
            put_varlong(out, v.len() as i64);
            out.extend_from_slice(v);
        }
    }
}

impl OpenBatch {
    /// An empty batch whose first record will have `timestamp`.
    pub fn new(timestamp: i64, capacity: usize) -> Self {
        OpenBatch {
            body: Vec::with_capacity(capacity),
            count: 0,
            base_timestamp: timestamp,
            max_timestamp: timestamp,
        }
    }

    /// Appends one record, encoded straight into the batch body.
    pub fn push(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
    ) {
        let ts_delta = timestamp.wrapping_sub(self.base_timestamp);
        let offset_delta = self.count as i64;
        let field =
            |v: Option<&[u8]>| v.map_or(varlong_len(-1), |v| varlong_len(v.len() as i64) + v.len());
        let mut len =
            1 + varlong_len(ts_delta) + varlong_len(offset_delta) + field(key) + field(value);
        len += varlong_len(headers.len() as i64);
        for h in headers {
            len += field(Some(h.key.as_bytes())) + field(h.value.as_deref());
        }
        self.body.reserve(len + 5);
        put_varlong(&mut self.body, len as i64);
        self.body.push(0); // attributes
        put_varlong(&mut self.body, ts_delta);
        put_varlong(&mut self.body, offset_delta);
        put_bytes(&mut self.body, key);
        put_bytes(&mut self.body, value);
        put_varlong(&mut self.body, headers.len() as i64);
        for h in headers {
            put_bytes(&mut self.body, Some(h.key.as_bytes()));
            put_bytes(&mut self.body, h.value.as_deref());
        }
        self.count += 1;
        self.max_timestamp = self.max_timestamp.max(timestamp);
    }

    /// Records so far.
    pub fn count(&self) -> i32 {
        self.count
    }

    /// Uncompressed bytes so far, header included.
    pub fn size(&self) -> usize {
        HEADER_SIZE + self.body.len()
    }

    /// Compresses the records and prepends the header.
    pub fn encode(&self, compression: Compression, stamp: ProducerStamp) -> Result<Bytes> {
        let records =
            match compression {
                Compression::None => None,
                c => Some(c.compress(&self.body).map_err(|e| {
                    Error::Internal(format!("{} compression failed: {e}", c.name()))
                })?),
            };
        let records: &[u8] = records.as_deref().unwrap_or(&self.body);
        let mut out = Vec::with_capacity(HEADER_SIZE + records.len());
        out.extend_from_slice(&0i64.to_be_bytes()); // base offset: the broker assigns it
        out.extend_from_slice(&((HEADER_SIZE - 12 + records.len()) as i32).to_be_bytes());
        out.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
        out.push(2); // magic
        out.extend_from_slice(&[0; 4]); // crc, below
        out.extend_from_slice(&(compression.id() as i16).to_be_bytes());
        out.extend_from_slice(&(self.count - 1).to_be_bytes());
        out.extend_from_slice(&self.base_timestamp.to_be_bytes());
        out.extend_from_slice(&self.max_timestamp.to_be_bytes());
        out.extend_from_slice(&stamp.id.to_be_bytes());
        out.extend_from_slice(&stamp.epoch.to_be_bytes());
        out.extend_from_slice(&stamp.base_sequence.to_be_bytes());
        out.extend_from_slice(&self.count.to_be_bytes());
        out.extend_from_slice(records);
        let crc = crc32c::crc32c(&out[21..]);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        Ok(Bytes::from(out))
    }
}

/// Rewrites the producer id, epoch and base sequence of an encoded batch (and its CRC).
pub fn restamp(batch: &Bytes, stamp: ProducerStamp) -> Bytes {
    let mut out = batch.to_vec();
    if out.len() >= HEADER_SIZE {
        out[43..51].copy_from_slice(&stamp.id.to_be_bytes());
        out[51..53].copy_from_slice(&stamp.epoch.to_be_bytes());
        out[53..57].copy_from_slice(&stamp.base_sequence.to_be_bytes());
        let crc = crc32c::crc32c(&out[21..]);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
    }
    Bytes::from(out)
}

/// Decodes the batches in a fetched `records` field into consumer records with offsets of at
/// least `from`. Control batches are skipped; a trailing partial batch (the broker may cut one
/// off at the size limit) is ignored. Returns the records and the offset after the last whole
/// batch seen.
pub fn decode_fetched(
    topic: &str,
    partition: i32,
    data: &Bytes,
    from: i64,
) -> Result<(Vec<ConsumerRecord>, Option<i64>)> {
    decode_fetched_with(topic, partition, data, from, None)
}

/// As [`decode_fetched`]; with `aborted` (`isolation.level=read_committed`: the fetch response's
/// aborted transactions as (producer id, first offset)), records of aborted transactions are
/// dropped too. A producer's transaction counts as aborted from its first offset until the
/// producer's ABORT marker.
pub fn decode_fetched_with(
    topic: &str,
    partition: i32,
    data: &Bytes,
    from: i64,
    aborted: Option<&[(i64, i64)]>,
) -> Result<(Vec<ConsumerRecord>, Option<i64>)> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    let mut next = None;
    let mut pending: Vec<(i64, i64)> = aborted.map(<[_]>::to_vec).unwrap_or_default();
    pending.sort_by_key(|&(_, first)| std::cmp::Reverse(first));
    let mut aborting: std::collections::HashSet<i64> = std::collections::HashSet::new();
    while data.len() - pos >= HEADER_SIZE {
        let len =
            i32::from_be_bytes([data[pos + 8], data[pos + 9], data[pos + 10], data[pos + 11]]);
        if len < (HEADER_SIZE - 12) as i32 {
            return Err(Error::Protocol(format!(
                "{topic}-{partition}: batch length {len} too small"
            )));
        }
        let end = pos + 12 + len as usize;
        if end > data.len() {
            break; // partial batch at the end of the response
        }
        let batch = &data[pos..end];
        if batch[16] != 2 {
            return Err(Error::Protocol(format!(
                "{topic}-{partition}: record batch magic {} is not supported (only v2)",
                batch[16]
            )));
        }
        let crc = u32::from_be_bytes([batch[17], batch[18], batch[19], batch[20]]);
        if crc32c::crc32c(&batch[21..]) != crc {
            return Err(Error::Protocol(format!(
                "{topic}-{partition}: corrupt record batch at byte {pos} (CRC mismatch)"
            )));
        }
        let (header, records) = strom_log::record::decode_records(batch)
            .map_err(|e| Error::Protocol(format!("{topic}-{partition}: {e}")))?;
        next = Some(header.next_offset());
        while pending
            .last()
            .is_some_and(|&(_, first)| first <= header.last_offset())
        {
            if let Some((pid, _)) = pending.pop() {
                aborting.insert(pid);
            }
        }
        if header.is_control() {
            // An ABORT marker (control key: version i16, type i16 = 0) ends the aborted span.
            let is_abort = records
                .first()
                .and_then(|r| r.key.as_deref())
                .is_some_and(|k| k.len() >= 4 && k[2..4] == [0, 0]);
            if is_abort {
                aborting.remove(&header.producer_id);
            }
        } else if header.is_transactional() && aborting.contains(&header.producer_id) {
            // Part of an aborted transaction: never delivered under read_committed.
        } else {
            let log_append = header.attributes & ATTR_LOG_APPEND_TIME != 0;
            for r in records.into_iter().filter(|r| r.offset >= from) {
                out.push(ConsumerRecord {
                    topic: topic.to_string(),
                    partition,
                    offset: r.offset,
                    timestamp: if log_append {
                        header.max_timestamp
                    } else {
                        r.timestamp
                    },
                    log_append_time: log_append,
                    key: r.key,
                    value: r.value,
                    headers: r
                        .headers
                        .into_iter()
                        .map(|h| Header {
                            key: h.key,
                            value: h.value,
                        })
                        .collect(),
                    leader_epoch: header.partition_leader_epoch,
                });
            }
        }
        pos = end;
    }
    Ok((out, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_batches_decode_with_every_codec() {
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let mut b = OpenBatch::new(1000, 0);
            b.push(1000, Some(b"k1"), Some(b"v1"), &[]);
            b.push(
                999,
                None,
                Some(b"v2"),
                &[Header {
                    key: "h".into(),
                    value: Some(Bytes::from_static(b"x")),
                }],
            );
            b.push(1005, Some(b"k3"), None, &[]);
            let bytes = b
                .encode(
                    c,
                    ProducerStamp {
                        id: 7,
                        epoch: 1,
                        base_sequence: 40,
                    },
                )
                .unwrap();
            strom_log::batch::validate_one(&bytes, 0, strom_log::Origin::Client).unwrap();
            let (recs, next) = decode_fetched("t", 0, &bytes, 1).unwrap();
            assert_eq!(next, Some(3));
            assert_eq!(recs.len(), 2, "offset 0 is below `from`");
            assert_eq!(recs[0].timestamp, 999);
            assert_eq!(recs[0].headers[0].key, "h");
            assert_eq!(recs[1].value, None);
            let restamped = restamp(
                &bytes,
                ProducerStamp {
                    id: 8,
                    epoch: 2,
                    base_sequence: 90,
                },
            );
            let h = strom_log::BatchHeader::parse(&restamped).unwrap();
            assert_eq!(
                (h.producer_id, h.producer_epoch, h.base_sequence),
                (8, 2, 90)
            );
            strom_log::batch::validate_one(&restamped, 0, strom_log::Origin::Client).unwrap();
        }
    }

    fn txn_batch(pid: i64, control: Option<i16>, value: &str) -> Vec<u8> {
        let mut b = OpenBatch::new(1, 0);
        match control {
            Some(kind) => {
                let mut key = 0i16.to_be_bytes().to_vec();
                key.extend_from_slice(&kind.to_be_bytes());
                b.push(1, Some(&key), Some(&[0, 0, 0, 0, 0, 0]), &[]);
            }
            None => b.push(1, None, Some(value.as_bytes()), &[]),
        }
        let mut out = b
            .encode(
                Compression::None,
                ProducerStamp {
                    id: pid,
                    epoch: 0,
                    base_sequence: 0,
                },
            )
            .unwrap()
            .to_vec();
        // transactional (0x10), control (0x20)
        let attrs = 0x10 | if control.is_some() { 0x20 } else { 0 };
        out[21..23].copy_from_slice(&(attrs as i16).to_be_bytes());
        let crc = crc32c::crc32c(&out[21..]);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        out
    }

    #[test]
    fn read_committed_drops_aborted_transactions() {
        // Offsets: 0 p7 "a1", 1 p8 "c1", 2 p7 ABORT, 3 p8 COMMIT, 4 p7 "a2" (a new transaction).
        let mut data = Vec::new();
        for (i, (pid, control, v)) in [
            (7, None, "a1"),
            (8, None, "c1"),
            (7, Some(0), ""),
            (8, Some(1), ""),
            (7, None, "a2"),
        ]
        .into_iter()
        .enumerate()
        {
            let mut b = txn_batch(pid, control, v);
            b[..8].copy_from_slice(&(i as i64).to_be_bytes());
            data.extend_from_slice(&b);
        }
        let data = Bytes::from(data);
        let values = |aborted: Option<&[(i64, i64)]>| {
            let (recs, next) = decode_fetched_with("t", 0, &data, 0, aborted).unwrap();
            assert_eq!(next, Some(5));
            recs.iter()
                .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            values(None),
            ["a1", "c1", "a2"],
            "read_uncommitted sees everything but markers"
        );
        assert_eq!(
            values(Some(&[(7, 0)])),
            ["c1", "a2"],
            "the aborted span ends at its marker"
        );
    }

    #[test]
    fn varlong_len_matches_the_encoder() {
        for v in [
            0i64,
            1,
            -1,
            63,
            64,
            -64,
            -65,
            8191,
            8192,
            i32::MAX as i64,
            i64::MAX,
            i64::MIN,
        ] {
            let mut out = Vec::new();
            put_varlong(&mut out, v);
            assert_eq!(varlong_len(v), out.len(), "{v}");
        }
    }

    #[test]
    fn partial_trailing_batch_is_ignored_and_corruption_is_reported() {
        let mut b = OpenBatch::new(5, 0);
        b.push(5, None, Some(b"abc"), &[]);
        let one = b.encode(Compression::None, ProducerStamp::NONE).unwrap();
        let mut two = one.to_vec();
        two.extend_from_slice(&one[..30]);
        let (recs, next) = decode_fetched("t", 0, &Bytes::from(two), 0).unwrap();
        assert_eq!((recs.len(), next), (1, Some(1)));
        let mut bad = one.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(decode_fetched("t", 0, &Bytes::from(bad), 0).is_err());
    }
}
