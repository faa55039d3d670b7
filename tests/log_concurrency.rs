//! One writer and concurrent readers on a rolling log, and lookups by timestamp.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};

use strom::log::batch::{validate_all, Origin};
use strom::log::record::decode_records;
use strom::log::{
    AppendOptions, BatchBuilder, Compression, LogConfig, LogManager, PartitionLog, ReadLimit,
    Record,
};

fn small_segments() -> BTreeMap<String, String> {
    [
        ("segment.bytes", "1024"),
        ("index.interval.bytes", "128"),
        ("segment.ms", "31536000000000"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// xorshift64*: deterministic, dependency-free randomness.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const BATCHES: usize = 2000;
const T: i64 = 1_700_000_000_000;

/// Records in batch `i`: 1 to 3.
fn records_in(i: usize) -> usize {
    1 + i % 3
}

/// The value of the record at `offset`, checked by readers.
fn value_for(offset: i64) -> String {
    format!("value-at-{offset}")
}

/// Checks one read of the log at `offset`: whole valid batches, the first containing `offset`,
/// contiguous offsets, and the records the writer wrote. Returns the offset after the last batch.
fn check_read(log: &PartitionLog, offset: i64, max_bytes: u64) -> Option<i64> {
    let read = log
        .read(offset, max_bytes, ReadLimit::LogEnd)
        .unwrap_or_else(|e| panic!("read at {offset}: {e}"));
    assert!(read.log_start_offset <= offset && offset <= read.log_end_offset);
    let bytes = read.bytes().expect("bytes");
    if offset == read.log_end_offset {
        assert!(bytes.is_empty(), "data served at the log end {offset}");
        return None;
    }
    assert!(
        !bytes.is_empty(),
        "nothing served at {offset} below the log end {}",
        read.log_end_offset
    );
    let batches = validate_all(&bytes, Origin::Client)
        .unwrap_or_else(|e| panic!("read at {offset} served a partial or bad batch: {e}"));
    let first = batches[0].header;
    assert!(
        first.base_offset <= offset && offset <= first.last_offset(),
        "read at {offset} starts with batch [{}, {}]",
        first.base_offset,
        first.last_offset()
    );
    let mut next = first.base_offset;
    for v in &batches {
        let raw = &bytes[v.position..v.position + v.header.total_size()];
        let (h, recs) = decode_records(raw).expect("decode");
        assert_eq!(h.base_offset, next, "gap or overlap in a read at {offset}");
        assert_eq!(recs.len() as i64, h.last_offset_delta as i64 + 1);
        for (i, r) in recs.iter().enumerate() {
            assert_eq!(r.offset, h.base_offset + i as i64);
            assert_eq!(r.value.as_deref(), Some(value_for(r.offset).as_bytes()));
        }
        next = h.next_offset();
    }
    assert!(next <= read.log_end_offset, "served past the log end");
    if batches.len() > 1 {
        assert!(bytes.len() as u64 <= max_bytes, "more than max_bytes");
    }
    Some(next)
}

#[test]
fn readers_see_whole_contiguous_batches_while_the_writer_rolls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = LogManager::open(dir.path(), LogConfig::default()).expect("open");
    logs.create_topic("t", 1, &small_segments())
        .expect("create");
    let log = logs.log("t", 0).expect("partition");
    let done = Arc::new(AtomicBool::new(false));
    // Readers start together once the writer has a head start of 100 batches.
    let go = Arc::new(Barrier::new(3));

    let writer = {
        let log = log.clone();
        let done = done.clone();
        let go = go.clone();
        std::thread::spawn(move || {
            let mut offset = 0i64;
            for i in 0..BATCHES {
                if i == 100 {
                    // Readers start once there is something to read.
                    go.wait();
                }
                let mut b = BatchBuilder::new(Compression::ALL[i % 5]);
                for j in 0..records_in(i) {
                    let o = offset + j as i64;
                    b.push(Record::new(
                        Some(format!("k{}", o % 17)),
                        Some(value_for(o)),
                        T + o,
                    ));
                }
                let mut bytes = b.build().expect("build");
                let info = log
                    .append(&mut bytes, AppendOptions::leader(0))
                    .expect("append");
                assert_eq!(info.first_offset, offset);
                offset = info.last_offset + 1;
            }
            done.store(true, Ordering::Release);
            offset
        })
    };

    let readers: Vec<_> = (0..2u64)
        .map(|id| {
            let log = log.clone();
            let done = done.clone();
            let go = go.clone();
            std::thread::spawn(move || {
                go.wait();
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (id + 1));
                let (mut reads, mut with_data, mut during_writes) = (0u64, 0u64, 0u64);
                for _ in 0..6000 {
                    let writing = !done.load(Ordering::Acquire);
                    let (start, end) = (log.log_start_offset(), log.log_end_offset());
                    let offset = start + rng.below((end - start + 1) as u64) as i64;
                    let max_bytes = if rng.below(2) == 0 {
                        1 << 20
                    } else {
                        1 + rng.below(600)
                    };
                    if check_read(&log, offset, max_bytes).is_some() {
                        with_data += 1;
                    }
                    reads += 1;
                    if writing {
                        during_writes += 1;
                    }
                }
                (reads, with_data, during_writes)
            })
        })
        .collect();

    let end = writer.join().expect("writer");
    let mut concurrent = 0;
    for r in readers {
        let (reads, with_data, during_writes) = r.join().expect("reader");
        assert_eq!(reads, 6000);
        assert!(with_data > 0);
        concurrent += during_writes;
    }
    assert!(concurrent > 0, "no read overlapped the writer");

    let expected_end: i64 = (0..BATCHES).map(|i| records_in(i) as i64).sum();
    assert_eq!(end, expected_end);
    assert_eq!(log.log_end_offset(), expected_end);
    assert!(log.segment_count() > 20, "{} segments", log.segment_count());
    // The whole log, batch by batch.
    let mut offset = 0;
    let mut batches = 0;
    while let Some(next) = check_read(&log, offset, 1) {
        offset = next;
        batches += 1;
    }
    assert_eq!(offset, expected_end);
    assert_eq!(batches, BATCHES);
    logs.close().expect("close");
}

/// (offset, timestamp) of every record, grouped per batch: 40 batches of 5 records stamped
/// `T + offset * 10`, except:
/// - batch 5 is out of order inside: 27 (T+255) is older than 26 (T+260);
/// - 77, in the middle of batch 15, is a spike at T+1_000_000;
/// - 163, in batch 32, has that same timestamp again.
fn timestamp_layout() -> Vec<Vec<(i64, i64)>> {
    (0..40)
        .map(|b| {
            (b * 5..b * 5 + 5)
                .map(|o| {
                    let ts = match o {
                        27 => T + 255,
                        77 | 163 => T + 1_000_000,
                        o => T + o * 10,
                    };
                    (o, ts)
                })
                .collect()
        })
        .collect()
}

/// Kafka's answer for ListOffsets by time: the first batch (ending at or after the log start)
/// whose max timestamp is `>= ts`, then its first record at or after the log start with a
/// timestamp `>= ts`.
fn kafka_offset_for_timestamp(layout: &[Vec<(i64, i64)>], start: i64, ts: i64) -> Option<i64> {
    layout
        .iter()
        .filter(|b| b.last().expect("records").0 >= start)
        .find(|b| b.iter().map(|r| r.1).max().expect("records") >= ts)
        .and_then(|b| b.iter().find(|r| r.1 >= ts && r.0 >= start))
        .map(|r| r.0)
}

/// Writes the layout into topic `t` (small segments, one extra roll) and returns the manager.
fn write_layout(dir: &std::path::Path, layout: &[Vec<(i64, i64)>]) -> LogManager {
    let logs = LogManager::open(dir, LogConfig::default()).expect("open");
    logs.create_topic("t", 1, &small_segments())
        .expect("create");
    let log = logs.log("t", 0).expect("partition");
    for (i, batch) in layout.iter().enumerate() {
        let mut b = BatchBuilder::new(Compression::ALL[i % 5]);
        for &(o, ts) in batch {
            b.push(Record::new(Some(format!("k{o}")), Some(value_for(o)), ts));
        }
        let mut bytes = b.build().expect("build");
        let info = log
            .append(&mut bytes, AppendOptions::leader(0))
            .expect("append");
        assert_eq!(info.first_offset, batch[0].0);
        assert_eq!(
            info.max_timestamp,
            batch.iter().map(|r| r.1).max().expect("records")
        );
        if i == 24 {
            log.roll_now().expect("roll");
        }
    }
    assert_eq!(log.log_end_offset(), 200);
    // The two spikes lie in different segments, and there are several more.
    let bases = log.segment_bases();
    assert!(bases.len() >= 5, "{bases:?}");
    let seg = |o: i64| bases.iter().rev().find(|&&b| b <= o).copied();
    assert_ne!(seg(77), seg(163), "{bases:?}");
    logs
}

fn check_offset_for_timestamp(log: &PartitionLog, layout: &[Vec<(i64, i64)>], start: i64) {
    assert_eq!(log.log_start_offset(), start);
    let mut probes: Vec<i64> = (T - 20..=T + 2010).collect();
    probes.extend([T + 999_999, T + 1_000_000, T + 1_000_001, i64::MAX, 0, -1]);
    for ts in probes {
        assert_eq!(
            log.offset_for_timestamp(ts).expect("offset for timestamp"),
            kafka_offset_for_timestamp(layout, start, ts),
            "timestamp {ts} (log start {start})"
        );
    }
    if start == 0 {
        // Inside batch 5 [25, 29]: the first record at or after the timestamp, in log order.
        assert_eq!(log.offset_for_timestamp(T + 255).expect("lookup"), Some(26));
        assert_eq!(log.offset_for_timestamp(T + 261).expect("lookup"), Some(28));
        assert_eq!(log.offset_for_timestamp(T + 250).expect("lookup"), Some(25));
    }
    // Past batch 15's max it is the spike itself, in the middle of its batch.
    assert_eq!(log.offset_for_timestamp(T + 771).expect("lookup"), Some(77));
    assert_eq!(
        log.offset_for_timestamp(T + 1_000_000).expect("lookup"),
        Some(77)
    );
    assert_eq!(
        log.offset_for_timestamp(T + 1_000_001).expect("lookup"),
        None
    );
}

#[test]
fn offset_for_timestamp_inside_batches_and_across_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = timestamp_layout();
    {
        let logs = write_layout(dir.path(), &layout);
        let log = logs.log("t", 0).expect("partition");
        check_offset_for_timestamp(&log, &layout, 0);
        logs.close().expect("close");
    }
    {
        // Indexes loaded from their files after a clean shutdown.
        let logs = LogManager::open(dir.path(), LogConfig::default()).expect("reopen");
        let log = logs.log("t", 0).expect("partition");
        check_offset_for_timestamp(&log, &layout, 0);
        drop(log);
        drop(logs); // crash
    }
    {
        // Indexes rebuilt by recovery; then the log start moves into batch 6 [30, 34].
        let logs = LogManager::open(dir.path(), LogConfig::default()).expect("reopen");
        let log = logs.log("t", 0).expect("partition");
        check_offset_for_timestamp(&log, &layout, 0);
        log.set_high_watermark(log.log_end_offset());
        assert_eq!(log.delete_records(32).expect("delete records"), 32);
        check_offset_for_timestamp(&log, &layout, 32);
        assert_eq!(log.offset_for_timestamp(T).expect("lookup"), Some(32));
        logs.close().expect("close");
    }
}

#[test]
fn max_timestamp_offset_is_the_record_with_the_largest_timestamp() {
    // ListOffsets -3 (MAX_TIMESTAMP) answers with the offset of the record carrying the largest
    // timestamp (Kafka 3.7.1+/3.8, KAFKA-16310); of two equal ones, the first. Here that is 77,
    // the middle record of batch [75, 79], not the batch's last offset 79 and not 163.
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = timestamp_layout();
    let logs = write_layout(dir.path(), &layout);
    let log = logs.log("t", 0).expect("partition");
    let spike = T + 1_000_000;
    let clean = log.max_timestamp_offset();
    drop(log);
    logs.close().expect("close");
    drop(logs);
    let logs = LogManager::open(dir.path(), LogConfig::default()).expect("reopen");
    let reopened = logs.log("t", 0).expect("partition").max_timestamp_offset();
    logs.close().expect("close");
    assert_eq!(clean, Some((77, spike)), "while written");
    assert_eq!(reopened, Some((77, spike)), "after a clean reopen");
}
