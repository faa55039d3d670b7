//! Feeds arbitrary bytes to the record-batch validator and the record decoder.
//!
//! Both promise never to panic, whatever the bytes. When validation succeeds, the batches it
//! returns must tile the input exactly and satisfy the checks the validator claims to make.

#![no_main]

use libfuzzer_sys::fuzz_target;
use strom_log::batch::{self, Origin, HEADER_SIZE, LOG_OVERHEAD, MAGIC_V2};
use strom_log::record;

fn check(data: &[u8], origin: Origin) {
    let Ok(batches) = batch::validate_all(data, origin) else {
        return;
    };
    assert!(!batches.is_empty(), "validate_all accepted no batch");
    let mut pos = 0usize;
    let mut sum = 0usize;
    for v in &batches {
        let h = &v.header;
        assert_eq!(v.position, pos, "batches must be contiguous");
        assert_eq!(h.magic, MAGIC_V2);
        assert!(h.batch_length >= (HEADER_SIZE - LOG_OVERHEAD) as i32);
        let size = h.total_size();
        assert!(size >= HEADER_SIZE);
        assert!(pos + size <= data.len());
        let bytes = &data[pos..pos + size];
        // The header the validator returns is the header that is in the buffer.
        assert_eq!(batch::BatchHeader::parse(bytes), Some(*h));
        assert_eq!(batch::peek_size(data, pos), Some(size as i64));
        // The CRC-32C covers attributes..end of the batch.
        assert_eq!(h.crc, crc32c_of(&bytes[21..]));
        assert!(h.last_offset_delta >= 0 && h.record_count >= 0);
        assert!(h.compression() <= 4);
        let span = h.last_offset_delta as i64 + 1;
        match origin {
            Origin::Client => assert_eq!(h.record_count as i64, span),
            Origin::Replica => assert!(h.record_count as i64 <= span),
        }
        // Validating the batch on its own gives the same answer.
        let alone =
            batch::validate_one(bytes, 0, origin).expect("batch valid in place but not alone");
        assert_eq!(alone.header, *h);
        // A valid batch may still hold malformed records; decoding must not panic either way.
        if let Ok((dh, records)) = record::decode_records(bytes) {
            assert_eq!(dh, *h);
            assert_eq!(records.len(), h.record_count as usize);
            // The borrowing visitor agrees with the decoder record for record.
            let mut seen = Vec::new();
            let vh = record::visit_records(bytes, |r| seen.push((r.offset, r.timestamp, r.key.map(<[u8]>::to_vec), r.value.map(<[u8]>::to_vec))))
                .expect("decode_records accepted a batch visit_records refused");
            assert_eq!(vh, *h);
            let want: Vec<_> = records
                .iter()
                .map(|r| (r.offset, r.timestamp, r.key.as_ref().map(|b| b.to_vec()), r.value.as_ref().map(|b| b.to_vec())))
                .collect();
            assert_eq!(seen, want);
        }
        pos += size;
        sum += size;
    }
    assert_eq!(sum, data.len(), "sum of batch sizes != input length");
}

/// The validator's CRC (Castagnoli), recomputed bit by bit so the check does not share code with it.
fn crc32c_of(b: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in b {
        crc ^= byte as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fuzz_target!(|data: &[u8]| {
    check(data, Origin::Client);
    check(data, Origin::Replica);
    // The decoder is documented to expect a CRC-valid batch but to reject anything malformed
    // with an error, never a panic.
    let _ = record::decode_records(data);
    let _ = record::visit_records(data, |_| {});
});
