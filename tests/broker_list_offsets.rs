//! ListOffsets (v1 and v7): earliest, latest, by timestamp, max timestamp (v7), and how
//! DeleteRecords moves the earliest offset.

#![allow(clippy::unwrap_used)]

mod common;

use common::{
    build_batch, create_topic, delete_records_req, produce_acks_all, tn, RawClient, TestBroker,
};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::list_offsets_response::ListOffsetsPartitionResponse;
use kafka_protocol::messages::{BrokerId, ListOffsetsRequest};
use strom::log::{Compression, Record};

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

/// Produces one batch whose records carry the given timestamps; returns its base offset.
async fn produce_at(c: &mut RawClient, topic: &str, timestamps: &[i64]) -> i64 {
    let records = timestamps
        .iter()
        .enumerate()
        .map(|(i, ts)| Record::new(Some(format!("k{i}")), Some(format!("v{ts}")), *ts));
    let p = produce_acks_all(c, topic, 0, build_batch(Compression::None, records)).await;
    assert_eq!(p.error_code, 0, "{p:?}");
    p.base_offset
}

/// A consumer's ListOffsets (replica id -1) for partition `partition` of `topic`.
async fn list(
    c: &mut RawClient,
    version: i16,
    topic: &str,
    partition: i32,
    timestamp: i64,
) -> ListOffsetsPartitionResponse {
    let r = c
        .call(
            &ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![ListOffsetsTopic::default()
                    .with_name(tn(topic))
                    .with_partitions(vec![ListOffsetsPartition::default()
                        .with_partition_index(partition)
                        .with_timestamp(timestamp)])]),
            version,
        )
        .await;
    assert_eq!(r.topics.len(), 1, "{r:?}");
    assert_eq!(r.topics[0].name, tn(topic));
    assert_eq!(r.topics[0].partitions.len(), 1, "{r:?}");
    let p = r.topics[0].partitions[0].clone();
    assert_eq!(p.partition_index, partition);
    p
}

/// `(error, offset, timestamp)`.
async fn list3(c: &mut RawClient, v: i16, topic: &str, ts: i64) -> (i16, i64, i64) {
    let p = list(c, v, topic, 0, ts).await;
    (p.error_code, p.offset, p.timestamp)
}

async fn delete_records(c: &mut RawClient, topic: &str, before: i64) -> i64 {
    let r = c.call(&delete_records_req(topic, 0, before), 2).await;
    let p = &r.topics[0].partitions[0];
    assert_eq!(p.error_code, 0, "{r:?}");
    p.low_watermark
}

/// offsets 0..5 with timestamps 1000, 1005 | 3000, 1500 | 2500 (three batches; the largest
/// timestamp is in the middle of the log, and one batch is out of order).
async fn fill(c: &mut RawClient, topic: &str) {
    assert_eq!(produce_at(c, topic, &[1000, 1005]).await, 0);
    assert_eq!(produce_at(c, topic, &[3000, 1500]).await, 2);
    assert_eq!(produce_at(c, topic, &[2500]).await, 4);
}

#[tokio::test]
async fn an_empty_partition() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(b.addr).await;
    create_topic(&mut c, "t", 1, &[]).await;
    for v in [1, 7] {
        assert_eq!(list3(&mut c, v, "t", EARLIEST).await, (0, 0, -1), "v{v}");
        assert_eq!(list3(&mut c, v, "t", LATEST).await, (0, 0, -1), "v{v}");
        assert_eq!(list3(&mut c, v, "t", 0).await, (0, -1, -1), "v{v}");
    }
    assert_eq!(list3(&mut c, 7, "t", MAX_TIMESTAMP).await, (0, -1, -1));
    b.stop().await;
}

#[tokio::test]
async fn earliest_and_latest() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(b.addr).await;
    create_topic(&mut c, "t", 1, &[]).await;
    fill(&mut c, "t").await;
    for v in [1, 7] {
        assert_eq!(list3(&mut c, v, "t", EARLIEST).await, (0, 0, -1), "v{v}");
        assert_eq!(list3(&mut c, v, "t", LATEST).await, (0, 5, -1), "v{v}");
    }
    // v4+ carries the leader epoch: 0 on a fresh single node.
    assert_eq!(list(&mut c, 7, "t", 0, LATEST).await.leader_epoch, 0);
    b.stop().await;
}

#[tokio::test]
async fn by_timestamp_finds_the_first_record_at_or_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(b.addr).await;
    create_topic(&mut c, "t", 1, &[]).await;
    fill(&mut c, "t").await;
    for v in [1, 7] {
        for (ts, want) in [
            (0, (0, 0, 1000)),
            (1000, (0, 0, 1000)),
            (1001, (0, 1, 1005)),
            (1005, (0, 1, 1005)),
            // The first record (in offset order) with a timestamp >= T: offset 2 (3000), not
            // offset 3 whose 1500 is closer.
            (1006, (0, 2, 3000)),
            (1500, (0, 2, 3000)),
            (2600, (0, 2, 3000)),
            (3000, (0, 2, 3000)),
            (3001, (0, -1, -1)),
            (i64::MAX, (0, -1, -1)),
        ] {
            assert_eq!(list3(&mut c, v, "t", ts).await, want, "v{v} timestamp {ts}");
        }
    }
    b.stop().await;
}

#[tokio::test]
async fn max_timestamp_in_v7() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(b.addr).await;
    create_topic(&mut c, "t", 1, &[]).await;
    fill(&mut c, "t").await;
    assert_eq!(list3(&mut c, 7, "t", MAX_TIMESTAMP).await, (0, 2, 3000));
    // A later, newer record takes over.
    assert_eq!(produce_at(&mut c, "t", &[500, 4000, 3999]).await, 5);
    assert_eq!(list3(&mut c, 7, "t", MAX_TIMESTAMP).await, (0, 6, 4000));
    // Ties: the first record with the largest timestamp.
    assert_eq!(produce_at(&mut c, "t", &[4000]).await, 8);
    assert_eq!(list3(&mut c, 7, "t", MAX_TIMESTAMP).await, (0, 6, 4000));
    b.stop().await;
}

#[tokio::test]
async fn unknown_topic_or_partition() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(b.addr).await;
    create_topic(&mut c, "t", 1, &[]).await;
    for v in [1, 7] {
        let p = list(&mut c, v, "nosuch", 0, LATEST).await;
        assert_eq!(
            (p.error_code, p.offset, p.timestamp),
            (UNKNOWN_TOPIC_OR_PARTITION, -1, -1),
            "v{v}"
        );
        let p = list(&mut c, v, "t", 1, EARLIEST).await;
        assert_eq!(p.error_code, UNKNOWN_TOPIC_OR_PARTITION, "v{v}");
    }
    b.stop().await;
}

#[tokio::test]
async fn delete_records_moves_the_earliest_offset() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(b.addr).await;
    create_topic(&mut c, "t", 1, &[]).await;
    fill(&mut c, "t").await;
    assert_eq!(delete_records(&mut c, "t", 3).await, 3);
    for v in [1, 7] {
        assert_eq!(list3(&mut c, v, "t", EARLIEST).await, (0, 3, -1), "v{v}");
        assert_eq!(list3(&mut c, v, "t", LATEST).await, (0, 5, -1), "v{v}");
    }
    assert_eq!(delete_records(&mut c, "t", -1).await, 5);
    for v in [1, 7] {
        assert_eq!(list3(&mut c, v, "t", EARLIEST).await, (0, 5, -1), "v{v}");
        assert_eq!(list3(&mut c, v, "t", LATEST).await, (0, 5, -1), "v{v}");
    }
    // Survives a restart.
    b.stop().await;
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(b.addr).await;
    assert_eq!(list3(&mut c, 7, "t", EARLIEST).await, (0, 5, -1));
    assert_eq!(list3(&mut c, 7, "t", LATEST).await, (0, 5, -1));
    b.stop().await;
}

/// After DeleteRecords, a lookup by timestamp only considers records at or after the log start
/// offset, and answers with the timestamp of the record it returns (Kafka's
/// `LogSegment.findOffsetByTimestamp(timestamp, startingOffset)` skips records below the log
/// start offset).
#[tokio::test]
async fn by_timestamp_after_delete_records_skips_deleted_records() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(b.addr).await;
    // "a": offset 0 deleted; offset 1 (1005) is the first record left, in the same batch.
    // "b": offsets 0..3 deleted; 3 (1500) and 4 (2500) are left, 2 (3000) is gone.
    for (topic, before) in [("a", 1), ("b", 3)] {
        create_topic(&mut c, topic, 1, &[]).await;
        fill(&mut c, topic).await;
        assert_eq!(delete_records(&mut c, topic, before).await, before);
    }
    let cases = [
        ("a", 0, (0, 1, 1005)),
        ("a", 1002, (0, 1, 1005)),
        ("b", 0, (0, 3, 1500)),
        ("b", 1600, (0, 4, 2500)),
        ("b", 2501, (0, -1, -1)),
    ];
    for v in [1, 7] {
        let mut got = Vec::new();
        for (topic, ts, _) in cases {
            got.push((topic, ts, list3(&mut c, v, topic, ts).await));
        }
        assert_eq!(
            got,
            cases.to_vec(),
            "v{v}: (topic, timestamp, (error, offset, timestamp))"
        );
    }
    b.stop().await;
}
