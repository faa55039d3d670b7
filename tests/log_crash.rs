//! Crash tests: damage segment files the way a crash or a bad disk would (torn tails, flipped
//! bytes, lost index files) and check that reopening never panics, never serves a corrupt batch
//! and keeps every batch before the damage.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use strom::log::batch::{validate_all, Origin};
use strom::log::record::decode_records;
use strom::log::{
    AppendOptions, BatchBuilder, BatchHeader, Compression, LogConfig, LogManager, ReadLimit, Record,
};

fn topic_config() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("segment.bytes".into(), "4096".into()),
        ("index.interval.bytes".into(), "256".into()),
    ])
}

/// Appends `n` batches and returns their stored bytes in offset order.
fn fill(logs: &LogManager, n: usize, seed: u64) -> Vec<Vec<u8>> {
    let log = logs.log("t", 0).expect("partition");
    let mut out = Vec::new();
    for i in 0..n {
        let codec = Compression::ALL[(seed as usize + i) % 5];
        let mut b = BatchBuilder::new(codec);
        for r in 0..(1 + (i + seed as usize) % 4) {
            let value = format!("value-{i}-{r}-").repeat(1 + (i * 7 + r) % 30);
            b.push(Record::new(
                Some(format!("key-{r}")),
                Some(value),
                1_700_000_000_000 + i as i64,
            ));
        }
        let mut bytes = b.build().expect("build");
        log.append(&mut bytes, AppendOptions::leader(1))
            .expect("append");
        out.push(bytes);
    }
    out
}

/// Every batch the log serves from its start, validated.
fn read_all(logs: &LogManager) -> Vec<Vec<u8>> {
    let log = logs.log("t", 0).expect("partition");
    let mut offset = log.log_start_offset();
    let mut out = Vec::new();
    while offset < log.log_end_offset() {
        let bytes = log
            .read(offset, 1 << 20, ReadLimit::LogEnd)
            .expect("read")
            .bytes()
            .expect("bytes");
        assert!(
            !bytes.is_empty(),
            "nothing served at {offset}; log end {}; segments {:?}; reports {:?}",
            log.log_end_offset(),
            log.segment_bases(),
            logs.recovery_reports()
        );
        // Never a corrupt batch: CRC, framing and records all check out.
        let batches = validate_all(&bytes, Origin::Replica).expect("served batches are valid");
        for b in &batches {
            let raw = &bytes[b.position..b.position + b.header.total_size()];
            decode_records(raw).expect("served records decode");
            out.push(raw.to_vec());
            offset = b.header.next_offset();
        }
    }
    out
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("readdir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

/// (file index, position in file, global batch index) for every batch.
fn layout(files: &[PathBuf]) -> Vec<(usize, u64, usize)> {
    let mut out = Vec::new();
    for (fi, f) in files.iter().enumerate() {
        let bytes = std::fs::read(f).expect("read segment");
        let mut pos = 0;
        while pos < bytes.len() {
            let h = BatchHeader::parse(&bytes[pos..]).expect("header");
            out.push((fi, pos as u64, out.len()));
            pos += h.total_size();
        }
    }
    out
}

#[derive(Debug, Clone)]
enum Damage {
    /// Cut the chosen segment at this fraction of its length.
    Cut(f64),
    /// XOR one byte at this fraction of the segment's length.
    Flip(f64, u8),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (0.0f64..1.0).prop_map(Damage::Cut),
        (0.0f64..1.0, 1u8..=255).prop_map(|(f, x)| Damage::Flip(f, x)),
    ]
}

fn crash_and_damage(n: usize, seed: u64, flush_at: Option<usize>, last: bool, d: Damage) {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = LogManager::open(dir.path(), LogConfig::default()).expect("open");
    logs.create_topic("t", 1, &topic_config()).expect("create");
    let mut written = fill(&logs, flush_at.unwrap_or(0).min(n), seed);
    if flush_at.is_some() {
        logs.log("t", 0).expect("partition").flush().expect("flush");
    }
    written.extend(fill(&logs, n - written.len(), seed + 1));
    let recovery_point = logs.log("t", 0).expect("partition").recovery_point();
    drop(logs); // a crash: no clean-shutdown marker

    let pdir = dir.path().join("t-0");
    let files = segment_files(&pdir);
    let lay = layout(&files);
    assert_eq!(lay.len(), written.len());
    // Damage the last segment, or any segment that recovery has to scan.
    let first_scanned = files
        .iter()
        .enumerate()
        .rev()
        .find(|(_, f)| {
            let base: i64 = f
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse().ok())
                .expect("base");
            base <= recovery_point
        })
        .map_or(0, |(i, _)| i);
    let fi = if last {
        files.len() - 1
    } else {
        first_scanned + (seed as usize % (files.len() - first_scanned))
    };
    let path = &files[fi];
    let mut bytes = std::fs::read(path).expect("read");
    if bytes.is_empty() {
        return;
    }
    let (pos, covered) = match d {
        Damage::Cut(f) => {
            let pos = ((bytes.len() as f64) * f) as usize;
            bytes.truncate(pos);
            (pos, true)
        }
        Damage::Flip(f, x) => {
            let pos = (((bytes.len() - 1) as f64) * f) as usize;
            bytes[pos] ^= x;
            // Kafka's CRC does not cover base offset (bytes 0-7) and leader epoch (12-15).
            let start = lay
                .iter()
                .filter(|l| l.0 == fi && l.1 as usize <= pos)
                .map(|l| l.1)
                .max()
                .unwrap_or(0);
            let rel = pos - start as usize;
            (pos, !(rel < 8 || (12..16).contains(&rel)))
        }
    };
    std::fs::write(path, &bytes).expect("write damage");
    // Batches wholly before the damage survive; so does everything in earlier segments.
    let intact = lay
        .iter()
        .filter(|l| l.0 < fi || (l.0 == fi && l.1 as usize + written[l.2].len() <= pos))
        .count();
    let damaged_at_or_after = lay
        .iter()
        .position(|l| l.0 == fi && l.1 as usize + written[l.2].len() > pos);

    let logs = LogManager::open(dir.path(), LogConfig::default()).expect("reopen after damage");
    let served = read_all(&logs);
    assert!(
        served.len() >= intact,
        "lost batches before the damage: {} < {intact}",
        served.len()
    );
    assert_eq!(
        &served[..intact],
        &written[..intact],
        "batches before the damage changed"
    );
    if covered {
        // The damaged batch and everything after it are gone.
        if let Some(i) = damaged_at_or_after {
            assert!(
                served.len() <= i,
                "served {} batches, damage was in batch {i}",
                served.len()
            );
            let report: u64 = logs
                .recovery_reports()
                .iter()
                .map(|r| r.bytes_truncated)
                .sum();
            assert!(
                report > 0 || matches!(d, Damage::Cut(_)),
                "recovery reported nothing"
            );
        }
    }
    // The repaired log accepts new appends and survives a clean restart.
    let before = served.len();
    fill(&logs, 3, seed + 2);
    logs.close().expect("close");
    drop(logs);
    let logs = LogManager::open(dir.path(), LogConfig::default()).expect("clean reopen");
    assert!(
        logs.recovery_reports().is_empty(),
        "{:?}",
        logs.recovery_reports()
    );
    assert_eq!(read_all(&logs).len(), before + 3);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn damaged_last_segment(n in 1usize..50, seed in 0u64..1000, flush_at in proptest::option::of(0usize..50), d in damage()) {
        crash_and_damage(n, seed, flush_at, true, d);
    }

    #[test]
    fn damaged_segment_after_the_recovery_point(n in 10usize..60, seed in 0u64..1000, flush_at in proptest::option::of(0usize..30), d in damage()) {
        crash_and_damage(n, seed, flush_at, false, d);
    }
}

#[test]
fn clean_shutdown_skips_the_scan() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = LogManager::open(dir.path(), LogConfig::default()).expect("open");
    logs.create_topic("t", 1, &topic_config()).expect("create");
    let written = fill(&logs, 40, 7);
    logs.close().expect("close");
    drop(logs);
    // Damage the middle of the first segment: a clean open must not even look at it.
    let files = segment_files(&dir.path().join("t-0"));
    let mut bytes = std::fs::read(&files[0]).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&files[0], &bytes).expect("write");
    let logs = LogManager::open(dir.path(), LogConfig::default()).expect("reopen");
    assert!(
        logs.recovery_reports().is_empty(),
        "{:?}",
        logs.recovery_reports()
    );
    let log = logs.log("t", 0).expect("partition");
    let total: i64 = written
        .iter()
        .map(|b| BatchHeader::parse(b).expect("header").record_count as i64)
        .sum();
    assert_eq!(log.log_end_offset(), total);
}

#[test]
fn lost_or_damaged_index_files_are_rebuilt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = LogManager::open(dir.path(), LogConfig::default()).expect("open");
    logs.create_topic("t", 1, &topic_config()).expect("create");
    let written = fill(&logs, 60, 3);
    logs.close().expect("close");
    drop(logs);
    let pdir = dir.path().join("t-0");
    let files = segment_files(&pdir);
    assert!(files.len() >= 3, "expected several segments");
    std::fs::remove_file(files[0].with_extension("index")).expect("rm index");
    std::fs::write(files[1].with_extension("index"), b"garbage").expect("bad index");
    std::fs::write(files[1].with_extension("timeindex"), [0xffu8; 24]).expect("bad timeindex");
    let logs = LogManager::open(dir.path(), LogConfig::default()).expect("reopen");
    assert_eq!(read_all(&logs), written);
    assert!(files[0].with_extension("index").exists());
    let log = logs.log("t", 0).expect("partition");
    assert_eq!(
        log.offset_for_timestamp(1_700_000_000_030).expect("lookup"),
        Some(
            written[..30]
                .iter()
                .map(|b| BatchHeader::parse(b).expect("h").record_count as i64)
                .sum()
        )
    );
}

/// A crash image of a directory: every file as it was at the last fsync (`synced`), plus a
/// random prefix of whatever was appended to it since (the part the OS happened to write back),
/// and, for files replaced by an atomic rename, either the old or the new version.
fn crash_image(synced: &Path, now: &Path, out: &Path, seed: &mut u64) {
    fn next(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }
    std::fs::create_dir_all(out).expect("mkdir");
    let mut names: std::collections::BTreeSet<std::ffi::OsString> =
        std::collections::BTreeSet::new();
    for d in [synced, now] {
        if let Ok(rd) = std::fs::read_dir(d) {
            names.extend(rd.map(|e| e.expect("entry").file_name()));
        }
    }
    for name in names {
        let (old, new) = (synced.join(&name), now.join(&name));
        if old.is_dir() || new.is_dir() {
            crash_image(&old, &new, &out.join(&name), seed);
            continue;
        }
        let old_bytes = std::fs::read(&old).ok();
        let new_bytes = std::fs::read(&new).ok();
        let is_log = name.to_string_lossy().ends_with(".log");
        let image = match (old_bytes, new_bytes) {
            (Some(o), Some(n)) if is_log && n.starts_with(&o) => {
                // Appended since the fsync: some prefix of the new bytes reached the disk.
                let extra = n.len() - o.len();
                let keep = if extra == 0 {
                    0
                } else {
                    (next(seed) as usize) % (extra + 1)
                };
                Some(n[..o.len() + keep].to_vec())
            }
            (Some(o), Some(n)) => Some(if next(seed) & 1 == 0 { o } else { n }),
            (Some(o), None) => Some(o),
            (None, Some(n)) if is_log => {
                let keep = (next(seed) as usize) % (n.len() + 1);
                Some(n[..keep].to_vec())
            }
            (None, Some(n)) => (next(seed) & 1 == 0).then_some(n),
            (None, None) => None,
        };
        if let Some(bytes) = image {
            std::fs::write(out.join(&name), bytes).expect("write image");
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("readdir") {
        let e = e.expect("entry");
        let dst = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).expect("copy");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    /// Power loss: everything written after the last fsync may be lost in part. Every batch
    /// that was fsynced survives, nothing corrupt is served, and the log is usable again.
    #[test]
    fn unsynced_writes_lost_in_a_power_cut(
        before in 1usize..40,
        after in 0usize..40,
        seed in 1u64..u64::MAX,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let logs = LogManager::open(&data, LogConfig::default()).expect("open");
        logs.create_topic("t", 1, &topic_config()).expect("create");
        let written = fill(&logs, before, seed % 97);
        let log = logs.log("t", 0).expect("partition");
        log.flush().expect("flush");
        drop(log);
        let synced = dir.path().join("synced");
        copy_dir(&data, &synced);
        let more = fill(&logs, after, seed % 89 + 1);
        drop(logs); // no close: what was not fsynced is at the mercy of the crash

        let image = dir.path().join("image");
        let mut s = seed;
        crash_image(&synced, &data, &image, &mut s);
        let logs = LogManager::open(&image, LogConfig::default()).expect("open the crash image");
        let served = read_all(&logs);
        prop_assert!(served.len() >= written.len(), "fsynced batches lost: {} < {}", served.len(), written.len());
        prop_assert_eq!(&served[..written.len()], &written[..]);
        // Whatever survived beyond the fsync is a prefix of what was written after it.
        let all: Vec<Vec<u8>> = written.iter().chain(more.iter()).cloned().collect();
        prop_assert_eq!(&served[..], &all[..served.len()]);
        let n = served.len();
        fill(&logs, 2, seed % 7);
        logs.close().expect("close");
        drop(logs);
        let logs = LogManager::open(&image, LogConfig::default()).expect("reopen");
        prop_assert_eq!(read_all(&logs).len(), n + 2);
    }
}
