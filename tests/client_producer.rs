//! strom-client's producer against a real broker: batching, every codec, idempotence, errors.
#![allow(clippy::unwrap_used)]

mod common;

use common::TestBroker;
use strom::client::{Compression, Producer, ProducerConfig, ProducerRecord};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produces_in_order_with_every_codec() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    for c in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let topic = format!("p-{}", c.name());
        let p = Producer::new(ProducerConfig::new(&b.bootstrap()).compression(c))
            .await
            .unwrap();
        let mut futs = Vec::new();
        for i in 0..5000 {
            let r = ProducerRecord::new(&topic, format!("value-{i}")).key(format!("k{}", i % 7));
            futs.push(p.send(r).await.unwrap());
        }
        let mut last = std::collections::HashMap::new();
        for f in futs {
            let m = f.await.unwrap();
            let prev = last.insert(m.partition, m.offset);
            assert!(
                prev.is_none_or(|p| p + 1 == m.offset),
                "offsets in order per partition"
            );
        }
        p.close().await.unwrap();
    }
    b.stop().await;
}

/// With acks=0 nothing is acknowledged, but `close` still waits until the broker has read
/// everything: a consumer then finds every record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_zero_records_are_all_there_after_close() {
    use strom::client::{Acks, Consumer, ConsumerConfig, OffsetReset, TopicPartition};
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let cfg = ProducerConfig::new(&b.bootstrap())
        .acks(Acks::None)
        .idempotence(false);
    let p = Producer::new(cfg).await.unwrap();
    for i in 0..20_000 {
        let m = p
            .send(ProducerRecord::new("fire", format!("{i}")).partition(0))
            .await
            .unwrap();
        if i == 0 {
            assert_eq!(m.await.unwrap().offset, -1, "acks=0 reports no offset");
        }
    }
    p.close().await.unwrap();
    let mut c =
        Consumer::new(ConsumerConfig::new(&b.bootstrap()).offset_reset(OffsetReset::Earliest))
            .await
            .unwrap();
    c.assign(&[TopicPartition::new("fire", 0)]).unwrap();
    let mut n = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while n < 20_000 {
        assert!(std::time::Instant::now() < deadline, "only {n} records");
        n += c
            .poll(std::time::Duration::from_millis(200))
            .await
            .unwrap()
            .len();
    }
    assert_eq!(n, 20_000);
    b.stop().await;
}

/// `send_batch`: one future for many records, resolved once the broker has every one of them;
/// a failure (here: the broker goes away) reaches it rather than hanging it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_resolves_when_every_record_is_stored_or_one_failed() {
    use std::time::Duration;
    use strom::client::{Admin, ClientConfig, NewTopic, OffsetSpec, TopicPartition};
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let admin = Admin::new(ClientConfig::new(&b.bootstrap())).await.unwrap();
    admin
        .create_topics(&[NewTopic::new("batched", 3)])
        .await
        .unwrap();
    let p = Producer::new(ProducerConfig::new(&b.bootstrap()))
        .await
        .unwrap();
    let records =
        (0..30_000).map(|i| ProducerRecord::new("batched", format!("v{i}")).partition(i % 3));
    p.send_batch(records).await.unwrap().wait().await.unwrap();
    let ends = admin
        .list_offsets(&["batched".to_string()], OffsetSpec::Latest)
        .await
        .unwrap();
    for part in 0..3 {
        assert_eq!(ends[&TopicPartition::new("batched", part)], 10_000);
    }
    // An empty batch is done at once.
    p.send_batch(Vec::new())
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();

    // The broker stops: the next batch fails (within the delivery timeout) instead of hanging.
    let mut cfg = ProducerConfig::new(&b.bootstrap());
    cfg.delivery_timeout = Duration::from_secs(2);
    cfg.max_block = Duration::from_secs(2);
    let p2 = Producer::new(cfg).await.unwrap();
    p2.send(ProducerRecord::new("batched", "warm").partition(0))
        .await
        .unwrap()
        .await
        .unwrap();
    b.stop().await;
    let records = (0..100).map(|i| ProducerRecord::new("batched", format!("x{i}")).partition(0));
    let outcome = tokio::time::timeout(Duration::from_secs(30), async {
        p2.send_batch(records).await?.wait().await
    })
    .await
    .expect("a batch to a stopped broker must fail, not hang");
    assert!(outcome.is_err(), "{outcome:?}");
}
