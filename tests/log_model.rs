//! Property test: random sequences of appends, reads, rolls, truncations, high-watermark moves,
//! record deletion, retention and reopening (clean and unclean) agree with an in-memory model.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

use std::collections::BTreeMap;

use proptest::prelude::*;
use strom::log::{
    AppendOptions, BatchBuilder, BatchHeader, Compression, Error, LogConfig, LogManager, ReadLimit,
    Record,
};

#[derive(Debug, Clone)]
enum Op {
    Append {
        records: usize,
        value_len: usize,
        codec: u8,
    },
    Read {
        at: u16,
        max_bytes: u16,
    },
    Roll,
    AdvanceHw {
        by: u16,
    },
    Truncate {
        at: u16,
    },
    DeleteRecords {
        at: u16,
    },
    RetainBytes {
        limit: u16,
    },
    Reopen {
        clean: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..6, 0usize..400, 0u8..5)
            .prop_map(|(records, value_len, codec)| Op::Append { records, value_len, codec }),
        4 => (any::<u16>(), 0u16..3000).prop_map(|(at, max_bytes)| Op::Read { at, max_bytes }),
        1 => Just(Op::Roll),
        2 => any::<u16>().prop_map(|by| Op::AdvanceHw { by }),
        1 => any::<u16>().prop_map(|at| Op::Truncate { at }),
        1 => any::<u16>().prop_map(|at| Op::DeleteRecords { at }),
        1 => (500u16..6000).prop_map(|limit| Op::RetainBytes { limit }),
        1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
    ]
}

/// The model: every batch still physically present, and the partition's offsets.
#[derive(Debug, Default)]
struct Model {
    batches: Vec<(i64, i64, Vec<u8>)>, // (base, last, stored bytes)
    log_start: i64,
    hw: i64,
}

impl Model {
    fn leo(&self) -> i64 {
        self.batches.last().map_or(self.log_start, |b| b.1 + 1)
    }
    /// Index of the batch holding `offset` (or the first after it).
    fn find(&self, offset: i64) -> usize {
        self.batches.partition_point(|b| b.1 < offset)
    }
}

fn pick(at: u16, lo: i64, hi: i64) -> i64 {
    if hi <= lo {
        lo
    } else {
        lo + (at as i64) % (hi - lo + 1)
    }
}

fn parse_batches(bytes: &[u8]) -> Vec<(BatchHeader, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let h = BatchHeader::parse(&bytes[pos..]).expect("whole header");
        out.push((h, bytes[pos..pos + h.total_size()].to_vec()));
        pos += h.total_size();
    }
    assert_eq!(pos, bytes.len(), "a read returned a partial batch");
    out
}

fn config() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("segment.bytes".into(), "2048".into()),
        ("index.interval.bytes".into(), "200".into()),
        ("retention.ms".into(), "-1".into()),
    ])
}

fn check(log: &strom::log::PartitionLog, m: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(log.log_end_offset(), m.leo());
    prop_assert_eq!(log.log_start_offset(), m.log_start);
    prop_assert_eq!(log.high_watermark(), m.hw);
    // A full scan returns exactly the model's batches from the log start on.
    let mut offset = m.log_start;
    let mut got = Vec::new();
    while offset < m.leo() {
        let r = log.read(offset, 700, ReadLimit::LogEnd).expect("read");
        let batches = parse_batches(&r.bytes().expect("bytes"));
        prop_assert!(
            !batches.is_empty(),
            "empty read at {} below the end {}",
            offset,
            m.leo()
        );
        prop_assert!(batches[0].0.last_offset() >= offset);
        offset = batches.last().map(|b| b.0.next_offset()).unwrap_or(offset);
        got.extend(batches.into_iter().map(|b| b.1));
    }
    let want: Vec<Vec<u8>> = m.batches[m.find(m.log_start)..]
        .iter()
        .map(|b| b.2.clone())
        .collect();
    prop_assert_eq!(got, want);
    Ok(())
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut logs = LogManager::open(dir.path(), LogConfig::default()).expect("open");
    logs.create_topic("t", 1, &config()).expect("create");
    let mut m = Model::default();
    let mut seq = 0u64;
    for op in ops {
        let log = logs.log("t", 0).expect("partition");
        match op {
            Op::Append {
                records,
                value_len,
                codec,
            } => {
                let mut b = BatchBuilder::new(Compression::from_id(codec).expect("codec"));
                for _ in 0..records {
                    seq += 1;
                    let value = vec![(seq % 251) as u8; value_len];
                    b.push(Record::new(
                        Some(format!("k{seq}")),
                        Some(value),
                        1_000_000 + seq as i64,
                    ));
                }
                let mut bytes = b.build().expect("build");
                let info = log
                    .append(&mut bytes, AppendOptions::leader(3))
                    .expect("append");
                prop_assert_eq!(info.first_offset, m.leo());
                prop_assert_eq!(info.last_offset, m.leo() + records as i64 - 1);
                m.batches.push((info.first_offset, info.last_offset, bytes));
            }
            Op::Read { at, max_bytes } => {
                let offset = pick(at, m.log_start - 2, m.leo() + 2);
                match log.read(offset, max_bytes as u64, ReadLimit::HighWatermark) {
                    Err(Error::OffsetOutOfRange { .. }) => {
                        prop_assert!(offset < m.log_start || offset > m.leo())
                    }
                    Err(e) => return Err(TestCaseError::fail(format!("read failed: {e}"))),
                    Ok(r) => {
                        prop_assert!(offset >= m.log_start && offset <= m.leo());
                        let batches = parse_batches(&r.bytes().expect("bytes"));
                        let i = m.find(offset);
                        if offset >= m.hw || m.batches.get(i).is_none_or(|b| b.1 >= m.hw) {
                            prop_assert!(batches.is_empty());
                        } else {
                            prop_assert!(!batches.is_empty());
                            let total: usize = batches.iter().map(|b| b.1.len()).sum();
                            prop_assert!(batches.len() == 1 || total <= max_bytes as usize);
                            for (k, (h, bytes)) in batches.iter().enumerate() {
                                prop_assert!(h.last_offset() < m.hw);
                                prop_assert_eq!(bytes, &m.batches[i + k].2);
                            }
                        }
                    }
                }
            }
            Op::Roll => log.roll_now().expect("roll"),
            Op::AdvanceHw { by } => {
                m.hw = pick(by, m.hw, m.leo());
                log.set_high_watermark(m.hw);
            }
            Op::Truncate { at } => {
                // Followers truncate above the high watermark; keep at least the first batch
                // that is physically present so the model knows where the log restarts.
                let Some(first) = m.batches.first() else {
                    continue;
                };
                let lo = m.hw.max(first.1 + 1).max(m.log_start);
                if lo > m.leo() {
                    continue;
                }
                let target = pick(at, lo, m.leo());
                log.truncate_to(target).expect("truncate");
                m.batches.retain(|b| b.1 < target);
                if m.batches.is_empty() {
                    return Err(TestCaseError::fail("model emptied"));
                }
                m.log_start = m.log_start.min(m.leo());
                m.hw = m.hw.min(m.leo());
            }
            Op::DeleteRecords { at } => {
                let target = pick(at, m.log_start, m.hw);
                let start = log.delete_records(target).expect("delete records");
                m.log_start = m.log_start.max(target);
                prop_assert_eq!(start, m.log_start);
            }
            Op::RetainBytes { limit } => {
                let mut c = config();
                c.insert("retention.bytes".into(), limit.to_string());
                logs.set_topic_configs("t", &c).expect("configs");
                let before = m.log_start;
                let size_before = log.size_bytes();
                let deleted = log
                    .enforce_retention(strom::log::now_ms())
                    .expect("retention");
                let start = log.log_start_offset();
                prop_assert!(start >= before && start <= m.hw.max(before));
                if deleted > 0 {
                    prop_assert!(start == before || m.batches.iter().any(|b| b.0 == start));
                    prop_assert!(log.size_bytes() < size_before);
                }
                if start > before {
                    // The size limit deleted segments (segments below the log start go
                    // regardless): what remains is still at least the limit.
                    prop_assert!(log.size_bytes() >= limit as u64);
                }
                m.log_start = start;
                m.batches.retain(|b| b.1 >= start || b.0 >= start);
                logs.set_topic_configs("t", &config()).expect("configs");
            }
            Op::Reopen { clean } => {
                drop(log);
                if clean {
                    logs.close().expect("close");
                }
                drop(logs);
                logs = LogManager::open(dir.path(), LogConfig::default()).expect("reopen");
                let log = logs.log("t", 0).expect("partition");
                // The high watermark is checkpointed lazily; the owner restores it.
                prop_assert!(log.high_watermark() <= m.hw);
                log.set_high_watermark(m.hw);
            }
        }
        check(&logs.log("t", 0).expect("partition"), &m)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]
    #[test]
    fn log_agrees_with_model(ops in proptest::collection::vec(op(), 1..80)) {
        run(ops)?;
    }
}

/// A replica append far past the base of an empty active segment gets a segment of its own
/// (relative offsets are 32-bit) and survives an unclean restart.
#[test]
fn replica_append_far_ahead_starts_its_own_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = LogManager::open(dir.path(), LogConfig::default()).expect("open");
    logs.create_topic("t", 1, &config()).expect("create");
    let log = logs.log("t", 0).expect("partition");
    let mut b = BatchBuilder::new(Compression::None);
    b.push(Record::new(Some("k"), Some("v"), 1));
    let mut bytes = b.build().expect("build");
    strom::log::batch::assign(&mut bytes, 0, 5_000_000_000, 2);
    log.append(&mut bytes, AppendOptions::replica())
        .expect("replica append");
    assert_eq!(log.segment_bases(), vec![5_000_000_000]);
    assert_eq!(log.log_end_offset(), 5_000_000_001);
    log.flush().expect("flush");
    drop(log);
    drop(logs);
    let logs = LogManager::open(dir.path(), LogConfig::default()).expect("reopen");
    let log = logs.log("t", 0).expect("partition");
    assert_eq!(log.log_end_offset(), 5_000_000_001);
    let read = log
        .read(5_000_000_000, 1 << 20, ReadLimit::LogEnd)
        .expect("read");
    assert_eq!(read.bytes().expect("bytes").as_ref(), bytes.as_slice());
}
