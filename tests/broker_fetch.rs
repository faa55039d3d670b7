//! Fetch (v4, v11, v12): the stored bytes come back unchanged, the offsets reported with them,
//! the byte limits, out-of-range offsets and long polling.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{
    build_batch, create_topic, delete_records_req, produce_acks_all, tn, RawClient, TestBroker,
};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::{FetchRequest, FetchResponse};
use strom::log::record::decode_records;
use strom::log::{Compression, Record};

const OFFSET_OUT_OF_RANGE: i16 = 1;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const VERSIONS: [i16; 3] = [4, 11, 12];

fn batch(compression: Compression, tag: &str, n: usize, value_len: usize) -> Vec<u8> {
    let records = (0..n).map(|i| {
        let mut v = format!("{tag}-{i}-").into_bytes();
        v.resize(value_len.max(v.len()), b'.');
        Record::new(
            Some(format!("{tag}{i}")),
            Some(v),
            1_700_000_000_000 + i as i64,
        )
    });
    build_batch(compression, records)
}

/// `b` as the broker stores it: base offset assigned, partition leader epoch stamped (0 on a
/// fresh single-node broker). Neither field is covered by the CRC.
fn stamped(b: &[u8], base_offset: i64) -> Vec<u8> {
    let mut v = b.to_vec();
    v[0..8].copy_from_slice(&base_offset.to_be_bytes());
    v[12..16].copy_from_slice(&0i32.to_be_bytes());
    v
}

async fn produce(c: &mut RawClient, topic: &str, partition: i32, records: &[u8]) -> i64 {
    let p = produce_acks_all(c, topic, partition, Bytes::copy_from_slice(records)).await;
    assert_eq!(p.error_code, 0, "{p:?}");
    p.base_offset
}

/// A consumer's fetch: `(partition, fetch offset, partition_max_bytes)` of one topic.
fn fetch_req(
    topic: &str,
    parts: &[(i32, i64, i32)],
    max_bytes: i32,
    min_bytes: i32,
    max_wait_ms: i32,
) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(min_bytes)
        .with_max_bytes(max_bytes)
        .with_topics(vec![FetchTopic::default()
            .with_topic(tn(topic))
            .with_partitions(
                parts
                    .iter()
                    .map(|&(p, offset, pmax)| {
                        FetchPartition::default()
                            .with_partition(p)
                            .with_fetch_offset(offset)
                            .with_partition_max_bytes(pmax)
                    })
                    .collect(),
            )])
}

fn parts(r: &FetchResponse) -> Vec<PartitionData> {
    assert_eq!(r.error_code, 0, "{r:?}");
    assert_eq!(r.responses.len(), 1, "{r:?}");
    r.responses[0].partitions.clone()
}

async fn fetch_one(
    c: &mut RawClient,
    version: i16,
    topic: &str,
    partition: i32,
    offset: i64,
    pmax: i32,
) -> PartitionData {
    let r = c
        .call(
            &fetch_req(topic, &[(partition, offset, pmax)], i32::MAX, 0, 0),
            version,
        )
        .await;
    assert_eq!(r.responses[0].topic, tn(topic));
    let mut p = parts(&r);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].partition_index, partition);
    p.remove(0)
}

fn records(p: &PartitionData) -> Bytes {
    p.records.clone().unwrap_or_default()
}

#[tokio::test]
async fn records_come_back_byte_identical_with_the_right_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(b.addr).await;
    create_topic(&mut c, "t", 1, &[]).await;
    let b0 = batch(Compression::None, "plain", 3, 20);
    let b1 = batch(Compression::Gzip, "gzip", 2, 300);
    let b2 = batch(Compression::Zstd, "zstd", 4, 50);
    let b3 = batch(Compression::Lz4, "lz4", 1, 10);
    assert_eq!(produce(&mut c, "t", 0, &b0).await, 0);
    assert_eq!(produce(&mut c, "t", 0, &b1).await, 3);
    assert_eq!(produce(&mut c, "t", 0, &b2).await, 5);
    assert_eq!(produce(&mut c, "t", 0, &b3).await, 9);
    let all = [
        stamped(&b0, 0),
        stamped(&b1, 3),
        stamped(&b2, 5),
        stamped(&b3, 9),
    ];
    for v in VERSIONS {
        let p = fetch_one(&mut c, v, "t", 0, 0, 1 << 20).await;
        assert_eq!(p.error_code, 0, "v{v}");
        assert_eq!(p.high_watermark, 10, "v{v}");
        assert_eq!(p.last_stable_offset, 10, "v{v}");
        if v >= 5 {
            assert_eq!(p.log_start_offset, 0, "v{v}");
        }
        assert_eq!(
            records(&p),
            Bytes::from(all.concat()),
            "v{v}: fetched bytes differ from the produced batches"
        );

        // From the middle of a batch: that whole batch and the rest.
        let p = fetch_one(&mut c, v, "t", 0, 6, 1 << 20).await;
        assert_eq!(p.error_code, 0);
        assert_eq!(records(&p), Bytes::from(all[2..].concat()), "v{v}");

        // At the log end: nothing, and no error.
        let p = fetch_one(&mut c, v, "t", 0, 10, 1 << 20).await;
        assert_eq!(p.error_code, 0, "v{v}");
        assert_eq!(records(&p).len(), 0, "v{v}");
        assert_eq!(p.high_watermark, 10, "v{v}");
    }

    // The records decode to what was produced, with their absolute offsets.
    let p = fetch_one(&mut c, 12, "t", 0, 3, 1 << 20).await;
    let data = records(&p);
    let (h, recs) = decode_records(&data).unwrap();
    assert_eq!((h.base_offset, h.record_count, h.compression()), (3, 2, 1));
    assert_eq!(recs[0].offset, 3);
    assert_eq!(recs[1].offset, 4);
    assert_eq!(recs[1].key, Some(Bytes::from("gzip1")));
    assert!(recs[1].value.as_ref().unwrap().starts_with(b"gzip-1-"));
    assert_eq!(recs[1].value.as_ref().unwrap().len(), 300);
    b.stop().await;
}

#[tokio::test]
async fn log_start_offset_and_watermarks_after_delete_records() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(b.addr).await;
    create_topic(&mut c, "t", 1, &[]).await;
    let batches: Vec<Vec<u8>> = (0..3)
        .map(|i| batch(Compression::None, &format!("b{i}"), 2, 10))
        .collect();
    for bt in &batches {
        produce(&mut c, "t", 0, bt).await;
    }
    let r = c.call(&delete_records_req("t", 0, 3), 2).await;
    assert_eq!(r.topics[0].partitions[0].error_code, 0, "{r:?}");
    assert_eq!(r.topics[0].partitions[0].low_watermark, 3);
    for v in [11, 12] {
        let p = fetch_one(&mut c, v, "t", 0, 3, 1 << 20).await;
        assert_eq!(p.error_code, 0, "v{v}");
        assert_eq!(p.log_start_offset, 3, "v{v}");
        assert_eq!(p.high_watermark, 6, "v{v}");
        assert_eq!(p.last_stable_offset, 6, "v{v}");
        // Offset 3 is in the middle of the second batch: the whole batch comes back.
        assert_eq!(
            records(&p),
            Bytes::from([stamped(&batches[1], 2), stamped(&batches[2], 4)].concat())
        );
    }
    for v in VERSIONS {
        // Below the log start offset now.
        let p = fetch_one(&mut c, v, "t", 0, 0, 1 << 20).await;
        assert_eq!(p.error_code, OFFSET_OUT_OF_RANGE, "v{v}");
        assert_eq!(records(&p).len(), 0);
    }
    b.stop().await;
}

#[tokio::test]
async fn partition_max_bytes_is_respected_but_one_batch_always_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(b.addr).await;
    create_topic(&mut c, "t", 1, &[]).await;
    let bs: Vec<Vec<u8>> = (0..4)
        .map(|i| batch(Compression::None, &format!("b{i}"), 1, 1000))
        .collect();
    let mut offsets = Vec::new();
    for bt in &bs {
        offsets.push(produce(&mut c, "t", 0, bt).await);
    }
    assert_eq!(offsets, vec![0, 1, 2, 3]);
    let size = bs[0].len() as i32;
    for v in VERSIONS {
        // Room for one and a half batches: whole batches only, so one.
        let p = fetch_one(&mut c, v, "t", 0, 0, size + size / 2).await;
        assert_eq!(records(&p), Bytes::from(stamped(&bs[0], 0)), "v{v}");
        // Room for exactly two.
        let p = fetch_one(&mut c, v, "t", 0, 1, 2 * size).await;
        assert_eq!(
            records(&p),
            Bytes::from([stamped(&bs[1], 1), stamped(&bs[2], 2)].concat()),
            "v{v}"
        );
        // Smaller than one batch: the first batch anyway, so the consumer makes progress.
        let p = fetch_one(&mut c, v, "t", 0, 2, 10).await;
        assert_eq!(records(&p), Bytes::from(stamped(&bs[2], 2)), "v{v}");
        // The same with the request's max_bytes as the limit.
        let r = c
            .call(&fetch_req("t", &[(0, 3, 1 << 20)], 10, 0, 0), v)
            .await;
        assert_eq!(
            records(&parts(&r)[0]),
            Bytes::from(stamped(&bs[3], 3)),
            "v{v}"
        );
    }
    b.stop().await;
}

#[tokio::test]
async fn max_bytes_bounds_the_whole_response() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(b.addr).await;
    create_topic(&mut c, "t", 3, &[]).await;
    let mut stored = [Vec::new(), Vec::new(), Vec::new()];
    for p in 0..3 {
        for i in 0..3 {
            let bt = batch(Compression::None, &format!("p{p}b{i}"), 1, 1000);
            let off = produce(&mut c, "t", p, &bt).await;
            stored[p as usize].push(stamped(&bt, off));
        }
    }
    let size = stored[0][0].len() as i32;
    for v in VERSIONS {
        // Budget for two and a half batches; each partition alone may return all three.
        let max = 2 * size + size / 2;
        let r = c
            .call(
                &fetch_req(
                    "t",
                    &[(0, 0, 1 << 20), (1, 0, 1 << 20), (2, 0, 1 << 20)],
                    max,
                    0,
                    0,
                ),
                v,
            )
            .await;
        let ps = parts(&r);
        assert_eq!(
            records(&ps[0]),
            Bytes::from(stored[0][..2].concat()),
            "v{v}: the first partition fills the budget with whole batches"
        );
        let total: usize = ps.iter().map(|p| records(p).len()).sum();
        assert!(
            total as i32 <= max,
            "v{v}: {total} bytes of records in a response limited to {max} (per partition: {:?})",
            ps.iter().map(|p| records(p).len()).collect::<Vec<_>>()
        );
        for p in &ps {
            assert_eq!(p.error_code, 0);
            assert_eq!(p.high_watermark, 3);
        }

        // The "at least one batch" rule belongs to the first partition that has data, even
        // when partitions before it are empty.
        let r = c
            .call(
                &fetch_req(
                    "t",
                    &[(0, 3, 1 << 20), (1, 2, 1 << 20), (2, 0, 1 << 20)],
                    10,
                    0,
                    0,
                ),
                v,
            )
            .await;
        let ps = parts(&r);
        assert_eq!(records(&ps[0]).len(), 0, "v{v}");
        assert_eq!(records(&ps[1]), Bytes::from(stored[1][2].clone()), "v{v}");
        assert_eq!(records(&ps[2]).len(), 0, "v{v}: the budget is spent");
    }
    b.stop().await;
}

#[tokio::test]
async fn offsets_beyond_the_log_end_are_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(b.addr).await;
    create_topic(&mut c, "t", 2, &[]).await;
    produce(&mut c, "t", 0, &batch(Compression::None, "x", 5, 10)).await;
    for v in VERSIONS {
        for offset in [6, 1000, i64::MAX, -1] {
            let p = fetch_one(&mut c, v, "t", 0, offset, 1 << 20).await;
            assert_eq!(p.error_code, OFFSET_OUT_OF_RANGE, "v{v} offset {offset}");
            assert_eq!(records(&p).len(), 0);
        }
        // Empty partition: only offset 0 is in range.
        let p = fetch_one(&mut c, v, "t", 1, 1, 1 << 20).await;
        assert_eq!(p.error_code, OFFSET_OUT_OF_RANGE, "v{v}");
        let p = fetch_one(&mut c, v, "t", 1, 0, 1 << 20).await;
        assert_eq!(p.error_code, 0, "v{v}");
        // Unknown topic / partition.
        let p = fetch_one(&mut c, v, "nosuch", 0, 0, 1 << 20).await;
        assert_eq!(p.error_code, UNKNOWN_TOPIC_OR_PARTITION, "v{v}");
        let p = fetch_one(&mut c, v, "t", 2, 0, 1 << 20).await;
        assert_eq!(p.error_code, UNKNOWN_TOPIC_OR_PARTITION, "v{v}");
    }
    // An error answers at once, without waiting for max_wait_ms.
    let start = Instant::now();
    let r = c
        .call(&fetch_req("t", &[(0, 99, 1 << 20)], i32::MAX, 1, 5000), 12)
        .await;
    assert_eq!(parts(&r)[0].error_code, OFFSET_OUT_OF_RANGE);
    assert!(
        start.elapsed() < Duration::from_millis(1000),
        "{:?}",
        start.elapsed()
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_returns_as_soon_as_data_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(b.addr).await;
    create_topic(&mut c, "t", 2, &[]).await;
    for v in VERSIONS {
        let offset = b.broker.partition("t", 1).unwrap().log.log_end_offset();
        let mut consumer = RawClient::connect(b.addr).await;
        let start = Instant::now();
        let waiting = tokio::spawn(async move {
            let r = consumer
                .call(
                    &fetch_req("t", &[(1, offset, 1 << 20)], i32::MAX, 1, 5000),
                    v,
                )
                .await;
            (r, start.elapsed())
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !waiting.is_finished(),
            "v{v}: the fetch did not wait for data"
        );
        let bt = batch(Compression::None, &format!("v{v}"), 2, 10);
        let base = produce(&mut c, "t", 1, &bt).await;
        assert_eq!(base, offset);
        let (r, elapsed) = tokio::time::timeout(Duration::from_secs(6), waiting)
            .await
            .expect("fetch answered")
            .unwrap();
        assert!(
            elapsed < Duration::from_millis(2000),
            "v{v}: the waiting fetch took {elapsed:?}; it should return once data arrives"
        );
        assert!(elapsed >= Duration::from_millis(250), "v{v}: {elapsed:?}");
        let p = &parts(&r)[0];
        assert_eq!(p.error_code, 0);
        assert_eq!(records(p), Bytes::from(stamped(&bt, base)), "v{v}");
        assert_eq!(p.high_watermark, offset + 2);
    }
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_on_another_partition_keeps_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(b.addr).await;
    create_topic(&mut c, "t", 2, &[]).await;
    let mut consumer = RawClient::connect(b.addr).await;
    let start = Instant::now();
    let waiting = tokio::spawn(async move {
        let r = consumer
            .call(&fetch_req("t", &[(0, 0, 1 << 20)], i32::MAX, 1, 700), 12)
            .await;
        (r, start.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Data for partition 1 does not satisfy a fetch of partition 0.
    produce(&mut c, "t", 1, &batch(Compression::None, "other", 1, 10)).await;
    let (r, elapsed) = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .unwrap()
        .unwrap();
    assert!(elapsed >= Duration::from_millis(650), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(2500), "{elapsed:?}");
    assert_eq!(records(&parts(&r)[0]).len(), 0);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_bytes_waits_for_enough_data_or_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(b.addr).await;
    create_topic(&mut c, "t", 1, &[]).await;
    let mut consumer = RawClient::connect(b.addr).await;
    let start = Instant::now();
    let waiting = tokio::spawn(async move {
        let r = consumer
            .call(
                &fetch_req("t", &[(0, 0, 1 << 20)], i32::MAX, 100_000, 600),
                11,
            )
            .await;
        (r, start.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let bt = batch(Compression::None, "small", 1, 10);
    produce(&mut c, "t", 0, &bt).await;
    let (r, elapsed) = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .unwrap()
        .unwrap();
    assert!(
        elapsed >= Duration::from_millis(550),
        "returned after {elapsed:?} with less than min_bytes"
    );
    assert!(elapsed < Duration::from_millis(2500), "{elapsed:?}");
    // At the deadline, whatever there is comes back.
    assert_eq!(records(&parts(&r)[0]), Bytes::from(stamped(&bt, 0)));

    // Data already there: no wait at all.
    let start = Instant::now();
    let r = c
        .call(&fetch_req("t", &[(0, 0, 1 << 20)], i32::MAX, 1, 5000), 12)
        .await;
    assert!(
        start.elapsed() < Duration::from_millis(1000),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(records(&parts(&r)[0]), Bytes::from(stamped(&bt, 0)));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_to_read_returns_empty_after_max_wait() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(b.addr).await;
    create_topic(&mut c, "t", 1, &[]).await;
    for v in VERSIONS {
        let start = Instant::now();
        let r = c
            .call(&fetch_req("t", &[(0, 0, 1 << 20)], i32::MAX, 1, 200), v)
            .await;
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_millis(190),
            "v{v}: returned after {elapsed:?}, before max_wait_ms"
        );
        assert!(
            elapsed < Duration::from_millis(1200),
            "v{v}: returned after {elapsed:?}"
        );
        let p = &parts(&r)[0];
        assert_eq!(p.error_code, 0, "v{v}");
        assert_eq!(records(p).len(), 0, "v{v}");
        assert_eq!(p.high_watermark, 0, "v{v}");
    }
    // max_wait_ms = 0 never waits.
    let start = Instant::now();
    let r = c
        .call(&fetch_req("t", &[(0, 0, 1 << 20)], i32::MAX, 1, 0), 12)
        .await;
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(records(&parts(&r)[0]).len(), 0);
    b.stop().await;
}
