//! Retention: `retention.ms`, `retention.bytes`, `DeleteRecords`, `cleanup.policy=compact`
//! disabling deletion, and the manager's maintenance round, on real files.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

use std::collections::BTreeMap;
use std::path::PathBuf;

use strom::log::batch::{validate_all, Origin};
use strom::log::record::decode_records;
use strom::log::{
    AppendInfo, AppendOptions, BatchBuilder, Compression, Error, LogConfig, LogManager,
    PartitionLog, ReadLimit, Record,
};

/// Base timestamp of every record written here (September 2020).
const T: i64 = 1_600_000_000_000;
/// Records are stamped `T + offset * TS_STEP`.
const TS_STEP: i64 = 100;

fn configs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Small segments; `segment.ms` so large that old record timestamps never trigger a time roll.
fn small(extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut c = configs(&[
        ("segment.bytes", "1024"),
        ("index.interval.bytes", "128"),
        ("segment.ms", "31536000000000"),
    ]);
    c.extend(configs(extra));
    c
}

/// One single-record batch for `offset`: key `k00012`, a 50-byte value naming the offset.
fn batch_for(offset: i64) -> Vec<u8> {
    let mut b = BatchBuilder::new(Compression::None);
    let value = format!("{offset:0>50}");
    b.push(Record::new(
        Some(format!("k{offset:05}")),
        Some(value),
        T + offset * TS_STEP,
    ));
    b.build().expect("build")
}

/// Size of every batch `batch_for` builds, and how many fit in a 1024-byte segment.
fn batch_len() -> u64 {
    let len = batch_for(0).len() as u64;
    // Fixed by the v2 format: 61-byte header + 63-byte record.
    assert_eq!(len, 124);
    len
}
const PER_SEG: i64 = 8; // 1024 / 124

/// Appends single-record batches for offsets `from..to` (the log must end at `from`).
fn fill(log: &PartitionLog, from: i64, to: i64) {
    for o in from..to {
        let mut b = batch_for(o);
        let info: AppendInfo = log
            .append(&mut b, AppendOptions::leader(0))
            .expect("append");
        assert_eq!(info.first_offset, o);
    }
}

/// Reads every batch from the log start to the log end; returns the offsets read. Checks the
/// batches are valid and each record is the one `batch_for` wrote for its offset.
fn read_offsets(log: &PartitionLog) -> Vec<i64> {
    let mut offset = log.log_start_offset();
    let end = log.log_end_offset();
    let mut out = Vec::new();
    while offset < end {
        let bytes = log
            .read(offset, 1 << 20, ReadLimit::LogEnd)
            .expect("read")
            .bytes()
            .expect("bytes");
        assert!(
            !bytes.is_empty(),
            "nothing served at {offset} < log end {end}"
        );
        for v in validate_all(&bytes, Origin::Client).expect("valid batches") {
            let raw = &bytes[v.position..v.position + v.header.total_size()];
            let (h, recs) = decode_records(raw).expect("decode");
            assert_eq!(recs.len(), 1);
            let r = &recs[0];
            assert_eq!(r.offset, h.base_offset);
            assert_eq!(r.timestamp, T + r.offset * TS_STEP);
            assert_eq!(
                r.value.as_deref(),
                Some(format!("{:0>50}", r.offset).as_bytes())
            );
            out.push(r.offset);
            offset = h.next_offset();
        }
    }
    out
}

fn seg_path(log: &PartitionLog, base: i64, ext: &str) -> PathBuf {
    log.dir().join(format!("{base:020}.{ext}"))
}

fn bases(from: i64, count: i64) -> Vec<i64> {
    (0..count).map(|i| from + i * PER_SEG).collect()
}

fn assert_out_of_range(log: &PartitionLog, offset: i64, log_start: i64, log_end: i64) {
    match log.read(offset, 1 << 20, ReadLimit::LogEnd) {
        Err(Error::OffsetOutOfRange {
            offset: o,
            log_start: s,
            log_end: e,
        }) => assert_eq!((o, s, e), (offset, log_start, log_end)),
        other => panic!("read({offset}) should be out of range, got {other:?}"),
    }
}

#[test]
fn retention_ms_deletes_whole_old_segments_below_the_high_watermark() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = LogManager::open(dir.path(), LogConfig::default()).expect("open");
    logs.create_topic("t", 1, &small(&[("retention.ms", "1000")]))
        .expect("create");
    let log = logs.log("t", 0).expect("partition");
    batch_len();
    fill(&log, 0, 5 * PER_SEG);
    assert_eq!(log.segment_bases(), bases(0, 5));
    assert_eq!(log.log_end_offset(), 40);
    let seg_size = PER_SEG as u64 * batch_len();

    // Everything is ancient, but only segments wholly below the high watermark may go:
    // [0,8) and [8,16) lie below 20, [16,24) does not.
    let far_future = T + 1_000_000_000;
    log.set_high_watermark(20);
    assert_eq!(log.enforce_retention(far_future).expect("retention"), 2);
    assert_eq!(log.segment_bases(), bases(16, 3));
    assert_eq!(log.log_start_offset(), 16);
    assert_eq!(log.high_watermark(), 20);
    assert_eq!(log.size_bytes(), 3 * seg_size);
    assert!(!seg_path(&log, 0, "log").exists());
    assert!(!seg_path(&log, 0, "index").exists());
    assert!(!seg_path(&log, 0, "timeindex").exists());
    assert!(!seg_path(&log, 8, "log").exists());
    assert!(seg_path(&log, 16, "log").exists());
    assert_out_of_range(&log, 15, 16, 40);
    assert_eq!(read_offsets(&log), (16..40).collect::<Vec<_>>());

    // Nothing else may go while the high watermark stays at 20.
    assert_eq!(log.enforce_retention(far_future).expect("retention"), 0);
    assert_eq!(log.log_start_offset(), 16);

    // Now everything is committed. Segment [16,24) has newest timestamp T+2300: exactly
    // retention.ms old is not too old, one millisecond more is.
    log.set_high_watermark(log.log_end_offset());
    let newest_16 = T + 23 * TS_STEP;
    assert_eq!(
        log.enforce_retention(newest_16 + 1000).expect("retention"),
        0
    );
    assert_eq!(log.segment_bases(), bases(16, 3));
    assert_eq!(
        log.enforce_retention(newest_16 + 1001).expect("retention"),
        1
    );
    assert_eq!(log.segment_bases(), bases(24, 2));
    assert_eq!(log.log_start_offset(), 24);

    // Everything old: all but the active segment goes; the active one stays even though old.
    assert_eq!(log.enforce_retention(far_future).expect("retention"), 1);
    assert_eq!(log.segment_bases(), vec![32]);
    assert_eq!(log.log_start_offset(), 32);
    assert_eq!(log.log_end_offset(), 40);
    assert_eq!(log.size_bytes(), seg_size);
    assert_eq!(log.enforce_retention(far_future).expect("retention"), 0);
    assert_eq!(log.segment_bases(), vec![32]);
    assert_out_of_range(&log, 31, 32, 40);
    assert_eq!(read_offsets(&log), (32..40).collect::<Vec<_>>());

    // The log goes on at the same offsets.
    fill(&log, 40, 41);
    assert_eq!(log.segment_bases(), vec![32, 40]);
    logs.close().expect("close");
}

#[test]
fn retention_bytes_keeps_at_least_the_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = LogManager::open(dir.path(), LogConfig::default()).expect("open");
    let len = batch_len();
    let seg = PER_SEG as u64 * len;
    // Four full segments and an active one with four batches.
    let total = 4 * seg + 4 * len;
    let with_limit = |limit: u64| small(&[("retention.bytes", &limit.to_string())]);
    logs.create_topic("t", 1, &with_limit(total - seg + 1))
        .expect("create");
    let log = logs.log("t", 0).expect("partition");
    fill(&log, 0, 4 * PER_SEG + 4);
    assert_eq!(log.segment_bases(), bases(0, 5));
    assert_eq!(log.size_bytes(), total);
    log.set_high_watermark(log.log_end_offset());
    let now = T; // retention.ms (7 days) does not apply: every record is "now"

    // Deleting the oldest segment would leave one byte less than the limit.
    assert_eq!(log.enforce_retention(now).expect("retention"), 0);
    assert_eq!(log.size_bytes(), total);
    assert_eq!(log.log_start_offset(), 0);

    // A limit of exactly what remains after deleting it: deleted.
    logs.set_topic_configs("t", &with_limit(total - seg))
        .expect("set configs");
    assert_eq!(log.enforce_retention(now).expect("retention"), 1);
    assert_eq!(log.size_bytes(), total - seg);
    assert_eq!(log.log_start_offset(), 8);
    assert_eq!(log.segment_bases(), bases(8, 4));

    // Limit = one full segment plus the active one: two more go, the rest is exactly the limit.
    logs.set_topic_configs("t", &with_limit(seg + 4 * len))
        .expect("set configs");
    assert_eq!(log.enforce_retention(now).expect("retention"), 2);
    assert_eq!(log.size_bytes(), seg + 4 * len);
    assert_eq!(log.log_start_offset(), 24);
    assert_eq!(log.segment_bases(), bases(24, 2));
    assert_eq!(read_offsets(&log), (24..36).collect::<Vec<_>>());

    // Limit 0: everything but the active segment.
    logs.set_topic_configs("t", &with_limit(0))
        .expect("set configs");
    assert_eq!(log.enforce_retention(now).expect("retention"), 1);
    assert_eq!(log.size_bytes(), 4 * len);
    assert_eq!(log.log_start_offset(), 32);
    assert_eq!(log.segment_bases(), vec![32]);
    assert_out_of_range(&log, 31, 32, 36);
    assert_eq!(read_offsets(&log), (32..36).collect::<Vec<_>>());
    logs.close().expect("close");
}

#[test]
fn retention_bytes_respects_the_high_watermark() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = LogManager::open(dir.path(), LogConfig::default()).expect("open");
    logs.create_topic("t", 1, &small(&[("retention.bytes", "0")]))
        .expect("create");
    let log = logs.log("t", 0).expect("partition");
    fill(&log, 0, 4 * PER_SEG + 4);
    // [0,8) ends at 8 <= 9; [8,16) ends at 16 > 9.
    log.set_high_watermark(9);
    assert_eq!(log.enforce_retention(T).expect("retention"), 1);
    assert_eq!(log.segment_bases(), bases(8, 4));
    assert_eq!(log.log_start_offset(), 8);
    assert_eq!(log.high_watermark(), 9);
    logs.close().expect("close");
}

#[test]
fn delete_records_advances_log_start_and_survives_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let logs = LogManager::open(dir.path(), LogConfig::default()).expect("open");
        logs.create_topic("t", 1, &small(&[])).expect("create");
        let log = logs.log("t", 0).expect("partition");
        fill(&log, 0, 5 * PER_SEG);
        log.set_high_watermark(log.log_end_offset());
        assert_eq!(log.segment_bases(), bases(0, 5));

        // 19 lies inside segment [16,24): 0 and 8 are deleted, 16 stays.
        assert_eq!(log.delete_records(19).expect("delete records"), 19);
        assert_eq!(log.log_start_offset(), 19);
        assert_eq!(log.segment_bases(), bases(16, 3));
        assert!(!seg_path(&log, 0, "log").exists());
        assert!(!seg_path(&log, 8, "log").exists());
        assert!(!seg_path(&log, 8, "index").exists());
        assert!(seg_path(&log, 16, "log").exists());
        assert_out_of_range(&log, 0, 19, 40);
        assert_out_of_range(&log, 18, 19, 40);
        assert_eq!(read_offsets(&log), (19..40).collect::<Vec<_>>());
        assert!(log.high_watermark() >= log.log_start_offset());

        // Moving backwards is a no-op; past the log end is an error.
        assert_eq!(log.delete_records(10).expect("delete records"), 19);
        assert_eq!(log.log_start_offset(), 19);
        assert!(matches!(
            log.delete_records(41),
            Err(Error::OffsetOutOfRange { offset: 41, .. })
        ));
        assert_eq!(log.log_start_offset(), 19);
        logs.close().expect("close");
    }
    {
        // Clean reopen.
        let logs = LogManager::open(dir.path(), LogConfig::default()).expect("reopen");
        assert!(logs.recovery_reports().is_empty());
        let log = logs.log("t", 0).expect("partition");
        assert_eq!(log.log_start_offset(), 19);
        assert_eq!(log.log_end_offset(), 40);
        assert_eq!(log.segment_bases(), bases(16, 3));
        assert_out_of_range(&log, 18, 19, 40);
        assert_eq!(read_offsets(&log), (19..40).collect::<Vec<_>>());

        // Advance again, then crash (drop without close).
        log.set_high_watermark(log.log_end_offset());
        assert_eq!(log.delete_records(27).expect("delete records"), 27);
        assert_eq!(log.segment_bases(), bases(24, 2));
        drop(log);
        drop(logs);
    }
    {
        // Unclean reopen.
        let logs = LogManager::open(dir.path(), LogConfig::default()).expect("reopen");
        assert!(
            !logs.recovery_reports().is_empty(),
            "an unclean open recovers the active segment"
        );
        let log = logs.log("t", 0).expect("partition");
        assert_eq!(log.log_start_offset(), 27);
        assert_eq!(log.log_end_offset(), 40);
        assert_eq!(log.segment_bases(), bases(24, 2));
        assert_out_of_range(&log, 26, 27, 40);
        assert_eq!(read_offsets(&log), (27..40).collect::<Vec<_>>());

        // Up to the log end: the active segment stays, but nothing is readable.
        log.set_high_watermark(log.log_end_offset());
        assert_eq!(log.delete_records(40).expect("delete records"), 40);
        assert_eq!(log.segment_bases(), vec![32]);
        assert_out_of_range(&log, 39, 40, 40);
        let read = log.read(40, 1 << 20, ReadLimit::LogEnd).expect("read");
        assert!(read.records.is_none());
        assert_eq!(read.log_start_offset, 40);
        drop(log);
        drop(logs);
    }
    {
        let logs = LogManager::open(dir.path(), LogConfig::default()).expect("reopen");
        let log = logs.log("t", 0).expect("partition");
        assert_eq!(log.log_start_offset(), 40);
        assert_eq!(log.log_end_offset(), 40);
        assert_out_of_range(&log, 39, 40, 40);
        fill(&log, 40, 42);
        assert_eq!(read_offsets(&log), vec![40, 41]);
        logs.close().expect("close");
    }
}

#[test]
fn delete_records_above_the_high_watermark_keeps_the_high_watermark_at_or_above_log_start() {
    // Within one segment nothing is deleted, only the log start moves. Kafka refuses to move
    // the log start past the high watermark; if the log accepts it instead, the high watermark
    // must follow (it is documented to lie in [log start, log end]).
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = LogManager::open(dir.path(), LogConfig::default()).expect("open");
    logs.create_topic("t", 1, &small(&[])).expect("create");
    let log = logs.log("t", 0).expect("partition");
    fill(&log, 0, 6);
    assert_eq!(log.high_watermark(), 0);
    match log.delete_records(3) {
        Err(Error::OffsetOutOfRange { offset: 3, .. }) => {
            assert_eq!(log.log_start_offset(), 0);
            assert_eq!(log.high_watermark(), 0);
        }
        Ok(start) => {
            assert_eq!(start, 3);
            assert_eq!(log.log_start_offset(), 3);
            assert_eq!(
                log.high_watermark(),
                3,
                "high watermark left below the log start offset"
            );
            let read = log
                .read(3, 1 << 20, ReadLimit::HighWatermark)
                .expect("read");
            assert!(read.high_watermark >= read.log_start_offset, "{read:?}");
        }
        Err(e) => panic!("unexpected error {e}"),
    }
    logs.close().expect("close");
}

#[test]
fn compact_only_policy_disables_time_and_size_retention() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = LogManager::open(dir.path(), LogConfig::default()).expect("open");
    let limits = [("retention.ms", "1"), ("retention.bytes", "0")];
    let mut compact = small(&limits);
    compact.insert("cleanup.policy".into(), "compact".into());
    let mut both = small(&limits);
    both.insert("cleanup.policy".into(), "compact,delete".into());
    logs.create_topic("compacted", 1, &compact).expect("create");
    logs.create_topic("both", 1, &both).expect("create");
    let far_future = T + 1_000_000_000;
    for name in ["compacted", "both"] {
        let log = logs.log(name, 0).expect("partition");
        fill(&log, 0, 3 * PER_SEG + 1);
        assert_eq!(log.segment_bases(), bases(0, 4));
        log.set_high_watermark(log.log_end_offset());
    }

    let log = logs.log("compacted", 0).expect("partition");
    assert_eq!(log.enforce_retention(far_future).expect("retention"), 0);
    assert_eq!(log.segment_bases(), bases(0, 4));
    assert_eq!(log.log_start_offset(), 0);
    assert_eq!(read_offsets(&log), (0..25).collect::<Vec<_>>());
    // A maintenance round does not delete either (and compaction finds nothing to remove:
    // every key is unique).
    let stats = logs.maintain(far_future);
    assert_eq!(stats.records_compacted, 0);
    assert_eq!(log.segment_bases(), bases(0, 4));

    // The same limits with `compact,delete` do delete. The maintenance round above already did.
    assert_eq!(stats.segments_deleted, 3);
    let log = logs.log("both", 0).expect("partition");
    assert_eq!(log.segment_bases(), vec![24]);
    assert_eq!(log.log_start_offset(), 24);

    // Switching "compacted" to delete enables retention.
    let mut now_delete = small(&limits);
    now_delete.insert("cleanup.policy".into(), "delete".into());
    logs.set_topic_configs("compacted", &now_delete)
        .expect("set configs");
    let log = logs.log("compacted", 0).expect("partition");
    assert_eq!(log.enforce_retention(far_future).expect("retention"), 3);
    assert_eq!(log.segment_bases(), vec![24]);
    logs.close().expect("close");
}

#[test]
fn maintain_applies_retention_to_all_topics_and_configs_persist() {
    let dir = tempfile::tempdir().expect("tempdir");
    let far_future = T + 1_000_000_000;
    let short = small(&[("retention.ms", "1000")]);
    {
        let logs = LogManager::open(dir.path(), LogConfig::default()).expect("open");
        logs.create_topic("a", 2, &short).expect("create a");
        logs.create_topic("b", 1, &small(&[("retention.ms", "-1")]))
            .expect("create b");
        for ((_, _), log) in logs.logs() {
            fill(&log, 0, 3 * PER_SEG);
            assert_eq!(log.segment_bases(), bases(0, 3));
            log.set_high_watermark(log.log_end_offset());
        }
        let stats = logs.maintain(far_future);
        assert_eq!(
            stats.segments_deleted, 4,
            "two segments of each partition of a"
        );
        assert_eq!(stats.records_compacted, 0);
        for p in 0..2 {
            let log = logs.log("a", p).expect("partition");
            assert_eq!(log.segment_bases(), vec![16]);
            assert_eq!(log.log_start_offset(), 16);
        }
        let b = logs.log("b", 0).expect("partition");
        assert_eq!(b.segment_bases(), bases(0, 3));
        assert_eq!(b.log_start_offset(), 0);

        // Give b a retention, take a's away.
        logs.set_topic_configs("b", &short).expect("set b");
        logs.set_topic_configs("a", &small(&[("retention.ms", "-1")]))
            .expect("set a");
        assert_eq!(b.config().retention_ms, Some(1000));
        assert_eq!(
            logs.topic_config("b").expect("config").retention_ms,
            Some(1000)
        );
        assert_eq!(logs.topic("b").expect("meta").configs, short);
        let stats = logs.maintain(far_future);
        assert_eq!(stats.segments_deleted, 2);
        assert_eq!(b.segment_bases(), vec![16]);
        assert_eq!(b.log_start_offset(), 16);
        logs.close().expect("close");
    }
    let check_and_grow = |logs: &LogManager| {
        assert_eq!(logs.topic("b").expect("meta").configs, short);
        assert_eq!(
            logs.topic("a").expect("meta").configs,
            small(&[("retention.ms", "-1")])
        );
        assert_eq!(logs.topic("a").expect("meta").partitions, 2);
        assert_eq!(
            logs.log("b", 0).expect("b").config().retention_ms,
            Some(1000)
        );
        assert_eq!(logs.log("a", 1).expect("a").config().retention_ms, None);
        assert_eq!(logs.log("a", 1).expect("a").config().segment_bytes, 1024);
        // Old data arrives in every partition, and the segment is rolled.
        for (_, log) in logs.logs() {
            let end = log.log_end_offset();
            fill(&log, end, end + PER_SEG);
            log.roll_now().expect("roll");
            log.set_high_watermark(log.log_end_offset());
        }
    };
    {
        let logs = LogManager::open(dir.path(), LogConfig::default()).expect("reopen");
        check_and_grow(&logs);
        // b: [16,24) [24,32) and the empty active 32; a keeps everything.
        let stats = logs.maintain(far_future);
        assert_eq!(stats.segments_deleted, 2);
        let b = logs.log("b", 0).expect("partition");
        assert_eq!(b.segment_bases(), vec![32]);
        assert_eq!(b.log_start_offset(), 32);
        for p in 0..2 {
            let a = logs.log("a", p).expect("partition");
            assert_eq!(a.segment_bases(), vec![16, 24, 32]);
            assert_eq!(a.log_start_offset(), 16);
            assert_eq!(read_offsets(&a), (16..32).collect::<Vec<_>>());
        }
        // Crash this time: the configs must still be there.
        drop(logs);
    }
    {
        let logs = LogManager::open(dir.path(), LogConfig::default()).expect("reopen");
        check_and_grow(&logs);
        let stats = logs.maintain(far_future);
        assert_eq!(stats.segments_deleted, 1);
        let b = logs.log("b", 0).expect("partition");
        assert_eq!(b.segment_bases(), vec![40]);
        assert_eq!(b.log_start_offset(), 40);
        for p in 0..2 {
            let a = logs.log("a", p).expect("partition");
            assert_eq!(a.log_start_offset(), 16);
            assert_eq!(read_offsets(&a), (16..40).collect::<Vec<_>>());
        }
        logs.close().expect("close");
    }
}
