//! Produce (v3 and v9): offsets, the acks contract, refusals (unknown partition, corrupt batch,
//! too large, bad acks, not enough replicas) and idempotent producers (InitProducerId,
//! duplicate retries, sequence gaps, fenced epochs, state across a restart).

#![allow(clippy::unwrap_used)]

mod common;

use bytes::{Buf, Bytes};
use common::{create_topic, produce_req, tn, RawClient, TestBroker};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::{
    ApiVersionsRequest, InitProducerIdRequest, ProduceRequest, ProducerId,
};
use strom::log::record::{decode_records, ProducerInfo};
use strom::log::{BatchBuilder, Compression, Record};

const CORRUPT_MESSAGE: i16 = 2;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const MESSAGE_TOO_LARGE: i16 = 10;
const NOT_ENOUGH_REPLICAS: i16 = 19;
const INVALID_REQUIRED_ACKS: i16 = 21;
const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
const INVALID_PRODUCER_EPOCH: i16 = 47;

/// A batch of `n` records `"{tag}-{i}"` built like a producer would.
fn batch_with(producer: ProducerInfo, compression: Compression, tag: &str, n: usize) -> Vec<u8> {
    let mut b = BatchBuilder::new(compression).producer(producer);
    for i in 0..n {
        b.push(Record::new(
            Some(format!("k{i}")),
            Some(format!("{tag}-{i}")),
            1_700_000_000_000 + i as i64,
        ));
    }
    b.build().unwrap()
}

fn batch(tag: &str, n: usize) -> Vec<u8> {
    batch_with(ProducerInfo::default(), Compression::None, tag, n)
}

fn idempotent(producer_id: i64, epoch: i16, seq: i32, tag: &str, n: usize) -> Vec<u8> {
    batch_with(
        ProducerInfo {
            producer_id,
            producer_epoch: epoch,
            base_sequence: seq,
        },
        Compression::None,
        tag,
        n,
    )
}

/// Produces one partition's records and returns that partition's response.
async fn produce(
    c: &mut RawClient,
    version: i16,
    acks: i16,
    topic: &str,
    partition: i32,
    records: Vec<u8>,
) -> PartitionProduceResponse {
    let r = c
        .call(&produce_req(acks, topic, partition, records), version)
        .await;
    assert_eq!(r.responses.len(), 1, "{r:?}");
    assert_eq!(r.responses[0].name, tn(topic));
    assert_eq!(r.responses[0].partition_responses.len(), 1, "{r:?}");
    let p = r.responses[0].partition_responses[0].clone();
    assert_eq!(p.index, partition);
    p
}

async fn init_producer_id(c: &mut RawClient, version: i16) -> (i64, i16) {
    let r = c
        .call(
            &InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(60_000),
            version,
        )
        .await;
    assert_eq!(r.error_code, 0, "{r:?}");
    (r.producer_id.0, r.producer_epoch)
}

fn log_end(b: &TestBroker, topic: &str, partition: i32) -> i64 {
    b.broker
        .partition(topic, partition)
        .unwrap()
        .log
        .log_end_offset()
}

#[tokio::test]
async fn base_offsets_advance_by_record_count_for_acks_1_and_all() {
    for version in [3, 9] {
        let dir = tempfile::tempdir().unwrap();
        let b = TestBroker::start(dir.path(), |_| {}).await;
        let mut c = RawClient::connect(b.addr).await;
        create_topic(&mut c, "t", 2, &[]).await;
        let mut expect = 0;
        for (i, (acks, n)) in [(1, 3), (-1, 2), (1, 1), (-1, 5), (-1, 1)]
            .into_iter()
            .enumerate()
        {
            let p = produce(&mut c, version, acks, "t", 1, batch(&format!("b{i}"), n)).await;
            assert_eq!(p.error_code, 0, "v{version} acks={acks}: {p:?}");
            assert_eq!(p.base_offset, expect, "v{version} batch {i} acks={acks}");
            assert_eq!(p.log_append_time_ms, -1, "CreateTime topic");
            if version >= 5 {
                assert_eq!(p.log_start_offset, 0);
            }
            expect += n as i64;
        }
        assert_eq!(log_end(&b, "t", 1), 12);
        assert_eq!(log_end(&b, "t", 0), 0, "the other partition is untouched");
        // What was stored is what was sent, record by record.
        let read = b
            .broker
            .partition("t", 1)
            .unwrap()
            .log
            .read(0, 1 << 20, strom::log::ReadLimit::HighWatermark)
            .unwrap()
            .bytes()
            .unwrap();
        let (h, recs) = decode_records(&read).unwrap();
        assert_eq!(h.base_offset, 0);
        let values: Vec<_> = recs
            .iter()
            .map(|r| (r.offset, r.value.clone().unwrap()))
            .collect();
        assert_eq!(
            values,
            vec![
                (0, Bytes::from("b0-0")),
                (1, Bytes::from("b0-1")),
                (2, Bytes::from("b0-2"))
            ]
        );
        b.stop().await;
    }
}

#[tokio::test]
async fn several_partitions_and_topics_in_one_request() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(b.addr).await;
    create_topic(&mut c, "x", 2, &[]).await;
    create_topic(&mut c, "y", 1, &[]).await;
    produce(&mut c, 9, 1, "x", 0, batch("pre", 4)).await;
    let req = ProduceRequest::default()
        .with_transactional_id(None)
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(tn("x"))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(Bytes::from(batch("a", 2)))),
                    PartitionProduceData::default()
                        .with_index(1)
                        .with_records(Some(Bytes::from(batch("b", 3)))),
                    PartitionProduceData::default()
                        .with_index(7)
                        .with_records(Some(Bytes::from(batch("c", 1)))),
                ]),
            TopicProduceData::default()
                .with_name(tn("y"))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(Bytes::from(batch("d", 1))))]),
        ]);
    let r = c.call(&req, 9).await;
    let got: Vec<(String, i32, i16, i64)> = r
        .responses
        .iter()
        .flat_map(|t| {
            t.partition_responses
                .iter()
                .map(|p| (t.name.0.to_string(), p.index, p.error_code, p.base_offset))
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("x".to_string(), 0, 0, 4),
            ("x".to_string(), 1, 0, 0),
            ("x".to_string(), 7, UNKNOWN_TOPIC_OR_PARTITION, -1),
            ("y".to_string(), 0, 0, 0),
        ]
    );
    b.stop().await;
}

/// acks=0: the broker appends but sends nothing back, so the next frame on the connection is the
/// answer to the request after it.
#[tokio::test]
async fn acks_0_gets_no_response() {
    for version in [3, 9] {
        let dir = tempfile::tempdir().unwrap();
        let b = TestBroker::start(dir.path(), |_| {}).await;
        let mut c = RawClient::connect(b.addr).await;
        create_topic(&mut c, "t", 1, &[]).await;
        let (_, produce_frame) = c.frame(&produce_req(0, "t", 0, batch("fire", 2)), version);
        let (api_corr, api_frame) = c.frame(&ApiVersionsRequest::default(), 0);
        c.send_raw(&produce_frame).await;
        c.send_raw(&api_frame).await;
        let mut body = c.read_frame().await.expect("ApiVersions response");
        assert_eq!(
            body.get_i32(),
            api_corr,
            "v{version}: the first frame back must answer ApiVersions, not the acks=0 produce"
        );
        assert_eq!(log_end(&b, "t", 0), 2, "the acks=0 batch was appended");
        // And the connection is still in step.
        let p = produce(&mut c, version, 1, "t", 0, batch("next", 1)).await;
        assert_eq!((p.error_code, p.base_offset), (0, 2));
        b.stop().await;
    }
}

/// An acks=0 producer never reads responses, so Kafka tells it about a failed append the only
/// way it can: it closes the connection (KafkaApis.handleProduceRequest, "the server will close
/// socket server so that the producer client will know that some error has happened and will
/// refresh its metadata").
#[tokio::test]
async fn acks_0_with_an_error_closes_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(b.addr).await;
    let (_, frame) = c.frame(&produce_req(0, "nosuch", 0, batch("x", 1)), 9);
    c.send_raw(&frame).await;
    let mut one = [0u8; 1];
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        tokio::io::AsyncReadExt::read(&mut c.stream, &mut one),
    )
    .await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "an acks=0 produce that failed must close the connection (got {read:?})"
    );
    b.stop().await;
}

#[tokio::test]
async fn unknown_topic_or_partition() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(b.addr).await;
    for version in [3, 9] {
        for acks in [1, -1] {
            let p = produce(&mut c, version, acks, "nosuch", 0, batch("x", 1)).await;
            assert_eq!(p.error_code, UNKNOWN_TOPIC_OR_PARTITION, "v{version}");
            assert_eq!(p.base_offset, -1);
        }
    }
    // Produce never auto-creates.
    assert!(b.broker.logs().topic("nosuch").is_none());
    create_topic(&mut c, "one", 1, &[]).await;
    let p = produce(&mut c, 9, 1, "one", 1, batch("x", 1)).await;
    assert_eq!(p.error_code, UNKNOWN_TOPIC_OR_PARTITION);
    let p = produce(&mut c, 9, 1, "one", -1, batch("x", 1)).await;
    assert_eq!(p.error_code, UNKNOWN_TOPIC_OR_PARTITION);
    assert_eq!(log_end(&b, "one", 0), 0);
    b.stop().await;
}

#[tokio::test]
async fn a_corrupt_batch_is_refused_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(b.addr).await;
    create_topic(&mut c, "t", 1, &[]).await;
    for version in [3, 9] {
        // A flipped byte in a record value (covered by the CRC).
        let mut bad = batch("payload", 3);
        let last = bad.len() - 2;
        bad[last] ^= 0x01;
        let p = produce(&mut c, version, 1, "t", 0, bad).await;
        assert_eq!(p.error_code, CORRUPT_MESSAGE, "v{version}: {p:?}");
        assert_eq!(p.base_offset, -1);
        assert_eq!(log_end(&b, "t", 0), 0);

        // A flipped byte in the header's attributes (also covered by the CRC).
        let mut bad = batch("payload", 3);
        bad[22] ^= 0x40;
        let p = produce(&mut c, version, 1, "t", 0, bad).await;
        assert_eq!(p.error_code, CORRUPT_MESSAGE, "v{version}: {p:?}");

        // A good batch followed by a corrupt one: the request is all or nothing.
        let mut two = batch("good", 2);
        let mut bad = batch("bad", 2);
        let mid = bad.len() - 3;
        bad[mid] ^= 0x80;
        two.extend_from_slice(&bad);
        let p = produce(&mut c, version, -1, "t", 0, two).await;
        assert_eq!(p.error_code, CORRUPT_MESSAGE, "v{version}: {p:?}");
        assert_eq!(
            log_end(&b, "t", 0),
            0,
            "nothing of a refused request is stored"
        );

        // A truncated batch.
        let mut short = batch("short", 2);
        short.truncate(short.len() - 1);
        let p = produce(&mut c, version, 1, "t", 0, short).await;
        assert_eq!(p.error_code, CORRUPT_MESSAGE, "v{version}: {p:?}");
        assert_eq!(log_end(&b, "t", 0), 0);
    }
    // The partition still works.
    let p = produce(&mut c, 9, 1, "t", 0, batch("ok", 2)).await;
    assert_eq!((p.error_code, p.base_offset), (0, 0));
    b.stop().await;
}

#[tokio::test]
async fn a_batch_larger_than_max_message_bytes_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(b.addr).await;
    create_topic(&mut c, "small", 1, &[("max.message.bytes", "1000")]).await;
    let big = {
        let mut bb = BatchBuilder::new(Compression::None);
        bb.push(Record::new(None::<Bytes>, Some(vec![7u8; 1200]), 1));
        bb.build().unwrap()
    };
    assert!(big.len() > 1000);
    for version in [3, 9] {
        let p = produce(&mut c, version, 1, "small", 0, big.clone()).await;
        assert_eq!(p.error_code, MESSAGE_TOO_LARGE, "v{version}: {p:?}");
        assert_eq!(p.base_offset, -1);
    }
    assert_eq!(log_end(&b, "small", 0), 0);
    // Just under the limit is fine.
    let fits = {
        let mut bb = BatchBuilder::new(Compression::None);
        bb.push(Record::new(None::<Bytes>, Some(vec![7u8; 900]), 1));
        bb.build().unwrap()
    };
    assert!(fits.len() <= 1000, "{}", fits.len());
    let p = produce(&mut c, 9, 1, "small", 0, fits).await;
    assert_eq!((p.error_code, p.base_offset), (0, 0));
    b.stop().await;
}

#[tokio::test]
async fn acks_other_than_0_1_and_minus_1_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(b.addr).await;
    create_topic(&mut c, "t", 1, &[]).await;
    for version in [3, 9] {
        for acks in [2, -2, 5] {
            let p = produce(&mut c, version, acks, "t", 0, batch("x", 1)).await;
            assert_eq!(
                p.error_code, INVALID_REQUIRED_ACKS,
                "v{version} acks={acks}"
            );
            assert_eq!(p.base_offset, -1);
        }
    }
    assert_eq!(log_end(&b, "t", 0), 0);
    b.stop().await;
}

#[tokio::test]
async fn acks_all_needs_min_insync_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(b.addr).await;
    create_topic(&mut c, "safe", 1, &[("min.insync.replicas", "2")]).await;
    for version in [3, 9] {
        let p = produce(&mut c, version, -1, "safe", 0, batch("x", 1)).await;
        assert_eq!(p.error_code, NOT_ENOUGH_REPLICAS, "v{version}: {p:?}");
        assert_eq!(p.base_offset, -1);
    }
    assert_eq!(log_end(&b, "safe", 0), 0);
    // min.insync.replicas only applies to acks=all.
    let p = produce(&mut c, 9, 1, "safe", 0, batch("x", 2)).await;
    assert_eq!((p.error_code, p.base_offset), (0, 0));
    b.stop().await;
}

#[tokio::test]
async fn init_producer_id_hands_out_distinct_ids() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(b.addr).await;
    let mut seen = Vec::new();
    for v in 0..=4 {
        let (pid, epoch) = init_producer_id(&mut c, v).await;
        assert!(pid >= 0, "v{v}");
        assert_eq!(epoch, 0, "v{v}");
        assert!(!seen.contains(&pid), "producer id {pid} handed out twice");
        seen.push(pid);
    }
    b.stop().await;
    // Ids are never reused after a restart.
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(b.addr).await;
    let (pid, _) = init_producer_id(&mut c, 4).await;
    assert!(
        !seen.contains(&pid),
        "producer id {pid} reused after restart"
    );
    b.stop().await;
}

#[tokio::test]
async fn an_idempotent_retry_is_acknowledged_with_the_original_offset() {
    for version in [3, 9] {
        let dir = tempfile::tempdir().unwrap();
        let b = TestBroker::start(dir.path(), |_| {}).await;
        let mut c = RawClient::connect(b.addr).await;
        create_topic(&mut c, "t", 1, &[]).await;
        let (pid, epoch) = init_producer_id(&mut c, 4).await;
        // Something else first so the idempotent batch does not start at 0.
        produce(&mut c, version, 1, "t", 0, batch("plain", 2)).await;
        let first = idempotent(pid, epoch, 0, "idem", 3);
        let p = produce(&mut c, version, -1, "t", 0, first.clone()).await;
        assert_eq!((p.error_code, p.base_offset), (0, 2), "v{version}");
        assert_eq!(log_end(&b, "t", 0), 5);
        let p = produce(&mut c, version, -1, "t", 0, first.clone()).await;
        assert_eq!(
            (p.error_code, p.base_offset),
            (0, 2),
            "v{version}: a retry answers with the original offset"
        );
        assert_eq!(log_end(&b, "t", 0), 5, "v{version}: the retry was written");
        // The next sequence continues normally.
        let p = produce(
            &mut c,
            version,
            -1,
            "t",
            0,
            idempotent(pid, epoch, 3, "n", 2),
        )
        .await;
        assert_eq!((p.error_code, p.base_offset), (0, 5), "v{version}");
        // And an older batch still within the last five is still a duplicate.
        let p = produce(&mut c, version, 1, "t", 0, first).await;
        assert_eq!((p.error_code, p.base_offset), (0, 2), "v{version}");
        assert_eq!(log_end(&b, "t", 0), 7);
        b.stop().await;
    }
}

#[tokio::test]
async fn a_sequence_gap_is_out_of_order() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(b.addr).await;
    create_topic(&mut c, "t", 1, &[]).await;
    let (pid, epoch) = init_producer_id(&mut c, 4).await;
    let p = produce(&mut c, 9, -1, "t", 0, idempotent(pid, epoch, 0, "a", 3)).await;
    assert_eq!((p.error_code, p.base_offset), (0, 0));
    for version in [3, 9] {
        // Expected 3; 5 skips two.
        let p = produce(
            &mut c,
            version,
            -1,
            "t",
            0,
            idempotent(pid, epoch, 5, "gap", 1),
        )
        .await;
        assert_eq!(
            p.error_code, OUT_OF_ORDER_SEQUENCE_NUMBER,
            "v{version}: {p:?}"
        );
        assert_eq!(p.base_offset, -1);
        // Overlapping the previous batch without matching it is not a duplicate either.
        let p = produce(
            &mut c,
            version,
            -1,
            "t",
            0,
            idempotent(pid, epoch, 1, "ovl", 1),
        )
        .await;
        assert_eq!(
            p.error_code, OUT_OF_ORDER_SEQUENCE_NUMBER,
            "v{version}: {p:?}"
        );
    }
    assert_eq!(log_end(&b, "t", 0), 3);
    let p = produce(&mut c, 9, -1, "t", 0, idempotent(pid, epoch, 3, "b", 1)).await;
    assert_eq!((p.error_code, p.base_offset), (0, 3));
    b.stop().await;
}

#[tokio::test]
async fn an_old_epoch_is_fenced_after_the_epoch_is_bumped() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(b.addr).await;
    create_topic(&mut c, "t", 1, &[]).await;
    let (pid, e0) = init_producer_id(&mut c, 4).await;
    let p = produce(&mut c, 9, -1, "t", 0, idempotent(pid, e0, 0, "a", 2)).await;
    assert_eq!((p.error_code, p.base_offset), (0, 0));

    // KIP-360: the producer asks for a bump of its own id and epoch (v3+).
    let r = c
        .call(
            &InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(60_000)
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(e0),
            3,
        )
        .await;
    assert_eq!(r.error_code, 0, "{r:?}");
    assert_eq!(r.producer_id.0, pid, "the id is kept");
    assert_eq!(r.producer_epoch, e0 + 1);
    let e1 = r.producer_epoch;

    // The new epoch starts again at sequence 0.
    let p = produce(&mut c, 9, -1, "t", 0, idempotent(pid, e1, 0, "b", 1)).await;
    assert_eq!((p.error_code, p.base_offset), (0, 2));
    for version in [3, 9] {
        // A zombie with the old epoch, continuing its sequence.
        let p = produce(&mut c, version, -1, "t", 0, idempotent(pid, e0, 2, "z", 1)).await;
        assert_eq!(p.error_code, INVALID_PRODUCER_EPOCH, "v{version}: {p:?}");
        assert_eq!(p.base_offset, -1);
        // Even a retry of a batch it did write.
        let p = produce(&mut c, version, -1, "t", 0, idempotent(pid, e0, 0, "a", 2)).await;
        assert_eq!(p.error_code, INVALID_PRODUCER_EPOCH, "v{version}: {p:?}");
    }
    assert_eq!(log_end(&b, "t", 0), 3);
    b.stop().await;
}

#[tokio::test]
async fn producer_state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(b.addr).await;
    create_topic(&mut c, "t", 1, &[]).await;
    let (pid, epoch) = init_producer_id(&mut c, 4).await;
    let first = idempotent(pid, epoch, 0, "a", 3);
    let second = idempotent(pid, epoch, 3, "b", 2);
    assert_eq!(
        produce(&mut c, 9, -1, "t", 0, first.clone())
            .await
            .base_offset,
        0
    );
    assert_eq!(
        produce(&mut c, 9, -1, "t", 0, second.clone())
            .await
            .base_offset,
        3
    );
    b.stop().await;

    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(b.addr).await;
    assert_eq!(log_end(&b, "t", 0), 5);
    for (retry, offset) in [(second, 3), (first, 0)] {
        let p = produce(&mut c, 9, -1, "t", 0, retry).await;
        assert_eq!(
            (p.error_code, p.base_offset),
            (0, offset),
            "retry after restart"
        );
    }
    assert_eq!(
        log_end(&b, "t", 0),
        5,
        "a retry after restart was written again"
    );
    let p = produce(&mut c, 9, -1, "t", 0, idempotent(pid, epoch, 9, "gap", 1)).await;
    assert_eq!(p.error_code, OUT_OF_ORDER_SEQUENCE_NUMBER);
    let p = produce(&mut c, 9, -1, "t", 0, idempotent(pid, epoch, 5, "c", 1)).await;
    assert_eq!((p.error_code, p.base_offset), (0, 5));
    b.stop().await;
}
