//! Feeds arbitrary bytes to the client's decoders of broker data: fetched record batches, and
//! the consumer-protocol subscription and assignment blobs that group members exchange.
//!
//! None may panic. Whatever the fetch decoder accepts must be at or above the requested offset, and re-encoding a decoded assignment must decode to the same partitions.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use strom_client::{assignor, batch};

fuzz_target!(|data: &[u8]| {
    let from = data.first().map_or(0, |b| (*b as i64) - 16);
    let bytes = Bytes::copy_from_slice(data);
    if let Ok((records, next)) = batch::decode_fetched("t", 0, &bytes, from) {
        for r in &records {
            assert!(r.offset >= from, "record below the fetch offset");
        }
        if !records.is_empty() {
            assert!(next.is_some(), "records without a next offset");
        }
    }
    // read_committed: an aborted-transaction list taken from the input's last bytes.
    let aborted: Vec<(i64, i64)> = data
        .rchunks_exact(2)
        .take(4)
        .map(|c| (c[0] as i64 % 4, c[1] as i64 - 8))
        .collect();
    if let Ok((records, _)) = batch::decode_fetched_with("t", 0, &bytes, from, Some(&aborted)) {
        // Filtering only ever removes records.
        let all = batch::decode_fetched("t", 0, &bytes, from).map(|r| r.0.len()).unwrap_or(0);
        assert!(records.len() <= all, "read_committed returned more than read_uncommitted");
    }
    let _ = assignor::decode_subscription("m", None, data);
    if let Ok(parts) = assignor::decode_assignment(data) {
        let again = assignor::encode_assignment(&parts).expect("re-encode");
        let mut a = assignor::decode_assignment(&again).expect("decode re-encoded");
        let mut b = parts.clone();
        a.sort();
        b.sort();
        b.dedup();
        a.dedup();
        assert_eq!(a, b, "assignment round trip");
    }
});
