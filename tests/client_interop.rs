//! strom-client with librdkafka on the same broker, both directions; idempotent retries through
//! a proxy that loses responses; metadata refresh when a topic is deleted and recreated.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::kafka::{create_topic, from_beginning, future_producer};
use common::TestBroker;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use strom::client::{
    Admin, Compression, Consumer, ConsumerConfig, ConsumerRecord, NewTopic, OffsetReset, Producer,
    ProducerConfig, ProducerRecord, TopicPartition,
};
use tokio::net::TcpListener;

async fn read_all(bootstrap: &str, topic: &str, partitions: i32, n: usize) -> Vec<ConsumerRecord> {
    let mut c = Consumer::new(ConsumerConfig::new(bootstrap).offset_reset(OffsetReset::Earliest))
        .await
        .unwrap();
    c.assign(
        &(0..partitions)
            .map(|p| TopicPartition::new(topic, p))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut out = Vec::new();
    while out.len() < n {
        assert!(Instant::now() < deadline, "read only {} of {n}", out.len());
        out.extend(c.poll(Duration::from_millis(200)).await.unwrap());
    }
    assert!(
        c.poll(Duration::from_millis(300)).await.unwrap().is_empty(),
        "more than {n} records"
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strom_client_produces_what_librdkafka_reads() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    for c in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let topic = format!("to-rdkafka-{}", c.name());
        Admin::connect(&b.bootstrap())
            .await
            .unwrap()
            .create_topics(&[NewTopic::new(&topic, 2)])
            .await
            .unwrap();
        let p = Producer::new(ProducerConfig::new(&b.bootstrap()).compression(c))
            .await
            .unwrap();
        let mut futs = Vec::new();
        for i in 0..2000i64 {
            let r = ProducerRecord::new(&topic, format!("value-{i}"))
                .key(format!("key-{}", i % 17))
                .header("n", i.to_string())
                .timestamp(1_700_000_000_000 + i);
            futs.push(p.send(r).await.unwrap());
        }
        let mut offsets = BTreeMap::new();
        for f in futs {
            let m = f.await.unwrap();
            offsets.insert((m.partition, m.offset), m.timestamp);
        }
        p.close().await.unwrap();
        let addr = b.bootstrap();
        let t = topic.clone();
        let got = tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &addr)
                .set("group.id", "unused")
                .set("enable.auto.commit", "false")
                .create()
                .unwrap();
            consumer.assign(&from_beginning(&t, 2)).unwrap();
            let mut out = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(60);
            while out.len() < 2000 && Instant::now() < deadline {
                if let Some(m) = consumer.poll(Duration::from_millis(200)) {
                    let m = m.unwrap();
                    let h = m.headers().unwrap().get(0);
                    out.push((
                        m.partition(),
                        m.offset(),
                        m.timestamp().to_millis().unwrap(),
                        String::from_utf8(m.key().unwrap().to_vec()).unwrap(),
                        String::from_utf8(m.payload().unwrap().to_vec()).unwrap(),
                        String::from_utf8(h.value.unwrap().to_vec()).unwrap(),
                    ));
                }
            }
            out
        })
        .await
        .unwrap();
        assert_eq!(got.len(), 2000, "{c:?}");
        for (partition, offset, ts, key, value, n) in got {
            let i: i64 = n.parse().unwrap();
            assert_eq!(value, format!("value-{i}"));
            assert_eq!(key, format!("key-{}", i % 17));
            assert_eq!(ts, 1_700_000_000_000 + i);
            assert_eq!(
                offsets.get(&(partition, offset)),
                Some(&ts),
                "delivery report matches"
            );
        }
    }
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strom_client_reads_what_librdkafka_produces() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("from-rdkafka-{codec}");
        create_topic(&b.bootstrap(), &topic, 3).await;
        let p = future_producer(&b.bootstrap(), &[("compression.type", codec)]);
        let mut pending = Vec::new();
        for i in 0..3000 {
            let (k, v) = (format!("k{i}"), format!("v{i}"));
            let headers = OwnedHeaders::new().insert(Header {
                key: "n",
                value: Some(&i.to_string()),
            });
            pending.push(
                p.send_result(
                    FutureRecord::to(&topic)
                        .key(&k)
                        .payload(&v)
                        .headers(headers)
                        .timestamp(5_000 + i),
                )
                .map_err(|(e, _)| e)
                .unwrap(),
            );
        }
        for f in pending {
            f.await.unwrap().map_err(|(e, _)| e).unwrap();
        }
        let got = read_all(&b.bootstrap(), &topic, 3, 3000).await;
        let mut seen = HashSet::new();
        for r in got {
            let i: i64 = std::str::from_utf8(r.headers[0].value.as_deref().unwrap())
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(r.key.as_deref(), Some(format!("k{i}").as_bytes()));
            assert_eq!(r.value.as_deref(), Some(format!("v{i}").as_bytes()));
            assert_eq!(r.timestamp, 5_000 + i);
            // librdkafka's default partitioner for keyed records differs (consistent_random);
            // what matters is that each partition's records come back in order.
            assert!(seen.insert(i), "duplicate {i}");
        }
        assert_eq!(seen.len(), 3000, "{codec}");
    }
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_retries_write_each_record_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = proxy.local_addr().unwrap();
    let broker =
        TestBroker::start(dir.path(), |c| c.advertised = Some(proxy_addr.to_string())).await;
    let dropped = Arc::new(AtomicUsize::new(0));
    tokio::spawn(common::proxy::faulty_proxy(
        proxy,
        broker.addr,
        8,
        dropped.clone(),
    ));
    let bootstrap = proxy_addr.to_string();
    Admin::connect(&bootstrap)
        .await
        .unwrap()
        .create_topics(&[NewTopic::new("idem", 3)])
        .await
        .unwrap();
    let mut cfg = ProducerConfig::new(&bootstrap);
    cfg.set("batch.size", "2000")
        .unwrap()
        .set("retry.backoff.ms", "10")
        .unwrap()
        .set("request.timeout.ms", "3000")
        .unwrap();
    let p = Producer::new(cfg).await.unwrap();
    const N: usize = 5000;
    let mut futs = Vec::new();
    for i in 0..N {
        futs.push(
            p.send(ProducerRecord::new("idem", format!("v{i}")).key(format!("k{}", i % 13)))
                .await
                .unwrap(),
        );
    }
    for f in futs {
        f.await.unwrap();
    }
    assert!(
        dropped.load(Ordering::SeqCst) >= 1,
        "the proxy never dropped a produce response"
    );
    let got = read_all(&broker.bootstrap(), "idem", 3, N).await;
    let mut values = HashSet::new();
    let mut per_key: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    for r in &got {
        let v = String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap();
        assert!(values.insert(v.clone()), "duplicate record {v}");
        let n: usize = v[1..].parse().unwrap();
        if let Some(prev) = per_key.insert(r.key.clone().unwrap().to_vec(), n) {
            assert!(n > prev, "key order broken: {prev} then {n}");
        }
    }
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_and_consumer_follow_a_recreated_topic() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let admin = Admin::connect(&b.bootstrap()).await.unwrap();
    admin
        .create_topics(&[NewTopic::new("again", 1)])
        .await
        .unwrap();
    let mut cfg = ProducerConfig::new(&b.bootstrap());
    cfg.set("retry.backoff.ms", "20")
        .unwrap()
        .set("allow.auto.create.topics", "false")
        .unwrap();
    let p = Producer::new(cfg).await.unwrap();
    p.send(ProducerRecord::new("again", "first"))
        .await
        .unwrap()
        .await
        .unwrap();
    admin.delete_topics(&["again".to_string()]).await.unwrap();
    admin
        .create_topics(&[NewTopic::new("again", 4)])
        .await
        .unwrap();
    // The producer's cached metadata says one partition; the broker's answers make it refresh.
    let mut parts = HashSet::new();
    for i in 0..40 {
        let m = p
            .send(ProducerRecord::new("again", format!("second-{i}")).key(format!("{i}")))
            .await
            .unwrap()
            .await
            .unwrap();
        parts.insert(m.partition);
    }
    assert!(
        parts.len() > 1,
        "the producer still sees one partition: {parts:?}"
    );
    let got = read_all(&b.bootstrap(), "again", 4, 40).await;
    assert!(got
        .iter()
        .all(|r| r.value.as_deref().unwrap().starts_with(b"second")));
    b.stop().await;
}
