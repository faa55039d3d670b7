//! Log compaction (`cleanup.policy=compact`) on real files: latest value per key, unchanged
//! offsets, codecs, tombstones, restarts in the middle of cleaning, and reopening.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use strom::log::batch::{validate_all, Origin};
use strom::log::record::decode_records;
use strom::log::{
    now_ms, AppendOptions, BatchBuilder, BatchHeader, CleanStats, Compression, LogConfig,
    LogManager, PartitionLog, ReadLimit, Record,
};

fn configs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A compacted topic with small segments.
fn compacted(extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut c = configs(&[
        ("cleanup.policy", "compact"),
        ("segment.bytes", "1024"),
        ("index.interval.bytes", "128"),
        ("segment.ms", "31536000000000"),
    ]);
    c.extend(configs(extra));
    c
}

/// A record as read back: offset, timestamp, key and value as strings.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rec {
    offset: i64,
    ts: i64,
    key: Option<String>,
    value: Option<String>,
}

fn rec(offset: i64, ts: i64, key: Option<&str>, value: Option<&str>) -> Rec {
    Rec {
        offset,
        ts,
        key: key.map(str::to_string),
        value: value.map(str::to_string),
    }
}

type Input<'a> = (Option<&'a str>, Option<&'a str>, i64);

/// Appends one batch; returns the offset of its first record.
fn append(
    log: &PartitionLog,
    codec: Compression,
    records: &[(Option<String>, Option<String>, i64)],
) -> i64 {
    let mut b = BatchBuilder::new(codec);
    for (k, v, ts) in records {
        b.push(Record::new(k.clone(), v.clone(), *ts));
    }
    let mut bytes = b.build().expect("build");
    log.append(&mut bytes, AppendOptions::leader(3))
        .expect("append")
        .first_offset
}

fn append_strs(log: &PartitionLog, codec: Compression, records: &[Input<'_>]) -> i64 {
    let owned: Vec<_> = records
        .iter()
        .map(|(k, v, ts)| (k.map(str::to_string), v.map(str::to_string), *ts))
        .collect();
    append(log, codec, &owned)
}

fn utf8(b: &Option<bytes::Bytes>) -> Option<String> {
    b.as_ref()
        .map(|b| String::from_utf8(b.to_vec()).expect("utf-8"))
}

/// Reads the whole log with `ReadLimit::LogEnd`. Every batch served is validated as a replica
/// would; returns the batch headers and the records.
fn read_all(log: &PartitionLog) -> (Vec<BatchHeader>, Vec<Rec>) {
    let mut offset = log.log_start_offset();
    let end = log.log_end_offset();
    let (mut headers, mut recs) = (Vec::new(), Vec::new());
    while offset < end {
        let read = log.read(offset, 1 << 20, ReadLimit::LogEnd).expect("read");
        let bytes = read.bytes().expect("bytes");
        assert!(
            !bytes.is_empty(),
            "nothing served at {offset} < log end {end}"
        );
        let batches = validate_all(&bytes, Origin::Replica).expect("served batches are valid");
        assert!(
            batches[0].header.last_offset() >= offset,
            "first batch {:?} ends before {offset}",
            batches[0].header
        );
        for v in batches {
            let raw = &bytes[v.position..v.position + v.header.total_size()];
            let (h, records) = decode_records(raw).expect("decode");
            assert!(
                h.base_offset >= offset || headers.is_empty(),
                "batches out of order"
            );
            for r in records {
                assert!(r.offset >= h.base_offset && r.offset <= h.last_offset());
                recs.push(Rec {
                    offset: r.offset,
                    ts: r.timestamp,
                    key: utf8(&r.key),
                    value: utf8(&r.value),
                });
            }
            headers.push(h);
            assert!(h.next_offset() > offset, "no progress at {offset}");
            offset = h.next_offset();
        }
    }
    for w in recs.windows(2) {
        assert!(w[0].offset < w[1].offset, "offsets not increasing: {w:?}");
    }
    (headers, recs)
}

fn seg_path(log: &PartitionLog, base: i64, ext: &str) -> PathBuf {
    log.dir().join(format!("{base:020}.{ext}"))
}

/// What a compaction pass must leave: of the records below `active_base`, those that are the
/// latest for their key below `active_base` (keyless records always; no tombstone has expired);
/// everything from `active_base` on untouched.
fn model(before: &[Rec], active_base: i64) -> Vec<Rec> {
    let mut latest: HashMap<&str, i64> = HashMap::new();
    for r in before.iter().filter(|r| r.offset < active_base) {
        if let Some(k) = &r.key {
            latest.insert(k, r.offset);
        }
    }
    before
        .iter()
        .filter(|r| {
            r.offset >= active_base
                || match &r.key {
                    None => true,
                    Some(k) => latest[k.as_str()] == r.offset,
                }
        })
        .cloned()
        .collect()
}

/// Which segment (by base) holds each offset.
fn segment_of(bases: &[i64], offset: i64) -> i64 {
    *bases
        .iter()
        .rev()
        .find(|&&b| b <= offset)
        .expect("offset below the first segment")
}

fn expected_offset_for_ts(recs: &[Rec], ts: i64) -> Option<i64> {
    recs.iter().find(|r| r.ts >= ts).map(|r| r.offset)
}

#[test]
fn compaction_keeps_the_latest_value_per_key_and_the_offsets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = LogManager::open(dir.path(), LogConfig::default()).expect("open");
    logs.create_topic("t", 1, &compacted(&[])).expect("create");
    let log = logs.log("t", 0).expect("partition");
    let now = now_ms();
    let t0 = now - 3_600_000;

    // A key written once, first; then 7 rounds over 25 keys, three records per batch, with a
    // keyless record in two of the batches.
    let mut offset = append_strs(
        &log,
        Compression::None,
        &[(Some("static"), Some("forever"), t0)],
    );
    assert_eq!(offset, 0);
    offset += 1;
    let mut batch = Vec::new();
    let mut batches = 0;
    for round in 0..7 {
        for k in 0..25 {
            let ts = t0 + offset + batch.len() as i64;
            batch.push((
                Some(format!("key-{k:02}")),
                Some(format!("key-{k:02}@round-{round}")),
                ts,
            ));
            if batch.len() == 3 || (round == 6 && k == 24) {
                batches += 1;
                if batches == 5 || batches == 40 {
                    let ts = t0 + offset + batch.len() as i64;
                    batch.push((None, Some(format!("keyless-{batches}")), ts));
                }
                let first = append(&log, Compression::None, &batch);
                assert_eq!(first, offset);
                offset += batch.len() as i64;
                batch.clear();
            }
        }
    }
    assert_eq!(log.log_end_offset(), offset);
    let bases_before = log.segment_bases();
    assert!(bases_before.len() >= 6, "{bases_before:?}");
    let active_base = *bases_before.last().expect("segments");
    let active_file = std::fs::read(seg_path(&log, active_base, "log")).expect("read active");
    let (headers_before, before) = read_all(&log);
    assert_eq!(before.len() as i64, offset);

    let expected = model(&before, active_base);
    // Per cleaned segment: how many records it had and how many survive.
    let mut per_seg: BTreeMap<i64, (usize, usize)> = BTreeMap::new();
    for r in before.iter().filter(|r| r.offset < active_base) {
        per_seg
            .entry(segment_of(&bases_before, r.offset))
            .or_default()
            .0 += 1;
    }
    for r in expected.iter().filter(|r| r.offset < active_base) {
        per_seg
            .entry(segment_of(&bases_before, r.offset))
            .or_default()
            .1 += 1;
    }
    let removed_segments: Vec<i64> = per_seg
        .iter()
        .filter(|(_, &(_, kept))| kept == 0)
        .map(|(b, _)| *b)
        .collect();
    let rewritten = per_seg
        .values()
        .filter(|&&(all, kept)| kept > 0 && kept < all)
        .count();
    assert!(!removed_segments.is_empty() && rewritten > 0, "{per_seg:?}");

    log.set_high_watermark(log.log_end_offset());
    let stats = log.compact(now, true).expect("compact");
    assert_eq!(
        stats.records_removed,
        (before.len() - expected.len()) as u64
    );
    assert_eq!(stats.segments_removed, removed_segments.len());
    assert_eq!(stats.segments_rewritten, rewritten);

    let (headers_after, after) = read_all(&log);
    assert_eq!(after, expected);
    // Offsets never move: the log's bounds, and every surviving batch keeps its base offset and
    // offset span (so a rewritten batch still covers the offsets it lost).
    assert_eq!(log.log_start_offset(), 0);
    assert_eq!(log.log_end_offset(), offset);
    for h in &headers_after {
        let orig = headers_before
            .iter()
            .find(|o| o.base_offset == h.base_offset)
            .unwrap_or_else(|| panic!("batch at {} did not exist before", h.base_offset));
        assert_eq!(orig.last_offset_delta, h.last_offset_delta);
        assert_eq!(orig.partition_leader_epoch, h.partition_leader_epoch);
    }
    assert!(headers_after
        .iter()
        .any(|h| (h.record_count as i64) < h.last_offset_delta as i64 + 1));
    // Every key whose latest record was in a cleaned segment appears exactly once, latest value.
    let mut last_value: HashMap<&str, (i64, &str)> = HashMap::new();
    for r in &before {
        if let (Some(k), Some(v)) = (&r.key, &r.value) {
            last_value.insert(k, (r.offset, v));
        }
    }
    for (k, (o, v)) in &last_value {
        if *o < active_base {
            let found: Vec<&Rec> = after
                .iter()
                .filter(|r| r.key.as_deref() == Some(*k))
                .collect();
            assert_eq!(found.len(), 1, "key {k}: {found:?}");
            assert_eq!(found[0].offset, *o);
            assert_eq!(found[0].value.as_deref(), Some(*v));
        }
    }
    // Segments that lost everything are gone, on disk too; the active one is byte-identical.
    let expected_bases: Vec<i64> = bases_before
        .iter()
        .copied()
        .filter(|b| !removed_segments.contains(b))
        .collect();
    assert_eq!(log.segment_bases(), expected_bases);
    for b in &removed_segments {
        assert!(!seg_path(&log, *b, "log").exists());
        assert!(!seg_path(&log, *b, "index").exists());
    }
    assert!(!std::fs::read_dir(log.dir()).expect("list").any(|e| e
        .expect("entry")
        .file_name()
        .to_string_lossy()
        .ends_with(".cleaned")));
    assert_eq!(
        std::fs::read(seg_path(&log, active_base, "log")).expect("read active"),
        active_file
    );

    // Reading from an offset that was compacted away serves the next surviving record.
    let gone = before
        .iter()
        .find(|r| !after.contains(r))
        .expect("something was removed")
        .offset;
    let next = after
        .iter()
        .find(|r| r.offset > gone)
        .expect("a later record")
        .offset;
    let bytes = log
        .read(gone, 1 << 20, ReadLimit::LogEnd)
        .expect("read")
        .bytes()
        .expect("bytes");
    let served = validate_all(&bytes, Origin::Replica).expect("valid");
    assert!(served[0].header.last_offset() >= gone);
    let first_served = served
        .iter()
        .flat_map(|v| {
            decode_records(&bytes[v.position..v.position + v.header.total_size()])
                .expect("decode")
                .1
        })
        .map(|r| r.offset)
        .find(|&o| o >= gone);
    assert_eq!(first_served, Some(next));

    // A second pass finds nothing to do.
    let again = log.compact(now, true).expect("compact");
    assert_eq!(again.records_removed, 0);
    assert_eq!(read_all(&log).1, expected);
    logs.close().expect("close");
}

#[test]
fn compressed_batches_are_compacted_and_keep_their_codec() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = LogManager::open(dir.path(), LogConfig::default()).expect("open");
    let now = now_ms();
    let t0 = now - 60_000;
    for codec in Compression::ALL {
        let topic = format!("c-{}", codec.name());
        logs.create_topic(&topic, 1, &compacted(&[("segment.bytes", "1048576")]))
            .expect("create");
        let log = logs.log(&topic, 0).expect("partition");
        let rounds: [&[&[u32]]; 4] = [
            &[&[0, 1, 2, 3], &[4, 5, 6, 7]],
            &[&[0, 2, 4, 6]],
            &[&[0, 4]],
            &[&[1]],
        ];
        let mut offset = 0i64;
        for (r, batches) in rounds.iter().enumerate() {
            for keys in batches.iter() {
                let recs: Vec<_> = keys
                    .iter()
                    .enumerate()
                    .map(|(i, k)| {
                        (
                            Some(format!("k{k}")),
                            Some(format!("k{k} in round {r} {}", "-".repeat(40))),
                            t0 + offset + i as i64,
                        )
                    })
                    .collect();
                assert_eq!(append(&log, codec, &recs), offset);
                offset += recs.len() as i64;
            }
            if r < 3 {
                log.roll_now().expect("roll");
            }
        }
        assert_eq!(log.segment_bases(), vec![0, 8, 12, 14]);
        let (headers, before) = read_all(&log);
        assert!(headers.iter().all(|h| h.compression() == codec.id()));
        let expected = model(&before, 14);
        // k1, k3, k5, k7 of round 0; k2, k6 of round 1; k0, k4 of round 2; k1 in the active one.
        let kept: Vec<i64> = expected.iter().map(|r| r.offset).collect();
        assert_eq!(kept, vec![1, 3, 5, 7, 9, 11, 12, 13, 14], "{codec:?}");

        log.set_high_watermark(log.log_end_offset());
        let stats = log.compact(now, true).expect("compact");
        assert_eq!(stats.records_removed, 6, "{codec:?}");
        assert_eq!(stats.segments_rewritten, 2, "{codec:?}");
        assert_eq!(stats.segments_removed, 0, "{codec:?}");
        let (headers, after) = read_all(&log);
        assert_eq!(after, expected, "{codec:?}");
        for h in &headers {
            assert_eq!(h.compression(), codec.id(), "{codec:?}: {h:?}");
        }
        let spans: Vec<(i64, i32, i32)> = headers
            .iter()
            .map(|h| (h.base_offset, h.last_offset_delta, h.record_count))
            .collect();
        assert_eq!(
            spans,
            vec![(0, 3, 2), (4, 3, 2), (8, 3, 2), (12, 1, 2), (14, 0, 1)],
            "{codec:?}"
        );
    }
    logs.close().expect("close");
}

#[test]
fn tombstones_live_for_delete_retention_ms_then_go_with_their_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = LogManager::open(dir.path(), LogConfig::default()).expect("open");
    logs.create_topic("t", 1, &compacted(&[("delete.retention.ms", "1000")]))
        .expect("create");
    let log = logs.log("t", 0).expect("partition");
    let now = now_ms();
    let (ts0, ts1, ts2) = (now - 100, now - 50, now - 10);
    append_strs(
        &log,
        Compression::None,
        &[
            (Some("A"), Some("a1"), ts0),
            (Some("B"), Some("b1"), ts0),
            (Some("C"), Some("c1"), ts0),
        ],
    );
    log.roll_now().expect("roll");
    append_strs(
        &log,
        Compression::Lz4,
        &[(Some("A"), None, ts1), (Some("B"), Some("b2"), ts1)],
    );
    log.roll_now().expect("roll");
    append_strs(&log, Compression::None, &[(Some("D"), Some("d1"), ts2)]);
    assert_eq!(log.segment_bases(), vec![0, 3, 5]);
    log.set_high_watermark(log.log_end_offset());

    // The tombstone is 50 ms old: it stays; it already supersedes a1.
    let stats = log.compact(now, true).expect("compact");
    assert_eq!(stats.records_removed, 2);
    let with_tombstone = vec![
        rec(2, ts0, Some("C"), Some("c1")),
        rec(3, ts1, Some("A"), None),
        rec(4, ts1, Some("B"), Some("b2")),
        rec(5, ts2, Some("D"), Some("d1")),
    ];
    assert_eq!(read_all(&log).1, with_tombstone);

    // Exactly delete.retention.ms old is not expired yet.
    let stats = log.compact(ts1 + 1000, true).expect("compact");
    assert_eq!(stats.records_removed, 0);
    assert_eq!(read_all(&log).1, with_tombstone);

    // One millisecond later it is: the key is gone entirely.
    let stats = log.compact(ts1 + 1001, true).expect("compact");
    assert_eq!(stats.records_removed, 1);
    let (headers, after) = read_all(&log);
    assert_eq!(
        after,
        vec![
            rec(2, ts0, Some("C"), Some("c1")),
            rec(4, ts1, Some("B"), Some("b2")),
            rec(5, ts2, Some("D"), Some("d1")),
        ]
    );
    assert!(after.iter().all(|r| r.key.as_deref() != Some("A")));
    assert_eq!(headers[1].compression(), Compression::Lz4.id());
    assert_eq!(log.log_end_offset(), 6);
    logs.close().expect("close");
}

#[test]
fn old_tombstones_go_in_the_same_pass_as_the_values_they_delete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = LogManager::open(dir.path(), LogConfig::default()).expect("open");
    logs.create_topic("t", 1, &compacted(&[("delete.retention.ms", "60000")]))
        .expect("create");
    let log = logs.log("t", 0).expect("partition");
    let now = now_ms();
    let old = now - 3_600_000;
    append_strs(
        &log,
        Compression::Zstd,
        &[
            (Some("gone"), Some("v1"), old),
            (Some("kept"), Some("v1"), old + 1),
            (Some("gone"), Some("v2"), old + 2),
        ],
    );
    log.roll_now().expect("roll");
    // The tombstone shares its segment with a young record: the segment's newest record
    // decides, so this tombstone is still kept.
    append_strs(
        &log,
        Compression::None,
        &[
            (Some("young"), None, old + 3),
            (Some("x"), Some("y"), now - 10),
        ],
    );
    log.roll_now().expect("roll");
    append_strs(&log, Compression::None, &[(Some("gone"), None, old + 4)]);
    log.roll_now().expect("roll");
    append_strs(&log, Compression::None, &[(Some("active"), Some("a"), now)]);
    assert_eq!(log.segment_bases(), vec![0, 3, 5, 6]);
    log.set_high_watermark(log.log_end_offset());

    let stats = log.compact(now, true).expect("compact");
    assert_eq!(stats.records_removed, 3);
    assert_eq!(stats.segments_removed, 1);
    assert_eq!(
        read_all(&log).1,
        vec![
            rec(1, old + 1, Some("kept"), Some("v1")),
            rec(3, old + 3, Some("young"), None),
            rec(4, now - 10, Some("x"), Some("y")),
            rec(6, now, Some("active"), Some("a")),
        ]
    );
    assert_eq!(log.segment_bases(), vec![0, 3, 6]);
    logs.close().expect("close");
}

/// Appends 6 rounds over 12 keys (gzip, two records per batch) from the log end; several
/// segments. Records have timestamps `t0 + offset`.
fn fill_compacted(log: &PartitionLog, t0: i64) {
    let mut offset = log.log_end_offset();
    for round in 0..6 {
        for k in (0..12).step_by(2) {
            let recs: Vec<_> = (k..k + 2)
                .map(|k| {
                    let o = offset + (k % 2) as i64;
                    (
                        Some(format!("key-{k:02}")),
                        Some(format!("round {round} {}", "*".repeat(30))),
                        t0 + o,
                    )
                })
                .collect();
            assert_eq!(append(log, Compression::Gzip, &recs), offset);
            offset += 2;
        }
    }
}

fn stray_cleaned(log: &PartitionLog) -> Vec<String> {
    std::fs::read_dir(log.dir())
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".cleaned"))
        .collect()
}

#[test]
fn a_stray_cleaned_file_is_removed_on_unclean_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t0 = now_ms() - 600_000;
    let (bases, before, pdir) = {
        let logs = LogManager::open(dir.path(), LogConfig::default()).expect("open");
        logs.create_topic("t", 1, &compacted(&[])).expect("create");
        let log = logs.log("t", 0).expect("partition");
        fill_compacted(&log, t0);
        let bases = log.segment_bases();
        assert!(bases.len() >= 3, "{bases:?}");
        let before = read_all(&log).1;
        (bases, before, log.dir().to_path_buf())
        // Crash: no close.
    };
    // The cleaner was writing the copy of the second segment when the process died.
    let stray = pdir.join(format!("{:020}.log.cleaned", bases[1]));
    std::fs::write(&stray, b"half a batch \x00\x01\x02 and garbage").expect("write stray");

    let logs = LogManager::open(dir.path(), LogConfig::default()).expect("reopen");
    let log = logs.log("t", 0).expect("partition");
    assert!(!stray.exists());
    assert_eq!(stray_cleaned(&log), Vec::<String>::new());
    let report = logs
        .recovery_reports()
        .iter()
        .find(|r| r.dir == pdir)
        .expect("a recovery report for the partition");
    assert_eq!(report.stale_files_removed, 1);
    assert_eq!(report.bytes_truncated, 0);
    assert_eq!(report.segments_deleted, 0);
    assert_eq!(log.segment_bases(), bases);
    assert_eq!(read_all(&log).1, before);

    // And the log compacts normally afterwards.
    log.set_high_watermark(log.log_end_offset());
    let active = *bases.last().expect("segments");
    let expected = model(&before, active);
    log.compact(now_ms(), true).expect("compact");
    assert_eq!(read_all(&log).1, expected);
    logs.close().expect("close");
}

#[test]
fn missing_index_files_of_a_cleaned_segment_are_rebuilt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t0 = now_ms() - 600_000;
    let logs = LogManager::open(dir.path(), LogConfig::default()).expect("open");
    logs.create_topic("t", 1, &compacted(&[])).expect("create");
    let log = logs.log("t", 0).expect("partition");
    fill_compacted(&log, t0);
    let bases = log.segment_bases();
    assert!(bases.len() >= 3, "{bases:?}");
    let files_before: Vec<Vec<u8>> = bases
        .iter()
        .map(|b| std::fs::read(seg_path(&log, *b, "log")).expect("read segment"))
        .collect();
    log.set_high_watermark(log.log_end_offset());
    let stats = log.compact(now_ms(), true).expect("compact");
    assert!(stats.segments_rewritten >= 1, "{stats:?}");
    // The victim: the first segment the cleaner rewrote (it exists, its bytes changed).
    let victim = bases
        .iter()
        .zip(&files_before)
        .find(|(b, old)| {
            std::fs::read(seg_path(&log, **b, "log"))
                .is_ok_and(|now| now != **old && !now.is_empty())
        })
        .map(|(b, _)| *b)
        .expect("a rewritten segment");
    let bases = log.segment_bases();
    let (_, after) = read_all(&log);
    assert!(victim < *bases.last().expect("segments"));
    let index = seg_path(&log, victim, "index");
    let timeindex = seg_path(&log, victim, "timeindex");
    let index_bytes = std::fs::read(&index).expect("index");
    let timeindex_bytes = std::fs::read(&timeindex).expect("timeindex");
    assert!(!index_bytes.is_empty() && !timeindex_bytes.is_empty());
    let max_ts = after.iter().map(|r| r.ts).max().expect("records");
    let probes: Vec<i64> = (t0 - 5..=max_ts + 5).collect();
    let check = |log: &PartitionLog| {
        assert_eq!(log.segment_bases(), bases);
        assert_eq!(read_all(log).1, after);
        for &ts in &probes {
            assert_eq!(
                log.offset_for_timestamp(ts).expect("offset for timestamp"),
                expected_offset_for_ts(&after, ts),
                "timestamp {ts}"
            );
        }
        assert_eq!(std::fs::read(&index).expect("index rebuilt"), index_bytes);
        assert_eq!(
            std::fs::read(&timeindex).expect("time index rebuilt"),
            timeindex_bytes
        );
    };
    check(&log);
    drop(log);

    // Clean shutdown, then the index files vanish (as if the cleaner had renamed the cleaned
    // log into place and died before writing them).
    logs.close().expect("close");
    drop(logs);
    std::fs::remove_file(&index).expect("rm index");
    std::fs::remove_file(&timeindex).expect("rm timeindex");
    let logs = LogManager::open(dir.path(), LogConfig::default()).expect("clean reopen");
    let log = logs.log("t", 0).expect("partition");
    check(&log);
    drop(log);

    // The same after a crash.
    drop(logs);
    std::fs::remove_file(&index).expect("rm index");
    std::fs::remove_file(&timeindex).expect("rm timeindex");
    let logs = LogManager::open(dir.path(), LogConfig::default()).expect("unclean reopen");
    let log = logs.log("t", 0).expect("partition");
    check(&log);
    logs.close().expect("close");
}

#[test]
fn compaction_results_survive_a_clean_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = now_ms();
    let t0 = now - 600_000;
    let (bases, after, start, end, size) = {
        let logs = LogManager::open(dir.path(), LogConfig::default()).expect("open");
        logs.create_topic("t", 1, &compacted(&[])).expect("create");
        let log = logs.log("t", 0).expect("partition");
        // A key written only once keeps the first segment alive.
        append_strs(&log, Compression::None, &[(Some("static"), Some("s"), t0)]);
        fill_compacted(&log, t0);
        let active = *log.segment_bases().last().expect("segments");
        let (_, before) = read_all(&log);
        log.set_high_watermark(log.log_end_offset());
        let stats = log.compact(now, true).expect("compact");
        assert!(stats.records_removed > 0);
        let (_, after) = read_all(&log);
        assert_eq!(after, model(&before, active));
        // The cleaner remembers how far it got: nothing is dirty now.
        assert_eq!(
            log.compact(now, false).expect("compact"),
            CleanStats::default()
        );
        let out = (
            log.segment_bases(),
            after,
            log.log_start_offset(),
            log.log_end_offset(),
            log.size_bytes(),
        );
        logs.close().expect("close");
        out
    };
    let logs = LogManager::open(dir.path(), LogConfig::default()).expect("reopen");
    assert!(logs.recovery_reports().is_empty());
    let log = logs.log("t", 0).expect("partition");
    assert_eq!(log.segment_bases(), bases);
    assert_eq!(log.log_start_offset(), start);
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(log.high_watermark(), end);
    assert_eq!(log.size_bytes(), size);
    assert_eq!(read_all(&log).1, after);
    // Still nothing dirty after the restart (the cleaner offset was checkpointed), and a forced
    // pass removes nothing.
    assert_eq!(
        log.compact(now, false).expect("compact"),
        CleanStats::default()
    );
    assert_eq!(log.compact(now, true).expect("compact").records_removed, 0);
    assert_eq!(read_all(&log).1, after);
    // New records continue at the old log end.
    let next = append_strs(&log, Compression::None, &[(Some("new"), Some("n"), now)]);
    assert_eq!(next, end);
    logs.close().expect("close");
}

#[test]
fn log_start_offset_is_the_same_before_and_after_a_reopen_when_compaction_empties_the_first_segment(
) {
    // Every record of the first segment is superseded, so the cleaner removes the segment. The
    // log start offset (and whether a fetch at the old start succeeds) must not depend on
    // whether the process restarted since.
    let dir = tempfile::tempdir().expect("tempdir");
    let now = now_ms();
    let t0 = now - 600_000;
    let logs = LogManager::open(dir.path(), LogConfig::default()).expect("open");
    logs.create_topic("t", 1, &compacted(&[])).expect("create");
    let log = logs.log("t", 0).expect("partition");
    fill_compacted(&log, t0);
    log.set_high_watermark(log.log_end_offset());
    let stats = log.compact(now, true).expect("compact");
    // The first segment loses everything (it is kept, empty, or removed: either way the log
    // start offset must not change across a restart).
    assert!(
        stats.segments_removed + stats.segments_rewritten >= 1,
        "{stats:?}"
    );
    let start = log.log_start_offset();
    let (_, after) = read_all(&log);
    let fetch_at_start_ok = log.read(start, 1 << 20, ReadLimit::LogEnd).is_ok();
    drop(log);
    logs.close().expect("close");
    drop(logs);

    for clean in [true, false] {
        let logs = LogManager::open(dir.path(), LogConfig::default()).expect("reopen");
        let log = logs.log("t", 0).expect("partition");
        assert_eq!(
            log.log_start_offset(),
            start,
            "log start offset changed across a {} reopen",
            if clean { "clean" } else { "unclean" }
        );
        assert_eq!(
            log.read(start, 1 << 20, ReadLimit::LogEnd).is_ok(),
            fetch_at_start_ok
        );
        assert_eq!(read_all(&log).1, after);
        drop(log);
        if clean {
            drop(logs); // crash: the next open is unclean
        } else {
            logs.close().expect("close");
        }
    }
}

#[test]
fn log_append_time_batches_keep_their_append_time_when_compacted() {
    // With message.timestamp.type=LogAppendTime every record of a batch carries the batch's
    // max timestamp (the broker's append time). A rewritten batch must keep it, as Kafka's
    // cleaner does; otherwise compaction changes the timestamps consumers see.
    use strom::log::batch::ATTR_LOG_APPEND_TIME;
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = LogManager::open(dir.path(), LogConfig::default()).expect("open");
    logs.create_topic(
        "t",
        1,
        &compacted(&[
            ("segment.bytes", "1048576"),
            ("message.timestamp.type", "LogAppendTime"),
        ]),
    )
    .expect("create");
    let log = logs.log("t", 0).expect("partition");
    let now = now_ms();
    let create_time = now - 3_600_000;
    let append_times = [now - 3000, now - 2000, now - 1000];
    for (i, at) in append_times.iter().enumerate() {
        let mut b = BatchBuilder::new(Compression::None);
        b.push(Record::new(
            Some("a"),
            Some(format!("a{i}")),
            create_time + i as i64,
        ));
        b.push(Record::new(
            Some(format!("only-{i}")),
            Some("x"),
            create_time + i as i64,
        ));
        let mut bytes = b.build().expect("build");
        let info = log
            .append(
                &mut bytes,
                AppendOptions {
                    now_ms: *at,
                    ..AppendOptions::leader(0)
                },
            )
            .expect("append");
        assert_eq!(info.log_append_time, *at);
        log.roll_now().expect("roll");
    }
    assert_eq!(log.segment_bases(), vec![0, 2, 4, 6]);
    log.set_high_watermark(log.log_end_offset());
    let stats = log.compact(now, true).expect("compact");
    assert_eq!(stats.records_removed, 2);
    let (headers, after) = read_all(&log);
    assert_eq!(after.len(), 4);
    assert_eq!(headers.len(), 3);
    for (h, at) in headers.iter().zip(append_times) {
        assert_ne!(h.attributes & ATTR_LOG_APPEND_TIME, 0, "{h:?}");
        assert_eq!(
            h.max_timestamp, at,
            "batch at {}: append time lost",
            h.base_offset
        );
    }
    assert_eq!(
        log.max_timestamp_offset().map(|(_, t)| t),
        Some(append_times[2])
    );
    logs.close().expect("close");
}
