//! Feeds arbitrary bytes to the Streams API's decoders: changelog records restored into each
//! kind of state store (key-value, window, join buffer) and the serdes behind them.
//!
//! Corrupt changelog records must come back as errors, never panics, and whatever a store
//! accepted must drain back out as changelog records it accepts again.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    strom_streams::fuzzing::restore(data);
});
