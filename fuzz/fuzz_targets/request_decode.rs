//! Fuzzes the broker's request edge: framing (`next_frame`) and decoding (`decode_request`) of
//! arbitrary bytes must return a request or an error, never panic or abort. The broker's
//! allocator is used, as in `strom server`, so element counts from the wire that would ask for
//! absurd amounts of memory are served lazily instead of aborting.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use strom_broker::protocol::{decode_request, next_frame, Decoded};

#[global_allocator]
static ALLOC: strom_broker::alloc::LazyHugeAlloc = strom_broker::alloc::LazyHugeAlloc;

fuzz_target!(|data: &[u8]| {
    // As a stream: frames are taken off the front until one is incomplete or invalid.
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = next_frame(&mut buf, 1 << 20) {
        match decode_request(frame) {
            Ok(Decoded::Request(req)) => {
                assert!(strom_broker::apis::supports(req.api, req.header.request_api_version));
            }
            Ok(Decoded::ApiVersionsFallback { .. }) | Err(_) => {}
        }
    }
    // As a single frame body (skipping the length prefix, so short inputs reach the decoder).
    if data.len() >= 8 {
        let _ = decode_request(bytes::Bytes::copy_from_slice(data));
    }
});
