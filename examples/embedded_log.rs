//! Use Strom's log embedded in a program, with no server: create a topic, append a few keyed
//! records, read them back and look one up by timestamp.
//!
//! Run with `cargo run --example embedded_log`.

use std::collections::BTreeMap;

use strom::log::record::decode_records;
use strom::log::{
    AppendOptions, BatchBuilder, Compression, LogConfig, LogManager, ReadLimit, Record,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("strom-example-{}", std::process::id()));
    let logs = LogManager::open(&dir, LogConfig::default())?;
    logs.create_topic("greetings", 1, &BTreeMap::new())?;
    let log = logs.log("greetings", 0).ok_or("partition 0 is missing")?;

    let now = strom::log::now_ms();
    for (i, word) in ["hello", "hallo", "hej"].iter().enumerate() {
        let mut batch = BatchBuilder::new(Compression::Zstd);
        batch.push(Record::new(
            Some(format!("lang-{i}")),
            Some(*word),
            now + i as i64,
        ));
        let info = log.append(&mut batch.build()?, AppendOptions::leader(0))?;
        println!("appended {word:?} at offset {}", info.first_offset);
    }
    log.set_high_watermark(log.log_end_offset());

    let read = log.read(0, 1 << 20, ReadLimit::HighWatermark)?;
    let bytes = read.bytes()?;
    let mut pos = 0;
    while pos < bytes.len() {
        let (header, records) = decode_records(&bytes[pos..])?;
        for r in records {
            let value = r.value.as_deref().map(String::from_utf8_lossy);
            println!("offset {} value {:?}", r.offset, value);
        }
        pos += header.total_size();
    }
    println!(
        "first offset at or after now+1: {:?}",
        log.offset_for_timestamp(now + 1)?
    );
    logs.close()?;
    drop(logs);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
